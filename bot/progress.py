"""Progress of long operations as a few chat messages: an image pull that
takes minutes gets a line every `interval` seconds (the first one only once
it has run that long), never a flood, and nothing at all for a quick pull.

Transport-neutral: the reporter is given a `send` coroutine function and is
fed progress records by the engine's callback (duck-typed: anything with the
fields of `bot.engine.PullProgress`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from bot.durations import format_duration, format_size

log = logging.getLogger(__name__)

REPORT_INTERVAL_S = 10.0


class PullState(Protocol):
    ref: str
    layers: int
    layers_done: int
    downloaded: int
    total: int
    done: bool


def pull_text(progress: PullState, elapsed: float) -> str:
    if progress.total:
        amount = f"{format_size(progress.downloaded)} of {format_size(progress.total)}"
    else:
        amount = "starting"
    layers = f", {progress.layers_done}/{progress.layers} layers" if progress.layers else ""
    return f"Still pulling {progress.ref}: {amount}{layers} ({format_duration(elapsed)} so far)"


class PullReporter:
    """Turns a stream of pull progress into at most one message per interval.

    Use as `async with PullReporter(send) as reporter:` and pass
    `reporter.update` to the engine; leaving the block stops the reporting.
    """

    def __init__(self, send: Callable[[str], Awaitable[None]], interval: float = REPORT_INTERVAL_S,
                 clock: Callable[[], float] = time.monotonic):
        self.send = send
        self.interval = interval
        self.clock = clock
        self.sent: list[str] = []
        self._latest: PullState | None = None
        self._started: dict[str, float] = {}
        self._task: asyncio.Task[None] | None = None

    def update(self, progress: PullState) -> None:
        """The engine's progress callback (runs on the event loop)."""
        self._started.setdefault(progress.ref, self.clock())
        self._latest = progress

    async def _run(self) -> None:
        shown: PullState | None = None
        while True:
            # A periodic tick, not a wait for a condition: the message is due
            # every interval while a pull runs.
            await asyncio.sleep(self.interval)
            latest = self._latest
            if latest is None or latest.done or latest is shown:
                continue
            shown = latest
            text = pull_text(latest, self.clock() - self._started.get(latest.ref, self.clock()))
            self.sent.append(text)
            try:
                await self.send(text)
            except Exception:  # a lost progress line must not fail the install
                log.exception("could not send pull progress")

    async def __aenter__(self) -> PullReporter:
        self._task = asyncio.create_task(self._run(), name="pull-progress")
        return self

    async def __aexit__(self, *exc: Any) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

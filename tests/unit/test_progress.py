"""bot.progress: a long pull becomes a few chat lines, a quick one none."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from bot.progress import PullReporter, pull_text


@dataclass(frozen=True)
class Progress:
    ref: str = "ghost:6.21.2-alpine"
    layers: int = 7
    layers_done: int = 3
    downloaded: int = 45 * 1024**2
    total: int = 120 * 1024**2
    done: bool = False


def test_pull_text() -> None:
    assert pull_text(Progress(), 40) == "Still pulling ghost:6.21.2-alpine: 45 MiB of 120 MiB, 3/7 layers (40s so far)"
    assert pull_text(Progress(layers=0, total=0, downloaded=0), 10) == "Still pulling ghost:6.21.2-alpine: starting (10s so far)"


async def test_reports_at_most_once_per_interval_and_only_news() -> None:
    sent: list[str] = []
    got = asyncio.Event()

    async def send(text: str) -> None:
        sent.append(text)
        got.set()

    async with PullReporter(send, interval=0.05) as reporter:
        reporter.update(Progress())
        await asyncio.wait_for(got.wait(), 5)
        got.clear()
        # Nothing new: no second message however long it waits.
        await asyncio.sleep(0.2)
        assert len(sent) == 1
        reporter.update(Progress(layers_done=5))
        await asyncio.wait_for(got.wait(), 5)
        assert "5/7 layers" in sent[-1]
        reporter.update(Progress(layers_done=7, downloaded=120 * 1024**2, done=True))
        await asyncio.sleep(0.2)
    assert len(sent) == 2  # the finished pull is not announced as "still pulling"


async def test_a_quick_pull_sends_nothing() -> None:
    sent: list[str] = []

    async def send(text: str) -> None:
        sent.append(text)

    async with PullReporter(send, interval=10) as reporter:
        reporter.update(Progress())
        reporter.update(Progress(done=True))
    assert sent == []

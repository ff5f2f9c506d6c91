"""Background tasks that are tracked, never fire-and-forget.

Every long-running or detached coroutine of the bot (a command being
executed, the sampler, the event follower) is started here so that its
failure is logged and shutdown can cancel and await all of them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

log = logging.getLogger(__name__)


class Tasks:
    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            log.error("task %s failed: %r", task.get_name(), exc, exc_info=exc)

    def __len__(self) -> int:
        return len(self._tasks)

    async def drain(self, prefix: str, timeout: float) -> None:
        """Let tasks whose name starts with `prefix` finish, up to `timeout`."""
        pending = [t for t in self._tasks if t.get_name().startswith(prefix)]
        if pending:
            await asyncio.wait(pending, timeout=timeout)

    async def cancel_all(self, timeout: float = 10.0) -> None:
        tasks = list(self._tasks)
        for t in tasks:
            t.cancel()
        if tasks:
            done, pending = await asyncio.wait(tasks, timeout=timeout)
            for t in pending:
                log.warning("task %s did not stop within %.0f s", t.get_name(), timeout)

"""Per-app operation locks: one lifecycle operation per app at a time.

A second operation on a busy app is refused at once with what is running
("busy: restart of web in progress") instead of queueing behind it: the owner
on a phone should know, not wait.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from bot.errors import Busy


class AppLocks:
    def __init__(self) -> None:
        self._held: dict[str, str] = {}

    def holder(self, app: str) -> str | None:
        return self._held.get(app)

    def acquire(self, app: str, operation: str) -> None:
        # Single-threaded asyncio: check-and-set cannot interleave.
        current = self._held.get(app)
        if current is not None:
            raise Busy(app, current)
        self._held[app] = operation

    def release(self, app: str) -> None:
        self._held.pop(app, None)

    @contextmanager
    def hold(self, app: str, operation: str) -> Iterator[None]:
        self.acquire(app, operation)
        try:
            yield
        finally:
            self.release(app)

    def busy(self) -> dict[str, str]:
        return dict(self._held)

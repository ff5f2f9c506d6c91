"""Domain errors: what can go wrong, worded for the owner.

Every error that reaches the router carries a message fit to send as a chat
reply; the router never shows a traceback. The Docker module translates
docker-py's exceptions into these so that nothing above it needs docker-py.
"""

from __future__ import annotations


class HomeportError(Exception):
    """Base: str(error) is the reply the owner sees."""


class UserError(HomeportError):
    """The request cannot be done as asked (unknown app, bad value …)."""


class Busy(HomeportError):
    """Another operation holds the app."""

    def __init__(self, app: str, operation: str):
        super().__init__(f"busy: {operation} of {app} in progress")
        self.app = app
        self.operation = operation


class Cancelled(HomeportError):
    """The owner answered `cancel` (or did not answer) to a question."""


class EngineError(HomeportError):
    """The Docker engine refused or failed an operation."""


class EngineUnavailable(EngineError):
    def __init__(self, detail: str = ""):
        super().__init__("Docker engine is not reachable" + (f" ({detail})" if detail else ""))


class EngineTimeout(EngineError):
    pass


class NotFound(EngineError):
    pass

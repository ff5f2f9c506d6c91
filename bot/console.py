"""The bot with the terminal as its chat: no XMPP, same commands and state.

Each line typed is a message from the first owner; each reply is printed.
Handy for trying homeport out on a server and for tests that want the real
router, commands and Docker without a chat server.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Awaitable, Callable
from typing import IO

from bot.incoming import Incoming

log = logging.getLogger(__name__)

PROMPT = "homeport> "


class ConsoleTransport:
    def __init__(self, owner: str, on_message: Callable[[Incoming], Awaitable[None]],
                 on_online: Callable[[], Awaitable[None]] | None = None,
                 stdin: IO[str] | None = None, stdout: IO[str] | None = None):
        self.owner = owner
        self.on_message = on_message
        self.on_online = on_online
        self.stdin = stdin or sys.stdin
        self.stdout = stdout or sys.stdout
        self.online = False
        self._interactive = self.stdin.isatty()

    async def run(self) -> None:
        self.online = True
        if self.on_online is not None:
            await self.on_online()
        self._write("homeport console — type `help`, Ctrl-D to leave.")
        while True:
            if self._interactive:
                self.stdout.write(PROMPT)
                self.stdout.flush()
            # readline blocks: keep it off the event loop so commands and
            # background tasks go on while the owner types.
            line = await asyncio.to_thread(self.stdin.readline)
            if not line:
                break
            text = line.rstrip("\n")
            if text.strip() in ("/quit", "quit", "exit"):
                break
            await self.on_message(Incoming(sender=self.owner, text=text))
        self.online = False

    async def stop(self) -> None:
        self.online = False

    async def send(self, to: str, text: str) -> bool:
        self._write(text)
        return True

    def set_status(self, text: str) -> None:
        log.info("status: %s", text)

    def _write(self, text: str) -> None:
        self.stdout.write(text + "\n")
        self.stdout.flush()

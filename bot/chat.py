"""`homeport chat`: a small terminal XMPP client for the owner's side.

Lines typed on the terminal (or piped in) are sent to one contact, the bot;
that contact's messages are printed as they arrive. It logs in through
`XmppTransport`, so it follows the bot's rules: STARTTLS with a verified
certificate, reconnect after a drop, carbons and stray stanzas ignored.

Standard input is read by a daemon thread: that works the same for a tty, a
pipe and a file, never blocks the event loop, and cannot keep the process
alive after `/quit` the way a blocked executor thread would.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from bot.incoming import Incoming, normalise_jid
from bot.xmpp import XmppTransport

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 30.0  # seconds to get online before giving up at start
QUIT = "/quit"


@dataclass(frozen=True)
class ChatSettings:
    jid: str
    password: str
    host: str | None
    port: int | None
    ca_file: Path | None


def format_message(name: str, incoming: Incoming) -> str:
    """The contact's message, prefixed with its name; continuation lines
    indented under the first so tables stay aligned."""
    prefix = f"{name}{' (sent while you were away)' if incoming.delayed else ''}: "
    lines = incoming.text.splitlines() or [""]
    pad = " " * len(prefix)
    return "\n".join([prefix + lines[0], *(pad + line for line in lines[1:])]) + "\n"


def _start_reader(stdin: IO[str], loop: asyncio.AbstractEventLoop, lines: asyncio.Queue[str | None]) -> None:
    def read() -> None:
        try:
            for line in iter(stdin.readline, ""):
                loop.call_soon_threadsafe(lines.put_nowait, line)
        except (OSError, ValueError) as exc:  # closed or unreadable input ends the chat
            log.debug("chat: stdin ended: %r", exc)
        finally:
            try:
                loop.call_soon_threadsafe(lines.put_nowait, None)
            except RuntimeError:
                pass  # the loop is already gone: nobody is waiting

    threading.Thread(target=read, name="homeport-chat-stdin", daemon=True).start()


async def run_chat(
    jid: str,
    password: str,
    to: str,
    host: str | None,
    port: int | None,
    ca_file: Path | None,
    stdin: IO[str] = sys.stdin,
    stdout: IO[str] = sys.stdout,
    connect_timeout: float = CONNECT_TIMEOUT,
) -> int:
    """Chat with `to` until EOF or `/quit`. Returns the process exit code."""
    contact = normalise_jid(to)
    name = contact.split("@", 1)[0]

    def say(text: str) -> None:
        stdout.write(text)
        stdout.flush()

    online = asyncio.Event()

    async def on_message(incoming: Incoming) -> None:
        if incoming.sender == contact:
            say(format_message(name, incoming))
        else:
            log.info("chat: ignored a message from %s", incoming.sender)

    async def on_online() -> None:
        if online.is_set():
            say("* reconnected\n")
        online.set()

    settings = ChatSettings(jid=jid, password=password, host=host, port=port, ca_file=ca_file)
    # A resource of its own, so the chat does not kick the owner's phone off.
    transport = XmppTransport(settings, frozenset({contact}), on_message, on_online,
                              resource=f"homeport-chat-{secrets.token_hex(3)}")
    runner = asyncio.create_task(transport.run(), name="chat-transport")
    try:
        try:
            await asyncio.wait_for(online.wait(), connect_timeout)
        except asyncio.TimeoutError:
            say(f"! could not connect as {normalise_jid(jid)}: {transport.last_error or 'no answer'}\n")
            return 1
        say(f"* connected as {normalise_jid(jid)}; talking to {contact}. "
            f"Type a message, {QUIT} or end of input to leave.\n")
        lines: asyncio.Queue[str | None] = asyncio.Queue()
        _start_reader(stdin, asyncio.get_running_loop(), lines)
        while (line := await lines.get()) is not None:
            text = line.rstrip("\r\n")
            if text.strip() == QUIT:
                break
            if not text.strip():
                continue
            if not await transport.send(contact, text):
                say("! not connected right now; message not sent\n")
        return 0
    finally:
        await transport.stop()
        await asyncio.gather(runner, return_exceptions=True)

"""`homeport chat` (bot.chat.run_chat) against the sandbox Prosody and an echo bot."""

from __future__ import annotations

import asyncio
import io
import os
import time
from collections.abc import Callable, Iterator
from typing import IO

import pytest

from bot.chat import format_message, run_chat
from bot.incoming import Incoming
from bot.xmpp import XmppTransport
from tests.integration.xmpp_fixtures import ProsodyServer

pytestmark = pytest.mark.integration


async def wait_for_text(out: io.StringIO, text: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while text not in out.getvalue():
        if time.monotonic() > deadline:
            raise AssertionError(f"{text!r} not printed within {timeout} s; output: {out.getvalue()!r}")
        await asyncio.sleep(0.02)


async def wait_until(cond: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.02)


@pytest.fixture(params=["pipe", "tty"])
def terminal(request: pytest.FixtureRequest) -> Iterator[tuple[IO[str], IO[str]]]:
    """(stdin for run_chat, writer end the test types into)."""
    if request.param == "pipe":
        r, w = os.pipe()
    else:
        w, r = os.openpty()  # master: the test types; slave: the chat reads
    reader = os.fdopen(r, "r", buffering=1)
    writer = os.fdopen(w, "w", buffering=1)
    yield reader, writer
    for f in (writer, reader):
        try:
            f.close()
        except OSError:
            pass


async def test_chat_sends_lines_prints_replies_and_quits(
        prosody: ProsodyServer, terminal: tuple[IO[str], IO[str]]) -> None:
    stdin, typing = terminal
    bot_account = prosody.fresh_account("bot")

    async def echo(incoming: Incoming) -> None:
        await bot.send(incoming.sender, f"echo: {incoming.text}\nsecond line")

    bot = XmppTransport(prosody.xmpp_config(bot_account), frozenset({prosody.owner.jid}), echo)
    bot_task = asyncio.create_task(bot.run())
    out = io.StringIO()
    chat = asyncio.create_task(run_chat(
        prosody.owner.jid, prosody.owner.password, bot_account.jid,
        prosody.host, prosody.port, prosody.ca_file, stdin=stdin, stdout=out))
    try:
        await wait_for_text(out, "* connected as owner@localhost")
        await wait_until(lambda: bot.online, "the bot to be online")
        typing.write("status\n")
        typing.flush()
        await wait_for_text(out, f"{bot_account.user}: echo: status\n")
        # Continuation lines are indented under the first.
        assert f"{' ' * len(bot_account.user + ': ')}second line\n" in out.getvalue()
        typing.write("/quit\n")
        typing.flush()
        assert await asyncio.wait_for(chat, 10) == 0
    finally:
        chat.cancel()
        await bot.stop()
        await asyncio.wait_for(bot_task, 10)


async def test_chat_ends_on_end_of_input(prosody: ProsodyServer) -> None:
    r, w = os.pipe()
    os.close(w)  # nothing to say: immediate end of input
    out = io.StringIO()
    with os.fdopen(r, "r") as stdin:
        code = await asyncio.wait_for(run_chat(
            prosody.owner.jid, prosody.owner.password, prosody.bot.jid,
            prosody.host, prosody.port, prosody.ca_file, stdin=stdin, stdout=out), 20)
    assert code == 0


async def test_chat_reports_a_failed_login(prosody: ProsodyServer) -> None:
    out = io.StringIO()
    code = await run_chat(prosody.owner.jid, "wrong password", prosody.bot.jid,
                          prosody.host, prosody.port, prosody.ca_file,
                          stdin=io.StringIO(""), stdout=out, connect_timeout=3)
    assert code == 1
    assert "could not connect as owner@localhost: login rejected" in out.getvalue()


def test_format_message_marks_late_messages() -> None:
    text = format_message("bot", Incoming("bot@x", "a\nb", delayed=True))
    assert text.startswith("bot (sent while you were away): a\n")
    assert text.endswith("b\n")

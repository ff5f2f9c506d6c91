"""A scriptable XMPP client for integration tests: the owner's (or a stranger's) phone.

`ChatPeer` logs in to the test Prosody with the same TLS rules as the bot
(only the sandbox CA trusted, hostname checked), records every message and
presence it receives, and lets a test wait for a condition with a deadline.
`send_raw` writes XML as-is, for stanzas a well-behaved client would never
send: forged carbons, hand-made delays, error/headline/groupchat messages.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from slixmpp import JID, ClientXMPP
from slixmpp.stanza import Message, Presence
from slixmpp.xmlstream import StanzaBase
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import StanzaPath

from bot.incoming import normalise_jid
from bot.xmpp import tls_context

log = logging.getLogger(__name__)

MessageType = Literal["chat", "normal", "headline", "groupchat", "error"]
MessageMatch = Callable[[Message], bool] | str | re.Pattern[str]


@dataclass
class Received:
    """A message as the peer saw it."""

    sender: str  # full JID
    body: str
    type: str
    delayed: bool
    stanza: Message = field(repr=False)


class ChatPeer:
    def __init__(
        self,
        jid: str,
        password: str,
        host: str,
        port: int,
        ca_file: Path | None,
        resource: str = "phone",
    ) -> None:
        self.jid = JID(jid)
        if not self.jid.resource:
            self.jid = JID(f"{self.jid.bare}/{resource}")
        self.bare = normalise_jid(str(self.jid))
        self._password = password
        self._host = host
        self._port = port
        self._ca_file = ca_file
        self._client: ClientXMPP | None = None
        self._pending: list[Received] = []  # received, not yet claimed by wait_message
        self.messages: list[Received] = []  # everything, for diagnostics
        self.presences: list[Presence] = []
        self._changed = asyncio.Condition()

    @property
    def client(self) -> ClientXMPP:
        if self._client is None:
            raise RuntimeError("ChatPeer is not connected")
        return self._client

    async def connect(self, timeout: float = 15.0) -> None:
        client = ClientXMPP(str(self.jid), self._password)
        client.ssl_context = tls_context(self._ca_file)
        client.enable_direct_tls = False
        client.enable_plaintext = False
        # A test decides about subscriptions itself (approve_subscriptions).
        client.auto_authorize = None
        client.auto_subscribe = False
        client.register_plugin("xep_0030")
        client.register_plugin("xep_0203")
        client.register_plugin("xep_0280")
        client.register_plugin("xep_0199")
        # All message stanzas, not only those with a body (slixmpp's "message"
        # event): tests look at carbons and bodiless stanzas too.
        client.register_handler(Callback("chat peer messages", StanzaPath("message"), self._on_message))
        client.add_event_handler("presence", self._on_presence)
        self._client = client
        started: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def on_start(_: object) -> None:
            if not started.done():
                started.set_result(None)

        def on_fail(reason: object) -> None:
            if not started.done():
                started.set_exception(ConnectionError(f"{self.jid}: {reason}"))

        client.add_event_handler("session_start", on_start)
        client.add_event_handler("failed_all_auth", on_fail)
        client.add_event_handler("connection_failed", on_fail)
        client.add_event_handler("ssl_invalid_chain", on_fail)
        client.connect(self._host, self._port)
        try:
            await asyncio.wait_for(started, timeout)
        except BaseException:
            client.abort()
            self._client = None
            raise
        await client.get_roster(timeout=timeout)
        client.send_presence()
        log.info("chat peer %s online", self.jid)

    async def disconnect(self) -> None:
        client, self._client = self._client, None
        if client is None or client.transport is None:
            return
        try:
            await asyncio.wait_for(client.disconnect(wait=2.0), timeout=5.0)
        except asyncio.TimeoutError:
            client.abort()

    # -- sending --

    def send(self, to: str, text: str, mtype: MessageType = "chat") -> None:
        self.client.send_message(mto=JID(to), mbody=text, mtype=mtype)

    def send_raw(self, xml: str) -> None:
        """Write raw XML to the stream (the server still stamps our `from`)."""
        self.client.send_raw(xml)

    async def sync(self, timeout: float = 10.0) -> None:
        """Round-trip a ping to our server.

        The server handles one client's stanzas in order, so once the answer
        is back everything sent before it has been routed (e.g. stored for
        an offline recipient).
        """
        await self.client.plugin["xep_0199"].ping(jid=JID(self.jid.domain), timeout=timeout)

    def subscribe(self, to: str) -> None:
        self.client.send_presence_subscription(pto=to, ptype="subscribe")

    async def enable_carbons(self, timeout: float = 10.0) -> None:
        await self.client.plugin["xep_0280"].enable(timeout=timeout)

    # -- receiving --

    def _on_message(self, msg: StanzaBase) -> None:
        assert isinstance(msg, Message)
        # Every message body the peer sees; carbons arrive without a top-level
        # body and stay out of the way unless a test looks at `messages`.
        delayed = msg.xml.find("{urn:xmpp:delay}delay") is not None
        rec = Received(sender=str(msg["from"]), body=msg["body"], type=msg["type"],
                       delayed=delayed, stanza=msg)
        self.messages.append(rec)
        self._pending.append(rec)
        asyncio.ensure_future(self._notify())

    def _on_presence(self, pres: Presence) -> None:
        self.presences.append(pres)
        asyncio.ensure_future(self._notify())

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def _wait_for(self, check: Callable[[], object], timeout: float, what: str) -> object:
        async def loop() -> object:
            async with self._changed:
                while True:
                    found = check()
                    if found:
                        return found
                    await self._changed.wait()

        try:
            return await asyncio.wait_for(loop(), timeout)
        except asyncio.TimeoutError:
            raise AssertionError(
                f"{self.jid}: timed out after {timeout:.1f} s waiting for {what}; "
                f"received meanwhile: {[m.body for m in self._pending]}"
            ) from None

    async def wait_received(self, match: MessageMatch, timeout: float = 10.0,
                            sender: str | None = None) -> Received:
        """The first not-yet-claimed message that matches (a regex searched in
        the body, or a predicate on the stanza), optionally from `sender`'s
        bare JID. Earlier non-matching messages stay pending."""
        pred = _predicate(match)
        want_from = normalise_jid(sender) if sender else None

        def check() -> Received | None:
            for rec in self._pending:
                if want_from and normalise_jid(rec.sender) != want_from:
                    continue
                if pred(rec.stanza):
                    self._pending.remove(rec)
                    return rec
            return None

        return await self._wait_for(check, timeout, f"a message matching {match!r}")  # type: ignore[return-value]

    async def wait_message(self, match: MessageMatch, timeout: float = 10.0,
                           sender: str | None = None) -> str:
        """Like `wait_received`, returning only the body."""
        return (await self.wait_received(match, timeout, sender)).body

    async def wait_presence(self, check: Callable[[Presence], bool], timeout: float = 10.0) -> Presence:
        """The first recorded presence (from the start of the session) passing `check`."""
        def scan() -> Presence | None:
            return next((p for p in self.presences if check(p)), None)

        return await self._wait_for(scan, timeout, "a matching presence")  # type: ignore[return-value]

    async def expect_silence(self, seconds: float, sender: str | None = None) -> list[str]:
        """Bodies of messages (from `sender`'s bare JID, if given) that arrive
        within `seconds`, plus those already pending.

        The one place in the tests where a bounded wait for *nothing* is
        legitimate: proving a negative ("the stranger got no answer") needs a
        window. The test asserts the returned list is empty; keep the window
        short and give the positive path a chance to fail first where possible.
        Pass `sender`: offline messages left for this account by earlier tests
        arrive at login and are not silence broken by the bot under test.
        """
        await asyncio.sleep(seconds)
        want_from = normalise_jid(sender) if sender else None
        hits = [m for m in self._pending
                if m.body and (want_from is None or normalise_jid(m.sender) == want_from)]
        for m in hits:
            self._pending.remove(m)
        return [m.body for m in hits]

    def drain(self) -> list[Received]:
        """Forget pending messages (e.g. stale offline messages from earlier tests)."""
        pending, self._pending = self._pending, []
        return pending


def _predicate(match: MessageMatch) -> Callable[[Message], bool]:
    if callable(match) and not isinstance(match, (str, re.Pattern)):
        return match
    pattern = re.compile(match) if isinstance(match, str) else match
    return lambda msg: bool(msg["body"]) and pattern.search(msg["body"]) is not None

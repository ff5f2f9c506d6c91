"""XmppTransport against the real sandbox Prosody (and two tiny fake servers).

The transport runs in-process with an echo handler instead of the router, so
these tests pin down what reaches `on_message` and what the owner sees.
Absence is proven with a sentinel where possible: a bad stanza is followed by
a good one from the same connection, and once the good one has arrived the
bad one had its chance (the server keeps one sender's stanzas in order).
"""

from __future__ import annotations

import asyncio
import logging
import re
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest
import pytest_asyncio

from bot.incoming import Incoming
from bot.sandbox import CertificateAuthority
from bot.xmpp import XmppTransport
from tests.integration.chatpeer import ChatPeer
from tests.integration.xmpp_fixtures import Account, PeerFactory, ProsodyServer

pytestmark = pytest.mark.integration

ONLINE_TIMEOUT = 15.0


async def wait_until(cond: Callable[[], object], timeout: float, what: str) -> None:
    """Poll a condition that has no event of its own (log records, flags)."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.1f} s waiting for {what}")
        await asyncio.sleep(0.02)


@dataclass
class Echo:
    """The stand-in router: records every Incoming and echoes it back."""

    transport: XmppTransport | None = None
    received: list[Incoming] = field(default_factory=list)
    onlines: int = 0
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def on_message(self, incoming: Incoming) -> None:
        self.received.append(incoming)
        self.changed.set()
        if self.transport is not None:
            late = " (delayed)" if incoming.delayed else ""
            await self.transport.send(incoming.sender, f"echo{late}: {incoming.text}")

    async def on_online(self) -> None:
        self.onlines += 1

    async def wait_text(self, text: str, timeout: float = 10.0) -> Incoming:
        async def scan() -> Incoming:
            while True:
                for inc in self.received:
                    if inc.text == text:
                        return inc
                self.changed.clear()
                await self.changed.wait()

        try:
            return await asyncio.wait_for(scan(), timeout)
        except asyncio.TimeoutError:
            raise AssertionError(f"{text!r} never reached on_message; got {self.received}") from None


@dataclass
class RunningBot:
    transport: XmppTransport
    echo: Echo
    account: Account
    task: asyncio.Task[None]

    @property
    def full_jid(self) -> str:
        return f"{self.account.jid}/homeport"

    async def wait_online(self, sessions: int = 1, timeout: float = ONLINE_TIMEOUT) -> None:
        await wait_until(lambda: self.transport.online and self.transport.sessions >= sessions,
                         timeout, f"session {sessions} of the transport")


StartBot = Callable[..., Awaitable[RunningBot]]


@pytest_asyncio.fixture
async def start_bot(prosody: ProsodyServer) -> AsyncIterator[StartBot]:
    """`await start_bot(account=None, online=True, **transport_kwargs)`.

    Each bot gets a fresh account by default, so offline messages left for
    another test's bot cannot leak in.
    """
    bots: list[RunningBot] = []

    async def start(account: Account | None = None, online: bool = True,
                    config_changes: dict[str, object] | None = None, **kwargs: object) -> RunningBot:
        acc = account or prosody.fresh_account("bot")
        cfg = replace(prosody.xmpp_config(acc), **(config_changes or {}))  # type: ignore[arg-type]
        echo = Echo()
        transport = XmppTransport(cfg, frozenset({prosody.owner.jid}), echo.on_message,
                                  echo.on_online, **kwargs)  # type: ignore[arg-type]
        echo.transport = transport
        bot = RunningBot(transport, echo, acc, asyncio.create_task(transport.run()))
        bots.append(bot)
        if online:
            await bot.wait_online()
        return bot

    yield start
    for bot in bots:
        await bot.transport.stop()
        await asyncio.wait_for(bot.task, 15)


def dropped(caplog: pytest.LogCaptureFixture, reason: str) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "bot.xmpp" and "dropped message" in r.getMessage() and reason in r.getMessage()]


# -- messages -------------------------------------------------------------------


async def test_owner_message_reaches_handler_and_reply_reaches_owner(
        start_bot: StartBot, owner_peer: ChatPeer, prosody: ProsodyServer) -> None:
    bot = await start_bot()
    owner_peer.send(bot.account.jid, "status")
    incoming = await bot.echo.wait_text("status")
    assert incoming == Incoming(sender=prosody.owner.jid, text="status", delayed=False, resource="phone")
    assert await owner_peer.wait_message(r"^echo: status$", sender=bot.account.jid) == "echo: status"
    assert bot.echo.onlines == 1


async def test_forged_carbon_is_dropped(start_bot: StartBot, owner_peer: ChatPeer,
                                        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="bot.xmpp")
    bot = await start_bot()
    # The owner's client claims to relay a carbon of a message the bot
    # "received" from the owner: only the bot's own server may send carbons.
    owner_peer.send_raw(
        f"<message to='{bot.full_jid}' type='chat'>"
        "<received xmlns='urn:xmpp:carbons:2'><forwarded xmlns='urn:xmpp:forward:0'>"
        f"<message xmlns='jabber:client' from='{owner_peer.jid}' to='{bot.account.jid}' type='chat'>"
        "<body>restart web</body></message></forwarded></received></message>"
    )
    owner_peer.send(bot.full_jid, "sentinel")
    await bot.echo.wait_text("sentinel")
    assert [i.text for i in bot.echo.received] == ["sentinel"]
    await owner_peer.wait_message("^echo: sentinel$", sender=bot.account.jid)
    assert dropped(caplog, "forged carbon")
    assert any(r.levelno == logging.WARNING and "forged carbon" in r.getMessage() for r in caplog.records)


async def test_real_carbons_are_never_commands(start_bot: StartBot, owner_peer: ChatPeer,
                                               chat_peer: PeerFactory,
                                               caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="bot.xmpp")
    bot = await start_bot()
    # A second session of the bot's own account, e.g. the admin's laptop.
    laptop = await chat_peer(bot.account, resource="laptop")
    # Received carbon: the owner writes to the laptop session; the bot's
    # session gets a copy whose inner message is from the owner.
    owner_peer.send(str(laptop.jid), "restart web")
    await laptop.wait_message("^restart web$")
    # Sent carbon: the laptop session writes to the owner.
    laptop.send(owner_peer.bare, "stop web")
    await owner_peer.wait_message("^stop web$")
    owner_peer.send(bot.full_jid, "sentinel")
    await bot.echo.wait_text("sentinel")
    assert [i.text for i in bot.echo.received] == ["sentinel"]
    await owner_peer.wait_message("^echo: sentinel$", sender=bot.account.jid)
    # Both copies did arrive (so the test is not vacuous) and were dropped.
    await wait_until(lambda: len(dropped(caplog, "carbon copy")) >= 2, 5, "two dropped carbons")


async def test_offline_message_arrives_marked_delayed(start_bot: StartBot, owner_peer: ChatPeer,
                                                      prosody: ProsodyServer) -> None:
    account = prosody.fresh_account("bot")
    owner_peer.send(account.jid, "restart web")
    await owner_peer.sync()  # the server has stored it for the offline bot
    bot = await start_bot(account)
    incoming = await bot.echo.wait_text("restart web")
    assert incoming.delayed is True
    assert incoming.sender == prosody.owner.jid
    await owner_peer.wait_message(r"^echo \(delayed\): restart web$", sender=bot.account.jid)
    # A live message afterwards is not delayed.
    owner_peer.send(bot.full_jid, "status")
    assert (await bot.echo.wait_text("status")).delayed is False
    await owner_peer.wait_message("^echo: status$", sender=bot.account.jid)


async def test_error_headline_and_groupchat_are_dropped(start_bot: StartBot, owner_peer: ChatPeer,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="bot.xmpp")
    bot = await start_bot()
    for mtype in ("error", "headline", "groupchat"):
        owner_peer.send_raw(f"<message to='{bot.full_jid}' type='{mtype}'><body>restart web</body></message>")
    owner_peer.send(bot.full_jid, "sentinel")
    await bot.echo.wait_text("sentinel")
    assert [i.text for i in bot.echo.received] == ["sentinel"]
    for reason in ("error stanza", "headline", "groupchat"):
        assert dropped(caplog, reason), f"no {reason} reached the transport"
    # And none was answered.
    assert await owner_peer.wait_message("^echo: sentinel$", sender=bot.account.jid)
    assert await owner_peer.expect_silence(0.3, sender=bot.account.jid) == []


async def test_stranger_message_is_passed_on_for_the_router_to_judge(
        start_bot: StartBot, stranger_peer: ChatPeer, prosody: ProsodyServer) -> None:
    # Owner filtering is the router's job; the transport must report the
    # real sender so the router can refuse it.
    bot = await start_bot()
    stranger_peer.send(bot.account.jid, "restart web")
    assert (await bot.echo.wait_text("restart web")).sender == prosody.stranger.jid
    await stranger_peer.wait_message("^echo: restart web$", sender=bot.account.jid)


# -- subscriptions and presence ------------------------------------------------------


def presence_from(jid: str, ptype: str) -> Callable[..., bool]:
    return lambda p: p["from"].bare == jid and p["type"] == ptype


async def test_subscriptions_owner_approved_stranger_refused(
        start_bot: StartBot, owner_peer: ChatPeer, stranger_peer: ChatPeer) -> None:
    bot = await start_bot()
    stranger_peer.subscribe(bot.account.jid)
    await stranger_peer.wait_presence(presence_from(bot.account.jid, "unsubscribed"))
    owner_peer.subscribe(bot.account.jid)
    await owner_peer.wait_presence(presence_from(bot.account.jid, "subscribed"))
    await owner_peer.wait_presence(presence_from(bot.account.jid, "subscribe"))  # mutual
    assert not [p for p in stranger_peer.presences
                if p["from"].bare == bot.account.jid and p["type"] in ("subscribed", "available")]


async def test_presence_status_text_is_visible_to_the_owner(
        start_bot: StartBot, owner_peer: ChatPeer) -> None:
    bot = await start_bot()
    bot.transport.set_status("starting")
    owner_peer.subscribe(bot.account.jid)
    await owner_peer.wait_presence(presence_from(bot.account.jid, "subscribed"))
    await owner_peer.wait_presence(
        lambda p: p["from"].bare == bot.account.jid and p["type"] == "available" and p["status"] == "starting")
    bot.transport.set_status("4 apps running")
    await owner_peer.wait_presence(
        lambda p: p["from"].bare == bot.account.jid and p["status"] == "4 apps running")


# -- TLS -----------------------------------------------------------------------------


async def test_untrusted_ca_fails_before_login(start_bot: StartBot, owner_peer: ChatPeer,
                                               prosody: ProsodyServer, tmp_path: Path,
                                               caplog: pytest.LogCaptureFixture) -> None:
    other_ca = CertificateAuthority.create(tmp_path / "other-ca", name="someone else's CA")
    bot = await start_bot(online=False, config_changes={"ca_file": other_ca.cert})
    await wait_until(lambda: any("certificate rejected" in r.getMessage() for r in caplog.records),
                     ONLINE_TIMEOUT, "the certificate rejection in the log")
    assert not bot.transport.online and bot.transport.sessions == 0
    assert "CERTIFICATE_VERIFY_FAILED" in (bot.transport.last_error or "")
    assert bot.echo.received == []
    # Not online: send says so instead of pretending, so the app keeps it in its outbox.
    assert await bot.transport.send(owner_peer.bare, "alert") is False


class FakeServer:
    """Speaks just enough XMPP to offer either plaintext login or a STARTTLS
    with a certificate of our choosing, and records whether the client ever
    tried to authenticate."""

    def __init__(self, tls: ssl.SSLContext | None) -> None:
        self.tls = tls
        self.saw_auth = False
        self.connections = 0
        self.client_gone = asyncio.Event()
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> "FakeServer":
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])

    async def _read_until(self, reader: asyncio.StreamReader, marker: bytes) -> bytes:
        buf = b""
        while marker not in buf:
            chunk = await asyncio.wait_for(reader.read(4096), 10)
            if not chunk:
                raise ConnectionError("client closed")
            buf += chunk
            if b"<auth" in buf:
                self.saw_auth = True
        return buf

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        header = ("<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
                  "xmlns:stream='http://etherx.jabber.org/streams' from='localhost' id='fake' version='1.0'>")
        try:
            await self._read_until(reader, b"<stream:stream")
            if self.tls is None:
                writer.write((header + "<stream:features><mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>"
                              "<mechanism>PLAIN</mechanism><mechanism>SCRAM-SHA-1</mechanism>"
                              "</mechanisms></stream:features>").encode())
                await writer.drain()
                await self._read_until(reader, b"never sent by a client")
            else:
                writer.write((header + "<stream:features><starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'>"
                              "<required/></starttls></stream:features>").encode())
                await writer.drain()
                await self._read_until(reader, b"<starttls")
                writer.write(b"<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
                await writer.drain()
                await writer.start_tls(self.tls)
                await self._read_until(reader, b"never sent by a client")
        except (ConnectionError, OSError, asyncio.TimeoutError, ssl.SSLError):
            pass
        finally:
            self.client_gone.set()
            writer.close()


async def test_wrong_hostname_fails_before_login(start_bot: StartBot, prosody: ProsodyServer,
                                                 tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # A certificate from the CA the bot trusts, but for another name.
    cert, key = prosody.sandbox.ca.issue("wrong.example", tmp_path)
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(cert, key)
    async with FakeServer(tls) as fake:
        bot = await start_bot(online=False, config_changes={"port": fake.port})
        await asyncio.wait_for(fake.client_gone.wait(), ONLINE_TIMEOUT)
        await wait_until(lambda: any("certificate rejected" in r.getMessage() for r in caplog.records),
                         5, "the certificate rejection in the log")
        assert re.search("hostname|match", bot.transport.last_error or "", re.I), bot.transport.last_error
        assert not fake.saw_auth
        assert bot.transport.sessions == 0 and bot.echo.received == []


async def test_plaintext_server_is_left_before_login(start_bot: StartBot,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    async with FakeServer(None) as fake:
        bot = await start_bot(online=False, config_changes={"port": fake.port})
        await asyncio.wait_for(fake.client_gone.wait(), ONLINE_TIMEOUT)
        assert any("no STARTTLS" in r.getMessage() for r in caplog.records)
        assert not fake.saw_auth
        assert bot.transport.sessions == 0 and "STARTTLS" in (bot.transport.last_error or "")


# -- staying connected ---------------------------------------------------------------


async def test_prosody_restart_reconnects_and_messages_flow_again(
        start_bot: StartBot, owner_peer: ChatPeer, prosody: ProsodyServer) -> None:
    bot = await start_bot()
    bot.transport.set_status("3 apps running")
    owner_peer.send(bot.account.jid, "before")
    await bot.echo.wait_text("before")
    await owner_peer.wait_message("^echo: before$", sender=bot.account.jid)

    t0 = time.monotonic()
    prosody.restart()
    await wait_until(lambda: not bot.transport.online or bot.transport.sessions >= 2, 10,
                     "the transport to notice the restart")
    await bot.wait_online(sessions=2, timeout=20)
    back_after = time.monotonic() - t0
    print(f"\nreconnect after Prosody restart: online again {back_after:.2f} s after restart began")
    assert bot.echo.onlines == 2  # on_online ran again: the app flushes its outbox there

    await owner_peer.disconnect()  # the owner's connection dropped too; reconnect it
    await owner_peer.connect()
    owner_peer.send(bot.account.jid, "after")
    await bot.echo.wait_text("after")
    await owner_peer.wait_message("^echo: after$", sender=bot.account.jid)
    assert back_after < 10


class FreezableProxy:
    """A TCP relay to Prosody whose current connections can be frozen: bytes
    stop flowing but nothing is closed, like a dead NAT or a pulled cable."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self._live: list[asyncio.Event] = []  # one "frozen" flag per connection
        self.server: asyncio.Server | None = None
        self.connections = 0
        self._pipes: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> "FreezableProxy":
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        for t in self._pipes:
            t.cancel()
        await asyncio.gather(*self._pipes, return_exceptions=True)

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])

    def freeze_current(self) -> None:
        for frozen in self._live:
            frozen.set()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        # Connections made after a freeze flow normally.
        frozen = asyncio.Event()
        self._live.append(frozen)
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        for src, dst in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.ensure_future(self._pipe(src, dst, frozen))
            self._pipes.add(task)
            task.add_done_callback(self._pipes.discard)

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, frozen: asyncio.Event) -> None:
        try:
            while not frozen.is_set():
                data = await src.read(65536)
                if not data or frozen.is_set():
                    break
                dst.write(data)
                await dst.drain()
            await asyncio.Event().wait() if frozen.is_set() else None  # hold, never close
        except (ConnectionError, OSError):
            pass
        finally:
            if not frozen.is_set():
                dst.close()


async def test_keepalive_detects_a_dead_connection_and_resends_presence(
        start_bot: StartBot, owner_peer: ChatPeer, prosody: ProsodyServer,
        caplog: pytest.LogCaptureFixture) -> None:
    async with FreezableProxy(prosody.port) as proxy:
        bot = await start_bot(config_changes={"port": proxy.port},
                              keepalive_interval=0.5, keepalive_timeout=1.0)
        bot.transport.set_status("2 apps running")
        owner_peer.subscribe(bot.account.jid)
        await owner_peer.wait_presence(presence_from(bot.account.jid, "subscribed"))
        presences_before = len(owner_peer.presences)

        t0 = time.monotonic()
        proxy.freeze_current()
        await bot.wait_online(sessions=2, timeout=20)
        back_after = time.monotonic() - t0
        print(f"\ndead link: detected and back online {back_after:.2f} s after the freeze")
        assert any("keepalive ping unanswered" in r.getMessage() for r in caplog.records)
        assert proxy.connections >= 2
        # The new session announced itself with the status text again.
        await owner_peer.wait_presence(
            lambda p: owner_peer.presences.index(p) >= presences_before
            and p["from"].bare == bot.account.jid and p["type"] == "available"
            and p["status"] == "2 apps running")
        owner_peer.send(bot.account.jid, "still there?")
        await bot.echo.wait_text("still there?")
        await owner_peer.wait_message(r"^echo: still there\?$", sender=bot.account.jid)
        assert back_after < 10

"""The XMPP transport: slixmpp behind a small, safe interface.

`XmppTransport` keeps one client session to the server up for as long as the
bot runs, and turns chat messages into `Incoming` for the router. It owns
everything XMPP-specific that matters for safety:

* TLS: STARTTLS is required and the server certificate is verified, hostname
  included (an optional extra CA can be trusted; verification is never off).
  A server without STARTTLS or with a bad certificate is left before login.
* Reconnect: slixmpp only retries failed connection attempts, not a session
  that drops, so the loop here reconnects after *any* disconnect, forever,
  with capped jittered backoff. Keepalive pings (XEP-0199) find dead links.
* Stanza filters: errors, headlines, groupchat, our own messages and carbons
  (XEP-0280) are dropped; a forged carbon is logged as such; a message with a
  XEP-0203 delay is passed on marked `delayed` so it is answered, not run.
* Presence: available with a status text, re-sent after every reconnect;
  subscription requests from owners are approved, all others refused.

This module and the chat client are the only importers of slixmpp.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import ssl
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol

from slixmpp import JID, ClientXMPP
from slixmpp.exceptions import IqError, IqTimeout
from slixmpp.stanza import Message, Presence, StreamFeatures
from slixmpp.xmlstream import StanzaBase
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import StanzaPath

from bot.backoff import Backoff
from bot.incoming import Incoming, normalise_jid

log = logging.getLogger(__name__)

CARBONS_NS = "urn:xmpp:carbons:2"
DELAY_NS = "urn:xmpp:delay"
LEGACY_DELAY_NS = "jabber:x:delay"  # XEP-0091, still added by some servers
DEFAULT_PORT = 5222
DEFAULT_RESOURCE = "homeport"


class XmppSettings(Protocol):
    """The shape of `bot.config.XmppConfig` that the transport needs (read-only)."""

    @property
    def jid(self) -> str: ...
    @property
    def password(self) -> str: ...
    @property
    def host(self) -> str | None: ...
    @property
    def port(self) -> int | None: ...
    @property
    def ca_file(self) -> Path | None: ...


# -- stanza classification (pure functions, unit-tested without a network) --


class Verdict(enum.Enum):
    """What to do with a received message stanza, with the reason as value."""

    ACCEPT = "accepted"
    ERROR = "error stanza"
    HEADLINE = "headline"
    GROUPCHAT = "groupchat"
    CARBON = "carbon copy"
    FORGED_CARBON = "forged carbon (not from our own account)"
    FROM_SELF = "from our own account"
    NO_BODY = "no body"


def carbon_kind(msg: Message) -> str | None:
    """'received' or 'sent' when the stanza wraps a XEP-0280 carbon, else None."""
    for kind in ("received", "sent"):
        if msg.xml.find(f"{{{CARBONS_NS}}}{kind}") is not None:
            return kind
    return None


def is_delayed(msg: Message) -> bool:
    """True when the message carries a delayed-delivery marker (offline storage)."""
    return (
        msg.xml.find(f"{{{DELAY_NS}}}delay") is not None
        or msg.xml.find(f"{{{LEGACY_DELAY_NS}}}x") is not None
    )


def stanza_sender(msg: Message, own_bare: str) -> str:
    """The sender's normalised bare JID.

    A stanza without `from` comes from our own account (RFC 6120 8.1.2.1);
    other entities cannot send one, as the server stamps their address.
    """
    sender = str(msg["from"])
    return normalise_jid(sender) if sender else own_bare


def classify_message(msg: Message, own_bare: str) -> Verdict:
    """Decide whether a message stanza may reach the router.

    Order matters: a carbon is judged before "from ourselves" because a real
    carbon *is* from our own bare JID, and one that is not is an attack
    (CVE-2017-5591) worth its own log line.
    """
    mtype = msg["type"]
    if mtype == "error":
        return Verdict.ERROR
    sender = stanza_sender(msg, own_bare)
    if carbon_kind(msg) is not None:
        return Verdict.CARBON if sender == own_bare else Verdict.FORGED_CARBON
    if mtype == "headline":
        return Verdict.HEADLINE
    if mtype == "groupchat":
        return Verdict.GROUPCHAT
    if sender == own_bare:
        return Verdict.FROM_SELF
    if not msg["body"]:
        return Verdict.NO_BODY
    return Verdict.ACCEPT


def to_incoming(msg: Message, own_bare: str) -> tuple[Verdict, Incoming | None]:
    """The verdict and, when accepted, the `Incoming` to hand to the router."""
    verdict = classify_message(msg, own_bare)
    if verdict is not Verdict.ACCEPT:
        return verdict, None
    sender = msg["from"]
    return verdict, Incoming(
        sender=normalise_jid(str(sender)),
        text=msg["body"],  # untouched: the router enforces size and parses
        delayed=is_delayed(msg),
        resource=sender.resource or None,
    )


def tls_context(ca_file: Path | None) -> ssl.SSLContext:
    """A client TLS context: system CAs plus `ca_file`, hostname checked.

    Built here rather than through slixmpp's `ca_certs` so a missing or broken
    CA file fails at start with a clear error instead of inside STARTTLS.
    """
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    ctx.check_hostname = True
    ctx.verify_mode = ssl.CERT_REQUIRED
    if ca_file is not None:
        try:
            ctx.load_verify_locations(cafile=str(ca_file))
        except (OSError, ssl.SSLError) as exc:
            raise ValueError(f"cannot load CA file {ca_file}: {exc}") from exc
    return ctx


def session_jid(jid: str, resource: str = DEFAULT_RESOURCE) -> str:
    """The JID to log in with: the configured one, with a resource if it had none.

    A fixed resource lets a reconnect replace a half-dead old session on the
    server instead of piling up ghost sessions.
    """
    parsed = JID(jid)
    if parsed.resource:
        return str(parsed)
    return f"{parsed.bare}/{resource}"


def make_client(cfg: XmppSettings, resource: str = DEFAULT_RESOURCE) -> ClientXMPP:
    """A slixmpp client configured with homeport's TLS rules and plugins."""
    client = ClientXMPP(session_jid(cfg.jid, resource), cfg.password)
    client.ssl_context = tls_context(cfg.ca_file)
    # STARTTLS on the client port only: no direct TLS probe on a STARTTLS
    # port, never plaintext. The feature check in `_require_tls` enforces it.
    client.enable_starttls = True
    client.enable_direct_tls = False
    client.enable_plaintext = False
    # Subscriptions are decided by us (owners yes, strangers no); slixmpp
    # would otherwise approve everyone.
    client.auto_authorize = None
    client.auto_subscribe = False
    client.register_plugin("xep_0030")  # disco: servers and clients probe it
    client.register_plugin("xep_0199", {"keepalive": False})  # our loop pings
    client.register_plugin("xep_0203")
    client.register_plugin("xep_0280")
    return client


def tls_active(client: ClientXMPP) -> bool:
    transport = client.transport
    return transport is not None and transport.get_extra_info("ssl_object") is not None


# -- the transport -------------------------------------------------------------


class _Attempt:
    """One connection attempt and, if it gets that far, its session."""

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.ended = asyncio.Event()
        self.reason = ""

    def end(self, reason: str) -> None:
        if not self.ended.is_set():
            self.reason = reason
            self.ended.set()


class XmppTransport:
    """Keeps the bot's XMPP session up and passes owner-visible messages on.

    `run()` returns only after `stop()`. `send()` never raises for a missing
    connection: it returns False so the caller can keep the message (outbox).
    """

    def __init__(
        self,
        cfg: XmppSettings,
        owners: frozenset[str],
        on_message: Callable[[Incoming], Awaitable[None]],
        on_online: Callable[[], Awaitable[None]] | None = None,
        *,
        keepalive_interval: float = 60.0,
        keepalive_timeout: float = 20.0,
        connect_timeout: float = 30.0,
        stable_after: float = 30.0,
        backoff: Backoff | None = None,
        resource: str = DEFAULT_RESOURCE,
    ) -> None:
        self._cfg = cfg
        self._owners = frozenset(normalise_jid(o) for o in owners)
        self._on_message = on_message
        self._on_online = on_online
        self._keepalive_interval = keepalive_interval
        self._keepalive_timeout = keepalive_timeout
        self._connect_timeout = connect_timeout
        self._stable_after = stable_after  # a session this long resets the backoff
        self._backoff = backoff or Backoff(base=1.0, cap=60.0)
        self._resource = resource
        self.own_bare = normalise_jid(cfg.jid)
        self._status = ""
        self._online = False
        self._client: ClientXMPP | None = None
        self._attempt: _Attempt | None = None
        self._stopping = asyncio.Event()
        self._finished = asyncio.Event()
        self._running = False
        self._handlers: set[asyncio.Task[None]] = set()
        self.last_error: str | None = None  # why the last attempt or session ended
        self.sessions = 0  # sessions started since run(); tests and `check` read it

    # -- public interface --

    @property
    def online(self) -> bool:
        return self._online

    def set_status(self, text: str) -> None:
        """Set the presence status text; sent now if online and after each reconnect."""
        self._status = text
        if self._online and self._client is not None:
            self._client.send_presence(pstatus=text or None)

    async def send(self, to: str, text: str) -> bool:
        """Send a chat message. False (nothing sent) when not online."""
        client = self._client
        if not self._online or client is None:
            return False
        client.send_message(mto=JID(to), mbody=text, mtype="chat")
        return True

    async def confirm(self, timeout: float = 10.0) -> bool:
        """True once the server answered a ping sent after everything we sent
        so far: a stream is in order, so the server has taken those stanzas.
        False when offline or unanswered (the messages may be lost)."""
        client = self._client
        if not self._online or client is None:
            return False
        try:
            await client.plugin["xep_0199"].ping(timeout=timeout)
        except IqError:
            pass  # an error reply is still an answer, in order
        except (IqTimeout, Exception) as exc:  # a dying session may fail in other ways too
            log.warning("xmpp: delivery not confirmed: %s", exc.__class__.__name__)
            return False
        return True

    async def stop(self) -> None:
        """Leave the server and make `run()` return; waits for that (bounded)."""
        self._stopping.set()
        if self._running:
            try:
                await asyncio.wait_for(self._finished.wait(), timeout=10.0)
            except asyncio.TimeoutError:
                log.warning("xmpp transport did not stop within 10 s")

    async def run(self) -> None:
        """Connect and keep the session up until `stop()`."""
        if self._running:
            raise RuntimeError("XmppTransport.run() is already running")
        self._running = True
        self._finished.clear()
        try:
            self._client = make_client(self._cfg, self._resource)
            self._install_handlers(self._client)
            while not self._stopping.is_set():
                began = time.monotonic()
                try:
                    was_online = await self._one_attempt(self._client)
                except Exception:
                    # A bug or an unforeseen library error must not end the
                    # bot's only link to its owner: log it and go round again.
                    log.exception("xmpp: unexpected error in the connection loop")
                    was_online = False
                if self._stopping.is_set():
                    break
                if was_online and time.monotonic() - began >= self._stable_after:
                    self._backoff.reset()
                delay = self._backoff.next_delay()
                log.info("xmpp: reconnect in %.1f s", delay)
                await self._sleep_unless_stopping(delay)
        finally:
            self._online = False
            await self._cancel_handlers()
            self._running = False
            self._finished.set()
            log.info("xmpp: transport stopped")

    # -- the session loop --

    async def _one_attempt(self, client: ClientXMPP) -> bool:
        """Run one connection attempt to its end; True if it got online."""
        attempt = _Attempt()
        self._attempt = attempt
        host = self._cfg.host
        port = self._cfg.port or DEFAULT_PORT
        log.info("xmpp: connecting to %s as %s", f"{host}:{port}" if host else client.boundjid.domain,
                 client.boundjid.bare)
        # Without a host slixmpp looks up the SRV records of the JID's domain.
        if host:
            client.connect(host, port)
        else:
            client.connect()
        got_online = False
        try:
            if not await self._wait_started(attempt):
                return False
            got_online = await self._serve_session(client, attempt)
            return got_online
        finally:
            self._online = False
            if self._stopping.is_set():
                attempt.end("stopped")
                await self._leave(client)
            await self._teardown(client)
            self.last_error = attempt.reason
            if got_online:
                log.info("xmpp: disconnected: %s", attempt.reason or "unknown reason")
            elif not self._stopping.is_set():
                log.warning("xmpp: connection attempt failed: %s", attempt.reason or "unknown reason")
            self._attempt = None

    async def _until_first(self, attempt: _Attempt, *others: asyncio.Event,
                           timeout: float | None = None) -> None:
        """Wait until the attempt ends, stop() is called, or one of `others` is set."""
        waiters = [asyncio.ensure_future(e.wait()) for e in (attempt.ended, self._stopping, *others)]
        try:
            await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waiters:
                w.cancel()

    async def _wait_started(self, attempt: _Attempt) -> bool:
        await self._until_first(attempt, attempt.started, timeout=self._connect_timeout)
        if attempt.started.is_set() and not attempt.ended.is_set():
            return True
        if not attempt.ended.is_set() and not self._stopping.is_set():
            log.warning("xmpp: no session within %.0f s, giving up this attempt", self._connect_timeout)
            attempt.end(f"no session within {self._connect_timeout:.0f} s")
        return False

    async def _serve_session(self, client: ClientXMPP, attempt: _Attempt) -> bool:
        # Raced against the end of the attempt: a connection lost during
        # setup must not leave us waiting for IQ answers that cannot come.
        setup = asyncio.ensure_future(self._setup_session(client))
        set_up = asyncio.Event()
        setup.add_done_callback(lambda _: set_up.set())
        await self._until_first(attempt, set_up)
        if not setup.done():
            setup.cancel()
            await asyncio.gather(setup, return_exceptions=True)
            return False
        try:
            setup.result()
        except (IqError, IqTimeout) as exc:
            self._end_attempt(f"session setup failed: {_iq_reason(exc)}")
            return False
        if attempt.ended.is_set() or self._stopping.is_set():
            return False
        # Online before the initial presence: the server delivers offline
        # messages right after it, and their answers must be sendable.
        self._online = True
        self.sessions += 1
        client.send_presence(pstatus=self._status or None)
        # Once the server answers a ping sent after the presence, it has
        # processed the presence (a stream is in order): from then on a
        # message to us is delivered live, not stored as offline. Only then
        # do we say we are online.
        await self.confirm(timeout=self._keepalive_timeout)
        log.info("xmpp: online as %s (TLS verified)", client.boundjid.full)
        if self._on_online is not None:
            try:
                await self._on_online()
            except Exception:
                log.exception("xmpp: on_online callback failed")
        keepalive = asyncio.ensure_future(self._keepalive(client, attempt))
        try:
            await self._until_first(attempt)
        finally:
            keepalive.cancel()
            await asyncio.gather(keepalive, return_exceptions=True)
        return True

    async def _setup_session(self, client: ClientXMPP) -> None:
        # Roster before the initial presence (sent by the caller): the server
        # then delivers pending subscription requests, and we answer them.
        await client.get_roster(timeout=self._connect_timeout)
        try:
            await client.plugin["xep_0280"].enable(timeout=self._connect_timeout)
        except (IqError, IqTimeout) as exc:
            # Carbons are a convenience for the owner's other clients; the
            # bot works without them.
            log.warning("xmpp: message carbons not enabled: %s", _iq_reason(exc))

    async def _keepalive(self, client: ClientXMPP, attempt: _Attempt) -> None:
        # slixmpp's own keepalive calls reconnect(), which would fight this
        # loop; here a lost ping just ends the attempt and the loop decides.
        ping = client.plugin["xep_0199"]
        while not attempt.ended.is_set():
            await asyncio.sleep(self._keepalive_interval)
            try:
                await ping.ping(timeout=self._keepalive_timeout)
            except IqTimeout:
                log.warning("xmpp: keepalive ping unanswered for %.0f s: connection is dead",
                            self._keepalive_timeout)
                self._end_attempt(f"keepalive ping unanswered for {self._keepalive_timeout:.0f} s")
                client.abort()
                return
            except IqError:
                pass  # an error reply still proves the server is there

    async def _leave(self, client: ClientXMPP) -> None:
        if client.transport is None:
            return
        try:
            await asyncio.wait_for(client.disconnect(wait=2.0, reason="stopping"), timeout=5.0)
        except Exception as exc:  # leaving must not fail the shutdown (timeouts included)
            log.debug("xmpp: clean disconnect failed: %r", exc)

    async def _teardown(self, client: ClientXMPP) -> None:
        """Make sure the old connection is gone before a new one is made.

        A late 'disconnected' from the previous connection would otherwise be
        taken for the end of the next attempt.
        """
        client.cancel_connection_attempt()
        if client.transport is None:
            return
        closed = client.disconnected
        client.abort()
        try:
            await asyncio.wait_for(asyncio.shield(closed), timeout=5.0)
        except asyncio.TimeoutError:
            # A transport that never reports its close (asyncio does not call
            # connection_lost for every failed handshake) must not hang the
            # loop: forget it ourselves.
            log.debug("xmpp: transport did not report its close; dropping it")
            client.transport = None

    async def _sleep_unless_stopping(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self._stopping.wait(), timeout=seconds)
        except asyncio.TimeoutError:
            pass

    async def _cancel_handlers(self) -> None:
        current = asyncio.current_task()
        tasks = [t for t in self._handlers if t is not current]
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    # -- slixmpp event handlers (synchronous: they run in stanza order) --

    def _install_handlers(self, client: ClientXMPP) -> None:
        client.add_filter("in", self._require_tls)
        client.add_event_handler("session_start", self._ev_session_start)
        client.add_event_handler("disconnected", self._ev_disconnected)
        client.add_event_handler("connection_failed", self._ev_connection_failed)
        client.add_event_handler("ssl_invalid_chain", self._ev_bad_certificate)
        client.add_event_handler("failed_all_auth", self._ev_auth_failed)
        client.add_event_handler("stream_error", self._ev_stream_error)
        client.add_event_handler("roster_subscription_request", self._ev_subscription_request)
        client.register_handler(Callback("homeport messages", StanzaPath("message"), self._ev_message))

    def _require_tls(self, stanza: Any) -> Any:
        if not isinstance(stanza, StreamFeatures) or self._client is None:
            return stanza
        if tls_active(self._client) or "starttls" in stanza["features"]:
            return stanza
        log.error("xmpp: server offers no STARTTLS; refusing to log in without encryption")
        self._end_attempt("server offers no STARTTLS")
        self._client.abort()
        return None  # swallowed: slixmpp never sees the features, so no login

    def _end_attempt(self, reason: str) -> None:
        # Offline at once, not when the loop gets round to it: `send` must
        # not report success for a connection that is already gone.
        self._online = False
        if self._attempt is not None:
            self._attempt.end(reason)

    def _ev_session_start(self, _event: Any) -> None:
        if self._attempt is not None:
            self._attempt.started.set()

    def _ev_disconnected(self, reason: Any) -> None:
        self._end_attempt(str(reason) if reason else "connection closed")

    def _ev_connection_failed(self, error: Any) -> None:
        # slixmpp would retry on its own schedule; our loop owns the backoff.
        if self._client is not None:
            self._client.cancel_connection_attempt()
        self._end_attempt(f"connection failed: {error}")

    def _ev_bad_certificate(self, error: Any) -> None:
        log.error("xmpp: server certificate rejected, not logging in: %s", error)
        self._end_attempt(f"certificate rejected: {error}")
        if self._client is not None:
            self._client.abort()

    def _ev_auth_failed(self, _event: Any) -> None:
        log.error("xmpp: login as %s rejected by the server (wrong password or no such account)",
                  self.own_bare)
        self._end_attempt("login rejected")

    def _ev_stream_error(self, error: Any) -> None:
        log.warning("xmpp: stream error from server: %s %s", error["condition"], error["text"] or "")

    def _ev_subscription_request(self, presence: Presence) -> None:
        client = self._client
        if client is None:
            return
        requester = normalise_jid(str(presence["from"]))
        item = client.roster[client.boundjid.bare][requester]
        if requester in self._owners:
            item.authorize()
            item.subscribe()  # mutual: the bot sees when its owner is around
            log.info("xmpp: approved presence subscription of owner %s", requester)
        else:
            item.unauthorize()
            log.info("xmpp: refused presence subscription of stranger %s", requester)

    def _ev_message(self, msg: StanzaBase) -> None:
        if not isinstance(msg, Message):
            return
        verdict, incoming = to_incoming(msg, self.own_bare)
        if incoming is None:
            level = logging.WARNING if verdict is Verdict.FORGED_CARBON else logging.DEBUG
            log.log(level, "xmpp: dropped message from %s: %s", msg["from"], verdict.value)
            return
        # One task per message: a slow command must not hold up the next one.
        task = asyncio.ensure_future(self._deliver(incoming))
        self._handlers.add(task)
        task.add_done_callback(self._handlers.discard)

    async def _deliver(self, incoming: Incoming) -> None:
        try:
            await self._on_message(incoming)
        except Exception:
            log.exception("xmpp: message handler failed for a message from %s", incoming.sender)


def _iq_reason(exc: Exception) -> str:
    if isinstance(exc, IqTimeout):
        return "no answer"
    if isinstance(exc, IqError):
        return str(exc.iq["error"]["condition"])
    return repr(exc)

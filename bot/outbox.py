"""The outbox: messages for the owners, kept in the state database until the transport has taken them.

Every message the bot sends on its own (alerts, recoveries, notices) is
written here first and marked delivered once the transport accepted it, so
an alert raised while XMPP is down, or just before the bot restarts, is
delivered later instead of lost. Delivery is in the order the messages were
raised; one the owner gets late carries the time it was raised
("[raised 14:02 UTC] …"), because "web crashed" read an hour later means
something else than read now. Late means: it had to wait for a connection
that had been up and went down, or it was raised before the bot restarted,
or it is older than ``LATE_AFTER_S`` anyway (a notice raised while the bot
is still logging in after its start is not late for that alone).

Delivery is at least once: a batch is marked delivered only after the
transport confirms the server has taken it (a ping round trip after the
batch: a stream is in order), so a connection that died silently under the
batch leaves it pending for the next session; a message handed over just
before the bot died, and not yet marked, is sent again after the restart.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timezone

from bot.store import Store

log = logging.getLogger(__name__)

# Delivered this long after being raised, a message says when it was raised.
LATE_AFTER_S = 5.0
# Delivered messages are kept a while (for diagnosis), then pruned.
KEEP_DELIVERED_S = 7 * 86400.0

Send = Callable[[str, str], Awaitable[bool]]
Confirm = Callable[[], Awaitable[bool]]


@dataclass(frozen=True)
class OutboxMessage:
    id: int
    created: float  # unix time it was raised
    recipient: str
    body: str


def raised_mark(created: float, now: float) -> str:
    """``[raised 14:02 UTC]``, with the date when it was not raised today."""
    moment = datetime.fromtimestamp(created, timezone.utc)
    today = datetime.fromtimestamp(now, timezone.utc).date()
    when = moment.strftime("%H:%M") if moment.date() == today else f"{moment.day} {moment:%b %H:%M}"
    return f"[raised {when} UTC]"


def as_delivered(message: OutboxMessage, now: float, late: bool) -> str:
    """The text to send now: marked with the time it was raised when it is late."""
    return f"{raised_mark(message.created, now)} {message.body}" if late else message.body


class Outbox:
    def __init__(self, store: Store, send: Send, *, clock: Callable[[], float] = time.time,
                 late_after: float = LATE_AFTER_S, confirm: Confirm | None = None) -> None:
        self.store = store
        self.send = send
        # Asked after a batch: has the server really taken what we wrote?
        # Without it, "written to the socket" counts as delivered.
        self.confirm = confirm
        self.clock = clock
        self.late_after = late_after
        self._lock = asyncio.Lock()  # one delivery pass at a time keeps the order
        self._started = clock()
        self._held: set[int] = set()  # ids refused by a transport that had been online
        self._was_online = False  # the transport had a session in this run

    def put(self, recipient: str, body: str, raised_at: float | None = None, *, held: bool = False) -> int:
        """Persist one message (not sent yet); returns its id. `held`: the
        transport already refused it, so it counts as late when delivered."""
        created = raised_at if raised_at is not None else self.clock()
        cursor = self.store.db.execute("INSERT INTO outbox (created, recipient, body) VALUES (?, ?, ?)",
                                       (created, recipient, body))
        message_id = int(cursor.lastrowid)
        if held:
            self._held.add(message_id)
        return message_id

    async def post(self, recipient: str, body: str, raised_at: float | None = None) -> int:
        """Persist one message, then deliver whatever is waiting, this one included."""
        message_id = self.put(recipient, body, raised_at)
        await self.flush()
        return message_id

    def pending(self) -> list[OutboxMessage]:
        rows = self.store.db.execute(
            "SELECT id, created, recipient, body FROM outbox WHERE delivered IS NULL ORDER BY id").fetchall()
        return [OutboxMessage(r["id"], r["created"], r["recipient"], r["body"]) for r in rows]

    def connected(self) -> None:
        """The transport has a session (call on every (re)connection, then `flush`)."""
        self._was_online = True

    def is_late(self, message: OutboxMessage, now: float) -> bool:
        return (message.id in self._held or message.created < self._started
                or now - message.created >= self.late_after)

    def _next_after(self, after: int) -> OutboxMessage | None:
        row = self.store.db.execute(
            "SELECT id, created, recipient, body FROM outbox WHERE delivered IS NULL AND id > ? ORDER BY id LIMIT 1",
            (after,)).fetchone()
        return OutboxMessage(row["id"], row["created"], row["recipient"], row["body"]) if row else None

    async def flush(self) -> int:
        """Deliver waiting messages in order until none is left or the transport refuses one.

        Returns how many were delivered. Call it after every (re)connection.
        """
        delivered = 0
        async with self._lock:
            sent: list[tuple[OutboxMessage, float, bool]] = []
            after = 0
            while (message := self._next_after(after)) is not None:
                after = message.id
                now = self.clock()
                late = self.is_late(message, now)
                try:
                    ok = await self.send(message.recipient, as_delivered(message, now, late))
                except Exception:
                    # A message the transport cannot take at all (say, a bad
                    # address) must not block every later one.
                    log.exception("outbox: message %d to %s cannot be sent; dropped", message.id, message.recipient)
                    self.store.db.execute("UPDATE outbox SET delivered=? WHERE id=?", (now, message.id))
                    continue
                if not ok:
                    self._offline()
                    break
                sent.append((message, now, late))
            if sent and self.confirm is not None and not await self.confirm():
                # Not confirmed: they stay pending and go again after the
                # reconnect (at least once beats at most once for alerts),
                # marked late: they were raised in a session that died.
                self._was_online = True
                self._offline()
                sent = []
            for message, now, late in sent:
                self.store.db.execute("UPDATE outbox SET delivered=? WHERE id=?", (now, message.id))
                self._held.discard(message.id)
                self._was_online = True
                delivered += 1
                if late:
                    log.info("outbox: delivered message %d to %s, %.0f s after it was raised",
                             message.id, message.recipient, now - message.created)
            self._prune()
        return delivered

    def _offline(self) -> None:
        pending = self.pending()
        if self._was_online:  # the link went down, rather than not being up yet
            self._held.update(m.id for m in pending)
        waiting = len(pending)
        log.info("outbox: transport offline; %d message%s waiting", waiting, "" if waiting == 1 else "s")

    def _prune(self) -> None:
        self.store.db.execute("DELETE FROM outbox WHERE delivered IS NOT NULL AND delivered < ?",
                              (self.clock() - KEEP_DELIVERED_S,))

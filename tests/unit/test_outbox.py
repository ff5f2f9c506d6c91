"""The outbox (bot.outbox): persisted before sending, delivered in order, late ones marked, kept across restarts."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pytest

from bot.outbox import KEEP_DELIVERED_S, Outbox, OutboxMessage, as_delivered, raised_mark
from bot.store import Store

T0 = datetime(2024, 5, 1, 14, 2, 30, tzinfo=timezone.utc).timestamp()


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class FakeTransport:
    """Records what was sent; `online` decides whether send succeeds."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.online = True
        self.sent: list[tuple[str, str]] = []
        self.pending_seen: list[int] = []

    async def send(self, to: str, text: str) -> bool:
        # What the database holds at the moment of sending: the message must already be there.
        (count,) = self.store.db.execute("SELECT COUNT(*) FROM outbox WHERE delivered IS NULL").fetchone()
        self.pending_seen.append(count)
        if not self.online:
            return False
        self.sent.append((to, text))
        return True


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store(tmp_path / "state")
    yield s
    s.close()


async def test_message_is_persisted_before_it_is_sent_and_marked_after(store: Store) -> None:
    transport = FakeTransport(store)
    outbox = Outbox(store, transport.send, clock=Clock())
    await outbox.post("alice@example.org", "ALERT web: crashed")
    assert transport.pending_seen == [1]  # in the table while being sent
    assert transport.sent == [("alice@example.org", "ALERT web: crashed")]  # on time: no mark
    assert outbox.pending() == []
    (delivered,) = store.db.execute("SELECT delivered FROM outbox").fetchone()
    assert delivered == T0


async def test_offline_messages_wait_and_go_out_in_order_marked_late(store: Store) -> None:
    clock = Clock()
    transport = FakeTransport(store)
    transport.online = False
    outbox = Outbox(store, transport.send, clock=clock)
    await outbox.post("alice@example.org", "first")
    clock.now += 60
    await outbox.post("bob@example.org", "second")
    await outbox.post("alice@example.org", "third")
    assert transport.sent == []
    assert [m.body for m in outbox.pending()] == ["first", "second", "third"]
    transport.online = True
    clock.now = T0 + 3600
    assert await outbox.flush() == 3
    assert transport.sent == [
        ("alice@example.org", "[raised 14:02 UTC] first"),
        ("bob@example.org", "[raised 14:03 UTC] second"),
        ("alice@example.org", "[raised 14:03 UTC] third"),
    ]
    assert outbox.pending() == []
    assert await outbox.flush() == 0  # nothing is sent twice


async def test_held_message_is_marked_even_when_delivered_quickly(store: Store) -> None:
    clock = Clock()
    transport = FakeTransport(store)
    outbox = Outbox(store, transport.send, clock=clock)
    outbox.connected()  # the link was up ...
    transport.online = False  # ... and went down
    await outbox.post("alice@example.org", "web: crashed")
    transport.online = True
    clock.now += 1  # back within a second: still a message that had to wait
    await outbox.flush()
    assert transport.sent == [("alice@example.org", "[raised 14:02 UTC] web: crashed")]


async def test_a_notice_raised_while_first_logging_in_is_not_late_for_that_alone(store: Store) -> None:
    clock = Clock()
    transport = FakeTransport(store)
    transport.online = False  # the bot has just started; no session yet
    outbox = Outbox(store, transport.send, clock=clock)
    await outbox.post("alice@example.org", "startup report")
    transport.online = True
    clock.now += 1
    await outbox.flush()
    assert transport.sent == [("alice@example.org", "startup report")]


async def test_a_stored_reply_counts_as_held(store: Store) -> None:
    clock = Clock()
    transport = FakeTransport(store)
    outbox = Outbox(store, transport.send, clock=clock)
    outbox.put("alice@example.org", "web restarted in 1.2 s", held=True)
    await outbox.flush()
    assert transport.sent == [("alice@example.org", "[raised 14:02 UTC] web restarted in 1.2 s")]


async def test_delivery_stops_at_the_first_refusal(store: Store) -> None:
    transport = FakeTransport(store)
    outbox = Outbox(store, transport.send, clock=Clock())
    outbox.put("alice@example.org", "one")
    outbox.put("alice@example.org", "two")
    transport.online = False
    assert await outbox.flush() == 0
    assert len(transport.pending_seen) == 1  # did not try "two" after "one" was refused


async def test_messages_survive_a_restart(tmp_path: Path) -> None:
    clock = Clock()
    first = Store(tmp_path / "state")
    transport = FakeTransport(first)
    transport.online = False
    await Outbox(first, transport.send, clock=clock).post("alice@example.org", "ALERT db: out of memory")
    first.close()

    clock.now += 2  # a quick restart: late all the same, it was raised by the previous run
    second = Store(tmp_path / "state")
    try:
        transport = FakeTransport(second)
        outbox = Outbox(second, transport.send, clock=clock)
        assert [m.body for m in outbox.pending()] == ["ALERT db: out of memory"]
        assert await outbox.flush() == 1
        assert transport.sent == [("alice@example.org", "[raised 14:02 UTC] ALERT db: out of memory")]
    finally:
        second.close()


async def test_old_delivered_messages_are_pruned(store: Store) -> None:
    clock = Clock()
    transport = FakeTransport(store)
    outbox = Outbox(store, transport.send, clock=clock)
    await outbox.post("alice@example.org", "old")
    clock.now += KEEP_DELIVERED_S + 1
    await outbox.post("alice@example.org", "new")
    bodies = [r["body"] for r in store.db.execute("SELECT body FROM outbox ORDER BY id")]
    assert bodies == ["new"]


def test_raised_mark_names_the_day_when_not_today() -> None:
    assert raised_mark(T0, T0 + 60) == "[raised 14:02 UTC]"
    assert raised_mark(T0, T0 + 86400) == "[raised 1 May 14:02 UTC]"


def test_as_delivered() -> None:
    message = OutboxMessage(1, T0, "a@b", "text")
    assert as_delivered(message, T0 + 100, late=False) == "text"
    assert as_delivered(message, T0 + 100, late=True) == "[raised 14:02 UTC] text"


async def test_unconfirmed_batch_stays_pending_and_goes_again(store: Store) -> None:
    transport = FakeTransport(store)
    confirmed = [False]

    async def confirm() -> bool:
        return confirmed[0]

    outbox = Outbox(store, transport.send, clock=Clock(), confirm=confirm)
    outbox.put("alice@example.org", "ALERT web: crashed")
    outbox.put("alice@example.org", "ALERT db: out of memory")
    assert await outbox.flush() == 0  # written, but the server never answered
    assert [m.body for m in outbox.pending()] == ["ALERT web: crashed", "ALERT db: out of memory"]
    confirmed[0] = True
    assert await outbox.flush() == 2
    assert outbox.pending() == []
    assert [t for _, t in transport.sent][-2:] == [
        "[raised 14:02 UTC] ALERT web: crashed", "[raised 14:02 UTC] ALERT db: out of memory"]


async def test_a_message_the_transport_cannot_take_does_not_block_the_rest(store: Store) -> None:
    transport = FakeTransport(store)

    async def send(to: str, text: str) -> bool:
        if " " in to:
            raise ValueError("invalid JID")
        return await transport.send(to, text)

    outbox = Outbox(store, send, clock=Clock())
    outbox.put("bad jid@example.org", "first")
    outbox.put("alice@example.org", "second")
    assert await outbox.flush() == 1
    assert transport.sent == [("alice@example.org", "second")]
    assert outbox.pending() == []

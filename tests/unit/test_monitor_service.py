"""The monitor service with a fake engine at the engine seam, a real state database and a real outbox.

Covers the decisions around events: what is a crash, what is deliberate,
one OOM alert for a burst of oom events, batching into one message, the
engine's outage, and alert state kept across a restart.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from bot.config import MonitorConfig
from bot.engine import CONTAINER_EVENT, ENGINE_DOWN, ENGINE_UP, EngineEvent, EngineFacts, container_facts
from bot.monitor import service
from bot.monitor.service import Monitor, installed_thresholds, merge_overrides
from bot.outbox import Outbox
from bot.store import Store
from bot.tasks import Tasks
from tests.unit.test_sampler import inspect

OWNER = "alice@example.org"


class FakeEngine:
    def __init__(self) -> None:
        self.events: asyncio.Queue[EngineEvent] = asyncio.Queue()
        self.attrs: dict[str, dict[str, Any]] = {}
        self.intended: set[str] = set()
        self.logs = "starting\nlistening\n"
        self.since: list[int | None] = []

    async def engine_facts(self) -> EngineFacts:
        return EngineFacts("cgroupfs", 1, None)

    async def list_managed(self) -> list:
        return []

    async def inspect_facts(self, ids):
        return {cid: container_facts(self.attrs[cid]) for cid in ids if cid in self.attrs}

    async def stats_once(self, container_id: str):
        raise AssertionError("no running containers in these tests")

    async def log_tail(self, container_id: str, lines: int) -> str:
        return self.logs

    def exit_was_intended(self, container_id: str) -> bool:
        return container_id in self.intended

    async def follow_events(self, since_ns: int | None = None):
        self.since.append(since_ns)
        while True:
            yield await self.events.get()


class Owner:
    """The transport side of the outbox: collects what reaches the owner."""

    def __init__(self) -> None:
        self.messages: list[str] = []
        self.arrived = asyncio.Event()

    async def send(self, to: str, text: str) -> bool:
        self.messages.append(text)
        self.arrived.set()
        return True

    async def next(self, timeout: float = 5.0) -> str:
        await asyncio.wait_for(self.arrived.wait(), timeout)
        self.arrived.clear()
        return self.messages[-1]


@pytest.fixture(autouse=True)
def quick(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(service, "QUIET_S", 0.2)
    monkeypatch.setattr(service, "DIE_SETTLE_S", 0.05)
    monkeypatch.setattr(service, "OOM_GRACE_S", 0.2)


class Rig:
    def __init__(self, tmp_path: Path, engine: FakeEngine | None = None) -> None:
        self.store = Store(tmp_path / "state")
        self.engine = engine or FakeEngine()
        self.owner = Owner()
        self.tasks = Tasks()
        self.outbox = Outbox(self.store, self.owner.send)
        self.monitor = Monitor(self.engine, self.store, self.outbox, [OWNER], MonitorConfig(interval=3600),
                               tmp_path / "state", self.tasks)

    def container(self, cid: str, app: str, **kwargs: Any) -> None:
        self.engine.attrs[cid] = inspect(cid, app=app, state="exited", **kwargs)

    def event(self, action: str, cid: str, app: str, exit_code: int | None = None, health: str | None = None,
              at: datetime | None = None) -> None:
        when = at or datetime.now(timezone.utc)
        self.engine.events.put_nowait(EngineEvent(kind=CONTAINER_EVENT, at=when, action=action, container_id=cid,
                                                  app=app, name=f"{app}-1", exit_code=exit_code, health=health,
                                                  time_ns=int(when.timestamp() * 1e9)))

    async def close(self) -> None:
        await self.tasks.cancel_all()
        self.monitor.close()
        self.store.close()


@pytest.fixture
async def rig(tmp_path: Path):
    made = Rig(tmp_path)
    made.monitor.start()
    yield made
    await made.close()


async def test_unexpected_exit_alerts_with_code_and_logs(rig: Rig) -> None:
    rig.container("a" * 64, "web", exit_code=137)
    rig.event("die", "a" * 64, "web", exit_code=137)
    message = await rig.owner.next()
    assert message == ("ALERT web: web-1 exited with code 137 (SIGKILL); last log lines:\n"
                       "| starting\n| listening")
    assert [v.rule for v in rig.monitor.firing()] == ["exit"]


async def test_deliberate_exits_do_not_alert(rig: Rig) -> None:
    for cid, app in (("a" * 64, "ours"), ("b" * 64, "cli"), ("c" * 64, "gone"), ("d" * 64, "done"),
                     ("e" * 64, "control")):
        rig.container(cid, app, exit_code=137 if app != "done" else 0)
    rig.engine.intended.add("a" * 64)  # homeport stopped it
    rig.event("die", "a" * 64, "ours", 137)
    rig.event("die", "b" * 64, "cli", 137)
    rig.event("stop", "b" * 64, "cli")  # docker stop from the command line
    rig.event("die", "c" * 64, "gone", 137)
    del rig.engine.attrs["c" * 64]  # docker rm -f: inspect finds nothing
    rig.event("die", "d" * 64, "done", 0)  # a finished job (restart policy no)
    rig.event("die", "e" * 64, "control", 1)
    message = await rig.owner.next()
    assert message.startswith("ALERT control: ")
    assert [v.app for v in rig.monitor.firing()] == ["control"]


async def test_oom_burst_then_die_is_one_oom_alert(rig: Rig) -> None:
    rig.container("a" * 64, "db", exit_code=137, memory=32 * 1024**2)
    rig.engine.attrs["a" * 64]["State"]["OOMKilled"] = True
    for _ in range(20):
        rig.event("oom", "a" * 64, "db")
    rig.event("die", "a" * 64, "db", 137)
    message = await rig.owner.next()
    assert message.startswith("ALERT db: db-1 was killed for running out of memory (limit 32 MiB), exit code 137")
    await asyncio.sleep(0.5)  # past the OOM grace: no second message about a process kill
    assert rig.owner.messages == [message]


async def test_oom_without_die_reports_the_killed_process(rig: Rig) -> None:
    rig.engine.attrs["a" * 64] = inspect("a" * 64, app="db", memory=64 * 1024**2)
    rig.event("oom", "a" * 64, "db")
    message = await rig.owner.next()
    assert message.startswith("ALERT db: a process in db-1 was killed for running out of memory (limit 64 MiB); "
                              "the container keeps running")


async def test_alerts_close_together_are_one_message(rig: Rig) -> None:
    rig.container("a" * 64, "web", exit_code=1)
    rig.container("b" * 64, "db", exit_code=2)
    rig.event("die", "a" * 64, "web", 1)
    rig.event("die", "b" * 64, "db", 2)
    message = await rig.owner.next()
    assert message.splitlines()[0] == "2 alerts:"
    assert "ALERT db: db-1 exited with code 2" in message and "ALERT web: web-1 exited with code 1" in message
    assert len(rig.owner.messages) == 1


async def test_unhealthy_event_alerts_at_once(rig: Rig) -> None:
    rig.event("health_status", "a" * 64, "web", health="unhealthy")
    assert await rig.owner.next() == "ALERT web: health check failing (web-1)"


async def test_engine_outage_is_told_when_it_ends(rig: Rig) -> None:
    since = datetime(2024, 5, 1, 14, 2, 3, tzinfo=timezone.utc)
    rig.engine.events.put_nowait(EngineEvent(kind=ENGINE_DOWN, at=since))
    rig.engine.events.put_nowait(EngineEvent(kind=ENGINE_UP, at=since + timedelta(seconds=14),
                                             down_since=since, down_for=14.2))
    message = await rig.owner.next()
    assert message == "RESOLVED Docker engine was down for 14 s (from 14:02:03 UTC); it is back and monitoring goes on"
    assert rig.monitor.engine_down_since is None


async def test_a_long_outage_is_told_while_it_lasts(rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(service, "ENGINE_DOWN_NOTICE_AFTER_S", 0.1)
    since = datetime(2024, 5, 1, 14, 2, 3, tzinfo=timezone.utc)
    rig.engine.events.put_nowait(EngineEvent(kind=ENGINE_DOWN, at=since))
    assert await rig.owner.next() == \
        "ALERT Docker engine not reachable since 14:02:03 UTC; commands and monitoring wait for it"
    assert rig.monitor.engine_down_since == since


async def test_mute_silences_and_unmute_sends_what_was_missed(rig: Rig) -> None:
    rig.monitor.mute("web", timedelta(hours=1))
    rig.container("a" * 64, "web", exit_code=1)
    rig.container("b" * 64, "db", exit_code=1)
    rig.event("die", "a" * 64, "web", 1)
    rig.event("die", "b" * 64, "db", 1)
    assert (await rig.owner.next()).startswith("ALERT db: ")
    assert [(v.app, v.muted) for v in rig.monitor.firing()] == [("db", False), ("web", True)]
    assert rig.monitor.unmute("web") is True
    late = await rig.owner.next()
    assert late.startswith("ALERT web: web-1 exited with code 1") and "was muted" in late
    assert rig.monitor.unmute("web") is False


async def test_alert_state_survives_a_restart(tmp_path: Path) -> None:
    first = Rig(tmp_path)
    first.monitor.start()
    first.container("a" * 64, "web", exit_code=1)
    first.event("die", "a" * 64, "web", 1)
    await first.owner.next()
    first.monitor.mute("db", timedelta(hours=2))
    await first.close()

    second = Rig(tmp_path)
    try:
        assert [(v.app, v.rule) for v in second.monitor.firing()] == [("web", "exit")]
        assert list(second.monitor.mutes()) == ["db"]
    finally:
        await second.close()


async def test_events_resume_after_the_last_one_seen_and_old_exits_say_when(tmp_path: Path) -> None:
    first = Rig(tmp_path)
    first.monitor.start()
    first.container("a" * 64, "web", exit_code=1)
    first.event("die", "a" * 64, "web", 1)
    await first.owner.next()
    await first.close()

    second = Rig(tmp_path)
    second.monitor.start()
    try:
        await asyncio.sleep(0.05)
        seen = second.store.get(service.EVENTS_KEY)
        assert second.engine.since == [seen + 1]  # resumes right after the last event handled
        # An exit that happened while the bot was down arrives replayed, with its time.
        second.container("b" * 64, "db", exit_code=3)
        at = datetime.now(timezone.utc) - timedelta(minutes=5)
        second.event("die", "b" * 64, "db", 3, at=at)
        message = await second.owner.next()
        assert message.startswith(f"ALERT db: at {at:%H:%M:%S} UTC, db-1 exited with code 3"), message
    finally:
        await second.close()


def test_config_thresholds_override_the_catalogs() -> None:
    merged = merge_overrides({"wiki": {"cpu_percent": 150, "cpu_for": "10m"}, "blog": {"memory_percent": 80}},
                             {"wiki": {"cpu_percent": 200}})
    assert merged == {"wiki": {"cpu_percent": 200, "cpu_for": "10m"}, "blog": {"memory_percent": 80}}


def test_catalog_alerts_become_per_app_thresholds(tmp_path: Path) -> None:
    from bot.catalog import Alerts

    records = [SimpleNamespace(app="wiki", entry=SimpleNamespace(alerts=Alerts(cpu_percent=150.0, duration=600.0))),
               SimpleNamespace(app="blog", entry=SimpleNamespace(alerts=None))]
    installs = SimpleNamespace(all=lambda: records)
    assert installed_thresholds(installs) == {"wiki": {"cpu_percent": 150.0, "cpu_for": 600.0, "memory_for": 600.0}}
    store = Store(tmp_path / "state")
    try:
        config = MonitorConfig(interval=10, thresholds={"memory_percent": 80}, apps={"wiki": {"cpu_percent": 300}})
        monitor = Monitor(FakeEngine(), store, Outbox(store, Owner().send), [OWNER], config, tmp_path, Tasks(),
                          catalog_thresholds=lambda: installed_thresholds(installs))
        wiki = monitor.book.policy.for_app("wiki")
        # The owner's config wins over the catalog; the catalog's `for` applies to both rules.
        assert (wiki.cpu_percent, wiki.cpu_for, wiki.memory_for, wiki.memory_percent) == \
            (300.0, timedelta(minutes=10), timedelta(minutes=10), 80.0)
        assert monitor.book.policy.for_app("blog").cpu_for == timedelta(minutes=5)
    finally:
        store.close()

"""`status` from the monitor's latest sample, and the `alerts`/`mute` commands, with a fake monitor."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from types import SimpleNamespace
from typing import Any

import pytest

from bot.commandkit import Context, Registry, UnknownApp
from bot.errors import UserError
from bot.monitor.alerts import AlertView
from bot.monitor.snapshot import Snapshot
from bot.replies import render
from commands import alerts, figures, lifecycle
from tests.unit.monitor_samples import GiB, MiB, container, host



class FakeMonitor:
    def __init__(self, samples: list, latest: Snapshot | None, firing: list[AlertView] | None = None) -> None:
        self.samples = samples
        self.latest = latest
        self._firing = firing or []
        self._mutes: dict[str, datetime] = {}
        self.asked: list[str | None] = []

    async def current(self, app: str | None = None) -> list:
        self.asked.append(app)
        return [s for s in self.samples if app is None or s.app == app]

    def firing(self) -> list[AlertView]:
        return self._firing

    def mutes(self) -> dict[str, datetime]:
        return self._mutes

    def mute(self, target: str, duration: timedelta) -> datetime:
        self._mutes[target] = datetime.now(timezone.utc) + duration
        return self._mutes[target]

    def unmute(self, target: str) -> bool:
        return self._mutes.pop(target, None) is not None


class NoStatsEngine:
    """`status` must not ask the engine for anything but, on errors, the app names."""

    async def apps(self) -> dict[str, list]:
        return {"web": [], "db": []}

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"status asked the engine for {name}")


def ctx(monitor: FakeMonitor) -> Context:
    services = SimpleNamespace(monitor=monitor, engine=NoStatsEngine())

    async def nothing(_: Any) -> None:
        return None

    return Context(sender="alice@example.org", services=services, registry=Registry([]), reply=nothing, ask=nothing)


def samples() -> list:
    up = datetime.now(timezone.utc) - timedelta(hours=2, minutes=5, seconds=1)
    return [
        container("db", service="main", name="db-main-1", id="db0000000000ffff", cpu_percent=2.5,
                  mem_used=300 * MiB, mem_limit=1 * GiB, image="postgres:16.2", started_at=up),
        container("web", service="app", name="web-app-1", id="web000000000ffff", cpu_percent=40.0,
                  mem_used=100 * MiB, mem_limit=None, image="ghost:5.96.0", started_at=up),
        container("web", service="worker", name="web-worker-1", id="web111111111ffff", cpu_percent=12.0,
                  mem_used=50 * MiB, mem_limit=256 * MiB, image="ghost:5.96.0", started_at=up),
        container("old", state="exited", exit_code=1, cpu_percent=None, mem_used=None, image="old:1"),
    ]


async def test_status_lists_apps_with_figures_from_the_sample() -> None:
    snapshot = Snapshot(taken_at=datetime.now(timezone.utc) - timedelta(seconds=4), containers=tuple(samples()),
                        host=host(mem_percent=25))
    firing = [AlertView("cpu", "web", "firing", datetime.now(timezone.utc), "CPU high", 99.0, True, False, 1)]
    text = render(await lifecycle.status(ctx(FakeMonitor(samples(), snapshot, firing)), None))[0]
    lines = text.splitlines()
    assert lines[0] == "host: cpu 12% · mem 4 GiB of 16 GiB (25%) · disk 40% · 1 alert firing (`alerts`)"
    assert lines[1].split() == ["app", "state", "up", "version", "cpu", "mem"]
    assert lines[2].split() == ["db", "running", "2h", "5m", "16.2", "2.5%", "300MiB"]
    assert lines[3].split() == ["old", "exited", "(1)", "-", "1", "-", "-"]
    assert lines[4].split() == ["web", "running", "2h", "5m", "5.96.0", "52%", "150MiB"]


async def test_status_before_the_first_sample_says_so() -> None:
    bare = [container("web", cpu_percent=None, mem_used=None, mem_limit=None)]
    text = render(await lifecycle.status(ctx(FakeMonitor(bare, None)), None))[0]
    assert text.splitlines()[0] == "(no figures yet: the first sample is being taken)"
    assert text.splitlines()[2].split()[-2:] == ["-", "-"]


async def test_status_of_one_app_shows_each_container() -> None:
    snapshot = Snapshot(taken_at=datetime.now(timezone.utc) - timedelta(seconds=4), containers=tuple(samples()),
                        host=host())
    monitor = FakeMonitor(samples(), snapshot)
    text = render(await lifecycle.status(ctx(monitor), "web"))[0]
    lines = text.splitlines()
    assert lines[0] == "web: running (figures from 4s ago)"
    assert "cpu 40%" in lines[1] and "mem 100 MiB (no limit)" in lines[1]
    assert "cpu 12%" in lines[2] and "mem 50 MiB of 256 MiB (20%)" in lines[2]
    assert monitor.asked == ["web"]
    with pytest.raises(UnknownApp, match="did you mean web"):
        await lifecycle.status(ctx(monitor), "wbe")


async def test_alerts_mute_unmute() -> None:
    since = datetime.now(timezone.utc) - timedelta(minutes=3)
    firing = [AlertView("exit", "web", "firing", since, "web-1 exited with code 1\n| boom", 1.0, True, False, 2)]
    monitor = FakeMonitor(samples(), None, firing)
    text = render(await alerts.alerts(ctx(monitor)))[0]
    assert text.splitlines()[0] == "1 alert firing:"
    assert text.splitlines()[2].split() == ["web", "crash", "for", "3m,", "2×", "web-1", "exited", "with", "code", "1"]
    reply = await alerts.mute(ctx(monitor), "web", timedelta(minutes=30))
    assert reply.body.startswith("Muted alerts about web until ") and "(in 30m)" in reply.body
    assert "muted: web until" in render(await alerts.alerts(ctx(monitor)))[0]
    with pytest.raises(UnknownApp):
        await alerts.mute(ctx(monitor), "nosuch", timedelta(hours=1))
    assert (await alerts.unmute(ctx(monitor), "web")).body == "Alerts about web are on again."
    with pytest.raises(UserError, match="web is not muted"):
        await alerts.unmute(ctx(monitor), "web")
    quiet = FakeMonitor([], None)
    assert render(await alerts.alerts(ctx(quiet))) == ["No alerts firing."]


def test_compact_figures() -> None:
    assert figures.percent(3.25) == "3.2%" and figures.percent(153.4) == "153%"
    assert figures.compact_size(1536 * MiB) == "1.5GiB"

"""The sampler's pure parts and one tick against a fake engine and real cgroup fixture files.

Docker's formats (list entries, inspect output, stats answers, events) are
parsed in bot.engine; those parsers are tested here too, with the shapes
Docker 20.10 returns (captured on the CI machine).
"""

from __future__ import annotations

import json
import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from bot.engine import (
    CONTAINER_EVENT,
    ContainerSummary,
    EngineFacts,
    StatsFigures,
    _since_text,
    container_facts,
    container_summary,
    engine_event,
    engine_facts,
    stats_figures,
)
from bot.monitor.cgroups import CgroupReader
from bot.monitor.sampler import Figures, Sampler, sample_of, stale_ids, stats_limit

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "cgroups" / "v1"
BURNER = "5e437d66292d7c20a642fedae064fbd2e3b704c86885ec357a222b5cb500665f"
NOLIMIT = "8a6f3f2bced7fa4f972e9bd55d478ee3d33dfa8ab01eebc6afd4dcc05fc06f09"
UNSEEN = "f" * 64  # a running container whose cgroup is not visible
MiB = 1024**2


def summary(cid: str, app: str = "web", state: str = "running", status: str = "Up 5 minutes") -> dict[str, Any]:
    return {"Id": cid, "Names": [f"/{app}-{cid[:4]}"], "Image": "hp-test/busybox:1", "State": state,
            "Status": status, "Labels": {"homeport.app": app}}


def inspect(cid: str, app: str = "web", state: str = "running", exit_code: int = 0, memory: int = 0,
            policy: str = "no", health: str | None = None) -> dict[str, Any]:
    return {
        "Id": cid,
        "Name": f"/{app}-{cid[:4]}",
        "Image": "sha256:e477",
        "RestartCount": 0,
        "Config": {"Image": "hp-test/busybox:1", "Labels": {"homeport.app": app, "homeport.service": "main"}},
        "State": {"Status": state, "Pid": 0, "ExitCode": exit_code, "OOMKilled": False,
                  "StartedAt": "2024-05-01T12:00:00.123456789Z", "FinishedAt": "0001-01-01T00:00:00Z",
                  **({"Health": {"Status": health}} if health else {})},
        "HostConfig": {"Memory": memory, "RestartPolicy": {"Name": policy}, "CgroupParent": ""},
    }


# -- Docker's formats -------------------------------------------------------------


@pytest.mark.parametrize("status, health", [
    ("Up 3 seconds (healthy)", "healthy"),
    ("Up 2 minutes (unhealthy)", "unhealthy"),
    ("Up 1 second (health: starting)", "starting"),
    ("Up 2 hours", None),
    ("Exited (3) 3 seconds ago", None),
])
def test_health_is_read_from_the_list_status_text(status: str, health: str | None) -> None:
    parsed = container_summary(summary("a" * 64, status=status))
    assert parsed.health == health
    assert parsed.name == "web-aaaa" and parsed.app == "web"
    assert parsed.change_key == ("running", health)


def test_inspect_facts_carry_what_the_cgroup_reader_needs() -> None:
    attrs = inspect("b" * 64, memory=64 * MiB, policy="unless-stopped")
    attrs["State"]["Pid"] = 4242
    attrs["HostConfig"]["CgroupParent"] = "/custom"
    facts = container_facts(attrs)
    assert (facts.pid, facts.cgroup_parent, facts.restart_policy, facts.mem_limit) == \
        (4242, "/custom", "unless-stopped", 64 * MiB)
    assert facts.info.app == "web" and facts.info.state == "running"
    unlimited = container_facts(inspect("c" * 64))
    assert (unlimited.pid, unlimited.cgroup_parent, unlimited.mem_limit) == (None, None, None)


def test_engine_facts() -> None:
    info = {"CgroupDriver": "cgroupfs", "CgroupVersion": "1", "DockerRootDir": "/var/lib/docker"}
    assert engine_facts(info) == EngineFacts("cgroupfs", 1, "/var/lib/docker")
    assert engine_facts({"CgroupDriver": "none"}) == EngineFacts(None, None, None)


def test_stats_figures_match_docker_stats_arithmetic() -> None:
    raw = json.loads((FIXTURES / "docker-stats" / "hpmon-fixture.json").read_text())
    figures = stats_figures(raw)
    # usage minus total_inactive_file, as the docker CLI shows it
    assert figures.mem_used == 585728 - 36864
    assert figures.mem_limit == 64 * MiB
    assert figures.cpu_percent is None  # the fixture holds one sample only
    raw["precpu_stats"] = {"cpu_usage": {"total_usage": 255282448117 - 500_000_000},
                           "system_cpu_usage": 2277270000000 - 2_000_000_000}
    # 0.5 s of CPU over 2 s of system time (both cores) = a quarter of the machine = 50 % of one core
    assert stats_figures(raw).cpu_percent == pytest.approx(50.0)


def test_docker_event_parsing() -> None:
    die = {"Type": "container", "Action": "die", "timeNano": 1796399502145179158,
           "Actor": {"ID": "d" * 64, "Attributes": {"homeport.app": "web", "name": "web-main", "exitCode": "137"}}}
    event = engine_event(die)
    assert event is not None
    assert (event.kind, event.action, event.app, event.name, event.exit_code) == \
        (CONTAINER_EVENT, "die", "web", "web-main", 137)
    assert event.at == datetime.fromtimestamp(1796399502.145179158, timezone.utc)
    health = {**die, "Action": "health_status: unhealthy"}
    parsed = engine_event(health)
    assert parsed is not None and (parsed.action, parsed.health) == ("health_status", "unhealthy")
    stranger = {**die, "Actor": {"ID": "x", "Attributes": {"name": "not-ours"}}}
    assert engine_event(stranger) is None
    assert engine_event({**die, "Type": "network"}) is None


def test_since_keeps_nanoseconds() -> None:
    assert _since_text(1796399502145179158) == "1796399502.145179158"
    assert _since_text(1796399502000000001) == "1796399502.000000001"


# -- the sampler's pure parts --------------------------------------------------------


def test_only_new_changed_or_marked_containers_are_inspected() -> None:
    listed = [container_summary(summary("a" * 64)), container_summary(summary("b" * 64)),
              container_summary(summary("c" * 64, state="exited", status="Exited (1) 2 seconds ago"))]
    known = {"a" * 64: ("running", None), "b" * 64: ("running", "healthy"), "c" * 64: ("running", None)}
    # b: health changed; c: state changed; d would be new; a: marked by an event
    assert stale_ids(listed, known, set()) == ["b" * 64, "c" * 64]
    assert stale_ids(listed, known, {"a" * 64}) == ["a" * 64, "b" * 64, "c" * 64]


def test_figures_only_for_running_containers() -> None:
    figures = Figures(cpu_percent=12.5, mem_used=10 * MiB, mem_limit=64 * MiB, pids=3)
    running = sample_of(container_facts(inspect("a" * 64)), figures)
    assert (running.cpu_percent, running.mem_used, running.mem_percent) == (12.5, 10 * MiB, pytest.approx(15.625))
    exited = sample_of(container_facts(inspect("a" * 64, state="exited", exit_code=3)), figures)
    assert (exited.cpu_percent, exited.mem_used, exited.exit_code) == (None, None, 3)


def test_stats_limit_treats_the_hosts_memory_as_no_limit() -> None:
    host = 24 * 1024 * MiB
    assert stats_limit(host, None, host) is None
    assert stats_limit(64 * MiB, None, host) == 64 * MiB
    assert stats_limit(host, 128 * MiB, host) == 128 * MiB  # the configured limit wins
    assert stats_limit(None, None, host) is None


# -- one sampler against a fake engine -------------------------------------------------


class FakeEngine:
    def __init__(self) -> None:
        self.listing: dict[str, dict[str, Any]] = {}
        self.attrs: dict[str, dict[str, Any]] = {}
        self.inspected: list[str] = []
        self.stats_asked: list[str] = []

    def add(self, cid: str, **kwargs: Any) -> None:
        self.attrs[cid] = inspect(cid, **kwargs)
        state = kwargs.get("state", "running")
        self.listing[cid] = summary(cid, state=state, status="Up 1 hour" if state == "running" else "Exited (0)")

    async def engine_facts(self) -> EngineFacts:
        return EngineFacts("cgroupfs", 1, None)

    async def list_managed(self) -> list[ContainerSummary]:
        return [container_summary(item) for item in self.listing.values()]

    async def inspect_facts(self, ids):
        self.inspected.extend(ids)
        return {cid: container_facts(self.attrs[cid]) for cid in ids if cid in self.attrs}

    async def stats_once(self, container_id: str) -> StatsFigures:
        self.stats_asked.append(container_id)
        return StatsFigures(cpu_percent=3.0, mem_used=5 * MiB, mem_limit=1 << 50, pids=2)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def cgroup_root(tmp_path: Path) -> Path:
    root = tmp_path / "cgroup"
    shutil.copytree(FIXTURES, root, ignore=shutil.ignore_patterns("docker-stats", "unified"))
    return root


async def test_a_tick_reads_cgroups_inspects_once_and_falls_back_to_stats(cgroup_root: Path, tmp_path: Path) -> None:
    engine = FakeEngine()
    engine.add(BURNER, app="burn")
    engine.add(NOLIMIT, app="plain")
    engine.add(UNSEEN, app="hidden")
    engine.add("e" * 64, app="done", state="exited")
    clock = Clock()
    sampler = Sampler(engine, tmp_path, interval=10, reader=CgroupReader(cgroup_root, proc=tmp_path / "noproc"),
                      clock=clock)

    first = await sampler.tick()
    assert sorted(engine.inspected) == sorted(engine.attrs)
    by_app = {s.app: s for s in first.containers}
    assert by_app["burn"].mem_limit == 64 * MiB and by_app["burn"].cpu_percent is None  # one reading: no CPU yet
    assert by_app["plain"].mem_limit is None
    assert by_app["hidden"].mem_used == 5 * MiB and by_app["hidden"].mem_limit is None  # stats API fallback
    assert engine.stats_asked == [UNSEEN]
    assert by_app["done"].mem_used is None
    assert first.host is not None and first.host.mem_total > 0

    # Ten seconds and five CPU seconds later: 50 % of one core.
    usage = cgroup_root / "cpuacct" / "docker" / BURNER / "cpuacct.usage"
    usage.write_text(str(int(usage.read_text()) + 5_000_000_000))
    clock.now += 10
    engine.inspected.clear()
    second = await sampler.tick()
    assert engine.inspected == []  # nothing changed: the list call was all
    burn = next(s for s in second.containers if s.app == "burn")
    assert burn.cpu_percent == pytest.approx(50.0, abs=0.01)
    assert sampler.latest is second

    # An event marks a container; a changed state shows in the list: both inspected again.
    sampler.invalidate(NOLIMIT)
    engine.listing[BURNER] = summary(BURNER, app="burn", state="exited", status="Exited (137) 1 second ago")
    engine.attrs[BURNER] = inspect(BURNER, app="burn", state="exited", exit_code=137)
    current = await sampler.current("burn")
    assert sorted(engine.inspected) == sorted([NOLIMIT, BURNER])
    assert [(s.state, s.exit_code, s.cpu_percent) for s in current] == [("exited", 137, None)]

    # A removed container leaves the snapshot.
    del engine.listing[UNSEEN]
    third = await sampler.tick()
    assert "hidden" not in third.apps

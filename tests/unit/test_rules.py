"""Thresholds and the pure rule functions (bot.monitor.rules)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from bot.monitor.rules import (
    CPU,
    EXIT,
    HOST,
    HOST_DISK,
    HOST_MEMORY,
    MEMORY,
    OOM,
    RESTART_LOOP,
    UNHEALTHY,
    Condition,
    ThresholdPolicy,
    Thresholds,
    evaluate,
)
from bot.monitor.snapshot import Snapshot
from tests.unit.monitor_samples import T0, GiB, MiB, container, host, snapshot


def by_key(conditions: list[Condition]) -> dict[tuple[str, str], Condition]:
    keys = [(c.rule, c.app) for c in conditions]
    assert len(keys) == len(set(keys)), "one condition per (rule, app)"
    return {(c.rule, c.app): c for c in conditions}


def test_calm_app_is_inactive_and_clear() -> None:
    found = by_key(evaluate(snapshot(T0, container()), Thresholds()))
    assert set(found) == {(r, "web") for r in (CPU, MEMORY, UNHEALTHY, EXIT, OOM, RESTART_LOOP)}
    for condition in found.values():
        assert not condition.active
        assert condition.clear


def test_cpu_above_threshold() -> None:
    snap = snapshot(T0, container(cpu_percent=97.4))
    cpu = by_key(evaluate(snap))[(CPU, "web")]
    assert cpu.active and not cpu.clear
    assert cpu.value == pytest.approx(97.4)
    assert cpu.threshold == 90.0
    assert cpu.hold == timedelta(minutes=5)
    assert "97%" in cpu.detail and "5m" in cpu.detail


def test_cpu_is_per_core_so_two_busy_cores_count() -> None:
    cpu = by_key(evaluate(snapshot(T0, container(cpu_percent=185.0))))[(CPU, "web")]
    assert cpu.active and cpu.value == 185.0


def test_cpu_uses_the_busiest_container_and_names_it() -> None:
    snap = snapshot(
        T0,
        container(name="web-db-1", service="db", cpu_percent=20.0),
        container(name="web-worker-1", service="worker", cpu_percent=99.0),
    )
    cpu = by_key(evaluate(snap))[(CPU, "web")]
    assert cpu.active and cpu.value == 99.0
    assert "web-worker-1" in cpu.detail


def test_hysteresis_band() -> None:
    t = Thresholds(cpu_percent=90, margin=5)
    inside = by_key(evaluate(snapshot(T0, container(cpu_percent=87.0)), t))[(CPU, "web")]
    assert not inside.active and not inside.clear  # below threshold, not clearly
    assert inside.clear_after == t.clear_after
    below = by_key(evaluate(snapshot(T0, container(cpu_percent=84.9)), t))[(CPU, "web")]
    assert not below.active and below.clear


def test_missing_figures_of_a_running_container_are_no_news() -> None:
    found = by_key(evaluate(snapshot(T0, container(cpu_percent=None, mem_used=None))))
    assert (CPU, "web") not in found
    assert (MEMORY, "web") not in found


def test_stopped_app_clears_resource_rules() -> None:
    found = by_key(evaluate(snapshot(T0, container(state="exited", exit_code=0, cpu_percent=None, mem_used=None))))
    assert found[(CPU, "web")].clear and found[(CPU, "web")].detail == "not running"
    assert found[(MEMORY, "web")].clear


def test_memory_percent_of_own_limit() -> None:
    snap = snapshot(T0, container(mem_used=61 * MiB, mem_limit=64 * MiB))
    memory = by_key(evaluate(snap))[(MEMORY, "web")]
    assert memory.active
    assert memory.value == pytest.approx(61 / 64 * 100)
    assert memory.hold == timedelta(minutes=2)
    assert "61 MiB of 64 MiB" in memory.detail


def test_memory_without_limit_is_not_judged_per_container() -> None:
    snap = snapshot(T0, container(mem_used=60 * GiB, mem_limit=None))
    memory = by_key(evaluate(snap))[(MEMORY, "web")]
    assert not memory.active and memory.clear
    assert memory.detail == "no memory limit"


def test_per_app_overrides_and_switching_off() -> None:
    policy = ThresholdPolicy.from_config(
        defaults={"cpu_for": "1m"},
        per_app={"batch": {"cpu_percent": None}, "db": {"memory_percent": 50, "memory_for": 30}},
    )
    snap = snapshot(
        T0,
        container("batch", cpu_percent=400.0),
        container("db", mem_used=600 * MiB, mem_limit=1 * GiB),
        container("web", cpu_percent=95.0, mem_used=600 * MiB, mem_limit=1 * GiB),
    )
    found = by_key(evaluate(snap, policy))
    assert not found[(CPU, "batch")].active and found[(CPU, "batch")].clear
    assert found[(MEMORY, "db")].active
    assert found[(MEMORY, "db")].hold == timedelta(seconds=30)
    assert not found[(MEMORY, "web")].active  # 58.6 % is fine under the default 90
    assert found[(CPU, "web")].active
    assert found[(CPU, "web")].hold == timedelta(minutes=1)  # global override reaches every app


def test_unhealthy_is_immediate_and_clears_only_when_healthy() -> None:
    sick = by_key(evaluate(snapshot(T0, container(health="unhealthy"))))[(UNHEALTHY, "web")]
    assert sick.active and sick.hold == timedelta(0)
    assert "web-main-1" in sick.detail
    starting = by_key(evaluate(snapshot(T0, container(health="starting"))))[(UNHEALTHY, "web")]
    assert not starting.active and not starting.clear
    healthy = by_key(evaluate(snapshot(T0, container(health="healthy"))))[(UNHEALTHY, "web")]
    assert not healthy.active and healthy.clear
    assert healthy.clear_after is None


@pytest.mark.parametrize(
    ("fields", "steady"),
    [
        ({"started_at": T0 - timedelta(minutes=3)}, True),
        ({"started_at": T0 - timedelta(seconds=30)}, False),
        ({"state": "restarting"}, False),
        ({"state": "exited", "exit_code": 1}, False),
        ({"state": "exited", "exit_code": 0}, True),
        ({"state": "dead"}, False),
        ({"state": "running", "started_at": None}, False),
    ],
)
def test_event_rules_get_their_all_clear_only_when_steady(fields: dict, steady: bool) -> None:
    found = by_key(evaluate(snapshot(T0, container(**fields))))
    for rule in (EXIT, OOM, RESTART_LOOP):
        assert not found[(rule, "web")].active  # never raised from a snapshot
        assert found[(rule, "web")].clear is steady
        assert found[(rule, "web")].clear_after is None


def test_one_flapping_container_keeps_the_app_unsteady() -> None:
    snap = snapshot(T0, container(service="a"), container(service="b", name="web-b-1", state="restarting"))
    assert not by_key(evaluate(snap))[(EXIT, "web")].clear


def test_host_disk_names_the_full_filesystem() -> None:
    snap = snapshot(T0, host_sample=host(docker_disk_percent=93.0, state_disk_percent=40.0))
    found = by_key(evaluate(snap))
    disk = found[(HOST_DISK, HOST)]
    assert disk.active and disk.value == pytest.approx(93.0)
    assert disk.hold == timedelta(0)
    assert "/var/lib/docker" in disk.detail and "/var/lib/homeport" not in disk.detail
    assert "GiB free" in disk.detail
    assert not found[(HOST_MEMORY, HOST)].active


def test_host_disk_when_both_are_full() -> None:
    snap = snapshot(T0, host_sample=host(docker_disk_percent=95.0, state_disk_percent=91.0))
    disk = by_key(evaluate(snap))[(HOST_DISK, HOST)]
    assert disk.value == pytest.approx(95.0)
    assert "/var/lib/docker" in disk.detail and "/var/lib/homeport" in disk.detail


def test_host_memory() -> None:
    snap = snapshot(T0, host_sample=host(mem_percent=96.0))
    mem = by_key(evaluate(snap))[(HOST_MEMORY, HOST)]
    assert mem.active and mem.value == pytest.approx(96.0, abs=0.01)
    assert mem.hold == timedelta(minutes=2)


def test_no_host_sample_means_no_host_conditions() -> None:
    found = by_key(evaluate(snapshot(T0, container())))
    assert not any(app == HOST for _, app in found)
    no_disks = by_key(evaluate(snapshot(T0, host_sample=host(docker_disk_percent=None, state_disk_percent=None))))
    assert (HOST_DISK, HOST) not in no_disks


def test_empty_snapshot() -> None:
    assert evaluate(Snapshot(taken_at=T0)) == []


# -- thresholds from config ---------------------------------------------------------


def test_thresholds_defaults() -> None:
    t = Thresholds()
    assert (t.cpu_percent, t.cpu_for) == (90.0, timedelta(minutes=5))
    assert (t.memory_percent, t.memory_for) == (90.0, timedelta(minutes=2))
    assert t.disk_percent == 90.0 and t.host_memory_percent == 90.0


def test_with_overrides_converts_config_values() -> None:
    t = Thresholds().with_overrides({"cpu_percent": 150, "cpu_for": "10m", "memory_for": 45, "restart_loop_count": 5})
    assert t.cpu_percent == 150.0
    assert t.cpu_for == timedelta(minutes=10)
    assert t.memory_for == timedelta(seconds=45)
    assert t.restart_loop_count == 5


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"cpu": 80}, "unknown threshold 'cpu'"),
        ({"cpu_for": "soon"}, "cpu_for"),
        ({"cpu_for": True}, "duration"),
        ({"memory_percent": 120}, "between 0 and 100"),
        ({"memory_percent": "high"}, "number"),
        ({"restart_loop_count": 1}, "at least 2"),
        ({"restart_loop_count": 2.5}, "whole number"),
        ({"margin": -1}, "margin"),
    ],
)
def test_with_overrides_refuses_bad_values(overrides: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Thresholds().with_overrides(overrides)


def test_host_thresholds_cannot_be_set_per_app() -> None:
    with pytest.raises(ValueError, match="only be set globally"):
        ThresholdPolicy.from_config(per_app={"web": {"disk_percent": 80}})

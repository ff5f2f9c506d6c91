"""Builders for monitoring snapshots in unit tests: plain values, no Docker."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from bot.monitor.host import DiskUsage
from bot.monitor.snapshot import ContainerSample, HostSample, Snapshot

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
MiB = 1024**2
GiB = 1024**3


def container(app: str = "web", **overrides: Any) -> ContainerSample:
    fields: dict[str, Any] = {
        "app": app,
        "service": "main",
        "name": f"{app}-main-1",
        "id": f"{app}0123456789",
        "state": "running",
        "exit_code": 0,
        "health": None,
        "restart_count": 0,
        "started_at": T0 - timedelta(days=1),
        "cpu_percent": 5.0,
        "mem_used": 100 * MiB,
        "mem_limit": 1 * GiB,
        "pids": 3,
    }
    fields.update(overrides)
    return ContainerSample(**fields)


def disk(path: str, percent_used: float, total: int = 100 * GiB) -> DiskUsage:
    used = int(total * percent_used / 100)
    return DiskUsage(path=path, total=total, used=used, free=total - used)


def host(
    mem_percent: float = 30.0,
    docker_disk_percent: float | None = 40.0,
    state_disk_percent: float | None = 40.0,
) -> HostSample:
    total = 16 * GiB
    return HostSample(
        cpu_percent=12.0,
        mem_used=int(total * mem_percent / 100),
        mem_total=total,
        docker_disk=disk("/var/lib/docker", docker_disk_percent) if docker_disk_percent is not None else None,
        state_disk=disk("/var/lib/homeport", state_disk_percent) if state_disk_percent is not None else None,
    )


def snapshot(at: datetime, *containers: ContainerSample, host_sample: HostSample | None = None) -> Snapshot:
    return Snapshot(taken_at=at, containers=tuple(containers), host=host_sample)

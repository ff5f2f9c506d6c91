"""The shape of one monitoring sample: every managed container and the host at one moment.

The sampler produces a ``Snapshot`` each tick; ``status`` answers from the
latest one and the rules judge it. It holds plain values only (no Docker
objects), so it can be built by hand in tests and kept without holding on to
any connection.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from bot.monitor.host import DiskUsage

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ContainerSample:
    app: str
    service: str
    name: str
    id: str
    state: str  # Docker's: created, running, paused, restarting, removing, exited, dead
    exit_code: int | None
    health: str | None  # starting, healthy, unhealthy; None without a health check
    restart_count: int
    started_at: datetime | None
    cpu_percent: float | None  # of one core, like docker stats; None when not measured
    mem_used: int | None  # bytes, without inactive page cache
    mem_limit: int | None  # bytes; None when unlimited
    pids: int | None
    image: str = ""  # the reference it was created from, for `status`
    oom_killed: bool = False  # Docker's State.OOMKilled of its last exit

    @property
    def running(self) -> bool:
        return self.state == "running"

    @property
    def mem_percent(self) -> float | None:
        if self.mem_used is None or not self.mem_limit:
            return None
        return self.mem_used / self.mem_limit * 100.0

    def uptime(self, now: datetime) -> timedelta | None:
        if self.state != "running" or self.started_at is None:
            return None
        return max(now - self.started_at, timedelta(0))


@dataclass(frozen=True)
class HostSample:
    cpu_percent: float | None  # of the whole machine (0-100); None on the first tick
    mem_used: int  # bytes (MemTotal - MemAvailable)
    mem_total: int  # bytes
    docker_disk: DiskUsage | None = None  # the filesystem of Docker's data root
    state_disk: DiskUsage | None = None  # the filesystem of homeport's state_dir

    @property
    def mem_percent(self) -> float:
        return self.mem_used / self.mem_total * 100.0 if self.mem_total else 0.0

    @property
    def disks(self) -> tuple[DiskUsage, ...]:
        return tuple(disk for disk in (self.docker_disk, self.state_disk) if disk is not None)


@dataclass(frozen=True)
class Snapshot:
    taken_at: datetime
    containers: tuple[ContainerSample, ...] = ()
    host: HostSample | None = None
    _by_app: Mapping[str, tuple[ContainerSample, ...]] = field(
        init=False, repr=False, compare=False, default_factory=dict
    )

    def __post_init__(self) -> None:
        grouped: dict[str, list[ContainerSample]] = {}
        for sample in self.containers:
            grouped.setdefault(sample.app, []).append(sample)
        # Frozen dataclass: the grouping is computed once, at construction.
        object.__setattr__(self, "_by_app", {app: tuple(items) for app, items in sorted(grouped.items())})

    @property
    def apps(self) -> Mapping[str, tuple[ContainerSample, ...]]:
        """Containers grouped by app, apps in name order."""
        return self._by_app

    def app(self, name: str) -> tuple[ContainerSample, ...]:
        return self._by_app.get(name, ())

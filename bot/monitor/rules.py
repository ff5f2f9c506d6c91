"""Alert thresholds and the pure rule functions that judge a snapshot against them.

A rule looks at one snapshot and says, per (rule, app), whether its condition
holds now (``active``), whether it is clearly over (``clear``: below the
threshold minus a hysteresis margin), how long it must hold before anyone is
told (``hold``), and a human detail line. Rules keep no state and read no
clock: the alert book (``bot.monitor.alerts``) owns time and memory.

Event rules (exit, oom, restart_loop) are raised by Docker events through
``AlertBook.event``; from snapshots they only get their all-clear, once every
container of the app has run steadily for a while. ``unhealthy`` is both: the
health event raises it at once, a snapshot raises it too (in case the event
was missed) and clears it.

Host rules use the app name ``HOST``; the app name "host" is reserved for them.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from bot.durations import format_duration, format_size, parse_duration
from bot.monitor.snapshot import ContainerSample, HostSample, Snapshot

log = logging.getLogger(__name__)

HOST = "host"

CPU = "cpu"
MEMORY = "memory"
HOST_DISK = "host_disk"
HOST_MEMORY = "host_memory"
EXIT = "exit"
OOM = "oom"
UNHEALTHY = "unhealthy"
RESTART_LOOP = "restart_loop"

THRESHOLD_RULES = frozenset({CPU, MEMORY, HOST_DISK, HOST_MEMORY})
EVENT_RULES = frozenset({EXIT, OOM, UNHEALTHY, RESTART_LOOP})
EXIT_RULES = frozenset({EXIT, OOM})  # the exits that count towards a restart loop

RULE_TITLES: Mapping[str, str] = {
    CPU: "high CPU",
    MEMORY: "high memory",
    HOST_DISK: "disk space",
    HOST_MEMORY: "host memory",
    EXIT: "crash",
    OOM: "out-of-memory kill",
    UNHEALTHY: "failing health check",
    RESTART_LOOP: "restart loop",
}


@dataclass(frozen=True)
class Thresholds:
    """When a rule's condition holds. A percent of None switches that rule off."""

    cpu_percent: float | None = 90.0  # of ONE core, like docker stats (two busy cores = 200)
    cpu_for: timedelta = timedelta(minutes=5)
    memory_percent: float | None = 90.0  # of the container's own memory limit
    memory_for: timedelta = timedelta(minutes=2)
    disk_percent: float | None = 90.0  # Docker data root and state_dir filesystems
    disk_for: timedelta = timedelta(0)  # disks fill steadily; no need to wait
    host_memory_percent: float | None = 90.0
    host_memory_for: timedelta = timedelta(minutes=2)
    margin: float = 5.0  # hysteresis: resolved only below threshold - margin ...
    clear_after: timedelta = timedelta(minutes=3)  # ... or below threshold this long
    stable_for: timedelta = timedelta(minutes=2)  # running this long ends a crash alert
    restart_loop_count: int = 3
    restart_loop_window: timedelta = timedelta(minutes=10)

    def __post_init__(self) -> None:
        for name in ("memory_percent", "disk_percent", "host_memory_percent"):
            value = getattr(self, name)
            if value is not None and not 0 < value <= 100:
                raise ValueError(f"threshold {name} must be between 0 and 100, got {value}")
        if self.cpu_percent is not None and not 0 < self.cpu_percent <= 100_000:
            raise ValueError(f"threshold cpu_percent must be above 0, got {self.cpu_percent}")
        if not 0 <= self.margin < 100:
            raise ValueError(f"threshold margin must be between 0 and 100, got {self.margin}")
        for item in dataclasses.fields(self):
            value = getattr(self, item.name)
            if isinstance(value, timedelta) and value < timedelta(0):
                raise ValueError(f"threshold {item.name} must not be negative")
        if self.restart_loop_count < 2:
            raise ValueError("threshold restart_loop_count must be at least 2")
        if self.restart_loop_window <= timedelta(0):
            raise ValueError("threshold restart_loop_window must be positive")

    def with_overrides(self, overrides: Mapping[str, Any]) -> Thresholds:
        """A copy with some fields replaced, from config values.

        Durations may be given as text ("5m") or seconds; unknown names are
        errors so a typo in the config does not silently keep the default.
        """
        known = {item.name for item in dataclasses.fields(self)}
        changes: dict[str, Any] = {}
        for name, raw in overrides.items():
            if name not in known:
                raise ValueError(f"unknown threshold '{name}'; known: {', '.join(sorted(known))}")
            changes[name] = _coerce(name, raw, getattr(self, name))
        return dataclasses.replace(self, **changes)


HOST_ONLY_FIELDS = frozenset({"disk_percent", "disk_for", "host_memory_percent", "host_memory_for"})


def _coerce(name: str, raw: Any, current: Any) -> Any:
    if isinstance(current, timedelta):
        if isinstance(raw, timedelta):
            return raw
        if isinstance(raw, str):
            try:
                return parse_duration(raw, allow_zero=True)
            except ValueError as err:
                raise ValueError(f"threshold {name}: {err}") from None
        if isinstance(raw, (int, float)) and not isinstance(raw, bool):
            return timedelta(seconds=raw)
        raise ValueError(f"threshold {name} must be a duration like 5m, got {raw!r}")
    if name == "restart_loop_count":
        if isinstance(raw, int) and not isinstance(raw, bool):
            return raw
        raise ValueError(f"threshold {name} must be a whole number, got {raw!r}")
    if raw is None and name.endswith("_percent"):
        return None
    if isinstance(raw, (int, float)) and not isinstance(raw, bool):
        return float(raw)
    raise ValueError(f"threshold {name} must be a number, got {raw!r}")


@dataclass(frozen=True)
class ThresholdPolicy:
    """Global thresholds plus per-app overrides (from the config or the app's catalog entry)."""

    defaults: Thresholds = field(default_factory=Thresholds)
    per_app: Mapping[str, Thresholds] = field(default_factory=dict)

    def for_app(self, app: str) -> Thresholds:
        return self.per_app.get(app, self.defaults)

    @classmethod
    def from_config(
        cls,
        defaults: Mapping[str, Any] | None = None,
        per_app: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> ThresholdPolicy:
        """Build from plain config mappings: ``{"cpu_percent": 80}``, ``{"wiki": {"cpu_for": "10m"}}``.

        A per-app entry only overrides the fields it names; host thresholds
        (disk, host memory) are global and refused per app.
        """
        base = Thresholds().with_overrides(defaults or {})
        apps: dict[str, Thresholds] = {}
        for app, overrides in (per_app or {}).items():
            host_only = HOST_ONLY_FIELDS.intersection(overrides)
            if host_only:
                raise ValueError(f"thresholds for app '{app}': {', '.join(sorted(host_only))} can only be set globally")
            apps[app] = base.with_overrides(overrides)
        return cls(defaults=base, per_app=apps)


def as_policy(thresholds: Thresholds | ThresholdPolicy | None) -> ThresholdPolicy:
    if thresholds is None:
        return ThresholdPolicy()
    if isinstance(thresholds, Thresholds):
        return ThresholdPolicy(defaults=thresholds)
    return thresholds


@dataclass(frozen=True)
class Condition:
    """What one rule says about one app (or the host) in one snapshot."""

    rule: str
    app: str
    active: bool  # the condition holds now
    value: float | None  # the figure judged, e.g. 97.0 (percent)
    detail: str  # human text: what is wrong when active, how it is now otherwise
    threshold: float | None = None
    clear: bool = False  # clearly over: resolve a firing alert now
    hold: timedelta = timedelta(0)  # how long it must stay active before it fires
    clear_after: timedelta | None = None  # inactive this long also resolves; None: only `clear` does


def _pct(value: float) -> str:
    return f"{value:.0f}%"


def _threshold_condition(
    rule: str,
    app: str,
    value: float,
    limit: float,
    hold: timedelta,
    t: Thresholds,
    active_detail: str,
    calm_detail: str,
) -> Condition:
    return Condition(
        rule=rule,
        app=app,
        active=value > limit,
        value=value,
        detail=active_detail if value > limit else calm_detail,
        threshold=limit,
        clear=value < limit - t.margin,
        hold=hold,
        clear_after=t.clear_after,
    )


def _not_running(rule: str, app: str, limit: float | None) -> Condition:
    return Condition(rule=rule, app=app, active=False, value=None, detail="not running", threshold=limit, clear=True)


def _disabled(rule: str, app: str) -> Condition:
    # A switched-off rule reports all-clear, so an alert firing when it was
    # switched off resolves instead of hanging in the list for ever.
    return Condition(rule=rule, app=app, active=False, value=None, detail="rule switched off", clear=True)


def cpu_rule(app: str, containers: Iterable[ContainerSample], t: Thresholds) -> Condition | None:
    """CPU of the app's busiest container above ``cpu_percent`` (of one core) for ``cpu_for``."""
    if t.cpu_percent is None:
        return _disabled(CPU, app)
    samples = list(containers)
    measured = [c for c in samples if c.cpu_percent is not None]
    if not measured:
        if any(c.state == "running" for c in samples):
            return None  # running but not measured this tick: no news, keep the state
        return _not_running(CPU, app, t.cpu_percent)
    worst = max(measured, key=lambda c: c.cpu_percent or 0.0)
    value = worst.cpu_percent or 0.0
    where = f" in {worst.name}" if len(samples) > 1 else ""
    return _threshold_condition(
        CPU,
        app,
        value,
        t.cpu_percent,
        t.cpu_for,
        t,
        active_detail=f"CPU at {_pct(value)} of a core{where}, "
        f"above {_pct(t.cpu_percent)} for {format_duration(t.cpu_for)}",
        calm_detail=f"CPU now {_pct(value)}{where}",
    )


def memory_rule(app: str, containers: Iterable[ContainerSample], t: Thresholds) -> Condition | None:
    """Memory of a container above ``memory_percent`` of its own limit for ``memory_for``.

    Containers without a limit are not judged here: the host memory rule covers them.
    """
    if t.memory_percent is None:
        return _disabled(MEMORY, app)
    samples = list(containers)
    limited = [c for c in samples if c.mem_limit]
    measured = [c for c in limited if c.mem_percent is not None]
    if not measured:
        if any(c.state == "running" for c in limited):
            return None
        if limited:
            return _not_running(MEMORY, app, t.memory_percent)
        return Condition(MEMORY, app, active=False, value=None, detail="no memory limit", clear=True)
    worst = max(measured, key=lambda c: c.mem_percent or 0.0)
    value = worst.mem_percent or 0.0
    where = f" in {worst.name}" if len(samples) > 1 else ""
    used = format_size(worst.mem_used or 0)
    limit = format_size(worst.mem_limit or 0)
    return _threshold_condition(
        MEMORY,
        app,
        value,
        t.memory_percent,
        t.memory_for,
        t,
        active_detail=f"memory at {_pct(value)} of its limit ({used} of {limit}){where}, "
        f"above {_pct(t.memory_percent)} for {format_duration(t.memory_for)}",
        calm_detail=f"memory now {_pct(value)} of its limit ({used} of {limit}){where}",
    )


def unhealthy_rule(app: str, containers: Iterable[ContainerSample]) -> Condition:
    """A failing health check; cleared once no container is unhealthy or still starting."""
    samples = list(containers)
    sick = [c.name for c in samples if c.health == "unhealthy"]
    if sick:
        return Condition(UNHEALTHY, app, active=True, value=float(len(sick)),
                         detail=f"health check failing ({', '.join(sick)})")
    settled = all(c.health in (None, "healthy") for c in samples)
    # "starting" right after an unhealthy spell is not yet good news; wait for healthy.
    return Condition(UNHEALTHY, app, active=False, value=0.0,
                     detail="health check passing" if settled else "health check starting", clear=settled)


def _steady(sample: ContainerSample, now: datetime, stable_for: timedelta) -> bool:
    if sample.state == "running":
        return sample.started_at is not None and now - sample.started_at >= stable_for
    if sample.state == "exited":
        return sample.exit_code == 0  # a finished one-shot job is not a crash
    return sample.state in ("created", "paused")


def stability_rules(app: str, containers: Iterable[ContainerSample], now: datetime, t: Thresholds) -> list[Condition]:
    """All-clear for the event rules once every container has run steadily for ``stable_for``.

    Never active: exits, OOM kills and loops are raised by Docker events. A
    container still crash-looping never looks steady, so its alert cannot
    resolve and re-fire between two restarts.
    """
    samples = list(containers)
    steady = bool(samples) and all(_steady(c, now, t.stable_for) for c in samples)
    detail = f"running steadily for {format_duration(t.stable_for)}" if steady else "not steady yet"
    return [Condition(rule, app, active=False, value=None, detail=detail, clear=steady)
            for rule in (EXIT, OOM, RESTART_LOOP)]


def host_disk_rule(host: HostSample, t: Thresholds) -> Condition | None:
    """The fullest of the Docker data root and state_dir filesystems above ``disk_percent``."""
    if t.disk_percent is None:
        return _disabled(HOST_DISK, HOST)
    disks = host.disks
    if not disks:
        return None
    value = max(disk.percent for disk in disks)
    over = [disk for disk in disks if disk.percent > t.disk_percent] or [max(disks, key=lambda d: d.percent)]
    paths = ", ".join(dict.fromkeys(disk.path for disk in over))
    free = format_size(min(disk.free for disk in over))
    return _threshold_condition(
        HOST_DISK,
        HOST,
        value,
        t.disk_percent,
        t.disk_for,
        t,
        active_detail=f"disk {_pct(value)} full on {paths} ({free} free), above {_pct(t.disk_percent)}",
        calm_detail=f"disk now {_pct(value)} full on {paths} ({free} free)",
    )


def host_memory_rule(host: HostSample, t: Thresholds) -> Condition | None:
    """Host memory in use (MemTotal - MemAvailable) above ``host_memory_percent``."""
    if t.host_memory_percent is None:
        return _disabled(HOST_MEMORY, HOST)
    if not host.mem_total:
        return None
    value = host.mem_percent
    figures = f"{format_size(host.mem_used)} of {format_size(host.mem_total)}"
    return _threshold_condition(
        HOST_MEMORY,
        HOST,
        value,
        t.host_memory_percent,
        t.host_memory_for,
        t,
        active_detail=f"host memory at {_pct(value)} ({figures}), above {_pct(t.host_memory_percent)} "
        f"for {format_duration(t.host_memory_for)}",
        calm_detail=f"host memory now {_pct(value)} ({figures})",
    )


def evaluate(snapshot: Snapshot, thresholds: Thresholds | ThresholdPolicy | None = None) -> list[Condition]:
    """Every condition the snapshot lets us judge, per app and for the host.

    A (rule, app) with nothing to judge this time (a running container whose
    figures are missing, no host sample) is left out, which the alert book
    reads as "no news": a failed measurement neither raises nor resolves.
    """
    policy = as_policy(thresholds)
    conditions: list[Condition] = []
    for app, containers in snapshot.apps.items():
        t = policy.for_app(app)
        for rule_result in (cpu_rule(app, containers, t), memory_rule(app, containers, t)):
            if rule_result is not None:
                conditions.append(rule_result)
        conditions.append(unhealthy_rule(app, containers))
        conditions.extend(stability_rules(app, containers, snapshot.taken_at, t))
    if snapshot.host is not None:
        for host_result in (host_disk_rule(snapshot.host, policy.defaults),
                            host_memory_rule(snapshot.host, policy.defaults)):
            if host_result is not None:
                conditions.append(host_result)
    return conditions

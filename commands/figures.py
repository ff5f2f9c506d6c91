"""How resource figures from the monitor's latest sample are written in chat replies.

Works on ``ContainerSample`` and ``HostSample`` values handed over by the
monitor; no Docker, no XMPP. The list view needs compact cells (no spaces,
so a column stays one word); the detail view can afford words.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from bot.durations import format_duration, format_size


def percent(value: float) -> str:
    return f"{value:.1f}%" if value < 10 else f"{value:.0f}%"


def compact_size(size: int) -> str:
    """``45MiB``: format_size without the space, for table cells."""
    return format_size(size).replace(" ", "")


def app_cpu(samples: Sequence[Any]) -> str:
    """The app's CPU, all its running containers together (100% = one core)."""
    measured = [s.cpu_percent for s in samples if s.running and s.cpu_percent is not None]
    return percent(sum(measured)) if measured else "-"


def app_memory(samples: Sequence[Any]) -> str:
    measured = [s.mem_used for s in samples if s.running and s.mem_used is not None]
    return compact_size(sum(measured)) if measured else "-"


def container_cpu(sample: Any) -> str:
    return f"cpu {percent(sample.cpu_percent)}" if sample.cpu_percent is not None else "cpu -"


def container_memory(sample: Any) -> str:
    if sample.mem_used is None:
        return "mem -"
    used = format_size(sample.mem_used)
    if not sample.mem_limit:
        return f"mem {used} (no limit)"
    return f"mem {used} of {format_size(sample.mem_limit)} ({percent(sample.mem_percent or 0.0)})"


def host_line(host: Any) -> str:
    """``host: cpu 4% · mem 1.2 GiB of 23 GiB (5%) · disk 45%``."""
    parts = []
    if host.cpu_percent is not None:
        parts.append(f"cpu {percent(host.cpu_percent)}")
    parts.append(f"mem {format_size(host.mem_used)} of {format_size(host.mem_total)} ({percent(host.mem_percent)})")
    if host.disks:
        parts.append(f"disk {percent(max(d.percent for d in host.disks))}")
    return "host: " + " · ".join(parts)


def sample_age(taken_at: datetime | None, now: datetime) -> str:
    if taken_at is None:
        return "no figures yet: the first sample is being taken"
    age = now - taken_at
    return f"figures from {format_duration(age)} ago" if age >= timedelta(seconds=1) else "figures just taken"

"""Host figures: CPU use from /proc/stat, memory from /proc/meminfo, disk use via statvfs.

These are the numbers behind the host line of ``status`` and the host disk
and memory alerts. /proc/stat and /proc/meminfo show the host's figures even
inside a container (they are not namespaced), so this works wherever the bot
runs; the paths are parameters so tests can feed fixture files.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

DEFAULT_PROC_STAT = Path("/proc/stat")
DEFAULT_MEMINFO = Path("/proc/meminfo")


class HostReadError(Exception):
    """A /proc file did not have the expected shape."""


@dataclass(frozen=True)
class CpuTimes:
    """Cumulative CPU time of all cores since boot, in clock ticks."""

    busy: int
    total: int


@dataclass(frozen=True)
class HostMemory:
    total: int  # bytes
    available: int  # bytes the kernel could hand out without swapping (MemAvailable)

    @property
    def used(self) -> int:
        # MemTotal - MemAvailable is what `free` calls used memory in spirit:
        # page cache the kernel can drop at once does not count.
        return max(self.total - self.available, 0)

    @property
    def percent(self) -> float:
        return self.used / self.total * 100.0 if self.total else 0.0


@dataclass(frozen=True)
class DiskUsage:
    path: str
    total: int  # bytes
    used: int  # bytes
    free: int  # bytes available to unprivileged users

    @property
    def percent(self) -> float:
        """Like df's Use%: the root-reserved blocks count as neither used nor free."""
        usable = self.used + self.free
        return self.used / usable * 100.0 if usable else 0.0


def parse_proc_stat(text: str) -> CpuTimes:
    """The aggregate ``cpu`` line of /proc/stat as busy and total ticks."""
    for line in text.splitlines():
        fields = line.split()
        if fields and fields[0] == "cpu":
            break
    else:
        raise HostReadError("/proc/stat has no aggregate cpu line")
    try:
        ticks = [int(value) for value in fields[1:]]
    except ValueError:
        raise HostReadError(f"unexpected /proc/stat cpu line: {line!r}") from None
    if len(ticks) < 4:
        raise HostReadError(f"short /proc/stat cpu line: {line!r}")
    # user nice system idle iowait irq softirq steal [guest guest_nice]; guest
    # time is already included in user and nice, so it must not be added again.
    counted = ticks[:8]
    idle = counted[3] + (counted[4] if len(counted) > 4 else 0)
    total = sum(counted)
    return CpuTimes(busy=total - idle, total=total)


def read_cpu_times(path: Path = DEFAULT_PROC_STAT) -> CpuTimes:
    return parse_proc_stat(path.read_text())


def host_cpu_percent(previous: CpuTimes, current: CpuTimes) -> float | None:
    """Host CPU use between two readings, in percent of the whole machine (0-100).

    Unlike a container's figure this is not per core: "host 50 %" on two cores
    means one core's worth is busy. None when no time passed.
    """
    total = current.total - previous.total
    busy = current.busy - previous.busy
    if total <= 0 or busy < 0:
        return None
    return min(busy / total * 100.0, 100.0)


def parse_meminfo(text: str) -> HostMemory:
    values: dict[str, int] = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        fields = rest.split()
        if not fields:
            continue
        try:
            number = int(fields[0])
        except ValueError:
            continue
        # Every size line is in kB (meaning KiB); counters such as HugePages_Total have no unit.
        values[key.strip()] = number * 1024 if fields[1:] == ["kB"] else number
    if "MemTotal" not in values:
        raise HostReadError("/proc/meminfo has no MemTotal")
    available = values.get("MemAvailable")
    if available is None:
        # Kernels before 3.14 lack MemAvailable; free + cache is the old estimate.
        available = values.get("MemFree", 0) + values.get("Buffers", 0) + values.get("Cached", 0)
    return HostMemory(total=values["MemTotal"], available=available)


def read_memory(path: Path = DEFAULT_MEMINFO) -> HostMemory:
    return parse_meminfo(path.read_text())


def disk_usage(
    path: str | os.PathLike[str],
    statvfs: Callable[[str], os.statvfs_result] = os.statvfs,
) -> DiskUsage:
    """Disk use of the filesystem holding ``path`` (raises OSError if it is not there)."""
    text = os.fspath(path)
    st = statvfs(text)
    total = st.f_blocks * st.f_frsize
    free_for_root = st.f_bfree * st.f_frsize
    return DiskUsage(
        path=text,
        total=total,
        used=total - free_for_root,
        free=st.f_bavail * st.f_frsize,
    )

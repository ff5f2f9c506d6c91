"""Container CPU, memory, pids and OOM counters read straight from cgroup files.

Reading a handful of small files per container costs microseconds, where
Docker's stats endpoint needs about a second per container (it waits for two
samples). The sampler reads here first and falls back to the stats API only
when a container's cgroup is not visible, e.g. when homeport itself runs in a
container without the host's /sys/fs/cgroup.

Both hierarchies are understood:

- cgroup v1 (one mount per controller, as on this project's CI machine):
  ``<root>/<controller>/docker/<id>/`` with the cgroupfs driver,
  ``<root>/<controller>/system.slice/docker-<id>.scope/`` with systemd;
- cgroup v2 (one unified mount, current Debian and Ubuntu):
  ``<root>/system.slice/docker-<id>.scope/`` or ``<root>/docker/<id>/``.

The memory figure is the one ``docker stats`` shows: usage minus inactive page
cache (v1 ``total_inactive_file``, v2 ``inactive_file``), because cache the
kernel can drop at once is not memory the app needs.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

log = logging.getLogger(__name__)

DEFAULT_ROOT = Path("/sys/fs/cgroup")
DEFAULT_PROC = Path("/proc")
DEFAULT_CPU_ONLINE = Path("/sys/devices/system/cpu/online")

# v1 reports "no limit" as the page counter's maximum (9223372036854771712 with
# 4 KiB pages, a different figure with other page sizes); anything this large is
# no real limit on any machine.
UNLIMITED_FLOOR = 1 << 60

# Debian's v1 layout mounts cpu and cpuacct together and links the single names
# to it; other systems mount them apart (as this project's CI machine does).
_V1_CPUACCT_DIRS = ("cpuacct", "cpu,cpuacct", "cpuacct,cpu")


class CgroupError(Exception):
    """A cgroup file was there but its content could not be understood."""


@dataclass(frozen=True)
class CgroupPaths:
    """Where one container's cgroup files live."""

    version: int  # 1 or 2
    cpu: Path  # v1: the cpuacct directory; v2: the container's unified directory
    memory: Path
    pids: Path | None  # v1 without a pids controller has none


@dataclass(frozen=True)
class CgroupReading:
    """One container's counters at one moment."""

    container_id: str
    version: int
    cpu_usage_ns: int  # cumulative CPU time of all its processes
    mem_used: int  # bytes, without inactive page cache (the docker stats figure)
    mem_usage_raw: int  # bytes, page cache included (memory.usage_in_bytes / memory.current)
    mem_limit: int | None  # bytes; None when unlimited
    pids: int | None
    oom_kills: int | None  # processes killed by the OOM killer; None when the kernel does not say
    limit_hits: int | None  # v1 memory.failcnt, v2 memory.events "max"

    @property
    def mem_percent(self) -> float | None:
        if not self.mem_limit:
            return None
        return self.mem_used / self.mem_limit * 100.0


def detect_version(root: Path = DEFAULT_ROOT) -> int | None:
    """1 or 2 for the hierarchy that holds the memory controller, None if none is visible.

    A hybrid host (v1 controllers plus an empty v2 mount at ``unified/``) is v1
    for our purposes: the figures we need live in the v1 controllers.
    """
    if (root / "cgroup.controllers").is_file():
        return 2
    if (root / "memory").is_dir():
        return 1
    return None


def expand_slice(slice_name: str) -> PurePosixPath:
    """The directory systemd uses for a slice: ``a-b.slice`` → ``a.slice/a-b.slice``."""
    if not slice_name.endswith(".slice") or "/" in slice_name:
        raise ValueError(f"'{slice_name}' is not a systemd slice name")
    stem = slice_name[: -len(".slice")]
    if stem in ("", "-"):
        return PurePosixPath(".")
    parts = stem.split("-")
    return PurePosixPath(*("-".join(parts[: i + 1]) + ".slice" for i in range(len(parts))))


def candidate_paths(
    container_id: str,
    cgroup_parent: str | None = None,
    driver: str | None = None,
) -> list[PurePosixPath]:
    """Relative cgroup directories where Docker may have put this container, likeliest first.

    ``driver`` is Docker's cgroup driver ("cgroupfs" or "systemd", from
    ``docker info``); None tries both. ``cgroup_parent`` is the container's
    ``HostConfig.CgroupParent`` when set.
    """
    if driver not in (None, "cgroupfs", "systemd"):
        raise ValueError(f"unknown cgroup driver '{driver}'")
    found: list[PurePosixPath] = []
    if cgroup_parent:
        systemd_parent = driver == "systemd" or (driver is None and cgroup_parent.endswith(".slice"))
        if systemd_parent:
            found.append(expand_slice(cgroup_parent) / f"docker-{container_id}.scope")
        else:
            found.append(PurePosixPath(cgroup_parent.strip("/")) / container_id)
    if driver != "systemd":
        found.append(PurePosixPath("docker") / container_id)
    if driver != "cgroupfs":
        found.append(PurePosixPath("system.slice") / f"docker-{container_id}.scope")
    return found


def parse_proc_cgroup(text: str) -> dict[str, PurePosixPath]:
    """Parse ``/proc/<pid>/cgroup`` into controller → path ("" keys the v2 line)."""
    paths: dict[str, PurePosixPath] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        fields = line.split(":", 2)
        if len(fields) != 3:
            raise CgroupError(f"unexpected /proc cgroup line: {line!r}")
        _, controllers, path = fields
        for controller in controllers.split(",") if controllers else [""]:
            paths[controller] = PurePosixPath(path)
    return paths


def _relative(path: PurePosixPath) -> PurePosixPath:
    return PurePosixPath(*path.parts[1:]) if path.is_absolute() else path


class CgroupReader:
    """Finds and reads container cgroups under one cgroup root.

    Found directories are remembered per container id, so a sampler tick over a
    hundred containers costs a few file reads each and no directory probing.
    """

    def __init__(self, root: Path = DEFAULT_ROOT, proc: Path = DEFAULT_PROC) -> None:
        self.root = root
        self.proc = proc
        self.version = detect_version(root)
        self._cache: dict[str, CgroupPaths] = {}
        self._v1_cpuacct = self._find_v1_cpuacct() if self.version == 1 else None

    @property
    def available(self) -> bool:
        """Whether any usable cgroup hierarchy is visible at all."""
        if self.version == 2:
            return True
        return self.version == 1 and self._v1_cpuacct is not None

    def _find_v1_cpuacct(self) -> Path | None:
        for name in _V1_CPUACCT_DIRS:
            if (self.root / name).is_dir():
                return self.root / name
        return None

    def _paths_for(self, relative: PurePosixPath) -> CgroupPaths | None:
        if self.version == 2:
            directory = self.root / relative
            if (directory / "memory.current").is_file():
                return CgroupPaths(2, directory, directory, directory)
            return None
        if self._v1_cpuacct is None:
            return None
        memory = self.root / "memory" / relative
        cpu = self._v1_cpuacct / relative
        if not (memory / "memory.usage_in_bytes").is_file() or not (cpu / "cpuacct.usage").is_file():
            return None
        pids = self.root / "pids" / relative
        return CgroupPaths(1, cpu, memory, pids if pids.is_dir() else None)

    def _paths_from_pid(self, container_id: str, pid: int) -> CgroupPaths | None:
        """Exact location from the container's main process, whatever the parent or driver.

        The path must name the container: a pid read from a stale inspect may
        already belong to another process.
        """
        try:
            text = (self.proc / str(pid) / "cgroup").read_text()
        except OSError:
            return None
        by_controller = parse_proc_cgroup(text)
        key = "" if self.version == 2 else "memory"
        path = by_controller.get(key)
        if path is None or container_id not in str(path):
            return None
        return self._paths_for(_relative(path))

    def locate(
        self,
        container_id: str,
        *,
        cgroup_parent: str | None = None,
        driver: str | None = None,
        pid: int | None = None,
    ) -> CgroupPaths | None:
        """Find the container's cgroup directories; None when they are not visible."""
        cached = self._cache.get(container_id)
        if cached is not None:
            return cached
        if not self.available:
            return None
        found: CgroupPaths | None = None
        if pid:
            found = self._paths_from_pid(container_id, pid)
        if found is None:
            for relative in candidate_paths(container_id, cgroup_parent, driver):
                found = self._paths_for(relative)
                if found is not None:
                    break
        if found is not None:
            self._cache[container_id] = found
        else:
            log.debug("no cgroup visible for container %s under %s", container_id[:12], self.root)
        return found

    def read(
        self,
        container_id: str,
        *,
        cgroup_parent: str | None = None,
        driver: str | None = None,
        pid: int | None = None,
    ) -> CgroupReading | None:
        """Read the container's counters; None when its cgroup is not (or no longer) visible.

        Raises CgroupError when the files exist but make no sense.
        """
        paths = self.locate(container_id, cgroup_parent=cgroup_parent, driver=driver, pid=pid)
        if paths is None:
            return None
        try:
            return read_paths(container_id, paths)
        except FileNotFoundError:
            # The container stopped between locating and reading; a restart
            # makes a fresh cgroup, so look again next time.
            self._cache.pop(container_id, None)
            return None

    def forget(self, container_id: str) -> None:
        self._cache.pop(container_id, None)

    def prune(self, live_ids: set[str]) -> None:
        """Drop remembered paths of containers that no longer exist."""
        for container_id in set(self._cache) - live_ids:
            del self._cache[container_id]


def read_paths(container_id: str, paths: CgroupPaths) -> CgroupReading:
    """Read one container's counters from known directories (FileNotFoundError if gone)."""
    if paths.version == 1:
        return _read_v1(container_id, paths)
    if paths.version == 2:
        return _read_v2(container_id, paths)
    raise ValueError(f"unknown cgroup version {paths.version}")


def _read_v1(container_id: str, paths: CgroupPaths) -> CgroupReading:
    cpu_ns = _read_int(paths.cpu / "cpuacct.usage")
    usage = _read_int(paths.memory / "memory.usage_in_bytes")
    stat = _read_flat(paths.memory / "memory.stat")
    limit = _read_int(paths.memory / "memory.limit_in_bytes")
    # A limit set on a parent cgroup binds too; the kernel reports the tightest.
    hierarchical = stat.get("hierarchical_memory_limit")
    if hierarchical is not None:
        limit = min(limit, hierarchical)
    # memory.failcnt alone is no OOM evidence: it also counts reclaim that
    # succeeded, and stays 0 when the memsw counter is the one that failed. The
    # kernel's own oom_kill count (4.13+) is.
    oom_control = _read_flat_optional(paths.memory / "memory.oom_control")
    return CgroupReading(
        container_id=container_id,
        version=1,
        cpu_usage_ns=cpu_ns,
        mem_used=_without_cache(usage, stat.get("total_inactive_file")),
        mem_usage_raw=usage,
        mem_limit=None if limit >= UNLIMITED_FLOOR else limit,
        pids=_read_int_optional(paths.pids / "pids.current") if paths.pids else None,
        oom_kills=oom_control.get("oom_kill") if oom_control is not None else None,
        limit_hits=_read_int_optional(paths.memory / "memory.failcnt"),
    )


def _read_v2(container_id: str, paths: CgroupPaths) -> CgroupReading:
    cpu_stat = _read_flat(paths.cpu / "cpu.stat")
    if "usage_usec" not in cpu_stat:
        raise CgroupError(f"{paths.cpu / 'cpu.stat'} has no usage_usec")
    usage = _read_int(paths.memory / "memory.current")
    stat = _read_flat(paths.memory / "memory.stat")
    max_text = (paths.memory / "memory.max").read_text().strip()
    limit = None if max_text == "max" else _parse_int(max_text, paths.memory / "memory.max")
    events = _read_flat_optional(paths.memory / "memory.events")
    return CgroupReading(
        container_id=container_id,
        version=2,
        cpu_usage_ns=cpu_stat["usage_usec"] * 1000,
        mem_used=_without_cache(usage, stat.get("inactive_file")),
        mem_usage_raw=usage,
        mem_limit=None if limit is None or limit >= UNLIMITED_FLOOR else limit,
        pids=_read_int_optional(paths.pids / "pids.current") if paths.pids else None,
        oom_kills=events.get("oom_kill") if events is not None else None,
        limit_hits=events.get("max") if events is not None else None,
    )


def _without_cache(usage: int, inactive_file: int | None) -> int:
    # Same rule as the docker CLI: subtract only when the figure is sane.
    if inactive_file is not None and inactive_file < usage:
        return usage - inactive_file
    return usage


def _parse_int(text: str, path: Path) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise CgroupError(f"{path}: expected a number, got {text.strip()[:40]!r}") from None


def _read_int(path: Path) -> int:
    return _parse_int(path.read_text(), path)


def _read_int_optional(path: Path) -> int | None:
    try:
        return _read_int(path)
    except FileNotFoundError:
        return None


def _read_flat(path: Path) -> dict[str, int]:
    """A flat-keyed file ("key value" per line), as memory.stat and cpu.stat are."""
    values: dict[str, int] = {}
    for line in path.read_text().splitlines():
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 2:
            raise CgroupError(f"{path}: unexpected line {line!r}")
        values[fields[0]] = _parse_int(fields[1], path)
    return values


def _read_flat_optional(path: Path) -> dict[str, int] | None:
    try:
        return _read_flat(path)
    except FileNotFoundError:
        return None


def cpu_percent(previous: CgroupReading, current: CgroupReading, elapsed_s: float) -> float | None:
    """CPU use between two readings in percent of ONE core, as ``docker stats`` shows it.

    Two cores kept busy read 200 %. None when no figure can be given: no time
    passed, or the counter went backwards because the container restarted
    (its cgroup is made afresh).
    """
    if previous.container_id != current.container_id:
        raise ValueError("readings of two different containers")
    delta = current.cpu_usage_ns - previous.cpu_usage_ns
    if elapsed_s <= 0 or delta < 0:
        return None
    return delta / (elapsed_s * 1e9) * 100.0


def parse_cpu_list(text: str) -> int:
    """Count the CPUs in a kernel CPU list such as ``0-3,6,8-9``."""
    count = 0
    for part in text.strip().split(","):
        if not part:
            continue
        first, _, last = part.partition("-")
        try:
            count += int(last or first) - int(first) + 1
        except ValueError:
            raise CgroupError(f"unexpected CPU list {text.strip()!r}") from None
    return count


def host_cpu_count(online: Path = DEFAULT_CPU_ONLINE) -> int:
    """Online CPUs of the host: the ceiling for a container's CPU % is 100 × this."""
    try:
        count = parse_cpu_list(online.read_text())
    except (OSError, CgroupError):
        count = 0
    return count or os.cpu_count() or 1

"""The background sampler: every ``monitor.interval`` seconds, one ``Snapshot`` of all managed containers and the host.

A tick costs one container list call; only containers that are new, whose
state or health changed, or that an event marked (started, restarted) are
inspected again, because inspecting every container every tick is what
makes a monitor expensive at a hundred containers. Figures come from the
cgroup files (a few small reads per container); where those are not
visible, e.g. when homeport runs inside a container without the host's
/sys/fs/cgroup, Docker's stats API is the fallback, a few containers at a
time, as it takes about a second each.

The latest snapshot is kept in memory: ``status`` and the presence text
read it instead of asking Docker for figures. ``current()`` gives an
up-to-date container list (one list call) merged with the latest figures,
so ``status`` right after ``stop`` shows the container stopped.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from bot.errors import EngineError
from bot.monitor.cgroups import CgroupError, CgroupReader, CgroupReading, cpu_percent
from bot.monitor.host import (
    CpuTimes,
    DiskUsage,
    HostReadError,
    disk_usage,
    host_cpu_percent,
    read_cpu_times,
    read_memory,
)
from bot.monitor.snapshot import ContainerSample, HostSample, Snapshot

if TYPE_CHECKING:  # the records come from the engine; the sampler never talks to Docker itself
    from bot.engine import ContainerFacts, ContainerSummary, EngineFacts, StatsFigures

log = logging.getLogger(__name__)

# After the first tick the second comes soon, so CPU figures (which need two
# readings) are there within seconds of start, not a full interval later.
FIRST_FOLLOWUP_S = 2.0
# Events mark restarted containers; this re-inspects everything now and then
# in case an event was missed (e.g. while the event stream reconnected).
FULL_REFRESH_S = 300.0
STATS_CONCURRENCY = 4  # stats API fallback: calls in flight at once


class SamplerEngine(Protocol):
    """What the sampler needs from ``bot.engine.Engine``."""

    async def engine_facts(self) -> EngineFacts: ...

    async def list_managed(self) -> list[ContainerSummary]: ...

    async def inspect_facts(self, ids: Sequence[str]) -> dict[str, ContainerFacts]: ...

    async def stats_once(self, container_id: str) -> StatsFigures: ...


@dataclass(frozen=True)
class Figures:
    """One container's measured figures at one tick."""

    cpu_percent: float | None
    mem_used: int | None
    mem_limit: int | None
    pids: int | None


# -- pure parts ------------------------------------------------------------------


def stale_ids(summaries: Iterable[ContainerSummary], known: Mapping[str, tuple[str, str | None]],
              dirty: set[str]) -> list[str]:
    """Containers to inspect: new ones, changed ones (state or health), marked ones."""
    return [s.id for s in summaries if s.id in dirty or known.get(s.id) != s.change_key]


def sample_of(facts: ContainerFacts, figures: Figures | None) -> ContainerSample:
    """A ContainerSample from inspected facts and (for running containers) figures."""
    info = facts.info
    measured = figures if info.state == "running" else None
    return ContainerSample(
        app=info.app,
        service=info.service,
        name=info.name,
        id=info.id,
        state=info.state,
        exit_code=info.exit_code,
        health=info.health,
        restart_count=info.restart_count,
        started_at=info.started_at,
        cpu_percent=measured.cpu_percent if measured else None,
        mem_used=measured.mem_used if measured else None,
        mem_limit=measured.mem_limit if measured else None,
        pids=measured.pids if measured else None,
        image=info.image,
        oom_killed=info.oom_killed,
    )


def stats_limit(reported: int | None, configured: int | None, host_total: int | None) -> int | None:
    """The memory limit to show for a stats-API figure.

    Docker reports the host's memory as the "limit" of an unlimited
    container; the cgroup reader says None for that, and so do we.
    """
    if configured:
        return configured
    if reported is None or (host_total and reported >= host_total):
        return None
    return reported


def figures_from_reading(reading: CgroupReading, previous: tuple[CgroupReading, float] | None,
                         at: float) -> Figures:
    cpu = None
    if previous is not None:
        cpu = cpu_percent(previous[0], reading, at - previous[1])
    return Figures(cpu_percent=cpu, mem_used=reading.mem_used, mem_limit=reading.mem_limit, pids=reading.pids)


# -- the sampler -------------------------------------------------------------------


class Sampler:
    def __init__(
        self,
        engine: SamplerEngine,
        state_dir: Path,
        interval: float,
        *,
        reader: CgroupReader | None = None,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
    ) -> None:
        self.engine = engine
        self.state_dir = Path(state_dir)
        self.interval = interval
        self.reader = reader if reader is not None else CgroupReader()
        self.clock = clock
        self.now = now
        self.latest: Snapshot | None = None
        self._facts: dict[str, ContainerFacts] = {}
        self._keys: dict[str, tuple[str, str | None]] = {}  # id -> change key when last inspected
        self._dirty: dict[str, int] = {}  # id -> number of the mark (see _observe)
        self._marks = 0
        self._figures: dict[str, Figures] = {}  # id -> figures of the latest tick
        self._previous: dict[str, tuple[CgroupReading, float]] = {}
        self._host_cpu: CpuTimes | None = None
        self._engine_facts: EngineFacts | None = None  # read on first use and after an engine restart
        self._observe_lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._last_full = clock()
        # Counters for the benchmark and the logs: what the ticks really cost.
        self.ticks = 0
        self.inspected = 0
        self.stats_calls = 0

    # -- marks from the event stream --

    def _mark(self, container_id: str) -> None:
        self._marks += 1
        self._dirty[container_id] = self._marks

    def invalidate_facts(self) -> None:
        """Inspect every known container again next time."""
        for cid in list(self._keys):
            self._mark(cid)

    def invalidate(self, container_id: str | None = None) -> None:
        """Inspect this container (or, with None, everything, engine facts included) again next time."""
        if container_id is not None:
            self._mark(container_id)
            return
        self.invalidate_facts()
        self._engine_facts = None  # the engine may have restarted with other settings

    def _drop(self, container_id: str) -> None:
        # Only under the observe lock: the measuring thread reads these tables.
        for table in (self._facts, self._keys, self._previous):
            table.pop(container_id, None)
        self._dirty.pop(container_id, None)
        self.reader.forget(container_id)

    def poke(self) -> None:
        """Take the next sample now instead of at the next interval."""
        self._wake.set()

    # -- observing --

    async def observe(self) -> list[ContainerFacts]:
        """Every managed container's up-to-date facts: one list call, inspect only what changed."""
        async with self._observe_lock:
            return await self._observe()

    async def _observe(self) -> list[ContainerFacts]:
        if self.clock() - self._last_full >= FULL_REFRESH_S:
            self.invalidate_facts()
            self._last_full = self.clock()
        summaries = await self.engine.list_managed()
        stale = stale_ids(summaries, self._keys, set(self._dirty))
        marks = dict(self._dirty)
        fresh = await self.engine.inspect_facts(stale) if stale else {}
        self.inspected += len(fresh)
        by_id = {s.id: s for s in summaries}
        for cid, facts in fresh.items():
            self._facts[cid] = facts
            self._keys[cid] = by_id[cid].change_key
            # A mark made while the inspect ran (a restart just then) stays for next time.
            if self._dirty.get(cid) == marks.get(cid):
                self._dirty.pop(cid, None)
        for cid in set(self._facts) - set(by_id):
            self._drop(cid)
        self.reader.prune(set(by_id))
        found = [self._facts[s.id] for s in summaries if s.id in self._facts]
        return sorted(found, key=lambda f: (f.info.app, f.info.order, f.info.name))

    async def current(self, app: str | None = None) -> list[ContainerSample]:
        """Containers as they are now, with the latest figures where measured."""
        facts = await self.observe()
        return [sample_of(f, self._figures.get(f.info.id)) for f in facts if app is None or f.info.app == app]

    # -- measuring --

    async def tick(self) -> Snapshot:
        """Take one snapshot and keep it as the latest."""
        if self._engine_facts is None:
            self._engine_facts = await self.engine.engine_facts()
        # The lock also covers the measuring thread: it reads the tables
        # that observing updates (a `status` may observe meanwhile).
        async with self._observe_lock:
            facts = await self._observe()
            running = [f for f in facts if f.info.state == "running"]
            figures, missing, host = await asyncio.to_thread(self._measure, running)
        if missing:
            figures.update(await self._stats_fallback(missing, host.mem_total if host else None))
        self._figures = figures
        snapshot = Snapshot(taken_at=self.now(), containers=tuple(sample_of(f, figures.get(f.info.id)) for f in facts),
                            host=host)
        self.latest = snapshot
        self.ticks += 1
        return snapshot

    def _measure(self, running: list[ContainerFacts]
                 ) -> tuple[dict[str, Figures], list[ContainerFacts], HostSample | None]:
        """Cgroup and host reads (blocking file reads: run in a worker thread)."""
        figures: dict[str, Figures] = {}
        missing: list[ContainerFacts] = []
        driver = self._engine_facts.cgroup_driver if self._engine_facts else None
        for facts in running:
            cid = facts.info.id
            try:
                reading = self.reader.read(cid, cgroup_parent=facts.cgroup_parent, driver=driver, pid=facts.pid)
            except (CgroupError, OSError) as exc:
                log.warning("cgroup of %s unreadable: %s", facts.info.name, exc)
                reading = None
            if reading is None:
                missing.append(facts)
                continue
            at = self.clock()
            figures[cid] = figures_from_reading(reading, self._previous.get(cid), at)
            self._previous[cid] = (reading, at)
        for cid in set(self._previous) - {f.info.id for f in running}:
            del self._previous[cid]  # stopped: its next start begins a fresh counter
        return figures, missing, self._host()

    def _host(self) -> HostSample | None:
        try:
            times = read_cpu_times()
            memory = read_memory()
        except (OSError, HostReadError) as exc:
            log.warning("host figures unreadable: %s", exc)
            return None
        cpu = host_cpu_percent(self._host_cpu, times) if self._host_cpu is not None else None
        self._host_cpu = times
        root = self._engine_facts.root_dir if self._engine_facts else None
        return HostSample(cpu_percent=cpu, mem_used=memory.used, mem_total=memory.total,
                          docker_disk=_disk(root), state_disk=_disk(str(self.state_dir)))

    async def _stats_fallback(self, missing: list[ContainerFacts], host_total: int | None) -> dict[str, Figures]:
        gate = asyncio.Semaphore(STATS_CONCURRENCY)

        async def one(facts: ContainerFacts) -> tuple[str, Figures | None]:
            async with gate:
                try:
                    raw = await self.engine.stats_once(facts.info.id)
                except EngineError as exc:
                    log.debug("stats of %s unavailable: %s", facts.info.name, exc)
                    return facts.info.id, None
            self.stats_calls += 1
            return facts.info.id, Figures(cpu_percent=raw.cpu_percent, mem_used=raw.mem_used,
                                          mem_limit=stats_limit(raw.mem_limit, facts.mem_limit, host_total),
                                          pids=raw.pids)

        results = await asyncio.gather(*(one(f) for f in missing))
        return {cid: fig for cid, fig in results if fig is not None}

    # -- the loop --

    async def run(self, on_snapshot: Callable[[Snapshot], Awaitable[None]]) -> None:
        """Sample for ever; a failing engine is logged once, on the transition, and once on recovery."""
        failing = False
        wait = min(self.interval, FIRST_FOLLOWUP_S)
        while True:
            began = self.clock()
            try:
                snapshot = await self.tick()
            except EngineError as exc:
                if not failing:
                    log.warning("monitor: cannot sample: %s", exc)
                failing = True
            except Exception:
                log.exception("monitor: sample failed")
            else:
                if failing:
                    log.info("monitor: sampling again")
                    failing = False
                try:
                    await on_snapshot(snapshot)
                except Exception:
                    log.exception("monitor: handling a sample failed")
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), max(0.0, wait - (self.clock() - began)))
            except asyncio.TimeoutError:
                pass
            wait = self.interval


def _disk(path: str | None) -> DiskUsage | None:
    if not path or not os.path.exists(path):
        return None  # e.g. Docker's data root is not visible from inside a container
    try:
        return disk_usage(path)
    except OSError as exc:
        log.debug("disk usage of %s unreadable: %s", path, exc)
        return None

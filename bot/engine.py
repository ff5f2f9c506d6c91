"""The only module that talks to Docker.

docker-py is blocking, so every call runs in a worker thread under a
timeout and the bot keeps answering chat meanwhile. docker-py's exceptions
become the domain errors of `bot.errors`, worded for the owner. The engine
only ever touches containers that carry the `homeport.app` label.

The client is created lazily and dropped when the engine stops answering, so
when dockerd comes back the next call simply reconnects: no bot restart.
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, TypeVar

import docker
import docker.errors
import requests.exceptions

from bot.backoff import Backoff
from bot.errors import EngineError, EngineTimeout, EngineUnavailable, NotFound

log = logging.getLogger(__name__)

APP_LABEL = "homeport.app"
SERVICE_LABEL = "homeport.service"
ORDER_LABEL = "homeport.order"  # start order within an app (depends_on), lowest first

STOP_TIMEOUT_S = 10  # grace period before SIGKILL, as `docker stop`
# How long an exit we caused counts as intended when the die event arrives.
INTENDED_EXIT_WINDOW_S = 120.0

T = TypeVar("T")


@dataclass(frozen=True)
class ContainerInfo:
    id: str
    name: str
    app: str
    service: str
    state: str  # created | running | paused | restarting | exited | dead | removing
    exit_code: int | None
    health: str | None  # starting | healthy | unhealthy | None (no healthcheck)
    started_at: datetime | None
    finished_at: datetime | None
    image: str  # the reference it was created from, e.g. ghost:5.96.0
    image_id: str
    restart_count: int
    oom_killed: bool
    order: int
    labels: dict[str, str] = field(default_factory=dict, compare=False)
    stop_timeout: int = STOP_TIMEOUT_S  # its own grace period (catalog stop_grace_period)

    @property
    def running(self) -> bool:
        return self.state == "running"


def _parse_time(value: str | None) -> datetime | None:
    if not value or value.startswith("0001-01-01"):
        return None
    # Docker gives nanoseconds; Python's fromisoformat takes microseconds.
    main, _, frac = value.rstrip("Z").partition(".")
    frac = (frac[:6]).ljust(6, "0") if frac else "000000"
    try:
        return datetime.fromisoformat(f"{main}.{frac}").replace(tzinfo=timezone.utc)
    except ValueError:
        return None


def container_info(attrs: dict[str, Any]) -> ContainerInfo:
    """Build a ContainerInfo from `docker inspect` output."""
    cfg = attrs.get("Config") or {}
    labels = cfg.get("Labels") or {}
    state = attrs.get("State") or {}
    health = (state.get("Health") or {}).get("Status")
    status = state.get("Status", "unknown")
    try:
        order = int(labels.get(ORDER_LABEL, "0"))
    except ValueError:
        order = 0
    return ContainerInfo(
        id=attrs["Id"],
        name=attrs.get("Name", "").lstrip("/"),
        app=labels.get(APP_LABEL, ""),
        service=labels.get(SERVICE_LABEL, "") or attrs.get("Name", "").lstrip("/"),
        state=status,
        exit_code=state.get("ExitCode") if status in ("exited", "dead") else None,
        health=health,
        started_at=_parse_time(state.get("StartedAt")),
        finished_at=_parse_time(state.get("FinishedAt")),
        image=cfg.get("Image", ""),
        image_id=attrs.get("Image", ""),
        restart_count=int(attrs.get("RestartCount") or 0),
        oom_killed=bool(state.get("OOMKilled")),
        order=order,
        labels=dict(labels),
        stop_timeout=stop_timeout(attrs),
    )


class Engine:
    def __init__(self, url: str | None = None, timeout: float = 60.0):
        self.url = url
        self.timeout = timeout
        self._client: docker.DockerClient | None = None
        self._client_lock = threading.Lock()
        self._intended: dict[str, float] = {}  # container id -> monotonic time we stopped it

    # -- plumbing ----------------------------------------------------------

    def _get_client(self) -> docker.DockerClient:
        with self._client_lock:
            if self._client is None:
                kwargs: dict[str, Any] = {"timeout": int(self.timeout)}
                if self.url:
                    self._client = docker.DockerClient(base_url=self.url, **kwargs)
                else:
                    self._client = docker.from_env(**kwargs)
            return self._client

    def _drop_client(self) -> None:
        with self._client_lock:
            client, self._client = self._client, None
        if client is not None:
            try:
                client.close()
            except Exception:  # closing a dead connection pool may fail; nothing to do
                pass

    async def call(self, fn: Callable[[docker.DockerClient], T], timeout: float | None = None,
                   what: str = "Docker call") -> T:
        """Run `fn(client)` in a thread with a timeout, translating errors."""

        def run() -> T:
            return fn(self._get_client())

        try:
            return await asyncio.wait_for(asyncio.to_thread(run), timeout or self.timeout)
        except asyncio.TimeoutError:
            raise EngineTimeout(f"{what} took longer than {timeout or self.timeout:.0f} s") from None
        except docker.errors.NotFound as exc:
            raise NotFound(_explain(exc)) from None
        except docker.errors.APIError as exc:
            raise EngineError(f"{what} failed: {_explain(exc)}") from None
        except requests.exceptions.Timeout:
            # docker-py's own HTTP timeout fired before ours: same meaning.
            raise EngineTimeout(f"{what} took longer than the engine's answer timeout") from None
        except (requests.exceptions.RequestException, ConnectionError, FileNotFoundError) as exc:
            self._drop_client()
            raise EngineUnavailable() from exc
        except docker.errors.DockerException as exc:
            # from_env/auto version detection fails this way when dockerd is down
            self._drop_client()
            raise EngineUnavailable() from exc

    async def ping(self) -> dict[str, Any]:
        """Engine version facts; raises EngineUnavailable when it is down."""
        return await self.call(lambda c: c.version(), timeout=10, what="ping")

    # -- reading -----------------------------------------------------------

    async def containers(self, app: str | None = None) -> list[ContainerInfo]:
        """Managed containers (all states), sorted by app, start order, name."""
        label = f"{APP_LABEL}={app}" if app else APP_LABEL

        def list_them(c: docker.DockerClient) -> list[dict[str, Any]]:
            out = []
            for summary in c.api.containers(all=True, filters={"label": label}):
                try:
                    out.append(c.api.inspect_container(summary["Id"]))
                except docker.errors.NotFound:
                    continue  # removed between list and inspect
            return out

        infos = [container_info(a) for a in await self.call(list_them, what="listing containers")]
        return sorted(infos, key=lambda i: (i.app, i.order, i.name))

    async def apps(self) -> dict[str, list[ContainerInfo]]:
        grouped: dict[str, list[ContainerInfo]] = {}
        for info in await self.containers():
            grouped.setdefault(info.app, []).append(info)
        return grouped

    async def logs(self, app: str, lines: int) -> list[tuple[ContainerInfo, str]]:
        infos = await self.containers(app)

        def read(c: docker.DockerClient) -> list[str]:
            return [c.api.logs(i.id, tail=lines, timestamps=False).decode("utf-8", "replace") for i in infos]

        texts = await self.call(read, what=f"reading logs of {app}")
        return list(zip(infos, texts))

    # -- lifecycle ---------------------------------------------------------

    async def start(self, app: str) -> list[ContainerInfo]:
        infos = await self.containers(app)
        for info in infos:  # dependencies first
            if info.state != "running":
                await self.call(lambda c, i=info: c.api.start(i.id), what=f"starting {info.name}")
        return await self.containers(app)

    async def _stop_one(self, info: ContainerInfo) -> None:
        """Stop one container within its own grace period, marked as an exit
        we caused; a container that is not running is left alone."""
        if info.state not in ("running", "restarting", "paused"):
            return
        self.mark_intended(info.id)
        grace = info.stop_timeout
        await self.call(lambda c: c.api.stop(info.id, timeout=grace),
                        timeout=self.timeout + grace, what=f"stopping {info.name}")

    async def stop(self, app: str) -> list[ContainerInfo]:
        infos = await self.containers(app)
        for info in reversed(infos):  # dependants first
            await self._stop_one(info)
        return await self.containers(app)

    async def restart(self, app: str) -> list[ContainerInfo]:
        infos = await self.containers(app)
        for info in reversed(infos):
            await self._stop_one(info)
        for info in infos:
            await self.call(lambda c, i=info: c.api.start(i.id), what=f"starting {info.name}")
        return await self.containers(app)

    # -- images and plain containers --------------------------------------

    async def import_image(self, tar_path: str, ref: str, changes: list[str]) -> None:
        """`docker import` a root filesystem tarball (no registry needed)."""
        repository, _, tag = ref.rpartition(":")

        def do_import(c: docker.DockerClient) -> None:
            with open(tar_path, "rb") as fh:
                c.api.import_image_from_data(fh.read(), repository=repository, tag=tag, changes=changes)

        await self.call(do_import, what=f"importing {ref}")

    # -- exits we caused ---------------------------------------------------

    def mark_intended(self, container_id: str) -> None:
        """Remember that we are about to stop this container, so the monitor
        does not report its exit as a crash."""
        now = time.monotonic()
        self._intended = {k: v for k, v in self._intended.items() if now - v < INTENDED_EXIT_WINDOW_S}
        self._intended[container_id] = now

    def exit_was_intended(self, container_id: str) -> bool:
        """True once for the exit we caused: the mark is used up, so a crash
        soon after a `restart` is still a crash."""
        t = self._intended.pop(container_id, None)
        return t is not None and time.monotonic() - t < INTENDED_EXIT_WINDOW_S

    # -- monitoring ----------------------------------------------------------
    # Cheap reads for the background sampler (bot.monitor.sampler): it lists
    # the managed containers once per tick and inspects only those that are
    # new or changed, so a tick over a hundred containers is one list call.

    async def engine_facts(self) -> EngineFacts:
        """Cgroup driver and version, Docker's data root (`docker info`)."""
        return engine_facts(await self.call(lambda c: c.info(), timeout=MONITOR_CALL_TIMEOUT_S,
                                            what="reading engine facts"))

    async def list_managed(self) -> list[ContainerSummary]:
        """Every managed container from ONE list call (no inspect)."""
        raw = await self.call(lambda c: c.api.containers(all=True, filters={"label": APP_LABEL}),
                              timeout=MONITOR_CALL_TIMEOUT_S, what="listing containers")
        return [container_summary(item) for item in raw]

    async def inspect_facts(self, ids: Sequence[str]) -> dict[str, ContainerFacts]:
        """Inspect the given containers in one worker thread; gone ones are left out."""

        def inspect_all(c: docker.DockerClient) -> dict[str, dict[str, Any]]:
            found = {}
            for cid in ids:
                try:
                    found[cid] = c.api.inspect_container(cid)
                except docker.errors.NotFound:
                    continue  # removed meanwhile
            return found

        if not ids:
            return {}
        raw = await self.call(inspect_all, timeout=MONITOR_CALL_TIMEOUT_S, what="inspecting containers")
        return {cid: container_facts(attrs) for cid, attrs in raw.items()}

    async def stats_once(self, container_id: str) -> StatsFigures:
        """One container's figures from Docker's stats API (about a second:
        the engine waits for a second sample). Only for when the cgroup files
        are not visible, e.g. homeport itself running in a container."""
        raw = await self.call(lambda c: c.api.stats(container_id, stream=False),
                              timeout=MONITOR_CALL_TIMEOUT_S, what="reading container stats")
        return stats_figures(raw)

    async def log_tail(self, container_id: str, lines: int) -> str:
        """The last lines of one container's output (for crash alerts)."""
        data = await self.call(lambda c: c.api.logs(container_id, tail=lines, timestamps=False),
                               timeout=MONITOR_CALL_TIMEOUT_S, what="reading logs")
        return data.decode("utf-8", "replace")

    async def follow_events(self, since_ns: int | None = None) -> AsyncIterator[EngineEvent]:
        """Docker's events about managed containers, for as long as it is iterated.

        A dedicated thread holds the stream (it blocks for ever, so it must
        not occupy a worker of the shared pool). When the engine goes away
        the thread reports ENGINE_DOWN, reconnects with backoff, reports
        ENGINE_UP with the outage's length, and resumes with `since` so the
        events the new engine still holds are not lost. `since_ns` (Docker's
        timeNano) starts with the events after that moment, as far as the
        engine still keeps them; None starts with the present.
        """
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[EngineEvent] = asyncio.Queue()
        pump = _EventPump(self.url, loop, queue, since_ns)
        pump.start()
        try:
            while True:
                yield await queue.get()
        finally:
            pump.stop()

    # -- catalog apps --------------------------------------------------------
    # Installing, removing and resizing catalog apps. What to create comes
    # from bot.appspec as Engine API bodies; these methods send them, wait,
    # and find an app's objects again by label.

    async def local_image(self, ref: str) -> ImageFacts | None:
        """The local image `ref` names (id and registry digest), or None."""

        def look(c: docker.DockerClient) -> dict[str, Any] | None:
            try:
                return c.api.inspect_image(ref)
            except docker.errors.ImageNotFound:
                return None

        attrs = await self.call(look, what=f"looking up image {ref}")
        return None if attrs is None else image_facts(ref, attrs)

    async def pull_image(self, ref: str, on_progress: Callable[[PullProgress], None] | None = None,
                         timeout: float | None = None) -> ImageFacts:
        """Pull `ref`, streaming Docker's progress in the worker thread; the
        callback runs on the event loop, at most about once a second."""
        timeout = timeout or PULL_TIMEOUT_S
        loop = asyncio.get_running_loop()
        tracker = _PullTracker(ref)

        def report(progress: PullProgress) -> None:
            if on_progress is not None:
                loop.call_soon_threadsafe(on_progress, progress)

        def pull(c: docker.DockerClient) -> dict[str, Any]:
            for event in c.api.pull(ref, stream=True, decode=True):
                if event.get("error"):
                    raise EngineError(f"pulling {ref} failed: {str(event['error']).strip()}")
                progress = tracker.feed(event)
                if progress is not None:
                    report(progress)
            return c.api.inspect_image(ref)

        try:
            attrs = await self.call(pull, timeout=timeout, what=f"pulling {ref}")
        except NotFound as exc:
            raise EngineError(f"image {ref} not found: {exc}") from None
        report(tracker.finished())
        return image_facts(ref, attrs)

    async def create_network(self, name: str, labels: Mapping[str, str]) -> None:
        await self.call(lambda c: c.api.create_network(name, driver="bridge", labels=dict(labels),
                                                       check_duplicate=True),
                        what=f"creating network {name}")

    async def ensure_volume(self, name: str, labels: Mapping[str, str]) -> bool:
        """Create the named volume; False when it already exists with the
        same app label (data kept from an earlier install), which is reused."""

        def make(c: docker.DockerClient) -> bool:
            try:
                existing = c.api.inspect_volume(name)
            except docker.errors.NotFound:
                c.api.create_volume(name, driver="local", labels=dict(labels))
                return True
            if (existing.get("Labels") or {}).get(APP_LABEL) != labels.get(APP_LABEL):
                raise EngineError(f"a volume named {name} exists and does not belong to "
                                  f"{labels.get(APP_LABEL)}; remove or rename it first")
            return False

        return await self.call(make, what=f"creating volume {name}")

    async def create_container(self, name: str, body: Mapping[str, Any]) -> str:
        """Create a container from an Engine API body; its id."""
        created = await self.call(lambda c: c.api.create_container_from_config(dict(body), name),
                                  what=f"creating {name}")
        return str(created["Id"])

    async def start_container(self, container_id: str, name: str) -> None:
        await self.call(lambda c: c.api.start(container_id), what=f"starting {name}")

    async def wait_ready(self, container_id: str, name: str, timeout: float,
                         poll: float | None = None) -> ContainerInfo:
        """Wait until the container is healthy (running, if it has no health
        check). EngineError at once when it exits, restarts or turns
        unhealthy, with the reason Docker knows and its last log lines."""
        deadline = time.monotonic() + timeout
        while True:
            attrs = await self.call(lambda c: c.api.inspect_container(container_id), what=f"inspecting {name}")
            info = container_info(attrs)
            if info.running and info.health in (None, "healthy") and info.restart_count == 0:
                return info
            problem = _not_ready_reason(info, attrs)
            if problem is None and time.monotonic() >= deadline:
                problem = f"not {'healthy' if info.health else 'running'} after {timeout:.0f} s"
            if problem is not None:
                tail = await self._last_lines(container_id)
                raise EngineError(f"{name} {problem}" + (f"; its last output: {tail}" if tail else ""))
            await asyncio.sleep(poll or READY_POLL_S)

    async def _last_lines(self, container_id: str, lines: int = 5) -> str:
        try:
            raw = await self.call(lambda c: c.api.logs(container_id, tail=lines), timeout=10,
                                  what="reading logs")
        except EngineError:
            return ""
        text = raw.decode("utf-8", "replace").strip()
        return " | ".join(line.strip() for line in text.splitlines() if line.strip())[-600:]

    async def published_ports(self, container_id: str) -> list[PublishedPort]:
        """Where the container's ports are reachable on the host (Docker
        picks the host port when the catalog leaves it open)."""
        attrs = await self.call(lambda c: c.api.inspect_container(container_id), what="reading ports")
        return published_ports(attrs)

    async def update_resources(self, container_id: str, name: str, resources: Mapping[str, int]) -> None:
        """Change memory, swap, CPUs and PIDs of a container in place (no
        restart). docker-py's update_container knows neither NanoCpus nor
        PidsLimit (API >= 1.40), so the body is posted as the API takes it."""

        def update(c: docker.DockerClient) -> None:
            api = c.api
            response = api._post_json(api._url("/containers/{0}/update", container_id), data=dict(resources))
            api._result(response, True)

        await self.call(update, what=f"updating the limits of {name}")

    async def remove_containers(self, infos: Sequence[ContainerInfo]) -> None:
        """Stop (dependants first, each within its stop timeout) and remove
        the containers with their anonymous volumes."""
        for info in sorted(infos, key=lambda i: i.order, reverse=True):
            try:
                await self._stop_one(info)
            except NotFound:
                continue
            try:
                # v=True: an image's VOLUMEs the entry does not mount are anonymous volumes.
                await self.call(lambda c, i=info: c.api.remove_container(i.id, v=True, force=True),
                                what=f"removing {info.name}")
            except NotFound:
                pass

    async def remove_network(self, name: str) -> None:
        try:
            await self.call(lambda c: c.api.remove_network(name), what=f"removing network {name}")
        except NotFound:
            pass

    async def remove_volume(self, name: str) -> None:
        try:
            await self.call(lambda c: c.api.remove_volume(name), what=f"removing volume {name}")
        except NotFound:
            pass

    async def app_objects(self, app: str | None = None, managed_only: bool = True) -> dict[str, AppObjects]:
        """Containers, networks and volumes by app label (installed apps'
        objects carry `homeport.managed`); one entry per app found."""
        labels = [f"{APP_LABEL}={app}" if app else APP_LABEL]
        if managed_only:
            labels.append(f"{MANAGED_LABEL}={MANAGED_VALUE}")

        def list_all(c: docker.DockerClient) -> tuple[list[dict[str, Any]], list[dict[str, Any]],
                                                      list[dict[str, Any]]]:
            containers = []
            for summary in c.api.containers(all=True, filters={"label": labels}):
                try:
                    containers.append(c.api.inspect_container(summary["Id"]))
                except docker.errors.NotFound:
                    continue
            networks = c.api.networks(filters={"label": labels})
            volumes = c.api.volumes(filters={"label": labels}).get("Volumes") or []
            return containers, networks, volumes

        containers, networks, volumes = await self.call(list_all, what="listing app objects")
        found: dict[str, AppObjects] = {}

        def entry(labels_of: Mapping[str, str] | None) -> AppObjects:
            name = (labels_of or {}).get(APP_LABEL, "")
            return found.setdefault(name, AppObjects(app=name))

        for attrs in containers:
            info = container_info(attrs)
            entry(info.labels).containers.append(info)
        for net in networks:
            entry(net.get("Labels")).networks.append(net["Name"])
        for vol in volumes:
            entry(vol.get("Labels")).volumes.append(vol["Name"])
        for objects in found.values():
            objects.containers.sort(key=lambda i: (i.order, i.name))
            objects.networks.sort()
            objects.volumes.sort()
        return found


def _explain(exc: docker.errors.APIError | docker.errors.NotFound) -> str:
    explanation = getattr(exc, "explanation", None)
    if isinstance(explanation, bytes):
        explanation = explanation.decode("utf-8", "replace")
    return str(explanation or exc).strip()


# -- monitoring ----------------------------------------------------------------
# Plain records for bot.monitor, parsed from Docker's own formats here so that
# nothing outside this module needs to know them.

MONITOR_CALL_TIMEOUT_S = 30.0
# Container events the monitor acts on; exec_* events (every health check
# probe makes two) are left out on the engine's side.
MONITORED_ACTIONS = ("start", "restart", "die", "oom", "health_status", "destroy", "stop")
ENGINE_DOWN = "engine_down"
ENGINE_UP = "engine_up"
CONTAINER_EVENT = "container"

_HEALTH_IN_STATUS = re.compile(r"\((healthy|unhealthy|health: starting)\)")


@dataclass(frozen=True)
class EngineFacts:
    cgroup_driver: str | None  # cgroupfs | systemd
    cgroup_version: int | None  # 1 | 2
    root_dir: str | None  # Docker's data root, e.g. /var/lib/docker


def engine_facts(info: Mapping[str, Any]) -> EngineFacts:
    driver = info.get("CgroupDriver") or None
    try:
        version = int(info.get("CgroupVersion") or 0) or None
    except (TypeError, ValueError):
        version = None
    return EngineFacts(cgroup_driver=driver if driver in ("cgroupfs", "systemd") else None,
                       cgroup_version=version, root_dir=info.get("DockerRootDir") or None)


@dataclass(frozen=True)
class ContainerSummary:
    """What one entry of the container list says: enough to tell whether a
    container is new or changed since it was last inspected."""

    id: str
    name: str
    app: str
    state: str
    health: str | None
    image: str

    @property
    def change_key(self) -> tuple[str, str | None]:
        return self.state, self.health


def container_summary(raw: Mapping[str, Any]) -> ContainerSummary:
    labels = raw.get("Labels") or {}
    names = raw.get("Names") or []
    # The list carries health only inside its human Status text: "Up 5 minutes (healthy)".
    match = _HEALTH_IN_STATUS.search(raw.get("Status") or "")
    health = None if match is None else ("starting" if match.group(1) == "health: starting" else match.group(1))
    return ContainerSummary(id=raw["Id"], name=(names[0] if names else "").lstrip("/"),
                            app=labels.get(APP_LABEL, ""), state=raw.get("State", ""), health=health,
                            image=raw.get("Image", ""))


@dataclass(frozen=True)
class ContainerFacts:
    """An inspected container: its info plus what the cgroup reader needs."""

    info: ContainerInfo
    pid: int | None
    cgroup_parent: str | None
    restart_policy: str  # no | always | unless-stopped | on-failure
    mem_limit: int | None  # bytes; None without a limit


def container_facts(attrs: Mapping[str, Any]) -> ContainerFacts:
    host = attrs.get("HostConfig") or {}
    state = attrs.get("State") or {}
    return ContainerFacts(
        info=container_info(dict(attrs)),
        pid=int(state.get("Pid") or 0) or None,
        cgroup_parent=host.get("CgroupParent") or None,
        restart_policy=((host.get("RestartPolicy") or {}).get("Name") or "no"),
        mem_limit=int(host.get("Memory") or 0) or None,
    )


@dataclass(frozen=True)
class StatsFigures:
    cpu_percent: float | None  # of one core, like docker stats
    mem_used: int | None  # bytes, without inactive page cache, like docker stats
    mem_limit: int | None  # as Docker reports it (the host's memory when unlimited)
    pids: int | None


def stats_figures(raw: Mapping[str, Any]) -> StatsFigures:
    """The docker CLI's arithmetic on one stats answer (cgroup v1 and v2)."""
    cpu = raw.get("cpu_stats") or {}
    pre = raw.get("precpu_stats") or {}
    total = (cpu.get("cpu_usage") or {}).get("total_usage")
    pre_total = (pre.get("cpu_usage") or {}).get("total_usage")
    system, pre_system = cpu.get("system_cpu_usage"), pre.get("system_cpu_usage")
    online = cpu.get("online_cpus") or len((cpu.get("cpu_usage") or {}).get("percpu_usage") or ()) or 1
    percent = None
    if None not in (total, pre_total, system, pre_system):
        cpu_delta, system_delta = total - pre_total, system - pre_system
        if system_delta > 0 and cpu_delta >= 0:
            percent = cpu_delta / system_delta * online * 100.0
    memory = raw.get("memory_stats") or {}
    usage = memory.get("usage")
    used = None
    if usage is not None:
        extra = memory.get("stats") or {}
        inactive = extra.get("total_inactive_file", extra.get("inactive_file"))
        used = usage - inactive if inactive is not None and inactive < usage else usage
    return StatsFigures(cpu_percent=percent, mem_used=used, mem_limit=memory.get("limit") or None,
                        pids=(raw.get("pids_stats") or {}).get("current"))


@dataclass(frozen=True)
class EngineEvent:
    """A container event of a managed container, or the engine going away and coming back."""

    kind: str  # CONTAINER_EVENT | ENGINE_DOWN | ENGINE_UP
    at: datetime
    action: str = ""  # die, oom, start, health_status …
    container_id: str = ""
    app: str = ""
    name: str = ""
    exit_code: int | None = None
    health: str | None = None  # for health_status: healthy | unhealthy | starting
    down_since: datetime | None = None  # ENGINE_UP: when the engine was last seen
    down_for: float | None = None  # ENGINE_UP: seconds it was unreachable
    time_ns: int = 0  # Docker's timeNano of a container event: where to resume after a restart


def engine_event(raw: Mapping[str, Any]) -> EngineEvent | None:
    """An EngineEvent from one decoded event of the stream; None for others."""
    if raw.get("Type", "container") != "container":
        return None
    action = raw.get("Action") or raw.get("status") or ""
    actor = raw.get("Actor") or {}
    attributes = actor.get("Attributes") or {}
    app = attributes.get(APP_LABEL, "")
    if not app:
        return None
    time_ns = raw.get("timeNano") or int(raw.get("time") or 0) * 1_000_000_000
    health = None
    if action.startswith("health_status"):
        action, _, status = action.partition(":")
        health = status.strip() or None
    try:
        exit_code = int(attributes["exitCode"]) if "exitCode" in attributes else None
    except ValueError:
        exit_code = None
    return EngineEvent(kind=CONTAINER_EVENT, at=datetime.fromtimestamp(time_ns / 1e9, timezone.utc),
                       action=action, container_id=actor.get("ID") or raw.get("id") or "", app=app,
                       name=attributes.get("name", ""), exit_code=exit_code, health=health, time_ns=time_ns)


def _since_text(time_ns: int) -> str:
    # Nanoseconds as Docker's "seconds.nanoseconds": a float would round away
    # the precision that keeps an event from being delivered twice.
    return f"{time_ns // 1_000_000_000}.{time_ns % 1_000_000_000:09d}"


class _EventPump(threading.Thread):
    """Reads the blocking event stream and hands events to the event loop."""

    PING_TIMEOUT_S = 3

    def __init__(self, url: str | None, loop: asyncio.AbstractEventLoop,
                 queue: asyncio.Queue[EngineEvent], since_ns: int | None = None) -> None:
        super().__init__(name="docker-events", daemon=True)
        self._since_ns = since_ns
        self._url = url
        self._loop = loop
        self._queue = queue
        self._stopped = threading.Event()
        self._lock = threading.Lock()
        self._stream: Any = None
        # A local engine restarts in seconds; polling it every few seconds
        # while it is down costs nothing and reports it back promptly.
        self._backoff = Backoff(base=0.5, cap=5.0)

    def stop(self) -> None:
        self._stopped.set()
        with self._lock:
            stream = self._stream
        if stream is not None:
            try:
                stream.close()  # unblocks the read in run()
            except Exception:  # already closed by the engine going away
                pass

    def _client(self, timeout: int | None) -> docker.DockerClient:
        kwargs: dict[str, Any] = {"timeout": timeout} if timeout else {}
        if self._url:
            return docker.DockerClient(base_url=self._url, **kwargs)
        return docker.from_env(**kwargs)

    def _emit(self, event: EngineEvent) -> bool:
        try:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, event)
            return True
        except RuntimeError:  # the loop is closed: nobody listens any more
            self._stopped.set()
            return False

    def _answers(self) -> bool:
        try:
            probe = self._client(self.PING_TIMEOUT_S)
        except Exception:  # docker-py raises several kinds when the engine is down
            return False
        try:
            return bool(probe.ping())
        except Exception:
            return False
        finally:
            probe.close()

    def run(self) -> None:
        since_ns = self._since_ns or time.time_ns()
        trouble_since: float | None = None  # first failure of the current run of failures
        down_since: float | None = None  # set once the engine did not answer a ping
        while not self._stopped.is_set():
            client = None
            try:
                client = self._client(None)  # no read timeout: the stream is quiet for hours
                client.ping()
                stream = client.api.events(since=_since_text(since_ns), decode=True,
                                           filters={"type": "container", "label": APP_LABEL,
                                                    "event": list(MONITORED_ACTIONS)})
                with self._lock:
                    self._stream = stream
                if self._stopped.is_set():
                    break
                if down_since is not None:
                    lasted = time.time() - down_since
                    log.info("Docker engine reachable again after %.1f s; following events", lasted)
                    self._emit(EngineEvent(kind=ENGINE_UP, at=datetime.now(timezone.utc),
                                           down_since=datetime.fromtimestamp(down_since, timezone.utc),
                                           down_for=lasted))
                down_since = trouble_since = None
                self._backoff.reset()
                for raw in stream:
                    since_ns = max(since_ns, int(raw.get("timeNano") or 0) + 1)
                    event = engine_event(raw)
                    if event is not None and not self._emit(event):
                        break
                log.debug("Docker event stream ended")
            except Exception as exc:  # whatever the engine going away raises, the answer is to retry
                if not self._stopped.is_set():
                    log.debug("Docker event stream failed: %r", exc)
            finally:
                with self._lock:
                    self._stream = None
                if client is not None:
                    try:
                        client.close()
                    except Exception:
                        pass
            if self._stopped.is_set():
                break
            if trouble_since is None:
                trouble_since = time.time()
            # A stream can end while the engine is still there (shutting down,
            # or a connection hiccup): only a failed ping makes it "down".
            if down_since is None and not self._answers():
                down_since = trouble_since
                log.warning("Docker engine not reachable; event stream paused")
                self._emit(EngineEvent(kind=ENGINE_DOWN, at=datetime.fromtimestamp(down_since, timezone.utc)))
            self._stopped.wait(self._backoff.next_delay())


# -- catalog apps ----------------------------------------------------------------
# Records for installs and removals, parsed from Docker's formats here.

# Labels and their values shared with bot.appspec (which builds the bodies).
MANAGED_LABEL = "homeport.managed"
MANAGED_VALUE = "catalog"
PULL_TIMEOUT_S = 1800.0  # a large image over a slow line
READY_POLL_S = 0.5
PULL_REPORT_EVERY_S = 1.0  # progress reaches the event loop at most this often


@dataclass(frozen=True)
class ImageFacts:
    """A local image: what the install record keeps to recreate exactly."""

    ref: str
    image_id: str  # sha256:… of the image config (local)
    digest: str | None  # repo@sha256:… manifest digest from the registry; None for local-only images


def image_facts(ref: str, attrs: Mapping[str, Any]) -> ImageFacts:
    """The image's id, and its manifest digest in `ref`'s own repository
    (another repository's digest would send the upgrades watcher astray)."""
    repo = ref.split("@", 1)[0]
    last = repo.rsplit("/", 1)[-1]
    if ":" in last:
        repo = repo[: -len(last.split(":", 1)[1]) - 1]
    digests = list(attrs.get("RepoDigests") or [])
    digest = next((d for d in digests if d.split("@", 1)[0] == repo), None)
    return ImageFacts(ref=ref, image_id=str(attrs.get("Id", "")), digest=digest)


@dataclass(frozen=True)
class PullProgress:
    """Where a pull stands, summed over its layers."""

    ref: str
    layers: int  # layers seen so far
    layers_done: int
    downloaded: int  # bytes
    total: int  # bytes of the layers whose size is known
    done: bool = False


class _PullTracker:
    """Sums Docker's per-layer pull events into one PullProgress, handing
    one out at most every PULL_REPORT_EVERY_S."""

    DONE = ("Pull complete", "Already exists")

    def __init__(self, ref: str) -> None:
        self.ref = ref
        self._current: dict[str, int] = {}
        self._total: dict[str, int] = {}
        self._done: set[str] = set()
        self._last = 0.0

    def feed(self, event: Mapping[str, Any]) -> PullProgress | None:
        layer = event.get("id")
        status = str(event.get("status") or "")
        detail = event.get("progressDetail") or {}
        if layer and status == "Downloading" and detail.get("total"):
            self._current[layer] = int(detail.get("current") or 0)
            self._total[layer] = int(detail["total"])
        elif layer and status in self.DONE:
            self._done.add(layer)
            if layer in self._total:
                self._current[layer] = self._total[layer]
        elif layer and status.startswith("Pulling fs layer"):
            self._current.setdefault(layer, 0)
        now = time.monotonic()
        if now - self._last < PULL_REPORT_EVERY_S:
            return None
        self._last = now
        return self.snapshot()

    def snapshot(self, done: bool = False) -> PullProgress:
        layers = set(self._current) | self._done
        return PullProgress(ref=self.ref, layers=len(layers), layers_done=len(self._done),
                            downloaded=sum(self._current.values()), total=sum(self._total.values()), done=done)

    def finished(self) -> PullProgress:
        return self.snapshot(done=True)


@dataclass(frozen=True)
class PublishedPort:
    container_port: int
    protocol: str
    host_ip: str
    host_port: int

    def address(self) -> str:
        ip = f"[{self.host_ip}]" if ":" in self.host_ip else self.host_ip
        return f"{ip}:{self.host_port}"


def published_ports(attrs: Mapping[str, Any]) -> list[PublishedPort]:
    ports = ((attrs.get("NetworkSettings") or {}).get("Ports")) or {}
    out = []
    for key, bindings in ports.items():
        number, _, proto = key.partition("/")
        for b in bindings or ():
            if b.get("HostPort"):
                out.append(PublishedPort(int(number), proto or "tcp", b.get("HostIp") or "0.0.0.0", int(b["HostPort"])))
    return sorted(out, key=lambda p: (p.container_port, p.protocol, p.host_ip))


@dataclass
class AppObjects:
    """What exists in Docker for one app."""

    app: str
    containers: list[ContainerInfo] = field(default_factory=list)
    networks: list[str] = field(default_factory=list)
    volumes: list[str] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not (self.containers or self.networks or self.volumes)


def stop_timeout(attrs: Mapping[str, Any]) -> int:
    """The container's own grace period (the catalog's stop_grace_period),
    or Docker's default."""
    value = (attrs.get("Config") or {}).get("StopTimeout")
    return int(value) if isinstance(value, int) and value >= 0 else STOP_TIMEOUT_S


def _not_ready_reason(info: ContainerInfo, attrs: Mapping[str, Any]) -> str | None:
    """Why a container will not become ready; None while it still may."""
    if info.state in ("exited", "dead"):
        return f"exited with code {info.exit_code}" + (" (out of memory)" if info.oom_killed else "")
    if info.restart_count > 0 or info.state == "restarting":
        return f"keeps restarting (last exit code {(attrs.get('State') or {}).get('ExitCode')})"
    if info.health == "unhealthy":
        probes = ((attrs.get("State") or {}).get("Health") or {}).get("Log") or []
        output = (probes[-1].get("Output") or "").strip() if probes else ""
        return "is unhealthy" + (f" (health check said: {output[:300]})" if output else " (its health check fails)")
    return None

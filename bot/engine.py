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
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, TypeVar

import docker
import docker.errors
import requests.exceptions

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
        except (requests.exceptions.ConnectionError, ConnectionError, FileNotFoundError) as exc:
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

    async def stop(self, app: str) -> list[ContainerInfo]:
        infos = await self.containers(app)
        for info in reversed(infos):  # dependants first
            if info.state in ("running", "restarting", "paused"):
                self.mark_intended(info.id)
                await self.call(lambda c, i=info: c.api.stop(i.id, timeout=STOP_TIMEOUT_S),
                                timeout=self.timeout + STOP_TIMEOUT_S, what=f"stopping {info.name}")
        return await self.containers(app)

    async def restart(self, app: str) -> list[ContainerInfo]:
        infos = await self.containers(app)
        for info in reversed(infos):
            if info.state in ("running", "restarting", "paused"):
                self.mark_intended(info.id)
                await self.call(lambda c, i=info: c.api.stop(i.id, timeout=STOP_TIMEOUT_S),
                                timeout=self.timeout + STOP_TIMEOUT_S, what=f"stopping {info.name}")
        for info in infos:
            await self.call(lambda c, i=info: c.api.start(i.id), what=f"starting {info.name}")
        return await self.containers(app)

    # -- images and plain containers --------------------------------------

    async def image_exists(self, ref: str) -> bool:
        def look(c: docker.DockerClient) -> bool:
            try:
                c.api.inspect_image(ref)
                return True
            except docker.errors.ImageNotFound:
                return False

        return await self.call(look, what=f"looking up image {ref}")

    async def import_image(self, tar_path: str, ref: str, changes: list[str]) -> None:
        """`docker import` a root filesystem tarball (no registry needed)."""
        repository, _, tag = ref.rpartition(":")

        def do_import(c: docker.DockerClient) -> None:
            with open(tar_path, "rb") as fh:
                c.api.import_image_from_data(fh.read(), repository=repository, tag=tag, changes=changes)

        await self.call(do_import, what=f"importing {ref}")

    async def run_labelled(self, name: str, image: str, app: str, service: str, command: list[str],
                           ports: dict[str, tuple[str, int]] | None = None) -> ContainerInfo:
        """Create and start one managed container with homeport's labels."""

        def run(c: docker.DockerClient) -> str:
            host_config = c.api.create_host_config(
                port_bindings=ports or None,
                restart_policy={"Name": "unless-stopped"},
                security_opt=["no-new-privileges:true"],
            )
            created = c.api.create_container(
                image, command=command, name=name, host_config=host_config,
                labels={APP_LABEL: app, SERVICE_LABEL: service},
                ports=[int(p.split("/")[0]) for p in (ports or {})] or None,
            )
            c.api.start(created["Id"])
            return created["Id"]

        cid = await self.call(run, what=f"creating {name}")
        infos = [i for i in await self.containers(app) if i.id == cid]
        if not infos:
            raise NotFound(f"container {name} vanished after creation")
        return infos[0]

    # -- exits we caused ---------------------------------------------------

    def mark_intended(self, container_id: str) -> None:
        """Remember that we are about to stop this container, so the monitor
        does not report its exit as a crash."""
        now = time.monotonic()
        self._intended = {k: v for k, v in self._intended.items() if now - v < INTENDED_EXIT_WINDOW_S}
        self._intended[container_id] = now

    def exit_was_intended(self, container_id: str) -> bool:
        t = self._intended.get(container_id)
        return t is not None and time.monotonic() - t < INTENDED_EXIT_WINDOW_S


def _explain(exc: docker.errors.APIError | docker.errors.NotFound) -> str:
    explanation = getattr(exc, "explanation", None)
    if isinstance(explanation, bytes):
        explanation = explanation.decode("utf-8", "replace")
    return str(explanation or exc).strip()

"""Installing, removing and resizing catalog apps: the steps, their order,
and undoing a half-done install.

An install pulls the images it lacks, creates the app's network, volumes and
containers, starts the services in `depends_on` order (waiting for a
dependency to be healthy where the entry asks for that), waits until every
service is ready, and only then writes the install record. Whatever fails on
the way, everything the install created is removed again (volumes kept from
an earlier install are left alone), so an app is either installed or absent.

The chat side (questions, confirmations, progress messages) lives in
`commands/catalog.py`; this module talks to the engine and the record store.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from bot import appspec
from bot.catalog import App, Limits, SettingValue, render
from bot.engine import AppObjects, ContainerInfo, Engine, PublishedPort, PullProgress
from bot.errors import EngineError, HomeportError, UserError
from bot.installs import InstallRecord, InstallStore, ServiceImage

log = logging.getLogger(__name__)

# Added to each service's own health-check budget (appspec.health_timeout):
# an app's first start may initialise a database or migrate files.
READY_BASE_TIMEOUT_S = 180.0


class InstallFailed(HomeportError):
    """An install stopped part-way; str() says what failed, why, and that
    what it had created is gone again."""


@dataclass
class InstallOutcome:
    record: InstallRecord
    ready: list[ContainerInfo]
    ports: dict[str, list[PublishedPort]]  # service -> where it is reachable
    volumes_created: list[str]
    volumes_reused: list[str]  # kept from an earlier install, data included
    pulled: list[str]
    seconds: float


@dataclass
class RemoveOutcome:
    containers: list[str]
    networks: list[str]
    volumes_removed: list[str]
    volumes_kept: list[str]
    seconds: float


@dataclass
class _Made:
    """What an install created so far, for undoing it."""

    network: str | None = None
    volumes: list[str] = field(default_factory=list)
    containers: list[tuple[str, str]] = field(default_factory=list)  # (id, name)


class Installer:
    def __init__(self, engine: Engine, installs: InstallStore, ready_base_timeout: float = READY_BASE_TIMEOUT_S):
        self.engine = engine
        self.installs = installs
        self.ready_base_timeout = ready_base_timeout

    # -- install -------------------------------------------------------------

    async def install(self, entry: App, values: Mapping[str, SettingValue], limits: Limits = Limits(),
                      on_progress: Callable[[PullProgress], None] | None = None) -> InstallOutcome:
        """Install `entry` with the given setting values (every setting
        resolved). InstallFailed after undoing a partial install."""
        began = time.monotonic()
        app = entry.name
        rendered = render(entry, values)
        await self._refuse_leftovers(app)
        images, pulled = await self._images(rendered, on_progress)
        made = _Made()
        reused: list[str] = []
        step = "preparing"
        try:
            step = f"creating network {appspec.network_name(app)}"
            await self.engine.create_network(appspec.network_name(app), appspec.object_labels(app))
            made.network = appspec.network_name(app)
            for volume in rendered.volume_names():
                name = appspec.volume_name(app, volume)
                step = f"creating volume {name}"
                if await self.engine.ensure_volume(name, appspec.object_labels(app)):
                    made.volumes.append(name)
                else:
                    reused.append(name)
            specs = appspec.app_specs(rendered, limits)
            for spec in specs:
                step = f"creating container {spec.name}"
                made.containers.append((await self.engine.create_container(spec.name, spec.body), spec.name))
            ids = {spec.service: cid for spec, (cid, _) in zip(specs, made.containers)}
            ready: dict[str, ContainerInfo] = {}
            for spec in specs:
                service = rendered.service(spec.service)
                for dep, condition in service.depends_on.items():
                    if condition == "service_healthy" and dep not in ready:
                        step = f"waiting for {appspec.container_name(app, dep)} to become healthy"
                        ready[dep] = await self._wait(rendered, app, dep, ids[dep])
                step = f"starting {spec.name}"
                await self.engine.start_container(ids[spec.service], spec.name)
            for spec in specs:
                if spec.service not in ready:
                    step = f"waiting for {spec.name} to become ready"
                    ready[spec.service] = await self._wait(rendered, app, spec.service, ids[spec.service])
            ports = {spec.service: await self.engine.published_ports(ids[spec.service]) for spec in specs}
        except BaseException as exc:
            # Cancellation included: a bot stopping mid-install must not leave half an app.
            left = await asyncio.shield(self._undo(app, made))
            if not isinstance(exc, Exception):
                raise
            reason = str(exc) if isinstance(exc, HomeportError) else f"{exc.__class__.__name__}: {exc}"
            if not isinstance(exc, HomeportError):
                log.exception("install of %s failed while %s", app, step)
            kept = f" Kept the volumes of the earlier install: {', '.join(reused)}." if reused else ""
            cleaned = ("Everything the install had created was removed." if not left else
                       f"Could not remove {', '.join(left)} (the log says why); `remove {app}` clears "
                       "them once Docker answers.")
            raise InstallFailed(f"Install of {app} failed while {step}: {reason}. {cleaned}{kept}") from None
        record = InstallRecord(app=app, entry=entry, settings=dict(values), images=images, limits=limits)
        self.installs.put(record)
        self.installs.forget_kept(app)
        took = time.monotonic() - began
        log.info("installed %s in %.1f s (pulled: %s)", app, took, ", ".join(pulled) or "nothing")
        return InstallOutcome(record=record, ready=[ready[s.service] for s in specs], ports=ports,
                              volumes_created=made.volumes, volumes_reused=reused, pulled=pulled, seconds=took)

    async def _refuse_leftovers(self, app: str) -> None:
        """An app name already in use in Docker (other than by kept volumes)
        is not installed over."""
        objects = (await self.engine.app_objects(app, managed_only=False)).get(app)
        if objects is None or not (objects.containers or objects.networks):
            return
        what = ", ".join([c.name for c in objects.containers] + [f"network {n}" for n in objects.networks])
        managed = (await self.engine.app_objects(app)).get(app)
        if managed is not None and (managed.containers or managed.networks):
            raise UserError(f"Docker still has objects of an earlier install of {app} ({what}); "
                            f"`remove {app}` clears them. Nothing was installed.")
        raise UserError(f"Docker already has containers labelled homeport.app={app} that were not made by "
                        f"an install ({what}); remove or relabel them first. Nothing was installed.")

    async def _images(self, app: App, on_progress: Callable[[PullProgress], None] | None
                      ) -> tuple[dict[str, ServiceImage], list[str]]:
        """Each service's image, pulled when not present locally (a pinned
        tag does not move, so a local copy is the same image)."""
        facts = {}
        pulled = []
        for service in app.services:
            ref = service.image
            if ref not in facts:
                found = await self.engine.local_image(ref)
                if found is None:
                    try:
                        found = await self.engine.pull_image(ref, on_progress)
                    except EngineError as exc:
                        raise InstallFailed(f"Install of {app.name} failed while pulling {ref}: {exc}. "
                                            "Nothing was created.") from None
                    pulled.append(ref)
                facts[ref] = found
        return ({s.name: ServiceImage(ref=s.image, image_id=facts[s.image].image_id, digest=facts[s.image].digest)
                 for s in app.services}, pulled)

    async def _wait(self, app: App, name: str, service: str, container_id: str) -> ContainerInfo:
        timeout = appspec.health_timeout(app.service(service), self.ready_base_timeout)
        return await self.engine.wait_ready(container_id, appspec.container_name(name, service), timeout)

    async def _undo(self, app: str, made: _Made) -> list[str]:
        """Remove what the install made; returns what could not be removed."""
        left: list[str] = []
        ids = {cid for cid, _ in made.containers}
        try:
            infos = [i for i in (await self.objects(app)).containers if i.id in ids]
        except EngineError:
            log.exception("undoing a failed install of %s: cannot list its containers", app)
            infos = []
            left.extend(name for _, name in made.containers)
        for what, action in (
            ("containers", lambda: self.engine.remove_containers(infos)),
            ("network", lambda: self.engine.remove_network(made.network) if made.network else _nothing()),
            *((f"volume {v}", lambda v=v: self.engine.remove_volume(v)) for v in made.volumes),
        ):
            try:
                await action()
            except Exception:  # keep undoing the rest; the log says what stayed
                log.exception("undoing a failed install: could not remove %s", what)
                left.append(what)
        return left

    # -- remove --------------------------------------------------------------

    async def objects(self, app: str) -> AppObjects:
        return (await self.engine.app_objects(app)).get(app) or AppObjects(app=app)

    async def remove(self, app: str, purge: bool) -> RemoveOutcome:
        """Remove the app's containers and network; with `purge` its volumes
        too. Without, the volumes and the settings their data was made with
        are kept for a reinstall."""
        began = time.monotonic()
        record = self.installs.get(app)
        objects = await self.objects(app)
        await self.engine.remove_containers(objects.containers)
        for network in objects.networks:
            await self.engine.remove_network(network)
        removed: list[str] = []
        if purge:
            for volume in objects.volumes:
                await self.engine.remove_volume(volume)
                removed.append(volume)
            self.installs.forget_kept(app)
            left = await self.objects(app)
            if not left.empty:
                names = [c.name for c in left.containers] + left.networks + left.volumes
                raise EngineError(f"{app}: these objects are still there after the purge: {', '.join(names)}")
        elif record is not None:
            self.installs.keep_settings(app, record.settings, objects.volumes)
        self.installs.delete(app)
        took = time.monotonic() - began
        log.info("removed %s in %.1f s (purge: %s)", app, took, purge)
        return RemoveOutcome(containers=[c.name for c in objects.containers], networks=objects.networks,
                             volumes_removed=removed, volumes_kept=[] if purge else objects.volumes, seconds=took)

    # -- limits --------------------------------------------------------------

    async def set_limits(self, app: str, overrides: Limits) -> tuple[InstallRecord, list[tuple[str, Limits]]]:
        """Apply new limits to the running containers in place and keep them
        in the record for later recreations. On a refusal, containers
        already changed get their old limits back and nothing is kept."""
        record = self.installs.get(app)
        if record is None:
            raise UserError(f"{app} is not installed from the catalog.")
        new = overrides.merged_over(record.limits)
        rendered = record.rendered()
        objects = await self.objects(app)
        changed: list[tuple[ContainerInfo, Limits]] = []
        applied: list[tuple[str, Limits]] = []
        try:
            for info in objects.containers:
                try:
                    service = rendered.service(info.service)
                except KeyError:
                    continue  # not part of the entry: reconcile reports it
                old = appspec.effective_limits(service, record.limits)
                limits = appspec.effective_limits(service, new)
                await self.engine.update_resources(info.id, info.name, appspec.resources(limits))
                changed.append((info, old))
                applied.append((info.name, limits))
        except EngineError:
            for info, old in changed:
                try:
                    await self.engine.update_resources(info.id, info.name, appspec.resources(old))
                except EngineError:
                    log.exception("could not restore the limits of %s", info.name)
            raise
        updated = record.with_limits(new)
        self.installs.put(updated)
        return updated, applied


async def _nothing() -> None:
    return None

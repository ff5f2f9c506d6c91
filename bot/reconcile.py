"""Comparing the install records with what Docker has, and telling the owner
at start what drifted: a container or network missing, a volume (and its
data) gone, an app whose containers were all removed by hand, a container
running another image than the one installed, or objects an install made
that no record explains.

`find_drift` is a pure function over the records and the engine's listing;
`startup_report` gathers both, adds the catalog's problems, and words one
message for the owner (None when all is well).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from bot import appspec
from bot.catalog import CatalogError
from bot.engine import AppObjects, Engine
from bot.errors import EngineError
from bot.installs import InstallRecord, InstallStore

log = logging.getLogger(__name__)

MAX_CATALOG_LINES = 5


@dataclass(frozen=True)
class Drift:
    app: str
    text: str


def find_drift(records: Sequence[InstallRecord], objects: Mapping[str, AppObjects]) -> list[Drift]:
    """Every difference between the records and Docker's objects."""
    drifts: list[Drift] = []
    recorded = {r.app for r in records}
    for record in records:
        app = record.app
        found = objects.get(app) or AppObjects(app=app)
        rendered_services = [s.name for s in record.entry.start_order()]
        by_service = {c.service: c for c in found.containers}
        if not found.containers:
            drifts.append(Drift(app, f"{app}: installed, but all its containers are gone (removed by hand?)"))
        else:
            for service in rendered_services:
                name = appspec.container_name(app, service)
                info = by_service.get(service)
                if info is None:
                    drifts.append(Drift(app, f"{app}: container {name} (service {service}) is missing"))
                    continue
                image = record.images.get(service)
                if image is not None and image.image_id and info.image_id != image.image_id:
                    drifts.append(Drift(app, f"{app}: {info.name} runs image {info.image_id[:19]}, "
                                             f"installed was {image.image_id[:19]} ({image.ref})"))
            for info in found.containers:
                if info.service not in rendered_services:
                    drifts.append(Drift(app, f"{app}: container {info.name} is not part of the installed app"))
        network = appspec.network_name(app)
        if network not in found.networks:
            drifts.append(Drift(app, f"{app}: network {network} is missing"))
        for volume in record.entry.volume_names():
            name = appspec.volume_name(app, volume)
            if name not in found.volumes:
                drifts.append(Drift(app, f"{app}: volume {name} is missing (its data is gone)"))
    for app, found in sorted(objects.items()):
        if app in recorded or not (found.containers or found.networks):
            continue  # volumes alone: data kept on purpose by `remove`
        what = ", ".join([c.name for c in found.containers] + [f"network {n}" for n in found.networks])
        drifts.append(Drift(app, f"{app}: Docker has objects an install made ({what}) but there is no install "
                                 f"record; `remove {app}` clears them"))
    return drifts


def drift_text(drifts: Sequence[Drift]) -> str:
    apps = sorted({d.app for d in drifts})
    lines = [f"Drift between installed apps and Docker ({', '.join(apps)}):"]
    lines += [f"- {d.text}" for d in drifts]
    lines.append("To rebuild an app from its record: `remove <app>` (data volumes are kept), then `install <app>`.")
    return "\n".join(lines)


def catalog_text(problems: Sequence[CatalogError]) -> str:
    apps = sorted({e.app or "" for e in problems} - {""})
    lines = [f"The catalog has {len(problems)} problem(s)"
             + (f"; these apps cannot be installed until fixed: {', '.join(apps)}" if apps else "") + ":"]
    lines += [f"- {e}" for e in problems[:MAX_CATALOG_LINES]]
    if len(problems) > MAX_CATALOG_LINES:
        lines.append(f"… and {len(problems) - MAX_CATALOG_LINES} more (`homeport catalog check` lists them all)")
    return "\n".join(lines)


async def reconcile(engine: Engine, installs: InstallStore) -> list[Drift]:
    records = installs.all()
    objects = await engine.app_objects()
    drifts = find_drift(records, objects)
    for d in drifts:
        log.warning("drift: %s", d.text)
    log.info("reconciled %d install record(s) with Docker: %d difference(s)", len(records), len(drifts))
    return drifts


async def startup_report(services: Any) -> str | None:
    """What the owner should hear when the bot starts: catalog problems and
    drift. None when there is nothing to say."""
    parts = []
    problems = services.catalog_problems
    if problems:
        parts.append(catalog_text(problems))
    try:
        drifts = await reconcile(services.engine, services.installs)
    except EngineError as exc:
        log.warning("could not reconcile install records with Docker: %s", exc)
        if services.installs.names():
            parts.append(f"Could not compare the installed apps with Docker: {exc}")
    else:
        if drifts:
            parts.append(drift_text(drifts))
    return "\n\n".join(parts) if parts else None

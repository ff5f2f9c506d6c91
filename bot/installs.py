"""The installed-app record: what homeport needs to recreate every container
of an app exactly, kept in the state database's `installs` table.

A record holds the catalog entry as it was used (App.to_dict, placeholders
still in), the setting values (secrets included: the database file is 0600),
the image of each service (reference, local image id, registry digest), the
owner's `limit` overrides and the creation time. Rendering the entry with the
settings and applying the limits gives the same containers again; the
upgrades and backups features build on that.

When an app is removed but its volumes are kept, its settings are kept too
(as "kept settings" in the key/value table), so that a reinstall reuses the
generated passwords its data was created with.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from bot.catalog import App, Limits, SettingValue, render
from bot.store import Store

log = logging.getLogger(__name__)

KEPT_PREFIX = "kept-settings:"
LIMIT_KEYS = ("memory", "cpus", "pids")


@dataclass(frozen=True)
class ServiceImage:
    """The image a service's container was created from."""

    ref: str  # as the catalog names it, e.g. ghost:6.21.2-alpine
    image_id: str  # the local image (sha256:…): the exact bits
    digest: str | None = None  # repo@sha256:… from the registry, None for local-only images

    def to_dict(self) -> dict[str, Any]:
        return {"ref": self.ref, "image_id": self.image_id, "digest": self.digest}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ServiceImage:
        return cls(ref=str(data["ref"]), image_id=str(data.get("image_id") or ""), digest=data.get("digest"))


def limits_to_dict(limits: Limits) -> dict[str, Any]:
    return {k: getattr(limits, k) for k in LIMIT_KEYS if getattr(limits, k) is not None}


def limits_from_dict(data: Mapping[str, Any]) -> Limits:
    return Limits(memory=data.get("memory"), cpus=data.get("cpus"), pids=data.get("pids"))


@dataclass(frozen=True)
class InstallRecord:
    app: str
    entry: App  # the catalog entry as used, placeholders not yet substituted
    settings: Mapping[str, SettingValue]
    images: Mapping[str, ServiceImage]  # service name -> image
    limits: Limits = Limits()  # the owner's overrides, over the entry's limits
    created: float = field(default_factory=time.time)
    updated: float = field(default_factory=time.time)

    def rendered(self) -> App:
        """The entry with the settings substituted: what the containers run."""
        return render(self.entry, self.settings)

    def with_limits(self, limits: Limits) -> InstallRecord:
        return replace(self, limits=limits, updated=time.time())


class InstallStore:
    """Install records and kept settings in the state database."""

    def __init__(self, store: Store):
        self.store = store

    def names(self) -> list[str]:
        return [r["app"] for r in self.store.db.execute("SELECT app FROM installs ORDER BY app").fetchall()]

    def get(self, app: str) -> InstallRecord | None:
        row = self.store.db.execute("SELECT * FROM installs WHERE app=?", (app,)).fetchone()
        return None if row is None else _from_row(row)

    def all(self) -> list[InstallRecord]:
        rows = self.store.db.execute("SELECT * FROM installs ORDER BY app").fetchall()
        records = []
        for row in rows:
            try:
                records.append(_from_row(row))
            except Exception:  # one unreadable record must not hide the others
                log.exception("install record of %s is unreadable", row["app"])
        return records

    def put(self, record: InstallRecord) -> None:
        self.store.db.execute(
            "INSERT INTO installs (app, entry, settings, digests, limits, created, updated) "
            "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(app) DO UPDATE SET entry=excluded.entry, "
            "settings=excluded.settings, digests=excluded.digests, limits=excluded.limits, "
            "updated=excluded.updated",
            (
                record.app,
                json.dumps(record.entry.to_dict()),
                json.dumps(dict(record.settings)),
                json.dumps({name: image.to_dict() for name, image in record.images.items()}),
                json.dumps(limits_to_dict(record.limits)),
                record.created,
                record.updated,
            ),
        )

    def delete(self, app: str) -> None:
        self.store.db.execute("DELETE FROM installs WHERE app=?", (app,))

    # -- settings kept with kept volumes -------------------------------------

    def keep_settings(self, app: str, settings: Mapping[str, SettingValue], volumes: list[str]) -> None:
        self.store.put(KEPT_PREFIX + app, {"settings": dict(settings), "volumes": volumes, "at": time.time()})

    def kept_settings(self, app: str) -> dict[str, SettingValue]:
        data = self.store.get(KEPT_PREFIX + app) or {}
        return dict(data.get("settings") or {})

    def forget_kept(self, app: str) -> None:
        self.store.db.execute("DELETE FROM kv WHERE key=?", (KEPT_PREFIX + app,))


def _from_row(row: Any) -> InstallRecord:
    app = row["app"]
    entry = App.from_dict(json.loads(row["entry"]), source=f"<install record of {app}>")
    images = {name: ServiceImage.from_dict(data) for name, data in json.loads(row["digests"]).items()}
    return InstallRecord(app=app, entry=entry, settings=json.loads(row["settings"]), images=images,
                         limits=limits_from_dict(json.loads(row["limits"] or "{}")), created=row["created"],
                         updated=row["updated"])

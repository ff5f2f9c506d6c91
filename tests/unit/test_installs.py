"""bot.installs: the install record survives the database unchanged, and the
state file holding secrets is owner-only."""

from __future__ import annotations

import stat
from pathlib import Path

from bot.catalog import Limits, read_app, resolve_values
from bot.installs import InstallRecord, InstallStore, ServiceImage
from bot.store import Store

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "catalog"


def test_record_round_trip_and_rendering(tmp_path: Path) -> None:
    store = Store(tmp_path)
    installs = InstallStore(store)
    app = read_app(FIXTURES / "pair.yaml")
    values = resolve_values(app, {"greeting": "hi", "answer": "7"})
    images = {"web": ServiceImage("hp-test/busybox:1", "sha256:" + "a" * 64),
              "client": ServiceImage("hp-test/busybox:1", "sha256:" + "a" * 64, "reg/x@sha256:" + "b" * 64)}
    record = InstallRecord(app="pair", entry=app, settings=values, images=images, limits=Limits(cpus=0.5))
    installs.put(record)
    again = InstallStore(Store(tmp_path)).get("pair")
    assert again is not None
    assert again.entry == app and again.settings == values and again.images == images
    assert again.limits == Limits(cpus=0.5) and again.created == record.created
    assert again.rendered().service("web").environment["GREETING"] == "hi"
    assert again.rendered().service("client").environment["ANSWER"] == "7"
    assert installs.names() == ["pair"]
    installs.put(again.with_limits(Limits(memory=64 * 1024**2)))
    assert installs.get("pair").limits == Limits(memory=64 * 1024**2)
    installs.delete("pair")
    assert installs.get("pair") is None and installs.names() == []
    mode = stat.S_IMODE(store.path.stat().st_mode)
    assert mode == 0o600


def test_kept_settings_until_forgotten(tmp_path: Path) -> None:
    installs = InstallStore(Store(tmp_path))
    assert installs.kept_settings("pair") == {}
    installs.keep_settings("pair", {"token": "s3cret", "answer": 42}, ["hp-pair-data"])
    assert installs.kept_settings("pair") == {"token": "s3cret", "answer": 42}
    installs.forget_kept("pair")
    assert installs.kept_settings("pair") == {}

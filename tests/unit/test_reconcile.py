"""bot.reconcile: drift between install records and Docker's objects."""

from __future__ import annotations

from pathlib import Path

from bot.catalog import CatalogError, read_app, resolve_values
from bot.engine import AppObjects, ContainerInfo
from bot.installs import InstallRecord, ServiceImage
from bot.reconcile import catalog_text, drift_text, find_drift

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "catalog"
IMAGE = "sha256:" + "1" * 64


def info(app: str, service: str, image_id: str = IMAGE) -> ContainerInfo:
    return ContainerInfo(id=f"{app}-{service}-id", name=f"{app}-{service}", app=app, service=service,
                         state="running", exit_code=None, health="healthy", started_at=None, finished_at=None,
                         image="hp-test/busybox:1", image_id=image_id, restart_count=0, oom_killed=False, order=0)


def record() -> InstallRecord:
    app = read_app(FIXTURES / "pair.yaml")
    return InstallRecord(app="pair", entry=app, settings=resolve_values(app, {"greeting": "hi"}),
                         images={s: ServiceImage("hp-test/busybox:1", IMAGE) for s in ("web", "client")})


def complete() -> AppObjects:
    return AppObjects(app="pair", containers=[info("pair", "web"), info("pair", "client")], networks=["hp-pair"],
                      volumes=["hp-pair-data", "hp-pair-www"])


def test_nothing_to_say_when_docker_matches() -> None:
    assert find_drift([record()], {"pair": complete()}) == []


def test_missing_container_network_volume_and_other_image() -> None:
    objects = complete()
    objects.containers = [info("pair", "web", "sha256:" + "2" * 64)]
    objects.networks = []
    objects.volumes = ["hp-pair-www"]
    texts = [d.text for d in find_drift([record()], {"pair": objects})]
    assert texts == [
        "pair: pair-web runs image sha256:222222222222, installed was sha256:111111111111 (hp-test/busybox:1)",
        "pair: container pair-client (service client) is missing",
        "pair: network hp-pair is missing",
        "pair: volume hp-pair-data is missing (its data is gone)",
    ]


def test_all_containers_gone_and_an_unknown_one() -> None:
    objects = complete()
    objects.containers = []
    assert [d.text for d in find_drift([record()], {"pair": objects})] == [
        "pair: installed, but all its containers are gone (removed by hand?)"]
    objects = complete()
    objects.containers.append(info("pair", "extra"))
    assert [d.text for d in find_drift([record()], {"pair": objects})] == [
        "pair: container pair-extra is not part of the installed app"]


def test_objects_without_a_record_but_kept_volumes_are_fine() -> None:
    drifts = find_drift([], {"pair": complete(), "old": AppObjects(app="old", volumes=["hp-old-data"])})
    assert len(drifts) == 1 and drifts[0].app == "pair" and "no install record" in drifts[0].text
    text = drift_text(drifts)
    assert text.startswith("Drift between installed apps and Docker (pair):\n- pair: ")


def test_catalog_text_names_the_apps_and_caps_the_lines() -> None:
    errors = [CatalogError(f"/c/a{i}.yaml", f"a{i}", "image", "bad") for i in range(7)]
    text = catalog_text(errors)
    assert text.splitlines()[0] == ("The catalog has 7 problem(s); these apps cannot be installed until fixed: "
                                    "a0, a1, a2, a3, a4, a5, a6:")
    assert len(text.splitlines()) == 1 + 5 + 1 and "`homeport catalog check`" in text

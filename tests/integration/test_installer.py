"""Installing catalog apps against the real engine, below the chat: pulls
from the local registry with progress and digests, the container options
the catalog can ask for, undoing an install that is cancelled half-way, and
reconciling records with Docker."""

from __future__ import annotations

import asyncio
import io
import os
import secrets
import tarfile
import urllib.request
from pathlib import Path

import docker
import pytest

from bot.catalog import read_app, resolve_values
from bot.engine import Engine, PullProgress
from bot.errors import EngineError, UserError
from bot.installer import InstallFailed, Installer
from bot.installs import InstallStore
from bot.reconcile import reconcile
from bot.store import Store
from tests.images import APP_REPO, MANIFEST_TYPES, REGISTRY
from tests.integration.catalog_helpers import TestCatalog, test_catalog, until  # noqa: F401 (fixture)

pytestmark = pytest.mark.integration


def registry_digest(repository: str, tag: str) -> str:
    repo = repository.split("/", 1)[1]
    request = urllib.request.Request(f"http://{REGISTRY}/v2/{repo}/manifests/{tag}", method="HEAD",
                                     headers={"Accept": MANIFEST_TYPES})
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.headers["Docker-Content-Digest"]


@pytest.fixture
def installer(tmp_path: Path) -> Installer:
    store = Store(tmp_path / "state")
    return Installer(Engine(), InstallStore(store), ready_base_timeout=30)


def leftovers(client: docker.DockerClient, app: str) -> list[str]:
    label = {"label": f"homeport.app={app}"}
    return sorted([f"container {c.name}" for c in client.containers.list(all=True, filters=label)]
                  + [f"network {n.name}" for n in client.networks.list(filters=label)]
                  + [f"volume {v.name}" for v in client.volumes.list(filters=label)])


async def test_pull_from_the_local_registry_reports_progress_and_digest(registry_url, docker_client):
    # An image of this test's own, with a layer no local image has, so the
    # pull really downloads (the shared hp-test/app tags may be local, or in use).
    repo = f"{REGISTRY}/hp-test/pull-{secrets.token_hex(4)}"
    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w") as tar:
        blob = os.urandom(3 * 1024 * 1024)
        member = tarfile.TarInfo("noise.bin")
        member.size = len(blob)
        tar.addfile(member, io.BytesIO(blob))
    docker_client.api.import_image_from_data(layer.getvalue(), repository=repo, tag="1.0.0")
    image_id = docker_client.images.get(f"{repo}:1.0.0").id
    for line in docker_client.images.push(repo, tag="1.0.0", stream=True, decode=True):
        assert "error" not in line, line
    docker_client.images.remove(f"{repo}:1.0.0")
    engine = Engine()
    seen: list[PullProgress] = []
    try:
        facts = await engine.pull_image(f"{repo}:1.0.0", seen.append)
        # The final report is scheduled on the loop by the worker thread.
        await until(lambda: seen and seen[-1].done, 5, "the final pull progress")
        assert facts.digest == f"{repo}@{registry_digest(repo, '1.0.0')}"
        assert facts.image_id == image_id
        final = seen[-1]
        assert (final.layers, final.layers_done) == (1, 1)
        assert final.total >= 3 * 1024 * 1024 and final.downloaded == final.total
    finally:
        docker_client.images.remove(f"{repo}:1.0.0")


async def test_pull_of_a_missing_image_says_so(registry_url):
    with pytest.raises(EngineError, match=r"image 127.0.0.1:5000/hp-test/no-such:1.0.0 not found"):
        await Engine().pull_image(f"{REGISTRY}/hp-test/no-such:1.0.0")


async def test_install_from_the_registry_records_the_digest(installer, docker_client, registry_url,
                                                             test_catalog: TestCatalog):
    name = test_catalog.app("versioned")
    entry = read_app(test_catalog.dir / f"{name}.yaml")
    outcome = await installer.install(entry, resolve_values(entry, {}))
    image = outcome.record.images["app"]
    assert image.digest == f"{APP_REPO}@{registry_digest(APP_REPO, '1.0.0')}"
    c = docker_client.containers.get(f"{name}-app")
    assert c.image.id == image.image_id
    port = outcome.ports["app"][0]
    assert port.host_ip == "127.0.0.1"
    with urllib.request.urlopen(f"http://127.0.0.1:{port.host_port}/version", timeout=5) as response:
        assert response.read().decode().strip() == "1.0.0"
    stored = installer.installs.get(name)
    assert stored is not None and stored.images == outcome.record.images and stored.entry == entry


async def test_catalog_options_reach_the_container(installer, docker_client, test_catalog: TestCatalog,
                                                   tmp_path: Path):
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "hello.txt").write_text("from the host")
    name = test_catalog.app("hardened", text="""\
name: hardened
description: Every container option the catalog has
settings:
  - name: word
    prompt: A word?
services:
  main:
    image: hp-test/busybox:1
    entrypoint: [sh, -c]
    command: ["trap 'exit 0' TERM INT; echo {{ word }} > /scratch/said; sleep 86400 & wait"]
    user: "65534:65534"
    read_only: true
    tmpfs: ["/scratch:size=1m,mode=1777", /tmp]
    cap_drop: [ALL]
    cap_add: [KILL]
    security_opt: [no-new-privileges:true]
    volumes: [state:/state, "SHARED:/shared:ro"]
    healthcheck:
      test: [CMD-SHELL, "test -s /scratch/said"]
      interval: 1s
      timeout: 2s
      retries: 2
    limits: {memory: 16m, cpus: 0.25, pids: 20}
    stop_grace_period: 3s
""".replace("SHARED", str(shared)))
    entry = read_app(test_catalog.dir / f"{name}.yaml")
    await installer.install(entry, resolve_values(entry, {"word": "spoken words"}))
    c = docker_client.containers.get(f"{name}-main")
    host, config = c.attrs["HostConfig"], c.attrs["Config"]
    assert config["Entrypoint"] == ["sh", "-c"] and config["User"] == "65534:65534"
    assert host["ReadonlyRootfs"] is True
    assert host["Tmpfs"] == {"/scratch": "size=1m,mode=1777", "/tmp": ""}
    assert host["CapDrop"] == ["ALL"] and host["CapAdd"] == ["KILL"]
    assert host["SecurityOpt"] == ["no-new-privileges:true"]
    assert (host["Memory"], host["NanoCpus"], host["PidsLimit"]) == (16 * 1024**2, 250_000_000, 20)
    assert config["StopTimeout"] == 3
    mounts = {m["Destination"]: m for m in c.attrs["Mounts"]}
    assert mounts["/state"]["Name"] == f"hp-{name}-state"
    assert mounts["/shared"]["Type"] == "bind" and mounts["/shared"]["RW"] is False
    assert c.exec_run(["cat", "/shared/hello.txt"]).output.decode() == "from the host"
    code, out = c.exec_run(["cat", "/scratch/said"])
    assert (code, out.decode().strip()) == (0, "spoken words")
    assert c.exec_run(["touch", "/rootfs-write"]).exit_code != 0  # read-only root
    assert c.exec_run(["id", "-u"]).output.decode().strip() == "65534"


async def test_cancelled_install_is_undone(installer, docker_client, test_catalog: TestCatalog):
    name = test_catalog.app("pair")
    entry = read_app(test_catalog.dir / f"{name}.yaml")
    # Web never answers on 8080, so its health check never passes: the
    # install waits there with network, volumes and containers made.
    stuck = entry.__class__.from_dict({
        **entry.to_dict(),
        "services": {**entry.to_dict()["services"],
                     "web": {**entry.to_dict()["services"]["web"],
                             "command": ["sh", "-c", "trap 'exit 0' TERM INT; sleep 86400 & wait"]}},
    })
    task = asyncio.ensure_future(installer.install(stuck, resolve_values(stuck, {"greeting": "hi"})))
    await until(lambda: docker_client.containers.list(filters={"name": f"{name}-web", "status": "running"}), 30,
                "the web container to run")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # The undo goes on in its own task; wait for it with a deadline.
    await until(lambda: not leftovers(docker_client, name), 30, "the cancelled install to be undone")
    assert installer.installs.get(name) is None


async def test_install_refuses_a_name_docker_already_uses(installer, labelled_containers, test_catalog):
    name = test_catalog.app("solo")
    labelled_containers(name, service="main")  # an issue-2 style app of the same name
    entry = read_app(test_catalog.dir / f"{name}.yaml")
    with pytest.raises(UserError, match="were not made by an install"):
        await installer.install(entry, resolve_values(entry, {}))


async def test_reconcile_finds_drift_and_unrecorded_installs(installer, docker_client, test_catalog):
    name = test_catalog.app("pair")
    entry = read_app(test_catalog.dir / f"{name}.yaml")
    await installer.install(entry, resolve_values(entry, {"greeting": "hi"}))
    assert [d for d in await reconcile(installer.engine, installer.installs) if d.app == name] == []
    docker_client.volumes.get(f"hp-{name}-data")  # exists
    docker_client.containers.get(f"{name}-client").remove(force=True, v=True)
    docker_client.volumes.get(f"hp-{name}-data").remove()
    texts = [d.text for d in await reconcile(installer.engine, installer.installs) if d.app == name]
    assert texts == [f"{name}: container {name}-client (service client) is missing",
                     f"{name}: volume hp-{name}-data is missing (its data is gone)"]
    installer.installs.delete(name)
    texts = [d.text for d in await reconcile(installer.engine, installer.installs) if d.app == name]
    assert len(texts) == 1 and "no install record" in texts[0] and f"{name}-web" in texts[0]


async def test_unhealthy_install_fails_fast_with_the_reason(installer, docker_client, test_catalog):
    name = test_catalog.app("unhealthy")
    entry = read_app(test_catalog.dir / f"{name}.yaml")
    with pytest.raises(InstallFailed, match=rf"waiting for {name}-broken to become ready: {name}-broken is "
                                            r"unhealthy"):
        await installer.install(entry, resolve_values(entry, {}))
    assert leftovers(docker_client, name) == []

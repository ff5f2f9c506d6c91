"""Smoke tests of the test infrastructure itself: the Docker fixtures, the
test images and the local registry that tests/run.sh prepares."""

from __future__ import annotations

import json
import os
import time
import urllib.request

import docker
import docker.errors
import pytest

from tests.images import APP_REPO, APP_TAGS, HTTPD_PORT, MANIFEST_TYPES
from tests.integration.docker_fixtures import (
    APP_LABEL,
    OWNER_LABEL,
    SERVICE_LABEL,
    LabelledContainers,
    SpareDockerd,
    wait_for,
)

pytestmark = pytest.mark.integration


def test_labelled_container_is_created_and_cleaned(
    docker_client: docker.DockerClient, labelled_containers: LabelledContainers
) -> None:
    app = labelled_containers.app_name("web")
    container = labelled_containers(app, service="front")
    network = docker_client.networks.create(f"{labelled_containers.prefix}net", labels=labelled_containers.owner_labels)

    assert container.status == "running"
    assert container.name.startswith(labelled_containers.prefix)
    assert container.labels[APP_LABEL] == app
    assert container.labels[SERVICE_LABEL] == "front"
    # The default command must stop on SIGTERM at once, not after 10 s.
    began = time.monotonic()
    container.stop(timeout=10)
    assert time.monotonic() - began < 5

    removed = labelled_containers.cleanup()
    assert f"container {container.name}" in removed and f"network {network.name}" in removed
    with pytest.raises(docker.errors.NotFound):
        docker_client.containers.get(container.id)
    assert docker_client.containers.list(all=True, filters={"label": f"{OWNER_LABEL}={labelled_containers.token}"}) == []


def test_adopted_app_is_removed(docker_client: docker.DockerClient, labelled_containers: LabelledContainers,
                                test_image: str) -> None:
    app = labelled_containers.app_name("made")
    # As the bot would: labelled with the app only, not with the test's owner label.
    stray = docker_client.containers.create(test_image, ["true"], labels={APP_LABEL: app})
    labelled_containers.adopt_app(app)
    labelled_containers.cleanup()
    with pytest.raises(docker.errors.NotFound):
        docker_client.containers.get(stray.id)


def test_httpd_image_turns_healthy_and_unhealthy(labelled_containers: LabelledContainers, httpd_image: str) -> None:
    container = labelled_containers(labelled_containers.app_name("site"), None, image=httpd_image)

    def health() -> str:
        container.reload()
        return container.attrs["State"]["Health"]["Status"]

    wait_for(lambda: health() == "healthy", 20, "httpd container to become healthy")
    code, _ = container.exec_run(["wget", "-q", "-O", "-", f"http://127.0.0.1:{HTTPD_PORT}/"])
    assert code == 0
    container.exec_run(["rm", "/www/health"])
    wait_for(lambda: health() == "unhealthy", 20, "httpd container to become unhealthy")


def _host_interfaces() -> set[str]:
    return set(os.listdir("/sys/class/net"))


def test_spare_dockerd_stops_and_starts(spare_dockerd: SpareDockerd, test_image: str,
                                        docker_client: docker.DockerClient) -> None:
    host_interfaces = _host_interfaces()
    client = spare_dockerd.client()
    assert client.images.get(test_image).id == docker_client.images.get(test_image).id
    out = client.containers.run(test_image, ["echo", "before"], remove=True)
    assert out.strip() == b"before"
    kept = client.containers.create(test_image, ["sh", "-c", "trap 'exit 0' TERM; sleep 600 & wait"], name="kept")
    kept.start()

    stopped_in = spare_dockerd.stop()
    assert not spare_dockerd.running
    with pytest.raises(docker.errors.DockerException):
        docker.DockerClient(base_url=spare_dockerd.url, timeout=2).ping()

    started_in = spare_dockerd.start()
    client = spare_dockerd.client()
    assert client.containers.get("kept").status == "exited"
    out = client.containers.run(test_image, ["echo", "after"], remove=True)
    assert out.strip() == b"after"
    # The shared engine never noticed: same host interfaces (docker0 above
    # all), and its containers still get their network.
    assert _host_interfaces() == host_interfaces
    assert docker_client.ping()
    assert docker_client.containers.run(test_image, ["sh", "-c", "ip -o -4 addr show eth0"],
                                        remove=True, labels={OWNER_LABEL: "infra-smoke"}).strip()
    print(f"spare dockerd: stop {stopped_in:.2f}s, start {started_in:.2f}s, "
          f"all starts {[round(s, 2) for s in spare_dockerd.start_durations]}")


def test_spare_dockerd_is_empty_for_each_test(spare_dockerd: SpareDockerd) -> None:
    # The previous test left a container named "kept": the fixture removed it.
    assert spare_dockerd.client().containers.list(all=True) == []


def test_registry_holds_app_tags_with_distinct_digests(registry_url: str) -> None:
    repo = APP_REPO.removeprefix(f"{registry_url}/")
    with urllib.request.urlopen(f"http://{registry_url}/v2/{repo}/tags/list", timeout=5) as response:
        tags = json.loads(response.read())["tags"]
    assert set(APP_TAGS) <= set(tags)

    digests = {}
    for tag in APP_TAGS:
        request = urllib.request.Request(f"http://{registry_url}/v2/{repo}/manifests/{tag}", method="HEAD",
                                         headers={"Accept": MANIFEST_TYPES})
        with urllib.request.urlopen(request, timeout=5) as response:
            digests[tag] = response.headers["Docker-Content-Digest"]
    assert all(d.startswith("sha256:") for d in digests.values())
    assert len(set(digests.values())) == len(APP_TAGS)

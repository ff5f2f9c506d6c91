"""The engine's parsing for installs: image digests, pull progress sums,
published ports and why a container will not become ready."""

from __future__ import annotations

from typing import Any

from bot.engine import _not_ready_reason, _PullTracker, container_info, image_facts, published_ports


def test_digest_is_taken_from_the_refs_own_repository() -> None:
    attrs = {"Id": "sha256:1", "RepoDigests": ["other/app@sha256:aa", "127.0.0.1:5000/hp/app@sha256:bb"]}
    assert image_facts("127.0.0.1:5000/hp/app:1.0.0", attrs).digest == "127.0.0.1:5000/hp/app@sha256:bb"
    assert image_facts("postgres:17.6-alpine", attrs).digest is None
    assert image_facts("hp-test/busybox:1", {"Id": "sha256:2"}).image_id == "sha256:2"


def test_pull_tracker_sums_layers_and_throttles() -> None:
    tracker = _PullTracker("x:1")
    events = [
        {"status": "Pulling fs layer", "id": "a"}, {"status": "Pulling fs layer", "id": "b"},
        {"status": "Downloading", "id": "a", "progressDetail": {"current": 10, "total": 100}},
        {"status": "Downloading", "id": "b", "progressDetail": {"current": 5, "total": 50}},
        {"status": "Pull complete", "id": "a"}, {"status": "Already exists", "id": "c"},
    ]
    first = tracker.feed(events[0])
    assert first is not None  # the first event always reports
    assert all(tracker.feed(e) is None for e in events[1:])  # then at most once a second
    final = tracker.finished()
    assert (final.layers, final.layers_done, final.downloaded, final.total, final.done) == (3, 2, 105, 150, True)


def test_published_ports() -> None:
    attrs = {"NetworkSettings": {"Ports": {"8080/tcp": [{"HostIp": "127.0.0.1", "HostPort": "49153"}],
                                           "9000/udp": None}}}
    [port] = published_ports(attrs)
    assert (port.container_port, port.protocol, port.address()) == (8080, "tcp", "127.0.0.1:49153")


def _attrs(status: str, health: str | None = None, restarts: int = 0, exit_code: int = 0,
           probe: str = "") -> dict[str, Any]:
    state: dict[str, Any] = {"Status": status, "ExitCode": exit_code, "OOMKilled": False}
    if health:
        state["Health"] = {"Status": health, "Log": [{"Output": probe}] if probe else []}
    return {"Id": "c1", "Name": "/a-web", "Config": {"Labels": {}}, "State": state, "RestartCount": restarts}


def test_not_ready_reasons() -> None:
    def reason(**kw: Any) -> str | None:
        attrs = _attrs(**kw)
        return _not_ready_reason(container_info(attrs), attrs)

    assert reason(status="running", health="starting") is None
    assert reason(status="exited", exit_code=3) == "exited with code 3"
    assert reason(status="running", restarts=2) == "keeps restarting (last exit code 0)"
    assert reason(status="running", health="unhealthy", probe="connection refused\n") == (
        "is unhealthy (health check said: connection refused)")

"""The Docker module against the real engine: listing, lifecycle, logs,
unreachable engine."""

from __future__ import annotations

import asyncio
import uuid

import docker
import pytest

from bot.engine import APP_LABEL, ORDER_LABEL, SERVICE_LABEL, Engine
from bot.errors import EngineUnavailable

IMAGE = "hp-test/busybox:1"


@pytest.fixture
def app_name():
    return "eng" + uuid.uuid4().hex[:8]


@pytest.fixture
def two_service_app(app_name):
    """db (order 0) and web (order 1), both printing a line then sleeping."""
    client = docker.from_env()
    made = []
    for order, service in enumerate(("db", "web")):
        c = client.containers.run(
            IMAGE, ["sh", "-c", f"echo hello from {service}; printf 'bell\\a esc\\033[31mred\\n'; exec sleep 3600"],
            name=f"{app_name}-{service}", detach=True, stop_signal="SIGKILL",
            labels={APP_LABEL: app_name, SERVICE_LABEL: service, ORDER_LABEL: str(order)})
        made.append(c)
    # A container without the label must never be touched.
    stranger = client.containers.run(IMAGE, ["sleep", "3600"], name=f"{app_name}-unmanaged", detach=True,
                                     stop_signal="SIGKILL")
    yield app_name
    for c in [*made, stranger]:
        c.remove(force=True)
    client.close()


async def test_lists_only_labelled_containers_in_start_order(two_service_app):
    engine = Engine()
    infos = await engine.containers(two_service_app)
    assert [i.service for i in infos] == ["db", "web"]
    assert all(i.running and i.app == two_service_app for i in infos)
    apps = await engine.apps()
    assert two_service_app in apps
    assert all(i.name != f"{two_service_app}-unmanaged" for infos in apps.values() for i in infos)


async def test_restart_changes_start_time_and_stop_start(two_service_app):
    engine = Engine()
    before = {i.service: i.started_at for i in await engine.containers(two_service_app)}
    after = {i.service: i for i in await engine.restart(two_service_app)}
    assert all(after[s].running for s in before)
    assert all(after[s].started_at > before[s] for s in before)
    stopped = await engine.stop(two_service_app)
    assert [i.state for i in stopped] == ["exited", "exited"]
    assert all(engine.exit_was_intended(i.id) for i in stopped)
    started = await engine.start(two_service_app)
    assert all(i.running for i in started)


async def test_logs_per_container(two_service_app):
    engine = Engine()
    logs = await engine.logs(two_service_app, 5)
    assert [(i.service, "hello from " + i.service in text) for i, text in logs] == [("db", True), ("web", True)]


async def test_engine_not_reachable_is_a_domain_error(tmp_path):
    engine = Engine(url=f"unix://{tmp_path}/no-such-docker.sock", timeout=5)
    with pytest.raises(EngineUnavailable) as err:
        await engine.containers()
    assert str(err.value) == "Docker engine is not reachable"


async def test_slow_stop_does_not_block_the_loop(app_name, monkeypatch):
    """`sleep` as PID 1 ignores SIGTERM, so the stop waits out its grace
    period; the event loop must stay free meanwhile."""
    monkeypatch.setattr("bot.engine.STOP_TIMEOUT_S", 2)
    client = docker.from_env()
    c = client.containers.run(IMAGE, ["sleep", "3600"], name=f"{app_name}-slow", detach=True,
                              labels={APP_LABEL: app_name, SERVICE_LABEL: "slow"})
    engine = Engine()
    ticks = 0

    async def ticker():
        nonlocal ticks
        while True:
            await asyncio.sleep(0.05)
            ticks += 1

    t = asyncio.create_task(ticker())
    try:
        infos = await engine.stop(app_name)
    finally:
        t.cancel()
        c.remove(force=True)
        client.close()
    assert infos[0].state == "exited"
    assert ticks >= 20  # about 2 s of grace period, ticking every 50 ms

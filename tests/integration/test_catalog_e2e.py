"""The app catalog end to end: the owner installs, configures, resizes and
removes catalog apps by chatting with the real bot (`homeport run` over the
test Prosody), and the test checks what really exists in Docker."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import time
import urllib.request

import docker
import docker.errors
import pytest

from tests.integration.bot_fixtures import REPO
from tests.integration.catalog_helpers import SOURCE, TestCatalog, test_catalog  # noqa: F401 (fixture)

pytestmark = pytest.mark.integration

INSTALL_TIMEOUT = 90.0
APP_LABEL = "homeport.app"


async def say(peer, bot, text: str, pattern: str, timeout: float = 20.0) -> str:
    peer.send(bot.jid, text)
    return await peer.wait_message(pattern, timeout=timeout, sender=bot.jid)


def leftovers(client: docker.DockerClient, app: str) -> list[str]:
    """Everything Docker still has of `app`, by label and by name."""
    label = {"label": f"{APP_LABEL}={app}"}
    found = [f"container {c.name}" for c in client.containers.list(all=True, filters=label)]
    found += [f"container {c.name}" for c in client.containers.list(all=True, filters={"name": f"^/?{app}-"})
              if f"container {c.name}" not in found]
    found += [f"network {n.name}" for n in client.networks.list(filters=label)]
    found += [f"network {n.name}" for n in client.networks.list(names=[f"hp-{app}"]) if n.name == f"hp-{app}"
              and f"network {n.name}" not in found]
    found += [f"volume {v.name}" for v in client.volumes.list(filters=label)]
    return sorted(set(found))


def container(client: docker.DockerClient, name: str):
    c = client.containers.get(name)
    c.reload()
    return c


def host_port(c) -> int:
    bindings = c.attrs["NetworkSettings"]["Ports"]["8080/tcp"]
    assert [b["HostIp"] for b in bindings] == ["127.0.0.1"], bindings
    return int(bindings[0]["HostPort"])


def confirmation(reply: str, word: str) -> str:
    match = re.search(rf"`({word} \d{{4}})`", reply)
    assert match, f"no `{word} NNNN` in {reply!r}"
    return match.group(1)


async def test_install_two_service_app(bot_factory, owner_peer, docker_client, test_catalog: TestCatalog):
    app = test_catalog.app("pair")
    bot = bot_factory(catalog=[str(test_catalog.dir)])

    listing = await say(owner_peer, bot, "apps", r"Catalog")
    assert re.search(rf"^{app}\s+Test pair", listing, re.M), listing
    info = await say(owner_peer, bot, f"info {app}", rf"^{app}: ")
    for part in ("web: hp-test/busybox:1", "client: hp-test/busybox:1 (after web)", "Asks for: greeting",
                 "answer=42", "Generated at install, never shown: token", "127.0.0.1:(free port) → 8080/tcp",
                 "Memory limit: 64 MiB in total", "Data volumes: www, data"):
        assert part in info, (part, info)

    began = time.monotonic()
    reply = await say(owner_peer, bot, f"install {app} greeting=hello", r"installed in|failed", INSTALL_TIMEOUT)
    took = time.monotonic() - began
    print(f"install of the two-service app over chat: {took:.1f} s")
    assert f"{app} installed in" in reply and "web healthy, client healthy" in reply, reply
    assert "The web server greets with hello" in reply  # the notes, rendered

    web, client = container(docker_client, f"{app}-web"), container(docker_client, f"{app}-client")
    # Reached from the host on the loopback port Docker picked, as the reply says.
    port = host_port(web)
    assert f"web 127.0.0.1:{port} → 8080/tcp" in reply
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as response:
        assert response.read().decode().strip() == "hello"
    # The services reach each other by service name on the app's network.
    code, out = client.exec_run(["wget", "-q", "-O", "-", "http://web:8080/"])
    assert (code, out.decode().strip()) == (0, "hello")
    assert client.attrs["State"]["Health"]["Status"] == "healthy"  # its check fetches http://web:8080/

    # Labels, start order, network, volumes.
    assert web.labels[APP_LABEL] == app and client.labels[APP_LABEL] == app
    assert (web.labels["homeport.service"], client.labels["homeport.service"]) == ("web", "client")
    assert (web.labels["homeport.order"], client.labels["homeport.order"]) == ("0", "1")
    assert web.labels["org.example.greeting"] == "hello"
    assert web.attrs["State"]["StartedAt"] < client.attrs["State"]["StartedAt"]
    network = docker_client.networks.get(f"hp-{app}")
    assert network.attrs["Labels"][APP_LABEL] == app
    assert sorted(network.attrs["Containers"][c.id]["Name"] for c in (web, client)) == sorted(
        [f"{app}-web", f"{app}-client"])
    assert "web" in web.attrs["NetworkSettings"]["Networks"][f"hp-{app}"]["Aliases"]
    volumes = {m["Destination"]: m["Name"] for c in (web, client) for m in c.attrs["Mounts"]}
    assert volumes == {"/www": f"hp-{app}-www", "/data": f"hp-{app}-data"}
    for name in volumes.values():
        assert docker_client.volumes.get(name).attrs["Labels"][APP_LABEL] == app

    # Limits and hardening.
    for c in (web, client):
        host = c.attrs["HostConfig"]
        assert host["Memory"] == host["MemorySwap"] == 32 * 1024**2
        assert host["PidsLimit"] == 64
        assert host["CapDrop"] == ["ALL"] and "no-new-privileges:true" in host["SecurityOpt"]
        assert host["RestartPolicy"]["Name"] == "unless-stopped"
    assert web.attrs["HostConfig"]["NanoCpus"] == 500_000_000
    assert client.attrs["Config"]["StopTimeout"] == 5

    # The generated secret reached the container and never the chat.
    token = next(e.split("=", 1)[1] for e in web.attrs["Config"]["Env"] if e.startswith("TOKEN="))
    assert len(token) >= 32
    config = await say(owner_peer, bot, f"config {app}", rf"^{app}, installed")
    assert "- greeting = hello" in config and "- answer = 42" in config
    assert "- token = ****** (generated)" in config
    assert all(token not in m.body for m in owner_peer.messages)

    reply = await say(owner_peer, bot, f"install {app}", r"already installed")
    assert f"{app} is already installed" in reply
    status = await say(owner_peer, bot, "status", re.escape(app))
    assert re.search(rf"^{re.escape(app)}\s+running", status, re.M), status
    listing = await say(owner_peer, bot, "apps", r"Catalog")
    assert re.search(rf"^{app}\s+Test pair.* — installed$", listing, re.M), listing


async def test_limit_applies_live_and_is_kept(bot_factory, owner_peer, docker_client, test_catalog: TestCatalog):
    app = test_catalog.app("solo")
    bot = bot_factory(catalog=[str(test_catalog.dir)])
    await say(owner_peer, bot, f"install {app}", r"installed in|failed", INSTALL_TIMEOUT)
    sleeper = container(docker_client, f"{app}-sleeper")
    started = sleeper.attrs["State"]["StartedAt"]
    assert sleeper.attrs["HostConfig"]["Memory"] == 16 * 1024**2

    reply = await say(owner_peer, bot, f"limit {app} memory=48m cpus=0.5 pids=100", r"limits applied|failed|:")
    assert "applied without a restart" in reply, reply
    sleeper.reload()
    host = sleeper.attrs["HostConfig"]
    assert (host["Memory"], host["MemorySwap"], host["NanoCpus"], host["PidsLimit"]) == (
        48 * 1024**2, 48 * 1024**2, 500_000_000, 100)
    assert sleeper.attrs["State"]["StartedAt"] == started and sleeper.status == "running"
    shown = await say(owner_peer, bot, f"config {app}", rf"^{app}, installed")
    assert "sleeper: hp-test/busybox:1" in shown and "limits: memory 48 MiB, cpus 0.5, pids 100" in shown

    reply = await say(owner_peer, bot, f"limit {app} memory=1k", r"memory")
    assert "below Docker's minimum" in reply
    reply = await say(owner_peer, bot, f"limit {app} cpus=lots", r"cpus")
    assert "not a number of CPUs" in reply
    sleeper.reload()
    assert sleeper.attrs["HostConfig"]["Memory"] == 48 * 1024**2


async def test_settings_asked_in_chat_with_a_wrong_answer(bot_factory, owner_peer, docker_client,
                                                          test_catalog: TestCatalog):
    app = test_catalog.app("pair")
    bot = bot_factory(catalog=[str(test_catalog.dir)])
    question = await say(owner_peer, bot, f"install {app}", r"greet with")
    assert "`cancel`" in question
    owner_peer.send(bot.jid, "Hello World")
    again = await owner_peer.wait_message(r"greet with", timeout=20, sender=bot.jid)
    assert again.startswith("greeting: must match ^[a-z]+$."), again
    owner_peer.send(bot.jid, "howdy")
    reply = await owner_peer.wait_message(r"installed in|failed", timeout=INSTALL_TIMEOUT, sender=bot.jid)
    assert f"{app} installed in" in reply, reply
    web = container(docker_client, f"{app}-web")
    assert "GREETING=howdy" in web.attrs["Config"]["Env"]
    history = await say(owner_peer, bot, "history", r"Recent actions")
    assert f"install {app}" in history and "howdy" not in history


async def test_cancel_leaves_nothing(bot_factory, owner_peer, docker_client, test_catalog: TestCatalog):
    app = test_catalog.app("pair")
    bot = bot_factory(catalog=[str(test_catalog.dir)])
    await say(owner_peer, bot, f"install {app} answer=7", r"greet with")
    reply = await say(owner_peer, bot, "cancel", r"cancel")
    assert reply == f"Install of {app} cancelled; nothing was created."
    assert leftovers(docker_client, app) == []
    assert "not installed" in await say(owner_peer, bot, f"config {app}", r"not installed")
    # A wrong value given on the line is asked again, not installed.
    question = await say(owner_peer, bot, f"install {app} greeting=NO", r"greet with")
    assert question.startswith("greeting: must match")
    await say(owner_peer, bot, "cancel", r"cancelled")
    assert leftovers(docker_client, app) == []
    reply = await say(owner_peer, bot, f"install {app} colour=red", r"no setting")
    assert "its settings: greeting, answer, token" in reply


async def test_remove_keeps_data_reinstall_finds_it_and_purge_leaves_nothing(
        bot_factory, owner_peer, docker_client, test_catalog: TestCatalog):
    app = test_catalog.app("pair")
    bot = bot_factory(catalog=[str(test_catalog.dir)])
    await say(owner_peer, bot, f"install {app} greeting=hello", r"installed in|failed", INSTALL_TIMEOUT)
    client = container(docker_client, f"{app}-client")
    assert client.exec_run(["sh", "-c", "echo precious > /data/marker"]).exit_code == 0
    token = next(e for e in container(docker_client, f"{app}-web").attrs["Config"]["Env"] if e.startswith("TOKEN="))

    prompt = await say(owner_peer, bot, f"remove {app}", r"Send `yes")
    assert f"hp-{app}-data" in prompt and "are kept" in prompt
    reply = await say(owner_peer, bot, "yes", r"Nothing removed")  # not the code: nothing happens
    assert container(docker_client, f"{app}-web").status == "running"

    prompt = await say(owner_peer, bot, f"remove {app}", r"Send `yes")
    began = time.monotonic()
    reply = await say(owner_peer, bot, confirmation(prompt, "yes"), r"removed in")
    print(f"remove (keeping data) over chat: {time.monotonic() - began:.1f} s")
    assert "Data volumes kept" in reply and f"hp-{app}-www" in reply
    assert leftovers(docker_client, app) == [f"volume hp-{app}-data", f"volume hp-{app}-www"]
    reply = await say(owner_peer, bot, f"remove {app}", r"not installed")
    assert "data volumes are kept" in reply

    # No question: the settings the kept data was made with are reused.
    reply = await say(owner_peer, bot, f"install {app}", r"installed in|failed|greet with", INSTALL_TIMEOUT)
    assert "Data kept from the earlier install" in reply and "settings reused" in reply, reply
    client = container(docker_client, f"{app}-client")
    assert client.exec_run(["cat", "/data/marker"]).output.decode().strip() == "precious"
    # The generated secret is the one the data was made with.
    assert token in container(docker_client, f"{app}-web").attrs["Config"]["Env"]

    prompt = await say(owner_peer, bot, f"remove {app} --purge", r"Send `yes")
    second = await say(owner_peer, bot, confirmation(prompt, "yes"), r"Send `delete")
    assert "lost for good" in second and f"hp-{app}-data" in second
    began = time.monotonic()
    reply = await say(owner_peer, bot, confirmation(second, "delete"), r"removed in")
    print(f"remove --purge over chat: {time.monotonic() - began:.1f} s")
    assert "nothing of it is left in Docker" in reply
    assert leftovers(docker_client, app) == []
    reply = await say(owner_peer, bot, f"remove {app}", r"not installed")
    assert reply == f"{app} is not installed."
    reply = await say(owner_peer, bot, f"install {app} greeting=fresh", r"installed in|failed", INSTALL_TIMEOUT)
    assert "Data kept" not in reply
    client = container(docker_client, f"{app}-client")
    assert client.exec_run(["test", "-e", "/data/marker"]).exit_code == 1


async def test_purge_declined_at_the_second_question_removes_nothing(bot_factory, owner_peer, docker_client,
                                                                    test_catalog: TestCatalog):
    app = test_catalog.app("solo")
    bot = bot_factory(catalog=[str(test_catalog.dir)])
    await say(owner_peer, bot, f"install {app}", r"installed in|failed", INSTALL_TIMEOUT)
    prompt = await say(owner_peer, bot, f"remove {app} --purge", r"Send `yes")
    await say(owner_peer, bot, confirmation(prompt, "yes"), r"Send `delete")
    reply = await say(owner_peer, bot, "no", r"Nothing removed")
    assert container(docker_client, f"{app}-sleeper").status == "running"
    assert f"volume hp-{app}-data" in leftovers(docker_client, app)
    assert reply == f"Nothing removed; {app} stays as it is."


async def test_failed_installs_leave_nothing(bot_factory, owner_peer, docker_client, test_catalog: TestCatalog):
    noimage = test_catalog.app("noimage")
    unhealthy = test_catalog.app("unhealthy")
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    port = busy.getsockname()[1]
    solo_text = (SOURCE / "solo.yaml").read_text()
    taken = test_catalog.app("taken", text=solo_text.replace(
        "    volumes: [data:/data]\n", f"    volumes: [data:/data]\n    ports: [\"127.0.0.1:{port}:8080\"]\n"))
    bot = bot_factory(catalog=[str(test_catalog.dir)])
    try:
        reply = await say(owner_peer, bot, f"install {noimage}", r"failed|installed", INSTALL_TIMEOUT)
        assert reply.startswith(f"Install of {noimage} failed while pulling 127.0.0.1:5000/hp-test/no-such-image:1.0.0"), reply
        assert "not found" in reply and "Nothing was created" in reply
        assert leftovers(docker_client, noimage) == []

        began = time.monotonic()
        reply = await say(owner_peer, bot, f"install {unhealthy}", r"failed|installed", INSTALL_TIMEOUT)
        print(f"failed install (unhealthy) reported in {time.monotonic() - began:.1f} s")
        assert reply.startswith(f"Install of {unhealthy} failed while waiting for {unhealthy}-broken"), reply
        assert "is unhealthy" in reply and "Everything the install had created was removed" in reply
        assert leftovers(docker_client, unhealthy) == []

        reply = await say(owner_peer, bot, f"install {taken}", r"failed|installed", INSTALL_TIMEOUT)
        assert reply.startswith(f"Install of {taken} failed while starting {taken}-sleeper"), reply
        assert re.search(r"address already in use|port is already allocated", reply), reply
        assert leftovers(docker_client, taken) == []
        for app in (noimage, unhealthy, taken):
            assert "not installed" in await say(owner_peer, bot, f"config {app}", r"not installed")
    finally:
        busy.close()


async def test_unknown_and_not_installed_apps_get_clear_replies(bot_factory, owner_peer, test_catalog: TestCatalog):
    app = test_catalog.app("solo")
    bot = bot_factory(catalog=[str(test_catalog.dir)])
    reply = await say(owner_peer, bot, f"install {app[:-1]}", r"unknown app")
    assert f"did you mean {app}?" in reply
    assert await say(owner_peer, bot, f"remove {app}", r"not installed") == f"{app} is not installed."
    assert "not installed" in await say(owner_peer, bot, f"limit {app} memory=64m", r"not installed")
    reply = await say(owner_peer, bot, "remove ../etc", r"unknown app")
    assert "Usage: remove <app> [--purge]" in reply


async def test_reconcile_reports_a_container_removed_by_hand(bot_factory, owner_peer, docker_client,
                                                            test_catalog: TestCatalog):
    app = test_catalog.app("pair")
    gone = test_catalog.app("solo")
    bot = bot_factory(catalog=[str(test_catalog.dir)])
    await say(owner_peer, bot, f"install {app} greeting=hello", r"installed in|failed", INSTALL_TIMEOUT)
    await say(owner_peer, bot, f"install {gone}", r"installed in|failed", INSTALL_TIMEOUT)
    assert bot.stop() == 0
    docker_client.containers.get(f"{app}-client").remove(force=True)
    docker_client.containers.get(f"{gone}-sleeper").remove(force=True)
    bot.start()
    report = await owner_peer.wait_message(r"Drift", timeout=30, sender=bot.jid)
    assert f"{app}: container {app}-client (service client) is missing" in report, report
    assert f"{gone}: installed, but all its containers are gone" in report
    assert f"{app}-web" not in report
    # Still installed: the owner can look at it and remove it.
    assert "- greeting = hello" in await say(owner_peer, bot, f"config {app}", r"installed")
    status = await say(owner_peer, bot, "status", re.escape(gone))
    assert re.search(rf"^{re.escape(gone)}\s+no containers", status, re.M), status
    reply = await say(owner_peer, bot, f"start {gone}", re.escape(gone))
    assert reply.startswith(f"{gone} is installed but has no containers"), reply
    prompt = await say(owner_peer, bot, f"remove {gone}", r"Send `yes")
    assert "removed in" in await say(owner_peer, bot, confirmation(prompt, "yes"), r"removed in")


async def test_broken_catalog_file_is_reported_not_fatal(bot_factory, owner_peer, test_catalog: TestCatalog):
    good = test_catalog.app("solo")
    test_catalog.bad("docker-socket")
    bot = bot_factory(catalog=[str(test_catalog.dir)])
    report = await owner_peer.wait_message(r"catalog has", timeout=30, sender=bot.jid)
    assert "these apps cannot be installed until fixed: docker-socket" in report
    assert "binding /var/run/docker.sock is refused" in report
    listing = await say(owner_peer, bot, "apps", r"Catalog")
    assert good in listing and "docker-socket" not in listing.split("\n", 2)[-1]
    reply = await say(owner_peer, bot, "install docker-socket", r"cannot be installed")
    assert "binding /var/run/docker.sock is refused" in reply


def test_catalog_check_command_exit_codes(tmp_path):
    shipped = subprocess.run([sys.executable, "-m", "bot.cli", "catalog", "check"], cwd=REPO,
                             capture_output=True, text=True, timeout=60)
    assert shipped.returncode == 0, shipped.stdout + shipped.stderr
    assert shipped.stdout.startswith("ok: ")
    (tmp_path / "privileged.yaml").write_text(
        (REPO / "tests/fixtures/catalog-bad/privileged.yaml").read_text())
    bad = subprocess.run([sys.executable, "-m", "bot.cli", "catalog", "check", str(REPO / "catalog"), str(tmp_path)],
                         cwd=REPO, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1
    assert "privileged containers are refused" in bad.stdout
    assert "1 problem(s)" in bad.stderr

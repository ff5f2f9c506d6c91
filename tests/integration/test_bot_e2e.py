"""The real bot, end to end: the owner's XMPP client talks to `homeport run`
through the real Prosody, and the commands act on real containers."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import time

import pytest

from tests.integration.bot_fixtures import REPO

pytestmark = pytest.mark.integration


async def ask(peer, bot, text: str, pattern: str, timeout: float = 20.0) -> str:
    peer.send(bot.jid, text)
    return await peer.wait_message(pattern, timeout=timeout, sender=bot.jid)


async def test_commands_on_real_containers(bot_factory, owner_peer, labelled_containers, docker_client):
    app = labelled_containers.app_name("web")
    db = labelled_containers(app, ["sh", "-c", "echo db ready; exec sleep 3600"], service="db", order=0,
                            stop_signal="SIGKILL")
    web = labelled_containers(app, ["sh", "-c", "echo -e 'line one\\033[31m red\\x07'; exec sleep 3600"],
                              service="web", order=1, stop_signal="SIGKILL")
    bot = bot_factory()

    assert "pong" in await ask(owner_peer, bot, "ping", r"^pong")
    assert "You are owner@" in await ask(owner_peer, bot, "whoami", r"You are")
    help_text = await ask(owner_peer, bot, "help", r"Commands")
    for usage in ("status [app]", "restart <app>", "logs <app> [lines]", "history", "whoami", "ping"):
        assert usage in help_text
    assert "usage: logs <app> [lines]" in await ask(owner_peer, bot, "help logs", r"usage:")

    status = await ask(owner_peer, bot, "Status", re.escape(app))
    line = next(x for x in status.splitlines() if x.startswith(app))
    # app, state, uptime, version, then the sampled CPU and memory ("-" before the first sample)
    assert re.search(rf"^{re.escape(app)}\s+running\s+\S+\s+1\s+\S+\s+\S+$", line), line

    details = await ask(owner_peer, bot, f"status {app}", rf"^{re.escape(app)}: running")
    assert re.search(r"^db\s+running", details.splitlines()[1])
    assert re.search(r"^web\s+running", details.splitlines()[2])

    before = {c.name: c.attrs["State"]["StartedAt"] for c in (db, web)}
    reply = await ask(owner_peer, bot, f"restart {app}", rf"{re.escape(app)} restarted in")
    assert "db running" in reply and "web running" in reply
    for c in (db, web):
        c.reload()
        assert c.attrs["State"]["StartedAt"] > before[c.name]

    reply = await ask(owner_peer, bot, f"stop {app}", rf"{re.escape(app)} stopped in")
    db.reload(), web.reload()
    assert (db.status, web.status) == ("exited", "exited")
    assert "exited" in await ask(owner_peer, bot, "status", re.escape(app))
    await ask(owner_peer, bot, f"start {app}", rf"{re.escape(app)} started in")
    db.reload(), web.reload()
    assert (db.status, web.status) == ("running", "running")

    logs = await ask(owner_peer, bot, f"logs {app} 5", r"── web")
    assert "line one red" in logs
    assert "\x1b" not in logs and "\x07" not in logs

    history = await ask(owner_peer, bot, "history", r"Recent actions")
    assert f"start {app}" in history and f"stop {app}" in history and f"restart {app}" in history


async def test_unknown_input_gets_clear_replies_and_runs_nothing(bot_factory, owner_peer, labelled_containers):
    app = labelled_containers.app_name("wiki")
    c = labelled_containers(app, service="main")
    started = c.attrs["State"]["StartedAt"]
    bot = bot_factory()
    for attempt in ('restart "wiki; rm -rf /"', "restart ../x", "restart $(reboot)", "stop `id`"):
        reply = await ask(owner_peer, bot, attempt, r"unknown app|Usage")
        assert "unknown app" in reply and "Usage:" in reply, reply
    reply = await ask(owner_peer, bot, f"restart {app[:-1]}", r"unknown app")
    assert f"did you mean {app}?" in reply
    reply = await ask(owner_peer, bot, "reboot now", r"Unknown command")
    assert "Send `help`" in reply
    reply = await ask(owner_peer, bot, f"logs {app} 100000", r"Usage")
    assert "at most 500" in reply
    c.reload()
    assert c.status == "running" and c.attrs["State"]["StartedAt"] == started


async def test_stranger_is_ignored(bot_factory, owner_peer, stranger_peer, labelled_containers):
    app = labelled_containers.app_name("blog")
    c = labelled_containers(app, service="main")
    bot = bot_factory()
    stranger_peer.send(bot.jid, f"stop {app}")
    assert "only answers its owner" in await stranger_peer.wait_message(r"owner", sender=bot.jid)
    stranger_peer.send(bot.jid, f"stop {app}")
    stranger_peer.send(bot.jid, "status")
    # The owner's command, sent after, is answered: the bot had its chance.
    await ask(owner_peer, bot, "ping", r"^pong")
    assert await stranger_peer.expect_silence(1.0) == []
    c.reload()
    assert c.status == "running"
    assert "ignored a message from stranger" in bot.log_text()


async def test_forged_carbon_is_ignored(bot_factory, owner_peer, stranger_peer, labelled_containers, prosody):
    app = labelled_containers.app_name("chat")
    c = labelled_containers(app, service="main")
    bot = bot_factory()
    forged = (
        f"<message to='{bot.jid}' type='chat'>"
        "<received xmlns='urn:xmpp:carbons:2'><forwarded xmlns='urn:xmpp:forward:0'>"
        f"<message xmlns='jabber:client' from='{prosody.owner.jid}/phone' to='{bot.jid}' type='chat'>"
        f"<body>stop {app}</body></message></forwarded></received></message>"
    )
    stranger_peer.send_raw(forged)
    # Same forgery, sent by the owner's own account: still a carbon, never a command.
    owner_peer.send_raw(forged)
    await ask(owner_peer, bot, "ping", r"^pong")
    assert await owner_peer.expect_silence(1.0) == []
    c.reload()
    assert c.status == "running"


async def test_delayed_message_is_not_executed(bot_factory, chat_peer, prosody, labelled_containers):
    app = labelled_containers.app_name("feed")
    c = labelled_containers(app, service="main")
    bot = bot_factory(start=False)
    owner = await chat_peer(prosody.owner, "laptop")
    owner.send(bot.jid, f"stop {app}")  # the bot is offline: Prosody stores it
    await owner.sync()
    bot.start()
    reply = await owner.wait_message(r"arrived late", timeout=20, sender=bot.jid)
    assert f"stop {app}" in reply
    await ask(owner, bot, "ping", r"^pong")
    c.reload()
    assert c.status == "running"


async def test_bot_comes_back_after_prosody_restart(bot_factory, chat_peer, prosody):
    bot = bot_factory()
    owner = await chat_peer(prosody.owner, "tablet")
    await ask(owner, bot, "ping", r"^pong")
    sessions = bot.online_count()
    await owner.disconnect()
    began = time.monotonic()
    await asyncio.to_thread(prosody.restart)
    await asyncio.to_thread(bot.wait_online, sessions + 1, 60)
    back = time.monotonic() - began
    owner = await chat_peer(prosody.owner, "tablet2")
    await ask(owner, bot, "ping", r"^pong")
    print(f"bot back online {back:.1f} s after the Prosody restart began")
    assert back < 60


async def test_docker_engine_down_and_back(bot_factory, owner_peer, spare_dockerd, test_image):
    client = spare_dockerd.client()
    c = client.containers.run(test_image, ["sleep", "3600"], name="spare-app-main", detach=True,
                              labels={"homeport.app": "spare", "homeport.service": "main"})
    bot = bot_factory(docker={"url": spare_dockerd.url, "timeout": 10})
    assert "spare" in await ask(owner_peer, bot, "status", r"spare")
    await asyncio.to_thread(spare_dockerd.stop)
    reply = await ask(owner_peer, bot, "status", r"Docker engine is not reachable")
    assert reply == "Docker engine is not reachable"
    assert "not reachable" in await ask(owner_peer, bot, "restart spare", r"not reachable")
    assert "pong" in await ask(owner_peer, bot, "ping", r"^pong")
    await asyncio.to_thread(spare_dockerd.start)
    spare_client = spare_dockerd.client()
    spare_client.containers.get(c.id).start()  # the engine does not restart it by itself
    assert re.search(r"^spare\s+running", await ask(owner_peer, bot, "status", r"spare"), re.M)


def test_bad_config_is_a_clear_one_line_error(tmp_path):
    cfg = tmp_path / "config.yaml"
    cfg.write_text("xmpp:\n  jid: bot@localhost\n  password: x\n  prot: 5222\nowners: [a@b]\nstate_dir: /tmp/x\n")
    proc = subprocess.run([sys.executable, "-m", "bot.cli", "run", "--config", str(cfg)], cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"homeport: config error: {cfg}: unknown key 'xmpp.prot' (known: ca_file, host, jid, password, "
        "password_file, port)"]


async def test_sigterm_stops_cleanly(bot_factory):
    bot = bot_factory()
    assert bot.stop() == 0
    assert "homeport stopped" in bot.log_text()


def test_check_reports_docker_and_xmpp(bot_factory, prosody):
    bot = bot_factory(start=False)
    proc = subprocess.run([sys.executable, "-m", "bot.cli", "check", "--config", str(bot.config_path)], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"xmpp: logged in as {bot.jid}" in proc.stdout
    assert "docker: engine" in proc.stdout

    text = bot.config_path.read_text().replace(bot.account.password, "wrong-password")
    bot.config_path.write_text(text)
    proc = subprocess.run([sys.executable, "-m", "bot.cli", "check", "--config", str(bot.config_path)], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert "xmpp: PROBLEM" in proc.stdout


async def test_slow_stop_keeps_bot_answering_and_app_busy(bot_factory, owner_peer, labelled_containers):
    app = labelled_containers.app_name("slow")
    # `sleep` as PID 1 ignores SIGTERM: the stop waits out its 10 s grace period.
    c = labelled_containers(app, ["sleep", "3600"], service="main")
    bot = bot_factory()
    owner_peer.send(bot.jid, f"stop {app}")
    began = time.monotonic()
    # Wait until the engine really is stopping it (the die event comes later).
    busy = await ask(owner_peer, bot, f"restart {app}", r"busy")
    assert busy == f"busy: stop of {app} in progress"
    assert "pong" in await ask(owner_peer, bot, "ping", r"^pong")
    answered_within = time.monotonic() - began
    await owner_peer.wait_message(rf"{re.escape(app)} stopped in", timeout=40, sender=bot.jid)
    assert answered_within < 8, f"ping answered only after {answered_within:.1f} s"
    c.reload()
    assert c.status == "exited"


async def test_audit_log_and_presence_survive_restart(bot_factory, chat_peer, prosody, labelled_containers):
    app = labelled_containers.app_name("pres")
    labelled_containers(app, service="main")
    bot = bot_factory()
    owner = await chat_peer(prosody.owner, "desk")
    owner.subscribe(bot.jid)  # the bot authorises owners, so its presence reaches us
    pres = await owner.wait_presence(
        lambda p: p["from"].bare == bot.jid and re.search(r"\d+ apps? running", p["status"] or ""), timeout=20)
    assert pres["type"] in ("", "available")
    await ask(owner, bot, f"restart {app}", r"restarted in", timeout=40)
    assert bot.stop() == 0
    bot.start()
    history = await ask(owner, bot, "history", r"Recent actions")
    assert f"restart {app}" in history


async def test_bot_killed_mid_operation_reports_it_after_restart(bot_factory, chat_peer, prosody,
                                                                 labelled_containers):
    app = labelled_containers.app_name("kill")
    labelled_containers(app, ["sleep", "3600"], service="main")  # a 10 s stop
    bot = bot_factory()
    owner = await chat_peer(prosody.owner, "pc")
    owner.send(bot.jid, f"stop {app}")
    assert await ask(owner, bot, f"restart {app}", r"busy") == f"busy: stop of {app} in progress"
    bot.kill()  # SIGKILL: no cleanup at all
    bot.start()
    report = await owner.wait_message(r"was stopped during", timeout=30, sender=bot.jid)
    assert f"`stop {app}`" in report and "did not finish" in report
    assert re.search(rf"{re.escape(app)} now: main (running|exited)", report), report
    # Reported once: a second restart does not repeat it.
    assert bot.stop() == 0
    bot.start()
    assert "pong" in await ask(owner, bot, "ping", r"^pong")
    assert await owner.expect_silence(0.5, sender=bot.jid) == []

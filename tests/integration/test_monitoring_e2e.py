"""Monitoring end to end: the real bot (`homeport run`) samples real containers
of the real dockerd, follows its events, and the owner's XMPP client receives
the alerts through the real Prosody.

Thresholds are short and the interval is 1 s (FAST), so each scenario takes
seconds. The bot watches every managed container of the engine, so messages
are matched by this test's own app names.
"""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any

import pytest

from tests.integration.docker_fixtures import SLEEPER, LabelledContainers, wait_for

pytestmark = pytest.mark.integration

FAST: dict[str, Any] = {
    "interval": 1,
    "thresholds": {
        "cpu_percent": 50, "cpu_for": "2s",
        "memory_percent": 35, "memory_for": "2s",
        "clear_after": "2s", "stable_for": "5s",
    },
}
# Holds ~60 MB in a shell variable until /tmp/release exists, then frees it
# by exiting (memory returned for certain, whatever the allocator does).
MEMORY_HOG = ["sh", "-c", 'x=$(head -c 60000000 /dev/zero | tr "\\0" a); touch /tmp/held; '
              "while [ ! -e /tmp/release ]; do sleep 0.2; done; echo ${#x}"]
BURNER = ["sh", "-c", "trap 'exit 0' TERM; dd if=/dev/zero of=/dev/null & wait"]
CHATTY = ["sh", "-c", "echo first words; echo last words before the end; trap 'exit 0' TERM; sleep 86400 & wait"]
EATER = ["sh", "-c", "echo about to eat memory; x=$(head -c 100000000 /dev/zero | tr '\\0' a); echo ${#x}"]


def run(labelled: LabelledContainers, app: str, what: str, command: list[str] | None = SLEEPER,
        **kwargs: Any):
    return labelled(app, command, name=f"hpmon-{what}-{labelled.token}", network_mode="none", **kwargs)


async def ask(peer, bot, text: str, pattern: str, timeout: float = 20.0) -> str:
    peer.send(bot.jid, text)
    return await peer.wait_message(pattern, timeout=timeout, sender=bot.jid)


async def about(peer, bot, app: str, seconds: float) -> list[str]:
    """Messages from the bot mentioning `app` within `seconds` (a negative check's window)."""
    return [body for body in await peer.expect_silence(seconds, sender=bot.jid) if app in body]


def wait_log(bot, pattern: str, timeout: float = 20.0) -> str:
    found = wait_for(lambda: re.search(pattern, bot.log_text()), timeout, f"bot log line {pattern!r}")
    return found.group(0)


async def test_memory_alert_then_recovery_and_status_figures(bot_factory, owner_peer, labelled_containers):
    app = labelled_containers.app_name("mem")
    c = run(labelled_containers, app, "mem", mem_limit="128m", memswap_limit="128m")
    bot = bot_factory(monitor=FAST)
    c.exec_run(MEMORY_HOG, detach=True)
    alert = await owner_peer.wait_message(rf"ALERT {app}: memory at \d+% of its limit", timeout=30,
                                          sender=bot.jid)
    assert re.search(r"\([\d.]+ MiB of 128 MiB\), above 35% for 2s", alert), alert
    details = await ask(owner_peer, bot, f"status {app}", rf"^{app}: running")
    assert re.search(r"mem [\d.]+ MiB of 128 MiB \(4\d%\)", details), details
    listing = await ask(owner_peer, bot, "status", rf"(?m)^{app}\s")
    assert re.search(rf"(?m)^{app}\s+running\s+\S+\s+1\s+\S+%\s+[\d.]+MiB$", listing), listing
    assert "1 alert firing" in listing or "alerts firing" in listing
    c.exec_run(["touch", "/tmp/release"])
    recovery = await owner_peer.wait_message(rf"RESOLVED {app}: high memory over after", timeout=30,
                                             sender=bot.jid)
    assert "memory now" in recovery
    assert await about(owner_peer, bot, app, 1.5) == []  # one alert, one recovery


async def test_cpu_burner_raises_cpu_alert(bot_factory, owner_peer, labelled_containers):
    app = labelled_containers.app_name("cpu")
    run(labelled_containers, app, "burn", BURNER)
    bot = bot_factory(monitor=FAST)
    alert = await owner_peer.wait_message(rf"ALERT {app}: CPU at \d+% of a core", timeout=30, sender=bot.jid)
    assert "above 50% for 2s" in alert
    listing = await ask(owner_peer, bot, "alerts", rf"{app}")
    assert re.search(rf"(?m)^{app}\s+cpu\s+for \d+s", listing), listing


async def test_killed_container_alerts_with_exit_code_and_logs(bot_factory, chat_peer, prosody,
                                                                labelled_containers):
    app = labelled_containers.app_name("kill")
    c = run(labelled_containers, app, "kill", CHATTY)
    bot = bot_factory(monitor=FAST)
    owner = await chat_peer(prosody.owner, "watch")
    owner.subscribe(bot.jid)  # to see the presence text
    await owner.wait_presence(lambda p: p["from"].bare == bot.jid and "running" in (p["status"] or ""))
    began = time.monotonic()
    c.kill()
    alert = await owner.wait_message(rf"ALERT {app}: \S+ exited with code 137 \(SIGKILL\)", timeout=10,
                                     sender=bot.jid)
    took = time.monotonic() - began
    assert "| last words before the end" in alert and "| first words" in alert, alert
    print(f"kill → alert in {took:.2f} s")
    await owner.wait_presence(lambda p: p["from"].bare == bot.jid and re.search(r"· \d+ alerts?", p["status"] or ""),
                              timeout=20)
    listing = await ask(owner, bot, "alerts", rf"{app}")
    assert re.search(rf"(?m)^{app}\s+crash\s", listing), listing


async def test_oom_killed_container_alerts_once(bot_factory, owner_peer, labelled_containers):
    app = labelled_containers.app_name("oom")
    bot = bot_factory(monitor=FAST)
    run(labelled_containers, app, "oom", EATER, mem_limit="32m", memswap_limit="32m")
    alert = await owner_peer.wait_message(rf"ALERT {app}: ", timeout=15, sender=bot.jid)
    assert re.search(r"killed for running out of memory \(limit 32 MiB\), exit code 137", alert), alert
    assert "| about to eat memory" in alert
    assert "crash" not in alert and "exited with" not in alert  # an OOM kill, not also a crash
    assert await about(owner_peer, bot, app, 3) == []


async def test_flapping_container_raises_one_alert(bot_factory, owner_peer, labelled_containers, docker_client):
    app = labelled_containers.app_name("flap")
    bot = bot_factory(monitor=FAST)
    c = run(labelled_containers, app, "flap", ["sh", "-c", "echo flapping; exit 1"],
            restart_policy={"Name": "always"})
    first = await owner_peer.wait_message(rf"{app}: ", timeout=15, sender=bot.jid)
    # Docker's restart backoff doubles from 100 ms: six restarts take a few seconds.
    wait_for(lambda: docker_client.api.inspect_container(c.id)["RestartCount"] >= 6, 30, "six restarts")
    later = await about(owner_peer, bot, app, 2)
    messages = [first, *later]
    restarts = docker_client.api.inspect_container(c.id)["RestartCount"]
    assert len(messages) == 1, f"{restarts} restarts gave {len(messages)} messages: {messages}"
    assert "restarting in a loop" in first and "exited with code 1" in first, first


async def test_muted_app_raises_nothing_until_unmuted(bot_factory, owner_peer, labelled_containers):
    quiet = labelled_containers.app_name("quiet")
    loud = labelled_containers.app_name("loud")
    q = run(labelled_containers, quiet, "quiet", CHATTY)
    lo = run(labelled_containers, loud, "loud", CHATTY)
    bot = bot_factory(monitor=FAST)
    reply = await ask(owner_peer, bot, f"mute {quiet} 2h", r"Muted")
    assert re.search(rf"Muted alerts about {quiet} until \d\d:\d\d UTC \(in (1h 59m|2h)\)", reply), reply
    q.kill()
    lo.kill()
    # The other app's alert arrives: the monitor did see the kills.
    await owner_peer.wait_message(rf"ALERT {loud}: ", timeout=10, sender=bot.jid)
    assert await about(owner_peer, bot, quiet, 2) == []
    listing = await ask(owner_peer, bot, "alerts", rf"{quiet}")
    assert re.search(rf"(?m)^{quiet}\s+crash\s+for \d+s, muted", listing), listing
    assert re.search(rf"(?m)^muted: {quiet} until", listing), listing
    await ask(owner_peer, bot, f"unmute {quiet}", rf"{quiet} are on again")
    late = await owner_peer.wait_message(rf"ALERT {quiet}: ", timeout=10, sender=bot.jid)
    assert "was muted" in late and "exited with code 137" in late


async def test_stop_by_owner_does_not_alert(bot_factory, owner_peer, labelled_containers):
    stopped = labelled_containers.app_name("halt")
    control = labelled_containers.app_name("ctrl")
    # With restart policy unless-stopped even a clean exit would be a crash: only
    # knowing that homeport stopped it keeps this one quiet.
    run(labelled_containers, stopped, "halt", restart_policy={"Name": "unless-stopped"})
    c = run(labelled_containers, control, "ctrl", CHATTY)
    bot = bot_factory(monitor=FAST)
    await ask(owner_peer, bot, f"stop {stopped}", rf"{stopped} stopped in")
    c.kill()
    await owner_peer.wait_message(rf"ALERT {control}: ", timeout=10, sender=bot.jid)
    assert await about(owner_peer, bot, stopped, 2) == []
    assert "exited as homeport asked" in bot.log_text()


async def test_docker_stop_from_the_command_line_does_not_alert(bot_factory, owner_peer, labelled_containers):
    stopped = labelled_containers.app_name("cli")
    control = labelled_containers.app_name("ctl")
    s = run(labelled_containers, stopped, "cli", ["sleep", "3600"], restart_policy={"Name": "unless-stopped"})
    c = run(labelled_containers, control, "ctl", CHATTY)
    bot = bot_factory(monitor=FAST)
    await asyncio.to_thread(s.stop, timeout=1)  # SIGTERM ignored by sleep: SIGKILL after 1 s, code 137
    c.kill()
    await owner_peer.wait_message(rf"ALERT {control}: ", timeout=10, sender=bot.jid)
    assert await about(owner_peer, bot, stopped, 2) == []
    assert "stopped or removed on purpose" in bot.log_text()


async def test_alert_raised_while_prosody_is_down_arrives_after_reconnect(bot_factory, chat_peer, prosody,
                                                                          labelled_containers):
    app = labelled_containers.app_name("xdown")
    c = run(labelled_containers, app, "xdown", CHATTY)
    bot = bot_factory(monitor=FAST)
    owner = await chat_peer(prosody.owner, "before")
    await ask(owner, bot, "ping", r"^pong")
    sessions = bot.online_count()
    await owner.disconnect()
    await asyncio.to_thread(prosody.sandbox.stop)
    try:
        c.kill()
        await asyncio.to_thread(wait_log, bot, rf"told the owners: ALERT {app}: ")
        await asyncio.to_thread(wait_log, bot, r"outbox: transport offline; \d+ messages? waiting")
    finally:
        await asyncio.to_thread(prosody.sandbox.start)
    await asyncio.to_thread(bot.wait_online, sessions + 1, 90)
    owner = await chat_peer(prosody.owner, "after")
    alert = await owner.wait_message(rf"ALERT {app}: ", timeout=30, sender=bot.jid)
    assert re.match(rf"\[raised \d\d:\d\d UTC\] ALERT {app}: \S+ exited with code 137", alert), alert


async def test_outbox_survives_a_bot_restart(bot_factory, chat_peer, prosody, labelled_containers):
    app = labelled_containers.app_name("keep")
    c = run(labelled_containers, app, "keep", CHATTY)
    bot = bot_factory(monitor=FAST)
    owner = await chat_peer(prosody.owner, "first")
    await ask(owner, bot, "ping", r"^pong")
    await owner.disconnect()
    await asyncio.to_thread(prosody.sandbox.stop)
    try:
        c.kill()
        # Persisted in the outbox (the log line follows the write), not deliverable.
        await asyncio.to_thread(wait_log, bot, rf"told the owners: ALERT {app}: ")
        assert await asyncio.to_thread(bot.stop) == 0
    finally:
        await asyncio.to_thread(prosody.sandbox.start)
    owner = await chat_peer(prosody.owner, "second")
    await asyncio.to_thread(bot.start)
    alert = await owner.wait_message(rf"ALERT {app}: ", timeout=30, sender=bot.jid)
    assert re.match(rf"\[raised \d\d:\d\d UTC\] ALERT {app}: \S+ exited with code 137", alert), alert
    # Delivered once; the restarted bot remembers the alert and does not raise it again.
    assert await about(owner, bot, app, 2) == []
    listing = await ask(owner, bot, "alerts", rf"{app}")
    assert re.search(rf"(?m)^{app}\s+crash\s", listing), listing


async def wait_figures(peer, bot, app: str, timeout: float = 30.0) -> str:
    """`status <app>` until it shows a measured CPU figure (the sampler is running)."""
    deadline = time.monotonic() + timeout
    while True:
        reply = await ask(peer, bot, f"status {app}", rf"^{app}: ")
        if re.search(r"running .*cpu \d", reply, re.S):
            return reply
        if time.monotonic() > deadline:
            pytest.fail(f"no figures for {app} within {timeout:.0f} s; last: {reply}")
        await asyncio.sleep(0.3)  # polling a condition under a deadline


async def test_docker_engine_restart_is_told_and_monitoring_goes_on(bot_factory, owner_peer, spare_dockerd,
                                                                   test_image):
    app = "spare-mon"
    client = spare_dockerd.client()
    c = client.containers.run(test_image, SLEEPER, name="hpmon-spare-main", detach=True, network_mode="none",
                              labels={"homeport.app": app, "homeport.service": "main"})
    bot = bot_factory(docker={"url": spare_dockerd.url, "timeout": 10}, monitor=FAST)
    await wait_figures(owner_peer, bot, app)
    await asyncio.to_thread(spare_dockerd.stop)
    down = time.monotonic()
    await asyncio.to_thread(spare_dockerd.start)
    back = await owner_peer.wait_message(r"Docker engine was down for", timeout=30, sender=bot.jid)
    told = time.monotonic() - down
    assert re.match(r"RESOLVED Docker engine was down for [\d.]+ s \(from \d\d:\d\d:\d\d UTC\)", back), back
    assert f"Not running now, though they were before: {app}" in back, back
    print(f"engine back → owner told in {told:.1f} s after the stop ended: {back}")
    # The sampler and the event stream go on with the restarted engine.
    client = spare_dockerd.client()
    client.containers.get(c.id).start()
    await wait_figures(owner_peer, bot, app)
    client.containers.get(c.id).kill()
    alert = await owner_peer.wait_message(rf"ALERT {app}: ", timeout=15, sender=bot.jid)
    assert "exited with code 137" in alert


async def test_host_disk_alert_and_mute_all(bot_factory, owner_peer):
    bot = bot_factory(monitor={"interval": 1, "thresholds": {"disk_percent": 1}})
    alert = await owner_peer.wait_message(r"ALERT host: disk \d+% full on", timeout=20, sender=bot.jid)
    assert "above 1%" in alert
    listing = await ask(owner_peer, bot, "alerts", r"host")
    assert re.search(r"(?m)^host\s+disk\s+for", listing), listing
    reply = await ask(owner_peer, bot, "mute all 1d", r"Muted")
    assert "Muted all alerts until" in reply
    assert "muted: all until" in await ask(owner_peer, bot, "alerts", r"muted")
    assert await ask(owner_peer, bot, "unmute all", r"mutes ended") == "All mutes ended."
    assert await ask(owner_peer, bot, "unmute all", r"muted") == "Nothing is muted."
    reply = await ask(owner_peer, bot, "mute nosuchapp 1h", r"unknown app")
    assert "unknown app 'nosuchapp'" in reply
    assert "Usage" in await ask(owner_peer, bot, "mute host 30", r"Usage")


async def test_crash_while_the_bot_is_stopped_is_told_after_its_restart(bot_factory, owner_peer,
                                                                         labelled_containers):
    app = labelled_containers.app_name("away")
    c = run(labelled_containers, app, "away", CHATTY)
    bot = bot_factory(monitor=FAST)
    await ask(owner_peer, bot, "ping", r"^pong")  # its event stream is running: the restart resumes from there
    assert await asyncio.to_thread(bot.stop) == 0
    c.kill()
    await asyncio.to_thread(bot.start)
    alert = await owner_peer.wait_message(rf"ALERT {app}: ", timeout=15, sender=bot.jid)
    assert "exited with code 137 (SIGKILL)" in alert and "| last words before the end" in alert

"""Benchmark of monitoring: `status` round trips, sampler cost, alert latency. Prints a table.

Against the real dockerd and a throwaway Prosody (bot.sandbox under /tmp),
with the real bot (`homeport run`) as a subprocess at the default monitor
interval, and an owner client (tests/integration/chatpeer.py):

1. `status` round trip over XMPP (owner sends, reply received), median and
   p95, with 10, 50 and 100 running containers (busybox sleepers,
   `--network none`, 5 per app), and `docker stats --no-stream` on the same
   containers in the same run.
2. Sampler cost while idle-monitoring 50 containers: CPU seconds per minute
   and resident memory of the bot process (/proc/<pid>/stat and status).
3. Alert latency: container killed → alert received by the owner's client.
4. For the record: one tick's listing (one list call) against the inspect-
   every-container listing the sampler avoids.

Targets (issue 4): status median ≤ 150 ms at 50 containers and ≥ 10× faster
than docker stats; sampler ≤ 1 % of one core and ≤ 80 MB RSS; alert ≤ 2 s.

    .venv/bin/python tests/bench/bench_status.py [--idle-seconds 150] [--keep]

Everything it creates is named `hpmon-bench-*` and labelled
`hpmon.bench=<pid>`, and removed at the end (also after Ctrl-C).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import docker
import yaml

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from bot.engine import Engine  # noqa: E402
from bot.sandbox import ProsodySandbox  # noqa: E402
from tests.images import BUSYBOX_IMAGE  # noqa: E402
from tests.integration.chatpeer import ChatPeer  # noqa: E402

log = logging.getLogger("bench")

PREFIX = "hpmon-bench"
BENCH_LABEL = "hpmon.bench"
PER_APP = 5
SIZES = (10, 50, 100)
STATUS_ROUNDS = 30
STATS_ROUNDS = 3
LATENCY_SAMPLES = 7
SLEEPER = ["sh", "-c", "trap 'exit 0' TERM; sleep 86400 & wait"]
CLK_TCK = os.sysconf("SC_CLK_TCK")
DOCKER_CLI = "/usr/bin/docker"


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(pct / 100 * (len(ordered) - 1))))
    return ordered[index]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def dockerd_pid() -> int | None:
    """The shared engine's dockerd (not a spare engine the tests may run)."""
    found = subprocess.run(["pidof", "dockerd"], capture_output=True, text=True, check=False).stdout.split()
    for pid in found:
        if "homeport-test" not in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace"):
            return int(pid)
    return None


class Fleet:
    """The benchmark's containers: created in parallel, removed at the end."""

    def __init__(self, client: docker.DockerClient) -> None:
        self.client = client
        self.containers: list[Any] = []
        self.token = str(os.getpid())

    def grow_to(self, count: int) -> None:
        todo = range(len(self.containers), count)

        def make(i: int) -> Any:
            return self.client.containers.run(
                BUSYBOX_IMAGE, SLEEPER, name=f"{PREFIX}-{self.token}-{i}", detach=True, network_mode="none",
                labels={"homeport.app": f"{PREFIX}-{i // PER_APP}", "homeport.service": f"s{i % PER_APP}",
                        BENCH_LABEL: self.token})

        with ThreadPoolExecutor(8) as pool:
            self.containers.extend(pool.map(make, todo))

    def ids(self) -> list[str]:
        return [c.id for c in self.containers]

    def one_off(self, name: str) -> Any:
        return self.client.containers.run(
            BUSYBOX_IMAGE, ["sh", "-c", "echo ready; trap 'exit 0' TERM; sleep 86400 & wait"],
            name=f"{PREFIX}-{self.token}-{name}", detach=True, network_mode="none",
            labels={"homeport.app": f"{PREFIX}-{name}", BENCH_LABEL: self.token})

    def remove_all(self) -> None:
        found = self.client.containers.list(all=True, filters={"label": f"{BENCH_LABEL}={self.token}"})
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda c: c.remove(force=True), found))


class Bot:
    def __init__(self, root: Path, sandbox: ProsodySandbox, bot_jid: str, owner_jid: str) -> None:
        self.root = root
        self.log_path = root / "bot.log"
        config = {
            "xmpp": {"jid": bot_jid, "password": "bench-bot", "host": sandbox.host, "port": sandbox.port,
                     "ca_file": str(sandbox.ca_file)},
            "owners": [owner_jid],
            "state_dir": str(root / "state"),
            "limits": {"rate_burst": 1000, "rate_per_minute": 6000},
            # the default monitor interval (10 s): that is what is being measured
        }
        self.config_path = root / "config.yaml"
        self.config_path.write_text(yaml.safe_dump(config))
        os.chmod(self.config_path, 0o600)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log_path, "ab") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "bot.cli", "run", "--config", str(self.config_path)],
                                         cwd=REPO, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while "xmpp: online as" not in self.log_path.read_text(errors="replace"):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"bot did not come online:\n{self.log_path.read_text()[-2000:]}")
            time.sleep(0.1)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


async def ask(owner: ChatPeer, bot_jid: str, text: str, pattern: str, timeout: float = 30) -> tuple[str, float]:
    began = time.perf_counter()
    owner.send(bot_jid, text)
    reply = await owner.wait_message(pattern, timeout=timeout, sender=bot_jid)
    return reply, time.perf_counter() - began


async def wait_sampled(owner: ChatPeer, bot_jid: str, apps: int, timeout: float = 90) -> None:
    """Until `status` shows CPU figures for all of the benchmark's apps."""
    deadline = time.monotonic() + timeout
    while True:
        reply, _ = await ask(owner, bot_jid, "status", r"(?m)^host:|^\(no figures")
        rows = [line.split() for line in reply.splitlines() if line.startswith(f"{PREFIX}-")]
        measured = [r for r in rows if len(r) >= 6 and r[-2].endswith("%")]
        if len(measured) >= apps:
            return
        if time.monotonic() > deadline:
            raise SystemExit(f"the bot did not sample {apps} apps within {timeout:.0f} s; last status:\n{reply}")
        await asyncio.sleep(2)  # the sampler's next tick


async def status_round_trips(owner: ChatPeer, bot_jid: str) -> list[float]:
    for _ in range(3):  # warm-up
        await ask(owner, bot_jid, "status", r"(?m)^host:")
    times = []
    for _ in range(STATUS_ROUNDS):
        _, took = await ask(owner, bot_jid, "status", r"(?m)^host:")
        times.append(took)
    return times


def docker_stats_times(ids: list[str]) -> list[float]:
    times = []
    for _ in range(STATS_ROUNDS):
        began = time.perf_counter()
        subprocess.run([DOCKER_CLI, "stats", "--no-stream", *ids], check=True, capture_output=True)
        times.append(time.perf_counter() - began)
    return times


async def listing_costs(count: int) -> tuple[float, float]:
    """Seconds for one list call vs listing with an inspect per container (median of 5)."""
    engine = Engine()
    lists, inspects = [], []
    for _ in range(5):
        began = time.perf_counter()
        await engine.list_managed()
        lists.append(time.perf_counter() - began)
        began = time.perf_counter()
        await engine.containers()
        inspects.append(time.perf_counter() - began)
    return statistics.median(lists), statistics.median(inspects)


async def main(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    began = time.monotonic()
    client = docker.DockerClient(base_url="unix:///var/run/docker.sock", timeout=120)
    fleet = Fleet(client)
    root = Path(tempfile.mkdtemp(prefix=f"{PREFIX}-"))
    sandbox_root = Path(tempfile.mkdtemp(prefix=f"{PREFIX}-prosody-"))  # under /tmp: the prosody user reaches it
    sandbox = ProsodySandbox(sandbox_root)
    bot_jid = sandbox.register("benchbot", "bench-bot")
    owner_jid = sandbox.register("benchowner", "bench-owner")
    sandbox.start()
    bot = Bot(root, sandbox, bot_jid, owner_jid)
    owner = ChatPeer(owner_jid, "bench-owner", sandbox.host, sandbox.port, sandbox.ca_file, "bench")
    results: dict[str, Any] = {"status": []}
    try:
        bot.start()
        await owner.connect()
        for size in SIZES:
            log.info("growing to %d containers", size)
            fleet.grow_to(size)
            await wait_sampled(owner, bot_jid, size // PER_APP)
            total = len(client.api.containers(filters={"label": "homeport.app"}))
            times = await status_round_trips(owner, bot_jid)
            stats = docker_stats_times(fleet.ids())
            lists, inspects = await listing_costs(size)
            results["status"].append((size, total, times, stats, lists, inspects))
            log.info("%d containers: status median %.0f ms, docker stats %.2f s", size,
                     statistics.median(times) * 1000, statistics.median(stats))
            if size == 50:
                results["idle"] = await idle_cost(bot, args.idle_seconds)
                results["latency"] = await alert_latency(fleet, owner, bot_jid)
    finally:
        await owner.disconnect()
        bot.stop()
        if not args.keep:
            fleet.remove_all()
        sandbox.stop()
        shutil.rmtree(root, ignore_errors=True)
        shutil.rmtree(sandbox_root, ignore_errors=True)
    print_table(results, time.monotonic() - began)
    return 0


async def idle_cost(bot: Bot, seconds: float) -> dict[str, float]:
    log.info("idle-monitoring 50 containers for %.0f s", seconds)
    await asyncio.sleep(15)  # let the last status replies and a tick settle
    dockerd = dockerd_pid()
    cpu0, wall0 = cpu_seconds(bot.pid), time.monotonic()
    engine0 = cpu_seconds(dockerd) if dockerd else None
    rss = []
    while time.monotonic() - wall0 < seconds:
        await asyncio.sleep(5)
        rss.append(rss_mb(bot.pid))
    wall = time.monotonic() - wall0
    used = cpu_seconds(bot.pid) - cpu0
    result = {"seconds": wall, "cpu_per_min": used / wall * 60, "core_percent": used / wall * 100,
              "rss_max": max(rss), "rss_last": rss[-1]}
    if dockerd and engine0 is not None:
        result["dockerd_per_min"] = (cpu_seconds(dockerd) - engine0) / wall * 60
    return result


async def alert_latency(fleet: Fleet, owner: ChatPeer, bot_jid: str) -> list[float]:
    log.info("alert latency: %d kills", LATENCY_SAMPLES)
    victims = [fleet.one_off(f"lat{i}") for i in range(LATENCY_SAMPLES)]
    await asyncio.sleep(1)
    latencies = []
    for i, victim in enumerate(victims):
        began = time.perf_counter()
        await asyncio.to_thread(victim.kill)
        await owner.wait_message(rf"ALERT {PREFIX}-lat{i}: ", timeout=20, sender=bot_jid)
        latencies.append(time.perf_counter() - began)
        await asyncio.sleep(1.5)  # apart, so each alert is its own message
    return latencies


def print_table(results: dict[str, Any], runtime: float) -> None:
    print()
    print("status round trip over XMPP (owner → bot → owner) vs `docker stats --no-stream` on the same containers")
    print("(running: all managed containers running on the engine; list call / list+inspect: one sampler listing"
          " against inspecting every container)")
    print(f"{'containers':>10} {'running':>9} {'median':>9} {'p95':>9} {'docker stats':>13} {'speed-up':>9}"
          f" {'list call':>10} {'list+inspect':>13}")
    for size, total, times, stats, lists, inspects in results["status"]:
        med, p95, dst = statistics.median(times), percentile(times, 95), statistics.median(stats)
        print(f"{size:>10} {total:>9} {med * 1000:>7.0f}ms {p95 * 1000:>7.0f}ms {dst:>12.2f}s {dst / med:>8.0f}×"
              f" {lists * 1000:>8.1f}ms {inspects * 1000:>11.1f}ms")
    idle = results.get("idle")
    if idle:
        print()
        print(f"sampler, idle-monitoring 50 containers at the default 10 s interval, over {idle['seconds']:.0f} s:")
        print(f"  bot CPU {idle['cpu_per_min']:.2f} s per minute = {idle['core_percent']:.2f} % of one core; "
              f"RSS max {idle['rss_max']:.1f} MB (last {idle['rss_last']:.1f} MB)")
        if "dockerd_per_min" in idle:
            print(f"  dockerd CPU meanwhile (whole engine, other users included): "
                  f"{idle['dockerd_per_min']:.2f} s per minute")
    latency = results.get("latency")
    if latency:
        print()
        print(f"alert latency, container killed → alert at the owner's client ({len(latency)} samples): "
              f"median {statistics.median(latency):.2f} s, max {max(latency):.2f} s, "
              f"all: {', '.join(f'{x:.2f}' for x in latency)}")
    print()
    print(f"benchmark runtime {runtime / 60:.1f} min")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--idle-seconds", type=float, default=150.0, help="sampler cost window")
    parser.add_argument("--keep", action="store_true", help="leave the containers running")
    raise SystemExit(asyncio.run(main(parser.parse_args())))

"""The cgroup reader against real containers of the real engine, checked against Docker's stats API.

docker-py is used here only to make containers and to ask Docker for its own
figures; bot.monitor never talks to Docker.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import docker
import pytest
from docker.models.containers import Container

from bot.durations import format_size
from bot.monitor.cgroups import CgroupReader, CgroupReading, cpu_percent, host_cpu_count
from tests.integration.docker_fixtures import LabelledContainers, wait_for

pytestmark = pytest.mark.integration

MiB = 1024**2

# 20 MB of page cache (written, then read back: inactive file pages) and
# 40 MB held in a shell variable; `echo` after `sleep` keeps the shell (and
# the variable) alive instead of letting it exec into sleep.
HOLDER = [
    "sh", "-c",
    "trap 'exit 0' TERM; head -c 20000000 /dev/urandom > /f; cat /f > /dev/null; "
    "x=$(yes | head -c 40000000); sleep 86400 & wait; echo ${#x}",
]
BURNER = ["sh", "-c", "trap 'exit 0' TERM; dd if=/dev/zero of=/dev/null & wait"]
SLEEPER = ["sh", "-c", "trap 'exit 0' TERM; sleep 86400 & wait"]


@pytest.fixture(scope="module")
def engine_info() -> Iterator[dict]:
    client = docker.from_env()
    try:
        yield client.info()
    finally:
        client.close()


@pytest.fixture
def reader() -> CgroupReader:
    found = CgroupReader()
    if not found.available:
        pytest.fail("no cgroup hierarchy visible at /sys/fs/cgroup", pytrace=False)
    return found


def start(labelled_containers: LabelledContainers, what: str, command: list[str], **kwargs: object) -> Container:
    token = labelled_containers.token
    return labelled_containers(
        "hpmon", command, name=f"hpmon-{what}-{token}", network_mode="none", **kwargs
    )


def read(reader: CgroupReader, container: Container, info: dict) -> CgroupReading:
    reading = reader.read(
        container.id,
        cgroup_parent=container.attrs["HostConfig"].get("CgroupParent") or None,
        driver=info.get("CgroupDriver"),
        pid=container.attrs["State"]["Pid"],
    )
    assert reading is not None, f"cgroup of {container.name} not found under {reader.root}"
    return reading


def docker_memory_figure(stats: dict) -> int:
    """What `docker stats` shows (docker CLI calculateMemUsageUnixNoCache)."""
    memory = stats["memory_stats"]
    usage = memory["usage"]
    extra = memory.get("stats", {})
    for key in ("total_inactive_file", "inactive_file"):  # v1, then v2
        if key in extra and extra[key] < usage:
            return usage - extra[key]
    return usage


def test_memory_matches_docker_stats(
    reader: CgroupReader, labelled_containers: LabelledContainers, engine_info: dict
) -> None:
    holder = start(labelled_containers, "mem", HOLDER, mem_limit="128m")
    wait_for(lambda: read(reader, holder, engine_info).mem_used > 38 * MiB, 30, "the holder to fill 40 MB")
    time.sleep(0.5)  # let the shell finish growing

    before = read(reader, holder, engine_info)
    stats = holder.stats(stream=False)
    after = read(reader, holder, engine_info)
    theirs = docker_memory_figure(stats)
    print(
        f"\nmemory: cgroup {before.mem_used} / {after.mem_used} B, docker stats {theirs} B "
        f"({format_size(after.mem_used)} vs {format_size(theirs)}); raw usage {after.mem_usage_raw} B; "
        f"cgroup v{after.version}, driver {engine_info.get('CgroupDriver')}"
    )
    # The holder is idle: both figures describe the same still memory.
    assert abs(after.mem_used - theirs) <= max(1 * MiB, theirs * 0.02)
    assert abs(before.mem_used - theirs) <= max(1 * MiB, theirs * 0.02)
    # The page cache really was there and really was left out.
    assert after.mem_usage_raw - after.mem_used >= 15 * MiB
    assert after.mem_limit == 128 * MiB == stats["memory_stats"]["limit"]
    assert after.pids == stats["pids_stats"]["current"]
    assert after.oom_kills in (0, None)


def test_cpu_burner_reads_high_and_idle_reads_low(
    reader: CgroupReader, labelled_containers: LabelledContainers, engine_info: dict
) -> None:
    burner = start(labelled_containers, "cpu", BURNER)
    idle = start(labelled_containers, "idle", SLEEPER)
    time.sleep(0.5)

    first = {c.name: read(reader, c, engine_info) for c in (burner, idle)}
    began = time.monotonic()
    time.sleep(2.0)
    second = {c.name: read(reader, c, engine_info) for c in (burner, idle)}
    elapsed = time.monotonic() - began
    burning = cpu_percent(first[burner.name], second[burner.name], elapsed)
    resting = cpu_percent(first[idle.name], second[idle.name], elapsed)

    stats = burner.stats(stream=False)
    cpu, pre = stats["cpu_stats"], stats["precpu_stats"]
    online = cpu.get("online_cpus") or host_cpu_count()
    system_delta = cpu["system_cpu_usage"] - pre["system_cpu_usage"]
    docker_says = (cpu["cpu_usage"]["total_usage"] - pre["cpu_usage"]["total_usage"]) / system_delta * online * 100
    print(f"\ncpu: burner {burning:.1f}% (docker stats {docker_says:.1f}%), idle {resting:.2f}% "
          f"over {elapsed:.2f}s, {host_cpu_count()} CPUs")

    assert burning is not None and resting is not None
    # One busy process is one core: about 100 %. Other tests share the two
    # cores of the CI machine, so allow for a loaded host.
    assert 60.0 <= burning <= 110.0
    assert resting < 5.0
    assert abs(burning - docker_says) < 35.0


def test_restart_resets_the_counter_and_the_reader_follows(
    reader: CgroupReader, labelled_containers: LabelledContainers, engine_info: dict
) -> None:
    burner = start(labelled_containers, "restart", BURNER)
    time.sleep(1.0)
    before = read(reader, burner, engine_info)
    burner.restart(timeout=5)
    burner.reload()
    after = read(reader, burner, engine_info)
    # A fresh cgroup: the counter starts again, and cpu_percent says "no figure".
    assert after.cpu_usage_ns < before.cpu_usage_ns
    assert cpu_percent(before, after, 1.0) is None

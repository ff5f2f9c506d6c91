"""Reading container figures from cgroup v1 and v2 files (bot.monitor.cgroups).

v1 fixtures are real files captured from running containers on the CI
machine, v2 fixtures follow the kernel's documented format; see
tests/fixtures/cgroups/README.md.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from bot.monitor.cgroups import (
    CgroupError,
    CgroupReader,
    CgroupReading,
    candidate_paths,
    cpu_percent,
    detect_version,
    expand_slice,
    host_cpu_count,
    parse_cpu_list,
    parse_proc_cgroup,
)

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "cgroups"
V1 = FIXTURES / "v1"
V2 = FIXTURES / "v2"

V1_BURNER = "5e437d66292d7c20a642fedae064fbd2e3b704c86885ec357a222b5cb500665f"
V1_NOLIMIT = "8a6f3f2bced7fa4f972e9bd55d478ee3d33dfa8ab01eebc6afd4dcc05fc06f09"
V1_OOM = "d78827596d27293a079e71bdf39a0e8cd318ce50a8619a1dff3b37da41faaa9d"
V1_NAMES = {V1_BURNER: "hpmon-fixture", V1_NOLIMIT: "hpmon-fixture-nolimit", V1_OOM: "hpmon-fixture-oom"}

V2_WEB = "413c49498244730fe14aa953cf29dc1e57602389a822a384c577c03d1904d2f0"
V2_CACHE = "6f7bd398f2a7f82feecd8166a3d40967baf4a9b59a27b27a308a149f83c1baae"
V2_OOM = "9886b6771d3ee36b7ac70b7cc5b318e7b2a230eecafb6ed520ec3274a49194eb"

MiB = 1024**2


def docker_stats(container_id: str) -> dict:
    return json.loads((V1 / "docker-stats" / f"{V1_NAMES[container_id]}.json").read_text())


def relocate_v1(tmp_path: Path, layout: str, cpuacct_dir: str = "cpuacct") -> Path:
    """Copy the real v1 files into another layout: only directory names change."""
    root = tmp_path / "cgroup"
    for controller, target in (("memory", "memory"), ("pids", "pids"), ("cpuacct", cpuacct_dir)):
        for container_dir in (V1 / controller / "docker").iterdir():
            container_id = container_dir.name
            relative = layout.format(id=container_id)
            shutil.copytree(container_dir, root / target / relative)
    return root


# -- layout detection -------------------------------------------------------------


def test_detect_version(tmp_path: Path) -> None:
    assert detect_version(V1) == 1
    assert detect_version(V2) == 2
    assert detect_version(tmp_path) is None


def test_expand_slice() -> None:
    assert str(expand_slice("system.slice")) == "system.slice"
    assert str(expand_slice("my-apps.slice")) == "my.slice/my-apps.slice"
    assert str(expand_slice("a-b-c.slice")) == "a.slice/a-b.slice/a-b-c.slice"
    assert str(expand_slice("-.slice")) == "."
    with pytest.raises(ValueError):
        expand_slice("docker")


def test_candidate_paths_order_and_driver() -> None:
    cid = "abc"
    assert [str(p) for p in candidate_paths(cid)] == ["docker/abc", "system.slice/docker-abc.scope"]
    assert [str(p) for p in candidate_paths(cid, driver="systemd")] == ["system.slice/docker-abc.scope"]
    assert [str(p) for p in candidate_paths(cid, driver="cgroupfs")] == ["docker/abc"]
    assert str(candidate_paths(cid, cgroup_parent="/custom/group")[0]) == "custom/group/abc"
    assert str(candidate_paths(cid, cgroup_parent="my-apps.slice")[0]) == "my.slice/my-apps.slice/docker-abc.scope"
    with pytest.raises(ValueError):
        candidate_paths(cid, driver="lxc")


# -- cgroup v1: real captured files -------------------------------------------------


@pytest.mark.parametrize("container_id", [V1_BURNER, V1_NOLIMIT, V1_OOM])
def test_v1_memory_matches_docker_stats(container_id: str) -> None:
    """Our figure is Docker's: usage minus total_inactive_file, from the same moment."""
    reading = CgroupReader(V1).read(container_id)
    assert reading is not None
    stats = docker_stats(container_id)["memory_stats"]
    assert reading.mem_usage_raw == stats["usage"]
    assert reading.mem_used == stats["usage"] - stats["stats"]["total_inactive_file"]
    assert reading.version == 1


def test_v1_burner_figures() -> None:
    reading = CgroupReader(V1).read(V1_BURNER)
    assert reading is not None
    assert reading.cpu_usage_ns == 255294420371  # cpuacct.usage, verbatim
    assert reading.mem_limit == 64 * MiB
    assert reading.mem_used == 585728 - 36864
    assert reading.pids == 1
    assert reading.oom_kills == 0
    assert reading.limit_hits == 0
    assert reading.mem_percent == pytest.approx((585728 - 36864) / (64 * MiB) * 100)


def test_v1_unlimited_memory_is_none() -> None:
    reading = CgroupReader(V1).read(V1_NOLIMIT)
    assert reading is not None
    assert reading.mem_limit is None
    assert reading.mem_percent is None
    # Most of its usage is page cache the kernel can drop: not counted as used.
    assert reading.mem_usage_raw == 21467136
    assert reading.mem_used == 21467136 - 19320832


def test_v1_oom_kill_comes_from_oom_control_not_failcnt() -> None:
    reading = CgroupReader(V1).read(V1_OOM)
    assert reading is not None
    assert reading.oom_kills == 1
    assert reading.limit_hits == 0  # failcnt stayed 0 although a process was OOM-killed
    assert reading.mem_limit == 32 * MiB


def test_v1_hierarchical_limit_of_a_parent_binds(tmp_path: Path) -> None:
    root = relocate_v1(tmp_path, "docker/{id}")
    stat = root / "memory" / "docker" / V1_NOLIMIT / "memory.stat"
    text = stat.read_text().replace(
        "hierarchical_memory_limit 9223372036854771712", f"hierarchical_memory_limit {512 * MiB}"
    )
    stat.write_text(text)
    reading = CgroupReader(root).read(V1_NOLIMIT)
    assert reading is not None
    assert reading.mem_limit == 512 * MiB


@pytest.mark.parametrize("driver", [None, "systemd"])
def test_v1_systemd_driver_layout(tmp_path: Path, driver: str | None) -> None:
    root = relocate_v1(tmp_path, "system.slice/docker-{id}.scope")
    reader = CgroupReader(root)
    paths = reader.locate(V1_BURNER, driver=driver)
    assert paths is not None
    assert paths.memory == root / "memory" / "system.slice" / f"docker-{V1_BURNER}.scope"
    reading = reader.read(V1_BURNER, driver=driver)
    assert reading is not None and reading.mem_limit == 64 * MiB
    # The cgroupfs driver never uses system.slice: told so, we do not look there.
    assert CgroupReader(root).read(V1_BURNER, driver="cgroupfs") is None


def test_v1_combined_cpu_cpuacct_mount(tmp_path: Path) -> None:
    root = relocate_v1(tmp_path, "docker/{id}", cpuacct_dir="cpu,cpuacct")
    reading = CgroupReader(root).read(V1_BURNER)
    assert reading is not None
    assert reading.cpu_usage_ns == 255294420371


def test_v1_custom_cgroup_parents(tmp_path: Path) -> None:
    root = relocate_v1(tmp_path, "homeport-apps/{id}")
    reader = CgroupReader(root)
    assert reader.read(V1_OOM) is None
    reading = reader.read(V1_OOM, cgroup_parent="/homeport-apps")
    assert reading is not None and reading.oom_kills == 1

    root2 = relocate_v1(tmp_path / "b", "apps.slice/apps-web.slice/docker-{id}.scope")
    reading = CgroupReader(root2).read(V1_OOM, cgroup_parent="apps-web.slice")
    assert reading is not None and reading.oom_kills == 1


def test_v1_without_pids_controller(tmp_path: Path) -> None:
    root = relocate_v1(tmp_path, "docker/{id}")
    shutil.rmtree(root / "pids")
    reading = CgroupReader(root).read(V1_BURNER)
    assert reading is not None
    assert reading.pids is None
    assert reading.mem_limit == 64 * MiB


# -- cgroup v2: documented format ------------------------------------------------


def test_v2_systemd_scope_figures() -> None:
    reading = CgroupReader(V2).read(V2_WEB)
    assert reading is not None
    assert reading.version == 2
    assert reading.cpu_usage_ns == 482915347 * 1000
    assert reading.mem_usage_raw == 53821440
    assert reading.mem_used == 53821440 - 16777216
    assert reading.mem_limit == 128 * MiB
    assert reading.pids == 7
    assert reading.oom_kills == 0
    assert reading.limit_hits == 0


def test_v2_unlimited() -> None:
    reading = CgroupReader(V2).read(V2_CACHE)
    assert reading is not None
    assert reading.mem_limit is None
    assert reading.mem_used == 9248768 - 1638400


def test_v2_cgroupfs_driver_and_oom_events() -> None:
    reading = CgroupReader(V2).read(V2_OOM)
    assert reading is not None
    assert reading.oom_kills == 3
    assert reading.limit_hits == 412
    assert reading.mem_limit == 32 * MiB
    assert reading.mem_percent == pytest.approx((33218560 - 212992) / (32 * MiB) * 100)
    assert CgroupReader(V2).read(V2_OOM, driver="systemd") is None


# -- locating via /proc/<pid>/cgroup -----------------------------------------------


def fake_proc(tmp_path: Path, pid: int, container_id: str, v2: bool = False) -> Path:
    """A /proc/<pid>/cgroup in the format this machine's kernel prints."""
    proc = tmp_path / "proc"
    (proc / str(pid)).mkdir(parents=True)
    if v2:
        text = f"0::/weird.slice/docker-{container_id}.scope\n"
    else:
        text = "".join(
            f"{n}:{ctrl}:/weird/{container_id}\n"
            for n, ctrl in enumerate(
                ["cpu", "cpuacct", "cpuset", "memory", "devices", "freezer", "blkio", "pids", "name=systemd"], 1
            )
        ) + f"0::/weird/{container_id}\n"
    (proc / str(pid) / "cgroup").write_text(text)
    return proc


def test_locate_from_pid_finds_an_unguessable_parent(tmp_path: Path) -> None:
    root = relocate_v1(tmp_path, "weird/{id}")
    proc = fake_proc(tmp_path, 4242, V1_BURNER)
    reader = CgroupReader(root, proc=proc)
    assert CgroupReader(root, proc=proc).read(V1_BURNER) is None  # no pid: only the usual places
    reading = reader.read(V1_BURNER, pid=4242)
    assert reading is not None and reading.mem_limit == 64 * MiB


def test_locate_from_pid_ignores_a_reused_pid(tmp_path: Path) -> None:
    proc = fake_proc(tmp_path, 77, "someotherprocess")
    reader = CgroupReader(V1, proc=proc)
    # The pid's cgroup names another container: fall back to the usual places.
    paths = reader.locate(V1_BURNER, pid=77)
    assert paths is not None
    assert paths.memory == V1 / "memory" / "docker" / V1_BURNER
    assert CgroupReader(V1, proc=proc).locate(V1_BURNER, pid=99999) is not None  # pid gone


def test_locate_from_pid_v2(tmp_path: Path) -> None:
    root = tmp_path / "cg"
    shutil.copytree(V2, root)
    (root / "weird.slice").mkdir()
    scope = f"docker-{V2_WEB}.scope"
    shutil.move(root / "system.slice" / scope, root / "weird.slice" / scope)
    proc = fake_proc(tmp_path, 5, V2_WEB, v2=True)
    assert CgroupReader(root, proc=proc).read(V2_WEB) is None
    reading = CgroupReader(root, proc=proc).read(V2_WEB, pid=5)
    assert reading is not None
    assert reading.mem_used == 53821440 - 16777216


def test_parse_proc_cgroup() -> None:
    parsed = parse_proc_cgroup("4:memory:/docker/abc\n2:cpu,cpuacct:/docker/abc\n0::/docker/abc\n")
    assert str(parsed["memory"]) == "/docker/abc"
    assert str(parsed["cpuacct"]) == "/docker/abc"
    assert str(parsed[""]) == "/docker/abc"
    with pytest.raises(CgroupError):
        parse_proc_cgroup("garbage")


# -- missing, vanished and broken --------------------------------------------------


def test_unknown_container_and_missing_hierarchy(tmp_path: Path) -> None:
    assert CgroupReader(V1).read("0" * 64) is None
    reader = CgroupReader(tmp_path)
    assert not reader.available
    assert reader.read(V1_BURNER) is None


def test_container_vanishing_between_reads(tmp_path: Path) -> None:
    root = relocate_v1(tmp_path, "docker/{id}")
    reader = CgroupReader(root)
    assert reader.read(V1_BURNER) is not None
    shutil.rmtree(root / "memory" / "docker" / V1_BURNER)
    assert reader.read(V1_BURNER) is None
    # It comes back (restarted: a fresh cgroup); the reader finds it again.
    shutil.copytree(V1 / "memory" / "docker" / V1_BURNER, root / "memory" / "docker" / V1_BURNER)
    assert reader.read(V1_BURNER) is not None


def test_prune_forgets_gone_containers(tmp_path: Path) -> None:
    root = relocate_v1(tmp_path, "docker/{id}")
    reader = CgroupReader(root)
    reader.read(V1_BURNER)
    reader.read(V1_OOM)
    reader.prune({V1_OOM})
    shutil.rmtree(root / "memory" / "docker" / V1_BURNER)
    assert reader.locate(V1_BURNER) is None
    assert reader.locate(V1_OOM) is not None


@pytest.mark.parametrize(
    ("file", "content"),
    [
        ("memory/docker/{id}/memory.usage_in_bytes", "lots\n"),
        ("memory/docker/{id}/memory.stat", "cache 1 2 3\n"),
        ("cpuacct/docker/{id}/cpuacct.usage", ""),
    ],
)
def test_garbage_content_raises_a_clear_error(tmp_path: Path, file: str, content: str) -> None:
    root = relocate_v1(tmp_path, "docker/{id}")
    (root / file.format(id=V1_BURNER)).write_text(content)
    with pytest.raises(CgroupError, match=V1_BURNER[:12]):
        CgroupReader(root).read(V1_BURNER)


# -- CPU percent and CPU count --------------------------------------------------------


def reading(cpu_ns: int, cid: str = "c1") -> CgroupReading:
    return CgroupReading(cid, 1, cpu_ns, 0, 0, None, None, None, None)


def test_cpu_percent_is_per_core_like_docker_stats() -> None:
    assert cpu_percent(reading(0), reading(500_000_000), 1.0) == pytest.approx(50.0)
    # Two cores busy for 2 s: 4 s of CPU time → 200 %.
    assert cpu_percent(reading(10**9), reading(5 * 10**9), 2.0) == pytest.approx(200.0)
    assert cpu_percent(reading(7), reading(7), 10.0) == 0.0


def test_cpu_percent_without_a_figure() -> None:
    assert cpu_percent(reading(5 * 10**9), reading(10**9), 1.0) is None  # restarted: counter reset
    assert cpu_percent(reading(0), reading(10), 0.0) is None
    with pytest.raises(ValueError):
        cpu_percent(reading(0, "a"), reading(1, "b"), 1.0)


def test_cpu_percent_from_real_v1_and_v2_counters() -> None:
    v1 = CgroupReader(V1).read(V1_BURNER)
    assert v1 is not None
    later = CgroupReading(v1.container_id, 1, v1.cpu_usage_ns + 990_000_000, 0, 0, None, None, None, None)
    assert cpu_percent(v1, later, 1.0) == pytest.approx(99.0)
    v2 = CgroupReader(V2).read(V2_WEB)
    assert v2 is not None and v2.cpu_usage_ns % 1000 == 0


def test_parse_cpu_list_and_host_cpu_count(tmp_path: Path) -> None:
    assert parse_cpu_list("0-1\n") == 2
    assert parse_cpu_list("0-3,6,8-9") == 7
    assert parse_cpu_list("0") == 1
    online = tmp_path / "online"
    online.write_text("0-7\n")
    assert host_cpu_count(online) == 8
    assert host_cpu_count(tmp_path / "missing") == (os.cpu_count() or 1)
    online.write_text("nonsense")
    assert host_cpu_count(online) == (os.cpu_count() or 1)

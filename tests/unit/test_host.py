"""Host CPU, memory and disk figures (bot.monitor.host), from real /proc captures."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from bot.monitor.host import (
    CpuTimes,
    HostReadError,
    disk_usage,
    host_cpu_percent,
    parse_meminfo,
    parse_proc_stat,
    read_cpu_times,
    read_memory,
)

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "host"


def test_proc_stat_aggregate_line() -> None:
    times = read_cpu_times(FIXTURES / "proc-stat.1")
    # cpu  15268 0 26353 252333 494 0 151 1181 0 0: idle = idle + iowait, guest not added twice.
    assert times.total == 15268 + 26353 + 252333 + 494 + 151 + 1181
    assert times.busy == 15268 + 26353 + 151 + 1181


def test_host_cpu_percent_between_two_real_readings() -> None:
    first = read_cpu_times(FIXTURES / "proc-stat.1")
    second = read_cpu_times(FIXTURES / "proc-stat.2")
    # 2 CPUs x 100 ticks/s x 2 s = 400 ticks, 80 of them busy.
    assert second.total - first.total == 400
    assert host_cpu_percent(first, second) == pytest.approx(20.0)


def test_host_cpu_percent_edge_cases() -> None:
    same = CpuTimes(busy=10, total=100)
    assert host_cpu_percent(same, same) is None
    assert host_cpu_percent(CpuTimes(50, 100), CpuTimes(10, 200)) is None  # counters went backwards
    assert host_cpu_percent(CpuTimes(0, 0), CpuTimes(100, 100)) == 100.0


def test_guest_time_is_not_counted_twice() -> None:
    # user=100 includes guest=100: a VM host running a busy guest is 50 % busy, not 66 %.
    times = parse_proc_stat("cpu  100 0 0 100 0 0 0 0 100 0\n")
    assert times == CpuTimes(busy=100, total=200)


@pytest.mark.parametrize("text", ["", "intr 1 2 3\n", "cpu  a b c d\n", "cpu  1 2\n"])
def test_proc_stat_garbage(text: str) -> None:
    with pytest.raises(HostReadError):
        parse_proc_stat(text)


def test_meminfo_real_capture() -> None:
    memory = read_memory(FIXTURES / "meminfo")
    assert memory.total == 24683792 * 1024
    assert memory.available == 24135780 * 1024
    assert memory.used == (24683792 - 24135780) * 1024
    assert memory.percent == pytest.approx((24683792 - 24135780) / 24683792 * 100)


def test_meminfo_without_memavailable_and_garbage() -> None:
    old = parse_meminfo("MemTotal: 1000 kB\nMemFree: 100 kB\nBuffers: 50 kB\nCached: 250 kB\n")
    assert old.available == 400 * 1024
    assert old.used == 600 * 1024
    with pytest.raises(HostReadError):
        parse_meminfo("HugePages_Total: 0\n")


def test_live_proc_files_parse() -> None:
    times = read_cpu_times()
    assert times.total > times.busy > 0
    memory = read_memory()
    assert 0 < memory.available <= memory.total


class FakeStatvfs:
    def __init__(self, **fields: int) -> None:
        self.fields = fields
        self.asked: list[str] = []

    def __call__(self, path: str) -> os.statvfs_result:
        self.asked.append(path)
        f = self.fields
        return os.statvfs_result(
            (f["bsize"], f["frsize"], f["blocks"], f["bfree"], f["bavail"], 0, 0, 0, 0, 255)
        )


def test_disk_usage_like_df_with_reserved_blocks() -> None:
    # 1000 blocks of 4 KiB, 100 free of which 50 reserved for root.
    fake = FakeStatvfs(bsize=4096, frsize=4096, blocks=1000, bfree=100, bavail=50)
    usage = disk_usage(Path("/var/lib/docker"), statvfs=fake)
    assert fake.asked == ["/var/lib/docker"]
    assert usage.total == 1000 * 4096
    assert usage.used == 900 * 4096
    assert usage.free == 50 * 4096
    assert usage.percent == pytest.approx(900 / 950 * 100)


def test_disk_usage_of_a_real_path_agrees_with_df(tmp_path: Path) -> None:
    usage = disk_usage(tmp_path)
    total, _, free = shutil.disk_usage(tmp_path)
    assert usage.total == total
    assert usage.free == free
    if shutil.which("df") is None:
        pytest.skip("df not installed")
    out = subprocess.run(
        ["df", "-B1", "--output=used,avail,pcent", str(tmp_path)], capture_output=True, text=True, check=True
    ).stdout.splitlines()[-1].split()
    used, avail, pcent = int(out[0]), int(out[1]), int(out[2].rstrip("%"))
    # The filesystem is live (other work writes to it): allow a little drift.
    assert abs(usage.used - used) < 256 * 1024**2
    assert abs(usage.free - avail) < 256 * 1024**2
    assert abs(usage.percent - pcent) <= 1.0


def test_disk_usage_missing_path(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        disk_usage(tmp_path / "nope")

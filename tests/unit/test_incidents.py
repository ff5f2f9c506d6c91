"""Which exits are crashes, and how the owner is told (bot.monitor.incidents)."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from bot.monitor.incidents import (
    engine_back_text,
    engine_down_text,
    exit_detail,
    is_crash,
    last_lines,
    oom_detail,
    signal_note,
)

MiB = 1024**2


@pytest.mark.parametrize("code, policy, crash", [
    (1, "no", True),
    (137, "no", True),
    (0, "no", False),  # a job that finished
    (0, "on-failure", False),
    (0, "always", True),  # meant to run for ever: a clean exit is unexpected too
    (0, "unless-stopped", True),
    (None, "no", True),
])
def test_is_crash(code: int | None, policy: str, crash: bool) -> None:
    assert is_crash(code, policy) is crash


def test_signal_note() -> None:
    assert signal_note(137) == " (SIGKILL)"
    assert signal_note(143) == " (SIGTERM)"
    assert signal_note(1) == "" and signal_note(None) == "" and signal_note(255) == ""


def test_last_lines_are_cleaned_and_trimmed() -> None:
    text = "one\n\x1b[31mred\x1b[0m two\r\n\n\x07three\n" + "x" * 300 + "\n"
    lines = last_lines(text, count=3)
    assert lines[:2] == ["red two", "three"]
    assert lines[2].endswith("…") and len(lines[2]) == 201


def test_exit_detail_quotes_the_logs() -> None:
    detail = exit_detail("web-main-1", 137, ["starting", "listening on :80"])
    assert detail == "web-main-1 exited with code 137 (SIGKILL); last log lines:\n| starting\n| listening on :80"
    assert exit_detail("web-main-1", 1, []) == "web-main-1 exited with code 1; no log output"


def test_oom_detail() -> None:
    assert oom_detail("db-1", 137, 32 * MiB, ["eating"]) == \
        "db-1 was killed for running out of memory (limit 32 MiB), exit code 137; last log lines:\n| eating"
    assert oom_detail("db-1", None, None, [], still_running=True) == \
        "a process in db-1 was killed for running out of memory; the container keeps running; no log output"


def test_engine_texts() -> None:
    since = datetime(2024, 5, 1, 14, 2, 3, tzinfo=timezone.utc)
    assert engine_down_text(since) == \
        "Docker engine not reachable since 14:02:03 UTC; commands and monitoring wait for it"
    assert engine_back_text(since, 12.4, ["wiki", "blog"]) == (
        "Docker engine was down for 12 s (from 14:02:03 UTC); it is back and monitoring goes on. "
        "Not running now, though they were before: blog, wiki")
    assert engine_back_text(None, None, []) == "Docker engine was down for a while; it is back and monitoring goes on"

"""What the owner is told about a container event: which exits are crashes, and the words for them.

Pure functions, no Docker and no clock, so the wording and the decisions are
unit-tested on their own. The monitor service (``bot.monitor.service``)
gathers the facts (exit code, restart policy, last log lines) and calls
these.
"""

from __future__ import annotations

import logging
import re
import signal
from collections.abc import Iterable
from datetime import datetime

from bot.durations import format_seconds_short, format_size

log = logging.getLogger(__name__)

LOG_LINES = 8  # last log lines quoted in a crash alert
MAX_LINE_CHARS = 200

# Terminal colours and control characters: log output quoted in a chat
# message must not garble the owner's screen or forge lines.
_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[@-Z\\-_]")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def clean_line(text: str) -> str:
    line = _CONTROL.sub("", _ANSI.sub("", text)).rstrip()
    return line if len(line) <= MAX_LINE_CHARS else line[:MAX_LINE_CHARS] + "…"


def last_lines(text: str, count: int = LOG_LINES) -> list[str]:
    """The last ``count`` non-empty lines of a log, cleaned."""
    lines = [clean_line(line) for line in text.replace("\r\n", "\n").split("\n")]
    return [line for line in lines if line][-count:]


def signal_note(code: int | None) -> str:
    """`` (SIGKILL)`` for exit code 137: codes above 128 mean death by a signal."""
    if code is None or not 128 < code < 128 + 65:
        return ""
    try:
        return f" ({signal.Signals(code - 128).name})"
    except ValueError:
        return ""


def is_crash(exit_code: int | None, restart_policy: str) -> bool:
    """Whether an exit nobody asked for deserves an alert.

    A non-zero code is a failure. Code 0 is a job that finished, unless the
    container is meant to run for ever (restart policy always or
    unless-stopped): then a clean exit is as unexpected as a crash.
    """
    if exit_code is None:
        return True
    if exit_code != 0:
        return True
    return restart_policy in ("always", "unless-stopped")


def _with_logs(head: str, lines: Iterable[str]) -> str:
    quoted = [f"| {line}" for line in lines]
    if not quoted:
        return f"{head}; no log output"
    return "\n".join([f"{head}; last log lines:", *quoted])


def exit_detail(name: str, exit_code: int | None, lines: Iterable[str]) -> str:
    code = "an unknown code" if exit_code is None else f"code {exit_code}{signal_note(exit_code)}"
    return _with_logs(f"{name} exited with {code}", lines)


def oom_detail(name: str, exit_code: int | None, mem_limit: int | None, lines: Iterable[str],
               still_running: bool = False) -> str:
    limit = f" (limit {format_size(mem_limit)})" if mem_limit else ""
    if still_running:
        head = f"a process in {name} was killed for running out of memory{limit}; the container keeps running"
    else:
        code = "" if exit_code is None else f", exit code {exit_code}"
        head = f"{name} was killed for running out of memory{limit}{code}"
    return _with_logs(head, lines)


def unhealthy_detail(name: str) -> str:
    return f"health check failing ({name})"


def _clock(moment: datetime) -> str:
    return moment.strftime("%H:%M:%S UTC")


def engine_down_text(since: datetime) -> str:
    return f"Docker engine not reachable since {_clock(since)}; commands and monitoring wait for it"


def engine_back_text(down_since: datetime | None, down_for: float | None, not_running: Iterable[str]) -> str:
    lasted = format_seconds_short(down_for) if down_for is not None else "a while"
    since = f" (from {_clock(down_since)})" if down_since is not None else ""
    text = f"Docker engine was down for {lasted}{since}; it is back and monitoring goes on"
    stopped = sorted(set(not_running))
    if stopped:
        text += f". Not running now, though they were before: {', '.join(stopped)}"
    return text

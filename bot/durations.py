"""Human durations and sizes: parse what the owner types, format what the bot says.

Chat commands take durations like ``30m``, ``2h`` or ``1h30m`` (mute, thresholds)
and sizes like ``512m`` or ``1GiB``; replies show uptimes ("2h 5m"), how long an
action took ("1.2 s") and memory figures ("512 MiB"). Keeping both directions in
one module means what the bot prints can be typed back to it.
"""

from __future__ import annotations

import logging
import math
import re
from datetime import timedelta

log = logging.getLogger(__name__)

MAX_DURATION = timedelta(days=365)

_UNIT_SECONDS: dict[str, int] = {"w": 604800, "d": 86400, "h": 3600, "m": 60, "s": 1}
_DURATION_PART = re.compile(r"(\d+)\s*([wdhms])")
_DURATION_HELP = "use e.g. 90s, 30m, 2h, 1d or 1h30m"


def parse_duration(
    text: str,
    *,
    maximum: timedelta = MAX_DURATION,
    allow_zero: bool = False,
) -> timedelta:
    """Parse ``30m``, ``2h``, ``1d``, ``90s``, ``1w`` or combinations like ``1h30m``.

    Units must come largest first and at most once each, so a typo such as
    ``30m2h`` is refused rather than guessed at. A bare number is refused too:
    "mute web 30" could mean seconds or minutes, and guessing wrong silences
    alerts for the wrong length of time.
    """
    raw = text.strip().lower()
    if not raw:
        raise ValueError(f"empty duration; {_DURATION_HELP}")
    if raw.isdigit():
        raise ValueError(f"'{text}' has no unit; {_DURATION_HELP}")
    total = 0
    position = 0
    last_rank = -1
    order = list(_UNIT_SECONDS)
    for match in _DURATION_PART.finditer(raw):
        gap = raw[position:match.start()]
        if gap.strip():
            raise ValueError(f"'{text}' is not a duration; {_DURATION_HELP}")
        rank = order.index(match.group(2))
        if rank <= last_rank:
            raise ValueError(f"'{text}': put larger units first, each once ({_DURATION_HELP})")
        last_rank = rank
        total += int(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        position = match.end()
    if position == 0 or raw[position:].strip():
        raise ValueError(f"'{text}' is not a duration; {_DURATION_HELP}")
    result = timedelta(seconds=total)
    if result > maximum:
        raise ValueError(f"'{text}' is too long; at most {format_duration(maximum)}")
    if result == timedelta(0) and not allow_zero:
        raise ValueError(f"'{text}' is zero; {_DURATION_HELP}")
    return result


def format_duration(value: float | timedelta) -> str:
    """Short human text for a length of time: ``3d 4h``, ``2h 5m``, ``5m 3s``, ``45s``.

    Two units at most: an uptime of "2h 5m 13s" is noise on a phone screen.
    Negative values show as ``0s``: a container's start time can lie a moment
    in the future after the clock is stepped, and "-2s" helps nobody.
    """
    seconds = value.total_seconds() if isinstance(value, timedelta) else float(value)
    if math.isnan(seconds) or seconds <= 0:
        return "0s"
    remaining = int(seconds)
    parts: list[str] = []
    for unit in ("d", "h", "m", "s"):
        size = _UNIT_SECONDS[unit]
        count, remaining = divmod(remaining, size)
        if count or parts:
            parts.append(f"{count}{unit}")
        if len(parts) == 2:
            break
    if not parts:
        return "0s"
    # "2h 0m" says no more than "2h".
    if len(parts) == 2 and parts[1].startswith("0"):
        parts.pop()
    return " ".join(parts)


def format_seconds_short(seconds: float) -> str:
    """How long an action took: ``34 ms``, ``0.5 s``, ``1.2 s``, ``12 s``, ``1m 15s``."""
    if math.isnan(seconds) or seconds < 0:
        seconds = 0.0
    if seconds < 0.1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 10:
        # Truncate rather than round: "0.53" reads as "0.5 s", never "0.6 s".
        return f"{math.floor(seconds * 10) / 10:.1f} s"
    if seconds < 60:
        return f"{int(seconds)} s"
    return format_duration(seconds)


# Docker reads every size unit as binary (``-m 512m`` is 512 MiB); so do we, so a
# limit typed to the bot means what it means on the docker command line.
_SIZE_UNITS: dict[str, int] = {
    "": 1,
    "b": 1,
    "k": 1024,
    "kb": 1024,
    "kib": 1024,
    "m": 1024**2,
    "mb": 1024**2,
    "mib": 1024**2,
    "g": 1024**3,
    "gb": 1024**3,
    "gib": 1024**3,
    "t": 1024**4,
    "tb": 1024**4,
    "tib": 1024**4,
}
_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([a-z]*)")
MAX_SIZE = 1024**5  # 1 PiB: anything larger is a typo on a personal server


def parse_size(text: str) -> int:
    """Parse ``512m``, ``1g``, ``1.5GiB``, ``256MiB`` or a plain byte count into bytes."""
    match = _SIZE.fullmatch(text.strip().lower())
    if match is None or match.group(2) not in _SIZE_UNITS:
        raise ValueError(f"'{text}' is not a size; use e.g. 512m, 1g, 256MiB or a byte count")
    number, unit = match.groups()
    if unit == "" and "." in number:
        raise ValueError(f"'{text}': a byte count is a whole number")
    size = int(float(number) * _SIZE_UNITS[unit])
    if size > MAX_SIZE:
        raise ValueError(f"'{text}' is too large; at most {format_size(MAX_SIZE)}")
    return size


def format_size(size: float) -> str:
    """Binary units like ``docker stats``: ``900 B``, ``1.5 KiB``, ``512 MiB``, ``3.2 GiB``."""
    if size < 0:
        raise ValueError(f"negative size {size}")
    if size < 1024:
        return f"{int(size)} B"
    value = float(size)
    for unit in ("KiB", "MiB", "GiB", "TiB", "PiB"):
        value /= 1024
        # 1023.7 MiB would print as "1024 MiB": move up a unit before that.
        if value < 1023.5 or unit == "PiB":
            break
    # One decimal while it carries information (1.5 GiB), none once it is noise
    # (512 MiB) or when the value is whole (1 GiB, not 1.0 GiB).
    if value >= 100 or value == int(value):
        return f"{value:.0f} {unit}"
    text = f"{value:.1f}"
    if text.endswith(".0"):
        text = text[:-2]
    return f"{text} {unit}"

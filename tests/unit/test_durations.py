"""Parsing and formatting of human durations and sizes (bot.durations)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from bot.durations import (
    format_duration,
    format_seconds_short,
    format_size,
    parse_duration,
    parse_size,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30m", timedelta(minutes=30)),
        ("2h", timedelta(hours=2)),
        ("1d", timedelta(days=1)),
        ("90s", timedelta(seconds=90)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("1h 30m", timedelta(hours=1, minutes=30)),
        ("1w", timedelta(days=7)),
        ("2D", timedelta(days=2)),
        (" 45m ", timedelta(minutes=45)),
        ("1d2h3m4s", timedelta(days=1, hours=2, minutes=3, seconds=4)),
        ("365d", timedelta(days=365)),
    ],
)
def test_parse_duration_accepts(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("30", "no unit"),
        ("abc", "not a duration"),
        ("30x", "not a duration"),
        ("m", "not a duration"),
        ("-5m", "not a duration"),
        ("1.5h", "not a duration"),
        ("30m2h", "larger units first"),
        ("5m5m", "larger units first"),
        ("366d", "too long"),
        ("0m", "zero"),
        ("2h; rm -rf /", "not a duration"),
    ],
)
def test_parse_duration_refuses_with_a_human_message(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as caught:
        parse_duration(text)
    assert "e.g." in str(caught.value) or "at most" in str(caught.value)


def test_parse_duration_bounds_are_adjustable() -> None:
    assert parse_duration("0s", allow_zero=True) == timedelta(0)
    with pytest.raises(ValueError, match="too long"):
        parse_duration("2h", maximum=timedelta(hours=1))


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [
        (0, "0s"),
        (0.4, "0s"),
        (45, "45s"),
        (60, "1m"),
        (303, "5m 3s"),
        (7200, "2h"),
        (7500, "2h 5m"),
        (7513, "2h 5m"),
        (86400 * 3 + 3600 * 4 + 59, "3d 4h"),
        (86400 + 59, "1d"),
        (-5, "0s"),
    ],
)
def test_format_duration(seconds: float, expected: str) -> None:
    assert format_duration(seconds) == expected


def test_format_duration_takes_timedelta_and_round_trips() -> None:
    assert format_duration(timedelta(hours=1, minutes=30)) == "1h 30m"
    for text in ("30m", "2h", "1d", "90s"):
        shown = format_duration(parse_duration(text)).replace(" ", "")
        assert parse_duration(shown) == parse_duration(text)


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [
        (0.034, "34 ms"),
        (0.53, "0.5 s"),
        (1.23, "1.2 s"),
        (9.99, "9.9 s"),
        (12.7, "12 s"),
        (75, "1m 15s"),
    ],
)
def test_format_seconds_short(seconds: float, expected: str) -> None:
    assert format_seconds_short(seconds) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("512m", 512 * 1024**2),
        ("1g", 1024**3),
        ("256MiB", 256 * 1024**2),
        ("1048576", 1048576),
        ("1.5g", 1536 * 1024**2),
        ("64 MB", 64 * 1024**2),
        ("100k", 102400),
        ("2T", 2 * 1024**4),
        ("0", 0),
    ],
)
def test_parse_size(text: str, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "abc", "12x", "-5m", "1.5", "m", "1e9", "2P"])
def test_parse_size_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="size|whole number"):
        parse_size(text)


def test_parse_size_upper_bound() -> None:
    with pytest.raises(ValueError, match="too large"):
        parse_size("2048t")


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        (0, "0 B"),
        (900, "900 B"),
        (1536, "1.5 KiB"),
        (512 * 1024**2, "512 MiB"),
        (1024**3, "1 GiB"),
        (int(3.2 * 1024**3), "3.2 GiB"),
        (int(12.34 * 1024**2), "12.3 MiB"),
        (int(1023.7 * 1024**2), "1 GiB"),
    ],
)
def test_format_size(size: int, expected: str) -> None:
    assert format_size(size) == expected


def test_format_size_round_trips_through_parse() -> None:
    for size in (512 * 1024**2, 1024**3, 64 * 1024**2):
        assert parse_size(format_size(size).replace(" ", "")) == size

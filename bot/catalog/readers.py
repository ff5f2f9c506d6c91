"""Typed readers for catalog values: each checks one value's type and
shape and raises Invalid naming the field's path (``services.web.ports[0]``)
with a reason the owner can act on."""

from __future__ import annotations

import difflib
import logging
import re
import shlex
from collections.abc import Mapping, Sequence
from typing import Any

from bot.catalog.errors import Invalid
from bot.catalog.model import PLACEHOLDER_RE
from bot.durations import parse_duration, parse_size

log = logging.getLogger(__name__)

# Names end up in container, network and volume names and in chat commands:
# strict on purpose (the same rule as bot.commandkit.APP_NAME).
NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,30}$")
# Setting names appear inside {{ }}; underscores read better there than dashes.
SETTING_NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,30}$")
MIN_MEMORY = 6 * 1024**2  # Docker refuses memory limits below 6 MiB


def at(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def type_name(value: Any) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


def required(data: Mapping[str, Any], key: str, path: str, what: str) -> Any:
    if data.get(key) is None:
        raise Invalid(at(path, key), f"required: {what}")
    return data[key]


def mapping(value: Any, path: str) -> dict[Any, Any]:
    if not isinstance(value, dict):
        raise Invalid(path, f"expected a mapping, found {type_name(value)}")
    return value


def sequence(value: Any, path: str) -> list[Any]:
    if not isinstance(value, list):
        raise Invalid(path, f"expected a list, found {type_name(value)}")
    return value


def string(value: Any, path: str, *, empty: bool = False) -> str:
    if not isinstance(value, str):
        hint = " (quote it)" if isinstance(value, (bool, int, float)) else ""
        raise Invalid(path, f"expected a string, found {type_name(value)}{hint}")
    if not empty and not value.strip():
        raise Invalid(path, "must not be empty")
    return value


def boolean(value: Any, path: str) -> bool:
    if not isinstance(value, bool):
        raise Invalid(path, f"expected true or false, found {type_name(value)}")
    return value


def whole(value: Any, path: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise Invalid(path, f"expected a whole number, found {type_name(value)}")
    if not low <= value <= high:
        raise Invalid(path, f"{value} is out of range ({low}-{high})")
    return value


def number(value: Any, path: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise Invalid(path, f"expected a number, found {type_name(value)}")
    if not low < value <= high:
        raise Invalid(path, f"{value} is out of range (above {low:g}, at most {high:g})")
    return float(value)


def identifier(value: Any, path: str, what: str, pattern: re.Pattern[str] = NAME_RE) -> str:
    text = string(value, path)
    if not pattern.match(text):
        chars = "a-z, 0-9 and _" if pattern is SETTING_NAME_RE else "a-z, 0-9 and -"
        raise Invalid(path, f"{what} {text!r} must start with a letter and use only {chars} (at most 31)")
    return text


def duration(value: Any, path: str, *, zero: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, str):
        raise Invalid(path, f"expected a duration such as 30s, 5m or 1h, found {type_name(value)}")
    try:
        return parse_duration(value, allow_zero=zero).total_seconds()
    except ValueError as exc:
        raise Invalid(path, str(exc)) from exc


def size(value: Any, path: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise Invalid(path, f"expected a size such as 256m or 1g, found {type_name(value)}")
    try:
        size = value if isinstance(value, int) else parse_size(value)
    except ValueError as exc:
        raise Invalid(path, str(exc)) from exc
    if size < MIN_MEMORY:
        raise Invalid(path, f"{value} is below Docker's minimum of 6m")
    return size


def words(value: Any, path: str) -> tuple[str, ...]:
    """A command: a list of strings, or a string split like a shell would.
    A ``{{ name }}`` placeholder stays inside its word (its spaces are not
    word breaks), and its value is substituted into that one word later."""
    if isinstance(value, str):
        try:
            words = shlex.split(PLACEHOLDER_RE.sub(lambda m: "{{" + m.group(1).strip() + "}}", value))
        except ValueError as exc:
            raise Invalid(path, f"cannot split into words: {exc}") from exc
    else:
        words = [string(w, at(path, i), empty=True) for i, w in enumerate(sequence(value, path))]
    if not words:
        raise Invalid(path, "must not be empty")
    return tuple(words)


def unknown_keys(
    data: Mapping[Any, Any],
    allowed: Sequence[str],
    path: str,
    refused: Mapping[str, str] | None = None,
    extensions: bool = False,
) -> list[Invalid]:
    """Every key that is not allowed, each with its reason."""
    problems: list[Invalid] = []
    for key in data:
        if not isinstance(key, str):
            problems.append(Invalid(path or "top level", f"key {key!r} is not a string"))
        elif extensions and key.startswith("x-"):
            continue  # Compose-style extension field, e.g. a block of anchors
        elif refused and key in refused:
            problems.append(Invalid(at(path, key), refused[key]))
        elif key not in allowed:
            close = difflib.get_close_matches(key, allowed, n=1)
            hint = f" (did you mean {close[0]}?)" if close else f" (known: {', '.join(allowed)})"
            problems.append(Invalid(at(path, key), f"unknown key{hint}"))
    return problems


def require_known(
    data: Mapping[Any, Any], allowed: Sequence[str], path: str, refused: Mapping[str, str] | None = None
) -> None:
    problems = unknown_keys(data, allowed, path, refused)
    if problems:
        raise problems[0]


def text_value(value: Any, where: str) -> str:
    """An environment or label value: text, or a whole number YAML read."""
    if isinstance(value, bool):
        raise Invalid(where, "quote it: YAML reads yes/no/true/false as a boolean, and the app wants text")
    if isinstance(value, float):
        raise Invalid(where, "quote it: YAML reads a value like 1.10 as the number 1.1")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, dict):
        raise Invalid(where, 'quote it: YAML reads a value starting with { (such as "{{ name }}") as a mapping')
    return string(value, where, empty=True)

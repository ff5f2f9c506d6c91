"""Settings at install time: checking the owner's answers, making secrets,
and substituting ``{{ name }}`` placeholders into an app (`render`)."""

from __future__ import annotations

import logging
import re
import secrets
from collections.abc import Callable, Mapping
from dataclasses import replace
from types import MappingProxyType
from typing import Any

from bot.catalog.errors import Invalid, SettingError
from bot.catalog.fields import parse_limits
from bot.catalog.model import LIMIT_KEYS, PLACEHOLDER_RE, App, Limits, Setting, SettingValue, compiled

log = logging.getLogger(__name__)

MAX_SETTING_TEXT = 1000


def generate_secret() -> str:
    """A random secret: 32 URL-safe characters (192 bits), safe inside URLs,
    environment values and shell words."""
    return secrets.token_urlsafe(24)


_DOMAIN_LABEL_RE = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_EMAIL_LOCAL_RE = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*$")
_BOOL_WORDS = {"yes": True, "true": True, "on": True, "no": False, "false": False, "off": False}


def _is_domain(text: str) -> bool:
    labels = text.split(".")
    return (
        len(text) <= 253
        and len(labels) >= 2
        and all(_DOMAIN_LABEL_RE.match(label) for label in labels)
        and not labels[-1].isdigit()  # 10.0.0.1 is an address, not a domain
    )


def _as_int(text: str, shown: str) -> int:
    if not re.fullmatch(r"-?\d{1,18}", text):
        raise ValueError(f"{shown} is not a whole number")
    return int(text)


def _as_bool(text: str, shown: str) -> bool:
    if text.lower() not in _BOOL_WORDS:
        raise ValueError(f"{shown}: answer yes or no")
    return _BOOL_WORDS[text.lower()]


def _as_port(text: str, shown: str) -> int:
    if not re.fullmatch(r"\d{1,5}", text) or not 1 <= int(text) <= 65535:
        raise ValueError(f"{shown} is not a port number (1-65535)")
    return int(text)


def _as_domain(text: str, shown: str) -> str:
    text = text.lower().rstrip(".")
    if not _is_domain(text):
        raise ValueError(f"{shown} is not a domain name (e.g. blog.example.org)")
    return text


def _as_email(text: str, shown: str) -> str:
    local, at, domain = text.rpartition("@")
    if not at or len(local) > 64 or not _EMAIL_LOCAL_RE.match(local) or not _is_domain(domain.lower()):
        raise ValueError(f"{shown} is not an email address (e.g. me@example.org)")
    return text


# One converter per setting type (model.SETTING_TYPES); each gets the
# stripped text and how to show it in an error (never a secret's value).
_CONVERTERS: dict[str, Callable[[str, str], SettingValue]] = {
    "string": lambda text, shown: text,
    "int": _as_int,
    "bool": _as_bool,
    "port": _as_port,
    "domain": _as_domain,
    "email": _as_email,
}


def validate_setting(setting: Setting, raw: str) -> SettingValue:
    """Check an owner's answer for `setting` and return its typed value;
    SettingError with a reason fit for chat otherwise. A secret's value is
    never repeated in the reason."""
    text = raw.strip()
    shown = "the value" if setting.masked else repr(text)
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in text):
        raise SettingError(setting.name, "control characters (such as line breaks) are not allowed")
    if len(text) > MAX_SETTING_TEXT:
        raise SettingError(setting.name, f"at most {MAX_SETTING_TEXT} characters")
    if not text and setting.type != "string":
        raise SettingError(setting.name, "a value is needed")
    try:
        value = _CONVERTERS[setting.type](text, shown)
    except ValueError as exc:
        raise SettingError(setting.name, str(exc)) from None
    checked = value if isinstance(value, str) else text
    if setting.pattern is not None and not compiled(setting.pattern).fullmatch(checked):
        raise SettingError(setting.name, f"must match {setting.pattern}")
    return value


def format_value(value: SettingValue) -> str:
    """A setting value as it is substituted: booleans as true/false."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def missing_settings(app: App, given: Mapping[str, Any]) -> list[Setting]:
    """The settings still to ask the owner, in the order of the file."""
    return [s for s in app.settings if s.asked and s.name not in given]


def resolve_values(app: App, given: Mapping[str, Any]) -> dict[str, SettingValue]:
    """Every setting's value: given (validated), else default, else a fresh
    secret for `secret: generate`. SettingError for an unknown name, a bad
    value or a setting nobody answered."""
    known = {s.name for s in app.settings}
    for name in given:
        if name not in known:
            choices = ", ".join(sorted(known)) or "none"
            raise SettingError(name, f"{app.name} has no such setting (its settings: {choices})")
    values: dict[str, SettingValue] = {}
    for setting in app.settings:
        if setting.name in given:
            raw = given[setting.name]
            values[setting.name] = validate_setting(setting, raw if isinstance(raw, str) else format_value(raw))
        elif setting.generated:
            values[setting.name] = generate_secret()
        elif setting.default is not None:
            values[setting.name] = setting.default
        else:
            raise SettingError(setting.name, "no value given and no default")
    return values


def render(app: App, values: Mapping[str, SettingValue]) -> App:
    """`app` with every `{{ name }}` replaced by its value, ready to run.
    Values are substituted after commands are split into words, so a value
    with spaces stays one argument."""
    missing = [s.name for s in app.settings if s.name not in values]
    if missing:
        raise SettingError(missing[0], "no value")
    text = {name: format_value(values[name]) for name in values}

    def sub(s: str) -> str:
        return PLACEHOLDER_RE.sub(lambda m: text[m.group(1).strip()], s)

    def sub_all(items: tuple[str, ...] | None) -> tuple[str, ...] | None:
        return None if items is None else tuple(sub(i) for i in items)

    services = []
    for svc in app.services:
        health = svc.healthcheck
        services.append(
            replace(
                svc,
                command=sub_all(svc.command),
                entrypoint=sub_all(svc.entrypoint),
                environment=MappingProxyType({k: sub(v) for k, v in svc.environment.items()}),
                labels=MappingProxyType({k: sub(v) for k, v in svc.labels.items()}),
                healthcheck=None if health is None else replace(health, test=sub_all(health.test) or ()),
            )
        )
    backup = app.backup
    if backup.pre is not None:
        backup = replace(backup, pre=replace(backup.pre, command=sub_all(backup.pre.command) or ()))
    notes = None if app.notes is None else sub(app.notes)
    return replace(app, services=tuple(services), backup=backup, notes=notes)


def limits_from_words(words: Mapping[str, str]) -> Limits:
    """The owner's `limit` values (memory=512m cpus=0.5 pids=200) as Limits,
    checked with the catalog's own bounds; SettingError names the bad one."""
    typed: dict[str, Any] = {}
    for key, text in words.items():
        if key not in LIMIT_KEYS:
            raise SettingError(key, f"not a limit (use {', '.join(LIMIT_KEYS)})")
        text = text.strip()
        if key == "memory":
            typed[key] = text
        elif key == "cpus":
            try:
                typed[key] = float(text)
            except ValueError:
                raise SettingError(key, f"{text!r} is not a number of CPUs (e.g. 0.5 or 2)") from None
        else:
            if not re.fullmatch(r"\d{1,9}", text):
                raise SettingError(key, f"{text!r} is not a whole number")
            typed[key] = int(text)
    try:
        return parse_limits(typed, "limit")
    except Invalid as exc:
        raise SettingError(exc.field.removeprefix("limit."), exc.reason) from None

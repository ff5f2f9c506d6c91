"""Typed settings for homeport, read from one YAML file plus the environment.

The YAML keys are a contract with the owner: an unknown key, a value of the
wrong type or a missing required key stops homeport at start with one line
that names the file and the key, so a typo never silently falls back to a
default.
"""

from __future__ import annotations

import logging
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bot.commandkit import APP_NAME
from bot.incoming import normalise_jid
from bot.monitor.rules import HOST, HOST_ONLY_FIELDS, ThresholdPolicy, Thresholds

log = logging.getLogger(__name__)

PASSWORD_ENV = "HOMEPORT_XMPP_PASSWORD"
# local@domain without the characters RFC 7622 forbids in a local part (and
# no spaces anywhere): a malformed owner would otherwise load, and then fail
# every delivery to it at send time.
BARE_JID = re.compile(r"^[^\s\"&'/:<>@]{1,1023}@[^\s\"&'/:<>@]{1,1023}$")
DEFAULT_CATALOG = Path(__file__).resolve().parent.parent / "catalog"


class ConfigError(Exception):
    """A problem with the configuration, worded as one line for the owner."""


@dataclass(frozen=True)
class XmppConfig:
    jid: str
    password: str
    host: str | None = None
    port: int = 5222
    ca_file: Path | None = None


@dataclass(frozen=True)
class DockerConfig:
    url: str | None = None  # None: DOCKER_HOST or the standard socket
    timeout: float = 60.0  # seconds for one engine call


@dataclass(frozen=True)
class LimitsConfig:
    """Input limits that protect the bot from floods and oversized messages."""

    max_body: int = 4096
    rate_burst: int = 10  # messages a sender may send at once
    rate_per_minute: int = 30  # sustained rate after the burst


@dataclass(frozen=True)
class MonitorConfig:
    interval: float = 10.0  # seconds between samples
    thresholds: dict[str, Any] = field(default_factory=dict)  # global rule thresholds
    apps: dict[str, dict[str, Any]] = field(default_factory=dict)  # per-app overrides


@dataclass(frozen=True)
class Config:
    xmpp: XmppConfig
    owners: frozenset[str]
    docker: DockerConfig
    catalog: tuple[Path, ...]
    state_dir: Path
    limits: LimitsConfig = LimitsConfig()
    monitor: MonitorConfig = MonitorConfig()
    source: Path | None = None


# The schema: key -> (type, required). Nested dicts are sub-schemas.
_XMPP_KEYS = {
    "jid": (str, True),
    "password": (str, False),
    "password_file": (str, False),
    "host": (str, False),
    "port": (int, False),
    "ca_file": (str, False),
}
_DOCKER_KEYS = {"url": (str, False), "timeout": ((int, float), False)}
_LIMIT_KEYS = {
    "max_body": (int, False),
    "rate_burst": (int, False),
    "rate_per_minute": (int, False),
}
_MONITOR_KEYS = {
    "interval": ((int, float), False),
    "thresholds": (dict, False),
    "apps": (dict, False),
}
_TOP_KEYS = {
    "xmpp": (dict, True),
    "owners": (list, True),
    "docker": (dict, False),
    "catalog": (list, False),
    "state_dir": (str, True),
    "limits": (dict, False),
    "monitor": (dict, False),
}


def _type_name(t: Any) -> str:
    if isinstance(t, tuple):
        return " or ".join(_type_name(x) for x in t)
    return {str: "a string", int: "an integer", float: "a number", dict: "a mapping",
            list: "a list", bool: "true or false"}.get(t, t.__name__)


def _check(data: Any, schema: dict[str, tuple[Any, bool]], where: str, path: Path) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: {where or 'top level'} must be a mapping")
    for key in data:
        if key not in schema:
            known = ", ".join(sorted(schema))
            raise ConfigError(f"{path}: unknown key '{where}{key}' (known: {known})")
    for key, (typ, required) in schema.items():
        if key not in data or data[key] is None:
            if required:
                raise ConfigError(f"{path}: missing required key '{where}{key}'")
            continue
        value = data[key]
        # bool is an int in Python; a port of `true` is still a mistake.
        if isinstance(value, bool) and typ is not bool:
            raise ConfigError(f"{path}: '{where}{key}' must be {_type_name(typ)}, not {value!r}")
        if not isinstance(value, typ):
            raise ConfigError(f"{path}: '{where}{key}' must be {_type_name(typ)}, not {value!r}")
    return data


def _check_thresholds(thresholds: dict[str, Any], apps: dict[Any, Any], path: Path) -> None:
    """Alert thresholds judged by the rules themselves, one key at a time, so
    the error names the exact key (a typo must not silently keep a default)."""
    base = Thresholds()
    for key, value in thresholds.items():
        try:
            base = base.with_overrides({key: value})
        except ValueError as exc:
            raise ConfigError(f"{path}: 'monitor.thresholds.{key}': {exc}") from None
    for app, overrides in apps.items():
        where = f"monitor.apps.{app}"
        if not isinstance(app, str) or not APP_NAME.match(app):
            raise ConfigError(f"{path}: '{where}': not an app name (lowercase letters, digits, '-')")
        if app == HOST:
            raise ConfigError(f"{path}: '{where}': 'host' is reserved for host alerts; set them in monitor.thresholds")
        if not isinstance(overrides, dict):
            raise ConfigError(f"{path}: '{where}' must be a mapping of thresholds, not {overrides!r}")
        for key, value in overrides.items():
            if key in HOST_ONLY_FIELDS:
                raise ConfigError(f"{path}: '{where}.{key}': host thresholds can only be set in monitor.thresholds")
            try:
                base.with_overrides({key: value})
            except ValueError as exc:
                raise ConfigError(f"{path}: '{where}.{key}': {exc}") from None
    try:
        ThresholdPolicy.from_config(thresholds, apps)
    except ValueError as exc:  # a combination no single key shows
        raise ConfigError(f"{path}: 'monitor': {exc}") from None


def _resolve(base: Path, value: str) -> Path:
    p = Path(value).expanduser()
    return p if p.is_absolute() else (base / p)


def _read_password(x: dict[str, Any], path: Path, base: Path) -> str:
    if "password" in x and "password_file" in x:
        raise ConfigError(f"{path}: 'xmpp.password' and 'xmpp.password_file' are both set; keep one")
    if "password" in x:
        return x["password"]
    if "password_file" in x:
        pfile = _resolve(base, x["password_file"])
        try:
            text = pfile.read_text().strip()
        except OSError as exc:
            raise ConfigError(f"{path}: 'xmpp.password_file': cannot read {pfile}: {exc.strerror}") from None
        if not text:
            raise ConfigError(f"{path}: 'xmpp.password_file': {pfile} is empty")
        _warn_if_readable(pfile)
        return text
    env = os.environ.get(PASSWORD_ENV)
    if env:
        return env
    raise ConfigError(
        f"{path}: missing required key 'xmpp.password' (or 'xmpp.password_file', or env {PASSWORD_ENV})")


def _warn_if_readable(p: Path) -> None:
    try:
        mode = p.stat().st_mode
    except OSError:
        return
    if mode & (stat.S_IRGRP | stat.S_IROTH):
        log.warning("%s holds a password and is readable by other users; chmod 600 it", p)


def load(path: str | Path) -> Config:
    """Read and validate the config file; raise ConfigError with one line."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark else ""
        raise ConfigError(f"{path}: not valid YAML{where}: {getattr(exc, 'problem', exc)}") from None
    return from_dict(data, path)


def from_dict(data: Any, path: Path) -> Config:
    base = path.resolve().parent
    _check(data, _TOP_KEYS, "", path)
    x = _check(data["xmpp"], _XMPP_KEYS, "xmpp.", path)
    password = _read_password(x, path, base)
    if "password" in x:
        _warn_if_readable(path)
    jid = x["jid"]
    if not BARE_JID.match(jid):
        raise ConfigError(f"{path}: 'xmpp.jid' must be a bare JID like bot@example.org, not {jid!r}")
    port = x.get("port", 5222)
    if not 1 <= port <= 65535:
        raise ConfigError(f"{path}: 'xmpp.port' must be between 1 and 65535, not {port}")
    ca_file = _resolve(base, x["ca_file"]) if x.get("ca_file") else None
    if ca_file is not None and not ca_file.is_file():
        raise ConfigError(f"{path}: 'xmpp.ca_file': no such file {ca_file}")
    xmpp = XmppConfig(jid=normalise_jid(jid), password=password, host=x.get("host"), port=port, ca_file=ca_file)

    owners_raw = data["owners"]
    owners = set()
    for o in owners_raw:
        if not isinstance(o, str) or not BARE_JID.match(o):
            raise ConfigError(f"{path}: 'owners' entries must be bare JIDs like alice@example.org, not {o!r}")
        owners.add(normalise_jid(o))
    if not owners:
        raise ConfigError(f"{path}: 'owners' must name at least one JID")

    d = _check(data.get("docker") or {}, _DOCKER_KEYS, "docker.", path)
    docker = DockerConfig(url=d.get("url"), timeout=float(d.get("timeout", 60.0)))

    cat_raw = data.get("catalog")
    catalog: tuple[Path, ...]
    if cat_raw is None:
        catalog = (DEFAULT_CATALOG,)
    else:
        for c in cat_raw:
            if not isinstance(c, str):
                raise ConfigError(f"{path}: 'catalog' entries must be folder paths, not {c!r}")
        catalog = tuple(_resolve(base, c) for c in cat_raw)

    lim = _check(data.get("limits") or {}, _LIMIT_KEYS, "limits.", path)
    for k, v in lim.items():
        if v < 1:
            raise ConfigError(f"{path}: 'limits.{k}' must be at least 1")
    limits = LimitsConfig(**lim)

    m = _check(data.get("monitor") or {}, _MONITOR_KEYS, "monitor.", path)
    interval = float(m.get("interval", 10.0))
    if interval <= 0:
        raise ConfigError(f"{path}: 'monitor.interval' must be positive")
    _check_thresholds(m.get("thresholds") or {}, m.get("apps") or {}, path)
    monitor = MonitorConfig(interval=interval, thresholds=dict(m.get("thresholds") or {}),
                            apps={str(k): dict(v or {}) for k, v in (m.get("apps") or {}).items()})

    return Config(
        xmpp=xmpp,
        owners=frozenset(owners),
        docker=docker,
        catalog=catalog,
        state_dir=_resolve(base, data["state_dir"]),
        limits=limits,
        monitor=monitor,
        source=path,
    )

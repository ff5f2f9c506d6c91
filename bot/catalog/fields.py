"""Parsers for the compound Compose-style fields of a service (ports,
volumes, environment, health check, dependencies, capabilities, limits,
upgrade rule) and for the app's backup and alert blocks. Each takes the raw
YAML value and the field's path and returns model values or raises Invalid."""

from __future__ import annotations

import ipaddress
import logging
import posixpath
import re
from collections.abc import Mapping, Sequence
from typing import Any

from bot.catalog import readers as rd
from bot.catalog.errors import Invalid
from bot.catalog.images import ImageRef
from bot.catalog.model import (
    DEPENDENCY_CONDITIONS,
    LIMIT_KEYS,
    UPGRADE_POLICIES,
    Alerts,
    Backup,
    BackupCommand,
    Healthcheck,
    Limits,
    Port,
    UpgradeRule,
    Volume,
    derive_tag_pattern,
)
from bot.catalog.policy import (
    ALL_CAPABILITIES,
    DEFAULT_HOST_IP,
    RESERVED_LABEL_PREFIX,
    check_bind,
    check_cap_add,
    security_option,
)

log = logging.getLogger(__name__)

ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,127}$")
LABEL_KEY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,127}$")
USER_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,31}(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,31})?$")
MAX_CPUS = 512.0
MAX_PIDS = 1_000_000

HEALTHCHECK_KEYS = ("test", "interval", "timeout", "retries", "start_period")
SERVICE_UPGRADE_KEYS = ("policy", "tags")
BACKUP_KEYS = ("volumes", "stop", "pre")
BACKUP_PRE_KEYS = ("service", "command")
ALERT_KEYS = ("cpu_percent", "memory_percent", "for")
PORT_KEYS = ("target", "published", "host_ip", "protocol")
VOLUME_KEYS = ("type", "source", "target", "read_only")
DEPENDENCY_KEYS = ("condition",)


def parse_ports(value: Any, path: str) -> tuple[Port, ...]:
    return tuple(parse_port(item, rd.at(path, i)) for i, item in enumerate(rd.sequence(value, path)))


def parse_volumes(value: Any, path: str) -> tuple[Volume, ...]:
    return tuple(parse_volume(item, rd.at(path, i)) for i, item in enumerate(rd.sequence(value, path)))


def parse_port(value: Any, path: str) -> Port:
    if isinstance(value, dict):
        rd.require_known(value, PORT_KEYS, path)
        if "target" not in value:
            raise Invalid(rd.at(path, "target"), "required: the port inside the container")
        container = rd.whole(value["target"], rd.at(path, "target"), 1, 65535)
        host = value.get("published")
        if isinstance(host, str) and host.isdigit():
            host = int(host)
        host = None if host is None else rd.whole(host, rd.at(path, "published"), 1, 65535)
        ip = rd.string(value.get("host_ip", DEFAULT_HOST_IP), rd.at(path, "host_ip"))
        proto = rd.string(value.get("protocol", "tcp"), rd.at(path, "protocol"))
        return _port(container, host, ip, proto, path)
    if isinstance(value, bool):
        raise Invalid(path, 'expected a port mapping such as "127.0.0.1:8080:80"')
    if isinstance(value, int):
        return _port(rd.whole(value, path, 1, 65535), None, DEFAULT_HOST_IP, "tcp", path)
    if not isinstance(value, str):
        raise Invalid(path, f'expected a port mapping such as "127.0.0.1:8080:80", found {rd.type_name(value)}')
    text, slash, proto = value.partition("/")
    proto = proto if slash else "tcp"
    ip = DEFAULT_HOST_IP
    if text.startswith("["):
        end = text.find("]")
        if end < 0 or text[end + 1 : end + 2] != ":":
            raise Invalid(path, f"{value!r}: write an IPv6 host address as [::1]:8080:80")
        ip, parts = text[1:end], text[end + 2 :].split(":")
        if len(parts) != 2:
            raise Invalid(path, f"{value!r} is not [HOST_IP]:HOST_PORT:CONTAINER_PORT")
        parts = [ip, *parts]
    else:
        parts = text.split(":")
    if len(parts) > 3:
        raise Invalid(path, f"{value!r} is not [HOST_IP:][HOST_PORT:]CONTAINER_PORT[/PROTOCOL]")
    if any("-" in p for p in parts[-2:]):
        raise Invalid(path, f"{value!r}: port ranges are not supported; list each port")
    if len(parts) == 3:
        ip = parts[0]
    host_text = parts[-2] if len(parts) >= 2 else ""
    container_text = parts[-1]

    def number(text: str) -> int:
        if not text.isdigit() or not 1 <= int(text) <= 65535:
            raise Invalid(path, f"{value!r}: {text!r} is not a port number (1-65535)")
        return int(text)

    return _port(number(container_text), number(host_text) if host_text else None, ip, proto, path)


def _port(container: int, host: int | None, ip: str, proto: str, path: str) -> Port:
    if proto not in ("tcp", "udp"):
        raise Invalid(path, f"protocol {proto!r}: use tcp or udp")
    try:
        address = ipaddress.ip_address(ip)
    except ValueError as exc:
        raise Invalid(path, f"host address {ip!r} is not an IP address") from exc
    return Port(container=container, host=host, host_ip=str(address), protocol=proto)


def _target(value: str, path: str) -> str:
    if not value.startswith("/") or posixpath.normpath(value) != value.rstrip("/") or value == "/":
        raise Invalid(path, f"mount target {value!r} must be an absolute, normalised path other than /")
    return value.rstrip("/")


def parse_volume(value: Any, path: str) -> Volume:
    if isinstance(value, dict):
        rd.require_known(value, VOLUME_KEYS, path)
        kind = rd.string(value.get("type", "volume"), rd.at(path, "type"))
        if kind not in ("volume", "bind"):
            raise Invalid(rd.at(path, "type"), f"{kind!r}: use volume or bind (tmpfs has its own key)")
        if "source" not in value:
            raise Invalid(rd.at(path, "source"), "required: a volume name or (for bind) a host path")
        source = rd.string(value["source"], rd.at(path, "source"))
        target = rd.string(value.get("target"), rd.at(path, "target"))
        read_only = rd.boolean(value.get("read_only", False), rd.at(path, "read_only"))
        bind = kind == "bind"
        if bind != source.startswith("/"):
            raise Invalid(rd.at(path, "source"), "a bind source is an absolute host path; a volume source a name")
    else:
        text = rd.string(value, path)
        parts = text.split(":")
        if len(parts) == 1:
            raise Invalid(
                path,
                f"{text!r}: anonymous volumes are refused; name it (e.g. data:{text}) "
                "so it can be kept, backed up and purged",
            )
        if len(parts) > 3:
            raise Invalid(path, f"{text!r} is not SOURCE:TARGET[:ro]")
        mode = parts[2] if len(parts) == 3 else "rw"
        if mode not in ("ro", "rw"):
            raise Invalid(path, f"{text!r}: mount mode {mode!r} is not supported (use ro or rw)")
        source, target, read_only = parts[0], parts[1], mode == "ro"
        bind = source.startswith("/")
        if not bind and source.startswith((".", "~")):
            raise Invalid(path, f"{text!r}: relative host paths are refused; use a named volume")
    target = _target(target, path)
    if bind:
        check_bind(source, read_only, path)
    elif not rd.NAME_RE.match(source):
        raise Invalid(path, f"volume name {source!r} must start with a letter and use only a-z, 0-9 and - (at most 31)")
    return Volume(source=source, target=target, read_only=read_only, bind=bind)


_TMPFS_OPTION_RE = re.compile(r"^(?:size=\d+[kmg]?|mode=[0-7]{3,4}|uid=\d+|gid=\d+|noexec|exec|nosuid|nodev)$")


def parse_tmpfs(value: Any, path: str) -> dict[str, str]:
    items = [value] if isinstance(value, str) else rd.sequence(value, path)
    mounts: dict[str, str] = {}
    for i, item in enumerate(items):
        where = rd.at(path, i) if not isinstance(value, str) else path
        text = rd.string(item, where)
        target, _, options = text.partition(":")
        target = _target(target, where)
        for option in filter(None, options.split(",")):
            if not _TMPFS_OPTION_RE.match(option):
                raise Invalid(
                    where, f"tmpfs option {option!r} is not supported (size, mode, uid, gid, noexec, nosuid, nodev)"
                )
        if target in mounts:
            raise Invalid(where, f"{target} is mounted twice")
        mounts[target] = options
    return mounts


def parse_environment(value: Any, path: str) -> dict[str, str]:
    pairs: list[tuple[str, Any, str]] = []
    if isinstance(value, list):
        for i, item in enumerate(value):
            text = rd.string(item, rd.at(path, i))
            if "=" not in text:
                raise Invalid(
                    rd.at(path, i), f"{text!r} has no value; a bare name would copy homeport's own environment"
                )
            key, _, val = text.partition("=")
            pairs.append((key, val, rd.at(path, i)))
    else:
        for key, val in rd.mapping(value, path).items():
            pairs.append((key, val, rd.at(path, str(key))))
    env: dict[str, str] = {}
    for key, val, where in pairs:
        if not isinstance(key, str) or not ENV_NAME_RE.match(key):
            raise Invalid(where, f"{key!r} is not a valid environment variable name")
        if key in env:
            raise Invalid(where, f"{key} is set twice")
        if val is None:
            raise Invalid(where, "has no value; a bare name would copy homeport's own environment")
        env[key] = rd.text_value(val, where)
    return env


def parse_labels(value: Any, path: str) -> dict[str, str]:
    items: list[tuple[Any, Any, str]] = []
    if isinstance(value, list):
        for i, item in enumerate(value):
            key, eq, val = rd.string(item, rd.at(path, i)).partition("=")
            items.append((key, val if eq else "", rd.at(path, i)))
    else:
        items = [(k, v, rd.at(path, str(k))) for k, v in rd.mapping(value, path).items()]
    labels: dict[str, str] = {}
    for key, val, where in items:
        if not isinstance(key, str) or not LABEL_KEY_RE.match(key):
            raise Invalid(where, f"{key!r} is not a valid label name")
        if key.startswith(RESERVED_LABEL_PREFIX):
            raise Invalid(where, "labels starting with homeport. are set by homeport itself")
        labels[key] = rd.text_value(val, where)
    return labels


def parse_healthcheck(value: Any, path: str) -> Healthcheck:
    data = rd.mapping(value, path)
    rd.require_known(data, HEALTHCHECK_KEYS, path)
    if "test" not in data:
        raise Invalid(rd.at(path, "test"), "required: the command Docker runs to check health")
    raw = data["test"]
    where = rd.at(path, "test")
    if isinstance(raw, str):
        test: tuple[str, ...] = ("CMD-SHELL", rd.string(raw, where))
    else:
        words = [rd.string(w, rd.at(where, i), empty=True) for i, w in enumerate(rd.sequence(raw, where))]
        if not words or words[0] not in ("CMD", "CMD-SHELL") or len(words) < 2:
            raise Invalid(
                where, "start the list with CMD (then the command's words) or CMD-SHELL (then one shell line)"
            )
        if words[0] == "CMD-SHELL" and len(words) != 2:
            raise Invalid(where, "CMD-SHELL takes exactly one shell line")
        test = tuple(words)
    return Healthcheck(
        test=test,
        interval=rd.duration(data.get("interval", "30s"), rd.at(path, "interval")),
        timeout=rd.duration(data.get("timeout", "30s"), rd.at(path, "timeout")),
        retries=rd.whole(data.get("retries", 3), rd.at(path, "retries"), 1, 1000),
        start_period=rd.duration(data.get("start_period", "0s"), rd.at(path, "start_period"), zero=True),
    )


def parse_depends_on(value: Any, path: str) -> dict[str, str]:
    deps: dict[str, str] = {}
    if isinstance(value, list):
        for i, item in enumerate(value):
            name = rd.identifier(item, rd.at(path, i), "service")
            deps[name] = "service_started"  # Compose's meaning of the short form
        return deps
    for name, spec in rd.mapping(value, path).items():
        where = rd.at(path, str(name))
        name = rd.identifier(name, where, "service")
        spec = rd.mapping(spec if spec is not None else {}, where)
        rd.require_known(spec, DEPENDENCY_KEYS, where)
        condition = rd.string(spec.get("condition", "service_started"), rd.at(where, "condition"))
        if condition not in DEPENDENCY_CONDITIONS:
            raise Invalid(rd.at(where, "condition"), f"{condition!r}: use {' or '.join(DEPENDENCY_CONDITIONS)}")
        deps[name] = condition
    return deps


def capability(value: Any, path: str) -> str:
    name = rd.string(value, path).upper()
    name = name[4:] if name.startswith("CAP_") else name
    if name != "ALL" and name not in ALL_CAPABILITIES:
        raise Invalid(path, f"{value!r} is not a Linux capability")
    return name


def parse_capabilities(value: Any, path: str) -> tuple[str, ...]:
    """cap_drop: capability names (any, including ALL), without duplicates."""
    return tuple(dict.fromkeys(capability(x, rd.at(path, i)) for i, x in enumerate(rd.sequence(value, path))))


def parse_cap_add(value: Any, path: str) -> tuple[str, ...]:
    caps = []
    for i, item in enumerate(rd.sequence(value, path)):
        cap = capability(item, rd.at(path, i))
        check_cap_add(cap, rd.at(path, i))
        caps.append(cap)
    return tuple(dict.fromkeys(caps))


def parse_security_opt(value: Any, path: str) -> tuple[str, ...]:
    opts = [
        security_option(rd.string(item, rd.at(path, i)), rd.at(path, i))
        for i, item in enumerate(rd.sequence(value, path))
    ]
    return tuple(dict.fromkeys(opts))


def parse_limits(value: Any, path: str) -> Limits:
    data = rd.mapping(value, path)
    rd.require_known(data, LIMIT_KEYS, path)
    return Limits(
        memory=None if data.get("memory") is None else rd.size(data["memory"], rd.at(path, "memory")),
        cpus=None if data.get("cpus") is None else rd.number(data["cpus"], rd.at(path, "cpus"), 0, MAX_CPUS),
        pids=None if data.get("pids") is None else rd.whole(data["pids"], rd.at(path, "pids"), 1, MAX_PIDS),
    )


def parse_policy(data: Mapping[str, Any], path: str) -> str | None:
    if "policy" not in data:
        return None
    policy = rd.string(data["policy"], rd.at(path, "policy"))
    if policy not in UPGRADE_POLICIES:
        raise Invalid(rd.at(path, "policy"), f"{policy!r}: use {', '.join(UPGRADE_POLICIES)}")
    return policy


def parse_upgrade(value: Any, path: str, ref: ImageRef | None, default_policy: str) -> UpgradeRule:
    data = rd.mapping(value if value is not None else {}, path)
    rd.require_known(data, SERVICE_UPGRADE_KEYS, path)
    policy = parse_policy(data, path) or default_policy
    tags: str | None
    if data.get("tags") is not None:
        tags = rd.string(data["tags"], rd.at(path, "tags"))
        try:
            compiled = re.compile(tags)
        except re.error as exc:
            raise Invalid(rd.at(path, "tags"), f"not a regular expression: {exc}") from exc
        if compiled.groups == 0:
            raise Invalid(rd.at(path, "tags"), "needs at least one (\\d+) group: the numbers that order versions")
    else:
        tags = derive_tag_pattern(ref.tag) if ref is not None and ref.tag else None
    if ref is not None and ref.tag:
        if tags is not None and UpgradeRule(policy, tags).version(ref.tag) is None:
            raise Invalid(
                rd.at(path, "tags"), f"the pinned tag {ref.tag!r} does not match {tags} with numbers in every group"
            )
    elif policy != "manual" and ref is not None:
        raise Invalid(
            rd.at(path, "policy"), "an image pinned by digest only has no tags to compare; use policy: manual"
        )
    return UpgradeRule(policy=policy, tags=tags)


def parse_user(value: Any, path: str) -> str:
    text = rd.text_value(value, path)
    if not USER_RE.match(text):
        raise Invalid(path, f"{text!r} is not USER or USER:GROUP (names or numeric ids)")
    return text


def parse_backup(value: Any, path: str, volumes: Sequence[str], services: Sequence[str]) -> Backup:
    data = rd.mapping(value, path)
    rd.require_known(data, BACKUP_KEYS, path)
    chosen: tuple[str, ...] = tuple(volumes)
    if data.get("volumes") is not None:
        names = []
        for i, item in enumerate(rd.sequence(data["volumes"], rd.at(path, "volumes"))):
            name = rd.identifier(item, rd.at(rd.at(path, "volumes"), i), "volume")
            if name not in volumes:
                raise Invalid(
                    rd.at(rd.at(path, "volumes"), i),
                    f"{name!r} is not a named volume of this app ({', '.join(volumes) or 'it has none'})",
                )
            names.append(name)
        chosen = tuple(dict.fromkeys(names))
    stop = rd.boolean(data.get("stop", True), rd.at(path, "stop"))
    pre = None
    if data.get("pre") is not None:
        where = rd.at(path, "pre")
        spec = rd.mapping(data["pre"], where)
        rd.require_known(spec, BACKUP_PRE_KEYS, where)
        service = rd.identifier(spec.get("service"), rd.at(where, "service"), "service")
        if service not in services:
            raise Invalid(rd.at(where, "service"), f"{service!r} is not a service of this app ({', '.join(services)})")
        pre = BackupCommand(service=service, command=rd.words(spec.get("command"), rd.at(where, "command")))
    return Backup(volumes=chosen, stop=stop, pre=pre)


def parse_alerts(value: Any, path: str) -> Alerts:
    data = rd.mapping(value, path)
    rd.require_known(data, ALERT_KEYS, path)
    if not data:
        raise Invalid(path, "empty: set cpu_percent, memory_percent or for, or leave alerts out")
    return Alerts(
        cpu_percent=None
        if data.get("cpu_percent") is None
        else rd.number(data["cpu_percent"], rd.at(path, "cpu_percent"), 0, 100 * MAX_CPUS),
        memory_percent=None
        if data.get("memory_percent") is None
        else rd.number(data["memory_percent"], rd.at(path, "memory_percent"), 0, 100),
        duration=None if data.get("for") is None else rd.duration(data["for"], rd.at(path, "for")),
    )

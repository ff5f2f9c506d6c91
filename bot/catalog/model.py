"""The catalog's data model: frozen dataclasses for an app, its services and
what surrounds them, and their JSON form (`App.to_dict` / `App.from_dict`)
so an installed app's record can hold the entry exactly as it was used."""

from __future__ import annotations

import functools
import ipaddress
import logging
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from bot.catalog.images import ImageRef, parse_image
from bot.catalog.policy import DEFAULT_HOST_IP

log = logging.getLogger(__name__)

SettingValue = str | int | bool

SETTING_TYPES = ("string", "int", "bool", "domain", "email", "port")
SECRET_KINDS = ("generate", "ask")
UPGRADE_POLICIES = ("notify", "auto", "manual")
DEPENDENCY_CONDITIONS = ("service_started", "service_healthy")
LIMIT_KEYS = ("memory", "cpus", "pids")
# {{ name }}: where a setting's value goes (environment, commands, labels,
# health checks, backup command, notes).
PLACEHOLDER_RE = re.compile(r"\{\{(.*?)\}\}")


@functools.lru_cache(maxsize=256)
def compiled(pattern: str) -> re.Pattern[str]:
    """re.compile, remembered: tag rules and setting patterns are reused."""
    return re.compile(pattern)


def seconds_text(seconds: float) -> str:
    """A duration as the catalog writes it (parse_duration reads it back)."""
    return f"{int(seconds)}s"


@dataclass(frozen=True)
class Port:
    """A published port. `host` None lets Docker pick a free host port."""

    container: int
    host: int | None = None
    host_ip: str = DEFAULT_HOST_IP
    protocol: str = "tcp"

    def spec(self) -> str:
        """Compose short syntax, always with the host IP spelled out."""
        ip = f"[{self.host_ip}]" if ":" in self.host_ip else self.host_ip
        return f"{ip}:{self.host if self.host is not None else ''}:{self.container}/{self.protocol}"

    @property
    def public(self) -> bool:
        """Reachable from other machines (not bound to loopback)."""
        return not ipaddress.ip_address(self.host_ip).is_loopback


@dataclass(frozen=True)
class Volume:
    """A mount: a named volume of the app (`bind` False) or a read-only host
    folder (`bind` True, `source` an absolute host path)."""

    source: str
    target: str
    read_only: bool = False
    bind: bool = False

    def spec(self) -> str:
        return f"{self.source}:{self.target}" + (":ro" if self.read_only else "")


@dataclass(frozen=True)
class Healthcheck:
    """Docker's health check; durations in seconds."""

    test: tuple[str, ...]
    interval: float = 30.0
    timeout: float = 30.0
    retries: int = 3
    start_period: float = 0.0


@dataclass(frozen=True)
class Limits:
    """Per-container resource limits; memory in bytes, cpus in cores."""

    memory: int | None = None
    cpus: float | None = None
    pids: int | None = None

    def merged_over(self, default: Limits) -> Limits:
        """These limits, with the unset ones taken from `default`."""
        return Limits(
            memory=self.memory if self.memory is not None else default.memory,
            cpus=self.cpus if self.cpus is not None else default.cpus,
            pids=self.pids if self.pids is not None else default.pids,
        )


@dataclass(frozen=True)
class UpgradeRule:
    """Which tags of a service's image count as upgrades, and what to do.

    `tags` is a regular expression a candidate tag must match in full; its
    capture groups, read as integers left to right, order the versions
    (``^17\\.(\\d+)-alpine$`` accepts 17.7-alpine over 17.6-alpine and never
    18.0-alpine). `policy`: notify (ask the owner), auto (upgrade without
    asking) or manual (never look).
    """

    policy: str = "notify"
    tags: str | None = None

    def version(self, tag: str) -> tuple[int, ...] | None:
        """The sort key of `tag`, or None when it is not a candidate."""
        if self.tags is None:
            return None
        match = compiled(self.tags).fullmatch(tag)
        if match is None:
            return None
        groups = [g for g in match.groups() if g is not None]
        if not groups or not all(g.isdigit() for g in groups):
            return None
        return tuple(int(g) for g in groups)

    def is_newer(self, candidate: str, current: str) -> bool:
        new, old = self.version(candidate), self.version(current)
        return new is not None and old is not None and new > old

    def newest(self, candidates: Iterable[str], current: str) -> str | None:
        """The highest candidate newer than `current`, if any."""
        newer = [t for t in candidates if self.is_newer(t, current)]
        return max(newer, key=lambda t: self.version(t) or ()) if newer else None


def derive_tag_pattern(tag: str) -> str | None:
    """The default `tags` rule: the pinned tag's own shape, every number a
    version field (``1.22.6-rootless`` → ``^(\\d+)\\.(\\d+)\\.(\\d+)\\-rootless$``)."""
    pieces = re.split(r"(\d+)", tag)
    if len(pieces) == 1:
        return None
    return "^" + "".join(r"(\d+)" if i % 2 else re.escape(p) for i, p in enumerate(pieces)) + "$"


@dataclass(frozen=True)
class Service:
    """One container of an app."""

    name: str
    image: str
    command: tuple[str, ...] | None = None
    entrypoint: tuple[str, ...] | None = None
    environment: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    ports: tuple[Port, ...] = ()
    volumes: tuple[Volume, ...] = ()
    tmpfs: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    healthcheck: Healthcheck | None = None
    depends_on: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    user: str | None = None
    read_only: bool = False
    cap_drop: tuple[str, ...] = ()
    cap_add: tuple[str, ...] = ()
    security_opt: tuple[str, ...] = ()
    labels: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    limits: Limits = Limits()
    upgrade: UpgradeRule = UpgradeRule()
    stop_grace_period: float | None = None

    @property
    def image_ref(self) -> ImageRef:
        return parse_image(self.image)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"image": self.image}
        if self.command is not None:
            out["command"] = list(self.command)
        if self.entrypoint is not None:
            out["entrypoint"] = list(self.entrypoint)
        if self.environment:
            out["environment"] = dict(self.environment)
        if self.ports:
            out["ports"] = [p.spec() for p in self.ports]
        if self.volumes:
            out["volumes"] = [v.spec() for v in self.volumes]
        if self.tmpfs:
            out["tmpfs"] = [f"{path}:{opts}" if opts else path for path, opts in self.tmpfs.items()]
        if self.healthcheck is not None:
            h = self.healthcheck
            out["healthcheck"] = {
                "test": list(h.test),
                "interval": seconds_text(h.interval),
                "timeout": seconds_text(h.timeout),
                "retries": h.retries,
                "start_period": seconds_text(h.start_period),
            }
        if self.depends_on:
            out["depends_on"] = {name: {"condition": cond} for name, cond in self.depends_on.items()}
        if self.user is not None:
            out["user"] = self.user
        if self.read_only:
            out["read_only"] = True
        for key in ("cap_drop", "cap_add", "security_opt"):
            if getattr(self, key):
                out[key] = list(getattr(self, key))
        if self.labels:
            out["labels"] = dict(self.labels)
        limits = {k: getattr(self.limits, k) for k in LIMIT_KEYS if getattr(self.limits, k) is not None}
        if limits:
            out["limits"] = limits
        out["upgrade"] = {"policy": self.upgrade.policy}
        if self.upgrade.tags is not None:
            out["upgrade"]["tags"] = self.upgrade.tags
        if self.stop_grace_period is not None:
            out["stop_grace_period"] = seconds_text(self.stop_grace_period)
        return out


@dataclass(frozen=True)
class Setting:
    """A value the owner supplies (or homeport generates) at install.

    `secret`: None (plain), "generate" (a random value made at install, never
    asked and never shown) or "ask" (the owner types it; masked afterwards).
    """

    name: str
    prompt: str = ""
    type: str = "string"
    default: SettingValue | None = None
    pattern: str | None = None
    secret: str | None = None

    @property
    def generated(self) -> bool:
        return self.secret == "generate"

    @property
    def masked(self) -> bool:
        """Never echoed in chat, shown as ****** by `config`."""
        return self.secret is not None

    @property
    def asked(self) -> bool:
        """Must be answered when not given on the install line."""
        return self.default is None and not self.generated

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name}
        if self.prompt:
            out["prompt"] = self.prompt
        out["type"] = self.type
        for key in ("default", "pattern", "secret"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        return out


@dataclass(frozen=True)
class BackupCommand:
    """A command run (exec) in a running service before volumes are copied,
    e.g. a database dump into one of the backed-up volumes."""

    service: str
    command: tuple[str, ...]


@dataclass(frozen=True)
class Backup:
    """What the backups issue copies: these named volumes; with `stop` the
    app is stopped during the copy (consistent files, short downtime)."""

    volumes: tuple[str, ...] = ()
    stop: bool = True
    pre: BackupCommand | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"volumes": list(self.volumes), "stop": self.stop}
        if self.pre is not None:
            out["pre"] = {"service": self.pre.service, "command": list(self.pre.command)}
        return out


@dataclass(frozen=True)
class Alerts:
    """Per-app thresholds overriding the global ones; None = use global.
    cpu_percent as `docker stats` shows it (100 = one core), memory_percent
    of the container's memory limit, `duration` (YAML `for`) in seconds."""

    cpu_percent: float | None = None
    memory_percent: float | None = None
    duration: float | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.cpu_percent is not None:
            out["cpu_percent"] = self.cpu_percent
        if self.memory_percent is not None:
            out["memory_percent"] = self.memory_percent
        if self.duration is not None:
            out["for"] = seconds_text(self.duration)
        return out


@dataclass(frozen=True)
class App:
    """An installable app: one or more services and what surrounds them.
    `source` (the file it came from) takes no part in equality."""

    name: str
    description: str
    services: tuple[Service, ...]
    settings: tuple[Setting, ...] = ()
    backup: Backup = Backup()
    alerts: Alerts | None = None
    notes: str | None = None
    source: str = field(default="", compare=False)

    @property
    def main(self) -> Service:
        """The first service: the app itself, as opposed to its database."""
        return self.services[0]

    def service(self, name: str) -> Service:
        for svc in self.services:
            if svc.name == name:
                return svc
        raise KeyError(f"app {self.name} has no service {name}")

    def setting(self, name: str) -> Setting:
        for setting in self.settings:
            if setting.name == name:
                return setting
        raise KeyError(f"app {self.name} has no setting {name}")

    def start_order(self) -> tuple[Service, ...]:
        """Services with dependencies first; otherwise in file order."""
        by_name = {s.name: s for s in self.services}
        done: list[str] = []

        def visit(name: str) -> None:
            if name in done:
                return
            for dep in by_name[name].depends_on:
                visit(dep)
            done.append(name)

        for svc in self.services:
            visit(svc.name)
        return tuple(by_name[n] for n in done)

    def volume_names(self) -> tuple[str, ...]:
        """The app's named volumes, in order of first use."""
        names: list[str] = []
        for svc in self.services:
            for vol in svc.volumes:
                if not vol.bind and vol.source not in names:
                    names.append(vol.source)
        return tuple(names)

    def memory_limit(self) -> int:
        """Sum of the services' memory limits, in bytes."""
        return sum(s.limits.memory or 0 for s in self.services)

    def to_dict(self) -> dict[str, Any]:
        """The app in catalog form, plain JSON types only; `from_dict` reads
        it back into an equal App."""
        out: dict[str, Any] = {"name": self.name, "description": self.description}
        if self.notes is not None:
            out["notes"] = self.notes
        if self.settings:
            out["settings"] = [s.to_dict() for s in self.settings]
        out["services"] = {s.name: s.to_dict() for s in self.services}
        out["backup"] = self.backup.to_dict()
        if self.alerts is not None:
            out["alerts"] = self.alerts.to_dict()
        return out

    @classmethod
    def from_dict(cls, data: Any, source: str = "<record>") -> App:
        """Validate `data` exactly like a catalog file; CatalogError on the
        first problem."""
        from bot.catalog.parse import parse_app  # the parser builds Apps: import at use

        app, problems = parse_app(data, source)
        if problems:
            raise problems[0]
        assert app is not None
        return app


@dataclass(frozen=True)
class Catalog:
    """The apps of every catalog folder, later folders overriding earlier ones."""

    apps: Mapping[str, App]

    def get(self, name: str) -> App | None:
        return self.apps.get(name)

    def names(self) -> list[str]:
        return sorted(self.apps)

    def __contains__(self, name: object) -> bool:
        return name in self.apps

    def __iter__(self) -> Iterator[App]:
        return (self.apps[n] for n in self.names())

    def __len__(self) -> int:
        return len(self.apps)

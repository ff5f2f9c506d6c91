"""Validation of one app: assembles services and settings from their
fields, then checks what spans the whole app (dependencies and their cycles,
host ports used twice, placeholders naming unknown or unused settings).
Every problem is collected, so `homeport catalog check` can list them all."""

from __future__ import annotations

import ipaddress
import logging
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import replace
from types import MappingProxyType
from typing import Any, TypeVar

from bot.catalog import fields as fl
from bot.catalog import readers as rd
from bot.catalog.errors import CatalogError, Invalid, SettingError
from bot.catalog.images import ImageRef, pinned_image
from bot.catalog.model import (
    PLACEHOLDER_RE,
    SECRET_KINDS,
    SETTING_TYPES,
    Alerts,
    App,
    Backup,
    Limits,
    Port,
    Service,
    Setting,
    UpgradeRule,
)
from bot.catalog.policy import PRIVILEGED_REASON, REFUSED_APP_KEYS, REFUSED_SERVICE_KEYS
from bot.catalog.settings import format_value, validate_setting

log = logging.getLogger(__name__)

T = TypeVar("T")

APP_KEYS = ("name", "description", "notes", "services", "settings", "limits", "upgrade", "backup", "alerts")
SERVICE_KEYS = (
    "image",
    "command",
    "entrypoint",
    "environment",
    "ports",
    "volumes",
    "tmpfs",
    "healthcheck",
    "depends_on",
    "user",
    "read_only",
    "cap_drop",
    "cap_add",
    "security_opt",
    "labels",
    "limits",
    "upgrade",
    "stop_grace_period",
    "privileged",
)
SETTING_KEYS = ("name", "prompt", "type", "default", "pattern", "secret")
APP_UPGRADE_KEYS = ("policy",)
MAX_DESCRIPTION = 200


class Problems:
    """Collects the errors of one file."""

    def __init__(self, source: str, app: str | None):
        self.source = source
        self.app = app
        self.items: list[CatalogError] = []

    def add(self, problem: Invalid) -> None:
        self.items.append(CatalogError(self.source, self.app, problem.field, problem.reason))

    def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T | None:
        """fn(*args) or, when it raises Invalid, None with the problem noted."""
        try:
            return fn(*args, **kwargs)
        except Invalid as problem:
            self.add(problem)
            return None


def _parse_service(
    name: str, value: Any, path: str, app_limits: Limits, app_policy: str, problems: Problems
) -> Service | None:
    """One service, every field checked; None when anything was wrong."""
    before = len(problems.items)
    data = problems.run(rd.mapping, value, path)
    if data is None:
        return None
    for unknown in rd.unknown_keys(data, SERVICE_KEYS, path, REFUSED_SERVICE_KEYS, extensions=True):
        problems.add(unknown)
    if data.get("privileged", False) is not False:
        problems.add(Invalid(rd.at(path, "privileged"), PRIVILEGED_REASON))
    if "image" not in data:
        problems.add(Invalid(rd.at(path, "image"), "required: the image to run, with a pinned version"))

    def get(key: str, parse: Callable[..., T], *args: Any) -> T | None:
        if key not in data or data[key] is None:
            return None
        return problems.run(parse, data[key], rd.at(path, key), *args)

    def image(value: Any, where: str) -> ImageRef:
        try:
            return pinned_image(rd.string(value, where))
        except ValueError as exc:
            raise Invalid(where, str(exc)) from exc

    ref = get("image", image)
    ports = get("ports", fl.parse_ports)
    volumes = get("volumes", fl.parse_volumes)
    tmpfs = get("tmpfs", fl.parse_tmpfs)
    own_limits = get("limits", fl.parse_limits)
    limits = (own_limits or Limits()).merged_over(app_limits)
    if limits.memory is None and not (data.get("limits") is not None and own_limits is None):
        problems.add(
            Invalid(
                rd.at(path, "limits.memory"),
                "required (here or in the app's limits) so one app cannot starve the server",
            )
        )
    upgrade = problems.run(fl.parse_upgrade, data.get("upgrade"), rd.at(path, "upgrade"), ref, app_policy)
    cap_drop = get("cap_drop", fl.parse_capabilities)

    mounted = [v.target for v in volumes or ()] + list(tmpfs or {})
    for target in {t for t in mounted if mounted.count(t) > 1}:
        problems.add(Invalid(rd.at(path, "volumes"), f"{target} is mounted twice"))

    service = Service(
        name=name,
        image=ref.text if ref else "",
        command=get("command", rd.words),
        entrypoint=get("entrypoint", rd.words),
        environment=MappingProxyType(get("environment", fl.parse_environment) or {}),
        ports=ports or (),
        volumes=volumes or (),
        tmpfs=MappingProxyType(tmpfs or {}),
        healthcheck=get("healthcheck", fl.parse_healthcheck),
        depends_on=MappingProxyType(get("depends_on", fl.parse_depends_on) or {}),
        user=get("user", fl.parse_user),
        read_only=get("read_only", rd.boolean) or False,
        cap_drop=cap_drop or (),
        cap_add=get("cap_add", fl.parse_cap_add) or (),
        security_opt=get("security_opt", fl.parse_security_opt) or (),
        labels=MappingProxyType(get("labels", fl.parse_labels) or {}),
        limits=limits,
        upgrade=upgrade or UpgradeRule(),
        stop_grace_period=get("stop_grace_period", rd.duration),
    )
    return service if len(problems.items) == before else None


def _parse_setting(value: Any, path: str, problems: Problems) -> Setting | None:
    before = len(problems.items)
    data = problems.run(rd.mapping, value, path)
    if data is None:
        return None
    name = problems.run(
        lambda: rd.identifier(
            rd.required(data, "name", path, "the name used in {{ }}"),
            rd.at(path, "name"),
            "setting",
            rd.SETTING_NAME_RE,
        )
    )
    if name is not None:
        path = f"settings.{name}"
    for unknown in rd.unknown_keys(data, SETTING_KEYS, path):
        problems.add(unknown)
    kind = problems.run(rd.string, data.get("type", "string"), rd.at(path, "type"))
    if kind is not None and kind not in SETTING_TYPES:
        problems.add(Invalid(rd.at(path, "type"), f"{kind!r}: use one of {', '.join(SETTING_TYPES)}"))
    secret = None
    if data.get("secret") is not None:
        secret = problems.run(rd.string, data["secret"], rd.at(path, "secret"))
        if secret is not None and secret not in SECRET_KINDS:
            problems.add(
                Invalid(
                    rd.at(path, "secret"), f"{secret!r}: use generate (homeport makes it) or ask (the owner types it)"
                )
            )
    prompt = ""
    if secret != "generate" or "prompt" in data:
        prompt = (
            problems.run(
                lambda: rd.string(
                    rd.required(data, "prompt", path, "the question asked in chat"), rd.at(path, "prompt")
                )
            )
            or ""
        )
    pattern = None
    if data.get("pattern") is not None:
        pattern = problems.run(rd.string, data["pattern"], rd.at(path, "pattern"))
        if pattern is not None:
            try:
                re.compile(pattern)
            except re.error as exc:
                problems.add(Invalid(rd.at(path, "pattern"), f"not a regular expression: {exc}"))
    if len(problems.items) != before or name is None:
        return None
    setting = Setting(name=name, prompt=prompt.strip(), type=kind or "string", pattern=pattern, secret=secret)
    if secret == "generate":
        if "default" in data:
            problems.add(Invalid(rd.at(path, "default"), "a generated secret has no default"))
        if setting.type != "string":
            problems.add(Invalid(rd.at(path, "type"), "a generated secret is a string"))
        if pattern is not None:
            problems.add(Invalid(rd.at(path, "pattern"), "a generated secret has no pattern: homeport makes it"))
    elif data.get("default") is not None:
        raw = data["default"]
        where = rd.at(path, "default")
        if not isinstance(raw, (str, int, bool)):
            problems.add(Invalid(where, f"expected a string, number or boolean, found {rd.type_name(raw)}"))
        else:
            try:
                default = validate_setting(setting, raw if isinstance(raw, str) else format_value(raw))
            except SettingError as exc:
                problems.add(Invalid(where, exc.reason))
            else:
                setting = replace(setting, default=default)
    return setting if len(problems.items) == before else None


def _templated(app_services: Sequence[Service], backup: Backup | None, notes: str | None) -> Iterator[tuple[str, str]]:
    """(field path, text) of every string where {{ }} placeholders may appear."""
    for svc in app_services:
        base = f"services.{svc.name}"
        for key, words in (("command", svc.command), ("entrypoint", svc.entrypoint)):
            for i, word in enumerate(words or ()):
                yield f"{base}.{key}[{i}]", word
        for name, val in svc.environment.items():
            yield f"{base}.environment.{name}", val
        for name, val in svc.labels.items():
            yield f"{base}.labels.{name}", val
        if svc.healthcheck is not None:
            for i, word in enumerate(svc.healthcheck.test):
                yield f"{base}.healthcheck.test[{i}]", word
    if backup is not None and backup.pre is not None:
        for i, word in enumerate(backup.pre.command):
            yield f"backup.pre.command[{i}]", word
    if notes is not None:
        yield "notes", notes


def _check_placeholders(templated: Iterable[tuple[str, str]], settings: Sequence[Setting], problems: Problems) -> None:
    by_name = {s.name: s for s in settings}
    used: set[str] = set()
    for where, text in templated:
        for match in PLACEHOLDER_RE.finditer(text):
            name = match.group(1).strip()
            if name not in by_name:
                known = ", ".join(by_name) or "none"
                problems.add(Invalid(where, f"unknown placeholder {match.group(0)} (settings: {known})"))
            elif where == "notes" and by_name[name].masked:
                problems.add(Invalid(where, f"{match.group(0)} is a secret: notes are shown in chat"))
            used.add(name)
        rest = PLACEHOLDER_RE.sub("", text)
        if "{{" in rest or "}}" in rest:
            problems.add(Invalid(where, "unbalanced {{ }}: placeholders are written {{ name }}"))
    for name in by_name:
        if name not in used:
            problems.add(
                Invalid(
                    f"settings.{name}",
                    "never used: put {{ " + name + " }} where the app needs it, or remove the setting",
                )
            )


def _check_dependencies(services: Mapping[str, Service], problems: Problems) -> None:
    for svc in services.values():
        for dep, condition in svc.depends_on.items():
            where = f"services.{svc.name}.depends_on.{dep}"
            if dep not in services:
                problems.add(Invalid(where, f"unknown service {dep!r} (services: {', '.join(services)})"))
            elif condition == "service_healthy" and services[dep].healthcheck is None:
                problems.add(Invalid(where, f"service_healthy needs a healthcheck on {dep}"))
    # A cycle would leave nothing to start first.
    finished: set[str] = set()

    def cycle_from(name: str, trail: list[str]) -> list[str] | None:
        trail = trail + [name]
        for dep in services[name].depends_on:
            if dep in trail:
                return trail[trail.index(dep) :] + [dep]
            if dep in services and dep not in finished:
                found = cycle_from(dep, trail)
                if found:
                    return found
        finished.add(name)
        return None

    for name in services:
        cycle = cycle_from(name, []) if name not in finished else None
        if cycle:
            problems.add(Invalid(f"services.{cycle[0]}.depends_on", f"dependency cycle: {' -> '.join(cycle)}"))
            return


def _check_ports(services: Sequence[Service], problems: Problems) -> None:
    taken: list[tuple[Port, str]] = []
    for svc in services:
        for i, port in enumerate(svc.ports):
            if port.host is None:
                continue
            where = f"services.{svc.name}.ports[{i}]"
            for other, other_where in taken:
                unspecified = (
                    ipaddress.ip_address(port.host_ip).is_unspecified
                    or ipaddress.ip_address(other.host_ip).is_unspecified
                )
                if (other.host, other.protocol) == (port.host, port.protocol) and (
                    other.host_ip == port.host_ip or unspecified
                ):
                    problems.add(
                        Invalid(where, f"host port {port.host}/{port.protocol} is already used by {other_where}")
                    )
                    break
            taken.append((port, where))


def _parse_header(
    data: Mapping[str, Any], expected_name: str | None, problems: Problems
) -> tuple[str | None, str | None, str | None]:
    """name, description and notes."""
    name = problems.run(lambda: rd.identifier(rd.required(data, "name", "", "the app's name"), "name", "app name"))
    if name is not None:
        if expected_name is not None and name != expected_name:
            problems.add(Invalid("name", f"{name!r} differs from the file name: name the file {name}.yaml"))
        problems.app = name
    description = problems.run(
        lambda: rd.string(rd.required(data, "description", "", "one line saying what the app is"), "description")
    )
    if description is not None:
        description = " ".join(description.split())
        if len(description) > MAX_DESCRIPTION:
            problems.add(Invalid("description", f"at most {MAX_DESCRIPTION} characters: it is one line in `apps`"))
    notes = None
    if data.get("notes") is not None:
        notes = problems.run(rd.string, data["notes"], "notes")
    return name, description, notes.strip() if notes is not None else None


def _app_upgrade_policy(value: Any, path: str) -> str:
    spec = rd.mapping(value, path)
    rd.require_known(
        spec, APP_UPGRADE_KEYS, path, {"tags": "tags belong in a service's upgrade block: they describe one image"}
    )
    return fl.parse_policy(spec, path) or "notify"


def _parse_settings(value: Any, problems: Problems) -> list[Setting] | None:
    """The settings in file order; None when any is wrong."""
    raw_settings = problems.run(rd.sequence, value, "settings")
    if raw_settings is None:
        return None
    settings: list[Setting] = []
    ok = True
    for i, raw in enumerate(raw_settings):
        setting = _parse_setting(raw, f"settings[{i}]", problems)
        if setting is None:
            ok = False
        elif any(s.name == setting.name for s in settings):
            problems.add(Invalid(f"settings.{setting.name}", "defined twice"))
            ok = False
        else:
            settings.append(setting)
    return settings if ok else None


def _parse_services(
    data: Mapping[str, Any], app_limits: Limits, app_policy: str, problems: Problems
) -> dict[str, Service] | None:
    """The services in file order; None when any is wrong."""
    raw_services = problems.run(
        lambda: rd.mapping(rd.required(data, "services", "", "at least one service"), "services")
    )
    if raw_services is None:
        return None
    if not raw_services:
        problems.add(Invalid("services", "an app needs at least one service"))
        return None
    services: dict[str, Service] = {}
    ok = True
    for key, raw in raw_services.items():
        if isinstance(key, str) and key.startswith("x-"):
            continue  # an extension block (anchors), as at the top level
        name = problems.run(rd.identifier, key, f"services.{key}", "service name")
        svc = None if name is None else _parse_service(name, raw, f"services.{name}", app_limits, app_policy, problems)
        if name is None or svc is None:
            ok = False
        else:
            services[name] = svc
    return services if ok else None


def parse_app(data: Any, source: str, expected_name: str | None = None) -> tuple[App | None, list[CatalogError]]:
    """Validate one app's data (a catalog file's content or a to_dict()
    result). Returns the App, or None with every problem found."""
    problems = Problems(source, expected_name)
    if not isinstance(data, dict):
        problems.add(Invalid("", f"a catalog file is a mapping of keys, found {rd.type_name(data)}"))
        return None, problems.items
    name, description, notes = _parse_header(data, expected_name, problems)
    for unknown in rd.unknown_keys(data, APP_KEYS, "", REFUSED_APP_KEYS, extensions=True):
        problems.add(unknown)

    # App-level limits and upgrade policy are defaults for every service.
    app_limits = Limits()
    if data.get("limits") is not None:
        app_limits = problems.run(fl.parse_limits, data["limits"], "limits") or Limits()
    app_policy = "notify"
    if data.get("upgrade") is not None:
        app_policy = problems.run(_app_upgrade_policy, data["upgrade"], "upgrade") or "notify"

    settings = _parse_settings(data["settings"], problems) if data.get("settings") is not None else []
    services = _parse_services(data, app_limits, app_policy, problems)

    backup: Backup | None = None
    alerts: Alerts | None = None
    if data.get("alerts") is not None:
        alerts = problems.run(fl.parse_alerts, data["alerts"], "alerts")
    # What follows refers to services by name: checked only once they parsed,
    # so one broken service does not cause a cascade of follow-up errors.
    if services is not None:
        volume_names = tuple(dict.fromkeys(v.source for s in services.values() for v in s.volumes if not v.bind))
        backup = Backup(volumes=volume_names)
        if data.get("backup") is not None:
            backup = problems.run(fl.parse_backup, data["backup"], "backup", volume_names, list(services))
        _check_dependencies(services, problems)
        _check_ports(list(services.values()), problems)
        if settings is not None:
            _check_placeholders(_templated(list(services.values()), backup, notes), settings, problems)

    if problems.items:
        return None, problems.items
    assert name is not None and description is not None and services is not None
    assert settings is not None and backup is not None
    app = App(
        name=name,
        description=description,
        services=tuple(services.values()),
        settings=tuple(settings),
        backup=backup,
        alerts=alerts,
        notes=notes,
        source=source,
    )
    return app, []

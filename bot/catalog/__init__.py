"""The app catalog: `catalog/*.yaml` files loaded, validated and turned into
frozen dataclasses for the rest of homeport.

One YAML file describes one installable app: its services (containers), the
settings the owner supplies, limits, upgrade and backup rules, and alert
thresholds. The format reuses Docker Compose's words where Compose has one;
`catalog/README.md` is the complete reference.

Validation is the point: a catalog file decides what runs on the owner's
server, so every key must be known, every value well-typed, and options that
would hand the host to a container are refused, each with one line naming the
file, the app and the field. The package, one job per module:

- `errors`: CatalogError (one line per problem) and SettingError
- `images`: image reference grammar and the pinned-version rule
- `policy`: what is refused and why (keys, capabilities, bind mounts)
- `yamlsafe`: YAML as plain data (no tags, no duplicate keys, no base-60)
- `readers`, `fields`: typed readers and Compose-style field parsers
- `parse`: one app, with the checks that span it
- `model`: the dataclasses and their JSON round trip
- `settings`: owner answers, secrets, ``{{ name }}`` substitution, `limit` values
- this module: files and folders (`load_catalog`, `scan_catalog`, `check_dirs`)
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from types import MappingProxyType

from bot.catalog.errors import CatalogError, Invalid, SettingError
from bot.catalog.images import ImageRef, parse_image, pinned_image
from bot.catalog.model import (
    Alerts,
    App,
    Backup,
    BackupCommand,
    Catalog,
    Healthcheck,
    Limits,
    Port,
    Service,
    Setting,
    SettingValue,
    UpgradeRule,
    Volume,
    derive_tag_pattern,
)
from bot.catalog.parse import Problems, parse_app
from bot.catalog.readers import NAME_RE
from bot.catalog.settings import (
    format_value,
    generate_secret,
    limits_from_words,
    missing_settings,
    render,
    resolve_values,
    validate_setting,
)
from bot.catalog.yamlsafe import load_yaml

log = logging.getLogger(__name__)

MAX_FILE_BYTES = 256 * 1024

__all__ = [
    "Alerts",
    "App",
    "Backup",
    "BackupCommand",
    "Catalog",
    "CatalogError",
    "Healthcheck",
    "ImageRef",
    "Limits",
    "Port",
    "Service",
    "Setting",
    "SettingError",
    "SettingValue",
    "UpgradeRule",
    "Volume",
    "check_dirs",
    "check_file",
    "derive_tag_pattern",
    "format_value",
    "generate_secret",
    "limits_from_words",
    "load_catalog",
    "missing_settings",
    "parse_app",
    "parse_image",
    "pinned_image",
    "read_app",
    "render",
    "resolve_values",
    "scan_catalog",
    "validate_setting",
]


def _catalog_files(folder: Path) -> list[Path]:
    return sorted([*folder.glob("*.yaml"), *folder.glob("*.yml")])


def check_file(path: Path) -> tuple[App | None, list[CatalogError]]:
    """Validate one catalog file: the App, or None with every problem."""
    source = str(path)
    stem = path.stem
    fail = Problems(source, stem)
    if not NAME_RE.match(stem):
        fail.add(
            Invalid(
                "name",
                f"file name {path.name!r}: the file is named after the app "
                "(a-z, 0-9 and -, starting with a letter) plus .yaml",
            )
        )
        return None, fail.items
    try:
        raw = path.read_bytes()
        if len(raw) > MAX_FILE_BYTES:
            raise Invalid("", f"larger than {MAX_FILE_BYTES // 1024} KiB; a catalog entry is small")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise Invalid("", f"not UTF-8 text (byte {exc.start})") from exc
        data = load_yaml(text)
    except OSError as exc:
        fail.add(Invalid("", f"cannot read: {exc.strerror or exc}"))
        return None, fail.items
    except Invalid as problem:
        fail.add(problem)
        return None, fail.items
    return parse_app(data, source, expected_name=stem)


def read_app(path: Path) -> App:
    """One catalog file as an App; CatalogError on its first problem."""
    app, problems = check_file(path)
    if problems:
        raise problems[0]
    assert app is not None
    return app


def _scan(dirs: Sequence[Path]) -> tuple[dict[str, App], list[CatalogError]]:
    apps: dict[str, App] = {}
    errors: list[CatalogError] = []
    for folder in dirs:
        folder = Path(folder)
        if not folder.is_dir():
            errors.append(CatalogError(str(folder), None, "", "catalog folder not found"))
            continue
        here: dict[str, Path] = {}
        for path in _catalog_files(folder):
            if path.stem in here:
                errors.append(
                    CatalogError(str(path), path.stem, "", f"the app is already defined by {here[path.stem]}")
                )
                continue
            here[path.stem] = path
            app, problems = check_file(path)
            errors.extend(problems)
            if app is None:
                continue
            if app.name in apps:
                log.info("catalog: %s overrides %s", path, apps[app.name].source)
            apps[app.name] = app
    return apps, errors


def load_catalog(dirs: Sequence[Path]) -> Catalog:
    """Load every catalog folder in order; an app in a later folder replaces
    the one of the same name before it. CatalogError on the first problem:
    a catalog with a broken entry is not half-loaded."""
    apps, errors = _scan(dirs)
    if errors:
        raise errors[0]
    log.info("catalog: %d apps from %s", len(apps), ", ".join(str(d) for d in dirs))
    return Catalog(apps=MappingProxyType(dict(sorted(apps.items()))))


def scan_catalog(dirs: Sequence[Path]) -> tuple[Catalog, list[CatalogError]]:
    """For the running bot: the apps whose files are valid, and every problem.

    Unlike `load_catalog`, a broken file does not stop the bot, which must
    stay reachable from chat to run the apps already installed. An app with a
    broken file in any folder is left out entirely, so that a broken
    override never silently falls back to the shipped entry it meant to
    replace."""
    apps, errors = _scan(dirs)
    broken = {Path(e.file).stem for e in errors if Path(e.file).suffix in (".yaml", ".yml")}
    for name in broken:
        if apps.pop(name, None) is not None:
            log.warning("catalog: %s left out: one of its files has problems", name)
    for error in errors:
        log.error("catalog: %s", error)
    log.info("catalog: %d apps from %s", len(apps), ", ".join(str(d) for d in dirs))
    return Catalog(apps=MappingProxyType(dict(sorted(apps.items())))), errors


def check_dirs(dirs: Sequence[Path]) -> list[str]:
    """Every problem of every catalog folder, one line each (empty: all good).
    Used by `homeport catalog check`."""
    _, errors = _scan(dirs)
    return [str(e) for e in errors]

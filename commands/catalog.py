"""Chat commands of the app catalog: apps, info, install, remove, config,
limit.

The conversation lives here: asking for settings one at a time (a wrong
answer gets the reason and the question again, `cancel` stops with nothing
created), confirmations with a code to send back, pull progress as a few
messages. The Docker work is `ctx.installer`'s (bot/installer.py), the
records are `ctx.installs`' (bot/installs.py), the catalog is `ctx.catalog`.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from bot.catalog import (
    App,
    Limits,
    Setting,
    SettingError,
    SettingValue,
    format_value,
    limits_from_words,
    resolve_values,
    validate_setting,
)
from bot.commandkit import Arg, CommandGroup, Context, UnknownApp, app_arg
from bot.durations import format_seconds_short, format_size
from bot.errors import Cancelled, HomeportError, UserError
from bot.progress import PullReporter
from bot.replies import Table, Text

log = logging.getLogger(__name__)

group = CommandGroup("catalog")

MAX_ATTEMPTS = 5  # wrong answers to one question before the install gives up
MASK = "******"
TYPE_HINTS = {
    "int": "a whole number",
    "bool": "yes or no",
    "domain": "a domain name",
    "email": "an email address",
    "port": "a port number",
}


# -- helpers -----------------------------------------------------------------

def _entry(ctx: Context, app: str) -> App:
    entry = ctx.catalog.get(app)
    if entry is None:
        problems = [e for e in ctx.catalog_problems if e.app == app or Path(e.file).stem == app]
        if problems:
            raise UserError(f"{app} cannot be installed: its catalog file has a problem: {problems[0]}")
        raise UnknownApp(app, ctx.catalog.names())
    return entry


def _installed(ctx: Context, app: str) -> Any:
    record = ctx.installs.get(app)
    if record is None:
        raise UserError(f"{app} is not installed." + (f" `install {app}` installs it." if app in ctx.catalog else ""))
    return record


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def _limits_text(limits: Limits) -> str:
    parts = []
    if limits.memory is not None:
        parts.append(f"memory {format_size(limits.memory)}")
    if limits.cpus is not None:
        parts.append(f"cpus {limits.cpus:g}")
    if limits.pids is not None:
        parts.append(f"pids {limits.pids}")
    return ", ".join(parts) or "none"


def _port_text(port: Any) -> str:
    host = port.host if port.host is not None else "(free port)"
    return f"{port.host_ip}:{host} → {port.container}/{port.protocol}"


def _forget_alerts(ctx: Context, app: str) -> None:
    """Containers we removed (a removal, an undone install) are no news:
    their alerts end silently, as after `stop`."""
    monitor = getattr(ctx.services, "monitor", None)
    if monitor is not None:
        monitor.forget(app)


def _code() -> str:
    return str(1000 + secrets.randbelow(9000))


async def _confirm(ctx: Context, question: str, word: str) -> bool:
    """Ask for an explicit confirmation: the owner must send back `word`
    followed by a fresh random number, exactly."""
    expected = f"{word} {_code()}"
    answer = await ctx.ask(f"{question} Send `{expected}` to confirm; anything else keeps everything as it is.")
    return " ".join(answer.lower().split()) == expected


# -- apps, info --------------------------------------------------------------

@group.command("apps", "The app catalog, one line each; installed apps are marked.")
async def apps(ctx: Context) -> Table:
    installed = set(ctx.installs.names())
    rows = tuple((a.name, a.description + (" — installed" if a.name in installed else "")) for a in ctx.catalog)
    title = f"Catalog ({len(rows)} apps; `info <app>` for details, `install <app>` to install):"
    if ctx.catalog_problems:
        title += f"\n({len(ctx.catalog_problems)} catalog problem(s) leave some apps out; see the bot's log)"
    return Table(rows=rows, title=title, empty="The catalog is empty.")


@group.command("info", "An app's description, services, versions, settings, ports and memory limit.",
               args=[app_arg()])
async def info(ctx: Context, app: str) -> Text:
    entry = _entry(ctx, app)
    lines = [f"{entry.name}: {entry.description}"]
    record = ctx.installs.get(app)
    if record is not None:
        lines.append(f"Installed since {_when(record.created)}.")
    lines.append("Services:")
    for svc in entry.start_order():
        deps = f" (after {', '.join(svc.depends_on)})" if svc.depends_on else ""
        lines.append(f"- {svc.name}: {svc.image}{deps}, memory {format_size(svc.limits.memory or 0)}")
    ports = [f"{svc.name} {_port_text(p)}" for svc in entry.services for p in svc.ports]
    lines.append("Ports: " + ("; ".join(ports) if ports else "none published"))
    asked = [s for s in entry.settings if s.asked]
    defaulted = [s for s in entry.settings if s.default is not None]
    generated = [s.name for s in entry.settings if s.generated]
    if asked:
        lines.append("Asks for: " + "; ".join(f"{s.name} ({s.prompt})" for s in asked))
    if defaulted:
        lines.append("Defaults (change with name=value): "
                     + ", ".join(f"{s.name}={format_value(s.default)}" for s in defaulted if s.default is not None))
    if generated:
        lines.append("Generated at install, never shown: " + ", ".join(generated))
    if not entry.settings:
        lines.append("Settings: none; installs without a question.")
    lines.append(f"Memory limit: {format_size(entry.memory_limit())} in total")
    volumes = entry.volume_names()
    if volumes:
        lines.append("Data volumes: " + ", ".join(volumes))
    return Text("\n".join(lines))


# -- install -----------------------------------------------------------------

def _question(setting: Setting) -> str:
    hint = TYPE_HINTS.get(setting.type)
    extra = [hint] if hint else []
    if setting.secret == "ask":
        extra.append("kept secret, never shown again")
    tail = f" ({'; '.join(extra)})" if extra else ""
    return f"{setting.prompt}{tail} — or `cancel`."


async def _ask_setting(ctx: Context, app: str, setting: Setting, reason: str | None) -> SettingValue:
    problem = reason
    for _ in range(MAX_ATTEMPTS):
        prefix = f"{setting.name}: {problem}. " if problem else ""
        answer = await ctx.ask(prefix + _question(setting))
        try:
            return validate_setting(setting, answer)
        except SettingError as exc:
            problem = exc.reason
    raise Cancelled(f"{MAX_ATTEMPTS} answers to one question were refused; install of {app} cancelled, "
                    "nothing was created.")


async def _settings(ctx: Context, entry: App, given: Mapping[str, str]) -> tuple[dict[str, SettingValue], list[str]]:
    """Every setting's value: from the command line, from an earlier install
    whose volumes were kept, or asked one at a time."""
    known = {s.name: s for s in entry.settings}
    for name in given:
        if name not in known:
            choices = ", ".join(known) or "none"
            raise UserError(f"{entry.name} has no setting {name} (its settings: {choices}). Nothing was installed.")
    answers: dict[str, SettingValue | str] = {}
    refused: dict[str, str] = {}
    for name, raw in given.items():
        try:
            answers[name] = validate_setting(known[name], raw)
        except SettingError as exc:
            refused[name] = exc.reason
    reused = []
    for name, value in ctx.installs.kept_settings(entry.name).items():
        if name in known and name not in answers and name not in refused:
            try:
                answers[name] = validate_setting(known[name], format_value(value))
                reused.append(name)
            except SettingError:
                continue  # the entry changed since: ask or default as for a first install
    for setting in entry.settings:
        if setting.name in refused or (setting.asked and setting.name not in answers):
            answers[setting.name] = await _ask_setting(ctx, entry.name, setting, refused.get(setting.name))
    values = resolve_values(entry, {k: format_value(v) for k, v in answers.items()})
    return values, reused


def _install_reply(entry: App, outcome: Any, reused_settings: list[str]) -> Text:
    app = entry.name
    states = ", ".join(f"{i.service} {'healthy' if i.health == 'healthy' else i.state}" for i in outcome.ready)
    lines = [f"{app} installed in {format_seconds_short(outcome.seconds)}: {states}."]
    reach = [f"{svc} {p.address()} → {p.container_port}/{p.protocol}"
             for svc, ports in outcome.ports.items() for p in ports]
    if reach:
        lines.append("Reach it at: " + "; ".join(reach))
    notes = outcome.record.rendered().notes
    if notes:
        lines.append(notes)
    if outcome.volumes_reused:
        lines.append("Data kept from the earlier install: " + ", ".join(outcome.volumes_reused)
                     + (f" (settings reused: {', '.join(reused_settings)})" if reused_settings else ""))
    volumes = outcome.volumes_created + outcome.volumes_reused
    if volumes:
        lines.append(f"Data volumes: {', '.join(volumes)} (kept by `remove {app}`; `remove {app} --purge` "
                     "deletes them).")
    return Text("\n".join(lines))


@group.command("install", "Install an app from the catalog; settings not given are asked one at a time.",
               args=[app_arg(), Arg("settings", kind="keyvalues")], lock="app", mask_values=True)
async def install(ctx: Context, app: str, settings: dict[str, str]) -> Text:
    record = ctx.installs.get(app)
    if record is not None:
        raise UserError(f"{app} is already installed (since {_when(record.created)}). "
                        f"`config {app}` shows its settings; `remove {app}` removes it.")
    entry = _entry(ctx, app)
    try:
        values, reused = await _settings(ctx, entry, settings)
    except Cancelled as exc:
        text = str(exc)
        raise Cancelled(text if "nothing was created" in text else
                        f"Install of {app} cancelled; nothing was created.") from None
    try:
        async with PullReporter(ctx.reply) as reporter:
            outcome = await ctx.installer.install(entry, values, on_progress=reporter.update)
    except HomeportError:
        _forget_alerts(ctx, app)  # e.g. the health alert of a container the undo removed
        raise
    return _install_reply(entry, outcome, reused)


# -- remove ------------------------------------------------------------------

@group.command("remove", "Remove an app (after a confirmation); data volumes are kept unless --purge.",
               args=[app_arg(), Arg("purge", kind="flag")], lock="app")
async def remove(ctx: Context, app: str, purge: bool) -> Text:
    record = ctx.installs.get(app)
    objects = await ctx.installer.objects(app)
    if record is None and not (objects.containers or objects.networks):
        if purge and objects.volumes:
            return await _purge_kept(ctx, app, objects.volumes)
        kept = f" Its data volumes are kept ({', '.join(objects.volumes)}); `remove {app} --purge` deletes them." \
            if objects.volumes else ""
        raise UserError(f"{app} is not installed.{kept}")
    what = ", ".join(c.name for c in objects.containers) or "no containers"
    if not await _confirm(ctx, f"Remove {app}? Its containers ({what}) and network go"
                               + ("." if purge else f"; its data volumes ({', '.join(objects.volumes) or 'none'}) "
                                                    "are kept."), "yes"):
        return Text(f"Nothing removed; {app} stays as it is.")
    if purge and objects.volumes and not await _confirm(
            ctx, f"And delete its data volumes {', '.join(objects.volumes)}? The data in them is lost for good.",
            "delete"):
        return Text(f"Nothing removed; {app} stays as it is.")
    outcome = await ctx.installer.remove(app, purge)
    _forget_alerts(ctx, app)
    took = format_seconds_short(outcome.seconds)
    if purge:
        return Text(f"{app} removed in {took}, data volumes included"
                    + (f" ({', '.join(outcome.volumes_removed)})" if outcome.volumes_removed else "")
                    + ": nothing of it is left in Docker.")
    kept = (f" Data volumes kept: {', '.join(outcome.volumes_kept)}; `install {app}` finds them again, "
            f"`remove {app} --purge` deletes them.") if outcome.volumes_kept else ""
    return Text(f"{app} removed in {took} (containers and network).{kept}")


async def _purge_kept(ctx: Context, app: str, volumes: list[str]) -> Text:
    if not await _confirm(ctx, f"{app} is not installed, but its data volumes are kept: {', '.join(volumes)}. "
                               "Delete them? The data in them is lost for good.", "delete"):
        return Text(f"Nothing deleted; the volumes of {app} are kept.")
    outcome = await ctx.installer.remove(app, True)
    return Text(f"Deleted the data volumes of {app} ({', '.join(outcome.volumes_removed)}): "
                "nothing of it is left in Docker.")


# -- config, limit -----------------------------------------------------------

@group.command("config", "An installed app's settings (secrets masked), limits and images.", args=[app_arg()])
async def config(ctx: Context, app: str) -> Text:
    record = _installed(ctx, app)
    entry = record.entry
    lines = [f"{app}, installed {_when(record.created)}:"]
    for setting in entry.settings:
        value = record.settings.get(setting.name)
        shown = MASK if setting.masked else ("(unset)" if value is None else format_value(value))
        note = " (generated)" if setting.generated else (" (secret)" if setting.masked else "")
        lines.append(f"- {setting.name} = {shown}{note}")
    if not entry.settings:
        lines.append("- no settings")
    for svc in entry.start_order():
        limits = record.limits.merged_over(svc.limits)
        image = record.images.get(svc.name)
        ident = f" ({image.image_id[:19]})" if image is not None and image.image_id else ""
        lines.append(f"{svc.name}: {svc.image}{ident}; limits: {_limits_text(limits)}")
    if record.limits != Limits():
        lines.append(f"Your limit overrides: {_limits_text(record.limits)}")
    return Text("\n".join(lines))


@group.command("limit", "Change an installed app's limits live (memory=512m cpus=0.5 pids=200); "
                        "without values, show them.", args=[app_arg(), Arg("limits", kind="keyvalues")], lock="app")
async def limit(ctx: Context, app: str, limits: dict[str, str]) -> Text:
    record = _installed(ctx, app)
    if not limits:
        lines = [f"{app} limits (per container):"]
        for svc in record.entry.start_order():
            lines.append(f"- {svc.name}: {_limits_text(record.limits.merged_over(svc.limits))}")
        lines.append(f"Change them with e.g. `limit {app} memory=512m cpus=0.5 pids=200`.")
        return Text("\n".join(lines))
    overrides = limits_from_words(limits)
    _, applied = await ctx.installer.set_limits(app, overrides)
    if not applied:
        return Text(f"{app} has no containers to change; the limits are kept for when it is recreated.")
    changed = "; ".join(f"{name}: {_limits_text(lim)}" for name, lim in applied)
    return Text(f"{app} limits applied without a restart and kept for later recreations: {changed}")

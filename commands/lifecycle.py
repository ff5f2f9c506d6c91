"""Chat commands that act on an app's containers: status, start, stop,
restart, logs."""

from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Any

from bot.commandkit import Arg, CommandGroup, Context, app_arg
from bot.durations import format_seconds_short
from bot.replies import Lines, Many, Table, Text
from commands import figures
from commands.common import (app_containers, app_state, clean_text, image_tag, installed_rows, no_such_app,
                             state_text, uptime_text)

group = CommandGroup("lifecycle")

LOG_LINES_DEFAULT = 50
LOG_LINES_MAX = 500


@group.command("status", "Every app with its state, uptime, image tag, CPU and memory; or one app's containers.",
               args=[app_arg(optional=True)])
async def status(ctx: Context, app: str | None) -> Table | Text:
    monitor = getattr(ctx.services, "monitor", None)
    if monitor is None:  # no monitor (bare command tests): the engine's own listing, without figures
        return await _app_details(ctx, app) if app is not None else await _engine_listing(ctx)
    # States from one list call, figures from the latest background sample:
    # never a stats call per command (about a second per container).
    samples = await monitor.current(app)
    if app is not None:
        if not samples:
            raise await no_such_app(ctx, app)
        return _sampled_details(app, samples, monitor.latest)
    grouped: dict[str, list] = {}
    for sample in samples:
        grouped.setdefault(sample.app, []).append(sample)
    rows = []
    for name, items in sorted(grouped.items()):
        main = next((i for i in items if i.running), items[0])
        rows.append((name, app_state(items), uptime_text(main), image_tag(main.image),
                     figures.app_cpu(items), figures.app_memory(items)))
    rows = sorted(rows + installed_rows(ctx, grouped, 6))
    latest = monitor.latest
    title = figures.host_line(latest.host) if latest is not None and latest.host is not None else \
        f"({figures.sample_age(None, datetime.now(timezone.utc))})"
    firing = len(monitor.firing())
    if firing:
        title += f" · {firing} alert{'s' if firing != 1 else ''} firing (`alerts`)"
    return Table(rows=tuple(rows), header=("app", "state", "up", "version", "cpu", "mem"), title=title,
                 empty="No apps yet. Containers labelled homeport.app=<name> show up here.")


def _sampled_details(app: str, samples: list, latest: Any) -> Table:
    rows = tuple(
        (s.service, state_text(s), uptime_text(s), s.image, figures.container_cpu(s), figures.container_memory(s),
         f"restarts {s.restart_count}", s.id[:12])
        for s in samples
    )
    age = figures.sample_age(latest.taken_at if latest is not None else None, datetime.now(timezone.utc))
    return Table(rows=rows, title=f"{app}: {app_state(samples)} ({age})")


async def _engine_listing(ctx: Context) -> Table:
    apps = await ctx.engine.apps()
    rows = []
    for name, infos in sorted(apps.items()):
        main = next((i for i in infos if i.running), infos[0])
        rows.append((name, app_state(infos), uptime_text(main), image_tag(main.image)))
    rows = sorted(rows + installed_rows(ctx, apps, 4))
    return Table(rows=tuple(rows), header=("app", "state", "up", "version"),
                 empty="No apps yet. Containers labelled homeport.app=<name> show up here.")


async def _app_details(ctx: Context, app: str) -> Table:
    infos = await app_containers(ctx, app)
    rows = tuple(
        (i.service, state_text(i), uptime_text(i), i.image, f"restarts {i.restart_count}", i.id[:12])
        for i in infos
    )
    return Table(rows=rows, title=f"{app}: {app_state(infos)}")


async def _act(ctx: Context, app: str, verb: str, past: str) -> Text:
    await app_containers(ctx, app)  # unknown app → clear reply, nothing runs
    began = time.monotonic()
    infos = await getattr(ctx.engine, verb)(app)
    took = format_seconds_short(time.monotonic() - began)
    states = ", ".join(f"{i.service} {state_text(i)}" for i in infos)
    return Text(f"{app} {past} in {took}: {states}")


@group.command("start", "Start an app's containers (dependencies first).", args=[app_arg()], lock="app")
async def start(ctx: Context, app: str) -> Text:
    return await _act(ctx, app, "start", "started")


@group.command("stop", "Stop an app's containers (dependants first).", args=[app_arg()], lock="app")
async def stop(ctx: Context, app: str) -> Text:
    reply = await _act(ctx, app, "stop", "stopped")
    monitor = getattr(ctx.services, "monitor", None)
    if monitor is not None:
        monitor.forget(app)  # stopped on purpose: its alerts end without a word
    return reply


@group.command("restart", "Stop and start an app's containers.", args=[app_arg()], lock="app")
async def restart(ctx: Context, app: str) -> Text:
    return await _act(ctx, app, "restart", "restarted")


@group.command("logs", f"The last lines of an app's logs (default {LOG_LINES_DEFAULT}, at most {LOG_LINES_MAX}).",
               args=[app_arg(), Arg("lines", kind="int", optional=True, default=LOG_LINES_DEFAULT,
                                    minimum=1, maximum=LOG_LINES_MAX)])
async def logs(ctx: Context, app: str, lines: int) -> Many:
    await app_containers(ctx, app)
    parts = []
    for info, text in await ctx.engine.logs(app, lines):
        body = clean_text(text).rstrip("\n").split("\n") if text else []
        parts.append(Lines(lines=tuple(body), title=f"── {info.service} ({info.name}), last {lines} lines ──",
                           empty="(no output)"))
    return Many(parts=tuple(parts))

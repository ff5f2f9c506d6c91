"""Chat commands about alerts: what is firing, and muting or unmuting an app (or everything) for a while."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from bot.commandkit import Arg, CommandGroup, Context, UnknownApp
from bot.durations import format_duration
from bot.errors import UserError
from bot.replies import Table, Text, render
from commands.common import known_apps

group = CommandGroup("alerts")

ALL = "all"
HOST = "host"  # the host's own alerts (disk, memory, Docker engine)
RULE_NAMES = {
    "cpu": "cpu",
    "memory": "memory",
    "host_disk": "disk",
    "host_memory": "memory",
    "exit": "crash",
    "oom": "out of memory",
    "unhealthy": "unhealthy",
    "restart_loop": "restart loop",
}


def _target_arg() -> Arg:
    return Arg("target", kind="app", help="an app, `host` or `all`")


def _until(moment: datetime, now: datetime) -> str:
    same_day = moment.date() == now.date()
    clock = moment.strftime("%H:%M UTC") if same_day else moment.strftime("%d %b %H:%M UTC")
    left = timedelta(seconds=round((moment - now).total_seconds()))  # "30m", not "29m 59s" a moment later
    return f"until {clock} (in {format_duration(left)})"


async def _check_target(ctx: Context, target: str) -> None:
    if target in (ALL, HOST):
        return
    known = await known_apps(ctx)
    if target not in known:
        raise UnknownApp(target, known + [ALL, HOST])


@group.command("alerts", "Firing alerts and active mutes.")
async def alerts(ctx: Context) -> Table | Text:
    monitor = ctx.monitor
    now = datetime.now(timezone.utc)
    rows = []
    for view in monitor.firing():
        first, *more = view.detail.splitlines() or [""]
        flags = [f"for {format_duration(now - view.since)}"]
        if view.count > 1:
            flags.append(f"{view.count}×")
        if view.muted:
            flags.append("muted")
        rows.append((view.app, RULE_NAMES.get(view.rule, view.rule), ", ".join(flags), first))
    mutes = [f"muted: {target} {_until(until, now)}" for target, until in monitor.mutes().items()]
    if not rows:
        return Text("\n".join(["No alerts firing.", *mutes]))
    title = f"{len(rows)} alert{'s' if len(rows) != 1 else ''} firing:"
    table = Table(rows=tuple(rows), header=("app", "alert", "since", "detail"), title=title)
    if not mutes:
        return table
    return Text("\n".join([*render(table), "", *mutes]))


@group.command("mute", "Silence alerts about an app (or `host`, or `all`) for a while, e.g. 30m, 2h, 1d.",
               args=[_target_arg(), Arg("duration", kind="duration")])
async def mute(ctx: Context, target: str, duration: timedelta) -> Text:
    await _check_target(ctx, target)
    until = ctx.monitor.mute(target, duration)
    what = "all alerts" if target == ALL else f"alerts about {target}"
    return Text(f"Muted {what} {_until(until, datetime.now(timezone.utc))}. "
                f"`unmute {target}` ends it; `alerts` still lists them.")


@group.command("unmute", "End a mute (`unmute all` ends every mute); alerts missed meanwhile are sent.",
               args=[_target_arg()])
async def unmute(ctx: Context, target: str) -> Text:
    if not ctx.monitor.unmute(target):
        raise UserError(f"{target} is not muted." if target != ALL else "Nothing is muted.")
    return Text("All mutes ended." if target == ALL else f"Alerts about {target} are on again.")

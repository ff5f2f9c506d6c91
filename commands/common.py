"""Helpers shared by command modules: finding an app, describing a container.

Kept free of Docker and XMPP: it works on the engine's `ContainerInfo`
records handed over through the command context.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone
from typing import Any

from bot.commandkit import Context, UnknownApp
from bot.durations import format_duration
from bot.errors import UserError

# ANSI escape sequences and C0/C1 control characters other than tab and
# newline: log output may carry terminal colours or raw bytes that chat
# clients show as garbage or that could forge lines.
_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[@-Z\\-_]")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def clean_text(text: str) -> str:
    return _CONTROL.sub("", _ANSI.sub("", text.replace("\r\n", "\n")))


async def known_apps(ctx: Context) -> list[str]:
    """Names the owner may refer to: apps with managed containers, plus
    installed and catalog apps when those features are present."""
    names = set((await ctx.engine.apps()).keys())
    installed = getattr(ctx.services, "installed_names", None)
    if installed is not None:
        names.update(installed())
    return sorted(n for n in names if n)


def installed_names(ctx: Context) -> list[str]:
    """Apps installed from the catalog (when that feature is present)."""
    installed = getattr(ctx.services, "installed_names", None)
    return list(installed()) if installed is not None else []


async def no_such_app(ctx: Context, app: str) -> UserError:
    """The error for an app without containers: an installed app whose
    containers are gone says so; anything else is an unknown app."""
    if app in installed_names(ctx):
        return UserError(f"{app} is installed but has no containers (removed by hand?). `remove {app}` then "
                         f"`install {app}` recreates it; its data volumes are kept.")
    return UnknownApp(app, await known_apps(ctx))


def installed_rows(ctx: Context, present: Any, width: int) -> list[tuple[str, ...]]:
    """Status rows for installed apps that have no container at all."""
    return [(name, "no containers") + ("-",) * (width - 2) for name in installed_names(ctx) if name not in present]


async def app_containers(ctx: Context, app: str) -> list[Any]:
    """The app's containers, or UnknownApp with a suggestion."""
    infos = await ctx.engine.containers(app)
    if not infos:
        raise await no_such_app(ctx, app)
    return infos


def state_text(info: Any) -> str:
    if info.state == "running":
        if info.health == "unhealthy":
            return "unhealthy"
        if info.health == "starting":
            return "running (starting)"
        return "running"
    if info.state == "exited":
        return f"exited ({info.exit_code})" + (" OOM-killed" if info.oom_killed else "")
    return info.state


def uptime_text(info: Any, now: datetime | None = None) -> str:
    if info.state != "running" or info.started_at is None:
        return "-"
    now = now or datetime.now(timezone.utc)
    return format_duration(max(0.0, (now - info.started_at).total_seconds()))


def image_tag(ref: str) -> str:
    """The tag part of an image reference (or the short digest)."""
    if "@" in ref:
        return ref.split("@", 1)[1][:19]
    last = ref.rsplit("/", 1)[-1]
    return last.split(":", 1)[1] if ":" in last else "latest"


def app_state(infos: list[Any]) -> str:
    """One word for the whole app: the worst of its containers."""
    states = [state_text(i) for i in infos]
    for bad in ("unhealthy", "restarting", "dead"):
        if bad in states:
            return bad
    exited = [s for s in states if s.startswith("exited")]
    if exited and len(exited) == len(states):
        return exited[0]
    if exited:
        return f"degraded ({len(states) - len(exited)}/{len(states)} running)"
    return states[0] if len(set(states)) == 1 else "running"

"""Chat commands about the bot itself: help, ping, whoami, history."""

from __future__ import annotations

import time
from datetime import datetime, timezone

from bot.commandkit import Arg, CommandGroup, Context
from bot.durations import format_duration
from bot.errors import UserError
from bot.replies import Table, Text

group = CommandGroup("basics")


@group.command("help", "Every command with its usage, or the details of one.",
               args=[Arg("command", optional=True, pattern=r"[A-Za-z][A-Za-z-]{0,30}")])
async def help_(ctx: Context, command: str | None) -> Text | Table:
    if command:
        cmd = ctx.registry.get(command)
        if cmd is None:
            raise UserError(f"No command '{command}'. Send `help` for the list.")
        lines = [f"usage: {cmd.usage}", cmd.summary]
        if cmd.aliases:
            lines.append("also: " + ", ".join(cmd.aliases))
        return Text("\n".join(lines))
    rows = tuple((c.usage, c.summary) for c in ctx.registry.all())
    return Table(rows=rows, title="Commands (`help <command>` for one):")


@group.command("ping", "Check that the bot is alive; shows its uptime.")
async def ping(ctx: Context) -> Text:
    up = format_duration(time.monotonic() - ctx.services.started)
    return Text(f"pong (up {up})")


@group.command("whoami", "Who the bot thinks you are.")
async def whoami(ctx: Context) -> Text:
    return Text(f"You are {ctx.sender}, an owner of this bot.")


@group.command("history", "The last actions from the audit log.",
               args=[Arg("count", kind="int", optional=True, default=15, minimum=1, maximum=100)])
async def history(ctx: Context, count: int) -> Table:
    rows = []
    for e in ctx.store.history(count):
        when = datetime.fromtimestamp(e.ts, timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
        rows.append((when, e.command, "ok" if e.ok else "failed", e.outcome))
    return Table(rows=tuple(rows), title="Recent actions (newest first, UTC):", empty="No actions yet.")

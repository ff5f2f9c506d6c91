"""From an incoming chat message to a command run: auth, rate limit, parse,
bind arguments, per-app lock, questions, errors turned into replies.

The router is transport-neutral: it receives `Incoming` messages and answers
through a `send(to, text)` callable. Every command runs as a tracked task, so
a slow `stop` never keeps the bot from answering the next message.
"""

from __future__ import annotations

import asyncio
import logging
import re
import shlex
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from bot.commandkit import BadArguments, Command, Context, Registry, suggest
from bot.config import LimitsConfig
from bot.errors import Busy, Cancelled, HomeportError
from bot.incoming import Incoming
from bot.locks import AppLocks
from bot.replies import Reply, render
from bot.tasks import Tasks

log = logging.getLogger(__name__)

Send = Callable[[str, str], Awaitable[None]]

STRANGER_REPLY = "This bot only answers its owner."
STRANGER_QUIET_S = 3600.0
ASK_TIMEOUT_S = 600.0
# Forget idle per-sender state after this long so a flood of distinct
# stranger JIDs cannot grow memory without bound.
_MAX_TRACKED_STRANGERS = 10_000


class TokenBucket:
    """Per-sender rate limit: a burst, then a sustained rate."""

    def __init__(self, burst: int, per_minute: int, clock: Callable[[], float] = time.monotonic):
        self.burst = burst
        self.rate = per_minute / 60.0
        self.clock = clock
        self._state: dict[str, tuple[float, float]] = {}

    def allow(self, key: str) -> bool:
        now = self.clock()
        tokens, last = self._state.get(key, (float(self.burst), now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        if tokens < 1.0:
            self._state[key] = (tokens, now)
            return False
        self._state[key] = (tokens - 1.0, now)
        return True


@dataclass
class _Question:
    future: asyncio.Future[str]
    prompt: str


class Router:
    def __init__(self, registry: Registry, owners: frozenset[str], services: Any, send: Send,
                 tasks: Tasks, locks: AppLocks, limits: LimitsConfig = LimitsConfig(),
                 audit: Callable[[str, str, str, bool], None] | None = None,
                 journal: Any = None,
                 clock: Callable[[], float] = time.monotonic):
        self.registry = registry
        self.owners = owners
        self.services = services
        self.send = send
        self.tasks = tasks
        self.locks = locks
        self.limits = limits
        self.audit = audit
        self.journal = journal  # a Store: begin/end rows for operations in flight
        self.clock = clock
        self.bucket = TokenBucket(limits.rate_burst, limits.rate_per_minute, clock)
        self._stranger_replied: dict[str, float] = {}
        self._rate_warned: dict[str, float] = {}
        self._questions: dict[str, _Question] = {}

    # -- entry point -------------------------------------------------------

    async def handle(self, msg: Incoming) -> None:
        sender = msg.sender
        if sender not in self.owners:
            await self._stranger(msg)
            return
        if len(msg.text.encode("utf-8")) > self.limits.max_body:
            await self.reply(sender, f"Message refused: longer than {self.limits.max_body} bytes.")
            return
        if not self.bucket.allow(sender):
            last = self._rate_warned.get(sender, -1e9)
            if self.clock() - last > 60:
                self._rate_warned[sender] = self.clock()
                await self.reply(sender, "Too many messages; slow down. Ignoring messages for a moment.")
            log.warning("rate limit: dropped a message from %s", sender)
            return
        text = msg.text.strip()
        if not text:
            return
        if msg.delayed:
            # Offline delivery: a `restart` typed hours ago must not run now.
            # Quote the command, not its values: they may hold a password.
            first = text.split()[0][:40]
            shown = text if len(text) <= 80 and "=" not in text else first + " …"
            await self.reply(sender, f"This message arrived late (sent while I was offline), so I did not "
                                     f"run it: «{shown}». Send it again if you still want it.")
            log.info("delayed message from %s not executed", sender)
            return
        question = self._questions.get(sender)
        if question is not None and not question.future.done():
            first = text.split()[0].lower()
            if first != "cancel" and self.registry.get(first) is not None:
                # An owner who drifted away from a question and typed a
                # command must not have it taken as the answer.
                await self.reply(sender, f"That looks like a command; I am still waiting for an answer to: "
                                         f"{question.prompt}\nAnswer it, or send `cancel`.")
                return
            question.future.set_result(text)
            return
        await self._command(sender, text)

    async def _stranger(self, msg: Incoming) -> None:
        log.warning("ignored a message from stranger %s", msg.sender)
        now = self.clock()
        last = self._stranger_replied.get(msg.sender)
        if last is not None and now - last < STRANGER_QUIET_S:
            return
        if len(self._stranger_replied) >= _MAX_TRACKED_STRANGERS:
            self._stranger_replied = {k: v for k, v in self._stranger_replied.items()
                                      if now - v < STRANGER_QUIET_S}
            if len(self._stranger_replied) >= _MAX_TRACKED_STRANGERS:
                return  # under a flood: stay silent rather than amplify it
        self._stranger_replied[msg.sender] = now
        if not msg.delayed:
            await self.send(msg.sender, STRANGER_REPLY)

    # -- commands ----------------------------------------------------------

    async def _command(self, sender: str, text: str) -> None:
        try:
            words = shlex.split(text)
        except ValueError as exc:
            await self.reply(sender, f"Could not read that: {exc}.")
            return
        if not words:
            return
        name = words[0].lower()
        cmd = self.registry.get(name)
        if cmd is None:
            shown = name if len(name) <= 30 else name[:30] + "…"
            guess = suggest(name, self.registry.names())
            hint = f" Did you mean {guess}?" if guess else ""
            await self.reply(sender, f"Unknown command '{shown}'.{hint} Send `help` for the list.")
            return
        try:
            args = cmd.bind(words[1:])
        except BadArguments as exc:
            await self.reply(sender, f"{exc}. Usage: {cmd.usage}")
            return
        except HomeportError as exc:  # an impossible app name is an unknown app
            await self.reply(sender, f"{exc}. Usage: {cmd.usage}")
            return
        line = _audit_line(cmd, words)
        locked = args[cmd.lock] if cmd.lock else None
        if locked is not None:
            # Taken here, before the task is spawned, so two messages handled
            # back to back cannot both get the app.
            try:
                self.locks.acquire(locked, cmd.name)
            except Busy as exc:
                await self.reply(sender, str(exc))
                return
        self.tasks.spawn(self._run(cmd, sender, args, line, locked), name=f"command:{cmd.name}")

    async def _run(self, cmd: Command, sender: str, args: dict[str, Any], line: str,
                   locked: str | None = None) -> None:
        ctx = Context(sender=sender, services=self.services, registry=self.registry,
                      reply=lambda r: self.reply(sender, r), ask=lambda q: self.ask(sender, q),
                      command_line=line)
        ok = False
        outcome = ""
        entry = None
        try:
            if self.journal is not None and locked is not None:
                entry = self.journal.journal_begin(sender, locked, line)
            result = await cmd.handler(ctx, **args)
            ok = True
            if result is not None:
                outcome = _first_line(result)
                await self.reply(sender, result)
            else:
                outcome = "ok"
        except Busy as exc:
            outcome = str(exc)
            await self.reply(sender, str(exc))
        except Cancelled as exc:
            outcome = f"cancelled: {exc}"
            await self.reply(sender, str(exc) or "Cancelled.")
        except HomeportError as exc:
            outcome = str(exc)
            await self.reply(sender, str(exc))
        except asyncio.CancelledError:
            outcome = "interrupted (bot shutting down)"
            entry = None  # keep the journal row: the owner hears of it after restart
            raise
        except Exception as exc:  # a bug: tell the owner briefly, log the traceback
            log.exception("command %r failed", line)
            outcome = f"internal error: {exc.__class__.__name__}"
            await self.reply(sender, f"Internal error while running {cmd.name}: {exc.__class__.__name__}. "
                                     "Details are in the bot's log.")
        finally:
            if locked is not None:
                self.locks.release(locked)
            if entry is not None:
                self.journal.journal_end(entry)
            if self.audit is not None and cmd.name not in _UNAUDITED:
                try:
                    self.audit(sender, line, outcome, ok)
                except Exception:
                    log.exception("could not write the audit log")

    # -- conversation ------------------------------------------------------

    async def ask(self, sender: str, prompt: str, timeout: float = ASK_TIMEOUT_S) -> str:
        """Send a question and wait for the owner's next message.

        `cancel` (or silence past the timeout) raises Cancelled, which the
        command lets propagate after undoing what it started.
        """
        previous = self._questions.get(sender)
        if previous is not None and not previous.future.done():
            raise Busy("the conversation", "another question")
        fut: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._questions[sender] = _Question(fut, prompt)
        try:
            await self.reply(sender, prompt)
            try:
                answer = await asyncio.wait_for(fut, timeout)
            except asyncio.TimeoutError:
                raise Cancelled("No answer; cancelled.") from None
        finally:
            if self._questions.get(sender) is not None and self._questions[sender].future is fut:
                del self._questions[sender]
        if answer.strip().lower() == "cancel":
            raise Cancelled("Cancelled.")
        return answer.strip()

    async def reply(self, to: str, reply: Reply | str) -> None:
        for chunk in render(reply):
            await self.send(to, chunk)


_UNAUDITED = {"help", "ping", "whoami", "history", "status", "alerts", "apps", "info", "config", "logs"}


def _audit_line(cmd: Command, words: list[str]) -> str:
    parts = [cmd.name]
    for w in words[1:]:
        if cmd.mask_values and "=" in w:
            parts.append(w.split("=", 1)[0] + "=***")
        else:
            parts.append(w if len(w) <= 60 else w[:60] + "…")
    return " ".join(shlex.quote(p) if re.search(r"\s", p) else p for p in parts)


def _first_line(result: Reply | str) -> str:
    lines = render(result)
    first = lines[0].splitlines()[0] if lines and lines[0] else ""
    return first[:200]

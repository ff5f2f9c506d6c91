"""The toolkit chat commands are written with: registration, typed
arguments, usage lines and the context a command runs in.

A command module makes a `CommandGroup`, decorates async handlers with
`group.command(...)` and declares its arguments as `Arg` objects. The router
binds the words the owner typed to those arguments (validating them strictly,
so `restart "web; rm -rf /"` is simply not an app name) and calls the handler
with them. `help` is generated from the same declarations, so it cannot drift
from what the commands accept.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from bot.errors import UserError
from bot.replies import Reply

# An app name: what the catalog and Docker labels allow. Strict on purpose:
# anything else (paths, shell syntax, quotes) can never name an app.
APP_NAME = re.compile(r"^[a-z][a-z0-9-]{0,30}$")


class BadArguments(Exception):
    """The words do not fit the command's arguments; str() says why."""


@dataclass(frozen=True)
class Arg:
    """One positional argument.

    kind: "app" (an app name), "word" (any token matching `pattern`),
    "int" (bounded integer), "duration", "keyvalues" (the rest as name=value),
    "flag" (an optional `--name`).
    """

    name: str
    kind: str = "word"
    optional: bool = False
    default: Any = None
    minimum: int | None = None
    maximum: int | None = None
    pattern: str | None = None
    choices: tuple[str, ...] = ()
    help: str = ""

    def usage(self) -> str:
        if self.kind == "flag":
            return f"[--{self.name}]"
        if self.kind == "keyvalues":
            return "[name=value ...]"
        label = "|".join(self.choices) if self.choices else self.name
        return f"[{label}]" if self.optional else f"<{label}>"


def app_arg(name: str = "app", optional: bool = False) -> Arg:
    return Arg(name, kind="app", optional=optional)


@dataclass
class Command:
    name: str
    handler: Callable[..., Awaitable[Reply | str | None]]
    summary: str
    args: tuple[Arg, ...] = ()
    aliases: tuple[str, ...] = ()
    lock: str | None = None  # name of the app argument whose lock the command holds
    mask_values: bool = False  # audit log hides name=value values (settings, secrets)
    group: str = ""

    @property
    def usage(self) -> str:
        return " ".join([self.name, *(a.usage() for a in self.args)])

    def bind(self, words: Sequence[str]) -> dict[str, Any]:
        """Map the owner's words onto the declared arguments."""
        bound: dict[str, Any] = {}
        flags = {a.name: a for a in self.args if a.kind == "flag"}
        positional = [a for a in self.args if a.kind != "flag"]
        rest: list[str] = []
        for w in words:
            if w.startswith("--") and len(w) > 2:
                flag = flags.get(w[2:].lower())
                if flag is None:
                    raise BadArguments(f"unknown option {w}")
                bound[flag.name] = True
            else:
                rest.append(w)
        for f in flags.values():
            bound.setdefault(f.name, False)
        i = 0
        for arg in positional:
            if arg.kind == "keyvalues":
                bound[arg.name] = _keyvalues(rest[i:])
                i = len(rest)
                continue
            if i >= len(rest):
                if not arg.optional:
                    raise BadArguments(f"missing {arg.name}")
                bound[arg.name] = arg.default
                continue
            bound[arg.name] = _convert(arg, rest[i])
            i += 1
        if i < len(rest):
            raise BadArguments(f"unexpected {rest[i]!r}")
        return bound


def _keyvalues(words: Sequence[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for w in words:
        key, sep, value = w.partition("=")
        if not sep or not re.fullmatch(r"[a-z][a-z0-9_]{0,40}", key):
            # Only the key: the value may be a password.
            raise BadArguments(f"expected name=value with a lower-case name, got {key[:40]!r}")
        if key in out:
            raise BadArguments(f"{key} given twice")
        out[key] = value
    return out


def _convert(arg: Arg, word: str) -> Any:
    if arg.kind == "app":
        name = word.lower()
        if not APP_NAME.match(name):
            # Reported as an unknown app: to the owner it simply is not one.
            raise UnknownApp(word)
        return name
    if arg.kind == "int":
        try:
            value = int(word)
        except ValueError:
            raise BadArguments(f"{arg.name} must be a whole number, not {word!r}") from None
        if arg.minimum is not None and value < arg.minimum:
            raise BadArguments(f"{arg.name} must be at least {arg.minimum}")
        if arg.maximum is not None and value > arg.maximum:
            raise BadArguments(f"{arg.name} must be at most {arg.maximum}")
        return value
    if arg.kind == "duration":
        from bot.durations import parse_duration  # local: keeps the kit importable alone

        try:
            return parse_duration(word)
        except (ValueError, OverflowError) as exc:
            raise BadArguments(str(exc)) from None
    if arg.choices:
        low = word.lower()
        if low not in arg.choices:
            raise BadArguments(f"{arg.name} must be one of {', '.join(arg.choices)}")
        return low
    if arg.pattern and not re.fullmatch(arg.pattern, word):
        raise BadArguments(f"{word!r} is not a valid {arg.name}")
    return word


class UnknownApp(UserError):
    def __init__(self, name: str, known: Sequence[str] = ()):
        shown = name if len(name) <= 40 else name[:40] + "…"
        msg = f"unknown app '{shown}'"
        guess = suggest(name.lower(), known)
        if guess:
            msg += f" — did you mean {guess}?"
        super().__init__(msg)
        self.name = name


def suggest(word: str, candidates: Sequence[str]) -> str | None:
    match = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return match[0] if match else None


@dataclass
class CommandGroup:
    """A set of related commands contributed by one module."""

    name: str
    commands: list[Command] = field(default_factory=list)

    def command(self, name: str, summary: str, args: Sequence[Arg] = (), aliases: Sequence[str] = (),
                lock: str | None = None, mask_values: bool = False) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        def register(fn: Callable[..., Any]) -> Callable[..., Any]:
            self.commands.append(Command(name=name, handler=fn, summary=summary, args=tuple(args),
                                         aliases=tuple(aliases), lock=lock, mask_values=mask_values,
                                         group=self.name))
            return fn

        return register


class Registry:
    """All commands the bot knows, by name and alias."""

    def __init__(self, groups: Sequence[CommandGroup]):
        self.groups = list(groups)
        self._by_name: dict[str, Command] = {}
        for g in groups:
            for c in g.commands:
                for key in (c.name, *c.aliases):
                    if key in self._by_name:
                        raise ValueError(f"command {key!r} registered twice")
                    self._by_name[key] = c

    def get(self, name: str) -> Command | None:
        return self._by_name.get(name.lower())

    def names(self) -> list[str]:
        return sorted({c.name for c in self._by_name.values()})

    def all(self) -> list[Command]:
        return [c for g in self.groups for c in g.commands]


@dataclass
class Context:
    """What a command handler is given: who asked, ways to answer and ask,
    and the bot's services (engine, store, catalog, monitor …) as attributes.
    """

    sender: str
    services: Any
    registry: Registry
    reply: Callable[[Reply | str], Awaitable[None]]
    ask: Callable[[str], Awaitable[str]]
    command_line: str = ""

    def __getattr__(self, item: str) -> Any:
        # ctx.engine, ctx.store … without each command knowing the container.
        services = self.__dict__.get("services")
        if services is None:
            raise AttributeError(item)
        return getattr(services, item)

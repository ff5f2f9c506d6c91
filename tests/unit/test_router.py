"""Router behaviour with a fake engine: auth, limits, parsing, locks, questions."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import pytest

from bot.commandkit import Arg, CommandGroup, Context, Registry, app_arg
from bot.config import LimitsConfig
from bot.errors import EngineUnavailable
from bot.incoming import Incoming
from bot.locks import AppLocks
from bot.router import STRANGER_REPLY, Router
from bot.tasks import Tasks

OWNER = "alice@example.org"


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@dataclass
class Harness:
    router: Router
    sent: list[tuple[str, str]]
    tasks: Tasks
    calls: list[tuple[str, Any]] = field(default_factory=list)
    clock: Clock = field(default_factory=Clock)
    audit: list[tuple[str, str, str, bool]] = field(default_factory=list)

    async def say(self, text: str, sender: str = OWNER, delayed: bool = False) -> None:
        await self.router.handle(Incoming(sender=sender, text=text, delayed=delayed))
        await self.settle()

    async def settle(self) -> None:
        await self.tasks.drain("command:", timeout=5)

    def texts(self) -> list[str]:
        return [t for _, t in self.sent]

    async def until_replied(self, timeout: float = 1.0) -> None:
        """Wait (bounded) for the first reply, e.g. a question being asked."""
        async def poll() -> None:
            while not self.sent:
                await asyncio.sleep(0.01)

        await asyncio.wait_for(poll(), timeout)


def make_harness(limits: LimitsConfig = LimitsConfig()) -> Harness:
    group = CommandGroup("test")
    sent: list[tuple[str, str]] = []
    tasks = Tasks()
    clock = Clock()
    h_calls: list[tuple[str, Any]] = []
    gate = asyncio.Event()

    @group.command("restart", "restart an app", args=[app_arg()], lock="app")
    async def restart(ctx: Context, app: str) -> str:
        h_calls.append(("restart", app))
        if app == "slow":
            await gate.wait()
        if app == "down":
            raise EngineUnavailable()
        return f"restarted {app}"

    @group.command("logs", "logs", args=[app_arg(), Arg("lines", kind="int", optional=True, default=50,
                                                          minimum=1, maximum=500)])
    async def logs(ctx: Context, app: str, lines: int) -> str:
        h_calls.append(("logs", (app, lines)))
        return f"{lines} lines of {app}"

    @group.command("install", "install", args=[app_arg(), Arg("settings", kind="keyvalues")], mask_values=True)
    async def install(ctx: Context, app: str, settings: dict[str, str]) -> str:
        answer = await ctx.ask("domain?")
        h_calls.append(("install", (app, settings, answer)))
        return f"installed {app} at {answer}"

    @group.command("boom", "a bug")
    async def boom(ctx: Context) -> str:
        raise RuntimeError("secret internals")

    h = Harness(router=None, sent=sent, tasks=tasks, calls=h_calls, clock=clock)  # type: ignore[arg-type]

    async def send(to: str, text: str) -> None:
        sent.append((to, text))

    h.router = Router(Registry([group]), frozenset({OWNER}), services=object(), send=send, tasks=tasks,
                      locks=AppLocks(), limits=limits, audit=lambda *a: h.audit.append(a), clock=clock)
    h.gate = gate  # type: ignore[attr-defined]
    return h


async def test_owner_command_runs_and_is_audited():
    h = make_harness()
    await h.say("RESTART web")
    assert h.calls == [("restart", "web")]
    assert h.texts() == ["restarted web"]
    assert h.audit == [(OWNER, "restart web", "restarted web", True)]


async def test_owner_jid_compared_after_normalisation_only():
    h = make_harness()
    await h.say("restart web", sender="mallory@example.org")
    await h.say("restart web", sender="alice@example.org.evil")
    assert h.calls == []
    assert h.texts() == [STRANGER_REPLY, STRANGER_REPLY]


async def test_stranger_gets_one_refusal_per_hour():
    h = make_harness()
    for _ in range(5):
        await h.say("restart web", sender="mallory@example.org")
    assert h.texts() == [STRANGER_REPLY]
    h.clock.t += 3601
    await h.say("status", sender="mallory@example.org")
    assert h.texts() == [STRANGER_REPLY, STRANGER_REPLY]
    assert h.calls == []


@pytest.mark.parametrize("arg", ["web; rm -rf /", "../x", "$(reboot)", "WEB`id`", "a" * 40, "-rf"])
async def test_injection_in_app_argument_is_an_unknown_app(arg):
    h = make_harness()
    await h.router.handle(Incoming(sender=OWNER, text=f'restart "{arg}"'))
    await h.settle()
    assert h.calls == []
    assert len(h.texts()) == 1
    assert "unknown app" in h.texts()[0] or "unknown option" in h.texts()[0]
    assert "Usage: restart <app>" in h.texts()[0]


async def test_unknown_command_suggests():
    h = make_harness()
    await h.say("restrat web")
    assert h.calls == []
    assert "Unknown command 'restrat'" in h.texts()[0]
    assert "Did you mean restart?" in h.texts()[0]


async def test_bad_arguments_reply_with_usage():
    h = make_harness()
    await h.say("logs web 9999")
    await h.say("logs web many")
    await h.say("restart")
    await h.say("restart web extra")
    await h.say('restart "unclosed')
    assert h.calls == []
    t = h.texts()
    assert "at most 500" in t[0] and "Usage: logs <app> [lines]" in t[0]
    assert "whole number" in t[1]
    assert "missing app" in t[2]
    assert "unexpected 'extra'" in t[3]
    assert "Could not read that" in t[4]


async def test_delayed_message_is_not_executed():
    h = make_harness()
    await h.say("restart web", delayed=True)
    assert h.calls == []
    assert "arrived late" in h.texts()[0] and "restart web" in h.texts()[0]


async def test_oversized_body_refused():
    h = make_harness()
    await h.say("restart " + "x" * 5000)
    assert h.calls == []
    assert "longer than 4096 bytes" in h.texts()[0]


async def test_rate_limit_drops_flood_and_warns_once():
    h = make_harness(LimitsConfig(rate_burst=3, rate_per_minute=60))
    for _ in range(10):
        await h.say("logs web 1")
    assert len(h.calls) == 3
    assert sum("slow down" in t for t in h.texts()) == 1
    h.clock.t += 2  # one token per second comes back
    await h.say("logs web 1")
    assert len(h.calls) == 4


async def test_busy_app_refuses_second_operation():
    h = make_harness()
    await h.router.handle(Incoming(sender=OWNER, text="restart slow"))
    await asyncio.sleep(0)  # let the first command take the lock
    await h.router.handle(Incoming(sender=OWNER, text="restart slow"))
    await h.until_replied()
    assert h.texts() == ["busy: restart of slow in progress"]
    h.gate.set()  # type: ignore[attr-defined]
    await h.settle()
    assert h.texts()[-1] == "restarted slow"


async def test_engine_error_is_a_clear_reply():
    h = make_harness()
    await h.say("restart down")
    assert h.texts() == ["Docker engine is not reachable"]
    assert h.audit[-1][3] is False


async def test_internal_error_hides_details():
    h = make_harness()
    await h.say("boom")
    assert "Internal error while running boom: RuntimeError" in h.texts()[0]
    assert "secret internals" not in h.texts()[0]


async def test_question_answer_and_masked_audit():
    h = make_harness()
    await h.router.handle(Incoming(sender=OWNER, text="install blog password=hunter2"))
    await h.until_replied()
    assert h.texts() == ["domain?"]
    await h.say("blog.example.org")
    assert h.calls == [("install", ("blog", {"password": "hunter2"}, "blog.example.org"))]
    assert h.audit[-1][1] == "install blog password=***"


async def test_question_cancel():
    h = make_harness()
    await h.router.handle(Incoming(sender=OWNER, text="install blog"))
    await h.until_replied()
    await h.say("CANCEL")
    assert h.calls == []
    assert h.texts()[-1] == "Cancelled."


async def test_command_typed_during_a_question_is_not_the_answer():
    h = make_harness()
    await h.router.handle(Incoming(sender=OWNER, text="install blog"))
    await h.until_replied()
    await h.router.handle(Incoming(sender=OWNER, text="restart web"))
    assert "still waiting for an answer to: domain?" in h.texts()[-1]
    await h.say("blog.example.org")
    assert h.calls == [("install", ("blog", {}, "blog.example.org"))]


async def test_secret_values_are_never_quoted_back():
    h = make_harness()
    await h.say("install blog Admin_Token=hunter2")
    await h.say("install blog admin_token=hunter2", delayed=True)
    assert all("hunter2" not in t for t in h.texts()), h.texts()
    assert "Admin_Token" in h.texts()[0]


async def test_huge_duration_is_a_bad_argument():
    from bot.commandkit import Arg, BadArguments, Command

    cmd = Command(name="mute", handler=None, summary="", args=(Arg("for", kind="duration"),))  # type: ignore[arg-type]
    with pytest.raises(BadArguments):
        cmd.bind(["99999999999999999999d"])

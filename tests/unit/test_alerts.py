"""The alert state machine (bot.monitor.alerts): one alert, one recovery, no flapping."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime, timedelta

import pytest

from bot.monitor.alerts import ALERT, RECOVERY, REPEAT, AlertBook, Notice, combine
from bot.monitor.rules import CPU, EXIT, HOST, HOST_DISK, OOM, RESTART_LOOP, UNHEALTHY, Thresholds, evaluate
from bot.monitor.snapshot import ContainerSample, Snapshot
from tests.unit.monitor_samples import T0, container, host, snapshot

TICK = timedelta(seconds=10)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


class Run:
    """Feeds a book with one snapshot per tick and collects every notice."""

    def __init__(self, book: AlertBook | None = None, thresholds: Thresholds | None = None) -> None:
        self.thresholds = thresholds or Thresholds()
        self.book = book or AlertBook(self.thresholds)
        self.notices: list[Notice] = []

    def tick(self, now: datetime, *containers: ContainerSample, **kw: object) -> list[Notice]:
        snap = snapshot(now, *containers, **kw)  # type: ignore[arg-type]
        new = self.book.update(evaluate(snap, self.thresholds), now)
        self.notices.extend(new)
        return new

    def ticks(self, start: float, end: float, make: Callable[[float], list[ContainerSample]]) -> list[Notice]:
        new: list[Notice] = []
        second = start
        while second < end:
            new.extend(self.tick(at(second), *make(second)))
            second += TICK.total_seconds()
        return new

    def event(self, rule: str, app: str, now: datetime, detail: str) -> list[Notice]:
        new = self.book.event(rule, app, now, detail)
        self.notices.extend(new)
        return new


def busy(cpu: float) -> Callable[[float], list[ContainerSample]]:
    return lambda _second: [container(cpu_percent=cpu)]


# -- pending, firing, resolved ------------------------------------------------------


def test_nothing_before_the_hold_time_then_exactly_one_alert() -> None:
    run = Run()
    assert run.ticks(0, 300, busy(97.0)) == []  # 0 s .. 290 s: pending, CPU hold is 5 min
    assert run.book.pending() == [(CPU, "web")]
    fired = run.tick(at(300), container(cpu_percent=97.0))
    assert [(n.kind, n.rule, n.app) for n in fired] == [(ALERT, CPU, "web")]
    assert fired[0].raised_at == at(300)
    assert "web: CPU at 97%" in fired[0].text
    # Fifty more ticks of the same: not fifty alerts.
    assert run.ticks(310, 310 + 50 * 10, busy(97.0)) == []
    assert [v.rule for v in run.book.firing(at(900))] == [CPU]


def test_pending_resets_when_the_condition_stops() -> None:
    run = Run()
    run.ticks(0, 240, busy(97.0))
    run.tick(at(240), container(cpu_percent=50.0))
    run.ticks(250, 500, busy(97.0))  # 250 s of high CPU again: still under 5 min
    assert run.notices == []
    assert run.tick(at(550), container(cpu_percent=97.0))[0].kind == ALERT  # 300 s after 250


def test_recovery_exactly_once() -> None:
    run = Run()
    run.ticks(0, 310, busy(97.0))
    recovered = run.tick(at(400), container(cpu_percent=12.0))
    assert [(n.kind, n.rule) for n in recovered] == [(RECOVERY, CPU)]
    assert "web: high CPU over after 1m 40s" in recovered[0].text
    assert "CPU now 12%" in recovered[0].text
    assert run.ticks(410, 1000, busy(12.0)) == []
    assert run.book.firing(at(1000)) == []


def test_hovering_around_the_threshold_does_not_flap() -> None:
    run = Run()
    run.ticks(0, 310, busy(97.0))
    assert len(run.notices) == 1
    # 89 % / 91 % alternating for an hour: inside the hysteresis band, never clear.
    run.ticks(310, 3910, lambda s: [container(cpu_percent=89.0 if int(s) // 10 % 2 else 91.0)])
    assert len(run.notices) == 1


def test_below_threshold_but_inside_the_margin_resolves_after_a_while() -> None:
    t = Thresholds()
    run = Run(thresholds=t)
    run.ticks(0, 310, busy(97.0))
    run.ticks(310, 310 + t.clear_after.total_seconds(), busy(88.0))
    assert [n.kind for n in run.notices] == [ALERT]
    assert [n.kind for n in run.tick(at(310 + t.clear_after.total_seconds()), container(cpu_percent=88.0))] == [
        RECOVERY
    ]


def test_clearly_below_resolves_at_once() -> None:
    run = Run()
    run.ticks(0, 310, busy(97.0))
    assert [n.kind for n in run.tick(at(310), container(cpu_percent=84.0))] == [RECOVERY]


def test_a_missed_measurement_changes_nothing() -> None:
    run = Run()
    run.ticks(0, 310, busy(97.0))
    assert run.tick(at(310), container(cpu_percent=None)) == []  # running, not measured
    assert [v.rule for v in run.book.firing(at(310))] == [CPU]
    assert run.tick(at(320), container(cpu_percent=97.0)) == []


# -- cooldown -------------------------------------------------------------------------


def test_still_firing_repeats_only_after_the_cooldown() -> None:
    run = Run(book=AlertBook(Thresholds(), cooldown=timedelta(hours=6)))
    hot = container(cpu_percent=97.0)
    run.tick(at(0), hot)
    run.tick(at(300), hot)  # fires
    for minutes in range(10, 6 * 60, 10):
        run.tick(at(300 + minutes * 60), hot)
    assert run.tick(at(300 + 6 * 3600 - 1), hot) == []
    assert [n.kind for n in run.notices] == [ALERT]
    assert [n.kind for n in run.tick(at(300 + 6 * 3600), hot)] == [REPEAT]
    assert "still firing after 6h" in run.notices[-1].text
    # The next reminder comes 6 h after the last one, not every tick after.
    assert run.tick(at(300 + 6 * 3600 + 600), hot) == []
    assert [n.kind for n in run.tick(at(300 + 12 * 3600), hot)] == [REPEAT]


# -- mutes ----------------------------------------------------------------------------


def test_muted_app_gets_no_alert_but_state_is_tracked() -> None:
    run = Run()
    run.book.mute("web", at(3600), now=at(0))
    run.ticks(0, 600, busy(97.0))
    assert run.notices == []
    [view] = run.book.firing(at(600))
    assert (view.rule, view.app, view.muted, view.notified) == (CPU, "web", True, False)


def test_alert_that_fired_during_a_mute_is_sent_when_the_mute_expires() -> None:
    run = Run()
    run.book.mute("web", at(1800), now=at(0))
    run.ticks(0, 1800, busy(97.0))
    assert run.notices == []
    late = run.tick(at(1800), container(cpu_percent=97.0))
    assert [n.kind for n in late] == [ALERT]
    assert "was muted" in late[0].text and "firing for 25m" in late[0].text
    assert run.tick(at(1810), container(cpu_percent=97.0)) == []


def test_alert_that_fired_and_ended_during_a_mute_is_never_mentioned() -> None:
    run = Run()
    run.book.mute("web", at(3600), now=at(0))
    run.ticks(0, 600, busy(97.0))
    run.ticks(600, 1200, busy(10.0))
    run.ticks(3600, 4000, busy(10.0))
    assert run.notices == []


def test_recovery_of_an_alert_heard_before_the_mute_is_not_sent_while_muted() -> None:
    run = Run()
    run.ticks(0, 310, busy(97.0))
    assert [n.kind for n in run.notices] == [ALERT]
    run.book.mute("web", at(310 + 7200), now=at(310))
    assert run.tick(at(400), container(cpu_percent=5.0)) == []
    assert run.book.firing(at(400)) == []  # resolved, silently


def test_mute_all_covers_apps_and_host_and_other_apps_stay_loud() -> None:
    run = Run()
    run.book.mute("all", at(600), now=at(0))
    full = host(docker_disk_percent=97.0)
    assert run.tick(at(0), container(cpu_percent=5.0), host_sample=full) == []
    assert run.book.is_muted(HOST, at(1)) and run.book.is_muted("anything", at(1))
    late = run.tick(at(600), container(cpu_percent=5.0), host_sample=full)
    assert [(n.kind, n.rule, n.app) for n in late] == [(ALERT, HOST_DISK, HOST)]

    book = AlertBook()
    book.mute("wiki", at(600), now=at(0))
    assert not book.is_muted("web", at(1))
    assert [n.app for n in book.event(EXIT, "web", at(1), "exited with code 1")] == ["web"]


def test_unmute_early_releases_what_fired_meanwhile() -> None:
    book = AlertBook()
    book.mute("web", at(3600), now=at(0))
    assert book.event(OOM, "web", at(10), "killed: out of memory") == []
    assert book.mutes(at(20)) == {"web": at(3600)}
    released = book.unmute("web", at(20))
    assert [(n.kind, n.rule) for n in released] == [(ALERT, OOM)]
    assert book.mutes(at(20)) == {}
    assert book.unmute("web", at(30)) == []


def test_mute_arguments_are_checked() -> None:
    book = AlertBook()
    with pytest.raises(ValueError, match="future"):
        book.mute("web", at(0), now=at(10))
    with pytest.raises(ValueError, match="timezone"):
        book.mute("web", datetime(2030, 1, 1), now=at(0))
    with pytest.raises(ValueError, match="timezone"):
        book.update([], datetime(2024, 1, 1))


# -- events ---------------------------------------------------------------------------


def test_event_fires_at_once_without_pending() -> None:
    book = AlertBook()
    [notice] = book.event(EXIT, "web", at(0), "exited with code 137; last lines: boom")
    assert (notice.kind, notice.rule, notice.app, notice.raised_at) == (ALERT, EXIT, "web", at(0))
    assert notice.text == "web: exited with code 137; last lines: boom"


def test_flapping_container_raises_one_restart_loop_alert() -> None:
    run = Run()
    second = 0.0
    for restart in range(30):
        run.event(EXIT, "web", at(second), f"exited with code 1 (restart {restart})")
        # Between exits the sampler sees it restarting or freshly started: never steady.
        run.tick(at(second + 1), container(state="restarting", cpu_percent=None, mem_used=None))
        run.tick(at(second + 5), container(started_at=at(second + 4), cpu_percent=1.0))
        second += 20
    kinds = [(n.kind, n.rule) for n in run.notices]
    assert kinds == [(ALERT, EXIT), (ALERT, RESTART_LOOP)]
    assert "3 exits in 40s" in run.notices[1].text
    assert "exited with code 1 (restart 2)" in run.notices[1].text
    views = {v.rule: v for v in run.book.firing(at(second))}
    assert views[EXIT].count == 30
    # It calms down: once steady, one message with both recoveries.
    steady_from = second + 60
    run.ticks(second, steady_from, lambda _s: [container(started_at=at(second), cpu_percent=1.0)])
    assert len(run.notices) == 2
    settled = run.tick(at(second + 130), container(started_at=at(second), cpu_percent=1.0))
    assert sorted((n.kind, n.rule) for n in settled) == [(RECOVERY, EXIT), (RECOVERY, RESTART_LOOP)]
    message = combine(settled)
    assert message.startswith("2 recoveries:")
    assert "RESOLVED web: crash over after" in message


def test_exits_spread_out_are_not_a_loop() -> None:
    book = AlertBook(Thresholds(restart_loop_count=3, restart_loop_window=timedelta(minutes=10)))
    notices: list[Notice] = []
    for minute in (0, 6, 12, 18):
        notices += book.event(EXIT, "web", at(minute * 60), "exited with code 1")
        # Steady in between: the crash alert resolves, the next exit alerts again.
        steady = snapshot(at(minute * 60 + 240), container(started_at=at(minute * 60 + 1)))
        notices += book.update(evaluate(steady), at(minute * 60 + 240))
    assert [(n.kind, n.rule) for n in notices] == [(ALERT, EXIT), (RECOVERY, EXIT)] * 4


def test_repeated_event_within_cooldown_is_folded_then_reminds() -> None:
    book = AlertBook(Thresholds(restart_loop_count=100))
    assert len(book.event(UNHEALTHY, "web", at(0), "health check failing")) == 1
    assert book.event(UNHEALTHY, "web", at(60), "health check failing") == []
    reminder = book.event(UNHEALTHY, "web", at(6 * 3600), "health check failing")
    assert [n.kind for n in reminder] == [REPEAT]


def test_unhealthy_event_and_snapshot_agree() -> None:
    run = Run()
    run.event(UNHEALTHY, "web", at(0), "health check failing (web-main-1)")
    assert run.tick(at(5), container(health="unhealthy")) == []  # already firing: no duplicate
    assert run.tick(at(15), container(health="starting")) == []
    [recovered] = run.tick(at(25), container(health="healthy"))
    assert (recovered.kind, recovered.rule) == (RECOVERY, UNHEALTHY)


def test_unhealthy_seen_only_by_the_sampler_still_alerts() -> None:
    run = Run()
    [notice] = run.tick(at(0), container(health="unhealthy"))
    assert (notice.kind, notice.rule) == (ALERT, UNHEALTHY)


def test_forget_drops_state_silently() -> None:
    book = AlertBook()
    book.event(EXIT, "web", at(0), "exited with code 1")
    book.event(EXIT, "web", at(1), "exited with code 1")
    book.forget("web")
    assert book.firing(at(2)) == []
    # The exit history went too: one more exit is a fresh crash, not a loop.
    assert [n.rule for n in book.event(EXIT, "web", at(3), "exited with code 1")] == [EXIT]


# -- combining ------------------------------------------------------------------------


def test_combine_one_and_many() -> None:
    assert combine([]) == ""
    one = Notice(ALERT, CPU, "web", "web: CPU at 97%", at(0))
    assert combine([one]) == "ALERT web: CPU at 97%"
    many = [
        Notice(RECOVERY, CPU, "wiki", "wiki: high CPU over after 5m", at(0)),
        Notice(ALERT, EXIT, "db", "db: exited with code 1", at(0)),
        Notice(REPEAT, HOST_DISK, HOST, "host: still firing after 6h: disk 95% full", at(0)),
        one,
    ]
    assert combine(many).splitlines() == [
        "2 alerts, 1 reminder, 1 recovery:",
        "ALERT db: exited with code 1",
        "ALERT web: CPU at 97%",
        "REMINDER host: still firing after 6h: disk 95% full",
        "RESOLVED wiki: high CPU over after 5m",
    ]


def test_many_apps_failing_at_once_make_one_message() -> None:
    run = Run()
    apps = [container(app, health="unhealthy") for app in ("alpha", "beta", "gamma")]
    notices = run.tick(at(0), *apps)
    assert len(notices) == 3
    message = combine(notices)
    assert message.splitlines()[0] == "3 alerts:"
    assert all(f"ALERT {app}:" in message for app in ("alpha", "beta", "gamma"))


# -- persistence ----------------------------------------------------------------------


def test_state_round_trips_through_json_and_keeps_behaving() -> None:
    t = Thresholds()
    run = Run(thresholds=t)
    run.ticks(0, 310, busy(97.0))  # cpu web firing since 300
    run.tick(at(310), container(cpu_percent=97.0), container("db", cpu_percent=99.0))  # db pending
    run.book.event(EXIT, "db", at(320), "exited with code 2")
    run.book.mute("wiki", at(7200), now=at(320))
    run.book.update(evaluate(snapshot(at(330), container(cpu_percent=88.0))), at(330))  # web calm_since

    saved = json.dumps(run.book.to_dict())
    restored = AlertBook.from_dict(json.loads(saved), t)
    assert restored.to_dict() == run.book.to_dict()
    assert restored.mutes(at(400)) == {"wiki": at(7200)}
    assert restored.pending() == [(CPU, "db")]

    # The pending db CPU alert keeps its start: fires 5 min after 310, not after the restart.
    db_restarted = container("db", cpu_percent=99.0, started_at=at(600))  # not steady yet
    fired = restored.update(evaluate(snapshot(at(610), db_restarted)), at(610))
    assert [(n.kind, n.rule, n.app) for n in fired] == [(ALERT, CPU, "db")]
    # web's calm spell began at 330 and still counts: resolved at 330 + clear_after.
    calm = snapshot(at(330 + t.clear_after.total_seconds()), container(cpu_percent=88.0))
    resolved = restored.update(evaluate(calm), calm.taken_at)
    assert [(n.kind, n.rule, n.app) for n in resolved] == [(RECOVERY, CPU, "web")]
    # The exit counted before the restart still counts toward a loop.
    restored.event(EXIT, "db", at(700), "exited with code 2")
    loop = restored.event(EXIT, "db", at(710), "exited with code 2")
    assert [n.rule for n in loop] == [RESTART_LOOP]


def test_from_dict_refuses_unknown_versions() -> None:
    with pytest.raises(ValueError, match="version"):
        AlertBook.from_dict({"version": 99})


def test_update_ignores_pairs_it_was_not_told_about() -> None:
    book = AlertBook()
    book.event(EXIT, "web", at(0), "exited with code 1")
    assert book.update([], at(10)) == []
    assert book.update(evaluate(Snapshot(taken_at=at(20))), at(20)) == []
    assert [v.rule for v in book.firing(at(30))] == [EXIT]

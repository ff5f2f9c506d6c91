"""The alert book: per (rule, app) state machine deciding what the owner is told, and when.

Each (rule, app) pair is inactive (not in the book), pending (its condition
holds but not yet for the rule's ``hold`` time) or firing. Going firing sends
ONE alert; leaving firing sends ONE recovery. In between nothing is sent,
except a reminder once the ``cooldown`` (6 h by default) has passed and the
condition still holds. Hysteresis keeps a value hovering around its
threshold from flapping: a firing alert resolves only when the value is
clearly below (threshold minus margin: ``Condition.clear``) or has stayed
below the threshold for ``Condition.clear_after``.

Docker events (a crash, an OOM kill, a failing health check) enter the same
book through ``event`` and fire at once, without a pending phase. Exits are
counted per app: ``restart_loop_count`` of them within
``restart_loop_window`` raise one restart-loop alert; further exits of a
flapping container are folded into the alerts already firing.

Mutes (per app, or ``all``) silence notices until they expire; the book keeps
tracking state underneath. Decisions:

- an alert that starts firing while muted is sent when the mute ends, if it
  is still firing then (marked "was muted");
- a recovery is sent only for an alert the owner was told about, and not
  while the app is muted: a mute silences everything about that app,
  including the good news of an alert heard before the mute. ``alerts``
  always shows the current truth.

Time is always passed in (``now``, a timezone-aware datetime), never read
here, so tests are deterministic. The state serialises to plain JSON-able
dicts (``to_dict`` / ``from_dict``) for the state database.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from bot.durations import format_duration
from bot.monitor.rules import (
    EXIT_RULES,
    RESTART_LOOP,
    RULE_TITLES,
    Condition,
    ThresholdPolicy,
    Thresholds,
    as_policy,
)

log = logging.getLogger(__name__)

ALERT = "alert"
RECOVERY = "recovery"
REPEAT = "repeat"

ALL = "all"
DEFAULT_COOLDOWN = timedelta(hours=6)
STATE_VERSION = 1

_MAX_EXITS_KEPT = 1000

PENDING = "pending"
FIRING = "firing"

_PREFIX = {ALERT: "ALERT", REPEAT: "REMINDER", RECOVERY: "RESOLVED"}
_KIND_ORDER = {ALERT: 0, REPEAT: 1, RECOVERY: 2}


@dataclass(frozen=True)
class Notice:
    """One thing to tell the owner."""

    kind: str  # alert | recovery | repeat
    rule: str
    app: str
    text: str
    raised_at: datetime


@dataclass
class _Entry:
    rule: str
    app: str
    status: str  # pending | firing
    started: datetime  # when the condition was first seen holding
    fired_at: datetime | None = None
    value: float | None = None
    detail: str = ""
    notified: bool = False  # the owner was told about this firing episode
    last_sent: datetime | None = None  # last alert or reminder sent
    calm_since: datetime | None = None  # firing, below threshold but not clearly: since when
    count: int = 1  # events folded into this episode
    from_event: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "app": self.app,
            "status": self.status,
            "started": _iso(self.started),
            "fired_at": _iso(self.fired_at),
            "value": self.value,
            "detail": self.detail,
            "notified": self.notified,
            "last_sent": _iso(self.last_sent),
            "calm_since": _iso(self.calm_since),
            "count": self.count,
            "from_event": self.from_event,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> _Entry:
        status = data["status"]
        if status not in (PENDING, FIRING):
            raise ValueError(f"unknown alert status {status!r}")
        started = _parse_time(data.get("started"))
        if started is None:
            raise ValueError("stored alert has no start time")
        return cls(
            rule=str(data["rule"]),
            app=str(data["app"]),
            status=status,
            started=started,
            fired_at=_parse_time(data.get("fired_at")),
            value=data.get("value"),
            detail=str(data.get("detail", "")),
            notified=bool(data.get("notified", False)),
            last_sent=_parse_time(data.get("last_sent")),
            calm_since=_parse_time(data.get("calm_since")),
            count=int(data.get("count", 1)),
            from_event=bool(data.get("from_event", False)),
        )


@dataclass(frozen=True)
class AlertView:
    """A read-only line for the ``alerts`` command."""

    rule: str
    app: str
    status: str
    since: datetime
    detail: str
    value: float | None
    notified: bool
    muted: bool
    count: int


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


def _parse_time(text: Any) -> datetime | None:
    if text is None:
        return None
    moment = datetime.fromisoformat(str(text))
    _require_aware(moment)
    return moment


def _require_aware(now: datetime) -> None:
    # Mixing naive and aware datetimes fails deep inside comparisons; refuse early.
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("alert times must be timezone-aware datetimes")


class AlertBook:
    """All alert state of the bot, and the only place that decides what to send."""

    def __init__(
        self,
        thresholds: Thresholds | ThresholdPolicy | None = None,
        *,
        cooldown: timedelta = DEFAULT_COOLDOWN,
    ) -> None:
        self.policy = as_policy(thresholds)
        self.cooldown = cooldown
        self._entries: dict[tuple[str, str], _Entry] = {}
        self._mutes: dict[str, datetime] = {}
        self._exits: dict[str, list[datetime]] = {}

    # -- sampled conditions -------------------------------------------------

    def update(self, conditions: Iterable[Condition], now: datetime) -> list[Notice]:
        """Feed one snapshot's conditions; returns the notices to send now.

        Pairs missing from ``conditions`` are left as they are: a failed
        measurement is no news, and only ``forget`` drops an app that is gone.
        """
        _require_aware(now)
        notices: list[Notice] = []
        notices.extend(self._expire_mutes(now))
        for condition in conditions:
            notices.extend(self._apply(condition, now))
        return notices

    def _apply(self, condition: Condition, now: datetime) -> list[Notice]:
        key = (condition.rule, condition.app)
        entry = self._entries.get(key)
        if entry is None:
            if not condition.active:
                return []
            entry = _Entry(condition.rule, condition.app, PENDING, started=now,
                           value=condition.value, detail=condition.detail)
            self._entries[key] = entry
            if condition.hold > timedelta(0):
                log.debug("alert %s/%s pending: %s", condition.rule, condition.app, condition.detail)
                return []
            return self._fire(entry, now)
        if entry.status == PENDING:
            if not condition.active:
                del self._entries[key]
                return []
            entry.value, entry.detail = condition.value, condition.detail
            if now - entry.started >= condition.hold:
                return self._fire(entry, now)
            return []
        # firing
        if condition.active:
            entry.value, entry.detail = condition.value, condition.detail
            entry.calm_since = None
            return self._maybe_remind(entry, now)
        if condition.clear:
            return self._resolve(entry, condition.detail, now)
        if condition.clear_after is not None:
            if entry.calm_since is None:
                entry.calm_since = now
            if now - entry.calm_since >= condition.clear_after:
                return self._resolve(entry, condition.detail, now)
        return []

    # -- events -------------------------------------------------------------

    def event(self, rule: str, app: str, now: datetime, detail: str, *, value: float | None = None) -> list[Notice]:
        """A Docker event that is an alert in itself (exit, oom, unhealthy): fires at once.

        The caller filters out exits homeport caused itself (stop, upgrade).
        For an OOM kill, send ``oom`` instead of ``exit`` (Docker's die event
        says OOMKilled), not both. Exits also count towards a restart loop.
        """
        _require_aware(now)
        notices = self._expire_mutes(now)
        notices.extend(self._raise(rule, app, now, detail, value))
        if rule in EXIT_RULES:
            notices.extend(self._count_exit(app, now, detail))
        return notices

    def _raise(self, rule: str, app: str, now: datetime, detail: str, value: float | None) -> list[Notice]:
        key = (rule, app)
        entry = self._entries.get(key)
        if entry is None or entry.status == PENDING:
            entry = _Entry(rule, app, PENDING, started=now, value=value, detail=detail, from_event=True)
            self._entries[key] = entry
            return self._fire(entry, now)
        entry.count += 1
        entry.value, entry.detail = value, detail
        entry.calm_since = None
        return self._maybe_remind(entry, now)

    def _count_exit(self, app: str, now: datetime, detail: str) -> list[Notice]:
        t = self.policy.for_app(app)
        recent = [moment for moment in self._exits.get(app, []) if now - moment < t.restart_loop_window]
        recent.append(now)
        # The window bounds the list; the cap guards against a clock jumping backwards.
        self._exits[app] = recent[-_MAX_EXITS_KEPT:]
        if len(recent) < t.restart_loop_count:
            return []
        window = format_duration(now - recent[0]) if now > recent[0] else "moments"
        loop_detail = f"restarting in a loop: {len(recent)} exits in {window}; last: {detail}"
        return self._raise(RESTART_LOOP, app, now, loop_detail, float(len(recent)))

    # -- transitions ----------------------------------------------------------

    def _fire(self, entry: _Entry, now: datetime) -> list[Notice]:
        entry.status = FIRING
        entry.fired_at = now
        entry.calm_since = None
        log.info("alert %s/%s firing: %s", entry.rule, entry.app, entry.detail)
        if self.is_muted(entry.app, now):
            entry.notified = False
            return []
        entry.notified = True
        entry.last_sent = now
        return [Notice(ALERT, entry.rule, entry.app, f"{entry.app}: {entry.detail}", now)]

    def _maybe_remind(self, entry: _Entry, now: datetime) -> list[Notice]:
        if self.is_muted(entry.app, now):
            return []
        if not entry.notified:
            return self._late_alert(entry, now)
        if entry.last_sent is not None and now - entry.last_sent < self.cooldown:
            return []
        entry.last_sent = now
        since = format_duration(now - (entry.fired_at or entry.started))
        text = f"{entry.app}: still firing after {since}: {entry.detail}"
        return [Notice(REPEAT, entry.rule, entry.app, text, now)]

    def _late_alert(self, entry: _Entry, now: datetime) -> list[Notice]:
        entry.notified = True
        entry.last_sent = now
        since = format_duration(now - (entry.fired_at or entry.started))
        text = f"{entry.app}: {entry.detail} (firing for {since}, was muted)"
        return [Notice(ALERT, entry.rule, entry.app, text, now)]

    def _resolve(self, entry: _Entry, detail: str, now: datetime) -> list[Notice]:
        del self._entries[(entry.rule, entry.app)]
        log.info("alert %s/%s resolved: %s", entry.rule, entry.app, detail)
        if not entry.notified or self.is_muted(entry.app, now):
            return []
        title = RULE_TITLES.get(entry.rule, entry.rule)
        lasted = format_duration(now - (entry.fired_at or entry.started))
        text = f"{entry.app}: {title} over after {lasted}"
        if detail:
            text += f" ({detail})"
        return [Notice(RECOVERY, entry.rule, entry.app, text, now)]

    # -- mutes ----------------------------------------------------------------

    def mute(self, target: str, until: datetime, now: datetime) -> None:
        """Silence notices about ``target`` (an app, ``host`` or ``all``) until ``until``."""
        _require_aware(until)
        _require_aware(now)
        if until <= now:
            raise ValueError("a mute must end in the future")
        self._mutes[target] = until

    def unmute(self, target: str, now: datetime) -> list[Notice]:
        """End a mute early; returns the alerts that fired unheard meanwhile and still fire."""
        _require_aware(now)
        if self._mutes.pop(target, None) is None:
            return []
        return self._release(now)

    def is_muted(self, app: str, now: datetime) -> bool:
        for target in (app, ALL):
            until = self._mutes.get(target)
            if until is not None and now < until:
                return True
        return False

    def mutes(self, now: datetime) -> dict[str, datetime]:
        """Active mutes: target → end."""
        return {target: until for target, until in sorted(self._mutes.items()) if now < until}

    def _expire_mutes(self, now: datetime) -> list[Notice]:
        expired = [target for target, until in self._mutes.items() if now >= until]
        if not expired:
            return []
        for target in expired:
            del self._mutes[target]
        return self._release(now)

    def _release(self, now: datetime) -> list[Notice]:
        notices: list[Notice] = []
        for entry in sorted(self._entries.values(), key=lambda e: (e.app, e.rule)):
            if entry.status == FIRING and not entry.notified and not self.is_muted(entry.app, now):
                notices.extend(self._late_alert(entry, now))
        return notices

    # -- queries and housekeeping -------------------------------------------

    def firing(self, now: datetime) -> list[AlertView]:
        """Firing alerts, app by app, for the ``alerts`` command."""
        return [
            AlertView(
                rule=entry.rule,
                app=entry.app,
                status=entry.status,
                since=entry.fired_at or entry.started,
                detail=entry.detail,
                value=entry.value,
                notified=entry.notified,
                muted=self.is_muted(entry.app, now),
                count=entry.count,
            )
            for entry in sorted(self._entries.values(), key=lambda e: (e.app, e.rule))
            if entry.status == FIRING
        ]

    def pending(self) -> list[tuple[str, str]]:
        return sorted(key for key, entry in self._entries.items() if entry.status == PENDING)

    def forget(self, app: str, rules: Iterable[str] | None = None) -> None:
        """Drop state silently: the app was removed, or the owner stopped it on purpose."""
        wanted = set(rules) if rules is not None else None
        for key in [key for key in self._entries if key[1] == app]:
            if wanted is None or key[0] in wanted:
                del self._entries[key]
        if wanted is None or wanted & EXIT_RULES or RESTART_LOOP in wanted:
            self._exits.pop(app, None)

    # -- persistence ----------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "entries": [entry.to_dict() for _, entry in sorted(self._entries.items())],
            "mutes": {target: _iso(until) for target, until in sorted(self._mutes.items())},
            "exits": {app: [_iso(moment) for moment in moments] for app, moments in sorted(self._exits.items())},
        }

    @classmethod
    def from_dict(
        cls,
        data: dict[str, Any],
        thresholds: Thresholds | ThresholdPolicy | None = None,
        *,
        cooldown: timedelta = DEFAULT_COOLDOWN,
    ) -> AlertBook:
        if data.get("version") != STATE_VERSION:
            raise ValueError(f"alert state version {data.get('version')!r} is not {STATE_VERSION}")
        book = cls(thresholds, cooldown=cooldown)
        for item in data.get("entries", []):
            entry = _Entry.from_dict(item)
            book._entries[(entry.rule, entry.app)] = entry
        for target, until in data.get("mutes", {}).items():
            moment = _parse_time(until)
            if moment is not None:
                book._mutes[str(target)] = moment
        for app, moments in data.get("exits", {}).items():
            book._exits[str(app)] = [m for m in (_parse_time(x) for x in moments) if m is not None]
        return book


def combine(notices: Sequence[Notice]) -> str:
    """One message for several notices raised together; alerts first, then reminders, then recoveries."""
    if not notices:
        return ""
    ordered = sorted(notices, key=lambda n: (_KIND_ORDER.get(n.kind, 9), n.app, n.rule))
    lines = [f"{_PREFIX.get(n.kind, n.kind.upper())} {n.text}" for n in ordered]
    if len(lines) == 1:
        return lines[0]
    counts: dict[str, int] = {}
    for notice in ordered:
        counts[notice.kind] = counts.get(notice.kind, 0) + 1
    names = {ALERT: ("alert", "alerts"), REPEAT: ("reminder", "reminders"), RECOVERY: ("recovery", "recoveries")}
    header = ", ".join(
        f"{count} {names.get(kind, (kind, kind))[count != 1]}" for kind, count in counts.items()
    )
    return "\n".join([header + ":", *lines])

"""The monitor: sampler, Docker events and the alert book tied together, with the outbox as its voice.

- Each sample is judged by the rules and fed to the alert book; the book
  decides what is news (pending → firing → resolved, cooldown, mutes).
- Docker events enter the same book at once: an unexpected exit (with its
  exit code and last log lines), an OOM kill, a failing health check; exits
  count towards a restart loop. Exits homeport caused itself (stop,
  restart, upgrade: ``Engine.mark_intended``) are not crashes, nor is an
  exit that Docker follows with a ``stop`` or ``destroy`` event: someone
  stopped or removed it on purpose (``docker stop``, ``docker rm -f``, a
  homeport that died while stopping it).
- The Docker engine going away and coming back is told to the owner, with
  how long it was gone; sampling and events simply go on afterwards.
- Notices raised close together go out as one message (a batch closes after
  ``QUIET_S`` without news, at most ``MAX_BATCH_S`` after it opened), through
  the outbox, so they survive a dead XMPP link and a bot restart.
- The book is saved in the state database after every change, so alerts,
  mutes and the restart counts survive a bot restart.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from bot.config import MonitorConfig
from bot.engine import CONTAINER_EVENT, ENGINE_DOWN, ENGINE_UP, Engine, EngineEvent
from bot.errors import EngineError
from bot.monitor import incidents
from bot.monitor.alerts import ALERT, RECOVERY, AlertBook, AlertView, Notice, combine
from bot.monitor.rules import HOST, OOM, UNHEALTHY, EXIT, ThresholdPolicy, evaluate
from bot.monitor.sampler import Sampler
from bot.monitor.snapshot import ContainerSample, Snapshot
from bot.outbox import Outbox
from bot.replies import Text, render
from bot.store import Store
from bot.tasks import Tasks

log = logging.getLogger(__name__)

STATE_KEY = "monitor.alerts"
# Docker's time of the last container event seen: after a restart of the bot
# the event stream resumes there, so a crash while the bot was down is told.
EVENTS_KEY = "monitor.events_seen"
REPLAY_AT_MOST = timedelta(hours=24)  # older news is no news: start from the present
# A die being handled at shutdown gets this long to reach the outbox.
SHUTDOWN_GRACE_S = 3.0
ENGINE_RULE = "engine"
# Notices raised close together go out as one message: a crash and the
# restart loop it starts, or every app of a host that ran out of memory. A
# batch closes once nothing happened for QUIET_S (exits count as something,
# so a flapping container's crash and loop alerts share one message), and at
# the latest MAX_BATCH_S after it opened.
QUIET_S = 0.75
MAX_BATCH_S = 3.0
# An exit told this long after it happened (replayed after a bot restart) says when it was.
OLD_NEWS = timedelta(seconds=30)
# Docker logs `stop` (docker stop, or our own stop) or `destroy` (rm -f) right
# after the `die` of a container stopped on purpose; wait this long for it.
DIE_SETTLE_S = 0.3
# Docker sends a burst of oom events, then die if the main process was the
# victim; wait this long for the die before reporting a process kill alone.
OOM_GRACE_S = 2.0
# An engine restart takes seconds: only an outage longer than this is told
# while it lasts; every outage is told when it ends.
ENGINE_DOWN_NOTICE_AFTER_S = 30.0
# After an outage, apps seen running this shortly before it and not running
# now are named: the engine stops containers as it shuts down, and without a
# restart policy nothing starts them again.
RECENTLY_RUNNING = timedelta(minutes=5)

EVENTS_RESTART_S = 5.0

CatalogThresholds = Callable[[], Mapping[str, Mapping[str, Any]]]


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


def merge_overrides(catalog: Mapping[str, Mapping[str, Any]],
                    config: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per-app thresholds: the catalog entry's, then the owner's config on top."""
    merged: dict[str, dict[str, Any]] = {app: dict(values) for app, values in catalog.items()}
    for app, values in config.items():
        merged.setdefault(app, {}).update(values)
    return merged


def catalog_overrides(alerts: Any) -> dict[str, Any]:
    """A catalog entry's ``alerts:`` (cpu_percent, memory_percent, for) as threshold overrides."""
    if alerts is None:
        return {}
    overrides: dict[str, Any] = {}
    if alerts.cpu_percent is not None:
        overrides["cpu_percent"] = alerts.cpu_percent
    if alerts.memory_percent is not None:
        overrides["memory_percent"] = alerts.memory_percent
    if alerts.duration is not None:  # seconds; `for` holds for both rules
        overrides["cpu_for"] = overrides["memory_for"] = alerts.duration
    return overrides


def installed_thresholds(installs: Any) -> dict[str, dict[str, Any]]:
    """Per-app overrides from the catalog entries of the installed apps (``bot.installs.InstallStore``)."""
    found = {}
    for record in installs.all():
        overrides = catalog_overrides(getattr(record.entry, "alerts", None))
        if overrides:
            found[record.app] = overrides
    return found


class Monitor:
    def __init__(
        self,
        engine: Engine,
        store: Store,
        outbox: Outbox,
        owners: Iterable[str],
        config: MonitorConfig,
        state_dir: Path,
        tasks: Tasks,
        *,
        catalog_thresholds: CatalogThresholds | None = None,
        on_change: Callable[[], Awaitable[None]] | None = None,
        now: Callable[[], datetime] = _utcnow,
    ) -> None:
        self.engine = engine
        self.store = store
        self.outbox = outbox
        self.owners = sorted(owners)
        self.config = config
        self.tasks = tasks
        self.catalog_thresholds = catalog_thresholds
        self.on_change = on_change
        self.now = now
        self.sampler = Sampler(engine, state_dir, config.interval, now=now)
        self._overrides: dict[str, dict[str, Any]] | None = None
        self._policy_cache: ThresholdPolicy | None = None
        self.book = self._load_book(self._policy())
        self._saved = self._serialised()
        self._waiting: list[Notice] = []
        self._sending: asyncio.Task[None] | None = None
        self._batch_opened = 0.0
        self._last_news = 0.0
        self._oom_seen: set[str] = set()  # containers with an oom event not yet explained
        self._stopped: dict[str, datetime] = {}  # container id -> time of its last stop/destroy event
        self.engine_down_since: datetime | None = None
        self._down_generation = 0
        self._last_running: dict[str, datetime] = {}  # app -> last sample that saw it running
        self._following = False

    # -- lifecycle --

    def start(self) -> None:
        self.tasks.spawn(self.sampler.run(self._on_snapshot), name="monitor:sampler")
        self.tasks.spawn(self._follow_events(), name="monitor:events")
        self._following = True

    async def settle(self) -> None:
        """At shutdown, before tasks are cancelled: let exits being looked at become notices."""
        await self.tasks.drain("monitor:die", timeout=SHUTDOWN_GRACE_S)

    def close(self) -> None:
        """At shutdown: notices still being gathered go to the outbox unsent; the book is saved."""
        if self._sending is not None:
            self._sending.cancel()
            self._sending = None
        self._persist_waiting()
        self._save()
        if self._following and self.engine_down_since is None:
            # The stream was live: everything up to now was seen. The next
            # start resumes here and hears of exits while the bot was away.
            self.store.put(EVENTS_KEY, time.time_ns())

    # -- what commands and the presence read --

    @property
    def latest(self) -> Snapshot | None:
        return self.sampler.latest

    async def current(self, app: str | None = None) -> list[ContainerSample]:
        """Containers as they are now (one list call) with the latest measured figures."""
        return await self.sampler.current(app)

    def firing(self) -> list[AlertView]:
        return self.book.firing(self.now())

    def mutes(self) -> dict[str, datetime]:
        return self.book.mutes(self.now())

    def running_apps(self) -> int | None:
        """Apps with a running container in the latest sample; None before the first."""
        snapshot = self.latest
        if snapshot is None:
            return None
        return sum(1 for samples in snapshot.apps.values() if any(s.running for s in samples))

    # -- owner actions --

    def mute(self, target: str, duration: timedelta) -> datetime:
        now = self.now()
        until = now + duration
        self.book.mute(target, until, now)
        self._save()
        log.info("alerts about %s muted until %s", target, until.isoformat(timespec="seconds"))
        return until

    def unmute(self, target: str) -> bool:
        """End a mute (``all``: every mute); alerts that fired unheard meanwhile are sent."""
        now = self.now()
        mutes = self.book.mutes(now)
        targets = list(mutes) if target == "all" else [target] if target in mutes else []
        notices: list[Notice] = []
        for item in targets:
            notices.extend(self.book.unmute(item, now))
        self._queue(notices)
        self._save()
        return bool(targets)

    def forget(self, app: str) -> None:
        """The owner stopped or removed the app: its alerts end silently."""
        self.book.forget(app)
        self._save()

    # -- samples --

    def _policy(self) -> ThresholdPolicy:
        catalog: Mapping[str, Mapping[str, Any]] = {}
        if self.catalog_thresholds is not None:
            try:
                catalog = self.catalog_thresholds()
            except Exception:  # a broken catalog source must not stop the monitoring
                log.exception("could not read per-app alert thresholds from the catalog")
        overrides = merge_overrides(catalog, self.config.apps)
        if overrides == self._overrides and self._policy_cache is not None:
            return self._policy_cache
        try:
            policy = ThresholdPolicy.from_config(self.config.thresholds, overrides)
        except ValueError as exc:
            # The config was validated at load; only catalog values can be bad here.
            log.warning("catalog alert thresholds ignored: %s", exc)
            policy = ThresholdPolicy.from_config(self.config.thresholds, self.config.apps)
        self._overrides, self._policy_cache = overrides, policy
        return policy

    async def _on_snapshot(self, snapshot: Snapshot) -> None:
        self._last_running = {app: when for app, when in self._last_running.items() if app in snapshot.apps}
        for app, samples in snapshot.apps.items():
            if any(s.running for s in samples):
                self._last_running[app] = snapshot.taken_at
        self.book.policy = self._policy()
        notices = self.book.update(evaluate(snapshot, self.book.policy), snapshot.taken_at)
        self._forget_vanished(snapshot)
        self._queue(notices)
        self._save()
        if self.on_change is not None:
            await self.on_change()

    def _forget_vanished(self, snapshot: Snapshot) -> None:
        tracked = {app for _, app in self.book.pending()} | {view.app for view in self.book.firing(snapshot.taken_at)}
        for app in tracked - set(snapshot.apps) - {HOST}:
            log.info("app %s has no containers any more; its alerts end", app)
            self.book.forget(app)

    # -- events --

    def _resume_from(self) -> int | None:
        seen = self.store.get(EVENTS_KEY)
        if not isinstance(seen, int):
            return None
        if self.now() - datetime.fromtimestamp(seen / 1e9, timezone.utc) > REPLAY_AT_MOST:
            return None
        return seen + 1

    async def _follow_events(self) -> None:
        while True:
            try:
                async for event in self.engine.follow_events(self._resume_from()):
                    try:
                        await self._on_event(event)
                    except Exception:
                        log.exception("monitor: handling Docker event %s of %s failed", event.action or event.kind,
                                      event.name or event.app)
            except Exception:  # the follower itself broke (a bug): events matter enough to start it again
                log.exception("monitor: Docker event follower failed; starting it again")
                await asyncio.sleep(EVENTS_RESTART_S)

    async def _on_event(self, event: EngineEvent) -> None:
        if event.kind == ENGINE_DOWN:
            await self._engine_down(event.at)
        elif event.kind == ENGINE_UP:
            await self._engine_up(event.down_since, event.down_for)
        elif event.kind == CONTAINER_EVENT:
            await self._container_event(event)

    async def _container_event(self, event: EngineEvent) -> None:
        cid = event.container_id
        if event.time_ns:
            self.store.put(EVENTS_KEY, event.time_ns)
        if event.action in ("start", "restart", "destroy", "health_status", "die"):
            self.sampler.invalidate(cid)
        if event.action in ("stop", "destroy"):
            self._stopped[cid] = event.at
            if len(self._stopped) > 1000:  # stops of containers that never died in our sight
                for old in sorted(self._stopped, key=self._stopped.__getitem__)[:500]:
                    del self._stopped[old]
        elif event.action == "die":
            self._news()  # keeps a batch open while a container flaps
            self.tasks.spawn(self._died(event), name=f"monitor:die:{event.name}")
        elif event.action == "oom":
            if cid not in self._oom_seen:
                self._oom_seen.add(cid)
                self.tasks.spawn(self._oom_without_die(event), name=f"monitor:oom:{event.name}")
        elif event.action == "health_status" and event.health == "unhealthy":
            self._raise(UNHEALTHY, event.app, incidents.unhealthy_detail(event.name), None)

    async def _died(self, event: EngineEvent) -> None:
        cid = event.container_id
        oom_event = cid in self._oom_seen
        self._oom_seen.discard(cid)
        if self.engine.exit_was_intended(cid):
            log.info("%s exited as homeport asked; no alert", event.name)
            return
        await asyncio.sleep(DIE_SETTLE_S)
        stopped = self._stopped.pop(cid, None)
        if stopped is not None and stopped >= event.at:
            log.info("%s was stopped or removed on purpose; no alert", event.name)
            return
        try:
            facts = (await self.engine.inspect_facts([cid])).get(cid)
        except EngineError as exc:
            log.warning("could not inspect %s after its exit: %s", event.name, exc)
            facts = None
        if facts is None:
            log.info("%s exited and is gone (removed); no alert", event.name)
            return
        code = event.exit_code if event.exit_code is not None else facts.info.exit_code
        oom = facts.info.oom_killed or oom_event
        if not oom and not incidents.is_crash(code, facts.restart_policy):
            log.info("%s finished with code %s; not a crash", event.name, code)
            return
        lines = await self._log_lines(cid, event.name)
        if oom:
            detail = incidents.oom_detail(event.name, code, facts.mem_limit, lines)
        else:
            detail = incidents.exit_detail(event.name, code, lines)
        if self.now() - event.at > OLD_NEWS:  # replayed after a restart of the bot
            detail = f"at {event.at:%H:%M:%S} UTC, {detail}"
        self._raise(OOM if oom else EXIT, event.app, detail, code)

    async def _oom_without_die(self, event: EngineEvent) -> None:
        await asyncio.sleep(OOM_GRACE_S)
        if event.container_id not in self._oom_seen:
            return  # the die came and told the whole story
        self._oom_seen.discard(event.container_id)
        try:
            facts = (await self.engine.inspect_facts([event.container_id])).get(event.container_id)
        except EngineError:
            facts = None
        limit = facts.mem_limit if facts else None
        lines = await self._log_lines(event.container_id, event.name)
        self._raise(OOM, event.app, incidents.oom_detail(event.name, None, limit, lines, still_running=True), None)

    async def _log_lines(self, container_id: str, name: str) -> list[str]:
        try:
            return incidents.last_lines(await self.engine.log_tail(container_id, incidents.LOG_LINES * 3))
        except EngineError as exc:
            log.info("no logs of %s for its alert: %s", name, exc)
            return []

    def _raise(self, rule: str, app: str, detail: str, value: float | None) -> None:
        self._queue(self.book.event(rule, app, self.now(), detail, value=value))
        self._save()

    # -- the engine going away --

    async def _engine_down(self, since: datetime) -> None:
        self.engine_down_since = since
        self._down_generation += 1
        self.tasks.spawn(self._tell_if_still_down(self._down_generation, since), name="monitor:engine-down")
        if self.on_change is not None:
            await self.on_change()

    async def _tell_if_still_down(self, generation: int, since: datetime) -> None:
        await asyncio.sleep(ENGINE_DOWN_NOTICE_AFTER_S)
        if self.engine_down_since is not None and self._down_generation == generation:
            self._engine_notice(ALERT, incidents.engine_down_text(since))

    async def _engine_up(self, down_since: datetime | None, down_for: float | None) -> None:
        self.engine_down_since = None
        self._down_generation += 1
        self.sampler.invalidate()
        not_running: list[str] = []
        try:
            after = await self.sampler.tick()
        except EngineError as exc:
            log.warning("monitor: first sample after the engine came back failed: %s", exc)
        else:
            recent = (down_since or self.now()) - RECENTLY_RUNNING
            not_running = sorted(app for app, samples in after.apps.items()
                                 if not any(s.running for s in samples)
                                 and self._last_running.get(app, recent) > recent)
            await self._on_snapshot(after)
        self._engine_notice(RECOVERY, incidents.engine_back_text(down_since, down_for, not_running))

    def _engine_notice(self, kind: str, text: str) -> None:
        now = self.now()
        if self.book.is_muted(HOST, now):
            log.info("engine notice not sent (muted): %s", text)
            return
        self._queue([Notice(kind, ENGINE_RULE, HOST, text, now)])

    # -- telling the owners --

    def _news(self) -> None:
        self._last_news = time.monotonic()

    def _queue(self, notices: list[Notice]) -> None:
        if not notices:
            return
        self._waiting.extend(notices)
        self._news()
        if self._sending is None:
            self._batch_opened = self._last_news
            self._sending = self.tasks.spawn(self._send_soon(), name="monitor:notify")

    async def _send_soon(self) -> None:
        while True:
            closes = min(self._last_news + QUIET_S, self._batch_opened + MAX_BATCH_S)
            wait = closes - time.monotonic()
            if wait <= 0:
                break
            await asyncio.sleep(wait)
        self._sending = None
        if self._persist_waiting():
            await self.outbox.flush()

    def _persist_waiting(self) -> bool:
        notices, self._waiting = self._waiting, []
        if not notices:
            return False
        text = combine(notices)
        raised = min(n.raised_at for n in notices).timestamp()
        for owner in self.owners:
            for chunk in render(Text(text)):
                self.outbox.put(owner, chunk, raised)
        log.info("told the owners: %s", text.replace("\n", " / ")[:300])
        return True

    # -- persistence --

    def _load_book(self, policy: ThresholdPolicy) -> AlertBook:
        data = self.store.get(STATE_KEY)
        if data:
            try:
                return AlertBook.from_dict(data, policy)
            except (ValueError, KeyError, TypeError) as exc:
                log.warning("stored alert state unreadable (%s); starting afresh", exc)
        return AlertBook(policy)

    def _serialised(self) -> str:
        return json.dumps(self.book.to_dict(), sort_keys=True)

    def _save(self) -> None:
        data = self._serialised()
        if data != self._saved:
            self.store.put(STATE_KEY, self.book.to_dict())
            self._saved = data

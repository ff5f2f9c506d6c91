"""The composition root: builds every part of the bot, owns its background
tasks and shuts everything down cleanly.

A transport (XMPP, or the console) is plugged in from outside so that the
same bot, with the same commands and state, runs on a phone's chat or in a
terminal.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol

from bot.catalog import scan_catalog
from bot.commandkit import Registry
from bot.config import Config
from bot.engine import Engine
from bot.errors import EngineError
from bot.incoming import Incoming
from bot.installer import Installer
from bot.installs import InstallStore
from bot.locks import AppLocks
from bot.monitor.service import Monitor, installed_thresholds
from bot.outbox import Outbox
from bot.reconcile import startup_report
from bot.router import Router
from bot.store import Store
from bot.tasks import Tasks
from commands import alerts, basics, catalog, lifecycle

log = logging.getLogger(__name__)

PRESENCE_INTERVAL_S = 15.0
COMMAND_DRAIN_S = 30.0


class Transport(Protocol):
    online: bool

    async def run(self) -> None: ...

    async def stop(self) -> None: ...

    async def send(self, to: str, text: str) -> bool: ...

    def set_status(self, text: str) -> None: ...


TransportFactory = Callable[[Callable[[Incoming], Awaitable[None]], Callable[[], Awaitable[None]]], Transport]


@dataclass
class Services:
    """What commands reach through their context."""

    config: Config
    engine: Engine
    store: Store
    locks: AppLocks
    tasks: Tasks
    started: float = field(default_factory=time.monotonic)
    extras: dict[str, Any] = field(default_factory=dict)

    def __getattr__(self, item: str) -> Any:
        extras = self.__dict__.get("extras", {})
        if item in extras:
            return extras[item]
        raise AttributeError(item)


def command_groups() -> list[Any]:
    return [basics.group, lifecycle.group, alerts.group, catalog.group]


class Homeport:
    def __init__(self, config: Config, transport_factory: TransportFactory):
        self.config = config
        self.tasks = Tasks()
        self.store = Store(config.state_dir)
        self.engine = Engine(config.docker.url, config.docker.timeout)
        self.locks = AppLocks()
        self.services = Services(config=config, engine=self.engine, store=self.store, locks=self.locks,
                                 tasks=self.tasks)
        # The app catalog: a broken catalog file is reported at start, never fatal.
        apps, problems = scan_catalog(config.catalog)
        installs = InstallStore(self.store)
        self.services.extras.update(catalog=apps, catalog_problems=problems, installs=installs,
                                    installer=Installer(self.engine, installs), installed_names=installs.names)
        # Everything the bot says on its own goes through the outbox (persisted first).
        self.outbox = Outbox(self.store, self._transport_send, confirm=self._transport_confirm)
        self.monitor = Monitor(self.engine, self.store, self.outbox, config.owners, config.monitor,
                               config.state_dir, self.tasks, on_change=self.refresh_presence,
                               catalog_thresholds=partial(installed_thresholds, installs))
        self.services.extras["monitor"] = self.monitor
        self.registry = Registry(command_groups())
        self.router = Router(self.registry, config.owners, self.services, self.send, self.tasks, self.locks,
                             config.limits, audit=self.store.audit, journal=self.store)
        self.transport = transport_factory(self.router.handle, self._on_online)
        self._stopping = asyncio.Event()
        self._last_presence: str | None = None

    async def send(self, to: str, text: str) -> None:
        """A reply: straight out when online, else kept in the outbox for the next session."""
        if await self.transport.send(to, text):
            return
        self.outbox.put(to, text, held=True)
        log.info("offline: reply to %s kept in the outbox: %.80r", to, text)

    async def _transport_send(self, to: str, text: str) -> bool:
        return await self.transport.send(to, text)

    async def _transport_confirm(self) -> bool:
        confirm = getattr(self.transport, "confirm", None)
        return True if confirm is None else await confirm()

    async def notify_owners(self, text: str) -> None:
        for owner in sorted(self.config.owners):
            self.outbox.put(owner, text)
        await self.outbox.flush()

    async def _on_online(self) -> None:
        self._last_presence = None  # re-send presence text on every new session
        await self.refresh_presence()
        self.outbox.connected()
        self.tasks.spawn(self.outbox.flush(), name="outbox:flush")

    async def refresh_presence(self) -> None:
        text = await self.presence_text()
        if text != self._last_presence:
            self._last_presence = text
            self.transport.set_status(text)

    async def presence_text(self) -> str:
        if self.monitor.engine_down_since is not None:
            return "Docker engine is not reachable"
        running = self.monitor.running_apps()  # from the latest sample: no Docker call
        if running is None:
            try:
                apps = await self.engine.apps()
            except EngineError:
                return "Docker engine is not reachable"
            running = sum(1 for infos in apps.values() if any(i.running for i in infos))
        text = f"{running} app{'s' if running != 1 else ''} running"
        firing = len(self.monitor.firing())
        return text + (f" · {firing} alert{'s' if firing != 1 else ''}" if firing else "")

    async def _presence_loop(self) -> None:
        while True:
            try:
                await self.refresh_presence()
            except Exception:
                log.exception("presence update failed")
            await asyncio.sleep(PRESENCE_INTERVAL_S)

    async def run(self) -> int:
        """Run until stopped; the exit status (1 when the transport died)."""
        log.info("homeport starting: owners %s, state in %s", ", ".join(sorted(self.config.owners)),
                 self.config.state_dir)
        try:
            await self.engine.ping()
            log.info("Docker engine reachable")
        except EngineError as exc:
            log.warning("%s; commands will say so until it is back", exc)
        await self._report_interrupted()
        transport_task = self.tasks.spawn(self.transport.run(), name="transport")
        self.tasks.spawn(self._presence_loop(), name="presence")
        self.monitor.start()
        self.tasks.spawn(self._startup_report(), name="startup-report")
        stop_task = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait({transport_task, stop_task}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop_task.cancel()
            # A console whose input ended still owes the replies of the
            # commands it sent; an XMPP session ending means shutdown anyway.
            await self.tasks.drain("command:", timeout=COMMAND_DRAIN_S)
            await self.shutdown()
        if transport_task.done() and not transport_task.cancelled() and transport_task.exception():
            # Exit non-zero so a supervisor (systemd Restart=on-failure) restarts us.
            log.error("the chat transport failed: %s", transport_task.exception())
            return 1
        return 0

    async def _report_interrupted(self) -> None:
        """Operations the previous run died in: tell the owners what they
        were and what state their app is in now."""
        entries = self.store.journal_open()
        for e in entries:
            when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(e.ts))
            try:
                infos = await self.engine.containers(e.app)
                now = ", ".join(f"{i.service} {i.state}" for i in infos) or "no containers"
            except EngineError as exc:
                now = str(exc)
            await self.notify_owners(f"homeport was stopped during `{e.command}` (sent by {e.sender} at {when}); "
                                     f"it did not finish. {e.app} now: {now}.")
            self.store.journal_end(e.id)
            log.warning("interrupted operation reported: %s (%s)", e.command, now)

    async def _startup_report(self) -> None:
        """Catalog problems and drift between install records and Docker."""
        text = await startup_report(self.services)
        if text:
            await self.notify_owners(text)

    def stop(self) -> None:
        self._stopping.set()

    async def shutdown(self) -> None:
        log.info("homeport stopping")
        try:
            await asyncio.wait_for(self.transport.stop(), 10)
        except Exception:
            log.exception("transport did not stop cleanly")
        await self.monitor.settle()
        await self.tasks.cancel_all()
        self.monitor.close()  # notices still gathering go to the outbox; alert state saved
        self.store.close()
        log.info("homeport stopped")

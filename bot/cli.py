"""The `homeport` command line: run, check, console, chat, catalog check, demo.

Logs go to stderr, one line per event, so journald (or a terminal) shows
them as they are.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import logging
import os
import signal
import sys
from pathlib import Path

from bot.config import Config, ConfigError, DockerConfig, XmppConfig, DEFAULT_CATALOG
from bot.config import load as load_config

log = logging.getLogger("homeport")


def _setup_logging(verbose: bool, quiet: bool = False) -> None:
    fmt = "%(levelname)s %(name)s: %(message)s"
    if not os.environ.get("JOURNAL_STREAM"):
        fmt = "%(asctime)s " + fmt  # journald stamps lines itself
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    logging.basicConfig(level=level, format=fmt, stream=sys.stderr)
    # slixmpp logs every stanza at DEBUG and chatty reconnect details at INFO.
    if not verbose:
        logging.getLogger("slixmpp").setLevel(logging.WARNING)


def _load(path: str) -> Config:
    try:
        return load_config(path)
    except ConfigError as exc:
        print(f"homeport: config error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


async def _run_app(app) -> int:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, app.stop)
        except (NotImplementedError, RuntimeError):
            pass
    return await app.run()


def cmd_run(args: argparse.Namespace) -> int:
    from bot.app import Homeport
    from bot.xmpp import XmppTransport

    config = _load(args.config)

    def transport(on_message, on_online):
        return XmppTransport(config.xmpp, config.owners, on_message, on_online)

    return asyncio.run(_run_app(Homeport(config, transport)))


def cmd_console(args: argparse.Namespace) -> int:
    from bot.app import Homeport
    from bot.console import ConsoleTransport

    if args.config:
        config = _load(args.config)
    else:
        state = Path(args.state_dir or Path.home() / ".local/state/homeport-console")
        config = Config(xmpp=XmppConfig(jid="homeport@console", password=""),
                        owners=frozenset({"owner@console"}), docker=DockerConfig(),
                        catalog=(DEFAULT_CATALOG,), state_dir=state)
    owner = sorted(config.owners)[0]

    def transport(on_message, on_online):
        return ConsoleTransport(owner, on_message, on_online)

    return asyncio.run(_run_app(Homeport(config, transport)))


def cmd_check(args: argparse.Namespace) -> int:
    config = _load(args.config)
    print(f"config: {args.config} is valid; owners: {', '.join(sorted(config.owners))}")
    return asyncio.run(_check(config))


async def _check(config: Config) -> int:
    from bot.engine import Engine
    from bot.errors import EngineError

    problems = 0
    engine = Engine(config.docker.url, config.docker.timeout)
    try:
        version = await engine.ping()
        apps = await engine.apps()
        print(f"docker: engine {version.get('Version', '?')} (API {version.get('ApiVersion', '?')}), "
              f"{len(apps)} app(s) with homeport.app labels")
    except EngineError as exc:
        print(f"docker: PROBLEM: {exc}")
        problems += 1
    ok, detail = await check_login(config.xmpp)
    print(f"xmpp: {'logged in as ' + config.xmpp.jid if ok else 'PROBLEM: ' + detail}")
    problems += 0 if ok else 1
    if config.catalog:
        from bot.catalog import check_dirs

        errors = check_dirs(list(config.catalog))
        for e in errors:
            print(f"catalog: PROBLEM: {e}")
        if not errors:
            print(f"catalog: {', '.join(str(c) for c in config.catalog)} valid")
        problems += len(errors)
    return 1 if problems else 0


async def check_login(cfg, timeout: float = 20.0) -> tuple[bool, str]:
    """Log in once with the bot's account; (ok, reason)."""
    from bot.xmpp import XmppTransport

    async def ignore(_msg) -> None:
        return None

    online = asyncio.Event()

    async def on_online() -> None:
        online.set()

    try:
        transport = XmppTransport(cfg, frozenset(), ignore, on_online, connect_timeout=timeout)
    except ValueError as exc:  # e.g. an unreadable CA file
        return False, str(exc)
    task = asyncio.ensure_future(transport.run())
    deadline = asyncio.get_running_loop().time() + timeout
    try:
        # The transport retries forever; a check stops at the first failure.
        while not online.is_set() and transport.last_error is None:
            if asyncio.get_running_loop().time() > deadline:
                return False, f"no session within {timeout:.0f} s"
            await asyncio.sleep(0.05)
        if online.is_set():
            return True, ""
        return False, transport.last_error or "unknown reason"
    finally:
        await transport.stop()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def cmd_chat(args: argparse.Namespace) -> int:
    from bot.chat import run_chat

    password = args.password or os.environ.get("HOMEPORT_CHAT_PASSWORD")
    if args.password_file:
        password = Path(args.password_file).read_text().strip()
    if not password:
        password = getpass.getpass(f"password for {args.jid}: ")
    return asyncio.run(run_chat(args.jid, password, args.to, args.host, args.port,
                                Path(args.ca_file) if args.ca_file else None))


def cmd_catalog_check(args: argparse.Namespace) -> int:
    from bot.catalog import check_dirs

    dirs = [Path(d) for d in args.dirs] or [DEFAULT_CATALOG]
    errors = check_dirs(dirs)
    for e in errors:
        print(e)
    if errors:
        print(f"{len(errors)} problem(s)", file=sys.stderr)
        return 1
    from bot.catalog import load_catalog

    cat = load_catalog(dirs)
    print(f"ok: {len(cat.names())} apps: {', '.join(cat.names())}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from bot.demo import run_demo

    return run_demo(Path(args.dir), keep_running=args.no_chat)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="homeport", description="Run a personal server's Docker apps from XMPP.")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("run", help="run the bot in the foreground")
    r.add_argument("--config", required=True)
    r.set_defaults(func=cmd_run)

    c = sub.add_parser("check", help="validate the config and reach Docker and the XMPP server")
    c.add_argument("--config", required=True)
    c.set_defaults(func=cmd_check)

    con = sub.add_parser("console", help="the bot with this terminal as its chat (no XMPP)")
    con.add_argument("--config")
    con.add_argument("--state-dir", help="state folder when no config is given")
    con.set_defaults(func=cmd_console)

    ch = sub.add_parser("chat", help="a small terminal XMPP client for the owner side")
    ch.add_argument("--jid", required=True, help="your JID (the owner)")
    ch.add_argument("--to", required=True, help="the bot's JID")
    ch.add_argument("--password", help="or env HOMEPORT_CHAT_PASSWORD, or --password-file, or asked")
    ch.add_argument("--password-file")
    ch.add_argument("--host", help="connect here instead of a DNS SRV lookup")
    ch.add_argument("--port", type=int)
    ch.add_argument("--ca-file", help="extra CA certificate to trust")
    ch.set_defaults(func=cmd_chat)

    cat = sub.add_parser("catalog", help="catalog tools")
    catsub = cat.add_subparsers(dest="catalog_command", required=True)
    cc = catsub.add_parser("check", help="validate catalog folders (default: the shipped catalog)")
    cc.add_argument("dirs", nargs="*")
    cc.set_defaults(func=cmd_catalog_check)

    d = sub.add_parser("demo", help="try homeport locally: throwaway Prosody, bot and an owner chat")
    d.add_argument("--dir", default=".hp-run", help="where the demo keeps its files")
    d.add_argument("--no-chat", action="store_true", help="keep the bot running without opening a chat")
    d.set_defaults(func=cmd_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # The chat client and the demo share the terminal with a person: only
    # warnings (why a connection failed) belong there.
    _setup_logging(args.verbose, quiet=args.command in ("chat", "demo"))
    return args.func(args) or 0


if __name__ == "__main__":
    raise SystemExit(main())

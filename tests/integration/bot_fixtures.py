"""Pytest fixtures that run the real bot: `homeport run --config FILE` as a
child process against the session's Prosody and a Docker engine.

* `bot_factory(**config)` → a started `BotProcess` (online, i.e. it logged
  "xmpp: online as"), stopped with SIGTERM at teardown.
* `BotProcess.stop()`, `.start()`, `.kill()` for restart and fault tests;
  `.log_text()` for assertions and failure messages.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.xmpp_fixtures import Account, ProsodyServer

REPO = Path(__file__).resolve().parents[2]
ONLINE_MARK = "xmpp: online as"


class BotProcess:
    def __init__(self, prosody: ProsodyServer, account: Account, root: Path, extra: dict[str, Any]):
        self.prosody = prosody
        self.account = account
        self.jid = account.jid
        self.root = root
        self.config_path = root / "config.yaml"
        self.log_path = root / "bot.log"
        self.state_dir = root / "state"
        config: dict[str, Any] = {
            "xmpp": {"jid": account.jid, "password": account.password, "host": prosody.host,
                     "port": prosody.port, "ca_file": str(prosody.ca_file)},
            "owners": [prosody.owner.jid],
            "state_dir": str(self.state_dir),
            # Tests type faster than a person; the limiter has its own unit tests.
            "limits": {"rate_burst": 100, "rate_per_minute": 600},
        }
        for key, value in extra.items():
            if isinstance(value, dict) and isinstance(config.get(key), dict):
                config[key] = {**config[key], **value}
            else:
                config[key] = value
        self.config_path.write_text(yaml.safe_dump(config))
        os.chmod(self.config_path, 0o600)
        self.proc: subprocess.Popen[bytes] | None = None
        self._online_seen = 0

    def start(self, timeout: float = 30.0) -> None:
        """Start and wait until the bot reports a new XMPP session."""
        before = self.log_text().count(ONLINE_MARK)
        with open(self.log_path, "ab") as logf:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "bot.cli", "run", "--config", str(self.config_path)],
                cwd=REPO, stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT)
        self.wait_online(before + 1, timeout)

    def wait_online(self, count: int, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.log_text().count(ONLINE_MARK) >= count:
                return
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"bot exited with {self.proc.returncode}:\n{self.log_text()[-3000:]}")
            time.sleep(0.05)  # polling the log for a condition, bounded
        raise AssertionError(f"bot not online within {timeout} s:\n{self.log_text()[-3000:]}")

    def online_count(self) -> int:
        return self.log_text().count(ONLINE_MARK)

    def stop(self, timeout: float = 40.0) -> int:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return proc.returncode if proc else 0
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise AssertionError(f"bot did not stop on SIGTERM within {timeout} s")

    def kill(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""


@pytest.fixture
def bot_factory(prosody: ProsodyServer) -> Iterator[Any]:
    made: list[BotProcess] = []
    roots: list[Path] = []

    def make(start: bool = True, account: Account | None = None, **extra: Any) -> BotProcess:
        root = Path(tempfile.mkdtemp(prefix="homeport-bot-"))
        roots.append(root)
        bot = BotProcess(prosody, account or prosody.fresh_account("bot"), root, extra)
        made.append(bot)
        if start:
            bot.start()
        return bot

    yield make
    for bot in made:
        bot.kill() if bot.proc is not None and bot.proc.poll() is not None else bot.stop()
    import shutil

    for root in roots:
        shutil.rmtree(root, ignore_errors=True)

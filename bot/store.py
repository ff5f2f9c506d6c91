"""homeport's state on disk: one SQLite database in `state_dir`.

It holds the audit log from the start; later features add their tables as
numbered migrations appended to `MIGRATIONS` (never edit a released one). The
file is created owner-only (0600) because installed apps' settings, secrets
included, are kept here.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

DB_NAME = "homeport.sqlite3"

MIGRATIONS: list[str] = [
    # 1: audit log
    """
    CREATE TABLE audit (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        ts REAL NOT NULL,
        sender TEXT NOT NULL,
        command TEXT NOT NULL,
        outcome TEXT NOT NULL,
        ok INTEGER NOT NULL
    );
    """,
    # 2: key/value state for small features (alert book, last sample …)
    """
    CREATE TABLE kv (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL,
        updated REAL NOT NULL
    );
    """,
    # 3: installed apps (catalog issue): everything needed to recreate them
    """
    CREATE TABLE installs (
        app TEXT PRIMARY KEY,
        entry TEXT NOT NULL,          -- the catalog entry as used, JSON
        settings TEXT NOT NULL,       -- setting values, JSON (secrets included: file is 0600)
        digests TEXT NOT NULL,        -- service -> image digest, JSON
        limits TEXT NOT NULL DEFAULT '{}',  -- owner's `limit` overrides, JSON
        created REAL NOT NULL,
        updated REAL NOT NULL
    );
    """,
    # 4: outbox (monitoring issue): messages waiting for the transport
    """
    CREATE TABLE outbox (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        created REAL NOT NULL,
        recipient TEXT NOT NULL,
        body TEXT NOT NULL,
        delivered REAL
    );
    CREATE INDEX outbox_pending ON outbox (delivered, id);
    """,
    # 5: journal of app operations in flight; a row left behind means the
    # bot died during the operation, and the owner is told after restart
    """
    CREATE TABLE journal (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        ts REAL NOT NULL,
        sender TEXT NOT NULL,
        app TEXT NOT NULL,
        command TEXT NOT NULL
    );
    """,
]


@dataclass(frozen=True)
class AuditEntry:
    ts: float
    sender: str
    command: str
    outcome: str
    ok: bool


@dataclass(frozen=True)
class JournalEntry:
    id: int
    ts: float
    sender: str
    app: str
    command: str


class Store:
    """A thin, synchronous wrapper: every statement is a local SQLite write of
    well under a millisecond, so it runs on the event loop thread."""

    def __init__(self, state_dir: Path):
        self.state_dir = Path(state_dir)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.state_dir, 0o700)
        self.path = self.state_dir / DB_NAME
        if not self.path.exists():
            # Create it owner-only before SQLite writes anything into it.
            fd = os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600)
            os.close(fd)
        os.chmod(self.path, 0o600)
        self.db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self.db.row_factory = sqlite3.Row
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute("PRAGMA busy_timeout=5000")
        self._migrate()

    def _migrate(self) -> None:
        (version,) = self.db.execute("PRAGMA user_version").fetchone()
        for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
            with self.transaction():
                for statement in _statements(script):
                    self.db.execute(statement)
                self.db.execute(f"PRAGMA user_version={number}")
            log.info("state database migrated to version %d", number)

    def transaction(self) -> "_Tx":
        return _Tx(self.db)

    def close(self) -> None:
        self.db.close()

    # -- audit log ---------------------------------------------------------

    def audit(self, sender: str, command: str, outcome: str, ok: bool) -> None:
        self.db.execute("INSERT INTO audit (ts, sender, command, outcome, ok) VALUES (?, ?, ?, ?, ?)",
                        (time.time(), sender, command, outcome, int(ok)))

    def history(self, limit: int = 20) -> list[AuditEntry]:
        rows = self.db.execute("SELECT ts, sender, command, outcome, ok FROM audit ORDER BY id DESC LIMIT ?",
                               (limit,)).fetchall()
        return [AuditEntry(r["ts"], r["sender"], r["command"], r["outcome"], bool(r["ok"])) for r in rows]

    # -- operations in flight ----------------------------------------------

    def journal_begin(self, sender: str, app: str, command: str) -> int:
        cur = self.db.execute("INSERT INTO journal (ts, sender, app, command) VALUES (?, ?, ?, ?)",
                              (time.time(), sender, app, command))
        return int(cur.lastrowid)

    def journal_end(self, entry_id: int) -> None:
        self.db.execute("DELETE FROM journal WHERE id=?", (entry_id,))

    def journal_open(self) -> list[JournalEntry]:
        rows = self.db.execute("SELECT id, ts, sender, app, command FROM journal ORDER BY id").fetchall()
        return [JournalEntry(r["id"], r["ts"], r["sender"], r["app"], r["command"]) for r in rows]

    # -- small keyed state -------------------------------------------------

    def put(self, key: str, value: Any) -> None:
        self.db.execute("INSERT INTO kv (key, value, updated) VALUES (?, ?, ?) "
                        "ON CONFLICT(key) DO UPDATE SET value=excluded.value, updated=excluded.updated",
                        (key, json.dumps(value), time.time()))

    def get(self, key: str, default: Any = None) -> Any:
        row = self.db.execute("SELECT value FROM kv WHERE key=?", (key,)).fetchone()
        return json.loads(row["value"]) if row else default


class _Tx:
    def __init__(self, db: sqlite3.Connection):
        self.db = db

    def __enter__(self) -> sqlite3.Connection:
        self.db.execute("BEGIN IMMEDIATE")
        return self.db

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self.db.execute("ROLLBACK" if exc_type else "COMMIT")


def _statements(script: str) -> list[str]:
    return [s.strip() for s in script.split(";") if s.strip()]

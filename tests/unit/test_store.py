"""The state database: created private, migrated once, survives reopening."""

import os
import stat

from bot.store import MIGRATIONS, Store


def test_database_is_private_and_survives_restart(tmp_path):
    s = Store(tmp_path / "state")
    s.audit("alice@example.org", "restart web", "web restarted in 1 s", True)
    s.audit("alice@example.org", "stop wiki", "Docker engine is not reachable", False)
    s.put("alerts", {"book": [1, 2]})
    s.close()
    mode = stat.S_IMODE(os.stat(tmp_path / "state" / "homeport.sqlite3").st_mode)
    assert mode == 0o600
    assert stat.S_IMODE(os.stat(tmp_path / "state").st_mode) == 0o700

    s2 = Store(tmp_path / "state")
    assert s2.db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    hist = s2.history(10)
    assert [e.command for e in hist] == ["stop wiki", "restart web"]
    assert [e.ok for e in hist] == [False, True]
    assert s2.get("alerts") == {"book": [1, 2]}
    assert s2.get("missing", "dflt") == "dflt"

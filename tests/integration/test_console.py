"""`homeport console`: the same bot and commands with the terminal as chat."""

from __future__ import annotations

import subprocess
import sys

from tests.integration.bot_fixtures import REPO


def test_console_runs_commands_on_real_containers(tmp_path, labelled_containers):
    app = labelled_containers.app_name("con")
    c = labelled_containers(app, service="main", stop_signal="SIGKILL")
    started = c.attrs["State"]["StartedAt"]
    script = f"whoami\nstatus\nrestart {app}\nrestart 'x; reboot'\n"
    proc = subprocess.run([sys.executable, "-m", "bot.cli", "console", "--state-dir", str(tmp_path / "state")],
                          cwd=REPO, input=script, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "You are owner@console" in out
    assert any(line.startswith(app) and "running" in line for line in out.splitlines())
    assert f"{app} restarted in" in out
    assert "unknown app 'x; reboot'" in out
    c.reload()
    assert c.attrs["State"]["StartedAt"] > started

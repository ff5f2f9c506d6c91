"""`monitor:` in the config: thresholds are judged by the rules at load, a bad key is one line naming it."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import pytest

from bot.config import ConfigError, load
from bot.monitor.rules import ThresholdPolicy

BASE = """
xmpp: {jid: bot@example.org, password: s3cret}
owners: [alice@example.org]
state_dir: ./state
"""


def write(tmp_path: Path, monitor: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(BASE + monitor)
    os.chmod(path, 0o600)
    return path


def test_defaults(tmp_path: Path) -> None:
    cfg = load(write(tmp_path, ""))
    assert cfg.monitor.interval == 10.0
    assert cfg.monitor.thresholds == {} and cfg.monitor.apps == {}


def test_thresholds_and_per_app_overrides(tmp_path: Path) -> None:
    cfg = load(write(tmp_path, """
monitor:
  interval: 5
  thresholds: {cpu_percent: 150, cpu_for: 10m, disk_percent: 85, host_memory_percent: null}
  apps:
    wiki: {memory_percent: 95, memory_for: 30s}
"""))
    assert cfg.monitor.interval == 5.0
    policy = ThresholdPolicy.from_config(cfg.monitor.thresholds, cfg.monitor.apps)
    assert policy.defaults.cpu_for == timedelta(minutes=10) and policy.defaults.host_memory_percent is None
    assert policy.for_app("wiki").memory_percent == 95 and policy.for_app("wiki").cpu_percent == 150
    assert policy.for_app("blog").memory_percent == 90


@pytest.mark.parametrize("monitor, message", [
    ("monitor: {thresholds: {cpu_prcent: 80}}",
     "'monitor.thresholds.cpu_prcent': unknown threshold 'cpu_prcent'; known: "),
    ("monitor: {thresholds: {memory_percent: 150}}",
     "'monitor.thresholds.memory_percent': threshold memory_percent must be between 0 and 100, got 150.0"),
    ("monitor: {thresholds: {cpu_for: 5 minutes}}", "'monitor.thresholds.cpu_for': threshold cpu_for: "),
    ("monitor: {apps: {wiki: {memory_percnt: 95}}}", "'monitor.apps.wiki.memory_percnt': unknown threshold"),
    ("monitor: {apps: {wiki: {disk_percent: 50}}}",
     "'monitor.apps.wiki.disk_percent': host thresholds can only be set in monitor.thresholds"),
    ("monitor: {apps: {host: {cpu_percent: 50}}}", "'monitor.apps.host': 'host' is reserved for host alerts"),
    ("monitor: {apps: {Wiki!: {cpu_percent: 50}}}", "'monitor.apps.Wiki!': not an app name"),
    ("monitor: {apps: {wiki: [cpu_percent]}}", "'monitor.apps.wiki' must be a mapping of thresholds"),
    ("monitor: {interval: 0}", "'monitor.interval' must be positive"),
    ("monitor: {intervall: 5}", "unknown key 'monitor.intervall'"),
])
def test_a_bad_monitor_key_is_one_line_naming_file_and_key(tmp_path: Path, monitor: str, message: str) -> None:
    path = write(tmp_path, monitor)
    with pytest.raises(ConfigError) as caught:
        load(path)
    text = str(caught.value)
    assert text.startswith(f"{path}: ") and message in text, text
    assert "\n" not in text

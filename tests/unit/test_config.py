"""Config loading: the YAML keys are a contract; mistakes stop at start."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from bot.config import ConfigError, load

GOOD = """
xmpp:
  jid: Bot@Example.org
  password: s3cret
  host: 127.0.0.1
  port: 5222
owners: [Alice@Example.org]
docker:
  url: unix:///var/run/docker.sock
catalog: [./catalog]
state_dir: ./state
"""


def write(tmp_path: Path, text: str, mode: int = 0o600) -> Path:
    p = tmp_path / "config.yaml"
    p.write_text(text)
    os.chmod(p, mode)
    return p


def test_good_config(tmp_path):
    cfg = load(write(tmp_path, GOOD))
    assert cfg.xmpp.jid == "bot@example.org"
    assert cfg.owners == frozenset({"alice@example.org"})
    assert cfg.state_dir == tmp_path / "state"
    assert cfg.catalog == (tmp_path / "catalog",)
    assert cfg.docker.url == "unix:///var/run/docker.sock"


@pytest.mark.parametrize("text,needle", [
    (GOOD.replace("  port: 5222", "  prot: 5222"), "unknown key 'xmpp.prot'"),
    (GOOD + "colour: blue\n", "unknown key 'colour'"),
    (GOOD.replace("  port: 5222", "  port: '5222'"), "'xmpp.port' must be an integer"),
    (GOOD.replace("  port: 5222", "  port: true"), "'xmpp.port' must be an integer"),
    (GOOD.replace("owners: [Alice@Example.org]\n", ""), "missing required key 'owners'"),
    (GOOD.replace("state_dir: ./state\n", ""), "missing required key 'state_dir'"),
    (GOOD.replace("owners: [Alice@Example.org]", "owners: [alice]"), "bare JIDs"),
    (GOOD.replace("owners: [Alice@Example.org]", "owners: [a@b/phone]"), "bare JIDs"),
    (GOOD.replace("  password: s3cret\n", ""), "missing required key 'xmpp.password'"),
    ("xmpp: [\n", "not valid YAML"),
    (GOOD.replace("jid: Bot@Example.org", "jid: !!python/object:os.system x"), "not valid YAML"),
])
def test_bad_config_one_line_naming_file_and_key(tmp_path, text, needle, monkeypatch):
    monkeypatch.delenv("HOMEPORT_XMPP_PASSWORD", raising=False)
    p = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load(p)
    msg = str(err.value)
    assert needle in msg
    assert str(p) in msg
    assert "\n" not in msg


def test_password_from_env_and_file(tmp_path, monkeypatch):
    monkeypatch.setenv("HOMEPORT_XMPP_PASSWORD", "from-env")
    cfg = load(write(tmp_path, GOOD.replace("  password: s3cret\n", "")))
    assert cfg.xmpp.password == "from-env"
    pw = tmp_path / "pw"
    pw.write_text("from-file\n")
    os.chmod(pw, 0o600)
    cfg = load(write(tmp_path, GOOD.replace("password: s3cret", f"password_file: {pw}")))
    assert cfg.xmpp.password == "from-file"


def test_world_readable_password_warns(tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        load(write(tmp_path, GOOD, mode=0o644))
    assert any("readable by other users" in r.message for r in caplog.records)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        load(write(tmp_path, GOOD, mode=0o600))
    assert not any("readable by other users" in r.message for r in caplog.records)


def test_malformed_owner_jid_refused(tmp_path):
    p = write(tmp_path, GOOD.replace("owners: [Alice@Example.org]", "owners: ['alice smith@example.org']"))
    with pytest.raises(ConfigError) as err:
        load(p)
    assert "'owners' entries must be bare JIDs" in str(err.value)

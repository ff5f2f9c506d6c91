"""Exits homeport causes are marked once: a crash after a restart still counts."""

from bot.engine import Engine


def test_intended_exit_mark_is_used_up_by_one_exit():
    engine = Engine(url="unix:///nonexistent.sock")
    engine.mark_intended("abc")
    assert engine.exit_was_intended("abc") is True
    assert engine.exit_was_intended("abc") is False  # the next die is a crash
    assert engine.exit_was_intended("other") is False

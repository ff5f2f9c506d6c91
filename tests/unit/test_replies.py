"""Rendering replies as chat text and splitting long ones."""

from bot.replies import MAX_MESSAGE_CHARS, Lines, Many, Table, Text, render


def test_table_columns_align():
    out = render(Table(rows=(("blog", "running"), ("wiki-long", "exited (1)")), header=("app", "state")))
    assert out == ["app        state\nblog       running\nwiki-long  exited (1)"]


def test_empty_table_says_so():
    assert render(Table(rows=(), title="Apps", empty="No apps.")) == ["Apps\nNo apps."]


def test_long_lines_split_on_line_boundaries_without_loss():
    lines = tuple(f"line {i} " + "x" * 90 for i in range(200))
    msgs = render(Lines(lines=lines))
    assert len(msgs) > 1
    assert all(len(m) <= MAX_MESSAGE_CHARS for m in msgs)
    assert "\n".join(msgs).split("\n") == list(lines)


def test_overlong_single_line_is_cut_not_dropped():
    msgs = render(Text("y" * (MAX_MESSAGE_CHARS * 2 + 5)))
    assert [len(m) for m in msgs] == [MAX_MESSAGE_CHARS, MAX_MESSAGE_CHARS, 5]


def test_many_concatenates_parts():
    assert render(Many(parts=(Text("a"), Lines(lines=(), title="t", empty="none")))) == ["a", "t\nnone"]

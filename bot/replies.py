"""Transport-neutral replies and their rendering as plain chat text.

Commands return these objects instead of strings so that one command set can
be shown in a chat client, on the console and in tests alike; the transport
decides how to draw them. Long replies are split into several messages on line
boundaries because many clients and servers cut or refuse huge stanzas.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# Well under common server stanza limits (Prosody's default is 256 KiB, but
# mobile clients render long messages badly).
MAX_MESSAGE_CHARS = 3000


@dataclass(frozen=True)
class Text:
    body: str


@dataclass(frozen=True)
class Table:
    rows: tuple[tuple[str, ...], ...]
    header: tuple[str, ...] | None = None
    title: str | None = None
    empty: str = "(nothing)"


@dataclass(frozen=True)
class Lines:
    """A block of verbatim lines (logs) that may be split across messages."""

    lines: tuple[str, ...]
    title: str | None = None
    empty: str = "(no lines)"


@dataclass(frozen=True)
class Many:
    """Several replies sent in order."""

    parts: tuple["Reply", ...] = field(default_factory=tuple)


Reply = Text | Table | Lines | Many


def text(body: str) -> Text:
    return Text(body)


def render(reply: "Reply | str") -> list[str]:
    """Render a reply as one or more chat messages."""
    if isinstance(reply, str):
        return _chunk(reply.splitlines() or [""])
    if isinstance(reply, Text):
        return _chunk(reply.body.splitlines() or [""])
    if isinstance(reply, Table):
        return _chunk(_table_lines(reply))
    if isinstance(reply, Lines):
        head = [reply.title] if reply.title else []
        return _chunk(head + (list(reply.lines) or [reply.empty]))
    if isinstance(reply, Many):
        out: list[str] = []
        for part in reply.parts:
            out.extend(render(part))
        return out
    raise TypeError(f"not a reply: {reply!r}")


def _table_lines(t: Table) -> list[str]:
    lines = [t.title] if t.title else []
    if not t.rows:
        return lines + [t.empty]
    rows = ([t.header] if t.header else []) + list(t.rows)
    ncols = max(len(r) for r in rows)
    widths = [0] * ncols
    for r in rows:
        for i, cell in enumerate(r):
            widths[i] = max(widths[i], len(cell))
    for r in rows:
        cells = [cell.ljust(widths[i]) for i, cell in enumerate(r)]
        lines.append("  ".join(cells).rstrip())
    return lines


def _chunk(lines: list[str], limit: int = MAX_MESSAGE_CHARS) -> list[str]:
    """Pack lines into messages of at most `limit` characters, splitting
    over-long lines rather than dropping them."""
    messages: list[str] = []
    cur: list[str] = []
    size = 0
    for line in lines:
        while len(line) > limit:
            if cur:
                messages.append("\n".join(cur))
                cur, size = [], 0
            messages.append(line[:limit])
            line = line[limit:]
        extra = len(line) + (1 if cur else 0)
        if cur and size + extra > limit:
            messages.append("\n".join(cur))
            cur, size = [], 0
            extra = len(line)
        cur.append(line)
        size += extra
    if cur:
        messages.append("\n".join(cur))
    return messages

"""The transport-neutral shape of a chat message that reached the bot.

Every transport (XMPP, the console, the test harness) turns what it received
into an `Incoming` and hands it to the router; nothing past the transport sees
a stanza.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Incoming:
    sender: str  # bare JID, normalised (lower-case local part and domain)
    text: str
    delayed: bool = False  # carried an XEP-0203 delay: offline delivery, do not execute
    resource: str | None = None


def normalise_jid(jid: str) -> str:
    """Bare JID in the canonical form used for owner comparison.

    XMPP local parts and domains are case-insensitive (nodeprep/nameprep
    fold case); the resource is dropped because owners are bare JIDs.
    """
    bare = jid.strip().split("/", 1)[0]
    return bare.lower()

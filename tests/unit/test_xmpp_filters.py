"""Stanza classification of the XMPP transport, on stanzas built without a network."""

from __future__ import annotations

import random
import ssl
from pathlib import Path

import pytest
from slixmpp.stanza import Message
from slixmpp.xmlstream import ET

from bot.backoff import Backoff
from bot.xmpp import (
    Verdict,
    carbon_kind,
    classify_message,
    is_delayed,
    session_jid,
    tls_context,
    to_incoming,
)

BOT = "bot@example.org"


def msg(xml: str) -> Message:
    # The stream's default namespace: stanzas parsed off the wire carry it.
    return Message(xml=ET.fromstring(xml.replace("<message", "<message xmlns='jabber:client'", 1)))


def carbon(kind: str, outer_from: str, inner_from: str, body: str = "restart web") -> Message:
    return msg(
        f"<message from='{outer_from}' to='{BOT}/homeport' type='chat'>"
        f"<{kind} xmlns='urn:xmpp:carbons:2'><forwarded xmlns='urn:xmpp:forward:0'>"
        f"<message xmlns='jabber:client' from='{inner_from}' to='{BOT}' type='chat'>"
        f"<body>{body}</body></message></forwarded></{kind}></message>"
    )


def test_owner_chat_message_is_accepted_with_bare_sender_and_resource() -> None:
    m = msg("<message from='Alice@Example.org/Phone' to='bot@example.org' type='chat'>"
            "<body>  restart web </body></message>")
    verdict, incoming = to_incoming(m, BOT)
    assert verdict is Verdict.ACCEPT
    assert incoming is not None
    assert incoming.sender == "alice@example.org"
    assert incoming.resource == "Phone"
    assert incoming.text == "  restart web "  # untouched: the router parses
    assert incoming.delayed is False


def test_message_without_type_is_normal_and_accepted() -> None:
    m = msg("<message from='alice@example.org/x'><body>status</body></message>")
    assert classify_message(m, BOT) is Verdict.ACCEPT


@pytest.mark.parametrize("mtype, verdict", [
    ("error", Verdict.ERROR),
    ("headline", Verdict.HEADLINE),
    ("groupchat", Verdict.GROUPCHAT),
])
def test_error_headline_groupchat_are_dropped(mtype: str, verdict: Verdict) -> None:
    m = msg(f"<message from='alice@example.org/x' type='{mtype}'><body>restart web</body></message>")
    assert classify_message(m, BOT) is verdict
    assert to_incoming(m, BOT) == (verdict, None)


@pytest.mark.parametrize("kind", ["received", "sent"])
def test_real_carbon_is_never_a_command(kind: str) -> None:
    m = carbon(kind, outer_from=BOT, inner_from="alice@example.org/phone")
    assert carbon_kind(m) == kind
    assert classify_message(m, BOT) is Verdict.CARBON


@pytest.mark.parametrize("kind", ["received", "sent"])
def test_carbon_not_from_own_bare_jid_is_forged(kind: str) -> None:
    m = carbon(kind, outer_from="alice@example.org/phone", inner_from="alice@example.org/phone")
    assert classify_message(m, BOT) is Verdict.FORGED_CARBON
    assert to_incoming(m, BOT)[1] is None


def test_carbon_from_own_account_with_other_case_is_still_ours() -> None:
    m = carbon("received", outer_from="Bot@Example.org", inner_from="alice@example.org/phone")
    assert classify_message(m, BOT) is Verdict.CARBON


def test_message_from_our_own_account_is_dropped() -> None:
    m = msg(f"<message from='{BOT}/laptop' type='chat'><body>status</body></message>")
    assert classify_message(m, BOT) is Verdict.FROM_SELF


@pytest.mark.parametrize("extra", ["", "<body></body>", "<active xmlns='http://jabber.org/protocol/chatstates'/>"])
def test_bodiless_message_is_dropped(extra: str) -> None:
    m = msg(f"<message from='alice@example.org/x' type='chat'>{extra}</message>")
    assert classify_message(m, BOT) is Verdict.NO_BODY


@pytest.mark.parametrize("delay", [
    "<delay xmlns='urn:xmpp:delay' from='example.org' stamp='2024-01-01T10:00:00Z'/>",
    "<x xmlns='jabber:x:delay' from='example.org' stamp='20240101T10:00:00'/>",
])
def test_delayed_message_is_passed_on_marked_delayed(delay: str) -> None:
    m = msg(f"<message from='alice@example.org/x' type='chat'><body>restart web</body>{delay}</message>")
    assert is_delayed(m)
    verdict, incoming = to_incoming(m, BOT)
    assert verdict is Verdict.ACCEPT
    assert incoming is not None and incoming.delayed is True


def test_delay_built_with_the_slixmpp_plugin_is_seen() -> None:
    from slixmpp.plugins.xep_0203 import stanza as delay_stanza
    from slixmpp.xmlstream import register_stanza_plugin

    register_stanza_plugin(Message, delay_stanza.Delay)
    m = Message()
    m["from"] = "alice@example.org/x"
    m["type"] = "chat"
    m["body"] = "status"
    assert not is_delayed(m)
    m["delay"]["stamp"] = "2024-01-01T10:00:00Z"
    assert is_delayed(m)


def test_session_jid_adds_a_fixed_resource_only_when_missing() -> None:
    assert session_jid("bot@example.org") == "bot@example.org/homeport"
    assert session_jid("bot@example.org/rack") == "bot@example.org/rack"


def test_tls_context_verifies_hostname_and_rejects_a_missing_ca_file(tmp_path: Path) -> None:
    ctx = tls_context(None)
    assert ctx.check_hostname is True
    assert ctx.verify_mode == ssl.CERT_REQUIRED
    with pytest.raises(ValueError, match="cannot load CA file"):
        tls_context(tmp_path / "missing.pem")


def test_backoff_grows_jittered_capped_and_resets() -> None:
    b = Backoff(base=1.0, cap=8.0, rng=random.Random(1))
    delays = [b.next_delay() for _ in range(8)]
    ceilings = [1, 2, 4, 8, 8, 8, 8, 8]
    for d, ceiling in zip(delays, ceilings):
        assert ceiling / 2 <= d <= ceiling
    assert len(set(delays)) == len(delays)  # jittered, not a fixed schedule
    b.reset()
    assert 0.5 <= b.next_delay() <= 1.0


def test_message_without_from_is_from_our_own_account() -> None:
    # RFC 6120 8.1.2.1: only our own server may omit `from`.
    assert classify_message(msg("<message type='chat'><body>status</body></message>"), BOT) is Verdict.FROM_SELF
    no_from_carbon = msg(
        "<message type='chat'><sent xmlns='urn:xmpp:carbons:2'><forwarded xmlns='urn:xmpp:forward:0'>"
        "<message xmlns='jabber:client' from='bot@example.org/x' to='alice@example.org'>"
        "<body>hi</body></message></forwarded></sent></message>")
    assert classify_message(no_from_carbon, BOT) is Verdict.CARBON

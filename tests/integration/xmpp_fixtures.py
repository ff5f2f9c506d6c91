"""Pytest fixtures for the real XMPP side: a sandbox Prosody and chat peers.

* `prosody` (session): one `ProsodySandbox` on 127.0.0.1 with TLS from a CA
  made for this run, and the accounts `bot`, `owner` and `stranger`.
  `prosody.restart()` restarts the server under running clients;
  `prosody.fresh_account("bot")` makes a never-used account, for tests that
  must not see offline messages left over by earlier tests.
* `owner_peer`, `stranger_peer` (function): connected `ChatPeer`s, torn down
  after the test. `chat_peer` is a factory for more (another resource of the
  owner, a second session of the bot's account, …).
"""

from __future__ import annotations

import itertools
import shutil
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio

from bot.config import XmppConfig
from bot.sandbox import ProsodySandbox
from tests.integration.chatpeer import ChatPeer


@dataclass(frozen=True)
class Account:
    jid: str
    password: str

    @property
    def user(self) -> str:
        return self.jid.split("@", 1)[0]


class ProsodyServer:
    """The session's Prosody with its known accounts."""

    def __init__(self, sandbox: ProsodySandbox) -> None:
        self.sandbox = sandbox
        self._serial = itertools.count(1)
        self.bot = self._register("bot", "bot-secret")
        self.owner = self._register("owner", "owner-secret")
        self.stranger = self._register("stranger", "stranger-secret")

    def _register(self, user: str, password: str) -> Account:
        return Account(self.sandbox.register(user, password), password)

    @property
    def host(self) -> str:
        return self.sandbox.host

    @property
    def port(self) -> int:
        return self.sandbox.port

    @property
    def domain(self) -> str:
        return self.sandbox.domain

    @property
    def ca_file(self) -> Path:
        return self.sandbox.ca_file

    def restart(self) -> None:
        """Stop and start Prosody; every client connection drops."""
        self.sandbox.restart()

    def fresh_account(self, prefix: str = "user") -> Account:
        return self._register(f"{prefix}{next(self._serial)}", f"{prefix}-secret")

    def xmpp_config(self, account: Account | None = None) -> XmppConfig:
        """The bot's `xmpp:` settings for this server (the bot account by default)."""
        acc = account or self.bot
        return XmppConfig(jid=acc.jid, password=acc.password, host=self.host, port=self.port,
                          ca_file=self.ca_file)

    def peer(self, account: Account, resource: str = "phone") -> ChatPeer:
        return ChatPeer(account.jid, account.password, self.host, self.port, self.ca_file, resource)


@pytest.fixture(scope="session")
def prosody() -> Iterator[ProsodyServer]:
    if shutil.which("prosody") is None:
        pytest.skip("prosody is not installed")
    # Under /tmp, not pytest's 0700 tmp dirs: the prosody user must reach it.
    root = Path(tempfile.mkdtemp(prefix="homeport-prosody-"))
    sandbox = ProsodySandbox(root)
    try:
        server = ProsodyServer(sandbox)
        sandbox.start()
        yield server
    finally:
        sandbox.stop()
        shutil.rmtree(root, ignore_errors=True)


PeerFactory = Callable[..., Awaitable[ChatPeer]]


@pytest_asyncio.fixture
async def chat_peer(prosody: ProsodyServer) -> AsyncIterator[PeerFactory]:
    """`await chat_peer(account, resource="phone")` → a connected ChatPeer."""
    peers: list[ChatPeer] = []

    async def make(account: Account, resource: str = "phone") -> ChatPeer:
        peer = prosody.peer(account, resource)
        await peer.connect()
        peers.append(peer)
        return peer

    yield make
    for peer in peers:
        await peer.disconnect()


@pytest_asyncio.fixture
async def owner_peer(prosody: ProsodyServer, chat_peer: PeerFactory) -> ChatPeer:
    return await chat_peer(prosody.owner)


@pytest_asyncio.fixture
async def stranger_peer(prosody: ProsodyServer, chat_peer: PeerFactory) -> ChatPeer:
    return await chat_peer(prosody.stranger)

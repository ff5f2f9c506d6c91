"""homeport: a chat-ops bot that runs a personal server's Docker apps from XMPP."""

__version__ = "0.1.0"

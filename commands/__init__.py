"""What the owner can say: one module per group of chat commands.

Command modules build on `bot.commandkit` and reach Docker, the store and the
catalog only through the `Context` they are handed; they never import the
Docker or XMPP modules.
"""

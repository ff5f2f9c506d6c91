"""Root test configuration: loads the fixture plugins for the real services."""

pytest_plugins = [
    "tests.integration.docker_fixtures",
    "tests.integration.xmpp_fixtures",
    "tests.integration.bot_fixtures",
]

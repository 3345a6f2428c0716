"""Fixtures shared by compat/slixmpp and compat/profanity."""

import pytest

from harness import Net, Server


@pytest.fixture(scope="session")
def server() -> Server:
    return Server.from_env()


@pytest.fixture
def net(server: Server) -> Net:
    return Net(server)

"""Fixtures of the Profanity suite (helpers in driver.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from driver import profanity_home  # noqa: E402


@pytest.fixture
def profanity_env(server):
    """One Profanity: (tmux, env, home); its tmux server is ended afterwards."""
    tmux, env, home = profanity_home(server.ca)
    yield tmux, env, home
    tmux.kill()


@pytest.fixture
def profanity_pair(server):
    """Two Profanity instances, each in its own HOME and tmux server."""
    made = [profanity_home(server.ca) for _ in range(2)]
    yield made
    for tmux, _env, _home in made:
        tmux.kill()

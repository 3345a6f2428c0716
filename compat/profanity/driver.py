"""Driving Profanity (Debian's package) for the compat tests: a private tmux server per
Profanity, typed at with `send-keys` and read with `capture-pane`, in a fresh HOME, trusting
exactly the server's certificate."""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

SESSION = "compat"


def require(tool: str) -> str:
    path = shutil.which(tool)
    if not path:
        pytest.fail(f"{tool} is not installed: run compat/run.sh as root (it apt-get installs it) "
                    f"or `sudo apt-get install {tool}`", pytrace=False)
    return path


class Tmux:
    """A tmux server of our own (private socket) running one program in one pane."""

    def __init__(self, socket: Path):
        self.socket = socket
        self.tmux = require("tmux")

    def cmd(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run([self.tmux, "-S", str(self.socket), *args], capture_output=True, text=True,
                              timeout=10, check=check)

    def start(self, argv: list[str], env: dict[str, str], width: int = 200, height: int = 50) -> None:
        command = "exec env " + " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items()) + " " + shlex.join(argv)
        self.cmd("new-session", "-d", "-s", SESSION, "-x", str(width), "-y", str(height), command)
        # Keep the pane after the program exits, so a crash leaves its last screen readable.
        self.cmd("set-option", "-t", SESSION, "remain-on-exit", "on", check=False)

    def type(self, text: str, enter: bool = True) -> None:
        self.cmd("send-keys", "-t", SESSION, "-l", text)
        if enter:
            time.sleep(0.1)
            self.cmd("send-keys", "-t", SESSION, "Enter")

    def screen(self) -> str:
        res = self.cmd("capture-pane", "-p", "-J", "-t", SESSION, check=False)
        return res.stdout

    def wait_screen(self, pattern: str, timeout: float = 15.0, what: str | None = None) -> re.Match:
        deadline = time.monotonic() + timeout
        while True:
            screen = self.screen()
            m = re.search(pattern, screen)
            if m:
                return m
            if time.monotonic() > deadline:
                raise AssertionError(f"profanity screen never showed {what or pattern!r} within {timeout}s; "
                                     f"screen:\n{screen}")
            time.sleep(0.2)

    def pane_dead(self) -> bool:
        res = self.cmd("display-message", "-p", "-t", SESSION, "#{pane_dead}", check=False)
        return res.stdout.strip() == "1"

    def kill(self) -> None:
        self.cmd("kill-server", check=False)


def profanity_home(ca: Path) -> tuple[Tmux, dict[str, str], Path]:
    """A fresh HOME (inside the run's temp dir, as profanity-*/, where run.sh's cleanup looks
    for tmux sockets) and a tmux server of its own for one Profanity; Profanity will trust
    exactly the certificate `ca`."""
    require("profanity")
    base = Path(os.environ.get("COMPAT_WORK") or tempfile.gettempdir())
    base = Path(tempfile.mkdtemp(prefix="profanity-", dir=base))
    home = base / "home"
    (home / ".config").mkdir(parents=True, exist_ok=True)
    (home / ".local" / "share").mkdir(parents=True, exist_ok=True)
    empty_dir = home / "no-ca-dir"
    empty_dir.mkdir(exist_ok=True)
    env = {
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "XDG_DATA_HOME": str(home / ".local" / "share"),
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "TERM": "xterm-256color",
        # Shown times are local times: make them UTC, as the tests compute them.
        "TZ": "UTC",
        # libstrophe uses OpenSSL's default verify paths: trust exactly the server's cert.
        "SSL_CERT_FILE": str(ca),
        "SSL_CERT_DIR": str(empty_dir),
    }
    return Tmux(base / "tmux.sock"), env, home


def profanity_log(home: Path) -> str:
    log = home / ".local" / "share" / "profanity" / "logs" / "profanity.log"
    return log.read_text(errors="replace") if log.exists() else ""


async def profanity_login(tmux: Tmux, env: dict, srv, account, before: tuple[str, ...] = ()) -> str:
    """Start Profanity, type the commands `before` (settings), /connect over STARTTLS, type
    the password; returns the bound full JID."""
    tmux.start([shutil.which("profanity"), "-l", "DEBUG"], env)
    await asyncio.to_thread(tmux.wait_screen, r"Type '/help' to show complete help", 15, "the welcome screen")
    for command in before:
        tmux.type(command)
    tmux.type(f"/connect {account.jid} server {srv.host} port {srv.port} tls force")
    await asyncio.to_thread(tmux.wait_screen, r"Enter password:", 10)
    tmux.type(account.password)
    m = await asyncio.to_thread(
        tmux.wait_screen, rf"({re.escape(account.jid)}/\S+) logged in successfully", 20, "a successful login")
    screen = tmux.screen()
    assert "certificate verification failed" not in screen.lower(), screen
    return m.group(1)


async def quit_profanity(tmux: Tmux) -> None:
    tmux.type("/quit")
    for _ in range(50):
        if tmux.pane_dead() or tmux.cmd("has-session", "-t", SESSION, check=False).returncode != 0:
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"profanity did not exit after /quit:\n{tmux.screen()}")

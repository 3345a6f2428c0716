"""Starling server processes for the hostile suite.

Each `Instance` is the real `starling` binary in its own temporary directory with its own
config: a separate process, so that `/proc/PID/status` shows the server's own memory, and
so that a test can kill it (`kill -9`, SIGTERM) and start it again on the same data.
Accounts are made with the real CLI (`harness.create_account`). The instance's stderr (the
server log) is kept in `server.log` for tests that read it and for the health check at the
end (no panic, a clean exit on SIGTERM).

The config is written from a dict. Keys that the binary under test does not know yet (a
fix that is not merged) are dropped, remembered in `missing`, and a test that needs one
skips with a reason saying which (`require`); see the README.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

import harness

from rawxmpp import Conn

DOMAIN = "localhost"


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return str(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    raise TypeError(v)


def render_toml(config: dict) -> str:
    top = [f"{k} = {toml_value(v)}" for k, v in config.items() if not isinstance(v, dict)]
    sections = []
    for name, table in config.items():
        if isinstance(table, dict):
            sections.append(f"\n[{name}]")
            sections.extend(f"{k} = {toml_value(v)}" for k, v in table.items())
    return "# Written by compat/hostile for one test run. Loopback only.\n" + "\n".join(top + sections) + "\n"


def merge(base: dict, overrides: dict) -> dict:
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in base.items()}
    for k, v in overrides.items():
        if isinstance(v, dict):
            out.setdefault(k, {}).update(v)
        else:
            out[k] = v
    return out


def rss_kib(pid: int) -> int:
    """VmRSS of a process, in KiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time the process has used, in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


# /proc/net/tcp states (include/net/tcp_states.h).
TCP_STATES = {1: "ESTABLISHED", 2: "SYN_SENT", 3: "SYN_RECV", 4: "FIN_WAIT1", 5: "FIN_WAIT2", 6: "TIME_WAIT",
              7: "CLOSE", 8: "CLOSE_WAIT", 9: "LAST_ACK", 10: "LISTEN", 11: "CLOSING"}


def tcp_socket(local_port: int, remote_port: int) -> tuple[str, int, int] | None:
    """(state, tx_queue, rx_queue) of the IPv4 TCP socket 127.0.0.x:local_port ->
    127.0.0.x:remote_port, or None if there is none (any more)."""
    want_local, want_remote = f"{local_port:04X}", f"{remote_port:04X}"
    found = None
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            parts = line.split()
            loc, rem, st, queues = parts[1], parts[2], parts[3], parts[4]
            if loc.endswith(":" + want_local) and rem.endswith(":" + want_remote):
                tx, rx = queues.split(":")
                state = TCP_STATES.get(int(st, 16), st)
                found = (state, int(tx, 16), int(rx, 16))
                if state == "ESTABLISHED":
                    return found
    return found


class Instance:
    """One server process with its own directory, config and ports."""

    BASE = {
        "domains": [DOMAIN],
        "data_dir": "data",
        "log": {"level": "info"},
        "c2s": {
            "require_encryption": True,
        },
        # Several instances run at once: none listens for other servers.
        "s2s": {"listen": []},
        # Nor for components (the default 127.0.0.1:5347 would clash between instances).
        "components": {"listen": []},
        "auth": {
            # Wrong-password tests stay quick; the value still applies to both cases alike.
            "failure_delay_ms": 50,
        },
    }

    def __init__(self, name: str, root: Path, binary: str, config: dict, cert_from: "Instance | None" = None):
        self.name = name
        self.dir = root / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.bin = binary
        self.config_path = self.dir / "starling.toml"
        self.log_path = self.dir / "server.log"
        self.data = self.dir / "data"
        self.wanted = merge(self.BASE, config)
        self.missing: list[str] = []
        self.proc: subprocess.Popen | None = None
        self.port = self.tls_port = 0
        self.exits: list[int] = []
        self._cert_from = cert_from
        self._log_file = None
        # Every process of this instance (check, serve, the CLI) runs under this umask: the
        # usual 022, with which files are world-readable unless the server says otherwise.
        self.umask = 0o022

    # --- config ----------------------------------------------------------------------------

    def _write_config(self) -> None:
        self.port, self.tls_port = free_ports(2)
        config = merge(self.wanted, {"c2s": {"listen": [f"127.0.0.1:{self.port}"],
                                             "listen_tls": [f"127.0.0.1:{self.tls_port}"]}})
        if self._cert_from is not None:
            # Every instance serves the first one's certificate: one CA file for the tests,
            # and no key generation per instance.
            src = self._cert_from.data / "certs"
            config = merge(config, {"tls": {"cert": str(src / f"{DOMAIN}.crt"), "key": str(src / f"{DOMAIN}.key")}})
        self.config_path.write_text(render_toml(config))
        # Keys this binary does not know (a fix not merged yet): `starling check` names them
        # all at once; drop them and remember which, so that the tests needing them skip.
        check = subprocess.run([self.bin, "--config", str(self.config_path), "check"], capture_output=True,
                               text=True, timeout=60, umask=self.umask)
        unknown = re.findall(r"`([A-Za-z0-9_.]+)`: unknown key", check.stdout + check.stderr)
        if unknown:
            self.missing = sorted(set(unknown))
            for key in self.missing:
                section, _, name = key.partition(".")
                if name:
                    config.get(section, {}).pop(name, None)
                else:
                    config.pop(section, None)
            self.config_path.write_text(render_toml(config))

    def require(self, *keys: str) -> None:
        """Skip the calling test if the binary does not know one of these config keys."""
        import pytest
        # An unknown section is reported as one key (`roster`), an unknown key in a known
        # section by its full name (`auth.ip_window`).
        absent = [k for k in keys if k in self.missing or k.split(".")[0] in self.missing]
        if absent:
            pytest.skip(f"the server under test has no config key {', '.join(absent)} (fix not merged yet)")

    @property
    def ca(self) -> str:
        src = self._cert_from or self
        return str(src.data / "certs" / f"{DOMAIN}.crt")

    @property
    def db_path(self) -> Path:
        return self.data / "starling.db"

    # --- process ---------------------------------------------------------------------------

    def start(self) -> "Instance":
        umask = self.umask
        for attempt in range(3):
            self._write_config()
            check = subprocess.run([self.bin, "--config", str(self.config_path), "check"], capture_output=True,
                                   text=True, timeout=60, umask=umask)
            if check.returncode != 0:
                raise RuntimeError(f"starling check failed for {self.name}:\n{check.stdout}\n{check.stderr}")
            offset = self.log_size()
            self._log_file = open(self.log_path, "ab")
            self.proc = subprocess.Popen([self.bin, "--config", str(self.config_path), "serve"], stdout=self._log_file,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, umask=umask)
            # compat/run.sh ends these if pytest itself is killed (a per-test timeout exits
            # without running fixture teardown).
            pidfile = os.environ.get("HOSTILE_PIDFILE")
            if pidfile:
                with open(pidfile, "a") as f:
                    f.write(f"{self.proc.pid}\n")
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    break
                if self._listening() and Path(self.ca).exists() and self._started_logged(offset):
                    # The SIGTERM handler is installed right after that line: a moment more,
                    # so that a test stopping the server at once gets a clean shutdown.
                    time.sleep(0.1)
                    return self
                time.sleep(0.05)
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
                raise RuntimeError(f"{self.name}: not listening within 20 s")
            self.exits.append(self.proc.returncode)
            self.proc = None
            if "Address already in use" not in self.log_path.read_text(errors="replace"):
                raise RuntimeError(f"{self.name} exited at start:\n{self.log_tail()}")
        raise RuntimeError(f"{self.name}: could not start after 3 attempts (ports taken)")

    def _started_logged(self, offset: int) -> bool:
        """This process logged that it started (the log file is appended to across restarts)."""
        return re.search(r"Starling \S+ started", self.log_since(offset)) is not None

    def _listening(self) -> bool:
        for port in (self.port, self.tls_port):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            except OSError:
                return False
        return True

    @property
    def pid(self) -> int:
        assert self.proc is not None and self.proc.poll() is None, f"{self.name} is not running"
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM and wait; returns the exit status (None -> killed after timeout = -9)."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        rc = self.proc.returncode
        self.exits.append(rc)
        self.proc = None
        if self._log_file:
            self._log_file.close()
        return rc

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self.exits.append(self.proc.returncode)
        self.proc = None
        if self._log_file:
            self._log_file.close()

    def rss_kib(self) -> int:
        return rss_kib(self.pid)

    def cpu(self) -> float:
        return cpu_seconds(self.pid)

    def fds(self) -> int:
        return open_fds(self.pid)

    # --- log -------------------------------------------------------------------------------

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_size(self) -> int:
        return self.log_path.stat().st_size if self.log_path.exists() else 0

    def log_since(self, offset: int) -> str:
        with open(self.log_path, "rb") as f:
            f.seek(offset)
            return f.read().decode(errors="replace")

    def log_tail(self, n: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-n:])

    def panics(self) -> list[str]:
        return [l for l in self.log_text().splitlines() if re.search(r"panicked", l)]

    # --- accounts and clients --------------------------------------------------------------

    @property
    def server(self) -> harness.Server:
        """The instance as the compat harness describes a server (for slixmpp clients and
        the CLI)."""
        return harness.Server(bin=self.bin, config=str(self.config_path), domain=DOMAIN, host="127.0.0.1",
                              port=self.port, tls_port=self.tls_port, ca=Path(self.ca), log=self.log_path)

    def cli(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
        return self.server.cli(*args, stdin=stdin)

    def account(self, prefix: str = "u") -> harness.Account:
        return harness.create_account(self.server, prefix)

    def conn(self, *, direct_tls: bool = False, **kw) -> Conn:
        port = self.tls_port if direct_tls else self.port
        return Conn("127.0.0.1", port, DOMAIN, self.ca, direct_tls=direct_tls, **kw)

    def login(self, account: harness.Account, resource: str | None = "r", *, mech: str = "PLAIN",
              presence: bool | str = True, password: str | None = None, direct_tls: bool = False, **kw) -> Conn:
        """A bound session (STARTTLS unless direct_tls), with initial presence unless
        presence=False (a string is sent as the presence's content)."""
        c = self.conn(direct_tls=direct_tls, **kw)
        try:
            c.secure()
            result = c.auth(account.local, password if password is not None else account.password, mech)
            assert result == "success", f"login of {account.jid} failed: {result}"
            c.bind(resource)
            if presence is not False:
                c.presence(presence if isinstance(presence, str) else "")
        except BaseException:
            c.abort()
            raise
        return c

"""Fixtures of the hostile suite: server instances (separate `starling serve` processes with
their own configs), and the figures each test measured, printed at the end of the run."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from instance import Instance  # noqa: E402

REPO = Path(__file__).resolve().parents[2]

# The main instance: short timeouts where tests wait for them; the failed-login throttle off
# (tests that fail logins on purpose would trip it; `brute` has it on, tight).
MAIN_CONFIG = {
    # Two domains: a restarted stream must not switch from one to the other (T20).
    "domains": ["localhost", "second.localhost"],
    "c2s": {
        # Tests wait for this to pass (slowloris, idle connections): keep it short.
        "auth_timeout": 3,
    },
    "auth": {
        "failures_per_ip": 0,
        "failures_per_account": 0,
    },
}


class Figures:
    """What each test measured, printed in the terminal summary so that it can be quoted."""

    def __init__(self):
        self.rows: list[tuple[str, str, str]] = []
        self.current = "?"

    def __call__(self, name: str, value, limit: str = "") -> None:
        text = f"{value:.3f}" if isinstance(value, float) else str(value)
        self.rows.append((self.current, name, text + (f"   (limit {limit})" if limit else "")))
        print(f"[figure] {self.current}: {name} = {text}" + (f" (limit {limit})" if limit else ""))


FIGURES = Figures()


@pytest.fixture(autouse=True)
def _figure_owner(request):
    FIGURES.current = request.node.name
    yield


@pytest.fixture
def figure() -> Figures:
    return FIGURES


def pytest_terminal_summary(terminalreporter):
    if not FIGURES.rows:
        return
    terminalreporter.section("hostile suite: measured figures")
    for test, name, value in FIGURES.rows:
        terminalreporter.write_line(f"{test}: {name} = {value}")


class Instances:
    """Creates server instances on demand; at the end stops them all and checks their health:
    still alive (unless a test killed it on purpose), exit 0 within 15 s of SIGTERM, no panic
    in the log."""

    def __init__(self, root: Path, binary: str):
        self.root = root
        self.bin = binary
        self.all: list[Instance] = []
        self.first: Instance | None = None

    def new(self, name: str, config: dict | None = None, start: bool = True) -> Instance:
        inst = Instance(name, self.root, self.bin, config or {}, cert_from=self.first)
        self.all.append(inst)
        if start:
            inst.start()
        if self.first is None:
            self.first = inst
        return inst

    def finish(self) -> list[str]:
        problems = []
        for inst in self.all:
            if inst.proc is not None:
                if inst.proc.poll() is not None:
                    problems.append(f"{inst.name}: the server died during the run (exit {inst.proc.returncode})")
                    inst.proc = None
                else:
                    rc = inst.stop()
                    if rc != 0:
                        problems.append(f"{inst.name}: exit {rc} on SIGTERM (expected 0 within 15 s)")
            for line in inst.panics():
                problems.append(f"{inst.name}: panic in the log: {line}")
        return problems


@pytest.fixture(scope="session")
def instances():
    binary = os.environ.get("STARLING_BIN") or str(REPO / "target" / "debug" / "starling")
    if not os.access(binary, os.X_OK):
        pytest.exit(f"no server binary at {binary}: run through compat/run.sh, or cargo build", returncode=2)
    base = os.environ.get("COMPAT_WORK")
    root = Path(tempfile.mkdtemp(prefix="hostile.", dir=base))
    pool = Instances(root, binary)
    yield pool
    problems = pool.finish()
    for inst in pool.all:
        if problems:
            print(f"--- last lines of {inst.name}'s log ({inst.log_path}):\n{inst.log_tail(25)}", file=sys.stderr)
    if os.environ.get("COMPAT_KEEP") == "1":
        print(f"kept {root}", file=sys.stderr)
    else:
        shutil.rmtree(root, ignore_errors=True)
    assert not problems, "server health at the end of the hostile suite:\n  " + "\n  ".join(problems)


@pytest.fixture(scope="session")
def main(instances) -> Instance:
    """The shared instance for tests that do not measure memory or restart the server."""
    return instances.new("main", MAIN_CONFIG)


@pytest.fixture(scope="session")
def mem(instances, main) -> Instance:
    """An instance nobody else uses, so that its RSS is what one test did to it. Same
    config as `main`."""
    return instances.new("mem", MAIN_CONFIG)

#!/usr/bin/env bash
# Starling interop ("compat") suite: drives a throwaway Starling instance with client
# software we did not write (slixmpp from PyPI and from Debian, Profanity from Debian), and
# the adversarial suite (compat/hostile: raw-socket attacks on separate server processes).
#
#   bash compat/run.sh                 # everything
#   bash compat/run.sh -k roster       # extra arguments go to pytest
#   COMPAT_SUITES=hostile bash compat/run.sh   # only some suites
#
# Environment:
#   STARLING_BIN      server binary used as it is (default target/debug/starling, brought up
#                     to date with cargo build first)
#   PYTHON            interpreter used to create compat/.venv (default python3)
#   COMPAT_KEEP=1     keep the temporary directory (config, data, logs) afterwards
#   COMPAT_LOG_LEVEL  the server's log filter (default info)
#   COMPAT_SUITES     which suites, of: slixmpp profanity hostile (default all three)
#
# Exits non-zero if anything fails. Every wait is bounded; see compat/README.md.
set -euo pipefail

COMPAT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$COMPAT_DIR/.." && pwd)"
cd "$REPO_ROOT"

STARLING_BIN="${STARLING_BIN:-target/debug/starling}"
case "$STARLING_BIN" in /*) ;; *) STARLING_BIN="$REPO_ROOT/$STARLING_BIN" ;; esac
VENV="$COMPAT_DIR/.venv"
PYTHON="${PYTHON:-python3}"
# The whole pytest run (all suites) must finish within this many seconds: about 1 minute for
# slixmpp and Profanity, about 2 minutes for hostile on the debug build.
SUITE_TIMEOUT="${COMPAT_SUITE_TIMEOUT:-420}"
SUITES="${COMPAT_SUITES:-slixmpp profanity hostile}"
START_TIME=$SECONDS

log() { printf '[compat] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

is_root() { [ "$(id -u)" = 0 ]; }
APT_UPDATED=0
apt_install() {
    # Installs Debian packages when running as root (as CI does); otherwise explains.
    if ! is_root; then
        die "missing: $*. Install with: sudo apt-get install -y $*"
    fi
    command -v apt-get >/dev/null || die "missing: $* and no apt-get to install them"
    if [ "$APT_UPDATED" = 0 ]; then
        log "apt-get update"
        DEBIAN_FRONTEND=noninteractive timeout 300 apt-get update -qq >/dev/null || die "apt-get update failed"
        APT_UPDATED=1
    fi
    log "apt-get install $*"
    DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y -qq --no-install-recommends "$@" >/dev/null \
        || die "apt-get install $* failed"
}

# --- 1. prerequisites: Debian packages ---------------------------------------------------
need_pkgs=()
case " $SUITES " in
    *" profanity "*)
        command -v tmux >/dev/null || need_pkgs+=(tmux)
        command -v profanity >/dev/null || need_pkgs+=(profanity)
        ;;
esac
command -v "$PYTHON" >/dev/null || need_pkgs+=(python3)
case " $SUITES " in
    *" slixmpp "*)
        # Debian's own slixmpp (1.8.3 on Debian 12), run with the system interpreter by
        # slixmpp/test_debian_slixmpp.py; the venv has the PyPI one.
        /usr/bin/python3 -c 'import slixmpp' >/dev/null 2>&1 || need_pkgs+=(python3-slixmpp)
        ;;
esac
if [ ${#need_pkgs[@]} -gt 0 ]; then apt_install "${need_pkgs[@]}"; fi

# --- 2. the server binary ------------------------------------------------------------------
if [ "$STARLING_BIN" = "$REPO_ROOT/target/debug/starling" ]; then
    # Always (a no-op when up to date): a binary from an older state of the tree would be
    # tested in place of this one.
    log "building the server (cargo build)"
    timeout 3600 cargo build --bin starling || die "cargo build failed"
elif [ ! -x "$STARLING_BIN" ]; then
    die "STARLING_BIN=$STARLING_BIN does not exist or is not executable"
fi
"$STARLING_BIN" --version >/dev/null || die "$STARLING_BIN does not run"

# --- 3. the Python venv with pinned packages -----------------------------------------------
make_venv() {
    rm -rf "$VENV"
    "$PYTHON" -m venv "$VENV" >/dev/null 2>&1
}
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import sys' >/dev/null 2>&1; then
    log "creating $VENV"
    if ! make_venv; then
        # Debian's python3 needs python3-venv (ensurepip) for this.
        apt_install python3-venv
        make_venv || die "$PYTHON -m venv $VENV failed"
    fi
fi
req_hash="$(sha256sum "$COMPAT_DIR/requirements.txt" | cut -d' ' -f1)"
if [ "$(cat "$VENV/.requirements.sha256" 2>/dev/null || true)" != "$req_hash" ]; then
    log "pip install -r compat/requirements.txt"
    timeout 600 "$VENV/bin/python" -m pip install --disable-pip-version-check -q \
        -r "$COMPAT_DIR/requirements.txt" || die "pip install failed"
    echo "$req_hash" >"$VENV/.requirements.sha256"
fi
PY="$VENV/bin/python"

# --- 4. a throwaway server -----------------------------------------------------------------
WORK="$(mktemp -d "${TMPDIR:-/tmp}/starling-compat.XXXXXX")"
SERVER_PID=""
OUTCOME=1
# The hostile suite starts its own server processes and records their pids here; if pytest
# is killed (timeout), their fixtures never stop them, so this does.
export HOSTILE_PIDFILE="$WORK/hostile.pids"
stop_pid() {
    kill -TERM "$1" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$1" 2>/dev/null || true
}
cleanup() {
    local rc=$?
    if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
        stop_pid "$SERVER_PID"
    fi
    if [ -f "$HOSTILE_PIDFILE" ]; then
        while read -r pid; do
            # Only our own servers: the pid may have been reused since.
            if [ -r "/proc/$pid/cmdline" ] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF "$WORK/"; then
                stop_pid "$pid"
            fi
        done <"$HOSTILE_PIDFILE"
    fi
    # The profanity tests run tmux servers on their own sockets inside $WORK; end any left.
    for sock in "$WORK"/profanity-*/tmux.sock; do
        if [ -S "$sock" ]; then tmux -S "$sock" kill-server 2>/dev/null || true; fi
    done
    if [ "$OUTCOME" != 0 ] && [ -f "$WORK/server.log" ]; then
        log "last lines of the server log ($WORK/server.log):"
        tail -n 40 "$WORK/server.log" >&2 || true
    fi
    if [ "${COMPAT_KEEP:-0}" = 1 ]; then
        log "kept $WORK"
    else
        rm -rf "$WORK"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

free_ports() {
    # Three distinct free TCP ports on 127.0.0.1 (held open together so they differ).
    "$PY" - <<'EOF'
import socket
socks = [socket.socket() for _ in range(3)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in socks])
for s in socks:
    s.close()
EOF
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

CONFIG="$WORK/starling.toml"
DOMAIN="localhost"
# The echo component of slixmpp/test_component.py (XEP-0114).
COMPONENT_DOMAIN="echo.$DOMAIN"
COMPONENT_SECRET="$("$PY" -c 'import secrets; print(secrets.token_urlsafe(24))')"
start_server() {
    read -r PORT TLS_PORT COMPONENT_PORT < <(free_ports)
    cat >"$CONFIG" <<EOF
# Written by compat/run.sh for one compat run. Loopback only.
domains = ["$DOMAIN"]
data_dir = "data"

[log]
level = "${COMPAT_LOG_LEVEL:-info}"

[c2s]
listen = ["127.0.0.1:$PORT"]
listen_tls = ["127.0.0.1:$TLS_PORT"]
require_encryption = true

[s2s]
# No federation in this suite (compat/federation/ has its own).
listen = []

[components]
# The component of slixmpp/test_component.py, on a free port (not the default 5347).
listen = ["127.0.0.1:$COMPONENT_PORT"]
[components.domains."$COMPONENT_DOMAIN"]
secret = "$COMPONENT_SECRET"

[auth]
# Keep wrong-password tests quick.
failure_delay_ms = 100
EOF
    "$STARLING_BIN" --config "$CONFIG" check >"$WORK/check.log" 2>&1 || { cat "$WORK/check.log" >&2; die "starling check failed"; }
    "$STARLING_BIN" --config "$CONFIG" serve >"$WORK/server.log" 2>&1 &
    SERVER_PID=$!
    for _ in $(seq 1 150); do
        if ! kill -0 "$SERVER_PID" 2>/dev/null; then
            SERVER_PID=""
            return 1
        fi
        if port_open "$PORT" && port_open "$TLS_PORT" && port_open "$COMPONENT_PORT" && [ -s "$WORK/data/certs/$DOMAIN.crt" ]; then
            return 0
        fi
        sleep 0.1
    done
    die "the server did not listen on 127.0.0.1:$PORT, :$TLS_PORT and :$COMPONENT_PORT within 15 s"
}
started=0
for attempt in 1 2 3; do
    if start_server; then started=1; break; fi
    # Another process may have taken a port between our probe and the bind: try new ones.
    if grep -q "Address already in use" "$WORK/server.log" 2>/dev/null; then
        log "port race on attempt $attempt, retrying with other ports"
        continue
    fi
    cat "$WORK/server.log" >&2
    die "the server exited at start"
done
[ "$started" = 1 ] || die "could not start the server after 3 attempts"
log "server pid $SERVER_PID on 127.0.0.1:$PORT (STARTTLS) and :$TLS_PORT (direct TLS), data in $WORK"

export STARLING_BIN
export COMPAT_CONFIG="$CONFIG"
export COMPAT_DOMAIN="$DOMAIN"
export COMPAT_HOST="127.0.0.1"
export COMPAT_PORT="$PORT"
export COMPAT_TLS_PORT="$TLS_PORT"
export COMPAT_CA="$WORK/data/certs/$DOMAIN.crt"
export COMPAT_WORK="$WORK"
export COMPAT_SERVER_LOG="$WORK/server.log"
export COMPAT_COMPONENT_DOMAIN="$COMPONENT_DOMAIN"
export COMPAT_COMPONENT_SECRET="$COMPONENT_SECRET"
export COMPAT_COMPONENT_PORT="$COMPONENT_PORT"

# --- 5. the suites -----------------------------------------------------------------------
failed=0
suite_dirs=()
for suite in $SUITES; do
    [ -d "$COMPAT_DIR/$suite" ] || die "unknown suite in COMPAT_SUITES: $suite"
    suite_dirs+=("$COMPAT_DIR/$suite")
done
set +e
timeout --kill-after=10 "$SUITE_TIMEOUT" "$PY" -m pytest -c "$COMPAT_DIR/pytest.ini" --rootdir "$COMPAT_DIR" \
    "${suite_dirs[@]}" "$@"
rc=$?
set -e
if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
    log "FAIL: the suites did not finish within ${SUITE_TIMEOUT}s"
    failed=1
elif [ "$rc" != 0 ]; then
    log "FAIL: pytest exited with $rc"
    failed=1
fi

# --- 6. the server must have survived, logged no panic, and stop cleanly -------------------
if ! kill -0 "$SERVER_PID" 2>/dev/null; then
    log "FAIL: the server died during the run"
    SERVER_PID=""
    failed=1
fi
if grep -n "panicked" "$WORK/server.log" >&2; then
    log "FAIL: the server log shows a panic"
    failed=1
fi
if [ -n "$SERVER_PID" ]; then
    kill -TERM "$SERVER_PID"
    stopped=0
    for _ in $(seq 1 100); do
        if ! kill -0 "$SERVER_PID" 2>/dev/null; then stopped=1; break; fi
        sleep 0.1
    done
    if [ "$stopped" = 1 ]; then
        set +e; wait "$SERVER_PID"; src=$?; set -e
        SERVER_PID=""
        if [ "$src" != 0 ]; then log "FAIL: the server exited with $src on SIGTERM"; failed=1; fi
    else
        log "FAIL: the server did not stop within 10 s of SIGTERM"
        failed=1
    fi
fi

elapsed=$((SECONDS - START_TIME))
if [ "$failed" = 0 ]; then
    OUTCOME=0
    log "all compat suites passed in ${elapsed}s"
else
    log "compat FAILED after ${elapsed}s"
    exit 1
fi

#!/usr/bin/env bash
# Run the whole test suite: unit tests, integration tests on SQLite and on a throwaway
# PostgreSQL cluster (started by the tests from the installed binaries), the XML
# differential test, the fuzz target's build, a smoke run of the load generator
# (compat/bench), the compat suite with real clients, and live federation with Prosody,
# ejabberd and Starling itself (as root: network namespaces).
#
#   ./test.sh            everything
#   ./test.sh --no-compat   skip the real-client suite and federation (no Python/tmux/root needed)
set -euo pipefail
cd "$(dirname "$0")"

compat=1
for arg in "$@"; do
    case "$arg" in
        --no-compat) compat=0 ;;
        *) echo "unknown option: $arg" >&2; exit 2 ;;
    esac
done

need_root_install() {
    # Install Debian packages when they are missing and we may (CI runs as root).
    local missing=()
    for pkg in "$@"; do
        dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    if [ "$(id -u)" = 0 ]; then
        echo "== installing ${missing[*]}"
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    else
        echo "missing Debian packages: ${missing[*]} (install them, e.g. sudo apt-get install ${missing[*]})" >&2
        exit 1
    fi
}

# PostgreSQL binaries for the throwaway test cluster.
if ! command -v initdb >/dev/null && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    need_root_install postgresql
fi

# The tests' throwaway PostgreSQL clusters (hundreds of MB each) are removed by the test
# process at exit; if it is killed, this removes the ones of this run (named after it).
export STARLING_TEST_RUN="$$"
trap 'rm -rf "${TMPDIR:-/tmp}"/starling-pg-run"$STARLING_TEST_RUN"-*' EXIT

# Tests mostly wait on sockets; more threads than cores keeps the run short.
export RUST_TEST_THREADS="${RUST_TEST_THREADS:-8}"

echo "== unit and integration tests (SQLite and PostgreSQL)"
cargo test --locked --all-targets

if [ -f fuzz/Cargo.toml ]; then
    echo "== fuzz target builds"
    cargo build --locked --manifest-path fuzz/Cargo.toml
fi

echo "== load generator builds and runs a smoke scenario (figures are not checked)"
bash compat/bench/smoke.sh --debug

if [ "$compat" = 1 ] && [ -x compat/run.sh ]; then
    echo "== compat suite (real clients)"
    bash compat/run.sh
fi

# Live federation: Starling with Prosody, with ejabberd and with itself, each server in a
# network namespace of its own (which takes root), in dialback mode and with certificates
# from a test CA (SASL EXTERNAL); see compat/federation/README.md.
if [ "$compat" = 1 ]; then
    echo "== federation with Prosody, ejabberd and Starling (compat/federation)"
    if [ "$(id -u)" != 0 ]; then
        echo "skipped: network namespaces need root (run ./test.sh as root, as CI does)"
    else
        missing=()
        for pkg in prosody lua-unbound ejabberd iproute2 openssl python3-slixmpp; do
            dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
        done
        if [ ${#missing[@]} -gt 0 ]; then
            echo "== installing ${missing[*]} (their system services are not started)"
            # The packages' own services would start on the host's ports: policy-rc.d says no.
            policy_added=0
            if [ ! -e /usr/sbin/policy-rc.d ]; then
                printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && policy_added=1
            fi
            apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
            [ "$policy_added" = 1 ] && rm -f /usr/sbin/policy-rc.d
        fi
        cargo build --locked --bin starling
        export STARLING_BIN="$PWD/target/debug/starling"
        bash compat/federation/run.sh --pair starling-prosody --mode both
        bash compat/federation/run.sh --pair starling-ejabberd --mode both
        bash compat/federation/run.sh --pair starling-starling --mode all
    fi
fi
echo "== all tests passed"

#!/usr/bin/env bash
# Run the whole test suite: unit tests, integration tests on SQLite and on a throwaway
# PostgreSQL cluster (started by the tests from the installed binaries), the XML
# differential test, the fuzz target's build, a smoke run of the load generator
# (compat/bench), and the compat suite with real clients.
#
#   ./test.sh            everything
#   ./test.sh --no-compat   skip the real-client suite (no Python/tmux needed)
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
echo "== all tests passed"

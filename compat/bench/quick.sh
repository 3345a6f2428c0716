#!/usr/bin/env bash
# Quick figures for Starling alone: idle server memory, memory per idle session (plaintext
# and TLS), server CPU per login, and chat throughput and latency between local clients.
# One JSON line per measurement. (compat/bench/run.sh compares with Prosody and ejabberd.)
#
#   compat/bench/quick.sh [SESSIONS]
set -euo pipefail
cd "$(dirname "$0")/../.."
SESSIONS=${1:-2000}
cargo build --release --quiet
cargo build --release --quiet --manifest-path compat/bench/Cargo.toml
STARLING=target/release/starling
BENCH=compat/bench/target/release/starling-bench

dir=$(mktemp -d)
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$dir"' EXIT
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
tls_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat > "$dir/starling.toml" <<CONF
[log]
level = "warn"
[c2s]
listen = ["127.0.0.1:$port"]
listen_tls = ["127.0.0.1:$tls_port"]
require_encryption = false
max_bytes_per_second = 0
[s2s]
listen = []
[components]
listen = []
CONF
echo "provisioning $SESSIONS accounts..." >&2
start=$(date +%s.%N)
for i in $(seq 0 $((SESSIONS - 1))); do echo "user$i@localhost password"; done \
    | $STARLING --config "$dir/starling.toml" user add --create-db --batch >&2
echo "  $(python3 -c "print(round($(date +%s.%N) - $start, 2))") s" >&2

start() {
    taskset -c 0 $STARLING --config "$dir/starling.toml" serve 2>"$dir/server.log" &
    pid=$!
    for _ in $(seq 100); do (echo > /dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done
    sleep 1
}
stop() { kill $pid; wait $pid 2>/dev/null || true; }
run() { taskset -c 1 $BENCH --server "127.0.0.1:$1" --server-pid $pid --label starling "${@:2}"; }

# Each memory figure on a fresh server, so freed memory of an earlier run does not hide
# the cost of the next.
start
echo "{\"scenario\":\"idle\",\"server\":\"starling\",\"server_rss_kib\":$(awk '/VmRSS/{print $2}' /proc/$pid/status)}"
run $port --security plain connect --count "$SESSIONS" --ramp 2000 --hold 3
stop; start
run $tls_port --security direct connect --count "$SESSIONS" --ramp 1000 --hold 3
stop; start
run $port --security plain chat --count 2 --rate 20000 --duration 10
run $port --security plain chat --count 100 --rate 20000 --duration 10

#!/usr/bin/env bash
# Smoke test of the load generator against Starling alone: a few sessions (plaintext and
# STARTTLS, each pinged, then with stream management), a short 1:1 chat (then with stream
# management and carbons), a small offline delivery, a few sessions dropped and resumed, small
# multi-user chat rooms (fan-out, joins with history, memory), and the archive generator,
# asserting on the JSON lines: every login succeeds, every ping is answered, nothing is lost
# or duplicated, everything sent is acknowledged.
# Runs in a few seconds once built (the first build of the load generator takes longer).
#
#   compat/bench/smoke.sh            release builds (STARLING=path overrides the server)
#   compat/bench/smoke.sh --debug    debug builds: what the test suite runs, as the debug
#                                    server is built already and figures do not matter here
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
profile=release
case "${1:-}" in
    --debug) profile=debug ;;
    "") ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
esac
flag=$([ "$profile" = release ] && echo --release || true)
BENCH=$HERE/target/$profile/starling-bench

# The tree's server is brought up to date (a no-op when it is), not taken as left by an
# earlier build; a binary given in STARLING is used as it is.
if [ -z "${STARLING:-}" ]; then
    (cd "$ROOT" && cargo build $flag --locked --quiet)
    STARLING=${CARGO_TARGET_DIR:-$ROOT/target}/$profile/starling
fi
cargo build $flag --locked --quiet --manifest-path "$HERE/Cargo.toml" --target-dir "$HERE/target"

dir=$(mktemp -d /tmp/starling-bench-smoke.XXXXXX)
pid=
cleanup() {
    if [ -n "$pid" ]; then
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    fi
    rm -rf "$dir"
}
trap cleanup EXIT

port=36222
while (echo > /dev/tcp/127.0.0.1/$port) 2>/dev/null; do port=$((port + 1)); done
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 30 \
    -keyout "$dir/key.pem" -out "$dir/cert.pem" -subj /CN=localhost -addext subjectAltName=DNS:localhost 2>/dev/null
sed -e "s|@DIR@|$dir|g" -e "s|@PORT@|$port|g" -e "s|@CERT@|$dir/cert.pem|g" -e "s|@KEY@|$dir/key.pem|g" \
    -e "s|@DISABLED@||g"     "$HERE/peers/starling.toml.in" > "$dir/starling.toml"
{ for i in $(seq 0 9); do echo "user$i@localhost password"; done; echo "o0@localhost password"; echo "o1@localhost password"; } \
    | "$STARLING" --config "$dir/starling.toml" user add --create-db --batch >/dev/null

"$STARLING" --config "$dir/starling.toml" serve 2>"$dir/server.log" &
pid=$!
for _ in $(seq 100); do (echo > /dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done

failures=0
check() {  # check NAME JSON-LINE PATTERN...
    local name=$1 line=$2
    shift 2
    for pattern in "$@"; do
        if ! grep -q -- "$pattern" <<< "$line"; then
            echo "FAIL $name: expected $pattern in: $line" >&2
            failures=$((failures + 1))
            return
        fi
    done
    echo "ok   $name"
}
bench() { "$BENCH" --server "127.0.0.1:$port" --server-pid "$pid" --label starling "$@" || true; }

line=$(bench --security plain connect --count 10 --hold 0.5 --ping | tail -1)
check "connect plain" "$line" '"ok":10,' '"failed":0,' '"pings_answered":10,'
line=$(bench --security starttls connect --count 5 --hold 0.5 --ping | tail -1)
check "connect starttls" "$line" '"ok":5,' '"pings_answered":5,'
line=$(bench --security plain chat --count 4 --rate 200 --duration 2 --pause 0 | tail -1)
check "chat" "$line" '"scenario":"chat"' '"lost":0,' '"duplicates":0,' '"delivered":400,'
line=$(bench --security plain --prefix o offline --messages 50 | tail -1)
check "offline" "$line" '"received":50,' '"lost":0,' '"duplicates":0,'
line=$(bench --security plain connect --count 5 --hold 0.5 --ping --sm | tail -1)
check "connect with stream management" "$line" '"ok":5,' '"pings_answered":5,' '"sm_resumable":5,'
line=$(bench --security plain chat --count 4 --rate 200 --duration 2 --pause 0 --sm --carbons | tail -1)
check "chat with stream management" "$line" '"lost":0,' '"duplicates":0,' '"delivered":400,' '"unacked_at_end":0,'
line=$(bench --security plain resume --count 6 --senders 2 --messages 3 --down 0.5 | tail -1)
check "resume" "$line" '"resumed":6,' '"lost":0,' '"duplicates":0,' '"errors_to_senders":0,'
line=$(bench --security plain muc-fanout --rooms 2 --room-size 3 --big-room 5 --big-rate 20 --small-rate 20 --duration 1 --pause 0 | tail -1)
check "muc fan-out" "$line" '"scenario":"muc-fanout"' '"expected_copies":160,' '"delivered":160,' '"lost":0,' '"duplicates":0,' '"errors":0,'
line=$(bench --security plain muc-join --count 5 --history 3 --history-joins 3 | tail -1)
check "muc join" "$line" '"scenario":"muc-join"' '"history_joins":3,' '"history_received_min":3,' '"history_received_max":3,' '"errors":0,'
line=$(bench --security plain muc-memory --count 5 --settle 0.2 | tail -1)
check "muc memory" "$line" '"scenario":"muc-memory"' '"occupants":5,'
lines=$("$BENCH" --prefix a archive-gen --messages 1000 --format jsonl | grep -c '"stanza"' || true)
check "archive-gen" "lines=$lines" 'lines=1000$'

if ! kill -0 "$pid" 2>/dev/null; then
    echo "FAIL the server exited; its log:" >&2
    cat "$dir/server.log" >&2
    failures=$((failures + 1))
fi
if [ "$failures" -gt 0 ]; then
    echo "bench smoke: $failures check(s) failed" >&2
    exit 1
fi
echo "bench smoke: all checks passed"

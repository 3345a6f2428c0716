#!/usr/bin/env bash
# Smoke test of the load generator against Starling alone: a few sessions (plaintext and
# STARTTLS, each pinged, then with stream management), a short 1:1 chat (then with stream
# management and carbons), a small offline delivery, a few sessions dropped and resumed, small
# multi-user chat rooms (fan-out, joins with history, memory), and the archive generator,
# asserting on the JSON lines: every login succeeds, every ping is answered, nothing is lost
# or duplicated, everything sent is acknowledged. As root, also two Starling servers
# federating (a.example and b.example in a private network namespace, as run.sh's s2s
# scenarios): a short chat across the link and links to three more domains.
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
# The s2s part: its two servers and the process holding its namespaces.
s2s_a= s2s_b= s2s_ns=
cleanup() {
    local p
    for p in "$pid" "$s2s_a" "$s2s_b" "$s2s_ns"; do
        if [ -n "$p" ]; then
            kill "$p" 2>/dev/null || true
            wait "$p" 2>/dev/null || true
        fi
    done
    rm -rf "$dir"
}
trap cleanup EXIT

port=36222
while (echo > /dev/tcp/127.0.0.1/$port) 2>/dev/null; do port=$((port + 1)); done
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 30 \
    -keyout "$dir/key.pem" -out "$dir/cert.pem" -subj /CN=localhost -addext subjectAltName=DNS:localhost 2>/dev/null
sed -e "s|@DIR@|$dir|g" -e "s|@PORT@|$port|g" -e "s|@CERT@|$dir/cert.pem|g" -e "s|@KEY@|$dir/key.pem|g" \
    -e "s|@IP@|127.0.0.1|g" -e "s|@DOMAINS@|\"localhost\"|g" \
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

# Federation, as run.sh's s2s scenarios set it up: a private network namespace (only its
# loopback) and mount namespace, whose /etc/hosts names a.example 127.0.0.2 and b.example
# (and b1..b3.example) 127.0.0.3 and whose resolv.conf names an unreachable name server, so
# that SRV lookups fail at once; both servers find each other through the hosts file, with
# dialback (a self-signed certificate). Root only (unshare, mount).
s2s_smoke() {
    local hosts=$dir/s2s-hosts resolv=$dir/s2s-resolv.conf side d ip domains _
    printf '127.0.0.1\tlocalhost\n127.0.0.2\ta.example\n' > "$hosts"
    for d in b b1 b2 b3; do printf '127.0.0.3\t%s.example\n' "$d" >> "$hosts"; done
    printf 'nameserver 192.0.2.53\noptions timeout:1 attempts:1\n' > "$resolv"
    unshare --net --mount --propagation private sh -c \
        'ip link set lo up && mount --bind "$1" /etc/hosts && mount --bind "$2" /etc/resolv.conf && exec sleep infinity' \
        s2s-namespace "$hosts" "$resolv" &
    s2s_ns=$!
    for _ in $(seq 50); do
        nsenter -t "$s2s_ns" -n -m grep -q 'b3.example' /etc/hosts 2>/dev/null && break
        sleep 0.1
    done
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 30 -keyout "$dir/s2s-key.pem" \
        -out "$dir/s2s-cert.pem" -subj /CN=a.example -addext subjectAltName=DNS:a.example,DNS:b.example,DNS:*.example 2>/dev/null
    for side in a b; do
        d=$dir/s2s-$side ip=127.0.0.2 domains='"a.example"'
        [ $side = b ] && ip=127.0.0.3 domains='"b.example", "b1.example", "b2.example", "b3.example"'
        mkdir -p "$d"
        sed -e "s|@DIR@|$d|g" -e "s|@PORT@|5222|g" -e "s|@IP@|$ip|g" -e "s|@DOMAINS@|$domains|g" \
            -e "s|@CERT@|$dir/s2s-cert.pem|g" -e "s|@KEY@|$dir/s2s-key.pem|g" -e "s|@DISABLED@||g" \
            -e '/^#@nos2s /d' -e 's/^#@s2s //' "$HERE/peers/starling.toml.in" > "$d/starling.toml"
        for i in 0 1 2 3; do echo "user$i@$side.example password"; done \
            | "$STARLING" --config "$d/starling.toml" user add --create-db --batch >/dev/null
        nsenter -t "$s2s_ns" -n -m -- "$STARLING" --config "$d/starling.toml" serve 2>"$d/server.log" &
        if [ $side = a ]; then s2s_a=$!; else s2s_b=$!; fi
    done
    for ip in 127.0.0.2 127.0.0.3; do
        for _ in $(seq 100); do
            nsenter -t "$s2s_ns" -n bash -c "echo > /dev/tcp/$ip/5222 && echo > /dev/tcp/$ip/5269" 2>/dev/null && break
            sleep 0.1
        done
    done
    local peer=(--server-b 127.0.0.3:5222 --domain-b b.example --server-b-pid "$s2s_b")
    s2s_bench() { nsenter -t "$s2s_ns" -n -- "$BENCH" --server 127.0.0.2:5222 --domain a.example --server-pid "$s2s_a" --label starling --security plain "$@" || true; }
    line=$(s2s_bench s2s-chat "${peer[@]}" --count 4 --rate 200 --duration 2 --pause 0 --link-timeout 20 | tail -1)
    check "s2s chat (two Starling servers)" "$line" '"scenario":"s2s-chat"' '"delivered":400,' '"lost":0,' '"duplicates":0,' '"reordered":0,' '"errors":0,'
    line=$(s2s_bench s2s-links "${peer[@]}" --links 3 --settle 0.2 --timeout 20 | tail -1)
    check "s2s links" "$line" '"scenario":"s2s-links"' '"answered":3,' '"failed":0,'
    for side in a b; do
        if ! kill -0 "$([ $side = a ] && echo "$s2s_a" || echo "$s2s_b")" 2>/dev/null; then
            echo "FAIL the $side.example server exited; its log:" >&2
            cat "$dir/s2s-$side/server.log" >&2
            failures=$((failures + 1))
        fi
    done
}
if [ "$(id -u)" = 0 ] && command -v unshare >/dev/null && command -v nsenter >/dev/null && command -v ip >/dev/null; then
    s2s_smoke
else
    echo "skip s2s (needs root, unshare, nsenter and ip: a private network namespace)"
fi
if [ "$failures" -gt 0 ]; then
    echo "bench smoke: $failures check(s) failed" >&2
    exit 1
fi
echo "bench smoke: all checks passed"

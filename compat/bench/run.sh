#!/usr/bin/env bash
# Side-by-side benchmark: Starling, Prosody and ejabberd on loopback, same accounts, same
# certificate, equivalent configs (peers/). The server under test runs on CPU 0, the load
# generator on CPU 1. Runs are interleaved (rep 1: starling, prosody, ejabberd; rep 2: ...)
# and each measurement is repeated. Results: one JSON line per measurement in
# OUT/results.jsonl, and the report OUT/RESULTS.md (both copied to compat/bench/ by a full
# run of all servers and scenarios).
#
#   compat/bench/run.sh                 # full run (~45 min for the base profile; the
#                                       # modern one adds time that depends on the disk)
#   compat/bench/run.sh --quick         # smaller N, 1 repetition (~10 min)
#   compat/bench/run.sh --servers starling,prosody --scenarios connect,chat --reps 2
#
# Three server profiles (peers/*.in): "base" (the scenarios connect ... scale), "modern",
# with message archive, carbons and stream management on, as a server for Conversations
# (connect-sm ... resume), and "muc": modern plus multi-user chat (XEP-0045) rooms on
# conference.localhost, archived (muc-fanout, muc-join, muc-memory: not in the default
# list, as they take about an hour more with 3 repetitions, most of it Prosody's joins;
# --scenarios muc runs them, --quick in about 7 minutes). A fourth, "s2s": two servers of
# the same kind federating (Starling with Starling, Prosody with Prosody, ejabberd with
# ejabberd) on 127.0.0.2 (a.example) and 127.0.0.3 (b.example) of a private network
# namespace whose hosts file names them (s2s-chat, s2s-sweep, s2s-memory: not in the
# default list either; --scenarios s2s runs them; as root).
#
# Options:
#   --quick               smaller sizes, one repetition
#   --servers LIST        starling,prosody,ejabberd (default all)
#   --scenarios LIST      base profile: connect,connect-tls,chat,chat-tls,sweep,offline,
#                         roster,scale (scale is Starling only); modern profile: connect-sm,
#                         connect-sm-tls,chat-sm,sweep-sm,archive,resume (default all of
#                         these); muc profile, not run by default: muc-fanout,muc-join,
#                         muc-memory ("muc" names the three); s2s profile, not run by
#                         default: s2s-chat,s2s-sweep,s2s-memory ("s2s" names the three)
#   --reps N              repetitions of each measurement (default 3, quick 1)
#   --sessions N          idle sessions for memory and login figures (default 5000)
#   --scale N             sessions of the Starling scale run (default 19000)
#   --archive-messages N  messages in the archive of the archive scenario (default
#                         1000000, quick 100000)
#   --peer-archive KIND   where Prosody and ejabberd keep the archive in the modern
#                         profile: sql (SQLite, default; needed by the archive scenario)
#                         or native (Prosody's file store, ejabberd's Mnesia)
#   --out DIR             keep the work directory (default: a new temp dir)
#   --results FILE        where to write the report (default: compat/bench/RESULTS.md for
#                         a full run of everything, else OUT/RESULTS.md only)
#   --report-only FILE    regenerate the report from an existing results.jsonl
# Environment: STARLING=path to a starling binary to use as it is (default: the tree's
# target/release/starling, or $CARGO_TARGET_DIR/release/starling, brought up to date with
# cargo build --release first; the load generator is built in compat/bench/target).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
ARGS=("$@")

QUICK=0
SERVERS=starling,prosody,ejabberd
BASE_SCENARIOS=connect,connect-tls,chat,chat-tls,sweep,offline,roster,scale
MODERN_SCENARIOS=connect-sm,connect-sm-tls,chat-sm,sweep-sm,archive,resume
# Not in the default run (ALL_SCENARIOS): about 20 minutes a repetition for the three
# servers (Prosody 13 of them); `--scenarios muc` runs them.
MUC_SCENARIOS=muc-fanout,muc-join,muc-memory
# Not in the default run either; `--scenarios s2s` runs them (as root: they make a private
# network namespace).
S2S_SCENARIOS=s2s-chat,s2s-sweep,s2s-memory
ALL_SCENARIOS=$BASE_SCENARIOS,$MODERN_SCENARIOS
SCENARIOS=$ALL_SCENARIOS
ARCHIVE_MESSAGES=
PEER_ARCHIVE=sql
REPS=
SESSIONS=
SCALE=
OUT=
RESULTS=
REPORT_ONLY=
while [ $# -gt 0 ]; do
    case $1 in
        --quick) QUICK=1; shift ;;
        --servers) SERVERS=$2; shift 2 ;;
        --scenarios) SCENARIOS=$2; shift 2 ;;
        --reps) REPS=$2; shift 2 ;;
        --sessions) SESSIONS=$2; shift 2 ;;
        --scale) SCALE=$2; shift 2 ;;
        --archive-messages) ARCHIVE_MESSAGES=$2; shift 2 ;;
        --peer-archive) PEER_ARCHIVE=$2; shift 2 ;;
        --out) OUT=$2; shift 2 ;;
        --results) RESULTS=$2; shift 2 ;;
        --report-only) REPORT_ONLY=$2; shift 2 ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done
SCENARIOS=$(sed -e "s/\(^\|,\)muc\(,\|$\)/\1$MUC_SCENARIOS\2/" -e "s/\(^\|,\)s2s\(,\|$\)/\1$S2S_SCENARIOS\2/" <<< "$SCENARIOS")
if [ "$QUICK" = 1 ]; then
    : "${REPS:=1}" "${SESSIONS:=1000}" "${SCALE:=5000}" "${ARCHIVE_MESSAGES:=100000}"
    CHAT_USERS=100; CHAT_SECONDS=4; BISECT=2; ROSTER_USERS=102; SCALE_CHECKPOINTS=1000,2500
    ARCHIVE_QUERIES=200; RESUME_SESSIONS=500
    MUC_ROOMS=10; MUC_ROOM_SIZE=30; MUC_BIG_ROOM=300; MUC_SECONDS=5; MUC_JOIN=500
    MUC_BIG_RATE=3; MUC_SMALL_RATE=3
    S2S_LINKS=50
else
    : "${REPS:=3}" "${SESSIONS:=5000}" "${SCALE:=19000}" "${ARCHIVE_MESSAGES:=1000000}"
    CHAT_USERS=100; CHAT_SECONDS=10; BISECT=3; ROSTER_USERS=200; SCALE_CHECKPOINTS=1000,5000,10000
    ARCHIVE_QUERIES=1000; RESUME_SESSIONS=1000
    MUC_ROOMS=10; MUC_ROOM_SIZE=100; MUC_BIG_ROOM=1000; MUC_SECONDS=10; MUC_JOIN=1000
    MUC_BIG_RATE=1; MUC_SMALL_RATE=1
    S2S_LINKS=100
fi
CHAT_FIXED_RATE=2000       # messages/s for the CPU-per-message figure, the same for all
CHAT_SM_FIXED_RATE=500     # the same with archive, carbons and stream management
CHAT_SM_SWEEP_FROM=250     # first rate of that sweep (it halves down to 25 msg/s)
OFFLINE_MESSAGES=1000
RESUME_SENDERS=10; RESUME_MESSAGES=10
# muc-fanout's fixed rates (MUC_BIG_RATE, MUC_SMALL_RATE above, messages/s: in the big
# room, and over the small rooms together; the sweep doubles both from there) are low, so
# that no server is overloaded at them: Prosody 0.12 spends about 0.5 ms of CPU per copy
# delivered, so 1 + 1 msg/s (1,100 copies/s with the full sizes; quick: 3 + 3 msg/s, 990
# copies/s) keeps it about half busy. muc-join: joins of the room with history.
MUC_HISTORY_JOINS=100
# s2s: users on each server (each chatting with the account of the same number on the
# other), the fixed rate of the CPU-per-message figure (both directions together; both
# servers share CPU 0, so it is half the single-server chat's) and the first rate of the
# sweep; s2s-memory links to S2S_LINKS more domains (above).
S2S_USERS=100
S2S_FIXED_RATE=1000
has() { [[ ",$1," == *",$2,"* ]]; }
has_any() {  # has_any LIST A,B,...: LIST names one of them
    local x
    for x in ${2//,/ }; do has "$1" "$x" && return 0; done
    return 1
}
case $PEER_ARCHIVE in
    sql) ;;
    native) if has "$SCENARIOS" archive; then
                echo "the archive scenario needs --peer-archive sql (its bulk import writes SQL)" >&2; exit 2
            fi ;;
    *) echo "--peer-archive: sql or native" >&2; exit 2 ;;
esac

BENCH=$HERE/target/release/starling-bench
STARLING_GIVEN=${STARLING:-}
STARLING=${STARLING:-${CARGO_TARGET_DIR:-$ROOT/target}/release/starling}
log() { echo "[$(date +%T)] $*" >&2; }

report() {  # report RESULTS_JSONL OUTPUT_MD
    local cmd="compat/bench/run.sh"
    [ ${#ARGS[@]} -gt 0 ] && cmd="$cmd ${ARGS[*]}"
    "$BENCH" report "$1" --command "$cmd" > "$2.tmp" && mv "$2.tmp" "$2"
    log "report: $2"
}

cargo build --release --quiet --manifest-path "$HERE/Cargo.toml" --target-dir "$HERE/target"
if [ -n "$REPORT_ONLY" ]; then
    report "$REPORT_ONLY" "${RESULTS:-$HERE/RESULTS.md}"
    exit 0
fi

# --- What we need -------------------------------------------------------------------------
need_pkg() {  # need_pkg COMMAND PACKAGE
    command -v "$1" >/dev/null && return 0
    if [ "$(id -u)" != 0 ]; then
        log "$1 missing and not root: install the Debian package $2 (apt-get install $2)"
        return 1
    fi
    log "installing $2"
    # Do not let the package start its system service: we run our own instances.
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null; } || true
    rm -f /usr/sbin/policy-rc.d
    command -v "$1" >/dev/null
}
need_deb() {  # need_deb PACKAGE: a Debian package without a command of its own
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'ok installed' && return 0
    if [ "$(id -u)" != 0 ]; then
        log "$1 missing and not root: apt-get install $1"
        return 1
    fi
    log "installing $1"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$1" >/dev/null; } || true
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'ok installed'
}
MODERN=0
has_any "$SCENARIOS" "$MODERN_SCENARIOS,$MUC_SCENARIOS" && MODERN=1
has "$SERVERS" prosody && { need_pkg prosody prosody || exit 1; }
if has "$SERVERS" ejabberd; then
    PATH=$PATH:/usr/sbin need_pkg ejabberdctl ejabberd || exit 1
    # ejabberd's applications (ERL_LIBS, as ejabberdctl sets it).
    EJABBERD_LIBS=$(dirname "$(dirname "$(dpkg -L ejabberd | grep -m1 '/ebin$')")")
fi
if [ "$MODERN" = 1 ] && [ "$PEER_ARCHIVE" = sql ]; then
    # The peers' archives in SQLite: Prosody through LuaDBI, ejabberd through its driver;
    # the sqlite3 shell imports the archive scenario's messages.
    has "$SERVERS" prosody && { need_deb lua-dbi-sqlite3 || exit 1; }
    has "$SERVERS" ejabberd && { need_deb erlang-p1-sqlite3 || exit 1; }
    has_any "$SERVERS" prosody,ejabberd && { need_pkg sqlite3 sqlite3 || exit 1; }
fi
for c in taskset openssl timeout; do command -v $c >/dev/null || { log "missing $c"; exit 1; }; done
if has_any "$SCENARIOS" "$S2S_SCENARIOS"; then
    # A private network namespace (only its loopback) with its own hosts file and
    # resolv.conf for the two servers and the load generator: root, unshare and nsenter.
    if [ "$(id -u)" != 0 ]; then
        log "the s2s scenarios need root (a private network and mount namespace)"
        exit 1
    fi
    for c in unshare nsenter mount ip; do command -v $c >/dev/null || { log "missing $c (s2s scenarios)"; exit 1; }; done
fi
if [ -z "$STARLING_GIVEN" ]; then
    # Always: a binary left over from another state of the tree would be labelled with
    # this commit in the report. A no-op when it is up to date.
    log "building Starling (cargo build --release)"
    (cd "$ROOT" && cargo build --release --quiet)
fi

OUT=${OUT:-$(mktemp -d /tmp/starling-bench.XXXXXX)}
mkdir -p "$OUT"
JSONL=$OUT/results.jsonl
touch "$JSONL"
log "work directory: $OUT"

# --- Processes: all ours are killed on exit ------------------------------------------------
SERVER_PID=
cleanup() {
    stop_server
    # The s2s scenarios' pair and namespaces (defined further down).
    if declare -F s2s_down >/dev/null; then s2s_down; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

stop_server() {
    [ -n "$SERVER_PID" ] || return 0
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.2; done
    kill -KILL "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=
}

port_free() { ! (echo > /dev/tcp/127.0.0.1/$1) 2>/dev/null; }
pick_port() {
    local p=$1
    while ! port_free $p; do p=$((p + 1)); done
    echo $p
}

wait_port() {  # wait_port PORT SECONDS
    for _ in $(seq $(($2 * 10))); do
        kill -0 "$SERVER_PID" 2>/dev/null || return 1
        port_free "$1" || return 0
        sleep 0.1
    done
    return 1
}

# --- Certificate: one ECDSA P-256 key and self-signed certificate for all three ------------
CERT=$OUT/cert.pem KEY=$OUT/key.pem PEM=$OUT/cert+key.pem
if [ ! -f "$PEM" ]; then
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 3650 \
        -keyout "$KEY" -out "$CERT" -subj /CN=localhost -addext subjectAltName=DNS:localhost 2>/dev/null
    cat "$CERT" "$KEY" > "$PEM"
    chmod 644 "$KEY" "$PEM"
fi
# The s2s scenarios: one self-signed certificate for both servers of a pair (a.example,
# b.example and the memory run's extra domains): nobody can verify it, so every link is
# authenticated with Server Dialback (XEP-0220) on all three.
S2S_CERT=$OUT/s2s-cert.pem S2S_KEY=$OUT/s2s-key.pem S2S_PEM=$OUT/s2s-cert+key.pem
if has_any "$SCENARIOS" "$S2S_SCENARIOS" && [ ! -f "$S2S_PEM" ]; then
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 3650 \
        -keyout "$S2S_KEY" -out "$S2S_CERT" -subj /CN=a.example \
        -addext subjectAltName=DNS:a.example,DNS:b.example,DNS:*.example 2>/dev/null
    cat "$S2S_CERT" "$S2S_KEY" > "$S2S_PEM"
    chmod 644 "$S2S_KEY" "$S2S_PEM"
fi

# --- Servers -----------------------------------------------------------------------------
declare -A PORT DIR
base=35222
for s in starling prosody ejabberd; do
    PORT[$s]=$(pick_port $base); base=$((PORT[$s] + 10))
    DIR[$s]=$OUT/$s
    mkdir -p "${DIR[$s]}"
done

# Which of the modules the peers load only in the modern profile this Starling has (the
# base profile turns them off). A name the build does not know is refused by its config.
starling_knows() {  # starling_knows MODULE
    local probe=$OUT/probe-$1.toml
    sed -e "s|@DIR@|$OUT|g" -e "s|@PORT@|1|g" -e "s|@CERT@|$CERT|g" -e "s|@KEY@|$KEY|g" \
        -e "s|@IP@|127.0.0.1|g" -e "s|@DOMAINS@|\"localhost\"|g" \
        -e "s|@DISABLED@|\"$1\"|" "$HERE/peers/starling.toml.in" > "$probe"
    local said
    said=$("$STARLING" --config "$probe" check 2>&1) || true
    [[ $said != *"unknown module"* ]]
}
STARLING_MODERN_MODULES=
STARLING_ARCHIVE=off
if has "$SERVERS" starling; then
    for m in mam carbons; do
        starling_knows $m && STARLING_MODERN_MODULES="$STARLING_MODERN_MODULES${STARLING_MODERN_MODULES:+, }\"$m\""
    done
    starling_knows mam && STARLING_ARCHIVE=on
fi
# The archive import of Starling: the command the archive scenario provisions it with.
# (Not in Starling yet: its archive scenario is skipped until `starling archive import`
# exists; the JSON lines it reads are described in README.md.)
starling_import_archive() {  # starling_import_archive CONFIG ACCOUNT FILE
    "$STARLING" --config "$1" archive import --account "$2" "$3"
}
starling_can_import() { "$STARLING" archive import --help >/dev/null 2>&1; }

# fill TEMPLATE SERVER PROFILE [DIR IP DOMAINS] > FILE: PROFILE is base, modern, muc or s2s.
# A template line marked "#@MARK " or "--@MARK " is kept (without the mark) in the profiles
# that keep MARK, and left out of the others: base keeps base and nos2s; modern keeps modern
# (and sql with --peer-archive sql) and nos2s; muc keeps what modern keeps and muc; s2s
# keeps base and s2s (the base profile with federation on). DIR, IP and DOMAINS (space-
# separated, the first the main one) default to the server's directory, 127.0.0.1 and
# localhost; the s2s profile gives them per side and uses the s2s certificate and c2s port.
fill() {
    local dir=${4:-${DIR[$2]}} ip=${5:-127.0.0.1} domains=${6:-localhost}
    local port=${PORT[$2]} cert=$CERT key=$KEY pem=$PEM keep m
    case $3 in
        base) keep="base nos2s" ;;
        modern) keep="modern nos2s" ;;
        muc) keep="modern muc nos2s" ;;
        s2s) keep="base s2s" port=$S2S_C2S_PORT cert=$S2S_CERT key=$S2S_KEY pem=$S2S_PEM ;;
    esac
    if [ "$PEER_ARCHIVE" = sql ] && [[ " $keep " == *" modern "* ]]; then keep="$keep sql"; fi
    local marks=()
    for m in base modern sql muc s2s nos2s; do
        if [[ " $keep " == *" $m "* ]]; then
            marks+=(-e "s/^\(--\|#\)@$m //")
        else
            marks+=(-e "/^\(--\|#\)@$m /d")
        fi
    done
    local disabled=
    case $3 in base|s2s) disabled=$STARLING_MODERN_MODULES ;; esac
    local list quoted
    read -ra list <<< "$domains"
    quoted=$(printf '"%s", ' "${list[@]}")
    sed -e "s|@DIR@|$dir|g" -e "s|@PORT@|$port|g" -e "s|@CERT@|$cert|g" -e "s|@IP@|$ip|g" \
        -e "s|@KEY@|$key|g" -e "s|@PEM@|$pem|g" -e "s|@DISABLED@|$disabled|g" \
        -e "s|@DOMAINS@|${quoted%, }|g" -e "s|@DOMAIN@|${list[0]}|g" "${marks[@]}" "$HERE/peers/$1"
    # Prosody: one VirtualHost line per further domain (with the global settings).
    if [ "$1" = prosody.cfg.lua.in ]; then
        for m in "${list[@]:1}"; do printf 'VirtualHost "%s"\n' "$m"; done
    fi
}
fill starling.toml.in starling base > "${DIR[starling]}/starling.toml"
fill starling.toml.in starling modern > "${DIR[starling]}/starling-modern.toml"
fill prosody.cfg.lua.in prosody base > "${DIR[prosody]}/prosody.cfg.lua"
fill prosody.cfg.lua.in prosody modern > "${DIR[prosody]}/prosody-modern.cfg.lua"
fill ejabberd.yml.in ejabberd base > "${DIR[ejabberd]}/ejabberd.yml"
fill ejabberd.yml.in ejabberd modern > "${DIR[ejabberd]}/ejabberd-modern.yml"
fill starling.toml.in starling muc > "${DIR[starling]}/starling-muc.toml"
fill prosody.cfg.lua.in prosody muc > "${DIR[prosody]}/prosody-muc.cfg.lua"
fill ejabberd.yml.in ejabberd muc > "${DIR[ejabberd]}/ejabberd-muc.yml"
mkdir -p "${DIR[prosody]}/data" "${DIR[prosody]}/certs" "${DIR[ejabberd]}/spool" "${DIR[ejabberd]}/logs"

# spawn_server NAME CONFIG DIR [PREFIX...]: start server NAME with CONFIG in the background
# on CPU 0, its log in DIR; PREFIX (e.g. nsenter into the s2s namespace) execs it, so
# SPAWNED_PID is the server's process (the one whose /proc we read).
spawn_server() {
    local s=$1 conf=$2 d=$3
    shift 3
    case $s in
        starling)
            "$@" taskset -c 0 "$STARLING" --config "$conf" serve 2>>"$d/server.log" & ;;
        prosody)
            # -F: foreground. The PID is the Lua interpreter's (the script is exec'd).
            "$@" taskset -c 0 prosody --config "$conf" -F >>"$d/server.log" 2>&1 & ;;
        ejabberd)
            # erl directly (what ejabberdctl foreground runs, minus su, epmd and the node
            # name). One scheduler: the VM is pinned to one CPU like the others; no busy
            # waiting, whose spinning would be counted as CPU time.
            ERL_LIBS=$EJABBERD_LIBS EJABBERD_CONFIG_PATH=$conf \
            EJABBERD_LOG_PATH=$d/logs/ejabberd.log ERL_MAX_PORTS=32000 ERL_CRASH_DUMP=$d/logs/erl_crash.dump \
                "$@" taskset -c 0 erl +K true +P 250000 +S 1:1 +SDcpu 1:1 +sbwt none +sbwtdcpu none +sbwtdio none \
                -noinput -noshell -mnesia dir "\"$d/spool\"" -s ejabberd >>"$d/server.log" 2>&1 & ;;
    esac
    SPAWNED_PID=$!
}

start_server() {  # start_server NAME [PROFILE]; sets SERVER_PID (the process whose /proc we read)
    local s=$1 d=${DIR[$1]} profile=${2:-base}
    local m=
    [ "$profile" = base ] || m=-$profile
    stop_server
    # The server may hold as many files as the hard limit allows (the scale run).
    ulimit -n "$(ulimit -Hn)"
    local conf
    case $s in
        starling) conf=$d/starling$m.toml ;;
        prosody) conf=$d/prosody$m.cfg.lua ;;
        ejabberd) conf=$d/ejabberd$m.yml ;;
    esac
    spawn_server "$s" "$conf" "$d"
    SERVER_PID=$SPAWNED_PID
    if ! wait_port "${PORT[$s]}" 60; then
        log "$s did not start; last lines of $d/server.log:"
        tail -20 "$d/server.log" >&2
        SERVER_PID=
        return 1
    fi
    sleep 2  # let it finish starting (and its memory settle) before measuring
    log "$s started ($profile profile, pid $SERVER_PID, port ${PORT[$s]}, rss $(awk '/VmRSS/{print $2}' /proc/$SERVER_PID/status) KiB)"
}

# bench SERVER REP SECURITY SCENARIO ARGS...: one load generator run on CPU 1, bounded in time.
bench() {
    local s=$1 rep=$2 sec=$3; shift 3
    local rc=0
    timeout --kill-after=10 1200 taskset -c 1 "$BENCH" --server "127.0.0.1:${PORT[$s]}" --security "$sec" \
        --server-pid "$SERVER_PID" --label "$s" --tag "rep=$rep" --scram-cache "$OUT/scram-cache" "$@" \
        >>"$JSONL" 2>>"$OUT/bench.log" || rc=$?
    [ $rc = 0 ] || log "  $s $* exited with $rc (see $OUT/bench.log)"
    tail -1 "$JSONL" | cut -c1-200 >&2
    return 0
}

# --- Accounts: the same on each server ------------------------------------------------------
USERS=$SESSIONS
[ "$CHAT_USERS" -gt "$USERS" ] && USERS=$CHAT_USERS
has "$SCENARIOS" resume && [ $((RESUME_SESSIONS + RESUME_SENDERS)) -gt "$USERS" ] && USERS=$((RESUME_SESSIONS + RESUME_SENDERS))
if has_any "$SCENARIOS" "$MUC_SCENARIOS"; then
    for n in "$MUC_JOIN" "$MUC_BIG_ROOM" $((MUC_ROOMS * MUC_ROOM_SIZE)); do [ "$n" -gt "$USERS" ] && USERS=$n; done
fi
ARCHIVE_END=$(date +%s)  # the newest archived message: the same archive on every server
accounts() {  # PREFIX COUNT [DOMAIN]
    for i in $(seq 0 $(($2 - 1))); do echo "$1$i@${3:-localhost} password"; done
}
prosody_rosters() {  # DIR USERS CONTACTS: rN's contacts are rN±1..±CONTACTS/2 (mod USERS), 'both'
    mkdir -p "$1"
    awk -v dir="$1" -v n="$2" -v c="$3" 'BEGIN {
        for (i = 0; i < n; i++) {
            f = dir "/r" i ".dat"
            printf "return {\n\t[false] = { [\"version\"] = 1; [\"pending\"] = {}; };\n" > f
            for (d = 1; d <= c / 2; d++) {
                split((i + d) % n " " (i + n - d) % n, js, " ")
                for (k = 1; k <= 2; k++)
                    printf "\t[\"r%d@localhost\"] = { [\"subscription\"] = \"both\"; [\"groups\"] = {}; };\n", js[k] > f
            }
            printf "};\n" > f
            close(f)
        }
    }'
}
provision() {
    local s=$1 users=$USERS
    # Only the s2s scenarios: their pairs have accounts of their own (s2s_provision).
    has_any "$SCENARIOS" "$ALL_SCENARIOS,$MUC_SCENARIOS" || return 0
    [ "$s" = starling ] && has "$SCENARIOS" scale && [ "$SCALE" -gt "$users" ] && users=$SCALE
    [ -f "${DIR[$s]}/provisioned" ] && return 0
    log "provisioning $s: $users users, $ROSTER_USERS roster users, 2 offline users"
    local t0=$SECONDS
    case $s in
        starling)
            { accounts user "$users"; accounts r "$ROSTER_USERS"; accounts o 2; accounts a 1; } \
                | "$STARLING" --config "${DIR[starling]}/starling.toml" user add --create-db --batch >&2
            start_server starling ;;
        *)
            start_server "$s"
            bench "$s" 0 plain register --count "$users" --parallel 32
            bench "$s" 0 plain --prefix r register --count "$ROSTER_USERS"
            bench "$s" 0 plain --prefix o register --count 2
            bench "$s" 0 plain --prefix a register --count 1
            if [ "$s" = prosody ] && has "$SCENARIOS" roster; then
                # Prosody's file store rewrites a whole roster per subscription change and
                # needs minutes for the handshakes of roster-setup; its rosters are written
                # directly instead (the same ones; roster-setup then verifies them).
                stop_server
                prosody_rosters "${DIR[prosody]}/data/localhost/roster" "$ROSTER_USERS" 100
                start_server prosody
            fi ;;
    esac
    # One login of every account: fills the load generator's SCRAM cache (its PBKDF2) and
    # the server's caches alike, before anything is measured.
    bench "$s" 0 plain --tag phase=warmup connect --count "$users" --ramp 100000 --parallel 32 --hold 0 --no-presence
    if has "$SCENARIOS" roster; then
        bench "$s" 0 plain --prefix r roster-setup --count "$ROSTER_USERS"
    fi
    stop_server
    has "$SCENARIOS" archive && provision_archive "$s"
    log "  provisioned $s in $((SECONDS - t0)) s"
    touch "${DIR[$s]}/provisioned"
}

# The archive scenario's account a0, with ARCHIVE_MESSAGES messages written by each
# server's bulk path; its manifest (what the queries check against) is written last.
provision_archive() {
    local s=$1 d=${DIR[$1]} t0=$SECONDS
    local gen=("$BENCH" --prefix a archive-gen --messages "$ARCHIVE_MESSAGES" --end-time "$ARCHIVE_END")
    log "provisioning the archive of a0 on $s: $ARCHIVE_MESSAGES messages"
    case $s in
        starling)
            if ! starling_can_import; then
                log "  this Starling has no 'starling archive import': no archive scenario for it"
                return 0
            fi
            "${gen[@]}" --format jsonl > "$d/archive.jsonl"
            starling_import_archive "$d/starling-modern.toml" a0@localhost "$d/archive.jsonl" >&2 || return 0
            rm -f "$d/archive.jsonl" ;;
        prosody|ejabberd)
            # The server makes its own tables (a query makes Prosody's), then stops; the
            # messages go straight into them, as one transaction.
            start_server "$s" modern
            bench "$s" 0 plain --prefix a archive-query --touch
            stop_server
            local db=$d/data/prosody.sqlite format=prosody-sql
            [ "$s" = ejabberd ] && db=$d/ejabberd.db format=ejabberd-sql
            "${gen[@]}" --format $format | sqlite3 -bail "$db" || { log "  import into $db failed"; return 0; } ;;
    esac
    "${gen[@]}" --manifest "$d/archive.json" --manifest-only
    log "  archive of $s provisioned in $((SECONDS - t0)) s"
}

# --- The s2s scenarios: two servers of one kind federating ---------------------------------
# Both servers and the load generator run in one private network namespace (nothing but its
# own loopback, 127.0.0.0/8) and mount namespace, held by a process of ours (unshare, then
# sleep). There /etc/hosts names a.example 127.0.0.2 and b.example (and the memory run's
# extra domains) 127.0.0.3, and /etc/resolv.conf names 192.0.2.53, to which that namespace
# has no route: every SRV lookup fails at once and each server falls back to the hosts
# file's address on port 5269 (RFC 6120 §3.2.2), as in compat/federation. Nothing of the
# machine's network or files changes; the namespaces end with their last process. Servers
# and load generator enter them with nsenter (which execs them: their pids are theirs).
S2S_NS=
S2S_C2S_PORT=5222
S2S_IP_A=127.0.0.2 S2S_IP_B=127.0.0.3
S2S_DOMAIN_A=a.example S2S_DOMAIN_B=b.example
declare -A S2S_PID=([a]= [b]=)
s2s_link_domains() {  # the memory run's extra domains on b.example's server (s2s.rs: link_domain)
    local k
    for k in $(seq 1 "$S2S_LINKS"); do echo "${S2S_DOMAIN_B%%.*}$k.${S2S_DOMAIN_B#*.}"; done
}
s2s_dir() { echo "$OUT/$1/s2s-$2"; }            # s2s_dir NAME SIDE
s2s_conf() {                                    # s2s_conf NAME SIDE PROFILE: its config file
    local ext
    case $1 in starling) ext=toml ;; prosody) ext=cfg.lua ;; ejabberd) ext=yml ;; esac
    echo "$(s2s_dir "$1" "$2")/$1-$3.$ext"
}
s2s_up() {
    if [ -n "$S2S_NS" ] && kill -0 "$S2S_NS" 2>/dev/null; then return 0; fi
    local hosts=$OUT/s2s-hosts resolv=$OUT/s2s-resolv.conf d _
    {
        printf '127.0.0.1\tlocalhost\n%s\t%s\n%s\t%s\n' "$S2S_IP_A" "$S2S_DOMAIN_A" "$S2S_IP_B" "$S2S_DOMAIN_B"
        for d in $(s2s_link_domains); do printf '%s\t%s\n' "$S2S_IP_B" "$d"; done
    } > "$hosts"
    printf 'nameserver 192.0.2.53\noptions timeout:1 attempts:1\n' > "$resolv"
    unshare --net --mount --propagation private sh -c \
        'ip link set lo up && mount --bind "$1" /etc/hosts && mount --bind "$2" /etc/resolv.conf && exec sleep infinity' \
        s2s-namespace "$hosts" "$resolv" &
    S2S_NS=$!
    for _ in $(seq 50); do
        if nsenter -t "$S2S_NS" -n -m sh -c "grep -q '\s$S2S_DOMAIN_B\$' /etc/hosts && grep -q 192.0.2.53 /etc/resolv.conf" 2>/dev/null; then
            log "s2s namespace ready (held by pid $S2S_NS)"
            return 0
        fi
        kill -0 "$S2S_NS" 2>/dev/null || break
        sleep 0.1
    done
    log "could not make the s2s namespace"
    s2s_down
    return 1
}
s2s_stop_pair() {
    local side pid _
    for side in a b; do
        if [ -n "${S2S_PID[$side]}" ]; then kill -TERM "${S2S_PID[$side]}" 2>/dev/null || true; fi
    done
    for side in a b; do
        pid=${S2S_PID[$side]}
        [ -n "$pid" ] || continue
        for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
        S2S_PID[$side]=
    done
}
s2s_down() {  # the pair, anything else left in the namespace (all started by this run), the holder
    s2s_stop_pair
    [ -n "$S2S_NS" ] || return 0
    local ns pids p _
    ns=$(readlink "/proc/$S2S_NS/ns/net" 2>/dev/null) || ns=
    if [ -n "$ns" ]; then
        for _ in 1 2; do
            pids=
            for p in /proc/[0-9]*; do
                [ "${p#/proc/}" != "$S2S_NS" ] && [ "$(readlink "$p/ns/net" 2>/dev/null)" = "$ns" ] && pids="$pids ${p#/proc/}"
            done
            [ -n "$pids" ] || break
            log "stopping what is left in the s2s namespace:$pids"
            # shellcheck disable=SC2086
            kill -TERM $pids 2>/dev/null || true
            sleep 2
            # shellcheck disable=SC2086
            kill -KILL $pids 2>/dev/null || true
        done
    fi
    kill -TERM "$S2S_NS" 2>/dev/null || true
    wait "$S2S_NS" 2>/dev/null || true
    S2S_NS=
}
s2s_open() {  # s2s_open IP PORT: something listens there, in the namespace
    nsenter -t "$S2S_NS" -n bash -c "echo > /dev/tcp/$1/$2" 2>/dev/null
}
# s2s_start_pair NAME PROFILE: a.example's and b.example's servers of kind NAME with their
# PROFILE configs (s2s; s2s-links: b.example's server serving the extra domains too).
s2s_start_pair() {
    local s=$1 profile=$2 side ip ok _
    s2s_stop_pair
    s2s_up
    ulimit -n "$(ulimit -Hn)"
    for side in a b; do
        spawn_server "$s" "$(s2s_conf "$s" $side "$profile")" "$(s2s_dir "$s" $side)" nsenter -t "$S2S_NS" -n -m --
        S2S_PID[$side]=$SPAWNED_PID
    done
    for side in a b; do
        ip=$S2S_IP_A
        [ $side = b ] && ip=$S2S_IP_B
        ok=0
        # ejabberd with the memory run's hundred hosts takes a while.
        for _ in $(seq 1200); do
            kill -0 "${S2S_PID[$side]}" 2>/dev/null || break
            if s2s_open "$ip" "$S2S_C2S_PORT" && s2s_open "$ip" 5269; then ok=1; break; fi
            sleep 0.1
        done
        if [ $ok = 0 ]; then
            log "$s ($side side, $profile) did not start; last lines of $(s2s_dir "$s" $side)/server.log:"
            tail -20 "$(s2s_dir "$s" $side)/server.log" >&2
            s2s_stop_pair
            return 1
        fi
    done
    sleep 2  # let them finish starting (and their memory settle) before measuring
    log "$s pair started ($profile: pids ${S2S_PID[a]} and ${S2S_PID[b]}, rss $(awk '/VmRSS/{print $2}' /proc/${S2S_PID[a]}/status) and $(awk '/VmRSS/{print $2}' /proc/${S2S_PID[b]}/status) KiB)"
}
s2s_peer() {  # the load generator's options for b.example's server
    echo --server-b "$S2S_IP_B:$S2S_C2S_PORT" --domain-b "$S2S_DOMAIN_B" --server-b-pid "${S2S_PID[b]}"
}
# s2s_bench NAME REP SIDE ARGS...: one load generator run in the namespace on CPU 1, against
# the server of SIDE (a or b), bounded in time.
s2s_bench() {
    local s=$1 rep=$2 side=$3 ip=$S2S_IP_A domain=$S2S_DOMAIN_A rc=0
    shift 3
    [ "$side" = b ] && ip=$S2S_IP_B domain=$S2S_DOMAIN_B
    nsenter -t "$S2S_NS" -n -- timeout --kill-after=10 1200 taskset -c 1 "$BENCH" --server "$ip:$S2S_C2S_PORT" \
        --domain "$domain" --security plain --server-pid "${S2S_PID[$side]}" --label "$s" --tag "rep=$rep" \
        --scram-cache "$OUT/scram-cache" "$@" >>"$JSONL" 2>>"$OUT/bench.log" || rc=$?
    [ $rc = 0 ] || log "  $s $* exited with $rc (see $OUT/bench.log)"
    tail -1 "$JSONL" | cut -c1-200 >&2
    return 0
}
# s2s_provision NAME: the pair's configs, and S2S_USERS accounts on each of its servers.
s2s_provision() {
    local s=$1 side d t0=$SECONDS domains tpl
    [ -f "$OUT/$s/s2s-provisioned" ] && return 0
    case $s in starling) tpl=starling.toml.in ;; prosody) tpl=prosody.cfg.lua.in ;; ejabberd) tpl=ejabberd.yml.in ;; esac
    log "provisioning the $s pair: $S2S_USERS users on $S2S_DOMAIN_A and on $S2S_DOMAIN_B"
    for side in a b; do
        d=$(s2s_dir "$s" $side)
        mkdir -p "$d/data" "$d/certs" "$d/spool" "$d/logs"
        if [ $side = a ]; then
            fill $tpl "$s" s2s "$d" "$S2S_IP_A" "$S2S_DOMAIN_A" > "$(s2s_conf "$s" a s2s)"
            cp "$(s2s_conf "$s" a s2s)" "$(s2s_conf "$s" a s2s-links)"
        else
            fill $tpl "$s" s2s "$d" "$S2S_IP_B" "$S2S_DOMAIN_B" > "$(s2s_conf "$s" b s2s)"
            domains="$S2S_DOMAIN_B $(s2s_link_domains | tr '\n' ' ')"
            fill $tpl "$s" s2s "$d" "$S2S_IP_B" "$domains" > "$(s2s_conf "$s" b s2s-links)"
        fi
    done
    case $s in
        starling)
            accounts user "$S2S_USERS" "$S2S_DOMAIN_A" | "$STARLING" --config "$(s2s_conf starling a s2s)" user add --create-db --batch >&2
            accounts user "$S2S_USERS" "$S2S_DOMAIN_B" | "$STARLING" --config "$(s2s_conf starling b s2s)" user add --create-db --batch >&2
            s2s_start_pair starling s2s ;;
        *)
            s2s_start_pair "$s" s2s
            s2s_bench "$s" 0 a register --count "$S2S_USERS" --parallel 32
            s2s_bench "$s" 0 b register --count "$S2S_USERS" --parallel 32 ;;
    esac
    # One login of every account on each side: the SCRAM cache, as provision does.
    s2s_bench "$s" 0 a --tag phase=warmup connect --count "$S2S_USERS" --ramp 100000 --parallel 32 --hold 0 --no-presence
    s2s_bench "$s" 0 b --tag phase=warmup connect --count "$S2S_USERS" --ramp 100000 --parallel 32 --hold 0 --no-presence
    s2s_stop_pair
    log "  provisioned the $s pair in $((SECONDS - t0)) s"
    touch "$OUT/$s/s2s-provisioned"
}

IFS=, read -ra SERVER_LIST <<< "$SERVERS"
ver() { dpkg-query -W -f='${Version}' "$1" 2>/dev/null || echo "?"; }
starling_rev=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo "?")
git -C "$ROOT" diff --quiet HEAD -- src 2>/dev/null || starling_rev="$starling_rev + uncommitted changes in src/"
[ -n "$STARLING_GIVEN" ] && starling_rev="binary given in STARLING (tree at $starling_rev)"
run_cmd="compat/bench/run.sh"
for arg in "${ARGS[@]}"; do case $arg in --out|/tmp/*) ;; *) run_cmd="$run_cmd $arg" ;; esac; done
MODERN_ENV=
if [ "$MODERN" = 1 ]; then
    # How long a durable SQLite commit takes on this disk: the peers' SQLite archives
    # commit every archived message on its own.
    commit_ms="?"
    if command -v sqlite3 >/dev/null; then
        probe=$OUT/commit-probe.db
        rm -f "$probe"
        t0=$(date +%s%N)
        { echo 'CREATE TABLE t (x);'; for i in $(seq 50); do echo "INSERT INTO t VALUES ($i);"; done; } | sqlite3 "$probe"
        commit_ms=$(awk -v ns=$(( $(date +%s%N) - t0 )) 'BEGIN { printf "%.1f", ns / 51 / 1e6 }')
        rm -f "$probe"
    fi
    if [ "$PEER_ARCHIVE" = sql ]; then
        peer_archive="SQLite (rollback journal, synchronous=FULL, one commit per archived message; a commit takes about $commit_ms ms on this disk)"
    else
        peer_archive="native (Prosody's file store, not fsync'd; ejabberd's Mnesia)"
    fi
    MODERN_ENV=",\"modern profile\":\"message archive, carbons and stream management on; Prosody and ejabberd archive in $peer_archive; Starling's archive: $STARLING_ARCHIVE\""
fi
S2S_ENV=
if has_any "$SCENARIOS" "$S2S_SCENARIOS"; then
    S2S_ENV=",\"s2s profile\":\"two servers of the same kind federating (the base profile plus federation), $S2S_DOMAIN_A on $S2S_IP_A and $S2S_DOMAIN_B on $S2S_IP_B of a private network namespace whose hosts file names them (SRV lookups fail at once: port 5269 of the hosts file's address); STARTTLS required on every link, one self-signed certificate for both (nobody can verify it), so every link is authenticated with Server Dialback (XEP-0220); both servers on CPU 0, the load generator on CPU 1; $S2S_USERS users on each server, each chatting only with the account of the same number on the other, $CHAT_SECONDS s per step, CPU per message at $S2S_FIXED_RATE msg/s (both directions together); memory per link: links to $S2S_LINKS more domains of $S2S_DOMAIN_B's server\""
fi
cat >> "$JSONL" <<ENV
{"scenario":"env","command":"$run_cmd","date":"$(date -u '+%Y-%m-%d %H:%M UTC')","machine":"$(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'), $(free -g | awk '/Mem:/{print $2}') GiB, Linux $(uname -r))","pinning":"server on CPU 0, load generator on CPU 1 (taskset)","starling":"$starling_rev, binary built $(date -u -r "$STARLING" '+%Y-%m-%d %H:%M UTC')","prosody":"$(ver prosody) (Debian package; Lua $(ver lua5.4), network_backend epoll)","ejabberd":"$(ver ejabberd) (Debian package; Erlang/OTP erts $(ver erlang-base), +S 1:1, no scheduler busy-wait)","certificate":"one self-signed ECDSA P-256 certificate for all three","sizes":"$SESSIONS idle sessions per memory/login run; chat: $CHAT_USERS users, $CHAT_SECONDS s per step, CPU per message at $CHAT_FIXED_RATE msg/s (with archive, carbons and SM: $CHAT_SM_FIXED_RATE msg/s); roster: $ROSTER_USERS users with 100 contacts; offline: $OFFLINE_MESSAGES messages; scale: $SCALE TLS sessions; archive: $ARCHIVE_MESSAGES messages, $ARCHIVE_QUERIES queries per type; resumption: $RESUME_SESSIONS sessions, $((RESUME_MESSAGES + 1)) messages each; muc: $MUC_ROOMS rooms of $MUC_ROOM_SIZE and one of $MUC_BIG_ROOM occupants, $MUC_BIG_RATE + $MUC_SMALL_RATE msg/s for $MUC_SECONDS s per step, $MUC_JOIN joining one room, $MUC_HISTORY_JOINS joins of a room with 20 messages of history; $REPS repetition(s)"$MODERN_ENV$S2S_ENV}
ENV
for s in "${SERVER_LIST[@]}"; do
    provision "$s"
    if has_any "$SCENARIOS" "$S2S_SCENARIOS"; then s2s_provision "$s"; fi
done

# --- Measurements, interleaved ---------------------------------------------------------------
for rep in $(seq 1 "$REPS"); do
    for s in "${SERVER_LIST[@]}"; do
        log "rep $rep/$REPS: $s"
        # Each memory figure on a fresh server: memory freed by an earlier run would hide
        # the cost of the next.
        if has "$SCENARIOS" connect; then
            start_server "$s"
            bench "$s" "$rep" plain connect --count "$SESSIONS" --ramp 2000 --parallel 64 --hold 5 --ping
        fi
        if has "$SCENARIOS" connect-tls; then
            start_server "$s"
            bench "$s" "$rep" starttls connect --count "$SESSIONS" --ramp 2000 --parallel 64 --hold 5 --ping
        fi
        if has "$SCENARIOS" chat || has "$SCENARIOS" chat-tls || has "$SCENARIOS" sweep || has "$SCENARIOS" offline || has "$SCENARIOS" roster; then
            start_server "$s"
            has "$SCENARIOS" chat && bench "$s" "$rep" plain chat --count "$CHAT_USERS" --rate "$CHAT_FIXED_RATE" --duration "$CHAT_SECONDS"
            has "$SCENARIOS" chat-tls && bench "$s" "$rep" starttls chat --count "$CHAT_USERS" --rate "$CHAT_FIXED_RATE" --duration "$CHAT_SECONDS"
            has "$SCENARIOS" sweep && bench "$s" "$rep" plain chat --count "$CHAT_USERS" --sweep --rate 1000 --duration "$CHAT_SECONDS" --bisect "$BISECT" --max-p99-ms 50
            has "$SCENARIOS" offline && bench "$s" "$rep" plain --prefix o offline --messages "$OFFLINE_MESSAGES"
            has "$SCENARIOS" roster && bench "$s" "$rep" plain --prefix r roster-login --count "$ROSTER_USERS"
        fi
        stop_server
        # The modern profile: archive, carbons, stream management. Its lines are tagged
        # with the profile and with whether (and where) the server archived.
        archive=$PEER_ARCHIVE
        [ "$s" = starling ] && archive=$STARLING_ARCHIVE
        modern=(--tag profile=modern --tag "archive=$archive")
        if has "$SCENARIOS" connect-sm; then
            start_server "$s" modern
            bench "$s" "$rep" plain "${modern[@]}" connect --count "$SESSIONS" --ramp 2000 --parallel 64 --hold 5 --ping --sm
        fi
        if has "$SCENARIOS" connect-sm-tls; then
            start_server "$s" modern
            bench "$s" "$rep" starttls "${modern[@]}" connect --count "$SESSIONS" --ramp 2000 --parallel 64 --hold 5 --ping --sm
        fi
        if has_any "$SCENARIOS" archive,chat-sm,sweep-sm,resume; then
            start_server "$s" modern
            if has "$SCENARIOS" archive; then
                if [ -f "${DIR[$s]}/archive.json" ]; then
                    bench "$s" "$rep" plain "${modern[@]}" --prefix a archive-query --manifest "${DIR[$s]}/archive.json" --queries "$ARCHIVE_QUERIES"
                else
                    log "  $s: no archive provisioned, no archive scenario"
                fi
            fi
            has "$SCENARIOS" chat-sm && bench "$s" "$rep" plain "${modern[@]}" chat --count "$CHAT_USERS" --rate "$CHAT_SM_FIXED_RATE" --duration "$CHAT_SECONDS" --sm --carbons
            has "$SCENARIOS" sweep-sm && bench "$s" "$rep" plain "${modern[@]}" chat --count "$CHAT_USERS" --sweep --rate "$CHAT_SM_SWEEP_FROM" --min-rate 25 --duration "$CHAT_SECONDS" --bisect "$BISECT" --max-p99-ms 50 --sm --carbons
            has "$SCENARIOS" resume && bench "$s" "$rep" plain "${modern[@]}" resume --count "$RESUME_SESSIONS" --senders "$RESUME_SENDERS" --messages "$RESUME_MESSAGES"
        fi
        stop_server
        # The muc profile: the modern one with multi-user chat rooms, archived. Each on a
        # fresh server (memory first); every run makes rooms of its own.
        muc=(--tag profile=muc --tag "archive=$archive")
        if has "$SCENARIOS" muc-memory; then
            start_server "$s" muc
            bench "$s" "$rep" plain "${muc[@]}" muc-memory --count "$MUC_JOIN"
        fi
        if has "$SCENARIOS" muc-join; then
            start_server "$s" muc
            bench "$s" "$rep" plain "${muc[@]}" muc-join --count "$MUC_JOIN" --history-joins "$MUC_HISTORY_JOINS"
        fi
        if has "$SCENARIOS" muc-fanout; then
            # The sweep's first step is the fixed rate: its figures are those at that rate.
            start_server "$s" muc
            bench "$s" "$rep" plain "${muc[@]}" muc-fanout --rooms "$MUC_ROOMS" --room-size "$MUC_ROOM_SIZE" \
                --big-room "$MUC_BIG_ROOM" --big-rate "$MUC_BIG_RATE" --small-rate "$MUC_SMALL_RATE" \
                --duration "$MUC_SECONDS" --sweep --bisect "$BISECT" --max-p99-ms 100
        fi
        stop_server
        # The s2s profile: two servers of this kind federating (the base profile plus
        # federation), both on CPU 0. Chat and sweep on one pair; the memory per link on a
        # fresh pair whose b.example server serves the extra domains too.
        if has_any "$SCENARIOS" s2s-chat,s2s-sweep; then
            s2s_start_pair "$s" s2s
            # shellcheck disable=SC2046
            has "$SCENARIOS" s2s-chat && s2s_bench "$s" "$rep" a --tag profile=s2s s2s-chat $(s2s_peer) \
                --count "$S2S_USERS" --rate "$S2S_FIXED_RATE" --duration "$CHAT_SECONDS"
            # shellcheck disable=SC2046
            has "$SCENARIOS" s2s-sweep && s2s_bench "$s" "$rep" a --tag profile=s2s s2s-chat $(s2s_peer) \
                --count "$S2S_USERS" --sweep --rate "$S2S_FIXED_RATE" --duration "$CHAT_SECONDS" --bisect "$BISECT" --max-p99-ms 50
            s2s_stop_pair
        fi
        if has "$SCENARIOS" s2s-memory; then
            s2s_start_pair "$s" s2s-links
            # shellcheck disable=SC2046
            s2s_bench "$s" "$rep" a --tag profile=s2s s2s-links $(s2s_peer) --links "$S2S_LINKS"
            s2s_stop_pair
        fi
    done
done

# --- Starling alone: many idle TLS sessions, all answering pings -------------------------------
if has "$SCENARIOS" scale && has "$SERVERS" starling; then
    log "scale: $SCALE TLS sessions on Starling"
    start_server starling
    bench starling 1 starttls connect --count "$SCALE" --ramp 1000 --parallel 64 --hold 5 --ping \
        --checkpoints "$SCALE_CHECKPOINTS" --settle 3 --read-buffer 2048 --tag kind=scale
    stop_server
fi

if [ -z "$RESULTS" ]; then
    if [ "$QUICK" = 0 ] && [ "$SERVERS" = starling,prosody,ejabberd ] && [ "$SCENARIOS" = "$ALL_SCENARIOS" ]; then
        RESULTS=$HERE/RESULTS.md
    else
        RESULTS=$OUT/RESULTS.md
    fi
fi
report "$JSONL" "$RESULTS"
if [ "$RESULTS" != "$OUT/RESULTS.md" ]; then
    cp "$RESULTS" "$OUT/RESULTS.md"
    # The raw lines behind the committed report, next to it.
    [ "$RESULTS" = "$HERE/RESULTS.md" ] && cp "$JSONL" "$HERE/results.jsonl"
fi
log "done: $JSONL"

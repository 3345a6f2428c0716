#!/usr/bin/env bash
# Live federation test: two XMPP servers, each in its own network namespace on a private
# bridge, with real clients (slixmpp) on both sides. See compat/federation/README.md.
#
#   bash compat/federation/run.sh [--pair A-B] [--mode dialback|ca|both] [--keep]
#
#   --pair A-B   server kinds: A serves a.example, B serves b.example (default
#                prosody-ejabberd). A kind is a file servers/<kind>.sh.
#   --mode M     dialback: self-signed certificates nobody can verify (Server Dialback,
#                XEP-0220); ca: certificates from a test CA both trust (SASL EXTERNAL,
#                XEP-0178), subjectAltName DNS names only; ca-xmppaddr: the same plus an
#                XmppAddr otherName; both (default): dialback then ca; all: the three. Each
#                mode on fresh servers.
#   --keep       keep the work directory (configs, logs, certificates) afterwards.
#
# Runs as root (network namespaces). Exit code 0 only if every flow passed (or failed in a way
# listed in known-issues.txt). Every wait is bounded; the network, the servers and the files in
# /etc/netns are removed on exit, and a rerun after a crash removes what a previous run left.
set -euo pipefail

FED_HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PAIR=prosody-ejabberd
MODE_ARG=both
KEEP=0
while [ $# -gt 0 ]; do
    case $1 in
        --pair) PAIR=${2:?--pair needs A-B}; shift 2 ;;
        --pair=*) PAIR=${1#*=}; shift ;;
        --mode) MODE_ARG=${2:?--mode needs dialback, ca or both}; shift 2 ;;
        --mode=*) MODE_ARG=${1#*=}; shift ;;
        --keep) KEEP=1; shift ;;
        -h|--help) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
done
case $MODE_ARG in
    both) MODES="dialback ca" ;;
    all) MODES="dialback ca ca-xmppaddr" ;;
    dialback|ca|ca-xmppaddr) MODES=$MODE_ARG ;;
    *) echo "--mode must be dialback, ca, ca-xmppaddr, both or all" >&2; exit 2 ;;
esac
KIND_A=${PAIR%%-*}
KIND_B=${PAIR#*-}
[ -n "$KIND_A" ] && [ -n "$KIND_B" ] && [ "$KIND_A-$KIND_B" = "$PAIR" ] || { echo "--pair must be A-B" >&2; exit 2; }

log() { printf '[fed %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# --- fixed names: everything this harness creates on the machine ------------------------------
NS_NET=stfed-net          # holds the bridge (and the host ends of the veth pairs)
NS_A=stfed-a              # server A (a.example) and the clients of a.example
NS_B=stfed-b              # server B (b.example) and the clients of b.example
BRIDGE=br0                # inside $NS_NET
SUBNET=10.237.0           # /24, exists only inside the namespaces above
IP_A=$SUBNET.1
IP_B=$SUBNET.2
DOMAIN_A=a.example
DOMAIN_B=b.example
STATE=/run/starling-fed   # lock file and the path of the current work directory
WORK_PREFIX=/tmp/starling-fed.
ALL_NS="$NS_A $NS_B $NS_NET"
STOP_GRACE=5              # seconds a server gets to exit after SIGTERM before SIGKILL
START_TIMEOUT=${FED_START_TIMEOUT:-60}
FLOWS_TIMEOUT=${FED_FLOWS_TIMEOUT:-240}
export FED_HERE

[ "$(id -u)" = 0 ] || die "run as root: the harness creates network namespaces (ip netns)"
for c in ip openssl timeout flock sed awk; do command -v $c >/dev/null || die "missing command: $c"; done
for k in "$KIND_A" "$KIND_B"; do
    [ -f "$FED_HERE/servers/$k.sh" ] || die "no server kind '$k' (no $FED_HERE/servers/$k.sh)"
    # shellcheck source=/dev/null
    . "$FED_HERE/servers/$k.sh"
    declare -F "${k}_start" >/dev/null && declare -F "${k}_register" >/dev/null \
        || die "servers/$k.sh must define ${k}_start and ${k}_register"
    if declare -F "${k}_prereq" >/dev/null; then "${k}_prereq" || die "$k: prerequisites missing"; fi
done
# Debian's interpreter (with Debian's python3-slixmpp) unless told otherwise: "python3" on PATH
# may be another installation (pyenv) without slixmpp.
PYTHON=${FED_PYTHON:-/usr/bin/python3}
if ! "$PYTHON" -c 'import slixmpp' 2>/dev/null; then
    [ "$PYTHON" = /usr/bin/python3 ] && command -v apt-get >/dev/null || die "$PYTHON cannot import slixmpp"
    log "apt-get install python3-slixmpp"
    DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y -qq python3-slixmpp >/dev/null \
        || die "apt-get install python3-slixmpp failed"
fi

# --- one run at a time; leftovers of a crashed run go first ----------------------------------
mkdir -p "$STATE"
exec 9>"$STATE/lock"
flock -w 10 9 || die "another federation run holds $STATE/lock"

ns_exists() { [ -e "/run/netns/$1" ]; }
kill_ns() {  # kill_ns NS: every process in the namespace (only our servers and what they spawned)
    local ns=$1 pids
    ns_exists "$ns" || return 0
    pids=$(ip netns pids "$ns" 2>/dev/null || true)
    [ -n "$pids" ] || return 0
    # shellcheck disable=SC2086
    kill -TERM $pids 2>/dev/null || true
    for _ in $(seq $((STOP_GRACE * 10))); do
        pids=$(ip netns pids "$ns" 2>/dev/null || true)
        [ -n "$pids" ] || return 0
        sleep 0.1
    done
    log "  killing what is left in $ns: $pids"
    # shellcheck disable=SC2086
    kill -KILL $pids 2>/dev/null || true
    for _ in $(seq 20); do [ -z "$(ip netns pids "$ns" 2>/dev/null || true)" ] && return 0; sleep 0.1; done
}
net_down() {  # servers, namespaces (the veths and the bridge go with them), /etc/netns files
    local ns
    for ns in $ALL_NS; do kill_ns "$ns"; done
    for ns in $ALL_NS; do
        if ns_exists "$ns"; then ip netns del "$ns" 2>/dev/null || log "  could not delete namespace $ns"; fi
        rm -rf "/etc/netns/$ns"
    done
    rmdir /etc/netns 2>/dev/null || true  # only if empty (no other user of ip netns)
}
leftovers() {
    local w pid
    # A flows.py of a run killed with SIGKILL (it lives in the root namespace; its deadline
    # would end it too): only if that pid still runs our flows.py.
    if [ -f "$STATE/flows.pid" ]; then
        pid=$(cat "$STATE/flows.pid")
        if [ -r "/proc/$pid/cmdline" ] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF "$FED_HERE/flows.py"; then
            log "stopping leftover flows.py (pid $pid)"
            kill -TERM "$pid" 2>/dev/null || true
        fi
        rm -f "$STATE/flows.pid"
    fi
    if [ -f "$STATE/work" ]; then
        w=$(cat "$STATE/work")
        case $w in "$WORK_PREFIX"*) [ -d "$w" ] && { log "removing leftover $w"; rm -rf "$w"; } ;; esac
        rm -f "$STATE/work"
    fi
    for ns in $ALL_NS; do ns_exists "$ns" && log "removing leftover namespace $ns"; done
    net_down
}
leftovers

WORK=$(mktemp -d "${WORK_PREFIX}XXXXXX")
chmod 755 "$WORK"
[ "$KEEP" = 1 ] || echo "$WORK" >"$STATE/work"
RESULTS=$WORK/results.tsv
: >"$RESULTS"
FLOWS_PID=
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    if [ -n "$FLOWS_PID" ]; then kill -TERM "$FLOWS_PID" 2>/dev/null || true; fi
    net_down
    if [ "$KEEP" = 1 ]; then
        log "kept $WORK"
    else
        rm -rf "$WORK"
        rm -f "$STATE/work"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- the network -------------------------------------------------------------------------------
# The bridge lives in a namespace of its own, not in the root namespace: nothing of the host's
# network (routes, firewall, bridge netfilter, addresses) is touched or can interfere, and
# deleting that one namespace removes the bridge and the host ends of both veth pairs at once.
hosts_file() {  # the /etc/hosts seen inside a server's namespace
    printf '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n'
    printf '%s\t%s conference.%s\n' "$IP_A" "$DOMAIN_A" "$DOMAIN_A" "$IP_B" "$DOMAIN_B" "$DOMAIN_B"
}
net_up() {
    ip netns add "$NS_NET"
    ip -n "$NS_NET" link set lo up
    ip -n "$NS_NET" link add "$BRIDGE" type bridge
    ip -n "$NS_NET" link set "$BRIDGE" up
    local side ns ip
    for side in a b; do
        if [ $side = a ]; then ns=$NS_A ip=$IP_A; else ns=$NS_B ip=$IP_B; fi
        ip netns add "$ns"
        ip -n "$ns" link set lo up
        # Created directly in the two namespaces: no veth ever appears in the root namespace.
        ip link add "veth-$side" netns "$NS_NET" type veth peer name eth0 netns "$ns"
        ip -n "$NS_NET" link set "veth-$side" master "$BRIDGE" up
        ip -n "$ns" addr add "$ip/24" dev eth0
        ip -n "$ns" link set eth0 up
        # ip netns exec bind-mounts these over /etc/hosts and /etc/resolv.conf. The name
        # server is an address the namespace has no route to (TEST-NET-1): every DNS query
        # fails at once (ENETUNREACH), so the SRV lookups for the peer end immediately and the
        # servers fall back to the hosts file's address on port 5269. (With 127.0.0.1, where
        # nothing listens, libunbound takes 12-17 s per SRV query before SERVFAIL.)
        mkdir -p "/etc/netns/$ns"
        hosts_file >"/etc/netns/$ns/hosts"
        printf 'nameserver 192.0.2.53\noptions timeout:1 attempts:1\n' >"/etc/netns/$ns/resolv.conf"
    done
    # Bounded wait until every link is up (no ping on minimal systems; the first s2s
    # connection then proves the path).
    local n
    for _ in $(seq 50); do
        n=0
        ip -n "$NS_A" -o link show eth0 | grep -q 'state UP' && n=$((n + 1))
        ip -n "$NS_B" -o link show eth0 | grep -q 'state UP' && n=$((n + 1))
        ip -n "$NS_NET" -o link show veth-a | grep -q 'state UP' && n=$((n + 1))
        ip -n "$NS_NET" -o link show veth-b | grep -q 'state UP' && n=$((n + 1))
        [ $n = 4 ] && return 0
        sleep 0.1
    done
    return 1
}

# --- certificates ------------------------------------------------------------------------------
# dialback: each domain a self-signed certificate (the peer cannot verify it).
# ca: a test CA signs both; each server trusts the CA. subjectAltName: the domain and its
# conference subdomain as DNS names; in ca-xmppaddr mode also the domain as an XmppAddr
# (id-on-xmppAddr otherName, RFC 6120 13.7.1.4), which ejabberd 23.01 cannot parse (README).
certs() {  # certs DIR MODE DOMAIN...
    local dir=$1 mode=$2; shift 2
    mkdir -p "$dir"
    local ec=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)
    # The CA exists in both modes (in dialback mode it signs nothing: the servers trust it
    # and still cannot verify each other).
    openssl req -x509 "${ec[@]}" -days 2 -keyout "$dir/ca.key" -out "$dir/ca.pem" \
        -subj "/CN=Starling federation test CA" -addext basicConstraints=critical,CA:TRUE \
        -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null
    local d san
    for d in "$@"; do
        san="DNS:$d,DNS:conference.$d"
        [ "$mode" = ca-xmppaddr ] && san="$san,otherName:1.3.6.1.5.5.7.8.5;UTF8:$d"
        if [ "$mode" != dialback ]; then
            openssl req "${ec[@]}" -keyout "$dir/$d.key" -out "$dir/$d.csr" -subj "/CN=$d" 2>/dev/null
            printf 'subjectAltName=%s\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth,clientAuth\n' "$san" >"$dir/$d.ext"
            openssl x509 -req -in "$dir/$d.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" -CAcreateserial \
                -days 2 -extfile "$dir/$d.ext" -out "$dir/$d.pem" 2>/dev/null
        else
            openssl req -x509 "${ec[@]}" -days 2 -keyout "$dir/$d.key" -out "$dir/$d.pem" -subj "/CN=$d" \
                -addext "subjectAltName=$san" -addext extendedKeyUsage=serverAuth,clientAuth 2>/dev/null
        fi
        cat "$dir/$d.pem" "$dir/$d.key" >"$dir/$d.full.pem"
        chmod 644 "$dir/$d.key" "$dir/$d.full.pem"
    done
    # What each side's clients trust for c2s: the CA, or in dialback mode the server's own cert.
    for d in "$@"; do
        if [ "$mode" != dialback ]; then cp "$dir/ca.pem" "$dir/$d.trust.pem"; else cp "$dir/$d.pem" "$dir/$d.trust.pem"; fi
    done
}

# --- server configs: fed_fill for the kinds' templates -------------------------------------------
# Variables of a template: @DOMAIN@ @MUC_DOMAIN@ @DIR@ @IP@ @CERT@ @KEY@ @PEM@ (cert+key) @CA@
# @MODE@ (dialback or ca) @PEER_DOMAIN@ @PEER_IP@ @COOKIE@. Lines starting "--@dialback " / "#@dialback " (or
# @ca) are kept (without the marker) only in that mode.
fed_fill() {  # fed_fill TEMPLATE: on stdout, with the FED_* variables of the server being set up
    local keep drop
    if [ "$FED_AUTH" = ca ]; then keep=ca drop=dialback; else keep=dialback drop=ca; fi
    sed -e "s|@DOMAIN@|$FED_DOMAIN|g" -e "s|@MUC_DOMAIN@|conference.$FED_DOMAIN|g" \
        -e "s|@DIR@|$FED_DIR|g" -e "s|@IP@|$FED_IP|g" -e "s|@CERT@|$FED_CERT|g" \
        -e "s|@KEY@|$FED_KEY|g" -e "s|@PEM@|$FED_PEM|g" -e "s|@CA@|$FED_CA|g" \
        -e "s|@MODE@|$FED_AUTH|g" -e "s|@PEER_DOMAIN@|$FED_PEER_DOMAIN|g" \
        -e "s|@PEER_IP@|$FED_PEER_IP|g" -e "s|@COOKIE@|$FED_COOKIE|g" \
        -e "/^\(--\|#\)@$drop /d" -e "s/^\(--\|#\)@$keep //" "$1"
}
server_env() {  # server_env SIDE MODE MODEDIR: exports FED_* for side a or b
    local side=$1
    # FED_MODE: the harness's mode; FED_AUTH: what the server is configured for (dialback|ca).
    export FED_MODE=$2 FED_AUTH=ca FED_COOKIE="stfed-$side-$$"
    [ "$2" = dialback ] && FED_AUTH=dialback
    if [ "$side" = a ]; then
        export FED_NS=$NS_A FED_KIND=$KIND_A FED_DOMAIN=$DOMAIN_A FED_IP=$IP_A FED_PEER_DOMAIN=$DOMAIN_B FED_PEER_IP=$IP_B
    else
        export FED_NS=$NS_B FED_KIND=$KIND_B FED_DOMAIN=$DOMAIN_B FED_IP=$IP_B FED_PEER_DOMAIN=$DOMAIN_A FED_PEER_IP=$IP_A
    fi
    export FED_DIR=$3/$side-$FED_KIND
    export FED_CERT=$3/certs/$FED_DOMAIN.pem FED_KEY=$3/certs/$FED_DOMAIN.key
    export FED_PEM=$3/certs/$FED_DOMAIN.full.pem FED_CA=$3/certs/ca.pem
    mkdir -p "$FED_DIR"
}

port_open() {  # port_open NS IP PORT
    ip netns exec "$1" timeout 2 bash -c "exec 3<>/dev/tcp/$2/$3" 2>/dev/null
}
wait_ports() {  # wait_ports NS IP SECONDS: c2s and s2s ports both accept connections
    local deadline=$((SECONDS + $3))
    while [ $SECONDS -lt $deadline ]; do
        if port_open "$1" "$2" 5222 && port_open "$1" "$2" 5269; then return 0; fi
        [ -n "$(ip netns pids "$1" 2>/dev/null || true)" ] || return 1  # the server exited
        sleep 0.2
    done
    return 1
}
server_logs() {  # server_logs KIND DIR: the kind's log files
    if declare -F "${1}_logs" >/dev/null; then "${1}_logs" "$2"; else ls "$2"/*.log 2>/dev/null || true; fi
}
show_logs() {  # show_logs KIND DIR
    local f
    for f in $(server_logs "$1" "$2"); do
        [ -s "$f" ] || continue
        log "last lines of $f:"
        tail -n 25 "$f" | sed 's/^/    /' >&2
    done
}
known_reason() {  # known_reason MODE FLOW: the reason from known-issues.txt, if listed (as flows.py)
    local p m f why
    while read -r p m f why; do
        case $p in ''|'#'*) continue ;; esac
        # shellcheck disable=SC2053
        [[ $PAIR == $p && $1 == $m && $2 == $f ]] && { echo "$why"; return 0; }
    done <"$FED_HERE/known-issues.txt"
    return 1
}
row() {  # row MODE FLOW RESULT SECONDS DETAIL
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$PAIR" "$1" "$2" "$3" "$4" "$5" >>"$RESULTS"
}
declare -A PASSWORD

run_mode() {  # run_mode MODE
    local mode=$1 dir=$WORK/$1 t0=$SECONDS side rc
    mkdir -p "$dir"
    log "== $PAIR, mode $mode =="
    net_up || { row "$mode" setup FAIL $((SECONDS - t0)) "network did not come up"; return 1; }
    certs "$dir/certs" "$mode" "$DOMAIN_A" "$DOMAIN_B"
    [ -s "$dir/certs/$DOMAIN_A.full.pem" ] && [ -s "$dir/certs/$DOMAIN_B.full.pem" ] \
        || { row "$mode" setup FAIL $((SECONDS - t0)) "openssl: certificates not made"; return 1; }
    for side in a b; do
        server_env $side "$mode" "$dir"
        PASSWORD[$side]="pw-$RANDOM$RANDOM"
        # 9>&-: the servers must not inherit the lock (a crashed run's leftovers would hold it).
        "${FED_KIND}_start" "$FED_NS" "$FED_DIR" 9>&- || { row "$mode" setup FAIL $((SECONDS - t0)) "$FED_KIND did not start"; return 1; }
    done
    for side in a b; do
        server_env $side "$mode" "$dir"
        if ! wait_ports "$FED_NS" "$FED_IP" "$START_TIMEOUT"; then
            log "$FED_KIND ($FED_DOMAIN) is not listening on 5222 and 5269 after ${START_TIMEOUT}s"
            show_logs "$FED_KIND" "$FED_DIR"
            row "$mode" setup FAIL $((SECONDS - t0)) "$FED_KIND did not listen on 5222/5269"
            return 1
        fi
        # Optional: a kind whose ports open before it can take commands says when it can.
        if declare -F "${FED_KIND}_ready" >/dev/null && ! "${FED_KIND}_ready" "$FED_NS" "$FED_DIR" 9>&-; then
            log "$FED_KIND ($FED_DOMAIN) listens but did not become ready"
            show_logs "$FED_KIND" "$FED_DIR"
            row "$mode" setup FAIL $((SECONDS - t0)) "$FED_KIND not ready"
            return 1
        fi
    done
    # Accounts through each server's own CLI: alice on a.example, bob on b.example.
    for side in a b; do
        server_env $side "$mode" "$dir"
        local user=alice; [ $side = b ] && user=bob
        if ! "${FED_KIND}_register" "$FED_NS" "$FED_DIR" "$user" "$FED_DOMAIN" "${PASSWORD[$side]}" >>"$FED_DIR/register.log" 2>&1 9>&-; then
            log "$FED_KIND: registering $user@$FED_DOMAIN failed:"; sed 's/^/    /' "$FED_DIR/register.log" >&2
            row "$mode" setup FAIL $((SECONDS - t0)) "$FED_KIND: account creation failed"
            return 1
        fi
    done
    row "$mode" setup PASS $((SECONDS - t0)) "namespaces, certificates, both servers, accounts"
    # The kind's own link diagnosis against the peer (Starling: "starling check s2s"), before
    # the flows: the last flow stops b. It must end with the mode's authentication.
    local check_want=dialback check_out t1
    [ "$mode" != dialback ] && check_want="SASL EXTERNAL"
    for side in a b; do
        server_env $side "$mode" "$dir"
        declare -F "${FED_KIND}_check_s2s" >/dev/null || continue
        t1=$SECONDS
        if check_out=$("${FED_KIND}_check_s2s" "$FED_NS" "$FED_DIR" "$FED_PEER_DOMAIN" 2>&1 9>&-) \
            && grep -q "^ok: .*authenticated by $check_want" <<<"$check_out"; then
            row "$mode" "check-s2s-$side" PASS $((SECONDS - t1)) "$FED_KIND check s2s $FED_PEER_DOMAIN: $(grep '^ok: ' <<<"$check_out" | cut -c1-120)"
        else
            local check_why check_detail
            check_detail="$FED_KIND check s2s $FED_PEER_DOMAIN, want $check_want: $(tail -n 2 <<<"$check_out" | tr '\n' ' ' | cut -c1-200)"
            if check_why=$(known_reason "$mode" "check-s2s-$side"); then
                row "$mode" "check-s2s-$side" KNOWN $((SECONDS - t1)) "$check_why | $check_detail"
            else
                row "$mode" "check-s2s-$side" FAIL $((SECONDS - t1)) "$check_detail"
            fi
        fi
        printf '%s\n' "$check_out" >"$FED_DIR/check-s2s.log"
    done
    log "servers up in $((SECONDS - t0)) s; running the flows"
    rc=0
    timeout --kill-after=10 "$FLOWS_TIMEOUT" "$PYTHON" "$FED_HERE/flows.py" \
        --pair "$PAIR" --mode "$mode" --results "$RESULTS" --known "$FED_HERE/known-issues.txt" \
        --side "a,$NS_A,$IP_A,$DOMAIN_A,alice,${PASSWORD[a]},$dir/certs/$DOMAIN_A.trust.pem" \
        --side "b,$NS_B,$IP_B,$DOMAIN_B,bob,${PASSWORD[b]},$dir/certs/$DOMAIN_B.trust.pem" \
        >"$dir/flows.log" 2>&1 9>&- &
    FLOWS_PID=$!
    echo "$FLOWS_PID" >"$STATE/flows.pid"
    wait "$FLOWS_PID" || rc=$?
    FLOWS_PID=
    rm -f "$STATE/flows.pid"
    sed -n '/^\(PASS\|FAIL\|KNOWN\|INFO\)/p' "$dir/flows.log" | sed 's/^/    /' >&2
    if [ $rc != 0 ]; then
        awk -F'\t' -v m="$mode" '$2 == m && $4 == "FAIL"' "$RESULTS" | grep -q . \
            || row "$mode" flows FAIL 0 "flows.py exited with $rc without a failed flow (see flows.log)"
        [ $rc = 124 ] && log "the flows did not finish within ${FLOWS_TIMEOUT}s"
        log "flows exited with $rc; details in $dir/flows.log"
        grep -v '^\(PASS\|INFO\)' "$dir/flows.log" | tail -n 60 | sed 's/^/    /' >&2
    fi
    # Which s2s authentication each server used, from its own log.
    local want=dialback got all_ok=1 detail=
    [ "$mode" != dialback ] && want=EXTERNAL
    for side in a b; do
        server_env $side "$mode" "$dir"
        got=unknown
        if declare -F "${FED_KIND}_s2s_auth" >/dev/null; then got=$("${FED_KIND}_s2s_auth" "$FED_DIR" || true); fi
        detail="$detail$FED_KIND($FED_DOMAIN): ${got:-none}; "
        # got: "out=MECH in=MECH [bidi=in|out|in+out]" (MECH: EXTERNAL, dialback, none or a
        # list). What the side sends and what it receives must each go on a stream
        # authenticated by $want: its own outgoing one and the peer's, or (XEP-0288) one
        # bidirectional stream carrying both: the side that accepted it sends on it, the side
        # that opened it receives on it.
        local sends=0 receives=0
        case " $got " in *" out=$want "*) sends=1 ;; esac
        case " $got " in *" in=$want "*) receives=1 ;; esac
        case " $got " in *" in=$want "*" bidi="*in*) sends=1 ;; esac
        case " $got " in *" out=$want "*" bidi="*out*) receives=1 ;; esac
        [ $sends = 1 ] && [ $receives = 1 ] || all_ok=0
    done
    local why
    if [ $all_ok = 1 ]; then
        row "$mode" s2s-auth PASS 0 "${detail% }"
    elif why=$(known_reason "$mode" s2s-auth); then
        row "$mode" s2s-auth KNOWN 0 "$why | want $want both ways; ${detail% }"
    else
        row "$mode" s2s-auth FAIL 0 "want $want both ways; ${detail% }"
    fi
    if [ $rc != 0 ] || [ $all_ok = 0 ]; then
        for side in a b; do server_env $side "$mode" "$dir"; show_logs "$FED_KIND" "$FED_DIR"; done
    fi
    net_down
    log "mode $mode done in $((SECONDS - t0)) s"
    return 0
}

T0=$SECONDS
for mode in $MODES; do
    run_mode "$mode" || { for side in a b; do server_env $side "$mode" "$WORK/$mode"; show_logs "$FED_KIND" "$FED_DIR"; done; net_down; }
done

# --- summary -----------------------------------------------------------------------------------
echo
printf '%-18s %-12s %-15s %-6s %7s  %s\n' pair mode flow result seconds detail
printf '%-18s %-12s %-15s %-6s %7s  %s\n' ---- ---- ---- ------ ------- ------
awk -F'\t' '{ printf "%-18s %-12s %-15s %-6s %7s  %s\n", $1, $2, $3, $4, $5, $6 }' "$RESULTS"
failed=$(awk -F'\t' '$4 == "FAIL"' "$RESULTS" | wc -l)
passed=$(awk -F'\t' '$4 == "PASS"' "$RESULTS" | wc -l)
known=$(awk -F'\t' '$4 == "KNOWN"' "$RESULTS" | wc -l)
echo
for mode in $MODES; do
    grep -q "^$PAIR	$mode	" "$RESULTS" || { echo "no results for mode $mode" >&2; failed=$((failed + 1)); }
done
echo "$PAIR: $passed passed, $failed failed, $known known peer limitations, $((SECONDS - T0)) s"
[ "$failed" = 0 ]

# ejabberd (the Debian package) as a federation peer. Sourced by compat/federation/run.sh;
# the interface every server kind implements is described in ../README.md.
#
# Started like compat/bench/run.sh starts it: erl directly (what "ejabberdctl foreground"
# runs, minus su to the ejabberd user), as root. Unlike the benchmark it has an Erlang node
# name (ejabberd@localhost, with a cookie of the harness) so that "ejabberdctl register" can
# reach it: the node's epmd runs inside the namespace too and dies with the rest of it.

ejabberd_prereq() {
    [ -x /usr/sbin/ejabberdctl ] && command -v erl >/dev/null && return 0
    echo "ejabberd is not installed (apt-get install ejabberd)" >&2
    return 1
}

# ejabberdctl as root without su: its ctl config (sourced after it chose how to run) says to
# run as the current user, and gives the node name and cookie.
ejabberd_ctl_config() {  # DIR
    cat >"$1/ejabberdctl.cfg" <<EOF
EXEC_CMD=as_current_user
ERLANG_NODE=ejabberd@localhost
ERL_OPTIONS="-setcookie $FED_COOKIE"
EOF
}

# ejabberd_start NS DIR
ejabberd_start() {
    local ns=$1 dir=$2 libs
    mkdir -p "$dir/spool" "$dir/logs"
    fed_fill "$FED_HERE/servers/ejabberd.yml.in" >"$dir/ejabberd.yml"
    ejabberd_ctl_config "$dir"
    # ejabberd's applications (ERL_LIBS, as ejabberdctl sets it).
    libs=$(dirname "$(dirname "$(dpkg -L ejabberd | grep -m1 '/ebin$')")")
    ip netns exec "$ns" env HOME="$dir" ERL_LIBS="$libs" EJABBERD_CONFIG_PATH="$dir/ejabberd.yml" \
        EJABBERD_LOG_PATH="$dir/logs/ejabberd.log" ERL_CRASH_DUMP="$dir/logs/erl_crash.dump" \
        ERL_MAX_PORTS=32000 \
        erl +K true -sname ejabberd@localhost -setcookie "$FED_COOKIE" -noinput -noshell \
        -mnesia dir "\"$dir/spool\"" -s ejabberd >>"$dir/console.log" 2>&1 &
}

ejabberd_ctl() {  # ejabberd_ctl NS DIR ARGS...: ejabberdctl against the node in the namespace
    local ns=$1 dir=$2; shift 2
    ip netns exec "$ns" env HOME="$dir" timeout 30 /usr/sbin/ejabberdctl --ctl-config "$dir/ejabberdctl.cfg" \
        --config "$dir/ejabberd.yml" --spool "$dir/spool" --logs "$dir/logs" "$@"
}

# ejabberd_ready NS DIR: its ports open before it has finished starting (the auth tables may not
# exist yet: "ejabberdctl register" then fails with {aborted,{no_exists,passwd,...}}). Ready
# when "ejabberdctl status" succeeds (the ejabberd application runs). Bounded: 60 attempts.
ejabberd_ready() {
    local i
    for i in $(seq 60); do
        ejabberd_ctl "$1" "$2" status >/dev/null 2>&1 && return 0
        sleep 0.5
    done
    return 1
}

# ejabberd_register NS DIR USER DOMAIN PASSWORD: ejabberdctl against the running node.
ejabberd_register() {
    ejabberd_ctl "$1" "$2" register "$3" "$4" "$5"
}

ejabberd_logs() { echo "$1/logs/ejabberd.log $1/logs/error.log $1/console.log"; }

# ejabberd_s2s_auth DIR: "out=MECH in=MECH" from its info-level log lines
#   "Accepted outbound s2s dialback authentication b.example -> a.example (10.237.0.1)"
#   "Accepted inbound s2s EXTERNAL authentication a.example -> b.example (10.237.0.1)"
# (ejabberd tries EXTERNAL first on every outbound link and logs "Failed outbound s2s EXTERNAL
# authentication ... Retrying with s2s dialback" when the peer does not offer it.)
ejabberd_s2s_auth() {
    awk '
        function join(a,   k, s) { s = ""; for (k in a) s = s (s ? "+" : "") k; return s ? s : "none" }
        match($0, /Accepted outbound s2s [^ ]+ authentication/) { split(substr($0, RSTART, RLENGTH), w, " "); out[w[4]] = 1 }
        match($0, /Accepted inbound s2s [^ ]+ authentication/) { split(substr($0, RSTART, RLENGTH), w, " "); inn[w[4]] = 1 }
        END { printf "out=%s in=%s\n", join(out), join(inn) }' "$1/logs/ejabberd.log"
}

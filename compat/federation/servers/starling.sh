# Starling as a federation peer. Sourced by compat/federation/run.sh; the interface every
# server kind implements is described in ../README.md.
#
# The binary: STARLING_BIN, else the repository's debug build (cargo build).

starling_bin() {
    if [ -n "${STARLING_BIN:-}" ]; then echo "$STARLING_BIN"; return; fi
    local here=${FED_HERE:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)} c
    for c in "$here/../../target/debug/starling"; do
        [ -x "$c" ] && { echo "$c"; return; }
    done
    echo "$here/../../target/debug/starling"
}

starling_prereq() {
    local bin
    bin=$(starling_bin)
    [ -x "$bin" ] && return 0
    echo "no Starling binary at $bin (cargo build, or set STARLING_BIN)" >&2
    return 1
}

# starling_start NS DIR: config from the template, then "starling serve" (foreground, logs on
# stderr) inside the namespace, in the background of the harness.
starling_start() {
    local ns=$1 dir=$2 bin
    bin=$(starling_bin)
    mkdir -p "$dir/data"
    fed_fill "$FED_HERE/servers/starling.toml.in" >"$dir/starling.toml"
    # Validated first (inside the namespace: it tries the listeners' addresses).
    ip netns exec "$ns" timeout 30 "$bin" --config "$dir/starling.toml" check >"$dir/check.log" 2>&1 \
        || { echo "starling check failed:" >&2; cat "$dir/check.log" >&2; return 1; }
    ip netns exec "$ns" "$bin" --config "$dir/starling.toml" serve >>"$dir/server.log" 2>&1 &
}

# starling_ready NS DIR: the admin socket answers ("starling check" prints "(a server is
# running)"), so the database exists for "user add". Bounded: 40 attempts.
starling_ready() {
    local i bin
    bin=$(starling_bin)
    for i in $(seq 40); do
        ip netns exec "$1" timeout 10 "$bin" --config "$2/starling.toml" check 2>/dev/null \
            | grep -q 'a server is running' && return 0
        sleep 0.25
    done
    return 1
}

# starling_register NS DIR USER DOMAIN PASSWORD: straight into the database (the server may run).
starling_register() {
    printf '%s\n' "$5" | ip netns exec "$1" timeout 30 "$(starling_bin)" --config "$2/starling.toml" \
        user add "$3@$4" --password-stdin
}

starling_logs() { echo "$1/server.log"; }

# starling_check_s2s NS DIR PEER_DOMAIN: "starling check s2s" from inside the namespace; its
# last line is "ok: links ... are authenticated by ..." or the failure.
starling_check_s2s() {
    ip netns exec "$1" timeout 60 "$(starling_bin)" --config "$2/starling.toml" check s2s "$3"
}

# starling_s2s_auth DIR: "out=MECH in=MECH" from the log (tracing's fmt layer, no colours),
# by the "s2s" span's direction: "authenticated by SASL EXTERNAL" (both directions),
# "authenticated by dialback" (out, src/s2s/outgoing.rs establish), "dialback: authenticated"
# (in, src/s2s/incoming.rs verdict). "bidi=out" if an outgoing link was bidirectional
# (XEP-0288: "link established" with bidi=true), "bidi=in" if an incoming stream became a link.
starling_s2s_auth() {
    awk '
        function join(a,   k, s) { s = ""; for (k in a) s = s (s ? "+" : "") k; return s ? s : "none" }
        /s2s\{[^}]*direction="?out"?/ && /authenticated by SASL EXTERNAL/ { out["EXTERNAL"] = 1 }
        /s2s\{[^}]*direction="?out"?/ && /authenticated by dialback/ { out["dialback"] = 1 }
        /s2s\{[^}]*direction="?in"?/ && /authenticated by SASL EXTERNAL/ { inn["EXTERNAL"] = 1 }
        /s2s\{[^}]*direction="?in"?/ && /dialback: authenticated/ { inn["dialback"] = 1 }
        /s2s\{[^}]*direction="?out"?/ && /link established/ && /bidi=true/ { bidi["out"] = 1 }
        /s2s\{[^}]*direction="?in"?/ && /bidirectional: this stream is the link/ { bidi["in"] = 1 }
        END { printf "out=%s in=%s bidi=%s\n", join(out), join(inn), join(bidi) }' "$1/server.log"
}

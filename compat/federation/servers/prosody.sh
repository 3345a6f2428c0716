# Prosody (the Debian package) as a federation peer. Sourced by compat/federation/run.sh;
# the interface every server kind implements is described in ../README.md.

prosody_prereq() {
    command -v prosody >/dev/null && command -v prosodyctl >/dev/null && return 0
    echo "prosody is not installed (apt-get install prosody lua-unbound)" >&2
    return 1
}

# prosody_start NS DIR: config from the template, then Prosody in the foreground (-F) inside
# the namespace, in the background of the harness. The harness waits for ports 5222 and 5269.
prosody_start() {
    local ns=$1 dir=$2
    mkdir -p "$dir/data" "$dir/certs"
    fed_fill "$FED_HERE/servers/prosody.cfg.lua.in" >"$dir/prosody.cfg.lua"
    ip netns exec "$ns" prosody --config "$dir/prosody.cfg.lua" -F >>"$dir/console.log" 2>&1 &
}

# prosody_register NS DIR USER DOMAIN PASSWORD
prosody_register() {
    ip netns exec "$1" timeout 30 prosodyctl --config "$2/prosody.cfg.lua" register "$3" "$4" "$5"
}

prosody_logs() { echo "$1/prosody.log $1/console.log"; }

# prosody_s2s_auth DIR: "out=MECH in=MECH", how the s2s links of this server were
# authenticated, from its debug log (tab-separated: "date time source<TAB>level<TAB>message"):
#   out EXTERNAL  mod_saslauth: "SASL EXTERNAL with <peer> succeeded"
#   in  EXTERNAL  mod_saslauth: "Accepting SASL EXTERNAL identity from <peer>"
#   out dialback  an s2sout session that "sent dialback key on outgoing s2s stream" and then
#                 logged "connection ... is now authenticated for <peer>"
#   in  dialback  an s2sin session that logged "asking <peer> if key ... belongs to them" and
#                 then "connection ... is now authenticated for <peer>"
#   bidi out/in   mod_s2s_bidi (XEP-0288): "Requesting bidirectional stream" (s2sout) /
#                 "Requested bidirectional stream" (s2sin)
prosody_s2s_auth() {
    awk -F'\t' '
        function join(a,   k, s) { s = ""; for (k in a) s = s (s ? "+" : "") k; return s ? s : "none" }
        { n = split($1, w, " "); src = w[n]; msg = $3 }
        msg ~ /^SASL EXTERNAL with .* succeeded/ { out["EXTERNAL"] = 1 }
        msg ~ /^Accepting SASL EXTERNAL identity from/ { inn["EXTERNAL"] = 1 }
        src ~ /^s2sout/ && msg ~ /sent dialback key on outgoing s2s stream/ { db[src] = 1 }
        src ~ /^s2sin/ && msg ~ /^asking .* if key .* belongs to them/ { db[src] = 1 }
        msg ~ /is now authenticated for/ && db[src] { if (src ~ /^s2sout/) out["dialback"] = 1; else inn["dialback"] = 1 }
        msg ~ /^Requesting bidirectional stream/ { bidi["out"] = 1 }
        msg ~ /^Requested bidirectional stream/ { bidi["in"] = 1 }
        END { printf "out=%s in=%s bidi=%s\n", join(out), join(inn), join(bidi) }' "$1/prosody.log"
}

//! report: the JSON lines of a run in, RESULTS.md out. Every figure is the median over the
//! repetitions with its range; ratios and target checks are computed here, not written by
//! hand. Lines of repetition 0 (provisioning, warm-up) are not figures.

use std::fmt::Write as _;

use serde_json::Value;

#[derive(clap::Args, Clone)]
pub struct Args {
    /// Results file (JSON lines).
    pub results: std::path::PathBuf,
    /// The command that produced them (printed in the report).
    #[arg(long, default_value = "compat/bench/run.sh")]
    pub command: String,
}

const SERVERS: [&str; 3] = ["starling", "prosody", "ejabberd"];

/// How a figure compares: lower or higher is better, and Starling's target ratio against
/// the better of the two others.
#[derive(Clone, Copy)]
enum Better {
    Lower(Option<f64>),
    Higher(Option<f64>),
}

/// Which lines a figure takes, and its value in each.
type Select = Box<dyn Fn(&Value) -> Option<f64>>;

struct Figure {
    title: &'static str,
    unit: &'static str,
    better: Better,
    /// Which lines, and the value in each.
    select: Select,
}

fn get(v: &Value, path: &str) -> Option<f64> {
    let mut cur = v;
    for k in path.split('.') {
        cur = cur.get(k)?;
    }
    cur.as_f64()
}

/// A line of the base profile (no `profile` tag) of this scenario.
fn is(v: &Value, scenario: &str, security: &str) -> bool {
    v["scenario"] == scenario
        && v["security"] == security
        && v.get("kind").is_none()
        && v.get("phase").is_none()
        && v.get("profile").is_none()
}

/// A line of the modern profile (archive, carbons, stream management) of this scenario.
fn modern(v: &Value, scenario: &str, security: &str) -> bool {
    v["scenario"] == scenario
        && v["security"] == security
        && v.get("kind").is_none()
        && v.get("phase").is_none()
        && v["profile"] == "modern"
}

/// The figures of the modern profile. Targets are not set for them (yet).
fn modern_figures() -> Vec<Figure> {
    let f = |title, unit, select: Select| Figure { title, unit, better: Better::Lower(None), select };
    let higher = |title, unit, select: Select| Figure { title, unit, better: Better::Higher(None), select };
    let fixed = |v: &Value| modern(v, "chat", "plain") && v["sweep"] == false && v["sm"] == true;
    let sweep = |v: &Value| modern(v, "chat-max", "plain") && v["sm"] == true;
    let connect_sm = |v: &Value, security| modern(v, "connect", security) && v["sm"] == true;
    let mut figs = vec![
        f(
            "Memory per idle session with stream management (resumable), plaintext",
            "KiB",
            Box::new(move |v| connect_sm(v, "plain").then(|| get(v, "server_kib_per_session")).flatten()),
        ),
        f(
            "Memory per idle session with stream management (resumable), TLS",
            "KiB",
            Box::new(move |v| connect_sm(v, "starttls").then(|| get(v, "server_kib_per_session")).flatten()),
        ),
        f(
            "Server CPU per login with stream management enabled, plaintext",
            "ms",
            Box::new(move |v| connect_sm(v, "plain").then(|| get(v, "server_cpu_ms_per_login")).flatten()),
        ),
        f(
            "1:1 chat with archive, carbons and stream management: server CPU per delivered message (fixed rate)",
            "µs",
            Box::new(move |v| fixed(v).then(|| get(v, "server_cpu_us_per_message")).flatten()),
        ),
        f("  p99 latency at the fixed rate", "ms", Box::new(move |v| fixed(v).then(|| get(v, "latency_ms.p99")).flatten())),
        f(
            "  p99 time until a burst of messages is acknowledged (XEP-0198) at the fixed rate",
            "ms",
            Box::new(move |v| fixed(v).then(|| get(v, "ack_latency_ms.p99")).flatten()),
        ),
        higher(
            "1:1 chat with archive, carbons and stream management: highest sustained rate at p99 < 50 ms",
            "msg/s",
            Box::new(move |v| sweep(v).then(|| get(v, "max_sustained_rate_per_s")).flatten()),
        ),
        f(
            "  server CPU per message at that rate",
            "µs",
            Box::new(move |v| sweep(v).then(|| get(v, "at_max_server_cpu_us_per_message")).flatten()),
        ),
        f(
            "  p99 time until acknowledged at that rate",
            "ms",
            Box::new(move |v| sweep(v).then(|| get(v, "at_max_ack_latency_ms.p99")).flatten()),
        ),
    ];
    for (kind, title) in [
        ("newest", "Archive query: the newest page (RSM `<before/>`), p50"),
        ("before", "Archive query: the page before a random message's id, p50"),
        ("after", "Archive query: the page after a random message's id, p50"),
        ("with", "Archive query: the newest page with a random contact (`with`), p50"),
    ] {
        let (p50, p99, cpu) = (format!("{kind}.latency_ms.p50"), format!("{kind}.latency_ms.p99"), format!("{kind}.server_cpu_us_per_query"));
        figs.push(f(title, "ms", Box::new(move |v| modern(v, "archive-query", "plain").then(|| get(v, &p50)).flatten())));
        figs.push(f("  p99", "ms", Box::new(move |v| modern(v, "archive-query", "plain").then(|| get(v, &p99)).flatten())));
        figs.push(f("  server CPU per query", "µs", Box::new(move |v| modern(v, "archive-query", "plain").then(|| get(v, &cpu)).flatten())));
    }
    let resume = |v: &Value| modern(v, "resume", "plain");
    figs.extend([
        f(
            "Resumption: sessions dropped at once, sent messages meanwhile, then all resumed: until all are resumed",
            "s",
            Box::new(move |v| resume(v).then(|| get(v, "all_resumed_seconds")).flatten()),
        ),
        f(
            "  until every message sent meanwhile has arrived",
            "s",
            Box::new(move |v| resume(v).then(|| get(v, "all_delivered_seconds")).flatten()),
        ),
        f("  p99 time of one resumption (connect, SASL, `<resume/>`)", "ms", Box::new(move |v| resume(v).then(|| get(v, "resume_ms.p99")).flatten())),
        f("  server CPU per resumption", "ms", Box::new(move |v| resume(v).then(|| get(v, "server_cpu_ms_per_resume")).flatten())),
    ]);
    figs
}

/// A line of the muc profile (modern plus multi-user chat rooms) of this scenario.
fn muc(v: &Value, scenario: &str) -> bool {
    v["scenario"] == scenario && v["security"] == "plain" && v.get("kind").is_none() && v.get("phase").is_none() && v["profile"] == "muc"
}

/// The figures of the multi-user chat scenarios, with their targets.
fn muc_figures() -> Vec<Figure> {
    let f = |title, unit, better, select: Select| Figure { title, unit, better, select };
    // The fixed rate: the sweep's first step (or a run without --sweep).
    let fixed = |v: &Value| muc(v, "muc-fanout") && (v["sweep"] == false || v["step"] == 1);
    let max = |v: &Value| muc(v, "muc-fanout-max");
    let join = |v: &Value| muc(v, "muc-join");
    vec![
        f(
            "MUC fan-out (10 rooms of 100, one of 1,000; 1 + 1 msg/s): server CPU per delivered copy",
            "µs",
            Better::Lower(Some(0.2)),
            Box::new(move |v| fixed(v).then(|| get(v, "server_cpu_us_per_copy")).flatten()),
        ),
        f("  copies delivered per second", "copies/s", Better::Higher(None), Box::new(move |v| fixed(v).then(|| get(v, "delivered_copies_per_s")).flatten())),
        f("  p50 latency of the copies", "ms", Better::Lower(None), Box::new(move |v| fixed(v).then(|| get(v, "latency_ms.p50")).flatten())),
        f("  p99 latency of the copies", "ms", Better::Lower(None), Box::new(move |v| fixed(v).then(|| get(v, "latency_ms.p99")).flatten())),
        f("  server busy", "% of its core", Better::Lower(None), Box::new(move |v| fixed(v).then(|| get(v, "server_cpu_pct")).flatten())),
        f(
            "MUC fan-out: highest sustained rate (p99 < 100 ms, nothing lost): copies delivered per second",
            "copies/s",
            Better::Higher(Some(4.0)),
            Box::new(move |v| max(v).then(|| get(v, "at_max_delivered_copies_per_s")).flatten()),
        ),
        f("  messages sent per second at that rate", "msg/s", Better::Higher(None), Box::new(move |v| max(v).then(|| get(v, "max_sustained_rate_per_s")).flatten())),
        f("  server CPU per copy at that rate", "µs", Better::Lower(None), Box::new(move |v| max(v).then(|| get(v, "at_max_server_cpu_us_per_copy")).flatten())),
        f("  p99 latency at that rate", "ms", Better::Lower(None), Box::new(move |v| max(v).then(|| get(v, "at_max_latency_ms.p99")).flatten())),
        f(
            "MUC fan-out: all occupants entering their rooms (64 at a time): until all joined",
            "s",
            Better::Lower(None),
            Box::new(move |v| fixed(v).then(|| get(v, "join_seconds")).flatten()),
        ),
        f(
            "MUC join: occupants entering one room (64 at a time): until all joined",
            "s",
            Better::Lower(None),
            Box::new(move |v| join(v).then(|| get(v, "all_joined_seconds")).flatten()),
        ),
        f("  server CPU per join", "ms", Better::Lower(Some(0.2)), Box::new(move |v| join(v).then(|| get(v, "server_cpu_ms_per_join")).flatten())),
        f("  p99 time of one join (join presence → subject)", "ms", Better::Lower(None), Box::new(move |v| join(v).then(|| get(v, "join_ms.p99")).flatten())),
        f(
            "MUC join of a room with 20 messages of history: join presence → subject, p50",
            "ms",
            Better::Lower(None),
            Box::new(move |v| join(v).then(|| get(v, "history_join_ms.p50")).flatten()),
        ),
        f("  p99", "ms", Better::Lower(None), Box::new(move |v| join(v).then(|| get(v, "history_join_ms.p99")).flatten())),
        f("  server CPU per join (with its leave)", "ms", Better::Lower(None), Box::new(move |v| join(v).then(|| get(v, "history_server_cpu_ms_per_join")).flatten())),
        f(
            "MUC memory per occupant (RSS with all joined − before, ÷ occupants; one room)",
            "KiB",
            Better::Lower(None),
            Box::new(|v| muc(v, "muc-memory").then(|| get(v, "server_kib_per_occupant")).flatten()),
        ),
    ]
}

/// A line of the s2s profile (two servers of one kind federating) of this scenario.
fn s2s(v: &Value, scenario: &str) -> bool {
    v["scenario"] == scenario && v["security"] == "plain" && v.get("kind").is_none() && v.get("phase").is_none() && v["profile"] == "s2s"
}

/// The figures of the s2s scenarios, with their targets (the issue's: CPU per federated
/// message at most 1/5 of the better peer pair's, highest rate at least 4 times theirs).
fn s2s_figures() -> Vec<Figure> {
    let f = |title, unit, better, select: Select| Figure { title, unit, better, select };
    let fixed = |v: &Value| s2s(v, "s2s-chat") && v["sweep"] == false;
    let max = |v: &Value| s2s(v, "s2s-chat-max");
    let links = |v: &Value| s2s(v, "s2s-links");
    vec![
        f(
            "Federated 1:1 chat at the fixed rate: server CPU per message, both servers together",
            "µs",
            Better::Lower(Some(0.2)),
            Box::new(move |v| fixed(v).then(|| get(v, "server_cpu_us_per_message")).flatten()),
        ),
        f("  a.example's server", "µs", Better::Lower(None), Box::new(move |v| fixed(v).then(|| get(v, "server_a_cpu_us_per_message")).flatten())),
        f("  b.example's server", "µs", Better::Lower(None), Box::new(move |v| fixed(v).then(|| get(v, "server_b_cpu_us_per_message")).flatten())),
        f("  p50 latency", "ms", Better::Lower(None), Box::new(move |v| fixed(v).then(|| get(v, "latency_ms.p50")).flatten())),
        f("  p99 latency", "ms", Better::Lower(None), Box::new(move |v| fixed(v).then(|| get(v, "latency_ms.p99")).flatten())),
        f("  both servers busy", "% of CPU 0", Better::Lower(None), Box::new(move |v| fixed(v).then(|| get(v, "server_cpu_pct")).flatten())),
        f(
            "Federated 1:1 chat: highest sustained rate (p99 < 50 ms, nothing lost)",
            "msg/s",
            Better::Higher(Some(4.0)),
            Box::new(move |v| max(v).then(|| get(v, "max_sustained_rate_per_s")).flatten()),
        ),
        f(
            "  server CPU per message at that rate, both servers together",
            "µs",
            Better::Lower(None),
            Box::new(move |v| max(v).then(|| get(v, "at_max_server_cpu_us_per_message")).flatten()),
        ),
        f("  p99 latency at that rate", "ms", Better::Lower(None), Box::new(move |v| max(v).then(|| get(v, "at_max_latency_ms.p99")).flatten())),
        f(
            "Links set up (first message from every user to its partner, until all arrived)",
            "s",
            Better::Lower(None),
            Box::new(move |v| fixed(v).then(|| get(v, "link_setup_seconds")).flatten()),
        ),
        f(
            "Memory per idle s2s link: a.example's server, per remote domain linked both ways",
            "KiB",
            Better::Lower(None),
            Box::new(move |v| links(v).then(|| get(v, "server_a_kib_per_link")).flatten()),
        ),
        f(
            "  b.example's server, per local domain linked both ways",
            "KiB",
            Better::Lower(None),
            Box::new(move |v| links(v).then(|| get(v, "server_b_kib_per_link")).flatten()),
        ),
        f(
            "  server CPU per link set-up (TLS and dialback, both ways), a.example's server",
            "ms",
            Better::Lower(None),
            Box::new(move |v| links(v).then(|| get(v, "server_a_cpu_ms_per_link")).flatten()),
        ),
        f(
            "  b.example's server",
            "ms",
            Better::Lower(None),
            Box::new(move |v| links(v).then(|| get(v, "server_b_cpu_ms_per_link")).flatten()),
        ),
        f(
            "  load generator busy at the highest sustained rate",
            "% of its core",
            Better::Lower(None),
            Box::new(move |v| max(v).then(|| get(v, "at_max_loadgen_cpu_pct")).flatten()),
        ),
    ]
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = s.len();
    if n % 2 == 1 { s[n / 2] } else { (s[n / 2 - 1] + s[n / 2]) / 2.0 }
}

fn fmt_num(x: f64) -> String {
    let a = x.abs();
    if a >= 1000.0 {
        format!("{x:.0}")
    } else if a >= 100.0 {
        format!("{x:.1}")
    } else if a >= 10.0 {
        format!("{x:.2}")
    } else if a >= 1.0 {
        format!("{x:.3}")
    } else {
        format!("{x:.4}")
    }
}

fn cell(values: &[f64]) -> String {
    match values.len() {
        0 => "–".to_string(),
        1 => fmt_num(values[0]),
        _ => {
            let min = values.iter().cloned().fold(f64::MAX, f64::min);
            let max = values.iter().cloned().fold(f64::MIN, f64::max);
            format!("{} ({}–{})", fmt_num(median(values)), fmt_num(min), fmt_num(max))
        }
    }
}

fn figures() -> Vec<Figure> {
    let f = |title, unit, better, select: Select| Figure { title, unit, better, select };
    vec![
        f(
            "Memory per idle authenticated session, plaintext",
            "KiB",
            Better::Lower(Some(0.25)),
            Box::new(|v| is(v, "connect", "plain").then(|| get(v, "server_kib_per_session")).flatten()),
        ),
        f(
            "Memory per idle authenticated session, TLS",
            "KiB",
            Better::Lower(Some(0.25)),
            Box::new(|v| is(v, "connect", "starttls").then(|| get(v, "server_kib_per_session")).flatten()),
        ),
        f(
            "Server CPU per login, plaintext",
            "ms",
            Better::Lower(Some(0.2)),
            Box::new(|v| is(v, "connect", "plain").then(|| get(v, "server_cpu_ms_per_login")).flatten()),
        ),
        f(
            "Server CPU per login, TLS",
            "ms",
            Better::Lower(Some(1.0 / 3.0)),
            Box::new(|v| is(v, "connect", "starttls").then(|| get(v, "server_cpu_ms_per_login")).flatten()),
        ),
        f(
            "Login rate, plaintext (64 in parallel)",
            "logins/s",
            Better::Higher(None),
            Box::new(|v| is(v, "connect", "plain").then(|| get(v, "login_rate_per_s")).flatten()),
        ),
        f(
            "Login rate, TLS (64 in parallel)",
            "logins/s",
            Better::Higher(None),
            Box::new(|v| is(v, "connect", "starttls").then(|| get(v, "login_rate_per_s")).flatten()),
        ),
        f(
            "1:1 chat: server CPU per delivered message, plaintext (fixed rate)",
            "µs",
            Better::Lower(Some(0.1)),
            Box::new(|v| (is(v, "chat", "plain") && v["sweep"] == false).then(|| get(v, "server_cpu_us_per_message")).flatten()),
        ),
        f(
            "1:1 chat: server CPU per delivered message, TLS (fixed rate)",
            "µs",
            Better::Lower(None),
            Box::new(|v| (is(v, "chat", "starttls") && v["sweep"] == false).then(|| get(v, "server_cpu_us_per_message")).flatten()),
        ),
        f(
            "1:1 chat: p99 latency at the fixed rate, plaintext",
            "ms",
            Better::Lower(None),
            Box::new(|v| (is(v, "chat", "plain") && v["sweep"] == false).then(|| get(v, "latency_ms.p99")).flatten()),
        ),
        f(
            "1:1 chat: highest sustained rate at p99 < 50 ms, plaintext",
            "msg/s",
            Better::Higher(Some(4.0)),
            Box::new(|v| is(v, "chat-max", "plain").then(|| get(v, "max_sustained_rate_per_s")).flatten()),
        ),
        f(
            "  server CPU per message at that rate",
            "µs",
            Better::Lower(None),
            Box::new(|v| is(v, "chat-max", "plain").then(|| get(v, "at_max_server_cpu_us_per_message")).flatten()),
        ),
        f(
            "  p99 latency at that rate",
            "ms",
            Better::Lower(None),
            Box::new(|v| is(v, "chat-max", "plain").then(|| get(v, "at_max_latency_ms.p99")).flatten()),
        ),
        f(
            "Roster login (100 contacts, 50 online), alone: initial presence → all online contacts' presence, p50",
            "ms",
            Better::Lower(None),
            Box::new(|v| is(v, "roster-login", "plain").then(|| get(v, "sequential.initial_presence_ms.p50")).flatten()),
        ),
        f(
            "Roster login, alone: connect → roster and all online contacts' presence, p50",
            "ms",
            Better::Lower(None),
            Box::new(|v| is(v, "roster-login", "plain").then(|| get(v, "sequential.total_ms.p50")).flatten()),
        ),
        f(
            "Roster login, alone: server CPU per login (with its presence exchange)",
            "ms",
            Better::Lower(None),
            Box::new(|v| is(v, "roster-login", "plain").then(|| get(v, "sequential_server_cpu_ms_per_login")).flatten()),
        ),
        f(
            "Roster login storm (the other offline half at once): until every session has every contact's presence",
            "s",
            Better::Lower(None),
            Box::new(|v| is(v, "roster-login", "plain").then(|| get(v, "storm_seconds")).flatten()),
        ),
        f(
            "  presence stanzas received by the clients in the storm",
            "",
            Better::Lower(None),
            Box::new(|v| is(v, "roster-login", "plain").then(|| get(v, "storm_presences_received")).flatten()),
        ),
        f(
            "  server CPU per login in the storm",
            "ms",
            Better::Lower(None),
            Box::new(|v| is(v, "roster-login", "plain").then(|| get(v, "storm_server_cpu_ms_per_login")).flatten()),
        ),
        f(
            "Offline: 1,000 stored messages, initial presence → all received",
            "ms",
            Better::Lower(None),
            Box::new(|v| is(v, "offline", "plain").then(|| get(v, "all_after_presence_ms")).flatten()),
        ),
        f(
            "Offline: time to store the 1,000 messages (sent in one go, then a ping round trip)",
            "s",
            Better::Lower(None),
            Box::new(|v| is(v, "offline", "plain").then(|| get(v, "store_seconds")).flatten()),
        ),
        f(
            "Offline: server CPU per stored message",
            "µs",
            Better::Lower(None),
            Box::new(|v| is(v, "offline", "plain").then(|| get(v, "server_cpu_us_per_stored_message")).flatten()),
        ),
    ]
}

fn loadgen_figures() -> Vec<Figure> {
    let f = |title, unit, select: Select| Figure { title, unit, better: Better::Lower(None), select };
    vec![
        f("Load generator CPU per login, plaintext", "ms", Box::new(|v| is(v, "connect", "plain").then(|| get(v, "loadgen_cpu_ms_per_login")).flatten())),
        f("Load generator CPU per login, TLS", "ms", Box::new(|v| is(v, "connect", "starttls").then(|| get(v, "loadgen_cpu_ms_per_login")).flatten())),
        f("Load generator busy during the logins, TLS", "% of its core", Box::new(|v| is(v, "connect", "starttls").then(|| get(v, "loadgen_login_cpu_pct")).flatten())),
        f(
            "Load generator busy at the highest sustained chat rate",
            "% of its core",
            Box::new(|v| is(v, "chat-max", "plain").then(|| get(v, "at_max_loadgen_cpu_pct")).flatten()),
        ),
        f(
            "Load generator CPU per message at that rate (send + receive)",
            "µs",
            Box::new(|v| is(v, "chat-max", "plain").then(|| get(v, "at_max_loadgen_cpu_us_per_message")).flatten()),
        ),
        f("Server busy at that rate", "% of its core", Box::new(|v| is(v, "chat-max", "plain").then(|| get(v, "at_max_server_cpu_pct")).flatten())),
        f(
            "With archive, carbons and stream management: load generator busy at the highest sustained chat rate",
            "% of its core",
            Box::new(|v| modern(v, "chat-max", "plain").then(|| get(v, "at_max_loadgen_cpu_pct")).flatten()),
        ),
        f(
            "  server busy at that rate",
            "% of its core",
            Box::new(|v| modern(v, "chat-max", "plain").then(|| get(v, "at_max_server_cpu_pct")).flatten()),
        ),
        f(
            "Load generator busy at the highest sustained MUC fan-out rate",
            "% of its core",
            Box::new(|v| muc(v, "muc-fanout-max").then(|| get(v, "at_max_loadgen_cpu_pct")).flatten()),
        ),
        f(
            "  load generator CPU per copy at that rate (send + receive)",
            "µs",
            Box::new(|v| muc(v, "muc-fanout-max").then(|| get(v, "at_max_loadgen_cpu_us_per_copy")).flatten()),
        ),
        f(
            "  server busy at that rate",
            "% of its core",
            Box::new(|v| muc(v, "muc-fanout-max").then(|| get(v, "at_max_server_cpu_pct")).flatten()),
        ),
        f(
            "Load generator busy during the archive queries",
            "% of its core",
            Box::new(|v| modern(v, "archive-query", "plain").then(|| get(v, "loadgen_cpu_pct")).flatten()),
        ),
    ]
}

fn values(lines: &[Value], server: &str, select: &dyn Fn(&Value) -> Option<f64>) -> Vec<f64> {
    lines.iter().filter(|v| v["server"] == server).filter_map(select).collect()
}

fn table(out: &mut String, lines: &[Value], figs: &[Figure], ratios: bool, verdicts: &mut Vec<(String, bool)>) {
    if ratios {
        let _ = writeln!(out, "| Figure | Unit | Starling | Prosody | ejabberd | Starling ÷ better other | Target | Met |");
        let _ = writeln!(out, "|---|---|--:|--:|--:|--:|--:|:-:|");
    } else {
        let _ = writeln!(out, "| Figure | Unit | Starling | Prosody | ejabberd |");
        let _ = writeln!(out, "|---|---|--:|--:|--:|");
    }
    for fig in figs {
        let vals: Vec<Vec<f64>> = SERVERS.iter().map(|s| values(lines, s, &*fig.select)).collect();
        if vals.iter().all(|v| v.is_empty()) {
            continue;
        }
        let mut row = format!("| {} | {} | {} | {} | {} |", fig.title, fig.unit, cell(&vals[0]), cell(&vals[1]), cell(&vals[2]));
        if ratios {
            let med: Vec<Option<f64>> = vals.iter().map(|v| (!v.is_empty()).then(|| median(v))).collect();
            let others: Vec<f64> = med[1..].iter().flatten().copied().collect();
            let (ratio, target, met) = match (med[0], others.is_empty(), fig.better) {
                (Some(s), false, Better::Lower(t)) => {
                    let best = others.iter().cloned().fold(f64::MAX, f64::min);
                    let r = if best > 0.0 { s / best } else { f64::INFINITY };
                    (Some(r), t.map(|t| format!("≤ {}", fmt_ratio(t))), t.map(|t| r <= t))
                }
                (Some(s), false, Better::Higher(t)) => {
                    let best = others.iter().cloned().fold(f64::MIN, f64::max);
                    let r = if best > 0.0 { s / best } else { f64::INFINITY };
                    (Some(r), t.map(|t| format!("≥ {}", fmt_ratio(t))), t.map(|t| r >= t))
                }
                _ => (None, None, None),
            };
            let _ = write!(
                row,
                " {} | {} | {} |",
                ratio.map(fmt_ratio).unwrap_or_else(|| "–".into()),
                target.clone().unwrap_or_default(),
                match met {
                    Some(true) => "yes",
                    Some(false) => "**no**",
                    None => "",
                }
            );
            if let Some(m) = met {
                verdicts.push((format!("{} ({})", fig.title, target.unwrap_or_default()), m));
            }
        }
        let _ = writeln!(out, "{row}");
    }
}

fn fmt_ratio(r: f64) -> String {
    if !r.is_finite() {
        "∞".into()
    } else if r >= 10.0 {
        format!("{r:.1}")
    } else if r >= 0.1 {
        format!("{r:.2}")
    } else {
        format!("{r:.3}")
    }
}

/// Least-squares slope and intercept.
fn fit(points: &[(f64, f64)]) -> Option<(f64, f64)> {
    let n = points.len() as f64;
    if points.len() < 2 {
        return None;
    }
    let (sx, sy) = points.iter().fold((0.0, 0.0), |(a, b), (x, y)| (a + x, b + y));
    let (mx, my) = (sx / n, sy / n);
    let sxx: f64 = points.iter().map(|(x, _)| (x - mx).powi(2)).sum();
    let sxy: f64 = points.iter().map(|(x, y)| (x - mx) * (y - my)).sum();
    (sxx > 0.0).then(|| (sxy / sxx, my - sxy / sxx * mx))
}

pub fn run(a: &Args) -> i32 {
    let text = match std::fs::read_to_string(&a.results) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("{}: {e}", a.results.display());
            return 1;
        }
    };
    let all: Vec<Value> = text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    let env = all.iter().rev().find(|v| v["scenario"] == "env").cloned().unwrap_or(Value::Null);
    let lines: Vec<Value> = all.iter().filter(|v| v["rep"].as_f64().unwrap_or(0.0) >= 1.0).cloned().collect();
    let reps = lines.iter().filter_map(|v| v["rep"].as_f64()).fold(0.0, f64::max) as u32;
    let mut out = String::new();
    let _ = writeln!(out, "# Starling, Prosody and ejabberd side by side\n");
    let _ = writeln!(
        out,
        "Generated by `compat/bench/run.sh` from `results.jsonl` (one JSON line per measurement); \
         see [README.md](README.md) for what each figure means and how the servers are configured. \
         Each cell: median over {reps} repetition(s), with the range (min–max) in brackets. \
         Ratios are Starling's median divided by the better median of Prosody and ejabberd.\n"
    );
    if env.is_object() {
        let _ = writeln!(out, "## Setup\n");
        for (k, v) in env.as_object().unwrap() {
            if k == "scenario" || k == "command" {
                continue;
            }
            let _ = writeln!(out, "- {k}: {}", v.as_str().map(|s| s.to_string()).unwrap_or_else(|| v.to_string()));
        }
        let _ = writeln!(out);
    }
    let _ = writeln!(out, "## Figures\n");
    let mut verdicts = Vec::new();
    table(&mut out, &lines, &figures(), true, &mut verdicts);
    let _ = writeln!(out, "\n## Targets\n");
    if verdicts.is_empty() {
        let _ = writeln!(out, "No target could be checked (a server's figures are missing).");
    }
    for (what, met) in &verdicts {
        let _ = writeln!(out, "- {}: {what}", if *met { "met" } else { "**not met**" });
    }

    // The modern profile.
    let modern_lines: Vec<&Value> = lines.iter().filter(|v| v["profile"] == "modern").collect();
    if !modern_lines.is_empty() {
        let _ = writeln!(out, "\n## With message archive, carbons and stream management\n");
        let _ = writeln!(
            out,
            "The servers' \"modern\" profile: message archive (XEP-0313), carbons (XEP-0280) and stream \
             management (XEP-0198) on, as a server for Conversations; the clients enable stream management \
             with resumption (and, in the chat, carbons), answer every `<r/>` and ask for an ack after each \
             burst they send.\n"
        );
        for s in SERVERS {
            let archives: std::collections::BTreeSet<&str> = modern_lines
                .iter()
                .filter(|v| v["server"] == s)
                .filter_map(|v| v["archive"].as_str())
                .collect();
            if archives.contains("off") {
                let _ = writeln!(
                    out,
                    "- **{s} ran these scenarios without a message archive** (the build measured has none): \
                     its chat figures here include no archiving, and it has no archive-query figures.",
                );
            } else if !archives.is_empty() {
                let list: Vec<&str> = archives
                    .into_iter()
                    .map(|a| match a {
                        "sql" => "SQLite (one commit per archived message)",
                        "native" => "its native store (Prosody: files, not fsync'd; ejabberd: Mnesia)",
                        "on" => "its own database",
                        other => other,
                    })
                    .collect();
                let _ = writeln!(out, "- {s}: archive in {}.", list.join(", "));
            }
        }
        let _ = writeln!(out);
        table(&mut out, &lines, &modern_figures(), true, &mut Vec::new());
        let _ = writeln!(out, "\nCorrectness (all repetitions):\n");
        let _ = writeln!(out, "| Server | Chat messages sent | lost | duplicated | unacknowledged at the end | Sessions resumed / dropped | Resumption: messages lost | twice | bounced | Archive pages wrong | errors |");
        let _ = writeln!(out, "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|");
        for s in SERVERS {
            let mine: Vec<&&Value> = modern_lines.iter().filter(|v| v["server"] == s).collect();
            if mine.is_empty() {
                continue;
            }
            let sum = |scenario: &str, key: &str| -> u64 { mine.iter().filter(|v| v["scenario"] == scenario).filter_map(|v| get(v, key)).map(|x| x as u64).sum() };
            let pages = |key: &str| -> u64 {
                ["newest", "before", "after", "with"].iter().map(|k| sum("archive-query", &format!("{k}.{key}"))).sum()
            };
            let _ = writeln!(
                out,
                "| {s} | {} | {} | {} | {} | {} / {} | {} | {} | {} | {} | {} |",
                sum("chat", "sent"),
                sum("chat", "lost"),
                sum("chat", "duplicates"),
                sum("chat", "unacked_at_end"),
                sum("resume", "resumed"),
                sum("resume", "sessions"),
                sum("resume", "lost"),
                sum("resume", "duplicates"),
                sum("resume", "errors_to_senders"),
                pages("wrong"),
                pages("errors"),
            );
        }
    }

    // The multi-user chat scenarios.
    let muc_lines: Vec<&Value> = lines.iter().filter(|v| v["profile"] == "muc").collect();
    if !muc_lines.is_empty() {
        let _ = writeln!(out, "\n## Multi-user chat (XEP-0045)\n");
        let _ = writeln!(
            out,
            "The servers' \"muc\" profile: the modern one plus rooms on conference.localhost, every room \
             archived (Prosody: `mod_muc_mam`; ejabberd: `mod_mam`; Starling: its archive), history of 20 \
             messages, rooms made persistent by the load generator's setup. Every occupant receives every \
             message of its rooms, its own included: a *copy* is one message delivered to one occupant. \
             The sizes of the run are in the setup above (`--quick` uses smaller rooms than the titles say). \
             A scenario whose occupants could not all join writes no line (its figures show as –; the run's \
             `bench.log` says why).\n"
        );
        let mut muc_verdicts = Vec::new();
        table(&mut out, &lines, &muc_figures(), true, &mut muc_verdicts);
        // A sweep in which no step was sustained has no highest rate: its lowest step, not
        // sustained, bounds it from above, and so bounds Starling's ratio from below.
        let sweep_of = |s: &str| -> Vec<&Value> { lines.iter().filter(|v| v["server"] == s && muc(v, "muc-fanout-max")).collect() };
        let starling_max: Vec<f64> = sweep_of("starling").iter().filter_map(|v| get(v, "at_max_delivered_copies_per_s")).collect();
        let peers_none: Vec<(&str, f64)> = SERVERS[1..]
            .iter()
            .filter_map(|&s| {
                let sweeps = sweep_of(s);
                let none = !sweeps.is_empty() && sweeps.iter().all(|v| v["max_sustained_rate_per_s"].is_null());
                let lowest = sweeps
                    .iter()
                    .flat_map(|v| v["steps"].as_array().cloned().unwrap_or_default())
                    .filter_map(|st| st[3].as_f64())
                    .filter(|&c| c > 0.0)
                    .fold(f64::MAX, f64::min);
                (none && lowest < f64::MAX).then_some((s, lowest))
            })
            .collect();
        let peers_with_sweep = SERVERS[1..].iter().filter(|s| !sweep_of(s).is_empty()).count();
        if !peers_none.is_empty() {
            let list: Vec<String> = peers_none.iter().map(|(s, c)| format!("{s} (its lowest step: {} copies/s)", fmt_num(*c))).collect();
            let _ = writeln!(
                out,
                "\nNo step of the fan-out sweep was sustained by {}: p99 ≥ 100 ms (or a copy late) already at the \
                 lowest rate tried, so their highest sustained rate is below that step's.",
                list.join(" and ")
            );
            if peers_none.len() == peers_with_sweep && !starling_max.is_empty() {
                let bound = peers_none.iter().map(|(_, c)| *c).fold(f64::MIN, f64::max);
                let r = median(&starling_max) / bound;
                let _ = writeln!(out, "Starling's highest sustained rate is then more than {} times theirs.", fmt_ratio(r));
                muc_verdicts.push((
                    format!(
                        "MUC fan-out: highest sustained rate (≥ 4.00; no peer sustained any step: Starling's {} copies/s ÷ the peers' lowest unsustained step > {})",
                        fmt_num(median(&starling_max)),
                        fmt_ratio(r)
                    ),
                    r >= 4.0,
                ));
            }
        }
        let _ = writeln!(out, "\nTargets:\n");
        if muc_verdicts.is_empty() {
            let _ = writeln!(out, "No target could be checked (a server's figures are missing).");
        }
        for (what, met) in &muc_verdicts {
            let _ = writeln!(out, "- {}: {what}", if *met { "met" } else { "**not met**" });
        }
        let _ = writeln!(out, "\nCorrectness (all repetitions; loss, duplicates and reordering per (room, sender) as each occupant saw them):\n");
        let _ = writeln!(out, "| Server | Copies expected | delivered | lost | duplicated | reordered | arrived late (overloaded steps) | Errors from rooms | History received per join (min–max) |");
        let _ = writeln!(out, "|---|--:|--:|--:|--:|--:|--:|--:|--:|");
        for s in SERVERS {
            let mine: Vec<&&Value> = muc_lines.iter().filter(|v| v["server"] == s).collect();
            if mine.is_empty() {
                continue;
            }
            let sum = |scenario: &str, key: &str| -> u64 { mine.iter().filter(|v| v["scenario"] == scenario).filter_map(|v| get(v, key)).map(|x| x as u64).sum() };
            let lo = mine.iter().filter_map(|v| get(v, "history_received_min")).fold(f64::MAX, f64::min);
            let hi = mine.iter().filter_map(|v| get(v, "history_received_max")).fold(f64::MIN, f64::max);
            let _ = writeln!(
                out,
                "| {s} | {} | {} | {} | {} | {} | {} | {} | {} |",
                sum("muc-fanout", "expected_copies"),
                sum("muc-fanout", "delivered"),
                sum("muc-fanout", "lost"),
                sum("muc-fanout", "duplicates"),
                sum("muc-fanout", "reordered"),
                sum("muc-fanout", "arrived_after_drain"),
                sum("muc-fanout", "errors") + sum("muc-join", "errors"),
                if lo <= hi { format!("{lo:.0}–{hi:.0}") } else { "–".into() },
            );
        }
        let sweeps: Vec<&&Value> = muc_lines.iter().filter(|v| v["scenario"] == "muc-fanout-max").collect();
        if !sweeps.is_empty() {
            let _ = writeln!(
                out,
                "\nMUC fan-out sweeps: the rates of the big room and of the small rooms doubled together, then bisected; \
                 a step is sustained if every copy arrived within the drain window, p99 < 100 ms and the senders offered \
                 ≥ 95% of the rate. Steps: messages/s, sustained, p99 (ms), copies delivered/s, copies lost, load generator busy (%).\n"
            );
            for v in sweeps {
                let steps: Vec<String> = v["steps"]
                    .as_array()
                    .map(|a| a.iter().map(|s| format!("{} {} {}ms {}/s lost {} {}%", s[0], if s[1] == true { "ok" } else { "no" }, s[2], s[3], s[4], s[5])).collect())
                    .unwrap_or_default();
                let _ = writeln!(out, "- {} rep {}: {}", v["server"].as_str().unwrap_or(""), v["rep"], steps.join(" · "));
            }
        }
    }

    // The s2s scenarios.
    let s2s_lines: Vec<&Value> = lines.iter().filter(|v| v["profile"] == "s2s").collect();
    if !s2s_lines.is_empty() {
        let _ = writeln!(out, "\n## Federation (server to server)\n");
        let _ = writeln!(
            out,
            "Two servers of the same kind federating, each column a pair: Starling with Starling, Prosody with \
             Prosody, ejabberd with ejabberd (the s2s profile above: the base profile plus federation, Server \
             Dialback on every link). Every user chats only with its partner on the other server, so every \
             message crosses the link. A message is handled by both servers, once as its sender's (c2s in, s2s \
             out) and once as its recipient's (s2s in, c2s out); with the same traffic both ways, one server's \
             CPU ÷ all messages is the mean of the two, and both servers together are the whole cost of one \
             federated message. Both servers share CPU 0, so the highest rate is where the two together run \
             out. A scenario whose links could not be set up writes no line (its figures show as –; the run's \
             `bench.log` says why).\n"
        );
        let mut s2s_verdicts = Vec::new();
        table(&mut out, &lines, &s2s_figures(), true, &mut s2s_verdicts);
        let _ = writeln!(out, "\nTargets:\n");
        if s2s_verdicts.is_empty() {
            let _ = writeln!(out, "No target could be checked (a pair's figures are missing).");
        }
        for (what, met) in &s2s_verdicts {
            let _ = writeln!(out, "- {}: {what}", if *met { "met" } else { "**not met**" });
        }
        let _ = writeln!(out, "\nCorrectness (all repetitions; loss, duplicates and reordering per sender as its partner saw them):\n");
        let _ = writeln!(out, "| Pair | Messages sent | delivered | lost | duplicated | reordered | arrived late (overloaded steps) | Bounced | Links asked / answered |");
        let _ = writeln!(out, "|---|--:|--:|--:|--:|--:|--:|--:|--:|");
        for s in SERVERS {
            let mine: Vec<&&Value> = s2s_lines.iter().filter(|v| v["server"] == s).collect();
            if mine.is_empty() {
                continue;
            }
            let sum = |scenario: &str, key: &str| -> u64 { mine.iter().filter(|v| v["scenario"] == scenario).filter_map(|v| get(v, key)).map(|x| x as u64).sum() };
            let _ = writeln!(
                out,
                "| {s} | {} | {} | {} | {} | {} | {} | {} | {} / {} |",
                sum("s2s-chat", "sent"),
                sum("s2s-chat", "delivered"),
                sum("s2s-chat", "lost"),
                sum("s2s-chat", "duplicates"),
                sum("s2s-chat", "reordered"),
                sum("s2s-chat", "arrived_after_drain"),
                sum("s2s-chat", "errors"),
                sum("s2s-links", "links"),
                sum("s2s-links", "answered"),
            );
        }
        let sweeps: Vec<&&Value> = s2s_lines.iter().filter(|v| v["scenario"] == "s2s-chat-max").collect();
        if !sweeps.is_empty() {
            let _ = writeln!(
                out,
                "\nSweeps: the rate (both directions together) doubled until a step is not sustained, then bisected; a step \
                 is sustained if every message arrived within the drain window, p99 < 50 ms and the senders offered ≥ 95% \
                 of the rate. Steps: rate (msg/s), sustained, p99 (ms), load generator busy (%).\n"
            );
            for v in sweeps {
                let steps: Vec<String> = v["steps"]
                    .as_array()
                    .map(|a| a.iter().map(|s| format!("{} {} {}ms {}%", s[0], if s[1] == true { "ok" } else { "no" }, s[2], s[3])).collect())
                    .unwrap_or_default();
                let _ = writeln!(out, "- {} rep {}: {}", v["server"].as_str().unwrap_or(""), v["rep"], steps.join(" · "));
            }
        }
    }

    // Correctness over all runs.
    let _ = writeln!(out, "\n## Correctness (all repetitions)\n");
    let _ = writeln!(
        out,
        "Lost means never arrived. Messages of an overloaded sweep step that arrived after its drain window \
         are counted apart: they were late, not lost.\n"
    );
    let _ = writeln!(out, "| Server | Sessions opened / asked | Pings answered / sent | Chat messages sent | lost | duplicated | reordered | arrived late (overloaded steps) | Offline lost | Roster-login errors |");
    let _ = writeln!(out, "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|");
    for s in SERVERS {
        let mine: Vec<&Value> = lines.iter().filter(|v| v["server"] == s && v.get("profile").is_none()).collect();
        if mine.is_empty() {
            continue;
        }
        let sum = |scenario: &str, key: &str| -> u64 {
            mine.iter()
                .filter(|v| v["scenario"] == scenario && v.get("kind").is_none() && v.get("profile").is_none())
                .filter_map(|v| v[key].as_u64())
                .sum()
        };
        let roster_errors: usize = mine.iter().filter(|v| v["scenario"] == "roster-login").map(|v| v["errors"].as_array().map(|a| a.len()).unwrap_or(0)).sum();
        let _ = writeln!(
            out,
            "| {s} | {} / {} | {} / {} | {} | {} | {} | {} | {} | {} | {} |",
            sum("connect", "ok"),
            sum("connect", "sessions"),
            sum("connect", "pings_answered"),
            sum("connect", "pings_sent"),
            sum("chat", "sent"),
            sum("chat", "lost"),
            sum("chat", "duplicates"),
            sum("chat", "reordered"),
            sum("chat", "arrived_after_drain"),
            sum("offline", "lost"),
            roster_errors
        );
    }

    let _ = writeln!(out, "\n## The load generator's own cost\n");
    let _ = writeln!(
        out,
        "The load generator runs on its own core (CPU 1). Where it is far from 100% busy, it was not the limit.\n"
    );
    table(&mut out, &lines, &loadgen_figures(), false, &mut Vec::new());

    // Sweeps step by step.
    let sweeps: Vec<&Value> = lines.iter().filter(|v| v["scenario"] == "chat-max").collect();
    let sweep_label = |v: &Value| if v["profile"] == "modern" { " (archive, carbons, stream management)" } else { "" };
    if !sweeps.is_empty() {
        let _ = writeln!(out, "\n## Chat rate sweeps\n");
        let _ = writeln!(out, "Each step sends for a fixed time at a target rate; a step is sustained if every message arrived within the step's drain window, p99 < 50 ms and the senders offered ≥ 95% of the rate; after an overloaded step the next waits until its backlog has arrived. Steps: rate (msg/s), sustained, p99 (ms), load generator busy (%).\n");
        for v in sweeps {
            let steps: Vec<String> = v["steps"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|s| format!("{} {} {}ms {}%", s[0], if s[1] == true { "ok" } else { "no" }, s[2], s[3]))
                        .collect()
                })
                .unwrap_or_default();
            let _ = writeln!(out, "- {}{} rep {}: {}", v["server"].as_str().unwrap_or(""), sweep_label(v), v["rep"], steps.join(" · "));
        }
    }

    // The scale run.
    // Scale lines carry no repetition number (one run): taken from all lines.
    let scale: Vec<&Value> = all.iter().filter(|v| v["kind"] == "scale").collect();
    if let Some(last) = scale.iter().rev().find(|v| v["scenario"] == "connect") {
        let _ = writeln!(out, "\n## Starling alone: idle TLS sessions at scale\n");
        let mut points: Vec<(f64, f64)> = Vec::new();
        if let Some(b) = get(last, "server_rss_before_kib") {
            points.push((0.0, b));
        }
        for c in scale.iter().filter(|v| v["scenario"] == "connect-checkpoint") {
            if let (Some(n), Some(r)) = (get(c, "sessions"), get(c, "server_rss_kib")) {
                points.push((n, r));
            }
        }
        if let (Some(n), Some(r)) = (get(last, "ok"), get(last, "server_rss_after_kib")) {
            points.push((n, r));
        }
        let _ = writeln!(out, "| Sessions | Server RSS (MiB) |");
        let _ = writeln!(out, "|--:|--:|");
        for (n, r) in &points {
            let _ = writeln!(out, "| {n:.0} | {:.1} |", r / 1024.0);
        }
        let _ = writeln!(
            out,
            "\n- sessions asked / opened / failed: {} / {} / {}",
            last["sessions"], last["ok"], last["failed"]
        );
        let _ = writeln!(
            out,
            "- XEP-0199 pings sent on every session once all were connected: {} sent, {} answered (all answered within {} s)",
            last["pings_sent"], last["pings_answered"], last["ping_all_answered_seconds"]
        );
        let _ = writeln!(out, "- login rate {} logins/s, server CPU {} ms per TLS login", last["login_rate_per_s"], last["server_cpu_ms_per_login"]);
        if let Some((slope, intercept)) = fit(&points) {
            let at_100k = (intercept + slope * 100_000.0) / 1024.0 / 1024.0;
            let _ = writeln!(out, "- memory slope (least squares over the points above): **{slope:.2} KiB per session**");
            let _ = writeln!(
                out,
                "- extrapolated RSS at 100,000 sessions: **{at_100k:.2} GiB** (target < 1.5 GiB: {})",
                if at_100k < 1.5 { "met" } else { "**not met**" }
            );
        }
        let _ = writeln!(out, "- load generator: {} KiB RSS, {} s CPU for the whole run", last["loadgen_rss_kib"], last["loadgen_cpu_s"]);
    }

    let _ = writeln!(out, "\n## Reproduce\n");
    // The command of the run that made the lines (kept in its environment line), not the
    // one regenerating the report.
    let command = env["command"].as_str().unwrap_or(&a.command);
    let _ = writeln!(out, "```sh\n{command}\n```\n");
    let _ = writeln!(
        out,
        "As root on Debian 12 (it installs `prosody` and `ejabberd` with apt-get when missing). The raw \
         measurements are in the run's `results.jsonl`; `compat/bench/run.sh --report-only FILE` \
         regenerates this report from one."
    );
    print!("{out}");
    0
}

//! The message archive scenario (XEP-0313): one account with a large archive, queried
//! page by page as a client syncing or scrolling does.
//!
//! `archive-gen` writes the archive of PREFIX0 (1,000,000 messages by default) for a
//! server's bulk path, on stdout: JSON lines (neutral; for `starling archive import`), or
//! SQL for Prosody's `prosodyarchive` table or ejabberd's `archive` table (SQLite). The
//! messages are a pure function of their number and the manifest (count, peers, times):
//! message i is at `end_time - (count-1-i)*step` seconds, with peer k chosen with weight
//! 1/(k+1) (a few frequent contacts, many rare ones), sent or received, body `arch i xxx`.
//!
//! `archive-query` then logs in as PREFIX0 and times, per query type, `--queries` queries
//! for a page of `--page` messages: the newest page (RSM `<before/>`), the page before and
//! the page after a random message's archive id, and the newest page `with` a random peer.
//! The ids are first learnt from the server (a `start` query at a random message's time,
//! one result), so any server's id scheme works. Every page is checked against the
//! messages it must hold.

use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::client::{SendExt, Session};
use crate::{Cli, Ctx, latency_ms, own_cpu_s, round};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// One JSON object per message: ts_us, direction, with, id, stanza.
    Jsonl,
    /// INSERTs into Prosody's `prosodyarchive` (mod_storage_sql, SQLite).
    ProsodySql,
    /// INSERTs into ejabberd's `archive` (mod_mam_sql, SQLite, default schema).
    EjabberdSql,
}

#[derive(clap::Args, Clone)]
pub struct GenArgs {
    #[arg(long, default_value_t = 1_000_000)]
    pub messages: usize,
    /// Other parties (peer0..peerN-1@domain).
    #[arg(long, default_value_t = 100)]
    pub peers: usize,
    /// Unix time (s) of the newest message; default: now.
    #[arg(long)]
    pub end_time: Option<u64>,
    /// Seconds between messages.
    #[arg(long, default_value_t = 30)]
    pub step: u64,
    /// Body padding in bytes.
    #[arg(long, default_value_t = 50)]
    pub body: usize,
    #[arg(long, value_enum, default_value = "jsonl")]
    pub format: Format,
    /// Write the manifest (what archive-query needs to check pages) here.
    #[arg(long)]
    pub manifest: Option<PathBuf>,
    /// Write only the manifest, no messages.
    #[arg(long, requires = "manifest")]
    pub manifest_only: bool,
}

#[derive(clap::Args, Clone)]
pub struct QueryArgs {
    /// The manifest archive-gen wrote.
    #[arg(long, required_unless_present = "touch")]
    pub manifest: Option<PathBuf>,
    /// Send one query and stop: a server that makes its archive tables at the first
    /// query (Prosody) makes them.
    #[arg(long)]
    pub touch: bool,
    /// Queries per type.
    #[arg(long, default_value_t = 1000)]
    pub queries: usize,
    /// Messages per page (RSM max).
    #[arg(long, default_value_t = 50)]
    pub page: usize,
    /// Seconds one query may take.
    #[arg(long, default_value_t = 30.0)]
    pub timeout: f64,
}

/// What identifies an archive: archive-gen writes it, archive-query reads it.
#[derive(Clone, Debug)]
pub struct Manifest {
    pub owner: String,
    pub domain: String,
    pub messages: usize,
    pub peers: usize,
    pub end_time: u64,
    pub step: u64,
    pub body: usize,
}

impl Manifest {
    fn to_json(&self) -> Value {
        json!({
            "owner": self.owner, "domain": self.domain, "messages": self.messages,
            "peers": self.peers, "end_time": self.end_time, "step": self.step, "body": self.body,
        })
    }

    fn from_json(v: &Value) -> Option<Manifest> {
        Some(Manifest {
            owner: v["owner"].as_str()?.to_string(),
            domain: v["domain"].as_str()?.to_string(),
            messages: v["messages"].as_u64()? as usize,
            peers: v["peers"].as_u64()? as usize,
            end_time: v["end_time"].as_u64()?,
            step: v["step"].as_u64()?,
            body: v["body"].as_u64()? as usize,
        })
    }

    /// Unix time (s) of message i.
    pub fn time(&self, i: usize) -> u64 {
        self.end_time - (self.messages - 1 - i) as u64 * self.step
    }
}

fn mix(i: u64) -> u64 {
    // splitmix64: a fixed, well-spread function of the message number.
    let mut z = i.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Peer k has weight 1/(k+1).
struct Peers {
    cumulative: Vec<f64>,
}

impl Peers {
    fn new(n: usize) -> Self {
        let mut total = 0.0;
        let cumulative = (0..n.max(1))
            .map(|k| {
                total += 1.0 / (k + 1) as f64;
                total
            })
            .collect();
        Peers { cumulative }
    }

    /// (peer, received) of message i.
    fn of(&self, i: usize) -> (usize, bool) {
        let m = mix(i as u64);
        let total = *self.cumulative.last().unwrap();
        let u = (m & 0xFFFF_FFFF) as f64 / 4_294_967_296.0 * total;
        let k = self.cumulative.partition_point(|&c| c <= u);
        (k.min(self.cumulative.len() - 1), m >> 63 == 1)
    }
}

/// SQL text literal.
fn lit(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

pub fn generate(cli: &Cli, a: &GenArgs) -> i32 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let m = Manifest {
        owner: format!("{}0", cli.prefix),
        domain: cli.domain.clone(),
        messages: a.messages,
        peers: a.peers,
        end_time: a.end_time.unwrap_or(now),
        step: a.step.max(1),
        body: a.body,
    };
    if m.messages == 0 || m.end_time < m.messages as u64 * m.step {
        eprintln!("archive-gen: --messages must be positive and fit before --end-time");
        return 2;
    }
    if let Some(path) = &a.manifest
        && let Err(e) = std::fs::write(path, m.to_json().to_string())
    {
        eprintln!("{}: {e}", path.display());
        return 1;
    }
    if a.manifest_only {
        return 0;
    }
    let peers = Peers::new(m.peers);
    let padding = "x".repeat(m.body);
    let owner_bare = format!("{}@{}", m.owner, m.domain);
    let owner_full = format!("{owner_bare}/phone");
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::with_capacity(1 << 20, stdout.lock());
    let result = (|| -> std::io::Result<()> {
        if a.format != Format::Jsonl {
            writeln!(out, "BEGIN;")?;
        }
        for i in 0..m.messages {
            let (k, received) = peers.of(i);
            let peer_bare = format!("peer{k}@{}", m.domain);
            let peer_full = format!("{peer_bare}/phone");
            let (from, to) = if received {
                (peer_full.as_str(), owner_bare.as_str())
            } else {
                (owner_full.as_str(), peer_bare.as_str())
            };
            let body = format!("arch {i} {padding}");
            let ts = m.time(i);
            // One INSERT per 500 rows.
            let first = i % 500 == 0;
            let last = i % 500 == 499 || i + 1 == m.messages;
            match a.format {
                Format::Jsonl => {
                    let stanza = format!(
                        "<message xmlns='jabber:client' from='{from}' to='{to}' type='chat' id='m{i}'><body>{body}</body></message>"
                    );
                    let line = json!({
                        "ts_us": ts * 1_000_000,
                        "direction": if received { "in" } else { "out" },
                        "with": if received { &peer_full } else { &peer_bare },
                        "id": format!("m{i}"),
                        "stanza": stanza,
                    });
                    writeln!(out, "{line}")?;
                }
                Format::ProsodySql => {
                    // As mod_mam stores a message: the stanza without its namespace,
                    // `with` the other party's bare JID, a UUID-like key.
                    let stanza = format!(
                        "<message xml:lang='en' from='{from}' to='{to}' type='chat' id='m{i}'><body>{body}</body></message>"
                    );
                    let r = mix(i as u64);
                    let key = format!(
                        "{:08x}-{:04x}-4{:03x}-{:04x}-{i:012x}",
                        r >> 32,
                        (r >> 16) & 0xffff,
                        r & 0xfff,
                        0x8000 | (r >> 48) & 0x3fff
                    );
                    if first {
                        writeln!(
                            out,
                            "INSERT INTO \"prosodyarchive\" (\"host\", \"user\", \"store\", \"key\", \"when\", \"with\", \"type\", \"value\") VALUES"
                        )?;
                    }
                    write!(
                        out,
                        "({}, {}, 'archive', {}, {ts}, {}, 'xml', {}){}",
                        lit(&m.domain),
                        lit(&m.owner),
                        lit(&key),
                        lit(&peer_bare),
                        lit(&stanza),
                        if last { ";\n" } else { ",\n" }
                    )?;
                }
                Format::EjabberdSql => {
                    // As mod_mam_sql stores a message: timestamp in microseconds (also its
                    // archive id), `peer` the JID as addressed, the body again in `txt`.
                    let stanza = format!(
                        "<message xml:lang='en' to='{to}' from='{from}' type='chat' id='m{i}' xmlns='jabber:client'><body>{body}</body></message>"
                    );
                    if first {
                        writeln!(
                            out,
                            "INSERT INTO archive (username, timestamp, peer, bare_peer, xml, txt, kind, nick) VALUES"
                        )?;
                    }
                    write!(
                        out,
                        "({}, {}, {}, {}, {}, {}, 'chat', ''){}",
                        lit(&m.owner),
                        ts * 1_000_000,
                        lit(if received { &peer_full } else { &peer_bare }),
                        lit(&peer_bare),
                        lit(&stanza),
                        lit(&body),
                        if last { ";\n" } else { ",\n" }
                    )?;
                }
            }
        }
        if a.format != Format::Jsonl {
            writeln!(out, "COMMIT;")?;
        }
        out.flush()
    })();
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("archive-gen: {e}");
            1
        }
    }
}

/// XEP-0082 date-time (UTC) of a Unix time.
fn datetime(unix: u64) -> String {
    let (days, secs) = ((unix / 86_400) as i64, unix % 86_400);
    // Days since 1970-01-01 to a civil date (proleptic Gregorian), by 400-year eras.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// One page: the message numbers (in the order received) and their archive ids.
struct Page {
    items: Vec<(usize, String)>,
    took: Duration,
}

async fn query(
    s: &mut Session,
    n: u64,
    fields: &str,
    rsm: &str,
    timeout: f64,
) -> Result<Page, String> {
    let q = format!(
        "<iq type='set' id='q{n}'><query xmlns='urn:xmpp:mam:2' queryid='q{n}'><x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'><value>urn:xmpp:mam:2</value></field>{fields}</x><set xmlns='http://jabber.org/protocol/rsm'>{rsm}</set></query></iq>"
    );
    let id = format!("q{n}");
    let start = Instant::now();
    s.writer
        .send(q.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut items = Vec::new();
    let read = async {
        loop {
            let st = s.reader.stanza().await.map_err(|e| e.to_string())?;
            if st.name == "message" {
                if let (Some(rid), Some(body)) = (st.result_id, st.body) {
                    let index = body
                        .strip_prefix("arch ")
                        .and_then(|b| b.split(' ').next())
                        .and_then(|i| i.parse().ok())
                        .unwrap_or(usize::MAX);
                    items.push((index, rid));
                }
            } else if st.name == "iq" && st.id.as_deref() == Some(id.as_str()) {
                return if st.kind.as_deref() == Some("result") {
                    Ok(())
                } else {
                    Err(format!("error: {}", st.inner))
                };
            }
        }
    };
    match tokio::time::timeout(Duration::from_secs_f64(timeout), read).await {
        Ok(Ok(())) => Ok(Page {
            items,
            took: start.elapsed(),
        }),
        Ok(Err(e)) => Err(e),
        Err(_) => Err("timeout".into()),
    }
}

/// The figures of one query type.
#[derive(Default)]
struct Kind {
    latencies_us: Vec<u32>,
    wrong: u64,
    unordered: u64,
    errors: u64,
    first_error: Option<String>,
    cpu_s: f64,
}

impl Kind {
    fn record(&mut self, result: Result<Page, String>, expected: &[usize]) -> Option<Page> {
        match result {
            Ok(page) => {
                self.latencies_us
                    .push(page.took.as_micros().min(u32::MAX as u128) as u32);
                let got: Vec<usize> = page.items.iter().map(|(i, _)| *i).collect();
                let mut sorted = got.clone();
                sorted.sort_unstable();
                if sorted != expected {
                    if self.wrong == 0 && self.first_error.is_none() {
                        self.first_error = Some(format!(
                            "page of {} items, expected {} ({:?}..)",
                            got.len(),
                            expected.len(),
                            &got[..got.len().min(3)]
                        ));
                    }
                    self.wrong += 1;
                } else if sorted != got {
                    self.unordered += 1;
                }
                Some(page)
            }
            Err(e) => {
                self.errors += 1;
                self.first_error.get_or_insert(e);
                None
            }
        }
    }

    fn json(mut self) -> Value {
        let n = self.latencies_us.len();
        json!({
            "latency_ms": latency_ms(&mut self.latencies_us),
            "server_cpu_us_per_query": round(self.cpu_s * 1e6 / n.max(1) as f64, 1),
            "wrong": self.wrong,
            "unordered": self.unordered,
            "errors": self.errors,
            "first_error": self.first_error,
        })
    }
}

pub async fn run(ctx: Arc<Ctx>, a: QueryArgs) -> bool {
    if a.touch {
        return touch(&ctx, &a).await;
    }
    let path = a.manifest.clone().unwrap_or_default();
    let manifest = match std::fs::read_to_string(&path)
        .ok()
        .and_then(|t| serde_json::from_str::<Value>(&t).ok())
        .as_ref()
        .and_then(Manifest::from_json)
    {
        Some(m) => m,
        None => {
            eprintln!("{}: not a manifest of archive-gen", path.display());
            return false;
        }
    };
    let m = manifest;
    let page = a.page.max(1);
    if m.messages < 3 * page {
        eprintln!("archive-query: the archive is smaller than three pages");
        return false;
    }
    let cpu0 = own_cpu_s();
    let wall0 = Instant::now();
    // The archive's contents, recomputed: each peer's messages, in order.
    let peers = Peers::new(m.peers);
    let mut by_peer: Vec<Vec<usize>> = vec![Vec::new(); m.peers.max(1)];
    for i in 0..m.messages {
        by_peer[peers.of(i).0].push(i);
    }
    let mut s = match ctx.login(0, "mam", false).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("login {}: {e}", ctx.user(0));
            return false;
        }
    };
    let mut n = 0u64;
    let max = format!("<max>{page}</max>");
    let newest: Vec<usize> = (m.messages - page..m.messages).collect();
    // Is the archive there at all?
    n += 1;
    match query(&mut s, n, "", &format!("{max}<before/>"), a.timeout).await {
        Ok(p) if p.items.iter().map(|(i, _)| *i).eq(newest.iter().copied()) => {}
        Ok(p) => {
            eprintln!(
                "archive-query: the newest page of {} holds {} messages, not the generated ones (was the archive imported?)",
                m.owner,
                p.items.len()
            );
            ctx.emit(
                "archive-query",
                json!({"messages": m.messages, "provisioned": false}),
                cpu0,
                wall0,
            );
            return false;
        }
        Err(e) => {
            eprintln!("archive-query: {e}");
            return false;
        }
    }

    let mut rng = 0x2545_F491_4F6C_DD1Du64;
    let mut next = move |bound: usize| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        (rng % bound as u64) as usize
    };
    // Random messages away from the ends (a full page on each side), and their ids, read
    // with a `start` query at their time (timestamps are one per message).
    let positions: Vec<usize> = (0..a.queries)
        .map(|_| page + next(m.messages - 2 * page))
        .collect();
    let mut ids = Vec::with_capacity(positions.len());
    let mut start_kind = Kind::default();
    let cpu = ctx.server();
    for &i in &positions {
        n += 1;
        let field = format!(
            "<field var='start'><value>{}</value></field>",
            datetime(m.time(i))
        );
        let r = query(&mut s, n, &field, "<max>1</max>", a.timeout).await;
        let id = start_kind.record(r, &[i]).and_then(|p| {
            p.items
                .first()
                .filter(|(got, _)| *got == i)
                .map(|(_, id)| id.clone())
        });
        ids.push(id);
    }
    if let (Some(b), Some(af)) = (cpu, ctx.server()) {
        start_kind.cpu_s = af.cpu_s - b.cpu_s;
    }

    let mut kinds = Vec::new();
    for kind in ["newest", "before", "after", "with"] {
        let mut k = Kind::default();
        let cpu = ctx.server();
        for (q, &i) in positions.iter().enumerate() {
            n += 1;
            let (fields, rsm, expected): (String, String, Vec<usize>) = match kind {
                "newest" => (String::new(), format!("{max}<before/>"), newest.clone()),
                "before" | "after" => {
                    let Some(id) = &ids[q] else { continue };
                    if kind == "before" {
                        (
                            String::new(),
                            format!("{max}<before>{id}</before>"),
                            (i - page..i).collect(),
                        )
                    } else {
                        (
                            String::new(),
                            format!("{max}<after>{id}</after>"),
                            (i + 1..=i + page).collect(),
                        )
                    }
                }
                _ => {
                    let p = next(by_peer.len());
                    let list = &by_peer[p];
                    (
                        format!(
                            "<field var='with'><value>peer{p}@{}</value></field>",
                            m.domain
                        ),
                        format!("{max}<before/>"),
                        list[list.len().saturating_sub(page)..].to_vec(),
                    )
                }
            };
            let r = query(&mut s, n, &fields, &rsm, a.timeout).await;
            k.record(r, &expected);
        }
        if let (Some(b), Some(af)) = (cpu, ctx.server()) {
            k.cpu_s = af.cpu_s - b.cpu_s;
        }
        kinds.push((kind, k));
    }
    let mut fields = json!({
        "messages": m.messages,
        "peers": m.peers,
        "page": page,
        "queries_per_type": a.queries,
        "provisioned": true,
        "ids_found": ids.iter().filter(|i| i.is_some()).count(),
        "start": start_kind.json(),
    });
    let mut ok = fields["ids_found"] == json!(a.queries);
    for (name, k) in kinds {
        ok &= k.wrong == 0 && k.errors == 0;
        fields[name] = k.json();
    }
    if let Some(af) = ctx.server() {
        fields["server_rss_kib"] = json!(af.rss_kib);
    }
    ctx.emit("archive-query", fields, cpu0, wall0);
    let _ = s.writer.send(b"</stream:stream>").await;
    ok
}

async fn touch(ctx: &Ctx, a: &QueryArgs) -> bool {
    let mut s = match ctx.login(0, "mam", false).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("login {}: {e}", ctx.user(0));
            return false;
        }
    };
    let cpu0 = own_cpu_s();
    let wall0 = Instant::now();
    let r = query(&mut s, 1, "", "<max>1</max><before/>", a.timeout).await;
    let _ = s.writer.send(b"</stream:stream>").await;
    if let Err(e) = &r {
        eprintln!("archive-query --touch: {e}");
    }
    ctx.emit("archive-touch", json!({"answered": r.is_ok()}), cpu0, wall0);
    r.is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datetimes() {
        assert_eq!(datetime(0), "1970-01-01T00:00:00Z");
        assert_eq!(datetime(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(datetime(1_700_000_000), "2023-11-14T22:13:20Z");
    }

    #[test]
    fn frequent_peers_come_first() {
        let p = Peers::new(100);
        let mut counts = vec![0u32; 100];
        for i in 0..100_000 {
            counts[p.of(i).0] += 1;
        }
        assert!(counts[0] > 10 * counts[99], "{counts:?}");
        assert!(counts.iter().all(|&c| c > 0));
    }
}

//! Where to connect for a remote domain: the DNS part of outgoing federation.
//!
//! RFC 6120 §3.2.1 (SRV records `_xmpp-server._tcp`, STARTTLS), XEP-0368 (SRV records
//! `_xmpps-server._tcp`, direct TLS, mixed with the former by priority and weight), the
//! fallback to the domain itself on port 5269 (RFC 6120 §3.2.2), and the addresses of one
//! target (hosts file, then A/AAAA).
//!
//! Everything here is bounded: each query has a timeout and a deadline, and a zone cannot make
//! us try more than [`MAX_TARGETS`] targets or [`MAX_ADDRESSES`] addresses per target.

use std::collections::HashSet;
use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hickory_resolver::config::{
    ConnectionConfig, LookupIpStrategy, NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts,
};
use hickory_resolver::lookup::Lookup;
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::op::Query;
use hickory_resolver::proto::rr::rdata::SRV;
use hickory_resolver::proto::rr::{Name, RData, RecordType};
use hickory_resolver::{Hosts, TokioResolver};

/// RFC 6120 §3.2.2: the fallback uses "the "xmpp-server" port of 5269 for server-to-server
/// connections".
pub const XMPP_SERVER_PORT: u16 = 5269;

/// At most this many targets per domain, whatever the zone says: a hostile zone with
/// thousands of SRV records would otherwise have us connect thousands of times.
pub const MAX_TARGETS: usize = 16;

/// At most this many addresses per target, for the same reason.
pub const MAX_ADDRESSES: usize = 16;

/// hickory's timeout for one query (resolv.conf's `timeout`, lowered to this if higher): a
/// peer's stanzas wait in the queue while we resolve.
const QUERY_TIMEOUT: Duration = Duration::from_secs(3);

/// hickory's retries after a failed query (resolv.conf's `attempts`, lowered to this).
const MAX_ATTEMPTS: usize = 2;

/// The wall-clock bound of one lookup, whatever hickory does inside it (several name servers,
/// retries, back-off on busy servers).
const LOOKUP_DEADLINE: Duration = Duration::from_secs(10);

/// Read once, when the resolver is made. `ip netns exec NS` bind-mounts `/etc/netns/NS/hosts`
/// here, which is how test networks name their peers.
const HOSTS_FILE: &str = "/etc/hosts";

/// One place to try, in order.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Target {
    /// A DNS name (lowercase, ASCII, without the trailing dot) or an IP address (without
    /// brackets); [`Resolver::addresses`] takes either.
    pub host: String,
    pub port: u16,
    /// XEP-0368 §3: "Where 'service' starts with 'xmpps-' the client or server MUST connect
    /// with direct TLS enabled", and where it starts with 'xmpp-' it "MUST NOT".
    pub direct_tls: bool,
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let how = if self.direct_tls { "direct TLS" } else { "STARTTLS" };
        if self.host.contains(':') {
            write!(f, "[{}]:{} ({how})", self.host, self.port)
        } else {
            write!(f, "{}:{} ({how})", self.host, self.port)
        }
    }
}

/// What resolution found, and in plain words how (for `starling check s2s` and logs).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resolution {
    /// In the order to try them. Empty when the domain says it offers no federation (SRV
    /// target "."): then there is nothing to try.
    pub targets: Vec<Target>,
    pub steps: Vec<String>,
}

/// Why a target host has no address to connect to.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    #[error("{host:?} is not a DNS name: {reason}")]
    InvalidName { host: String, reason: String },
    /// NXDOMAIN, or the name exists with neither A nor AAAA records.
    #[error("{host} has no address (no A or AAAA records)")]
    NoAddresses { host: String },
    /// SERVFAIL, REFUSED, no answer in time, no name server reachable.
    #[error("looking up the addresses of {host} failed: {reason}")]
    LookupFailed { host: String, reason: String },
}

/// DNS for outgoing federation: hickory for the queries, and the hosts file read here.
#[derive(Debug, Clone)]
pub struct Resolver {
    /// `Err` if hickory could not make a resolver (its builder fails only on TLS settings,
    /// which are not used here, but its type says it can): lookups then fail with this reason,
    /// which means the fallback for `targets` and the hosts file alone for `addresses`.
    dns: Result<TokioResolver, String>,
    /// Consulted before DNS, like the C library's `hosts: files dns` (see `addresses`).
    hosts: Arc<Hosts>,
    /// [`LOOKUP_DEADLINE`]; shorter in tests.
    deadline: Duration,
}

impl Resolver {
    /// The system's configuration (/etc/resolv.conf) and /etc/hosts. If resolv.conf cannot be
    /// read (or names no name server), hickory's default options and a name server on
    /// 127.0.0.1:53, which is what the C library does without resolv.conf; the hosts file is
    /// kept either way, since test networks put peer names only there.
    pub fn from_system() -> Resolver {
        let (config, options) = match hickory_resolver::system_conf::read_system_conf() {
            Ok(system) => system,
            Err(e) => {
                tracing::warn!(error = %e, "cannot use /etc/resolv.conf: asking a name server on 127.0.0.1:53");
                let local = NameServerConfig::udp_and_tcp(IpAddr::V4(Ipv4Addr::LOCALHOST));
                (ResolverConfig::from_name_servers(vec![local]), ResolverOpts::default())
            }
        };
        let hosts = read_hosts_file(Path::new(HOSTS_FILE)).unwrap_or_else(|e| {
            tracing::warn!(error = %e, path = HOSTS_FILE, "cannot read the hosts file: DNS only");
            Hosts::default()
        });
        Resolver::build(config, options, hosts)
    }

    /// For tests: these name servers (UDP and TCP at the given socket addresses), no hosts
    /// file unless given with [`Resolver::with_hosts_file`].
    pub fn with_nameservers(servers: &[SocketAddr]) -> Resolver {
        Resolver::build(nameservers_config(servers), ResolverOpts::default(), Hosts::default())
    }

    /// The same resolver with the names of this hosts file (hosts(5) format) instead of the
    /// ones it had.
    pub fn with_hosts_file(mut self, path: &Path) -> io::Result<Resolver> {
        self.hosts = Arc::new(read_hosts_file(path)?);
        Ok(self)
    }

    fn build(config: ResolverConfig, mut options: ResolverOpts, hosts: Hosts) -> Resolver {
        // A zero timeout (resolv.conf `timeout:0`) would fail every query at once.
        options.timeout = if options.timeout.is_zero() { QUERY_TIMEOUT } else { options.timeout.min(QUERY_TIMEOUT) };
        options.attempts = options.attempts.min(MAX_ATTEMPTS);
        // The hosts file is read and consulted here instead (see `addresses` for why).
        options.use_hosts_file = ResolveHosts::Never;
        // AAAA and A in parallel; `interleave` then decides the order.
        options.ip_strategy = LookupIpStrategy::Ipv6AndIpv4;
        let dns = TokioResolver::builder_with_config(config, TokioRuntimeProvider::default())
            .with_options(options)
            .build()
            .map_err(|e| format!("no DNS resolver: {e}"));
        if let Err(reason) = &dns {
            tracing::error!(%reason, "federation will use the hosts file and fallbacks only");
        }
        Resolver { dns, hosts: Arc::new(hosts), deadline: LOOKUP_DEADLINE }
    }

    /// RFC 6120 §3.2.1 + XEP-0368: the targets for a remote domain, in the order to try them.
    ///
    /// `domain` is normalized already (lowercase, no trailing dot). Both SRV names are asked
    /// at once and as absolute names, so that resolv.conf's `search` domains never apply.
    pub async fn targets(&self, domain: &str) -> Resolution {
        if let Some(ip) = ip_literal(domain) {
            // An IP literal has no SRV records; it is its own and only target.
            let target = Target { host: ip.to_string(), port: XMPP_SERVER_PORT, direct_tls: false };
            let step = format!("{domain} is an IP address, not a DNS name: no SRV lookup, trying {target}");
            return Resolution { targets: vec![target], steps: vec![step] };
        }
        let (direct, starttls) = tokio::join!(self.srv(Service::DirectTls, domain), self.srv(Service::StartTls, domain));
        plan(domain, direct, starttls, &mut system_random)
    }

    async fn srv(&self, service: Service, domain: &str) -> SrvAnswer {
        let name = match Name::from_utf8(service.query_name(domain)) {
            Ok(name) => name,
            Err(e) => return SrvAnswer::Failed(format!("not a DNS name: {e}")),
        };
        let dns = match &self.dns {
            Ok(dns) => dns,
            Err(reason) => return SrvAnswer::Failed(reason.clone()),
        };
        match tokio::time::timeout(self.deadline, dns.srv_lookup(name)).await {
            Err(_) => SrvAnswer::Failed(format!("no answer within {} ms", self.deadline.as_millis())),
            Ok(Ok(lookup)) => answer_from_srv(service, srv_records(&lookup)),
            Ok(Err(e)) if e.is_nx_domain() => SrvAnswer::NoRecords("no such name (NXDOMAIN)".into()),
            Ok(Err(e)) if e.is_no_records_found() => SrvAnswer::NoRecords("no SRV records".into()),
            Ok(Err(e)) => SrvAnswer::Failed(e.to_string()),
        }
    }

    /// The addresses to connect to for one target host (a DNS name or an IP literal, with or
    /// without brackets), at most [`MAX_ADDRESSES`].
    ///
    /// The hosts file first: if it names the host, its addresses are the answer and DNS is not
    /// asked, as with the C library's `hosts: files dns`. (hickory's own hosts support looks
    /// up A and AAAA separately, each in the file, then in DNS: a name with only an IPv4 line
    /// would still wait on a DNS query for AAAA, a full timeout on a test network without
    /// DNS.) Then A and AAAA in parallel.
    ///
    /// IPv6 and IPv4 come interleaved, IPv6 first (`interleave`): when one family is broken
    /// on this host, the next attempt is already of the other family.
    pub async fn addresses(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, ResolveError> {
        if let Some(ip) = ip_literal(host) {
            return Ok(vec![SocketAddr::new(ip, port)]);
        }
        let bare = host.strip_suffix('.').unwrap_or(host);
        let invalid = |reason: String| ResolveError::InvalidName { host: host.to_owned(), reason };
        if bare.is_empty() {
            return Err(invalid("empty".into()));
        }
        // Absolute, so that resolv.conf's `search` domains do not apply.
        let name = Name::from_utf8(format!("{bare}.")).map_err(|e| invalid(e.to_string()))?;

        let from_hosts: Vec<IpAddr> = [RecordType::AAAA, RecordType::A]
            .into_iter()
            .filter_map(|kind| self.hosts.lookup_static_host(&Query::query(name.clone(), kind)))
            .flat_map(|lookup| lookup.answers().iter().filter_map(|r| r.data.ip_addr()).collect::<Vec<_>>())
            .collect();
        if !from_hosts.is_empty() {
            return Ok(interleave(from_hosts, port));
        }

        let failed = |reason: String| ResolveError::LookupFailed { host: host.to_owned(), reason };
        let dns = self.dns.as_ref().map_err(|reason| failed(reason.clone()))?;
        match tokio::time::timeout(self.deadline, dns.lookup_ip(name)).await {
            Err(_) => Err(failed(format!("no answer within {} ms", self.deadline.as_millis()))),
            Ok(Ok(lookup)) => {
                let addresses = interleave(lookup.iter(), port);
                if addresses.is_empty() { Err(ResolveError::NoAddresses { host: host.to_owned() }) } else { Ok(addresses) }
            }
            Ok(Err(e)) if e.is_no_records_found() => Err(ResolveError::NoAddresses { host: host.to_owned() }),
            Ok(Err(e)) => Err(failed(e.to_string())),
        }
    }
}

fn nameservers_config(servers: &[SocketAddr]) -> ResolverConfig {
    let name_servers = servers
        .iter()
        .map(|server| {
            let mut udp = ConnectionConfig::udp();
            udp.port = server.port();
            let mut tcp = ConnectionConfig::tcp();
            tcp.port = server.port();
            NameServerConfig::new(server.ip(), true, vec![udp, tcp])
        })
        .collect();
    ResolverConfig::from_name_servers(name_servers)
}

fn read_hosts_file(path: &Path) -> io::Result<Hosts> {
    let file = std::fs::File::open(path)?;
    let mut hosts = Hosts::default();
    hosts.read_hosts_conf(file)?;
    Ok(hosts)
}

/// `127.0.0.1`, `[::1]` (the form of a JID domainpart, RFC 7622 §3.2) or `::1`.
fn ip_literal(host: &str) -> Option<IpAddr> {
    if let Some(inner) = host.strip_prefix('[').and_then(|rest| rest.strip_suffix(']')) {
        return inner.parse::<Ipv6Addr>().ok().map(IpAddr::V6);
    }
    host.parse().ok()
}

/// The two SRV services of a server-to-server connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Service {
    /// XEP-0368: `_xmpps-server._tcp`.
    DirectTls,
    /// RFC 6120 §3.2.1: `_xmpp-server._tcp`.
    StartTls,
}

impl Service {
    /// The absolute name to query, with its trailing dot.
    fn query_name(self, domain: &str) -> String {
        match self {
            Service::DirectTls => format!("_xmpps-server._tcp.{domain}."),
            Service::StartTls => format!("_xmpp-server._tcp.{domain}."),
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Service::DirectTls => "direct TLS",
            Service::StartTls => "STARTTLS",
        }
    }
}

/// One SRV record of either service.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SrvRecord {
    priority: u16,
    weight: u16,
    target: Target,
}

/// What the DNS said about one SRV name.
#[derive(Debug, Clone, PartialEq, Eq)]
enum SrvAnswer {
    Records(Vec<SrvRecord>),
    /// RFC 2782: "A Target of "." means that the service is decidedly not available at this
    /// domain."
    NotOffered,
    /// NXDOMAIN or no SRV record at the name: this domain does not publish this service.
    NoRecords(String),
    /// No answer to go by: SERVFAIL, REFUSED, timeout, no name server reachable.
    Failed(String),
}

/// The SRV records of an answer (which may also hold the CNAMEs that led to them).
fn srv_records(lookup: &Lookup) -> Vec<&SRV> {
    lookup
        .answers()
        .iter()
        .filter_map(|record| match &record.data {
            RData::SRV(srv) => Some(srv),
            _ => None,
        })
        .collect()
}

/// RFC 6120 §3.2.1 step 3: "if the result of the SRV lookup is a single resource record with a
/// Target of ".", i.e., the root domain, then the initiating entity MUST abort SRV processing".
/// Several "." records mean the same; a "." among real targets is no target and is skipped.
fn answer_from_srv(service: Service, records: Vec<&SRV>) -> SrvAnswer {
    if records.is_empty() {
        return SrvAnswer::NoRecords("no SRV records".into());
    }
    if records.iter().all(|srv| srv.target.is_root()) {
        return SrvAnswer::NotOffered;
    }
    let records = records
        .into_iter()
        .filter(|srv| !srv.target.is_root())
        .map(|srv| SrvRecord {
            priority: srv.priority,
            weight: srv.weight,
            target: Target {
                // DNS names compare without case; lowercase so that duplicates are found.
                host: srv.target.to_ascii().trim_end_matches('.').to_ascii_lowercase(),
                port: srv.port,
                direct_tls: service == Service::DirectTls,
            },
        })
        .collect();
    SrvAnswer::Records(records)
}

/// From the two answers to the targets, with the steps that explain them.
///
/// - Records of either service: those, both services mixed (XEP-0368 §3: "Both 'xmpp-' and
///   'xmpps-' records SHOULD be treated as the same record with regard to connection order as
///   specified by RFC 2782"). The other service's failure does not matter then (RFC 6120
///   §3.2.1 step 8: with an answer, no fallback).
/// - No records, and "." for either service: nothing to try. XEP-0368 §4, for "." on
///   xmpps: "The initiating party MUST NOT perform A/AAAA fallback"; RFC 6120 §3.2.1 step 3,
///   for "." on xmpp: abort.
/// - Otherwise (no such records, or no answer, for both): RFC 6120 §3.2.2, the domain itself on
///   port 5269 with STARTTLS. §3.2.1 step 9 asks this for "does not receive a response"; it is
///   also what a domain without SRV records needs.
fn plan(domain: &str, direct: SrvAnswer, starttls: SrvAnswer, random: &mut impl FnMut(u64) -> u64) -> Resolution {
    let mut steps = Vec::new();
    for (service, answer) in [(Service::DirectTls, &direct), (Service::StartTls, &starttls)] {
        let name = service.query_name(domain);
        steps.push(match answer {
            SrvAnswer::Records(records) => format!("{name}: {} SRV record(s) ({})", records.len(), service.describe()),
            SrvAnswer::NotOffered => format!("{name}: target \".\": {} is decidedly not offered", service.describe()),
            SrvAnswer::NoRecords(why) => format!("{name}: {why}"),
            SrvAnswer::Failed(why) => format!("{name}: lookup failed: {why}"),
        });
    }
    let not_offered = direct == SrvAnswer::NotOffered || starttls == SrvAnswer::NotOffered;
    let mut records = Vec::new();
    for answer in [direct, starttls] {
        if let SrvAnswer::Records(found) = answer {
            records.extend(found);
        }
    }

    if !records.is_empty() {
        let found = records.len();
        let distinct = distinct_records(records);
        if distinct.len() < found {
            steps.push(format!("{} duplicate record(s) (same host, port and TLS mode) dropped", found - distinct.len()));
        }
        if distinct.len() > MAX_TARGETS {
            steps.push(format!("{} distinct targets: only the first {MAX_TARGETS} are tried", distinct.len()));
        }
        let targets = order_srv_records(distinct, MAX_TARGETS, random);
        let order = targets.iter().map(Target::to_string).collect::<Vec<_>>().join(", ");
        steps.push(format!("order (RFC 2782 priority and weight, both kinds mixed): {order}"));
        return Resolution { targets, steps };
    }
    if not_offered {
        steps.push(format!(
            "no targets: {domain} says it offers no server-to-server service (SRV target \".\"), \
             so no fallback to {domain}:{XMPP_SERVER_PORT}"
        ));
        return Resolution { targets: Vec::new(), steps };
    }
    let target = Target { host: domain.to_owned(), port: XMPP_SERVER_PORT, direct_tls: false };
    steps.push(format!(
        "no SRV records found for {} or {}: falling back to {target}, RFC 6120 §3.2.2",
        Service::DirectTls.query_name(domain),
        Service::StartTls.query_name(domain),
    ));
    Resolution { targets: vec![target], steps }
}

/// Each (host, port, TLS mode) once, kept where it comes first: at its lowest priority, and
/// within one priority at its first record. Sorted by priority, lowest first.
fn distinct_records(mut records: Vec<SrvRecord>) -> Vec<SrvRecord> {
    records.sort_by_key(|record| record.priority); // stable: DNS order within a priority
    let mut seen = HashSet::new();
    records.retain(|record| seen.insert(record.target.clone()));
    records
}

/// RFC 2782's order of records sorted by priority (see `distinct_records`), up to `max`
/// targets. `random(sum)` returns a uniform number in `0..=sum`.
///
/// RFC 2782: "A client MUST attempt to contact the target host with the lowest-numbered
/// priority it can reach". Within a priority: "arrange all SRV RRs (that have not been ordered
/// yet) in any order, except that all those with weight 0 are placed at the beginning of the
/// list. Compute the sum of the weights of those RRs, and with each RR associate the running
/// sum in the selected order. Then choose a uniform random number between 0 and the sum
/// computed (inclusive), and select the RR whose running sum value is the first in the
/// selected order which is greater than or equal to the random number selected."
///
/// The "any order" puts direct TLS before STARTTLS (after the weight-0 rule), so that of two
/// records that otherwise tie, direct TLS comes first (XEP-0368 §3 lets the initiating party
/// prefer a kind; direct TLS saves round trips and cannot be stripped). Weights still decide
/// between records of different weights, as the operator set them.
///
/// At most `max` selections are made, each linear in its priority's records, so a zone with
/// thousands of records costs `max` passes over them.
fn order_srv_records(records: Vec<SrvRecord>, max: usize, random: &mut impl FnMut(u64) -> u64) -> Vec<Target> {
    let mut ordered = Vec::with_capacity(records.len().min(max));
    for same_priority in records.chunk_by(|a, b| a.priority == b.priority) {
        let mut unordered: Vec<&SrvRecord> = same_priority.iter().collect();
        unordered.sort_by_key(|record| (record.weight != 0, !record.target.direct_tls)); // stable
        while !unordered.is_empty() && ordered.len() < max {
            let sum: u64 = unordered.iter().map(|record| u64::from(record.weight)).sum();
            let chosen = random(sum).min(sum);
            let mut running = 0;
            let index = unordered
                .iter()
                .position(|record| {
                    running += u64::from(record.weight);
                    running >= chosen
                })
                .unwrap_or(0); // unreachable: the last running sum is `sum` ≥ `chosen`
            ordered.push(unordered.remove(index).target.clone());
        }
    }
    ordered
}

/// A uniform number in `0..=max` from the OS (the modulo bias is below 2⁻³² for the sums of
/// SRV weights); 0, the first record of RFC 2782's arrangement, if the OS has none to give.
fn system_random(max: u64) -> u64 {
    match (getrandom::u64(), max.checked_add(1)) {
        (Ok(n), Some(bound)) => n % bound,
        (Ok(n), None) => n,
        (Err(_), _) => 0,
    }
}

/// Each address once, IPv6 and IPv4 alternating, IPv6 first, each family in the order given;
/// at most [`MAX_ADDRESSES`]. RFC 8305 §4 (Happy Eyeballs): when the first address is IPv6,
/// "the first IPv4 address should be moved up in the list to be second in the list". We try
/// addresses one after the other, so with a broken family (a black-holed IPv6 route) every
/// second attempt still has a chance.
fn interleave(addresses: impl IntoIterator<Item = IpAddr>, port: u16) -> Vec<SocketAddr> {
    let mut seen = HashSet::new();
    let (mut v6, mut v4) = (Vec::new(), Vec::new());
    for ip in addresses {
        if seen.insert(ip) {
            if ip.is_ipv6() { v6.push(ip) } else { v4.push(ip) }
        }
    }
    let (mut v6, mut v4) = (v6.into_iter(), v4.into_iter());
    let mut interleaved = Vec::new();
    while interleaved.len() < MAX_ADDRESSES {
        match (v6.next(), v4.next()) {
            (None, None) => break,
            (a, b) => interleaved.extend(a.into_iter().chain(b)),
        }
    }
    interleaved.truncate(MAX_ADDRESSES);
    interleaved.into_iter().map(|ip| SocketAddr::new(ip, port)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(host: &str, port: u16, direct_tls: bool) -> Target {
        Target { host: host.into(), port, direct_tls }
    }

    fn record(priority: u16, weight: u16, host: &str, direct_tls: bool) -> SrvRecord {
        SrvRecord { priority, weight, target: target(host, 5269, direct_tls) }
    }

    fn hosts(targets: &[Target]) -> Vec<&str> {
        targets.iter().map(|t| t.host.as_str()).collect()
    }

    /// A random source that plays back `picks` (then 0) and records the sums it was asked for.
    struct Script {
        /// Reversed, to be popped.
        picks: Vec<u64>,
        sums: Vec<u64>,
    }

    impl Script {
        fn new(picks: &[u64]) -> Script {
            Script { picks: picks.iter().rev().copied().collect(), sums: Vec::new() }
        }
        fn next(&mut self, sum: u64) -> u64 {
            self.sums.push(sum);
            self.picks.pop().unwrap_or(0)
        }
    }

    fn order_with(records: Vec<SrvRecord>, picks: &[u64]) -> (Vec<Target>, Vec<u64>) {
        let mut script = Script::new(picks);
        let ordered = order_srv_records(distinct_records(records), MAX_TARGETS, &mut |sum| script.next(sum));
        (ordered, script.sums)
    }

    // ---- ordering (pure) ----

    #[test]
    fn lower_priority_comes_first_whatever_the_weights() {
        let records = vec![record(20, 100, "b", false), record(10, 0, "a", false), record(30, 65535, "c", true)];
        for pick in [0, 1, u64::MAX] {
            let ordered = order_srv_records(distinct_records(records.clone()), MAX_TARGETS, &mut |_| pick);
            assert_eq!(hosts(&ordered), ["a", "b", "c"], "pick {pick}");
        }
    }

    #[test]
    fn weighted_selection_follows_the_running_sums() {
        // Running sums 10, 40, 100 in this order (all weights non-zero, all STARTTLS).
        let records = vec![record(10, 10, "a", false), record(10, 30, "b", false), record(10, 60, "c", false)];
        // 50 → first running sum ≥ 50 is c (100). Then a, b: sums 10, 40; 10 → a. Then b.
        let (ordered, sums) = order_with(records.clone(), &[50, 10, 0]);
        assert_eq!(hosts(&ordered), ["c", "a", "b"]);
        assert_eq!(sums, [100, 40, 30]);
        // The bounds: a pick equal to a running sum selects that record, one more the next.
        assert_eq!(hosts(&order_with(records.clone(), &[11, 0]).0), ["b", "a", "c"]);
        assert_eq!(hosts(&order_with(records.clone(), &[10, 30]).0), ["a", "b", "c"]);
        assert_eq!(hosts(&order_with(records.clone(), &[10, 31]).0), ["a", "c", "b"]);
        // A random source that overshoots is clamped to the sum: the last record.
        assert_eq!(hosts(&order_with(records, &[1000]).0)[0], "c");
    }

    #[test]
    fn weight_zero_records_are_placed_first() {
        // DNS order puts the weight-5 record first; RFC 2782 arranges the weight-0 one first,
        // so a pick of 0 selects it, and any pick above 0 selects the weighted one.
        let records = vec![record(10, 5, "weighted", false), record(10, 0, "zero", false)];
        let ordered = order_srv_records(records.clone(), MAX_TARGETS, &mut |_| 0);
        assert_eq!(hosts(&ordered), ["zero", "weighted"]);
        assert_eq!(hosts(&order_with(records, &[1, 0]).0), ["weighted", "zero"]);
    }

    #[test]
    fn direct_tls_wins_a_tie() {
        // Same priority and weight, STARTTLS listed first by the DNS.
        for weight in [0, 10] {
            let records = vec![record(10, weight, "plain", false), record(10, weight, "tls", true)];
            let ordered = order_srv_records(records, MAX_TARGETS, &mut |sum| sum / 2);
            assert_eq!(ordered, [target("tls", 5269, true), target("plain", 5269, false)], "weight {weight}");
        }
        // …but not a lower priority: STARTTLS at 5 comes before direct TLS at 10.
        let records = vec![record(10, 0, "tls", true), record(5, 0, "plain", false)];
        let ordered = order_srv_records(distinct_records(records), MAX_TARGETS, &mut |_| 0);
        assert_eq!(hosts(&ordered), ["plain", "tls"]);
    }

    #[test]
    fn duplicates_are_tried_once_at_their_best_priority() {
        let records = vec![
            record(20, 0, "x.example", false),
            record(10, 0, "y.example", false),
            record(10, 0, "x.example", false),
            record(30, 0, "x.example", true), // other TLS mode: another target
            record(10, 0, "y.example", false),
        ];
        let distinct = distinct_records(records);
        let ordered = order_srv_records(distinct, MAX_TARGETS, &mut |_| 0);
        assert_eq!(ordered, [
            target("y.example", 5269, false),
            target("x.example", 5269, false),
            target("x.example", 5269, true)
        ]);
    }

    #[test]
    fn the_number_of_targets_is_capped() {
        let records: Vec<SrvRecord> = (0..5000u16).map(|i| record(i % 7, i, &format!("h{i}.example"), false)).collect();
        let (ordered, sums) = order_with(records, &[]);
        assert_eq!(ordered.len(), MAX_TARGETS);
        assert_eq!(sums.len(), MAX_TARGETS, "one selection per target, no more");
        // All from priority 0 (715 records there): the lowest priority comes first.
        assert!(ordered.iter().all(|t| t.host.trim_start_matches('h').trim_end_matches(".example").parse::<u16>().is_ok_and(|i| i % 7 == 0)));
    }

    #[test]
    fn a_single_dot_means_not_offered() {
        let root = SRV::new(0, 0, 0, Name::root());
        let real = SRV::new(10, 5, 5270, Name::from_ascii("XMPP.B.example.").expect("a name"));
        assert_eq!(answer_from_srv(Service::DirectTls, vec![&root]), SrvAnswer::NotOffered);
        assert_eq!(answer_from_srv(Service::DirectTls, vec![&root, &root]), SrvAnswer::NotOffered);
        // A "." among real targets is skipped; names come out lowercase, without the dot.
        assert_eq!(
            answer_from_srv(Service::DirectTls, vec![&root, &real]),
            SrvAnswer::Records(vec![SrvRecord { priority: 10, weight: 5, target: target("xmpp.b.example", 5270, true) }])
        );
        assert!(matches!(answer_from_srv(Service::StartTls, vec![]), SrvAnswer::NoRecords(_)));
    }

    fn some_records(host: &str, direct_tls: bool) -> SrvAnswer {
        SrvAnswer::Records(vec![record(10, 0, host, direct_tls)])
    }

    #[test]
    fn plan_decides_between_records_nothing_and_fallback() {
        let nx = || SrvAnswer::NoRecords("no such name (NXDOMAIN)".into());
        let servfail = || SrvAnswer::Failed("SERVFAIL".into());
        let fallback = vec![target("b.example", 5269, false)];
        let cases = [
            // (direct TLS, STARTTLS, expected targets)
            (SrvAnswer::NotOffered, SrvAnswer::NotOffered, vec![]),
            (SrvAnswer::NotOffered, nx(), vec![]),
            (nx(), SrvAnswer::NotOffered, vec![]),
            (SrvAnswer::NotOffered, servfail(), vec![]),
            (SrvAnswer::NotOffered, some_records("s.example", false), vec![target("s.example", 5269, false)]),
            (some_records("d.example", true), SrvAnswer::NotOffered, vec![target("d.example", 5269, true)]),
            (some_records("d.example", true), servfail(), vec![target("d.example", 5269, true)]),
            (nx(), nx(), fallback.clone()),
            (nx(), servfail(), fallback.clone()),
            (servfail(), servfail(), fallback.clone()),
        ];
        for (direct, starttls, expected) in cases {
            let what = format!("{direct:?} / {starttls:?}");
            let resolution = plan("b.example", direct, starttls, &mut |_| 0);
            assert_eq!(resolution.targets, expected, "{what}");
            assert!(resolution.steps.len() >= 3, "{what}: {:?}", resolution.steps);
        }
        let resolution = plan("b.example", nx(), servfail(), &mut |_| 0);
        assert!(resolution.steps[0].starts_with("_xmpps-server._tcp.b.example.: no such name"), "{:?}", resolution.steps);
        assert!(resolution.steps[1].contains("lookup failed: SERVFAIL"), "{:?}", resolution.steps);
        assert!(resolution.steps[2].contains("falling back to b.example:5269 (STARTTLS)"), "{:?}", resolution.steps);
        let resolution = plan("b.example", SrvAnswer::NotOffered, SrvAnswer::NotOffered, &mut |_| 0);
        assert!(resolution.steps[2].contains("no fallback"), "{:?}", resolution.steps);
    }

    #[test]
    fn plan_says_when_it_drops_and_caps() {
        let many = (0..40).map(|i| record(10, 1, &format!("h{}.example", i % 20), false)).collect();
        let resolution = plan("b.example", SrvAnswer::Records(many), SrvAnswer::NoRecords("none".into()), &mut |_| 0);
        assert_eq!(resolution.targets.len(), MAX_TARGETS);
        assert!(resolution.steps.iter().any(|s| s.starts_with("20 duplicate")), "{:?}", resolution.steps);
        assert!(resolution.steps.iter().any(|s| s.contains("only the first 16")), "{:?}", resolution.steps);
    }

    #[test]
    fn addresses_alternate_families_ipv6_first() {
        let ips: Vec<IpAddr> =
            ["2001:db8::1", "2001:db8::2", "192.0.2.1", "192.0.2.2", "192.0.2.3", "2001:db8::1"].map(|s| s.parse().expect("an IP")).into();
        let ordered: Vec<String> = interleave(ips, 5269).iter().map(SocketAddr::to_string).collect();
        assert_eq!(ordered, ["[2001:db8::1]:5269", "192.0.2.1:5269", "[2001:db8::2]:5269", "192.0.2.2:5269", "192.0.2.3:5269"]);
        let flood = (0..=255u8).map(|i| IpAddr::V4(Ipv4Addr::new(192, 0, 2, i)));
        assert_eq!(interleave(flood, 1).len(), MAX_ADDRESSES);
    }

    #[test]
    fn ip_literals_are_recognized() {
        assert_eq!(ip_literal("[::1]"), Some(IpAddr::V6(Ipv6Addr::LOCALHOST)));
        assert_eq!(ip_literal("127.0.0.1"), Some(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        assert_eq!(ip_literal("[127.0.0.1]"), None);
        assert_eq!(ip_literal("b.example"), None);
        assert_eq!(target("::1", 5269, false).to_string(), "[::1]:5269 (STARTTLS)");
    }

    // ---- against a DNS server on loopback ----

    mod dns_server {
        use std::net::SocketAddr;
        use std::sync::Arc;
        use std::sync::atomic::{AtomicUsize, Ordering};

        use hickory_proto::op::{Message, ResponseCode};
        use hickory_proto::rr::rdata::{A, AAAA, SRV};
        use hickory_proto::rr::{Name, RData, Record};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        use tokio::net::{TcpListener, UdpSocket};
        use tokio::task::JoinHandle;

        /// The records a test server answers with. Names it has no record for are NXDOMAIN,
        /// names with records of other types get an empty NOERROR answer.
        #[derive(Default)]
        pub struct Zone {
            records: Vec<Record>,
            servfail: Vec<Name>,
        }

        fn name(s: &str) -> Name {
            Name::from_ascii(s).expect("a test name")
        }

        impl Zone {
            pub fn srv(mut self, owner: &str, priority: u16, weight: u16, port: u16, target: &str) -> Zone {
                self.records.push(Record::from_rdata(name(owner), 60, RData::SRV(SRV::new(priority, weight, port, name(target)))));
                self
            }
            pub fn a(mut self, owner: &str, ip: &str) -> Zone {
                self.records.push(Record::from_rdata(name(owner), 60, RData::A(A(ip.parse().expect("IPv4")))));
                self
            }
            pub fn aaaa(mut self, owner: &str, ip: &str) -> Zone {
                self.records.push(Record::from_rdata(name(owner), 60, RData::AAAA(AAAA(ip.parse().expect("IPv6")))));
                self
            }
            pub fn servfail(mut self, owner: &str) -> Zone {
                self.servfail.push(name(owner));
                self
            }

            fn answer(&self, request: &[u8]) -> Option<Vec<u8>> {
                let request = Message::from_vec(request).ok()?;
                let query = request.queries.first()?.clone();
                let mut response = Message::response(request.id, request.op_code);
                response.metadata.recursion_desired = request.recursion_desired;
                response.metadata.recursion_available = true;
                response.edns = request.edns.clone();
                response.add_query(query.clone());
                // Name's equality ignores case and the trailing dot.
                if self.servfail.contains(&query.name) {
                    response.metadata.response_code = ResponseCode::ServFail;
                } else {
                    let at_name: Vec<&Record> = self.records.iter().filter(|r| r.name == query.name).collect();
                    if at_name.is_empty() {
                        response.metadata.response_code = ResponseCode::NXDomain;
                    }
                    response.add_answers(at_name.into_iter().filter(|r| r.record_type() == query.query_type).cloned());
                }
                response.to_vec().ok()
            }
        }

        /// A DNS server on 127.0.0.1, UDP and TCP on one port, until dropped.
        pub struct Server {
            pub addr: SocketAddr,
            queries: Arc<AtomicUsize>,
            tasks: Vec<JoinHandle<()>>,
        }

        impl Drop for Server {
            fn drop(&mut self) {
                for task in &self.tasks {
                    task.abort();
                }
            }
        }

        impl Server {
            /// How many queries it has received.
            pub fn queries(&self) -> usize {
                self.queries.load(Ordering::SeqCst)
            }

            pub async fn start(zone: Zone) -> Server {
                let zone = Arc::new(zone);
                let queries = Arc::new(AtomicUsize::new(0));
                let (udp, tcp) = bind_pair().await;
                let addr = udp.local_addr().expect("bound");
                let udp_task = {
                    let (zone, queries) = (zone.clone(), queries.clone());
                    tokio::spawn(async move {
                        let mut buf = vec![0u8; 4096];
                        while let Ok((len, peer)) = udp.recv_from(&mut buf).await {
                            queries.fetch_add(1, Ordering::SeqCst);
                            if let Some(reply) = zone.answer(&buf[..len]) {
                                let _ = udp.send_to(&reply, peer).await;
                            }
                        }
                    })
                };
                let tcp_task = {
                    let (zone, queries) = (zone.clone(), queries.clone());
                    tokio::spawn(async move {
                        while let Ok((mut stream, _)) = tcp.accept().await {
                            let (zone, queries) = (zone.clone(), queries.clone());
                            // Ends when the resolver closes the connection, or with the runtime.
                            tokio::spawn(async move {
                                while let Ok(len) = stream.read_u16().await {
                                    let mut request = vec![0u8; usize::from(len)];
                                    if stream.read_exact(&mut request).await.is_err() {
                                        return;
                                    }
                                    queries.fetch_add(1, Ordering::SeqCst);
                                    let Some(reply) = zone.answer(&request) else { return };
                                    let Ok(reply_len) = u16::try_from(reply.len()) else { return };
                                    if stream.write_u16(reply_len).await.is_err() || stream.write_all(&reply).await.is_err() {
                                        return;
                                    }
                                }
                            });
                        }
                    })
                };
                Server { addr, queries, tasks: vec![udp_task, tcp_task] }
            }
        }

        /// A UDP socket and a TCP listener on the same free port.
        pub async fn bind_pair() -> (UdpSocket, TcpListener) {
            for _ in 0..20 {
                let udp = UdpSocket::bind("127.0.0.1:0").await.expect("a UDP port on loopback");
                let addr = udp.local_addr().expect("bound");
                if let Ok(tcp) = TcpListener::bind(addr).await {
                    return (udp, tcp);
                }
            }
            panic!("no port free for both UDP and TCP on 127.0.0.1");
        }
    }

    use dns_server::{Server, Zone};
    use std::time::Instant;
    use tokio::time::timeout;

    /// Every test's wait on the resolver, well above the resolver's own bounds.
    const TEST_BOUND: Duration = Duration::from_secs(20);

    async fn targets_of(resolver: &Resolver, domain: &str) -> Resolution {
        timeout(TEST_BOUND, resolver.targets(domain)).await.expect("resolution ends in time")
    }

    #[tokio::test]
    async fn both_kinds_are_merged() {
        let server = Server::start(
            Zone::default()
                .srv("_xmpps-server._tcp.b.example.", 10, 0, 5270, "tls.b.example.")
                .srv("_xmpp-server._tcp.b.example.", 20, 0, 5269, "backup.b.example.")
                .srv("_xmpp-server._tcp.b.example.", 10, 0, 5269, "plain.b.example."),
        )
        .await;
        let resolver = Resolver::with_nameservers(&[server.addr]);
        let resolution = targets_of(&resolver, "b.example").await;
        assert_eq!(
            resolution.targets,
            [target("tls.b.example", 5270, true), target("plain.b.example", 5269, false), target("backup.b.example", 5269, false)],
            "{:?}",
            resolution.steps
        );
        assert_eq!(server.queries(), 2, "one query per SRV name");
    }

    #[tokio::test]
    async fn only_starttls_records() {
        let server = Server::start(Zone::default().srv("_xmpp-server._tcp.b.example.", 5, 1, 5299, "xmpp.b.example.")).await;
        let resolution = targets_of(&Resolver::with_nameservers(&[server.addr]), "b.example").await;
        assert_eq!(resolution.targets, [target("xmpp.b.example", 5299, false)], "{:?}", resolution.steps);
        assert!(resolution.steps[0].contains("NXDOMAIN"), "{:?}", resolution.steps);
    }

    #[tokio::test]
    async fn nxdomain_falls_back_to_the_domain() {
        // The domain exists (it has an address) but publishes no SRV records.
        let server = Server::start(Zone::default().a("b.example.", "192.0.2.1")).await;
        let resolution = targets_of(&Resolver::with_nameservers(&[server.addr]), "b.example").await;
        assert_eq!(resolution.targets, [target("b.example", 5269, false)]);
        assert!(resolution.steps.last().is_some_and(|s| s.contains("falling back to b.example:5269")), "{:?}", resolution.steps);
    }

    #[tokio::test]
    async fn servfail_falls_back_to_the_domain() {
        let server = Server::start(
            Zone::default().servfail("_xmpps-server._tcp.b.example.").servfail("_xmpp-server._tcp.b.example."),
        )
        .await;
        let resolution = targets_of(&Resolver::with_nameservers(&[server.addr]), "b.example").await;
        assert_eq!(resolution.targets, [target("b.example", 5269, false)], "{:?}", resolution.steps);
        assert!(resolution.steps[0].contains("lookup failed"), "{:?}", resolution.steps);
        assert!(resolution.steps[1].contains("lookup failed"), "{:?}", resolution.steps);
    }

    #[tokio::test]
    async fn servfail_for_one_kind_keeps_the_other_kinds_records() {
        let server = Server::start(
            Zone::default()
                .servfail("_xmpp-server._tcp.b.example.")
                .srv("_xmpps-server._tcp.b.example.", 0, 0, 443, "tls.b.example."),
        )
        .await;
        let resolution = targets_of(&Resolver::with_nameservers(&[server.addr]), "b.example").await;
        assert_eq!(resolution.targets, [target("tls.b.example", 443, true)], "{:?}", resolution.steps);
    }

    #[tokio::test]
    async fn dot_for_both_kinds_means_no_targets() {
        let server = Server::start(
            Zone::default()
                .srv("_xmpps-server._tcp.b.example.", 0, 0, 0, ".")
                .srv("_xmpp-server._tcp.b.example.", 0, 0, 0, ".")
                .a("b.example.", "192.0.2.1"),
        )
        .await;
        let resolution = targets_of(&Resolver::with_nameservers(&[server.addr]), "b.example").await;
        assert!(resolution.targets.is_empty(), "{:?}", resolution.steps);
        assert!(resolution.steps.iter().any(|s| s.contains("no fallback")), "{:?}", resolution.steps);
    }

    #[tokio::test]
    async fn dot_for_direct_tls_only_uses_starttls_records() {
        let server = Server::start(
            Zone::default()
                .srv("_xmpps-server._tcp.b.example.", 0, 0, 0, ".")
                .srv("_xmpp-server._tcp.b.example.", 10, 0, 5269, "xmpp.b.example."),
        )
        .await;
        let resolution = targets_of(&Resolver::with_nameservers(&[server.addr]), "b.example").await;
        assert_eq!(resolution.targets, [target("xmpp.b.example", 5269, false)], "{:?}", resolution.steps);
    }

    #[tokio::test]
    async fn ip_literals_are_not_looked_up() {
        let server = Server::start(Zone::default()).await;
        let resolver = Resolver::with_nameservers(&[server.addr]);
        let resolution = targets_of(&resolver, "[::1]").await;
        assert_eq!(resolution.targets, [target("::1", 5269, false)]);
        let resolution = targets_of(&resolver, "127.0.0.1").await;
        assert_eq!(resolution.targets, [target("127.0.0.1", 5269, false)]);
        let addresses = timeout(TEST_BOUND, resolver.addresses("::1", 5269)).await.expect("in time");
        assert_eq!(addresses, Ok(vec!["[::1]:5269".parse().expect("an address")]));
        assert_eq!(server.queries(), 0);
    }

    #[tokio::test]
    async fn addresses_are_the_a_and_aaaa_answers() {
        let server = Server::start(
            Zone::default()
                .a("xmpp.b.example.", "192.0.2.1")
                .a("xmpp.b.example.", "192.0.2.2")
                .aaaa("xmpp.b.example.", "2001:db8::1")
                .a("v4only.b.example.", "192.0.2.9"),
        )
        .await;
        let resolver = Resolver::with_nameservers(&[server.addr]);
        let addresses = timeout(TEST_BOUND, resolver.addresses("xmpp.b.example", 5270)).await.expect("in time");
        let expected: Vec<SocketAddr> =
            ["[2001:db8::1]:5270", "192.0.2.1:5270", "192.0.2.2:5270"].iter().map(|s| s.parse().expect("an address")).collect();
        assert_eq!(addresses, Ok(expected));
        let addresses = timeout(TEST_BOUND, resolver.addresses("v4only.b.example", 1)).await.expect("in time");
        assert_eq!(addresses, Ok(vec!["192.0.2.9:1".parse().expect("an address")]));
        let missing = timeout(TEST_BOUND, resolver.addresses("nowhere.b.example", 5269)).await.expect("in time");
        assert_eq!(missing, Err(ResolveError::NoAddresses { host: "nowhere.b.example".into() }));
    }

    #[tokio::test]
    async fn the_hosts_file_answers_before_dns() {
        let server = Server::start(Zone::default().a("peer.test.", "192.0.2.99")).await;
        let mut file = tempfile::NamedTempFile::new().expect("a temporary file");
        std::io::Write::write_all(&mut file, b"# test network\n10.0.0.7 peer.test other.test\nfd00::7 peer.test\n").expect("written");
        let resolver = Resolver::with_nameservers(&[server.addr]).with_hosts_file(file.path()).expect("a hosts file");
        let addresses = timeout(TEST_BOUND, resolver.addresses("peer.test", 5269)).await.expect("in time");
        let expected: Vec<SocketAddr> = ["[fd00::7]:5269", "10.0.0.7:5269"].iter().map(|s| s.parse().expect("an address")).collect();
        assert_eq!(addresses, Ok(expected));
        let other = timeout(TEST_BOUND, resolver.addresses("other.test", 1)).await.expect("in time");
        assert_eq!(other, Ok(vec!["10.0.0.7:1".parse().expect("an address")]));
        assert_eq!(server.queries(), 0, "a name in the hosts file is not asked of DNS, not even for AAAA");
    }

    #[tokio::test]
    async fn from_system_uses_the_system_hosts_file() {
        // Debian's /etc/hosts always names localhost; found there, no DNS query leaves the host.
        let resolver = Resolver::from_system();
        let addresses = timeout(TEST_BOUND, resolver.addresses("localhost", 5269)).await.expect("in time").expect("addresses");
        assert!(!addresses.is_empty() && addresses.iter().all(|a| a.ip().is_loopback() && a.port() == 5269), "{addresses:?}");
    }

    /// A name server that receives queries and never answers, over UDP or TCP (the listener
    /// is never accepted from: connections complete in the kernel's backlog, then hang).
    async fn silent_server() -> (tokio::net::UdpSocket, tokio::net::TcpListener) {
        dns_server::bind_pair().await
    }

    #[tokio::test]
    async fn a_silent_server_times_out_into_the_fallback() {
        let (silent, _tcp) = silent_server().await;
        let mut options = ResolverOpts::default();
        options.timeout = Duration::from_millis(200);
        options.attempts = 1;
        let config = nameservers_config(&[silent.local_addr().expect("bound")]);
        let resolver = Resolver::build(config, options, Hosts::default());
        let started = Instant::now();
        let resolution = targets_of(&resolver, "b.example").await;
        // hickory's own timeout ended it: 200 ms, once more, both names at once.
        assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
        assert_eq!(resolution.targets, [target("b.example", 5269, false)], "{:?}", resolution.steps);
        assert!(resolution.steps[0].contains("lookup failed"), "{:?}", resolution.steps);
    }

    #[tokio::test]
    async fn the_deadline_bounds_what_hickory_would_wait() {
        let (silent, _tcp) = silent_server().await;
        // hickory would wait 3 s per query, more with the retry; the deadline stops it first.
        let mut resolver = Resolver::with_nameservers(&[silent.local_addr().expect("bound")]);
        resolver.deadline = Duration::from_millis(300);
        let started = Instant::now();
        let resolution = targets_of(&resolver, "b.example").await;
        let addresses = timeout(TEST_BOUND, resolver.addresses("xmpp.b.example", 5269)).await.expect("in time");
        assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
        assert_eq!(resolution.targets, [target("b.example", 5269, false)]);
        assert!(resolution.steps[0].contains("no answer within 300 ms"), "{:?}", resolution.steps);
        assert!(matches!(addresses, Err(ResolveError::LookupFailed { .. })), "{addresses:?}");
    }
}

//! Throttling failed authentication (XEP-0205 §3, "limiting the number of authentication
//! attempts"; RFC 6120 §6.4.5 covers one stream), per source address and per account,
//! shared by every connection.
//!
//! Each limit is a GCRA (generic cell rate algorithm, the virtual-scheduling form of a leaky
//! bucket): `failures` per `window`, refilled evenly, one failure every `window / failures`.
//! A key is over its limit while its theoretical arrival time (TAT) lies more than
//! `window - interval` ahead of now; the caller then refuses the attempt without checking the
//! password, and does not charge it (so a blocked key recovers on schedule).
//!
//! When an attempt is charged differs between the two keys. An account is charged when the
//! attempt is admitted, before its password is checked, and given the charge back if it was
//! no failure (a success, a protocol error): so the account limit holds exactly however many
//! guesses run at once (twenty connections guessing in parallel get as many checks as one
//! connection guessing in turn), and an account's owner seldom logs in from many places in
//! the same instant. An address is charged when an attempt fails: many legitimate logins can
//! come from one address at once (a NAT, a company's gateway after a network blip), and must
//! not be refused for being many. Attempts from one address that passed the check at once
//! and failed are all charged, which pushes its TAT further out: a burst beyond the limit is
//! paid back by a longer block, and the long-run rate stays at `failures / window`.

//! Keys: the IP address (an IPv6 client controls at least a /64, so the /64 is the key; an
//! IPv4-mapped address counts as IPv4), and the account as a keyed 64-bit hash of the
//! normalised bare JID (fixed size whatever the username; the process-random key makes
//! deliberate collisions impractical). Unknown accounts are counted like real ones: otherwise
//! the throttle itself would tell which accounts exist.
//!
//! The per-account limit lets anyone keep an account's owner out by failing on purpose, which
//! is why XEP-0205 §3 advises against it. So an address from which the account logged in
//! successfully (within `KNOWN_FOR`, in this process) is exempt from that account's limit:
//! only its own per-address limit applies to it. The owner's usual addresses keep working
//! while an attacker elsewhere is held at the account limit.
//!
//! Memory is bounded: an entry whose TAT has passed is the same as no entry and is pruned;
//! each table holds at most `MAX_KEYS` entries. When a table is full of live entries, new keys
//! are not tracked by that table (the other one still applies) and a warning is logged: failing
//! open for a new key beats refusing logins to everyone.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use jid::BareJid;

use crate::config::AuthConfig;

/// Entries per table (about 40 bytes each).
const MAX_KEYS: usize = 100_000;

/// How long a successful login exempts its address from the account's limit.
const KNOWN_FOR: Duration = Duration::from_secs(30 * 24 * 3600);

/// Shortest time between two prunes of a full table (a prune walks the whole table).
const PRUNE_PAUSE: Duration = Duration::from_secs(1);

/// The throttle key of a source address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IpKey {
    V4(u32),
    /// The first 64 bits: the network one IPv6 subscriber usually gets.
    V6(u64),
}

impl IpKey {
    pub fn of(ip: IpAddr) -> IpKey {
        match ip {
            IpAddr::V4(v4) => IpKey::V4(v4.into()),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => IpKey::V4(v4.into()),
                None => IpKey::V6((u128::from(v6) >> 64) as u64),
            },
        }
    }
}

impl std::fmt::Display for IpKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            IpKey::V4(a) => write!(f, "{}", std::net::Ipv4Addr::from(a)),
            IpKey::V6(prefix) => write!(f, "{}/64", std::net::Ipv6Addr::from(u128::from(prefix) << 64)),
        }
    }
}

/// One admitted attempt (see [`Throttle::admit`]), to be settled by
/// [`Throttle::failed`], [`Throttle::succeeded`] or [`Throttle::release`].
#[derive(Debug)]
#[must_use = "an attempt is settled as failed, succeeded or released"]
pub struct Admission {
    ip: IpKey,
    /// The account charged, if one was.
    account: Option<u64>,
}

pub struct Throttle {
    ip: Option<Limiter<IpKey>>,
    account: Option<Limiter<u64>>,
    /// (account, address) pairs that logged in successfully, and when they last did.
    known: Mutex<HashMap<(u64, IpKey), Instant>>,
    hasher: RandomState,
}

impl Throttle {
    pub fn new(config: &AuthConfig) -> Throttle {
        Throttle {
            ip: Limiter::new(config.failures_per_ip, Duration::from_secs(config.ip_window), "ip"),
            account: Limiter::new(config.failures_per_account, Duration::from_secs(config.account_window), "account"),
            known: Mutex::new(HashMap::new()),
            hasher: RandomState::new(),
        }
    }

    /// How long `ip` must wait before a password is checked for it again, if it is over its limit.
    pub fn ip_blocked(&self, ip: IpAddr, now: Instant) -> Option<Duration> {
        self.ip.as_ref()?.blocked(&IpKey::of(ip), now)
    }

    /// The same for an account (whether it exists or not), unless `ip` is one the account
    /// logged in from before.
    pub fn account_blocked(&self, account: &BareJid, ip: IpAddr, now: Instant) -> Option<Duration> {
        let limiter = self.account.as_ref()?;
        let key = self.account_key(account);
        if self.is_known(key, IpKey::of(ip), now) {
            return None;
        }
        limiter.blocked(&key, now)
    }

    fn is_known(&self, account: u64, ip: IpKey, now: Instant) -> bool {
        let known = self.known.lock().unwrap_or_else(|p| p.into_inner());
        known.get(&(account, ip)).is_some_and(|&at| now.saturating_duration_since(at) < KNOWN_FOR)
    }

    /// Admit an attempt from `ip` for `account` (if the username named an account on our
    /// domain), unless the address or the account is over its limit (then the wait). The
    /// account is charged now (not when the attempt comes from an address the account logged
    /// in from before); the address only if the attempt fails. The attempt then fails
    /// ([`Throttle::failed`]) or is given back ([`Throttle::succeeded`], [`Throttle::release`]).
    pub fn admit(&self, ip: IpAddr, account: Option<&BareJid>, now: Instant) -> Result<Admission, Duration> {
        let ip_key = IpKey::of(ip);
        if let Some(wait) = self.ip.as_ref().and_then(|l| l.blocked(&ip_key, now)) {
            return Err(wait);
        }
        let mut admission = Admission { ip: ip_key, account: None };
        if let (Some(limiter), Some(account)) = (&self.account, account) {
            let key = self.account_key(account);
            if !self.is_known(key, ip_key, now) {
                if limiter.admit(key, now)? {
                    tracing::warn!(
                        target: "starling::auth",
                        "authentication throttled: account={:?} failures={} window={}s",
                        account.as_str(),
                        limiter.failures,
                        limiter.window.as_secs()
                    );
                }
                admission.account = Some(key);
            }
        }
        Ok(admission)
    }

    /// The attempt failed (a wrong password, an unknown account): the account keeps its
    /// charge and the address is charged.
    pub fn failed(&self, admission: Admission, now: Instant) {
        if let Some(limiter) = &self.ip
            && limiter.charge(admission.ip, now)
        {
            tracing::warn!(
                target: "starling::auth",
                "authentication throttled: ip={} failures={} window={}s",
                admission.ip,
                limiter.failures,
                limiter.window.as_secs()
            );
        }
    }

    /// The attempt was not a failed authentication (a protocol error, a lost connection):
    /// give its charge back.
    pub fn release(&self, admission: Admission) {
        if let (Some(limiter), Some(key)) = (&self.account, admission.account) {
            limiter.refund(&key);
        }
    }

    /// The attempt succeeded: its charge is given back, and `ip` is remembered as one
    /// `account` logs in from.
    pub fn succeeded(&self, admission: Admission, ip: IpAddr, account: &BareJid, now: Instant) {
        self.release(admission);
        if self.account.is_none() {
            return;
        }
        let pair = (self.account_key(account), IpKey::of(ip));
        let mut known = self.known.lock().unwrap_or_else(|p| p.into_inner());
        if !known.contains_key(&pair) && known.len() >= MAX_KEYS {
            known.retain(|_, at| now.saturating_duration_since(*at) < KNOWN_FOR);
            if known.len() >= MAX_KEYS {
                // Without an exemption the account limit still applies: the safe side.
                return;
            }
        }
        known.insert(pair, now);
    }

    fn account_key(&self, account: &BareJid) -> u64 {
        self.hasher.hash_one(account.as_str())
    }
}

struct Limiter<K> {
    failures: u32,
    window: Duration,
    /// One failure's cost: `window / failures`.
    interval: Duration,
    /// How far ahead the TAT may be for an attempt to go ahead: `window - interval`.
    tolerance: Duration,
    /// "ip" or "account", for the log.
    name: &'static str,
    table: Mutex<Table<K>>,
}

struct Table<K> {
    entries: HashMap<K, Entry>,
    /// The latest time an attempt was counted at. Callers read the clock before they wait
    /// for the lock, so an attempt may arrive with a time earlier than one already counted;
    /// counted at that earlier time it would find the key's slots taken by attempts made
    /// after it (twenty parallel guesses got two checks, not three).
    latest: Instant,
    last_prune: Instant,
    /// When the table was last reported full (once per window).
    full_warned: Option<Instant>,
}

impl<K> Table<K> {
    /// `now`, or the latest time already counted if that is later: time never runs back.
    fn monotonic(&mut self, now: Instant) -> Instant {
        self.latest = self.latest.max(now);
        self.latest
    }
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    tat: Instant,
    /// Until when the key's going over its limit is not logged again.
    quiet_until: Instant,
}

impl<K: std::hash::Hash + Eq + Copy> Limiter<K> {
    fn new(failures: u32, window: Duration, name: &'static str) -> Option<Limiter<K>> {
        if failures == 0 {
            return None;
        }
        let interval = window / failures;
        Some(Limiter {
            failures,
            window,
            interval,
            tolerance: window - interval,
            name,
            table: Mutex::new(Table { entries: HashMap::new(), latest: Instant::now(), last_prune: Instant::now(), full_warned: None }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table<K>> {
        // The critical sections cannot panic half-way through an update; a poisoned lock
        // still holds a consistent table.
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn wait(&self, entry: &Entry, now: Instant) -> Option<Duration> {
        let allowed_at = entry.tat.checked_sub(self.tolerance)?;
        (allowed_at > now).then(|| allowed_at - now)
    }

    fn blocked(&self, key: &K, now: Instant) -> Option<Duration> {
        let table = self.lock();
        self.wait(table.entries.get(key)?, now)
    }

    /// Charge one failure unless the key is over its limit (then the wait); `Ok(true)` if
    /// this charge reached the limit and should be logged. The check and the charge are one
    /// step, so that attempts admitted at the same moment cannot all pass the check first.
    fn admit(&self, key: K, now: Instant) -> Result<bool, Duration> {
        let mut table = self.lock();
        let now = table.monotonic(now);
        if let Some(wait) = table.entries.get(&key).and_then(|e| self.wait(e, now)) {
            return Err(wait);
        }
        Ok(self.charge_locked(&mut table, key, now))
    }

    /// Charge one failure whatever the key's state; true if it just went over its limit.
    fn charge(&self, key: K, now: Instant) -> bool {
        let mut table = self.lock();
        let now = table.monotonic(now);
        self.charge_locked(&mut table, key, now)
    }

    fn charge_locked(&self, table: &mut Table<K>, key: K, now: Instant) -> bool {
        if !table.entries.contains_key(&key) && !self.make_room(table, now) {
            return false;
        }
        let entry = table.entries.entry(key).or_insert(Entry { tat: now, quiet_until: now });
        entry.tat = entry.tat.max(now) + self.interval;
        if self.wait(entry, now).is_some() && entry.quiet_until <= now {
            entry.quiet_until = now + self.window;
            return true;
        }
        false
    }

    /// Before a new key goes in: prune drained entries now and then, and say whether there
    /// is room (a table full of live entries stops tracking new keys, with a warning once
    /// per window).
    fn make_room(&self, table: &mut Table<K>, now: Instant) -> bool {
        let since = now.saturating_duration_since(table.last_prune);
        if since >= self.window || (table.entries.len() >= MAX_KEYS && since >= PRUNE_PAUSE) {
            table.entries.retain(|_, e| e.tat > now);
            table.last_prune = now;
        }
        if table.entries.len() < MAX_KEYS {
            return true;
        }
        if table.full_warned.is_none_or(|t| now.saturating_duration_since(t) >= self.window) {
            table.full_warned = Some(now);
            tracing::warn!(
                target: "starling::auth",
                "authentication throttle: the {} table is full ({MAX_KEYS} keys); new keys are not tracked",
                self.name
            );
        }
        false
    }

    /// Give back one charge.
    fn refund(&self, key: &K) {
        if let Some(entry) = self.lock().entries.get_mut(key) {
            entry.tat = entry.tat.checked_sub(self.interval).unwrap_or(entry.tat);
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(per_ip: u32, ip_window: u64, per_account: u32, account_window: u64) -> AuthConfig {
        AuthConfig {
            failures_per_ip: per_ip,
            ip_window,
            failures_per_account: per_account,
            account_window,
            ..crate::config::Config::default().auth
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// A failed attempt: admitted, then settled as failed. False if it was refused.
    fn fail(t: &Throttle, from: IpAddr, account: Option<&BareJid>, now: Instant) -> bool {
        match t.admit(from, account, now) {
            Ok(admission) => {
                t.failed(admission, now);
                true
            }
            Err(_) => false,
        }
    }

    #[test]
    fn n_failures_per_window_then_one_per_interval() {
        let t = Throttle::new(&config(10, 60, 0, 1));
        let start = Instant::now();
        let a = ip("203.0.113.5");
        for i in 0..10 {
            assert_eq!(t.ip_blocked(a, start), None, "failure {i} is within the burst");
            assert!(fail(&t, a, None, start));
        }
        // The 11th attempt waits for one refill: 60 s / 10 = 6 s.
        assert_eq!(t.ip_blocked(a, start), Some(Duration::from_secs(6)));
        assert_eq!(t.admit(a, None, start).err(), Some(Duration::from_secs(6)), "refused, and not charged");
        assert_eq!(t.ip_blocked(a, start + Duration::from_secs(5)), Some(Duration::from_secs(1)));
        assert_eq!(t.ip_blocked(a, start + Duration::from_secs(6)), None);
        // One more failure then: blocked for another interval.
        assert!(fail(&t, a, None, start + Duration::from_secs(6)));
        assert_eq!(t.ip_blocked(a, start + Duration::from_secs(6)), Some(Duration::from_secs(6)));
        // After a whole window of quiet the full burst is back.
        let later = start + Duration::from_secs(12 + 60);
        for _ in 0..10 {
            assert!(fail(&t, a, None, later));
        }
        assert!(t.ip_blocked(a, later).is_some());
        // Other addresses are not affected.
        assert_eq!(t.ip_blocked(ip("203.0.113.6"), later), None);
    }

    /// Parallel attempts read the clock before they take the lock, so one may come with a
    /// time earlier than attempts already counted: it still gets its place.
    #[test]
    fn an_attempt_timed_before_those_already_counted_is_admitted() {
        let t = Throttle::new(&config(0, 60, 3, 600));
        let alice = BareJid::new("alice@example.org").unwrap();
        let early = Instant::now();
        let late = early + Duration::from_millis(3);
        assert!(t.admit(ip("192.0.2.1"), Some(&alice), late).is_ok());
        assert!(t.admit(ip("192.0.2.2"), Some(&alice), late).is_ok());
        assert!(t.admit(ip("192.0.2.3"), Some(&alice), early).is_ok(), "the third of three");
        assert!(t.admit(ip("192.0.2.4"), Some(&alice), late).is_err(), "the fourth");
    }

    /// Attempts running at once are charged when admitted: the limit holds exactly, and an
    /// attempt given back (a success, a protocol error) frees its place.
    #[test]
    fn parallel_attempts_beyond_the_limit_are_refused() {
        let t = Throttle::new(&config(10, 60, 3, 600));
        let now = Instant::now();
        // Per account, from many addresses at once: three are checked.
        let alice = BareJid::new("alice@example.org").unwrap();
        let admitted: Vec<Admission> =
            (0..20).filter_map(|i| t.admit(ip(&format!("192.0.2.{i}")), Some(&alice), now).ok()).collect();
        assert_eq!(admitted.len(), 3);
        // One of them succeeds (or ends without a verdict): its place is free again.
        let mut admitted = admitted.into_iter();
        t.release(admitted.next().unwrap());
        assert!(t.admit(ip("192.0.2.50"), Some(&alice), now).is_ok(), "a released attempt frees a place");
        // Many logins from one address at once (a NAT) are all admitted; failures from it
        // are charged as they happen, and an overshoot is paid back by a longer block.
        let a = ip("198.51.100.1");
        let many: Vec<Admission> = (0..30).filter_map(|_| t.admit(a, None, now).ok()).collect();
        assert_eq!(many.len(), 30);
        for admission in many {
            t.failed(admission, now);
        }
        assert_eq!(t.ip_blocked(a, now), Some(Duration::from_secs(6 * 21)));
    }

    #[test]
    fn ipv6_by_64_and_mapped_v4() {
        let t = Throttle::new(&config(2, 60, 0, 1));
        let now = Instant::now();
        assert!(fail(&t, ip("2001:db8:1:2::1"), None, now));
        assert!(fail(&t, ip("2001:db8:1:2:ffff::9"), None, now));
        assert!(t.ip_blocked(ip("2001:db8:1:2:abcd::1"), now).is_some(), "same /64");
        assert!(t.ip_blocked(ip("2001:db8:1:3::1"), now).is_none(), "another /64");
        assert!(fail(&t, ip("::ffff:192.0.2.7"), None, now));
        assert!(fail(&t, ip("192.0.2.7"), None, now));
        assert!(t.ip_blocked(ip("192.0.2.7"), now).is_some(), "an IPv4-mapped address is the IPv4 address");
        assert_eq!(IpKey::of(ip("2001:db8:1:2::1")).to_string(), "2001:db8:1:2::/64");
        assert_eq!(IpKey::of(ip("::ffff:192.0.2.7")).to_string(), "192.0.2.7");
    }

    #[test]
    fn accounts_across_addresses() {
        let t = Throttle::new(&config(0, 1, 3, 600));
        let now = Instant::now();
        let alice = BareJid::new("alice@example.org").unwrap();
        let ghost = BareJid::new("ghost@example.org").unwrap();
        for i in 0..3 {
            let from = ip(&format!("192.0.2.{i}"));
            assert_eq!(t.ip_blocked(from, now), None, "per-IP limit disabled");
            assert_eq!(t.account_blocked(&alice, ip("192.0.2.200"), now), None);
            assert!(fail(&t, from, Some(&alice), now));
            assert!(fail(&t, from, Some(&ghost), now));
        }
        assert_eq!(t.account_blocked(&alice, ip("192.0.2.200"), now), Some(Duration::from_secs(200)));
        // Unknown accounts are throttled the same way (no existence oracle).
        assert_eq!(t.account_blocked(&ghost, ip("192.0.2.200"), now), Some(Duration::from_secs(200)));
        assert_eq!(t.account_blocked(&BareJid::new("bob@example.org").unwrap(), ip("192.0.2.200"), now), None);
    }

    #[test]
    fn an_address_the_account_logged_in_from_is_exempt_from_the_account_limit() {
        let t = Throttle::new(&config(100, 60, 2, 600));
        let now = Instant::now();
        let alice = BareJid::new("alice@example.org").unwrap();
        let bob = BareJid::new("bob@example.org").unwrap();
        let (home, attacker) = (ip("2001:db8:aa:1::5"), ip("198.51.100.66"));
        let admission = t.admit(home, Some(&alice), now).unwrap();
        t.succeeded(admission, home, &alice, now);
        assert!(fail(&t, attacker, Some(&alice), now));
        assert!(fail(&t, attacker, Some(&alice), now));
        assert!(fail(&t, attacker, Some(&bob), now));
        assert!(fail(&t, attacker, Some(&bob), now));
        assert!(t.account_blocked(&alice, attacker, now).is_some());
        assert!(t.account_blocked(&alice, ip("203.0.113.1"), now).is_some(), "other addresses are held");
        assert_eq!(t.account_blocked(&alice, ip("2001:db8:aa:1::77"), now), None, "the owner's /64 is not locked out");
        assert!(t.account_blocked(&bob, home, now).is_some(), "only for the account that logged in there");
        let later = now + KNOWN_FOR;
        assert!(fail(&t, attacker, Some(&alice), later));
        assert!(fail(&t, attacker, Some(&alice), later));
        assert!(t.account_blocked(&alice, home, later).is_some(), "the exemption expires");
    }

    #[test]
    fn going_over_is_reported_once_per_window() {
        let l: Limiter<u32> = Limiter::new(2, Duration::from_secs(10), "test").unwrap();
        let now = Instant::now();
        assert_eq!(l.admit(1, now), Ok(false));
        assert_eq!(l.admit(1, now), Ok(true), "the second failure reaches the limit");
        assert!(l.admit(1, now).is_err(), "over it: refused");
        assert_eq!(l.admit(1, now + Duration::from_secs(5)), Ok(false), "already reported");
        assert!(l.admit(1, now + Duration::from_secs(6)).is_err());
        assert_eq!(l.admit(1, now + Duration::from_secs(20)), Ok(false));
        assert_eq!(l.admit(1, now + Duration::from_secs(20)), Ok(true), "a window later it is reported again");
    }

    #[test]
    fn memory_is_bounded() {
        let l: Limiter<u32> = Limiter::new(5, Duration::from_secs(60), "test").unwrap();
        let now = Instant::now();
        for k in 0..MAX_KEYS as u32 + 10 {
            let _ = l.admit(k, now);
        }
        assert_eq!(l.len(), MAX_KEYS, "new keys are not tracked once the table is full of live entries");
        // Once those entries have drained (TAT passed), they are pruned to make room.
        let later = now + Duration::from_secs(13);
        let _ = l.admit(u32::MAX, later);
        assert_eq!(l.len(), 1);
        assert!(l.blocked(&u32::MAX, later).is_none());
    }

    #[test]
    fn zero_disables() {
        let t = Throttle::new(&config(0, 60, 0, 600));
        let now = Instant::now();
        let alice = BareJid::new("alice@example.org").unwrap();
        for _ in 0..1000 {
            assert!(fail(&t, ip("192.0.2.1"), Some(&alice), now));
        }
        assert_eq!(t.ip_blocked(ip("192.0.2.1"), now), None);
        assert_eq!(t.account_blocked(&alice, ip("192.0.2.200"), now), None);
    }
}

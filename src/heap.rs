//! Giving freed heap memory back to the operating system after a burst.
//!
//! A burst (a thousand people entering one room, a reconnect storm) fills session queues
//! with copies for a moment; once they are written, the allocator (mimalloc, see
//! `Cargo.toml`) keeps the emptied pages for reuse and gives them back only lazily: a page is
//! purged a while after it emptied, and only when the allocator is next called on that
//! path. An idle server then stays at its peak size. So a task watches the resident size, and
//! once a burst is over it asks mimalloc to collect: emptied pages are given back at once.
//! Nothing is moved: live allocations stay where they are.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// How often the resident size is read (one small read of `/proc/self/statm`).
const CHECK_EVERY: Duration = Duration::from_secs(1);
/// Growth of the resident size, over the lowest seen, that is worth a collection.
const SLACK: usize = 16 << 20;

/// When to collect, from the resident size read once a second.
///
/// A collection walks the allocator's pages, so it comes only when the resident size exceeds
/// the lowest seen (at the start, or after a collection) by more than the slack, and has not
/// grown for [`QUIET_CHECKS`] checks (a burst still under way holds what it
/// allocated). A collection that releases nothing, or not all, is followed by others while
/// the size stays high and flat, at waits that double up to [`LONGEST_WAIT`] checks (a
/// burst's queues drain over seconds; memory really in use costs one look a minute); growth
/// resets the wait.
pub struct Watch {
    /// The lowest resident size seen: at the start, or after a collection.
    baseline: usize,
    /// Resident bytes a check ago.
    previous: usize,
    /// The size grew since the last look.
    grew: bool,
    /// Checks in a row at which the size did not grow.
    quiet: u32,
    /// Checks to skip before looking again at a flat size, and the next such wait.
    skip: u32,
    wait: u32,
}

/// Growth between two checks below this is not activity (a cache filling up).
const GROWTH: usize = 1 << 20;
/// Checks in a row without growth before a look.
const QUIET_CHECKS: u32 = 2;

/// A collection that gives back less than this released nothing worth looking again for.
const RELEASED_AT_LEAST: usize = 1 << 20;

/// The longest wait, in checks, between two looks at a size that stays flat.
pub const LONGEST_WAIT: u32 = 64;

impl Watch {
    pub fn new(resident: usize) -> Watch {
        Watch { baseline: resident, previous: resident, grew: false, quiet: 0, skip: 0, wait: 1 }
    }

    /// One check: whether to look at the allocator now.
    pub fn check(&mut self, resident: usize) -> bool {
        let growing = resident > self.previous + GROWTH;
        self.previous = resident;
        self.baseline = self.baseline.min(resident);
        if growing {
            self.grew = true;
            self.quiet = 0;
            return false;
        }
        // A burst pauses now and then: only a size steady for a while is past its peak
        // (collecting during a burst only faults pages back in).
        self.quiet += 1;
        if self.quiet < QUIET_CHECKS {
            return false;
        }
        if resident <= self.baseline + SLACK {
            self.skip = 0;
            self.wait = 1;
            return false;
        }
        if self.grew || self.skip == 0 {
            return true;
        }
        self.skip -= 1;
        false
    }

    /// After a collection: whether it `released` memory, and the resident size now.
    pub fn looked(&mut self, released: bool, resident: usize) {
        self.grew = false;
        self.quiet = 0;
        self.previous = resident;
        self.baseline = self.baseline.min(resident);
        if released {
            // More may come free as queues drain: look again at the next flat check.
            self.skip = 0;
            self.wait = 1;
        } else {
            self.skip = self.wait;
            self.wait = (self.wait * 2).min(LONGEST_WAIT);
        }
    }
}

/// Until `shutdown`: release freed heap memory after bursts (see [`Watch`]).
pub async fn release_after_bursts(shutdown: CancellationToken) {
    #[cfg(target_os = "linux")]
    {
        let Some(resident) = resident_bytes() else { return };
        let mut watch = Watch::new(resident);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(CHECK_EVERY) => {}
            }
            let Some(resident) = resident_bytes() else { return };
            if !watch.check(resident) {
                continue;
            }
            // A collection may take milliseconds: not on a worker.
            let started = std::time::Instant::now();
            if tokio::task::spawn_blocking(collect).await.is_err() {
                return;
            }
            let after = resident_bytes().unwrap_or(resident);
            let released = after + RELEASED_AT_LEAST <= resident;
            watch.looked(released, after);
            tracing::debug!(released, took_us = started.elapsed().as_micros() as u64, resident_before = resident, resident_after = after, "heap collected after growth");
        }
    }
    #[cfg(not(target_os = "linux"))]
    shutdown.cancelled().await;
}

/// Give the allocator's emptied pages back to the system now.
fn collect() {
    // SAFETY: mi_collect only reorganises mimalloc's own free pages under its own
    // synchronisation; live allocations are untouched.
    unsafe { libmimalloc_sys::mi_collect(true) };
}

/// The process's resident size, from `/proc/self/statm` (counted there in pages).
#[cfg(target_os = "linux")]
fn resident_bytes() -> Option<usize> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: usize = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf only reads a constant of the system.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * usize::try_from(page).ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Checks of a steady `size` until the watch says to look (`None`: not within 200).
    fn flat_checks_to_look(w: &mut Watch, size: usize) -> Option<u32> {
        (1..=200).find(|_| w.check(size))
    }

    #[test]
    fn looks_once_a_burst_is_over() {
        const MB: usize = 1 << 20;
        let mut w = Watch::new(50 * MB);
        // Small sizes: never; growing: not yet.
        assert_eq!(flat_checks_to_look(&mut w, 52 * MB), None);
        assert!(!w.check(150 * MB) && !w.check(200 * MB));
        // Steady well above the start for QUIET_CHECKS checks: look.
        assert_eq!(flat_checks_to_look(&mut w, 200 * MB), Some(QUIET_CHECKS));
        // Still in use: later looks come at waits that grow, never beyond the longest.
        let mut waits = Vec::new();
        for _ in 0..10 {
            w.looked(false, 200 * MB);
            waits.push(flat_checks_to_look(&mut w, 200 * MB).expect("looks again"));
        }
        assert!(waits.windows(2).all(|p| p[0] <= p[1]) && waits[0] < waits[9], "{waits:?}");
        assert!(waits.iter().all(|&n| n <= QUIET_CHECKS + LONGEST_WAIT), "{waits:?}");
        // A new growth is looked at as soon as it has stopped.
        assert!(!w.check(260 * MB));
        assert_eq!(flat_checks_to_look(&mut w, 260 * MB), Some(QUIET_CHECKS));
        // Released, still well above the start: looked at again soon (as queues drain, more
        // comes free) ...
        w.looked(true, 120 * MB);
        assert_eq!(flat_checks_to_look(&mut w, 120 * MB), Some(QUIET_CHECKS));
        // ... and left alone once near the lowest size seen.
        w.looked(true, 60 * MB);
        assert_eq!(flat_checks_to_look(&mut w, 60 * MB), None);
    }

    /// A freed peak (all but every 1024th of 200,000 small blocks, which stay scattered
    /// among the emptied pages) is given back: the resident size falls by most of it.
    #[cfg(target_os = "linux")]
    #[test]
    fn collecting_returns_a_freed_peak() {
        let resident_bytes = || super::resident_bytes().unwrap();
        let before = resident_bytes();
        let mut blocks: Vec<Vec<u8>> = (0..200_000).map(|i| vec![i as u8; 400]).collect();
        let kept: Vec<Vec<u8>> = blocks.iter_mut().step_by(1024).map(std::mem::take).collect();
        let peak = resident_bytes();
        assert!(peak > before + (60 << 20), "resident {before} -> {peak} bytes: 80 MB were allocated");
        drop(blocks);
        collect();
        let after = resident_bytes();
        assert!(peak.saturating_sub(after) > 40 << 20, "resident {peak} -> {after} bytes: the freed peak stayed");
        assert!(kept.iter().enumerate().all(|(i, b)| b.len() == 400 && b[0] == (i * 1024) as u8), "live blocks are untouched");
    }
}

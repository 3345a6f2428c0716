//! Giving freed heap memory back to the operating system after a burst.
//!
//! A burst (a thousand people entering one room, a reconnect storm) fills session queues
//! with copies for a moment; once they are written, glibc keeps the freed memory in its
//! arenas for reuse and returns only what lies at the very top of each heap. The process
//! then stays at its peak size for as long as it runs (measured: 1,000 occupants entering
//! one room left 133 MB resident, 67 MB after `malloc_trim`). So a task looks at the
//! allocator's free bytes now and then, and when far more is free than in use it asks glibc
//! to release the free pages. Nothing is moved: live allocations stay where they are.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// How often the resident size is read (one small read of `/proc/self/statm`).
const CHECK_EVERY: Duration = Duration::from_secs(1);
/// Growth of the resident size that makes the allocator's figures worth reading (reading
/// them walks the free lists of every arena, so not every second), and free bytes below
/// which a release is never worth it.
const SLACK: usize = 16 << 20;

/// Whether `free` bytes held by the allocator, with `in_use` allocated, are worth
/// releasing: more than the slack plus a quarter of what is in use (a busy server reuses
/// what it frees; only a peak that has passed leaves this much).
pub fn worth_releasing(free: usize, in_use: usize) -> bool {
    free > SLACK + in_use / 4
}

/// When to look at the allocator's figures, from the resident size read once a second.
///
/// Reading the figures walks the free lists of every arena, so they are read only when the
/// resident size exceeds what the last look found in use by more than the slack (or has
/// grown that much since the start), and has not grown for [`QUIET_CHECKS`] checks (a
/// burst still under way holds what it allocated). A look that releases nothing, or not
/// all, is followed by others while the size stays high and flat, at waits that double up to
/// [`LONGEST_WAIT`] checks (a burst's queues drain over seconds; memory really in use
/// costs one look a minute); growth resets the wait.
pub struct Watch {
    /// Resident bytes the last look found needed (in use, plus what is not heap), or the
    /// size at the start, or the lowest seen since.
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

/// A trim that gives back less than this released nothing worth looking again for.
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
        // (trimming during a burst only faults pages back in, and holds the allocator's
        // locks while the burst wants them).
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

    /// After a look: whether it `released` memory, the resident size now, and the bytes it
    /// found `needed` (in use, plus what is not heap).
    pub fn looked(&mut self, released: bool, resident: usize, needed: usize) {
        self.grew = false;
        self.quiet = 0;
        self.previous = resident;
        self.baseline = needed.min(resident);
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
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let Some(resident) = resident_bytes() else { return };
        let mut watch = Watch::new(resident);
        // What is resident besides the heap (code, stacks, mapped files), counted as
        // needed.
        // SAFETY: as below.
        let start = unsafe { libc::mallinfo2() };
        let not_heap = resident.saturating_sub(start.uordblks + start.hblkhd);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(CHECK_EVERY) => {}
            }
            let Some(resident) = resident_bytes() else { return };
            if !watch.check(resident) {
                continue;
            }
            // Trimming walks every free chunk and may take milliseconds: not on a worker.
            let started = std::time::Instant::now();
            let looked = tokio::task::spawn_blocking(|| {
                // SAFETY: mallinfo2 and malloc_trim read and adjust glibc's own state under
                // its arena locks; neither touches live allocations.
                let info = unsafe { libc::mallinfo2() };
                let release = worth_releasing(info.fordblks, info.uordblks);
                if release {
                    unsafe { libc::malloc_trim(0) };
                }
                (release, info)
            })
            .await;
            let Ok((trimmed, info)) = looked else { return };
            let after = resident_bytes().unwrap_or(resident);
            // The free bytes glibc reports stay the same after a trim (the chunks stay free,
            // their pages are given back): what counts is whether the size fell.
            let released = trimmed && after + RELEASED_AT_LEAST <= resident;
            watch.looked(released, after, not_heap + info.uordblks + info.hblkhd);
            tracing::debug!(trimmed, released, took_us = started.elapsed().as_micros() as u64, resident_before = resident, resident_after = after, free = info.fordblks, in_use = info.uordblks, "heap looked at after growth");
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    shutdown.cancelled().await;
}

/// The process's resident size, from `/proc/self/statm` (counted there in pages).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
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
            w.looked(false, 200 * MB, 180 * MB);
            waits.push(flat_checks_to_look(&mut w, 200 * MB).expect("looks again"));
        }
        assert!(waits.windows(2).all(|p| p[0] <= p[1]) && waits[0] < waits[9], "{waits:?}");
        assert!(waits.iter().all(|&n| n <= QUIET_CHECKS + LONGEST_WAIT), "{waits:?}");
        // A new growth is looked at as soon as it has stopped.
        assert!(!w.check(260 * MB));
        assert_eq!(flat_checks_to_look(&mut w, 260 * MB), Some(QUIET_CHECKS));
        // Released, with more than the slack still resident beyond what is needed: looked at
        // again soon, as queues drain.
        w.looked(true, 120 * MB, 60 * MB);
        assert_eq!(flat_checks_to_look(&mut w, 120 * MB), Some(QUIET_CHECKS));
        // Released down to what is needed: left alone.
        w.looked(true, 70 * MB, 65 * MB);
        assert_eq!(flat_checks_to_look(&mut w, 75 * MB), None);
    }

    #[test]
    fn only_a_passed_peak_is_released() {
        // Little free: never.
        assert!(!worth_releasing(1 << 20, 0));
        assert!(!worth_releasing(SLACK, 0));
        // A busy heap that reuses what it frees: 20 MB free of 200 MB in use.
        assert!(!worth_releasing(20 << 20, 200 << 20));
        // After a burst: 70 MB free, 40 MB in use.
        assert!(worth_releasing(70 << 20, 40 << 20));
    }

    /// On glibc, a freed peak in the middle of the heap (not at its top, which glibc
    /// returns by itself) is given back: the resident size falls by most of it.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn trimming_returns_a_freed_peak() {
        let resident_bytes = || super::resident_bytes().unwrap();
        // 80 MB in small blocks (not mmapped one by one), then all freed but every 64th,
        // which keep the heap from shrinking at its top.
        let mut blocks: Vec<Vec<u8>> = (0..200_000).map(|i| vec![i as u8; 400]).collect();
        let kept: Vec<Vec<u8>> = blocks.iter_mut().step_by(64).map(std::mem::take).collect();
        drop(blocks);
        let before = resident_bytes();
        let info = unsafe { libc::mallinfo2() };
        assert!(worth_releasing(info.fordblks, info.uordblks), "a freed peak of 80 MB is worth releasing: {} free, {} in use", info.fordblks, info.uordblks);
        unsafe { libc::malloc_trim(0) };
        let after = resident_bytes();
        assert!(before.saturating_sub(after) > 40 << 20, "resident {before} -> {after} bytes: the freed peak stayed");
        assert!(kept.iter().enumerate().all(|(i, b)| b.len() == 400 && b[0] == (i * 64) as u8), "live blocks are untouched");
    }
}

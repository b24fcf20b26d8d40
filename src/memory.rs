//! Returning memory to the operating system after a burst of work.
//!
//! glibc's allocator keeps the pages a burst freed (a sync of 30,000 Secrets, a relist of 10,000 namespaces)
//! mapped for reuse: `make bench` measured 7 MiB held that way after a large sync, which an idle operator never
//! needed again. Once no profile has been reconciled for two periods after a burst of reconciles, regcred asks glibc
//! to give those pages back (`malloc_trim`). Between bursts this does nothing at all.
//!
//! Before any thread starts, [`one_arena`] keeps every thread's allocations in one glibc arena.

use std::time::Duration;

use tracing::info;

/// Quiet periods after a burst before trimming: two, so that what the burst left behind has been let go first
/// (idle apiserver connections close after 10 s, see [`crate::client`]).
const QUIET_PERIODS: u32 = 2;

/// Activity in one period below which the period counts as quiet.
const QUIET_BELOW: u64 = 1;

/// When to trim: after a busy period, once [`QUIET_PERIODS`] quiet ones have followed. Pure.
#[derive(Debug)]
pub struct Bursts {
    last: u64,
    busy: bool,
    quiet: u32,
}

impl Bursts {
    /// Starts from the activity counter's current value; `busy` when a burst (start-up) is under way.
    pub fn new(activity: u64, busy: bool) -> Self {
        Self { last: activity, busy, quiet: 0 }
    }

    /// Records the activity counter at the end of a period; true when a burst has just ended.
    pub fn ended(&mut self, activity: u64) -> bool {
        let during = activity.saturating_sub(self.last);
        self.last = activity;
        if during >= QUIET_BELOW {
            self.busy = true;
            self.quiet = 0;
            return false;
        }
        if !self.busy {
            return false;
        }
        self.quiet += 1;
        if self.quiet < QUIET_PERIODS {
            return false;
        }
        self.busy = false;
        true
    }
}

/// Runs forever: every `period`, reads `activity` (a counter that moves with the work being done: reconciles)
/// and returns freed memory to the OS when a burst has ended.
pub async fn trim_after_bursts(activity: impl Fn() -> u64, period: Duration) {
    trim_after_bursts_with(activity, period, trim).await;
}

/// [`trim_after_bursts`] with the trim to call.
async fn trim_after_bursts_with(activity: impl Fn() -> u64, period: Duration, trim: impl Fn() -> bool) {
    // Start-up (the first lists) is a burst of its own.
    let mut bursts = Bursts::new(activity(), true);
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let now = activity();
        tracing::trace!(activity = now, ?bursts, "memory: tick");
        if bursts.ended(now) {
            let before = resident_mib();
            trim();
            info!(
                rss_before_mib = before,
                rss_after_mib = resident_mib(),
                "burst over: freed memory returned to the OS"
            );
        }
    }
}

/// Makes every thread allocate from one glibc arena. By default glibc gives busy threads arenas of their own (up to
/// eight per core) so that they never wait on each other's allocations; regcred's threads mostly wait on the network,
/// and every extra arena keeps free pages and fragments of its own. `make bench` at 10,000 namespaces: caches warm
/// 22.2 -> 19.8 MiB, peak 37.5 -> 34.3 MiB, steady 30.7 -> 28.7 MiB, the sync no slower. Call it before any thread
/// starts. `MALLOC_ARENA_MAX` in the environment, when set, is left to decide. Also fixes glibc's mmap threshold
/// (see [`MMAP_THRESHOLD`]; `MALLOC_MMAP_THRESHOLD_` overrides).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
pub fn one_arena() {
    if std::env::var_os("MALLOC_ARENA_MAX").is_some() {
        return;
    }
    // SAFETY: mallopt takes two integers and only sets one of glibc's own tunables, under its lock.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
    if std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_none() {
        // SAFETY: as above.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
        }
    }
}

/// Allocations from this size up get pages of their own, given back to the OS when freed. A set value also stops
/// glibc from raising the threshold each time such a block is freed (up to 32 MiB), after which a full plan's
/// vectors (a megabyte and more at 50,000 namespaces) would come from the heap and leave it fragmented.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD: libc::c_int = 128 * 1024;

/// Other allocators manage their arenas themselves.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn one_arena() {}

/// The process's resident memory in MiB (0 where /proc does not say).
fn resident_mib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let line = s.lines().find_map(|l| l.strip_prefix("VmRSS:"))?;
            line.trim().trim_end_matches("kB").trim().parse::<u64>().ok()
        })
        .map_or(0, |kib| kib / 1024)
}

/// Asks glibc to release free memory at the top of its heaps and whole free pages inside them.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn trim() -> bool {
    // SAFETY: malloc_trim takes no pointer and touches only glibc's own free lists, under glibc's arena locks;
    // it is safe to call from any thread at any time.
    unsafe { libc::malloc_trim(0) == 1 }
}

/// Other allocators (musl's) return memory by themselves.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim() -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trims_once_per_burst_and_only_after_quiet_periods() {
        let mut b = Bursts::new(0, false);
        assert!(!b.ended(0), "nothing happened");
        assert!(!b.ended(1), "busy");
        assert!(!b.ended(50), "still busy");
        assert!(!b.ended(50), "one quiet period is not enough");
        assert!(b.ended(50), "two quiet periods after a burst");
        assert!(!b.ended(50), "already trimmed");
        assert!(!b.ended(50));
        assert!(!b.ended(51), "busy again: the count starts over");
        assert!(!b.ended(51));
        assert!(b.ended(51));
        let mut start = Bursts::new(7, true);
        assert!(!start.ended(7));
        assert!(start.ended(7), "start-up counts as a burst");
    }

    #[tokio::test(start_paused = true)]
    async fn the_loop_trims_once_after_each_burst_and_never_while_quiet() {
        use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
        let (activity, trims) = (AtomicU64::new(0), AtomicUsize::new(0));
        let period = Duration::from_secs(10);
        let run = trim_after_bursts_with(
            || activity.load(Ordering::Relaxed),
            period,
            || trims.fetch_add(1, Ordering::Relaxed) == usize::MAX,
        );
        let observe = async {
            let trims = &trims;
            let trims_after = |periods: u32| async move {
                tokio::time::sleep(period * periods).await;
                trims.load(Ordering::Relaxed)
            };
            // Half a period off the ticks. Start-up is a burst: one trim after two quiet periods, then none while
            // nothing happens.
            tokio::time::sleep(period / 2).await;
            assert_eq!(trims_after(3).await, 1, "after start-up");
            assert_eq!(trims_after(10).await, 1, "a quiet operator trims again");
            // Another burst, then quiet: exactly one more.
            activity.fetch_add(500, Ordering::Relaxed);
            assert_eq!(trims_after(1).await, 1, "trimmed in the middle of a burst");
            assert_eq!(trims_after(3).await, 2, "after the second burst");
        };
        tokio::select! {
            () = run => panic!("the loop ended"),
            () = observe => {}
        }
    }

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn the_trim_returns_freed_pages_inside_the_heap() {
        // Free pages below a live allocation: free() cannot give them back by shrinking the heap, malloc_trim can.
        let chunks: Vec<Vec<u8>> = (0..4096).map(|i| vec![u8::try_from(i % 251).unwrap_or(0); 4000]).collect();
        let keep = vec![7u8; 4000];
        drop(chunks);
        assert!(trim(), "malloc_trim released nothing");
        assert_eq!(keep.iter().map(|b| usize::from(*b)).sum::<usize>(), 7 * 4000, "the live allocation is intact");
    }
}

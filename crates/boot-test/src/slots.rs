//! A process-wide limit on concurrent QEMU guests.
//!
//! Test harnesses run tests on as many threads as there are cores, and every QEMU/TCG guest keeps
//! a core busy. More guests than cores makes every boot slower, so fixed timeouts stop meaning
//! anything. Boots wait for a slot before their timeout starts.

use std::sync::{Condvar, Mutex, PoisonError};

static IN_USE: Mutex<usize> = Mutex::new(0);
static FREED: Condvar = Condvar::new();

/// Environment variable: how many guests may run at once in this process.
pub const JOBS_ENV: &str = "IMAGER_BOOT_JOBS";

/// The configured limit: `$IMAGER_BOOT_JOBS`, else the number of cores.
pub fn limit() -> usize {
    std::env::var(JOBS_ENV)
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .or_else(|| std::thread::available_parallelism().ok().map(usize::from))
        .unwrap_or(1)
        .max(1)
}

/// Held while a guest runs; frees its slot when dropped.
#[derive(Debug)]
pub(crate) struct Slot(());

impl Slot {
    /// Blocks until fewer than `limit` guests are running.
    pub(crate) fn acquire(limit: usize) -> Self {
        // A panic while holding the lock cannot leave the counter half-updated, so a poisoned
        // lock is still correct to use.
        let mut in_use = IN_USE.lock().unwrap_or_else(PoisonError::into_inner);
        while *in_use >= limit {
            in_use = FREED.wait(in_use).unwrap_or_else(PoisonError::into_inner);
        }
        *in_use += 1;
        Slot(())
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut in_use = IN_USE.lock().unwrap_or_else(PoisonError::into_inner);
        *in_use = in_use.saturating_sub(1);
        FREED.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[test]
    fn never_more_than_the_limit_at_once() {
        static RUNNING: AtomicUsize = AtomicUsize::new(0);
        static PEAK: AtomicUsize = AtomicUsize::new(0);
        let threads: Vec<_> = (0..6)
            .map(|_| {
                std::thread::spawn(|| {
                    let _slot = Slot::acquire(2);
                    let now = RUNNING.fetch_add(1, Ordering::SeqCst) + 1;
                    PEAK.fetch_max(now, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(50));
                    RUNNING.fetch_sub(1, Ordering::SeqCst);
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(PEAK.load(Ordering::SeqCst), 2);
        assert_eq!(*IN_USE.lock().unwrap(), 0);
    }
}

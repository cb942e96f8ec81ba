//! A fixed set of threads for the server's file I/O (opening, reading manifests, reading blob
//! pieces).
//!
//! Tokio's blocking pool would do the work, but under a steady stream of short jobs it keeps
//! adding threads (measured: 215 threads and a server RSS still growing after a minute of 32
//! clients), because a job is given a new thread whenever none is idle at that instant. Each
//! thread costs its stack and allocator caches, so memory followed. A fixed pool keeps both
//! bounded whatever the load, and whatever runtime the caller built.

use std::io;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

type Job = Box<dyn FnOnce() + Send>;

/// Handle to the pool; clones share it, and its threads end when the last handle is dropped.
#[derive(Debug, Clone)]
pub struct IoPool {
    jobs: mpsc::Sender<Job>,
}

impl IoPool {
    pub fn new(threads: usize) -> io::Result<Self> {
        let (jobs, queue) = mpsc::channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        for _ in 0..threads.max(1) {
            let queue = Arc::clone(&queue);
            std::thread::Builder::new()
                .name("registryd-io".into())
                .spawn(move || {
                    loop {
                        // The lock is held only while taking a job, not while running it.
                        let job = match queue.lock() {
                            Ok(q) => q.recv(),
                            Err(_) => return,
                        };
                        let Ok(job) = job else { return };
                        // A panicking job fails its request (its answer channel is dropped);
                        // the thread stays for the next one.
                        let _ = catch_unwind(AssertUnwindSafe(job));
                    }
                })?;
        }
        Ok(Self { jobs })
    }

    /// Queues `f` on the pool; the receiver gets its result.
    pub fn spawn<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> oneshot::Receiver<T> {
        let (tx, rx) = oneshot::channel();
        // If the pool is gone the job is dropped, and so is `tx`: the receiver reports it.
        let _ = self.jobs.send(Box::new(move || {
            let _ = tx.send(f());
        }));
        rx
    }

    /// Runs `f` on the pool and waits for it.
    pub async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> io::Result<T> {
        self.spawn(f)
            .await
            .map_err(|_| io::Error::other("the I/O job failed (panicked, or the pool stopped)"))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[tokio::test]
    async fn runs_jobs_and_survives_a_panic() {
        let pool = IoPool::new(2).unwrap();
        assert_eq!(pool.run(|| 6 * 7).await.unwrap(), 42);
        assert!(pool.run(|| -> u8 { panic!("boom") }).await.is_err());
        let results: Vec<_> = (0..20).map(|i| pool.spawn(move || i * 2)).collect();
        for (i, r) in results.into_iter().enumerate() {
            assert_eq!(r.await.unwrap(), i * 2);
        }
    }
}

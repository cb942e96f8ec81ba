//! Which connections are idle (waiting for a request head, none of it received yet), in the
//! order they became idle, so that when every connection slot is taken the accept loop can close
//! the one idle the longest and answer a new client at once, instead of letting it wait in the
//! listen backlog until an idle keep-alive connection times out.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::{Notify, oneshot};

/// The idle connections of one server. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub(crate) struct Idle(Arc<Shared>);

#[derive(Debug, Default)]
struct Shared {
    inner: Mutex<Inner>,
    /// Signalled whenever a connection becomes idle: something may now be closed.
    went_idle: Notify,
}

#[derive(Debug, Default)]
struct Inner {
    /// Numbers given out in order, so the smallest key is the longest idle.
    next: u64,
    waiting: BTreeMap<u64, oneshot::Sender<()>>,
}

/// A connection's place in the idle list, held while it waits for a request head; dropping it
/// (a head started arriving, or the connection ended) takes the connection off the list.
#[derive(Debug)]
pub(crate) struct IdleGuard {
    idle: Idle,
    key: u64,
    /// Completes when the connection is asked to close.
    pub(crate) closed: oneshot::Receiver<()>,
}

impl Idle {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Plain inserts and removals: the map is consistent across a panic.
        self.0.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The connection is idle from now on.
    pub(crate) fn enter(&self) -> IdleGuard {
        let (tx, closed) = oneshot::channel();
        let key = {
            let mut inner = self.lock();
            let key = inner.next;
            inner.next += 1;
            inner.waiting.insert(key, tx);
            key
        };
        self.0.went_idle.notify_waiters();
        IdleGuard {
            idle: self.clone(),
            key,
            closed,
        }
    }

    /// Asks the connection idle the longest to close; false when none is idle.
    pub(crate) fn close_longest(&self) -> bool {
        let mut inner = self.lock();
        // A connection whose guard is gone is not in the map; a send can only fail when the
        // connection ended between its last read and dropping its guard: try the next one.
        while let Some((_, tx)) = inner.waiting.pop_first() {
            if tx.send(()).is_ok() {
                return true;
            }
        }
        false
    }

    /// Completes when a connection next becomes idle. Create it before checking
    /// [`Idle::close_longest`], so an entry in between is not missed.
    pub(crate) fn went_idle(&self) -> tokio::sync::futures::Notified<'_> {
        self.0.went_idle.notified()
    }
}

impl Drop for IdleGuard {
    fn drop(&mut self) {
        self.idle.lock().waiting.remove(&self.key);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn closes_the_longest_idle_first_and_forgets_those_gone() {
        let idle = Idle::default();
        assert!(!idle.close_longest());
        let mut a = idle.enter();
        let b = idle.enter();
        let mut c = idle.enter();
        drop(b);
        assert!(idle.close_longest());
        assert!(a.closed.try_recv().is_ok());
        assert!(c.closed.try_recv().is_err());
        // b left the list; c is next.
        assert!(idle.close_longest());
        assert!(c.closed.try_recv().is_ok());
        assert!(!idle.close_longest());
        // Re-entering puts a connection at the back.
        let mut d = idle.enter();
        let mut e = idle.enter();
        drop(d);
        d = idle.enter();
        assert!(idle.close_longest());
        assert!(e.closed.try_recv().is_ok());
        assert!(d.closed.try_recv().is_err());
    }
}

//! What a delivered message keeps of its provider: the I/O thread's wake-up ([`Wake`]) and,
//! for a subscription that acknowledges after processing, the subscription's [`Flow`]. A
//! leaf of the engine, so that `message.rs` (the API) can hold them without depending on
//! the engine that delivers messages.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use super::poller::Poller;

/// The I/O thread's poller, and whether the thread sleeps in it.
///
/// Callers wake the thread (a system call, and on a busy machine a context switch) only when
/// it sleeps or is about to: while it works, it sees what they queued before it sleeps
/// again. (Notifying at every call wrote the eventfd at the first call after each wait,
/// whether the thread slept or not, and its next wait then returned at once for nothing.)
pub(crate) struct Wake {
    /// Also the socket's registration (the I/O thread's).
    pub poller: Poller,
    sleeping: AtomicBool,
}

impl Wake {
    /// A thread that is not asleep in `poller`.
    pub fn new(poller: Poller) -> Wake {
        Wake {
            poller,
            sleeping: AtomicBool::new(false),
        }
    }

    /// Called after queueing work for the I/O thread (a command, the closing flag).
    pub fn notify(&self) {
        // Pairs with the fence in `sleep`: either the I/O thread's re-check sees our work,
        // or we see it sleeping and wake it.
        std::sync::atomic::fence(Ordering::SeqCst);
        if self.sleeping.load(Ordering::SeqCst) {
            let _ = self.poller.notify();
        }
    }

    /// The I/O thread's wait: announces the sleep, then waits unless `work` (checked after
    /// the announcement) finds something queued meanwhile. `Ok(None)` if it did not wait,
    /// else whether the socket was reported readable.
    pub fn sleep(
        &self,
        timeout: Option<std::time::Duration>,
        work: impl FnOnce() -> bool,
    ) -> std::io::Result<Option<bool>> {
        self.sleeping.store(true, Ordering::SeqCst);
        std::sync::atomic::fence(Ordering::SeqCst);
        let result = if work() {
            Ok(None)
        } else {
            self.poller.wait(timeout).map(Some)
        };
        self.sleeping.store(false, Ordering::SeqCst);
        result
    }
}

/// A subscription that acknowledges after processing: what its application holds
/// (delivered, not yet dropped) against its bounds, and how to wake the providers that
/// stopped reading for it.
pub(crate) struct Flow {
    /// Messages delivered and not yet dropped by the application.
    pub held: AtomicUsize,
    pub capacity: usize,
    /// The subscription's bytes (the sinks' counter) and their bound.
    pub bytes: Arc<AtomicUsize>,
    pub max_bytes: usize,
    /// Providers not reading because of this subscription.
    pub paused: AtomicUsize,
    /// Each provider's I/O thread, registered when it takes the subscription.
    pub wakes: std::sync::Mutex<Vec<Arc<Wake>>>,
}

impl Flow {
    /// Whether the application holds all the subscription may hold.
    pub fn full(&self) -> bool {
        self.held.load(Ordering::Acquire) >= self.capacity
            || self.bytes.load(Ordering::Acquire) >= self.max_bytes
    }

    /// A message was dropped: a provider that stopped reading may go on.
    pub fn released(&self) {
        self.held.fetch_sub(1, Ordering::AcqRel);
        // Pairs with the I/O thread's fence before it re-checks `full` (`Wake::sleep`):
        // either it sees this release, or this sees it paused and wakes it.
        std::sync::atomic::fence(Ordering::SeqCst);
        if self.paused.load(Ordering::Acquire) > 0 {
            for w in self.wakes.lock().unwrap_or_else(|e| e.into_inner()).iter() {
                w.notify();
            }
        }
    }
}

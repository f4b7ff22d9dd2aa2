//! The hand-over of commands from callers to the I/O thread: a bounded queue whose memory is
//! allocated as it fills.
//!
//! crossbeam's bounded channel allocates and initializes every slot up front (a 1000-slot
//! queue is ~88 KB per connection, resident even when idle), and a small one makes a fast
//! publisher spin, yield and park whenever it fills. So the channel is crossbeam's list
//! flavour (blocks of 31 slots, allocated and freed as it fills and drains) and the bound is
//! a counter: a caller blocks, on a condvar, only when the queue is really full.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender, TryRecvError};

/// Why a command was not queued.
pub(crate) enum QueueError<T> {
    /// Still full at the deadline.
    Timeout(T),
    /// The I/O thread is gone.
    Closed(T),
}

/// The shared bound.
pub(crate) struct Bound {
    len: AtomicUsize,
    capacity: usize,
    lock: Mutex<()>,
    space: Condvar,
    /// Senders waiting on `space` (tests wait for a sender to be blocked).
    #[cfg(test)]
    waiting: AtomicUsize,
}

pub(crate) struct QueueSender<T> {
    tx: Sender<T>,
    bound: std::sync::Arc<Bound>,
}

pub(crate) struct QueueReceiver<T> {
    rx: Receiver<T>,
    bound: std::sync::Arc<Bound>,
}

pub(crate) fn queue<T>(capacity: usize) -> (QueueSender<T>, QueueReceiver<T>) {
    let (tx, rx) = crossbeam_channel::unbounded();
    let bound = std::sync::Arc::new(Bound {
        len: AtomicUsize::new(0),
        capacity: capacity.max(1),
        #[cfg(test)]
        waiting: AtomicUsize::new(0),
        lock: Mutex::new(()),
        space: Condvar::new(),
    });
    (
        QueueSender {
            tx,
            bound: bound.clone(),
        },
        QueueReceiver { rx, bound },
    )
}

impl<T> QueueSender<T> {
    /// Queues `item`, waiting until `deadline` while the queue is full.
    pub fn send(&self, item: T, deadline: Instant) -> Result<(), QueueError<T>> {
        let b = &*self.bound;
        loop {
            let n = b.len.load(Ordering::Acquire);
            if n < b.capacity {
                if b.len
                    .compare_exchange_weak(n, n + 1, Ordering::AcqRel, Ordering::Acquire)
                    .is_err()
                {
                    continue;
                }
                return self.tx.send(item).map_err(|e| {
                    b.len.fetch_sub(1, Ordering::AcqRel);
                    QueueError::Closed(e.into_inner())
                });
            }
            // Full: wait for the I/O thread to take some. The check is repeated under the
            // lock the receiver notifies under, so a wake-up cannot be missed.
            let guard = b.lock.lock().unwrap_or_else(|e| e.into_inner());
            if b.len.load(Ordering::Acquire) < b.capacity {
                continue;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(QueueError::Timeout(item));
            }
            #[cfg(test)]
            b.waiting.fetch_add(1, Ordering::SeqCst);
            drop(
                b.space
                    .wait_timeout(guard, left)
                    .unwrap_or_else(|e| e.into_inner()),
            );
            #[cfg(test)]
            b.waiting.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

impl<T> QueueSender<T> {
    /// Queues `item` even when the queue is full (for the few control commands).
    pub fn send_unbounded(&self, item: T) -> Result<(), T> {
        self.bound.len.fetch_add(1, Ordering::AcqRel);
        self.tx.send(item).map_err(|e| {
            self.bound.len.fetch_sub(1, Ordering::AcqRel);
            e.into_inner()
        })
    }
}

impl<T> QueueReceiver<T> {
    /// Takes one command without blocking.
    pub fn try_recv(&self) -> Result<T, TryRecvError> {
        let item = self.rx.try_recv()?;
        let was = self.bound.len.fetch_sub(1, Ordering::AcqRel);
        // Callers blocked on a full queue are woken once it is half empty, not for every slot
        // freed: woken per slot, a fast publisher slept and woke once per message (perf: a
        // quarter of the process's futex calls). Senders wait only at `len >= capacity`, and
        // `len` falls one at a time, so the crossing below is always seen while draining.
        if was == self.bound.capacity / 2 + 1 {
            // Ordered after a sender's re-check under the lock; notified outside it.
            drop(self.bound.lock.lock().unwrap_or_else(|e| e.into_inner()));
            self.bound.space.notify_all();
        }
        Ok(item)
    }

    /// Whether no command waits.
    /// Commands waiting.
    pub fn len(&self) -> usize {
        self.bound.len.load(Ordering::Acquire)
    }

    pub fn is_empty(&self) -> bool {
        self.rx.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn bounded_and_blocking_until_space_or_deadline() {
        let (tx, rx) = queue::<u32>(2);
        let soon = || Instant::now() + Duration::from_millis(50);
        assert!(tx.send(1, soon()).is_ok());
        assert!(tx.send(2, soon()).is_ok());
        assert!(matches!(tx.send(3, soon()), Err(QueueError::Timeout(3))));
        let t = std::thread::spawn(move || {
            tx.send(3, Instant::now() + Duration::from_secs(10)).is_ok()
        });
        // The sender blocks while the queue is full ...
        std::thread::sleep(Duration::from_millis(50));
        assert!(!t.is_finished(), "a send to a full queue waits");
        // ... and goes through once one is taken.
        assert_eq!(rx.try_recv().unwrap(), 1);
        assert!(t.join().unwrap());
        assert_eq!(rx.try_recv().unwrap(), 2);
        assert_eq!(rx.try_recv().unwrap(), 3);
        assert!(rx.is_empty());
    }

    #[test]
    fn a_blocked_sender_is_woken_when_the_queue_is_half_empty() {
        let (tx, rx) = queue::<u32>(8);
        let soon = Instant::now() + Duration::from_millis(50);
        for i in 0..8 {
            assert!(tx.send(i, soon).is_ok());
        }
        let bound = tx.bound.clone();
        let t = std::thread::spawn(move || {
            tx.send(8, Instant::now() + Duration::from_secs(10)).is_ok()
        });
        let deadline = Instant::now() + Duration::from_secs(10);
        while bound.waiting.load(Ordering::SeqCst) == 0 {
            assert!(Instant::now() < deadline, "the sender never blocked");
            std::thread::yield_now();
        }
        for i in 0..3 {
            assert_eq!(rx.try_recv().unwrap(), i);
        }
        // Not woken: still counted as waiting (a wake-up would leave the wait and queue).
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(
            bound.waiting.load(Ordering::SeqCst),
            1,
            "5 of 8 queued: still waiting"
        );
        assert!(!t.is_finished());
        assert_eq!(rx.try_recv().unwrap(), 3);
        assert!(t.join().unwrap(), "4 of 8 queued: woken");
        let rest: Vec<u32> = std::iter::from_fn(|| rx.try_recv().ok()).collect();
        assert_eq!(rest, [4, 5, 6, 7, 8]);
    }

    #[test]
    fn closed_when_the_receiver_is_gone() {
        let (tx, rx) = queue::<u32>(2);
        drop(rx);
        assert!(matches!(
            tx.send(1, Instant::now()),
            Err(QueueError::Closed(1))
        ));
    }
}

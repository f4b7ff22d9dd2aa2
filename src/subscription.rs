//! [`Subscription`]: a bounded stream of messages that is also an `Iterator`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, TryRecvError};

use crate::connection::{Command, Connection};
use crate::error::Operation;
use crate::message::Message;

/// Messages of one subscribe call, from every provider it was made on.
///
/// - Blocking: `for msg in &sub { .. }` or [`Subscription::recv`]; the iteration ends when it
///   is unsubscribed, its providers are removed, or the `PubSub` closes.
/// - Non-blocking: [`Subscription::try_recv`], [`Subscription::try_iter`] (drain once per frame
///   in a game loop), [`Subscription::recv_timeout`].
/// - `select!`: [`Subscription::receiver`].
///
/// The buffer is bounded. When it is full the I/O thread does not wait: the message is
/// dropped for this subscription only, counted in [`Subscription::dropped`] and logged at
/// `warn` — whatever its QoS (the broker's QoS 1/2 guarantee ends at our PUBACK). Size the
/// buffer with `SubscribeOptions::capacity` for bursts you must not lose.
///
/// Dropping it unsubscribes.
pub struct Subscription {
    id: u64,
    rx: Receiver<Message>,
    targets: Vec<Weak<Connection>>,
    topics: Vec<String>,
    dropped: Arc<AtomicU64>,
    timeout: Duration,
    active: AtomicBool,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("topics", &self.topics)
            .field("buffered", &self.rx.len())
            .field("dropped", &self.dropped())
            .finish()
    }
}

impl Subscription {
    pub(crate) fn new(
        id: u64,
        rx: Receiver<Message>,
        targets: &[Arc<Connection>],
        topics: Vec<String>,
        dropped: Arc<AtomicU64>,
        timeout: Duration,
    ) -> Subscription {
        Subscription {
            id,
            rx,
            targets: targets.iter().map(Arc::downgrade).collect(),
            topics,
            dropped,
            timeout,
            active: AtomicBool::new(true),
        }
    }

    /// Blocks for the next message; `None` once the subscription has ended.
    pub fn recv(&self) -> Option<Message> {
        self.rx.recv().ok()
    }

    /// The next message if one is buffered, without blocking.
    pub fn try_recv(&self) -> Result<Message, TryRecvError> {
        self.rx.try_recv()
    }

    /// Waits up to `timeout` for the next message.
    pub fn recv_timeout(&self, timeout: Duration) -> Result<Message, RecvTimeoutError> {
        self.rx.recv_timeout(timeout)
    }

    /// Iterates over the messages buffered now, without blocking.
    pub fn try_iter(&self) -> crossbeam_channel::TryIter<'_, Message> {
        self.rx.try_iter()
    }

    /// The underlying channel, for `crossbeam_channel::select!`.
    pub fn receiver(&self) -> &Receiver<Message> {
        &self.rx
    }

    /// The filters it was made with.
    pub fn topics(&self) -> &[String] {
        &self.topics
    }

    /// Messages lost because the buffer was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Messages buffered now.
    pub fn len(&self) -> usize {
        self.rx.len()
    }

    /// Whether no message is buffered now.
    pub fn is_empty(&self) -> bool {
        self.rx.is_empty()
    }

    /// Stops delivery: when this returns, no further message is delivered (buffered ones are
    /// discarded), and the iteration ends. UNSUBSCRIBE goes to the broker when no other
    /// subscription uses the filter. Idempotent; dropping does the same.
    pub fn unsubscribe(&self) {
        if !self.active.swap(false, Ordering::SeqCst) {
            return;
        }
        let deadline = Instant::now() + self.timeout;
        let mut waits = Vec::new();
        for c in self.targets.iter().filter_map(Weak::upgrade) {
            let (tx, rx) = crossbeam_channel::bounded(1);
            if c.send(
                Command::Unsubscribe {
                    id: self.id,
                    reply: tx,
                },
                deadline,
                Operation::Unsubscribe,
            )
            .is_ok()
            {
                waits.push(rx);
            }
        }
        for rx in waits {
            // Disconnected means the I/O thread is gone, which removed the route too.
            if rx.recv_deadline(deadline).is_err() {
                log::debug!("unsubscribe: no confirmation from an I/O thread before the deadline");
            }
        }
        while self.rx.try_recv().is_ok() {}
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.unsubscribe();
    }
}

impl Iterator for Subscription {
    type Item = Message;
    fn next(&mut self) -> Option<Message> {
        self.rx.recv().ok()
    }
}

impl<'a> IntoIterator for &'a Subscription {
    type Item = Message;
    type IntoIter = crossbeam_channel::Iter<'a, Message>;
    fn into_iter(self) -> Self::IntoIter {
        self.rx.iter()
    }
}

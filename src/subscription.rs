//! [`Subscription`]: a bounded stream of messages that is also an `Iterator`.

use std::sync::atomic::{fence, AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, TryRecvError};

use crate::connection::{deadline_after, Command, Connection};
use crate::message::Message;

/// How the I/O thread wakes a [`Subscription`] blocked in `recv`, `recv_timeout` or iteration.
///
/// crossbeam's blocking receive spins, then calls `sched_yield` a few times, then parks. A
/// receiver still yielding when the I/O thread writes the next request looks busy to the
/// scheduler, which then wakes the broker on the other CPU; on a virtual machine a halted vCPU
/// takes ~0.3 ms to wake (`perf sched timehist`), and round trips spent whole phases at that
/// cost. Our receivers check the channel and then sleep on a condition variable at once.
///
/// The I/O thread rings at the first message of a batch it read and once more after the
/// batch, not per message ([`Doorbell::schedule`]): a receiver that sleeps at once would
/// otherwise be woken, with a system call, for every message of a stream.
#[derive(Default)]
pub(crate) struct Doorbell {
    waiting: AtomicUsize,
    lock: Mutex<()>,
    ready: Condvar,
    /// Already in the I/O thread's list of bells to ring.
    scheduled: AtomicBool,
}

impl Doorbell {
    /// Marks the bell for the I/O thread's next round of rings; `true` if the caller must
    /// add it to its list (it was not scheduled yet).
    ///
    /// With several providers, another I/O thread may find the bell already scheduled and
    /// leave the ring to the thread that scheduled it; the acquire-release swaps make its
    /// message visible to that later ring.
    pub fn schedule(&self) -> bool {
        !self.scheduled.swap(true, Ordering::AcqRel)
    }

    /// Rings a scheduled bell.
    pub fn ring_scheduled(&self) {
        self.scheduled.swap(false, Ordering::AcqRel);
        self.ring();
    }

    /// Called after a message was queued or a sender dropped.
    pub fn ring(&self) {
        // Pairs with the fence in `Subscription::wait`: either the receiver sees the message
        // in its re-check, or we see it waiting, take the lock (so it is asleep or has not
        // re-checked yet) and notify.
        fence(Ordering::SeqCst);
        if self.waiting.load(Ordering::SeqCst) > 0 {
            // Taking the lock orders us after a receiver's re-check; notifying after letting
            // it go spares the woken receiver from blocking on it at once.
            drop(self.lock.lock().unwrap_or_else(|e| e.into_inner()));
            self.ready.notify_all();
        }
    }
}

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
    bell: Arc<Doorbell>,
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
        bell: Arc<Doorbell>,
    ) -> Subscription {
        Subscription {
            id,
            rx,
            targets: targets.iter().map(Arc::downgrade).collect(),
            topics,
            dropped,
            timeout,
            active: AtomicBool::new(true),
            bell,
        }
    }

    /// The next message, waiting until `deadline` (`None`: for ever) without spinning.
    fn wait(&self, deadline: Option<Instant>) -> Result<Message, RecvTimeoutError> {
        let bell = &*self.bell;
        loop {
            match self.rx.try_recv() {
                Ok(m) => return Ok(m),
                Err(TryRecvError::Disconnected) => return Err(RecvTimeoutError::Disconnected),
                Err(TryRecvError::Empty) => {}
            }
            bell.waiting.fetch_add(1, Ordering::SeqCst);
            fence(Ordering::SeqCst);
            let guard = bell.lock.lock().unwrap_or_else(|e| e.into_inner());
            // Checked again under the lock `ring` takes before notifying: no wake-up is missed.
            let outcome = match self.rx.try_recv() {
                Ok(m) => Some(Ok(m)),
                Err(TryRecvError::Disconnected) => Some(Err(RecvTimeoutError::Disconnected)),
                Err(TryRecvError::Empty) => match deadline {
                    None => {
                        drop(bell.ready.wait(guard).unwrap_or_else(|e| e.into_inner()));
                        None
                    }
                    Some(d) => {
                        let left = d.saturating_duration_since(Instant::now());
                        if left.is_zero() {
                            Some(Err(RecvTimeoutError::Timeout))
                        } else {
                            drop(
                                bell.ready
                                    .wait_timeout(guard, left)
                                    .unwrap_or_else(|e| e.into_inner()),
                            );
                            None
                        }
                    }
                },
            };
            bell.waiting.fetch_sub(1, Ordering::SeqCst);
            if let Some(result) = outcome {
                return result;
            }
        }
    }

    /// Blocks for the next message; `None` once the subscription has ended.
    pub fn recv(&self) -> Option<Message> {
        self.wait(None).ok()
    }

    /// The next message if one is buffered, without blocking.
    pub fn try_recv(&self) -> Result<Message, TryRecvError> {
        self.rx.try_recv()
    }

    /// Waits up to `timeout` for the next message.
    pub fn recv_timeout(&self, timeout: Duration) -> Result<Message, RecvTimeoutError> {
        // A timeout too large for an Instant waits for ever, as crossbeam's does.
        self.wait(Instant::now().checked_add(timeout))
    }

    /// Iterates over the messages buffered when it is called, without blocking: at most
    /// that many, so a game loop's frame ends even while a flood keeps arriving.
    pub fn try_iter(&self) -> TryIter<'_> {
        TryIter {
            rx: &self.rx,
            left: self.rx.len(),
        }
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
    /// subscription uses the filter, also on a persistent session. Waits up to the
    /// subscription's operation timeout for the I/O threads to take it; idempotent.
    ///
    /// Dropping a `Subscription` stops delivery without waiting (the I/O thread removes it in
    /// the background), and on a persistent session (`clean_session(false)`) leaves the
    /// broker's subscription in place, so that the broker keeps storing messages for the
    /// next run.
    pub fn unsubscribe(&self) {
        if !self.active.swap(false, Ordering::SeqCst) {
            return;
        }
        let deadline = deadline_after(self.timeout);
        let mut waits = Vec::new();
        for c in self.targets.iter().filter_map(Weak::upgrade) {
            let (tx, rx) = crossbeam_channel::bounded(1);
            let cmd = Command::Unsubscribe {
                id: self.id,
                keep: false,
                reply: Some(tx),
            };
            if c.send_control(cmd).is_ok() {
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
        if !self.active.swap(false, Ordering::SeqCst) {
            return;
        }
        // Never blocks: the receiver is gone with `self`, so nothing more is delivered; the
        // I/O thread removes the route when it takes the command.
        for c in self.targets.iter().filter_map(Weak::upgrade) {
            let _ = c.send_control(Command::Unsubscribe {
                id: self.id,
                keep: !c.clean_session,
                reply: None,
            });
        }
    }
}

/// The messages buffered when [`Subscription::try_iter`] was called; never blocks.
#[derive(Debug)]
pub struct TryIter<'a> {
    rx: &'a Receiver<Message>,
    left: usize,
}

impl Iterator for TryIter<'_> {
    type Item = Message;
    fn next(&mut self) -> Option<Message> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        self.rx.try_recv().ok()
    }
}

impl Iterator for Subscription {
    type Item = Message;
    fn next(&mut self) -> Option<Message> {
        self.wait(None).ok()
    }
}

/// Blocking iteration over a borrowed [`Subscription`] (`for msg in &sub`); ends when the
/// subscription does.
#[derive(Debug)]
pub struct Iter<'a> {
    sub: &'a Subscription,
}

impl Iterator for Iter<'_> {
    type Item = Message;
    fn next(&mut self) -> Option<Message> {
        self.sub.wait(None).ok()
    }
}

impl<'a> IntoIterator for &'a Subscription {
    type Item = Message;
    type IntoIter = Iter<'a>;
    fn into_iter(self) -> Iter<'a> {
        Iter { sub: self }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connection::Sink;
    use crate::mqtt::codec::PublishFrame;

    fn message(i: u32) -> Message {
        let mut bytes = vec![0x30, 7, 0, 1, b't'];
        bytes.extend_from_slice(&i.to_be_bytes());
        let frame = PublishFrame::parse(bytes.into(), 2).unwrap();
        Message::new(frame, "p".into())
    }

    /// Delivered the way I/O threads do (first of a batch rung at once, the batch rung after
    /// it), by two providers sharing the subscription, in batches of varying size with
    /// yields, to a receiver that sleeps whenever it is empty: every message arrives, in order
    /// per provider, none waits for a timeout, and the iteration ends when both sinks are gone.
    #[test]
    fn no_wake_up_is_lost() {
        let (tx, rx) = crossbeam_channel::unbounded();
        let bell = Arc::new(Doorbell::default());
        let sub = Subscription::new(
            1,
            rx,
            &[],
            vec!["t".into()],
            Arc::new(AtomicU64::new(0)),
            Duration::from_secs(1),
            bell.clone(),
        );
        let per_provider = 100_000u32;
        let producers: Vec<_> = (0..2u32)
            .map(|p| {
                let sink = Sink {
                    tx: Some(tx.clone()),
                    capacity: usize::MAX,
                    bytes: Arc::new(std::sync::atomic::AtomicUsize::new(0)),
                    max_bytes: usize::MAX,
                    dropped: Arc::new(AtomicU64::new(0)),
                    bell: bell.clone(),
                };
                std::thread::spawn(move || {
                    let mut i = 0;
                    let mut batch = 1 + p;
                    while i < per_provider {
                        let mut scheduled = false;
                        for _ in 0..batch.min(per_provider - i) {
                            assert!(sink.deliver(message(p << 24 | i)));
                            if sink.bell.schedule() {
                                sink.bell.ring();
                                scheduled = true;
                            }
                            i += 1;
                        }
                        if scheduled {
                            sink.bell.ring_scheduled();
                        }
                        batch = batch % 37 + 1;
                        if i % 5000 == 0 {
                            std::thread::yield_now();
                        }
                    }
                })
            })
            .collect();
        drop((tx, bell));
        let mut next = [0u32; 2];
        for k in 0..2 * per_provider {
            // A lost wake-up shows as a receive that lasts its whole timeout (it then finds
            // the message on its own).
            let t = Instant::now();
            let m = sub
                .recv_timeout(Duration::from_secs(5))
                .unwrap_or_else(|e| panic!("message {k}: {e:?}"));
            assert!(
                t.elapsed() < Duration::from_secs(4),
                "message {k}: not woken"
            );
            let v = u32::from_be_bytes(m.payload().try_into().unwrap());
            let (p, i) = ((v >> 24) as usize, v & 0xff_ffff);
            assert_eq!(i, next[p], "provider {p} in order");
            next[p] += 1;
        }
        for p in producers {
            p.join().unwrap();
        }
        assert!(sub.recv().is_none(), "ends once every sink is gone");
    }

    /// The buffer is bounded in bytes too; a message gives its bytes back when the caller
    /// drops it, whichever way it was received.
    #[test]
    fn the_byte_bound_drops_and_counts_and_frees_on_receive() {
        let (tx, rx) = crossbeam_channel::unbounded();
        let bell = Arc::new(Doorbell::default());
        let dropped = Arc::new(AtomicU64::new(0));
        let sub = Subscription::new(
            1,
            rx,
            &[],
            vec!["t".into()],
            dropped.clone(),
            Duration::from_secs(1),
            bell.clone(),
        );
        let big = |i: u32| {
            let mut bytes = vec![0x30, 0x7f, 0, 1, b't'];
            bytes.extend_from_slice(&i.to_be_bytes());
            bytes.resize(2 + 0x7f, 0);
            Message::new(PublishFrame::parse(bytes.into(), 2).unwrap(), "p".into())
        };
        let bytes = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let sink = Sink {
            tx: Some(tx),
            capacity: 100,
            bytes: bytes.clone(),
            max_bytes: 300,
            dropped: dropped.clone(),
            bell,
        };
        assert!(sink.deliver(big(0)) && sink.deliver(big(1)));
        assert!(
            !sink.deliver(big(2)),
            "a third 129-byte message is over 300 bytes"
        );
        assert_eq!(sub.dropped(), 1);
        assert_eq!(bytes.load(Ordering::SeqCst), 2 * 129);
        drop(sub.try_recv().unwrap());
        assert_eq!(bytes.load(Ordering::SeqCst), 129);
        assert!(sink.deliver(big(3)));
        let kept: Vec<Message> = sub.try_iter().collect();
        assert_eq!(bytes.load(Ordering::SeqCst), 2 * 129, "held by the caller");
        drop(kept);
        assert_eq!(bytes.load(Ordering::SeqCst), 0);
    }
}

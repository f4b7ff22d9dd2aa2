//! Delivery, the I/O thread's side and the application's: [`Sink`]s the driver delivers
//! into, the [`Inbox`] a `Subscription` reads, the [`Doorbell`] that wakes a sleeping reader,
//! and [`Rings`], the driver's batching of those wake-ups. The mirror image of `queue.rs`,
//! which carries commands the other way.

use std::sync::atomic::{fence, AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TryRecvError};

pub(crate) use super::wake::Flow;
use crate::message::Message;

/// How the I/O thread wakes a `Subscription` blocked in `recv`, `recv_timeout` or iteration.
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
    /// The subscription ended (unsubscribe): sinks deliver nothing more, receivers take
    /// nothing more, whatever the I/O threads still hold before they take the unsubscribe.
    closed: AtomicBool,
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

/// Where a subscription's messages go, its capacity, and its loss counter.
///
/// The channel is crossbeam's list flavour, which allocates as it fills; the capacity is
/// enforced here (a bounded array channel would allocate and touch every slot up front:
/// 8192 slots are ~192 KiB per subscription).
pub(crate) struct Sink {
    /// `None` only while being dropped.
    pub tx: Option<Sender<Message>>,
    pub capacity: usize,
    /// Bytes of the messages buffered now (every provider's sink of a subscription shares
    /// it; each message gives its share back when dropped), and their bound.
    pub bytes: Arc<std::sync::atomic::AtomicUsize>,
    pub max_bytes: usize,
    pub dropped: Arc<AtomicU64>,
    pub bell: Arc<Doorbell>,
    /// Acknowledge after processing: never drops; its provider stops reading instead.
    pub flow: Option<Arc<Flow>>,
}

impl Drop for Sink {
    fn drop(&mut self) {
        // The sender goes first, so that a receiver woken by the bell can see the channel
        // disconnected once every provider's sink is gone.
        self.tx = None;
        self.bell.ring();
    }
}

impl Sink {
    /// Queues `msg` for the subscription; `true` when queued (the sink's bell then needs a
    /// ring, see [`Doorbell`]).
    pub fn deliver(&self, mut msg: Message) -> bool {
        let Some(tx) = &self.tx else { return false };
        if self.bell.closed.load(Ordering::SeqCst) {
            // Unsubscribed: not delivered (an acknowledging message would hold up every
            // later acknowledgement of the provider until the subscription is dropped).
            return false;
        }
        if let Some(flow) = &self.flow {
            // Never dropped: the provider stops reading while the subscription is full, so
            // at most one read's worth of messages goes past its bound.
            msg.charge(&self.bytes);
            msg.hold_in(flow);
            return tx.send(msg).is_ok();
        }
        // One I/O thread per provider delivers to a sink: with several providers the buffer
        // may exceed the capacity by at most one message per provider. The byte bound lets
        // one message in even when it alone is larger (into an empty buffer).
        let held = self.bytes.load(Ordering::Acquire);
        let result = if tx.len() >= self.capacity
            || (held > 0 && held.saturating_add(msg.size()) > self.max_bytes)
        {
            Err(crossbeam_channel::TrySendError::Full(msg))
        } else {
            msg.charge(&self.bytes);
            tx.try_send(msg)
        };
        match result {
            Ok(()) => true,
            Err(crossbeam_channel::TrySendError::Full(msg)) => {
                // A slow subscriber never stalls the I/O thread or other subscriptions: the
                // message is counted as lost for this subscription and logged.
                let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                if n == 1 || n.is_power_of_two() {
                    log::warn!(
                        "subscription buffer full: dropped message on {:?} ({n} dropped so far on this subscription)",
                        msg.topic()
                    );
                }
                false
            }
            Err(crossbeam_channel::TrySendError::Disconnected(_)) => false,
        }
    }
}

/// Makes one [`Sink`] per provider for an [`Inbox`]; dropped once they are made, so that the
/// inbox sees its channel end when the last sink goes.
pub(crate) struct SinkFactory {
    tx: Sender<Message>,
    capacity: usize,
    max_bytes: usize,
    bytes: Arc<AtomicUsize>,
    dropped: Arc<AtomicU64>,
    bell: Arc<Doorbell>,
    flow: Option<Arc<Flow>>,
}

impl SinkFactory {
    pub fn sink(&self) -> Sink {
        Sink {
            tx: Some(self.tx.clone()),
            capacity: self.capacity,
            bytes: self.bytes.clone(),
            max_bytes: self.max_bytes,
            dropped: self.dropped.clone(),
            bell: self.bell.clone(),
            flow: self.flow.clone(),
        }
    }

    /// Makes the subscription acknowledge after processing (see [`Flow`]).
    pub fn ack_after_processing(&mut self) {
        self.flow = Some(Arc::new(Flow {
            held: AtomicUsize::new(0),
            capacity: self.capacity,
            bytes: self.bytes.clone(),
            max_bytes: self.max_bytes,
            paused: AtomicUsize::new(0),
            wakes: std::sync::Mutex::new(Vec::new()),
        }));
    }
}

/// A subscription's buffer, as the application reads it.
pub(crate) struct Inbox {
    rx: Receiver<Message>,
    bell: Arc<Doorbell>,
    dropped: Arc<AtomicU64>,
}

/// A bounded inbox (`capacity` messages, `max_bytes` bytes) and the factory of its sinks.
pub(crate) fn inbox(capacity: usize, max_bytes: usize) -> (SinkFactory, Inbox) {
    // crossbeam's list flavour, which allocates as it fills; the bounds are enforced by the
    // sinks (an array channel would allocate and touch every slot up front).
    let (tx, rx) = crossbeam_channel::unbounded();
    let bell = Arc::new(Doorbell::default());
    let dropped = Arc::new(AtomicU64::new(0));
    (
        SinkFactory {
            tx,
            capacity,
            max_bytes,
            bytes: Arc::new(AtomicUsize::new(0)),
            dropped: dropped.clone(),
            bell: bell.clone(),
            flow: None,
        },
        Inbox { rx, bell, dropped },
    )
}

impl Inbox {
    /// The next message, waiting until `deadline` (`None`: for ever) without spinning.
    pub fn wait(&self, deadline: Option<Instant>) -> Result<Message, RecvTimeoutError> {
        let bell = &*self.bell;
        loop {
            match self.try_recv() {
                Ok(m) => return Ok(m),
                Err(TryRecvError::Disconnected) => return Err(RecvTimeoutError::Disconnected),
                Err(TryRecvError::Empty) => {}
            }
            bell.waiting.fetch_add(1, Ordering::SeqCst);
            fence(Ordering::SeqCst);
            let guard = bell.lock.lock().unwrap_or_else(|e| e.into_inner());
            // Checked again under the lock `ring` takes before notifying: no wake-up is missed.
            let outcome = match self.try_recv() {
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

    /// The next message if one is buffered; `Disconnected` once closed.
    pub fn try_recv(&self) -> Result<Message, TryRecvError> {
        let closed = || self.bell.closed.load(Ordering::SeqCst);
        if closed() {
            return Err(TryRecvError::Disconnected);
        }
        let got = self.rx.try_recv();
        // A receiver that raced `close` (it checked before, took after) gives it up.
        if got.is_ok() && closed() {
            return Err(TryRecvError::Disconnected);
        }
        got
    }

    /// Ends receiving now, waking a receiver that waits; buffered messages are discarded.
    /// Sinks deliver nothing from now on; [`Inbox::discard`] drops what one was delivering
    /// meanwhile.
    pub fn close(&self) {
        self.bell.closed.store(true, Ordering::SeqCst);
        self.bell.ring();
        self.discard();
    }

    /// Drops every buffered message (and with it what an acknowledging one holds up).
    pub fn discard(&self) {
        while self.rx.try_recv().is_ok() {}
    }

    /// The channel (bypasses the doorbell: crossbeam's own blocking applies).
    pub fn receiver(&self) -> &Receiver<Message> {
        &self.rx
    }

    /// Messages buffered now.
    pub fn len(&self) -> usize {
        if self.bell.closed.load(Ordering::SeqCst) {
            return 0;
        }
        self.rx.len()
    }

    /// Messages dropped because the buffer was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// The driver's wake-ups: the first message delivered to a sink in a batch rings its bell at
/// once (a lone message is not delayed), and the rest of the batch is covered by one more
/// ring after it ([`Rings::ring`]).
#[derive(Default)]
pub(crate) struct Rings(Vec<Arc<Doorbell>>);

impl Rings {
    /// Delivers `msg` to `sink`, scheduling its wake-up; `false` if it was dropped.
    #[inline]
    pub fn deliver(&mut self, sink: &Sink, msg: Message) -> bool {
        let delivered = sink.deliver(msg);
        if delivered && sink.bell.schedule() {
            sink.bell.ring();
            self.0.push(sink.bell.clone());
        }
        delivered
    }

    /// Wakes the readers given messages since the last call: once per batch read.
    pub fn ring(&mut self) {
        for bell in self.0.drain(..) {
            bell.ring_scheduled();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mqtt::packet::PublishFrame;
    use std::time::Duration;

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
        let (sinks, sub) = inbox(usize::MAX, usize::MAX);
        let per_provider = 100_000u32;
        let producers: Vec<_> = (0..2u32)
            .map(|p| {
                let sink = sinks.sink();
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
        drop(sinks);
        let mut next = [0u32; 2];
        for k in 0..2 * per_provider {
            // A lost wake-up shows as a receive that lasts its whole timeout (it then finds
            // the message on its own).
            let t = Instant::now();
            let m = sub
                .wait(Some(Instant::now() + Duration::from_secs(30)))
                .unwrap_or_else(|e| panic!("message {k}: {e:?}"));
            assert!(
                t.elapsed() < Duration::from_secs(15),
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
        assert!(sub.wait(None).is_err(), "ends once every sink is gone");
    }

    /// The buffer is bounded in bytes too; a message gives its bytes back when the caller
    /// drops it, whichever way it was received.
    #[test]
    fn the_byte_bound_drops_and_counts_and_frees_on_receive() {
        let (sinks, sub) = inbox(100, 300);
        let big = |i: u32| {
            let mut bytes = vec![0x30, 0x7f, 0, 1, b't'];
            bytes.extend_from_slice(&i.to_be_bytes());
            bytes.resize(2 + 0x7f, 0);
            Message::new(PublishFrame::parse(bytes.into(), 2).unwrap(), "p".into())
        };
        let bytes = sinks.bytes.clone();
        let sink = sinks.sink();
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
        let kept: Vec<Message> = std::iter::from_fn(|| sub.try_recv().ok()).collect();
        assert_eq!(bytes.load(Ordering::SeqCst), 2 * 129, "held by the caller");
        drop(kept);
        assert_eq!(bytes.load(Ordering::SeqCst), 0);
    }
}

//! [`Subscription`]: a bounded stream of messages that is also an `Iterator`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvError, RecvTimeoutError, TryRecvError};

use crate::connection::inbox::Inbox;
use crate::connection::{deadline_after, Connection};
use crate::error::{Error, Operation};
use crate::message::Message;

/// Messages of one subscribe call, from every provider it was made on.
///
/// - Blocking: `for msg in &sub { .. }` or [`Subscription::recv`]; the iteration ends when it
///   is unsubscribed, its providers are removed, or the `PubSub` closes.
/// - Non-blocking: [`Subscription::try_recv`], [`Subscription::try_iter`] (drain once per frame
///   in a game loop), [`Subscription::recv_timeout`].
/// - `select!`: [`Subscription::receiver`].
///
/// The buffer is bounded, in messages and in bytes. When it is full the I/O thread does not
/// wait: the message is dropped for this subscription only, counted in
/// [`Subscription::dropped`] and logged at `warn` — whatever its QoS (the broker's QoS 1/2
/// guarantee ends at our PUBACK). Size the buffer with `SubscribeOptions::capacity` and
/// `max_bytes` for bursts you must not lose.
///
/// Dropping it stops delivery at once, without blocking; see [`Subscription::unsubscribe`].
///
/// ```no_run
/// use std::time::Duration;
/// use mqtt_pubsub::{MqttOverWsProvider, PubSub};
///
/// let pubsub = PubSub::new();
/// pubsub.add_provider(MqttOverWsProvider::builder("ws://localhost:8080/mqtt").build()?)?;
/// let sub = pubsub.subscribe(["sensors/+/temp", "alerts/#"])?;
/// // A game loop: whatever arrived since the last frame, never blocking.
/// for msg in sub.try_iter() {
///     println!("{}: {}", msg.topic(), msg.text()?);
/// }
/// // A script: wait a while for one.
/// if let Ok(msg) = sub.recv_timeout(Duration::from_secs(5)) {
///     println!("{msg:?}");
/// }
/// # Ok::<(), mqtt_pubsub::Error>(())
/// ```
pub struct Subscription {
    id: u64,
    inbox: Inbox,
    targets: Vec<Weak<Connection>>,
    topics: Vec<String>,
    timeout: Duration,
    active: AtomicBool,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("topics", &self.topics)
            .field("buffered", &self.inbox.len())
            .field("dropped", &self.dropped())
            .finish()
    }
}

impl Subscription {
    pub(crate) fn new(
        id: u64,
        inbox: Inbox,
        targets: &[Arc<Connection>],
        topics: Vec<String>,
        timeout: Duration,
    ) -> Subscription {
        Subscription {
            id,
            inbox,
            targets: targets.iter().map(Arc::downgrade).collect(),
            topics,
            timeout,
            active: AtomicBool::new(true),
        }
    }

    fn wait(&self, deadline: Option<Instant>) -> Result<Message, RecvTimeoutError> {
        self.inbox.wait(deadline)
    }

    /// Blocks for the next message; `Err(RecvError)` once the subscription has ended
    /// (unsubscribed, or its providers closed), as crossbeam's `Receiver::recv` does.
    ///
    /// ```no_run
    /// # let pubsub = mqtt_pubsub::PubSub::new();
    /// let sub = pubsub.subscribe("sensors/#")?;
    /// while let Ok(msg) = sub.recv() {
    ///     println!("{}: {:?}", msg.topic(), msg.payload());
    /// }
    /// # Ok::<(), mqtt_pubsub::Error>(())
    /// ```
    pub fn recv(&self) -> Result<Message, RecvError> {
        self.wait(None).map_err(|_| RecvError)
    }

    /// The next message if one is buffered, without blocking.
    pub fn try_recv(&self) -> Result<Message, TryRecvError> {
        self.inbox.try_recv()
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
            inbox: &self.inbox,
            left: self.inbox.len(),
        }
    }

    /// The underlying channel, for `crossbeam_channel::select!` (re-exported as
    /// [`crate::crossbeam_channel`], so that the versions match). Receiving through it
    /// directly uses crossbeam's own blocking (a short spin, then park), not the doorbell
    /// that `recv` sleeps on; both see the same messages. After
    /// [`unsubscribe`](Subscription::unsubscribe) the channel disconnects when every I/O
    /// thread has taken the unsubscribe (at once, unless one is inside a connect attempt);
    /// `recv` and the iterators end at once.
    pub fn receiver(&self) -> &Receiver<Message> {
        self.inbox.receiver()
    }

    /// The filters it was made with.
    pub fn topics(&self) -> &[String] {
        &self.topics
    }

    /// Messages lost because the buffer was full.
    pub fn dropped(&self) -> u64 {
        self.inbox.dropped()
    }

    /// Messages buffered now.
    pub fn len(&self) -> usize {
        self.inbox.len()
    }

    /// Whether no message is buffered now.
    pub fn is_empty(&self) -> bool {
        self.inbox.len() == 0
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
    ///
    /// Returns [`Error::Timeout`] (operation [`Operation::Unsubscribe`]) when an I/O thread
    /// did not confirm in time; delivery has stopped all the same, and the thread still
    /// removes the route when it takes the command.
    ///
    /// ```no_run
    /// # let pubsub = mqtt_pubsub::PubSub::new();
    /// let sub = pubsub.subscribe("sensors/#")?;
    /// // ...
    /// sub.unsubscribe()?;
    /// assert!(sub.recv().is_err());
    /// # Ok::<(), mqtt_pubsub::Error>(())
    /// ```
    pub fn unsubscribe(&self) -> Result<(), Error> {
        if !self.active.swap(false, Ordering::SeqCst) {
            return Ok(());
        }
        // Receiving ends now, also for a thread blocked in `recv` and whatever an I/O
        // thread still delivers before it takes the command.
        self.inbox.close();
        let deadline = deadline_after(self.timeout);
        let mut waits = Vec::new();
        for c in self.targets.iter().filter_map(Weak::upgrade) {
            if let Ok(rx) = c.unsubscribe(self.id) {
                waits.push(rx);
            }
        }
        let mut late = false;
        for rx in waits {
            // Disconnected means the I/O thread is gone, which removed the route too.
            late |= matches!(rx.recv_deadline(deadline), Err(RecvTimeoutError::Timeout));
        }
        // What a thread delivered between `close` and taking the command (it checked the
        // flag just before): the channel is empty from here on, `receiver()` included.
        self.inbox.discard();
        if late {
            return Err(Error::Timeout {
                operation: Operation::Unsubscribe,
                detail: "delivery has stopped; the I/O thread removes the route when it takes the command",
                unfinished: None,
                target: None,
                limit: Some(self.timeout),
            });
        }
        Ok(())
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
            c.drop_subscription(self.id);
        }
    }
}

/// The messages buffered when [`Subscription::try_iter`] was called; never blocks.
///
/// ```no_run
/// # let pubsub = mqtt_pubsub::PubSub::new();
/// let sub = pubsub.subscribe("game/#")?;
/// loop {
///     for msg in sub.try_iter() {
///         println!("{}", msg.topic());
///     }
///     // ... the rest of the frame
/// #   break;
/// }
/// # Ok::<(), mqtt_pubsub::Error>(())
/// ```
pub struct TryIter<'a> {
    inbox: &'a Inbox,
    left: usize,
}

impl std::fmt::Debug for TryIter<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TryIter").field("left", &self.left).finish()
    }
}

impl Iterator for TryIter<'_> {
    type Item = Message;
    fn next(&mut self) -> Option<Message> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        self.inbox.try_recv().ok()
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
///
/// ```no_run
/// # let pubsub = mqtt_pubsub::PubSub::new();
/// let sub = pubsub.subscribe("sensors/#")?;
/// for msg in &sub {
///     println!("{}: {} bytes", msg.topic(), msg.payload().len());
/// }
/// # Ok::<(), mqtt_pubsub::Error>(())
/// ```
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

//! One provider's connection: a handle for callers and the I/O thread behind it.

mod backoff;
pub(crate) use backoff::random_u64;
mod driver;
pub(crate) mod inbox;
mod poller;
mod queue;
pub(crate) mod spec;
pub(crate) mod wake;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use poller::Poller;
pub(crate) use wake::Wake;

pub(crate) use crate::deadline::deadline_after;
use crate::error::{Error, Operation, Result};
use crate::mqtt::QoS;
use crate::state::{ConnectionState, SharedState, StateHub};
use spec::{Limits, ProviderSpec};

/// The reply to a blocking request.
pub(crate) type Reply = Sender<Result<()>>;

/// A request to the I/O thread (made by [`Connection`]'s methods only).
enum Command {
    Publish {
        packet: crate::mqtt::packet::Outgoing,
        reply: Option<Reply>,
    },
    Subscribe {
        id: u64,
        filters: Vec<(String, QoS)>,
        /// MQTT 5 subscription option bits (no local, retain as published, retain handling).
        options: u8,
        sink: inbox::Sink,
        reply: Reply,
    },
    /// Removes subscription `id`; with `keep`, its filters stay on the broker (a persistent
    /// session's subscription outlives the `Subscription` value).
    Unsubscribe {
        id: u64,
        keep: bool,
        reply: Option<Sender<()>>,
    },
    /// Replies once every publish accepted before it is done (QoS 0 written to the socket,
    /// QoS 1/2 acknowledged).
    Flush { reply: Reply },
}

/// The caller's side of a provider connection.
pub(crate) struct Connection {
    pub name: Arc<str>,
    /// The MQTT version it speaks.
    pub version: crate::MqttVersion,
    pub limits: Limits,
    pub operation_timeout: Duration,
    pub subscription_capacity: usize,
    pub subscription_max_bytes: usize,
    /// Every subscription acknowledges after processing.
    pub ack_after_processing: bool,
    pub offline_qos0: crate::options::OfflineQoS0,
    /// Whether the session is clean (a persistent one keeps subscriptions on drop).
    clean_session: bool,
    /// Whether CONNECT said the session ends with the connection (MQTT 5 session expiry 0).
    session_expiry_zero: bool,
    cmd_tx: queue::QueueSender<Command>,
    wake: Arc<Wake>,
    closing: Arc<AtomicBool>,
    /// Set by the I/O thread when it ended with publishes unfinished (`close()` reports it).
    unfinished: Arc<AtomicBool>,
    /// What a flush timeout reports.
    pending: Arc<Pending>,
    state: Arc<SharedState>,
    /// The I/O thread's counters, as of its last turn.
    stats: Arc<crate::stats::Cell>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

/// A provider that ends without its I/O thread (a panic while connecting or serving, a
/// thread that could not be spawned): logged, the state says Disconnected, and state
/// listeners hear why. Returns the reason.
fn ended(state: &SharedState, hub: &StateHub, name: &str, reason: String) -> String {
    log::error!("provider {name}: {reason}");
    state.set(ConnectionState::Disconnected);
    hub.emit(crate::state::StateEvent {
        provider: name.to_string(),
        state: ConnectionState::Disconnected,
        reason: Some(reason.clone()),
        url: None,
        response_information: None,
        connack: None,
    });
    reason
}

/// What a panic said.
fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

impl Connection {
    /// Makes the first connection on this thread (until CONNACK, or the error that prevented
    /// it), then starts the I/O thread with it. `closing` is the connection's close flag:
    /// set by another thread while this one connects, it abandons the attempt (`Closed`).
    pub fn open(spec: ProviderSpec, hub: StateHub, closing: Arc<AtomicBool>) -> Result<Connection> {
        let wake = Arc::new(Wake::new(Poller::new().map_err(|e| Error::Io {
            context: "creating the poller",
            source: e,
            target: None,
        })?));
        let (cmd_tx, cmd_rx) = queue::queue(spec.options.queue_capacity);
        let unfinished = Arc::new(AtomicBool::new(false));
        let pending = Arc::new(Pending::default());
        let state = Arc::new(SharedState::new(ConnectionState::Connecting));
        let name: Arc<str> = spec.name.clone().into();
        let limits = spec.limits.clone();
        let operation_timeout = spec.options.operation_timeout;
        let subscription_capacity = spec.options.subscription_capacity;
        let subscription_max_bytes = spec.options.subscription_max_bytes;
        let offline_qos0 = spec.options.offline_qos0;
        let ack_after_processing = spec.options.ack_after_processing;
        let clean_session = spec.options.clean_session;
        let session_expiry_zero = spec
            .options
            .v5_connect()
            .session_expiry
            .is_none_or(|s| s == 0);
        let version = spec.options.mqtt_version;
        // Boxed: the I/O thread's closure and `run` move a pointer, not the driver's 2.4 KB,
        // so the copies never land on (and stay resident in) the thread's stack.
        let stats = Arc::new(crate::stats::Cell::default());
        let mut driver = Box::new(driver::Driver::new(
            spec,
            cmd_rx,
            wake.clone(),
            closing.clone(),
            unfinished.clone(),
            pending.clone(),
            state.clone(),
            hub.clone(),
            stats.clone(),
        ));
        // The first attempt, on this thread (bounded by the connect timeout); a panic in it
        // becomes an error like one on the I/O thread.
        let start = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| driver.start()));
        let first = match start {
            Ok(Ok(first)) => first,
            Ok(Err(e)) => return Err(e),
            Err(panic) => {
                let reason = format!("connecting panicked: {}", panic_message(&*panic));
                return Err(Error::ConnectionLost(ended(&state, &hub, &name, reason)));
            }
        };
        let (panic_state, panic_hub, panic_name) = (state.clone(), hub.clone(), name.clone());
        // Boxed for the move onto the thread: the closure (which std's thread start copies
        // twice, see `Driver::run`) holds pointers only.
        let first = first.map(Box::new);
        let thread = std::thread::Builder::new()
            .name(format!("mqtt-pubsub:{name}"))
            .spawn(move || {
                // A panic must not leave the state lying: whoever waits is told, the state
                // says Disconnected with the reason, and callers get `Closed` (the driver's
                // reply handles are dropped by the unwinding).
                let run = std::panic::AssertUnwindSafe(move || driver.run(first.map(|b| *b)));
                if let Err(panic) = std::panic::catch_unwind(run) {
                    let reason = format!("the I/O thread panicked: {}", panic_message(&*panic));
                    ended(&panic_state, &panic_hub, &panic_name, reason);
                }
            })
            .map_err(|e| {
                // The connection made above is dropped with the driver: say so.
                ended(&state, &hub, &name, format!("spawning the I/O thread: {e}"));
                Error::Io {
                    context: "spawning the I/O thread",
                    source: e,
                    target: None,
                }
            })?;
        Ok(Connection {
            name,
            version,
            limits,
            operation_timeout,
            subscription_capacity,
            subscription_max_bytes,
            ack_after_processing,
            offline_qos0,
            clean_session,
            session_expiry_zero,
            cmd_tx,
            wake,
            closing,
            unfinished,
            pending,
            state,
            stats,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// The provider's counters, as of its I/O thread's last turn.
    pub fn stats(&self) -> crate::stats::ProviderStats {
        self.stats.snapshot()
    }

    /// Where the counters are stored (kept readable after the provider is gone).
    pub fn stats_cell(&self) -> Arc<crate::stats::Cell> {
        self.stats.clone()
    }

    /// Whether this provider's server (its last CONNACK) takes such a publish.
    pub fn check_server_limits(
        &self,
        qos: QoS,
        retain: bool,
        size: impl Fn() -> usize,
    ) -> Result<()> {
        self.state.check_publish(&self.name, qos, retain, size)
    }

    /// Starts a publish, blocking until `deadline` while the queue is full. QoS 1/2 give
    /// the receiver of their acknowledgement.
    pub fn publish(
        &self,
        topic: String,
        payload: Vec<u8>,
        qos: QoS,
        retain: bool,
        props: Vec<u8>,
        deadline: Instant,
    ) -> Result<Option<Receiver<Result<()>>>> {
        let (reply, rx) = if qos == QoS::AtMostOnce {
            (None, None)
        } else {
            let (tx, rx) = crossbeam_channel::bounded(1);
            (Some(tx), Some(rx))
        };
        let cmd = Command::Publish {
            packet: crate::mqtt::packet::Outgoing {
                topic,
                payload,
                qos,
                retain,
                props,
            },
            reply,
        };
        self.pending.untaken.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = self.send(cmd, deadline, Operation::Publish) {
            self.pending.untaken.fetch_sub(1, Ordering::Relaxed);
            return Err(e);
        }
        Ok(rx)
    }

    /// Starts subscription `id` delivering into `sink`; the receiver gets the outcome once
    /// every SUBACK is in.
    pub fn subscribe(
        &self,
        id: u64,
        filters: Vec<(String, QoS)>,
        options: u8,
        sink: inbox::Sink,
        deadline: Instant,
    ) -> Result<Receiver<Result<()>>> {
        let (reply, rx) = crossbeam_channel::bounded(1);
        let cmd = Command::Subscribe {
            id,
            filters,
            options,
            sink,
            reply,
        };
        self.send(cmd, deadline, Operation::Subscribe)?;
        Ok(rx)
    }

    /// Removes subscription `id` and UNSUBSCRIBEs what no one else wants, even on a
    /// persistent session; the receiver hears when the I/O thread has done it.
    pub fn unsubscribe(&self, id: u64) -> Result<Receiver<()>> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.send_control(Command::Unsubscribe {
            id,
            keep: false,
            reply: Some(tx),
        })?;
        Ok(rx)
    }

    /// Removes subscription `id` in the background, without waiting; a persistent session
    /// keeps its filters on the broker.
    pub fn drop_subscription(&self, id: u64) {
        let _ = self.send_control(Command::Unsubscribe {
            id,
            keep: !self.clean_session,
            reply: None,
        });
    }

    /// The receiver hears once every publish accepted before this call is done.
    pub fn flush(&self) -> Result<Receiver<Result<()>>> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.send_control(Command::Flush { reply: tx })?;
        Ok(rx)
    }

    /// Publishes unfinished: those the I/O thread held at its last turn (queued or awaiting
    /// acknowledgement) and those not taken by it yet.
    pub fn pending(&self) -> usize {
        // Untaken first, acquiring the I/O thread's release: a publish no longer counted
        // there is counted in `held` (see `Driver::command`).
        let untaken = self.pending.untaken.load(Ordering::Acquire);
        self.pending.held.load(Ordering::Relaxed) + untaken
    }

    /// Queues a command, blocking until `deadline` while the queue is full.
    fn send(&self, cmd: Command, deadline: Instant, op: Operation) -> Result<()> {
        // Once Disconnected has been announced, nothing more is served (the thread may still
        // be draining its channel).
        if self.state.get() == ConnectionState::Disconnected {
            return Err(Error::Closed);
        }
        match self.cmd_tx.send(cmd, deadline) {
            Ok(()) => {
                self.wake.notify();
                Ok(())
            }
            Err(queue::QueueError::Timeout(_)) => {
                Err(Error::timeout(op, "the outgoing queue stayed full"))
            }
            Err(queue::QueueError::Closed(_)) => Err(Error::Closed),
        }
    }

    /// Queues a control command (unsubscribe, flush) without waiting: these are not bounded
    /// by the queue's capacity (there are at most as many as there are subscriptions and
    /// flush calls), so they never block behind a full queue of publishes.
    fn send_control(&self, cmd: Command) -> Result<()> {
        if self.state.get() == ConnectionState::Disconnected {
            return Err(Error::Closed);
        }
        self.cmd_tx.send_unbounded(cmd).map_err(|_| Error::Closed)?;
        self.wake.notify();
        Ok(())
    }

    /// The current state.
    pub fn state(&self) -> ConnectionState {
        self.state.get()
    }

    /// Closes gracefully: what was accepted before is sent (QoS 1/2 acknowledged) within the
    /// close timeout, then DISCONNECT; what is left fails; the thread is joined. Idempotent.
    pub fn close(&self) {
        self.begin_close();
        self.join();
    }

    /// MQTT 5 DISCONNECT properties for the graceful close about to begin.
    pub fn set_disconnect_properties(&self, props: Vec<u8>) {
        self.state.set_disconnect_properties(props);
    }

    /// Whether the session ended with the connection as CONNECT said (session expiry 0).
    pub fn session_ends_with_connection(&self) -> bool {
        self.session_expiry_zero
    }

    /// Starts the graceful close without waiting (to close several providers at once).
    pub fn begin_close(&self) {
        self.closing.store(true, Ordering::SeqCst);
        self.wake.notify();
    }

    /// Whether the I/O thread ended with publishes it could not finish (after [`join`]).
    ///
    /// [`join`]: Connection::join
    pub fn ended_unfinished(&self) -> bool {
        self.unfinished.load(Ordering::SeqCst)
    }

    /// Waits for the I/O thread to end.
    pub fn join(&self) {
        let handle = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(h) = handle {
            if h.thread().id() != std::thread::current().id() {
                let _ = h.join();
            }
        }
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.close();
    }
}

/// What a flush timeout reports as unfinished, counted where each part is known.
#[derive(Debug, Default)]
pub(crate) struct Pending {
    /// Publishes the I/O thread holds unfinished, stored once per loop turn.
    pub held: std::sync::atomic::AtomicUsize,
    /// Publish commands sent by callers and not yet taken by the I/O thread.
    pub untaken: std::sync::atomic::AtomicUsize,
}

/// Waits on a reply channel until `deadline`.
pub(crate) fn wait_reply(
    rx: &Receiver<Result<()>>,
    deadline: Instant,
    op: Operation,
    detail: &'static str,
) -> Result<()> {
    match rx.recv_deadline(deadline) {
        Ok(r) => r,
        Err(crossbeam_channel::RecvTimeoutError::Timeout) => Err(Error::timeout(op, detail)),
        Err(crossbeam_channel::RecvTimeoutError::Disconnected) => Err(Error::Closed),
    }
}

//! The I/O thread of one provider: connect, move bytes between the socket and the session,
//! deliver messages, run timers, reconnect.
//!
//! After the blocking handshake the socket goes non-blocking and the thread sleeps in
//! `Poller::wait` until the socket is ready, a caller queues a command (`Poller::notify`), or
//! the keep-alive deadline comes. Idle means no wake-ups between keep-alive pings.

use std::collections::VecDeque;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use self::timing::{reading, sleep_for, CloseAction, Closing, Coalescer, MAX_BLOCKED_OUTPUT};
use super::poller::Interest;
use crossbeam_channel::TryRecvError;

use super::inbox::{Rings, Sink};
use super::spec::{Opener, ProviderSpec};
use super::{backoff, deadline_after, Command, Reply};
use crate::error::{Error, Operation, Result};
use crate::message::Message;
use crate::mqtt::codec::Framer;
use crate::mqtt::packet::{Inbound, Outgoing, Will};
use crate::mqtt::router::{Changes, Router};
use crate::mqtt::session::{Event as SessionEvent, Session, SessionConfig};
use crate::mqtt::QoS;
use crate::net::link::{self, Incoming, Link};
use crate::net::request;
use crate::options::ConnectionOptions;
use crate::outbox::Outbox;
use crate::state::{ConnectionState, SharedState, StateEvent, StateHub};

/// Stop taking commands once this much output waits for one write (one WebSocket frame).
const OUTPUT_BATCH: usize = 64 * 1024;
/// Events handled at most before they are dispatched (within one large frame).
const EVENT_BATCH: usize = 256;
/// Frames read per wake-up before writing and looking at commands again (fairness).
const FRAMES_PER_WAKE: usize = 256;
/// A connection that lived shorter than this does not reset the reconnect backoff: a broker
/// that accepts and then drops us at once is retried with growing delays.
const STABLE_AFTER: Duration = Duration::from_secs(10);

mod close;
mod connect;
mod deliver;
mod serve;
mod timing;

type Ws = Link;

enum Exit {
    Close,
    Lost(Error),
}

/// Messages of a persistent session that no subscription took yet (see
/// `unclaimed_capacity`): the broker sends what it stored right after CONNACK, before the
/// application subscribes.
#[derive(Default)]
struct Unclaimed {
    messages: VecDeque<Message>,
    bytes: usize,
    dropped: u64,
}

pub(crate) struct Driver {
    name: Arc<str>,
    opener: Box<dyn Opener>,
    /// The URL of the current (or last) connection, redacted.
    url_in_use: Option<String>,
    options: ConnectionOptions,
    cmd_rx: super::queue::QueueReceiver<Command>,
    wake: Arc<super::Wake>,
    closing: Arc<AtomicBool>,
    unfinished: Arc<AtomicBool>,
    state: Arc<SharedState>,
    hub: StateHub,
    session: Session<Reply>,
    router: Router<Sink>,
    framer: Framer,
    /// Subscriptions given messages since the last [`Driver::ring`].
    rings: Rings,
    /// `flush` calls waiting: the ticket every earlier publish is below, and the reply.
    flushes: Vec<(u64, Reply)>,
    unclaimed: Unclaimed,
    closing_state: Closing,
    /// Messages and subscriptions dropped because the broker refused them by disconnecting.
    refused: u64,
    /// The durable outbox, once opened ([`Driver::open_outbox`]).
    outbox: Option<Outbox>,
    /// What the outbox is bound to besides the client id.
    binding_url: String,
    /// Publishes recorded in the outbox, answered `Ok` once it is committed.
    accepted: Vec<Reply>,
    /// Small output held back ([`Driver::coalescing`]).
    coalescer: Coalescer,
    /// What a flush timeout reports (see `Connection::pending`).
    pending: Arc<super::Pending>,
    /// Acknowledgements waiting for the application, in arrival order (MQTT's order): a
    /// dead reference is a message every copy of which was dropped.
    acks: VecDeque<(u16, QoS, std::sync::Weak<crate::message::AckToken>)>,
    /// Subscriptions that acknowledge after processing, by id.
    flows: Vec<(u64, Arc<super::inbox::Flow>)>,
    /// Reading stopped because such a subscription is full.
    paused: bool,
    /// This thread's counts, stored into `stats` once per turn.
    tally: crate::stats::Tally,
    stats: Arc<crate::stats::Cell>,
    /// Incoming messages skipped as oversized (received, though the session never saw them).
    oversized: u64,
}

impl Driver {
    // Each handle is shared with `Connection` for one purpose; a struct of them would only
    // be unpacked again here.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        spec: ProviderSpec,
        cmd_rx: super::queue::QueueReceiver<Command>,
        wake: Arc<super::Wake>,
        closing: Arc<AtomicBool>,
        unfinished: Arc<AtomicBool>,
        pending: Arc<super::Pending>,
        state: Arc<SharedState>,
        hub: StateHub,
        stats: Arc<crate::stats::Cell>,
    ) -> Driver {
        let o = &spec.options;
        let client_id = o
            .client_id
            .clone()
            .unwrap_or_else(|| format!("mqtt-pubsub-{:016x}", backoff::random_u64()));
        let cfg = SessionConfig {
            client_id,
            keep_alive: o.keep_alive,
            clean_session: o.clean_session,
            username: o.username.clone(),
            password: o.password.clone(),
            will: o.will.as_ref().map(|w| Will {
                topic: w.topic.clone(),
                payload: w.payload.clone(),
                qos: w.qos,
                retain: w.retain,
                props: w.props.clone(),
            }),
            max_inflight: o.max_inflight,
            // MQTT 5 servers say their window in CONNACK.
            max_inflight_qos2: match o.mqtt_version {
                crate::MqttVersion::V3_1_1 => o.max_inflight_qos2,
                _ => 0,
            },
            max_queued: o.queue_capacity,
            max_filters_per_subscribe: spec.limits.max_filters_per_subscribe,
            version: o.mqtt_version,
            v5: o.v5_connect(),
        };
        let mut session = Session::new(cfg, Instant::now());
        session.set_deferred_acks(spec.options.ack_after_processing);
        Driver {
            name: spec.name.into(),
            framer: Framer::with_version(o.max_packet_size, o.mqtt_version),
            opener: spec.opener,
            url_in_use: None,
            options: spec.options,
            cmd_rx,
            wake,
            closing,
            unfinished,
            state,
            hub,
            session,
            router: Router::default(),
            rings: Rings::default(),
            flushes: Vec::new(),
            unclaimed: Unclaimed::default(),
            closing_state: Closing::No,
            refused: 0,
            outbox: None,
            binding_url: spec.binding_url,
            accepted: Vec::new(),
            coalescer: Coalescer::default(),
            pending,
            acks: VecDeque::new(),
            flows: Vec::new(),
            paused: false,
            tally: crate::stats::Tally::default(),
            stats,
            oversized: 0,
        }
    }

    /// Stores the counts into what [`crate::PubSub::stats`] reads: once per turn of the
    /// loop, and before a flush or close answers.
    fn publish_stats(&mut self) {
        use crate::stats::Counter as K;
        let c = self.session.counts;
        let t = &mut self.tally;
        t.set(K::Published, c.published);
        t.set(K::Sent, c.sent);
        t.set(K::Acknowledged, c.acknowledged);
        t.set(K::Resent, c.resent);
        // A message skipped as oversized was received too (the framer skips it before the
        // session sees it).
        t.set(K::Received, c.received + self.oversized);
        t.set(K::DroppedUnclaimed, self.unclaimed.dropped);
        t.set(K::InFlight, self.session.inflight() as u64);
        t.set(
            K::Queued,
            (self.session.queued() + self.cmd_rx.len()) as u64,
        );
        t.set(K::Unclaimed, self.unclaimed.messages.len() as u64);
        self.pending
            .held
            .store(self.session.unfinished_publishes(), Ordering::Relaxed);
        if let Some(o) = &self.outbox {
            t.set(K::OutboxRecords, o.records());
            t.set(K::OutboxBytes, o.live_bytes());
        }
        self.stats.store(&self.tally);
    }

    /// Opens the outbox (when configured) and gives the session what it kept.
    fn open_outbox(&mut self) -> Result<()> {
        let Some(options) = self.options.outbox() else {
            return Ok(());
        };
        let client_id = self.options.client_id.clone().unwrap_or_default();
        let (outbox, kept) = Outbox::open(&options, &client_id, &self.binding_url)?;
        if !kept.publishes.is_empty() || !kept.inbound_qos2.is_empty() {
            log::info!(
                "provider {}: outbox {} kept {} unfinished publishes and {} incoming QoS 2 \
                 identifiers from an earlier process; resending",
                self.name,
                outbox.path().display(),
                kept.publishes.len(),
                kept.inbound_qos2.len()
            );
        }
        // Restored publishes count as published (by this provider, for an earlier process).
        self.session.counts.published += kept.publishes.len() as u64;
        self.session
            .restore(kept.publishes, kept.inbound_qos2, kept.next_ticket);
        self.session.enable_journal();
        self.outbox = Some(outbox);
        Ok(())
    }

    /// Makes what the session recorded durable (as the outbox's mode promises), then tells
    /// the callers whose publishes it accepted. Called after taking commands and before
    /// writing output.
    fn commit_outbox(&mut self) {
        let Some(outbox) = self.outbox.as_mut() else {
            return;
        };
        outbox.journal(self.session.take_journal());
        if !outbox.dirty() && self.accepted.is_empty() {
            return;
        }
        match outbox.commit() {
            Ok(()) => {
                for reply in self.accepted.drain(..) {
                    let _ = reply.send(Ok(()));
                }
            }
            Err(e) => {
                log::error!("provider {}: {e}", self.name);
                for reply in self.accepted.drain(..) {
                    let _ = reply.send(Err(Error::Outbox {
                        path: outbox.path().display().to_string(),
                        message: format!("{e} (the publish may still be sent)"),
                    }));
                }
            }
        }
    }

    fn set_state(&self, state: ConnectionState, reason: Option<String>) {
        self.state.set(state);
        match &reason {
            Some(r) => log::info!("provider {}: {state} ({r})", self.name),
            None => log::info!("provider {}: {state}", self.name),
        }
        self.hub.emit(StateEvent {
            provider: self.name.to_string(),
            state,
            reason,
            url: (state == ConnectionState::Connected)
                .then(|| self.url_in_use.clone())
                .flatten(),
            response_information: (state == ConnectionState::Connected)
                .then(|| self.session.server_limits().response_information.clone())
                .flatten(),
            connack: (state == ConnectionState::Connected).then(|| self.connack()),
        });
    }

    /// What the last CONNACK said, for the `Connected` event.
    fn connack(&self) -> crate::state::Connack {
        let l = self.session.server_limits();
        crate::state::Connack {
            session_present: self.session.session_present(),
            assigned_client_id: l.assigned_client_id.clone(),
            keep_alive: match l.server_keep_alive {
                Some(0) | None => self.options.keep_alive,
                Some(s) => Duration::from_secs(s.into()),
            },
            receive_maximum: l.receive_maximum,
            maximum_packet_size: l.maximum_packet_size,
            maximum_qos: l.maximum_qos,
            retain_available: l.retain_available,
            topic_alias_maximum: l.topic_alias_maximum,
        }
    }

    fn closing(&self) -> bool {
        self.closing.load(Ordering::SeqCst)
    }

    /// The outbox, then the first connection, made on the caller's thread: it waits for it
    /// anyway, and the connect path's deep stack (handshake, HTTP parsing, TLS) then stays
    /// off the I/O thread, whose touched stack is most of an idle connection's memory.
    /// `Ok(None)`: the I/O thread is to connect — asked for (`connect_in_background`), or
    /// the first attempt failed while an outbox takes publishes meanwhile (the state says
    /// ConnectionDisrupted with the reason). On an error the state says Disconnected.
    pub fn start(&mut self) -> Result<Option<Ws>> {
        self.set_state(ConnectionState::Connecting, None);
        if let Err(e) = self.open_outbox() {
            self.set_state(ConnectionState::Disconnected, Some(e.to_string()));
            return Err(e);
        }
        if self.options.connect_in_background {
            return Ok(None);
        }
        match self.connect() {
            Ok(ws) => {
                self.set_state(ConnectionState::Connected, None);
                Ok(Some(ws))
            }
            Err(e) if self.outbox.is_some() && self.options.reconnect.enabled => {
                log::warn!(
                    "provider {}: not connected yet ({e}); publishes go to the outbox and \
                     the provider keeps trying",
                    self.name
                );
                self.set_state(ConnectionState::ConnectionDisrupted, Some(e.to_string()));
                Ok(None)
            }
            Err(e) => {
                self.set_state(ConnectionState::Disconnected, Some(e.to_string()));
                Err(e)
            }
        }
    }

    /// The I/O thread's life after [`Driver::start`]: connect if it did not, serve,
    /// reconnect, until closed.
    ///
    /// Most of an idle connection's memory is this thread's touched stack: two pages (the
    /// one holding the thread's control block, and the next) as long as an idle turn — the
    /// loop, an empty command queue, a PINGRESP — stays about 3.7 KB below the thread's
    /// start, and a third page (4 KiB more per connection) once anything goes deeper. So
    /// the first link crosses to the thread in a box (std's thread start copies the
    /// closure twice), `command` is not inlined into the loop, and a PINGRESP takes a short
    /// path (`Session::handle_inbound`). The benchmark's `idle-ours` measures it.
    pub fn run(mut self: Box<Self>, first: Option<Ws>) {
        let mut attempt = 0u32;
        let mut ws = match first {
            Some(ws) => ws,
            None => {
                // Asked to connect in the background: the first attempt goes at once.
                let at_once = self.state.get() == ConnectionState::Connecting;
                match self.reconnect(&mut attempt, at_once) {
                    Some(ws) => {
                        self.set_state(ConnectionState::Connected, None);
                        ws
                    }
                    None => {
                        self.shutdown(None);
                        return;
                    }
                }
            }
        };
        loop {
            let connected_at = Instant::now();
            match self.serve(&mut ws) {
                Exit::Close => {
                    self.shutdown(Some(ws));
                    return;
                }
                Exit::Lost(err) => {
                    log::warn!("provider {}: connection lost: {err}", self.name);
                    drop(ws);
                    self.session.on_lost(Instant::now());
                    self.framer.reset();
                    // A QoS 1 acknowledgement belonged to that connection: the broker resends
                    // what it did not get (at least once). A QoS 2 PUBREC waits on: the
                    // session (if the broker keeps it) resumes with the same identifier.
                    self.acks.retain(|(_, qos, _)| *qos == QoS::ExactlyOnce);
                    // A packet the broker refused by disconnecting was dropped: report it.
                    self.dispatch_events();
                    self.ring();
                    if connected_at.elapsed() >= STABLE_AFTER {
                        attempt = 0;
                    }
                    if !self.options.reconnect.enabled {
                        self.set_state(ConnectionState::Disconnected, Some(err.to_string()));
                        self.shutdown(None);
                        return;
                    }
                    self.set_state(ConnectionState::ConnectionDisrupted, Some(err.to_string()));
                    match self.reconnect(&mut attempt, false) {
                        Some(new) => {
                            ws = new;
                            self.tally.add(crate::stats::Counter::Reconnects, 1);
                            if !self.session.session_present() {
                                // No session kept: no identifier of the last one is ours.
                                self.acks.clear();
                            }
                            self.set_state(ConnectionState::Connected, None);
                        }
                        None => {
                            self.shutdown(None);
                            return;
                        }
                    }
                }
            }
        }
    }

    /// An error of the session's limit checks, with this provider named in it.
    fn name_provider(&self, e: Error) -> Error {
        match e {
            Error::PayloadTooLarge { size, max, limit } => Error::PayloadTooLarge {
                size,
                max,
                limit: format!("provider {}: {limit}", self.name),
            },
            Error::Unsupported(s) => Error::Unsupported(format!("provider {}: {s}", self.name)),
            other => other,
        }
    }

    fn report_refusal(&mut self, err: &Error) {
        self.refused += 1;
        self.report(format!("{err} ({} refused so far)", self.refused));
    }

    /// Logs `reason` and tells the state listeners, without a change of state.
    fn report(&self, reason: String) {
        log::warn!("provider {}: {reason}", self.name);
        self.hub.emit(StateEvent {
            provider: self.name.to_string(),
            state: self.state.get(),
            reason: Some(reason),
            url: None,
            response_information: None,
            connack: None,
        });
    }

    /// Wakes the subscriptions that were given messages: once per batch read, not per message.
    fn ring(&mut self) {
        self.rings.ring();
    }
}

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

use super::poller::Interest;
use crossbeam_channel::TryRecvError;

use super::inbox::{Rings, Sink};
use super::{backoff, deadline_after, Command, Reply};
use crate::error::{Error, Operation, Result};
use crate::message::Message;
use crate::mqtt::codec::Framer;
use crate::mqtt::packet::{Inbound, Will};
use crate::mqtt::router::{Changes, Router};
use crate::mqtt::session::{Event as SessionEvent, Session, SessionConfig};
use crate::mqtt::QoS;
use crate::net::link::{self, Incoming, Link};
use crate::net::websocket;
use crate::options::ConnectionOptions;
use crate::outbox::Outbox;
use crate::provider::{Opener, ProviderSpec};
use crate::state::{ConnectionState, SharedState, StateEvent, StateHub};

/// Stop taking commands once this much output waits for one write (one WebSocket frame).
const OUTPUT_BATCH: usize = 64 * 1024;
/// Events handled at most before they are dispatched (within one large frame).
const EVENT_BATCH: usize = 256;
/// Output beyond which the connection stops reading until it is written: every packet read
/// may add an acknowledgement, and a server that sends without reading must not grow our
/// memory. Checked per WebSocket frame, so the output stays under this plus one frame's
/// acknowledgements.
const MAX_BLOCKED_OUTPUT: usize = 256 * 1024;
/// Frames read per wake-up before writing and looking at commands again (fairness).
const FRAMES_PER_WAKE: usize = 256;
/// How long DISCONNECT may take to leave on close, after the close timeout's drain.
const CLOSE_FLUSH: Duration = Duration::from_secs(1);
/// Output smaller than this waits (Nagle-like) while acknowledgements are outstanding...
const COALESCE_BYTES: usize = 8 * 1024;
/// ...for at most this long: a QoS 1/2 stream goes out in fewer, larger writes.
const COALESCE_FOR: Duration = Duration::from_micros(200);
/// A connection that lived shorter than this does not reset the reconnect backoff: a broker
/// that accepts and then drops us at once is retried with growing delays.
const STABLE_AFTER: Duration = Duration::from_secs(10);

type Ws = Link;

enum Exit {
    Close,
    Lost(Error),
}

/// Where a graceful close stands.
#[derive(Clone, Copy)]
enum Closing {
    /// Not closing.
    No,
    /// Sending what was accepted and waiting for its acknowledgements, until the deadline.
    Draining(Instant),
    /// DISCONNECT is written; leaving once it is out or at the deadline.
    Disconnecting(Instant),
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
    /// Since when small output has been held back ([`Driver::coalescing`]).
    holding_since: Option<Instant>,
    /// What a flush timeout reports (see `Connection::pending`).
    pending: Arc<std::sync::atomic::AtomicUsize>,
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
        pending: Arc<std::sync::atomic::AtomicUsize>,
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
            holding_since: None,
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

    /// Retries until connected (`Some`) or closed (`None`), taking commands meanwhile.
    /// `attempt` counts attempts since the last stable connection (it sets the backoff);
    /// `at_once` makes the first attempt without waiting. With reconnecting off (only a
    /// background first connection gets here then) one failed attempt ends it.
    fn reconnect(&mut self, attempt: &mut u32, mut at_once: bool) -> Option<Ws> {
        loop {
            let delay = if std::mem::take(&mut at_once) {
                Duration::ZERO
            } else {
                backoff::delay(&self.options.reconnect, *attempt)
            };
            let deadline = deadline_after(delay);
            *attempt = attempt.saturating_add(1);
            loop {
                if self.closing() {
                    return None;
                }
                if let Err(TryRecvError::Disconnected) = self.take_commands() {
                    return None;
                }
                self.dispatch_events();
                self.ring();
                // Offline is when the queue and outbox gauges matter most.
                self.publish_stats();
                let now = Instant::now();
                if now >= deadline {
                    break;
                }
                self.commit_outbox();
                let wake = self
                    .outbox
                    .as_ref()
                    .and_then(Outbox::next_sync)
                    .map_or(deadline, |s| s.max(now).min(deadline));
                let (cmd_rx, session, closing) = (&self.cmd_rx, &self.session, &self.closing);
                let _ = self.wake.sleep(Some(wake - now), || {
                    (!cmd_rx.is_empty() && session.can_accept()) || closing.load(Ordering::SeqCst)
                });
            }
            self.set_state(ConnectionState::Connecting, None);
            match self.connect() {
                Ok(ws) => return Some(ws),
                Err(e) => {
                    if !self.options.reconnect.enabled {
                        self.set_state(ConnectionState::Disconnected, Some(e.to_string()));
                        return None;
                    }
                    if e.is_auth_refusal() {
                        log::error!("provider {}: refused: {e}; backing off", self.name);
                    }
                    self.set_state(ConnectionState::ConnectionDisrupted, Some(e.to_string()));
                }
            }
        }
    }

    /// One full connection attempt on each URL of the provider's plan in turn, until one
    /// connects; the error (of the last URL tried) is explained by the provider.
    fn connect(&mut self) -> Result<Ws> {
        let plan = self.opener.plan();
        let mut failed = Vec::new();
        for (n, url) in plan.iter().enumerate() {
            match self.try_connect(*url) {
                Ok(ws) => return Ok(ws),
                Err(e) => {
                    let e = self.opener.explain(e);
                    if n + 1 < plan.len() && !self.closing() {
                        log::warn!(
                            "provider {}: URL {} of {}: {e}; trying the next",
                            self.name,
                            n + 1,
                            plan.len()
                        );
                    }
                    failed.push(e);
                    if self.closing() {
                        break;
                    }
                }
            }
        }
        // Each URL's own error when several failed (the last alone hid the others'); a
        // `close()` in between is what it is.
        match failed.len() {
            0 => Err(Error::Closed),
            1 => Err(failed.remove(0)),
            _ if self.closing() => Err(failed.pop().unwrap_or(Error::Closed)),
            _ => Err(Error::EveryUrlFailed(failed)),
        }
    }

    /// Transport, CONNECT, CONNACK, then the session resumes — all before one deadline
    /// (credentials, DNS, TCP, TLS, upgrade, CONNACK), and abandoned when `close()` is called.
    fn try_connect(&mut self, url: usize) -> Result<Ws> {
        let deadline = deadline_after(self.options.connect_timeout);
        // Credentials calls (Cognito's HTTPS) inside are abandoned by `close()` too.
        let req = crate::net::tcp::with_attempt_abort(Some(self.closing.clone()), || {
            self.opener.open_request(url, deadline)
        })?;
        // Every error from here on names the URL (without credentials or query).
        let target = crate::net::websocket::redact(&req.url);
        let limit = self.options.connect_timeout;
        self.connect_to(&req, deadline)
            .map_err(|e| e.at(&target, limit))
    }

    /// The attempt on `req` once its request is made: transport, CONNECT, CONNACK, resume.
    fn connect_to(
        &mut self,
        req: &crate::net::websocket::OpenRequest,
        deadline: Instant,
    ) -> Result<Ws> {
        let mut ws =
            link::open(req, deadline, Some(self.closing.clone())).map_err(closed_if_aborted)?;
        // CONNACK goes through the session like every packet; what it resumes with is the
        // router's now (no command is taken while connecting).
        let resubscribe = self.router.active();
        let wanted = resubscribe.iter().map(|(f, _)| f.clone()).collect();
        let mut connect = self.session.connecting(resubscribe, wanted);
        let ready = ws
            .flushed()
            .map_err(|e| closed_if_aborted(crate::net::error::map_io("sending CONNECT", e)))?;
        let stream = ws.stream_mut();
        stream
            .send_binary(&mut connect, ready)
            .and_then(|()| std::io::Write::flush(stream))
            .map_err(|e| closed_if_aborted(crate::net::error::map_io("sending CONNECT", e)))?;

        self.framer.reset();
        let result = self.await_connack(&mut ws, &req.url);
        if result.is_err() {
            // The attempt failed: the session must not think it is connected.
            self.session.on_disconnected();
        }
        let session_present = result?;
        let stream = ws.stream_mut();
        stream.set_deadline(None);
        stream
            .tcp()
            .set_read_timeout(None)
            .and_then(|()| stream.tcp().set_write_timeout(None))
            .and_then(|()| stream.tcp().set_nonblocking(true))
            .map_err(|e| crate::net::error::map_io("socket setup", e))?;
        let shown = websocket::redact(&req.url);
        log::debug!(
            "provider {}: connected to {shown} (session present: {session_present})",
            self.name,
        );
        self.url_in_use = Some(shown);
        self.state.set_server_limits(self.session.server_limits());
        Ok(ws)
    }

    /// Reads until the session has its CONNACK; what follows it in the same frames goes
    /// through the session as it is decoded (a frame of a million tiny packets is never held
    /// as a list of them). `Ok(session_present)`.
    fn await_connack(&mut self, ws: &mut Ws, url: &url::Url) -> Result<bool> {
        let mut first = true;
        loop {
            let chunk = match ws.read("waiting for CONNACK") {
                Ok(Incoming::Data(chunk)) => chunk,
                Ok(Incoming::Closed(how)) => {
                    return Err(Error::ConnectionLost(format!(
                        "the server closed the WebSocket before CONNACK{how}"
                    )))
                }
                Ok(Incoming::Blocked) => {
                    return Err(Error::timeout(Operation::Connect, "no CONNACK"))
                }
                // Bounded by the connect deadline, which every read checks.
                Ok(Incoming::Progress) => continue,
                Err(e) => return Err(closed_if_aborted(e)),
            };
            let bytes = &chunk.bytes;
            // A server's first packet is CONNACK [MQTT-3.2.0-1]: first bytes of another type
            // are not MQTT at all, most likely, and are said so at once (an HTTP answer of a
            // few bytes would otherwise wait for the rest of a "packet" until the deadline).
            let not_connack =
                first && !self.session.is_connected() && bytes.first().is_some_and(|b| b >> 4 != 2);
            first = false;
            let head: Vec<u8> = bytes.iter().take(8).copied().collect();
            if not_connack {
                let what = if head.starts_with(b"HTTP/") {
                    "an HTTP answer".to_string()
                } else {
                    format!("a packet of type {}", head[0] >> 4)
                };
                return Err(not_mqtt(url, &head, Error::Protocol(what)));
            }
            let mut framer = std::mem::replace(&mut self.framer, Framer::new(0));
            let fed = framer.feed_shared(chunk.bytes, chunk.backing, |p| {
                self.inbound(p, Instant::now())
            });
            self.framer = framer;
            match fed {
                Err(e @ Error::Protocol(_)) if not_connack => return Err(not_mqtt(url, &head, e)),
                other => other?,
            }
            self.dispatch_events();
            if self.session.is_connected() {
                return Ok(self.session.session_present());
            }
        }
    }

    /// One packet from the broker; delivers what it made every so often, so that the events
    /// of one large frame never pile up.
    fn inbound(&mut self, packet: Inbound, now: Instant) -> Result<()> {
        self.session.handle_inbound(packet, now)?;
        if self.session.events_waiting() >= EVENT_BATCH {
            self.dispatch_events();
        }
        Ok(())
    }

    fn serve(&mut self, ws: &mut Ws) -> Exit {
        // Deleted from the poller below, before `serve` returns (`ws` owns the socket).
        let readable = Interest {
            readable: true,
            writable: false,
        };
        if let Err(e) = self.wake.poller.add(ws.tcp(), readable) {
            return Exit::Lost(Error::Io {
                context: "registering the socket",
                source: e,
                target: None,
            });
        }
        ws.stream_mut().set_polled(true);
        let exit = self.serve_registered(ws);
        ws.stream_mut().set_polled(false);
        let _ = self.wake.poller.delete(ws.tcp());
        exit
    }

    fn serve_registered(&mut self, ws: &mut Ws) -> Exit {
        let mut write_blocked = false;
        // (readable, writable) interest registered with the poller.
        let mut watching = (true, false);
        loop {
            let now = Instant::now();
            if let Some(exit) = self.close_step(ws, write_blocked, now) {
                return exit;
            }
            if !write_blocked && !matches!(self.closing_state, Closing::Disconnecting(_)) {
                if let Err(TryRecvError::Disconnected) = self.take_commands() {
                    return Exit::Close;
                }
            }
            // Backpressure: while the socket takes nothing and our output has grown, reading
            // stops (the server's writes block in turn) until the output drains; and while a
            // subscription that acknowledges after processing is full, until the
            // application drops messages.
            let write_stalled = write_blocked && self.session.output().len() >= MAX_BLOCKED_OUTPUT;
            let paused = self.backpressure();
            let reading = !(write_stalled || paused);
            let more_to_read = if reading {
                match self.read_available(ws, now) {
                    Ok(more) => more,
                    Err(e) => return Exit::Lost(e),
                }
            } else {
                false
            };
            if let Err(e) = self.session.poll_timers(now) {
                return Exit::Lost(e);
            }
            self.dispatch_events();
            self.ring();

            // Our frame in flight and the control frames behind it (pongs) go first; `Ready`
            // means all are out, so a new frame cannot split a pong.
            let ready = match ws.flushed() {
                Ok(ready) => Some(ready),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => None,
                Err(e) => return Exit::Lost(crate::net::error::map_io("writing", e)),
            };
            write_blocked = ready.is_none();
            // What the output below answers or assigns (PUBREC, PUBREL, a QoS 2 packet
            // id) is recorded first.
            self.commit_outbox();
            let hold = self.coalescing(now);
            let out = self.session.output();
            if let (Some(ready), false, false) = (ready, out.is_empty(), hold) {
                // The batch becomes one binary frame, masked in place: the output buffer is
                // swapped into the stream, not copied.
                self.tally
                    .add(crate::stats::Counter::BytesOut, out.len() as u64);
                match ws.stream_mut().send_binary(out, ready) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => write_blocked = true,
                    Err(e) => return Exit::Lost(crate::net::error::map_io("writing", e)),
                }
                self.session.mark_sent(now);
            }
            let written = !write_blocked && self.session.output().is_empty();
            if written && !self.flushes.is_empty() {
                self.finish_flushes();
            }

            let commands_waiting =
                !write_blocked && !self.cmd_rx.is_empty() && self.session.can_accept();
            let close_ready = !matches!(self.closing_state, Closing::No) && written && {
                // Nothing left to wait for: let `close_step` move on now.
                self.drained()
            };
            if more_to_read || commands_waiting || close_ready || self.close_requested() {
                // Not waiting: read for real next time round (what arrived meanwhile is
                // not left until the next wait).
                ws.stream_mut().set_readable();
                continue;
            }
            let write_stalled = write_blocked && self.session.output().len() >= MAX_BLOCKED_OUTPUT;
            let paused = self.backpressure();
            let reading = !(write_stalled || paused);
            let want = (reading, write_blocked);
            if want != watching {
                let interest = Interest {
                    readable: want.0,
                    // Paused for the application: nothing to wait for on the socket (the
                    // application's drops wake the thread).
                    writable: want.1 || (!want.0 && !self.paused),
                };
                if let Err(e) = self.wake.poller.modify(ws.tcp(), interest) {
                    return Exit::Lost(Error::Io {
                        context: "polling the socket",
                        source: e,
                        target: None,
                    });
                }
                watching = want;
            }
            let close_deadline = match self.closing_state {
                Closing::No => None,
                Closing::Draining(d) | Closing::Disconnecting(d) => Some(d),
            };
            let outbox_sync = self.outbox.as_ref().and_then(Outbox::next_sync);
            let held_until = self.holding_since.map(|t| t + COALESCE_FOR);
            let timeout = [
                self.session.next_deadline(),
                close_deadline,
                outbox_sync,
                held_until,
            ]
            .into_iter()
            .flatten()
            .min()
            .map(|d| d.saturating_duration_since(Instant::now()));
            // Commands queued since they were last taken, or a close asked meanwhile, are seen
            // here, after the sleep is announced (callers then skip the wake-up).
            self.publish_stats();
            let (cmd_rx, session, closing) = (&self.cmd_rx, &self.session, &self.closing);
            let not_closing_yet = matches!(self.closing_state, Closing::No);
            let work = || {
                (!write_blocked && !cmd_rx.is_empty() && session.can_accept())
                    || (not_closing_yet && closing.load(Ordering::SeqCst))
            };
            match self.wake.sleep(timeout, work) {
                // Woken by a caller or a timer alone: a socket that was drained still is.
                Ok(Some(false)) => {}
                Ok(_) => ws.stream_mut().set_readable(),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => ws.stream_mut().set_readable(),
                Err(e) => {
                    return Exit::Lost(Error::Io {
                        context: "polling the socket",
                        source: e,
                        target: None,
                    })
                }
            }
        }
    }

    /// Whether `close()` was called and the drain has not started yet.
    /// Whether to hold small output back for now (Nagle's idea, bounded by
    /// [`COALESCE_FOR`]): while publishes await acknowledgements, their arrival wakes this
    /// thread anyway, and the publishes taken meanwhile join the same write. Never while
    /// nothing is in flight (a lone publish or a round trip goes at once), nor while
    /// flushing or closing.
    fn coalescing(&mut self, now: Instant) -> bool {
        let out = self.session.output().len();
        if out == 0
            || out >= COALESCE_BYTES
            || self.session.inflight() == 0
            || !self.flushes.is_empty()
            || !matches!(self.closing_state, Closing::No)
        {
            self.holding_since = None;
            return false;
        }
        let since = *self.holding_since.get_or_insert(now);
        if now.duration_since(since) >= COALESCE_FOR {
            self.holding_since = None;
            return false;
        }
        true
    }

    fn close_requested(&self) -> bool {
        matches!(self.closing_state, Closing::No) && self.closing()
    }

    /// Everything accepted so far is done: no command waits, no publish is unfinished.
    fn drained(&self) -> bool {
        self.cmd_rx.is_empty() && self.session.oldest_unfinished().is_none()
    }

    /// Moves a graceful close along: drain (until everything accepted is done or the close
    /// timeout), then DISCONNECT (until written or one more second). `Some` to stop serving.
    fn close_step(&mut self, ws: &Ws, write_blocked: bool, now: Instant) -> Option<Exit> {
        if self.close_requested() {
            self.closing_state = Closing::Draining(deadline_after(self.options.close_timeout));
        }
        let written =
            !write_blocked && self.session.output().is_empty() && !ws.stream().frame_pending();
        match self.closing_state {
            Closing::No => None,
            Closing::Draining(deadline) => {
                if (written && self.drained()) || now >= deadline {
                    if now >= deadline {
                        log::warn!(
                            "provider {}: close timeout: leaving with publishes unfinished",
                            self.name
                        );
                    }
                    self.session.disconnect(&self.state.disconnect_properties());
                    self.closing_state = Closing::Disconnecting(deadline_after(CLOSE_FLUSH));
                }
                None
            }
            Closing::Disconnecting(deadline) => (written || now >= deadline).then_some(Exit::Close),
        }
    }

    /// Answers the flushes whose publishes are all done (the output is written).
    fn finish_flushes(&mut self) {
        self.publish_stats();
        let oldest = self.session.oldest_unfinished();
        self.flushes.retain(|(mark, reply)| {
            let done = oldest.is_none_or(|o| o >= *mark);
            if done {
                let _ = reply.send(Ok(()));
            }
            !done
        });
    }

    /// Takes commands while the session can accept them and the output batch has room.
    fn take_commands(&mut self) -> std::result::Result<(), TryRecvError> {
        let mut result = Ok(());
        while self.session.can_accept() && self.session.output().len() < OUTPUT_BATCH {
            match self.cmd_rx.try_recv() {
                Ok(cmd) => self.command(cmd),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    result = Err(TryRecvError::Disconnected);
                    break;
                }
            }
        }
        // One commit (one fsync) for the whole batch: group commit.
        self.commit_outbox();
        if !self.flushes.is_empty() {
            // Counted only while someone may ask (a flush that times out names it).
            let n = self.session.unfinished_publishes() + self.cmd_rx.len();
            self.pending.store(n, Ordering::Relaxed);
        }
        result
    }

    fn command(&mut self, cmd: Command) {
        match cmd {
            Command::Publish {
                topic,
                payload,
                qos,
                retain,
                props,
                reply,
            } => {
                let packet = crate::mqtt::packet::Outgoing {
                    topic,
                    payload,
                    qos,
                    retain,
                    props,
                };
                // What the server of this connection refuses fails the call (checked at the
                // call too; a reconnect can bring stricter limits). Handing the reply to the
                // session first would drop it on the error, and the caller saw `Closed`.
                if let Err(e) = self.session.check_publish(&packet) {
                    let e = self.name_provider(e);
                    match reply {
                        Some(r) => {
                            let _ = r.send(Err(e));
                        }
                        None => log::warn!("provider {}: not sent: {e}", self.name),
                    }
                    return;
                }
                if qos != QoS::AtMostOnce {
                    if let Some(outbox) = self.outbox.as_mut() {
                        // Durable: recorded now, answered once committed.
                        let ticket = self.session.next_ticket();
                        let p = &packet;
                        let accepted = if p.topic.len() > crate::topic::MAX_TOPIC_LEN {
                            Err(Error::invalid_topic(&p.topic, "longer than 65535 bytes"))
                        } else {
                            outbox.accept(ticket, &p.topic, &p.payload, &p.props, qos, retain)
                        };
                        let accepted =
                            accepted.and_then(|()| self.session.publish_packet(packet, None));
                        match (accepted, reply) {
                            (Ok(()), Some(r)) => self.accepted.push(r),
                            (Err(e), Some(r)) => {
                                let _ = r.send(Err(e));
                            }
                            _ => {}
                        }
                        return;
                    }
                }
                let (reply_now, session_reply) = if qos == QoS::AtMostOnce {
                    (reply, None)
                } else {
                    (None, reply)
                };
                if let Err(e) = self.session.publish_packet(packet, session_reply) {
                    if let Some(r) = reply_now {
                        let _ = r.send(Err(e));
                    }
                } else if let Some(r) = reply_now {
                    let _ = r.send(Ok(()));
                }
            }
            Command::Subscribe {
                id,
                filters,
                options,
                sink,
                reply,
            } => {
                if let Some(refusal) = self.retained_not_sendable(&filters, options) {
                    let _ = reply.send(Err(Error::Unsupported(refusal)));
                    return;
                }
                for (f, _) in &filters {
                    self.session.set_subscription_options(f, options);
                }
                if let Some(flow) = &sink.flow {
                    flow.wakes
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(self.wake.clone());
                    if self.paused {
                        flow.paused.fetch_add(1, Ordering::AcqRel);
                    }
                    self.flows.push((id, flow.clone()));
                    self.session.set_deferred_acks(true);
                }
                self.claim_unclaimed(&filters, &sink);
                let changes = self.router.add(id, &filters, sink);
                self.session
                    .change(changes.subscribe, changes.unsubscribe, Some(reply));
            }
            Command::Unsubscribe { id, keep, reply } => {
                if let Some((changes, sink)) = self.router.remove(id, keep) {
                    drop(sink);
                    self.apply(changes);
                }
                if let Some(i) = self.flows.iter().position(|(f, _)| *f == id) {
                    let (_, flow) = self.flows.swap_remove(i);
                    if self.paused {
                        flow.paused.fetch_sub(1, Ordering::AcqRel);
                    }
                }
                if let Some(r) = reply {
                    let _ = r.send(());
                }
            }
            Command::Flush { reply } => {
                self.flushes.push((self.session.next_ticket(), reply));
            }
        }
    }

    /// Sends what a change of the broker's filter set needs: SUBSCRIBE first (no gap in
    /// delivery), then UNSUBSCRIBE.
    fn apply(&mut self, changes: Changes) {
        self.session
            .change(changes.subscribe, changes.unsubscribe, None);
    }

    /// Hands held messages of a persistent session to a new subscription they match, in the
    /// order they arrived.
    fn claim_unclaimed(&mut self, filters: &[(String, QoS)], sink: &Sink) {
        if self.unclaimed.messages.is_empty() {
            return;
        }
        let mut delivered = false;
        let held = std::mem::take(&mut self.unclaimed.messages);
        for msg in held {
            if filters
                .iter()
                .any(|(f, _)| crate::topic::topic_matches(f, msg.topic()))
            {
                self.unclaimed.bytes -= msg.payload().len();
                delivered |= sink.deliver(msg);
            } else {
                self.unclaimed.messages.push_back(msg);
            }
        }
        if delivered {
            sink.bell.ring();
        }
        if self.unclaimed.messages.is_empty() {
            // Give a burst's memory back.
            self.unclaimed.messages = VecDeque::new();
        }
    }

    /// Holds a message of a persistent session that no subscription takes (yet).
    fn hold(&mut self, msg: Message) {
        let len = msg.payload().len();
        let (max_n, max_bytes) = (
            self.options.unclaimed_messages,
            self.options.unclaimed_bytes,
        );
        while !self.unclaimed.messages.is_empty()
            && (self.unclaimed.messages.len() >= max_n || self.unclaimed.bytes + len > max_bytes)
        {
            let old = self.unclaimed.messages.pop_front().expect("not empty");
            self.unclaimed.bytes -= old.payload().len();
            self.count_unclaimed_drop(old.topic());
        }
        if max_n == 0 || len > max_bytes {
            self.count_unclaimed_drop(msg.topic());
            return;
        }
        self.unclaimed.bytes += len;
        self.unclaimed.messages.push_back(msg);
    }

    fn count_unclaimed_drop(&mut self, topic: &str) {
        self.unclaimed.dropped += 1;
        let n = self.unclaimed.dropped;
        if n == 1 || n.is_power_of_two() {
            log::warn!(
                "provider {}: unclaimed messages over their bound (unclaimed_capacity): dropped \
                 one on \"{}\" ({n} dropped so far)",
                self.name,
                crate::error::printable(topic)
            );
        }
    }

    /// Reads frames until the socket has nothing more (`Ok(false)`) or the per-wake budget is
    /// spent (`Ok(true)`: come back without waiting).
    fn read_available(&mut self, ws: &mut Ws, now: Instant) -> Result<bool> {
        for _ in 0..FRAMES_PER_WAKE {
            if self.session.output().len() >= MAX_BLOCKED_OUTPUT {
                // What reading made must be written first (backpressure, see the caller).
                return Ok(true);
            }
            // Pings are answered inside (the pong goes out with the next flush).
            match ws.read("reading")? {
                Incoming::Data(chunk) => {
                    self.tally
                        .add(crate::stats::Counter::BytesIn, chunk.bytes.len() as u64);
                    let mut framer = std::mem::replace(&mut self.framer, Framer::new(0));
                    let fed =
                        framer.feed_shared(chunk.bytes, chunk.backing, |p| self.inbound(p, now));
                    self.framer = framer;
                    fed?;
                    self.dispatch_events();
                }
                Incoming::Closed(how) => {
                    return Err(Error::ConnectionLost(format!(
                        "the server closed the WebSocket{how}"
                    )))
                }
                Incoming::Blocked => return Ok(false),
                Incoming::Progress => {}
            }
        }
        Ok(true)
    }

    fn dispatch_events(&mut self) {
        while let Some(ev) = self.session.next_event() {
            match ev {
                SessionEvent::Message(p) => self.deliver(p, false),
                SessionEvent::Deferred(p) => self.deliver(p, true),
                SessionEvent::Published(reply) => {
                    let _ = reply.send(Ok(()));
                }
                SessionEvent::Subscribed(reply, refused) => {
                    let result = match refused.into_iter().next() {
                        None => Ok(()),
                        Some((filter, reason)) => Err(Error::SubscriptionRefused {
                            filter,
                            provider: self.name.to_string(),
                            reason,
                        }),
                    };
                    let _ = reply.send(result);
                }
                SessionEvent::Failed(reply, why) => {
                    let _ = reply.send(Err(Error::Protocol(why)));
                }
                SessionEvent::PublishRefused(reply, what) => {
                    self.tally.add(crate::stats::Counter::Rejected, 1);
                    let err = Error::Refused(what);
                    self.report_refusal(&err);
                    if let Some(r) = reply {
                        let _ = r.send(Err(err));
                    }
                }
                SessionEvent::PublishRejected(reply, code, reason, what) => {
                    self.tally.add(crate::stats::Counter::Rejected, 1);
                    let err = Error::Rejected { what, code, reason };
                    self.report_refusal(&err);
                    if let Some(r) = reply {
                        let _ = r.send(Err(err));
                    }
                }
                SessionEvent::UnsubscribeRefused(refused) => {
                    for (filter, code, reason) in refused {
                        let what = format!(
                            "the UNSUBSCRIBE of \"{}\"",
                            crate::error::printable(&filter)
                        );
                        self.report_refusal(&Error::Rejected { what, code, reason });
                    }
                }
                SessionEvent::Oversized(o, deferred) => {
                    if let (true, Some(id)) = (deferred, o.packet_id) {
                        // Nothing holds it: acknowledged as soon as those before it are.
                        self.acks.push_back((id, o.qos, std::sync::Weak::new()));
                    }
                    self.report_oversized(&o);
                }
                SessionEvent::FiltersRefused(filters) => {
                    let list = filters
                        .iter()
                        .map(|f| format!("\"{}\"", crate::error::printable(f)))
                        .collect::<Vec<_>>()
                        .join(", ");
                    self.report_refusal(&Error::Refused(format!(
                        "SUBSCRIBE to {list}, {} times in a row",
                        crate::mqtt::session::STRIKES
                    )));
                    let (ended, changes) = self.router.forget(&filters);
                    drop(ended);
                    self.apply(changes);
                }
            }
        }
        self.release_acks();
    }

    /// Sends, in arrival order, the acknowledgements whose messages the application has
    /// dropped everywhere; stops deferring once no subscription asks for it and none waits.
    fn release_acks(&mut self) {
        while let Some((id, qos, token)) = self.acks.front() {
            // Not connected: what is due waits for the connection (a QoS 2 PUBREC is owed
            // on the resumed session).
            if token.strong_count() > 0 || !self.session.is_connected() {
                break;
            }
            self.session.ack(*id, *qos);
            self.acks.pop_front();
        }
        if self.flows.is_empty() && self.acks.is_empty() && !self.options.ack_after_processing {
            self.session.set_deferred_acks(false);
        }
    }

    /// Whether a subscription that acknowledges after processing is full: then the
    /// connection is not read (the broker's own flow control — its in-flight window, our
    /// Receive Maximum — holds what it sends).
    fn backpressure(&mut self) -> bool {
        // Never while the server owes us an answer (a SUBACK — the application cannot drain
        // a subscription before its subscribe call returns —, a PUBACK, a PINGRESP), nor
        // while closing: the answer may come after messages, and not reading it would time
        // out a publish, stall the close or declare a live link dead. The broker's
        // in-flight window still bounds the QoS 1/2 messages it sends meanwhile.
        let full = !self.session.awaiting_server()
            && matches!(self.closing_state, Closing::No)
            && self.flows.iter().any(|(_, f)| f.full());
        if full != self.paused {
            self.paused = full;
            for (_, f) in &self.flows {
                if full {
                    f.paused.fetch_add(1, Ordering::AcqRel);
                } else {
                    f.paused.fetch_sub(1, Ordering::AcqRel);
                }
            }
        }
        full
    }

    /// Routes one message to its subscriptions (or the unclaimed hold). `deferred`: its
    /// acknowledgement waits until every copy given to a subscription that acknowledges
    /// after processing is dropped (at once when there is none).
    fn deliver(&mut self, p: crate::mqtt::packet::PublishFrame, deferred: bool) {
        let by_id = self.session.filters_for(&p);
        let packet_id = p.packet_id();
        let mut msg = Message::new(p, self.name.clone());
        if deferred {
            if let Some(id) = packet_id {
                // A provider that acknowledges after processing holds even a message no
                // subscription takes yet (a persistent session's, for the one to come).
                let wants_ack = self.options.ack_after_processing
                    || match &by_id {
                        Some(filters) => self
                            .router
                            .route_for(msg.topic(), filters)
                            .any(|s| s.flow.is_some()),
                        None => self.router.route(msg.topic()).any(|s| s.flow.is_some()),
                    };
                let weak = if wants_ack {
                    let token = Arc::new(crate::message::AckToken {
                        wake: self.wake.clone(),
                    });
                    let weak = Arc::downgrade(&token);
                    msg.hold_ack(token);
                    weak
                } else {
                    std::sync::Weak::new()
                };
                self.acks.push_back((id, msg.qos(), weak));
            }
        }
        let mut routed = false;
        match &by_id {
            // MQTT 5: the server said which subscriptions it was sent for.
            Some(filters) => {
                for sink in self.router.route_for(msg.topic(), filters) {
                    routed = true;
                    let ok = self.rings.deliver(sink, msg.clone());
                    self.tally.add(delivered_or_dropped(ok), 1);
                }
            }
            None => {
                for sink in self.router.route(msg.topic()) {
                    routed = true;
                    let ok = self.rings.deliver(sink, msg.clone());
                    self.tally.add(delivered_or_dropped(ok), 1);
                }
            }
        }
        // We acknowledged it to the broker: with a persistent session it is held for the
        // subscription the application is about to make.
        if !routed && !self.options.clean_session {
            self.hold(msg);
        }
    }

    /// Why retained messages asked for explicitly (`SendOnSubscribe`) cannot come: a filter
    /// is already subscribed (or covered) on the broker, so no SUBSCRIBE goes out for it.
    fn retained_not_sendable(&self, filters: &[(String, QoS)], options: u8) -> Option<String> {
        if options & crate::options::RETAIN_HANDLING_SET == 0 || options & 0x30 != 0 {
            return None;
        }
        let active = self.router.active();
        filters.iter().find_map(|(f, _)| {
            let (held, _) = active
                .iter()
                .find(|(a, _)| crate::mqtt::router::covers(a, f))?;
            Some(format!(
                "retain_handling(SendOnSubscribe) for \"{}\": provider {} already subscribes to \
                 \"{}\", so no SUBSCRIBE goes out and the server sends no retained messages for \
                 this subscription; subscribe through another provider (a connection of its \
                 own) to get them",
                crate::error::printable(f),
                self.name,
                crate::error::printable(held)
            ))
        })
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

    /// A message over `max_packet_size` was skipped (and acknowledged): every subscription
    /// it was for counts it as dropped, a persistent session's unclaimed hold too when none
    /// was, and a state event names it.
    fn report_oversized(&mut self, o: &crate::mqtt::packet::Oversized) {
        self.tally.add(crate::stats::Counter::DroppedOversized, 1);
        self.oversized += 1;
        let mut routed = false;
        for sink in self.router.route(&o.topic) {
            routed = true;
            sink.dropped
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        if !routed && !self.options.clean_session {
            self.unclaimed.dropped += 1;
        }
        let reason = format!(
            "skipped a message of {} bytes on \"{}\" (QoS {}): over max_packet_size ({} \
             bytes); acknowledged so that the broker does not resend it",
            o.size,
            crate::error::printable(&o.topic),
            o.qos as u8,
            self.options.max_packet_size
        );
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

    fn report_refusal(&mut self, err: &Error) {
        self.refused += 1;
        let reason = format!("{err} ({} refused so far)", self.refused);
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

    /// Ends the provider: the WebSocket close (DISCONNECT was written by the graceful close),
    /// fail what waits, end subscriptions. Never blocks.
    fn shutdown(&mut self, ws: Option<Ws>) {
        self.publish_stats();
        if let Some(mut ws) = ws {
            match self.closing_state {
                // DISCONNECT is out: end without a reset (which could discard it), within
                // what is left of the second it has.
                Closing::Disconnecting(until)
                    if self.session.output().is_empty() && !ws.stream().frame_pending() =>
                {
                    ws.finish(until);
                }
                Closing::Disconnecting(_) => {
                    log::warn!(
                        "provider {}: DISCONNECT could not be written in time; the broker may \
                         publish the last will",
                        self.name
                    );
                    self.unfinished.store(true, Ordering::SeqCst);
                    ws.close();
                }
                // Best effort, non-blocking: the socket is closed when `ws` is dropped anyway.
                _ => ws.close(),
            }
        }
        // Announced before draining: callers see Disconnected and stop sending.
        if self.state.get() != ConnectionState::Disconnected {
            self.set_state(ConnectionState::Disconnected, None);
        }
        if self.session.oldest_unfinished().is_some() || !self.cmd_rx.is_empty() {
            self.unfinished.store(true, Ordering::SeqCst);
        }
        self.session.on_disconnected();
        self.commit_outbox();
        if let Some(outbox) = self.outbox.as_mut() {
            if let Err(e) = outbox.sync_now() {
                log::error!("provider {}: {e}", self.name);
            }
        }
        for reply in self.accepted.drain(..) {
            let _ = reply.send(Err(Error::Closed));
        }
        for reply in self.session.take_waiting() {
            let _ = reply.send(Err(Error::Closed));
        }
        for (_, reply) in self.flushes.drain(..) {
            let _ = reply.send(Err(Error::Closed));
        }
        // Commands still queued will never be served.
        while let Ok(cmd) = self.cmd_rx.try_recv() {
            match cmd {
                Command::Publish { reply: Some(r), .. }
                | Command::Subscribe { reply: r, .. }
                | Command::Flush { reply: r } => {
                    let _ = r.send(Err(Error::Closed));
                }
                Command::Unsubscribe { reply: Some(r), .. } => {
                    let _ = r.send(());
                }
                _ => {}
            }
        }
        // Dropping the sinks ends the subscriptions' iterators once drained.
        drop(self.router.drain());
    }
}

/// The first bytes after the upgrade were not a CONNACK: most likely the URL's path is not
/// where the server speaks MQTT (NATS answers its own protocol at `/`).
fn not_mqtt(url: &url::Url, head: &[u8], err: Error) -> Error {
    let nats = if head.starts_with(b"INFO ") {
        " (they look like the NATS protocol)"
    } else {
        ""
    };
    let hint = if matches!(url.scheme(), "mqtt" | "mqtts") && head.starts_with(b"HTTP/") {
        format!(
            "Port {} is an HTTP server: if it is the broker's WebSocket listener, use \
             ws{}://{}:{0}/mqtt",
            url.port().unwrap_or(0),
            if url.scheme() == "mqtts" { "s" } else { "" },
            url.host_str().unwrap_or_default()
        )
    } else if matches!(url.scheme(), "mqtt" | "mqtts") {
        format!(
            "Does port {} speak MQTT{}?",
            url.port().unwrap_or(0),
            if url.scheme() == "mqtts" {
                " over TLS"
            } else {
                ""
            }
        )
    } else {
        format!(
            "Is {:?} the server's MQTT-over-WebSocket path? NATS, AWS IoT and most brokers \
             serve MQTT at /mqtt",
            url.path()
        )
    };
    // The cause's own words, without its "MQTT protocol error:" prefix a second time.
    let cause = match err {
        Error::Protocol(s) => s,
        other => other.to_string(),
    };
    Error::Protocol(format!(
        "the server's first bytes are not an MQTT CONNACK{nats}: {cause}. {hint}"
    ))
}

/// The counter a delivery counts in.
fn delivered_or_dropped(delivered: bool) -> crate::stats::Counter {
    if delivered {
        crate::stats::Counter::Delivered
    } else {
        crate::stats::Counter::DroppedFull
    }
}

/// An attempt abandoned because `close()` was called is reported as `Closed`.
fn closed_if_aborted(e: Error) -> Error {
    match &e {
        Error::Io { source, .. } if source.kind() == io::ErrorKind::ConnectionAborted => {
            Error::Closed
        }
        _ => e,
    }
}

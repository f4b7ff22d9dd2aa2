//! The I/O thread of one provider: connect, move bytes between the socket and the session,
//! deliver messages, run timers, reconnect.
//!
//! After the blocking handshake the socket goes non-blocking and the thread sleeps in
//! `Poller::wait` until the socket is ready, a caller queues a command (`Poller::notify`), or
//! the keep-alive deadline comes. Idle means no wake-ups between keep-alive pings.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Sender, TryRecvError};
use polling::{Event, Events, PollMode, Poller};
use tungstenite::protocol::WebSocketConfig;
use tungstenite::WebSocket;

use super::{backoff, Command, Reply, Sink};
use crate::error::{Error, Operation, Result};
use crate::message::{Message, QoS};
use crate::mqtt::codec::Framer;
use crate::mqtt::router::Router;
use crate::mqtt::session::{Event as SessionEvent, Session, SessionConfig};
use crate::net::websocket::{self, map_ws, Stream};
use crate::options::ConnectionOptions;
use crate::provider::{Opener, ProviderSpec};
use crate::state::{ConnectionState, SharedState, StateEvent, StateHub};

const SOCKET_KEY: usize = 1;
/// Stop taking commands once this much output waits for one write (one WebSocket frame).
const OUTPUT_BATCH: usize = 64 * 1024;
/// Frames read per wake-up before writing and looking at commands again (fairness).
const FRAMES_PER_WAKE: usize = 256;
/// tungstenite's read buffer (see `try_connect`).
const READ_BUFFER: usize = 8 * 1024;
/// How long DISCONNECT may take to leave on close.
const CLOSE_FLUSH: Duration = Duration::from_secs(1);

type Ws = WebSocket<Stream>;

enum Exit {
    Close,
    Lost(Error),
}

pub(crate) struct Driver {
    name: Arc<str>,
    opener: Box<dyn Opener>,
    options: ConnectionOptions,
    cmd_rx: super::queue::QueueReceiver<Command>,
    poller: Arc<Poller>,
    closing: Arc<AtomicBool>,
    state: Arc<SharedState>,
    hub: StateHub,
    session: Session<Reply>,
    router: Router<Sink>,
    framer: Framer,
    events: Events,
    /// Subscriptions given messages since the last [`Driver::ring`].
    to_ring: Vec<Arc<crate::subscription::Doorbell>>,
}

impl Driver {
    pub fn new(
        spec: ProviderSpec,
        cmd_rx: super::queue::QueueReceiver<Command>,
        poller: Arc<Poller>,
        closing: Arc<AtomicBool>,
        state: Arc<SharedState>,
        hub: StateHub,
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
            will: o.will.clone(),
            max_inflight: o.max_inflight,
            max_queued: o.queue_capacity,
            max_filters_per_subscribe: spec.limits.max_filters_per_subscribe,
        };
        Driver {
            name: spec.name.into(),
            framer: Framer::new(o.max_packet_size),
            opener: spec.opener,
            options: spec.options,
            cmd_rx,
            poller,
            closing,
            state,
            hub,
            session: Session::new(cfg, Instant::now()),
            router: Router::default(),
            // Only the socket and the notifier can be ready.
            events: Events::with_capacity(std::num::NonZeroUsize::new(4).expect("4 > 0")),
            to_ring: Vec::new(),
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
        });
    }

    fn closing(&self) -> bool {
        self.closing.load(Ordering::SeqCst)
    }

    pub fn run(mut self, ready: Sender<Result<()>>) {
        self.set_state(ConnectionState::Connecting, None);
        let mut ws = match self.connect() {
            Ok(ws) => {
                let _ = ready.send(Ok(()));
                ws
            }
            Err(e) => {
                self.set_state(ConnectionState::Disconnected, Some(e.to_string()));
                let _ = ready.send(Err(e));
                return;
            }
        };
        loop {
            self.set_state(ConnectionState::Connected, None);
            match self.serve(&mut ws) {
                Exit::Close => {
                    self.shutdown(Some(ws));
                    return;
                }
                Exit::Lost(err) => {
                    log::warn!("provider {}: connection lost: {err}", self.name);
                    drop(ws);
                    self.session.on_disconnected();
                    self.framer.reset();
                    if !self.options.reconnect.enabled {
                        self.set_state(ConnectionState::Disconnected, Some(err.to_string()));
                        self.shutdown(None);
                        return;
                    }
                    self.set_state(ConnectionState::ConnectionDisrupted, Some(err.to_string()));
                    match self.reconnect() {
                        Some(new) => ws = new,
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
    fn reconnect(&mut self) -> Option<Ws> {
        let mut attempt = 0;
        loop {
            let deadline = Instant::now() + backoff::delay(&self.options.reconnect, attempt);
            loop {
                if self.closing() {
                    return None;
                }
                if let Err(TryRecvError::Disconnected) = self.take_commands() {
                    return None;
                }
                self.dispatch_events();
                self.ring();
                let now = Instant::now();
                if now >= deadline {
                    break;
                }
                self.events.clear();
                let _ = self.poller.wait(&mut self.events, Some(deadline - now));
            }
            self.set_state(ConnectionState::Connecting, None);
            match self.connect() {
                Ok(ws) => return Some(ws),
                Err(e) => {
                    if e.is_auth_refusal() {
                        log::error!("provider {}: refused: {e}; backing off", self.name);
                    }
                    self.set_state(ConnectionState::ConnectionDisrupted, Some(e.to_string()));
                    attempt = attempt.saturating_add(1);
                }
            }
        }
    }

    /// One full connection attempt, its error explained by the provider.
    fn connect(&mut self) -> Result<Ws> {
        self.try_connect().map_err(|e| self.opener.explain(e))
    }

    /// Transport, CONNECT, CONNACK, then the session resumes.
    fn try_connect(&mut self) -> Result<Ws> {
        let req = self.opener.open_request()?;
        let deadline = Instant::now() + self.options.connect_timeout;
        let limit = self.options.max_packet_size.saturating_add(64 * 1024);
        // tungstenite zero-fills its whole read buffer before every read: the default 128 KiB
        // costs a 128 KiB memset per read and 128 KiB of resident memory per connection.
        // 8 KiB still holds ~100 small messages per read.
        let config = WebSocketConfig::default()
            .read_buffer_size(READ_BUFFER)
            .max_message_size(Some(limit))
            .max_frame_size(Some(limit))
            .max_write_buffer_size(OUTPUT_BATCH * 4 + self.options.max_packet_size.min(64 << 20));
        let mut ws = websocket::open(&req, deadline, config)?;
        // All MQTT data is framed by `Stream` (see `serve_registered`), CONNECT included; that
        // matters here because CONNECT carries the password and tungstenite logs every frame
        // it sends, payload included, at trace level.
        let mut connect = self.session.connect_packet();
        let stream = ws.get_mut();
        stream
            .send_binary(&mut connect)
            .and_then(|()| std::io::Write::flush(stream))
            .map_err(|e| websocket::map_io("sending CONNECT", e))?;

        self.framer.reset();
        let mut connack: Option<Result<bool>> = None;
        let mut backlog = Vec::new();
        while connack.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Error::timeout(Operation::Connect, "no CONNACK"));
            }
            ws.get_ref()
                .tcp()
                .set_read_timeout(Some(left))
                .map_err(|e| websocket::map_io("socket setup", e))?;
            match ws.read() {
                Ok(tungstenite::Message::Binary(b)) => self.framer.feed_bytes(b, |p| {
                    match connack {
                        None => connack = Some(Session::<Reply>::check_connack(&p)),
                        Some(_) => backlog.push(p),
                    }
                    Ok(())
                })?,
                Ok(tungstenite::Message::Close(f)) => {
                    return Err(Error::ConnectionLost(format!(
                        "the server closed the WebSocket before CONNACK{}",
                        close_reason(f.as_ref())
                    )))
                }
                Ok(tungstenite::Message::Text(_)) => {
                    return Err(Error::Protocol(
                        "a text WebSocket frame (MQTT uses binary frames)".into(),
                    ))
                }
                Ok(_) => {}
                Err(tungstenite::Error::Io(e))
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return Err(Error::timeout(Operation::Connect, "no CONNACK"))
                }
                Err(e) => return Err(map_ws("waiting for CONNACK", e)),
            }
        }
        let session_present = connack.expect("loop ends with a CONNACK")?;
        let tcp = ws.get_ref().tcp();
        tcp.set_read_timeout(None)
            .map_err(|e| websocket::map_io("socket setup", e))?;
        tcp.set_write_timeout(None)
            .map_err(|e| websocket::map_io("socket setup", e))?;
        tcp.set_nonblocking(true)
            .map_err(|e| websocket::map_io("socket setup", e))?;

        let now = Instant::now();
        let resubscribe = if session_present {
            Vec::new()
        } else {
            self.router.active()
        };
        self.session.on_connected(now, session_present, resubscribe);
        for p in backlog {
            self.session.handle_inbound(p, now)?;
        }
        log::debug!(
            "provider {}: connected to {} (session present: {session_present})",
            self.name,
            websocket::redact(&req.url)
        );
        Ok(ws)
    }

    #[allow(unsafe_code)]
    fn serve(&mut self, ws: &mut Ws) -> Exit {
        // SAFETY: the socket is deleted from the poller below, before `serve` returns, and
        // `ws` (which owns the socket) outlives this call.
        if let Err(e) = unsafe {
            self.poller.add_with_mode(
                ws.get_ref().tcp(),
                Event::readable(SOCKET_KEY),
                PollMode::Level,
            )
        } {
            return Exit::Lost(Error::Io {
                context: "registering the socket",
                source: e,
            });
        }
        let exit = self.serve_registered(ws);
        let _ = self.poller.delete(ws.get_ref().tcp());
        exit
    }

    fn serve_registered(&mut self, ws: &mut Ws) -> Exit {
        let mut write_blocked = false;
        let mut watching_writable = false;
        loop {
            if self.closing() {
                return Exit::Close;
            }
            if !write_blocked {
                if let Err(TryRecvError::Disconnected) = self.take_commands() {
                    return Exit::Close;
                }
            }
            let now = Instant::now();
            let more_to_read = match self.read_available(ws, now) {
                Ok(more) => more,
                Err(e) => return Exit::Lost(e),
            };
            if let Err(e) = self.session.poll_timers(now) {
                return Exit::Lost(e);
            }
            self.dispatch_events();
            self.ring();

            // Our frame in flight and whatever tungstenite holds (pongs) go first; `Ok` means
            // both are out, so a new frame cannot split one of tungstenite's.
            write_blocked = match ws.flush() {
                Ok(()) => false,
                Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => true,
                Err(e) => return Exit::Lost(map_ws("writing", e)),
            };
            let out = self.session.output();
            if !write_blocked && !out.is_empty() {
                // The batch becomes one binary frame, masked in place: the output buffer is
                // swapped into the stream, not copied.
                match ws.get_mut().send_binary(out) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => write_blocked = true,
                    Err(e) => return Exit::Lost(websocket::map_io("writing", e)),
                }
                self.session.mark_sent(now);
            }

            let commands_waiting =
                !write_blocked && !self.cmd_rx.is_empty() && self.session.can_accept();
            if more_to_read || commands_waiting {
                continue;
            }
            if write_blocked != watching_writable {
                let interest = if write_blocked {
                    Event::all(SOCKET_KEY)
                } else {
                    Event::readable(SOCKET_KEY)
                };
                if let Err(e) =
                    self.poller
                        .modify_with_mode(ws.get_ref().tcp(), interest, PollMode::Level)
                {
                    return Exit::Lost(Error::Io {
                        context: "polling the socket",
                        source: e,
                    });
                }
                watching_writable = write_blocked;
            }
            let timeout = self
                .session
                .next_deadline()
                .map(|d| d.saturating_duration_since(Instant::now()));
            self.events.clear();
            if let Err(e) = self.poller.wait(&mut self.events, timeout) {
                if e.kind() != io::ErrorKind::Interrupted {
                    return Exit::Lost(Error::Io {
                        context: "polling the socket",
                        source: e,
                    });
                }
            }
        }
    }

    /// Takes commands while the session can accept them and the output batch has room.
    fn take_commands(&mut self) -> std::result::Result<(), TryRecvError> {
        while self.session.can_accept() && self.session.output().len() < OUTPUT_BATCH {
            let cmd = self.cmd_rx.try_recv();
            match cmd {
                Ok(cmd) => self.command(cmd),
                Err(TryRecvError::Empty) => return Ok(()),
                Err(TryRecvError::Disconnected) => return Err(TryRecvError::Disconnected),
            }
        }
        Ok(())
    }

    fn command(&mut self, cmd: Command) {
        match cmd {
            Command::Publish {
                topic,
                payload,
                qos,
                retain,
                reply,
            } => {
                let (reply_now, session_reply) = if qos == QoS::AtMostOnce {
                    (reply, None)
                } else {
                    (None, reply)
                };
                if let Err(e) = self
                    .session
                    .publish(topic, payload, qos, retain, session_reply)
                {
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
                sink,
                reply,
            } => {
                let new = self.router.add(id, &filters, sink);
                self.session.subscribe(new, Some(reply));
            }
            Command::Unsubscribe { id, reply } => {
                if let Some((uncovered, gone, sink)) = self.router.remove(id) {
                    drop(sink);
                    self.session.subscribe(uncovered, None);
                    self.session.unsubscribe(gone);
                }
                let _ = reply.send(());
            }
        }
    }

    /// Reads frames until the socket has nothing more (`Ok(false)`) or the per-wake budget is
    /// spent (`Ok(true)`: come back without waiting).
    fn read_available(&mut self, ws: &mut Ws, now: Instant) -> Result<bool> {
        for _ in 0..FRAMES_PER_WAKE {
            match ws.read() {
                Ok(tungstenite::Message::Binary(b)) => {
                    let session = &mut self.session;
                    self.framer
                        .feed_bytes(b, |p| session.handle_inbound(p, now))?;
                    self.dispatch_events();
                }
                Ok(tungstenite::Message::Text(_)) => {
                    return Err(Error::Protocol(
                        "a text WebSocket frame (MQTT uses binary frames)".into(),
                    ))
                }
                Ok(tungstenite::Message::Close(f)) => {
                    return Err(Error::ConnectionLost(format!(
                        "the server closed the WebSocket{}",
                        close_reason(f.as_ref())
                    )))
                }
                // Pings are answered by tungstenite on the next flush.
                Ok(_) => {}
                Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                    return Ok(false)
                }
                Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(map_ws("reading", e)),
            }
        }
        Ok(true)
    }

    fn dispatch_events(&mut self) {
        while let Some(ev) = self.session.next_event() {
            match ev {
                SessionEvent::Message(p) => {
                    let msg = Message::new(p, self.name.clone());
                    for sink in self.router.route(msg.topic()) {
                        // The first message of a batch wakes the subscription at once (a
                        // lone message is not delayed); the rest of the batch is covered by
                        // one more ring after it (`ring`).
                        if sink.deliver(msg.clone()) && sink.bell.schedule() {
                            sink.bell.ring();
                            self.to_ring.push(sink.bell.clone());
                        }
                    }
                }
                SessionEvent::Published(reply) => {
                    let _ = reply.send(Ok(()));
                }
                SessionEvent::Subscribed(reply, refused) => {
                    let result = match refused.into_iter().next() {
                        None => Ok(()),
                        Some(filter) => Err(Error::SubscriptionRefused {
                            filter,
                            provider: self.name.to_string(),
                        }),
                    };
                    let _ = reply.send(result);
                }
            }
        }
    }

    /// Wakes the subscriptions that were given messages: once per batch read, not per message.
    fn ring(&mut self) {
        for bell in self.to_ring.drain(..) {
            bell.ring_scheduled();
        }
    }

    /// Ends the provider: DISCONNECT if connected, fail what waits, end subscriptions.
    fn shutdown(&mut self, ws: Option<Ws>) {
        if let Some(mut ws) = ws {
            self.session.disconnect();
            let mut bytes = std::mem::take(self.session.output());
            let tcp = ws.get_ref().tcp();
            let _ = tcp.set_nonblocking(false);
            let _ = tcp.set_write_timeout(Some(CLOSE_FLUSH));
            let _ = tcp.set_read_timeout(Some(CLOSE_FLUSH));
            // What is pending goes first (blocking now), then DISCONNECT, then the close.
            if ws.flush().is_ok() {
                let _ = ws.get_mut().send_binary(&mut bytes);
            }
            let _ = ws.close(None);
            let _ = ws.flush();
        }
        // Announced before draining: callers see Disconnected and stop sending.
        if self.state.get() != ConnectionState::Disconnected {
            self.set_state(ConnectionState::Disconnected, None);
        }
        self.session.on_disconnected();
        for reply in self.session.take_waiting() {
            let _ = reply.send(Err(Error::Closed));
        }
        // Commands still queued will never be served.
        while let Ok(cmd) = self.cmd_rx.try_recv() {
            match cmd {
                Command::Publish { reply: Some(r), .. } | Command::Subscribe { reply: r, .. } => {
                    let _ = r.send(Err(Error::Closed));
                }
                Command::Unsubscribe { reply, .. } => {
                    let _ = reply.send(());
                }
                _ => {}
            }
        }
        // Dropping the sinks ends the subscriptions' iterators once drained.
        drop(self.router.drain());
    }
}

fn close_reason(f: Option<&tungstenite::protocol::CloseFrame>) -> String {
    match f {
        Some(f) if f.reason.is_empty() => format!(" (code {})", u16::from(f.code)),
        Some(f) => format!(" (code {}: {})", u16::from(f.code), f.reason),
        None => String::new(),
    }
}

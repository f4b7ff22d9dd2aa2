//! The MQTT 3.1.1 client session as a plain state machine.
//!
//! Commands and inbound packets go in, bytes to send and [`Event`]s come out, and time is an
//! argument: nothing here touches a socket or a clock, so every transition is unit-testable
//! and fuzzable. The I/O driver only moves bytes between the socket and this machine.
//!
//! One file per concern: `ids.rs` (the packet-identifier table), `keepalive.rs`, `resend.rs`
//! (what a new connection sends first, and packets the broker refuses by disconnecting);
//! here, the phase, requests, acknowledgements and events.

mod ids;
mod keepalive;
mod resend;
mod wire;

pub use resend::STRIKES;
pub use wire::{publish_size, ServerLimits};

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

#[cfg(test)]
use mqtt::packet::*;

use crate::error::{Error, Result};
use crate::mqtt::packet::{self, AckKind, Control, MqttVersion, ReasonCode};
use crate::mqtt::packet::{encode_connect, Connect, Inbound, Outgoing, PublishFrame, Will};
use crate::mqtt::QoS;

/// Packet identifiers kept beyond the publish window for SUBSCRIBE and UNSUBSCRIBE, so that
/// a window full of unacknowledged publishes never holds back a resubscription: after a
/// reconnect the subscriptions must be back before the resent publishes reach the broker.
pub const CONTROL_IDS: u16 = 32;

/// What the session needs to know about the connection it runs on.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// Client identifier sent in CONNECT.
    pub client_id: String,
    /// Keep-alive interval; zero disables keep-alive.
    pub keep_alive: Duration,
    /// Clean session flag.
    pub clean_session: bool,
    /// User name.
    pub username: Option<String>,
    /// Password.
    pub password: Option<String>,
    /// Last will.
    pub will: Option<Will>,
    /// Most unacknowledged QoS 1/2 publishes at once (1..=65503).
    pub max_inflight: u16,
    /// Most unacknowledged QoS 2 publishes at once, within `max_inflight` (0: no own limit).
    pub max_inflight_qos2: u16,
    /// Most requests waiting for a packet identifier or for the connection.
    pub max_queued: usize,
    /// Most filters in one SUBSCRIBE packet (AWS IoT allows 8); larger requests are split.
    pub max_filters_per_subscribe: usize,
    /// The protocol version.
    pub version: MqttVersion,
    /// MQTT 5 CONNECT properties.
    pub v5: packet::ConnectProperties,
}

impl SessionConfig {
    /// A configuration with the given client id and defaults suitable for tests.
    // Used by the fuzz targets, the benchmark and the tests only.
    #[cfg_attr(not(feature = "__internals"), allow(dead_code))]
    pub fn new(client_id: impl Into<String>) -> SessionConfig {
        SessionConfig {
            client_id: client_id.into(),
            keep_alive: Duration::from_secs(60),
            clean_session: true,
            username: None,
            password: None,
            will: None,
            max_inflight: 100,
            max_inflight_qos2: 0,
            max_queued: 1000,
            max_filters_per_subscribe: 64,
            version: MqttVersion::V3_1_1,
            v5: packet::ConnectProperties::default(),
        }
    }
}

/// What a durable outbox must record, in this order, before the session's output written
/// after it reaches the socket (see [`Session::enable_journal`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Journal {
    /// QoS 2 publish `ticket` took packet identifier `pid` (its PUBLISH follows).
    Assigned {
        /// The publish.
        ticket: u64,
        /// Its packet identifier.
        pid: u16,
    },
    /// QoS 2 publish `ticket` got its PUBREC: PUBREL follows, never the PUBLISH again.
    Released {
        /// The publish.
        ticket: u64,
    },
    /// Publish `ticket` is finished: acknowledged, or refused and dropped.
    Finished {
        /// The publish.
        ticket: u64,
    },
    /// An incoming QoS 2 message `pid` was delivered; its PUBREL has not come yet.
    InboundReceived {
        /// Its packet identifier.
        pid: u16,
    },
    /// The PUBREL of incoming `pid` came.
    InboundReleased {
        /// Its packet identifier.
        pid: u16,
    },
}

/// A QoS 1/2 publish an outbox kept from an earlier process, given back to a new session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restored {
    /// Its ticket (the outbox's record id).
    pub ticket: u64,
    /// Topic.
    pub topic: String,
    /// Payload.
    pub payload: Vec<u8>,
    /// QoS 1 or 2.
    pub qos: QoS,
    /// Retain flag.
    pub retain: bool,
    /// MQTT 5 properties, encoded (empty: none).
    pub props: Vec<u8>,
    /// For QoS 2: the packet identifier it was sent with, if it was.
    pub pid: Option<u16>,
    /// For QoS 2: whether its PUBREC came (PUBREL is what is resent).
    pub released: bool,
}

/// What the session reports to its driver.
#[derive(Debug, PartialEq)]
pub enum Event<R> {
    /// An application message arrived (deliver it to the matching subscriptions).
    Message(PublishFrame),
    /// A QoS 1 publish got its PUBACK, or a QoS 2 publish its PUBCOMP.
    Published(R),
    /// All SUBACKs of a subscribe request arrived; the refused filters are listed, each with
    /// the reason (MQTT 5: reason code and string).
    Subscribed(R, Vec<(String, Option<String>)>),
    /// A QoS 1/2 publish was dropped: the connection died right after it [`STRIKES`] times.
    /// The text says which message.
    PublishRefused(Option<R>, String),
    /// MQTT 5: the server refused a publish with a reason code in PUBACK or PUBREC (and
    /// perhaps a reason string); the text says which message.
    PublishRejected(Option<R>, ReasonCode, Option<String>, String),
    /// Filters dropped for the same reason; they are no longer subscribed.
    FiltersRefused(Vec<String>),
    /// MQTT 5: UNSUBACK failure codes: each refused filter, its code and the server's reason
    /// string (local delivery had already stopped; the broker may go on sending them).
    UnsubscribeRefused(Vec<(String, ReasonCode, Option<String>)>),
    /// A subscribe request failed: the broker broke the protocol answering it (the text
    /// says how).
    Failed(R, String),
    /// A message over `max_packet_size` was skipped (and acknowledged at its QoS — with
    /// deferred acknowledgements, `true`: it waits for [`Session::ack`] like the messages
    /// before it, in arrival order).
    Oversized(crate::mqtt::packet::Oversized, bool),
    /// A QoS 1/2 message whose acknowledgement (PUBACK, PUBREC) waits for
    /// [`Session::ack`] (see [`Session::set_deferred_acks`]).
    Deferred(PublishFrame),
}

#[derive(Debug)]
enum Request<R> {
    Publish {
        packet: Outgoing,
        reply: Option<R>,
        ticket: u64,
    },
    /// `origin`: the `seq` of the packet this resends (its strikes carry over).
    Subscribe {
        filters: Vec<(String, QoS)>,
        waiter: Option<u64>,
        origin: Option<u64>,
    },
    Unsubscribe {
        filters: Vec<String>,
        waiter: Option<u64>,
        origin: Option<u64>,
    },
}

/// Requests waiting for a packet identifier or for the connection, in order, and how many
/// of them are publishes (what a flush timeout reports every turn, without a scan).
#[derive(Debug)]
struct Requests<R> {
    list: VecDeque<Request<R>>,
    publishes: usize,
}

impl<R> Requests<R> {
    fn new() -> Self {
        Requests {
            list: VecDeque::new(),
            publishes: 0,
        }
    }

    fn counted(&mut self, req: &Request<R>, added: bool) {
        if matches!(req, Request::Publish { .. }) {
            if added {
                self.publishes += 1;
            } else {
                self.publishes -= 1;
            }
        }
    }

    fn push_back(&mut self, req: Request<R>) {
        self.counted(&req, true);
        self.list.push_back(req);
    }

    fn push_front(&mut self, req: Request<R>) {
        self.counted(&req, true);
        self.list.push_front(req);
    }

    fn pop_front(&mut self) -> Option<Request<R>> {
        let req = self.list.pop_front()?;
        self.counted(&req, false);
        Some(req)
    }

    fn drain(&mut self) -> std::collections::vec_deque::Drain<'_, Request<R>> {
        self.publishes = 0;
        self.list.drain(..)
    }

    fn front(&self) -> Option<&Request<R>> {
        self.list.front()
    }

    fn iter(&self) -> std::collections::vec_deque::Iter<'_, Request<R>> {
        self.list.iter()
    }

    fn len(&self) -> usize {
        self.list.len()
    }

    fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// Publishes among the requests.
    fn publishes(&self) -> usize {
        self.publishes
    }
}

#[derive(Debug)]
pub(crate) struct Inflight<R> {
    /// Order of first transmission, to resend in the same order after a reconnect.
    seq: u64,
    /// When it was last written (for strikes, see [`STRIKE_WINDOW`]).
    sent: Instant,
    kind: Pending<R>,
}

#[derive(Debug)]
pub(crate) enum Pending<R> {
    /// `released`: QoS 2 PUBREC arrived, PUBREL sent, waiting for PUBCOMP.
    Publish {
        packet: Outgoing,
        reply: Option<R>,
        released: bool,
        ticket: u64,
    },
    Subscribe {
        filters: Vec<(String, QoS)>,
        waiter: Option<u64>,
    },
    Unsubscribe {
        filters: Vec<String>,
        waiter: Option<u64>,
    },
}

impl<R> Inflight<R> {
    fn is_publish(&self) -> bool {
        matches!(self.kind, Pending::Publish { .. })
    }

    fn is_qos2_publish(&self) -> bool {
        matches!(&self.kind, Pending::Publish { packet, .. } if packet.qos == QoS::ExactlyOnce)
    }
}

/// Where the session stands with its connection.
#[derive(Debug)]
enum Phase {
    /// No connection: requests queue.
    Disconnected,
    /// CONNECT written; the first packet must be a CONNACK. What to resubscribe, and which
    /// filters are still wanted, were given by [`Session::connecting`].
    AwaitingConnack {
        resubscribe: Vec<(String, QoS)>,
        wanted: HashSet<String>,
    },
    /// CONNACK accepted: requests flow.
    Connected,
    /// DISCONNECT queued (a graceful close): what the server still sends is read and
    /// ignored, so that the connection stays up until DISCONNECT is written. Requests queue
    /// as while disconnected.
    Closing,
}

#[derive(Debug)]
struct SubWaiter<R> {
    id: u64,
    remaining: usize,
    refused: Vec<(String, Option<String>)>,
    reply: R,
}

/// What a session has counted since it was made (the `counts` field of [`Session`]).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    /// Publishes accepted.
    pub published: u64,
    /// PUBLISH packets written for the first time.
    pub sent: u64,
    /// PUBLISH packets written again with DUP after a reconnect.
    pub resent: u64,
    /// QoS 1/2 publishes acknowledged with success.
    pub acknowledged: u64,
    /// PUBLISH packets received.
    pub received: u64,
}

/// The sans-IO MQTT client session. `R` is the driver's reply handle for a request.
#[derive(Debug)]
pub struct Session<R> {
    cfg: SessionConfig,
    /// What it counted (the driver reads it for the provider's statistics).
    pub(crate) counts: Counts,
    phase: Phase,
    /// Acknowledgements of incoming QoS 1/2 wait for [`Session::ack`].
    defer_acks: bool,
    /// Incoming QoS 2 identifiers whose PUBREC waits for [`Session::ack`].
    deferred_qos2: HashSet<u16>,
    /// Whether the broker had a session for us at the last CONNACK.
    session_present: bool,
    out: Vec<u8>,
    events: VecDeque<Event<R>>,
    ids: ids::Ids<R>,
    seq: u64,
    queue: Requests<R>,
    waiters: Vec<SubWaiter<R>>,
    next_waiter: u64,
    inbound_qos2: HashSet<u16>,
    keepalive: keepalive::KeepAlive,
    /// The latest time the driver told us (send times of packets written between calls).
    clock: Instant,
    /// Every publish gets the next ticket; [`Session::oldest_unfinished`] tells flushes
    /// how far the session has come.
    next_ticket: u64,
    /// The packet (by `seq`) that the last lost connections died right after, and how many
    /// times in a row.
    suspect: Option<(u64, u8)>,
    /// What a durable outbox must record ([`Session::enable_journal`]); `None`: no outbox.
    journal: Option<Vec<Journal>>,
    /// How packets are written, and what the server allows.
    wire: wire::Wire,
    /// MQTT 5 subscription option bits (no local, retain as published, retain handling) by
    /// filter.
    sub_options: HashMap<String, u8>,
}

impl<R> Session<R> {
    /// A disconnected session.
    pub fn new(cfg: SessionConfig, now: Instant) -> Session<R> {
        let max = cfg.max_inflight.clamp(1, u16::MAX - CONTROL_IDS);
        let cfg_version = cfg.version;
        let cfg_aliases = match cfg.version {
            MqttVersion::V3_1_1 => 0,
            MqttVersion::V5 => cfg.v5.topic_alias_maximum,
        };
        Session {
            counts: Counts::default(),
            ids: ids::Ids::new(max, CONTROL_IDS),
            keepalive: keepalive::KeepAlive::new(cfg.keep_alive, now),
            cfg: SessionConfig {
                max_inflight: max,
                ..cfg
            },
            phase: Phase::Disconnected,
            session_present: false,
            out: Vec::new(),
            events: VecDeque::new(),
            seq: 0,
            queue: Requests::new(),
            waiters: Vec::new(),
            next_waiter: 0,
            inbound_qos2: HashSet::new(),
            defer_acks: false,
            deferred_qos2: HashSet::new(),
            clock: now,
            next_ticket: 0,
            suspect: None,
            journal: None,
            wire: wire::Wire::new(cfg_version, cfg_aliases),
            sub_options: HashMap::new(),
        }
    }

    /// From now on, records what a durable outbox needs ([`Journal`]); the driver takes the
    /// records with [`Session::take_journal`] and makes them durable before it writes the
    /// output produced with them.
    pub fn enable_journal(&mut self) {
        self.journal.get_or_insert_with(Vec::new);
    }

    /// The records since the last call.
    pub fn take_journal(&mut self) -> Vec<Journal> {
        self.journal
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    }

    fn record(&mut self, entry: Journal) {
        if let Some(j) = self.journal.as_mut() {
            j.push(entry);
        }
    }

    /// Takes back what an outbox kept: publishes in their original order ahead of anything
    /// new (QoS 2 ones that had a packet identifier resume under it, PUBREL when released,
    /// else PUBLISH with DUP), and incoming QoS 2 identifiers still awaiting PUBREL. Tickets
    /// continue after the largest restored one. Call before the first connection.
    pub fn restore(&mut self, publishes: Vec<Restored>, inbound_qos2: Vec<u16>, next_ticket: u64) {
        self.inbound_qos2.extend(inbound_qos2);
        self.next_ticket = self.next_ticket.max(next_ticket);
        for r in publishes {
            self.next_ticket = self.next_ticket.max(r.ticket + 1);
            let packet = Outgoing {
                topic: r.topic,
                payload: r.payload,
                qos: r.qos,
                retain: r.retain,
                props: r.props,
            };
            let free = |ids: &ids::Ids<R>, pid: u16| {
                pid != 0 && pid <= ids.max_id() && ids.get(pid).is_none()
            };
            match r.pid {
                Some(pid) if r.qos == QoS::ExactlyOnce && free(&self.ids, pid) => {
                    self.seq += 1;
                    self.ids.insert(
                        pid,
                        Inflight {
                            seq: self.seq,
                            sent: self.clock,
                            kind: Pending::Publish {
                                packet,
                                reply: None,
                                released: r.released,
                                ticket: r.ticket,
                            },
                        },
                    );
                }
                pid => {
                    if pid.is_some() {
                        log::warn!(
                            "outbox: QoS 2 message {} cannot resume under packet id {pid:?} \
                             (max_inflight is smaller than when it was sent); sent anew",
                            r.ticket
                        );
                    }
                    self.queue.push_back(Request::Publish {
                        packet,
                        reply: None,
                        ticket: r.ticket,
                    });
                }
            }
        }
    }

    /// The CONNECT packet for this session, encoded.
    pub fn connect_packet(&self) -> Vec<u8> {
        let c = &self.cfg;
        let connect = Connect {
            client_id: &c.client_id,
            keep_alive: c.keep_alive,
            clean_session: c.clean_session,
            username: c.username.as_deref(),
            password: c.password.as_deref(),
            will: c.will.as_ref(),
        };
        encode_connect(&connect, &c.v5, c.version)
    }

    /// The protocol version.
    // Used by the fuzz targets, the benchmark and the tests only.
    #[cfg_attr(not(feature = "__internals"), allow(dead_code))]
    pub fn version(&self) -> MqttVersion {
        self.cfg.version
    }

    /// What the server allows, as its last CONNACK said.
    pub fn server_limits(&self) -> &ServerLimits {
        &self.wire.limits
    }

    /// MQTT 5 subscription option bits for `filter` (sent with its next SUBSCRIBE): no
    /// local 0x04, retain as published 0x08, retain handling 0x10/0x20.
    pub fn set_subscription_options(&mut self, filter: &str, bits: u8) {
        if bits == 0 {
            self.sub_options.remove(filter);
        } else {
            self.sub_options.insert(filter.to_string(), bits & 0x3c);
        }
    }

    /// A connection is being made: returns the CONNECT packet to send first, and waits for
    /// CONNACK as the next packet. Once it is accepted, the session resumes
    /// ([`Session::on_connected`]) with `resubscribe` (used when the broker kept no session)
    /// and `wanted` (the filters still wanted, for requests the last connection left open).
    pub fn connecting(
        &mut self,
        resubscribe: Vec<(String, QoS)>,
        wanted: HashSet<String>,
    ) -> Vec<u8> {
        self.on_disconnected();
        self.phase = Phase::AwaitingConnack {
            resubscribe,
            wanted,
        };
        self.connect_packet()
    }

    /// Whether the session is connected (CONNACK accepted).
    pub fn is_connected(&self) -> bool {
        matches!(self.phase, Phase::Connected)
    }

    /// Whether the broker had kept a session for us, at the last CONNACK.
    pub fn session_present(&self) -> bool {
        self.session_present
    }

    /// Whether another request can be taken now (the driver stops reading its command channel
    /// otherwise, which blocks callers: backpressure).
    pub fn can_accept(&self) -> bool {
        self.queue.len() < self.cfg.max_queued
    }

    /// The ticket the next publish will get: every publish accepted before now has a
    /// smaller one.
    pub fn next_ticket(&self) -> u64 {
        self.next_ticket
    }

    /// The oldest ticket of a publish not finished yet (queued, or waiting for its
    /// acknowledgement); `None` when every publish is done except the QoS 0 bytes in
    /// [`Session::output`], which are done once written.
    pub fn oldest_unfinished(&self) -> Option<u64> {
        let queued = self.queue.iter().find_map(|r| match r {
            Request::Publish { ticket, .. } => Some(*ticket),
            _ => None,
        });
        let inflight = self
            .ids
            .iter()
            .filter_map(|(_, e)| match e.kind {
                Pending::Publish { ticket, .. } => Some(ticket),
                _ => None,
            })
            .min();
        match (queued, inflight) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Publishes not finished: queued, or awaiting their acknowledgement.
    pub fn unfinished_publishes(&self) -> usize {
        self.queue.publishes() + self.ids.publishes()
    }

    /// Unacknowledged requests.
    pub fn inflight(&self) -> usize {
        self.ids.inflight()
    }

    /// Requests waiting for an identifier or for the connection.
    // Used by the fuzz targets, the benchmark and the tests only.
    #[cfg_attr(not(feature = "__internals"), allow(dead_code))]
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// MQTT 5: the broker filters a message was sent for, from its subscription identifiers
    /// (`None`: route it by its topic).
    pub fn filters_for(&self, p: &PublishFrame) -> Option<Vec<&str>> {
        match p.inline_subscription_ids() {
            Some([]) => None,
            Some(ids) => self.wire.filters_for(ids),
            None => self.wire.filters_for(&p.subscription_ids()),
        }
    }

    /// Publishes. QoS 0 is written now if connected and nothing is queued ahead of it;
    /// QoS 1/2 take a packet identifier and report [`Event::Published`] on completion.
    // Used by the fuzz targets, the benchmark and the tests only.
    #[cfg_attr(not(feature = "__internals"), allow(dead_code))]
    pub fn publish(
        &mut self,
        topic: String,
        payload: Vec<u8>,
        qos: QoS,
        retain: bool,
        reply: Option<R>,
    ) -> Result<()> {
        self.publish_packet(
            Outgoing {
                topic,
                payload,
                qos,
                retain,
                props: Vec::new(),
            },
            reply,
        )
    }

    /// Whether the server of the current (or last) connection takes `packet`: its QoS,
    /// retain flag and size against the CONNACK's limits (MQTT 5; 3.1.1 says none).
    pub fn check_publish(&self, packet: &Outgoing) -> Result<()> {
        if self.cfg.version == MqttVersion::V5 {
            self.wire.limits.check(packet)?;
        }
        Ok(())
    }

    /// Publishes `packet` (with MQTT 5 properties, ignored in 3.1.1), like
    /// [`Session::publish`]. What the server said it does not take (QoS above its maximum,
    /// retain, a packet above its maximum size) is refused here.
    pub fn publish_packet(&mut self, packet: Outgoing, reply: Option<R>) -> Result<()> {
        // The caller validated the topic; only what would corrupt the encoding is checked here.
        if packet.topic.len() > crate::topic::MAX_TOPIC_LEN {
            return Err(Error::invalid_topic(
                &packet.topic,
                "longer than 65535 bytes",
            ));
        }
        if self.cfg.version == MqttVersion::V5 {
            self.wire.limits.check(&packet)?;
        }
        let qos = packet.qos;
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        self.counts.published += 1;
        if qos == QoS::AtMostOnce && self.is_connected() && self.queue.is_empty() {
            self.wire.publish(&packet, 0, false, &mut self.out);
            self.counts.sent += 1;
            return Ok(());
        }
        self.queue.push_back(Request::Publish {
            packet,
            reply,
            ticket,
        });
        self.drain_queue();
        Ok(())
    }

    /// Subscribes. With a reply handle, [`Event::Subscribed`] reports when every SUBACK is in.
    // Used by the fuzz targets, the benchmark and the tests only.
    #[cfg_attr(not(feature = "__internals"), allow(dead_code))]
    pub fn subscribe(&mut self, filters: Vec<(String, QoS)>, reply: Option<R>) {
        self.change(filters, Vec::new(), reply);
    }

    /// Unsubscribes (no reply: local delivery already stopped when this is called).
    // Used by the fuzz targets, the benchmark and the tests only.
    #[cfg_attr(not(feature = "__internals"), allow(dead_code))]
    pub fn unsubscribe(&mut self, filters: Vec<String>) {
        self.change(Vec::new(), filters, None);
    }

    /// SUBSCRIBEs, then UNSUBSCRIBEs (a wider filter replacing narrower ones). With a reply
    /// handle, [`Event::Subscribed`] reports when every SUBACK *and* UNSUBACK is in, so that
    /// when the caller hears back, the broker no longer holds the narrower filters (and will
    /// not send a second copy).
    pub fn change(
        &mut self,
        subscribe: Vec<(String, QoS)>,
        unsubscribe: Vec<String>,
        reply: Option<R>,
    ) {
        let chunk = self.cfg.max_filters_per_subscribe.max(1);
        let parts = subscribe.len().div_ceil(chunk) + unsubscribe.len().div_ceil(chunk);
        let waiter = reply.map(|reply| {
            let id = self.next_waiter;
            self.next_waiter += 1;
            self.waiters.push(SubWaiter {
                id,
                remaining: parts,
                refused: Vec::new(),
                reply,
            });
            id
        });
        if parts == 0 {
            if let Some(w) = waiter {
                self.finish_waiter(w);
            }
            return;
        }
        for part in subscribe.chunks(chunk) {
            self.queue.push_back(Request::Subscribe {
                filters: part.to_vec(),
                waiter,
                origin: None,
            });
        }
        for part in unsubscribe.chunks(chunk) {
            self.queue.push_back(Request::Unsubscribe {
                filters: part.to_vec(),
                waiter,
                origin: None,
            });
        }
        self.drain_queue();
    }

    /// Writes DISCONNECT; nothing is sent after it.
    pub fn disconnect(&mut self, props: &[u8]) {
        if self.is_connected() {
            packet::encode_disconnect(props, self.cfg.version, &mut self.out);
            self.phase = Phase::Closing;
            self.keepalive.stop();
        }
    }

    /// Bytes to send. The driver writes them, clears the vector and calls
    /// [`Session::mark_sent`].
    pub fn output(&mut self) -> &mut Vec<u8> {
        &mut self.out
    }

    /// The driver wrote output at `now` (keep-alive counts from the last thing sent).
    pub fn mark_sent(&mut self, now: Instant) {
        self.keepalive.sent(now);
    }

    /// The next event, if any. Once the queue is empty, memory a burst grew it to is given
    /// back.
    #[inline]
    pub fn next_event(&mut self) -> Option<Event<R>> {
        let ev = self.events.pop_front();
        if ev.is_none() && self.events.capacity() > 1024 {
            self.events = VecDeque::new();
        }
        ev
    }

    /// Events not taken yet.
    pub fn events_waiting(&self) -> usize {
        self.events.len()
    }

    /// Handles one packet from the broker.
    // Used by the fuzz targets, the benchmark and the tests only.
    #[cfg_attr(not(feature = "__internals"), allow(dead_code))]
    pub fn handle(&mut self, packet: mqtt::packet::VariablePacket, now: Instant) -> Result<()> {
        self.handle_inbound(Inbound::from(packet), now)
    }

    /// Handles one packet from the broker, as the framer delivers it.
    #[inline]
    pub fn handle_inbound(&mut self, packet: Inbound, now: Instant) -> Result<()> {
        // A PINGRESP while connected, an idle connection's only packet, is taken here: the
        // general path's frame (over a kilobyte) would otherwise be written once a
        // keep-alive interval and keep a third page of every idle I/O thread's stack
        // resident (issue 31: 4 KiB of about 27 per idle connection).
        if let (Inbound::Control(Control::Pingresp), Phase::Connected) = (&packet, &self.phase) {
            self.keepalive.received(now);
            self.clock = now;
            self.keepalive.pong();
            return Ok(());
        }
        self.handle_any(packet, now)
    }

    /// [`Session::handle_inbound`] for every packet and phase.
    #[inline(never)]
    fn handle_any(&mut self, packet: Inbound, now: Instant) -> Result<()> {
        if let Phase::Closing = self.phase {
            // After our DISCONNECT nothing is delivered or answered: a QoS 1/2 message left
            // unacknowledged is the broker's to resend (persistent session). Failing here
            // instead ended the connection before DISCONNECT was written, and the broker
            // published the will a graceful close promises to cancel.
            return Ok(());
        }
        self.keepalive.received(now);
        self.clock = now;
        let packet = match packet {
            Inbound::Publish(p) if self.is_connected() => return self.inbound_publish(p),
            Inbound::Publish(_) | Inbound::Oversized(_) if !self.is_connected() => {
                Err(Error::Protocol("expected CONNACK, got PUBLISH".into()))?
            }
            Inbound::Oversized(o) => return self.inbound_oversized(o),
            Inbound::Publish(_) => unreachable!("handled above"),
            Inbound::Other(p) => Control::from_v311(p)?,
            Inbound::Control(c) => c,
        };
        if packet.packet_id() == Some(0) {
            // [MQTT-2.3.1-1]; answering a PUBREL 0 would send a PUBCOMP 0.
            return Err(Error::Protocol(format!(
                "{} with packet identifier 0",
                packet.name()
            )));
        }
        if let Phase::AwaitingConnack { .. } = self.phase {
            return self.connack(packet, now);
        }
        match packet {
            Control::Pubrel(a) => {
                if self.inbound_qos2.remove(&a.id) {
                    self.record(Journal::InboundReleased { pid: a.id });
                }
                packet::encode_ack(AckKind::Pubcomp, a.id, &mut self.out);
            }
            Control::Puback(a) => {
                let id = a.id;
                if self.slot_is(id, |k| matches!(k, Pending::Publish { packet, .. } if packet.qos == QoS::AtLeastOnce)) {
                    self.complete_publish(id, a.code, a.props.reason());
                } else {
                    log::warn!("ignoring PUBACK for unknown packet id {id}");
                }
            }
            Control::Pubrec(a) => self.on_pubrec(a),
            Control::Pubcomp(a) => {
                let id = a.id;
                if self.slot_is(id, |k| matches!(k, Pending::Publish { released: true, .. })) {
                    // 0x92 (packet identifier not found): the server has finished it too.
                    self.complete_publish(id, ReasonCode(0), None);
                } else {
                    log::warn!("ignoring PUBCOMP for unknown packet id {id}");
                }
            }
            Control::Suback { id, codes, props } => return self.on_suback(id, codes, props),
            Control::Unsuback { id, codes, props } => self.on_unsuback(id, codes, props),
            Control::Pingresp => self.keepalive.pong(),
            Control::Disconnect { code, props } => {
                return Err(Error::ServerDisconnect {
                    code,
                    reason: props.reason().map(crate::error::printable),
                    server_reference: props
                        .str(packet::id::SERVER_REFERENCE)
                        .map(crate::error::printable),
                })
            }
            other => {
                return Err(Error::Protocol(format!(
                    "the broker sent {}, which a server never sends to a connected client",
                    other.name()
                )))
            }
        }
        Ok(())
    }

    /// PUBREC: a QoS 2 publish of ours reached the server (answered with PUBREL, recorded
    /// once), or was refused (the exchange ends).
    fn on_pubrec(&mut self, a: packet::Ack) {
        let id = a.id;
        if a.code.is_failure()
            && self.slot_is(id, |k| matches!(k, Pending::Publish { packet, released: false, .. } if packet.qos == QoS::ExactlyOnce))
        {
            // A refusal ends the exchange: no PUBREL [MQTT-4.3.3].
            self.complete_publish(id, a.code, a.props.reason());
            return;
        }
        let mut known = None;
        if let Some(Inflight {
            kind:
                Pending::Publish {
                    packet,
                    released,
                    ticket,
                    ..
                },
            ..
        }) = self.ids.get_mut(id)
        {
            if packet.qos == QoS::ExactlyOnce {
                // A repeated PUBREC is answered again, recorded once.
                known = Some((*ticket, !*released));
                *released = true;
            }
        }
        if let Some((ticket, first)) = known {
            if first {
                self.record(Journal::Released { ticket });
            }
            packet::encode_ack(AckKind::Pubrel, id, &mut self.out);
        } else {
            log::warn!("ignoring PUBREC for unknown packet id {id}");
        }
    }

    /// SUBACK: the request's filters granted or refused; the waiting call hears which.
    fn on_suback(&mut self, id: u16, codes: Vec<u8>, props: packet::Properties) -> Result<()> {
        if !self.slot_is(id, |k| matches!(k, Pending::Subscribe { .. })) {
            log::warn!("ignoring SUBACK for unknown packet id {id}");
            return Ok(());
        }
        let Some(Inflight {
            kind: Pending::Subscribe { filters, waiter },
            ..
        }) = self.free(id)
        else {
            unreachable!("checked above")
        };
        self.wire.acknowledged(id);
        if codes.len() != filters.len() {
            let msg = format!(
                "SUBACK has {} return codes for {} filters",
                codes.len(),
                filters.len()
            );
            // The caller hears it now, not at its timeout.
            if let Some(pos) = waiter.and_then(|w| self.waiters.iter().position(|x| x.id == w)) {
                let w = self.waiters.swap_remove(pos);
                self.events.push_back(Event::Failed(w.reply, msg.clone()));
            }
            return Err(Error::Protocol(msg));
        }
        let v5 = self.cfg.version == MqttVersion::V5;
        let refused: Vec<(String, Option<String>)> = filters
            .into_iter()
            .zip(&codes)
            .filter(|(_, c)| **c >= 0x80)
            .map(|((f, _), c)| {
                let why = v5.then(|| reason_text(ReasonCode(*c), props.reason()));
                (f, why)
            })
            .collect();
        if let Some(w) = waiter.and_then(|w| self.waiters.iter_mut().find(|x| x.id == w)) {
            w.refused.extend(refused);
            let id = w.id;
            self.chunk_done(id);
        } else {
            for (f, why) in refused {
                log::warn!(
                    "broker refused the subscription to {f:?} on resubscribe{}",
                    why.map(|w| format!(": {w}")).unwrap_or_default()
                );
            }
        }
        self.drain_queue();
        Ok(())
    }

    /// UNSUBACK: refusals (MQTT 5) are reported; the waiting call goes on.
    fn on_unsuback(&mut self, id: u16, codes: Vec<u8>, props: packet::Properties) {
        if self.slot_is(id, |k| matches!(k, Pending::Unsubscribe { .. })) {
            if let Some(Inflight {
                kind: Pending::Unsubscribe { filters, waiter },
                ..
            }) = self.free(id)
            {
                self.wire.acknowledged(id);
                let refused: Vec<(String, ReasonCode, Option<String>)> = filters
                    .iter()
                    .zip(&codes)
                    .filter(|(_, c)| **c >= 0x80)
                    .map(|(f, c)| {
                        (
                            f.clone(),
                            ReasonCode(*c),
                            props.reason().map(crate::error::printable),
                        )
                    })
                    .collect();
                if !refused.is_empty() {
                    self.events.push_back(Event::UnsubscribeRefused(refused));
                }
                if let Some(w) = waiter {
                    self.chunk_done(w);
                }
            }
            self.drain_queue();
        } else {
            log::warn!("ignoring UNSUBACK for unknown packet id {id}");
        }
    }

    fn inbound_publish(&mut self, mut p: PublishFrame) -> Result<()> {
        self.counts.received += 1;
        if self.cfg.version == MqttVersion::V5 {
            self.wire.resolve(&mut p)?;
        }
        match (p.qos(), p.packet_id()) {
            (QoS::AtLeastOnce, Some(_)) if self.defer_acks => {
                self.events.push_back(Event::Deferred(p));
            }
            (QoS::AtLeastOnce, Some(id)) => {
                self.events.push_back(Event::Message(p));
                packet::encode_ack(AckKind::Puback, id, &mut self.out);
            }
            (QoS::ExactlyOnce, Some(id)) => {
                // Deliver once; a duplicate before PUBREL is only acknowledged [MQTT-4.3.3]
                // — unless its PUBREC still waits for the application, which then answers
                // both.
                if self.inbound_qos2.insert(id) {
                    self.record(Journal::InboundReceived { pid: id });
                    if self.defer_acks {
                        self.deferred_qos2.insert(id);
                        self.events.push_back(Event::Deferred(p));
                        return Ok(());
                    }
                    self.events.push_back(Event::Message(p));
                } else if self.deferred_qos2.contains(&id) {
                    return Ok(());
                }
                packet::encode_ack(AckKind::Pubrec, id, &mut self.out);
            }
            _ => self.events.push_back(Event::Message(p)),
        }
        Ok(())
    }

    /// Whether acknowledgements of incoming QoS 1/2 messages wait for [`Session::ack`]
    /// (they come as [`Event::Deferred`]) instead of going out on arrival.
    pub fn set_deferred_acks(&mut self, on: bool) {
        self.defer_acks = on;
    }

    /// Sends the acknowledgement a [`Event::Deferred`] message waited for (PUBACK for QoS 1,
    /// PUBREC for QoS 2), on this connection. The caller keeps MQTT's order: in the order
    /// the messages arrived [MQTT-4.6.0-2].
    pub fn ack(&mut self, id: u16, qos: QoS) {
        if !self.is_connected() {
            return;
        }
        match qos {
            QoS::AtLeastOnce => packet::encode_ack(AckKind::Puback, id, &mut self.out),
            QoS::ExactlyOnce => {
                if self.deferred_qos2.remove(&id) {
                    packet::encode_ack(AckKind::Pubrec, id, &mut self.out);
                }
            }
            QoS::AtMostOnce => {}
        }
    }

    /// Whether we wait for the server to answer something of ours: a PINGREQ, a publish
    /// (PUBACK, PUBREC, PUBCOMP), a SUBSCRIBE or UNSUBSCRIBE. Back-pressure never stops
    /// reading then: the answer may come after messages, and waiting for it while not
    /// reading would time out a publish, stall a close, or declare a live link dead.
    pub fn awaiting_server(&self) -> bool {
        self.keepalive.ping_outstanding() || self.ids.inflight() > 0 || !self.waiters.is_empty()
    }

    /// A PUBLISH over `max_packet_size`, skipped: acknowledged at its QoS as if delivered,
    /// so that the broker stops resending it (a persistent session would otherwise get it
    /// again on every connection and nothing after it), and reported as an event. QoS 2
    /// keeps its identifier until PUBREL, as a delivered one does, so a resent copy is not
    /// reported twice.
    fn inbound_oversized(&mut self, o: crate::mqtt::packet::Oversized) -> Result<()> {
        if let (true, Some(id)) = (self.defer_acks, o.packet_id) {
            if o.qos == QoS::ExactlyOnce {
                if !self.inbound_qos2.insert(id) {
                    // A resend of one already reported: answered as its first copy is.
                    if !self.deferred_qos2.contains(&id) {
                        packet::encode_ack(AckKind::Pubrec, id, &mut self.out);
                    }
                    return Ok(());
                }
                self.record(Journal::InboundReceived { pid: id });
                self.deferred_qos2.insert(id);
            }
            self.events.push_back(Event::Oversized(o, true));
            return Ok(());
        }
        match (o.qos, o.packet_id) {
            (QoS::AtLeastOnce, Some(id)) => packet::encode_ack(AckKind::Puback, id, &mut self.out),
            (QoS::ExactlyOnce, Some(id)) => {
                let first = self.inbound_qos2.insert(id);
                if first {
                    self.record(Journal::InboundReceived { pid: id });
                }
                packet::encode_ack(AckKind::Pubrec, id, &mut self.out);
                if !first {
                    return Ok(());
                }
            }
            _ => {}
        }
        self.events.push_back(Event::Oversized(o, false));
        Ok(())
    }

    /// Runs the keep-alive clock. An error means the link is dead (no PINGRESP in time).
    pub fn poll_timers(&mut self, now: Instant) -> Result<()> {
        self.clock = now;
        if !self.is_connected() {
            return Ok(());
        }
        if self.keepalive.poll(now)? == keepalive::Tick::Ping {
            packet::encode_pingreq(&mut self.out);
        }
        Ok(())
    }

    /// When [`Session::poll_timers`] next has something to do.
    pub fn next_deadline(&self) -> Option<Instant> {
        if !self.is_connected() {
            return None;
        }
        self.keepalive.next_deadline()
    }

    /// Takes every reply handle still waiting (on close), in no particular order.
    pub fn take_waiting(&mut self) -> Vec<R> {
        let mut replies: Vec<R> = self
            .ids
            .drain()
            .into_iter()
            .filter_map(|e| match e.kind {
                Pending::Publish { reply, .. } => reply,
                _ => None,
            })
            .collect();
        for req in self.queue.drain() {
            if let Request::Publish { reply: Some(r), .. } = req {
                replies.push(r);
            }
        }
        replies.extend(self.waiters.drain(..).map(|w| w.reply));
        replies
    }

    /// Checks the invariants (for tests and fuzzing): in-flight count matches the slots and
    /// stays within the window, id 0 is never used, and the ping deadline is never behind the
    /// ping.
    // Used by the fuzz targets, the benchmark and the tests only.
    #[cfg_attr(not(feature = "__internals"), allow(dead_code))]
    pub fn check_invariants(&self) -> std::result::Result<(), String> {
        self.ids.check()?;
        let publishes = self
            .queue
            .iter()
            .filter(|r| matches!(r, Request::Publish { .. }))
            .count();
        if publishes != self.queue.publishes() {
            return Err(format!(
                "{publishes} publishes queued, {} counted",
                self.queue.publishes()
            ));
        }
        self.keepalive.check()
    }

    /// The order of `req` among requests: a resubscription keeps its original's, anything
    /// else takes the next.
    fn sequence_of(&mut self, req: &Request<R>) -> u64 {
        match req {
            Request::Subscribe {
                origin: Some(seq), ..
            }
            | Request::Unsubscribe {
                origin: Some(seq), ..
            } => *seq,
            _ => {
                self.seq += 1;
                self.seq
            }
        }
    }

    /// Whether the next request is a QoS 2 publish and the QoS 2 window is full.
    fn qos2_window_full(&self) -> bool {
        let limit = self.cfg.max_inflight_qos2 as usize;
        let next_is_qos2 = matches!(
            self.queue.front(),
            Some(Request::Publish { packet, .. }) if packet.qos == QoS::ExactlyOnce
        );
        limit > 0 && next_is_qos2 && self.ids.qos2() >= limit
    }

    fn unsubscribes_in_flight(&self) -> bool {
        self.ids
            .iter()
            .any(|(_, e)| matches!(e.kind, Pending::Unsubscribe { .. }))
    }

    fn slot_is(&self, id: u16, f: impl Fn(&Pending<R>) -> bool) -> bool {
        self.ids.get(id).is_some_and(|e| f(&e.kind))
    }

    fn free(&mut self, id: u16) -> Option<Inflight<R>> {
        self.ids.free(id)
    }

    /// Publish `id` is finished: acknowledged, or (`code` a failure) refused by the server.
    fn complete_publish(&mut self, id: u16, code: ReasonCode, reason: Option<&str>) {
        if let Some(Inflight {
            kind:
                Pending::Publish {
                    reply,
                    ticket,
                    packet,
                    ..
                },
            ..
        }) = self.free(id)
        {
            self.record(Journal::Finished { ticket });
            if !code.is_failure() {
                self.counts.acknowledged += 1;
            }
            if code.is_failure() {
                let what = format!(
                    "the QoS {} publish to \"{}\" ({} bytes)",
                    packet.qos as u8,
                    crate::error::printable(&packet.topic),
                    packet.payload.len()
                );
                let reason = reason.map(crate::error::printable);
                self.events
                    .push_back(Event::PublishRejected(reply, code, reason, what));
            } else if let Some(r) = reply {
                self.events.push_back(Event::Published(r));
            }
        }
        self.drain_queue();
    }

    /// One SUBSCRIBE of waiter `id` is answered (or dropped).
    fn chunk_done(&mut self, id: u64) {
        if let Some(w) = self.waiters.iter_mut().find(|x| x.id == id) {
            w.remaining = w.remaining.saturating_sub(1);
            if w.remaining == 0 {
                self.finish_waiter(id);
            }
        }
    }

    fn finish_waiter(&mut self, id: u64) {
        if let Some(pos) = self.waiters.iter().position(|w| w.id == id) {
            let w = self.waiters.swap_remove(pos);
            self.events.push_back(Event::Subscribed(w.reply, w.refused));
        }
    }

    /// MQTT 5: takes out of the SUBSCRIBE at the front of the queue the filters the server's
    /// CONNACK said it cannot take (shared or wildcard subscriptions), refusing them without
    /// asking; returns whether the queue's front changed.
    fn refuse_unavailable_filters(&mut self) -> bool {
        let limits = &self.wire.limits;
        let Some(Request::Subscribe { filters, .. }) = self.queue.front() else {
            return false;
        };
        if !filters.iter().any(|(f, _)| limits.refusal(f).is_some()) {
            return false;
        }
        let Some(Request::Subscribe {
            filters,
            waiter,
            origin,
        }) = self.queue.pop_front()
        else {
            unreachable!("checked above")
        };
        let (bad, good): (Vec<_>, Vec<_>) = filters
            .into_iter()
            .partition(|(f, _)| self.wire.limits.refusal(f).is_some());
        let refused: Vec<(String, Option<String>)> = bad
            .into_iter()
            .map(|(f, _)| {
                let why = self.wire.limits.refusal(&f);
                (f, why)
            })
            .collect();
        if let Some(w) = waiter.and_then(|w| self.waiters.iter_mut().find(|x| x.id == w)) {
            w.refused.extend(refused);
        } else {
            for (f, why) in refused {
                log::warn!(
                    "not resubscribing {:?}: {}",
                    crate::error::printable(&f),
                    why.unwrap_or_default()
                );
            }
        }
        if good.is_empty() {
            if let Some(w) = waiter {
                self.chunk_done(w);
            }
        } else {
            self.queue.push_front(Request::Subscribe {
                filters: good,
                waiter,
                origin,
            });
        }
        true
    }

    /// Sends queued requests while connected and identifiers are free, in order.
    fn drain_queue(&mut self) {
        self.drain_queue_while(|_| true)
    }

    /// Like `drain_queue`, stopping at the first request `take` refuses.
    fn drain_queue_while(&mut self, take: impl Fn(&Request<R>) -> bool) {
        while self.is_connected() {
            let needs_id = match self.queue.front() {
                None => return,
                Some(r) if !take(r) => return,
                Some(Request::Publish { packet, .. }) => packet.qos != QoS::AtMostOnce,
                // A SUBSCRIBE waits for every UNSUBACK: aedes processes an UNSUBSCRIBE and a
                // following SUBSCRIBE of the same filter concurrently, and the unsubscribe
                // can win, leaving us unsubscribed.
                Some(Request::Subscribe { .. }) if self.unsubscribes_in_flight() => return,
                Some(_) => true,
            };
            if !needs_id {
                if let Some(Request::Publish { packet, .. }) = self.queue.pop_front() {
                    self.wire.publish(&packet, 0, false, &mut self.out);
                    self.counts.sent += 1;
                }
                continue;
            }
            if self.refuse_unavailable_filters() {
                continue;
            }
            let is_publish = matches!(self.queue.front(), Some(Request::Publish { .. }));
            if self.qos2_window_full() {
                // In order: what queues behind it waits too.
                return;
            }
            let Some(id) = self.ids.take(is_publish) else {
                return;
            };
            let req = self.queue.pop_front().expect("front checked");
            let seq = self.sequence_of(&req);
            let kind = match req {
                Request::Publish {
                    packet,
                    reply,
                    ticket,
                } => {
                    if packet.qos == QoS::ExactlyOnce {
                        self.record(Journal::Assigned { ticket, pid: id });
                    }
                    self.wire.publish(&packet, id, false, &mut self.out);
                    self.counts.sent += 1;
                    Pending::Publish {
                        packet,
                        reply,
                        released: false,
                        ticket,
                    }
                }
                Request::Subscribe {
                    filters, waiter, ..
                } => {
                    self.wire
                        .subscribe(id, &filters, &self.sub_options, &mut self.out);
                    Pending::Subscribe { filters, waiter }
                }
                Request::Unsubscribe {
                    filters, waiter, ..
                } => {
                    self.wire.unsubscribe(id, &filters, &mut self.out);
                    Pending::Unsubscribe { filters, waiter }
                }
            };
            self.ids.insert(
                id,
                Inflight {
                    seq,
                    sent: self.clock,
                    kind,
                },
            );
        }
    }
}

/// A reason code and the server's reason string, in words.
fn reason_text(code: ReasonCode, reason: Option<&str>) -> String {
    match reason {
        Some(r) => format!("reason code {code}: {}", crate::error::printable(r)),
        None => format!("reason code {code}"),
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::mqtt::codec::Framer;
    use mqtt::control::variable_header::ConnectReturnCode;
    use mqtt::packet::suback::SubscribeReturnCode;
    use mqtt::TopicName;

    pub(super) fn decode_all(bytes: &[u8]) -> Vec<VariablePacket> {
        let mut out = Vec::new();
        Framer::new(1 << 20)
            .feed(bytes, |p| {
                out.push(match p {
                    Inbound::Other(v) => v,
                    Inbound::Publish(f) => crate::mqtt::packet::decode_frame(f.as_bytes()).unwrap(),
                    other => unreachable!("a 3.1.1 framer of 1 MiB made {other:?}"),
                });
                Ok(())
            })
            .unwrap();
        out
    }

    pub(super) fn sent(s: &mut Session<u32>) -> Vec<VariablePacket> {
        let bytes = std::mem::take(s.output());
        decode_all(&bytes)
    }

    pub(super) fn connected(cfg: SessionConfig) -> (Session<u32>, Instant) {
        let now = Instant::now();
        let mut s = Session::new(cfg, now);
        s.on_connected(now, false, Vec::new(), &|_| true);
        (s, now)
    }

    #[test]
    fn qos1_publish_completes_on_puback_only() {
        let (mut s, now) = connected(SessionConfig::new("c"));
        s.publish("a".into(), b"x".to_vec(), QoS::AtLeastOnce, false, Some(7))
            .unwrap();
        let out = sent(&mut s);
        let VariablePacket::PublishPacket(p) = &out[0] else {
            panic!("{out:?}")
        };
        let QoSWithPacketIdentifier::Level1(id) = p.qos() else {
            panic!()
        };
        assert_eq!(s.inflight(), 1);
        // A PUBACK for another id is ignored.
        s.handle(PubackPacket::new(id + 1).into(), now).unwrap();
        assert!(s.next_event().is_none());
        s.handle(PubackPacket::new(id).into(), now).unwrap();
        assert_eq!(s.next_event(), Some(Event::Published(7)));
        assert_eq!(s.inflight(), 0);
        s.check_invariants().unwrap();
    }

    #[test]
    fn qos2_publish_goes_through_pubrec_pubrel_pubcomp() {
        let (mut s, now) = connected(SessionConfig::new("c"));
        s.publish("a".into(), b"x".to_vec(), QoS::ExactlyOnce, false, Some(1))
            .unwrap();
        let _ = sent(&mut s);
        // PUBCOMP before PUBREC is not accepted.
        s.handle(PubcompPacket::new(1).into(), now).unwrap();
        assert!(s.next_event().is_none());
        s.handle(PubrecPacket::new(1).into(), now).unwrap();
        assert_eq!(
            sent(&mut s),
            vec![VariablePacket::from(PubrelPacket::new(1))]
        );
        s.handle(PubcompPacket::new(1).into(), now).unwrap();
        assert_eq!(s.next_event(), Some(Event::Published(1)));
        s.check_invariants().unwrap();
    }

    #[test]
    fn window_limits_inflight_and_queue_drains_in_order() {
        let mut cfg = SessionConfig::new("c");
        cfg.max_inflight = 2;
        let (mut s, now) = connected(cfg);
        for i in 0..5 {
            s.publish(format!("t/{i}"), vec![], QoS::AtLeastOnce, false, Some(i))
                .unwrap();
        }
        assert_eq!(s.inflight(), 2);
        assert_eq!(s.queued(), 3);
        let first = sent(&mut s);
        assert_eq!(first.len(), 2);
        s.handle(PubackPacket::new(1).into(), now).unwrap();
        let next = sent(&mut s);
        let VariablePacket::PublishPacket(p) = &next[0] else {
            panic!()
        };
        assert_eq!(p.topic_name(), "t/2");
        s.check_invariants().unwrap();
    }

    #[test]
    fn the_qos2_window_holds_qos2_publishes_and_what_queues_behind_them() {
        let mut cfg = SessionConfig::new("c");
        cfg.max_inflight_qos2 = 2;
        let (mut s, now) = connected(cfg);
        for i in 0..3 {
            s.publish(format!("t/{i}"), vec![], QoS::ExactlyOnce, false, Some(i))
                .unwrap();
        }
        s.publish("t/q1".into(), vec![], QoS::AtLeastOnce, false, Some(9))
            .unwrap();
        // Two QoS 2 out; the third waits, and the QoS 1 behind it keeps its place.
        assert_eq!((s.inflight(), s.queued()), (2, 2));
        assert_eq!(sent(&mut s).len(), 2);
        s.check_invariants().unwrap();
        // The first completes (PUBREC, then PUBCOMP): the third goes, then the QoS 1.
        s.handle(PubrecPacket::new(1).into(), now).unwrap();
        s.handle(PubcompPacket::new(1).into(), now).unwrap();
        let next: Vec<String> = sent(&mut s)
            .iter()
            .filter_map(|p| match p {
                VariablePacket::PublishPacket(p) => Some(p.topic_name().to_string()),
                _ => None,
            })
            .collect();
        assert_eq!(next, ["t/2", "t/q1"]);
        s.check_invariants().unwrap();
    }

    #[test]
    fn suback_refusal_names_the_filter_and_large_requests_are_split() {
        let mut cfg = SessionConfig::new("c");
        cfg.max_filters_per_subscribe = 2;
        let (mut s, now) = connected(cfg);
        let filters: Vec<_> = ["a", "b", "c"]
            .iter()
            .map(|f| (f.to_string(), QoS::AtMostOnce))
            .collect();
        s.subscribe(filters, Some(9));
        let out = sent(&mut s);
        assert_eq!(out.len(), 2);
        s.handle(
            SubackPacket::new(1, vec![SubscribeReturnCode::MaximumQoSLevel0; 2]).into(),
            now,
        )
        .unwrap();
        assert!(s.next_event().is_none(), "one SUBACK still missing");
        s.handle(
            SubackPacket::new(2, vec![SubscribeReturnCode::Failure]).into(),
            now,
        )
        .unwrap();
        assert_eq!(
            s.next_event(),
            Some(Event::Subscribed(9, vec![("c".to_string(), None)]))
        );
    }

    #[test]
    fn subscribe_waits_for_a_pending_unsuback() {
        let (mut s, now) = connected(SessionConfig::new("c"));
        s.unsubscribe(vec!["a".into()]);
        s.subscribe(vec![("a".into(), QoS::AtMostOnce)], Some(1));
        let out = sent(&mut s);
        assert_eq!(out.len(), 1);
        assert!(matches!(out[0], VariablePacket::UnsubscribePacket(_)));
        s.handle(UnsubackPacket::new(1).into(), now).unwrap();
        let out = sent(&mut s);
        assert!(
            matches!(out[..], [VariablePacket::SubscribePacket(_)]),
            "{out:?}"
        );
    }

    #[test]
    fn suback_with_wrong_code_count_is_a_protocol_error() {
        let (mut s, now) = connected(SessionConfig::new("c"));
        s.subscribe(vec![("a".into(), QoS::AtMostOnce)], Some(1));
        let _ = sent(&mut s);
        let err = s
            .handle(SubackPacket::new(1, vec![]).into(), now)
            .unwrap_err();
        assert!(matches!(err, Error::Protocol(_)));
        // The waiting caller is told at once.
        assert!(matches!(s.next_event(), Some(Event::Failed(1, _))));
        assert_eq!(s.check_invariants(), Ok(()));
    }

    #[test]
    fn inbound_qos2_is_delivered_once_until_pubrel() {
        let (mut s, now) = connected(SessionConfig::new("c"));
        let p = PublishPacket::new(
            TopicName::new("a").unwrap(),
            QoSWithPacketIdentifier::Level2(5),
            b"x".to_vec(),
        );
        s.handle(p.clone().into(), now).unwrap();
        s.handle(p.clone().into(), now).unwrap();
        assert!(matches!(s.next_event(), Some(Event::Message(_))));
        assert!(s.next_event().is_none());
        s.handle(PubrelPacket::new(5).into(), now).unwrap();
        let out = sent(&mut s);
        assert_eq!(
            out.last(),
            Some(&VariablePacket::from(PubcompPacket::new(5)))
        );
        s.handle(p.into(), now).unwrap();
        assert!(
            matches!(s.next_event(), Some(Event::Message(_))),
            "a new message with a reused id"
        );
    }

    #[test]
    fn inbound_qos1_is_acked() {
        let (mut s, now) = connected(SessionConfig::new("c"));
        let p = PublishPacket::new(
            TopicName::new("a").unwrap(),
            QoSWithPacketIdentifier::Level1(3),
            b"x".to_vec(),
        );
        s.handle(p.into(), now).unwrap();
        assert_eq!(
            sent(&mut s),
            vec![VariablePacket::from(PubackPacket::new(3))]
        );
    }

    #[test]
    fn packets_a_server_never_sends_are_protocol_errors() {
        let (mut s, now) = connected(SessionConfig::new("c"));
        for p in [
            VariablePacket::from(PingreqPacket::new()),
            VariablePacket::from(ConnectPacket::new("x")),
            VariablePacket::from(DisconnectPacket::new()),
            VariablePacket::from(ConnackPacket::new(
                false,
                ConnectReturnCode::ConnectionAccepted,
            )),
        ] {
            assert!(matches!(s.handle(p, now), Err(Error::Protocol(_))));
        }
    }

    #[test]
    fn close_fails_every_waiter() {
        let (mut s, _) = connected(SessionConfig::new("c"));
        s.publish("a".into(), vec![], QoS::AtLeastOnce, false, Some(1))
            .unwrap();
        s.subscribe(vec![("x".into(), QoS::AtMostOnce)], Some(2));
        s.on_disconnected();
        s.publish("b".into(), vec![], QoS::AtLeastOnce, false, Some(3))
            .unwrap();
        let mut w = s.take_waiting();
        w.sort();
        assert_eq!(w, vec![1, 2, 3]);
    }
    #[test]
    fn tickets_tell_when_earlier_publishes_are_done() {
        let (mut s, now) = connected(SessionConfig::new("c"));
        s.publish("a".into(), vec![], QoS::AtMostOnce, false, None)
            .unwrap();
        assert_eq!(s.oldest_unfinished(), None, "QoS 0 is done once written");
        s.publish("a".into(), vec![], QoS::AtLeastOnce, false, Some(1))
            .unwrap();
        let mark = s.next_ticket();
        s.publish("a".into(), vec![], QoS::AtLeastOnce, false, Some(2))
            .unwrap();
        assert!(s.oldest_unfinished().unwrap() < mark);
        s.handle(PubackPacket::new(1).into(), now).unwrap();
        assert!(s.oldest_unfinished().unwrap() >= mark);
        s.handle(PubackPacket::new(2).into(), now).unwrap();
        assert_eq!(s.oldest_unfinished(), None);
    }

    /// Found by the `session` fuzz target: a PUBREL with packet id 0 was answered with
    /// PUBCOMP 0. Every acknowledgement with id 0 is a protocol error now.
    #[test]
    fn acknowledgements_with_packet_id_zero_are_protocol_errors() {
        let (mut s, now) = connected(SessionConfig::new("c"));
        for p in [
            VariablePacket::from(PubrelPacket::new(0)),
            PubackPacket::new(0).into(),
            PubrecPacket::new(0).into(),
            PubcompPacket::new(0).into(),
            UnsubackPacket::new(0).into(),
        ] {
            let err = s.handle(p, now).unwrap_err();
            assert!(err.to_string().contains("packet identifier 0"), "{err}");
        }
        assert!(sent(&mut s).is_empty(), "nothing answered");
    }
}

//! PUBLISH (§3.3) in both versions: an incoming one kept as a slice of the bytes it
//! arrived in ([`PublishFrame`]), an oversized one skipped as it streams by ([`Oversized`]),
//! an outgoing one encoded straight from the caller's topic and payload ([`Outgoing`]), and
//! MQTT 5's properties.

use std::sync::Arc;

use bytes::Bytes;

use super::properties::allowed;
use super::{id, put_varint, varint_len, Inbound, Properties, Reader};
use crate::error::Error;
use crate::mqtt::{MqttVersion, QoS};

/// How an outgoing PUBLISH uses a topic alias.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alias {
    /// The topic, no alias.
    None,
    /// The topic, and alias `n` defined for it from now on.
    Set(u16),
    /// An empty topic and alias `n`, defined earlier on this connection.
    Use(u16),
}

/// What a PUBLISH's property block said.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PublishProps {
    /// Every property but the topic alias and the subscription identifiers, when there is
    /// any (`None`: nothing was allocated).
    pub props: Option<Arc<Properties>>,
    /// The topic alias (0: none).
    pub alias: u16,
    /// The subscription identifiers (the first [`INLINE_IDS`]; `more_ids` when there were
    /// more, then all of them are in `props`).
    pub ids: [u32; INLINE_IDS],
    /// How many of `ids` are used.
    pub n_ids: u8,
    /// Bytes the property length and the properties took.
    pub len: usize,
}

/// Subscription identifiers kept without an allocation.
pub const INLINE_IDS: usize = 4;

/// Reads the properties of a PUBLISH whose body from the property length on is `rest`. The
/// common blocks — none, a topic alias, a few subscription identifiers — allocate nothing;
/// anything else is read whole by [`Properties::read`] with the same checks.
pub fn parse_publish(rest: &[u8], budget: usize) -> Result<PublishProps, Error> {
    if rest.first() == Some(&0) {
        return Ok(PublishProps {
            len: 1,
            ..PublishProps::default()
        });
    }
    if let Some(fast) = parse_common(rest) {
        return Ok(fast);
    }
    let mut r = Reader::new(rest);
    let mut props = Properties::read_within(&mut r, allowed::PUBLISH, "PUBLISH", budget)?;
    let alias = props.int(id::TOPIC_ALIAS).unwrap_or(0) as u16;
    let mut out = PublishProps {
        alias,
        len: r.pos(),
        ..PublishProps::default()
    };
    // Resolved by the session; not a property of the message.
    props.0.retain(|p| p.id != id::TOPIC_ALIAS);
    let ids: Vec<u32> = props.subscription_ids().collect();
    if ids.len() <= INLINE_IDS {
        for (i, v) in ids.iter().enumerate() {
            out.ids[i] = *v;
        }
        out.n_ids = ids.len() as u8;
        props.0.retain(|p| p.id != id::SUBSCRIPTION_IDENTIFIER);
    } else {
        out.n_ids = u8::MAX;
    }
    out.props = (!props.is_empty()).then(|| Arc::new(props));
    Ok(out)
}

/// The allocation-free path: a block of at most one topic alias and up to [`INLINE_IDS`]
/// subscription identifiers, well formed; `None` for anything else (the full reader decides).
fn parse_common(rest: &[u8]) -> Option<PublishProps> {
    let mut r = Reader::new(rest);
    let len = r.varint()? as usize;
    let block = r.take(len)?;
    let mut b = Reader::new(block);
    let mut out = PublishProps {
        len: r.pos(),
        ..PublishProps::default()
    };
    while !b.is_empty() {
        match b.u8()? {
            id::TOPIC_ALIAS if out.alias == 0 => {
                out.alias = b.u16().filter(|a| *a != 0)?;
            }
            id::SUBSCRIPTION_IDENTIFIER if (out.n_ids as usize) < INLINE_IDS => {
                out.ids[out.n_ids as usize] = b.varint().filter(|v| *v != 0)?;
                out.n_ids += 1;
            }
            _ => return None,
        }
    }
    Some(out)
}

/// Appends the v5 PUBLISH of `o` with packet id `id` (ignored at QoS 0), the DUP flag and
/// the topic alias.
pub fn encode_publish(o: &Outgoing, id: u16, dup: bool, alias: Alias, out: &mut Vec<u8>) {
    let qos = o.qos as u8;
    let id_len = if qos > 0 { 2 } else { 0 };
    let topic: &[u8] = match alias {
        Alias::Use(_) => b"",
        _ => o.topic.as_bytes(),
    };
    let alias_len = if alias == Alias::None { 0 } else { 3 };
    let props_len = alias_len + o.props.len();
    let remaining = 2 + topic.len() + id_len + varint_len(props_len) + props_len + o.payload.len();
    out.reserve(remaining + 5);
    out.push(0x30 | (u8::from(dup && qos > 0) << 3) | (qos << 1) | u8::from(o.retain));
    put_varint(remaining, out);
    out.extend_from_slice(&(topic.len() as u16).to_be_bytes());
    out.extend_from_slice(topic);
    if qos > 0 {
        out.extend_from_slice(&id.to_be_bytes());
    }
    put_varint(props_len, out);
    if let Alias::Set(n) | Alias::Use(n) = alias {
        out.push(id::TOPIC_ALIAS);
        out.extend_from_slice(&n.to_be_bytes());
    }
    out.extend_from_slice(&o.props);
    out.extend_from_slice(&o.payload);
}

/// An incoming PUBLISH, kept as the bytes it arrived in, its fields located and checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublishFrame {
    bytes: Bytes,
    topic: (u32, u32),
    payload_start: u32,
    flags: u8,
    packet_id: u16,
    /// v5: the topic alias it carried (0: none).
    alias: u16,
    /// v5: its properties other than a topic alias and (up to four) subscription
    /// identifiers, when it had any.
    props: Option<Arc<Properties>>,
    /// v5: its subscription identifiers, when there were at most four.
    sub_ids: [u32; INLINE_IDS],
    /// How many of `sub_ids` are used (`u8::MAX`: more, all in `props`).
    n_sub_ids: u8,
    /// v5: the topic its alias stands for, when it came with an empty topic.
    aliased_topic: Option<Arc<str>>,
}

impl PublishFrame {
    /// Parses one complete MQTT 3.1.1 PUBLISH packet whose fixed header is `header` bytes
    /// long.
    pub fn parse(bytes: Bytes, header: usize) -> Result<PublishFrame, Error> {
        PublishFrame::parse_as(bytes, header, MqttVersion::V3_1_1)
    }

    /// Parses one complete PUBLISH packet of `version`.
    pub fn parse_as(
        bytes: Bytes,
        header: usize,
        version: MqttVersion,
    ) -> Result<PublishFrame, Error> {
        match PublishFrame::parse_or_skip(bytes, header, version)? {
            Inbound::Publish(p) => Ok(p),
            Inbound::Oversized(o) => Err(Error::PacketTooLarge {
                size: o.size,
                max: Properties::budget(o.size),
            }),
            _ => unreachable!("a PUBLISH parses to a message or a skipped one"),
        }
    }

    /// Parses one complete PUBLISH packet of `version`: the message, or — when its MQTT 5
    /// properties would take more memory than [`Properties::budget`] allows — what is
    /// needed to skip it as an oversized one (no copy of the frame is made either way).
    pub(crate) fn parse_or_skip(
        bytes: Bytes,
        header: usize,
        version: MqttVersion,
    ) -> Result<Inbound, Error> {
        let bad = |why: &str| Error::Protocol(format!("malformed PUBLISH packet: {why}"));
        let flags = bytes[0] & 0x0f;
        let qos = (flags >> 1) & 3;
        if qos == 3 {
            return Err(bad("QoS 3")); // [MQTT-3.3.1-4]
        }
        if qos == 0 && flags & 0x08 != 0 {
            return Err(bad("DUP set on QoS 0")); // [MQTT-3.3.1-2]
        }
        let body = &bytes[header..];
        if body.len() < 2 {
            return Err(bad("no topic length"));
        }
        let topic_end = 2 + u16::from_be_bytes([body[0], body[1]]) as usize;
        let id_len = if qos > 0 { 2 } else { 0 };
        if body.len() < topic_end + id_len {
            return Err(bad("the topic runs past the packet"));
        }
        if body[2..topic_end].contains(&0) {
            return Err(bad("U+0000 in the topic")); // [MQTT-1.5.3-2]
        }
        let topic =
            std::str::from_utf8(&body[2..topic_end]).map_err(|_| bad("the topic is not UTF-8"))?;
        if topic.contains(['+', '#']) {
            return Err(bad("not a topic name")); // [MQTT-3.3.2-2], [MQTT-4.7.3-1]
        }
        let packet_id = if qos > 0 {
            u16::from_be_bytes([body[topic_end], body[topic_end + 1]])
        } else {
            0
        };
        if qos > 0 && packet_id == 0 {
            return Err(bad("packet identifier 0")); // [MQTT-2.3.1-1]
        }
        let PublishProps {
            props,
            alias,
            ids: sub_ids,
            n_ids: n_sub_ids,
            len: props_len,
        } = match version {
            MqttVersion::V3_1_1 => PublishProps::default(),
            // Properties may take in memory twice what the packet takes on the wire, and
            // 64 KiB: beyond, the message is skipped as an oversized one is.
            MqttVersion::V5 => {
                match parse_publish(&body[topic_end + id_len..], Properties::budget(bytes.len())) {
                    Err(Error::PacketTooLarge { .. }) => {
                        return Ok(Inbound::Oversized(Oversized {
                            topic: topic.to_string(),
                            qos: QoS::from_u8(qos).expect("checked above"),
                            packet_id: (qos > 0).then_some(packet_id),
                            size: bytes.len(),
                        }))
                    }
                    other => other?,
                }
            }
        };
        if topic.is_empty() && alias == 0 {
            // [MQTT-4.7.3-1]; in v5 an empty topic needs a topic alias [MQTT-3.3.2-8].
            return Err(bad("not a topic name"));
        }
        Ok(Inbound::Publish(PublishFrame {
            topic: ((header + 2) as u32, (header + topic_end) as u32),
            payload_start: (header + topic_end + id_len + props_len) as u32,
            flags,
            packet_id,
            bytes,
            alias,
            props,
            sub_ids,
            n_sub_ids,
            aliased_topic: None,
        }))
    }

    /// v5: the identifiers of the subscriptions it was sent for, in order.
    pub fn subscription_ids(&self) -> Vec<u32> {
        if self.n_sub_ids == u8::MAX {
            return self
                .props
                .as_ref()
                .map(|p| p.subscription_ids().collect())
                .unwrap_or_default();
        }
        self.sub_ids[..self.n_sub_ids as usize].to_vec()
    }

    /// v5: its subscription identifiers, in order, without allocating.
    pub fn subscription_id_iter(&self) -> impl Iterator<Item = u32> + '_ {
        let (few, many) = if self.n_sub_ids == u8::MAX {
            (&[][..], self.props.as_ref().map(|p| p.subscription_ids()))
        } else {
            (&self.sub_ids[..self.n_sub_ids as usize], None)
        };
        few.iter().copied().chain(many.into_iter().flatten())
    }

    /// v5: its subscription identifiers when there were at most four (no allocation); an
    /// empty slice when there were none, `None` when there were more.
    pub fn inline_subscription_ids(&self) -> Option<&[u32]> {
        (self.n_sub_ids != u8::MAX).then(|| &self.sub_ids[..self.n_sub_ids as usize])
    }

    /// v5: the topic alias it carried (0: none).
    pub fn topic_alias(&self) -> u16 {
        self.alias
    }

    /// v5: the topic its alias stands for (the session resolves aliases).
    pub fn set_aliased_topic(&mut self, topic: Arc<str>) {
        self.aliased_topic = Some(topic);
    }

    /// The topic as it is on the wire (empty when a v5 topic alias stands for it).
    pub fn wire_topic(&self) -> &str {
        std::str::from_utf8(&self.bytes[self.topic.0 as usize..self.topic.1 as usize])
            .unwrap_or_default()
    }

    /// v5: the properties it came with (none: `None`).
    pub fn properties(&self) -> Option<&Properties> {
        self.props.as_deref()
    }

    /// The topic name.
    pub fn topic(&self) -> &str {
        if let Some(t) = &self.aliased_topic {
            return t;
        }
        // Checked as UTF-8 when parsed.
        std::str::from_utf8(&self.bytes[self.topic.0 as usize..self.topic.1 as usize])
            .unwrap_or_default()
    }

    /// The application payload.
    pub fn payload(&self) -> &[u8] {
        &self.bytes[self.payload_start as usize..]
    }

    /// The QoS it was sent with.
    pub fn qos(&self) -> QoS {
        QoS::from_u8((self.flags >> 1) & 3).unwrap_or(QoS::AtMostOnce)
    }

    /// The retain flag.
    pub fn retain(&self) -> bool {
        self.flags & 0x01 != 0
    }

    /// The DUP flag.
    // Used by the fuzz targets, the benchmark and the tests only.
    #[cfg_attr(not(feature = "__internals"), allow(dead_code))]
    pub fn dup(&self) -> bool {
        self.flags & 0x08 != 0
    }

    /// The packet identifier (QoS 1 and 2).
    pub fn packet_id(&self) -> Option<u16> {
        (self.qos() != QoS::AtMostOnce).then_some(self.packet_id)
    }

    /// The whole packet as it arrived.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }
}

/// What is kept of a PUBLISH over `max_packet_size`: enough to acknowledge it at its QoS (so
/// that the broker stops resending it) and to say which message was skipped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Oversized {
    /// Its topic (empty in MQTT 5 when it was sent as a topic alias alone).
    pub topic: String,
    /// Its QoS.
    pub qos: QoS,
    /// Its packet identifier (QoS 1 and 2).
    pub packet_id: Option<u16>,
    /// Its whole size in bytes, fixed header included.
    pub size: usize,
}

/// An oversized PUBLISH being skipped: its first bytes (up to the packet identifier) are kept,
/// the rest is counted and discarded.
#[derive(Debug)]
pub(crate) struct Skip {
    header: usize,
    total: usize,
    seen: usize,
    head: Vec<u8>,
}

impl Skip {
    /// Starts skipping a PUBLISH of `total` bytes whose fixed header is `header` bytes.
    pub(crate) fn new(header: usize, total: usize) -> Skip {
        Skip {
            header,
            total,
            seen: 0,
            head: Vec::new(),
        }
    }

    /// The bytes of the packet's start that tell its topic and packet identifier.
    fn head_needed(&self) -> usize {
        let wanted = match self.head.get(self.header..self.header + 2) {
            Some(len) => {
                let qos = (self.head[0] >> 1) & 3;
                self.header
                    + 2
                    + usize::from(u16::from_be_bytes([len[0], len[1]]))
                    + if qos > 0 { 2 } else { 0 }
            }
            None => self.header + 2,
        };
        wanted.min(self.total)
    }

    /// Takes what `data` holds of the packet; returns how many bytes that was.
    pub(crate) fn take(&mut self, data: &[u8]) -> usize {
        let n = (self.total - self.seen).min(data.len());
        let mut kept = 0;
        loop {
            let need = self.head_needed();
            if self.head.len() >= need || kept == n {
                break;
            }
            let k = (need - self.head.len()).min(n - kept);
            self.head.extend_from_slice(&data[kept..kept + k]);
            kept += k;
        }
        self.seen += n;
        n
    }

    pub(crate) fn is_done(&self) -> bool {
        self.seen == self.total
    }

    /// What the packet was, from its kept start (held to the rules a whole PUBLISH is).
    pub(crate) fn finish(self) -> Result<Oversized, Error> {
        let malformed = |what: &str| Err(Error::Protocol(format!("malformed PUBLISH: {what}")));
        let first = self.head[0];
        let qos = match QoS::from_u8((first >> 1) & 3) {
            Some(q) => q,
            None => return malformed("QoS 3"),
        };
        if qos == QoS::AtMostOnce && first & 0x08 != 0 {
            return malformed("DUP set on QoS 0");
        }
        if self.head.len() < self.header + 2 {
            return malformed("shorter than its topic");
        }
        let len = usize::from(u16::from_be_bytes([
            self.head[self.header],
            self.head[self.header + 1],
        ]));
        let start = self.header + 2;
        let id_len = if qos == QoS::AtMostOnce { 0 } else { 2 };
        if self.head.len() < start + len + id_len {
            return malformed("shorter than its topic");
        }
        let Ok(topic) = std::str::from_utf8(&self.head[start..start + len]) else {
            return malformed("topic is not UTF-8");
        };
        if topic.contains('\0') {
            return malformed("U+0000 in the topic");
        }
        let packet_id = if qos == QoS::AtMostOnce {
            None
        } else {
            let at = start + len;
            match u16::from_be_bytes([self.head[at], self.head[at + 1]]) {
                0 => return malformed("packet identifier 0"),
                id => Some(id),
            }
        };
        Ok(Oversized {
            topic: topic.to_string(),
            qos,
            packet_id,
            size: self.total,
        })
    }
}

/// An outgoing PUBLISH: encoded here, straight from the caller's topic and payload (the topic
/// was checked when the caller published; mqtt-protocol's `PublishPacket` would check it again
/// on every message, and reads its own DUP bit wrong).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    /// Topic name (valid, at most 65535 bytes).
    pub topic: String,
    /// Payload.
    pub payload: Vec<u8>,
    /// QoS.
    pub qos: QoS,
    /// Retain flag.
    pub retain: bool,
    /// v5: the encoded properties (without their length); empty: none. Never sent in 3.1.1.
    pub props: Vec<u8>,
}

impl Outgoing {
    /// Appends the PUBLISH with packet id `id` (ignored at QoS 0) and the DUP flag.
    pub fn encode(&self, id: u16, dup: bool, out: &mut Vec<u8>) {
        let qos = self.qos as u8;
        let id_len = if qos > 0 { 2 } else { 0 };
        let remaining = 2 + self.topic.len() + id_len + self.payload.len();
        out.reserve(remaining + 5);
        out.push(0x30 | (u8::from(dup && qos > 0) << 3) | (qos << 1) | u8::from(self.retain));
        let mut n = remaining;
        loop {
            let byte = (n % 128) as u8;
            n /= 128;
            out.push(if n > 0 { byte | 0x80 } else { byte });
            if n == 0 {
                break;
            }
        }
        out.extend_from_slice(&(self.topic.len() as u16).to_be_bytes());
        out.extend_from_slice(self.topic.as_bytes());
        if qos > 0 {
            out.extend_from_slice(&id.to_be_bytes());
        }
        out.extend_from_slice(&self.payload);
    }
}

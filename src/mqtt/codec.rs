//! Framing of a byte stream into MQTT packets, decoded with `mqtt-protocol`.
//!
//! WebSocket frames and MQTT packets are independent: aedes splits one packet over several
//! frames, NATS and rumqttd pack several packets into one frame [MQTT-6.0.0-2]. The framer
//! works on the byte stream. It reads the fixed header and the remaining length itself and
//! refuses a packet over the limit *before* buffering it, then hands `mqtt-protocol` exactly
//! one complete frame (its decoder is only safe on that), and checks that the packet consumed
//! the whole frame and re-encodes to the same length (the crate silently truncates a short
//! PUBLISH payload and ignores trailing bytes).
//!
//! PUBLISH, the packet that carries the data, is parsed here instead ([`PublishFrame`]):
//! mqtt-protocol copies every topic and payload into fresh allocations, while a PUBLISH kept
//! as a slice of the WebSocket frame it arrived in costs no copy at all (the benchmark's
//! decoder row and callgrind showed those copies as the largest cost per message). Outgoing
//! PUBLISH is encoded here too ([`Outgoing`]), without validating the topic a second time.

use std::io::Cursor;

use bytes::Bytes;
use mqtt::packet::VariablePacket;
use mqtt::{Decodable, Encodable};

use std::sync::Arc;

use crate::error::Error;
use crate::mqtt::v5::{self, MqttVersion, Properties};
use crate::mqtt::QoS;

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
    sub_ids: [u32; v5::INLINE_IDS],
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
                max: v5::Properties::budget(o.size),
            }),
            _ => unreachable!("a PUBLISH parses to a message or a skipped one"),
        }
    }

    /// Parses one complete PUBLISH packet of `version`: the message, or — when its MQTT 5
    /// properties would take more memory than [`v5::Properties::budget`] allows — what is
    /// needed to skip it as an oversized one (no copy of the frame is made either way).
    fn parse_or_skip(bytes: Bytes, header: usize, version: MqttVersion) -> Result<Inbound, Error> {
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
        let v5::PublishProps {
            props,
            alias,
            ids: sub_ids,
            n_ids: n_sub_ids,
            len: props_len,
        } = match version {
            MqttVersion::V3_1_1 => v5::PublishProps::default(),
            // Properties may take in memory twice what the packet takes on the wire, and
            // 64 KiB: beyond, the message is skipped as an oversized one is.
            MqttVersion::V5 => match v5::parse_publish(
                &body[topic_end + id_len..],
                v5::Properties::budget(bytes.len()),
            ) {
                Err(Error::PacketTooLarge { .. }) => {
                    return Ok(Inbound::Oversized(Oversized {
                        topic: topic.to_string(),
                        qos: QoS::from_u8(qos).expect("checked above"),
                        packet_id: (qos > 0).then_some(packet_id),
                        size: bytes.len(),
                    }))
                }
                other => other?,
            },
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

/// A packet from the broker: a PUBLISH kept as its bytes, or any other decoded packet.
#[derive(Clone, Debug, PartialEq)]
pub enum Inbound {
    /// An application message.
    Publish(PublishFrame),
    /// Every other packet type (MQTT 3.1.1).
    Other(VariablePacket),
    /// Every other packet type (MQTT 5).
    Control(v5::Control),
    /// A PUBLISH over the size limit, skipped as it streamed by: only what it needs to be
    /// acknowledged and reported was kept.
    Oversized(Oversized),
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
struct Skip {
    header: usize,
    total: usize,
    seen: usize,
    head: Vec<u8>,
}

impl Skip {
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
    fn take(&mut self, data: &[u8]) -> usize {
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

    fn is_done(&self) -> bool {
        self.seen == self.total
    }

    /// What the packet was, from its kept start (held to the rules a whole PUBLISH is).
    fn finish(self) -> Result<Oversized, Error> {
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

impl Inbound {
    /// Appends the packet's encoding to `out`.
    // Used by the fuzz targets, the benchmark and the tests only.
    #[cfg_attr(not(feature = "__internals"), allow(dead_code))]
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Inbound::Publish(p) => out.extend_from_slice(p.as_bytes()),
            Inbound::Other(p) => encode(p, out),
            Inbound::Control(p) => p.encode(out),
            Inbound::Oversized(_) => {}
        }
    }
}

impl From<VariablePacket> for Inbound {
    fn from(packet: VariablePacket) -> Inbound {
        if let VariablePacket::PublishPacket(_) = &packet {
            let mut bytes = Vec::new();
            encode(&packet, &mut bytes);
            if let Ok(Some((header, _))) = parse_fixed_header(&bytes) {
                if let Ok(p) = PublishFrame::parse(Bytes::from(bytes), header) {
                    return Inbound::Publish(p);
                }
            }
        }
        Inbound::Other(packet)
    }
}

/// Decodes one complete packet held in `frame`, whose fixed header is `header` bytes long.
fn decode_inbound(frame: Bytes, header: usize, version: MqttVersion) -> Result<Inbound, Error> {
    match (frame[0] >> 4, version) {
        // Properties that would take more memory than allowed: skipped like a packet over
        // the limit (acknowledged, counted, reported).
        (3, _) => PublishFrame::parse_or_skip(frame, header, version),
        (_, MqttVersion::V3_1_1) => decode_frame(&frame).map(Inbound::Other),
        (_, MqttVersion::V5) => v5::decode_control(&frame, header).map(Inbound::Control),
    }
}

/// Decodes exactly one complete MQTT 3.1.1 packet, any type.
// Used by the fuzz targets, the benchmark and the tests only.
#[cfg_attr(not(feature = "__internals"), allow(dead_code))]
pub fn decode_packet(frame: &[u8]) -> Result<Inbound, Error> {
    decode_packet_as(frame, MqttVersion::V3_1_1)
}

/// Decodes exactly one complete packet of `version`, any type.
// Used by the fuzz targets, the benchmark and the tests only.
#[cfg_attr(not(feature = "__internals"), allow(dead_code))]
pub fn decode_packet_as(frame: &[u8], version: MqttVersion) -> Result<Inbound, Error> {
    match parse_fixed_header(frame)? {
        Some((header, remaining)) if header + remaining == frame.len() => {
            decode_inbound(Bytes::copy_from_slice(frame), header, version)
        }
        _ => Err(Error::Protocol(format!(
            "not one complete packet ({} bytes)",
            frame.len()
        ))),
    }
}

/// Whether a packet of `packet` bytes may stay a slice of a read buffer of `backing` bytes: a
/// message must not keep a much larger buffer alive in a subscription's buffer, whose bounds
/// count the message's own size (a 64-byte message kept as a slice of an 8 KiB read would
/// hold 128 times what it is charged).
fn keep_as_slice(packet: usize, backing: usize) -> bool {
    packet.saturating_mul(4) >= backing
}

/// Reads the remaining-length varint of a fixed header in `buf` (which starts at the first
/// byte of a packet). Returns `Ok(None)` when more bytes are needed, else the header length
/// and the remaining length.
pub fn parse_fixed_header(buf: &[u8]) -> Result<Option<(usize, usize)>, Error> {
    let mut remaining: usize = 0;
    for i in 0..4 {
        let Some(&byte) = buf.get(1 + i) else {
            return Ok(None);
        };
        remaining |= ((byte & 0x7f) as usize) << (7 * i);
        if byte & 0x80 == 0 {
            // The encoding is minimal [MQTT-1.5.5-1 in 5.0; 3.1.1 §2.2.3's algorithm]: a last
            // byte of zero after a continuation encodes the same value in more bytes. Every
            // packet type is held to it, PUBLISH included.
            if i > 0 && byte == 0 {
                return Err(Error::Protocol(
                    "malformed remaining length (not minimally encoded)".into(),
                ));
            }
            return Ok(Some((2 + i, remaining)));
        }
    }
    // [MQTT-2.2.3]: at most four bytes of remaining length.
    Err(Error::Protocol(
        "malformed remaining length (more than 4 bytes)".into(),
    ))
}

/// Decodes exactly one complete packet frame.
pub fn decode_frame(frame: &[u8]) -> Result<VariablePacket, Error> {
    let mut cursor = Cursor::new(frame);
    let packet = VariablePacket::decode(&mut cursor).map_err(|e| {
        // mqtt-protocol appends the packet's bytes in Debug form ("…, [u8, ..0]").
        let text = e.to_string();
        let words = text.split(", [").next().unwrap_or_default();
        Error::Protocol(format!("malformed packet: {words}"))
    })?;
    let malformed = || {
        Error::Protocol(format!(
            "malformed {} packet of {} bytes",
            packet_name(&packet),
            frame.len()
        ))
    };
    if cursor.position() as usize != frame.len() || packet.encoded_length() as usize != frame.len()
    {
        return Err(malformed());
    }
    if ack_packet_id(&packet) == Some(0) {
        // [MQTT-2.3.1-1]: identifiers are non-zero.
        return Err(Error::Protocol(format!(
            "{} with packet identifier 0",
            packet_name(&packet)
        )));
    }
    match &packet {
        // mqtt-protocol truncates a string that runs past the packet instead of failing: the
        // topic length on the wire must be the decoded topic's.
        VariablePacket::PublishPacket(p) => {
            let header = 1 + remaining_length_len(frame);
            let wire = frame
                .get(header..header + 2)
                .map(|b| u16::from_be_bytes([b[0], b[1]]) as usize);
            if wire != Some(p.topic_name().len()) {
                return Err(malformed());
            }
        }
        // Every other packet a server sends is a few bytes: its encoding must be identical.
        _ => {
            let mut again = Vec::with_capacity(frame.len());
            let _ = packet.encode(&mut again);
            if again != frame {
                return Err(malformed());
            }
        }
    }
    Ok(packet)
}

/// Bytes of the remaining-length field of a complete frame.
fn remaining_length_len(frame: &[u8]) -> usize {
    frame
        .iter()
        .skip(1)
        .take(4)
        .position(|b| b & 0x80 == 0)
        .map_or(4, |i| i + 1)
}

/// Splits a byte stream into packets, holding at most one partial packet.
#[derive(Debug)]
pub struct Framer {
    buf: Vec<u8>,
    max_packet_size: usize,
    version: MqttVersion,
    /// A PUBLISH over `max_packet_size` streaming by.
    skip: Option<Skip>,
}

impl Framer {
    /// An MQTT 3.1.1 framer refusing packets whose total size exceeds `max_packet_size`
    /// bytes.
    pub fn new(max_packet_size: usize) -> Framer {
        Framer::with_version(max_packet_size, MqttVersion::V3_1_1)
    }

    /// A framer of packets of `version`.
    pub fn with_version(max_packet_size: usize, version: MqttVersion) -> Framer {
        Framer {
            buf: Vec::new(),
            max_packet_size,
            version,
            skip: None,
        }
    }

    /// Forgets any partial packet (after a reconnect).
    pub fn reset(&mut self) {
        self.skip = None;
        self.buf.clear();
        if self.buf.capacity() > 64 * 1024 {
            self.buf = Vec::new();
        }
    }

    /// Bytes of a partial packet held back.
    // Used by the fuzz targets, the benchmark and the tests only.
    #[cfg_attr(not(feature = "__internals"), allow(dead_code))]
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Feeds bytes; calls `on_packet` for every complete packet, in order. After an error the
    /// stream is unusable and the connection must be closed.
    // Used by the fuzz targets, the benchmark and the tests only.
    #[cfg_attr(not(feature = "__internals"), allow(dead_code))]
    pub fn feed<F>(&mut self, data: &[u8], on_packet: F) -> Result<(), Error>
    where
        F: FnMut(Inbound) -> Result<(), Error>,
    {
        self.feed_bytes(Bytes::copy_from_slice(data), on_packet)
    }

    /// Like [`Framer::feed`], for bytes that own their buffer: complete packets inside are
    /// sliced out of them where that keeps no much larger buffer alive.
    // Used by the fuzz targets, the benchmark and the tests only.
    #[cfg_attr(not(feature = "__internals"), allow(dead_code))]
    pub fn feed_bytes<F>(&mut self, data: Bytes, on_packet: F) -> Result<(), Error>
    where
        F: FnMut(Inbound) -> Result<(), Error>,
    {
        let backing = data.len();
        self.feed_shared(data, backing, on_packet)
    }

    /// Like [`Framer::feed_bytes`], for bytes that are a slice of a read buffer of `backing`
    /// bytes: a packet sliced out of them keeps that whole buffer alive for as long as the
    /// application holds the message, so only a packet of at least a quarter of it is
    /// sliced; a smaller one is copied (see [`keep_as_slice`]).
    pub fn feed_shared<F>(
        &mut self,
        data: Bytes,
        backing: usize,
        mut on_packet: F,
    ) -> Result<(), Error>
    where
        F: FnMut(Inbound) -> Result<(), Error>,
    {
        let mut pos = 0;
        loop {
            // A PUBLISH over the limit streams by: its bytes are counted and dropped, never
            // buffered, and what it was is handed on once its last byte has passed.
            if let Some(skip) = self.skip.as_mut() {
                pos += skip.take(&data[pos..]);
                if !skip.is_done() {
                    return Ok(());
                }
                let skipped = self.skip.take().expect("present").finish()?;
                on_packet(Inbound::Oversized(skipped))?;
                continue;
            }
            // Complete the partial packet first.
            if !self.buf.is_empty() {
                match parse_fixed_header(&self.buf)? {
                    Some((header, remaining)) => {
                        let total = header + remaining;
                        if total > self.max_packet_size {
                            self.start_skip(self.buf[0], header, total)?;
                            let start = std::mem::take(&mut self.buf);
                            self.skip.as_mut().expect("started").take(&start);
                            continue;
                        }
                        if self.buf.len() == total {
                            // Grown by doubling as it arrived: up to twice its size, which
                            // the message would keep while held (a shrink of a large
                            // allocation is a remap, not a copy).
                            if self.buf.capacity() > total + total / 4 {
                                self.buf.shrink_to_fit();
                            }
                            let frame = Bytes::from(std::mem::take(&mut self.buf));
                            on_packet(decode_inbound(frame, header, self.version)?)?;
                            continue;
                        }
                        if pos == data.len() {
                            return Ok(());
                        }
                        let take = (total - self.buf.len()).min(data.len() - pos);
                        self.buf.extend_from_slice(&data[pos..pos + take]);
                        pos += take;
                    }
                    None => {
                        // Header incomplete: take one byte at a time (at most 4 more).
                        let Some(&byte) = data.get(pos) else {
                            return Ok(());
                        };
                        self.buf.push(byte);
                        pos += 1;
                    }
                }
                continue;
            }
            // Then the packets inside the input, without copying.
            while pos < data.len() {
                match parse_fixed_header(&data[pos..])? {
                    Some((header, remaining)) => {
                        let total = header + remaining;
                        if total > self.max_packet_size {
                            self.start_skip(data[pos], header, total)?;
                            break;
                        }
                        if data.len() - pos < total {
                            break;
                        }
                        let frame = if keep_as_slice(total, backing) {
                            data.slice(pos..pos + total)
                        } else {
                            Bytes::copy_from_slice(&data[pos..pos + total])
                        };
                        pos += total;
                        on_packet(decode_inbound(frame, header, self.version)?)?;
                    }
                    None => break,
                }
            }
            if self.skip.is_some() {
                continue;
            }
            if pos < data.len() {
                // Only the size of what actually arrived is reserved, never the announced
                // size.
                self.buf.extend_from_slice(&data[pos..]);
            }
            return Ok(());
        }
    }

    /// A packet of `total` bytes over the limit begins with `first`: a PUBLISH is skipped
    /// (see [`Inbound::Oversized`]); any other packet that large is an error.
    fn start_skip(&mut self, first: u8, header: usize, total: usize) -> Result<(), Error> {
        if first >> 4 != 3 {
            return Err(Error::PacketTooLarge {
                size: total,
                max: self.max_packet_size,
            });
        }
        self.skip = Some(Skip {
            header,
            total,
            seen: 0,
            head: Vec::new(),
        });
        Ok(())
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

/// Appends the encoding of `packet` to `out`.
pub fn encode<P: Encodable>(packet: &P, out: &mut Vec<u8>) {
    out.reserve(packet.encoded_length() as usize);
    // Writing into a Vec cannot fail.
    let _ = packet.encode(out);
}

/// The last will, as CONNECT carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Will {
    /// Topic name (valid: checked when the provider was built).
    pub topic: String,
    /// Payload.
    pub payload: Vec<u8>,
    /// QoS.
    pub qos: QoS,
    /// Retain flag.
    pub retain: bool,
    /// MQTT 5 will properties (never sent in 3.1.1).
    pub props: Properties,
}

/// The fields of a CONNECT packet.
#[derive(Debug, Clone, Copy)]
pub struct Connect<'a> {
    /// Client identifier.
    pub client_id: &'a str,
    /// Keep-alive (whole seconds are sent, at most 65535).
    pub keep_alive: std::time::Duration,
    /// Clean session flag.
    pub clean_session: bool,
    /// User name.
    pub username: Option<&'a str>,
    /// Password.
    pub password: Option<&'a str>,
    /// Last will.
    pub will: Option<&'a Will>,
}

/// Encodes a CONNECT packet.
pub fn encode_connect(c: &Connect<'_>) -> Vec<u8> {
    let mut p = mqtt::packet::ConnectPacket::new(c.client_id.to_string());
    p.set_keep_alive(c.keep_alive.as_secs().min(u16::MAX as u64) as u16);
    p.set_clean_session(c.clean_session);
    p.set_user_name(c.username.map(String::from));
    p.set_password(c.password.map(String::from));
    if let Some(w) = c.will {
        if let Ok(topic) = mqtt::TopicName::new(w.topic.clone()) {
            p.set_will(Some((topic, w.payload.clone())));
            p.set_will_qos(w.qos as u8);
            p.set_will_retain(w.retain);
        }
    }
    let mut out = Vec::new();
    encode(&p, &mut out);
    out
}

impl v5::Control {
    /// A 3.1.1 packet as the session handles it; a packet a server never sends (or a PUBLISH
    /// `PublishFrame::parse` refused) is a protocol error.
    pub fn from_v311(p: VariablePacket) -> Result<v5::Control, Error> {
        use v5::{Ack, Control, ReasonCode};
        let ack = |id| Ack {
            id,
            code: ReasonCode(0),
            props: Properties::new(),
        };
        Ok(match p {
            VariablePacket::ConnackPacket(c) => Control::Connack {
                session_present: c.connack_flags().session_present,
                code: c.connect_return_code().to_u8(),
                props: Properties::new(),
            },
            VariablePacket::PubackPacket(a) => Control::Puback(ack(a.packet_identifier())),
            VariablePacket::PubrecPacket(a) => Control::Pubrec(ack(a.packet_identifier())),
            VariablePacket::PubrelPacket(a) => Control::Pubrel(ack(a.packet_identifier())),
            VariablePacket::PubcompPacket(a) => Control::Pubcomp(ack(a.packet_identifier())),
            VariablePacket::SubackPacket(a) => Control::Suback {
                id: a.packet_identifier(),
                codes: a
                    .subscribes()
                    .iter()
                    .map(|c| match c {
                        mqtt::packet::suback::SubscribeReturnCode::MaximumQoSLevel0 => 0,
                        mqtt::packet::suback::SubscribeReturnCode::MaximumQoSLevel1 => 1,
                        mqtt::packet::suback::SubscribeReturnCode::MaximumQoSLevel2 => 2,
                        mqtt::packet::suback::SubscribeReturnCode::Failure => 0x80,
                    })
                    .collect(),
                props: Properties::new(),
            },
            VariablePacket::UnsubackPacket(a) => Control::Unsuback {
                id: a.packet_identifier(),
                codes: Vec::new(),
                props: Properties::new(),
            },
            VariablePacket::PingrespPacket(_) => Control::Pingresp,
            // `Inbound::from` keeps a PUBLISH as a packet only when `PublishFrame::parse`
            // refused it (packet id 0, U+0000 in the topic, DUP on QoS 0, ...).
            VariablePacket::PublishPacket(_) => {
                return Err(Error::Protocol(
                    "a PUBLISH that breaks the protocol's rules".into(),
                ))
            }
            other => {
                return Err(Error::Protocol(format!(
                    "the broker sent {}, which a server never sends to a client",
                    packet_name(&other)
                )))
            }
        })
    }
}

/// Reads a CONNACK: `Ok(session_present)` when accepted, the refusal or the protocol error
/// otherwise.
pub fn parse_connack(packet: &v5::Control) -> Result<bool, Error> {
    match packet {
        v5::Control::Connack {
            session_present,
            code: 0,
            ..
        } => Ok(*session_present),
        v5::Control::Connack { code, props, .. } => {
            if let Some(r) = props.reason() {
                log::warn!(
                    "CONNACK refused with reason code {code:#04x}: {}",
                    crate::error::printable(r)
                );
            }
            Err(Error::ConnectionRefused(crate::error::ConnackCode(*code)))
        }
        other => Err(Error::Protocol(format!(
            "expected CONNACK, got {}",
            other.name()
        ))),
    }
}

/// The packet identifier of an acknowledgement a server sends (PUBACK, PUBREC, PUBREL,
/// PUBCOMP, SUBACK, UNSUBACK); `None` for other packets.
pub fn ack_packet_id(p: &VariablePacket) -> Option<u16> {
    Some(match p {
        VariablePacket::PubackPacket(a) => a.packet_identifier(),
        VariablePacket::PubrecPacket(a) => a.packet_identifier(),
        VariablePacket::PubrelPacket(a) => a.packet_identifier(),
        VariablePacket::PubcompPacket(a) => a.packet_identifier(),
        VariablePacket::SubackPacket(a) => a.packet_identifier(),
        VariablePacket::UnsubackPacket(a) => a.packet_identifier(),
        _ => return None,
    })
}

/// The name of a packet's type, for messages.
pub fn packet_name(p: &VariablePacket) -> &'static str {
    match p {
        VariablePacket::ConnectPacket(_) => "CONNECT",
        VariablePacket::ConnackPacket(_) => "CONNACK",
        VariablePacket::PublishPacket(_) => "PUBLISH",
        VariablePacket::PubackPacket(_) => "PUBACK",
        VariablePacket::PubrecPacket(_) => "PUBREC",
        VariablePacket::PubrelPacket(_) => "PUBREL",
        VariablePacket::PubcompPacket(_) => "PUBCOMP",
        VariablePacket::SubscribePacket(_) => "SUBSCRIBE",
        VariablePacket::SubackPacket(_) => "SUBACK",
        VariablePacket::UnsubscribePacket(_) => "UNSUBSCRIBE",
        VariablePacket::UnsubackPacket(_) => "UNSUBACK",
        VariablePacket::PingreqPacket(_) => "PINGREQ",
        VariablePacket::PingrespPacket(_) => "PINGRESP",
        VariablePacket::DisconnectPacket(_) => "DISCONNECT",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mqtt::packet::{PingrespPacket, PublishPacket, QoSWithPacketIdentifier, SubackPacket};
    use mqtt::TopicName;

    fn publish(topic: &str, payload: &[u8]) -> Vec<u8> {
        let p = PublishPacket::new(
            TopicName::new(topic).unwrap(),
            QoSWithPacketIdentifier::Level1(7),
            payload,
        );
        let mut out = Vec::new();
        encode(&p, &mut out);
        out
    }

    fn stream() -> Vec<u8> {
        let mut s = publish("a/b", b"hello");
        encode(&PingrespPacket::new(), &mut s);
        s.extend(publish("c", &[0u8; 300]));
        encode(
            &SubackPacket::new(3, vec![mqtt::packet::suback::SubscribeReturnCode::Failure]),
            &mut s,
        );
        s
    }

    fn collect(framer: &mut Framer, chunks: &[&[u8]]) -> Result<Vec<Inbound>, Error> {
        let mut got = Vec::new();
        for c in chunks {
            framer.feed(c, |p| {
                got.push(p);
                Ok(())
            })?;
        }
        Ok(got)
    }

    #[test]
    fn merged_packets_in_one_chunk() {
        let s = stream();
        let got = collect(&mut Framer::new(1 << 20), &[&s]).unwrap();
        assert_eq!(got.len(), 4);
    }

    #[test]
    fn split_at_every_byte_gives_the_same_packets() {
        let s = stream();
        let whole = collect(&mut Framer::new(1 << 20), &[&s]).unwrap();
        let bytes: Vec<&[u8]> = s.chunks(1).collect();
        let mut f = Framer::new(1 << 20);
        let split = collect(&mut f, &bytes).unwrap();
        assert_eq!(whole, split);
        assert_eq!(f.buffered(), 0);
    }

    #[test]
    fn every_split_point_gives_the_same_packets() {
        let s = stream();
        let whole = collect(&mut Framer::new(1 << 20), &[&s]).unwrap();
        for i in 0..s.len() {
            let got = collect(&mut Framer::new(1 << 20), &[&s[..i], &s[i..]]).unwrap();
            assert_eq!(got, whole, "split at {i}");
        }
    }

    #[test]
    fn oversized_packet_is_refused_before_buffering() {
        // A SUBACK announcing 268,435,455 bytes: only the header arrives.
        let mut f = Framer::new(1024);
        let err = f
            .feed(&[0x90, 0xff, 0xff, 0xff, 0x7f], |_| Ok(()))
            .unwrap_err();
        assert!(
            matches!(err, Error::PacketTooLarge { size, max: 1024 } if size > 1024),
            "{err}"
        );
        assert!(f.buffered() <= 5);
    }

    /// A QoS 1 PUBLISH of `payload` bytes on `topic`, packet id 9.
    fn big_publish(topic: &str, payload: usize) -> Vec<u8> {
        let mut out = Vec::new();
        Outgoing {
            topic: topic.into(),
            payload: vec![0x5a; payload],
            qos: QoS::AtLeastOnce,
            retain: false,
            props: Vec::new(),
        }
        .encode(9, false, &mut out);
        out
    }

    #[test]
    fn an_oversized_publish_streams_by_and_what_follows_arrives() {
        let mut stream = big_publish("big/one", 100_000);
        let size = stream.len();
        stream.extend(big_publish("small", 3));
        let expected = Oversized {
            topic: "big/one".into(),
            qos: QoS::AtLeastOnce,
            packet_id: Some(9),
            size,
        };
        // Whole, split anywhere around its start and end, and byte by byte: the same, and
        // never more than a partial header held.
        let mut splits: Vec<usize> = (0..40).chain(size - 5..size + 5).collect();
        splits.push(stream.len());
        for at in splits {
            let mut f = Framer::new(1024);
            let got = collect(&mut f, &[&stream[..at], &stream[at..]]).unwrap();
            assert_eq!(got.len(), 2, "split at {at}");
            assert_eq!(
                got[0],
                Inbound::Oversized(expected.clone()),
                "split at {at}"
            );
            assert!(matches!(&got[1], Inbound::Publish(p) if p.topic() == "small"));
            assert!(f.buffered() <= 5);
        }
        let mut f = Framer::new(1024);
        let mut got = Vec::new();
        for b in &stream {
            f.feed(std::slice::from_ref(b), |p| {
                got.push(p);
                Ok(())
            })
            .unwrap();
            assert!(f.buffered() <= 1024);
        }
        assert_eq!(got[0], Inbound::Oversized(expected));
        assert_eq!(got.len(), 2);
    }

    /// A v5 packet of `first` byte: `head` bytes, then a property block of `n` user
    /// properties `k`/`v`, then `tail`.
    fn v5_with_user_properties(
        first: u8,
        head: &[u8],
        n: usize,
        k: &str,
        v: &str,
        tail: &[u8],
    ) -> Vec<u8> {
        let mut props = Vec::new();
        for _ in 0..n {
            props.push(0x26);
            props.extend_from_slice(&(k.len() as u16).to_be_bytes());
            props.extend_from_slice(k.as_bytes());
            props.extend_from_slice(&(v.len() as u16).to_be_bytes());
            props.extend_from_slice(v.as_bytes());
        }
        let mut body = head.to_vec();
        v5::put_varint(props.len(), &mut body);
        body.extend(props);
        body.extend_from_slice(tail);
        let mut p = vec![first];
        v5::put_varint(body.len(), &mut p);
        p.extend(body);
        p
    }

    /// Found by the hostile review: a PUBLISH with a hundred short user properties is an
    /// ordinary message (it was skipped), while a control packet of millions of empty ones
    /// is refused before its properties are all read (a PUBACK took ~13× its size).
    #[test]
    fn property_budgets_pass_ordinary_packets_and_stop_floods() {
        let publish =
            v5_with_user_properties(0x30, &[0, 3, b'a', b'/', b'b'], 100, "k0", "v", b"{}");
        let got = decode_packet_as(&publish, MqttVersion::V5).unwrap();
        assert!(matches!(got, Inbound::Publish(_)), "{got:?}");
        let puback = v5_with_user_properties(0x40, &[0, 1, 0], 200_000, "", "", b"");
        let err = decode_packet_as(&puback, MqttVersion::V5).unwrap_err();
        assert!(matches!(err, Error::PacketTooLarge { .. }), "{err}");
    }

    #[test]
    fn an_oversized_publish_is_held_to_the_rules() {
        for (bytes, why) in [
            // QoS 3.
            (vec![0x36, 0x80, 0x08, 0, 1, b'a', 0, 1], "QoS 3"),
            // Packet id 0.
            (vec![0x32, 0x80, 0x08, 0, 1, b'a', 0, 0], "identifier 0"),
            // Topic longer than the packet.
            (vec![0x30, 0x80, 0x08, 0xff, 0xff, b'a'], "shorter"),
            // Not UTF-8.
            (vec![0x32, 0x80, 0x08, 0, 1, 0xff, 0, 1], "UTF-8"),
        ] {
            let mut f = Framer::new(64);
            let mut bytes = bytes;
            // Pad to the announced 1024 bytes (0x80 0x08).
            bytes.resize(3 + 1024, 0);
            let err = f.feed(&bytes, |_| Ok(())).unwrap_err();
            assert!(
                matches!(&err, Error::Protocol(m) if m.contains(why)),
                "{why}: {err}"
            );
        }
    }

    #[test]
    fn five_byte_remaining_length_is_malformed() {
        let mut f = Framer::new(usize::MAX);
        let err = f
            .feed(&[0x30, 0x80, 0x80, 0x80, 0x80, 0x01], |_| Ok(()))
            .unwrap_err();
        assert!(matches!(err, Error::Protocol(_)));
    }

    #[test]
    fn short_publish_payload_is_not_truncated_silently() {
        // Topic length says 10 bytes, but the remaining length holds only 4: malformed.
        let mut f = Framer::new(1024);
        let err = f
            .feed(&[0x30, 0x04, 0x00, 0x0a, b'a', b'b'], |_| Ok(()))
            .unwrap_err();
        assert!(matches!(err, Error::Protocol(_)), "{err}");
    }

    #[test]
    fn publish_frames_are_checked_and_read_in_place() {
        let bytes = publish("a/b", b"hello");
        let got = collect(&mut Framer::new(1024), &[&bytes]).unwrap();
        let Inbound::Publish(p) = &got[0] else {
            panic!("{got:?}")
        };
        assert_eq!(
            (p.topic(), p.payload(), p.qos(), p.packet_id()),
            ("a/b", &b"hello"[..], QoS::AtLeastOnce, Some(7))
        );
        assert!(!p.retain() && !p.dup());
        // QoS 3, a wildcard topic, invalid UTF-8: malformed.
        for bad in [
            vec![0x36, 0x05, 0x00, 0x01, b'a', 0x00, 0x01],
            vec![0x30, 0x03, 0x00, 0x01, b'#'],
            vec![0x30, 0x03, 0x00, 0x01, 0xff],
            vec![0x32, 0x03, 0x00, 0x01, b'a'],
        ] {
            assert!(
                matches!(
                    collect(&mut Framer::new(1024), &[&bad]),
                    Err(Error::Protocol(_))
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn outgoing_publish_encodes_as_mqtt_protocol_does_and_parses_back() {
        for (qos, mq, size) in [
            (QoS::AtMostOnce, QoSWithPacketIdentifier::Level0, 0usize),
            (QoS::AtLeastOnce, QoSWithPacketIdentifier::Level1(513), 127),
            (
                QoS::ExactlyOnce,
                QoSWithPacketIdentifier::Level2(513),
                20_000,
            ),
        ] {
            let o = Outgoing {
                topic: "a/b".into(),
                payload: vec![7; size],
                qos,
                retain: true,
                props: Vec::new(),
            };
            let mut ours = Vec::new();
            o.encode(513, false, &mut ours);
            let mut theirs = Vec::new();
            let mut p = PublishPacket::new(TopicName::new("a/b").unwrap(), mq, vec![7; size]);
            p.set_retain(true);
            encode(&p, &mut theirs);
            assert_eq!(ours, theirs, "{qos:?}");
            let mut dup = Vec::new();
            o.encode(513, true, &mut dup);
            let Inbound::Publish(f) = decode_packet(&dup).unwrap() else {
                panic!()
            };
            assert_eq!(
                (f.dup(), f.retain(), f.qos(), f.payload().len()),
                (qos != QoS::AtMostOnce, true, qos, size)
            );
        }
    }

    #[test]
    fn a_small_packet_does_not_keep_a_large_frame_alive() {
        assert!(keep_as_slice(2048, 8192));
        assert!(keep_as_slice(20_000, 64 * 1024));
        assert!(!keep_as_slice(100, 8192));
        assert!(!keep_as_slice(100, 64 * 1024));
    }

    #[test]
    fn garbage_gives_an_error_not_a_panic() {
        for input in [
            &[0x00u8, 0x00][..],
            &[0xf0, 0x00],
            &[0x20, 0x01, 0x00],
            &[0x62, 0x00],
            &[0xff; 16],
        ] {
            let mut f = Framer::new(1024);
            let _ = f.feed(input, |_| Ok(()));
        }
    }

    #[test]
    fn publishes_against_the_rules_and_non_minimal_lengths_are_refused() {
        let publish = |flags: u8, topic: &[u8], id: Option<u16>| {
            let mut body = (topic.len() as u16).to_be_bytes().to_vec();
            body.extend_from_slice(topic);
            if let Some(id) = id {
                body.extend_from_slice(&id.to_be_bytes());
            }
            body.extend_from_slice(b"payload");
            let mut p = vec![0x30 | flags, body.len() as u8];
            p.extend(body);
            p
        };
        let refused = |bytes: &[u8], why: &str| {
            let e = Framer::new(1 << 20).feed(bytes, |_| Ok(())).unwrap_err();
            assert!(e.to_string().contains(why), "{e}");
        };
        assert!(Framer::new(1 << 20)
            .feed(&publish(0x02, b"t", Some(1)), |_| Ok(()))
            .is_ok());
        refused(&publish(0x02, b"t", Some(0)), "packet identifier 0");
        refused(&publish(0x04, b"t", Some(0)), "packet identifier 0");
        refused(&publish(0x00, b"a\0b", None), "U+0000");
        refused(&publish(0x08, b"t", None), "DUP set on QoS 0");
        // The same value in two bytes: refused for PUBLISH and PINGRESP alike.
        refused(&[0x30, 0x83, 0x00, 0, 1, b't', 1], "not minimally encoded");
        refused(&[0xd0, 0x80, 0x00], "not minimally encoded");
    }
}

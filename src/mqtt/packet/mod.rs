//! MQTT 5.0 packets, written in house beside the 3.1.1 codec.
//!
//! No well-kept v5 codec crate meets the framing rules of [`super::codec`] (bound before
//! allocating, exact frames, zero-copy PUBLISH payloads): `mqttbytes`/rumqttc's v5 module
//! copies every payload, `mqtt-protocol` has no v5. So v5 is decoded here, one file per packet
//! kind, into [`Control`] (every packet but PUBLISH, which stays a slice of its frame:
//! [`PublishFrame`]). Every decoder consumes its frame exactly, refuses a
//! property that does not belong to its packet, a repeated property that must not repeat,
//! and a value out of range, and never allocates more than the frame holds.

mod ack;
mod auth;
mod connack;
mod connect;
mod disconnect;
mod header;
mod ping;
mod properties;
mod publish;
mod subscribe;
mod unsubscribe;
mod v311;

pub use crate::mqtt::reason::ReasonCode;
pub use ack::{encode_ack, AckKind};
pub use connack::parse_connack;
pub use connect::{encode_connect, Connect, ConnectProperties, Will};
pub use disconnect::encode_disconnect;
pub use header::parse_fixed_header;
pub use ping::encode_pingreq;
#[cfg_attr(not(feature = "__internals"), allow(unused_imports))]
pub use properties::{id, Properties, Property, Value};
pub(crate) use publish::Skip;
#[cfg_attr(not(feature = "__internals"), allow(unused_imports))]
pub use publish::{
    encode_publish, parse_publish, Alias, Outgoing, Oversized, PublishFrame, PublishProps,
    INLINE_IDS,
};
pub use subscribe::encode_subscribe;
pub use unsubscribe::encode_unsubscribe;
#[cfg_attr(not(feature = "__internals"), allow(unused_imports))]
pub use v311::{ack_packet_id, decode_frame, encode, packet_name};

use crate::error::Error;
pub use crate::mqtt::version::MqttVersion;

/// A packet from the broker: a PUBLISH kept as its bytes, or any other decoded packet.
#[derive(Clone, Debug, PartialEq)]
pub enum Inbound {
    /// An application message.
    Publish(PublishFrame),
    /// Every other packet type (MQTT 3.1.1).
    Other(mqtt::packet::VariablePacket),
    /// Every other packet type (MQTT 5).
    Control(Control),
    /// A PUBLISH over the size limit, skipped as it streamed by: only what it needs to be
    /// acknowledged and reported was kept.
    Oversized(Oversized),
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

/// An acknowledgement of a packet identifier (PUBACK, PUBREC, PUBREL, PUBCOMP).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    /// The packet identifier (never 0).
    pub id: u16,
    /// The reason code (0: success).
    pub code: ReasonCode,
    /// Reason string and user properties.
    pub props: Properties,
}

/// Every packet a server may send except PUBLISH, decoded; what the session acts on, in both
/// versions (3.1.1 packets convert to it with empty properties).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control {
    /// CONNACK.
    Connack {
        /// Session present flag.
        session_present: bool,
        /// Reason code (3.1.1: the return code, 0..=5).
        code: u8,
        /// Properties (v5).
        props: Properties,
    },
    /// PUBACK.
    Puback(Ack),
    /// PUBREC.
    Pubrec(Ack),
    /// PUBREL.
    Pubrel(Ack),
    /// PUBCOMP.
    Pubcomp(Ack),
    /// SUBACK.
    Suback {
        /// Packet identifier.
        id: u16,
        /// One code per filter: the granted QoS, or a failure (>= 0x80).
        codes: Vec<u8>,
        /// Properties (v5).
        props: Properties,
    },
    /// UNSUBACK.
    Unsuback {
        /// Packet identifier.
        id: u16,
        /// One reason code per filter (v5; empty in 3.1.1).
        codes: Vec<u8>,
        /// Properties (v5).
        props: Properties,
    },
    /// PINGRESP.
    Pingresp,
    /// DISCONNECT from the server (v5 only).
    Disconnect {
        /// Reason code.
        code: ReasonCode,
        /// Properties (reason string, server reference, ...).
        props: Properties,
    },
    /// AUTH (v5 only; extended authentication is not supported).
    Auth {
        /// Reason code.
        code: ReasonCode,
        /// Properties.
        props: Properties,
    },
}

impl Control {
    /// The packet type's name, for messages.
    pub fn name(&self) -> &'static str {
        match self {
            Control::Connack { .. } => "CONNACK",
            Control::Puback(_) => "PUBACK",
            Control::Pubrec(_) => "PUBREC",
            Control::Pubrel(_) => "PUBREL",
            Control::Pubcomp(_) => "PUBCOMP",
            Control::Suback { .. } => "SUBACK",
            Control::Unsuback { .. } => "UNSUBACK",
            Control::Pingresp => "PINGRESP",
            Control::Disconnect { .. } => "DISCONNECT",
            Control::Auth { .. } => "AUTH",
        }
    }

    /// The packet identifier of an acknowledgement.
    pub fn packet_id(&self) -> Option<u16> {
        match self {
            Control::Puback(a) | Control::Pubrec(a) | Control::Pubrel(a) | Control::Pubcomp(a) => {
                Some(a.id)
            }
            Control::Suback { id, .. } | Control::Unsuback { id, .. } => Some(*id),
            _ => None,
        }
    }

    /// Appends the v5 encoding.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Control::Connack {
                session_present,
                code,
                props,
            } => connack::encode(*session_present, *code, props, out),
            Control::Puback(a) => ack::encode(0x40, a, out),
            Control::Pubrec(a) => ack::encode(0x50, a, out),
            Control::Pubrel(a) => ack::encode(0x62, a, out),
            Control::Pubcomp(a) => ack::encode(0x70, a, out),
            Control::Suback { id, codes, props } => {
                subscribe::encode_suback(0x90, *id, codes, props, out)
            }
            Control::Unsuback { id, codes, props } => {
                subscribe::encode_suback(0xb0, *id, codes, props, out)
            }
            Control::Pingresp => out.extend_from_slice(&[0xd0, 0]),
            Control::Disconnect { code, props } => disconnect::encode(0xe0, *code, props, out),
            Control::Auth { code, props } => disconnect::encode(0xf0, *code, props, out),
        }
    }
}

/// Decodes one complete v5 packet other than PUBLISH; `header` is the fixed header's length.
pub fn decode_control(frame: &[u8], header: usize) -> Result<Control, Error> {
    let first = frame[0];
    let mut r = Reader::new(&frame[header..]);
    let flags_ok = |want: u8| first & 0x0f == want;
    let packet = match first >> 4 {
        2 if flags_ok(0) => connack::decode(&mut r)?,
        4 if flags_ok(0) => Control::Puback(ack::decode(&mut r, "PUBACK")?),
        5 if flags_ok(0) => Control::Pubrec(ack::decode(&mut r, "PUBREC")?),
        6 if flags_ok(2) => Control::Pubrel(ack::decode(&mut r, "PUBREL")?),
        7 if flags_ok(0) => Control::Pubcomp(ack::decode(&mut r, "PUBCOMP")?),
        9 if flags_ok(0) => subscribe::decode_suback(&mut r, false)?,
        11 if flags_ok(0) => subscribe::decode_suback(&mut r, true)?,
        13 if flags_ok(0) => {
            if !r.is_empty() {
                return Err(malformed("PINGRESP", "a body"));
            }
            Control::Pingresp
        }
        14 if flags_ok(0) => disconnect::decode(&mut r, "DISCONNECT")?,
        15 if flags_ok(0) => auth::decode(&mut r)?,
        1 | 8 | 10 | 12 => {
            let name = [
                "",
                "CONNECT",
                "",
                "",
                "",
                "",
                "",
                "",
                "SUBSCRIBE",
                "",
                "UNSUBSCRIBE",
                "",
                "PINGREQ",
            ][(first >> 4) as usize];
            return Err(Error::Protocol(format!(
                "the broker sent {name}, which a server never sends to a client"
            )));
        }
        0 => {
            return Err(Error::Protocol(
                "malformed packet: type 0 is reserved".into(),
            ))
        }
        _ => {
            return Err(Error::Protocol(format!(
                "malformed packet: fixed header flags {first:#04x} are reserved"
            )))
        }
    };
    if !r.is_empty() {
        return Err(malformed(packet.name(), "bytes after its end"));
    }
    if packet.packet_id() == Some(0) {
        return Err(Error::Protocol(format!(
            "{} with packet identifier 0",
            packet.name()
        )));
    }
    Ok(packet)
}

pub(crate) fn malformed(packet: &str, why: &str) -> Error {
    Error::Protocol(format!("malformed {packet} packet: {why}"))
}

/// A bounded cursor over one packet's body: every read checks what is left first, so a length
/// field can never make it allocate more than the frame holds.
#[derive(Debug)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// Reads `buf`.
    pub fn new(buf: &'a [u8]) -> Reader<'a> {
        Reader { buf, pos: 0 }
    }

    /// Whether everything was read.
    pub fn is_empty(&self) -> bool {
        self.pos == self.buf.len()
    }

    /// Bytes left.
    pub fn left(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Where the cursor is.
    pub fn pos(&self) -> usize {
        self.pos
    }

    /// The next `n` bytes.
    pub fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let s = self.buf.get(self.pos..self.pos.checked_add(n)?)?;
        self.pos += n;
        Some(s)
    }

    /// One byte.
    pub fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    /// A two-byte integer.
    pub fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }

    /// A four-byte integer.
    pub fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// A variable byte integer, minimally encoded [MQTT-1.5.5-1].
    pub fn varint(&mut self) -> Option<u32> {
        let mut v: u32 = 0;
        for i in 0..4 {
            let b = self.u8()?;
            if i > 0 && b == 0 {
                return None;
            }
            v |= u32::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }

    /// Binary data: a two-byte length, then the bytes.
    pub fn bin(&mut self) -> Option<&'a [u8]> {
        let n = self.u16()? as usize;
        self.take(n)
    }

    /// A UTF-8 string without U+0000 [MQTT-1.5.4-1, -2].
    pub fn str(&mut self) -> Option<&'a str> {
        let b = self.bin()?;
        let s = std::str::from_utf8(b).ok()?;
        (!s.contains('\0')).then_some(s)
    }
}

/// Appends a variable byte integer (`v` < 2^28).
pub fn put_varint(mut v: usize, out: &mut Vec<u8>) {
    loop {
        let byte = (v % 128) as u8;
        v /= 128;
        out.push(if v > 0 { byte | 0x80 } else { byte });
        if v == 0 {
            break;
        }
    }
}

/// Bytes of a variable byte integer.
pub fn varint_len(v: usize) -> usize {
    match v {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

/// Appends binary data or a string: two-byte length, then the bytes (at most 65535).
pub fn put_bin(b: &[u8], out: &mut Vec<u8>) {
    let n = b.len().min(u16::MAX as usize);
    out.extend_from_slice(&(n as u16).to_be_bytes());
    out.extend_from_slice(&b[..n]);
}

/// Appends a fixed header of type/flags `first` and a body of `body` bytes.
pub fn put_header(first: u8, body: usize, out: &mut Vec<u8>) {
    out.reserve(body + 5);
    out.push(first);
    put_varint(body, out);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mqtt::codec::decode_packet_as;
    use crate::mqtt::QoS;

    fn props() -> Properties {
        let mut p = Properties::new();
        p.push(id::REASON_STRING, Value::Str("why".into()));
        p.push(id::USER_PROPERTY, Value::Pair("k".into(), "v".into()));
        p
    }

    #[test]
    fn every_control_packet_round_trips() {
        let ack = |code: u8, props: Properties| Ack {
            id: 9,
            code: ReasonCode(code),
            props,
        };
        let mut connack = Properties::new();
        connack.push(id::RECEIVE_MAXIMUM, Value::U16(2));
        connack.push(id::ASSIGNED_CLIENT_IDENTIFIER, Value::Str("auto-1".into()));
        connack.push(id::SERVER_KEEP_ALIVE, Value::U16(30));
        let mut disconnect = props();
        disconnect.push(id::SERVER_REFERENCE, Value::Str("other:1883".into()));
        for packet in [
            Control::Connack {
                session_present: true,
                code: 0,
                props: connack,
            },
            Control::Connack {
                session_present: false,
                code: 0x87,
                props: props(),
            },
            Control::Puback(ack(0, Properties::new())),
            Control::Puback(ack(0x10, Properties::new())),
            Control::Puback(ack(0x87, props())),
            Control::Pubrec(ack(0x80, props())),
            Control::Pubrel(ack(0x92, Properties::new())),
            Control::Pubcomp(ack(0, props())),
            Control::Suback {
                id: 3,
                codes: vec![0, 1, 2, 0x87],
                props: props(),
            },
            Control::Unsuback {
                id: 4,
                codes: vec![0, 0x11],
                props: Properties::new(),
            },
            Control::Pingresp,
            Control::Disconnect {
                code: ReasonCode(0x9d),
                props: disconnect,
            },
            Control::Disconnect {
                code: ReasonCode(0),
                props: Properties::new(),
            },
            Control::Auth {
                code: ReasonCode(0x18),
                props: Properties::new(),
            },
        ] {
            let mut bytes = Vec::new();
            packet.encode(&mut bytes);
            let back = decode_packet_as(&bytes, MqttVersion::V5).unwrap();
            assert_eq!(back, Inbound::Control(packet.clone()), "{bytes:?}");
        }
    }

    #[test]
    fn publish_properties_and_aliases_survive_the_round_trip() {
        let mut p = Properties::new();
        p.push(id::USER_PROPERTY, Value::Pair("a".into(), "1".into()));
        p.push(id::CONTENT_TYPE, Value::Str("text/plain".into()));
        let mut body = Vec::new();
        p.encode_body(&mut body);
        let o = Outgoing {
            topic: "devices/abc/telemetry".into(),
            payload: b"hello".to_vec(),
            qos: QoS::AtLeastOnce,
            retain: false,
            props: body,
        };
        for alias in [Alias::None, Alias::Set(3), Alias::Use(3)] {
            let mut bytes = Vec::new();
            encode_publish(&o, 7, true, alias, &mut bytes);
            let Inbound::Publish(f) = decode_packet_as(&bytes, MqttVersion::V5).unwrap() else {
                panic!()
            };
            assert_eq!(f.payload(), b"hello");
            assert_eq!(f.packet_id(), Some(7));
            assert!(f.dup());
            assert_eq!(f.properties(), Some(&p), "{alias:?}");
            let (topic, n) = match alias {
                Alias::None => ("devices/abc/telemetry", 0),
                Alias::Set(n) => ("devices/abc/telemetry", n),
                Alias::Use(n) => ("", n),
            };
            assert_eq!((f.wire_topic(), f.topic_alias()), (topic, n));
        }
        // No properties: nothing allocated, the payload starts after the 0 length.
        let bare = Outgoing {
            props: Vec::new(),
            ..o
        };
        let mut bytes = Vec::new();
        encode_publish(&bare, 1, false, Alias::None, &mut bytes);
        let Inbound::Publish(f) = decode_packet_as(&bytes, MqttVersion::V5).unwrap() else {
            panic!()
        };
        assert!(f.properties().is_none());
        assert_eq!(f.payload(), b"hello");
    }

    #[test]
    fn malformed_v5_packets_are_refused() {
        for bad in [
            &[0x20, 0x02, 0x02, 0x00][..],   // CONNACK reserved flag, no properties
            &[0x20, 0x03, 0x00, 0x00, 0x05], // property length past the end
            &[0x40, 0x02, 0x00, 0x00],       // packet id 0
            &[0x40, 0x05, 0x00, 0x01, 0x00, 0x01, 0x02], // PUBACK with a PUBLISH property
            &[0x90, 0x03, 0x00, 0x01, 0x00], // SUBACK without codes
            &[0x82, 0x00],                   // SUBSCRIBE from a server
            &[0xd0, 0x01, 0x00],             // PINGRESP with a body
            &[0x30, 0x03, 0x00, 0x00, 0x00], // PUBLISH empty topic, no alias
            &[0x30, 0x06, 0x00, 0x01, b'a', 0x03, 0x23, 0x00], // alias property cut short
            &[0x41, 0x02, 0x00, 0x01],       // reserved flags
        ] {
            assert!(
                decode_packet_as(bad, MqttVersion::V5).is_err(),
                "{bad:02x?} accepted"
            );
        }
    }
}

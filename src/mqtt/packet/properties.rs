//! MQTT 5 properties (§2.2.2): identifiers, types, and which packet may carry which.

use super::{malformed, put_bin, put_varint, varint_len, Reader};
use crate::error::Error;

/// Property identifiers.
#[allow(missing_docs)]
pub mod id {
    pub const PAYLOAD_FORMAT_INDICATOR: u8 = 0x01;
    pub const MESSAGE_EXPIRY_INTERVAL: u8 = 0x02;
    pub const CONTENT_TYPE: u8 = 0x03;
    pub const RESPONSE_TOPIC: u8 = 0x08;
    pub const CORRELATION_DATA: u8 = 0x09;
    pub const SUBSCRIPTION_IDENTIFIER: u8 = 0x0b;
    pub const SESSION_EXPIRY_INTERVAL: u8 = 0x11;
    pub const ASSIGNED_CLIENT_IDENTIFIER: u8 = 0x12;
    pub const SERVER_KEEP_ALIVE: u8 = 0x13;
    pub const AUTHENTICATION_METHOD: u8 = 0x15;
    pub const AUTHENTICATION_DATA: u8 = 0x16;
    pub const REQUEST_PROBLEM_INFORMATION: u8 = 0x17;
    pub const WILL_DELAY_INTERVAL: u8 = 0x18;
    pub const REQUEST_RESPONSE_INFORMATION: u8 = 0x19;
    pub const RESPONSE_INFORMATION: u8 = 0x1a;
    pub const SERVER_REFERENCE: u8 = 0x1c;
    pub const REASON_STRING: u8 = 0x1f;
    pub const RECEIVE_MAXIMUM: u8 = 0x21;
    pub const TOPIC_ALIAS_MAXIMUM: u8 = 0x22;
    pub const TOPIC_ALIAS: u8 = 0x23;
    pub const MAXIMUM_QOS: u8 = 0x24;
    pub const RETAIN_AVAILABLE: u8 = 0x25;
    pub const USER_PROPERTY: u8 = 0x26;
    pub const MAXIMUM_PACKET_SIZE: u8 = 0x27;
    pub const WILDCARD_SUBSCRIPTION_AVAILABLE: u8 = 0x28;
    pub const SUBSCRIPTION_IDENTIFIER_AVAILABLE: u8 = 0x29;
    pub const SHARED_SUBSCRIPTION_AVAILABLE: u8 = 0x2a;
}

/// A property's value, of the type its identifier fixes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// Byte.
    Byte(u8),
    /// Two-byte integer.
    U16(u16),
    /// Four-byte integer.
    U32(u32),
    /// Variable byte integer.
    Var(u32),
    /// UTF-8 string.
    Str(String),
    /// Binary data.
    Bin(Vec<u8>),
    /// UTF-8 string pair (user property).
    Pair(String, String),
}

/// One property.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Property {
    /// Its identifier ([`id`]).
    pub id: u8,
    /// Its value.
    pub value: Value,
}

/// The type of property `id`: 0 byte, 1 u16, 2 u32, 3 varint, 4 string, 5 binary, 6 pair.
fn kind(id: u8) -> Option<u8> {
    use id::*;
    Some(match id {
        PAYLOAD_FORMAT_INDICATOR
        | REQUEST_PROBLEM_INFORMATION
        | REQUEST_RESPONSE_INFORMATION
        | MAXIMUM_QOS
        | RETAIN_AVAILABLE
        | WILDCARD_SUBSCRIPTION_AVAILABLE
        | SUBSCRIPTION_IDENTIFIER_AVAILABLE
        | SHARED_SUBSCRIPTION_AVAILABLE => 0,
        SERVER_KEEP_ALIVE | RECEIVE_MAXIMUM | TOPIC_ALIAS_MAXIMUM | TOPIC_ALIAS => 1,
        MESSAGE_EXPIRY_INTERVAL
        | SESSION_EXPIRY_INTERVAL
        | WILL_DELAY_INTERVAL
        | MAXIMUM_PACKET_SIZE => 2,
        SUBSCRIPTION_IDENTIFIER => 3,
        CONTENT_TYPE
        | RESPONSE_TOPIC
        | ASSIGNED_CLIENT_IDENTIFIER
        | AUTHENTICATION_METHOD
        | RESPONSE_INFORMATION
        | SERVER_REFERENCE
        | REASON_STRING => 4,
        CORRELATION_DATA | AUTHENTICATION_DATA => 5,
        USER_PROPERTY => 6,
        _ => return None,
    })
}

/// Properties a server may send in each packet (the client-side ones are only encoded).
pub(crate) mod allowed {
    use super::id::*;
    pub const CONNACK: &[u8] = &[
        SESSION_EXPIRY_INTERVAL,
        RECEIVE_MAXIMUM,
        MAXIMUM_QOS,
        RETAIN_AVAILABLE,
        MAXIMUM_PACKET_SIZE,
        ASSIGNED_CLIENT_IDENTIFIER,
        TOPIC_ALIAS_MAXIMUM,
        REASON_STRING,
        USER_PROPERTY,
        WILDCARD_SUBSCRIPTION_AVAILABLE,
        SUBSCRIPTION_IDENTIFIER_AVAILABLE,
        SHARED_SUBSCRIPTION_AVAILABLE,
        SERVER_KEEP_ALIVE,
        RESPONSE_INFORMATION,
        SERVER_REFERENCE,
        AUTHENTICATION_METHOD,
        AUTHENTICATION_DATA,
    ];
    pub const PUBLISH: &[u8] = &[
        PAYLOAD_FORMAT_INDICATOR,
        MESSAGE_EXPIRY_INTERVAL,
        TOPIC_ALIAS,
        RESPONSE_TOPIC,
        CORRELATION_DATA,
        USER_PROPERTY,
        SUBSCRIPTION_IDENTIFIER,
        CONTENT_TYPE,
    ];
    pub const ACK: &[u8] = &[REASON_STRING, USER_PROPERTY];
    pub const DISCONNECT: &[u8] = &[
        SESSION_EXPIRY_INTERVAL,
        REASON_STRING,
        USER_PROPERTY,
        SERVER_REFERENCE,
    ];
    pub const AUTH: &[u8] = &[
        AUTHENTICATION_METHOD,
        AUTHENTICATION_DATA,
        REASON_STRING,
        USER_PROPERTY,
    ];
}

/// A packet's properties, in the order they came (user properties keep their order).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Properties(pub Vec<Property>);

impl Properties {
    /// No properties.
    pub fn new() -> Properties {
        Properties(Vec::new())
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Adds one.
    pub fn push(&mut self, id: u8, value: Value) {
        self.0.push(Property { id, value });
    }

    /// The first value of property `id`.
    pub fn get(&self, id: u8) -> Option<&Value> {
        self.0.iter().find(|p| p.id == id).map(|p| &p.value)
    }

    /// A byte property.
    pub fn byte(&self, id: u8) -> Option<u8> {
        match self.get(id)? {
            Value::Byte(v) => Some(*v),
            _ => None,
        }
    }

    /// A two-byte or four-byte integer or varint property.
    pub fn int(&self, id: u8) -> Option<u32> {
        match self.get(id)? {
            Value::U16(v) => Some(u32::from(*v)),
            Value::U32(v) | Value::Var(v) => Some(*v),
            _ => None,
        }
    }

    /// A string property.
    pub fn str(&self, id: u8) -> Option<&str> {
        match self.get(id)? {
            Value::Str(v) => Some(v),
            _ => None,
        }
    }

    /// A binary property.
    pub fn bin(&self, id: u8) -> Option<&[u8]> {
        match self.get(id)? {
            Value::Bin(v) => Some(v),
            _ => None,
        }
    }

    /// User properties, in order.
    pub fn user(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().filter_map(|p| match &p.value {
            Value::Pair(k, v) => Some((k.as_str(), v.as_str())),
            _ => None,
        })
    }

    /// Every subscription identifier, in order.
    pub fn subscription_ids(&self) -> impl Iterator<Item = u32> + '_ {
        self.0.iter().filter_map(|p| match (p.id, &p.value) {
            (id::SUBSCRIPTION_IDENTIFIER, Value::Var(v)) => Some(*v),
            _ => None,
        })
    }

    /// The reason string.
    pub fn reason(&self) -> Option<&str> {
        self.str(id::REASON_STRING)
    }

    /// Reads a property length and the properties of `packet`, refusing any not in `allowed`,
    /// a repeated one (except user properties and, in PUBLISH, subscription identifiers) and
    /// values out of range.
    /// Reads a property block, within the memory budget of [`Properties::budget`].
    pub fn read(r: &mut Reader<'_>, allowed: &[u8], packet: &str) -> Result<Properties, Error> {
        let budget = Properties::budget(r.left());
        Properties::read_within(r, allowed, packet, budget)
    }

    /// The memory a property block read from a packet of `wire` bytes may take: twice that
    /// and 64 KiB (a few hundred short user properties are ordinary; millions of empty ones,
    /// each ~11 times its size once read, are not).
    pub fn budget(wire: usize) -> usize {
        wire.saturating_mul(2).saturating_add(64 * 1024)
    }

    /// Memory this holds: the list and the strings and binaries it owns.
    pub fn memory(&self) -> usize {
        self.0
            .iter()
            .map(|p| {
                std::mem::size_of::<Property>()
                    + match &p.value {
                        Value::Str(s) => s.len(),
                        Value::Bin(b) => b.len(),
                        Value::Pair(k, v) => k.len() + v.len(),
                        _ => 0,
                    }
            })
            .sum()
    }

    /// Like [`Properties::read`], refusing with [`Error::PacketTooLarge`] properties that
    /// would take more than `budget` bytes of memory once read (a block of millions of empty
    /// user properties takes ~11 times its size on the wire).
    pub fn read_within(
        r: &mut Reader<'_>,
        allowed: &[u8],
        packet: &str,
        budget: usize,
    ) -> Result<Properties, Error> {
        let bad = |why: String| malformed(packet, &why);
        let mut memory = 0usize;
        let len = r
            .varint()
            .ok_or_else(|| bad("bad property length".into()))? as usize;
        let block = r
            .take(len)
            .ok_or_else(|| bad("properties run past the packet".into()))?;
        let mut r = Reader::new(block);
        let mut props = Properties::new();
        let mut seen = 0u64;
        while !r.is_empty() {
            let pid = r
                .varint()
                .ok_or_else(|| bad("bad property identifier".into()))?;
            let Some(pid) = u8::try_from(pid).ok().filter(|p| allowed.contains(p)) else {
                return Err(bad(format!("property {pid:#04x} does not belong to it")));
            };
            let repeats = pid == id::USER_PROPERTY || pid == id::SUBSCRIPTION_IDENTIFIER;
            if !repeats && seen & (1 << pid) != 0 {
                return Err(bad(format!("property {pid:#04x} twice")));
            }
            seen |= 1 << pid;
            let short = || bad(format!("property {pid:#04x} runs past its block"));
            let value = match kind(pid).expect("allowed ids have a kind") {
                0 => Value::Byte(r.u8().ok_or_else(short)?),
                1 => Value::U16(r.u16().ok_or_else(short)?),
                2 => Value::U32(r.u32().ok_or_else(short)?),
                3 => Value::Var(r.varint().ok_or_else(short)?),
                4 => Value::Str(
                    r.str()
                        .ok_or_else(|| bad(format!("property {pid:#04x} is not a valid string")))?
                        .to_string(),
                ),
                5 => Value::Bin(r.bin().ok_or_else(short)?.to_vec()),
                _ => {
                    let k = r.str();
                    let v = r.str();
                    match (k, v) {
                        (Some(k), Some(v)) => Value::Pair(k.into(), v.into()),
                        _ => return Err(bad("a user property is not two valid strings".into())),
                    }
                }
            };
            let in_range = match (pid, &value) {
                (id::MAXIMUM_QOS | id::PAYLOAD_FORMAT_INDICATOR, Value::Byte(b)) => *b <= 1,
                (_, Value::Byte(b)) => *b <= 1,
                (id::RECEIVE_MAXIMUM, Value::U16(0)) => false,
                (id::TOPIC_ALIAS, Value::U16(0)) => false,
                (id::MAXIMUM_PACKET_SIZE, Value::U32(0)) => false,
                (id::SUBSCRIPTION_IDENTIFIER, Value::Var(0)) => false,
                _ => true,
            };
            if !in_range {
                return Err(bad(format!("property {pid:#04x} has a value out of range")));
            }
            memory += std::mem::size_of::<Property>()
                + match &value {
                    Value::Str(s) => s.len(),
                    Value::Bin(b) => b.len(),
                    Value::Pair(k, v) => k.len() + v.len(),
                    _ => 0,
                };
            if memory > budget {
                return Err(Error::PacketTooLarge {
                    size: memory,
                    max: budget,
                });
            }
            props.0.push(Property { id: pid, value });
        }
        Ok(props)
    }

    /// Bytes of the encoded properties, without their length.
    pub fn encoded_len(&self) -> usize {
        self.0
            .iter()
            .map(|p| {
                1 + match &p.value {
                    Value::Byte(_) => 1,
                    Value::U16(_) => 2,
                    Value::U32(_) => 4,
                    Value::Var(v) => varint_len(*v as usize),
                    Value::Str(s) => 2 + s.len(),
                    Value::Bin(b) => 2 + b.len(),
                    Value::Pair(k, v) => 4 + k.len() + v.len(),
                }
            })
            .sum()
    }

    /// Appends the encoded properties, without their length.
    pub fn encode_body(&self, out: &mut Vec<u8>) {
        for p in &self.0 {
            out.push(p.id);
            match &p.value {
                Value::Byte(b) => out.push(*b),
                Value::U16(v) => out.extend_from_slice(&v.to_be_bytes()),
                Value::U32(v) => out.extend_from_slice(&v.to_be_bytes()),
                Value::Var(v) => put_varint(*v as usize, out),
                Value::Str(s) => put_bin(s.as_bytes(), out),
                Value::Bin(b) => put_bin(b, out),
                Value::Pair(k, v) => {
                    put_bin(k.as_bytes(), out);
                    put_bin(v.as_bytes(), out);
                }
            }
        }
    }

    /// Bytes of the property length and properties.
    pub fn wire_len(&self) -> usize {
        let n = self.encoded_len();
        varint_len(n) + n
    }

    /// Appends the property length and properties.
    pub fn encode(&self, out: &mut Vec<u8>) {
        put_varint(self.encoded_len(), out);
        self.encode_body(out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn properties_round_trip_and_bad_ones_are_refused() {
        let mut p = Properties::new();
        p.push(id::USER_PROPERTY, Value::Pair("a".into(), "1".into()));
        p.push(id::CONTENT_TYPE, Value::Str("text/plain".into()));
        p.push(id::USER_PROPERTY, Value::Pair("a".into(), "2".into()));
        p.push(id::SUBSCRIPTION_IDENTIFIER, Value::Var(300));
        p.push(id::MESSAGE_EXPIRY_INTERVAL, Value::U32(7));
        let mut out = Vec::new();
        p.encode(&mut out);
        assert_eq!(out.len(), p.wire_len());
        let back = Properties::read(&mut Reader::new(&out), allowed::PUBLISH, "PUBLISH").unwrap();
        assert_eq!(back, p);
        assert_eq!(back.user().collect::<Vec<_>>(), [("a", "1"), ("a", "2")]);
        // Not allowed in an ack.
        assert!(Properties::read(&mut Reader::new(&out), allowed::ACK, "PUBACK").is_err());
        // Twice, out of range, truncated.
        for bad in [
            &[4, 0x02, 0, 0, 0][..],
            &[10, 0x02, 0, 0, 0, 1, 0x02, 0, 0, 0, 1],
            &[2, 0x01, 2],
            &[3, 0x23, 0, 0],
            &[3, 0x03, 0, 5],
            &[2, 0x0b, 0],
            &[5, 0x03, 0, 2, 0xff, 0xfe],
            &[200],
        ] {
            let r = Properties::read(&mut Reader::new(bad), allowed::PUBLISH, "PUBLISH");
            assert!(r.is_err(), "{bad:?}");
        }
    }
}

//! PUBACK, PUBREC, PUBREL, PUBCOMP (§3.4–§3.7): a packet identifier, and a reason code and
//! properties that may be left out when the code is 0 and there are none.

use super::properties::allowed;
use super::{malformed, put_header, Ack, Properties, Reader, ReasonCode};
use crate::error::Error;

pub(super) fn decode(r: &mut Reader<'_>, name: &str) -> Result<Ack, Error> {
    let id = r
        .u16()
        .ok_or_else(|| malformed(name, "no packet identifier"))?;
    let code = if r.is_empty() { 0 } else { r.u8().unwrap_or(0) };
    let props = if r.is_empty() {
        Properties::new()
    } else {
        Properties::read(r, allowed::ACK, name)?
    };
    Ok(Ack {
        id,
        code: ReasonCode(code),
        props,
    })
}

/// Appends the shortest encoding of `a` with fixed-header byte `first`.
pub(super) fn encode(first: u8, a: &Ack, out: &mut Vec<u8>) {
    if a.props.is_empty() {
        if a.code.0 == 0 {
            put_header(first, 2, out);
            out.extend_from_slice(&a.id.to_be_bytes());
        } else {
            put_header(first, 3, out);
            out.extend_from_slice(&a.id.to_be_bytes());
            out.push(a.code.0);
        }
        return;
    }
    put_header(first, 3 + a.props.wire_len(), out);
    out.extend_from_slice(&a.id.to_be_bytes());
    out.push(a.code.0);
    a.props.encode(out);
}

/// Which acknowledgement of a packet identifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckKind {
    /// PUBACK: a QoS 1 PUBLISH arrived.
    Puback,
    /// PUBREC: a QoS 2 PUBLISH arrived (first step).
    Pubrec,
    /// PUBREL: the sender releases a QoS 2 identifier (second step).
    Pubrel,
    /// PUBCOMP: the QoS 2 exchange is complete (third step).
    Pubcomp,
}

impl AckKind {
    /// The fixed header's first byte (PUBREL's flags are 0b0010 [MQTT-3.6.1-1]).
    pub const fn first_byte(self) -> u8 {
        match self {
            AckKind::Puback => 0x40,
            AckKind::Pubrec => 0x50,
            AckKind::Pubrel => 0x62,
            AckKind::Pubcomp => 0x70,
        }
    }
}

/// Appends a success acknowledgement of `id`: the same two-byte body in both versions.
pub fn encode_ack(kind: AckKind, id: u16, out: &mut Vec<u8>) {
    let [a, b] = id.to_be_bytes();
    out.extend_from_slice(&[kind.first_byte(), 2, a, b]);
}

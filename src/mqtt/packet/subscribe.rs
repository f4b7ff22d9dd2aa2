//! SUBSCRIBE (§3.8, encoded) and SUBACK (§3.9) — UNSUBACK has SUBACK's shape.

use super::properties::allowed;
use super::{malformed, put_bin, put_header, put_varint, varint_len, Control, Properties, Reader};
use crate::error::Error;

/// Appends a SUBSCRIBE with packet id `id`: each filter with its options byte (QoS in bits
/// 0–1, no local 2, retain as published 3, retain handling 4–5), and a subscription
/// identifier when `sub_id` is not 0.
pub fn encode_subscribe(id: u16, filters: &[(&str, u8)], sub_id: u32, out: &mut Vec<u8>) {
    let props_len = if sub_id > 0 {
        1 + varint_len(sub_id as usize)
    } else {
        0
    };
    let body = 2
        + varint_len(props_len)
        + props_len
        + filters.iter().map(|(f, _)| 3 + f.len()).sum::<usize>();
    put_header(0x82, body, out);
    out.extend_from_slice(&id.to_be_bytes());
    put_varint(props_len, out);
    if sub_id > 0 {
        out.push(super::id::SUBSCRIPTION_IDENTIFIER);
        put_varint(sub_id as usize, out);
    }
    for (f, opts) in filters {
        put_bin(f.as_bytes(), out);
        out.push(*opts);
    }
}

pub(super) fn decode_suback(r: &mut Reader<'_>, unsuback: bool) -> Result<Control, Error> {
    let name = if unsuback { "UNSUBACK" } else { "SUBACK" };
    let id = r
        .u16()
        .ok_or_else(|| malformed(name, "no packet identifier"))?;
    let props = Properties::read(r, allowed::ACK, name)?;
    let codes = r.take(r.left()).unwrap_or_default().to_vec();
    if codes.is_empty() {
        return Err(malformed(name, "no reason codes")); // [MQTT-3.9.3-1]
    }
    Ok(if unsuback {
        Control::Unsuback { id, codes, props }
    } else {
        Control::Suback { id, codes, props }
    })
}

pub(super) fn encode_suback(
    first: u8,
    id: u16,
    codes: &[u8],
    props: &Properties,
    out: &mut Vec<u8>,
) {
    put_header(first, 2 + props.wire_len() + codes.len(), out);
    out.extend_from_slice(&id.to_be_bytes());
    props.encode(out);
    out.extend_from_slice(codes);
}

//! PUBLISH (§3.3) properties and the v5 encoding; the frame itself is located by
//! [`crate::mqtt::codec::PublishFrame`], which stays a slice of the bytes it arrived in.

use std::sync::Arc;

use super::properties::allowed;
use super::{id, put_varint, varint_len, Properties, Reader};
use crate::error::Error;
use crate::mqtt::codec::Outgoing;

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

/// Reads the properties of a PUBLISH whose body from the property length on is `rest`:
/// `None` when there are none (nothing is allocated), the topic alias (0: none), and the
/// bytes the property length and properties took.
pub fn parse_publish(rest: &[u8]) -> Result<(Option<Arc<Properties>>, u16, usize), Error> {
    let mut r = Reader::new(rest);
    if rest.first() == Some(&0) {
        return Ok((None, 0, 1));
    }
    let mut props = Properties::read(&mut r, allowed::PUBLISH, "PUBLISH")?;
    let alias = props.int(id::TOPIC_ALIAS).unwrap_or(0) as u16;
    if alias != 0 {
        // Resolved by the session; not a property of the message.
        props.0.retain(|p| p.id != id::TOPIC_ALIAS);
    }
    let props = (!props.is_empty()).then(|| Arc::new(props));
    Ok((props, alias, r.pos()))
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

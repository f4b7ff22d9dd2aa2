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

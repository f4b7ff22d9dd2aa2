//! CONNECT (§3.1), encoded.

use super::{id, put_bin, put_header, Properties, Value};
use crate::mqtt::codec::Connect;

/// The v5 settings of a CONNECT.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConnectProperties {
    /// Session expiry interval in seconds (`None`: not sent, i.e. 0).
    pub session_expiry: Option<u32>,
    /// Receive maximum (`None`: not sent, i.e. 65535).
    pub receive_maximum: Option<u16>,
    /// Maximum packet size (`None`: not sent, no limit).
    pub maximum_packet_size: Option<u32>,
    /// Topic alias maximum (0: not sent, the server must not use aliases).
    pub topic_alias_maximum: u16,
    /// Request response information.
    pub request_response_information: bool,
    /// User properties.
    pub user: Vec<(String, String)>,
}

impl ConnectProperties {
    fn properties(&self) -> Properties {
        let mut p = Properties::new();
        if let Some(v) = self.session_expiry {
            p.push(id::SESSION_EXPIRY_INTERVAL, Value::U32(v));
        }
        if let Some(v) = self.receive_maximum {
            p.push(id::RECEIVE_MAXIMUM, Value::U16(v.max(1)));
        }
        if let Some(v) = self.maximum_packet_size {
            p.push(id::MAXIMUM_PACKET_SIZE, Value::U32(v.max(1)));
        }
        if self.topic_alias_maximum > 0 {
            p.push(
                id::TOPIC_ALIAS_MAXIMUM,
                Value::U16(self.topic_alias_maximum),
            );
        }
        if self.request_response_information {
            p.push(id::REQUEST_RESPONSE_INFORMATION, Value::Byte(1));
        }
        for (k, v) in &self.user {
            p.push(id::USER_PROPERTY, Value::Pair(k.clone(), v.clone()));
        }
        p
    }
}

/// Encodes a v5 CONNECT; `clean_session` is sent as Clean Start.
pub fn encode_connect(c: &Connect<'_>, v5: &ConnectProperties) -> Vec<u8> {
    let props = v5.properties();
    let mut body = 10 + props.wire_len() + 2 + c.client_id.len();
    let mut flags = 0u8;
    if c.clean_session {
        flags |= 0x02;
    }
    if let Some(w) = c.will {
        flags |= 0x04 | ((w.qos as u8) << 3) | (u8::from(w.retain) << 5);
        body += w.props.wire_len() + 4 + w.topic.len() + w.payload.len();
    }
    if let Some(u) = c.username {
        flags |= 0x80;
        body += 2 + u.len();
    }
    if let Some(p) = c.password {
        flags |= 0x40;
        body += 2 + p.len();
    }
    let mut out = Vec::with_capacity(body + 5);
    put_header(0x10, body, &mut out);
    put_bin(b"MQTT", &mut out);
    out.push(5);
    out.push(flags);
    let keep_alive = c.keep_alive.as_secs().min(u64::from(u16::MAX)) as u16;
    out.extend_from_slice(&keep_alive.to_be_bytes());
    props.encode(&mut out);
    put_bin(c.client_id.as_bytes(), &mut out);
    if let Some(w) = c.will {
        w.props.encode(&mut out);
        put_bin(w.topic.as_bytes(), &mut out);
        put_bin(&w.payload, &mut out);
    }
    if let Some(u) = c.username {
        put_bin(u.as_bytes(), &mut out);
    }
    if let Some(p) = c.password {
        put_bin(p.as_bytes(), &mut out);
    }
    out
}

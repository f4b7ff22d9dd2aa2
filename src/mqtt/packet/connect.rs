//! CONNECT (§3.1), encoded.

use super::v311::encode;
use super::{id, put_bin, put_header, Properties, Value};
use crate::mqtt::{MqttVersion, QoS};

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
fn encode_v5(c: &Connect<'_>, v5: &ConnectProperties) -> Vec<u8> {
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

/// Encodes a CONNECT packet of `version` (`props` are sent in MQTT 5 only).
pub fn encode_connect(c: &Connect<'_>, props: &ConnectProperties, version: MqttVersion) -> Vec<u8> {
    match version {
        MqttVersion::V3_1_1 => encode_v311(c),
        MqttVersion::V5 => encode_v5(c, props),
    }
}

/// MQTT 3.1.1's CONNECT, through mqtt-protocol.
fn encode_v311(c: &Connect<'_>) -> Vec<u8> {
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

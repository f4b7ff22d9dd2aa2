//! The packets the session writes, per protocol version, and what the server's CONNACK said
//! about them (MQTT 5: receive maximum, maximum packet size, topic aliases, maximum QoS,
//! retain availability, keep-alive).

use std::collections::HashMap;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::mqtt::packet::Outgoing;
use crate::mqtt::packet::{self, id, Alias, MqttVersion, Properties};
use crate::mqtt::QoS;

/// What the server allows on this connection (3.1.1: everything, as far as we can know).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerLimits {
    /// Most unacknowledged QoS 1/2 publishes it accepts.
    pub receive_maximum: u16,
    /// Largest packet it accepts.
    pub maximum_packet_size: Option<u32>,
    /// Highest topic alias it accepts (0: none).
    pub topic_alias_maximum: u16,
    /// Highest QoS it supports.
    pub maximum_qos: QoS,
    /// Whether it supports retained messages.
    pub retain_available: bool,
    /// Whether it supports wildcard subscriptions.
    pub wildcard_available: bool,
    /// Whether it supports shared subscriptions.
    pub shared_available: bool,
    /// Whether it supports subscription identifiers.
    pub subscription_ids_available: bool,
    /// The keep-alive it imposes (seconds), if any.
    pub server_keep_alive: Option<u16>,
    /// The client identifier it assigned, if any.
    pub assigned_client_id: Option<String>,
    /// The Response Information it gave, if any.
    pub response_information: Option<String>,
}

impl Default for ServerLimits {
    fn default() -> ServerLimits {
        ServerLimits {
            receive_maximum: u16::MAX,
            maximum_packet_size: None,
            topic_alias_maximum: 0,
            maximum_qos: QoS::ExactlyOnce,
            retain_available: true,
            wildcard_available: true,
            shared_available: true,
            subscription_ids_available: true,
            server_keep_alive: None,
            assigned_client_id: None,
            response_information: None,
        }
    }
}

impl ServerLimits {
    /// Reads a v5 CONNACK's properties.
    pub fn from_connack(p: &Properties) -> ServerLimits {
        let flag = |i| p.byte(i).is_none_or(|b| b == 1);
        ServerLimits {
            receive_maximum: p.int(id::RECEIVE_MAXIMUM).map_or(u16::MAX, |v| v as u16),
            maximum_packet_size: p.int(id::MAXIMUM_PACKET_SIZE),
            topic_alias_maximum: p.int(id::TOPIC_ALIAS_MAXIMUM).unwrap_or(0) as u16,
            maximum_qos: p
                .byte(id::MAXIMUM_QOS)
                .and_then(QoS::from_u8)
                .unwrap_or(QoS::ExactlyOnce),
            retain_available: flag(id::RETAIN_AVAILABLE),
            wildcard_available: flag(id::WILDCARD_SUBSCRIPTION_AVAILABLE),
            shared_available: flag(id::SHARED_SUBSCRIPTION_AVAILABLE),
            subscription_ids_available: flag(id::SUBSCRIPTION_IDENTIFIER_AVAILABLE),
            server_keep_alive: p.int(id::SERVER_KEEP_ALIVE).map(|v| v as u16),
            assigned_client_id: p.str(id::ASSIGNED_CLIENT_IDENTIFIER).map(String::from),
            response_information: p.str(id::RESPONSE_INFORMATION).map(crate::error::printable),
        }
    }

    /// Whether the server takes `packet` (QoS, retain, size), or the error naming why not.
    pub fn check(&self, packet: &Outgoing) -> Result<()> {
        if packet.qos > self.maximum_qos {
            return Err(Error::Unsupported(format!(
                "QoS {} publish: the server's maximum QoS is {} (CONNACK)",
                packet.qos as u8, self.maximum_qos as u8
            )));
        }
        if packet.retain && !self.retain_available {
            return Err(Error::Unsupported(
                "retained publish: the server has no retained messages (CONNACK)".into(),
            ));
        }
        if let Some(max) = self.maximum_packet_size {
            let size = encoded_size(packet);
            if size > max as usize {
                return Err(Error::PayloadTooLarge {
                    size,
                    max: max as usize,
                    limit: "the server's Maximum Packet Size (CONNACK), which counts the whole \
                            PUBLISH packet"
                        .into(),
                });
            }
        }
        Ok(())
    }
}

impl ServerLimits {
    /// Why the server would refuse subscribing to `filter` (its CONNACK said it has no
    /// shared or no wildcard subscriptions), if it would.
    pub fn refusal(&self, filter: &str) -> Option<String> {
        let shared = filter.strip_prefix("$share/");
        if shared.is_some() && !self.shared_available {
            return Some("the server has no shared subscriptions (CONNACK)".into());
        }
        let plain = shared.map_or(filter, |rest| rest.split_once('/').map_or("", |(_, f)| f));
        if plain.contains(['+', '#']) && !self.wildcard_available {
            return Some("the server has no wildcard subscriptions (CONNACK)".into());
        }
        None
    }
}

/// The size of `packet`'s v5 PUBLISH without a topic alias.
fn encoded_size(p: &Outgoing) -> usize {
    publish_size(p.topic.len(), p.qos, Some(p.props.len()), p.payload.len())
}

/// The size of a PUBLISH with a topic of `topic` bytes (no alias), properties of `props`
/// bytes (`None`: MQTT 3.1.1, which has none) and a payload of `payload` bytes.
pub fn publish_size(topic: usize, qos: QoS, props: Option<usize>, payload: usize) -> usize {
    let id_len = if qos == QoS::AtMostOnce { 0 } else { 2 };
    let props = props.map_or(0, |n| packet::varint_len(n) + n);
    let remaining = 2 + topic + id_len + props + payload;
    1 + packet::varint_len(remaining) + remaining
}

/// How packets are written on the current connection.
#[derive(Debug, Default)]
pub struct Wire {
    /// The protocol version.
    pub version: MqttVersion,
    /// What the server allows (reset on every CONNACK).
    pub limits: ServerLimits,
    /// Outgoing topic aliases defined on this connection.
    aliases: HashMap<Arc<str>, u16>,
    /// Incoming topic aliases the server defined on this connection.
    incoming: HashMap<u16, Arc<str>>,
    /// Most incoming aliases we accept (what CONNECT announced).
    pub incoming_max: u16,
    /// MQTT 5 subscription identifiers: the one each broker filter was last subscribed with,
    /// and the filters of each identifier (one per SUBSCRIBE packet). Kept across
    /// connections (a resumed session delivers with the identifiers it stored); never reused.
    filter_ids: HashMap<String, u32>,
    id_filters: HashMap<u32, Vec<String>>,
    next_sub_id: u32,
    /// Filters whose identifier a SUBSCRIBE or UNSUBSCRIBE (packet id first) replaced or
    /// dropped: the broker may still send with the old identifier until it acknowledges, so
    /// the old identifier keeps naming the filter until then. (Forgotten at once, a message
    /// already on its way — a retained one sent for the narrower filter a new wildcard
    /// replaced — was routed by its topic, to a subscription it was not sent for.)
    retiring: Vec<(u16, u32, String)>,
}

impl Wire {
    /// Packets of `version`, accepting up to `incoming_max` topic aliases from the server.
    pub fn new(version: MqttVersion, incoming_max: u16) -> Wire {
        Wire {
            version,
            incoming_max,
            ..Default::default()
        }
    }

    /// A new connection: aliases start over [MQTT-3.3.2-7].
    pub fn reset(&mut self, limits: ServerLimits) {
        self.limits = limits;
        self.aliases.clear();
        self.incoming.clear();
        // Nothing sent on the old connection is acknowledged on this one.
        for (_, old, filter) in std::mem::take(&mut self.retiring) {
            self.drop_id_filter(old, &filter);
        }
    }

    /// The SUBSCRIBE or UNSUBSCRIBE with packet id `id` was acknowledged: identifiers it
    /// replaced or dropped name nothing from now on.
    pub fn acknowledged(&mut self, id: u16) {
        let mut i = 0;
        while i < self.retiring.len() {
            if self.retiring[i].0 == id {
                let (_, old, filter) = self.retiring.swap_remove(i);
                self.drop_id_filter(old, &filter);
            } else {
                i += 1;
            }
        }
    }

    fn drop_id_filter(&mut self, old: u32, filter: &str) {
        if let Some(list) = self.id_filters.get_mut(&old) {
            list.retain(|f| f != filter);
            if list.is_empty() {
                self.id_filters.remove(&old);
            }
        }
    }

    /// Appends `packet` as PUBLISH with id `id` and DUP `dup`; in v5 with a topic alias
    /// when the server allows them (the first `topic_alias_maximum` topics get one).
    pub fn publish(&mut self, packet: &Outgoing, id: u16, dup: bool, out: &mut Vec<u8>) {
        match self.version {
            MqttVersion::V3_1_1 => packet.encode(id, dup, out),
            MqttVersion::V5 => {
                // Defining an alias adds a property (up to 4 bytes): not on a packet that
                // the server's Maximum Packet Size would then refuse (the size checked at
                // the call is the packet without an alias).
                let room = self.limits.maximum_packet_size.is_none_or(|max| {
                    encoded_size(packet) + 4 <= max as usize
                        || self.aliases.contains_key(packet.topic.as_str())
                });
                let alias = if room {
                    self.alias_for(&packet.topic)
                } else {
                    Alias::None
                };
                packet::encode_publish(packet, id, dup, alias, out)
            }
        }
    }

    fn alias_for(&mut self, topic: &str) -> Alias {
        if self.limits.topic_alias_maximum == 0 || topic.len() < 8 {
            return Alias::None;
        }
        if let Some(&n) = self.aliases.get(topic) {
            return Alias::Use(n);
        }
        let next = self.aliases.len() + 1;
        if next > self.limits.topic_alias_maximum as usize {
            return Alias::None;
        }
        self.aliases.insert(topic.into(), next as u16);
        Alias::Set(next as u16)
    }

    /// Resolves an incoming v5 topic alias: a new mapping is kept, an empty topic gets the
    /// alias's topic; an alias out of range or never defined is a protocol error.
    pub fn resolve(&mut self, p: &mut crate::mqtt::packet::PublishFrame) -> Result<()> {
        let alias = p.topic_alias();
        if alias == 0 {
            return Ok(());
        }
        if alias > self.incoming_max {
            return Err(Error::Protocol(format!(
                "PUBLISH with topic alias {alias}, above the {} the client allowed",
                self.incoming_max
            )));
        }
        if p.wire_topic().is_empty() {
            let Some(topic) = self.incoming.get(&alias) else {
                return Err(Error::Protocol(format!(
                    "PUBLISH with topic alias {alias}, which the server never defined"
                )));
            };
            p.set_aliased_topic(topic.clone());
        } else {
            self.incoming.insert(alias, p.wire_topic().into());
        }
        Ok(())
    }

    /// Appends a SUBSCRIBE of `filters` (with their v5 option bits in `options`).
    pub fn subscribe(
        &mut self,
        id: u16,
        filters: &[(String, QoS)],
        options: &HashMap<String, u8>,
        out: &mut Vec<u8>,
    ) {
        match self.version {
            MqttVersion::V3_1_1 => {
                let list = filters
                    .iter()
                    .filter_map(|(f, q)| {
                        mqtt::TopicFilter::new(f.clone())
                            .ok()
                            .map(|f| (f, q.to_mqtt()))
                    })
                    .collect();
                crate::mqtt::packet::encode(&mqtt::packet::SubscribePacket::new(id, list), out);
            }
            MqttVersion::V5 => {
                let list: Vec<(&str, u8)> = filters
                    .iter()
                    .map(|(f, q)| (f.as_str(), *q as u8 | options.get(f).copied().unwrap_or(0)))
                    .collect();
                let sub_id = if self.limits.subscription_ids_available {
                    self.assign_sub_id(id, filters)
                } else {
                    0
                };
                packet::encode_subscribe(id, &list, sub_id, out);
            }
        }
    }

    /// A new subscription identifier for `filters` (replacing what they had).
    fn assign_sub_id(&mut self, packet: u16, filters: &[(String, QoS)]) -> u32 {
        // 1..=268,435,455 [MQTT-3.8.2.1.2]; wrapping takes 268 million SUBSCRIBEs.
        self.next_sub_id = self.next_sub_id % 268_435_455 + 1;
        let k = self.next_sub_id;
        for (f, _) in filters {
            self.forget_sub_id(packet, f);
            self.filter_ids.insert(f.clone(), k);
        }
        self.id_filters
            .insert(k, filters.iter().map(|(f, _)| f.clone()).collect());
        k
    }

    /// `filter` is no longer subscribed with its identifier once packet `packet` is
    /// acknowledged.
    fn forget_sub_id(&mut self, packet: u16, filter: &str) {
        if let Some(old) = self.filter_ids.remove(filter) {
            self.retiring.push((packet, old, filter.to_string()));
        }
    }

    /// The broker filters a message with subscription identifiers `ids` was sent for;
    /// `None` when it has none or one is unknown (then the topic decides).
    pub fn filters_for(&self, ids: &[u32]) -> Option<Vec<&str>> {
        if ids.is_empty() {
            return None;
        }
        let mut out = Vec::new();
        for id in ids {
            let list = self.id_filters.get(id)?;
            out.extend(list.iter().map(String::as_str));
        }
        Some(out)
    }

    /// Appends an UNSUBSCRIBE of `filters`.
    pub fn unsubscribe(&mut self, id: u16, filters: &[String], out: &mut Vec<u8>) {
        for f in filters {
            self.forget_sub_id(id, f);
        }
        match self.version {
            MqttVersion::V3_1_1 => {
                let list = filters
                    .iter()
                    .filter_map(|f| mqtt::TopicFilter::new(f.clone()).ok())
                    .collect();
                crate::mqtt::packet::encode(&mqtt::packet::UnsubscribePacket::new(id, list), out);
            }
            MqttVersion::V5 => {
                let list: Vec<&str> = filters.iter().map(String::as_str).collect();
                packet::encode_unsubscribe(id, &list, out);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::mqtt::codec::Framer;
    use crate::mqtt::packet::Inbound;
    use crate::mqtt::packet::{Ack, Control, ReasonCode, Value};
    use crate::mqtt::session::{Event, Session, SessionConfig};

    fn v5_session(connack: Properties) -> (Session<u32>, Instant) {
        let mut cfg = SessionConfig::new("c");
        cfg.version = MqttVersion::V5;
        cfg.v5.topic_alias_maximum = 4;
        let now = Instant::now();
        let mut s = Session::new(cfg, now);
        let _ = s.connecting(Vec::new(), Default::default());
        let c = Control::Connack {
            session_present: false,
            code: 0,
            props: connack,
        };
        s.handle_inbound(Inbound::Control(c), now).unwrap();
        s.output().clear();
        (s, now)
    }

    fn sent(s: &mut Session<u32>) -> Vec<Inbound> {
        let bytes = std::mem::take(s.output());
        let mut out = Vec::new();
        Framer::with_version(1 << 20, MqttVersion::V5)
            .feed(&bytes, |p| {
                out.push(p);
                Ok(())
            })
            .unwrap();
        out
    }

    fn ack(id: u16, code: u8, reason: Option<&str>) -> Inbound {
        let mut props = Properties::new();
        if let Some(r) = reason {
            props.push(id::REASON_STRING, Value::Str(r.into()));
        }
        Inbound::Control(Control::Puback(Ack {
            id,
            code: ReasonCode(code),
            props,
        }))
    }

    /// A message the broker sent before it saw an UNSUBSCRIBE (or a SUBSCRIBE giving the
    /// filter a new identifier) still names its filter by the old identifier: routing it by
    /// topic instead delivered a retained message sent for `v5/retained` also to a new
    /// `v5/+` subscription that asked for no retained messages (the wider filter replaces
    /// the narrower one on the broker).
    #[test]
    fn an_identifier_names_its_filter_until_the_broker_acknowledges_the_change() {
        let mut w = Wire::new(MqttVersion::V5, 0);
        w.limits.subscription_ids_available = true;
        let mut out = Vec::new();
        let ab = || vec![("a/b".to_string(), QoS::AtMostOnce)];
        w.subscribe(1, &ab(), &HashMap::new(), &mut out);
        w.acknowledged(1);
        assert_eq!(w.filters_for(&[1]), Some(vec!["a/b"]));
        w.unsubscribe(2, &["a/b".to_string()], &mut out);
        assert_eq!(
            w.filters_for(&[1]),
            Some(vec!["a/b"]),
            "before the UNSUBACK"
        );
        w.acknowledged(2);
        assert_eq!(w.filters_for(&[1]), None, "after it");
        w.subscribe(3, &ab(), &HashMap::new(), &mut out);
        w.acknowledged(3);
        w.subscribe(4, &ab(), &HashMap::new(), &mut out);
        assert_eq!(
            w.filters_for(&[2]),
            Some(vec!["a/b"]),
            "old, before the SUBACK"
        );
        assert_eq!(w.filters_for(&[3]), Some(vec!["a/b"]), "new");
        w.acknowledged(4);
        assert_eq!(w.filters_for(&[2]), None);
        // A new connection acknowledges nothing sent on the old one.
        w.unsubscribe(5, &["a/b".to_string()], &mut out);
        w.reset(ServerLimits::default());
        assert_eq!(w.filters_for(&[3]), None);
        assert!(w.retiring.is_empty());
    }

    #[test]
    fn the_server_receive_maximum_bounds_what_is_in_flight() {
        let mut p = Properties::new();
        p.push(id::RECEIVE_MAXIMUM, Value::U16(2));
        let (mut s, now) = v5_session(p);
        for i in 0..5 {
            s.publish("t".into(), vec![i], QoS::AtLeastOnce, false, Some(i as u32))
                .unwrap();
        }
        assert_eq!(sent(&mut s).len(), 2);
        s.handle_inbound(ack(1, 0, None), now).unwrap();
        assert_eq!(sent(&mut s).len(), 1, "one acknowledged, one more sent");
        assert_eq!(s.inflight(), 2);
    }

    #[test]
    fn a_refusing_puback_fails_that_publish_with_its_reason() {
        let (mut s, now) = v5_session(Properties::new());
        s.publish("t".into(), vec![1], QoS::AtLeastOnce, false, Some(7))
            .unwrap();
        let _ = sent(&mut s);
        s.handle_inbound(ack(1, 0x87, Some("no")), now).unwrap();
        match s.next_event() {
            Some(Event::PublishRejected(Some(7), code, reason, what)) => {
                assert_eq!(code, ReasonCode(0x87));
                assert_eq!(reason.as_deref(), Some("no"));
                assert!(what.contains("\"t\""), "{what}");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(s.inflight(), 0);
        // 0x10 (no matching subscribers) is a success.
        s.publish("t".into(), vec![1], QoS::AtLeastOnce, false, Some(8))
            .unwrap();
        let _ = sent(&mut s);
        s.handle_inbound(ack(2, 0x10, None), now).unwrap();
        assert_eq!(s.next_event(), Some(Event::Published(8)));
    }

    #[test]
    fn connack_limits_are_honoured() {
        let mut p = Properties::new();
        p.push(id::MAXIMUM_QOS, Value::Byte(1));
        p.push(id::RETAIN_AVAILABLE, Value::Byte(0));
        p.push(id::MAXIMUM_PACKET_SIZE, Value::U32(100));
        p.push(id::SERVER_KEEP_ALIVE, Value::U16(5));
        let (mut s, now) = v5_session(p);
        let e = s.publish("t".into(), vec![], QoS::ExactlyOnce, false, None);
        assert!(matches!(e, Err(Error::Unsupported(m)) if m.contains("maximum QoS is 1")));
        let e = s.publish("t".into(), vec![], QoS::AtMostOnce, true, None);
        assert!(matches!(e, Err(Error::Unsupported(m)) if m.contains("retain")));
        let e = s.publish("t".into(), vec![0; 100], QoS::AtMostOnce, false, None);
        assert!(
            matches!(e, Err(Error::PayloadTooLarge { max: 100, .. })),
            "{e:?}"
        );
        assert!(s
            .publish("t".into(), vec![0; 50], QoS::AtMostOnce, false, None)
            .is_ok());
        // The server's keep-alive of 5 s replaces our 60 s.
        assert!(s.next_deadline().unwrap() <= now + Duration::from_secs(5));
    }

    /// A Server Keep Alive of 0 does not switch off our dead-link detection: a PINGREQ is
    /// always allowed (before: no PINGREQ at all, a half-open link unnoticed for ever).
    #[test]
    fn a_server_keep_alive_of_zero_keeps_ours() {
        let mut p = Properties::new();
        p.push(id::SERVER_KEEP_ALIVE, Value::U16(0));
        let (s, _) = v5_session(p);
        assert!(s.next_deadline().is_some(), "our keep-alive still runs");
    }

    #[test]
    fn topic_aliases_are_used_out_and_resolved_in() {
        let mut p = Properties::new();
        p.push(id::TOPIC_ALIAS_MAXIMUM, Value::U16(1));
        let (mut s, now) = v5_session(p);
        for t in [
            "devices/one/state",
            "devices/one/state",
            "devices/two/state",
        ] {
            s.publish(t.into(), vec![1], QoS::AtMostOnce, false, None)
                .unwrap();
        }
        let out: Vec<(String, u16)> = sent(&mut s)
            .into_iter()
            .map(|p| match p {
                Inbound::Publish(f) => (f.wire_topic().to_string(), f.topic_alias()),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            out,
            [
                ("devices/one/state".to_string(), 1),
                (String::new(), 1),
                ("devices/two/state".to_string(), 0)
            ]
        );
        // Incoming: defined, then used; an undefined one is a protocol error.
        let publish = |topic: &str, alias: u16| {
            let o = Outgoing {
                topic: topic.into(),
                payload: b"x".to_vec(),
                qos: QoS::AtMostOnce,
                retain: false,
                props: Vec::new(),
            };
            let a = if topic.is_empty() {
                Alias::Use(alias)
            } else {
                Alias::Set(alias)
            };
            let mut b = Vec::new();
            packet::encode_publish(&o, 0, false, a, &mut b);
            crate::mqtt::codec::decode_packet_as(&b, MqttVersion::V5).unwrap()
        };
        s.handle_inbound(publish("in/topic", 2), now).unwrap();
        s.handle_inbound(publish("", 2), now).unwrap();
        let topics: Vec<String> = std::iter::from_fn(|| s.next_event())
            .map(|e| match e {
                Event::Message(m) => m.topic().to_string(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(topics, ["in/topic", "in/topic"]);
        let e = s.handle_inbound(publish("", 3), now).unwrap_err();
        assert!(e.to_string().contains("never defined"), "{e}");
        let e = s.handle_inbound(publish("x/y", 5), now).unwrap_err();
        assert!(e.to_string().contains("above the 4"), "{e}");
    }

    #[test]
    fn filters_the_server_said_it_lacks_are_refused_without_asking() {
        let mut p = Properties::new();
        p.push(id::WILDCARD_SUBSCRIPTION_AVAILABLE, Value::Byte(0));
        p.push(id::SHARED_SUBSCRIPTION_AVAILABLE, Value::Byte(0));
        let (mut s, _) = v5_session(p);
        s.subscribe(
            vec![
                ("a/+".into(), QoS::AtMostOnce),
                ("plain".into(), QoS::AtMostOnce),
                ("$share/g/x".into(), QoS::AtMostOnce),
            ],
            Some(4),
        );
        let out = std::mem::take(s.output());
        let (h, len) = crate::mqtt::packet::parse_fixed_header(&out)
            .unwrap()
            .unwrap();
        // Packet id, a subscription identifier (0x0b 1), the one filter.
        assert_eq!(
            (out[0], h + len, &out[h + 2..]),
            (0x82, out.len(), &b"\x02\x0b\x01\x00\x05plain\x00"[..]),
            "one SUBSCRIBE, for the plain filter only"
        );
        let Some(Event::Subscribed(4, refused)) = ({
            s.handle_inbound(
                Inbound::Control(Control::Suback {
                    id: 1,
                    codes: vec![0],
                    props: Properties::new(),
                }),
                Instant::now(),
            )
            .unwrap();
            s.next_event()
        }) else {
            panic!("no Subscribed event")
        };
        let names: Vec<&str> = refused.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(names, ["a/+", "$share/g/x"]);
        assert!(refused[0].1.as_deref().unwrap().contains("wildcard"));
        assert!(refused[1].1.as_deref().unwrap().contains("shared"));
    }

    #[test]
    fn a_refused_unsubscribe_is_reported_with_its_code() {
        let (mut s, now) = v5_session(Properties::new());
        s.unsubscribe(vec!["a".into(), "b".into()]);
        let _ = std::mem::take(s.output());
        let mut p = Properties::new();
        p.push(id::REASON_STRING, Value::Str("no".into()));
        let unsuback = Control::Unsuback {
            id: 1,
            codes: vec![0, 0x87],
            props: p,
        };
        s.handle_inbound(Inbound::Control(unsuback), now).unwrap();
        assert_eq!(
            s.next_event(),
            Some(Event::UnsubscribeRefused(vec![(
                "b".to_string(),
                ReasonCode(0x87),
                Some("no".to_string())
            )]))
        );
    }

    #[test]
    fn a_server_disconnect_names_its_reason_and_reference() {
        let (mut s, now) = v5_session(Properties::new());
        let mut p = Properties::new();
        p.push(id::REASON_STRING, Value::Str("maintenance".into()));
        p.push(id::SERVER_REFERENCE, Value::Str("b.example:443".into()));
        let d = Control::Disconnect {
            code: ReasonCode(0x9d),
            props: p,
        };
        let e = s.handle_inbound(Inbound::Control(d), now).unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("0x9d (server moved)")
                && text.contains("maintenance")
                && text.contains("b.example:443"),
            "{text}"
        );
    }
}

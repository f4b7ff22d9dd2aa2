//! The sans-IO session fed an arbitrary sequence of inbound packets, commands and clock
//! ticks: never panics, and its invariants hold after every step (in-flight counts match the
//! slots and stay within the window, packet id 0 is never used, the keep-alive deadline is
//! never before the ping), and an acknowledgement completes only what was asked. The first
//! flag picks MQTT 5: CONNACKs with receive maximum and topic alias maximum, acknowledgements
//! with reason codes, and raw bytes through the v5 decoder.
#![no_main]

use std::collections::HashSet;
use std::time::{Duration, Instant};

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use mqtt::packet::suback::SubscribeReturnCode;
use mqtt::packet::*;
use mqtt::TopicName;
use mqtt_pubsub::internals::codec::decode_packet_as;
use mqtt_pubsub::internals::packet::Inbound;
use mqtt_pubsub::internals::session::{Event, Session, SessionConfig};
use mqtt_pubsub::internals::packet::{id, Ack, Control, Properties, ReasonCode, Value};
use mqtt_pubsub::{MqttVersion, QoS};

#[derive(Arbitrary, Debug)]
enum Op {
    Publish { qos: u8, topic: u8 },
    Subscribe { filters: u8 },
    Unsubscribe { filters: u8 },
    Puback(u16),
    Pubrec(u16),
    Pubcomp(u16),
    Pubrel(u16),
    Suback { id: u16, codes: Vec<u8> },
    Unsuback(u16),
    Pingresp,
    Incoming { qos: u8, id: u16 },
    Raw(Vec<u8>),
    Tick(u16),
    Disconnect,
    Connect { session_present: bool },
    /// v5: a CONNACK (after CONNECT) with these limits.
    Connack5 { receive_max: u16, alias_max: u8, max_qos: u8 },
    /// v5: PUBACK, PUBREC or PUBCOMP with a reason code.
    Ack5 { kind: u8, id: u16, code: u8 },
    TakeOutput,
}

fn qos(q: u8) -> QoS {
    QoS::from_u8(q % 3).unwrap()
}

fuzz_target!(|input: (u8, u16, bool, Vec<Op>)| {
    let (window, keep_alive, v5, ops) = input;
    let version = if v5 { MqttVersion::V5 } else { MqttVersion::V3_1_1 };
    let mut cfg = SessionConfig::new("fuzz");
    cfg.version = version;
    cfg.v5.topic_alias_maximum = 4;
    cfg.max_inflight = (window % 8) as u16 + 1;
    cfg.max_queued = 16;
    cfg.max_filters_per_subscribe = 2;
    cfg.keep_alive = Duration::from_secs((keep_alive % 5) as u64);
    let mut now = Instant::now();
    let mut s: Session<u32> = Session::new(cfg, now);
    s.on_connected(now, false, Vec::new(), &|_| true);
    let mut next_reply = 0u32;
    let mut waiting: HashSet<u32> = HashSet::new();
    for op in ops.into_iter().take(256) {
        let r: Result<(), mqtt_pubsub::Error> = match op {
            Op::Publish { qos: q, topic } => {
                if !s.can_accept() {
                    continue;
                }
                next_reply += 1;
                let q = qos(q);
                if q != QoS::AtMostOnce {
                    waiting.insert(next_reply);
                }
                s.publish(format!("t/{}", topic % 4), vec![topic], q, false, Some(next_reply))
            }
            Op::Subscribe { filters } => {
                if !s.can_accept() {
                    continue;
                }
                next_reply += 1;
                waiting.insert(next_reply);
                let f = (0..filters % 5).map(|i| (format!("f/{i}"), qos(filters))).collect();
                s.subscribe(f, Some(next_reply));
                Ok(())
            }
            Op::Unsubscribe { filters } => {
                s.unsubscribe((0..filters % 4).map(|i| format!("f/{i}")).collect());
                Ok(())
            }
            Op::Puback(id) => s.handle(PubackPacket::new(id).into(), now),
            Op::Pubrec(id) => s.handle(PubrecPacket::new(id).into(), now),
            Op::Pubcomp(id) => s.handle(PubcompPacket::new(id).into(), now),
            Op::Pubrel(id) => s.handle(PubrelPacket::new(id).into(), now),
            Op::Suback { id, codes } => {
                let codes = codes
                    .iter()
                    .take(8)
                    .map(|c| match c % 4 {
                        0 => SubscribeReturnCode::MaximumQoSLevel0,
                        1 => SubscribeReturnCode::MaximumQoSLevel1,
                        2 => SubscribeReturnCode::MaximumQoSLevel2,
                        _ => SubscribeReturnCode::Failure,
                    })
                    .collect();
                s.handle(SubackPacket::new(id, codes).into(), now)
            }
            Op::Unsuback(id) => s.handle(UnsubackPacket::new(id).into(), now),
            Op::Pingresp => s.handle(PingrespPacket::new().into(), now),
            Op::Incoming { qos: q, id } => {
                let q = match q % 3 {
                    0 => QoSWithPacketIdentifier::Level0,
                    1 => QoSWithPacketIdentifier::Level1(id.max(1)),
                    _ => QoSWithPacketIdentifier::Level2(id.max(1)),
                };
                s.handle(PublishPacket::new(TopicName::new("in").unwrap(), q, b"x".to_vec()).into(), now)
            }
            Op::Raw(bytes) => match decode_packet_as(&bytes, version) {
                Ok(p) => s.handle_inbound(p, now),
                Err(_) => Ok(()),
            },
            Op::Connack5 { receive_max, alias_max, max_qos } => {
                if !v5 || s.is_connected() {
                    continue;
                }
                let _ = s.connecting(vec![("f/1".into(), QoS::AtLeastOnce)], HashSet::new());
                let mut props = Properties::new();
                props.push(id::RECEIVE_MAXIMUM, Value::U16(receive_max.max(1)));
                props.push(id::TOPIC_ALIAS_MAXIMUM, Value::U16(alias_max as u16));
                props.push(id::MAXIMUM_QOS, Value::Byte(max_qos % 2));
                let connack = Control::Connack { session_present: false, code: 0, props };
                s.handle_inbound(Inbound::Control(connack), now)
            }
            Op::Ack5 { kind, id, code } => {
                if !v5 {
                    continue;
                }
                let a = Ack { id, code: ReasonCode(code), props: Properties::new() };
                let c = match kind % 3 {
                    0 => Control::Puback(a),
                    1 => Control::Pubrec(a),
                    _ => Control::Pubcomp(a),
                };
                s.handle_inbound(Inbound::Control(c), now)
            }
            Op::Tick(ms) => {
                now += Duration::from_millis(ms as u64);
                s.poll_timers(now)
            }
            Op::Disconnect => {
                // A lost link: strikes may drop the oldest packet.
                s.on_lost(now);
                Ok(())
            }
            Op::Connect { session_present } => {
                if !s.is_connected() {
                    s.on_connected(
                        now,
                        session_present,
                        vec![("f/0".into(), QoS::AtLeastOnce)],
                        &|f| f.len() % 2 == 0,
                    );
                }
                Ok(())
            }
            Op::TakeOutput => {
                let out = std::mem::take(s.output());
                s.mark_sent(now);
                // The bytes the session writes are valid packets.
                let mut framer = mqtt_pubsub::internals::codec::Framer::new(1 << 20);
                if v5 {
                    // The v5 framer decodes what a server sends; the session writes client
                    // packets: check the PUBLISHes parse and the acknowledgements' ids.
                    let mut rest = &out[..];
                    while !rest.is_empty() {
                        let (h, len) = mqtt_pubsub::internals::packet::parse_fixed_header(rest)
                            .expect("valid header")
                            .expect("whole packets");
                        let packet = &rest[..h + len];
                        if packet[0] >> 4 == 3 {
                            decode_packet_as(packet, version).expect("a valid v5 PUBLISH");
                        }
                        if matches!(packet[0] >> 4, 4 | 5 | 6 | 7) {
                            assert_ne!(&packet[h..h + 2], &[0, 0], "acknowledged packet id 0");
                        }
                        rest = &rest[h + len..];
                    }
                    Ok(())
                } else {
                framer
                    .feed(&out, |p| {
                        // Never an acknowledgement of packet id 0 (an inbound QoS 1/2 PUBLISH
                        // with id 0 is a protocol error, not acknowledged).
                        if let mqtt_pubsub::internals::packet::Inbound::Other(p) = &p {
                            use mqtt::packet::VariablePacket as V;
                            let id = match p {
                                V::PubackPacket(a) => Some(a.packet_identifier()),
                                V::PubrecPacket(a) => Some(a.packet_identifier()),
                                V::PubcompPacket(a) => Some(a.packet_identifier()),
                                _ => None,
                            };
                            assert_ne!(id, Some(0), "acknowledged packet id 0");
                        }
                        Ok(())
                    })
                    .expect("the session writes valid MQTT");
                Ok(())
                }
            }
        };
        if r.is_err() {
            // A protocol error or a dead link: the driver would reconnect.
            s.on_disconnected();
        }
        if let Err(e) = s.check_invariants() {
            panic!("invariant broken: {e}");
        }
        if let Some(d) = s.next_deadline() {
            assert!(d >= now, "keep-alive deadline in the past");
        }
        while let Some(ev) = s.next_event() {
            match ev {
                Event::Published(r)
                | Event::Subscribed(r, _)
                | Event::PublishRefused(Some(r), _)
                | Event::PublishRejected(Some(r), ..)
                | Event::Failed(r, _) => {
                    assert!(waiting.remove(&r), "completion {r} that nobody waits for, or twice");
                }
                Event::PublishRefused(None, _)
                | Event::PublishRejected(None, ..)
                | Event::FiltersRefused(_)
                | Event::UnsubscribeRefused(_)
                | Event::Oversized(..)
                | Event::Deferred(_)
                | Event::Message(_) => {}
            }
        }
    }
});

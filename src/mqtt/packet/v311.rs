//! MQTT 3.1.1's packets other than PUBLISH, through `mqtt-protocol` (the user's choice of
//! 3.1.1 codec): decoding held to exact frames, encoding, and their conversion into the
//! [`Control`] the session acts on in both versions.

use std::io::Cursor;

use bytes::Bytes;
use mqtt::packet::VariablePacket;
use mqtt::{Decodable, Encodable};

use super::header::{parse_fixed_header, remaining_length_len};
use super::{Ack, Control, Inbound, Properties, PublishFrame, ReasonCode};
use crate::error::Error;

/// Decodes exactly one complete packet frame.
pub fn decode_frame(frame: &[u8]) -> Result<VariablePacket, Error> {
    let mut cursor = Cursor::new(frame);
    let packet = VariablePacket::decode(&mut cursor).map_err(|e| {
        // mqtt-protocol appends the packet's bytes in Debug form ("…, [u8, ..0]").
        let text = e.to_string();
        let words = text.split(", [").next().unwrap_or_default();
        Error::Protocol(format!("malformed packet: {words}"))
    })?;
    let malformed = || {
        Error::Protocol(format!(
            "malformed {} packet of {} bytes",
            packet_name(&packet),
            frame.len()
        ))
    };
    if cursor.position() as usize != frame.len() || packet.encoded_length() as usize != frame.len()
    {
        return Err(malformed());
    }
    if ack_packet_id(&packet) == Some(0) {
        // [MQTT-2.3.1-1]: identifiers are non-zero.
        return Err(Error::Protocol(format!(
            "{} with packet identifier 0",
            packet_name(&packet)
        )));
    }
    match &packet {
        // mqtt-protocol truncates a string that runs past the packet instead of failing: the
        // topic length on the wire must be the decoded topic's.
        VariablePacket::PublishPacket(p) => {
            let header = 1 + remaining_length_len(frame);
            let wire = frame
                .get(header..header + 2)
                .map(|b| u16::from_be_bytes([b[0], b[1]]) as usize);
            if wire != Some(p.topic_name().len()) {
                return Err(malformed());
            }
        }
        // Every other packet a server sends is a few bytes: its encoding must be identical.
        _ => {
            let mut again = Vec::with_capacity(frame.len());
            let _ = packet.encode(&mut again);
            if again != frame {
                return Err(malformed());
            }
        }
    }
    Ok(packet)
}

/// Appends the encoding of `packet` to `out`.
pub fn encode<P: Encodable>(packet: &P, out: &mut Vec<u8>) {
    out.reserve(packet.encoded_length() as usize);
    // Writing into a Vec cannot fail.
    let _ = packet.encode(out);
}

impl From<VariablePacket> for Inbound {
    fn from(packet: VariablePacket) -> Inbound {
        if let VariablePacket::PublishPacket(_) = &packet {
            let mut bytes = Vec::new();
            encode(&packet, &mut bytes);
            if let Ok(Some((header, _))) = parse_fixed_header(&bytes) {
                if let Ok(p) = PublishFrame::parse(Bytes::from(bytes), header) {
                    return Inbound::Publish(p);
                }
            }
        }
        Inbound::Other(packet)
    }
}

impl Control {
    /// A 3.1.1 packet as the session handles it; a packet a server never sends (or a PUBLISH
    /// `PublishFrame::parse` refused) is a protocol error.
    pub fn from_v311(p: VariablePacket) -> Result<Control, Error> {
        let ack = |id| Ack {
            id,
            code: ReasonCode(0),
            props: Properties::new(),
        };
        Ok(match p {
            VariablePacket::ConnackPacket(c) => Control::Connack {
                session_present: c.connack_flags().session_present,
                code: c.connect_return_code().to_u8(),
                props: Properties::new(),
            },
            VariablePacket::PubackPacket(a) => Control::Puback(ack(a.packet_identifier())),
            VariablePacket::PubrecPacket(a) => Control::Pubrec(ack(a.packet_identifier())),
            VariablePacket::PubrelPacket(a) => Control::Pubrel(ack(a.packet_identifier())),
            VariablePacket::PubcompPacket(a) => Control::Pubcomp(ack(a.packet_identifier())),
            VariablePacket::SubackPacket(a) => Control::Suback {
                id: a.packet_identifier(),
                codes: a
                    .subscribes()
                    .iter()
                    .map(|c| match c {
                        mqtt::packet::suback::SubscribeReturnCode::MaximumQoSLevel0 => 0,
                        mqtt::packet::suback::SubscribeReturnCode::MaximumQoSLevel1 => 1,
                        mqtt::packet::suback::SubscribeReturnCode::MaximumQoSLevel2 => 2,
                        mqtt::packet::suback::SubscribeReturnCode::Failure => 0x80,
                    })
                    .collect(),
                props: Properties::new(),
            },
            VariablePacket::UnsubackPacket(a) => Control::Unsuback {
                id: a.packet_identifier(),
                codes: Vec::new(),
                props: Properties::new(),
            },
            VariablePacket::PingrespPacket(_) => Control::Pingresp,
            // `Inbound::from` keeps a PUBLISH as a packet only when `PublishFrame::parse`
            // refused it (packet id 0, U+0000 in the topic, DUP on QoS 0, ...).
            VariablePacket::PublishPacket(_) => {
                return Err(Error::Protocol(
                    "a PUBLISH that breaks the protocol's rules".into(),
                ))
            }
            other => {
                return Err(Error::Protocol(format!(
                    "the broker sent {}, which a server never sends to a client",
                    packet_name(&other)
                )))
            }
        })
    }
}

/// The packet identifier of an acknowledgement a server sends (PUBACK, PUBREC, PUBREL,
/// PUBCOMP, SUBACK, UNSUBACK); `None` for other packets.
pub fn ack_packet_id(p: &VariablePacket) -> Option<u16> {
    Some(match p {
        VariablePacket::PubackPacket(a) => a.packet_identifier(),
        VariablePacket::PubrecPacket(a) => a.packet_identifier(),
        VariablePacket::PubrelPacket(a) => a.packet_identifier(),
        VariablePacket::PubcompPacket(a) => a.packet_identifier(),
        VariablePacket::SubackPacket(a) => a.packet_identifier(),
        VariablePacket::UnsubackPacket(a) => a.packet_identifier(),
        _ => return None,
    })
}

/// The name of a packet's type, for messages.
pub fn packet_name(p: &VariablePacket) -> &'static str {
    match p {
        VariablePacket::ConnectPacket(_) => "CONNECT",
        VariablePacket::ConnackPacket(_) => "CONNACK",
        VariablePacket::PublishPacket(_) => "PUBLISH",
        VariablePacket::PubackPacket(_) => "PUBACK",
        VariablePacket::PubrecPacket(_) => "PUBREC",
        VariablePacket::PubrelPacket(_) => "PUBREL",
        VariablePacket::PubcompPacket(_) => "PUBCOMP",
        VariablePacket::SubscribePacket(_) => "SUBSCRIBE",
        VariablePacket::SubackPacket(_) => "SUBACK",
        VariablePacket::UnsubscribePacket(_) => "UNSUBSCRIBE",
        VariablePacket::UnsubackPacket(_) => "UNSUBACK",
        VariablePacket::PingreqPacket(_) => "PINGREQ",
        VariablePacket::PingrespPacket(_) => "PINGRESP",
        VariablePacket::DisconnectPacket(_) => "DISCONNECT",
    }
}

//! Framing of a byte stream into MQTT packets, decoded with `mqtt-protocol`.
//!
//! WebSocket frames and MQTT packets are independent: aedes splits one packet over several
//! frames, NATS and rumqttd pack several packets into one frame [MQTT-6.0.0-2]. The framer
//! works on the byte stream. It reads the fixed header and the remaining length itself and
//! refuses a packet over the limit *before* buffering it, then hands `mqtt-protocol` exactly
//! one complete frame (its decoder is only safe on that), and checks that the packet consumed
//! the whole frame and re-encodes to the same length (the crate silently truncates a short
//! PUBLISH payload and ignores trailing bytes).

use std::io::Cursor;

use mqtt::packet::VariablePacket;
use mqtt::{Decodable, Encodable};

use crate::error::Error;

/// Reads the remaining-length varint of a fixed header in `buf` (which starts at the first
/// byte of a packet). Returns `Ok(None)` when more bytes are needed, else the header length
/// and the remaining length.
pub fn parse_fixed_header(buf: &[u8]) -> Result<Option<(usize, usize)>, Error> {
    let mut remaining: usize = 0;
    for i in 0..4 {
        let Some(&byte) = buf.get(1 + i) else {
            return Ok(None);
        };
        remaining |= ((byte & 0x7f) as usize) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok(Some((2 + i, remaining)));
        }
    }
    // [MQTT-2.2.3]: at most four bytes of remaining length.
    Err(Error::Protocol(
        "malformed remaining length (more than 4 bytes)".into(),
    ))
}

/// Decodes exactly one complete packet frame.
pub fn decode_frame(frame: &[u8]) -> Result<VariablePacket, Error> {
    let mut cursor = Cursor::new(frame);
    let packet = VariablePacket::decode(&mut cursor)
        .map_err(|e| Error::Protocol(format!("malformed packet: {e}")))?;
    let malformed = || {
        Error::Protocol(format!(
            "malformed {} packet of {} bytes",
            super::session::packet_name(&packet),
            frame.len()
        ))
    };
    if cursor.position() as usize != frame.len() || packet.encoded_length() as usize != frame.len()
    {
        return Err(malformed());
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

/// Bytes of the remaining-length field of a complete frame.
fn remaining_length_len(frame: &[u8]) -> usize {
    frame
        .iter()
        .skip(1)
        .take(4)
        .position(|b| b & 0x80 == 0)
        .map_or(4, |i| i + 1)
}

/// Splits a byte stream into packets, holding at most one partial packet.
#[derive(Debug)]
pub struct Framer {
    buf: Vec<u8>,
    max_packet_size: usize,
}

impl Framer {
    /// A framer refusing packets whose total size exceeds `max_packet_size` bytes.
    pub fn new(max_packet_size: usize) -> Framer {
        Framer {
            buf: Vec::new(),
            max_packet_size,
        }
    }

    /// Forgets any partial packet (after a reconnect).
    pub fn reset(&mut self) {
        self.buf.clear();
        if self.buf.capacity() > 64 * 1024 {
            self.buf = Vec::new();
        }
    }

    /// Bytes of a partial packet held back.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Feeds bytes; calls `on_packet` for every complete packet, in order. After an error the
    /// stream is unusable and the connection must be closed.
    pub fn feed<F>(&mut self, mut data: &[u8], mut on_packet: F) -> Result<(), Error>
    where
        F: FnMut(VariablePacket) -> Result<(), Error>,
    {
        // Complete the partial packet first.
        while !self.buf.is_empty() {
            match parse_fixed_header(&self.buf)? {
                Some((header, remaining)) => {
                    let total = self.check_size(header + remaining)?;
                    if self.buf.len() == total {
                        let packet = decode_frame(&self.buf)?;
                        self.buf.clear();
                        on_packet(packet)?;
                        continue;
                    }
                    if data.is_empty() {
                        return Ok(());
                    }
                    let take = (total - self.buf.len()).min(data.len());
                    self.buf.extend_from_slice(&data[..take]);
                    data = &data[take..];
                }
                None => {
                    // Header incomplete: take one byte at a time (at most 4 more).
                    let Some((&first, rest)) = data.split_first() else {
                        return Ok(());
                    };
                    self.buf.push(first);
                    data = rest;
                }
            }
        }
        // Then decode straight from the input without copying.
        while !data.is_empty() {
            match parse_fixed_header(data)? {
                Some((header, remaining)) => {
                    let total = self.check_size(header + remaining)?;
                    if data.len() < total {
                        break;
                    }
                    let packet = decode_frame(&data[..total])?;
                    data = &data[total..];
                    on_packet(packet)?;
                }
                None => break,
            }
        }
        if !data.is_empty() {
            // Only the size of what actually arrived is reserved, never the announced size.
            self.buf.extend_from_slice(data);
        }
        Ok(())
    }

    fn check_size(&self, total: usize) -> Result<usize, Error> {
        if total > self.max_packet_size {
            Err(Error::PacketTooLarge {
                size: total,
                max: self.max_packet_size,
            })
        } else {
            Ok(total)
        }
    }
}

/// Appends the encoding of `packet` to `out`.
pub fn encode<P: Encodable>(packet: &P, out: &mut Vec<u8>) {
    out.reserve(packet.encoded_length() as usize);
    // Writing into a Vec cannot fail.
    let _ = packet.encode(out);
}

#[cfg(test)]
mod tests {
    use super::*;
    use mqtt::packet::{PingrespPacket, PublishPacket, QoSWithPacketIdentifier, SubackPacket};
    use mqtt::TopicName;

    fn publish(topic: &str, payload: &[u8]) -> Vec<u8> {
        let p = PublishPacket::new(
            TopicName::new(topic).unwrap(),
            QoSWithPacketIdentifier::Level1(7),
            payload,
        );
        let mut out = Vec::new();
        encode(&p, &mut out);
        out
    }

    fn stream() -> Vec<u8> {
        let mut s = publish("a/b", b"hello");
        encode(&PingrespPacket::new(), &mut s);
        s.extend(publish("c", &[0u8; 300]));
        encode(
            &SubackPacket::new(3, vec![mqtt::packet::suback::SubscribeReturnCode::Failure]),
            &mut s,
        );
        s
    }

    fn collect(framer: &mut Framer, chunks: &[&[u8]]) -> Result<Vec<VariablePacket>, Error> {
        let mut got = Vec::new();
        for c in chunks {
            framer.feed(c, |p| {
                got.push(p);
                Ok(())
            })?;
        }
        Ok(got)
    }

    #[test]
    fn merged_packets_in_one_chunk() {
        let s = stream();
        let got = collect(&mut Framer::new(1 << 20), &[&s]).unwrap();
        assert_eq!(got.len(), 4);
    }

    #[test]
    fn split_at_every_byte_gives_the_same_packets() {
        let s = stream();
        let whole = collect(&mut Framer::new(1 << 20), &[&s]).unwrap();
        let bytes: Vec<&[u8]> = s.chunks(1).collect();
        let mut f = Framer::new(1 << 20);
        let split = collect(&mut f, &bytes).unwrap();
        assert_eq!(whole, split);
        assert_eq!(f.buffered(), 0);
    }

    #[test]
    fn every_split_point_gives_the_same_packets() {
        let s = stream();
        let whole = collect(&mut Framer::new(1 << 20), &[&s]).unwrap();
        for i in 0..s.len() {
            let got = collect(&mut Framer::new(1 << 20), &[&s[..i], &s[i..]]).unwrap();
            assert_eq!(got, whole, "split at {i}");
        }
    }

    #[test]
    fn oversized_packet_is_refused_before_buffering() {
        // PUBLISH announcing 268,435,455 bytes: only the header arrives.
        let mut f = Framer::new(1024);
        let err = f
            .feed(&[0x30, 0xff, 0xff, 0xff, 0x7f], |_| Ok(()))
            .unwrap_err();
        assert!(
            matches!(err, Error::PacketTooLarge { size, max: 1024 } if size > 1024),
            "{err}"
        );
        assert!(f.buffered() <= 5);
    }

    #[test]
    fn five_byte_remaining_length_is_malformed() {
        let mut f = Framer::new(usize::MAX);
        let err = f
            .feed(&[0x30, 0x80, 0x80, 0x80, 0x80, 0x01], |_| Ok(()))
            .unwrap_err();
        assert!(matches!(err, Error::Protocol(_)));
    }

    #[test]
    fn short_publish_payload_is_not_truncated_silently() {
        // Topic length says 10 bytes, but the remaining length holds only 4: malformed.
        let mut f = Framer::new(1024);
        let err = f
            .feed(&[0x30, 0x04, 0x00, 0x0a, b'a', b'b'], |_| Ok(()))
            .unwrap_err();
        assert!(matches!(err, Error::Protocol(_)), "{err}");
    }

    #[test]
    fn garbage_gives_an_error_not_a_panic() {
        for input in [
            &[0x00u8, 0x00][..],
            &[0xf0, 0x00],
            &[0x20, 0x01, 0x00],
            &[0x62, 0x00],
            &[0xff; 16],
        ] {
            let mut f = Framer::new(1024);
            let _ = f.feed(input, |_| Ok(()));
        }
    }
}

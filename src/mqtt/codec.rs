//! Framing of a byte stream into MQTT packets, each decoded by [`crate::mqtt::packet`].
//!
//! WebSocket frames and MQTT packets are independent: aedes splits one packet over several
//! frames, NATS and rumqttd pack several packets into one frame [MQTT-6.0.0-2]. The framer
//! works on the byte stream. It reads the fixed header and the remaining length itself and
//! refuses a packet over the limit *before* buffering it, then hands `mqtt-protocol` exactly
//! one complete frame (its decoder is only safe on that), and checks that the packet consumed
//! the whole frame and re-encodes to the same length (the crate silently truncates a short
//! PUBLISH payload and ignores trailing bytes).
//!
//! PUBLISH, the packet that carries the data, is parsed in house
//! ([`PublishFrame`](crate::mqtt::packet::PublishFrame)): mqtt-protocol copies every topic and
//! payload into fresh allocations, while a PUBLISH kept as a slice of the WebSocket frame it
//! arrived in costs no copy at all (the benchmark's decoder row and callgrind showed those
//! copies as the largest cost per message).

use bytes::Bytes;

use crate::error::Error;
use crate::mqtt::packet::{self, parse_fixed_header, Inbound, MqttVersion, PublishFrame, Skip};

/// Decodes one complete packet held in `frame`, whose fixed header is `header` bytes long.
fn decode_inbound(frame: Bytes, header: usize, version: MqttVersion) -> Result<Inbound, Error> {
    if frame[..] == [0xd0, 0] {
        // PINGRESP, an idle connection's only packet, is the same two bytes in both
        // versions: it skips the general decoders (whose frames would deepen an idle I/O
        // thread's touched stack by a page, see `Session::handle_inbound`).
        return Ok(Inbound::Control(packet::Control::Pingresp));
    }
    match (frame[0] >> 4, version) {
        // Properties that would take more memory than allowed: skipped like a packet over
        // the limit (acknowledged, counted, reported).
        (3, _) => PublishFrame::parse_or_skip(frame, header, version),
        (_, MqttVersion::V3_1_1) => packet::decode_frame(&frame).map(Inbound::Other),
        (_, MqttVersion::V5) => packet::decode_control(&frame, header).map(Inbound::Control),
    }
}

/// Decodes exactly one complete MQTT 3.1.1 packet, any type.
// Used by the fuzz targets, the benchmark and the tests only.
#[cfg_attr(not(feature = "__internals"), allow(dead_code))]
pub fn decode_packet(frame: &[u8]) -> Result<Inbound, Error> {
    decode_packet_as(frame, MqttVersion::V3_1_1)
}

/// Decodes exactly one complete packet of `version`, any type.
// Used by the fuzz targets, the benchmark and the tests only.
#[cfg_attr(not(feature = "__internals"), allow(dead_code))]
pub fn decode_packet_as(frame: &[u8], version: MqttVersion) -> Result<Inbound, Error> {
    match parse_fixed_header(frame)? {
        Some((header, remaining)) if header + remaining == frame.len() => {
            decode_inbound(Bytes::copy_from_slice(frame), header, version)
        }
        _ => Err(Error::Protocol(format!(
            "not one complete packet ({} bytes)",
            frame.len()
        ))),
    }
}

/// Whether a packet of `packet` bytes may stay a slice of a read buffer of `backing` bytes: a
/// message must not keep a much larger buffer alive in a subscription's buffer, whose bounds
/// count the message's own size (a 64-byte message kept as a slice of an 8 KiB read would
/// hold 128 times what it is charged).
fn keep_as_slice(packet: usize, backing: usize) -> bool {
    packet.saturating_mul(4) >= backing
}

/// Splits a byte stream into packets, holding at most one partial packet.
#[derive(Debug)]
pub struct Framer {
    buf: Vec<u8>,
    max_packet_size: usize,
    version: MqttVersion,
    /// A PUBLISH over `max_packet_size` streaming by.
    skip: Option<Skip>,
}

impl Framer {
    /// An MQTT 3.1.1 framer refusing packets whose total size exceeds `max_packet_size`
    /// bytes.
    pub fn new(max_packet_size: usize) -> Framer {
        Framer::with_version(max_packet_size, MqttVersion::V3_1_1)
    }

    /// A framer of packets of `version`.
    pub fn with_version(max_packet_size: usize, version: MqttVersion) -> Framer {
        Framer {
            buf: Vec::new(),
            max_packet_size,
            version,
            skip: None,
        }
    }

    /// Forgets any partial packet (after a reconnect).
    pub fn reset(&mut self) {
        self.skip = None;
        self.buf.clear();
        if self.buf.capacity() > 64 * 1024 {
            self.buf = Vec::new();
        }
    }

    /// Bytes of a partial packet held back.
    // Used by the fuzz targets, the benchmark and the tests only.
    #[cfg_attr(not(feature = "__internals"), allow(dead_code))]
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Feeds bytes; calls `on_packet` for every complete packet, in order. After an error the
    /// stream is unusable and the connection must be closed.
    // Used by the fuzz targets, the benchmark and the tests only.
    #[cfg_attr(not(feature = "__internals"), allow(dead_code))]
    pub fn feed<F>(&mut self, data: &[u8], on_packet: F) -> Result<(), Error>
    where
        F: FnMut(Inbound) -> Result<(), Error>,
    {
        self.feed_bytes(Bytes::copy_from_slice(data), on_packet)
    }

    /// Like [`Framer::feed`], for bytes that own their buffer: complete packets inside are
    /// sliced out of them where that keeps no much larger buffer alive.
    // Used by the fuzz targets, the benchmark and the tests only.
    #[cfg_attr(not(feature = "__internals"), allow(dead_code))]
    pub fn feed_bytes<F>(&mut self, data: Bytes, on_packet: F) -> Result<(), Error>
    where
        F: FnMut(Inbound) -> Result<(), Error>,
    {
        let backing = data.len();
        self.feed_shared(data, backing, on_packet)
    }

    /// Like [`Framer::feed_bytes`], for bytes that are a slice of a read buffer of `backing`
    /// bytes: a packet sliced out of them keeps that whole buffer alive for as long as the
    /// application holds the message, so only a packet of at least a quarter of it is
    /// sliced; a smaller one is copied (see [`keep_as_slice`]).
    pub fn feed_shared<F>(
        &mut self,
        data: Bytes,
        backing: usize,
        mut on_packet: F,
    ) -> Result<(), Error>
    where
        F: FnMut(Inbound) -> Result<(), Error>,
    {
        let mut pos = 0;
        loop {
            // A PUBLISH over the limit streams by: its bytes are counted and dropped, never
            // buffered, and what it was is handed on once its last byte has passed.
            if let Some(skip) = self.skip.as_mut() {
                pos += skip.take(&data[pos..]);
                if !skip.is_done() {
                    return Ok(());
                }
                let skipped = self.skip.take().expect("present").finish()?;
                on_packet(Inbound::Oversized(skipped))?;
                continue;
            }
            // Complete the partial packet first.
            if !self.buf.is_empty() {
                match parse_fixed_header(&self.buf)? {
                    Some((header, remaining)) => {
                        let total = header + remaining;
                        if total > self.max_packet_size {
                            self.start_skip(self.buf[0], header, total)?;
                            let start = std::mem::take(&mut self.buf);
                            self.skip.as_mut().expect("started").take(&start);
                            continue;
                        }
                        if self.buf.len() == total {
                            // Grown by doubling as it arrived: up to twice its size, which
                            // the message would keep while held (a shrink of a large
                            // allocation is a remap, not a copy).
                            if self.buf.capacity() > total + total / 4 {
                                self.buf.shrink_to_fit();
                            }
                            let frame = Bytes::from(std::mem::take(&mut self.buf));
                            on_packet(decode_inbound(frame, header, self.version)?)?;
                            continue;
                        }
                        if pos == data.len() {
                            return Ok(());
                        }
                        let take = (total - self.buf.len()).min(data.len() - pos);
                        self.buf.extend_from_slice(&data[pos..pos + take]);
                        pos += take;
                    }
                    None => {
                        // Header incomplete: take one byte at a time (at most 4 more).
                        let Some(&byte) = data.get(pos) else {
                            return Ok(());
                        };
                        self.buf.push(byte);
                        pos += 1;
                    }
                }
                continue;
            }
            // Then the packets inside the input, without copying.
            while pos < data.len() {
                match parse_fixed_header(&data[pos..])? {
                    Some((header, remaining)) => {
                        let total = header + remaining;
                        if total > self.max_packet_size {
                            self.start_skip(data[pos], header, total)?;
                            break;
                        }
                        if data.len() - pos < total {
                            break;
                        }
                        let frame = if keep_as_slice(total, backing) {
                            data.slice(pos..pos + total)
                        } else {
                            Bytes::copy_from_slice(&data[pos..pos + total])
                        };
                        pos += total;
                        on_packet(decode_inbound(frame, header, self.version)?)?;
                    }
                    None => break,
                }
            }
            if self.skip.is_some() {
                continue;
            }
            if pos < data.len() {
                // Only the size of what actually arrived is reserved, never the announced
                // size.
                self.buf.extend_from_slice(&data[pos..]);
            }
            return Ok(());
        }
    }

    /// A packet of `total` bytes over the limit begins with `first`: a PUBLISH is skipped
    /// (see [`Inbound::Oversized`]); any other packet that large is an error.
    fn start_skip(&mut self, first: u8, header: usize, total: usize) -> Result<(), Error> {
        if first >> 4 != 3 {
            return Err(Error::PacketTooLarge {
                size: total,
                max: self.max_packet_size,
            });
        }
        self.skip = Some(Skip::new(header, total));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mqtt::packet::{encode, Outgoing, Oversized};
    use crate::mqtt::QoS;
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

    fn collect(framer: &mut Framer, chunks: &[&[u8]]) -> Result<Vec<Inbound>, Error> {
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
    fn pingresp_is_one_control_packet_in_both_versions() {
        for v in [MqttVersion::V3_1_1, MqttVersion::V5] {
            assert_eq!(
                decode_packet_as(&[0xd0, 0], v).unwrap(),
                Inbound::Control(packet::Control::Pingresp)
            );
            // Its type with flags set, or with a body, still meets the general decoders.
            assert!(decode_packet_as(&[0xd1, 0], v).is_err(), "{v:?}");
            assert!(decode_packet_as(&[0xd0, 1, 0], v).is_err(), "{v:?}");
        }
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
        // A SUBACK announcing 268,435,455 bytes: only the header arrives.
        let mut f = Framer::new(1024);
        let err = f
            .feed(&[0x90, 0xff, 0xff, 0xff, 0x7f], |_| Ok(()))
            .unwrap_err();
        assert!(
            matches!(err, Error::PacketTooLarge { size, max: 1024 } if size > 1024),
            "{err}"
        );
        assert!(f.buffered() <= 5);
    }

    /// A QoS 1 PUBLISH of `payload` bytes on `topic`, packet id 9.
    fn big_publish(topic: &str, payload: usize) -> Vec<u8> {
        let mut out = Vec::new();
        Outgoing {
            topic: topic.into(),
            payload: vec![0x5a; payload],
            qos: QoS::AtLeastOnce,
            retain: false,
            props: Vec::new(),
        }
        .encode(9, false, &mut out);
        out
    }

    #[test]
    fn an_oversized_publish_streams_by_and_what_follows_arrives() {
        let mut stream = big_publish("big/one", 100_000);
        let size = stream.len();
        stream.extend(big_publish("small", 3));
        let expected = Oversized {
            topic: "big/one".into(),
            qos: QoS::AtLeastOnce,
            packet_id: Some(9),
            size,
        };
        // Whole, split anywhere around its start and end, and byte by byte: the same, and
        // never more than a partial header held.
        let mut splits: Vec<usize> = (0..40).chain(size - 5..size + 5).collect();
        splits.push(stream.len());
        for at in splits {
            let mut f = Framer::new(1024);
            let got = collect(&mut f, &[&stream[..at], &stream[at..]]).unwrap();
            assert_eq!(got.len(), 2, "split at {at}");
            assert_eq!(
                got[0],
                Inbound::Oversized(expected.clone()),
                "split at {at}"
            );
            assert!(matches!(&got[1], Inbound::Publish(p) if p.topic() == "small"));
            assert!(f.buffered() <= 5);
        }
        let mut f = Framer::new(1024);
        let mut got = Vec::new();
        for b in &stream {
            f.feed(std::slice::from_ref(b), |p| {
                got.push(p);
                Ok(())
            })
            .unwrap();
            assert!(f.buffered() <= 1024);
        }
        assert_eq!(got[0], Inbound::Oversized(expected));
        assert_eq!(got.len(), 2);
    }

    /// A v5 packet of `first` byte: `head` bytes, then a property block of `n` user
    /// properties `k`/`v`, then `tail`.
    fn v5_with_user_properties(
        first: u8,
        head: &[u8],
        n: usize,
        k: &str,
        v: &str,
        tail: &[u8],
    ) -> Vec<u8> {
        let mut props = Vec::new();
        for _ in 0..n {
            props.push(0x26);
            props.extend_from_slice(&(k.len() as u16).to_be_bytes());
            props.extend_from_slice(k.as_bytes());
            props.extend_from_slice(&(v.len() as u16).to_be_bytes());
            props.extend_from_slice(v.as_bytes());
        }
        let mut body = head.to_vec();
        packet::put_varint(props.len(), &mut body);
        body.extend(props);
        body.extend_from_slice(tail);
        let mut p = vec![first];
        packet::put_varint(body.len(), &mut p);
        p.extend(body);
        p
    }

    /// Found by the hostile review: a PUBLISH with a hundred short user properties is an
    /// ordinary message (it was skipped), while a control packet of millions of empty ones
    /// is refused before its properties are all read (a PUBACK took ~13× its size).
    #[test]
    fn property_budgets_pass_ordinary_packets_and_stop_floods() {
        let publish =
            v5_with_user_properties(0x30, &[0, 3, b'a', b'/', b'b'], 100, "k0", "v", b"{}");
        let got = decode_packet_as(&publish, MqttVersion::V5).unwrap();
        assert!(matches!(got, Inbound::Publish(_)), "{got:?}");
        let puback = v5_with_user_properties(0x40, &[0, 1, 0], 200_000, "", "", b"");
        let err = decode_packet_as(&puback, MqttVersion::V5).unwrap_err();
        assert!(matches!(err, Error::PacketTooLarge { .. }), "{err}");
    }

    #[test]
    fn an_oversized_publish_is_held_to_the_rules() {
        for (bytes, why) in [
            // QoS 3.
            (vec![0x36, 0x80, 0x08, 0, 1, b'a', 0, 1], "QoS 3"),
            // Packet id 0.
            (vec![0x32, 0x80, 0x08, 0, 1, b'a', 0, 0], "identifier 0"),
            // Topic longer than the packet.
            (vec![0x30, 0x80, 0x08, 0xff, 0xff, b'a'], "shorter"),
            // Not UTF-8.
            (vec![0x32, 0x80, 0x08, 0, 1, 0xff, 0, 1], "UTF-8"),
        ] {
            let mut f = Framer::new(64);
            let mut bytes = bytes;
            // Pad to the announced 1024 bytes (0x80 0x08).
            bytes.resize(3 + 1024, 0);
            let err = f.feed(&bytes, |_| Ok(())).unwrap_err();
            assert!(
                matches!(&err, Error::Protocol(m) if m.contains(why)),
                "{why}: {err}"
            );
        }
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
    fn publish_frames_are_checked_and_read_in_place() {
        let bytes = publish("a/b", b"hello");
        let got = collect(&mut Framer::new(1024), &[&bytes]).unwrap();
        let Inbound::Publish(p) = &got[0] else {
            panic!("{got:?}")
        };
        assert_eq!(
            (p.topic(), p.payload(), p.qos(), p.packet_id()),
            ("a/b", &b"hello"[..], QoS::AtLeastOnce, Some(7))
        );
        assert!(!p.retain() && !p.dup());
        // QoS 3, a wildcard topic, invalid UTF-8: malformed.
        for bad in [
            vec![0x36, 0x05, 0x00, 0x01, b'a', 0x00, 0x01],
            vec![0x30, 0x03, 0x00, 0x01, b'#'],
            vec![0x30, 0x03, 0x00, 0x01, 0xff],
            vec![0x32, 0x03, 0x00, 0x01, b'a'],
        ] {
            assert!(
                matches!(
                    collect(&mut Framer::new(1024), &[&bad]),
                    Err(Error::Protocol(_))
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn outgoing_publish_encodes_as_mqtt_protocol_does_and_parses_back() {
        for (qos, mq, size) in [
            (QoS::AtMostOnce, QoSWithPacketIdentifier::Level0, 0usize),
            (QoS::AtLeastOnce, QoSWithPacketIdentifier::Level1(513), 127),
            (
                QoS::ExactlyOnce,
                QoSWithPacketIdentifier::Level2(513),
                20_000,
            ),
        ] {
            let o = Outgoing {
                topic: "a/b".into(),
                payload: vec![7; size],
                qos,
                retain: true,
                props: Vec::new(),
            };
            let mut ours = Vec::new();
            o.encode(513, false, &mut ours);
            let mut theirs = Vec::new();
            let mut p = PublishPacket::new(TopicName::new("a/b").unwrap(), mq, vec![7; size]);
            p.set_retain(true);
            encode(&p, &mut theirs);
            assert_eq!(ours, theirs, "{qos:?}");
            let mut dup = Vec::new();
            o.encode(513, true, &mut dup);
            let Inbound::Publish(f) = decode_packet(&dup).unwrap() else {
                panic!()
            };
            assert_eq!(
                (f.dup(), f.retain(), f.qos(), f.payload().len()),
                (qos != QoS::AtMostOnce, true, qos, size)
            );
        }
    }

    #[test]
    fn a_small_packet_does_not_keep_a_large_frame_alive() {
        assert!(keep_as_slice(2048, 8192));
        assert!(keep_as_slice(20_000, 64 * 1024));
        assert!(!keep_as_slice(100, 8192));
        assert!(!keep_as_slice(100, 64 * 1024));
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

    #[test]
    fn publishes_against_the_rules_and_non_minimal_lengths_are_refused() {
        let publish = |flags: u8, topic: &[u8], id: Option<u16>| {
            let mut body = (topic.len() as u16).to_be_bytes().to_vec();
            body.extend_from_slice(topic);
            if let Some(id) = id {
                body.extend_from_slice(&id.to_be_bytes());
            }
            body.extend_from_slice(b"payload");
            let mut p = vec![0x30 | flags, body.len() as u8];
            p.extend(body);
            p
        };
        let refused = |bytes: &[u8], why: &str| {
            let e = Framer::new(1 << 20).feed(bytes, |_| Ok(())).unwrap_err();
            assert!(e.to_string().contains(why), "{e}");
        };
        assert!(Framer::new(1 << 20)
            .feed(&publish(0x02, b"t", Some(1)), |_| Ok(()))
            .is_ok());
        refused(&publish(0x02, b"t", Some(0)), "packet identifier 0");
        refused(&publish(0x04, b"t", Some(0)), "packet identifier 0");
        refused(&publish(0x00, b"a\0b", None), "U+0000");
        refused(&publish(0x08, b"t", None), "DUP set on QoS 0");
        // The same value in two bytes: refused for PUBLISH and PINGRESP alike.
        refused(&[0x30, 0x83, 0x00, 0, 1, b't', 1], "not minimally encoded");
        refused(&[0xd0, 0x80, 0x00], "not minimally encoded");
    }
}

//! The server's WebSocket frames, decoded as they stream in [RFC 6455 §5].
//!
//! Sans-IO: [`Decoder::next`] takes bytes from a buffer the caller fills and says what they
//! were. A data frame's payload is handed on in pieces as it arrives — never held whole — so a
//! frame of any size costs at most the read buffer here; the MQTT framer above decides what
//! a packet may cost (and skips an oversized PUBLISH as it streams by). tungstenite reads a
//! frame whole before returning it, so a frame larger than its limit could only end the
//! connection, and a persistent session got the same message again on every reconnect.
//!
//! What a server may send a client and this decoder accepts: unmasked binary frames,
//! fragmented or not, continuation frames, and pings, pongs and a close between them. Text
//! frames, masked frames, reserved bits (no extension is ever negotiated), reserved opcodes
//! and control frames that are fragmented or longer than 125 bytes are errors.

use bytes::{Buf, Bytes, BytesMut};

/// What [`Decoder::next`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    /// Payload bytes of a binary message: a whole frame, or a piece of a longer one.
    Data(Bytes),
    /// A ping, to be answered with a pong carrying the same bytes.
    Ping(Bytes),
    /// The server's close frame: its status code and reason, when it gave them.
    Close(Option<(u16, String)>),
}

/// Where in the frame stream the decoder is.
#[derive(Debug, Default)]
pub struct Decoder {
    /// Payload bytes of the current data frame still to come; 0 between frames.
    left: u64,
    /// A binary message was started without FIN: continuation frames follow.
    in_message: bool,
}

/// Data-frame payload handed on in one piece at most: a frame up to this size is kept
/// whole (so that a packet it holds is sliced, not copied); a larger one streams in pieces.
pub const MAX_PIECE: usize = 64 * 1024;

impl Decoder {
    /// Payload bytes of the data frame under way that are not in the buffer yet: how much
    /// room the next read should have (at most [`MAX_PIECE`]).
    pub fn wanted(&self, buffered: usize) -> usize {
        (self.left.min(MAX_PIECE as u64) as usize).saturating_sub(buffered)
    }

    /// The payload of the data frame under way that is in `buf` now, however short: what
    /// arrived goes on when no more is coming for now (MQTT inside a long frame must not
    /// wait for the frame to end).
    pub fn partial(&mut self, buf: &mut BytesMut) -> Option<Bytes> {
        if self.left == 0 || buf.is_empty() {
            return None;
        }
        let n = (buf.len() as u64).min(self.left) as usize;
        self.left -= n as u64;
        Some(buf.split_to(n).freeze())
    }

    /// Takes the next frame, or the next piece of one, from the front of `buf`. `Ok(None)`:
    /// more bytes are needed (or a pong or an empty data frame was consumed: call again).
    pub fn next(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, String> {
        loop {
            if self.left > 0 {
                // Inside a data frame: hand on what is there once the frame is complete or
                // a piece is full; less waits for the next read (the framer could not use it
                // sooner, and one piece sliced beats two copied).
                let want = self.left.min(MAX_PIECE as u64) as usize;
                if buf.len() < want {
                    return Ok(None);
                }
                self.left -= want as u64;
                return Ok(Some(Frame::Data(buf.split_to(want).freeze())));
            }
            let Some((head, len)) = header(buf)? else {
                return Ok(None);
            };
            let fin = buf[0] & 0x80 != 0;
            let opcode = buf[0] & 0x0f;
            match opcode {
                0 | 2 => {
                    if opcode == 0 && !self.in_message {
                        return Err("a continuation frame with no message to continue".into());
                    }
                    if opcode == 2 && self.in_message {
                        return Err("a new binary message before the last one ended".into());
                    }
                    self.in_message = !fin;
                    buf.advance(head);
                    self.left = len;
                    // An empty data frame: nothing to hand on.
                    continue;
                }
                1 => return Err("a text WebSocket frame (MQTT uses binary frames)".into()),
                8..=10 => {
                    if !fin || len > 125 {
                        return Err(format!(
                            "a control frame (opcode {opcode}) that is fragmented or longer \
                             than 125 bytes"
                        ));
                    }
                    let len = len as usize;
                    if buf.len() < head + len {
                        return Ok(None);
                    }
                    buf.advance(head);
                    let payload = buf.split_to(len).freeze();
                    match opcode {
                        8 => return close(&payload).map(Some),
                        9 => return Ok(Some(Frame::Ping(payload))),
                        // A pong: nothing to do (we send no pings).
                        _ => continue,
                    }
                }
                other => return Err(format!("a frame with reserved opcode {other}")),
            }
        }
    }
}

/// Parses the frame header at the front of `buf` without consuming it: `(header length,
/// payload length)`, or `None` when it is not all there.
fn header(buf: &[u8]) -> Result<Option<(usize, u64)>, String> {
    let (Some(&b0), Some(&b1)) = (buf.first(), buf.get(1)) else {
        return Ok(None);
    };
    if b0 & 0x70 != 0 {
        return Err("a frame with reserved bits set (no extension was negotiated)".into());
    }
    if b1 & 0x80 != 0 {
        return Err("a masked frame from the server [RFC 6455 §5.1]".into());
    }
    let (head, len) = match b1 & 0x7f {
        126 => match buf.get(2..4) {
            Some(b) => (4, u64::from(u16::from_be_bytes([b[0], b[1]]))),
            None => return Ok(None),
        },
        127 => match buf.get(2..10) {
            Some(b) => {
                let len = u64::from_be_bytes(b.try_into().expect("8 bytes"));
                if len >> 63 != 0 {
                    return Err("a frame length with its most significant bit set".into());
                }
                (10, len)
            }
            None => return Ok(None),
        },
        n => (2, u64::from(n)),
    };
    Ok(Some((head, len)))
}

/// A close frame's payload: empty, or a status code and a UTF-8 reason [RFC 6455 §5.5.1].
fn close(payload: &[u8]) -> Result<Frame, String> {
    match payload {
        [] => Ok(Frame::Close(None)),
        [_] => Err("a close frame with a one-byte body".into()),
        [a, b, reason @ ..] => Ok(Frame::Close(Some((
            u16::from_be_bytes([*a, *b]),
            String::from_utf8_lossy(reason).into_owned(),
        )))),
    }
}

/// Whether a server may send `code` in a close frame [RFC 6455 §7.4]: 1000–1003, 1007–1014
/// and the registered and private ranges 3000–4999.
pub fn valid_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(first: u8, payload: &[u8]) -> Vec<u8> {
        let mut v = vec![first];
        match payload.len() {
            n if n < 126 => v.push(n as u8),
            n if n <= 0xffff => {
                v.push(126);
                v.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                v.push(127);
                v.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        v.extend_from_slice(payload);
        v
    }

    /// Feeds `input` one byte at a time and collects everything decoded.
    fn decode_dribbled(input: &[u8]) -> Result<Vec<Frame>, String> {
        let mut d = Decoder::default();
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for &b in input {
            buf.extend_from_slice(&[b]);
            while let Some(f) = d.next(&mut buf)? {
                out.push(f);
            }
        }
        Ok(out)
    }

    fn data(frames: &[Frame]) -> Vec<u8> {
        frames
            .iter()
            .filter_map(|f| match f {
                Frame::Data(b) => Some(b.to_vec()),
                _ => None,
            })
            .flatten()
            .collect()
    }

    #[test]
    fn binary_frames_of_every_length_class_arrive_whole_or_in_pieces() {
        for len in [0usize, 1, 125, 126, 65_535, 65_536, 200_000] {
            let payload: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
            let bytes = frame(0x82, &payload);
            // All at once.
            let mut d = Decoder::default();
            let mut buf = BytesMut::from(&bytes[..]);
            let mut got = Vec::new();
            while let Some(f) = d.next(&mut buf).unwrap() {
                let Frame::Data(b) = f else { panic!() };
                assert!(b.len() <= MAX_PIECE, "pieces are bounded");
                got.extend_from_slice(&b);
            }
            assert_eq!(got, payload, "len {len}");
            assert!(buf.is_empty());
            if len <= 70_000 {
                assert_eq!(data(&decode_dribbled(&bytes).unwrap()), payload);
            }
        }
    }

    #[test]
    fn fragments_pings_and_pongs_interleave() {
        let mut input = frame(0x02, b"ab"); // binary, not FIN
        input.extend(frame(0x89, b"p1")); // ping between fragments
        input.extend(frame(0x8a, b"")); // pong: ignored
        input.extend(frame(0x00, b"cd")); // continuation, not FIN
        input.extend(frame(0x80, b"ef")); // continuation, FIN
        input.extend(frame(0x82, b"gh"));
        input.extend(frame(0x88, &[0x03, 0xe8, b'b', b'y', b'e']));
        let frames = decode_dribbled(&input).unwrap();
        assert_eq!(data(&frames), b"abcdefgh");
        assert!(frames.contains(&Frame::Ping(Bytes::from_static(b"p1"))));
        assert_eq!(
            frames.last(),
            Some(&Frame::Close(Some((1000, "bye".into()))))
        );
    }

    #[test]
    fn what_a_server_may_not_send_is_an_error() {
        for (input, what) in [
            (frame(0x81, b"x"), "text"),
            (frame(0x80, b"x"), "continuation"),
            (frame(0xc2, b"x"), "reserved bits"),
            (frame(0x83, b"x"), "reserved opcode"),
            (frame(0x09, b"x"), "fragmented"),
            (frame(0x89, &[0; 126]), "longer than 125"),
            (frame(0x88, &[3]), "one-byte"),
            (vec![0x82, 0x81, 1, 2, 3, 4, 0], "masked"),
            (
                vec![0x82, 127, 0x80, 0, 0, 0, 0, 0, 0, 1],
                "most significant",
            ),
            (
                [frame(0x02, b"a"), frame(0x82, b"b")].concat(),
                "new binary",
            ),
        ] {
            let e = decode_dribbled(&input).unwrap_err();
            assert!(e.contains(what), "{what}: {e}");
        }
    }

    #[test]
    fn close_codes_are_judged_as_the_rfc_says() {
        assert!(valid_close_code(1000) && valid_close_code(1011) && valid_close_code(4000));
        assert!(!valid_close_code(999) && !valid_close_code(1005) && !valid_close_code(1006));
        assert!(!valid_close_code(1015) && !valid_close_code(2000) && !valid_close_code(5000));
    }

    #[test]
    fn wanted_asks_for_the_rest_of_the_frame_up_to_a_piece() {
        let mut d = Decoder::default();
        let mut buf = BytesMut::from(&frame(0x82, &[1; 5000])[..10]);
        assert_eq!(d.next(&mut buf).unwrap(), None);
        assert_eq!(d.wanted(buf.len()), 5000 - 6);
        let mut buf = BytesMut::from(&frame(0x82, &vec![1; 1 << 20])[..20]);
        let mut d = Decoder::default();
        assert_eq!(d.next(&mut buf).unwrap(), None);
        assert_eq!(d.wanted(buf.len()), MAX_PIECE - 10);
    }
}

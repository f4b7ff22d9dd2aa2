//! The WebSocket frame decoder (server to client): arbitrary bytes never panic; fed whole or
//! in arbitrary pieces it finds the same frames; a piece of payload is never larger than
//! `MAX_PIECE`; and the binary data it hands on agrees with what tungstenite (an independent
//! implementation, client role) reads from the same bytes, up to where either stops.
#![no_main]

use std::io::{self, Read, Write};

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use mqtt_pubsub::internals::websocket_reader::{Decoder, Frame, MAX_PIECE};

/// Everything decoded, and whether decoding stopped at an error.
fn decode(data: &[u8], cuts: &[usize]) -> (Vec<u8>, Vec<Frame>, bool) {
    let mut d = Decoder::default();
    let mut buf = BytesMut::new();
    let (mut bytes, mut control) = (Vec::new(), Vec::new());
    let mut from = 0;
    for &to in cuts.iter().chain(std::iter::once(&data.len())) {
        buf.extend_from_slice(&data[from..to]);
        from = to;
        loop {
            match d.next(&mut buf) {
                Ok(Some(Frame::Data(b))) => {
                    assert!(!b.is_empty() && b.len() <= MAX_PIECE);
                    bytes.extend_from_slice(&b);
                }
                Ok(Some(f)) => control.push(f),
                Ok(None) => break,
                Err(_) => return (bytes, control, true),
            }
        }
    }
    (bytes, control, false)
}

/// The bytes as a socket: reads from `input`, writes (tungstenite's pongs) vanish.
struct Wire<'a>(&'a [u8]);

impl Read for Wire<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}

impl Write for Wire<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn tungstenite_binary(data: &[u8]) -> Vec<u8> {
    let config = tungstenite::protocol::WebSocketConfig::default()
        .max_frame_size(Some(1 << 20))
        .max_message_size(Some(1 << 20));
    let mut ws = tungstenite::WebSocket::from_raw_socket(
        Wire(data),
        tungstenite::protocol::Role::Client,
        Some(config),
    );
    let mut out = Vec::new();
    while let Ok(m) = ws.read() {
        match m {
            tungstenite::Message::Binary(b) => out.extend_from_slice(&b),
            // We stop at a text frame; so does the comparison.
            tungstenite::Message::Text(_) | tungstenite::Message::Close(_) => break,
            _ => {}
        }
    }
    out
}

fuzz_target!(|input: &[u8]| {
    let Some((&seed, data)) = input.split_first() else {
        return;
    };
    let whole = decode(data, &[]);
    // Cut points from the seed: every `step` bytes.
    let step = usize::from(seed).max(1);
    let cuts: Vec<usize> = (step..data.len()).step_by(step).collect();
    let pieces = decode(data, &cuts);
    // Data pieces may be cut differently; the bytes, control frames and outcome are the same.
    assert_eq!(whole, pieces);
    let theirs = tungstenite_binary(data);
    let ours = &whole.0;
    assert!(
        ours.starts_with(&theirs) || theirs.starts_with(ours),
        "ours {} bytes, tungstenite {} bytes, disagree",
        ours.len(),
        theirs.len()
    );
});

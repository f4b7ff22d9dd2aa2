//! The byte stream under every connection (TCP or TLS), and what is written on it: the
//! session's output as one WebSocket client frame (`ws://`, `wss://`) or as it is (`mqtt://`,
//! `mqtts://`).
//!
//! Outgoing MQTT data is written by [`Stream::send_binary`], which takes the session's output
//! buffer by swapping it, masks it in place and writes header and payload with one vectored
//! write. Control frames (a pong, our close) wait in a small queue until the data frame under
//! way is out, so that the two never interleave; a new data frame may only start when both
//! are out, which is what a [`Ready`] proves ([`flushed`] is the only way to get one).

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::Instant;

use rustls::{ClientConnection, StreamOwned};

use crate::net::tcp::Tcp;

/// TCP or TLS over TCP.
#[derive(Debug)]
enum Transport {
    /// `ws://`
    Plain(Tcp),
    /// `wss://`
    Tls(Box<StreamOwned<ClientConnection, Tcp>>),
}

impl Transport {
    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        match self {
            Transport::Plain(s) => s.write_vectored(bufs),
            Transport::Tls(s) => s.write_vectored(bufs),
        }
    }
}

/// TCP or TLS, plus the frames of ours being written: one binary frame and the control frames
/// queued behind it.
///
/// Outgoing MQTT data is not copied into a second buffer: [`Stream::send_binary`] takes the
/// session's output buffer by swapping it, masks it in place and writes header and payload
/// with one vectored write.
#[derive(Debug)]
pub struct Stream {
    transport: Transport,
    header: [u8; MAX_HEADER],
    header_len: usize,
    body: Vec<u8>,
    /// Bytes of header + body written so far.
    written: usize,
    /// Mask keys are a keyed hash (SipHash, random key) of a frame counter: unpredictable, as
    /// RFC 6455 §5.3 asks, at the cost of one hash per frame.
    mask_keys: RandomState,
    frames: u64,
    /// `false` for a raw MQTT stream (`mqtt://`, `mqtts://`): the batch goes out as it is,
    /// without a WebSocket header or mask.
    websocket: bool,
    /// In the polled (non-blocking) phase: short plain-TCP reads mark the socket drained.
    polled: bool,
    /// A plain TCP read came back short of the room it was given: the socket had nothing
    /// more then, and reads say `WouldBlock` without a system call until the poller sees it
    /// readable again ([`Stream::set_readable`]). A read that could only have failed with
    /// `EAGAIN` was a third of the reads of a QoS 1 stream.
    drained: bool,
    /// Control frames (a pong, our close), masked, being written after the data frame under
    /// way.
    control: Vec<u8>,
    /// Pongs not started yet, masked, oldest first: every ping is answered in order, but
    /// at most the latest [`MAX_PONGS`] wait (a flood of pings while our writes are blocked
    /// must not pile up; RFC 6455 §5.5.3 allows answering only the most recent).
    pongs: std::collections::VecDeque<Vec<u8>>,
    /// Bytes of `control` written so far.
    control_written: usize,
    /// Our close frame is queued: nothing more is sent after it.
    close_queued: bool,
}

/// Pongs waiting at most (each at most 131 bytes); older ones are dropped for newer ones.
const MAX_PONGS: usize = 128;

/// Largest client frame header: 2 + 8 (length) + 4 (mask key).
const MAX_HEADER: usize = 14;
/// A frame buffer grown past this by a burst is given back once written.
const KEEP_CAPACITY: usize = 256 * 1024;

impl Stream {
    /// Over plain TCP (`ws://`).
    pub(super) fn plain(tcp: Tcp) -> Stream {
        Stream::new(Transport::Plain(tcp))
    }

    /// Over TLS (`wss://`).
    pub(super) fn tls(tls: StreamOwned<ClientConnection, Tcp>) -> Stream {
        Stream::new(Transport::Tls(Box::new(tls)))
    }

    /// A raw MQTT byte stream over plain TCP (`mqtt://`): batches are written as they are,
    /// with no WebSocket framing.
    pub fn raw_plain(tcp: Tcp) -> Stream {
        Stream {
            websocket: false,
            ..Stream::plain(tcp)
        }
    }

    /// A raw MQTT byte stream over TLS (`mqtts://`).
    pub fn raw_tls(tls: StreamOwned<ClientConnection, Tcp>) -> Stream {
        Stream {
            websocket: false,
            ..Stream::tls(tls)
        }
    }

    fn new(transport: Transport) -> Stream {
        Stream {
            websocket: true,
            transport,
            header: [0; MAX_HEADER],
            header_len: 0,
            body: Vec::new(),
            written: 0,
            mask_keys: RandomState::new(),
            frames: 0,
            polled: false,
            drained: false,
            control: Vec::new(),
            control_written: 0,
            pongs: std::collections::VecDeque::new(),
            close_queued: false,
        }
    }

    /// Queues a pong answering a ping that carried `payload` (at most 125 bytes); it goes
    /// out after the data frame under way, on the next write or flush. Past [`MAX_PONGS`]
    /// waiting, the oldest waiting pong is dropped: the latest ping is always answered.
    pub fn queue_pong(&mut self, payload: &[u8]) {
        if self.close_queued {
            return;
        }
        if self.pongs.len() >= MAX_PONGS {
            self.pongs.pop_front();
        }
        let pong = self.control_frame(0x8a, payload);
        self.pongs.push_back(pong);
    }

    /// Queues our close frame (status `code`, no reason), once, behind a pending pong;
    /// nothing is sent after it.
    pub fn queue_close(&mut self, code: u16) {
        if self.close_queued || !self.websocket {
            return;
        }
        self.close_queued = true;
        for pong in self.pongs.drain(..) {
            self.control.extend_from_slice(&pong);
        }
        let close = self.control_frame(0x88, &code.to_be_bytes());
        self.control.extend_from_slice(&close);
    }

    /// A masked control frame.
    fn control_frame(&mut self, first: u8, payload: &[u8]) -> Vec<u8> {
        debug_assert!(payload.len() <= 125);
        self.frames = self.frames.wrapping_add(1);
        let mut h = self.mask_keys.build_hasher();
        h.write_u64(self.frames);
        let key = (h.finish() as u32).to_ne_bytes();
        let mut header = [0; MAX_HEADER];
        let n = frame_header(payload.len(), key, &mut header);
        header[0] = first;
        let mut frame = header[..n].to_vec();
        let at = frame.len();
        frame.extend_from_slice(payload);
        mask(&mut frame[at..], key);
        frame
    }

    /// Enters (`true`) or leaves the polled phase, where a short read means "drained until
    /// the poller says otherwise".
    pub fn set_polled(&mut self, polled: bool) {
        self.polled = polled;
        self.drained = false;
    }

    /// The poller reported the socket readable (or the caller wants a real read anyway).
    pub fn set_readable(&mut self) {
        self.drained = false;
    }

    /// The TCP socket underneath.
    pub fn tcp(&self) -> &TcpStream {
        match &self.transport {
            Transport::Plain(s) => s.socket(),
            Transport::Tls(s) => s.sock.socket(),
        }
    }

    /// Bounds every read and write by `deadline` (see [`Tcp`]); `None` for the connected,
    /// non-blocking phase.
    pub fn set_deadline(&mut self, deadline: Option<Instant>) {
        match &mut self.transport {
            Transport::Plain(s) => s.set_deadline(deadline),
            Transport::Tls(s) => s.sock.set_deadline(deadline),
        }
    }

    /// Whether a frame started by [`Stream::send_binary`] is not fully written yet.
    pub fn frame_pending(&self) -> bool {
        self.written < self.header_len + self.body.len()
    }

    /// Sends `payload` as one masked binary frame and leaves `payload` empty (holding a
    /// spare buffer). Writes what the socket takes now; the rest goes out on the next
    /// [`Write::write`] or [`Write::flush`] (a `WouldBlock` from either means "still
    /// pending").
    ///
    /// `ready` proves that nothing is pending (see [`flushed`]).
    pub fn send_binary(&mut self, payload: &mut Vec<u8>, ready: Ready) -> io::Result<()> {
        let Ready(()) = ready;
        debug_assert!(!self.frame_pending(), "one frame at a time");
        if self.close_queued {
            // Nothing follows a close frame [RFC 6455 §5.5.1].
            payload.clear();
            return Err(io::ErrorKind::NotConnected.into());
        }
        self.body.clear();
        std::mem::swap(&mut self.body, payload);
        if self.websocket {
            self.frames = self.frames.wrapping_add(1);
            let mut h = self.mask_keys.build_hasher();
            h.write_u64(self.frames);
            let key = (h.finish() as u32).to_ne_bytes();
            self.header_len = frame_header(self.body.len(), key, &mut self.header);
            mask(&mut self.body, key);
        } else {
            self.header_len = 0;
        }
        self.written = 0;
        self.drain()
    }

    /// Writes what is left of our frame; `WouldBlock` if the socket does not take all of it.
    fn drain(&mut self) -> io::Result<()> {
        if self.header_len > 0 && self.written == 0 && matches!(self.transport, Transport::Tls(_)) {
            // rustls seals each slice of a vectored write as a TLS record of its own: the
            // header would go out as a 6-byte record ahead of its payload, and mosquitto's
            // TLS WebSocket listener waits a turn of its event loop (up to 100 ms) for the
            // second one. One slice, one record: the header joins the body (rustls copies
            // the plaintext to encrypt it anyway).
            let h = self.header_len;
            self.body.splice(0..0, self.header[..h].iter().copied());
            self.header_len = 0;
        }
        let total = self.header_len + self.body.len();
        while self.written < total {
            let result = if self.written < self.header_len {
                self.transport.write_vectored(&[
                    io::IoSlice::new(&self.header[self.written..self.header_len]),
                    io::IoSlice::new(&self.body),
                ])
            } else {
                let from = self.written - self.header_len;
                self.transport
                    .write_vectored(&[io::IoSlice::new(&self.body[from..])])
            };
            match result {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.written += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if total > 0 {
            self.header_len = 0;
            self.written = 0;
            if self.body.capacity() > KEEP_CAPACITY {
                self.body = Vec::new();
            } else {
                self.body.clear();
            }
        }
        // Then the control frames, between data frames: what is being written, then the
        // waiting pongs.
        if self.control.is_empty() {
            for pong in self.pongs.drain(..) {
                self.control.extend_from_slice(&pong);
            }
        }
        while self.control_written < self.control.len() {
            match self
                .transport
                .write_vectored(&[io::IoSlice::new(&self.control[self.control_written..])])
            {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.control_written += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if !self.control.is_empty() {
            self.control.clear();
            self.control_written = 0;
        }
        Ok(())
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match &mut self.transport {
            Transport::Plain(s) => {
                if self.drained {
                    return Err(io::ErrorKind::WouldBlock.into());
                }
                let n = s.read(buf)?;
                // TCP hands over all it has, up to the room given: less means nothing more
                // was there (TLS buffers records, so it is not judged this way).
                if self.polled && n > 0 && n < buf.len() {
                    self.drained = true;
                }
                Ok(n)
            }
            Transport::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.drain()?;
        match &mut self.transport {
            Transport::Plain(s) => s.write(buf),
            Transport::Tls(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        self.drain()?;
        match &mut self.transport {
            Transport::Plain(s) => s.flush(),
            Transport::Tls(s) => s.flush(),
        }
    }
}

/// Writes the header of a masked binary client frame carrying `len` bytes into `out` and
/// returns its length [RFC 6455 §5.2].
fn frame_header(len: usize, key: [u8; 4], out: &mut [u8; MAX_HEADER]) -> usize {
    out[0] = 0x82; // FIN, binary
    let n = if len < 126 {
        out[1] = 0x80 | len as u8;
        2
    } else if len <= 0xffff {
        out[1] = 0x80 | 126;
        out[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        4
    } else {
        out[1] = 0x80 | 127;
        out[2..10].copy_from_slice(&(len as u64).to_be_bytes());
        10
    };
    out[n..n + 4].copy_from_slice(&key);
    n + 4
}

/// XORs `buf` with the repeated mask `key` [RFC 6455 §5.3], eight bytes at a time.
fn mask(buf: &mut [u8], key: [u8; 4]) {
    let wide = u64::from_ne_bytes([
        key[0], key[1], key[2], key[3], key[0], key[1], key[2], key[3],
    ]);
    let mut words = buf.chunks_exact_mut(8);
    for w in &mut words {
        let v = u64::from_ne_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]]) ^ wide;
        w.copy_from_slice(&v.to_ne_bytes());
    }
    // The remainder starts at a multiple of 8, so the key lines up from its first byte.
    for (i, b) in words.into_remainder().iter_mut().enumerate() {
        *b ^= key[i % 4];
    }
}

/// Proof that nothing is half-written below our next frame: our previous frame and the
/// control frames queued behind it are out. Made only by [`flushed`]; spent by
/// [`Stream::send_binary`].
#[derive(Debug)]
pub struct Ready(());

/// Writes our frame in flight and the control frames queued; `Ok(Ready)` when all are out,
/// so that a new frame may start. `WouldBlock` means "not yet".
pub fn flushed(stream: &mut Stream) -> io::Result<Ready> {
    stream.flush()?;
    Ok(Ready(()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tungstenite::protocol::WebSocketConfig;

    /// Header and masked payload, as a server (tungstenite) reads them.
    #[test]
    fn frames_decode_as_tungstenite_sees_them() {
        for len in [0usize, 1, 5, 7, 8, 9, 125, 126, 300, 65_535, 65_536] {
            let payload: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
            let key = [0x12, 0x34, 0x56, 0x78];
            let mut header = [0; MAX_HEADER];
            let n = frame_header(len, key, &mut header);
            let mut body = payload.clone();
            mask(&mut body, key);
            let mut bytes = header[..n].to_vec();
            bytes.extend_from_slice(&body);
            let mut server = tungstenite::WebSocket::from_raw_socket(
                std::io::Cursor::new(bytes),
                tungstenite::protocol::Role::Server,
                None,
            );
            match server.read().unwrap() {
                tungstenite::Message::Binary(b) => assert_eq!(&b[..], &payload[..], "len {len}"),
                other => panic!("{other:?}"),
            }
        }
    }

    /// Our stream over a non-blocking loopback connection, and the server's end.
    fn nonblocking_pair() -> (Stream, TcpStream) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        client.set_nonblocking(true).unwrap();
        (Stream::new(Transport::Plain(Tcp::from(client))), server)
    }

    /// tungstenite, server role, no size limits: the independent reader of our frames.
    fn server_side(server: TcpStream) -> tungstenite::WebSocket<TcpStream> {
        tungstenite::WebSocket::from_raw_socket(
            server,
            tungstenite::protocol::Role::Server,
            Some(
                WebSocketConfig::default()
                    .max_message_size(None)
                    .max_frame_size(None),
            ),
        )
    }

    /// Pings that arrive while our writes are blocked are answered up to the latest of them
    /// (RFC 6455 §5.5.3), however many came. Before (found by the hostile review):
    /// pongs were queued up to 4 KiB and the newer pings dropped, so the latest was never
    /// answered.
    #[test]
    fn the_latest_ping_is_answered_after_blocked_writes() {
        let (mut stream, server) = nonblocking_pair();
        let mut payload = vec![7u8; 8 << 20];
        match stream.send_binary(&mut payload, Ready(())) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            other => panic!("expected a partial write, got {other:?}"),
        }
        for i in 0..2000 {
            stream.queue_pong(format!("{i:08}").as_bytes());
        }
        let reader = std::thread::spawn(move || {
            let mut ws = server_side(server);
            let mut last_pong = None;
            loop {
                match ws.read() {
                    Ok(tungstenite::Message::Pong(p)) => last_pong = Some(p.to_vec()),
                    Ok(tungstenite::Message::Close(_)) | Err(_) => return last_pong,
                    Ok(_) => {}
                }
            }
        });
        loop {
            match stream.flush() {
                Ok(()) => break,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(std::time::Duration::from_millis(1))
                }
                Err(e) => panic!("{e}"),
            }
        }
        stream.queue_close(1000);
        while let Err(e) = stream.flush() {
            assert_eq!(e.kind(), io::ErrorKind::WouldBlock, "{e}");
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        let last = reader.join().unwrap();
        assert_eq!(last.as_deref(), Some(&b"00001999"[..]));
    }

    /// A frame the socket takes only in part is finished before a control frame queued
    /// behind it, and the spare buffer handed back is empty.
    #[test]
    fn pending_frame_goes_out_before_later_writes() {
        let (mut stream, server) = nonblocking_pair();
        // Far more than the socket buffers take at once.
        let big: Vec<u8> = (0..8 << 20).map(|i| i as u8).collect();
        let mut payload = big.clone();
        match stream.send_binary(&mut payload, Ready(())) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            other => panic!("expected a partial write, got {other:?}"),
        }
        assert!(payload.is_empty());
        assert!(stream.frame_pending());
        let reader = std::thread::spawn(move || {
            let mut ws = server_side(server);
            let first = ws.read().unwrap();
            let second = ws.read().unwrap();
            (first, second)
        });
        // A pong queued now waits for our frame.
        stream.queue_pong(b"abc");
        loop {
            match stream.flush() {
                Ok(()) => break,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(std::time::Duration::from_millis(1))
                }
                Err(e) => panic!("{e}"),
            }
        }
        assert!(!stream.frame_pending());
        let (first, second) = reader.join().unwrap();
        match first {
            tungstenite::Message::Binary(b) => assert!(b[..] == big[..], "payload intact"),
            other => panic!("{other:?}"),
        }
        assert_eq!(second, tungstenite::Message::Pong(b"abc".to_vec().into()));
    }
}

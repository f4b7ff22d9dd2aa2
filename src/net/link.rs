//! The connection under the session: MQTT over WebSocket (`ws://`, `wss://`) or over the raw
//! byte stream (`mqtt://` on 1883, `mqtts://` on 8883). Everything above — session,
//! keep-alive, reconnect, resend, router, the framer — is the same; only this differs.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};

use super::request::OpenRequest;
use super::stream::{self, Ready, Stream};
use super::websocket;
use super::websocket::reader::{self, Decoder, Frame};
use crate::error::{Error, Result};

/// How much one read asks for at least; the buffer holds one such read, or one data frame of
/// up to [`reader::MAX_PIECE`] bytes.
pub const READ_BUFFER: usize = 8 * 1024;
/// A read is worth making into the buffer's spare room when at least this much is left;
/// less and a fresh buffer is taken (the old one is freed when the last slice of it goes).
const MIN_ROOM: usize = 1024;

/// One open connection (one per provider, made once per connect).
#[derive(Debug)]
pub struct Link {
    /// TCP or TLS, with our frame writer.
    stream: Stream,
    /// Bytes read and not handed on yet.
    buf: BytesMut,
    /// The size of the allocation `buf` reads into (slices of it keep it alive).
    backing: usize,
    /// The WebSocket frame decoder; `None` for a raw MQTT stream (`mqtt://`, `mqtts://`).
    frames: Option<Decoder>,
}

/// What a [`Link::read`] brought.
#[derive(Debug)]
pub enum Incoming {
    /// MQTT bytes.
    Data(Chunk),
    /// The server closed the WebSocket; the text says how (" (code 1000: bye)"), escaped.
    Closed(String),
    /// Nothing for now: the socket would block (or, while connecting, its deadline passed).
    Blocked,
    /// Something was read or answered (a ping, pongs, empty frames, part of a frame) but no
    /// MQTT bytes yet: call again (each call makes at most one read).
    Progress,
}

/// MQTT bytes as read, with the size of the buffer they are a slice of: a packet kept as a
/// slice keeps that whole buffer alive (see `Framer::feed_chunk`).
#[derive(Debug)]
pub struct Chunk {
    /// The bytes.
    pub bytes: Bytes,
    /// The capacity of the allocation they share.
    pub backing: usize,
}

/// Opens TCP, TLS when `wss`/`mqtts`, and the WebSocket upgrade when `ws`/`wss`, all before
/// `deadline`.
pub fn open(req: &OpenRequest, deadline: Instant, abort: Option<Arc<AtomicBool>>) -> Result<Link> {
    match req.url.scheme() {
        "mqtt" | "mqtts" => {
            let host = req.url.host_str().unwrap_or_default();
            let tls = req.url.scheme() == "mqtts";
            let port = req.url.port().unwrap_or(if tls { 8883 } else { 1883 });
            let tcp = super::proxy::connect(req.proxy.as_ref(), host, port, deadline, abort)?;
            let stream = if tls {
                let t = super::tls::handshake(req.tls.config()?, host, tcp)?;
                Stream::raw_tls(t)
            } else {
                Stream::raw_plain(tcp)
            };
            Ok(Link {
                stream,
                buf: BytesMut::new(),
                backing: 0,
                frames: None,
            })
        }
        _ => {
            let (stream, rest) = websocket::open(req, deadline, abort)?;
            let buf = BytesMut::from(&rest[..]);
            Ok(Link {
                stream,
                backing: buf.capacity(),
                buf,
                frames: Some(Decoder::default()),
            })
        }
    }
}

impl Link {
    /// The TCP socket underneath.
    pub fn tcp(&self) -> &TcpStream {
        self.stream.tcp()
    }

    /// Our frame writer.
    pub fn stream(&self) -> &Stream {
        &self.stream
    }

    /// Our frame writer, to send.
    pub fn stream_mut(&mut self) -> &mut Stream {
        &mut self.stream
    }

    /// Everything pending is out (see [`stream::flushed`]); `WouldBlock` means not yet.
    pub fn flushed(&mut self) -> io::Result<Ready> {
        stream::flushed(&mut self.stream)
    }

    /// The next MQTT bytes from the server. A ping is answered (the pong goes out with the
    /// next write or flush) and a pong ignored without returning; a close frame is answered
    /// with ours. `context` names the step in I/O errors.
    pub fn read(&mut self, context: &'static str) -> Result<Incoming> {
        let mut filled = false;
        loop {
            match &mut self.frames {
                Some(decoder) => match decoder.next(&mut self.buf) {
                    Ok(Some(Frame::Data(bytes))) => {
                        let backing = self.backing.max(bytes.len());
                        return Ok(Incoming::Data(Chunk { bytes, backing }));
                    }
                    Ok(Some(Frame::Ping(p))) => {
                        self.stream.queue_pong(&p);
                        // Counted by the caller like a frame: a flood of pings cannot keep
                        // it from its timers, commands and close.
                        return Ok(Incoming::Progress);
                    }
                    Ok(Some(Frame::Close(close))) => {
                        // Our close answers theirs [RFC 6455 §5.5.1].
                        let code = close.as_ref().map_or(1000, |(c, _)| *c);
                        self.stream.queue_close(if reader::valid_close_code(code) {
                            code
                        } else {
                            1002
                        });
                        let _ = self.stream.flush();
                        return Ok(Incoming::Closed(close_reason(close)));
                    }
                    Ok(None) => {}
                    Err(e) => return Err(Error::websocket_msg(e)),
                },
                None if !self.buf.is_empty() => {
                    let backing = self.backing;
                    let bytes = self.buf.split().freeze();
                    return Ok(Incoming::Data(Chunk { bytes, backing }));
                }
                None => {}
            }
            if filled {
                // One read per call: it brought pongs, empty frames or part of a frame. The
                // caller counts the call like a frame and comes back (a flood of them must
                // not keep it from its timers, commands and close).
                return Ok(Incoming::Progress);
            }
            match self.fill() {
                Ok(0) if self.frames.is_some() => {
                    return Err(Error::ConnectionLost(
                        "the server closed the connection without a WebSocket close".into(),
                    ))
                }
                Ok(0) => {
                    return Err(super::error::map_io(
                        context,
                        io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "the server closed the connection",
                        ),
                    ))
                }
                Ok(_) => filled = true,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    // Nothing more for now: the part of a data frame that is here goes on
                    // (MQTT inside a long frame must not wait for the rest of the frame).
                    if let Some(bytes) = self.frames.as_mut().and_then(|d| d.partial(&mut self.buf))
                    {
                        let backing = self.backing.max(bytes.len());
                        return Ok(Incoming::Data(Chunk { bytes, backing }));
                    }
                    return Ok(Incoming::Blocked);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(super::error::map_io(context, e)),
            }
        }
    }

    /// One read into the buffer's spare room: at least [`READ_BUFFER`] bytes, or what the
    /// data frame under way still lacks (up to one piece), so that a frame arrives whole.
    fn fill(&mut self) -> io::Result<usize> {
        let wanted = self.frames.as_ref().map_or(0, |d| d.wanted(self.buf.len()));
        let want = READ_BUFFER.max(wanted);
        let room = self.buf.capacity() - self.buf.len();
        if room < MIN_ROOM.max(wanted) {
            // A buffer of our own, of a size we know: `backing` must be the whole
            // allocation a slice keeps alive (growing the old one in place could reuse an
            // allocation larger than its capacity says).
            let mut fresh = BytesMut::with_capacity(self.buf.len() + want);
            fresh.extend_from_slice(&self.buf);
            self.buf = fresh;
            self.backing = self.buf.capacity();
        }
        let start = self.buf.len();
        let take = (self.buf.capacity() - start).min(want);
        // Zeroed before the read (no unsafe code): at most one read's worth.
        self.buf.resize(start + take, 0);
        let result = self.stream.read(&mut self.buf[start..]);
        self.buf.truncate(start + *result.as_ref().unwrap_or(&0));
        result
    }

    /// Gives the read buffer back when it holds nothing (called before the I/O thread
    /// sleeps): an idle connection keeps no [`READ_BUFFER`] of its own, and the next read
    /// takes a fresh one (one allocation per sleep, against a system call per wake-up).
    pub fn release_idle(&mut self) {
        if self.buf.is_empty() && self.buf.capacity() > 0 {
            self.buf = BytesMut::new();
            self.backing = 0;
        }
    }

    /// Best effort, never blocking: our WebSocket close frame (status 1000), or nothing.
    pub fn close(&mut self) {
        self.stream.queue_close(1000);
        let _ = self.stream.flush();
    }

    /// Ends a connection whose last words (DISCONNECT) were written: [`Link::close`], then
    /// our side of TCP is shut and what the server still sends is read and dropped until it
    /// closes too, or until `until`. Closing a socket with unread input makes the kernel
    /// reset the connection, and a reset discards what we wrote but the server had not read
    /// yet — DISCONNECT, whose loss fires the last will.
    pub fn finish(mut self, until: std::time::Instant) {
        self.close();
        let tcp = self.tcp();
        let _ = tcp.shutdown(std::net::Shutdown::Write);
        if tcp.set_nonblocking(false).is_err() {
            return;
        }
        let mut sink = [0u8; 4096];
        loop {
            let left = until.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() || tcp.set_read_timeout(Some(left)).is_err() {
                return;
            }
            match std::io::Read::read(&mut &*tcp, &mut sink) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    }
}

/// How the server's close frame is reported: `" (code 1000: bye)"`, its reason escaped; a
/// code no server may send says so.
fn close_reason(close: Option<(u16, String)>) -> String {
    match close {
        None => String::new(),
        Some((code, reason)) => {
            let invalid = if reader::valid_close_code(code) {
                ""
            } else {
                ", not a valid close code"
            };
            if reason.is_empty() {
                format!(" (code {code}{invalid})")
            } else {
                // The server's text: escaped, so that it cannot forge log lines.
                format!(
                    " (code {code}{invalid}: {})",
                    crate::error::printable(&reason)
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One `read` call makes at most one socket read, however many pings (or pongs, or
    /// empty frames) the bytes hold: a server that floods them can no longer keep the I/O
    /// thread inside one call, away from its keep-alive, commands and close (found by the
    /// hostile review: the call answered pings until the socket was empty, which a fast
    /// enough server never lets happen).
    #[cfg(target_os = "linux")]
    #[test]
    fn one_read_call_reads_the_socket_once() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (mut server, _) = listener.accept().unwrap();
        // 20,000 pings, 40,000 bytes, all in the socket before the first read.
        let flood: Vec<u8> = [0x89u8, 0x00].repeat(20_000);
        server.write_all(&flood).unwrap();
        let probe = client.try_clone().unwrap();
        while rustix::io::ioctl_fionread(&probe).unwrap() < flood.len() as u64 {
            std::thread::yield_now();
        }
        client
            .set_read_timeout(Some(std::time::Duration::from_millis(200)))
            .unwrap();
        let mut link = Link {
            stream: Stream::raw_plain(crate::net::tcp::Tcp::from(client)),
            buf: BytesMut::new(),
            backing: 0,
            frames: Some(Decoder::default()),
        };
        let _ = link.read("test");
        let left = rustix::io::ioctl_fionread(&probe).unwrap();
        assert!(
            left >= (flood.len() - 2 * READ_BUFFER) as u64,
            "one call read {} of {} bytes",
            flood.len() as u64 - left,
            flood.len()
        );
    }
}

//! The connection under the session: MQTT over WebSocket (`ws://`, `wss://`) or over the raw
//! byte stream (`mqtt://` on 1883, `mqtts://` on 8883). Everything above — session,
//! keep-alive, reconnect, resend, router, the framer — is the same; only this differs.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

use tungstenite::protocol::WebSocketConfig;
use tungstenite::{Bytes, Message, WebSocket};

use super::websocket::{self, OpenRequest, Ready, Stream};
use crate::error::Result;

/// How much a raw read takes at once.
const RAW_READ: usize = 8 * 1024;

/// One open connection (one per provider, made once per connect: the size difference of
/// the variants does not matter).
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
pub enum Link {
    /// MQTT in binary WebSocket frames.
    Ws(WebSocket<Stream>),
    /// MQTT on the stream itself.
    Raw {
        /// The stream (our frame writer writes batches unframed).
        stream: Stream,
        /// The read buffer.
        buf: Vec<u8>,
    },
}

/// Opens TCP, TLS when `wss`/`mqtts`, and the WebSocket upgrade when `ws`/`wss`, all before
/// `deadline`.
pub fn open(
    req: &OpenRequest,
    deadline: Instant,
    abort: Option<Arc<AtomicBool>>,
    config: WebSocketConfig,
) -> Result<Link> {
    match req.url.scheme() {
        "mqtt" | "mqtts" => {
            let host = req.url.host_str().unwrap_or_default();
            let tls = req.url.scheme() == "mqtts";
            let port = req.url.port().unwrap_or(if tls { 8883 } else { 1883 });
            let tcp = super::proxy::connect(req.proxy.as_ref(), host, port, deadline, abort)?;
            let stream = if tls {
                let t = websocket::tls_handshake(req.tls.clone(), host, tcp)?;
                Stream::raw_tls(t)
            } else {
                Stream::raw_plain(tcp)
            };
            Ok(Link::Raw {
                stream,
                buf: vec![0; RAW_READ],
            })
        }
        _ => websocket::open(req, deadline, abort, config).map(Link::Ws),
    }
}

impl Link {
    /// The TCP socket underneath.
    pub fn tcp(&self) -> &TcpStream {
        self.stream().tcp()
    }

    /// Our frame writer.
    pub fn stream(&self) -> &Stream {
        match self {
            Link::Ws(ws) => ws.get_ref(),
            Link::Raw { stream, .. } => stream,
        }
    }

    /// Our frame writer, to send.
    pub fn stream_mut(&mut self) -> &mut Stream {
        match self {
            Link::Ws(ws) => ws.get_mut(),
            Link::Raw { stream, .. } => stream,
        }
    }

    /// Everything pending is out (see [`websocket::flushed`]); `WouldBlock` means not yet.
    pub fn flushed(&mut self) -> tungstenite::Result<Ready> {
        match self {
            Link::Ws(ws) => websocket::flushed(ws),
            Link::Raw { stream, .. } => Ok(websocket::flushed_raw(stream)?),
        }
    }

    /// The next bytes from the server, as the WebSocket reader reports them: a raw stream's
    /// bytes come as a binary message, its end as an error.
    pub fn read(&mut self) -> tungstenite::Result<Message> {
        match self {
            Link::Ws(ws) => ws.read(),
            Link::Raw { stream, buf } => match stream.read(buf) {
                Ok(0) => Err(tungstenite::Error::Io(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the server closed the connection",
                ))),
                Ok(n) => Ok(Message::Binary(Bytes::copy_from_slice(&buf[..n]))),
                Err(e) => Err(tungstenite::Error::Io(e)),
            },
        }
    }

    /// Best effort, never blocking: the WebSocket close frame, or nothing.
    pub fn close(&mut self) {
        match self {
            Link::Ws(ws) => {
                let _ = ws.close(None);
                let _ = ws.flush();
            }
            Link::Raw { stream, .. } => {
                let _ = stream.flush();
            }
        }
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

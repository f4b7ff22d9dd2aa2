//! The WebSocket upgrade (subprotocol `mqtt`) over TCP or TLS, with one deadline for all.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

use rustls::{ClientConfig, ClientConnection, StreamOwned};
use rustls_pki_types::ServerName;
use tungstenite::protocol::WebSocketConfig;
use tungstenite::WebSocket;
use url::Url;

use super::tcp::{self, Tcp};
use crate::error::{Error, Operation, Result};

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

/// The byte stream under tungstenite: TCP or TLS, plus the binary frame of ours being written.
///
/// Outgoing MQTT data does not go through tungstenite's `write`, which copies the payload into
/// its own buffer and masks it there: [`Stream::send_binary`] takes the session's output
/// buffer by swapping it, masks it in place and writes header and payload with one vectored
/// write. Every write tungstenite makes (pongs, close) goes through this type, which finishes
/// our frame first, so the two never interleave as long as a frame is only started when
/// tungstenite has nothing buffered (its `flush` returned `Ok`).
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
}

/// Largest client frame header: 2 + 8 (length) + 4 (mask key).
const MAX_HEADER: usize = 14;
/// A frame buffer grown past this by a burst is given back once written.
const KEEP_CAPACITY: usize = 256 * 1024;

impl Stream {
    fn new(transport: Transport) -> Stream {
        Stream {
            transport,
            header: [0; MAX_HEADER],
            header_len: 0,
            body: Vec::new(),
            written: 0,
            mask_keys: RandomState::new(),
            frames: 0,
        }
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
    /// Call only when nothing is pending here ([`Stream::frame_pending`]) nor in tungstenite
    /// (its `flush` returned `Ok`, or it has written nothing yet).
    pub fn send_binary(&mut self, payload: &mut Vec<u8>) -> io::Result<()> {
        debug_assert!(!self.frame_pending(), "one frame at a time");
        self.body.clear();
        std::mem::swap(&mut self.body, payload);
        self.frames = self.frames.wrapping_add(1);
        let mut h = self.mask_keys.build_hasher();
        h.write_u64(self.frames);
        let key = (h.finish() as u32).to_ne_bytes();
        self.header_len = frame_header(self.body.len(), key, &mut self.header);
        mask(&mut self.body, key);
        self.written = 0;
        self.drain()
    }

    /// Writes what is left of our frame; `WouldBlock` if the socket does not take all of it.
    fn drain(&mut self) -> io::Result<()> {
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
        Ok(())
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match &mut self.transport {
            Transport::Plain(s) => s.read(buf),
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

/// Everything needed to open one connection. Providers make a fresh one per attempt (AWS IoT
/// signs a new URL each time).
#[derive(Clone)]
pub struct OpenRequest {
    /// `ws://` or `wss://` URL (its query may hold a signature: never log it whole).
    pub url: Url,
    /// Extra headers on the upgrade request.
    pub headers: Vec<(String, String)>,
    /// TLS settings for `wss://`.
    pub tls: Arc<ClientConfig>,
}

/// The URL without its query and credentials, safe to log.
pub fn redact(url: &Url) -> String {
    let host = url.host_str().unwrap_or("?");
    match url.port() {
        Some(p) => format!("{}://{}:{}{}", url.scheme(), host, p, url.path()),
        None => format!("{}://{}{}", url.scheme(), host, url.path()),
    }
}

/// Parses and checks a broker URL: `ws://` or `wss://` with a host.
pub fn parse_url(url: &str) -> Result<Url> {
    let parsed = Url::parse(url).map_err(|e| Error::InvalidUrl(format!("{e}")))?;
    match parsed.scheme() {
        "ws" | "wss" => {}
        other => {
            return Err(Error::InvalidUrl(format!(
                "scheme {other:?} is not supported: use ws:// or wss://"
            )))
        }
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(Error::InvalidUrl("the URL has no host".into()));
    }
    Ok(parsed)
}

/// Maps an I/O error met while connecting: rustls errors become [`Error::Tls`], timeouts
/// [`Error::Timeout`].
pub fn map_io(context: &'static str, e: io::Error) -> Error {
    if let Some(tls) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
        return Error::tls(tls.to_string(), tls.clone());
    }
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
            Error::timeout(Operation::Connect, context)
        }
        _ => Error::Io { context, source: e },
    }
}

/// The error for an upgrade answered with `status` instead of 101, with what the body says.
pub fn rejected(status: u16, body: &[u8]) -> Error {
    let mut hint = match status {
        401 | 403 => "the server refused the credentials or signature",
        404 => "wrong URL path (NATS and AWS IoT use /mqtt)",
        _ => "",
    }
    .to_string();
    // What the server said, briefly (AWS explains a refused signature in the body).
    let said: String = String::from_utf8_lossy(body)
        .chars()
        .filter(|c| !c.is_control())
        .take(200)
        .collect();
    let lower = said.to_ascii_lowercase();
    if lower.contains("expired") || lower.contains("skew") || lower.contains("not yet valid") {
        hint.push_str("; the server says the signature's time is off: check the system clock");
    }
    if !said.trim().is_empty() {
        hint.push_str(&format!("; server said: {}", said.trim()));
    }
    Error::HandshakeRejected {
        status,
        hint: hint.trim_start_matches("; ").to_string(),
    }
}

/// Maps a tungstenite error.
pub fn map_ws(context: &'static str, e: tungstenite::Error) -> Error {
    match e {
        tungstenite::Error::Io(e) => map_io(context, e),
        tungstenite::Error::Http(resp) => {
            let body = resp.body().clone().unwrap_or_default();
            rejected(resp.status().as_u16(), &body)
        }
        tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed => {
            Error::ConnectionLost("the WebSocket is closed".into())
        }
        tungstenite::Error::Protocol(
            tungstenite::error::ProtocolError::ResetWithoutClosingHandshake,
        ) => Error::ConnectionLost(
            "the server closed the connection without a WebSocket close".into(),
        ),
        other => Error::WebSocket {
            message: other.to_string(),
            source: Some(Box::new(other)),
        },
    }
}

/// Opens TCP, TLS when `wss`, and upgrades to WebSocket with subprotocol `mqtt`, all before
/// `deadline`. The returned socket is blocking with timeouts; the driver switches it to
/// non-blocking.
pub fn open(
    req: &OpenRequest,
    deadline: Instant,
    abort: Option<Arc<AtomicBool>>,
    config: WebSocketConfig,
) -> Result<WebSocket<Stream>> {
    let url = &req.url;
    let host = url
        .host_str()
        .ok_or_else(|| Error::InvalidUrl("no host".into()))?;
    let tls = url.scheme() == "wss";
    let port = url.port().unwrap_or(if tls { 443 } else { 80 });
    let tcp = tcp::connect(host, port, deadline, abort)?;
    let stream = if tls {
        Stream::new(Transport::Tls(Box::new(tls_handshake(
            req.tls.clone(),
            host,
            tcp,
        )?)))
    } else {
        Stream::new(Transport::Plain(tcp))
    };
    upgrade(stream, url, &req.headers, config).map_err(|e| scrub_error(e, req))
}

/// The secrets a request carries: query values (signatures, tokens), header values, and the
/// URL's password; each as sent and percent-decoded.
fn secrets(req: &OpenRequest) -> Vec<String> {
    let mut s: Vec<String> = Vec::new();
    for (k, v) in req.url.query_pairs() {
        s.push(v.into_owned());
        s.push(k.into_owned());
    }
    if let Some(q) = req.url.query() {
        s.extend(
            q.split('&')
                .filter_map(|p| p.split_once('='))
                .map(|(_, v)| v.to_string()),
        );
    }
    s.extend(req.headers.iter().map(|(_, v)| v.clone()));
    s.extend(req.url.password().map(String::from));
    // Short values (`1`, `true`) are not secrets and would blank out ordinary words.
    s.retain(|v| v.len() >= 8);
    s
}

/// `text` with every secret of `req` replaced, and control characters escaped: what a
/// server echoes (a 403 body quoting the request line) must not put our token in a log.
pub fn scrub(text: &str, req: &OpenRequest) -> String {
    let mut out = crate::error::printable_max(text, 500);
    for secret in secrets(req) {
        out = out.replace(&secret, "<redacted>");
    }
    out
}

fn scrub_error(e: Error, req: &OpenRequest) -> Error {
    match e {
        Error::HandshakeRejected { status, hint } => Error::HandshakeRejected {
            status,
            hint: scrub(&hint, req),
        },
        other => other,
    }
}

/// A URL given as text, safe to print: [`redact`] if it parses, else nothing of it.
pub fn redact_text(url: &str) -> String {
    match Url::parse(url) {
        Ok(u) => redact(&u),
        Err(_) => "<unparsable URL>".into(),
    }
}

/// The TLS handshake, completed now so that a certificate problem is reported as such.
pub fn tls_handshake(
    config: Arc<ClientConfig>,
    host: &str,
    tcp: Tcp,
) -> Result<StreamOwned<ClientConnection, Tcp>> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let name =
        ServerName::try_from(bare.to_string()).map_err(|e| Error::InvalidUrl(format!("{e}")))?;
    let conn = ClientConnection::new(config, name).map_err(|e| Error::tls(e.to_string(), e))?;
    let mut s = StreamOwned::new(conn, tcp);
    while s.conn.is_handshaking() {
        s.conn
            .complete_io(&mut s.sock)
            .map_err(|e| map_io("TLS handshake", e))?;
    }
    Ok(s)
}

/// Largest HTTP head accepted in answer to the upgrade.
const MAX_RESPONSE_HEAD: usize = 16 * 1024;
/// Most of an error body kept for the message.
const MAX_ERROR_BODY: usize = 4096;

/// The HTTP/1.1 upgrade [RFC 6455 §4.1], done here rather than by tungstenite because
/// tungstenite logs the whole request at trace level, and the request holds the presigned
/// query (signature, session token) and custom-authorizer headers.
fn upgrade(
    mut stream: Stream,
    url: &Url,
    headers: &[(String, String)],
    config: WebSocketConfig,
) -> Result<WebSocket<Stream>> {
    let key = tungstenite::handshake::client::generate_key();
    let host = url.host_str().unwrap_or_default();
    let authority = match url.port() {
        Some(p) => format!("{host}:{p}"),
        None => host.to_string(),
    };
    let target = &url[url::Position::BeforePath..url::Position::AfterQuery];
    let mut request = format!(
        "GET {target} HTTP/1.1\r\nHost: {authority}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Protocol: mqtt\r\n"
    );
    for (k, v) in headers {
        let bad = |s: &str| s.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0);
        if k.is_empty() || bad(k) || k.contains(':') || bad(v) {
            return Err(Error::InvalidConfig(format!("invalid extra header {k:?}")));
        }
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str("\r\n");
    stream
        .write_all(request.as_bytes())
        .and_then(|()| stream.flush())
        .map_err(|e| map_io("WebSocket upgrade", e))?;
    log::trace!("WebSocket upgrade request sent to {}", redact(url));

    // The response head, bounded.
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 512];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        if buf.len() > MAX_RESPONSE_HEAD {
            return Err(Error::Protocol(
                "the HTTP answer to the upgrade is too large".into(),
            ));
        }
        let n = stream
            .read(&mut chunk)
            .map_err(|e| map_io("WebSocket upgrade", e))?;
        if n == 0 {
            return Err(Error::ConnectionLost(
                "the server closed the connection during the WebSocket upgrade".into(),
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let mut rest = buf[head_end + 4..].to_vec();
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| {
            l.strip_prefix("HTTP/1.1 ")
                .or_else(|| l.strip_prefix("HTTP/1.0 "))
        })
        .and_then(|l| l.get(..3))
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| Error::Protocol("the answer to the WebSocket upgrade is not HTTP".into()))?;
    let fields: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let field = |name: &str| {
        fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    if status != 101 {
        // What the body says, bounded by its length, our limit and the socket's deadline.
        let want = field("content-length")
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(0)
            .min(MAX_ERROR_BODY);
        while rest.len() < want {
            match stream.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => rest.extend_from_slice(&chunk[..n]),
            }
        }
        rest.truncate(want);
        return Err(rejected(status, &rest));
    }
    let upgrade_ok = field("upgrade").is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    let connection_ok =
        field("connection").is_some_and(|v| v.to_ascii_lowercase().contains("upgrade"));
    if !upgrade_ok || !connection_ok {
        return Err(Error::websocket_msg(
            "the 101 answer lacks Upgrade: websocket / Connection: Upgrade",
        ));
    }
    let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
    if field("sec-websocket-accept") != Some(accept.as_str()) {
        return Err(Error::websocket_msg(
            "the server's Sec-WebSocket-Accept does not match our key",
        ));
    }
    // The subprotocol may be left out (some brokers and proxies), but if named it must be ours.
    if let Some(p) = field("sec-websocket-protocol") {
        if !p.eq_ignore_ascii_case("mqtt") {
            return Err(Error::websocket_msg(format!(
                "the server chose subprotocol {p:?}, not mqtt"
            )));
        }
    }
    Ok(WebSocket::from_partially_read(
        stream,
        rest,
        tungstenite::protocol::Role::Client,
        Some(config),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

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

    /// A frame the socket takes only in part is finished before anything tungstenite writes,
    /// and the spare buffer handed back is empty.
    #[test]
    fn pending_frame_goes_out_before_later_writes() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        client.set_nonblocking(true).unwrap();
        let mut stream = Stream::new(Transport::Plain(Tcp::from(client)));
        // Far more than the socket buffers take at once.
        let big: Vec<u8> = (0..8 << 20).map(|i| i as u8).collect();
        let mut payload = big.clone();
        match stream.send_binary(&mut payload) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            other => panic!("expected a partial write, got {other:?}"),
        }
        assert!(payload.is_empty());
        assert!(stream.frame_pending());
        let reader = std::thread::spawn(move || {
            let mut ws = tungstenite::WebSocket::from_raw_socket(
                server,
                tungstenite::protocol::Role::Server,
                Some(
                    WebSocketConfig::default()
                        .max_message_size(None)
                        .max_frame_size(None),
                ),
            );
            let first = ws.read().unwrap();
            let second = ws.read().unwrap();
            (first, second)
        });
        // What tungstenite would write (a pong, say) waits for our frame.
        let pong = {
            let mut header = [0; MAX_HEADER];
            let n = frame_header(3, [1, 2, 3, 4], &mut header);
            header[0] = 0x8a; // FIN, pong
            let mut body = b"abc".to_vec();
            mask(&mut body, [1, 2, 3, 4]);
            let mut v = header[..n].to_vec();
            v.extend_from_slice(&body);
            v
        };
        let mut sent = 0;
        while sent < pong.len() {
            match stream.write(&pong[sent..]) {
                Ok(n) => sent += n,
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

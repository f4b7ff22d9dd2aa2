//! The WebSocket upgrade (subprotocol `mqtt`) over TCP or TLS, with one deadline for all.

use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::Instant;

use rustls::{ClientConfig, ClientConnection, StreamOwned};
use rustls_pki_types::ServerName;
use tungstenite::protocol::WebSocketConfig;
use tungstenite::WebSocket;
use url::Url;

use crate::error::{Error, Operation, Result};

/// TCP or TLS over TCP.
#[derive(Debug)]
pub enum Stream {
    /// `ws://`
    Plain(TcpStream),
    /// `wss://`
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

impl Stream {
    /// The TCP socket underneath.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(s) => s,
            Stream::Tls(s) => &s.sock,
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(s) => s.flush(),
        }
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

fn remaining(deadline: Instant) -> Result<std::time::Duration> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        Err(Error::timeout(Operation::Connect, "connect timeout"))
    } else {
        Ok(left)
    }
}

/// Maps an I/O error met while connecting: rustls errors become [`Error::Tls`], timeouts
/// [`Error::Timeout`].
pub fn map_io(context: &'static str, e: io::Error) -> Error {
    if let Some(tls) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
        return Error::Tls(tls.to_string());
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
        other => Error::WebSocket(other.to_string()),
    }
}

/// A masked binary WebSocket frame from a client, with mask key `key` [RFC 6455 §5.2, §5.3].
pub fn client_frame(payload: &[u8], key: u32) -> Vec<u8> {
    let mut frame = Vec::with_capacity(payload.len() + 14);
    frame.push(0x82); // FIN, binary
    let len = payload.len();
    if len < 126 {
        frame.push(0x80 | len as u8);
    } else if len <= 0xffff {
        frame.push(0x80 | 126);
        frame.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        frame.push(0x80 | 127);
        frame.extend_from_slice(&(len as u64).to_be_bytes());
    }
    let key = key.to_be_bytes();
    frame.extend_from_slice(&key);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    frame
}

/// Opens TCP, TLS when `wss`, and upgrades to WebSocket with subprotocol `mqtt`, all before
/// `deadline`. The returned socket is blocking with timeouts; the driver switches it to
/// non-blocking.
pub fn open(
    req: &OpenRequest,
    deadline: Instant,
    config: WebSocketConfig,
) -> Result<WebSocket<Stream>> {
    let url = &req.url;
    let host = url
        .host_str()
        .ok_or_else(|| Error::InvalidUrl("no host".into()))?;
    let tls = url.scheme() == "wss";
    let port = url.port().unwrap_or(if tls { 443 } else { 80 });
    // Url keeps IPv6 literals bracketed; the resolver wants them bare.
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let addrs: Vec<_> = (bare, port)
        .to_socket_addrs()
        .map_err(|e| Error::Io {
            context: "DNS lookup",
            source: e,
        })?
        .collect();
    let mut last = None;
    let mut tcp = None;
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, remaining(deadline)?) {
            Ok(s) => {
                tcp = Some(s);
                break;
            }
            Err(e) => last = Some(e),
        }
    }
    let tcp = match (tcp, last) {
        (Some(s), _) => s,
        (None, Some(e)) => return Err(map_io("TCP connect", e)),
        (None, None) => {
            return Err(Error::Io {
                context: "DNS lookup",
                source: io::Error::new(io::ErrorKind::NotFound, "no address"),
            })
        }
    };
    tcp.set_nodelay(true).map_err(|e| map_io("TCP setup", e))?;
    let left = remaining(deadline)?;
    tcp.set_read_timeout(Some(left))
        .map_err(|e| map_io("TCP setup", e))?;
    tcp.set_write_timeout(Some(left))
        .map_err(|e| map_io("TCP setup", e))?;

    let stream = if tls {
        let name = ServerName::try_from(bare.to_string())
            .map_err(|e| Error::InvalidUrl(format!("{e}")))?;
        let conn =
            ClientConnection::new(req.tls.clone(), name).map_err(|e| Error::Tls(e.to_string()))?;
        let mut s = StreamOwned::new(conn, tcp);
        // Complete the TLS handshake now, so a certificate problem is reported as such.
        while s.conn.is_handshaking() {
            s.conn
                .complete_io(&mut s.sock)
                .map_err(|e| map_io("TLS handshake", e))?;
        }
        Stream::Tls(Box::new(s))
    } else {
        Stream::Plain(tcp)
    };

    upgrade(stream, url, &req.headers, config)
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
        return Err(Error::WebSocket(
            "the 101 answer lacks Upgrade: websocket / Connection: Upgrade".into(),
        ));
    }
    let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
    if field("sec-websocket-accept") != Some(accept.as_str()) {
        return Err(Error::WebSocket(
            "the server's Sec-WebSocket-Accept does not match our key".into(),
        ));
    }
    // The subprotocol may be left out (some brokers and proxies), but if named it must be ours.
    if let Some(p) = field("sec-websocket-protocol") {
        if !p.eq_ignore_ascii_case("mqtt") {
            return Err(Error::WebSocket(format!(
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

    #[test]
    fn client_frames_decode_as_tungstenite_sees_them() {
        for len in [0usize, 5, 125, 126, 300, 65_535, 65_536] {
            let payload: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let bytes = client_frame(&payload, 0x1234_5678);
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
}

//! The WebSocket upgrade (subprotocol `mqtt`) over TCP or TLS, with one deadline for all.

use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::Instant;

use rustls::{ClientConfig, ClientConnection, StreamOwned};
use rustls_pki_types::ServerName;
use tungstenite::client::IntoClientRequest;
use tungstenite::handshake::HandshakeError;
use tungstenite::http::{HeaderName, HeaderValue};
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

/// Maps a tungstenite error.
pub fn map_ws(context: &'static str, e: tungstenite::Error) -> Error {
    match e {
        tungstenite::Error::Io(e) => map_io(context, e),
        tungstenite::Error::Http(resp) => {
            let status = resp.status().as_u16();
            let hint = match status {
                401 | 403 => "the server refused the credentials or signature",
                404 => "wrong URL path (NATS and AWS IoT use /mqtt)",
                _ => "",
            };
            Error::HandshakeRejected {
                status,
                hint: hint.to_string(),
            }
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

    let mut request = url
        .as_str()
        .into_client_request()
        .map_err(|e| Error::InvalidUrl(format!("{e}")))?;
    let headers = request.headers_mut();
    headers.insert("Sec-WebSocket-Protocol", HeaderValue::from_static("mqtt"));
    for (k, v) in &req.headers {
        let name = HeaderName::from_bytes(k.as_bytes())
            .map_err(|_| Error::InvalidConfig(format!("invalid header name {k:?}")))?;
        let value = HeaderValue::from_str(v)
            .map_err(|_| Error::InvalidConfig(format!("invalid value for header {k:?}")))?;
        headers.insert(name, value);
    }
    log::debug!("WebSocket upgrade to {}", redact(url));
    match tungstenite::client::client_with_config(request, stream, Some(config)) {
        Ok((ws, _response)) => Ok(ws),
        Err(HandshakeError::Interrupted(_)) => {
            Err(Error::timeout(Operation::Connect, "WebSocket upgrade"))
        }
        Err(HandshakeError::Failure(e)) => Err(map_ws("WebSocket upgrade", e)),
    }
}

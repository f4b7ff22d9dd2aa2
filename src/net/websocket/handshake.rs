//! The HTTP/1.1 upgrade [RFC 6455 §4.1], done here rather than by tungstenite because
//! tungstenite logs the whole request at trace level, and the request holds the presigned
//! query (signature, session token) and custom-authorizer headers.

use std::io::{Read, Write};

use url::Url;

use super::frame::Stream;
use super::{map_io, redact, rejected};
use crate::error::{Error, Result};

/// Largest HTTP head accepted in answer to the upgrade.
const MAX_RESPONSE_HEAD: usize = 16 * 1024;
/// Most of an error body kept for the message.
const MAX_ERROR_BODY: usize = 4096;

/// The HTTP/1.1 upgrade [RFC 6455 §4.1], done here rather than by tungstenite because
/// tungstenite logs the whole request at trace level, and the request holds the presigned
/// query (signature, session token) and custom-authorizer headers.
pub(super) fn upgrade(
    mut stream: Stream,
    url: &Url,
    headers: &[(String, String)],
) -> Result<(Stream, Vec<u8>)> {
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
        .and_then(crate::net::head::status_line)
        .map(|s| s.status)
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
    // We ask for no extension: a server that names one (permessage-deflate) would send
    // frames we cannot read [RFC 6455 §9.1].
    if let Some(ext) = field("sec-websocket-extensions").filter(|e| !e.is_empty()) {
        return Err(Error::websocket_msg(format!(
            "the server chose extension {:?}, which we did not ask for",
            crate::error::printable_max(ext, 100)
        )));
    }
    // The subprotocol may be left out (some brokers and proxies), but if named it must be ours.
    if let Some(p) = field("sec-websocket-protocol") {
        if !p.eq_ignore_ascii_case("mqtt") {
            return Err(Error::websocket_msg(format!(
                "the server chose subprotocol {:?}, not mqtt",
                crate::error::printable_max(p, 100)
            )));
        }
    }
    Ok((stream, rest))
}

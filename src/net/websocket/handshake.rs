//! The HTTP/1.1 upgrade [RFC 6455 §4.1], done here rather than by tungstenite because
//! tungstenite logs the whole request at trace level, and the request holds the presigned
//! query (signature, session token) and custom-authorizer headers.

use std::io::{Read, Write};

use url::Url;

use super::rejected;
use crate::error::{Error, Result};
use crate::net::error::map_io;
use crate::net::request::redact;
use crate::net::stream::Stream;

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

    // The response head, bounded; what follows it is the first frames.
    let (head, mut rest) = crate::net::head::read_head(&mut stream, MAX_RESPONSE_HEAD, 512)
        .map_err(|e| {
            use crate::net::head::HeadError;
            match e {
                HeadError::Closed => Error::ConnectionLost(
                    "the server closed the connection during the WebSocket upgrade".into(),
                ),
                HeadError::Io(e) => map_io("WebSocket upgrade", e),
                other => Error::Protocol(format!("the answer to the WebSocket upgrade: {other}")),
            }
        })?;
    let status = head.status;
    let field = |name: &str| head.field(name);
    let mut chunk = [0u8; 512];
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
    check_switch(&head, &key)?;
    Ok((stream, rest))
}

/// A 101 answer must be to our upgrade: `Upgrade: websocket`, `Connection: Upgrade`, the
/// accept value of our key, no extension (we asked for none: a server that names one, such as
/// permessage-deflate, would send frames we cannot read [RFC 6455 §9.1]), and the `mqtt`
/// subprotocol if it names one (some brokers and proxies leave it out).
fn check_switch(head: &crate::net::head::Head, key: &str) -> Result<()> {
    let upgrade_ok = head
        .field("upgrade")
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    let connection_ok = head
        .field("connection")
        .is_some_and(|v| v.to_ascii_lowercase().contains("upgrade"));
    if !upgrade_ok || !connection_ok {
        return Err(Error::websocket_msg(
            "the 101 answer lacks Upgrade: websocket / Connection: Upgrade",
        ));
    }
    let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
    if head.field("sec-websocket-accept") != Some(accept.as_str()) {
        return Err(Error::websocket_msg(
            "the server's Sec-WebSocket-Accept does not match our key",
        ));
    }
    if let Some(ext) = head
        .field("sec-websocket-extensions")
        .filter(|e| !e.is_empty())
    {
        return Err(Error::websocket_msg(format!(
            "the server chose extension {:?}, which we did not ask for",
            crate::error::printable_max(ext, 100)
        )));
    }
    if let Some(p) = head.field("sec-websocket-protocol") {
        if !p.eq_ignore_ascii_case("mqtt") {
            return Err(Error::websocket_msg(format!(
                "the server chose subprotocol {:?}, not mqtt",
                crate::error::printable_max(p, 100)
            )));
        }
    }
    Ok(())
}

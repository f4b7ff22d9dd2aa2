//! The WebSocket upgrade (subprotocol `mqtt`) over TCP or TLS, with one deadline for all.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

use crate::error::{Error, Result};
use crate::net::request::{scrub, OpenRequest};

mod handshake;
pub mod reader;

use crate::net::stream::Stream;

/// The error for an upgrade answered with `status` instead of 101, with what the body says.
pub fn rejected(status: u16, body: &[u8]) -> Error {
    let mut hint = match status {
        401 | 403 => "the server refused the credentials or signature",
        404 => "wrong URL path (NATS and AWS IoT use /mqtt)",
        400 | 405 | 426 => {
            "an HTTP server that does not take a WebSocket upgrade here: check the port and \
             path of the broker's WebSocket listener (e.g. /mqtt)"
        }
        _ => "",
    }
    .to_string();
    // What the server said, briefly (AWS explains a refused signature in the body).
    // Line breaks and other control characters become spaces (lines kept apart).
    let said: String = String::from_utf8_lossy(body)
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(200)
        .collect();
    let said = said.split_whitespace().collect::<Vec<_>>().join(" ");
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
        target: None,
    }
}

/// Opens TCP, TLS when `wss`, and upgrades to WebSocket with subprotocol `mqtt`, all before
/// `deadline`: the stream, and what the server sent after its answer (frames already). The
/// socket is blocking with timeouts; the driver switches it to non-blocking.
pub fn open(
    req: &OpenRequest,
    deadline: Instant,
    abort: Option<Arc<AtomicBool>>,
) -> Result<(Stream, Vec<u8>)> {
    let url = &req.url;
    let host = url
        .host_str()
        .ok_or_else(|| Error::InvalidUrl("no host".into()))?;
    let tls = url.scheme() == "wss";
    let port = url.port().unwrap_or(if tls { 443 } else { 80 });
    let tcp = super::proxy::connect(req.proxy.as_ref(), host, port, deadline, abort)?;
    let stream = if tls {
        Stream::tls(crate::net::tls::handshake(req.tls.config()?, host, tcp)?)
    } else {
        Stream::plain(tcp)
    };
    handshake::upgrade(stream, url, &req.headers).map_err(|e| scrub_error(e, req))
}

fn scrub_error(e: Error, req: &OpenRequest) -> Error {
    match e {
        Error::HandshakeRejected {
            status,
            hint,
            target,
        } => Error::HandshakeRejected {
            status,
            hint: scrub(&hint, req),
            target,
        },
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the server said keeps its lines apart (found by the hostile review: "HTTP/1.1Host:").
    #[test]
    fn a_refusal_body_keeps_its_lines_apart() {
        let e = rejected(
            401,
            b"Unauthorized\r\nWWW-Authenticate: Basic\r\n\r\ncheck\tthe key",
        );
        let text = e.to_string();
        assert!(
            text.contains("Unauthorized WWW-Authenticate: Basic check the key"),
            "{text}"
        );
    }
}

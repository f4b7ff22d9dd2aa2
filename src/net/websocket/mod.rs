//! The WebSocket upgrade (subprotocol `mqtt`) over TCP or TLS, with one deadline for all.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

use rustls::ClientConfig;
use url::Url;

use crate::error::{Error, Result};

mod frame;
mod handshake;
pub mod reader;

pub use frame::{flushed, Ready, Stream};

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
    /// The HTTP proxy to tunnel through.
    pub proxy: Option<super::proxy::Proxy>,
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
    if !url.contains("://") {
        return Err(Error::InvalidUrl(format!(
            "{:?} has no scheme: write mqtt://{0} (or ws://, wss://, mqtts://)",
            crate::error::printable_max(url, 200)
        )));
    }
    let parsed = Url::parse(url).map_err(|e| Error::InvalidUrl(format!("{e}")))?;
    match parsed.scheme() {
        "ws" | "wss" | "mqtt" | "mqtts" => {}
        other => {
            return Err(Error::InvalidUrl(format!(
                "scheme {other:?} is not supported: use ws://, wss://, mqtt:// or mqtts://"
            )))
        }
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(Error::InvalidUrl("the URL has no host".into()));
    }
    Ok(parsed)
}

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
        Stream::tls(crate::net::tls::handshake(req.tls.clone(), host, tcp)?)
    } else {
        Stream::plain(tcp)
    };
    handshake::upgrade(stream, url, &req.headers).map_err(|e| scrub_error(e, req))
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

/// A URL given as text, safe to print: [`redact`] if it parses, else nothing of it.
pub fn redact_text(url: &str) -> String {
    match Url::parse(url) {
        Ok(u) => redact(&u),
        Err(_) => "<unparsable URL>".into(),
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

//! What one connection attempt opens ([`OpenRequest`]), the broker URLs it may name, and
//! how a URL or a server's echo of the request is made safe to print.

use std::sync::Arc;

use rustls::ClientConfig;
use url::Url;

use crate::error::{Error, Result};

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

/// The schemes a broker URL may have; [`crate::net::link::open`] has one arm for each
/// transport.
pub const SCHEMES: [&str; 4] = ["ws", "wss", "mqtt", "mqtts"];

/// Parses and checks a broker URL: one of [`SCHEMES`], with a host.
pub fn parse_url(url: &str) -> Result<Url> {
    if !url.contains("://") {
        return Err(Error::InvalidUrl(format!(
            "{:?} has no scheme: write mqtt://{0} (or ws://, wss://, mqtts://)",
            crate::error::printable_max(url, 200)
        )));
    }
    let parsed = Url::parse(url).map_err(|e| Error::InvalidUrl(format!("{e}")))?;
    if !SCHEMES.contains(&parsed.scheme()) {
        return Err(Error::InvalidUrl(format!(
            "scheme {:?} is not supported: use ws://, wss://, mqtt:// or mqtts://",
            parsed.scheme()
        )));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(Error::InvalidUrl("the URL has no host".into()));
    }
    Ok(parsed)
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

/// A URL given as text, safe to print: [`redact`] if it parses, else nothing of it.
pub fn redact_text(url: &str) -> String {
    match Url::parse(url) {
        Ok(u) => redact(&u),
        Err(_) => "<unparsable URL>".into(),
    }
}

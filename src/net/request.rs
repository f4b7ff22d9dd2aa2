//! What one connection attempt opens ([`OpenRequest`]), the broker URLs it may name, and
//! how a URL or a server's echo of the request is made safe to print.

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
    /// TLS settings for `wss://` and `mqtts://`.
    pub tls: crate::net::tls::Tls,
    /// The HTTP proxy to tunnel through.
    pub proxy: Option<super::proxy::Proxy>,
}

/// The URL without its query and credentials, safe to log. A path holding an `@` is left
/// out too: `mqtt://alice:12/pw@host` (a password with an unencoded `/`) parses as host
/// `alice`, port 12 and a path that is the rest of the password.
pub fn redact(url: &Url) -> String {
    let host = url.host_str().unwrap_or("?");
    let path = if url.path().contains('@') {
        "/<redacted>"
    } else {
        url.path()
    };
    match url.port() {
        Some(p) => format!("{}://{}:{}{}", url.scheme(), host, p, path),
        None => format!("{}://{}{}", url.scheme(), host, path),
    }
}

/// The schemes a broker URL may have; [`crate::net::link::open`] has one arm for each
/// transport.
pub const SCHEMES: [&str; 4] = ["ws", "wss", "mqtt", "mqtts"];

/// Parses and checks a broker URL: one of [`SCHEMES`], with a host.
pub fn parse_url(url: &str) -> Result<Url> {
    if !url.contains("://") {
        let shown = crate::error::printable_max(&without_credentials(url), 200);
        // `mqtt:host:1883`, `ws:/host`: a scheme of ours without the `//`.
        if let Some((scheme, rest)) = url.split_once(':') {
            if SCHEMES.contains(&scheme.to_ascii_lowercase().as_str()) {
                let rest = without_credentials(rest.trim_start_matches('/'));
                return Err(Error::InvalidUrl(format!(
                    "{shown:?} lacks the `//` after `{scheme}:`: write {scheme}://{}",
                    crate::error::printable_max(&rest, 200)
                )));
            }
        }
        return Err(Error::InvalidUrl(format!(
            "{shown:?} has no scheme: write mqtt://{shown} (or ws://, wss://, mqtts://)"
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
    if parsed.path().contains('@') {
        // Most likely a password with an unencoded `/` (`mqtt://alice:12/pw@host`).
        return Err(Error::InvalidUrl(
            "the URL's path holds an `@`: a `/` in a password must be written %2F".into(),
        ));
    }
    Ok(parsed)
}

/// The MQTT user name and password a broker URL carries (`mqtt://user:password@host`),
/// percent-decoded, taken out of every URL of `urls`: fallback URLs must carry the same ones
/// or none.
pub fn take_credentials(urls: &mut [Url]) -> Result<Option<(String, Option<String>)>> {
    let mut found: Option<(String, Option<String>)> = None;
    for url in urls.iter_mut() {
        if url.username().is_empty() && url.password().is_none() {
            continue;
        }
        let bad = || Error::InvalidUrl("the user name or password is badly percent-encoded".into());
        let user = crate::error::percent_decode(url.username()).ok_or_else(bad)?;
        let password = url
            .password()
            .map(|p| crate::error::percent_decode(p).ok_or_else(bad))
            .transpose()?;
        let _ = url.set_username("");
        let _ = url.set_password(None);
        match &found {
            Some(f) if *f != (user.clone(), password.clone()) => {
                return Err(Error::InvalidUrl(
                    "the broker URLs carry different user names or passwords: give them once, \
                     with username_password"
                        .into(),
                ))
            }
            _ => found = Some((user, password)),
        }
    }
    Ok(found)
}

/// `url` with what stands before an `@` in its authority (user name and password) replaced:
/// a URL that does not parse is shown in errors, and must not show its password.
fn without_credentials(url: &str) -> String {
    // The last `@` anywhere: a password may hold `#`, `?` or `/` unencoded, and hiding a
    // path's `@` too is the safe mistake.
    let Some(at) = url.rfind('@') else {
        return url.to_string();
    };
    // What is kept before the credentials: a scheme followed by slashes (`ws:/`, `mqtt://`).
    let keep = match url.split_once(':') {
        Some((scheme, rest))
            if rest.starts_with('/')
                && scheme.len() < at
                && scheme
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "+.-".contains(c)) =>
        {
            scheme.len() + 1 + (rest.len() - rest.trim_start_matches('/').len())
        }
        _ => 0,
    };
    let keep = keep.min(at);
    format!("{}<credentials>@{}", &url[..keep], &url[at + 1..])
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

/// A URL given as text, safe to print: [`redact`] if it parses as a URL with a host, else
/// nothing of it (`user:password@host` without a scheme parses as a URL whose "path" holds
/// the password).
pub fn redact_text(url: &str) -> String {
    match Url::parse(url) {
        Ok(u) if u.host_str().is_some_and(|h| !h.is_empty()) => redact(&u),
        Ok(_) => "<URL without a host>".into(),
        Err(_) => "<unparsable URL>".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_that_does_not_parse_never_shows_its_password() {
        for (url, hint) in [
            ("user:s3cretpassw0rd@broker:1883", "has no scheme"),
            ("mqtt:user:s3cretpassw0rd@broker:1883", "lacks the `//`"),
            ("ws:/u:s3cretpassw0rd@h/mqtt", "lacks the `//`"),
            ("mqtt:alice:pa#s3cretpassw0rd@broker:1883", "lacks the `//`"),
            ("mqtt:alice:pa?s3cretpassw0rd@broker:1883", "lacks the `//`"),
            ("alice:pa#s3cretpassw0rd@broker:1883", "has no scheme"),
        ] {
            let e = parse_url(url).unwrap_err().to_string();
            assert!(!e.contains("s3cretpassw0rd"), "{e}");
            assert!(e.contains("<credentials>@"), "{e}");
            assert!(e.contains(hint), "{e}");
        }
        // A `/` in a password, unencoded: host `alice`, port 12, a path with the rest.
        let e = parse_url("mqtt://alice:12/s3cretpassw0rd@broker")
            .unwrap_err()
            .to_string();
        assert!(!e.contains("s3cretpassw0rd"), "{e}");
        for url in [
            "alice:s3cretpassw0rd@broker:1883",
            "mqtt:/alice:s3cretpassw0rd@broker",
            "mqtt:alice:pa#s3cretpassw0rd@broker:1883",
            "mqtt://alice:12/s3cretpassw0rd@broker",
        ] {
            let shown = redact_text(url);
            assert!(!shown.contains("s3cretpassw0rd"), "{url}: {shown}");
        }
        assert!(crate::error::percent_decode("%+1x").is_none());
        assert!(crate::error::percent_decode("%-1x").is_none());
        assert_eq!(
            crate::error::percent_decode("a%40b").as_deref(),
            Some("a@b")
        );
        let e = parse_url("mqtt:127.0.0.1:1883").unwrap_err().to_string();
        assert!(e.contains("write mqtt://127.0.0.1:1883"), "{e}");
        assert!(!e.contains("no scheme"), "{e}");
    }
}

//! HTTP CONNECT proxies: the tunnel under every scheme (and under Cognito's HTTPS calls),
//! set explicitly or taken from the conventional environment variables as curl, ureq and
//! the AWS SDKs do.

use std::io::Write;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

use url::Url;

use super::tcp::{self, Tcp};
use crate::error::{Error, Result};

/// The longest answer head a proxy may send to CONNECT.
const MAX_HEAD: usize = 8 * 1024;

/// An HTTP proxy that tunnels with `CONNECT`.
#[derive(Clone, PartialEq, Eq)]
pub struct Proxy {
    host: String,
    port: u16,
    /// `Basic <base64(user:password)>`, when the URL has a user.
    authorization: Option<String>,
    /// `http://user@host:port`: what errors and logs name (never the password).
    shown: String,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.shown)
    }
}

impl std::fmt::Display for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.shown)
    }
}

/// Where a provider's proxy comes from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum ProxySetting {
    /// The environment variables (the default).
    #[default]
    FromEnv,
    /// This proxy, whatever the environment says.
    Use(Proxy),
    /// No proxy, whatever the environment says.
    Off,
}

impl ProxySetting {
    /// The proxy for a connection to `url` (`ws`, `wss`, `mqtt`, `mqtts`, `http`, `https`).
    pub fn for_url(&self, url: &Url) -> Result<Option<Proxy>> {
        match self {
            ProxySetting::Off => Ok(None),
            ProxySetting::Use(p) => Ok(Some(p.clone())),
            ProxySetting::FromEnv => from_env(url, &|k| std::env::var(k).ok()),
        }
    }
}

impl Proxy {
    /// Parses `http://[user[:password]@]host[:port]` (the scheme may be left out; the port
    /// defaults to 80, as in any `http://` URL).
    pub fn parse(text: &str) -> Result<Proxy> {
        let with_scheme = if text.contains("://") {
            text.to_string()
        } else {
            format!("http://{text}")
        };
        let bad = |why: &str| Error::InvalidConfig(format!("proxy URL: {why}"));
        let url = Url::parse(&with_scheme).map_err(|e| bad(&e.to_string()))?;
        if url.scheme() != "http" {
            return Err(bad(&format!(
                "scheme {:?} is not supported: only http:// proxies (HTTP CONNECT)",
                url.scheme()
            )));
        }
        let host = url
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| bad("no host"))?
            .to_string();
        let port = url.port().unwrap_or(80);
        let decode = |s: &str| {
            crate::error::percent_decode(s)
                .ok_or_else(|| bad("the user or password is badly percent-encoded"))
        };
        let (authorization, shown) = if url.username().is_empty() {
            (None, format!("http://{host}:{port}"))
        } else {
            let user = decode(url.username())?;
            let pass = decode(url.password().unwrap_or(""))?;
            let token = base64(format!("{user}:{pass}").as_bytes());
            crate::error::register_basic(&user, &pass);
            (
                Some(format!("Basic {token}")),
                format!("http://{}@{host}:{port}", url.username()),
            )
        };
        Ok(Proxy {
            host,
            port,
            authorization,
            shown,
        })
    }
}

/// The proxy the environment sets for `url`: `HTTPS_PROXY` for `wss`/`mqtts`/`https`,
/// `HTTP_PROXY` for `ws`/`mqtt`/`http`, else `ALL_PROXY` (each also in lower case, which wins
/// as in curl), unless `NO_PROXY` names the host.
pub fn from_env(url: &Url, var: &dyn Fn(&str) -> Option<String>) -> Result<Option<Proxy>> {
    let get = |name: &str| {
        var(&name.to_ascii_lowercase())
            .or_else(|| var(name))
            .filter(|v| !v.trim().is_empty())
    };
    let secure = matches!(url.scheme(), "wss" | "mqtts" | "https");
    let chosen = if secure {
        get("HTTPS_PROXY")
    } else {
        get("HTTP_PROXY")
    }
    .or_else(|| get("ALL_PROXY"));
    let Some(text) = chosen else { return Ok(None) };
    let host = url.host_str().unwrap_or_default();
    let port = url.port_or_known_default().unwrap_or(0);
    if let Some(list) = get("NO_PROXY") {
        if no_proxy_matches(&list, host, port) {
            return Ok(None);
        }
    }
    Proxy::parse(text.trim()).map(Some)
}

/// Whether a `NO_PROXY` list names `host`: `*` names every host; an entry names the host
/// itself and, for names, every host under it (`example.com` and `.example.com` both name
/// `a.example.com`); an entry with `:port` names only that port.
pub fn no_proxy_matches(list: &str, host: &str, port: u16) -> bool {
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_ascii_lowercase();
    list.split(',').map(str::trim).any(|entry| {
        if entry == "*" {
            return true;
        }
        let entry = entry.to_ascii_lowercase();
        // `host:port`, `[v6]:port`, or a bare name or address.
        let (name, entry_port) = match entry.rsplit_once(':') {
            Some((n, p)) if !n.contains(':') || n.ends_with(']') => match p.parse::<u16>() {
                Ok(p) => (n.to_string(), Some(p)),
                Err(_) => (entry.clone(), None),
            },
            _ => (entry.clone(), None),
        };
        if entry_port.is_some_and(|p| p != port) {
            return false;
        }
        let name = name.trim_start_matches('[').trim_end_matches(']');
        let name = name.trim_start_matches("*.").trim_start_matches('.');
        !name.is_empty()
            && (host == name || (host.len() > name.len() && host.ends_with(&format!(".{name}"))))
    })
}

/// TCP to `host:port`, through `proxy` when there is one, before `deadline`.
pub fn connect(
    proxy: Option<&Proxy>,
    host: &str,
    port: u16,
    deadline: Instant,
    abort: Option<Arc<AtomicBool>>,
) -> Result<Tcp> {
    let Some(proxy) = proxy else {
        return tcp::connect(host, port, deadline, abort);
    };
    let mut tcp =
        tcp::connect(&proxy.host, proxy.port, deadline, abort).map_err(|e| Error::Proxy {
            proxy: proxy.shown.clone(),
            status: None,
            message: format!("could not reach the proxy: {e}"),
        })?;
    let authority = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let mut request = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n");
    if let Some(auth) = &proxy.authorization {
        request.push_str(&format!("Proxy-Authorization: {auth}\r\n"));
    }
    request.push_str("\r\n");
    let failed = |message: String| Error::Proxy {
        proxy: proxy.shown.clone(),
        status: None,
        message,
    };
    tcp.write_all(request.as_bytes())
        .and_then(|()| tcp.flush())
        .map_err(|e| failed(format!("sending CONNECT: {e}")))?;
    // The answer's head, byte by byte: whatever follows it is the tunnel's (the server
    // speaks first on no scheme of ours, but a proxy may pass bytes on at once).
    let (head, _) = crate::net::head::read_head(&mut tcp, MAX_HEAD, 1).map_err(|e| {
        use crate::net::head::HeadError;
        match e {
            HeadError::Closed => {
                failed("the proxy closed the connection before answering CONNECT".into())
            }
            HeadError::Io(e) => match super::error::map_io("proxy CONNECT", e) {
                timeout @ Error::Timeout { .. } => timeout,
                other => failed(format!("reading the answer to CONNECT: {other}")),
            },
            other => failed(format!("CONNECT {authority}: {other}")),
        }
    })?;
    let reason = crate::error::printable_max(&head.reason, 100);
    match head.status {
        200..=299 => {
            log::debug!("tunnel to {authority} through proxy {proxy}");
            Ok(tcp)
        }
        status => {
            let hint = match status {
                407 if proxy.authorization.is_some() => {
                    ": the proxy refused the user name and password"
                }
                407 => {
                    ": the proxy wants a user name and password (http://user:password@host:port)"
                }
                403 => ": the proxy does not allow tunnels to this host and port",
                502..=504 => ": the proxy could not reach the broker",
                _ => "",
            };
            Err(Error::Proxy {
                proxy: proxy.shown.clone(),
                status: Some(status),
                message: format!("CONNECT {authority} answered {status} {reason}{hint}"),
            })
        }
    }
}

use crate::error::base64;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc_4648() {
        for (input, want) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
            ("Aladdin:open sesame", "QWxhZGRpbjpvcGVuIHNlc2FtZQ=="),
        ] {
            assert_eq!(base64(input.as_bytes()), want, "{input}");
        }
    }

    #[test]
    fn proxy_urls_parse_and_never_show_the_password() {
        let p = Proxy::parse("http://al%40ice:s3cr%3At@proxy.corp:3128").unwrap();
        assert_eq!((p.host.as_str(), p.port), ("proxy.corp", 3128));
        assert_eq!(
            p.authorization.as_deref(),
            Some(format!("Basic {}", base64(b"al@ice:s3cr:t")).as_str())
        );
        assert_eq!(p.to_string(), "http://al%40ice@proxy.corp:3128");
        assert!(!format!("{p:?}").contains("s3cr"));
        let p = Proxy::parse("proxy.corp").unwrap();
        assert_eq!((p.port, p.authorization.is_none()), (80, true));
        assert!(Proxy::parse("socks5://proxy:1080").is_err());
        assert!(Proxy::parse("https://proxy:443").is_err());
        assert!(Proxy::parse("http://").is_err());
    }

    #[test]
    fn no_proxy_names_hosts_domains_and_ports() {
        let m = no_proxy_matches;
        assert!(m("*", "anything", 1));
        assert!(m("example.com", "example.com", 443));
        assert!(m("example.com", "a.b.example.com", 443));
        assert!(m(".example.com", "a.example.com", 443));
        assert!(m("*.example.com", "a.example.com", 443));
        assert!(!m("example.com", "badexample.com", 443));
        assert!(!m("a.example.com", "example.com", 443));
        assert!(m("localhost, 127.0.0.1", "127.0.0.1", 1883));
        assert!(m("Broker:8883", "broker", 8883));
        assert!(!m("broker:8883", "broker", 1883));
        assert!(m("::1", "[::1]", 1883));
        assert!(m("[::1]:1883", "[::1]", 1883));
        assert!(!m("", "broker", 1));
        assert!(!m(" , ", "broker", 1));
    }

    #[test]
    fn environment_variables_by_scheme() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        let url = |s: &str| Url::parse(s).unwrap();
        let vars: &[(&str, &str)] = &[
            ("HTTPS_PROXY", "http://secure:1"),
            ("http_proxy", "http://plain:2"),
            ("NO_PROXY", "internal.corp"),
        ];
        let get = |u: &str| {
            from_env(&url(u), &env(vars))
                .unwrap()
                .map(|p| (p.host, p.port))
        };
        assert_eq!(get("wss://b.example/mqtt"), Some(("secure".into(), 1)));
        assert_eq!(get("mqtts://b.example"), Some(("secure".into(), 1)));
        assert_eq!(get("https://cognito.example"), Some(("secure".into(), 1)));
        assert_eq!(get("ws://b.example/mqtt"), Some(("plain".into(), 2)));
        assert_eq!(get("mqtt://b.example"), Some(("plain".into(), 2)));
        assert_eq!(get("mqtt://x.internal.corp"), None);
        let all: &[(&str, &str)] = &[("ALL_PROXY", "http://all:3")];
        assert_eq!(
            from_env(&url("mqtt://b"), &env(all))
                .unwrap()
                .map(|p| p.port),
            Some(3)
        );
        let none: &[(&str, &str)] = &[];
        assert!(from_env(&url("mqtt://b"), &env(none)).unwrap().is_none());
        let bad: &[(&str, &str)] = &[("HTTP_PROXY", "socks5://x:1")];
        assert!(from_env(&url("mqtt://b"), &env(bad)).is_err());
    }
}

//! A minimal HTTP/1.1 client for the few requests this crate makes itself (Cognito's JSON
//! API): one POST per connection, over our TCP/TLS with the caller's deadline.
//!
//! Written here rather than with an HTTP library because those log what they send and
//! receive at trace level (ureq's protocol layer hex-dumps both, 16 bytes a line), and these
//! bodies carry secrets both ways: login tokens out, secret keys and session tokens back.
//! Nothing here logs a header value or a body.

use std::io::{self, Read, Write};
use std::sync::Arc;
use std::time::Instant;

use rustls::{ClientConfig, ClientConnection, StreamOwned};
use url::Url;

use super::error::map_io;
use super::tcp::Tcp;
use super::tls::handshake as tls_handshake;
use crate::error::{Error, Result};

/// Largest response head accepted.
const MAX_HEAD: usize = 16 * 1024;

/// A response: status and body.
#[derive(Debug)]
pub struct Response {
    /// The HTTP status code.
    pub status: u16,
    /// The body, at most the limit the caller gave.
    pub body: Vec<u8>,
}

enum Conn {
    Plain(Tcp),
    Tls(Box<StreamOwned<ClientConnection, Tcp>>),
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Conn::Plain(s) => s.read(buf),
            Conn::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Conn::Plain(s) => s.write(buf),
            Conn::Tls(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Conn::Plain(s) => s.flush(),
            Conn::Tls(s) => s.flush(),
        }
    }
}

/// POSTs `body` to `url` (`http` or `https`) with `headers`, and reads the answer (at most
/// `max_body` bytes of body), everything before `deadline`.
pub fn post(
    url: &Url,
    proxy: Option<&super::proxy::Proxy>,
    headers: &[(&str, &str)],
    body: &[u8],
    tls: Arc<ClientConfig>,
    deadline: Instant,
    max_body: usize,
) -> Result<Response> {
    let host = url
        .host_str()
        .ok_or_else(|| Error::InvalidUrl("no host".into()))?;
    let secure = match url.scheme() {
        "https" => true,
        "http" => false,
        other => return Err(Error::InvalidUrl(format!("unsupported scheme {other:?}"))),
    };
    let port = url
        .port_or_known_default()
        .unwrap_or(if secure { 443 } else { 80 });
    let tcp = super::proxy::connect(proxy, host, port, deadline, None)?;
    let mut conn = if secure {
        Conn::Tls(Box::new(tls_handshake(tls, host, tcp)?))
    } else {
        Conn::Plain(tcp)
    };
    let authority = match url.port() {
        Some(p) => format!("{host}:{p}"),
        None => host.to_string(),
    };
    let target = &url[url::Position::BeforePath..url::Position::AfterQuery];
    let mut request = format!(
        "POST {target} HTTP/1.1\r\nHost: {authority}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str("\r\n");
    let mut bytes = request.into_bytes();
    bytes.extend_from_slice(body);
    conn.write_all(&bytes)
        .and_then(|()| conn.flush())
        .map_err(|e| map_io("sending the request", e))?;
    read_response(&mut conn, max_body)
}

/// Reads one response (its head, then its body by length, chunks or close); interim 1xx
/// answers (`100 Continue`) are read past. Fuzzed (`fuzz/fuzz_targets/http.rs`).
pub fn read_response(conn: &mut impl Read, max_body: usize) -> Result<Response> {
    let mut reader = io::BufReader::new(conn);
    // Byte by byte from the buffered reader: the body stays in it.
    let (head, _) = crate::net::head::read_head(&mut reader, MAX_HEAD, 1).map_err(|e| {
        use crate::net::head::HeadError;
        match e {
            HeadError::Closed => malformed("the connection closed in the response head"),
            HeadError::Io(e) => map_io("reading the response", e),
            other => malformed(&other.to_string()),
        }
    })?;
    let status = head.status;
    let mut length = None;
    let mut chunked = false;
    for (k, v) in &head.fields {
        if k == "content-length" {
            length = Some(
                v.parse::<usize>()
                    .map_err(|_| malformed("bad Content-Length"))?,
            );
        } else if k == "transfer-encoding" {
            chunked = v.to_ascii_lowercase().contains("chunked");
        }
    }
    let body = if chunked {
        read_chunked(&mut reader, max_body)?
    } else if let Some(n) = length {
        if n > max_body {
            return Err(malformed("response body over the limit"));
        }
        let mut body = vec![0; n];
        reader
            .read_exact(&mut body)
            .map_err(|e| map_io("reading the response", e))?;
        body
    } else {
        read_to_end(&mut reader, max_body)?
    };
    Ok(Response { status, body })
}

/// Reads until the server closes (a missing TLS close_notify counts as the end).
fn read_to_end(r: &mut impl Read, max_body: usize) -> Result<Vec<u8>> {
    let mut body = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match r.read(&mut buf) {
            Ok(0) => return Ok(body),
            Ok(n) => {
                body.extend_from_slice(&buf[..n]);
                if body.len() > max_body {
                    return Err(malformed("response body over the limit"));
                }
            }
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(body),
            Err(e) => return Err(map_io("reading the response", e)),
        }
    }
}

fn read_chunked(r: &mut impl io::BufRead, max_body: usize) -> Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let mut line = String::new();
        io::BufRead::read_line(&mut r.by_ref().take(1024), &mut line)
            .map_err(|e| map_io("reading the response", e))?;
        let size_text = line.trim().split(';').next().unwrap_or("");
        let size = usize::from_str_radix(size_text, 16).map_err(|_| malformed("bad chunk size"))?;
        if size == 0 {
            return Ok(body);
        }
        // Checked without adding: a hostile size (ffffffffffffffff) must not overflow.
        if size > max_body.saturating_sub(body.len()) {
            return Err(malformed("response body over the limit"));
        }
        let start = body.len();
        body.resize(start + size, 0);
        r.read_exact(&mut body[start..])
            .and_then(|()| r.read_exact(&mut [0u8; 2]))
            .map_err(|e| map_io("reading the response", e))?;
    }
}

fn malformed(why: &str) -> Error {
    Error::Protocol(format!("malformed HTTP response: {why}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_by_length_chunks_or_close() {
        let parse = |raw: &str| read_response(&mut raw.as_bytes(), 1024).unwrap();
        let r = parse("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello");
        assert_eq!((r.status, &r.body[..]), (200, &b"hello"[..]));
        let r = parse("HTTP/1.1 400 X\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n");
        assert_eq!((r.status, &r.body[..]), (400, &b"abcde"[..]));
        let r = parse("HTTP/1.0 500 X\r\n\r\n<html>");
        assert_eq!((r.status, &r.body[..]), (500, &b"<html>"[..]));
        assert!(read_response(
            &mut &b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n"[..],
            1024
        )
        .is_err());
        assert!(read_response(&mut &b"nonsense\r\n\r\n"[..], 1024).is_err());
    }

    /// An interim `100 Continue` is not the answer: the final one after it is. A status
    /// line that is not HTTP/1.x with three digits is no answer at all.
    #[test]
    fn interim_answers_are_read_past_and_status_lines_are_strict() {
        let r = read_response(
            &mut &b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 400 X\r\nContent-Length: 5\r\n\r\nhello"
                [..],
            1024,
        )
        .unwrap();
        assert_eq!((r.status, &r.body[..]), (400, &b"hello"[..]));
        for raw in [
            "HTTP/2 200 OK\r\n\r\n",
            "HTTP/1.1 +200 OK\r\n\r\n",
            "HTTP/1.9 200 OK\r\n\r\n",
        ] {
            assert!(read_response(&mut raw.as_bytes(), 1024).is_err(), "{raw:?}");
        }
    }

    /// A chunk size that would overflow the running total is an error, not a panic (nor, in
    /// a build without overflow checks, an out-of-range slice).
    #[test]
    fn a_chunk_size_near_usize_max_is_refused() {
        for raw in [
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\n{\r\nffffffffffffffff\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffff\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n401\r\n",
        ] {
            let err = read_response(&mut raw.as_bytes(), 1024).unwrap_err();
            assert!(err.to_string().contains("over the limit"), "{err}");
        }
    }
}

//! The head of an HTTP/1.x response, read the same strict, bounded way by every reader of
//! one: the WebSocket upgrade, a proxy's answer to CONNECT and the Cognito client. Fuzzed
//! (`fuzz/fuzz_targets/http.rs`: whole or one byte at a time, every chunk size).

use std::io::{self, Read};

/// A response head: the status line and the header fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    /// The three-digit status code (never an interim 1xx other than 101).
    pub status: u16,
    /// The reason phrase (server text: show it through `printable`).
    pub reason: String,
    /// Header fields in order, names in lower case, values trimmed.
    pub fields: Vec<(String, String)>,
}

impl Head {
    /// The first field named `name` (lower case).
    pub fn field(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Why no head could be read.
#[derive(Debug)]
pub enum HeadError {
    /// The connection ended before the head did.
    Closed,
    /// The head is longer than the limit given.
    TooLong(usize),
    /// The first line is not an HTTP/1.x status line; what it said, escaped and shortened.
    NotHttp(String),
    /// More than [`MAX_INTERIM`] interim (1xx) answers.
    TooManyInterim,
    /// Reading failed (a timeout included).
    Io(io::Error),
}

impl std::fmt::Display for HeadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HeadError::Closed => {
                f.write_str("the connection closed before the answer's head ended")
            }
            HeadError::TooLong(max) => write!(f, "the answer's head is longer than {max} bytes"),
            HeadError::NotHttp(line) => write!(f, "the answer is not HTTP/1.x: {line:?}"),
            HeadError::TooManyInterim => f.write_str("too many interim (1xx) answers"),
            HeadError::Io(e) => write!(f, "{e}"),
        }
    }
}

/// Interim answers (100 Continue, 103 Early Hints) read past at most.
pub const MAX_INTERIM: usize = 8;

/// Reads one response head of at most `max` bytes from `r`, `chunk` bytes per read at most,
/// reading past interim 1xx answers (101 Switching Protocols is final). Returns the head and
/// the bytes read past its end (none when `chunk` is 1: a reader that must leave the rest of
/// the stream to the next layer, as a proxy tunnel does, reads byte by byte).
pub fn read_head(
    r: &mut impl Read,
    max: usize,
    chunk: usize,
) -> Result<(Head, Vec<u8>), HeadError> {
    let mut buf: Vec<u8> = Vec::with_capacity(chunk.clamp(1, 512));
    let mut piece = vec![0u8; chunk.clamp(1, 4096)];
    let mut interim = 0;
    loop {
        // Bytes already read may hold the next head (after an interim answer).
        let end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i;
            }
            if buf.len() > max {
                return Err(HeadError::TooLong(max));
            }
            let n = match r.read(&mut piece) {
                Ok(0) => return Err(HeadError::Closed),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(HeadError::Io(e)),
            };
            buf.extend_from_slice(&piece[..n]);
        };
        if end + 4 > max {
            return Err(HeadError::TooLong(max));
        }
        let head = parse(&buf[..end])?;
        let rest = buf.split_off(end + 4);
        if (100..200).contains(&head.status) && head.status != 101 {
            interim += 1;
            if interim > MAX_INTERIM {
                return Err(HeadError::TooManyInterim);
            }
            buf = rest;
            continue;
        }
        return Ok((head, rest));
    }
}

/// Parses a head without its final blank line.
fn parse(bytes: &[u8]) -> Result<Head, HeadError> {
    let text = String::from_utf8_lossy(bytes);
    let mut lines = text.split("\r\n");
    let first = lines.next().unwrap_or_default();
    let status = status_line(first)
        .ok_or_else(|| HeadError::NotHttp(crate::error::printable_max(first, 100)))?;
    let fields = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Ok(Head {
        status: status.status,
        reason: status.reason.to_string(),
        fields,
    })
}

/// What a status line says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatusLine<'a> {
    /// The three-digit status code.
    pub status: u16,
    /// The reason phrase (server text: show it through `printable`).
    pub reason: &'a str,
}

/// Parses `HTTP/1.1 101 Switching Protocols` (or `HTTP/1.0`): exactly three digits, then
/// the end or a space. Anything else — `HTTP/2 200`, `HTTP/1.9 200`, `+200`, `HTTP/1.1 1010`
/// — is `None`: not an answer we understand.
pub fn status_line(line: &str) -> Option<StatusLine<'_>> {
    let rest = line
        .strip_prefix("HTTP/1.1 ")
        .or_else(|| line.strip_prefix("HTTP/1.0 "))?;
    let code = rest.get(..3)?;
    // Three digits, the first 1 to 5 (RFC 9110 §15): `020` is no status.
    if !code.bytes().all(|b| b.is_ascii_digit()) || !(b'1'..=b'5').contains(&code.as_bytes()[0]) {
        return None;
    }
    let after = &rest[3..];
    if !(after.is_empty() || after.starts_with(' ')) {
        return None;
    }
    Some(StatusLine {
        status: code.parse().ok()?,
        reason: after.trim_start(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hands out one byte per read.
    struct Drip<'a>(&'a [u8]);

    impl Read for Drip<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            match (self.0.split_first(), buf.first_mut()) {
                (Some((&b, rest)), Some(slot)) => {
                    *slot = b;
                    self.0 = rest;
                    Ok(1)
                }
                _ => Ok(0),
            }
        }
    }

    #[test]
    fn heads_read_alike_whatever_the_chunk_and_keep_what_follows() {
        let input = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 101 Switching Protocols\r\n\
            Upgrade: websocket\r\nX-Y:  z \r\n\r\n\x82\x02ab";
        for chunk in [1, 2, 7, 512] {
            let mut r = &input[..];
            let (head, rest) = read_head(&mut r, 1024, chunk).unwrap();
            assert_eq!(head.status, 101);
            assert_eq!(head.field("upgrade"), Some("websocket"));
            assert_eq!(head.field("x-y"), Some("z"));
            // What was read past the head, then what is left unread: the frames after it.
            assert_eq!([&rest[..], r].concat(), b"\x82\x02ab", "chunk {chunk}");
            if chunk == 1 {
                assert!(
                    rest.is_empty(),
                    "byte by byte nothing is read past the head"
                );
            }
        }
        let (head, _) = read_head(&mut Drip(input), 1024, 512).unwrap();
        assert_eq!(head.status, 101);
    }

    #[test]
    fn bad_heads_are_named() {
        let long = format!("HTTP/1.1 200 OK\r\nX: {}\r\n\r\n", "a".repeat(2000));
        assert!(matches!(
            read_head(&mut long.as_bytes(), 1024, 512),
            Err(HeadError::TooLong(1024))
        ));
        assert!(matches!(
            read_head(&mut &b"HTTP/1.1 200 OK\r\n"[..], 1024, 1),
            Err(HeadError::Closed)
        ));
        let e = read_head(&mut &b"SSH-2.0-OpenSSH\r\n\r\n"[..], 1024, 512).unwrap_err();
        assert!(e.to_string().contains("SSH-2.0"), "{e}");
        let many = "HTTP/1.1 103 Early Hints\r\n\r\n".repeat(9);
        assert!(matches!(
            read_head(&mut many.as_bytes(), 4096, 64),
            Err(HeadError::TooManyInterim)
        ));
    }

    #[test]
    fn only_http_1_x_with_three_digits() {
        assert_eq!(
            status_line("HTTP/1.1 101 Switching Protocols"),
            Some(StatusLine {
                status: 101,
                reason: "Switching Protocols"
            })
        );
        assert_eq!(status_line("HTTP/1.0 200").map(|s| s.status), Some(200));
        for bad in [
            "HTTP/2 200 OK",
            "HTTP/1.9 200 OK",
            "HTTP/1.1 +200 OK",
            "HTTP/1.1 1010 x",
            "HTTP/1.1 20",
            "HTTP/1.1 2x0 OK",
            "HTTP/1.1 020 OK",
            "HTTP/1.1 600 X",
            "http/1.1 200 OK",
            "",
        ] {
            assert_eq!(status_line(bad), None, "{bad:?}");
        }
    }
}

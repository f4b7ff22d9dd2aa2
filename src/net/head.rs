//! The status line of an HTTP/1.x response, read the same strict way by every reader of a
//! response head (the WebSocket upgrade, a proxy's answer to CONNECT, the Cognito client).

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

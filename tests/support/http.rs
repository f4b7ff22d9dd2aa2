//! Reading whole HTTP/1.1 requests in hand-written test servers.
//!
//! A server that answers after one `read` and then closes may leave part of the request (the
//! body, sent in a second segment) unread; Linux then resets the connection instead of closing
//! it, and the client can see "connection reset" before it reads the answer. Every stub reads
//! the whole request first.

use std::io::{self, Read};

/// The longest request head accepted.
const MAX_HEAD: usize = 64 * 1024;

/// Reads one request: the head up to the blank line, then `Content-Length` bytes of body.
/// Returns head and body as text.
pub fn read_request(stream: &mut impl Read) -> io::Result<String> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte)? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        head.push(byte[0]);
        if head.len() > MAX_HEAD {
            return Err(io::Error::other("request head too long"));
        }
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    let length = text
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse::<usize>().ok())?
        })
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body)?;
    Ok(text + &String::from_utf8_lossy(&body))
}

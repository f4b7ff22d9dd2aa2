//! The HTTP/1.x response readers: the head reader every response goes through (the
//! WebSocket upgrade reads 512 bytes at a time, a proxy's answer to CONNECT one byte at a
//! time, the Cognito client through a buffer) and the Cognito client's body reader.
//! Arbitrary bytes never panic, never allocate beyond the limits, and whatever the chunk size
//! the same head and the same bytes after it come out.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mqtt_pubsub::internals::http::{read_head, read_response, status_line};

const MAX_BODY: usize = 4096;
const MAX_HEAD: usize = 2048;

#[path = "drip.rs"]
mod drip;
use drip::Drip;

fuzz_target!(|data: &[u8]| {
    let whole = read_response(&mut &data[..], MAX_BODY);
    let dripped = read_response(&mut Drip(data), MAX_BODY);
    match (&whole, &dripped) {
        (Ok(a), Ok(b)) => {
            assert_eq!((a.status, &a.body), (b.status, &b.body));
            assert!(a.body.len() <= MAX_BODY);
            assert!(a.status == 101 || (200..600).contains(&a.status));
        }
        (Err(_), Err(_)) => {}
        _ => panic!("whole {whole:?} but dripped {dripped:?}"),
    }
    // The head reader: one byte per read (the proxy's), 512 (the upgrade's), and a server
    // dripping its answer, all agree on the head, and on what follows it where they read on.
    let mut r = data;
    let bytewise = read_head(&mut r, MAX_HEAD, 1);
    let chunked = read_head(&mut &data[..], MAX_HEAD, 512);
    let dripped = read_head(&mut Drip(data), MAX_HEAD, 512);
    match (&bytewise, &chunked, &dripped) {
        (Ok((a, rest_a)), Ok((b, rest_b)), Ok((c, rest_c))) => {
            assert!(rest_a.is_empty(), "byte by byte reads nothing past the head");
            assert_eq!(a, b);
            assert_eq!(a, c);
            assert!(rest_c.is_empty(), "a drip hands one byte at a time");
            // The 512-byte reader's extra bytes are what the bytewise one left unread.
            assert!(r.starts_with(rest_b), "the rest is what follows the head");
            assert!(a.status != 100 && (101..600).contains(&a.status));
        }
        (Err(_), Err(_), Err(_)) => {}
        // A head longer than the limit may be caught at different points, but never
        // accepted by one reader and refused by another otherwise.
        _ => panic!("bytewise {bytewise:?}, chunked {chunked:?}, dripped {dripped:?}"),
    }
    if let Ok(text) = std::str::from_utf8(data) {
        if let Some(s) = status_line(text) {
            assert!(s.status <= 999);
        }
    }
});

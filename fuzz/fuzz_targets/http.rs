//! The HTTP/1.x response reader (the Cognito client's; its status-line parser is every
//! response reader's): arbitrary bytes never panic, never allocate beyond the body limit,
//! and a response read whole or through a reader that returns one byte at a time reads the
//! same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mqtt_pubsub::internals::http::{read_response, status_line};

const MAX_BODY: usize = 4096;

/// A reader that hands out one byte per call (a server dripping its answer).
struct Drip<'a>(&'a [u8]);

impl std::io::Read for Drip<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
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

fuzz_target!(|data: &[u8]| {
    let whole = read_response(&mut &data[..], MAX_BODY);
    let dripped = read_response(&mut Drip(data), MAX_BODY);
    match (&whole, &dripped) {
        (Ok(a), Ok(b)) => {
            assert_eq!((a.status, &a.body), (b.status, &b.body));
            assert!(a.body.len() <= MAX_BODY);
            assert!((200..600).contains(&a.status));
        }
        (Err(_), Err(_)) => {}
        _ => panic!("whole {whole:?} but dripped {dripped:?}"),
    }
    if let Ok(text) = std::str::from_utf8(data) {
        if let Some(s) = status_line(text) {
            assert!(s.status <= 999);
        }
    }
});

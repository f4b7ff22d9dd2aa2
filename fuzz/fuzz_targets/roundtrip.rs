//! Every packet the decoder accepts re-encodes to bytes that decode to the same packet.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mqtt_pubsub::internals::codec::{decode_packet, Framer};

fuzz_target!(|data: &[u8]| {
    let mut framer = Framer::new(1 << 16);
    let _ = framer.feed(data, |p| {
        let mut bytes = Vec::new();
        p.encode(&mut bytes);
        let again = decode_packet(&bytes).expect("a re-encoded packet decodes");
        assert_eq!(again, p);
        Ok(())
    });
});

//! Arbitrary bytes through the framer, fed whole and in chunks chosen by the input's first
//! byte (as WebSocket frames arrive): no panic, nothing buffered beyond the limit, and the
//! same packets (then the same verdict) either way; for MQTT 3.1.1 and MQTT 5 alike.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "chunking.rs"]
mod chunking;
use mqtt_pubsub::internals::codec::Framer;
use mqtt_pubsub::internals::packet::Inbound;
use mqtt_pubsub::MqttVersion;

const MAX: usize = 4096;

fn run(chunks: &[&[u8]], version: MqttVersion) -> (Vec<Inbound>, bool) {
    let mut framer = Framer::with_version(MAX, version);
    let mut packets = Vec::new();
    for c in chunks {
        let r = framer.feed(c, |p| {
            packets.push(p);
            Ok(())
        });
        // Only the bytes that actually arrived are held, never an announced size.
        assert!(framer.buffered() <= MAX, "buffered {} > {MAX}", framer.buffered());
        if r.is_err() {
            return (packets, true);
        }
    }
    (packets, false)
}

fuzz_target!(|data: &[u8]| {
    let Some((&seed, bytes)) = data.split_first() else { return };
    let chunks = chunking::chunks(seed, bytes);
    for version in [MqttVersion::V3_1_1, MqttVersion::V5] {
        let whole = run(&[bytes], version);
        let split = run(&chunks, version);
        assert_eq!(whole.1, split.1, "same verdict whole and in chunks");
        assert_eq!(whole.0, split.0, "same packets whole and in chunks");
    }
});

//! Every packet the decoder accepts re-encodes to bytes that decode to the same packet, for
//! MQTT 3.1.1 and MQTT 5 alike (the same bytes go through both).
#![no_main]

use libfuzzer_sys::fuzz_target;
use mqtt_pubsub::internals::codec::{decode_packet_as, Framer};
use mqtt_pubsub::MqttVersion;

fuzz_target!(|data: &[u8]| {
    for version in [MqttVersion::V3_1_1, MqttVersion::V5] {
        let mut framer = Framer::with_version(1 << 16, version);
        let _ = framer.feed(data, |p| {
            let mut bytes = Vec::new();
            p.encode(&mut bytes);
            let again = decode_packet_as(&bytes, version).expect("a re-encoded packet decodes");
            assert_eq!(again, p);
            Ok(())
        });
    }
});

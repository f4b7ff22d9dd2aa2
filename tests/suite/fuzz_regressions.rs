//! Replays the fuzz seeds and every saved crash artifact (`fuzz/regressions/`) through the
//! properties of the `decode` and `roundtrip` fuzz targets, on every `cargo test`.

use std::path::Path;

use mqtt_pubsub::internals::codec::{decode_packet_as, Framer};
use mqtt_pubsub::internals::packet::Inbound;
use mqtt_pubsub::MqttVersion;

#[path = "../../fuzz/fuzz_targets/chunking.rs"]
mod chunking;

fn inputs() -> Vec<(String, Vec<u8>)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut out = Vec::new();
    for dir in ["seeds/packets", "regressions"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir)) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "md") {
                continue;
            }
            out.push((p.display().to_string(), std::fs::read(&p).unwrap()));
        }
    }
    out
}

fn run(max: usize, chunks: &[&[u8]], version: MqttVersion) -> (Vec<Inbound>, bool) {
    let mut framer = Framer::with_version(max, version);
    let mut packets = Vec::new();
    for c in chunks {
        let r = framer.feed(c, |p| {
            packets.push(p);
            Ok(())
        });
        assert!(framer.buffered() <= max);
        if r.is_err() {
            return (packets, true);
        }
    }
    (packets, false)
}

#[test]
fn seeds_and_regressions_hold_the_decode_and_roundtrip_properties() {
    let all = inputs();
    assert!(
        all.len() >= 17,
        "the committed seed corpus is there ({} files)",
        all.len()
    );
    let (mut decoded, mut decoded_v5) = (0, 0);
    for (name, data) in all {
        for version in [MqttVersion::V3_1_1, MqttVersion::V5] {
            // decode: the first byte picks the chunking, as in the target.
            if let Some((&seed, bytes)) = data.split_first() {
                let whole = run(4096, &[bytes], version);
                let chunks = chunking::chunks(seed, bytes);
                assert_eq!(whole, run(4096, &chunks, version), "{name}");
            }
            // roundtrip: every accepted packet re-encodes to an equal packet.
            let mut framer = Framer::with_version(1 << 16, version);
            let _ = framer.feed(&data, |p| {
                let mut bytes = Vec::new();
                p.encode(&mut bytes);
                assert_eq!(decode_packet_as(&bytes, version).unwrap(), p, "{name}");
                if version == MqttVersion::V5 {
                    decoded_v5 += 1;
                } else {
                    decoded += 1;
                }
                Ok(())
            });
        }
    }
    assert!(decoded >= 17, "every seed packet type decodes ({decoded})");
    assert!(decoded_v5 >= 20, "the v5 seeds decode as v5 ({decoded_v5})");
}

/// The outbox reader's seeds: a full log, the same log torn in its last record, a log with
/// only its binding.
#[test]
fn outbox_seeds_replay_as_written() {
    use mqtt_pubsub::internals::outbox_log::replay;
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/outbox");
    let full = replay(&std::fs::read(dir.join("full.log")).unwrap()).unwrap();
    assert_eq!(full.publishes.keys().copied().collect::<Vec<_>>(), [1]);
    assert_eq!(full.publishes[&1].pid, Some(7));
    assert_eq!(full.inbound.iter().copied().collect::<Vec<_>>(), [10]);
    let torn = replay(&std::fs::read(dir.join("torn.log")).unwrap()).unwrap();
    assert!(torn.torn > 0 && torn.inbound.is_empty());
    assert_eq!(torn.publishes, full.publishes);
    let empty = replay(&std::fs::read(dir.join("empty.log")).unwrap()).unwrap();
    assert!(empty.publishes.is_empty() && empty.binding.is_some());
}

/// The MQTT 5 seeds (`fuzz/seeds/v5_seeds.py`): every packet a server sends decodes whole as
/// v5; the hostile ones and the client's packets are refused.
#[test]
fn v5_seeds_decode_or_are_refused_as_named() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/packets");
    let mut checked = 0;
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        let Some(kind) = name.strip_prefix("v5_") else {
            continue;
        };
        let data = std::fs::read(e.path()).unwrap();
        let mut packets = 0;
        let r = Framer::with_version(1 << 16, MqttVersion::V5).feed(&data, |_| {
            packets += 1;
            Ok(())
        });
        let refused =
            kind.starts_with("hostile") || ["connect", "subscribe", "unsubscribe"].contains(&kind);
        if refused {
            assert!(r.is_err(), "{name} was accepted");
        } else {
            assert!(r.is_ok() && packets > 0, "{name}: {r:?}");
        }
        checked += 1;
    }
    assert!(checked >= 28, "{checked} v5 seeds");
}

/// The HTTP reader's seeds (`fuzz/seeds/http`) read as the fuzz target expects: the chunk
/// size that overflowed is an error, an interim 100 is read past, HTTP/2 is no answer.
#[test]
fn http_seeds_read_as_expected() {
    use mqtt_pubsub::internals::http::read_response;
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/http");
    let read = |name: &str| read_response(&mut &std::fs::read(dir.join(name)).unwrap()[..], 4096);
    assert!(read("chunk_overflow").is_err());
    assert!(read("http2").is_err());
    // Found by the fuzzer: a status of 020 was taken as a final answer.
    assert!(read("status_020").is_err());
    let r = read("continue_then_400").unwrap();
    assert_eq!((r.status, &r.body[..]), (400, &b"hello"[..]));
    assert_eq!(read("chunked").unwrap().body, b"abcde");
    assert_eq!(read("close_delimited").unwrap().status, 500);
}

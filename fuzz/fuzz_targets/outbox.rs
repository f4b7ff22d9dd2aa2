//! The outbox reader: arbitrary file contents never panic, never allocate beyond the input,
//! read whole or streamed one byte at a time under limits they agree (or the limits refuse),
//! and what a file replays to, written out again, replays to the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mqtt_pubsub::internals::outbox_log::{encode, replay, replay_stream, Limits, Record, MAGIC};

#[path = "drip.rs"]
mod drip;
use drip::Drip;

fuzz_target!(|data: &[u8]| {
    let whole = replay(data);
    // Streamed under limits: the same answer, or a refusal the limits explain.
    let limits = Limits {
        max_live: 4096,
        max_tail: 1024,
    };
    let streamed = replay_stream(&mut Drip(data), data.len() as u64, limits);
    match (&whole, &streamed) {
        (Ok(a), Ok(b)) => assert_eq!(a, b),
        (Err(_), Err(_)) => {}
        (Ok(a), Err(e)) => assert!(
            e.contains("outbox_max_bytes") || e.contains("more than a torn write"),
            "whole {a:?}, streamed {e}"
        ),
        (Err(e), Ok(b)) => panic!("whole {e}, streamed {b:?}"),
    }
    let Ok(state) = whole else { return };
    assert!(state.valid_len + state.torn == data.len());
    let Some((client_id, url)) = state.binding.clone() else {
        return;
    };
    let mut out = MAGIC.to_vec();
    encode(&Record::Binding { client_id, url }, &mut out);
    for (ticket, p) in &state.publishes {
        encode(
            &Record::Publish {
                ticket: *ticket,
                qos: p.qos,
                retain: p.retain,
                topic: p.topic.clone(),
                payload: p.payload.clone(),
                props: p.props.clone(),
            },
            &mut out,
        );
        if let Some(pid) = p.pid {
            encode(&Record::Assigned { ticket: *ticket, pid }, &mut out);
        }
        if p.released {
            encode(&Record::Released { ticket: *ticket }, &mut out);
        }
    }
    for pid in &state.inbound {
        encode(&Record::InboundReceived { pid: *pid }, &mut out);
    }
    let again = replay(&out).expect("a rewritten state replays");
    assert_eq!(again.publishes, state.publishes);
    assert_eq!(again.inbound, state.inbound);
    assert_eq!(again.binding, state.binding);
    assert_eq!(again.torn, 0);
});

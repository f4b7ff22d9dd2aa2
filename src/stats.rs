//! Counters a program can read: what each provider published, had acknowledged, received,
//! delivered and dropped, and what it holds now. Cheap enough to leave on: the I/O thread
//! counts in plain integers and stores them into relaxed atomics once per turn of its loop
//! (after each batch it read or wrote, and before a flush or close answers), so a snapshot
//! can lag the I/O thread by one turn and costs the hot path no atomic read-modify-write.

use std::sync::atomic::{AtomicU64, Ordering};

/// One provider's counters and gauges, as [`PubSub::stats`](crate::PubSub::stats) returns
/// them. Counters count from the provider's start (across reconnects); gauges say what is
/// held now.
///
/// ```no_run
/// # let pubsub = mqtt_pubsub::PubSub::new();
/// let s = pubsub.stats("default").expect("a provider of that name");
/// println!("sent {} acked {} in flight {}", s.sent, s.acknowledged, s.in_flight);
/// if s.dropped_full > 0 {
///     eprintln!("a subscription is too small for its bursts");
/// }
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ProviderStats {
    /// Publishes the provider accepted (one per topic of a publish call; those refused at
    /// the call, e.g. a payload over a limit, are not counted), and those its outbox
    /// restored from an earlier process.
    pub published: u64,
    /// PUBLISH packets written for the first time (QoS 0 included).
    pub sent: u64,
    /// QoS 1/2 publishes the broker acknowledged (PUBACK; PUBCOMP for QoS 2) with success.
    pub acknowledged: u64,
    /// Publishes the broker refused: an MQTT 5 failure reason code, or closing the
    /// connection right after it three times in a row.
    pub rejected: u64,
    /// PUBLISH packets sent again (DUP) after a reconnect.
    pub resent: u64,
    /// PUBLISH packets received from the broker (a QoS 2 duplicate before PUBREL counts, and
    /// so does one skipped as oversized).
    pub received: u64,
    /// Messages put into subscriptions (one per matching subscription, so one received
    /// message can count several times or none).
    pub delivered: u64,
    /// Messages not delivered because the subscription was full (or just dropped).
    pub dropped_full: u64,
    /// Incoming messages skipped because they exceed `max_packet_size`.
    pub dropped_oversized: u64,
    /// Persistent-session messages no subscription claimed, dropped over their bound
    /// (`unclaimed_capacity`).
    pub dropped_unclaimed: u64,
    /// Connections made after the first (the first, in the background or not, is not one).
    pub reconnects: u64,
    /// MQTT bytes read once connected (CONNACK, and the WebSocket frames and TLS records
    /// around the MQTT bytes, are not counted).
    pub bytes_in: u64,
    /// MQTT bytes written once connected (CONNECT not counted, the same way).
    pub bytes_out: u64,
    /// Gauge: QoS 1/2 publishes sent and not yet acknowledged.
    pub in_flight: u64,
    /// Gauge: requests waiting for a packet identifier or for the connection, and
    /// commands not yet taken by the I/O thread.
    pub queued: u64,
    /// Gauge: unfinished publishes in the durable outbox (0 without one).
    pub outbox_records: u64,
    /// Gauge: their bytes as the outbox bounds them (topic + payload + 64 each).
    pub outbox_bytes: u64,
    /// Gauge: persistent-session messages held for a subscription yet to be made.
    pub unclaimed: u64,
}

/// Which counter: the index into [`Cell`] and [`Tally`].
#[derive(Debug, Clone, Copy)]
pub(crate) enum Counter {
    Published,
    Sent,
    Acknowledged,
    Rejected,
    Resent,
    Received,
    Delivered,
    DroppedFull,
    DroppedOversized,
    DroppedUnclaimed,
    Reconnects,
    BytesIn,
    BytesOut,
    InFlight,
    Queued,
    OutboxRecords,
    OutboxBytes,
    Unclaimed,
}

const COUNTERS: usize = Counter::Unclaimed as usize + 1;

/// The I/O thread's plain counts, stored into the shared [`Cell`] once per turn.
#[derive(Debug, Default, Clone)]
pub(crate) struct Tally([u64; COUNTERS]);

impl Tally {
    /// Adds `n` to `counter`.
    #[inline]
    pub fn add(&mut self, counter: Counter, n: u64) {
        self.0[counter as usize] = self.0[counter as usize].wrapping_add(n);
    }

    /// Sets a gauge (or a count kept elsewhere).
    #[inline]
    pub fn set(&mut self, counter: Counter, n: u64) {
        self.0[counter as usize] = n;
    }
}

/// The shared side: what a snapshot reads.
#[derive(Debug, Default)]
pub(crate) struct Cell([AtomicU64; COUNTERS]);

impl Cell {
    /// Stores every count of `tally` (relaxed: each value is whole, the set may be one turn
    /// apart from another snapshot's).
    pub fn store(&self, tally: &Tally) {
        for (cell, value) in self.0.iter().zip(tally.0.iter()) {
            cell.store(*value, Ordering::Relaxed);
        }
    }

    /// The snapshot.
    pub fn snapshot(&self) -> ProviderStats {
        let v = |c: Counter| self.0[c as usize].load(Ordering::Relaxed);
        ProviderStats {
            published: v(Counter::Published),
            sent: v(Counter::Sent),
            acknowledged: v(Counter::Acknowledged),
            rejected: v(Counter::Rejected),
            resent: v(Counter::Resent),
            received: v(Counter::Received),
            delivered: v(Counter::Delivered),
            dropped_full: v(Counter::DroppedFull),
            dropped_oversized: v(Counter::DroppedOversized),
            dropped_unclaimed: v(Counter::DroppedUnclaimed),
            reconnects: v(Counter::Reconnects),
            bytes_in: v(Counter::BytesIn),
            bytes_out: v(Counter::BytesOut),
            in_flight: v(Counter::InFlight),
            queued: v(Counter::Queued),
            outbox_records: v(Counter::OutboxRecords),
            outbox_bytes: v(Counter::OutboxBytes),
            unclaimed: v(Counter::Unclaimed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_reads_what_was_stored() {
        let mut t = Tally::default();
        t.add(Counter::Published, 3);
        t.add(Counter::Published, 2);
        t.set(Counter::InFlight, 7);
        let cell = Cell::default();
        assert_eq!(cell.snapshot(), ProviderStats::default());
        cell.store(&t);
        let s = cell.snapshot();
        assert_eq!((s.published, s.in_flight), (5, 7));
    }
}

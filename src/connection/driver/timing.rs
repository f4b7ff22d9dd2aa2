//! The I/O thread's timing decisions as functions of `now`: when small output is held back,
//! where a graceful close stands, whether the connection is read, and how long the thread
//! may sleep. No clock is read here; the unit tests below drive them with made-up instants,
//! as quinn-proto's tests drive `poll_timeout`/`handle_timeout`.

use std::time::{Duration, Instant};

/// Output smaller than this waits (Nagle-like) while acknowledgements are outstanding...
pub(super) const COALESCE_BYTES: usize = 8 * 1024;
/// ...for at most this long: a QoS 1/2 stream goes out in fewer, larger writes.
pub(super) const COALESCE_FOR: Duration = Duration::from_micros(200);
/// How long DISCONNECT may take to leave on close, after the close timeout's drain.
pub(super) const CLOSE_FLUSH: Duration = Duration::from_secs(1);
/// Output beyond which the connection stops reading until it is written: every packet read
/// may add an acknowledgement, and a server that sends without reading must not grow our
/// memory. Checked per WebSocket frame, so the output stays under this plus one frame's
/// acknowledgements.
pub(super) const MAX_BLOCKED_OUTPUT: usize = 256 * 1024;

/// Holding small output back (Nagle's idea, bounded by [`COALESCE_FOR`]): while publishes
/// await acknowledgements, their arrival wakes the thread anyway, and the publishes taken
/// meanwhile join the same write.
#[derive(Debug, Default)]
pub(super) struct Coalescer {
    since: Option<Instant>,
}

impl Coalescer {
    /// Whether to hold `output` bytes back at `now`. Never while nothing is in flight (a
    /// lone publish or a round trip goes at once), nor when `urgent` (flushing or closing),
    /// nor past [`COALESCE_FOR`] since holding began.
    pub fn hold(&mut self, now: Instant, output: usize, inflight: usize, urgent: bool) -> bool {
        if output == 0 || output >= COALESCE_BYTES || inflight == 0 || urgent {
            self.since = None;
            return false;
        }
        let since = *self.since.get_or_insert(now);
        if now.duration_since(since) >= COALESCE_FOR {
            self.since = None;
            return false;
        }
        true
    }

    /// When held output must go at the latest.
    pub fn until(&self) -> Option<Instant> {
        self.since.map(|t| t + COALESCE_FOR)
    }
}

/// Where a graceful close stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Closing {
    /// Not closing.
    No,
    /// Sending what was accepted and waiting for its acknowledgements, until the deadline.
    Draining(Instant),
    /// DISCONNECT is written; leaving once it is out or at the deadline.
    Disconnecting(Instant),
}

/// What the close asks of the I/O thread now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum CloseAction {
    /// Go on serving.
    Serve,
    /// Write DISCONNECT now; `late` when the close timeout cut the drain short.
    Disconnect {
        /// The drain ran out of time with work unfinished.
        late: bool,
    },
    /// Stop serving.
    Leave,
}

impl Closing {
    /// Moves the close along at `now`: `requested` starts the drain (for `close_timeout`);
    /// the drain ends when everything is `written` and `drained`, or at its deadline, with
    /// DISCONNECT; DISCONNECT has [`CLOSE_FLUSH`] to be written.
    pub fn step(
        &mut self,
        now: Instant,
        requested: bool,
        close_timeout: Duration,
        written: bool,
        drained: bool,
    ) -> CloseAction {
        if requested && *self == Closing::No {
            *self = Closing::Draining(now.checked_add(close_timeout).unwrap_or(far(now)));
        }
        match *self {
            Closing::No => CloseAction::Serve,
            Closing::Draining(deadline) => {
                let late = now >= deadline;
                if (written && drained) || late {
                    *self = Closing::Disconnecting(now + CLOSE_FLUSH);
                    CloseAction::Disconnect { late }
                } else {
                    CloseAction::Serve
                }
            }
            Closing::Disconnecting(deadline) => {
                if written || now >= deadline {
                    CloseAction::Leave
                } else {
                    CloseAction::Serve
                }
            }
        }
    }

    /// Whether a close has begun.
    pub fn started(&self) -> bool {
        *self != Closing::No
    }

    /// The deadline of the current step, if closing.
    pub fn deadline(&self) -> Option<Instant> {
        match *self {
            Closing::No => None,
            Closing::Draining(d) | Closing::Disconnecting(d) => Some(d),
        }
    }
}

/// A deadline too far to represent stands for "never" (about 30 years on).
fn far(now: Instant) -> Instant {
    now.checked_add(Duration::from_secs(1 << 30)).unwrap_or(now)
}

/// Whether the connection is read: not while the socket takes nothing and our output has
/// grown past [`MAX_BLOCKED_OUTPUT`] (the server's writes then block in turn), nor while a
/// subscription that acknowledges after processing is full (`paused`).
pub(super) fn reading(write_blocked: bool, output: usize, paused: bool) -> bool {
    let write_stalled = write_blocked && output >= MAX_BLOCKED_OUTPUT;
    !(write_stalled || paused)
}

/// How long the thread may sleep at `now`: until the earliest of `deadlines`, or for ever
/// (`None`) when there is none.
pub(super) fn sleep_for<const N: usize>(
    now: Instant,
    deadlines: [Option<Instant>; N],
) -> Option<Duration> {
    deadlines
        .into_iter()
        .flatten()
        .min()
        .map(|d| d.saturating_duration_since(now))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn small_output_is_held_while_acks_are_outstanding_and_for_no_longer_than_the_bound() {
        let t0 = Instant::now();
        let mut c = Coalescer::default();
        assert!(c.hold(t0, 100, 1, false));
        assert_eq!(c.until(), Some(t0 + COALESCE_FOR));
        // Still within the bound: held; the start does not move.
        assert!(c.hold(t0 + COALESCE_FOR / 2, 300, 1, false));
        assert_eq!(c.until(), Some(t0 + COALESCE_FOR));
        // At the bound: it goes, and holding starts afresh afterwards.
        assert!(!c.hold(t0 + COALESCE_FOR, 300, 1, false));
        assert_eq!(c.until(), None);
        assert!(c.hold(t0 + COALESCE_FOR + MS, 10, 1, false));
    }

    #[test]
    fn output_goes_at_once_when_nothing_is_in_flight_it_is_large_or_urgent() {
        let t0 = Instant::now();
        let mut c = Coalescer::default();
        assert!(!c.hold(t0, 100, 0, false), "a lone publish goes at once");
        assert!(!c.hold(t0, COALESCE_BYTES, 3, false), "a full batch goes");
        assert!(!c.hold(t0, 100, 3, true), "flushing or closing");
        assert!(!c.hold(t0, 0, 3, false), "nothing to hold");
        assert_eq!(c.until(), None);
        // Holding, then a flush: released and the timer cleared.
        assert!(c.hold(t0, 100, 3, false));
        assert!(!c.hold(t0 + MS / 10, 100, 3, true));
        assert_eq!(c.until(), None);
    }

    #[test]
    fn a_close_drains_then_disconnects_then_leaves_once_written() {
        let t0 = Instant::now();
        let timeout = Duration::from_secs(5);
        let mut c = Closing::No;
        assert_eq!(c.step(t0, false, timeout, true, true), CloseAction::Serve);
        assert!(!c.started());
        // Requested with work unfinished: draining until the close timeout.
        assert_eq!(c.step(t0, true, timeout, true, false), CloseAction::Serve);
        assert_eq!(c, Closing::Draining(t0 + timeout));
        assert_eq!(c.deadline(), Some(t0 + timeout));
        // Output not written yet: still draining.
        assert_eq!(
            c.step(t0 + MS, false, timeout, false, true),
            CloseAction::Serve
        );
        // Everything done: DISCONNECT, on time.
        assert_eq!(
            c.step(t0 + 2 * MS, false, timeout, true, true),
            CloseAction::Disconnect { late: false }
        );
        assert_eq!(c, Closing::Disconnecting(t0 + 2 * MS + CLOSE_FLUSH));
        // DISCONNECT not out yet: serve; out: leave.
        assert_eq!(
            c.step(t0 + 3 * MS, false, timeout, false, true),
            CloseAction::Serve
        );
        assert_eq!(
            c.step(t0 + 4 * MS, false, timeout, true, true),
            CloseAction::Leave
        );
    }

    #[test]
    fn a_close_timeout_cuts_the_drain_and_the_disconnect_short() {
        let t0 = Instant::now();
        let timeout = Duration::from_millis(500);
        let mut c = Closing::No;
        c.step(t0, true, timeout, false, false);
        // A second request does not move the deadline.
        c.step(t0 + MS, true, timeout, false, false);
        assert_eq!(c.deadline(), Some(t0 + timeout));
        assert_eq!(
            c.step(t0 + timeout, false, timeout, false, false),
            CloseAction::Disconnect { late: true }
        );
        let until = t0 + timeout + CLOSE_FLUSH;
        assert_eq!(
            c.step(until - MS, false, timeout, false, false),
            CloseAction::Serve
        );
        assert_eq!(
            c.step(until, false, timeout, false, false),
            CloseAction::Leave
        );
    }

    #[test]
    fn a_close_timeout_too_large_for_an_instant_waits_for_the_drain() {
        let t0 = Instant::now();
        let mut c = Closing::No;
        c.step(t0, true, Duration::MAX, false, false);
        assert!(c
            .deadline()
            .is_some_and(|d| d > t0 + Duration::from_secs(1 << 20)));
    }

    #[test]
    fn reading_stops_for_a_stalled_write_or_a_full_subscription() {
        assert!(reading(false, MAX_BLOCKED_OUTPUT * 2, false), "not blocked");
        assert!(
            reading(true, MAX_BLOCKED_OUTPUT - 1, false),
            "blocked, small output"
        );
        assert!(
            !reading(true, MAX_BLOCKED_OUTPUT, false),
            "blocked, output grown"
        );
        assert!(!reading(false, 0, true), "a full subscription");
    }

    #[test]
    fn the_sleep_lasts_until_the_earliest_deadline() {
        let t0 = Instant::now();
        assert_eq!(sleep_for(t0, [None, None]), None, "nothing due: for ever");
        assert_eq!(
            sleep_for(t0, [Some(t0 + 30 * MS), None, Some(t0 + 10 * MS)]),
            Some(10 * MS)
        );
        // A deadline already past: no sleep at all.
        assert_eq!(sleep_for(t0 + MS, [Some(t0)]), Some(Duration::ZERO));
    }
}

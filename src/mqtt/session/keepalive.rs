//! Keep-alive: a PINGREQ when the link has been quiet in either direction for a whole
//! interval, and a dead link when its PINGRESP does not come within half an interval.

use std::time::{Duration, Instant};

use crate::error::{Error, Result};

#[derive(Debug)]
pub(super) struct KeepAlive {
    /// Zero: off.
    interval: Duration,
    last_out: Instant,
    last_in: Instant,
    ping_sent: Option<Instant>,
}

/// What the clock asks for.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Tick {
    /// Nothing to do.
    Idle,
    /// Send a PINGREQ now.
    Ping,
}

impl KeepAlive {
    pub fn new(interval: Duration, now: Instant) -> KeepAlive {
        KeepAlive {
            interval,
            last_out: now,
            last_in: now,
            ping_sent: None,
        }
    }

    /// How long a PINGREQ may wait for its PINGRESP: half the interval, so that a dead link
    /// is noticed within 1.5 × the interval.
    pub fn ping_timeout(&self) -> Duration {
        (self.interval / 2).max(Duration::from_millis(100))
    }

    /// Uses `interval` from now on (a server's keep-alive; zero disables).
    pub fn set_interval(&mut self, interval: Duration) {
        self.interval = interval;
    }

    /// Starts over at `now` (a new connection).
    pub fn restart(&mut self, now: Instant) {
        self.last_in = now;
        self.last_out = now;
        self.ping_sent = None;
    }

    /// No connection: no ping is outstanding.
    pub fn stop(&mut self) {
        self.ping_sent = None;
    }

    /// Something arrived.
    pub fn received(&mut self, now: Instant) {
        self.last_in = now;
    }

    /// Something was written.
    pub fn sent(&mut self, now: Instant) {
        self.last_out = now;
    }

    /// Whether a PINGREQ waits for its PINGRESP.
    pub fn ping_outstanding(&self) -> bool {
        self.ping_sent.is_some()
    }

    /// The PINGRESP arrived.
    pub fn pong(&mut self) {
        self.ping_sent = None;
    }

    /// Runs the clock (connected only). An error means the link is dead.
    pub fn poll(&mut self, now: Instant) -> Result<Tick> {
        if self.interval.is_zero() {
            return Ok(Tick::Idle);
        }
        if let Some(sent) = self.ping_sent {
            if now >= sent + self.ping_timeout() {
                return Err(Error::ConnectionLost(format!(
                    "no PINGRESP within {:?} (keep-alive {:?})",
                    self.ping_timeout(),
                    self.interval
                )));
            }
        } else if now >= self.last_out.min(self.last_in) + self.interval {
            // Quiet in either direction for a whole interval: the broker needs to hear from us
            // [MQTT-3.1.2-23], and we need to know the link still carries.
            self.ping_sent = Some(now);
            self.last_out = now;
            return Ok(Tick::Ping);
        }
        Ok(Tick::Idle)
    }

    /// When [`KeepAlive::poll`] next has something to do (connected only).
    pub fn next_deadline(&self) -> Option<Instant> {
        if self.interval.is_zero() {
            return None;
        }
        Some(match self.ping_sent {
            Some(sent) => sent + self.ping_timeout(),
            None => self.last_out.min(self.last_in) + self.interval,
        })
    }

    /// The deadline is never before the ping it waits for.
    // Used by the fuzz targets, the benchmark and the tests only.
    #[cfg_attr(not(feature = "__internals"), allow(dead_code))]
    pub fn check(&self) -> std::result::Result<(), String> {
        if let (Some(sent), Some(deadline)) = (self.ping_sent, self.next_deadline()) {
            if deadline < sent {
                return Err("keep-alive deadline before the ping".into());
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn pings_when_quiet_and_declares_the_link_dead_without_pingresp() {
        let t0 = Instant::now();
        let mut k = KeepAlive::new(10 * S, t0);
        assert_eq!(k.next_deadline(), Some(t0 + 10 * S));
        assert_eq!(k.poll(t0 + 9 * S).unwrap(), Tick::Idle);
        assert_eq!(k.poll(t0 + 10 * S).unwrap(), Tick::Ping);
        assert_eq!(k.next_deadline(), Some(t0 + 15 * S));
        assert_eq!(k.poll(t0 + 14 * S).unwrap(), Tick::Idle);
        assert!(matches!(k.poll(t0 + 15 * S), Err(Error::ConnectionLost(_))));
    }

    #[test]
    fn the_pong_clears_the_ping_and_quiet_in_either_direction_pings() {
        let t0 = Instant::now();
        let mut k = KeepAlive::new(10 * S, t0);
        assert_eq!(k.poll(t0 + 10 * S).unwrap(), Tick::Ping);
        k.pong();
        k.received(t0 + 11 * S);
        assert_eq!(k.poll(t0 + 16 * S).unwrap(), Tick::Idle);
        assert!(k.check().is_ok());
        // Traffic only inbound: we still owe the broker a packet within the interval.
        let mut k = KeepAlive::new(10 * S, t0);
        k.received(t0 + 9 * S);
        assert_eq!(k.poll(t0 + 10 * S).unwrap(), Tick::Ping);
    }

    #[test]
    fn a_zero_interval_is_off() {
        let t0 = Instant::now();
        let mut k = KeepAlive::new(Duration::ZERO, t0);
        assert_eq!(k.next_deadline(), None);
        assert_eq!(k.poll(t0 + 1000 * S).unwrap(), Tick::Idle);
    }
}

//! A progress line on stderr for long work (thousands of messages, an outbox being flushed),
//! shown only when stderr is a terminal and redrawn at most ten times a second. Written here
//! rather than taken from `indicatif`: one carriage-returned line is all it needs.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

/// A line such as `mqtt-pub: 4200/10000 sent`, redrawn in place.
pub struct Progress {
    label: &'static str,
    total: Option<u64>,
    enabled: bool,
    drawn: Option<Instant>,
}

impl Progress {
    /// A progress line for `total` steps (`None`: unknown); silent when stderr is not a
    /// terminal or the work is under 1,000 steps.
    pub fn new(label: &'static str, total: Option<u64>) -> Progress {
        Progress {
            label,
            total,
            enabled: total.is_none_or(|t| t >= 1000) && std::io::stderr().is_terminal(),
            drawn: None,
        }
    }

    /// Step `done` of the total, with `what` (e.g. "sent"): drawn if 100 ms have passed.
    pub fn at(&mut self, done: u64, what: &str) {
        let now = Instant::now();
        if !self.enabled
            || self
                .drawn
                .is_some_and(|d| now - d < Duration::from_millis(100))
        {
            return;
        }
        self.drawn = Some(now);
        let total = self.total.map(|t| format!("/{t}")).unwrap_or_default();
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\r{}: {done}{total} {what}\x1b[K", self.label);
        let _ = err.flush();
    }

    /// Clears the line, if it was ever drawn.
    pub fn finish(&mut self) {
        if self.drawn.take().is_some() {
            let _ = write!(std::io::stderr().lock(), "\r\x1b[K");
        }
    }
}

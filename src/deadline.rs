//! Deadlines from timeouts that may be `Duration::MAX` ("no limit").

use std::time::{Duration, Instant};

/// `now + timeout`, or a far-away instant when that does not fit (`Duration::MAX` means
/// "no limit" wherever a timeout is taken).
pub(crate) fn deadline_after(timeout: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(timeout)
        .or_else(|| now.checked_add(Duration::from_secs(100 * 365 * 24 * 3600)))
        .or_else(|| now.checked_add(Duration::from_secs(365 * 24 * 3600)))
        .unwrap_or(now)
}

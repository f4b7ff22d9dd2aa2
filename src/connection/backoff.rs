//! Reconnect delays: exponential backoff with full jitter.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

use crate::options::ReconnectPolicy;

/// A random `u64` from the standard library's per-process random keys (no `rand` needed for
/// jitter and client ids).
pub fn random_u64() -> u64 {
    let mut h = RandomState::new().build_hasher();
    h.write_u64(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64),
    );
    h.finish()
}

/// The delay before reconnect attempt `attempt` (0-based): uniform in
/// `[0, min(max, initial × 2^attempt)]`.
pub fn delay(policy: &ReconnectPolicy, attempt: u32) -> Duration {
    let cap = policy
        .initial_delay
        .saturating_mul(1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX))
        .min(policy.max_delay);
    let nanos = cap.as_nanos().min(u64::MAX as u128) as u64;
    if nanos == 0 {
        return Duration::ZERO;
    }
    Duration::from_nanos(random_u64() % (nanos + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_stay_under_the_exponential_cap() {
        let p = ReconnectPolicy::exponential(Duration::from_millis(100), Duration::from_secs(2));
        for attempt in 0..40 {
            let cap = Duration::from_millis(100)
                .saturating_mul(1 << attempt.min(20))
                .min(Duration::from_secs(2));
            for _ in 0..20 {
                assert!(delay(&p, attempt) <= cap);
            }
        }
    }

    #[test]
    fn delays_are_jittered() {
        let p = ReconnectPolicy::exponential(Duration::from_secs(1), Duration::from_secs(60));
        let a: Vec<_> = (0..10).map(|_| delay(&p, 5)).collect();
        assert!(a.iter().any(|d| *d != a[0]), "{a:?}");
    }
}

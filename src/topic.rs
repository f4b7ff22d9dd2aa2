//! Topic names and filters: validation and matching (MQTT 3.1.1 §4.7).
//!
//! ```
//! use mqtt_pubsub::topic::{topic_matches, validate_topic_filter, validate_topic_name};
//! assert!(topic_matches("sensors/+/temp", "sensors/kitchen/temp"));
//! assert!(topic_matches("alerts/#", "alerts"));
//! assert!(!topic_matches("#", "$SYS/uptime"));
//! assert!(validate_topic_name("sensors/+").is_err());
//! assert!(validate_topic_filter("a/#/b").is_err());
//! ```

use crate::error::{Error, Result};

/// The longest topic a UTF-8 string field can carry [MQTT-1.5.3].
pub const MAX_TOPIC_LEN: usize = 65535;

/// Checks a topic name used to publish: not empty, no wildcards, no NUL, at most 65535 bytes
/// [MQTT-4.7.3-1], [MQTT-3.3.2-2], [MQTT-1.5.3-2].
pub fn validate_topic_name(topic: &str) -> Result<()> {
    if topic.is_empty() {
        return Err(Error::invalid_topic(
            topic,
            "a topic name must not be empty",
        ));
    }
    if topic.len() > MAX_TOPIC_LEN {
        return Err(Error::invalid_topic(topic, "longer than 65535 bytes"));
    }
    if topic.contains(['+', '#']) {
        return Err(Error::invalid_topic(
            topic,
            "wildcards (+ or #) are not allowed in a topic name",
        ));
    }
    if topic.contains('\0') {
        return Err(Error::invalid_topic(topic, "contains a NUL character"));
    }
    Ok(())
}

/// Checks a topic filter used to subscribe: `#` only as the whole last level, `+` only as a
/// whole level [MQTT-4.7.1-2], [MQTT-4.7.1-3]; `$share/<group>/<filter>` is accepted when the
/// group is a valid level and the filter after it is valid.
pub fn validate_topic_filter(filter: &str) -> Result<()> {
    if filter.is_empty() {
        return Err(Error::invalid_topic(
            filter,
            "a topic filter must not be empty",
        ));
    }
    if filter.len() > MAX_TOPIC_LEN {
        return Err(Error::invalid_topic(filter, "longer than 65535 bytes"));
    }
    if filter.contains('\0') {
        return Err(Error::invalid_topic(filter, "contains a NUL character"));
    }
    let inner = match strip_share(filter) {
        Some(Ok(inner)) => inner,
        Some(Err(reason)) => return Err(Error::invalid_topic(filter, reason)),
        None => filter,
    };
    let mut levels = inner.split('/').peekable();
    while let Some(level) = levels.next() {
        if level.contains('#') && (level != "#" || levels.peek().is_some()) {
            return Err(Error::invalid_topic(
                filter,
                "'#' must be the whole last level",
            ));
        }
        if level.contains('+') && level != "+" {
            return Err(Error::invalid_topic(filter, "'+' must be a whole level"));
        }
    }
    Ok(())
}

/// For `$share/<group>/<filter>`: `Some(Ok(filter))`; `Some(Err(..))` if malformed; `None` if
/// the filter is not a shared subscription.
fn strip_share(filter: &str) -> Option<std::result::Result<&str, &'static str>> {
    let rest = filter.strip_prefix("$share/")?;
    Some(match rest.split_once('/') {
        Some((group, inner))
            if !group.is_empty() && !group.contains(['+', '#']) && !inner.is_empty() =>
        {
            Ok(inner)
        }
        _ => Err("a shared subscription is $share/<group>/<filter>"),
    })
}

/// Whether `topic` (a valid topic name) matches `filter` (a valid filter), per §4.7:
/// `+` matches one level, `#` the parent level and any number below it (`a/#` matches `a`),
/// and wildcards in the first level do not match topics starting with `$` [MQTT-4.7.2-1].
/// A `$share/<group>/` prefix is ignored for matching.
pub fn topic_matches(filter: &str, topic: &str) -> bool {
    let filter = match strip_share(filter) {
        Some(Ok(inner)) => inner,
        Some(Err(_)) => return false,
        None => filter,
    };
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let mut f = filter.split('/');
    let mut t = topic.split('/');
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(fl), Some(tl)) if fl == tl => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_examples_multi_level() {
        // §4.7.1.2
        assert!(topic_matches(
            "sport/tennis/player1/#",
            "sport/tennis/player1"
        ));
        assert!(topic_matches(
            "sport/tennis/player1/#",
            "sport/tennis/player1/ranking"
        ));
        assert!(topic_matches(
            "sport/tennis/player1/#",
            "sport/tennis/player1/score/wimbledon"
        ));
        assert!(topic_matches("sport/#", "sport"));
        assert!(topic_matches("#", "sport/tennis"));
        assert!(topic_matches("#", "/"));
        assert!(validate_topic_filter("sport/tennis#").is_err());
        assert!(validate_topic_filter("sport/tennis/#/ranking").is_err());
    }

    #[test]
    fn spec_examples_single_level() {
        // §4.7.1.3
        assert!(topic_matches("sport/tennis/+", "sport/tennis/player1"));
        assert!(topic_matches("sport/tennis/+", "sport/tennis/player2"));
        assert!(!topic_matches(
            "sport/tennis/+",
            "sport/tennis/player1/ranking"
        ));
        assert!(!topic_matches("sport/+", "sport"));
        assert!(topic_matches("sport/+", "sport/"));
        assert!(topic_matches("+/+", "/finance"));
        assert!(topic_matches("/+", "/finance"));
        assert!(!topic_matches("+", "/finance"));
        assert!(validate_topic_filter("+").is_ok());
        assert!(validate_topic_filter("+/tennis/#").is_ok());
        assert!(validate_topic_filter("sport+").is_err());
        assert!(validate_topic_filter("sport/+/player1").is_ok());
    }

    #[test]
    fn dollar_topics_are_not_matched_by_leading_wildcards() {
        // §4.7.2
        assert!(!topic_matches("#", "$SYS/broker/clients"));
        assert!(!topic_matches("+/monitor/Clients", "$SYS/monitor/Clients"));
        assert!(topic_matches("$SYS/#", "$SYS/monitor/Clients"));
        assert!(topic_matches("$SYS/monitor/+", "$SYS/monitor/Clients"));
    }

    #[test]
    fn topic_names_reject_wildcards_empty_and_nul() {
        assert!(validate_topic_name("a/b").is_ok());
        assert!(validate_topic_name("/").is_ok());
        for bad in ["", "a/+", "a/#", "a\0b"] {
            assert!(
                matches!(validate_topic_name(bad), Err(Error::InvalidTopic { .. })),
                "{bad:?}"
            );
        }
        assert!(validate_topic_name(&"x".repeat(65536)).is_err());
        assert!(validate_topic_name(&"x".repeat(65535)).is_ok());
    }

    #[test]
    fn shared_subscriptions_match_their_inner_filter() {
        assert!(validate_topic_filter("$share/g/a/+").is_ok());
        assert!(validate_topic_filter("$share//a").is_err());
        assert!(validate_topic_filter("$share/g").is_err());
        assert!(topic_matches("$share/g/a/+", "a/b"));
        assert!(!topic_matches("$share/g/a/+", "b/b"));
    }

    #[test]
    fn exact_and_empty_levels() {
        assert!(topic_matches("a//b", "a//b"));
        assert!(!topic_matches("a/b", "a/b/c"));
        assert!(!topic_matches("a/b/c", "a/b"));
        assert!(topic_matches("a/+/c", "a//c"));
    }
}

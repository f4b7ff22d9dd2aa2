//! Topic names and filters: validation never panics, matching agrees with a naive reference
//! written here from MQTT 3.1.1 §4.7, and `covers` never claims a cover that matching denies.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mqtt_pubsub::internals::router::covers;
use mqtt_pubsub::topic::{topic_matches, validate_topic_filter, validate_topic_name};

/// §4.7 by recursion over levels: `#` (last) matches the rest including the parent level,
/// `+` one level, anything else itself; a first-level wildcard never matches a `$` topic.
fn naive(filter: &[&str], topic: &[&str], first: bool) -> bool {
    if first && topic.first().is_some_and(|t| t.starts_with('$')) && filter.first().is_some_and(|f| *f == "+" || *f == "#") {
        return false;
    }
    match (filter.split_first(), topic.split_first()) {
        (Some((&"#", _)), _) => true,
        (Some((&"+", fr)), Some((_, tr))) => naive(fr, tr, false),
        (Some((f, fr)), Some((t, tr))) => f == t && naive(fr, tr, false),
        (None, None) => true,
        _ => false,
    }
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (a, rest) = text.split_once('\u{1}').unwrap_or((&text, ""));
    let (b, c) = rest.split_once('\u{1}').unwrap_or((rest, ""));
    for s in [a, b, c] {
        let _ = validate_topic_name(s);
        let _ = validate_topic_filter(s);
    }
    let (filter, topic) = (a, b);
    if validate_topic_filter(filter).is_ok() && validate_topic_name(topic).is_ok() && !filter.starts_with("$share/") {
        let f: Vec<&str> = filter.split('/').collect();
        let t: Vec<&str> = topic.split('/').collect();
        assert_eq!(topic_matches(filter, topic), naive(&f, &t, true), "{filter:?} vs {topic:?}");
        let other = c;
        if validate_topic_filter(other).is_ok() && covers(other, filter) && topic_matches(filter, topic) {
            assert!(topic_matches(other, topic), "{other:?} covers {filter:?} but misses {topic:?}");
        }
    }
});

//! Which local subscriptions get an incoming message, and which filters the broker must know.
//!
//! Several local subscriptions of the same filter share one MQTT subscription: SUBSCRIBE goes
//! out for the first, UNSUBSCRIBE when the last one leaves. A message matching several
//! filters of one subscription is delivered to it once.
//!
//! Brokers may send one copy of a message per matching subscription [MQTT-3.3.5] (NATS and
//! rumqttd do), which would deliver `o/a` three times to a subscriber of `o/#`, `o/+` and
//! `o/a`. So the broker holds only the *maximal* wanted filters — those no other wanted
//! filter covers — each at the highest QoS of the filters it covers; local routing still
//! matches every filter. When a wider filter arrives, the narrower ones it covers are
//! unsubscribed; when it leaves, what it covered is subscribed again. The cost: a newly wanted
//! filter that is already covered does not get the broker's retained messages again, and a
//! subscriber may receive a message at a higher QoS than it asked for.
//!
//! The broker set is kept incrementally: adding a filter without wildcards compares it with
//! the wildcard filters on the broker only, so ten thousand plain filters cost ten thousand
//! hash look-ups and short scans, not a comparison of every pair.
//!
//! Shared subscriptions (`$share/{group}/{filter}`): MQTT 3.1.1 does not say for which
//! subscription a message was sent, so a message that matches a plain filter of this
//! connection is taken to be the plain subscription's copy and goes to plain subscriptions
//! only; shared subscriptions get the messages that match no plain filter of the connection.

use std::collections::{HashMap, HashSet};

use crate::mqtt::QoS;
use crate::topic::topic_matches;

#[derive(Debug)]
struct Route<S> {
    id: u64,
    filters: Vec<(String, QoS)>,
    sink: S,
}

#[derive(Debug, Clone, Copy)]
struct Want {
    /// Local subscriptions with this filter.
    count: usize,
    /// Highest QoS any of them asked for.
    qos: QoS,
    /// Kept on the broker after its last local subscription was dropped (persistent
    /// sessions keep their broker subscriptions across an ordinary exit).
    kept: bool,
}

/// What the broker must be told after a change: SUBSCRIBE these (new, or at a higher QoS),
/// then UNSUBSCRIBE those.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// Filters to subscribe, with their QoS, sorted.
    pub subscribe: Vec<(String, QoS)>,
    /// Filters to unsubscribe, sorted.
    pub unsubscribe: Vec<String>,
}

/// Routes topics to sinks of type `S` (a channel in the driver, anything in tests).
#[derive(Debug)]
pub struct Router<S> {
    routes: Vec<Route<S>>,
    /// Every filter some local subscription wants (or the broker keeps for us).
    wanted: HashMap<String, Want>,
    /// What the broker holds: the maximal wanted filters, each at the highest QoS it covers.
    on_broker: HashMap<String, QoS>,
    /// The filters of `on_broker` with wildcards: the only ones that can cover another.
    wild: HashSet<String>,
    /// How many routed filters are shared subscriptions.
    shared_filters: usize,
}

impl<S> Default for Router<S> {
    fn default() -> Self {
        Router {
            routes: Vec::new(),
            wanted: HashMap::new(),
            on_broker: HashMap::new(),
            wild: HashSet::new(),
            shared_filters: 0,
        }
    }
}

/// Whether every topic `inner` matches is also matched by `outer` (filters are valid).
pub fn covers(outer: &str, inner: &str) -> bool {
    #[cfg(test)]
    tests::COMPARISONS.with(|c| c.set(c.get() + 1));
    if outer.starts_with("$share/") || inner.starts_with("$share/") {
        return outer == inner;
    }
    // Leading wildcards do not match `$` topics [MQTT-4.7.2-1].
    if inner.starts_with('$') && (outer.starts_with('+') || outer.starts_with('#')) {
        return false;
    }
    let mut o = outer.split('/');
    let mut i = inner.split('/');
    loop {
        match (o.next(), i.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(il)) if il != "#" => {}
            (Some(ol), Some(il)) if ol == il => {}
            (None, None) => return true,
            // `a/#` also matches `a`: outer `a/#` covers inner `a`.
            (Some(_), None) => return false,
            _ => return false,
        }
    }
}

fn is_wild(f: &str) -> bool {
    !f.starts_with("$share/") && (f.contains('+') || f.contains('#'))
}

fn is_shared(f: &str) -> bool {
    f.starts_with("$share/")
}

/// The broker-set changes of one operation: each filter's state before its first change.
#[derive(Default)]
struct Touched(HashMap<String, Option<QoS>>);

impl<S> Router<S> {
    /// Adds subscription `id` with its filters. Returns what to send to the broker.
    pub fn add(&mut self, id: u64, filters: &[(String, QoS)], sink: S) -> Changes {
        let mut index: HashMap<&str, usize> = HashMap::with_capacity(filters.len());
        let mut own: Vec<(String, QoS)> = Vec::with_capacity(filters.len());
        for (f, q) in filters {
            match index.get(f.as_str()) {
                Some(&i) => own[i].1 = own[i].1.max(*q),
                None => {
                    index.insert(f, own.len());
                    own.push((f.clone(), *q));
                }
            }
        }
        let mut touched = Touched::default();
        for (f, q) in &own {
            if is_shared(f) {
                self.shared_filters += 1;
            }
            let w = self.wanted.entry(f.clone()).or_insert(Want {
                count: 0,
                qos: *q,
                kept: false,
            });
            w.count += 1;
            w.qos = w.qos.max(*q);
            let qos = w.qos;
            self.place(f, qos, &mut touched);
        }
        self.routes.push(Route {
            id,
            filters: own,
            sink,
        });
        self.changes(touched)
    }

    /// Removes subscription `id`. With `keep`, the filters it leaves stay on the broker (a
    /// persistent session's subscriptions survive the process); without, filters no one
    /// wants any more are unsubscribed and what they covered is subscribed again. Returns the
    /// changes and the sink (dropping it ends the subscription's channel).
    pub fn remove(&mut self, id: u64, keep: bool) -> Option<(Changes, S)> {
        let pos = self.routes.iter().position(|r| r.id == id)?;
        let route = self.routes.swap_remove(pos);
        let mut touched = Touched::default();
        for (f, _) in &route.filters {
            if is_shared(f) {
                self.shared_filters -= 1;
            }
            let Some(w) = self.wanted.get_mut(f) else {
                continue;
            };
            w.count -= 1;
            if w.count > 0 {
                continue;
            }
            if keep {
                w.kept = true;
            } else {
                self.unwant(f, &mut touched);
            }
        }
        Some((self.changes(touched), route.sink))
    }

    /// Forgets filters the broker will not take (it closed the connection at each attempt):
    /// they leave every subscription and the broker set. Returns the sinks of subscriptions
    /// left with no filter (dropping them ends those subscriptions), and what to send.
    pub fn forget(&mut self, filters: &[String]) -> (Vec<S>, Changes) {
        let gone: HashSet<&str> = filters.iter().map(String::as_str).collect();
        let mut touched = Touched::default();
        for f in filters {
            if self.wanted.contains_key(f) {
                self.unwant(f, &mut touched);
            }
            // Whatever it stood for on the broker, the broker does not have it.
            if self.on_broker.contains_key(f) {
                self.set(f, None, &mut touched);
            }
        }
        let mut ended = Vec::new();
        let mut i = 0;
        while i < self.routes.len() {
            let r = &mut self.routes[i];
            let removed_shared = r
                .filters
                .iter()
                .filter(|(f, _)| is_shared(f) && gone.contains(f.as_str()))
                .count();
            r.filters.retain(|(f, _)| !gone.contains(f.as_str()));
            self.shared_filters -= removed_shared;
            if r.filters.is_empty() {
                ended.push(self.routes.swap_remove(i).sink);
            } else {
                i += 1;
            }
        }
        let mut changes = self.changes(touched);
        // What the broker refused is not unsubscribed.
        changes.unsubscribe.retain(|f| !gone.contains(f.as_str()));
        (ended, changes)
    }

    /// Every sink whose subscription has a filter matching `topic`, each once (see the
    /// module docs for shared subscriptions).
    pub fn route<'a>(&'a self, topic: &'a str) -> impl Iterator<Item = &'a S> + 'a {
        // With shared subscriptions present, a message matching a plain filter is the plain
        // subscriptions' copy.
        let plain_only = self.shared_filters > 0
            && self.routes.iter().any(|r| {
                r.filters
                    .iter()
                    .any(|(f, _)| !is_shared(f) && topic_matches(f, topic))
            });
        self.routes
            .iter()
            .filter(move |r| {
                r.filters
                    .iter()
                    .any(|(f, _)| (!plain_only || !is_shared(f)) && topic_matches(f, topic))
            })
            .map(|r| &r.sink)
    }

    /// Every sink whose subscription has a filter matching `topic` that one of
    /// `broker_filters` (the broker subscriptions the message was sent for, from MQTT 5
    /// subscription identifiers) stands for: the filter itself or one it covers. Exact for
    /// shared subscriptions, which [`Router::route`] can only guess.
    pub fn route_for<'a>(
        &'a self,
        topic: &'a str,
        broker_filters: &'a [&'a str],
    ) -> impl Iterator<Item = &'a S> + 'a {
        self.routes
            .iter()
            .filter(move |r| {
                r.filters.iter().any(|(f, _)| {
                    topic_matches(f, topic)
                        && broker_filters.iter().any(|b| *b == f || covers(b, f))
                })
            })
            .map(|r| &r.sink)
    }

    /// The filters the broker must hold, with their QoS (to resubscribe after a reconnect).
    pub fn active(&self) -> Vec<(String, QoS)> {
        let mut v: Vec<_> = self
            .on_broker
            .iter()
            .map(|(f, q)| (f.clone(), *q))
            .collect();
        v.sort();
        v
    }

    /// Removes every subscription, returning their sinks.
    pub fn drain(&mut self) -> Vec<S> {
        self.wanted.clear();
        self.on_broker.clear();
        self.wild.clear();
        self.shared_filters = 0;
        self.routes.drain(..).map(|r| r.sink).collect()
    }

    /// The broker filter covering `f` (itself, or a wildcard filter), if any.
    fn cover_of(&self, f: &str) -> Option<String> {
        if self.on_broker.contains_key(f) {
            return Some(f.to_string());
        }
        self.wild
            .iter()
            .find(|g| g.as_str() != f && covers(g, f))
            .cloned()
    }

    /// Makes the broker set cover wanted filter `f` at `qos`.
    fn place(&mut self, f: &str, qos: QoS, touched: &mut Touched) {
        if let Some(g) = self.cover_of(f) {
            if self.on_broker[&g] < qos {
                self.set(&g, Some(qos), touched);
            }
            return;
        }
        // `f` becomes a broker filter, replacing those it covers.
        let mut qos = qos;
        if is_wild(f) {
            let covered: Vec<String> = self
                .on_broker
                .keys()
                .filter(|h| covers(f, h))
                .cloned()
                .collect();
            for h in covered {
                qos = qos.max(self.on_broker[&h]);
                self.set(&h, None, touched);
            }
        }
        self.set(f, Some(qos), touched);
    }

    /// `f` is no longer wanted: if the broker held it, what it covered is placed again.
    fn unwant(&mut self, f: &str, touched: &mut Touched) {
        self.wanted.remove(f);
        if !self.on_broker.contains_key(f) {
            return;
        }
        self.set(f, None, touched);
        if !is_wild(f) {
            return;
        }
        let mut orphans: Vec<(String, QoS)> = self
            .wanted
            .iter()
            .filter(|(w, _)| covers(f, w))
            .map(|(w, want)| (w.clone(), want.qos))
            .collect();
        // Wider filters first (more wildcards, then shorter), so that a narrower one finds
        // its new cover instead of being subscribed and unsubscribed again.
        orphans.sort_by_key(|(w, _)| {
            (
                std::cmp::Reverse(w.matches(['+', '#']).count()),
                w.len(),
                w.clone(),
            )
        });
        for (w, q) in orphans {
            self.place(&w, q, touched);
        }
    }

    fn set(&mut self, f: &str, qos: Option<QoS>, touched: &mut Touched) {
        let before = self.on_broker.get(f).copied();
        touched.0.entry(f.to_string()).or_insert(before);
        match qos {
            Some(q) => {
                self.on_broker.insert(f.to_string(), q);
                if is_wild(f) {
                    self.wild.insert(f.to_string());
                }
            }
            None => {
                self.on_broker.remove(f);
                self.wild.remove(f);
            }
        }
    }

    /// The net effect of an operation on the broker set.
    fn changes(&self, touched: Touched) -> Changes {
        let mut c = Changes::default();
        for (f, before) in touched.0 {
            match (before, self.on_broker.get(&f)) {
                (None, Some(q)) => c.subscribe.push((f, *q)),
                (Some(b), Some(q)) if b < *q => c.subscribe.push((f, *q)),
                (Some(_), None) => c.unsubscribe.push(f),
                _ => {}
            }
        }
        c.subscribe.sort();
        c.unsubscribe.sort();
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    thread_local! {
        /// Calls of `covers` on this thread, to test how the cost grows.
        pub static COMPARISONS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
    }

    fn f(s: &str) -> (String, QoS) {
        (s.to_string(), QoS::AtMostOnce)
    }

    fn q1(s: &str) -> (String, QoS) {
        (s.to_string(), QoS::AtLeastOnce)
    }

    fn sub(v: &[(String, QoS)]) -> Changes {
        Changes {
            subscribe: v.to_vec(),
            unsubscribe: vec![],
        }
    }

    #[test]
    fn shared_filter_is_subscribed_once_and_unsubscribed_with_the_last() {
        let mut r = Router::default();
        assert_eq!(r.add(1, &[f("a/#")], 'x'), sub(&[f("a/#")]));
        assert_eq!(r.add(2, &[f("a/#")], 'y'), Changes::default());
        assert_eq!(r.remove(1, false).unwrap().0, Changes::default());
        assert_eq!(r.remove(2, false).unwrap().0.unsubscribe, vec!["a/#"]);
        assert!(r.remove(2, false).is_none());
    }

    #[test]
    fn subscription_identifiers_route_exactly_even_with_shared_and_plain_overlapping() {
        let mut r = Router::default();
        r.add(1, &[f("o/#")], 'p');
        r.add(2, &[f("$share/g/o/#")], 's');
        r.add(3, &[f("o/a")], 'n');
        let got = |b: &[&str], t: &str| {
            let mut v: Vec<char> = r.route_for(t, b).copied().collect();
            v.sort();
            v
        };
        // The plain copy: the plain subscription and the narrower one it stands for.
        assert_eq!(got(&["o/#"], "o/a"), ['n', 'p']);
        assert_eq!(got(&["o/#"], "o/b"), ['p']);
        // The shared copy: the shared subscription only (route() would guess "plain").
        assert_eq!(got(&["$share/g/o/#"], "o/a"), ['s']);
        assert_eq!(r.route("o/b").copied().collect::<Vec<_>>(), ['p']);
        // A broker filter that does not match the topic delivers nothing.
        assert_eq!(got(&["x/#"], "o/a"), Vec::<char>::new());
    }

    #[test]
    fn overlapping_filters_deliver_once() {
        let mut r = Router::default();
        r.add(1, &[f("a/+"), f("a/#"), f("a/b")], 'x');
        r.add(2, &[f("c")], 'y');
        assert_eq!(r.route("a/b").collect::<Vec<_>>(), vec![&'x']);
        assert_eq!(r.route("c").collect::<Vec<_>>(), vec![&'y']);
        assert_eq!(r.route("d").count(), 0);
    }

    #[test]
    fn higher_qos_resubscribes() {
        let mut r = Router::default();
        r.add(1, &[f("a")], ());
        assert_eq!(r.add(2, &[q1("a")], ()), sub(&[q1("a")]));
        assert_eq!(r.active(), vec![q1("a")]);
    }

    #[test]
    fn duplicate_filters_in_one_subscription_count_once() {
        let mut r = Router::default();
        assert_eq!(r.add(1, &[f("a"), f("a")], ()).subscribe.len(), 1);
        assert_eq!(r.remove(1, false).unwrap().0.unsubscribe, vec!["a"]);
        assert!(r.active().is_empty());
    }

    #[test]
    fn covered_filters_are_not_sent_to_the_broker_until_uncovered() {
        let mut r = Router::default();
        assert_eq!(
            r.add(1, &[f("o/#"), f("o/+"), f("o/a")], ()),
            sub(&[f("o/#")])
        );
        assert_eq!(r.add(2, &[f("o/b")], ()), Changes::default());
        let (c, _) = r.remove(1, false).unwrap();
        assert_eq!(c.subscribe, vec![f("o/b")]);
        assert_eq!(c.unsubscribe, vec!["o/#"]);
    }

    #[test]
    fn a_wider_filter_later_replaces_the_narrower_one_on_the_broker() {
        let mut r = Router::default();
        assert_eq!(r.add(1, &[f("b/a")], ()), sub(&[f("b/a")]));
        let c = r.add(2, &[f("b/#")], ());
        assert_eq!(c.subscribe, vec![f("b/#")]);
        assert_eq!(c.unsubscribe, vec!["b/a"]);
        assert_eq!(r.active(), vec![f("b/#")]);
        // Dropping the narrow one changes nothing on the broker.
        assert_eq!(r.remove(1, false).unwrap().0, Changes::default());
        assert_eq!(r.active(), vec![f("b/#")]);
    }

    #[test]
    fn the_cover_takes_the_highest_qos_it_covers() {
        let mut r = Router::default();
        r.add(1, &[f("o/#")], ());
        // A narrower QoS 1 filter raises the cover instead of going on the broker beside it
        // (which would make brokers send two copies).
        assert_eq!(r.add(2, &[q1("o/a")], ()), sub(&[q1("o/#")]));
        assert_eq!(r.active(), vec![q1("o/#")]);
        // And a wide QoS 0 filter over a narrow QoS 1 one takes QoS 1.
        let mut r = Router::default();
        r.add(1, &[q1("p/a")], ());
        let c = r.add(2, &[f("p/#")], ());
        assert_eq!(c.subscribe, vec![q1("p/#")]);
        assert_eq!(c.unsubscribe, vec!["p/a"]);
    }

    #[test]
    fn mutually_covering_filters_keep_one() {
        let mut r = Router::default();
        assert_eq!(r.add(1, &[f("#"), f("+/#")], ()).subscribe.len(), 1);
        assert_eq!(r.active().len(), 1);
    }

    #[test]
    fn removing_a_cover_resubscribes_only_the_maximal_orphans() {
        let mut r = Router::default();
        r.add(1, &[f("a/#")], ());
        r.add(2, &[f("a/b/c"), f("a/+/c"), f("a/x")], ());
        assert_eq!(r.active(), vec![f("a/#")]);
        let (c, _) = r.remove(1, false).unwrap();
        assert_eq!(c.subscribe, vec![f("a/+/c"), f("a/x")]);
        assert_eq!(c.unsubscribe, vec!["a/#"]);
    }

    #[test]
    fn kept_filters_stay_on_the_broker_and_still_cover() {
        let mut r = Router::default();
        r.add(1, &[f("k/#")], ());
        assert_eq!(r.remove(1, true).unwrap().0, Changes::default());
        assert_eq!(r.active(), vec![f("k/#")]);
        assert_eq!(r.add(2, &[f("k/a")], ()), Changes::default());
        // An explicit unsubscribe of the same filter takes it off.
        r.add(3, &[f("k/#")], ());
        let (c, _) = r.remove(3, false).unwrap();
        assert_eq!(c.subscribe, vec![f("k/a")]);
        assert_eq!(c.unsubscribe, vec!["k/#"]);
    }

    #[test]
    fn forget_removes_refused_filters_everywhere() {
        let mut r = Router::default();
        r.add(1, &[f("bad"), f("good")], 'x');
        r.add(2, &[f("bad")], 'y');
        let (ended, c) = r.forget(&["bad".to_string()]);
        assert_eq!(ended, vec!['y']);
        assert_eq!(c, Changes::default());
        assert_eq!(r.active(), vec![f("good")]);
        assert_eq!(r.route("bad").count(), 0);
    }

    #[test]
    fn shared_subscriptions_get_only_what_matches_no_plain_filter() {
        let mut r = Router::default();
        r.add(1, &[f("s/+")], 'p');
        r.add(2, &[f("$share/g/s/#")], 's');
        assert_eq!(r.route("s/a").collect::<Vec<_>>(), vec![&'p']);
        assert_eq!(r.route("s/a/b").collect::<Vec<_>>(), vec![&'s']);
        r.remove(1, false);
        assert_eq!(r.route("s/a").collect::<Vec<_>>(), vec![&'s']);
    }

    #[test]
    fn ten_thousand_filters_are_placed_quickly() {
        let mut r = Router::default();
        let filters: Vec<_> = (0..10_000).map(|i| f(&format!("t/{i}"))).collect();
        r.add(0, &[f("w/+"), f("v/#")], ());
        COMPARISONS.with(|c| c.set(0));
        assert_eq!(r.add(1, &filters, ()).subscribe.len(), 10_000);
        for i in 0..100 {
            r.add(2 + i, &[f(&format!("u/{i}"))], ());
        }
        // Comparing every pair took 10^8 comparisons (7 s in release); plain filters are
        // compared with the wildcard filters on the broker only.
        let n = COMPARISONS.with(|c| c.get());
        assert!(n <= 3 * 10_100, "{n} comparisons");
    }

    #[test]
    fn covers_follows_the_matching_rules() {
        assert!(covers("#", "a/b"));
        assert!(covers("a/#", "a"));
        assert!(covers("a/#", "a/+/c"));
        assert!(covers("a/+", "a/b"));
        assert!(!covers("a/+", "a/#"));
        assert!(!covers("a/b", "a/+"));
        assert!(!covers("#", "$SYS/x"));
        assert!(covers("$SYS/#", "$SYS/x"));
        assert!(!covers("a", "a/#"));
    }
}

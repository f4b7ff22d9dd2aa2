//! Which local subscriptions get an incoming message, and which filters the broker must know.
//!
//! Several local subscriptions of the same filter share one MQTT subscription: SUBSCRIBE goes
//! out for the first, UNSUBSCRIBE when the last one leaves. A message matching several
//! filters of one subscription is delivered to it once.
//!
//! Brokers may send one copy of a message per matching subscription [MQTT-3.3.5] (NATS and
//! rumqttd do), which would deliver `o/a` three times to a subscriber of `o/#`, `o/+` and
//! `o/a`. So the broker is only subscribed to filters that no other wanted filter of equal or
//! higher QoS covers; local routing still matches every filter. A filter that stops being
//! covered (its cover was unsubscribed) is subscribed then. The cost: a newly wanted filter
//! that is already covered does not get the broker's retained messages again.

use std::collections::HashMap;

use crate::message::QoS;
use crate::topic::topic_matches;

#[derive(Debug)]
struct Route<S> {
    id: u64,
    filters: Vec<(String, QoS)>,
    sink: S,
}

#[derive(Debug, Clone, Copy)]
struct Shared {
    count: usize,
    qos: QoS,
}

/// Routes topics to sinks of type `S` (a channel in the driver, anything in tests).
#[derive(Debug)]
pub struct Router<S> {
    routes: Vec<Route<S>>,
    /// Every filter some local subscription wants, with its highest QoS.
    shared: HashMap<String, Shared>,
    /// What the broker has been asked to hold.
    on_broker: HashMap<String, QoS>,
}

impl<S> Default for Router<S> {
    fn default() -> Self {
        Router {
            routes: Vec::new(),
            shared: HashMap::new(),
            on_broker: HashMap::new(),
        }
    }
}

/// Whether every topic `inner` matches is also matched by `outer` (filters are valid).
pub fn covers(outer: &str, inner: &str) -> bool {
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

impl<S> Router<S> {
    /// Adds subscription `id` with its filters. Returns the filters the broker must be sent a
    /// SUBSCRIBE for: new ones, and existing ones asked for at a higher QoS.
    pub fn add(&mut self, id: u64, filters: &[(String, QoS)], sink: S) -> Vec<(String, QoS)> {
        let mut own: Vec<(String, QoS)> = Vec::with_capacity(filters.len());
        for (f, q) in filters {
            match own.iter_mut().find(|(g, _)| g == f) {
                Some((_, oq)) => *oq = (*oq).max(*q),
                None => own.push((f.clone(), *q)),
            }
        }
        for (f, q) in &own {
            let s = self
                .shared
                .entry(f.clone())
                .or_insert(Shared { count: 0, qos: *q });
            s.count += 1;
            s.qos = s.qos.max(*q);
        }
        self.routes.push(Route {
            id,
            filters: own,
            sink,
        });
        self.reconcile().0
    }

    /// Removes subscription `id`. Returns the filters to SUBSCRIBE (no longer covered), those
    /// to UNSUBSCRIBE, and the sink (dropping it ends the subscription's channel).
    #[allow(clippy::type_complexity)]
    pub fn remove(&mut self, id: u64) -> Option<(Vec<(String, QoS)>, Vec<String>, S)> {
        let pos = self.routes.iter().position(|r| r.id == id)?;
        let route = self.routes.swap_remove(pos);
        for (f, _) in route.filters {
            if let Some(s) = self.shared.get_mut(&f) {
                s.count -= 1;
                if s.count == 0 {
                    self.shared.remove(&f);
                }
            }
        }
        // Filters uncovered by this removal were added to the broker set: subscribe them.
        let (to_subscribe, to_unsubscribe) = self.reconcile();
        Some((to_subscribe, to_unsubscribe, route.sink))
    }

    /// Brings `on_broker` to the minimal covering set of `shared`. Returns what to SUBSCRIBE
    /// (new or at a higher QoS) and what to UNSUBSCRIBE.
    fn reconcile(&mut self) -> (Vec<(String, QoS)>, Vec<String>) {
        let wanted: Vec<(&String, QoS)> = self.shared.iter().map(|(f, s)| (f, s.qos)).collect();
        let desired: HashMap<String, QoS> = wanted
            .iter()
            .filter(|(f, q)| {
                !wanted.iter().any(|(g, gq)| {
                    // Mutually covering filters (`#` and `+/#`): the smaller string stays.
                    g != f && gq >= q && covers(g, f) && (!covers(f, g) || g < f)
                })
            })
            .map(|(f, q)| ((*f).clone(), *q))
            .collect();
        let mut to_subscribe: Vec<(String, QoS)> = desired
            .iter()
            .filter(|(f, q)| self.on_broker.get(*f).is_none_or(|have| have < q))
            .map(|(f, q)| (f.clone(), *q))
            .collect();
        let mut to_unsubscribe: Vec<String> = self
            .on_broker
            .keys()
            .filter(|f| !desired.contains_key(*f))
            .cloned()
            .collect();
        to_subscribe.sort();
        to_unsubscribe.sort();
        self.on_broker = desired;
        (to_subscribe, to_unsubscribe)
    }

    /// Every sink whose subscription has a filter matching `topic`, each once.
    pub fn route<'a>(&'a self, topic: &'a str) -> impl Iterator<Item = &'a S> + 'a {
        self.routes
            .iter()
            .filter(move |r| r.filters.iter().any(|(f, _)| topic_matches(f, topic)))
            .map(|r| &r.sink)
    }

    /// The filters the broker must know, with their QoS (to resubscribe after a reconnect).
    pub fn active(&self) -> Vec<(String, QoS)> {
        let mut v: Vec<_> = self
            .shared
            .iter()
            .map(|(f, s)| (f.clone(), s.qos))
            .collect();
        v.sort();
        v
    }

    /// Removes every subscription, returning their sinks.
    pub fn drain(&mut self) -> Vec<S> {
        self.shared.clear();
        self.on_broker.clear();
        self.routes.drain(..).map(|r| r.sink).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(s: &str) -> (String, QoS) {
        (s.to_string(), QoS::AtMostOnce)
    }

    #[test]
    fn shared_filter_is_subscribed_once_and_unsubscribed_with_the_last() {
        let mut r = Router::default();
        assert_eq!(r.add(1, &[f("a/#")], 'x'), vec![f("a/#")]);
        assert!(r.add(2, &[f("a/#")], 'y').is_empty());
        assert_eq!(r.remove(1).unwrap().1, Vec::<String>::new());
        assert_eq!(r.remove(2).unwrap().1, vec!["a/#".to_string()]);
        assert!(r.remove(2).is_none());
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
        let again = r.add(2, &[("a".to_string(), QoS::AtLeastOnce)], ());
        assert_eq!(again, vec![("a".to_string(), QoS::AtLeastOnce)]);
        assert_eq!(r.active(), vec![("a".to_string(), QoS::AtLeastOnce)]);
    }

    #[test]
    fn duplicate_filters_in_one_subscription_count_once() {
        let mut r = Router::default();
        assert_eq!(r.add(1, &[f("a"), f("a")], ()).len(), 1);
        assert_eq!(r.remove(1).unwrap().1, vec!["a".to_string()]);
        assert!(r.active().is_empty());
    }

    #[test]
    fn covered_filters_are_not_sent_to_the_broker_until_uncovered() {
        let mut r = Router::default();
        assert_eq!(
            r.add(1, &[f("o/#"), f("o/+"), f("o/a")], ()),
            vec![f("o/#")]
        );
        assert_eq!(r.add(2, &[f("o/b")], ()), vec![]);
        let (sub, unsub, _) = r.remove(1).unwrap();
        assert_eq!(sub, vec![f("o/b")]);
        assert_eq!(unsub, vec!["o/#".to_string()]);
    }

    #[test]
    fn a_covering_filter_at_lower_qos_does_not_hide_a_higher_one() {
        let mut r = Router::default();
        r.add(1, &[f("o/#")], ());
        let q1 = ("o/a".to_string(), QoS::AtLeastOnce);
        assert_eq!(r.add(2, std::slice::from_ref(&q1), ()), vec![q1]);
    }

    #[test]
    fn mutually_covering_filters_keep_one() {
        let mut r = Router::default();
        let sent = r.add(1, &[f("#"), f("+/#")], ());
        assert_eq!(sent.len(), 1);
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

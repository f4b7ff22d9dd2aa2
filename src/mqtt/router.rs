//! Which local subscriptions get an incoming message, and which filters the broker must know.
//!
//! Several local subscriptions of the same filter share one MQTT subscription: SUBSCRIBE goes
//! out for the first, UNSUBSCRIBE when the last one leaves. A message matching several
//! filters of one subscription is delivered to it once.

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
    shared: HashMap<String, Shared>,
}

impl<S> Default for Router<S> {
    fn default() -> Self {
        Router {
            routes: Vec::new(),
            shared: HashMap::new(),
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
        let mut to_subscribe = Vec::new();
        for (f, q) in &own {
            match self.shared.get_mut(f) {
                Some(s) => {
                    s.count += 1;
                    if *q > s.qos {
                        s.qos = *q;
                        to_subscribe.push((f.clone(), *q));
                    }
                }
                None => {
                    self.shared.insert(f.clone(), Shared { count: 1, qos: *q });
                    to_subscribe.push((f.clone(), *q));
                }
            }
        }
        self.routes.push(Route {
            id,
            filters: own,
            sink,
        });
        to_subscribe
    }

    /// Removes subscription `id`. Returns the filters no subscription uses any more, for
    /// UNSUBSCRIBE, and the sink (dropping it ends the subscription's channel).
    pub fn remove(&mut self, id: u64) -> Option<(Vec<String>, S)> {
        let pos = self.routes.iter().position(|r| r.id == id)?;
        let route = self.routes.swap_remove(pos);
        let mut to_unsubscribe = Vec::new();
        for (f, _) in route.filters {
            if let Some(s) = self.shared.get_mut(&f) {
                s.count -= 1;
                if s.count == 0 {
                    self.shared.remove(&f);
                    to_unsubscribe.push(f);
                }
            }
        }
        Some((to_unsubscribe, route.sink))
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
        self.routes.drain(..).map(|r| r.sink).collect()
    }

    /// Number of local subscriptions.
    pub fn len(&self) -> usize {
        self.routes.len()
    }

    /// Whether there is no local subscription.
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
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
        assert_eq!(r.remove(1).unwrap().0, Vec::<String>::new());
        assert_eq!(r.remove(2).unwrap().0, vec!["a/#".to_string()]);
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
        assert_eq!(r.remove(1).unwrap().0, vec!["a".to_string()]);
        assert!(r.active().is_empty());
    }
}

//! The packet-identifier table: which requests are in flight, by id.
//!
//! Identifiers index a pre-sized slot array (`1..=window + CONTROL_IDS`), so an
//! acknowledgement for an unknown or wrong identifier is found in O(1) and ignored. The
//! counters change in [`Ids::insert`] and [`Ids::free`] only.

use super::Inflight;

/// The slots and their counts.
#[derive(Debug)]
pub(super) struct Ids<R> {
    /// Boxed: an empty slot costs 8 bytes, not the size of a PUBLISH.
    slots: Vec<Option<Box<Inflight<R>>>>,
    inflight: usize,
    publishes: usize,
    /// QoS 2 publishes in flight (their own window over MQTT 3.1.1).
    qos2: usize,
    /// Most publishes in flight at once (the rest of the ids serve SUBSCRIBE/UNSUBSCRIBE).
    window: usize,
    /// Most publishes sent now (the server's receive maximum, at most `window`).
    limit: usize,
    next: u16,
}

impl<R> Ids<R> {
    /// Ids `1..=window + control`; id 0 is never used [MQTT-2.3.1-1].
    pub fn new(window: u16, control: u16) -> Ids<R> {
        Ids {
            slots: (0..=(window + control) as usize).map(|_| None).collect(),
            inflight: 0,
            publishes: 0,
            qos2: 0,
            window: window as usize,
            limit: window as usize,
            next: 1,
        }
    }

    /// Sends at most `n` publishes at once from now on (never more than the window).
    pub fn set_limit(&mut self, n: u16) {
        self.limit = (n as usize).clamp(1, self.window);
    }

    /// Publishes in flight.
    pub fn publishes(&self) -> usize {
        self.publishes
    }

    /// QoS 2 publishes in flight.
    pub fn qos2(&self) -> usize {
        self.qos2
    }

    /// The largest identifier of the table.
    pub fn max_id(&self) -> u16 {
        (self.slots.len() - 1) as u16
    }

    /// Requests in flight.
    // Used by the fuzz targets, the benchmark and the tests only.
    #[cfg_attr(not(feature = "__internals"), allow(dead_code))]
    pub fn inflight(&self) -> usize {
        self.inflight
    }

    /// A free id for a request (`publish`: within the publish window), the next after the last
    /// one given, so that a late acknowledgement of a freed id rarely meets a new request.
    pub fn take(&mut self, publish: bool) -> Option<u16> {
        let max = (self.slots.len() - 1) as u16;
        if self.inflight >= max as usize || (publish && self.publishes >= self.limit) {
            return None;
        }
        for _ in 0..max {
            let id = self.next;
            self.next = if id >= max { 1 } else { id + 1 };
            if self.slots[id as usize].is_none() {
                return Some(id);
            }
        }
        None
    }

    /// Puts a request in flight under an id from [`Ids::take`].
    pub fn insert(&mut self, id: u16, entry: Inflight<R>) {
        debug_assert!(self.slots[id as usize].is_none());
        if entry.is_publish() {
            self.publishes += 1;
        }
        if entry.is_qos2_publish() {
            self.qos2 += 1;
        }
        self.inflight += 1;
        self.slots[id as usize] = Some(Box::new(entry));
    }

    /// Takes request `id` out of flight.
    pub fn free(&mut self, id: u16) -> Option<Inflight<R>> {
        let entry = self.slots.get_mut(id as usize)?.take().map(|b| *b);
        if let Some(e) = &entry {
            self.inflight -= 1;
            if e.is_publish() {
                self.publishes -= 1;
            }
            if e.is_qos2_publish() {
                self.qos2 -= 1;
            }
        }
        entry
    }

    /// The request in flight under `id`.
    pub fn get(&self, id: u16) -> Option<&Inflight<R>> {
        self.slots.get(id as usize)?.as_deref()
    }

    /// The request in flight under `id`, to change its stage (not its kind).
    pub fn get_mut(&mut self, id: u16) -> Option<&mut Inflight<R>> {
        self.slots.get_mut(id as usize)?.as_deref_mut()
    }

    /// Every request in flight with its id, in id order.
    pub fn iter(&self) -> impl Iterator<Item = (u16, &Inflight<R>)> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(id, s)| s.as_deref().map(|s| (id as u16, s)))
    }

    /// Empties the table, returning what was in flight.
    pub fn drain(&mut self) -> Vec<Inflight<R>> {
        self.inflight = 0;
        self.publishes = 0;
        self.qos2 = 0;
        self.slots
            .iter_mut()
            .filter_map(|s| s.take().map(|b| *b))
            .collect()
    }

    /// The counts match the slots, the window holds, id 0 is unused.
    // Used by the fuzz targets, the benchmark and the tests only.
    #[cfg_attr(not(feature = "__internals"), allow(dead_code))]
    pub fn check(&self) -> Result<(), String> {
        let used = self.slots.iter().filter(|s| s.is_some()).count();
        if used != self.inflight {
            return Err(format!("inflight {} but {used} slots used", self.inflight));
        }
        let qos2 = self.iter().filter(|(_, e)| e.is_qos2_publish()).count();
        if qos2 != self.qos2 {
            return Err(format!(
                "{} QoS 2 publishes in flight but {qos2} in slots",
                self.qos2
            ));
        }
        let publishes = self.iter().filter(|(_, e)| e.is_publish()).count();
        if publishes != self.publishes {
            return Err(format!(
                "{} publishes in flight but {publishes} in slots",
                self.publishes
            ));
        }
        if self.publishes > self.window {
            return Err("publishes in flight over the window".into());
        }
        if self.slots[0].is_some() {
            return Err("packet id 0 in use".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Inflight, Pending};
    use super::*;

    fn unsubscribe() -> Inflight<()> {
        Inflight {
            seq: 0,
            sent: std::time::Instant::now(),
            kind: Pending::Unsubscribe {
                filters: Vec::new(),
                waiter: None,
            },
        }
    }

    #[test]
    fn ids_are_never_zero_and_go_round_and_the_counts_follow() {
        let mut ids: Ids<()> = Ids::new(2, 1);
        let a = ids.take(false).unwrap();
        ids.insert(a, unsubscribe());
        let b = ids.take(false).unwrap();
        ids.insert(b, unsubscribe());
        let c = ids.take(false).unwrap();
        ids.insert(c, unsubscribe());
        assert_eq!((a, b, c), (1, 2, 3));
        assert_eq!(ids.take(false), None, "all three in use");
        assert!(ids.free(b).is_some());
        assert!(ids.free(b).is_none(), "freed once");
        assert_eq!(
            ids.take(false),
            Some(2),
            "the next free one after the last given"
        );
        assert_eq!(ids.inflight(), 2);
        assert_eq!(ids.check(), Ok(()));
        assert_eq!(ids.drain().len(), 2);
        assert_eq!((ids.inflight(), ids.check()), (0, Ok(())));
    }
}

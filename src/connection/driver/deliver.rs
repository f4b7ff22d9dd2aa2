//! Delivery: the session's events to their waiters and subscriptions, the unclaimed-message
//! hold, acknowledgements after processing and the back-pressure they bring.

use super::*;

impl Driver {
    /// One packet from the broker; delivers what it made every so often, so that the events
    /// of one large frame never pile up.
    pub(super) fn inbound(&mut self, packet: Inbound, now: Instant) -> Result<()> {
        self.session.handle_inbound(packet, now)?;
        if self.session.events_waiting() >= EVENT_BATCH {
            self.dispatch_events();
        }
        Ok(())
    }

    /// Hands held messages of a persistent session to a new subscription they match, in the
    /// order they arrived.
    pub(super) fn claim_unclaimed(&mut self, filters: &[(String, QoS)], sink: &Sink) {
        if self.unclaimed.messages.is_empty() {
            return;
        }
        let mut delivered = false;
        let held = std::mem::take(&mut self.unclaimed.messages);
        for msg in held {
            if filters
                .iter()
                .any(|(f, _)| crate::topic::topic_matches(f, msg.topic()))
            {
                self.unclaimed.bytes -= msg.payload().len();
                delivered |= sink.deliver(msg);
            } else {
                self.unclaimed.messages.push_back(msg);
            }
        }
        if delivered {
            sink.bell.ring();
        }
        if self.unclaimed.messages.is_empty() {
            // Give a burst's memory back.
            self.unclaimed.messages = VecDeque::new();
        }
    }

    /// Holds a message of a persistent session that no subscription takes (yet).
    pub(super) fn hold(&mut self, msg: Message) {
        let len = msg.payload().len();
        let (max_n, max_bytes) = (
            self.options.unclaimed_messages,
            self.options.unclaimed_bytes,
        );
        while !self.unclaimed.messages.is_empty()
            && (self.unclaimed.messages.len() >= max_n || self.unclaimed.bytes + len > max_bytes)
        {
            let old = self.unclaimed.messages.pop_front().expect("not empty");
            self.unclaimed.bytes -= old.payload().len();
            self.count_unclaimed_drop(old.topic());
        }
        if max_n == 0 || len > max_bytes {
            self.count_unclaimed_drop(msg.topic());
            return;
        }
        self.unclaimed.bytes += len;
        self.unclaimed.messages.push_back(msg);
    }

    pub(super) fn count_unclaimed_drop(&mut self, topic: &str) {
        self.unclaimed.dropped += 1;
        let n = self.unclaimed.dropped;
        if n == 1 || n.is_power_of_two() {
            log::warn!(
                "provider {}: unclaimed messages over their bound (unclaimed_capacity): dropped \
                 one on \"{}\" ({n} dropped so far)",
                self.name,
                crate::error::printable(topic)
            );
        }
    }

    pub(super) fn dispatch_events(&mut self) {
        while let Some(ev) = self.session.next_event() {
            match ev {
                SessionEvent::Message(p) => self.deliver(p, false),
                SessionEvent::Deferred(p) => self.deliver(p, true),
                SessionEvent::Published(reply) => {
                    let _ = reply.send(Ok(()));
                }
                SessionEvent::Subscribed(reply, refused) => {
                    let result = match refused.into_iter().next() {
                        None => Ok(()),
                        Some((filter, reason)) => Err(Error::SubscriptionRefused {
                            filter,
                            provider: self.name.to_string(),
                            reason,
                        }),
                    };
                    let _ = reply.send(result);
                }
                SessionEvent::Failed(reply, why) => {
                    let _ = reply.send(Err(Error::Protocol(why)));
                }
                SessionEvent::PublishRefused(reply, what) => {
                    self.tally.add(crate::stats::Counter::Rejected, 1);
                    let err = Error::Refused(what);
                    self.report_refusal(&err);
                    if let Some(r) = reply {
                        let _ = r.send(Err(err));
                    }
                }
                SessionEvent::PublishRejected(reply, code, reason, what) => {
                    self.tally.add(crate::stats::Counter::Rejected, 1);
                    let err = Error::Rejected { what, code, reason };
                    self.report_refusal(&err);
                    if let Some(r) = reply {
                        let _ = r.send(Err(err));
                    }
                }
                SessionEvent::UnsubscribeRefused(refused) => {
                    for (filter, code, reason) in refused {
                        let what = format!(
                            "the UNSUBSCRIBE of \"{}\"",
                            crate::error::printable(&filter)
                        );
                        self.report_refusal(&Error::Rejected { what, code, reason });
                    }
                }
                SessionEvent::Oversized(o, deferred) => {
                    if let (true, Some(id)) = (deferred, o.packet_id) {
                        // Nothing holds it: acknowledged as soon as those before it are.
                        self.acks.push_back((id, o.qos, std::sync::Weak::new()));
                    }
                    self.report_oversized(&o);
                }
                SessionEvent::FiltersRefused(filters) => {
                    let list = filters
                        .iter()
                        .map(|f| format!("\"{}\"", crate::error::printable(f)))
                        .collect::<Vec<_>>()
                        .join(", ");
                    self.report_refusal(&Error::Refused(format!(
                        "SUBSCRIBE to {list}, {} times in a row",
                        crate::mqtt::session::STRIKES
                    )));
                    let (ended, changes) = self.router.forget(&filters);
                    drop(ended);
                    self.apply(changes);
                }
            }
        }
        self.release_acks();
    }

    /// Sends, in arrival order, the acknowledgements whose messages the application has
    /// dropped everywhere; stops deferring once no subscription asks for it and none waits.
    pub(super) fn release_acks(&mut self) {
        while let Some((id, qos, token)) = self.acks.front() {
            // Not connected: what is due waits for the connection (a QoS 2 PUBREC is owed
            // on the resumed session).
            if token.strong_count() > 0 || !self.session.is_connected() {
                break;
            }
            self.session.ack(*id, *qos);
            self.acks.pop_front();
        }
        if self.flows.is_empty() && self.acks.is_empty() && !self.options.ack_after_processing {
            self.session.set_deferred_acks(false);
        }
    }

    /// Whether a subscription that acknowledges after processing is full: then the
    /// connection is not read (the broker's own flow control — its in-flight window, our
    /// Receive Maximum — holds what it sends).
    pub(super) fn backpressure(&mut self) -> bool {
        // Never while the server owes us an answer (a SUBACK — the application cannot drain
        // a subscription before its subscribe call returns —, a PUBACK, a PINGRESP), nor
        // while closing: the answer may come after messages, and not reading it would time
        // out a publish, stall the close or declare a live link dead. The broker's
        // in-flight window still bounds the QoS 1/2 messages it sends meanwhile.
        let full = !self.session.awaiting_server()
            && !self.closing_state.started()
            && self.flows.iter().any(|(_, f)| f.full());
        if full != self.paused {
            self.paused = full;
            for (_, f) in &self.flows {
                if full {
                    f.paused.fetch_add(1, Ordering::AcqRel);
                } else {
                    f.paused.fetch_sub(1, Ordering::AcqRel);
                }
            }
        }
        full
    }

    /// Routes one message to its subscriptions (or the unclaimed hold). `deferred`: its
    /// acknowledgement waits until every copy given to a subscription that acknowledges
    /// after processing is dropped (at once when there is none).
    pub(super) fn deliver(&mut self, p: crate::mqtt::packet::PublishFrame, deferred: bool) {
        let by_id = self.session.filters_for(&p);
        let packet_id = p.packet_id();
        let mut msg = Message::new(p, self.name.clone());
        if deferred {
            if let Some(id) = packet_id {
                // A provider that acknowledges after processing holds even a message no
                // subscription takes yet (a persistent session's, for the one to come).
                let wants_ack = self.options.ack_after_processing
                    || match &by_id {
                        Some(filters) => self
                            .router
                            .route_for(msg.topic(), filters)
                            .any(|s| s.flow.is_some()),
                        None => self.router.route(msg.topic()).any(|s| s.flow.is_some()),
                    };
                let weak = if wants_ack {
                    let token = Arc::new(crate::message::AckToken {
                        wake: self.wake.clone(),
                    });
                    let weak = Arc::downgrade(&token);
                    msg.hold_ack(token);
                    weak
                } else {
                    std::sync::Weak::new()
                };
                self.acks.push_back((id, msg.qos(), weak));
            }
        }
        let mut routed = false;
        match &by_id {
            // MQTT 5: the server said which subscriptions it was sent for.
            Some(filters) => {
                for sink in self.router.route_for(msg.topic(), filters) {
                    routed = true;
                    let ok = self.rings.deliver(sink, msg.clone());
                    self.tally.add(delivered_or_dropped(ok), 1);
                }
            }
            None => {
                for sink in self.router.route(msg.topic()) {
                    routed = true;
                    let ok = self.rings.deliver(sink, msg.clone());
                    self.tally.add(delivered_or_dropped(ok), 1);
                }
            }
        }
        // We acknowledged it to the broker: with a persistent session it is held for the
        // subscription the application is about to make.
        if !routed && !self.options.clean_session {
            self.hold(msg);
        }
    }

    /// Why retained messages asked for explicitly (`SendOnSubscribe`) cannot come: a filter
    /// is already subscribed (or covered) on the broker, so no SUBSCRIBE goes out for it.
    pub(super) fn retained_not_sendable(
        &self,
        filters: &[(String, QoS)],
        options: u8,
    ) -> Option<String> {
        if options & crate::options::RETAIN_HANDLING_SET == 0 || options & 0x30 != 0 {
            return None;
        }
        let active = self.router.active();
        filters.iter().find_map(|(f, _)| {
            let (held, _) = active
                .iter()
                .find(|(a, _)| crate::mqtt::router::covers(a, f))?;
            Some(format!(
                "retain_handling(SendOnSubscribe) for \"{}\": provider {} already subscribes to \
                 \"{}\", so no SUBSCRIBE goes out and the server sends no retained messages for \
                 this subscription; subscribe through another provider (a connection of its \
                 own) to get them",
                crate::error::printable(f),
                self.name,
                crate::error::printable(held)
            ))
        })
    }

    /// A message over `max_packet_size` was skipped (and acknowledged): every subscription
    /// it was for counts it as dropped, a persistent session's unclaimed hold too when none
    /// was, and a state event names it.
    pub(super) fn report_oversized(&mut self, o: &crate::mqtt::packet::Oversized) {
        self.tally.add(crate::stats::Counter::DroppedOversized, 1);
        self.oversized += 1;
        let mut routed = false;
        for sink in self.router.route(&o.topic) {
            routed = true;
            sink.dropped
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        if !routed && !self.options.clean_session {
            self.unclaimed.dropped += 1;
        }
        let reason = format!(
            "skipped a message of {} bytes on \"{}\" (QoS {}): over max_packet_size ({} \
             bytes); acknowledged so that the broker does not resend it",
            o.size,
            crate::error::printable(&o.topic),
            o.qos as u8,
            self.options.max_packet_size
        );
        self.report(reason);
    }
}

/// The counter a delivery counts in.
pub(super) fn delivered_or_dropped(delivered: bool) -> crate::stats::Counter {
    if delivered {
        crate::stats::Counter::Delivered
    } else {
        crate::stats::Counter::DroppedFull
    }
}

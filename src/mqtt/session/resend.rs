//! What a new connection sends first, and what the session does when one is lost: the
//! CONNACK that starts it, resubscription, resending with DUP, and packets the broker
//! refuses by closing the connection (strikes).

use std::collections::HashSet;
use std::time::{Duration, Instant};

use super::wire::ServerLimits;
use super::{Event, Journal, Pending, Phase, Request, Session};
use crate::error::{Error, Result};
use crate::mqtt::packet::parse_connack;
use crate::mqtt::packet::{Control, MqttVersion};
use crate::mqtt::QoS;

/// A connection lost this soon after the oldest unacknowledged packet was (re)sent counts as
/// a strike against that packet.
pub const STRIKE_WINDOW: Duration = Duration::from_secs(3);

/// Strikes after which a packet is taken to be refused by the broker (it closes the
/// connection instead of answering, as NATS, mosquitto and AWS IoT do for some packets) and
/// is dropped instead of being resent for ever.
pub const STRIKES: u8 = 3;

impl<R> Session<R> {
    /// The first packet of a connection (phase `AwaitingConnack`): a CONNACK that accepts
    /// resumes the session; anything else, or a refusal, is the attempt's error.
    pub(super) fn connack(&mut self, packet: Control, now: Instant) -> Result<()> {
        let session_present = parse_connack(&packet)?;
        if let Control::Connack { props, .. } = &packet {
            let limits = match self.cfg.version {
                MqttVersion::V3_1_1 => ServerLimits::default(),
                MqttVersion::V5 => ServerLimits::from_connack(props),
            };
            // The server's keep-alive replaces ours on this connection [MQTT-3.2.2-21] —
            // except 0, which only means the server will not time us out: a PINGREQ is
            // always allowed, and without one a half-open link would go unnoticed for ever.
            let interval = match limits.server_keep_alive {
                Some(0) | None => self.cfg.keep_alive,
                Some(s) => Duration::from_secs(u64::from(s)),
            };
            self.keepalive.set_interval(interval);
            if let Some(id) = &limits.assigned_client_id {
                if self.cfg.client_id.is_empty() {
                    // Reconnecting resumes the session under the name it was given.
                    self.cfg.client_id = id.clone();
                }
            }
            self.ids.set_limit(limits.receive_maximum);
            self.wire.reset(limits);
        }
        if session_present && self.cfg.clean_session {
            // [MQTT-3.2.2-1]: trusting it would leave us without our subscriptions.
            return Err(Error::Protocol(
                "CONNACK says a session is present although we asked for a clean session".into(),
            ));
        }
        let Phase::AwaitingConnack {
            resubscribe,
            wanted,
        } = std::mem::replace(&mut self.phase, Phase::Disconnected)
        else {
            unreachable!("called in phase AwaitingConnack")
        };
        let resubscribe = if session_present {
            Vec::new()
        } else {
            resubscribe
        };
        let wanted: HashSet<String> = wanted;
        self.on_connected(now, session_present, resubscribe, &|f| wanted.contains(f));
        Ok(())
    }

    /// The connection is up (CONNACK accepted): first `resubscribe` (without a stored session
    /// the broker forgot our subscriptions, and a resent publish must find them) and the
    /// subscribe/unsubscribe requests the lost connection left unanswered (only for filters
    /// `still_wanted` says are wanted, resp. unwanted, so a subscription dropped meanwhile is
    /// not resent), then what is unacknowledged, in the order it was first sent, with DUP
    /// set, then what queued while offline.
    pub fn on_connected(
        &mut self,
        now: Instant,
        session_present: bool,
        resubscribe: Vec<(String, QoS)>,
        still_wanted: &dyn Fn(&str) -> bool,
    ) {
        self.phase = Phase::Connected;
        self.session_present = session_present;
        self.clock = now;
        self.keepalive.restart(now);
        if !session_present {
            // The broker holds no QoS 2 state of ours: forget inbound ids [MQTT-4.3.3].
            self.inbound_qos2.clear();
            self.deferred_qos2.clear();
        }
        let again = self.unanswered_requests(session_present, still_wanted);
        self.queue_again(again, resubscribe);
        let resent_before = self.seq;
        self.drain_queue_while(|r| {
            matches!(r, Request::Subscribe { .. } | Request::Unsubscribe { .. })
        });
        self.resend_unacknowledged(now, resent_before);
        self.drain_queue();
    }

    /// The SUBSCRIBE/UNSUBSCRIBE requests the lost connection left unanswered, as requests
    /// again (their filters `still_wanted`, resp. unwanted), oldest first; waiters left with
    /// nothing to ask are answered.
    fn unanswered_requests(
        &mut self,
        session_present: bool,
        still_wanted: &dyn Fn(&str) -> bool,
    ) -> Vec<(u64, Request<R>)> {
        let mut again: Vec<(u64, Request<R>)> = Vec::new();
        let mut done_waiters = Vec::new();
        let control: Vec<u16> = self
            .ids
            .iter()
            .filter(|(_, e)| !e.is_publish())
            .map(|(id, _)| id)
            .collect();
        for id in control {
            let Some(slot) = self.free(id) else {
                continue;
            };
            match slot.kind {
                Pending::Subscribe {
                    mut filters,
                    waiter,
                } => {
                    filters.retain(|(f, _)| still_wanted(f));
                    if filters.is_empty() {
                        done_waiters.extend(waiter);
                    } else {
                        again.push((
                            slot.seq,
                            Request::Subscribe {
                                filters,
                                waiter,
                                origin: Some(slot.seq),
                            },
                        ));
                    }
                }
                Pending::Unsubscribe {
                    mut filters,
                    waiter,
                } => {
                    // Without a stored session the broker forgot the subscription anyway.
                    filters.retain(|f| session_present && !still_wanted(f));
                    if filters.is_empty() {
                        done_waiters.extend(waiter);
                    } else {
                        again.push((
                            slot.seq,
                            Request::Unsubscribe {
                                filters,
                                waiter,
                                origin: Some(slot.seq),
                            },
                        ));
                    }
                }
                Pending::Publish { .. } => unreachable!("only control slots are taken"),
            }
        }
        for w in done_waiters {
            self.chunk_done(w);
        }
        again.sort_by_key(|(seq, _)| *seq);
        again
    }

    /// Puts `again` and then `resubscribe` (less what a request will subscribe anyway) at the
    /// front of the queue: resubscriptions first, then the unanswered requests.
    fn queue_again(&mut self, again: Vec<(u64, Request<R>)>, resubscribe: Vec<(String, QoS)>) {
        // A filter that a request (re-queued above, or waiting in the queue) will subscribe is
        // not resubscribed besides.
        let resending: std::collections::HashSet<&str> = again
            .iter()
            .map(|(_, r)| r)
            .chain(self.queue.iter())
            .flat_map(|r| match r {
                Request::Subscribe { filters, .. } => {
                    filters.iter().map(|(f, _)| f.as_str()).collect()
                }
                _ => Vec::new(),
            })
            .collect();
        let resubscribe: Vec<(String, QoS)> = resubscribe
            .into_iter()
            .filter(|(f, _)| !resending.contains(f.as_str()))
            .collect();
        for (_, req) in again.into_iter().rev() {
            self.queue.push_front(req);
        }
        let chunk = self.cfg.max_filters_per_subscribe.max(1);
        for part in resubscribe.chunks(chunk).rev() {
            self.queue.push_front(Request::Subscribe {
                filters: part.to_vec(),
                waiter: None,
                origin: None,
            });
        }
    }

    /// Resends, in the order first sent and with DUP set, every publish (or PUBREL) sent
    /// before ticket `resent_before`.
    fn resend_unacknowledged(&mut self, now: Instant, resent_before: u64) {
        let mut ids: Vec<(u64, u16)> = self
            .ids
            .iter()
            .map(|(id, e)| (e.seq, id))
            .filter(|(seq, _)| *seq <= resent_before)
            .collect();
        ids.sort_unstable();
        for (_, id) in ids {
            let Some(slot) = self.ids.get_mut(id) else {
                continue;
            };
            slot.sent = now;
            match &mut slot.kind {
                Pending::Publish {
                    packet,
                    released: false,
                    ..
                } => {
                    self.wire.publish(packet, id, true, &mut self.out);
                    self.counts.resent += 1;
                }
                Pending::Publish { released: true, .. } => crate::mqtt::packet::encode_ack(
                    crate::mqtt::packet::AckKind::Pubrel,
                    id,
                    &mut self.out,
                ),
                // Taken out above; the ones just sent are newer than `resent_before`.
                Pending::Subscribe { .. } | Pending::Unsubscribe { .. } => {}
            }
        }
    }

    /// The connection was lost (not closed by us) at `now`. If it died right after the
    /// oldest unacknowledged packet was sent, for the [`STRIKES`]th time in a row, that packet
    /// is dropped and reported ([`Event::PublishRefused`], or its filters are retried one by
    /// one and then [`Event::FiltersRefused`]).
    pub fn on_lost(&mut self, now: Instant) {
        let oldest = self.ids.iter().map(|(id, e)| (e.seq, e.sent, id)).min();
        self.suspect = match (oldest, self.suspect) {
            (Some((seq, sent, _)), _) if now.saturating_duration_since(sent) > STRIKE_WINDOW => {
                let _ = seq;
                None
            }
            (Some((seq, _, _)), Some((s, n))) if s == seq => Some((seq, n.saturating_add(1))),
            (Some((seq, _, _)), _) => Some((seq, 1)),
            (None, _) => None,
        };
        if let (Some((seq, n)), Some((_, _, id))) = (self.suspect, oldest) {
            if n >= STRIKES {
                self.suspect = None;
                log::debug!("packet {seq} struck {n} times: dropping it");
                self.refuse(id);
            }
        }
        self.on_disconnected();
    }

    fn refuse(&mut self, id: u16) {
        let Some(slot) = self.free(id) else { return };
        match slot.kind {
            Pending::Publish {
                packet,
                reply,
                ticket,
                ..
            } => {
                self.record(Journal::Finished { ticket });
                let what = format!(
                    "PUBLISH to \"{}\" (QoS {}, {} bytes{}), {STRIKES} times in a row",
                    crate::error::printable(&packet.topic),
                    packet.qos as u8,
                    packet.payload.len(),
                    if packet.retain { ", retained" } else { "" }
                );
                self.events.push_back(Event::PublishRefused(reply, what));
            }
            Pending::Subscribe { filters, waiter } if filters.len() > 1 => {
                // One of them is refused: try each alone to find which.
                if let Some(w) = waiter.and_then(|w| self.waiters.iter_mut().find(|x| x.id == w)) {
                    w.remaining += filters.len() - 1;
                }
                for f in filters.into_iter().rev() {
                    self.queue.push_front(Request::Subscribe {
                        filters: vec![f],
                        waiter,
                        origin: None,
                    });
                }
            }
            Pending::Subscribe { filters, waiter } => {
                let names: Vec<String> = filters.into_iter().map(|(f, _)| f).collect();
                if let Some(w) = waiter.and_then(|w| self.waiters.iter_mut().find(|x| x.id == w)) {
                    w.refused.extend(names.iter().map(|n| (n.clone(), None)));
                }
                self.events.push_back(Event::FiltersRefused(names));
                if let Some(w) = waiter {
                    self.chunk_done(w);
                }
            }
            Pending::Unsubscribe { waiter, .. } => {
                if let Some(w) = waiter {
                    self.chunk_done(w);
                }
            }
        }
    }

    /// The connection is gone: stop sending, keep what must be resent.
    pub fn on_disconnected(&mut self) {
        self.phase = Phase::Disconnected;
        // A deferred PUBREC outlives the connection: the broker resends the PUBLISH (DUP)
        // on the next one, which is not answered until the application has processed the
        // copy it holds (a session the broker did not keep forgets it at CONNACK).
        self.keepalive.stop();
        // QoS 0 bytes not yet written are lost (at most once); QoS 1/2 stay in their slots.
        self.out.clear();
        if self.out.capacity() > 256 * 1024 {
            self.out = Vec::new();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use mqtt::control::variable_header::ConnectReturnCode;
    use mqtt::packet::publish::QoSWithPacketIdentifier;
    use mqtt::packet::suback::SubscribeReturnCode;
    use mqtt::packet::*;

    use super::super::tests::{connected, decode_all, sent};
    use super::super::SessionConfig;
    use super::*;
    use crate::error::ConnackCode;
    use crate::mqtt::packet::encode;

    /// A session that has sent CONNECT on a new connection.
    fn connecting(clean: bool) -> Session<u32> {
        let mut cfg = SessionConfig::new("c");
        cfg.clean_session = clean;
        let mut s = Session::new(cfg, Instant::now());
        s.subscribe(vec![("queued".into(), QoS::AtMostOnce)], Some(1));
        let connect = s.connecting(
            vec![("kept".into(), QoS::AtLeastOnce)],
            ["kept".to_string()].into_iter().collect(),
        );
        assert_eq!(connect[0] >> 4, 1, "CONNECT comes first");
        assert!(!s.is_connected());
        s
    }

    #[test]
    fn the_connack_goes_through_the_session_and_resumes_it() {
        let mut s = connecting(true);
        let ok: VariablePacket =
            ConnackPacket::new(false, ConnectReturnCode::ConnectionAccepted).into();
        s.handle(ok, Instant::now()).unwrap();
        assert!(s.is_connected() && !s.session_present());
        let out = sent(&mut s);
        // The resubscription first, then what queued while offline.
        assert_eq!(out.len(), 2, "{out:?}");
        assert!(
            matches!(&out[0], VariablePacket::SubscribePacket(p) if p.subscribes()[0].0.to_string() == "kept")
        );
    }

    #[test]
    fn anything_but_an_accepting_connack_first_is_the_attempts_error() {
        let mut s = connecting(true);
        let err = s
            .handle(PingrespPacket::new().into(), Instant::now())
            .unwrap_err();
        assert!(err.to_string().contains("expected CONNACK"), "{err}");
        let mut s = connecting(true);
        let refused: VariablePacket =
            ConnackPacket::new(false, ConnectReturnCode::BadUserNameOrPassword).into();
        assert!(matches!(
            s.handle(refused, Instant::now()),
            Err(Error::ConnectionRefused(ConnackCode(4)))
        ));
        // [MQTT-3.2.2-1]
        let mut s = connecting(true);
        let present: VariablePacket =
            ConnackPacket::new(true, ConnectReturnCode::ConnectionAccepted).into();
        assert!(s.handle(present.clone(), Instant::now()).is_err());
        let mut s = connecting(false);
        s.handle(present, Instant::now()).unwrap();
        assert!(s.session_present());
        assert!(s.check_invariants().is_ok());
    }

    /// What an outbox kept resumes: a released QoS 2 publish as PUBREL under its old id, an
    /// assigned one as PUBLISH with DUP under its old id, the rest in order as new
    /// publishes; the journal records the new id, the PUBREC and the finish.
    #[test]
    fn restored_publishes_resume_under_their_ids_and_are_journaled() {
        let mut cfg = SessionConfig::new("c");
        cfg.clean_session = false;
        let mut s: Session<u32> = Session::new(cfg, Instant::now());
        let r = |ticket, qos, pid, released| super::super::Restored {
            ticket,
            topic: format!("t{ticket}"),
            payload: vec![],
            qos,
            retain: false,
            props: Vec::new(),
            pid,
            released,
        };
        s.restore(
            vec![
                r(3, QoS::ExactlyOnce, Some(7), true),
                r(4, QoS::ExactlyOnce, Some(8), false),
                r(5, QoS::AtLeastOnce, None, false),
                r(6, QoS::ExactlyOnce, None, false),
            ],
            vec![42],
            9,
        );
        s.enable_journal();
        assert_eq!(s.next_ticket(), 9);
        let _ = s.connecting(Vec::new(), Default::default());
        let mut connack = Vec::new();
        encode(
            &ConnackPacket::new(true, ConnectReturnCode::ConnectionAccepted),
            &mut connack,
        );
        let mut framer = crate::mqtt::codec::Framer::new(1 << 20);
        framer
            .feed_bytes(connack.into(), |p| s.handle_inbound(p, Instant::now()))
            .unwrap();
        let out = decode_all(&std::mem::take(s.output()));
        let ids: Vec<(String, u16)> = out
            .iter()
            .map(|p| match p {
                VariablePacket::PubrelPacket(p) => ("PUBREL".into(), p.packet_identifier()),
                VariablePacket::PublishPacket(p) => {
                    let id = match p.qos() {
                        QoSWithPacketIdentifier::Level1(id)
                        | QoSWithPacketIdentifier::Level2(id) => id,
                        QoSWithPacketIdentifier::Level0 => 0,
                    };
                    (p.topic_name().to_string(), id)
                }
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(ids[0], ("PUBREL".to_string(), 7));
        assert_eq!(ids[1], ("t4".to_string(), 8));
        assert_eq!((ids[2].0.as_str(), ids[3].0.as_str()), ("t5", "t6"));
        let new_id = ids[3].1;
        assert_eq!(
            s.take_journal(),
            vec![Journal::Assigned {
                ticket: 6,
                pid: new_id
            }]
        );
        // A duplicate of incoming 42 (delivered by the earlier process) is not delivered
        // again; its PUBREL is journaled.
        s.handle(
            VariablePacket::PubcompPacket(PubcompPacket::new(7)),
            Instant::now(),
        )
        .unwrap();
        s.handle(
            VariablePacket::PubrelPacket(PubrelPacket::new(42)),
            Instant::now(),
        )
        .unwrap();
        assert_eq!(
            s.take_journal(),
            vec![
                Journal::Finished { ticket: 3 },
                Journal::InboundReleased { pid: 42 }
            ]
        );
        assert!(s.check_invariants().is_ok());
    }

    #[test]
    fn reconnect_resubscribes_then_resends_unacked_with_dup_then_sends_the_queue() {
        let mut cfg = SessionConfig::new("c");
        cfg.max_inflight = 1;
        let (mut s, now) = connected(cfg);
        s.publish("a".into(), b"1".to_vec(), QoS::AtLeastOnce, false, Some(1))
            .unwrap();
        let _ = sent(&mut s);
        s.on_disconnected();
        s.publish("b".into(), b"2".to_vec(), QoS::AtMostOnce, false, None)
            .unwrap();
        assert!(s.output().is_empty(), "nothing is written while offline");
        // The publish window (1) is full: the resubscription still goes out, first.
        s.on_connected(now, false, vec![("f/#".into(), QoS::AtLeastOnce)], &|_| {
            true
        });
        let bytes = std::mem::take(s.output());
        let out = decode_all(&bytes);
        assert_eq!(out.len(), 3, "{out:?}");
        assert!(
            matches!(out[0], VariablePacket::SubscribePacket(_)),
            "{out:?}"
        );
        let VariablePacket::PublishPacket(p) = &out[1] else {
            panic!("{out:?}")
        };
        assert_eq!(p.topic_name(), "a");
        // mqtt-protocol's `dup()` reads the wrong bit; check the wire: DUP is bit 3 [MQTT-3.3.1-1].
        let subscribe_len = {
            let mut v = Vec::new();
            encode(&out[0], &mut v);
            v.len()
        };
        assert_eq!(
            bytes[subscribe_len] & 0x08,
            0x08,
            "DUP set on the resent PUBLISH"
        );
        let VariablePacket::PublishPacket(q) = &out[2] else {
            panic!("{out:?}")
        };
        assert_eq!(q.topic_name(), "b");
        s.check_invariants().unwrap();
    }

    #[test]
    fn a_publish_the_connection_dies_after_three_times_is_refused_and_dropped() {
        let (mut s, now) = connected(SessionConfig::new("c"));
        s.publish(
            "bad".into(),
            b"x".to_vec(),
            QoS::AtLeastOnce,
            false,
            Some(1),
        )
        .unwrap();
        s.publish(
            "good".into(),
            b"y".to_vec(),
            QoS::AtLeastOnce,
            false,
            Some(2),
        )
        .unwrap();
        sent(&mut s);
        let mut t = now;
        for strike in 1..=STRIKES {
            t += Duration::from_millis(100);
            s.on_lost(t);
            assert_eq!(
                s.next_event().is_some(),
                strike == STRIKES,
                "strike {strike}"
            );
            if strike < STRIKES {
                s.on_connected(t, true, Vec::new(), &|_| true);
                let resent = sent(&mut s);
                assert_eq!(resent.len(), 2, "both resent after strike {strike}");
            }
        }
        s.on_connected(t, true, Vec::new(), &|_| true);
        // Only the good one is left, and it completes.
        let resent = sent(&mut s);
        assert_eq!(resent.len(), 1);
        let VariablePacket::PublishPacket(p) = &resent[0] else {
            panic!("{resent:?}")
        };
        assert_eq!(p.topic_name(), "good");
        assert_eq!(s.check_invariants(), Ok(()));
    }

    #[test]
    fn losses_long_after_sending_are_no_strikes() {
        let (mut s, now) = connected(SessionConfig::new("c"));
        s.publish(
            "slow".into(),
            b"x".to_vec(),
            QoS::AtLeastOnce,
            false,
            Some(1),
        )
        .unwrap();
        let mut t = now;
        for _ in 0..5 {
            t += STRIKE_WINDOW * 2;
            s.on_lost(t);
            assert!(s.next_event().is_none());
            s.on_connected(t, true, Vec::new(), &|_| true);
            // Resent at `t`, then the link lives long before dying again.
            t += STRIKE_WINDOW * 2;
            s.poll_timers(t).unwrap();
        }
        assert_eq!(s.inflight(), 1);
    }

    #[test]
    fn a_refused_multi_filter_subscribe_is_split_to_find_the_culprit() {
        let (mut s, now) = connected(SessionConfig::new("c"));
        s.subscribe(
            vec![
                ("ok".into(), QoS::AtMostOnce),
                ("bad".into(), QoS::AtMostOnce),
            ],
            Some(9),
        );
        sent(&mut s);
        let mut t = now;
        let mut refused = Vec::new();
        let mut done = None;
        for _ in 0..10 {
            t += Duration::from_millis(10);
            s.on_lost(t);
            while let Some(ev) = s.next_event() {
                match ev {
                    Event::FiltersRefused(f) => refused.extend(f),
                    Event::Subscribed(r, list) => done = Some((r, list)),
                    other => panic!("{other:?}"),
                }
            }
            s.on_connected(t, true, Vec::new(), &|_| true);
            // The broker answers "ok" alone and dies on anything with "bad".
            for p in sent(&mut s) {
                if let VariablePacket::SubscribePacket(p) = p {
                    let names: Vec<_> = p.subscribes().iter().map(|(f, _)| f.to_string()).collect();
                    if names == ["ok"] {
                        s.handle(
                            SubackPacket::new(
                                p.packet_identifier(),
                                vec![SubscribeReturnCode::MaximumQoSLevel0],
                            )
                            .into(),
                            t,
                        )
                        .unwrap();
                    }
                }
            }
            if done.is_some() {
                break;
            }
        }
        assert_eq!(refused, vec!["bad".to_string()]);
        assert_eq!(done, Some((9, vec![("bad".to_string(), None)])));
    }

    #[test]
    fn a_subscribe_no_longer_wanted_is_not_resent_and_its_waiter_ends() {
        let (mut s, now) = connected(SessionConfig::new("c"));
        s.subscribe(vec![("gone".into(), QoS::AtMostOnce)], Some(3));
        sent(&mut s);
        s.on_disconnected();
        s.on_connected(now, false, Vec::new(), &|f| f != "gone");
        assert!(sent(&mut s).is_empty());
        assert_eq!(s.next_event(), Some(Event::Subscribed(3, Vec::new())));
        assert_eq!(s.check_invariants(), Ok(()));
    }

    #[test]
    fn a_pending_subscribe_is_not_sent_twice_after_a_reconnect() {
        let (mut s, now) = connected(SessionConfig::new("c"));
        s.subscribe(vec![("a".into(), QoS::AtMostOnce)], Some(3));
        sent(&mut s);
        s.on_disconnected();
        s.on_connected(now, false, vec![("a".into(), QoS::AtMostOnce)], &|_| true);
        let again = sent(&mut s);
        assert_eq!(again.len(), 1, "{again:?}");
    }

    #[test]
    fn connack_codes_are_parsed() {
        let refused = ConnackPacket::new(false, ConnectReturnCode::BadUserNameOrPassword).into();
        assert!(matches!(
            parse_connack(&Control::from_v311(refused).unwrap()),
            Err(Error::ConnectionRefused(ConnackCode(4)))
        ));
        let ok = ConnackPacket::new(true, ConnectReturnCode::ConnectionAccepted).into();
        assert!(parse_connack(&Control::from_v311(ok).unwrap()).unwrap());
    }
}

//! Serving: the poll loop (close, commands, read, timers, write, sleep) and the commands
//! callers send.

use super::*;

impl Driver {
    pub(super) fn serve(&mut self, ws: &mut Ws) -> Exit {
        // Deleted from the poller below, before `serve` returns (`ws` owns the socket).
        let readable = Interest {
            readable: true,
            writable: false,
        };
        if let Err(e) = self.wake.poller.add(ws.tcp(), readable) {
            return Exit::Lost(Error::Io {
                context: "registering the socket",
                source: e,
                target: None,
            });
        }
        ws.stream_mut().set_polled(true);
        let exit = self.serve_registered(ws);
        ws.stream_mut().set_polled(false);
        let _ = self.wake.poller.delete(ws.tcp());
        exit
    }

    pub(super) fn serve_registered(&mut self, ws: &mut Ws) -> Exit {
        let mut write_blocked = false;
        // (readable, writable) interest registered with the poller.
        let mut watching = (true, false);
        loop {
            let now = Instant::now();
            if let Some(exit) = self.close_step(ws, write_blocked, now) {
                return exit;
            }
            if !write_blocked && !matches!(self.closing_state, Closing::Disconnecting(_)) {
                if let Err(TryRecvError::Disconnected) = self.take_commands() {
                    return Exit::Close;
                }
            }
            // Backpressure: while the socket takes nothing and our output has grown, reading
            // stops (the server's writes block in turn) until the output drains; and while a
            // subscription that acknowledges after processing is full, until the
            // application drops messages.
            let paused = self.backpressure();
            let more_to_read = if reading(write_blocked, self.session.output().len(), paused) {
                match self.read_available(ws, now) {
                    Ok(more) => more,
                    Err(e) => return Exit::Lost(e),
                }
            } else {
                false
            };
            if let Err(e) = self.session.poll_timers(now) {
                return Exit::Lost(e);
            }
            self.dispatch_events();
            self.ring();

            write_blocked = match self.write_output(ws, now) {
                Ok(blocked) => blocked,
                Err(exit) => return exit,
            };
            let written = !write_blocked && self.session.output().is_empty();
            if written && !self.flushes.is_empty() {
                self.finish_flushes();
            }

            let commands_waiting =
                !write_blocked && !self.cmd_rx.is_empty() && self.session.can_accept();
            let close_ready = self.closing_state.started() && written && {
                // Nothing left to wait for: let `close_step` move on now.
                self.drained()
            };
            if more_to_read || commands_waiting || close_ready || self.close_requested() {
                // Not waiting: read for real next time round (what arrived meanwhile is
                // not left until the next wait).
                ws.stream_mut().set_readable();
                continue;
            }
            if let Err(exit) = self.watch(ws, write_blocked, &mut watching) {
                return exit;
            }
            if let Err(exit) = self.sleep(ws, write_blocked) {
                return exit;
            }
        }
    }

    /// Writes the session's output as one frame, unless the socket is busy or small output
    /// is held back; `Ok(true)` when the socket takes nothing now.
    fn write_output(&mut self, ws: &mut Ws, now: Instant) -> std::result::Result<bool, Exit> {
        // Our frame in flight and the control frames behind it (pongs) go first; `Ready`
        // means all are out, so a new frame cannot split a pong.
        let ready = match ws.flushed() {
            Ok(ready) => Some(ready),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => None,
            Err(e) => return Err(Exit::Lost(crate::net::error::map_io("writing", e))),
        };
        // What the output below answers or assigns (PUBREC, PUBREL, a QoS 2 packet id) is
        // recorded first.
        self.commit_outbox();
        let hold = self.coalescing(now);
        let Some(ready) = ready else {
            return Ok(true);
        };
        let out = self.session.output();
        if out.is_empty() || hold {
            return Ok(false);
        }
        // The batch becomes one binary frame, masked in place: the output buffer is swapped
        // into the stream, not copied.
        self.tally
            .add(crate::stats::Counter::BytesOut, out.len() as u64);
        let blocked = match ws.stream_mut().send_binary(out, ready) {
            Ok(()) => false,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => true,
            Err(e) => return Err(Exit::Lost(crate::net::error::map_io("writing", e))),
        };
        self.session.mark_sent(now);
        Ok(blocked)
    }

    /// Registers what the thread waits for on the socket: readable unless reading is
    /// paused, writable while a write is blocked.
    fn watch(
        &mut self,
        ws: &Ws,
        write_blocked: bool,
        watching: &mut (bool, bool),
    ) -> std::result::Result<(), Exit> {
        let paused = self.backpressure();
        let want = (
            reading(write_blocked, self.session.output().len(), paused),
            write_blocked,
        );
        if want != *watching {
            let interest = Interest {
                readable: want.0,
                // Paused for the application: nothing to wait for on the socket (the
                // application's drops wake the thread).
                writable: want.1 || (!want.0 && !self.paused),
            };
            self.wake
                .poller
                .modify(ws.tcp(), interest)
                .map_err(polling_lost)?;
            *watching = want;
        }
        Ok(())
    }

    /// Sleeps until the socket is ready, a command or a close arrives, or the earliest
    /// deadline (keep-alive, close step, outbox sync, held output).
    fn sleep(&mut self, ws: &mut Ws, write_blocked: bool) -> std::result::Result<(), Exit> {
        let timeout = sleep_for(
            Instant::now(),
            [
                self.session.next_deadline(),
                self.closing_state.deadline(),
                self.outbox.as_ref().and_then(Outbox::next_sync),
                self.coalescer.until(),
            ],
        );
        // What callers may change without a wake-up while the thread was not yet announced
        // asleep is checked here, after the announcement (they skip the wake-up once it is
        // made): commands queued, a close asked, the application dropping the message whose
        // acknowledgement is next, or making room in a subscription that paused reading.
        self.publish_stats();
        ws.release_idle();
        let (cmd_rx, session, closing) = (&self.cmd_rx, &self.session, &self.closing);
        let (acks, flows, paused) = (&self.acks, &self.flows, self.paused);
        let not_closing_yet = !self.closing_state.started();
        let work = || {
            (!write_blocked && !cmd_rx.is_empty() && session.can_accept())
                || (not_closing_yet && closing.load(Ordering::SeqCst))
                || (session.is_connected()
                    && acks
                        .front()
                        .is_some_and(|(_, _, token)| token.strong_count() == 0))
                || (paused && !flows.iter().any(|(_, f)| f.full()))
        };
        match self.wake.sleep(timeout, work) {
            // Woken by a caller or a timer alone: a socket that was drained still is.
            Ok(Some(false)) => {}
            Ok(_) => ws.stream_mut().set_readable(),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => ws.stream_mut().set_readable(),
            Err(e) => return Err(polling_lost(e)),
        }
        Ok(())
    }

    /// Whether to hold small output back for now (see [`Coalescer`]); never while flushing
    /// or closing.
    pub(super) fn coalescing(&mut self, now: Instant) -> bool {
        let urgent = !self.flushes.is_empty() || self.closing_state.started();
        self.coalescer.hold(
            now,
            self.session.output().len(),
            self.session.inflight(),
            urgent,
        )
    }

    /// Takes commands while the session can accept them and the output batch has room.
    pub(super) fn take_commands(&mut self) -> std::result::Result<(), TryRecvError> {
        let mut result = Ok(());
        while self.session.can_accept() && self.session.output().len() < OUTPUT_BATCH {
            match self.cmd_rx.try_recv() {
                Ok(cmd) => self.command(cmd),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    result = Err(TryRecvError::Disconnected);
                    break;
                }
            }
        }
        // One commit (one fsync) for the whole batch: group commit.
        self.commit_outbox();
        result
    }

    // Not inlined into `take_commands`: its frame (a kilobyte) would then be written on
    // every loop turn, also by an idle provider's, and deepen its thread's touched stack by
    // a page (see `Driver::run`).
    #[inline(never)]
    pub(super) fn command(&mut self, cmd: Command) {
        match cmd {
            Command::Publish { packet, reply } => {
                // Counted as held before it stops counting as untaken (the next turn's
                // stats store the exact figure): a flush timeout read in between never
                // undercounts.
                self.pending.held.fetch_add(1, Ordering::Relaxed);
                self.pending.untaken.fetch_sub(1, Ordering::Release);
                self.publish(packet, reply)
            }
            Command::Subscribe {
                id,
                filters,
                options,
                sink,
                reply,
            } => self.subscribe(id, filters, options, sink, reply),
            Command::Unsubscribe { id, keep, reply } => {
                if let Some((changes, sink)) = self.router.remove(id, keep) {
                    drop(sink);
                    self.apply(changes);
                }
                if let Some(i) = self.flows.iter().position(|(f, _)| *f == id) {
                    let (_, flow) = self.flows.swap_remove(i);
                    if self.paused {
                        flow.paused.fetch_sub(1, Ordering::AcqRel);
                    }
                }
                if let Some(r) = reply {
                    let _ = r.send(());
                }
            }
            Command::Flush { reply } => {
                self.flushes.push((self.session.next_ticket(), reply));
            }
        }
    }

    /// A publish: checked against this connection's server, recorded in the outbox when
    /// there is one (answered once committed), handed to the session.
    fn publish(&mut self, packet: Outgoing, reply: Option<Reply>) {
        // What the server of this connection refuses fails the call (checked at the call
        // too; a reconnect can bring stricter limits). Handing the reply to the session
        // first would drop it on the error, and the caller saw `Closed`.
        if let Err(e) = self.session.check_publish(&packet) {
            let e = self.name_provider(e);
            match reply {
                Some(r) => {
                    let _ = r.send(Err(e));
                }
                None => log::warn!("provider {}: not sent: {e}", self.name),
            }
            return;
        }
        let qos = packet.qos;
        if qos != QoS::AtMostOnce {
            if let Some(outbox) = self.outbox.as_mut() {
                // Durable: recorded now, answered once committed.
                let ticket = self.session.next_ticket();
                let p = &packet;
                let accepted = if p.topic.len() > crate::topic::MAX_TOPIC_LEN {
                    Err(Error::invalid_topic(&p.topic, "longer than 65535 bytes"))
                } else {
                    outbox.accept(ticket, &p.topic, &p.payload, &p.props, qos, p.retain)
                };
                let accepted = accepted.and_then(|()| self.session.publish_packet(packet, None));
                match (accepted, reply) {
                    (Ok(()), Some(r)) => self.accepted.push(r),
                    (Err(e), Some(r)) => {
                        let _ = r.send(Err(e));
                    }
                    _ => {}
                }
                return;
            }
        }
        let (reply_now, session_reply) = if qos == QoS::AtMostOnce {
            (reply, None)
        } else {
            (None, reply)
        };
        if let Err(e) = self.session.publish_packet(packet, session_reply) {
            if let Some(r) = reply_now {
                let _ = r.send(Err(e));
            }
        } else if let Some(r) = reply_now {
            let _ = r.send(Ok(()));
        }
    }

    /// A subscribe: its options, its flow (acknowledging after processing), the unclaimed
    /// messages it takes, and the SUBSCRIBE the router's change needs.
    fn subscribe(
        &mut self,
        id: u64,
        filters: Vec<(String, QoS)>,
        options: u8,
        sink: Sink,
        reply: Reply,
    ) {
        if let Some(refusal) = self.retained_not_sendable(&filters, options) {
            let _ = reply.send(Err(Error::Unsupported(refusal)));
            return;
        }
        for (f, _) in &filters {
            self.session.set_subscription_options(f, options);
        }
        if let Some(flow) = &sink.flow {
            flow.wakes
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(self.wake.clone());
            if self.paused {
                flow.paused.fetch_add(1, Ordering::AcqRel);
            }
            self.flows.push((id, flow.clone()));
            self.session.set_deferred_acks(true);
        }
        self.claim_unclaimed(&filters, &sink);
        let changes = self.router.add(id, &filters, sink);
        self.session
            .change(changes.subscribe, changes.unsubscribe, Some(reply));
    }

    /// Sends what a change of the broker's filter set needs: SUBSCRIBE first (no gap in
    /// delivery), then UNSUBSCRIBE.
    pub(super) fn apply(&mut self, changes: Changes) {
        self.session
            .change(changes.subscribe, changes.unsubscribe, None);
    }

    /// Reads frames until the socket has nothing more (`Ok(false)`) or the per-wake budget is
    /// spent (`Ok(true)`: come back without waiting).
    pub(super) fn read_available(&mut self, ws: &mut Ws, now: Instant) -> Result<bool> {
        for _ in 0..FRAMES_PER_WAKE {
            if self.session.output().len() >= MAX_BLOCKED_OUTPUT {
                // What reading made must be written first (backpressure, see the caller).
                return Ok(true);
            }
            // Pings are answered inside (the pong goes out with the next flush).
            match ws.read("reading")? {
                Incoming::Data(chunk) => {
                    self.tally
                        .add(crate::stats::Counter::BytesIn, chunk.bytes.len() as u64);
                    let mut framer = std::mem::replace(&mut self.framer, Framer::new(0));
                    let fed =
                        framer.feed_shared(chunk.bytes, chunk.backing, |p| self.inbound(p, now));
                    self.framer = framer;
                    fed?;
                    self.dispatch_events();
                }
                Incoming::Closed(how) => {
                    return Err(Error::ConnectionLost(format!(
                        "the server closed the WebSocket{how}"
                    )))
                }
                Incoming::Blocked => return Ok(false),
                Incoming::Progress => {}
            }
        }
        Ok(true)
    }
}

/// The poller failed: the connection is given up (and made again).
fn polling_lost(e: io::Error) -> Exit {
    Exit::Lost(Error::Io {
        context: "polling the socket",
        source: e,
        target: None,
    })
}

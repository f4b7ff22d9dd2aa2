//! Closing: the graceful close's drain and DISCONNECT, answered flushes, and the shutdown
//! that fails what still waits.

use super::*;

impl Driver {
    /// Whether `close()` was called and the drain has not started yet.
    pub(super) fn close_requested(&self) -> bool {
        !self.closing_state.started() && self.closing()
    }

    /// Everything accepted so far is done: no command waits, no publish is unfinished.
    pub(super) fn drained(&self) -> bool {
        self.cmd_rx.is_empty() && self.session.oldest_unfinished().is_none()
    }

    /// Moves a graceful close along: drain (until everything accepted is done or the close
    /// timeout), then DISCONNECT (until written or one more second). `Some` to stop serving.
    pub(super) fn close_step(
        &mut self,
        ws: &Ws,
        write_blocked: bool,
        now: Instant,
    ) -> Option<Exit> {
        let requested = self.close_requested();
        let written =
            !write_blocked && self.session.output().is_empty() && !ws.stream().frame_pending();
        let drained = self.drained();
        let timeout = self.options.close_timeout;
        match self
            .closing_state
            .step(now, requested, timeout, written, drained)
        {
            CloseAction::Serve => None,
            CloseAction::Disconnect { late } => {
                if late {
                    log::warn!(
                        "provider {}: close timeout: leaving with publishes unfinished",
                        self.name
                    );
                }
                self.session.disconnect(&self.state.disconnect_properties());
                None
            }
            CloseAction::Leave => Some(Exit::Close),
        }
    }

    /// Answers the flushes whose publishes are all done (the output is written).
    pub(super) fn finish_flushes(&mut self) {
        self.publish_stats();
        let oldest = self.session.oldest_unfinished();
        self.flushes.retain(|(mark, reply)| {
            let done = oldest.is_none_or(|o| o >= *mark);
            if done {
                let _ = reply.send(Ok(()));
            }
            !done
        });
    }

    /// Ends the provider: the WebSocket close (DISCONNECT was written by the graceful close),
    /// fail what waits, end subscriptions. Never blocks.
    pub(super) fn shutdown(&mut self, ws: Option<Ws>) {
        self.publish_stats();
        if let Some(mut ws) = ws {
            match self.closing_state {
                // DISCONNECT is out: end without a reset (which could discard it), within
                // what is left of the second it has.
                Closing::Disconnecting(until)
                    if self.session.output().is_empty() && !ws.stream().frame_pending() =>
                {
                    ws.finish(until);
                }
                Closing::Disconnecting(_) => {
                    log::warn!(
                        "provider {}: DISCONNECT could not be written in time; the broker may \
                         publish the last will",
                        self.name
                    );
                    self.unfinished.store(true, Ordering::SeqCst);
                    ws.close();
                }
                // Best effort, non-blocking: the socket is closed when `ws` is dropped anyway.
                _ => ws.close(),
            }
        }
        // Announced before draining: callers see Disconnected and stop sending.
        if self.state.get() != ConnectionState::Disconnected {
            self.set_state(ConnectionState::Disconnected, None);
        }
        // Unfinished: a publish accepted and not done, or still queued (a subscribe, an
        // unsubscribe or a flush queued behind the close is not a publish the close lost).
        let mut unfinished = self.session.oldest_unfinished().is_some();
        self.session.on_disconnected();
        self.commit_outbox();
        if let Some(outbox) = self.outbox.as_mut() {
            if let Err(e) = outbox.sync_now() {
                log::error!("provider {}: {e}", self.name);
            }
        }
        for reply in self.accepted.drain(..) {
            let _ = reply.send(Err(Error::Closed));
        }
        for reply in self.session.take_waiting() {
            let _ = reply.send(Err(Error::Closed));
        }
        for (_, reply) in self.flushes.drain(..) {
            let _ = reply.send(Err(Error::Closed));
        }
        // Commands still queued will never be served.
        while let Ok(cmd) = self.cmd_rx.try_recv() {
            if matches!(cmd, Command::Publish { .. }) {
                unfinished = true;
            }
            match cmd {
                Command::Publish { reply: Some(r), .. }
                | Command::Subscribe { reply: r, .. }
                | Command::Flush { reply: r } => {
                    let _ = r.send(Err(Error::Closed));
                }
                Command::Unsubscribe { reply: Some(r), .. } => {
                    let _ = r.send(());
                }
                _ => {}
            }
        }
        if unfinished {
            self.unfinished.store(true, Ordering::SeqCst);
        }
        // Dropping the sinks ends the subscriptions' iterators once drained.
        drop(self.router.drain());
    }
}

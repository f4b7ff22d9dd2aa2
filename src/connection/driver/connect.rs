//! Connecting: the reconnect loop and its backoff, one attempt per URL of the plan, the
//! transport, CONNECT and CONNACK, and the hints for a server that does not speak MQTT.

use super::*;

impl Driver {
    /// Retries until connected (`Some`) or closed (`None`), taking commands meanwhile.
    /// `attempt` counts attempts since the last stable connection (it sets the backoff);
    /// `at_once` makes the first attempt without waiting. With reconnecting off (only a
    /// background first connection gets here then) one failed attempt ends it.
    pub(super) fn reconnect(&mut self, attempt: &mut u32, mut at_once: bool) -> Option<Ws> {
        loop {
            let delay = if std::mem::take(&mut at_once) {
                Duration::ZERO
            } else {
                backoff::delay(&self.options.reconnect, *attempt)
            };
            let deadline = deadline_after(delay);
            *attempt = attempt.saturating_add(1);
            loop {
                if self.closing() {
                    return None;
                }
                if let Err(TryRecvError::Disconnected) = self.take_commands() {
                    return None;
                }
                self.dispatch_events();
                self.ring();
                // Offline is when the queue and outbox gauges matter most.
                self.publish_stats();
                let now = Instant::now();
                if now >= deadline {
                    break;
                }
                self.commit_outbox();
                let wake = self
                    .outbox
                    .as_ref()
                    .and_then(Outbox::next_sync)
                    .map_or(deadline, |s| s.max(now).min(deadline));
                let (cmd_rx, session, closing) = (&self.cmd_rx, &self.session, &self.closing);
                let _ = self.wake.sleep(Some(wake - now), || {
                    (!cmd_rx.is_empty() && session.can_accept()) || closing.load(Ordering::SeqCst)
                });
            }
            self.set_state(ConnectionState::Connecting, None);
            match self.connect() {
                Ok(ws) => return Some(ws),
                Err(e) => {
                    if !self.options.reconnect.enabled {
                        self.set_state(ConnectionState::Disconnected, Some(e.to_string()));
                        return None;
                    }
                    if e.is_auth_refusal() {
                        log::error!("provider {}: refused: {e}; backing off", self.name);
                    }
                    self.set_state(ConnectionState::ConnectionDisrupted, Some(e.to_string()));
                }
            }
        }
    }

    /// One full connection attempt on each URL of the provider's plan in turn, until one
    /// connects; the error (of the last URL tried) is explained by the provider.
    pub(super) fn connect(&mut self) -> Result<Ws> {
        let plan = self.opener.plan();
        let mut failed = Vec::new();
        for (n, url) in plan.iter().enumerate() {
            match self.try_connect(*url) {
                Ok(ws) => return Ok(ws),
                Err(e) => {
                    let e = self.opener.explain(e);
                    if n + 1 < plan.len() && !self.closing() {
                        log::warn!(
                            "provider {}: URL {} of {}: {e}; trying the next",
                            self.name,
                            n + 1,
                            plan.len()
                        );
                    }
                    failed.push(e);
                    if self.closing() {
                        break;
                    }
                }
            }
        }
        // Each URL's own error when several failed (the last alone hid the others'); a
        // `close()` in between is what it is.
        match failed.len() {
            0 => Err(Error::Closed),
            1 => Err(failed.remove(0)),
            _ if self.closing() => Err(failed.pop().unwrap_or(Error::Closed)),
            _ => Err(Error::EveryUrlFailed(failed)),
        }
    }

    /// Transport, CONNECT, CONNACK, then the session resumes — all before one deadline
    /// (credentials, DNS, TCP, TLS, upgrade, CONNACK), and abandoned when `close()` is called.
    pub(super) fn try_connect(&mut self, url: usize) -> Result<Ws> {
        let deadline = deadline_after(self.options.connect_timeout);
        // Credentials calls (Cognito's HTTPS) inside are abandoned by `close()` too.
        let req = crate::net::tcp::with_attempt_abort(Some(self.closing.clone()), || {
            self.opener.open_request(url, deadline)
        })?;
        // Every error from here on names the URL (without credentials or query).
        let target = crate::net::request::redact(&req.url);
        let limit = self.options.connect_timeout;
        self.connect_to(&req, deadline)
            .map_err(|e| e.at(&target, limit))
    }

    /// The attempt on `req` once its request is made: transport, CONNECT, CONNACK, resume.
    pub(super) fn connect_to(
        &mut self,
        req: &crate::net::request::OpenRequest,
        deadline: Instant,
    ) -> Result<Ws> {
        let mut ws =
            link::open(req, deadline, Some(self.closing.clone())).map_err(closed_if_aborted)?;
        // CONNACK goes through the session like every packet; what it resumes with is the
        // router's now (no command is taken while connecting).
        let resubscribe = self.router.active();
        let wanted = resubscribe.iter().map(|(f, _)| f.clone()).collect();
        let mut connect = self.session.connecting(resubscribe, wanted);
        let ready = ws
            .flushed()
            .map_err(|e| closed_if_aborted(crate::net::error::map_io("sending CONNECT", e)))?;
        let stream = ws.stream_mut();
        stream
            .send_binary(&mut connect, ready)
            .and_then(|()| std::io::Write::flush(stream))
            .map_err(|e| closed_if_aborted(crate::net::error::map_io("sending CONNECT", e)))?;

        self.framer.reset();
        let result = self.await_connack(&mut ws, &req.url);
        if result.is_err() {
            // The attempt failed: the session must not think it is connected.
            self.session.on_disconnected();
        }
        let session_present = result?;
        let stream = ws.stream_mut();
        stream.set_deadline(None);
        stream
            .tcp()
            .set_read_timeout(None)
            .and_then(|()| stream.tcp().set_write_timeout(None))
            .and_then(|()| stream.tcp().set_nonblocking(true))
            .map_err(|e| crate::net::error::map_io("socket setup", e))?;
        let shown = request::redact(&req.url);
        log::debug!(
            "provider {}: connected to {shown} (session present: {session_present})",
            self.name,
        );
        self.url_in_use = Some(shown);
        self.state.set_server_limits(self.session.server_limits());
        Ok(ws)
    }

    /// Reads until the session has its CONNACK; what follows it in the same frames goes
    /// through the session as it is decoded (a frame of a million tiny packets is never held
    /// as a list of them). `Ok(session_present)`.
    pub(super) fn await_connack(&mut self, ws: &mut Ws, url: &url::Url) -> Result<bool> {
        let mut first = true;
        // MQTT bytes read, and the first of them (CONNACK's fixed header): what follows
        // CONNACK in the same reads is the connection's traffic, counted in `bytes_in`.
        let (mut read, mut prefix) = (0usize, Vec::with_capacity(5));
        loop {
            let chunk = match ws.read("waiting for CONNACK") {
                Ok(Incoming::Data(chunk)) => chunk,
                Ok(Incoming::Closed(how)) => {
                    return Err(Error::ConnectionLost(format!(
                        "the server closed the WebSocket before CONNACK{how}"
                    )))
                }
                Ok(Incoming::Blocked) => {
                    return Err(Error::timeout(Operation::Connect, "no CONNACK"))
                }
                // Bounded by the connect deadline, which every read checks.
                Ok(Incoming::Progress) => continue,
                Err(e) => return Err(closed_if_aborted(e)),
            };
            let bytes = &chunk.bytes;
            read += bytes.len();
            prefix.extend(bytes.iter().take(5 - prefix.len()));
            // A server's first packet is CONNACK [MQTT-3.2.0-1]: first bytes of another type
            // are not MQTT at all, most likely, and are said so at once (an HTTP answer of a
            // few bytes would otherwise wait for the rest of a "packet" until the deadline).
            let not_connack =
                first && !self.session.is_connected() && bytes.first().is_some_and(|b| b >> 4 != 2);
            first = false;
            let head: Vec<u8> = bytes.iter().take(8).copied().collect();
            if let Some(name) = not_connack.then(|| mqtt_before_connack(&head)).flatten() {
                // MQTT all right, out of order: no hint about the port or the path.
                return Err(Error::Protocol(format!(
                    "the server's first packet is {name}, not CONNACK [MQTT-3.2.0-1]"
                )));
            }
            if not_connack {
                let what = if head.starts_with(b"HTTP/") {
                    "an HTTP answer".to_string()
                } else {
                    format!("a packet of type {}", head[0] >> 4)
                };
                return Err(not_mqtt(url, &head, Error::Protocol(what)));
            }
            let mut framer = std::mem::replace(&mut self.framer, Framer::new(0));
            let fed = framer.feed_shared(chunk.bytes, chunk.backing, |p| {
                self.inbound(p, Instant::now())
            });
            self.framer = framer;
            match fed {
                Err(e @ Error::Protocol(_)) if not_connack => return Err(not_mqtt(url, &head, e)),
                other => other?,
            }
            self.dispatch_events();
            if self.session.is_connected() {
                if let Ok(Some((header, remaining))) =
                    crate::mqtt::packet::parse_fixed_header(&prefix)
                {
                    let after = read.saturating_sub(header + remaining);
                    self.tally.add(crate::stats::Counter::BytesIn, after as u64);
                }
                return Ok(self.session.session_present());
            }
        }
    }
}

/// The name of the packet `head` starts, when it is one a server sends, with its fixed
/// flags and a short remaining length (an acknowledgement, PINGRESP, DISCONNECT, AUTH): an
/// MQTT server that answered out of order, not another protocol.
fn mqtt_before_connack(head: &[u8]) -> Option<&'static str> {
    let name = match head.first()? {
        0x40 => "PUBACK",
        0x50 => "PUBREC",
        0x62 => "PUBREL",
        0x70 => "PUBCOMP",
        0x90 => "SUBACK",
        0xb0 => "UNSUBACK",
        0xd0 => "PINGRESP",
        0xe0 => "DISCONNECT",
        0xf0 => "AUTH",
        _ => return None,
    };
    // Below 0x20: a short packet, and not the printable second byte of a text protocol.
    (*head.get(1)? < 0x20).then_some(name)
}

/// The first bytes after the upgrade were not a CONNACK: most likely the URL's path is not
/// where the server speaks MQTT (NATS answers its own protocol at `/`).
pub(super) fn not_mqtt(url: &url::Url, head: &[u8], err: Error) -> Error {
    let nats = if head.starts_with(b"INFO ") {
        " (they look like the NATS protocol)"
    } else {
        ""
    };
    let hint = if matches!(url.scheme(), "mqtt" | "mqtts") && head.starts_with(b"HTTP/") {
        format!(
            "Port {} is an HTTP server: if it is the broker's WebSocket listener, use \
             ws{}://{}:{0}/mqtt",
            url.port().unwrap_or(0),
            if url.scheme() == "mqtts" { "s" } else { "" },
            url.host_str().unwrap_or_default()
        )
    } else if matches!(url.scheme(), "mqtt" | "mqtts") {
        format!(
            "Does port {} speak MQTT{}?",
            url.port().unwrap_or(0),
            if url.scheme() == "mqtts" {
                " over TLS"
            } else {
                ""
            }
        )
    } else {
        format!(
            "Is {:?} the server's MQTT-over-WebSocket path? NATS, AWS IoT and most brokers \
             serve MQTT at /mqtt",
            url.path()
        )
    };
    // The cause's own words, without its "MQTT protocol error:" prefix a second time.
    let cause = match err {
        Error::Protocol(s) => s,
        other => other.to_string(),
    };
    Error::Protocol(format!(
        "the server's first bytes are not an MQTT CONNACK{nats}: {cause}. {hint}"
    ))
}

/// An attempt abandoned because `close()` was called is reported as `Closed`.
pub(super) fn closed_if_aborted(e: Error) -> Error {
    match &e {
        Error::Io { source, .. } if source.kind() == io::ErrorKind::ConnectionAborted => {
            Error::Closed
        }
        _ => e,
    }
}

//! [`PubSub`]: named providers, subscribe and publish fanned out over them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;

use crate::connection::inbox::inbox;
use crate::connection::spec::Limits;
use crate::connection::{deadline_after, wait_reply, Connection};
use crate::error::{Error, Operation, Result};
use crate::message::{Message, Payload, Topics};
use crate::mqtt::QoS;
use crate::options::{OfflineQoS0, PublishOptions, SubscribeOptions};
use crate::provider::Provider;
use crate::state::{ConnectionState, StateEvent, StateHub};
use crate::subscription::Subscription;
use crate::topic::{validate_topic_filter, validate_topic_name};

/// Publish and subscribe through any number of named providers, from any thread.
///
/// Cheap to clone (clones share the providers). Closing — explicitly with
/// [`PubSub::close`], or when the last clone is dropped — sends DISCONNECT on every provider
/// and joins their threads.
///
/// ```no_run
/// use mqtt_pubsub::{MqttOverWsProvider, PubSub};
/// let pubsub = PubSub::new();
/// pubsub.add_provider(MqttOverWsProvider::builder("ws://localhost:8080/mqtt").build()?)?;
/// let sub = pubsub.subscribe("sensors/+/temp")?;
/// pubsub.publish("sensors/kitchen/temp", "21.5")?;
/// let msg = sub.recv().expect("subscription ended");
/// println!("{} {}", msg.topic(), msg.text()?);
/// # Ok::<(), mqtt_pubsub::Error>(())
/// ```
#[derive(Clone, Default)]
pub struct PubSub {
    inner: Arc<Inner>,
}

/// The registered providers: in the order they were added, and by name.
///
/// Adding, finding one by name and retiring cost the same with 10 providers or 10,000
/// (a scan of the list per add and a copy of it made adding 10,000 providers quadratic).
#[derive(Default)]
struct Registry {
    /// Shared with the calls that go to every provider (one reference count, not a copy);
    /// changed in place unless such a call holds it, then copied once.
    all: Arc<Vec<Arc<Connection>>>,
    by_name: HashMap<Arc<str>, Arc<Connection>>,
}

#[derive(Default)]
struct Inner {
    providers: RwLock<Registry>,
    hub: StateHub,
    next_id: AtomicU64,
    closed: AtomicBool,
    /// The adds connecting now, by name, with their connection's close flag. The name is
    /// taken: a second add of it is refused before it connects (with the same client id it
    /// would take the first one's session over at the broker). A close sets the flags (each
    /// add then gives up within its connect step) and waits until this is empty.
    connecting: std::sync::Mutex<HashMap<String, Arc<AtomicBool>>>,
    connecting_ended: std::sync::Condvar,
    /// The counters of providers removed or closed, by name (the latest of each name), so
    /// that their final counts can still be read.
    retired: std::sync::Mutex<HashMap<Arc<str>, Arc<crate::stats::Cell>>>,
}

impl Inner {
    /// Keeps `conns`' counters readable after they leave the list.
    fn retire(&self, conns: &[Arc<Connection>]) {
        let mut retired = self.retired.lock().unwrap_or_else(|e| e.into_inner());
        for c in conns {
            retired.insert(c.name.clone(), c.stats_cell());
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        let list = std::mem::take(self.providers.get_mut().unwrap_or_else(|e| e.into_inner()));
        close_all(&list.all);
    }
}

/// Closes providers in parallel: each drains for up to its own close timeout. `true` when
/// every one finished everything it had accepted.
fn close_all(list: &[Arc<Connection>]) -> bool {
    for c in list {
        c.begin_close();
    }
    let mut all = true;
    for c in list {
        c.join();
        all &= !c.ended_unfinished();
    }
    all
}

/// Waits for QoS 1/2 publishes started by [`PubSub::publish_nowait`].
///
/// ```no_run
/// use mqtt_pubsub::{PublishOptions, QoS};
/// # let pubsub = mqtt_pubsub::PubSub::new();
/// let opts = PublishOptions::default().qos(QoS::AtLeastOnce);
/// let receipts: Vec<_> = (0..100)
///     .map(|i| pubsub.publish_nowait("log", format!("line {i}"), opts.clone()))
///     .collect::<Result<_, _>>()?;
/// for r in receipts {
///     r.wait()?; // PUBACK arrived
/// }
/// # Ok::<(), mqtt_pubsub::Error>(())
/// ```
#[must_use = "a receipt does nothing unless waited on"]
#[derive(Debug)]
pub struct PublishReceipt {
    waits: Vec<Receiver<Result<()>>>,
    deadline: Instant,
}

impl PublishReceipt {
    /// Blocks until every PUBACK/PUBCOMP arrived, or the publish's timeout.
    pub fn wait(self) -> Result<()> {
        for rx in &self.waits {
            wait_reply(
                rx,
                self.deadline,
                Operation::Publish,
                "no acknowledgement in time; the message may still be delivered",
            )?;
        }
        Ok(())
    }

    /// Whether every acknowledgement is in (never blocks).
    pub fn is_done(&self) -> bool {
        self.waits.iter().all(|rx| !rx.is_empty())
    }
}

impl std::fmt::Debug for PubSub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PubSub")
            .field("providers", &self.provider_names())
            .finish()
    }
}

impl PubSub {
    /// A `PubSub` with no provider yet.
    pub fn new() -> PubSub {
        PubSub::default()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Registry> {
        self.inner
            .providers
            .read()
            .unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Registry> {
        self.inner
            .providers
            .write()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Whether `c`, a target of a call to every provider, was removed (or the `PubSub`
    /// closed) since: its refusal is then the removal's, not the call's failure.
    fn removed(&self, c: &Arc<Connection>) -> bool {
        !self.inner.closed.load(Ordering::SeqCst)
            && !self
                .read()
                .by_name
                .get(&*c.name)
                .is_some_and(|r| Arc::ptr_eq(r, c))
    }

    /// Registers a provider and connects it. Returns after CONNACK, or with the error that
    /// prevented it (refused, bad credentials, TLS, HTTP status of the upgrade, timeout).
    /// A name already taken, or being added by another thread, is
    /// [`Error::DuplicateProvider`] (refused before connecting). A [`PubSub::close`] that
    /// begins while it connects makes it give up and return [`Error::Closed`]; the close
    /// returns only after it has.
    ///
    /// ```no_run
    /// use mqtt_pubsub::{MqttOverWsProvider, PubSub};
    /// let pubsub = PubSub::new();
    /// pubsub.add_provider(MqttOverWsProvider::builder("ws://localhost:9001/mqtt").name("a").build()?)?;
    /// pubsub.add_provider(MqttOverWsProvider::builder("mqtt://localhost:1883").name("b").build()?)?;
    /// # Ok::<(), mqtt_pubsub::Error>(())
    /// ```
    pub fn add_provider(&self, provider: impl Provider) -> Result<()> {
        if self.inner.closed.load(Ordering::SeqCst) {
            return Err(Error::Closed);
        }
        let spec = provider.into_spec();
        if let (Some(max), Some(id)) = (spec.limits.max_client_id, spec.options.client_id.as_ref())
        {
            if id.len() > max {
                return Err(Error::InvalidConfig(format!(
                    "client id of {} bytes exceeds this provider's limit of {max}",
                    id.len()
                )));
            }
        }
        let name = spec.name.clone();
        let closing = Arc::new(AtomicBool::new(false));
        {
            let mut connecting = self.lock_connecting();
            if connecting.contains_key(&name) || self.read().by_name.contains_key(&*name) {
                return Err(Error::DuplicateProvider(name));
            }
            // A close that began before this add is listed does not know to wait for it.
            if self.inner.closed.load(Ordering::SeqCst) {
                return Err(Error::Closed);
            }
            connecting.insert(name.clone(), closing.clone());
        }
        let result = Connection::open(spec, self.inner.hub.clone(), closing).and_then(|conn| {
            let mut list = self.write();
            // A close that began while this one connected has taken the list already.
            if self.inner.closed.load(Ordering::SeqCst) {
                drop(list);
                conn.close();
                return Err(Error::Closed);
            }
            let conn = Arc::new(conn);
            list.by_name.insert(conn.name.clone(), conn.clone());
            Arc::make_mut(&mut list.all).push(conn);
            Ok(())
        });
        self.lock_connecting().remove(&name);
        self.inner.connecting_ended.notify_all();
        match result {
            // Abandoned for a close.
            Err(_) if self.inner.closed.load(Ordering::SeqCst) => Err(Error::Closed),
            r => r,
        }
    }

    fn lock_connecting(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<AtomicBool>>> {
        self.inner
            .connecting
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Closes a provider gracefully (as [`PubSub::close`] does, with the same result) and
    /// removes it. Its subscriptions' iterators end.
    pub fn remove_provider(&self, name: &str) -> Result<()> {
        let conn = {
            let mut list = self.write();
            let conn = list
                .by_name
                .remove(name)
                .ok_or_else(|| Error::UnknownProvider(name.to_string()))?;
            Arc::make_mut(&mut list.all).retain(|c| !Arc::ptr_eq(c, &conn));
            // Its counters (still counting until its thread ends) are readable by name from
            // the moment it leaves the list.
            self.inner.retire(std::slice::from_ref(&conn));
            conn
        };
        conn.close();
        if conn.ended_unfinished() {
            return Err(Error::timeout(
                Operation::Close,
                "publishes were still unfinished (their receipts say Closed), or DISCONNECT \
                 could not be written in time",
            ));
        }
        Ok(())
    }

    /// The names of the registered providers, in the order they were added.
    pub fn provider_names(&self) -> Vec<String> {
        self.read().all.iter().map(|c| c.name.to_string()).collect()
    }

    /// The current connection state of a provider.
    pub fn state(&self, provider: &str) -> Option<ConnectionState> {
        self.read().by_name.get(provider).map(|c| c.state())
    }

    /// A provider's counters and gauges (`None`: no provider of that name): what it
    /// published, had acknowledged, received, delivered and dropped since it started, and
    /// what it holds now. See [`ProviderStats`](crate::ProviderStats) for each field's exact
    /// meaning. A snapshot is as of the provider's I/O thread's last turn (it stores its
    /// counts after each batch, while offline too, and before a flush or close answers), so
    /// right after [`flush`](Self::flush) or [`close`](Self::close) it is exact. A provider
    /// closed or removed keeps its final counts here, by name, until one of the same name
    /// replaces it.
    ///
    /// ```no_run
    /// use mqtt_pubsub::{MqttOverWsProvider, PubSub};
    /// let pubsub = PubSub::new();
    /// pubsub.add_provider(MqttOverWsProvider::builder("ws://localhost:8080/mqtt").name("edge").build()?)?;
    /// pubsub.publish("a/b", "x")?;
    /// let s = pubsub.stats("edge").unwrap();
    /// println!("{} published, {} bytes out, {} reconnects", s.published, s.bytes_out, s.reconnects);
    /// # Ok::<(), mqtt_pubsub::Error>(())
    /// ```
    pub fn stats(&self, provider: &str) -> Option<crate::ProviderStats> {
        if let Some(c) = self.read().by_name.get(provider) {
            return Some(c.stats());
        }
        let retired = self.inner.retired.lock().unwrap_or_else(|e| e.into_inner());
        retired.get(provider).map(|cell| cell.snapshot())
    }

    /// A new receiver of every provider's state changes from now on (bounded: a receiver
    /// that falls 1024 events behind misses the newer ones, with a warning logged).
    ///
    /// ```no_run
    /// # let pubsub = mqtt_pubsub::PubSub::new();
    /// let events = pubsub.state_changes();
    /// while let Ok(e) = events.recv() {
    ///     println!("{}: {:?} {}", e.provider, e.state, e.reason.unwrap_or_default());
    /// }
    /// ```
    pub fn state_changes(&self) -> Receiver<StateEvent> {
        self.inner.hub.subscribe()
    }

    fn targets(&self, provider: Option<&str>) -> Result<Targets> {
        if self.inner.closed.load(Ordering::SeqCst) {
            return Err(Error::Closed);
        }
        let list = self.read();
        match provider {
            Some(name) => list
                .by_name
                .get(name)
                .map(|c| Targets::One(c.clone()))
                .ok_or_else(|| Error::UnknownProvider(name.to_string())),
            None if list.all.is_empty() => Err(Error::NoProviders),
            None => Ok(Targets::All(list.all.clone())),
        }
    }

    /// Subscribes on every provider at QoS 0. See [`PubSub::subscribe_with`].
    ///
    /// ```no_run
    /// # let pubsub = mqtt_pubsub::PubSub::new();
    /// let sub = pubsub.subscribe(["sensors/+/temp", "alerts/#"])?; // SUBACK arrived
    /// let msg = sub.recv_timeout(std::time::Duration::from_secs(5));
    /// # Ok::<(), mqtt_pubsub::Error>(())
    /// ```
    pub fn subscribe(&self, topics: impl Topics) -> Result<Subscription> {
        self.subscribe_with(topics, SubscribeOptions::default())
    }

    /// Subscribes to one or many filters (`+` and `#` wildcards allowed). Returns after every
    /// SUBACK; fails naming the filter if a broker refused one (and then subscribes nothing).
    ///
    /// ```no_run
    /// use mqtt_pubsub::{QoS, SubscribeOptions};
    /// # let pubsub = mqtt_pubsub::PubSub::new();
    /// let sub = pubsub.subscribe_with(
    ///     "orders/#",
    ///     SubscribeOptions::default().qos(QoS::AtLeastOnce).provider("cloud").capacity(10_000),
    /// )?;
    /// # Ok::<(), mqtt_pubsub::Error>(())
    /// ```
    pub fn subscribe_with(
        &self,
        topics: impl Topics,
        options: SubscribeOptions,
    ) -> Result<Subscription> {
        let filters = topics.into_topics();
        if filters.is_empty() {
            return Err(Error::invalid_topic("", "no topic filter given"));
        }
        for f in &filters {
            validate_topic_filter(f)?;
        }
        let targets = self.targets(options.provider.as_deref())?;
        for c in targets.iter() {
            for f in &filters {
                check_topic_limits(&c.limits, f)?;
            }
            check_qos(&c.limits, options.qos, &c.name)?;
            if options.v5_bits != 0 && c.version != crate::MqttVersion::V5 {
                return Err(Error::Unsupported(format!(
                    "no_local, retain_as_published and retain_handling are MQTT 5 options; \
                     provider {} speaks 3.1.1",
                    c.name
                )));
            }
        }
        let capacity = options.capacity.unwrap_or(targets[0].subscription_capacity);
        if capacity == 0 {
            return Err(Error::InvalidConfig(
                "a subscription's capacity must be at least 1".into(),
            ));
        }
        let max_bytes = options
            .max_bytes
            .unwrap_or(targets[0].subscription_max_bytes);
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let timeout = options.timeout.unwrap_or(targets[0].operation_timeout);
        let deadline = deadline_after(timeout);
        let (mut sinks, inbox) = inbox(capacity, max_bytes);
        if options.ack_after_processing || targets.iter().any(|c| c.ack_after_processing) {
            sinks.ack_after_processing();
        }
        // Built first so that an error below unsubscribes what was already set up (on drop).
        let sub = Subscription::new(id, inbox, &targets, filters.clone(), timeout);
        let with_qos: Vec<(String, QoS)> = filters.into_iter().map(|f| (f, options.qos)).collect();
        let all = matches!(targets, Targets::All(_));
        let mut waits = Vec::with_capacity(targets.len());
        for c in targets.iter() {
            match c.subscribe(
                id,
                with_qos.clone(),
                options.v5_bits,
                sinks.sink(),
                deadline,
            ) {
                Ok(rx) => waits.push((c, rx)),
                Err(Error::Closed) if all && self.removed(c) => {}
                Err(e) => return Err(e),
            }
        }
        drop(sinks);
        for (c, rx) in &waits {
            match wait_reply(rx, deadline, Operation::Subscribe, "no SUBACK in time") {
                Err(Error::Closed) if all && self.removed(c) => {}
                r => r?,
            }
        }
        Ok(sub)
    }

    /// Publishes to one or many topics on every provider at QoS 0.
    ///
    /// ```no_run
    /// # let pubsub = mqtt_pubsub::PubSub::new();
    /// pubsub.publish("sensors/kitchen/temp", "21.5")?; // QoS 0, every provider
    /// pubsub.publish("events", serde_json::json!({"door": "open"}))?;
    /// # Ok::<(), mqtt_pubsub::Error>(())
    /// ```
    pub fn publish(&self, topics: impl Topics, payload: impl Into<Payload>) -> Result<()> {
        self.publish_with(topics, payload, PublishOptions::default())
    }

    /// Publishes and blocks until done: QoS 0 once handed to the connection (blocking while
    /// its bounded queue is full), QoS 1 after PUBACK, QoS 2 after PUBCOMP, each bounded by
    /// the timeout. A timeout on QoS 1/2 means the message may still be delivered.
    ///
    /// ```no_run
    /// use mqtt_pubsub::{PublishOptions, QoS};
    /// # let pubsub = mqtt_pubsub::PubSub::new();
    /// // Returns once the broker acknowledged it (PUBACK), or with an error.
    /// pubsub.publish_with(
    ///     "status/device-7",
    ///     "online",
    ///     PublishOptions::default().qos(QoS::AtLeastOnce).retain(true),
    /// )?;
    /// # Ok::<(), mqtt_pubsub::Error>(())
    /// ```
    pub fn publish_with(
        &self,
        topics: impl Topics,
        payload: impl Into<Payload>,
        options: PublishOptions,
    ) -> Result<()> {
        self.publish_nowait(topics, payload, options)?.wait()
    }

    /// Starts a publish and returns without waiting for its acknowledgements: pipelining
    /// within the in-flight window (`max_inflight`). Wait on the receipt later.
    ///
    /// "No wait" is about acknowledgements only: while the provider's outgoing queue is full
    /// (`queue_capacity`, e.g. offline or a slow link), this call blocks for room, up to the
    /// publish's timeout, like every publish.
    ///
    /// ```no_run
    /// use mqtt_pubsub::{MqttOverWsProvider, PubSub, PublishOptions, QoS};
    /// let pubsub = PubSub::new();
    /// pubsub.add_provider(MqttOverWsProvider::builder("ws://localhost:8080/mqtt").build()?)?;
    /// let opts = PublishOptions::default().qos(QoS::AtLeastOnce);
    /// let receipts: Vec<_> = (0..100)
    ///     .map(|i| pubsub.publish_nowait("readings", format!("{i}"), opts.clone()))
    ///     .collect::<Result<_, _>>()?;
    /// for r in receipts {
    ///     r.wait()?; // each PUBACK
    /// }
    /// # Ok::<(), mqtt_pubsub::Error>(())
    /// ```
    pub fn publish_nowait(
        &self,
        topics: impl Topics,
        payload: impl Into<Payload>,
        options: PublishOptions,
    ) -> Result<PublishReceipt> {
        let mut topics = topics.into_topics();
        if topics.is_empty() {
            return Err(Error::invalid_topic("", "no topic given"));
        }
        for t in &topics {
            validate_topic_name(t)?;
        }
        let payload = payload.into().0;
        let targets = self.targets(options.provider.as_deref())?;
        if let Some(t) = options.props.str(crate::mqtt::packet::id::RESPONSE_TOPIC) {
            validate_topic_name(t)?;
        }
        let props = {
            let mut out = Vec::with_capacity(options.props.encoded_len());
            options.props.encode_body(&mut out);
            out
        };
        for c in targets.iter() {
            check_qos(&c.limits, options.qos, &c.name)?;
            if !props.is_empty() && c.version != crate::MqttVersion::V5 {
                return Err(Error::Unsupported(format!(
                    "MQTT 5 publish properties (user properties, content type, expiry, \
                     response topic, correlation data); provider {} speaks 3.1.1",
                    c.name
                )));
            }
            if options.qos == QoS::AtMostOnce
                && c.offline_qos0 == OfflineQoS0::FailFast
                && c.state() != ConnectionState::Connected
                // A provider removed since the list was taken is skipped below, not refused.
                && !(matches!(targets, Targets::All(_)) && self.removed(c))
            {
                return Err(Error::ConnectionLost(format!(
                    "provider {} is {} and drops QoS 0 publishes while offline",
                    c.name,
                    c.state()
                )));
            }
            if payload.len() > c.limits.max_payload {
                return Err(Error::PayloadTooLarge {
                    size: payload.len(),
                    max: c.limits.max_payload,
                    limit: format!("provider {}'s payload limit", c.name),
                });
            }
            for t in &topics {
                check_topic_limits(&c.limits, t)?;
                // What the server's CONNACK said it does not take fails here, at every QoS
                // (a QoS 0 publish would otherwise return Ok and never be sent).
                c.check_server_limits(options.qos, options.retain, || {
                    crate::mqtt::session::publish_size(
                        t.len(),
                        options.qos,
                        (c.version == crate::MqttVersion::V5).then_some(props.len()),
                        payload.len(),
                    )
                })?;
            }
        }
        let deadline = deadline_after(options.timeout.unwrap_or(targets[0].operation_timeout));
        let total = targets.len() * topics.len();
        let all = matches!(targets, Targets::All(_));
        let mut payload = Some(payload);
        let mut waits = Vec::new();
        let mut n = 0;
        for (ci, c) in targets.iter().enumerate() {
            let last_target = ci + 1 == targets.len();
            for t in topics.iter_mut() {
                n += 1;
                let bytes = if n == total {
                    payload.take().unwrap_or_default()
                } else {
                    payload.clone().unwrap_or_default()
                };
                // The last target takes the topics themselves: no copy per message.
                let topic = if last_target {
                    std::mem::take(t)
                } else {
                    t.clone()
                };
                let ack = match c.publish(
                    topic,
                    bytes,
                    options.qos,
                    options.retain,
                    props.clone(),
                    deadline,
                ) {
                    Err(Error::Closed) if all && self.removed(c) => continue,
                    r => r?,
                };
                waits.extend(ack);
            }
        }
        Ok(PublishReceipt { waits, deadline })
    }

    /// MQTT 5 request/response: publishes `payload` to `topic` with a response topic of its
    /// own and fresh correlation data, and returns the first message that comes back on it
    /// with that correlation data — within `timeout` in all (else [`Error::Timeout`] with
    /// [`Operation::Request`]). At QoS 1, through the only provider (with several, use
    /// [`PubSub::request_with`] naming one). The responder answers with
    /// [`PubSub::respond`].
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use mqtt_pubsub::{MqttOverWsProvider, MqttVersion, PubSub};
    /// let pubsub = PubSub::new();
    /// pubsub.add_provider(
    ///     MqttOverWsProvider::builder("ws://localhost:8080/mqtt")
    ///         .mqtt_version(MqttVersion::V5)
    ///         .build()?,
    /// )?;
    /// let answer = pubsub.request("services/clock", "now?", Duration::from_secs(5))?;
    /// println!("{}", answer.text()?);
    /// # Ok::<(), mqtt_pubsub::Error>(())
    /// ```
    ///
    /// MQTT 3.1.1 has no response topic or correlation data: there the same is done by
    /// convention, putting both into the payload (e.g. JSON `{"reply_to": "...", "id": "...",
    /// ...}`), subscribing to the reply topic first and matching the id; this call refuses a
    /// 3.1.1 provider with [`Error::Unsupported`].
    pub fn request(
        &self,
        topic: &str,
        payload: impl Into<Payload>,
        timeout: Duration,
    ) -> Result<Message> {
        let options = PublishOptions::default()
            .qos(QoS::AtLeastOnce)
            .timeout(timeout);
        self.request_with(topic, payload, options)
    }

    /// Like [`PubSub::request`], with the publish's options: its provider (needed when there
    /// are several), QoS, properties, and timeout (default: the provider's operation
    /// timeout), which bounds the whole request.
    pub fn request_with(
        &self,
        topic: &str,
        payload: impl Into<Payload>,
        options: PublishOptions,
    ) -> Result<Message> {
        let targets = self.targets(options.provider.as_deref())?;
        if targets.len() != 1 {
            return Err(Error::InvalidConfig(
                "a request goes through one provider: name it with PublishOptions::provider".into(),
            ));
        }
        let c = &targets[0];
        if c.version != crate::MqttVersion::V5 {
            return Err(Error::Unsupported(format!(
                "request/response needs MQTT 5 (response topic, correlation data); provider \
                 {} speaks 3.1.1: put a reply topic and an id into the payload instead",
                c.name
            )));
        }
        let timeout = options.timeout.unwrap_or(c.operation_timeout);
        let deadline = deadline_after(timeout);
        let token = format!(
            "{:016x}{:016x}",
            crate::connection::random_u64(),
            crate::connection::random_u64()
        );
        let response_topic = format!("mqtt-pubsub/response/{token}");
        let left = || deadline.saturating_duration_since(std::time::Instant::now());
        let name = c.name.to_string();
        let sub = self.subscribe_with(
            response_topic.as_str(),
            SubscribeOptions::default()
                .provider(name.clone())
                .qos(QoS::AtLeastOnce)
                .timeout(left()),
        )?;
        let publish = options
            .provider(name)
            .response_topic(response_topic)
            .correlation_data(token.clone().into_bytes())
            .timeout(left());
        self.publish_with(topic, payload, publish)?;
        loop {
            match sub.recv_timeout(left()) {
                Ok(m) if m.correlation_data() == Some(token.as_bytes()) => return Ok(m),
                Ok(_) => continue,
                Err(crate::RecvTimeoutError::Timeout) => {
                    return Err(Error::timeout(Operation::Request, "no response in time"))
                }
                Err(crate::RecvTimeoutError::Disconnected) => return Err(Error::Closed),
            }
        }
    }

    /// Answers a request made with [`PubSub::request`] (or any MQTT 5 request): publishes
    /// `payload` at QoS 1 to the request's response topic with its correlation data, through
    /// the provider it came from. Fails with [`Error::InvalidTopic`] when the message has no
    /// response topic.
    pub fn respond(&self, request: &Message, payload: impl Into<Payload>) -> Result<()> {
        let Some(topic) = request.response_topic() else {
            return Err(Error::invalid_topic(
                "",
                "the message has no response topic to answer on",
            ));
        };
        let mut options = PublishOptions::default()
            .qos(QoS::AtLeastOnce)
            .provider(request.provider());
        if let Some(data) = request.correlation_data() {
            options = options.correlation_data(data.to_vec());
        }
        self.publish_with(topic.to_string(), payload, options)
    }

    /// Waits until every publish accepted so far, on every provider, is done: QoS 0 written
    /// to the socket, QoS 1 and 2 acknowledged. Publishes queued while a provider is offline
    /// count (they are done once the reconnect sends them). At the timeout it fails with
    /// [`Error::Timeout`] (`Operation::Flush`) naming how many publishes were still
    /// unfinished; nothing is dropped by that.
    ///
    /// ```no_run
    /// # use mqtt_pubsub::{MqttOverWsProvider, PubSub};
    /// # use std::time::Duration;
    /// let pubsub = PubSub::new();
    /// pubsub.add_provider(MqttOverWsProvider::builder("ws://localhost:8080/mqtt").build()?)?;
    /// for i in 0..1000 {
    ///     pubsub.publish("telemetry", format!("{i}"))?; // QoS 0: returns once queued
    /// }
    /// pubsub.flush(Duration::from_secs(5))?; // all 1000 are on the wire
    /// # Ok::<(), mqtt_pubsub::Error>(())
    /// ```
    pub fn flush(&self, timeout: Duration) -> Result<()> {
        let targets = match self.targets(None) {
            Err(Error::NoProviders) => return Ok(()),
            t => t?,
        };
        let deadline = deadline_after(timeout);
        let mut waits = Vec::with_capacity(targets.len());
        for c in targets.iter() {
            match c.flush() {
                Ok(rx) => waits.push((c, rx)),
                // Removed meanwhile: its close drained what it had.
                Err(Error::Closed) if self.removed(c) => {}
                Err(e) => return Err(e),
            }
        }
        for (c, rx) in &waits {
            match wait_reply(rx, deadline, Operation::Flush, "none was dropped") {
                Err(Error::Closed) if self.removed(c) => {}
                Err(Error::Timeout {
                    operation, detail, ..
                }) => {
                    return Err(Error::Timeout {
                        operation,
                        detail,
                        unfinished: Some(targets.iter().map(|c| c.pending()).sum()),
                        target: None,
                        limit: Some(timeout),
                    })
                }
                other => other?,
            }
        }
        Ok(())
    }

    /// Closes every provider gracefully: what was accepted before the call is sent and QoS
    /// 1/2 acknowledgements are awaited (up to each provider's `close_timeout`, default
    /// 10 s), then DISCONNECT (at most 1 s more), then the threads are joined. What is still
    /// unfinished then fails with [`Error::Closed`], and subscriptions end. Later calls fail
    /// with [`Error::Closed`]. Dropping the last clone does the same. A provider that is
    /// reconnecting at that moment sends nothing more; a connection attempt in progress is
    /// abandoned.
    ///
    /// Everything is closed either way; the result says whether everything accepted got out:
    /// [`Error::Timeout`] with [`Operation::Close`] when some publish was still unfinished.
    ///
    /// ```no_run
    /// # let pubsub = mqtt_pubsub::PubSub::new();
    /// // Sends what was accepted (up to each provider's close timeout), then DISCONNECT.
    /// if let Err(e) = pubsub.close() {
    ///     eprintln!("closed, but: {e}");
    /// }
    /// ```
    pub fn close(&self) -> Result<()> {
        self.close_with(crate::DisconnectOptions::default())
    }

    /// Like [`PubSub::close`], with MQTT 5 properties in each provider's DISCONNECT (a
    /// session expiry set at disconnect, a reason string, user properties). Checked first:
    /// properties for a 3.1.1 provider are [`Error::Unsupported`], and a non-zero session
    /// expiry for a provider whose session was to end with the connection is
    /// [`Error::InvalidConfig`] (MQTT 5 forbids that change) — nothing is closed then.
    pub fn close_with(&self, options: crate::DisconnectOptions) -> Result<()> {
        let props = options.encode();
        if !props.is_empty() {
            for c in self.read().all.iter() {
                if c.version != crate::MqttVersion::V5 {
                    return Err(Error::Unsupported(format!(
                        "DISCONNECT properties are MQTT 5; provider {} speaks 3.1.1",
                        c.name
                    )));
                }
                if options.session_expiry.is_some_and(|d| !d.is_zero())
                    && c.session_ends_with_connection()
                {
                    return Err(Error::InvalidConfig(format!(
                        "a session expiry at DISCONNECT for provider {}, whose CONNECT said the \
                         session ends with the connection: MQTT 5 forbids it; connect with \
                         clean_session(false) or a session_expiry instead",
                        c.name
                    )));
                }
            }
            for c in self.read().all.iter() {
                c.set_disconnect_properties(props.clone());
            }
        }
        self.inner.closed.store(true, Ordering::SeqCst);
        let list = {
            let mut registry = self.write();
            let list = std::mem::take(&mut *registry);
            self.inner.retire(&list.all);
            list
        };
        // Adds connecting now give up, and are waited for: none connects after this returns.
        {
            let mut connecting = self.lock_connecting();
            for closing in connecting.values() {
                closing.store(true, Ordering::SeqCst);
            }
            while !connecting.is_empty() {
                connecting = self
                    .inner
                    .connecting_ended
                    .wait(connecting)
                    .unwrap_or_else(|e| e.into_inner());
            }
        }
        let all_done = close_all(&list.all);
        if all_done {
            Ok(())
        } else {
            Err(Error::timeout(
                Operation::Close,
                "publishes were still unfinished (at the close timeout, or the provider was \
                 offline; their receipts say Closed), or DISCONNECT could not be written in \
                 time",
            ))
        }
    }
}

/// The connections one call goes to: every provider (the shared list, not a copy) or one.
enum Targets {
    All(Arc<Vec<Arc<Connection>>>),
    One(Arc<Connection>),
}

impl std::ops::Deref for Targets {
    type Target = [Arc<Connection>];
    fn deref(&self) -> &[Arc<Connection>] {
        match self {
            Targets::All(list) => list,
            Targets::One(c) => std::slice::from_ref(c),
        }
    }
}

fn check_qos(limits: &Limits, qos: QoS, provider: &str) -> Result<()> {
    if qos == QoS::ExactlyOnce && !limits.qos2 {
        return Err(Error::Unsupported(format!(
            "provider {provider} does not support QoS 2"
        )));
    }
    Ok(())
}

fn check_topic_limits(limits: &Limits, topic: &str) -> Result<()> {
    // AWS IoT's limits apply to the topic without a $share/<group>/ prefix... which it does not
    // support anyway, so the whole string is checked.
    if topic.len() > limits.max_topic_len {
        return Err(Error::invalid_topic(
            topic,
            "longer than this provider allows",
        ));
    }
    if let Some(max) = limits.max_topic_slashes {
        if topic.matches('/').count() > max {
            return Err(Error::invalid_topic(
                topic,
                "more forward slashes than this provider allows",
            ));
        }
    }
    Ok(())
}

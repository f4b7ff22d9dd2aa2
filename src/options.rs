//! Options for connections, publishing and subscribing.

use std::time::Duration;

use crate::message::Payload;
use crate::mqtt::QoS;

/// The message the broker publishes for us if we vanish without DISCONNECT.
///
/// Built with [`LastWill::new`] and the setters (its fields are private, so that it can grow
/// without breaking code, e.g. for MQTT 5's will properties).
///
/// ```
/// use mqtt_pubsub::{LastWill, MqttOverWsProvider, QoS};
/// let provider = MqttOverWsProvider::builder("ws://localhost:8080/mqtt")
///     .last_will(LastWill::new("devices/7/status", "offline").qos(QoS::AtLeastOnce).retain(true))
///     .build()?;
/// # Ok::<(), mqtt_pubsub::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use = "a builder does nothing until it is used"]
pub struct LastWill {
    pub(crate) topic: String,
    pub(crate) payload: Vec<u8>,
    pub(crate) qos: QoS,
    pub(crate) retain: bool,
    /// MQTT 5 will properties (`build()` refuses them on a 3.1.1 provider).
    pub(crate) props: crate::mqtt::packet::Properties,
}

impl LastWill {
    /// A QoS 0, non-retained will.
    pub fn new(topic: impl Into<String>, payload: impl Into<Payload>) -> LastWill {
        LastWill {
            topic: topic.into(),
            payload: payload.into().0,
            qos: QoS::AtMostOnce,
            retain: false,
            props: crate::mqtt::packet::Properties::new(),
        }
    }

    fn property(mut self, id: u8, value: crate::mqtt::packet::Value) -> Self {
        if id != crate::mqtt::packet::id::USER_PROPERTY {
            self.props.0.retain(|p| p.id != id);
        }
        self.props.push(id, value);
        self
    }

    /// MQTT 5: how long the server waits after the connection is lost before it publishes
    /// the will (Will Delay Interval, whole seconds); a reconnect within it cancels the will.
    pub fn delay(self, delay: Duration) -> Self {
        let secs = delay.as_secs().min(u64::from(u32::MAX)) as u32;
        self.property(
            crate::mqtt::packet::id::WILL_DELAY_INTERVAL,
            crate::mqtt::packet::Value::U32(secs),
        )
    }

    /// MQTT 5: the will message's expiry interval (whole seconds).
    pub fn message_expiry(self, expiry: Duration) -> Self {
        let secs = expiry.as_secs().min(u64::from(u32::MAX)) as u32;
        self.property(
            crate::mqtt::packet::id::MESSAGE_EXPIRY_INTERVAL,
            crate::mqtt::packet::Value::U32(secs),
        )
    }

    /// MQTT 5: the will message's content type.
    pub fn content_type(self, content_type: impl Into<String>) -> Self {
        self.property(
            crate::mqtt::packet::id::CONTENT_TYPE,
            crate::mqtt::packet::Value::Str(content_type.into()),
        )
    }

    /// MQTT 5: a user property of the will message (may be repeated; order is kept).
    pub fn user_property(self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.property(
            crate::mqtt::packet::id::USER_PROPERTY,
            crate::mqtt::packet::Value::Pair(key.into(), value.into()),
        )
    }

    /// Sets the QoS.
    pub fn qos(mut self, qos: QoS) -> Self {
        self.qos = qos;
        self
    }

    /// Sets the retain flag.
    pub fn retain(mut self, retain: bool) -> Self {
        self.retain = retain;
        self
    }
}

/// How a lost connection comes back: exponential backoff with full jitter.
///
/// The delay before attempt `n` (from 0) is a random duration between zero and
/// `min(max_delay, initial_delay × 2ⁿ)`. The default is 1 s doubling to a 60 s cap, retrying
/// forever.
///
/// ```
/// use std::time::Duration;
/// use mqtt_pubsub::{MqttOverWsProvider, ReconnectPolicy};
/// let provider = MqttOverWsProvider::builder("ws://localhost:9001/mqtt")
///     .reconnect(ReconnectPolicy::exponential(
///         Duration::from_millis(100),
///         Duration::from_secs(10),
///     ))
///     .build()?;
/// # Ok::<(), mqtt_pubsub::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReconnectPolicy {
    pub(crate) enabled: bool,
    pub(crate) initial_delay: Duration,
    pub(crate) max_delay: Duration,
}

impl Default for ReconnectPolicy {
    fn default() -> Self {
        ReconnectPolicy {
            enabled: true,
            initial_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(60),
        }
    }
}

impl ReconnectPolicy {
    /// Never reconnect: a lost connection ends the provider (state `Disconnected`).
    pub fn disabled() -> Self {
        ReconnectPolicy {
            enabled: false,
            ..Default::default()
        }
    }

    /// Exponential backoff from `initial_delay` up to `max_delay`, with full jitter.
    pub fn exponential(initial_delay: Duration, max_delay: Duration) -> Self {
        ReconnectPolicy {
            enabled: true,
            initial_delay,
            max_delay: max_delay.max(initial_delay),
        }
    }

    /// Whether reconnecting is on.
    pub fn is_enabled(&self) -> bool {
        self.enabled
    }
}

/// What a QoS 0 publish does while its provider is not connected.
///
/// ```
/// use mqtt_pubsub::{MqttOverWsProvider, OfflineQoS0};
/// // Telemetry: fail a QoS 0 publish while offline rather than send it late.
/// let provider = MqttOverWsProvider::builder("ws://localhost:9001/mqtt")
///     .offline_qos0(OfflineQoS0::FailFast)
///     .build()?;
/// # Ok::<(), mqtt_pubsub::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum OfflineQoS0 {
    /// Queue it with the QoS 1/2 publishes (bounded by `queue_capacity`); it goes out after
    /// the reconnect, in order. The default.
    #[default]
    Queue,
    /// Fail at once with [`Error::ConnectionLost`](crate::Error::ConnectionLost): stale
    /// telemetry is better dropped than delivered late.
    FailFast,
}

/// Options of one publish call: the default is QoS 0, not retained, every provider.
///
/// ```
/// use std::time::Duration;
/// use mqtt_pubsub::{PublishOptions, QoS};
/// let opts = PublishOptions::default()
///     .qos(QoS::AtLeastOnce)         // returns after PUBACK
///     .retain(true)
///     .provider("AWSIoTProvider")    // one provider only
///     .timeout(Duration::from_secs(3));
/// # let _ = opts;
/// ```
#[derive(Debug, Clone, Default)]
#[must_use = "a builder does nothing until it is used"]
pub struct PublishOptions {
    pub(crate) provider: Option<String>,
    pub(crate) qos: QoS,
    pub(crate) retain: bool,
    pub(crate) timeout: Option<Duration>,
    /// MQTT 5 properties (a provider speaking 3.1.1 refuses a publish that has any).
    pub(crate) props: crate::mqtt::packet::Properties,
}

impl PublishOptions {
    /// Publish through this provider only.
    pub fn provider(mut self, name: impl Into<String>) -> Self {
        self.provider = Some(name.into());
        self
    }

    /// The QoS.
    pub fn qos(mut self, qos: QoS) -> Self {
        self.qos = qos;
        self
    }

    /// The retain flag.
    pub fn retain(mut self, retain: bool) -> Self {
        self.retain = retain;
        self
    }

    /// How long the call may block (default: the provider's operation timeout).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    fn property(mut self, id: u8, value: crate::mqtt::packet::Value) -> Self {
        use crate::mqtt::packet::id::USER_PROPERTY;
        if id != USER_PROPERTY {
            self.props.0.retain(|p| p.id != id);
        }
        self.props.push(id, value);
        self
    }

    /// MQTT 5: a user property (may be repeated, also with the same key; order is kept).
    pub fn user_property(self, key: impl Into<String>, value: impl Into<String>) -> Self {
        let v = crate::mqtt::packet::Value::Pair(key.into(), value.into());
        self.property(crate::mqtt::packet::id::USER_PROPERTY, v)
    }

    /// MQTT 5: the content type (a MIME type such as `application/json`, by convention).
    pub fn content_type(self, content_type: impl Into<String>) -> Self {
        let v = crate::mqtt::packet::Value::Str(content_type.into());
        self.property(crate::mqtt::packet::id::CONTENT_TYPE, v)
    }

    /// MQTT 5: the payload format indicator: `true` says the payload is UTF-8 text (the
    /// server may check it and refuse a payload that is not: reason code 0x99).
    pub fn payload_format_utf8(self, utf8: bool) -> Self {
        let v = crate::mqtt::packet::Value::Byte(u8::from(utf8));
        self.property(crate::mqtt::packet::id::PAYLOAD_FORMAT_INDICATOR, v)
    }

    /// MQTT 5: the message expiry interval (whole seconds): the server drops the message
    /// (retained or queued for a subscriber) once it is older.
    pub fn message_expiry(self, expiry: Duration) -> Self {
        let secs = expiry.as_secs().min(u64::from(u32::MAX)) as u32;
        let v = crate::mqtt::packet::Value::U32(secs);
        self.property(crate::mqtt::packet::id::MESSAGE_EXPIRY_INTERVAL, v)
    }

    /// MQTT 5: the topic a responder should publish its response to (request/response).
    pub fn response_topic(self, topic: impl Into<String>) -> Self {
        let v = crate::mqtt::packet::Value::Str(topic.into());
        self.property(crate::mqtt::packet::id::RESPONSE_TOPIC, v)
    }

    /// MQTT 5: correlation data, which a responder copies into its response.
    pub fn correlation_data(self, data: impl Into<Vec<u8>>) -> Self {
        let v = crate::mqtt::packet::Value::Bin(data.into());
        self.property(crate::mqtt::packet::id::CORRELATION_DATA, v)
    }
}

/// MQTT 5 retain handling of a subscription: whether the server sends retained messages when
/// it is made.
///
/// ```no_run
/// use mqtt_pubsub::{RetainHandling, SubscribeOptions};
/// # let pubsub = mqtt_pubsub::PubSub::new();
/// // MQTT 5: no retained messages on a resubscription the broker already had.
/// let sub = pubsub.subscribe_with(
///     "config/#",
///     SubscribeOptions::default().retain_handling(RetainHandling::SendIfNew),
/// )?;
/// # Ok::<(), mqtt_pubsub::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RetainHandling {
    /// Send the retained messages on every SUBSCRIBE (the default, and 3.1.1's behaviour).
    #[default]
    SendOnSubscribe,
    /// Send them only when the subscription is new on the server.
    SendIfNew,
    /// Never send retained messages for this subscription.
    DoNotSend,
}

/// MQTT 5 DISCONNECT properties for [`PubSub::close_with`](crate::PubSub::close_with).
///
/// ```no_run
/// use std::time::Duration;
/// use mqtt_pubsub::{DisconnectOptions, PubSub};
/// # let pubsub = PubSub::new();
/// // Keep the session on the broker for a day after this close, and say why we leave.
/// pubsub.close_with(
///     DisconnectOptions::default()
///         .session_expiry(Duration::from_secs(86_400))
///         .reason_string("maintenance"),
/// )?;
/// # Ok::<(), mqtt_pubsub::Error>(())
/// ```
#[derive(Debug, Clone, Default)]
#[must_use = "a builder does nothing until it is used"]
pub struct DisconnectOptions {
    pub(crate) session_expiry: Option<Duration>,
    pub(crate) props: crate::mqtt::packet::Properties,
}

impl DisconnectOptions {
    /// The session expiry from this disconnect on (MQTT 5 allows changing it here, except
    /// from zero to non-zero: a provider whose CONNECT said the session ends with the
    /// connection refuses a non-zero value at the call).
    pub fn session_expiry(mut self, expiry: Duration) -> Self {
        self.session_expiry = Some(expiry);
        self
    }

    /// A reason string for the server (its logs).
    pub fn reason_string(mut self, reason: impl Into<String>) -> Self {
        self.props.push(
            crate::mqtt::packet::id::REASON_STRING,
            crate::mqtt::packet::Value::Str(reason.into()),
        );
        self
    }

    /// A user property.
    pub fn user_property(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.props.push(
            crate::mqtt::packet::id::USER_PROPERTY,
            crate::mqtt::packet::Value::Pair(key.into(), value.into()),
        );
        self
    }

    /// The encoded property bytes (without their length).
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut props = self.props.clone();
        if let Some(d) = self.session_expiry {
            props.push(
                crate::mqtt::packet::id::SESSION_EXPIRY_INTERVAL,
                crate::mqtt::packet::Value::U32(d.as_secs().min(u64::from(u32::MAX)) as u32),
            );
        }
        let mut out = Vec::new();
        props.encode_body(&mut out);
        out
    }
}

/// A subscription option bit of ours (MQTT's bit 6 is reserved and never sent): retain
/// handling was asked for explicitly.
pub(crate) const RETAIN_HANDLING_SET: u8 = 0x40;

/// Options of one subscribe call: the default is QoS 0, every provider.
///
/// ```
/// use mqtt_pubsub::{QoS, SubscribeOptions};
/// let opts = SubscribeOptions::default()
///     .qos(QoS::AtLeastOnce)
///     .capacity(100_000)                 // messages buffered before losses are counted
///     .max_bytes(256 * 1024 * 1024);     // and bytes
/// # let _ = opts;
/// ```
#[derive(Debug, Clone, Default)]
#[must_use = "a builder does nothing until it is used"]
pub struct SubscribeOptions {
    pub(crate) provider: Option<String>,
    pub(crate) qos: QoS,
    pub(crate) capacity: Option<usize>,
    pub(crate) max_bytes: Option<usize>,
    pub(crate) timeout: Option<Duration>,
    /// Acknowledge after processing (see [`SubscribeOptions::ack_after_processing`]).
    pub(crate) ack_after_processing: bool,
    /// MQTT 5 option bits: no local 0x04, retain as published 0x08, retain handling 0x30;
    /// and ours, never sent: [`RETAIN_HANDLING_SET`].
    pub(crate) v5_bits: u8,
}

impl SubscribeOptions {
    /// At least once all the way to the application (default `false`): the broker's QoS 1/2
    /// message is acknowledged (PUBACK, or PUBREC for QoS 2) only once the application has
    /// *dropped* it — after processing it — from every subscription it was routed to, and
    /// never on arrival. Acknowledgements go out in the order the messages arrived, as MQTT
    /// requires, so one held message holds back those after it. A process that crashes
    /// with messages buffered or in hand has acknowledged none of them: a persistent
    /// session's broker sends them again (as at least once allows, perhaps twice).
    ///
    /// Such a subscription never drops a message for want of room: when the application
    /// holds its `capacity` messages or `max_bytes` bytes (buffered or taken, not yet
    /// dropped), its provider stops reading the connection until the application drops
    /// some — so *every* subscription of that provider waits, others are unaffected, and
    /// the broker's own flow control (its in-flight window; with MQTT 5 our
    /// `receive_maximum`) holds the rest. Reading goes on while the server owes us an answer
    /// (SUBACK, PUBACK, PUBCOMP, PINGRESP) and while closing, so publishes, `close()` and the
    /// keep-alive work meanwhile; what is read then goes past the bound. QoS 0 messages
    /// carry no acknowledgement but are held back the same way.
    ///
    /// ```no_run
    /// use mqtt_pubsub::{MqttOverWsProvider, PubSub, QoS, SubscribeOptions};
    /// # fn bill(_: &[u8]) {}
    /// let pubsub = PubSub::new();
    /// pubsub.add_provider(
    ///     MqttOverWsProvider::builder("mqtt://broker.local")
    ///         .client_id("billing-1")
    ///         .clean_session(false)
    ///         .build()?,
    /// )?;
    /// let events = pubsub.subscribe_with(
    ///     "billing/#",
    ///     SubscribeOptions::default().qos(QoS::AtLeastOnce).capacity(100).ack_after_processing(true),
    /// )?;
    /// for msg in &events {
    ///     bill(msg.payload());
    ///     // `msg` is dropped here: only now does the broker get its PUBACK.
    /// }
    /// # Ok::<(), mqtt_pubsub::Error>(())
    /// ```
    pub fn ack_after_processing(mut self, on: bool) -> Self {
        self.ack_after_processing = on;
        self
    }

    /// MQTT 5: do not send this client its own publishes on this subscription (No Local).
    pub fn no_local(mut self, no_local: bool) -> Self {
        self.v5_bits = (self.v5_bits & !0x04) | (u8::from(no_local) << 2);
        self
    }

    /// MQTT 5: keep the retain flag as the publisher set it on forwarded messages (Retain As
    /// Published); otherwise only messages sent because of the subscription are retained.
    pub fn retain_as_published(mut self, keep: bool) -> Self {
        self.v5_bits = (self.v5_bits & !0x08) | (u8::from(keep) << 3);
        self
    }

    /// MQTT 5: when the server sends retained messages for this subscription.
    ///
    /// Subscriptions of the same filter share one MQTT subscription, and the server sends
    /// retained messages only for a SUBSCRIBE. So `SendOnSubscribe` asked explicitly for a
    /// filter this provider already subscribes to (or covers with a wider one) cannot be
    /// honoured: the subscribe call fails with `Error::Unsupported` naming the filter, rather
    /// than succeed without the retained messages it asked for.
    pub fn retain_handling(mut self, handling: RetainHandling) -> Self {
        let bits = match handling {
            RetainHandling::SendOnSubscribe => 0,
            RetainHandling::SendIfNew => 1,
            RetainHandling::DoNotSend => 2,
        };
        self.v5_bits = (self.v5_bits & !0x30) | (bits << 4) | RETAIN_HANDLING_SET;
        self
    }

    /// How many bytes of messages the subscription buffers before it counts losses
    /// (default: the provider's `subscription_max_bytes`, 64 MiB).
    pub fn max_bytes(mut self, bytes: usize) -> Self {
        self.max_bytes = Some(bytes);
        self
    }

    /// Subscribe through this provider only.
    pub fn provider(mut self, name: impl Into<String>) -> Self {
        self.provider = Some(name.into());
        self
    }

    /// The maximum QoS asked of the broker.
    pub fn qos(mut self, qos: QoS) -> Self {
        self.qos = qos;
        self
    }

    /// How many messages the subscription buffers before it counts losses
    /// (default: the provider's `subscription_capacity`, 8192); 0 is refused by the
    /// subscribe call with `InvalidConfig`.
    pub fn capacity(mut self, capacity: usize) -> Self {
        self.capacity = Some(capacity);
        self
    }

    /// How long the call may wait for SUBACK (default: the provider's operation timeout).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }
}

/// Connection settings shared by every provider type.
#[derive(Clone)]
pub(crate) struct ConnectionOptions {
    pub client_id: Option<String>,
    pub keep_alive: Duration,
    pub clean_session: bool,
    pub username: Option<String>,
    pub password: Option<String>,
    pub will: Option<LastWill>,
    pub connect_timeout: Duration,
    /// `add_provider` returns at once; the I/O thread makes every connection attempt.
    pub connect_in_background: bool,
    /// Every subscription acknowledges after processing, and so do messages held for a
    /// subscription not made yet.
    pub ack_after_processing: bool,
    pub operation_timeout: Duration,
    pub max_packet_size: usize,
    pub headers: Vec<(String, String)>,
    pub ca_pems: Vec<Vec<u8>>,
    pub client_cert: Option<(Vec<u8>, Vec<u8>)>,
    /// A PKCS#12 bundle and its password (feature `pkcs12`).
    pub client_p12: Option<(Vec<u8>, String)>,
    pub trust_roots: crate::net::tls::TrustRoots,
    pub tls_config: Option<std::sync::Arc<rustls::ClientConfig>>,
    pub reconnect: ReconnectPolicy,
    pub max_inflight: u16,
    /// Most QoS 2 publishes in flight over MQTT 3.1.1 (see the builder's
    /// `max_inflight_qos2`).
    pub max_inflight_qos2: u16,
    pub queue_capacity: usize,
    pub subscription_capacity: usize,
    pub subscription_max_bytes: usize,
    pub offline_qos0: OfflineQoS0,
    pub close_timeout: Duration,
    pub unclaimed_messages: usize,
    pub unclaimed_bytes: usize,
    /// `None`: from the environment; `Some(None)`: none; `Some(Some(url))`: this one.
    pub proxy: Option<Option<String>>,
    /// The durable outbox's directory, when there is one, its bound and sync mode.
    pub outbox_dir: Option<std::path::PathBuf>,
    pub outbox_max_bytes: u64,
    pub outbox_sync: crate::outbox::OutboxSync,
    /// The MQTT version, and the MQTT 5 CONNECT settings (`None`: not set by the user).
    pub mqtt_version: crate::MqttVersion,
    pub session_expiry: Option<Duration>,
    pub receive_maximum: Option<u16>,
    pub topic_alias_maximum: Option<u16>,
    pub connect_user_properties: Vec<(String, String)>,
    pub request_response_information: bool,
}

/// The longest keep-alive MQTT 3.1.1 can say (a 16-bit number of seconds).
pub(crate) const MAX_KEEP_ALIVE: Duration = Duration::from_secs(u16::MAX as u64);

impl ConnectionOptions {
    /// What `build()` checks on every provider type.
    pub fn validate(&self) -> crate::error::Result<()> {
        // What a server may echo back (a CONNACK reason string quoting CONNECT, a 403 body
        // quoting a header) is redacted wherever it is shown.
        if let Some(p) = &self.password {
            crate::error::register_basic(self.username.as_deref().unwrap_or(""), p);
        }
        // Header values of 8 bytes or more (tokens); shorter ones are ordinary words.
        for (_, v) in self.headers.iter().filter(|(_, v)| v.len() >= 8) {
            crate::error::register_secret(v);
        }
        if let Some(will) = &self.will {
            crate::topic::validate_topic_name(&will.topic)?;
        }
        let at_least = |what: &str, value: usize, min: usize| {
            if value < min {
                Err(crate::error::Error::InvalidConfig(format!(
                    "{what} must be at least {min}, not {value}"
                )))
            } else {
                Ok(())
            }
        };
        at_least("max_packet_size", self.max_packet_size, 16)?;
        at_least("max_inflight", self.max_inflight as usize, 1)?;
        at_least("queue_capacity", self.queue_capacity, 1)?;
        at_least("subscription_capacity", self.subscription_capacity, 1)?;
        if self.keep_alive > MAX_KEEP_ALIVE {
            return Err(crate::error::Error::InvalidConfig(format!(
                "keep-alive of {:?} is over MQTT's limit of {} s",
                self.keep_alive,
                u16::MAX
            )));
        }
        self.proxy_setting()?;
        if self.mqtt_version == crate::MqttVersion::V3_1_1 {
            let v5_only = [
                ("session_expiry", self.session_expiry.is_some()),
                ("receive_maximum", self.receive_maximum.is_some()),
                ("topic_alias_maximum", self.topic_alias_maximum.is_some()),
                (
                    "connect_user_property",
                    !self.connect_user_properties.is_empty(),
                ),
                (
                    "request_response_information",
                    self.request_response_information,
                ),
            ];
            let will_props = self.will.as_ref().is_some_and(|w| !w.props.is_empty());
            if will_props {
                return Err(crate::error::Error::InvalidConfig(
                    "will properties (delay, expiry, content type, user properties) are \
                     MQTT 5: add .mqtt_version(MqttVersion::V5)"
                        .into(),
                ));
            }
            if let Some((name, _)) = v5_only.iter().find(|(_, set)| *set) {
                return Err(crate::error::Error::InvalidConfig(format!(
                    "{name} is an MQTT 5 setting: add .mqtt_version(MqttVersion::V5)"
                )));
            }
        }
        if self.receive_maximum == Some(0) {
            return Err(crate::error::Error::InvalidConfig(
                "receive_maximum must be at least 1".into(),
            ));
        }
        let outlives = !self.clean_session || self.session_expiry.is_some_and(|d| !d.is_zero());
        if outlives && self.client_id.is_none() {
            return Err(crate::error::Error::InvalidConfig(
                "a persistent session (clean_session(false), or an MQTT 5 session_expiry) needs \
                 a fixed client_id: with a random one every run starts a new session and \
                 leaves the last one orphaned on the broker; add .client_id(\"...\")"
                    .into(),
            ));
        }
        if let Some(o) = self.outbox() {
            if self.client_id.is_none() {
                return Err(crate::error::Error::InvalidConfig(
                    "an outbox needs a fixed client_id: it belongs to one client, and the \
                     next process must connect as the same client to resend"
                        .into(),
                ));
            }
            if o.max_bytes < 1024 {
                return Err(crate::error::Error::InvalidConfig(format!(
                    "outbox_max_bytes must be at least 1024, not {}",
                    o.max_bytes
                )));
            }
        }
        Ok(())
    }

    /// The outbox settings, when there is an outbox.
    pub fn outbox(&self) -> Option<crate::outbox::OutboxOptions> {
        self.outbox_dir
            .as_ref()
            .map(|dir| crate::outbox::OutboxOptions {
                dir: dir.clone(),
                max_bytes: self.outbox_max_bytes,
                sync: self.outbox_sync,
            })
    }

    /// The proxy setting, its URL checked.
    pub fn proxy_setting(&self) -> crate::error::Result<crate::net::proxy::ProxySetting> {
        use crate::net::proxy::{Proxy, ProxySetting};
        Ok(match &self.proxy {
            None => ProxySetting::FromEnv,
            Some(None) => ProxySetting::Off,
            Some(Some(url)) => ProxySetting::Use(Proxy::parse(url)?),
        })
    }
}

impl Default for ConnectionOptions {
    fn default() -> Self {
        ConnectionOptions {
            client_id: None,
            keep_alive: Duration::from_secs(60),
            clean_session: true,
            username: None,
            password: None,
            will: None,
            connect_timeout: Duration::from_secs(10),
            connect_in_background: false,
            ack_after_processing: false,
            operation_timeout: Duration::from_secs(10),
            max_packet_size: 16 * 1024 * 1024,
            headers: Vec::new(),
            ca_pems: Vec::new(),
            client_cert: None,
            client_p12: None,
            trust_roots: Default::default(),
            tls_config: None,
            reconnect: ReconnectPolicy::default(),
            max_inflight: 100,
            max_inflight_qos2: 20,
            queue_capacity: 1000,
            subscription_capacity: 8192,
            subscription_max_bytes: 64 * 1024 * 1024,
            offline_qos0: OfflineQoS0::Queue,
            close_timeout: Duration::from_secs(10),
            unclaimed_messages: 1000,
            unclaimed_bytes: 16 * 1024 * 1024,
            proxy: None,
            outbox_dir: None,
            outbox_max_bytes: 64 * 1024 * 1024,
            outbox_sync: crate::outbox::OutboxSync::Always,
            mqtt_version: crate::MqttVersion::V3_1_1,
            session_expiry: None,
            receive_maximum: None,
            topic_alias_maximum: None,
            connect_user_properties: Vec::new(),
            request_response_information: false,
        }
    }
}

impl ConnectionOptions {
    /// The MQTT 5 CONNECT properties these options make.
    pub fn v5_connect(&self) -> crate::mqtt::packet::ConnectProperties {
        let secs = |d: Duration| d.as_secs().min(u64::from(u32::MAX)) as u32;
        crate::mqtt::packet::ConnectProperties {
            // A persistent session (clean_session(false)) outlives the connection as in
            // 3.1.1 unless told otherwise; a clean one ends with it.
            session_expiry: match (self.session_expiry, self.clean_session) {
                (Some(d), _) => Some(secs(d)),
                (None, false) => Some(u32::MAX),
                (None, true) => None,
            },
            receive_maximum: self.receive_maximum,
            maximum_packet_size: Some(self.max_packet_size.min(u32::MAX as usize) as u32),
            topic_alias_maximum: self.topic_alias_maximum.unwrap_or(64),
            request_response_information: self.request_response_information,
            user: self.connect_user_properties.clone(),
        }
    }
}

impl ConnectionOptions {
    /// The TLS settings, with `client_cert` (a provider may bring its own).
    pub fn tls_settings(
        &self,
        client_cert: Option<(Vec<u8>, Vec<u8>)>,
        client_cert_method: &str,
    ) -> crate::error::Result<crate::net::tls::TlsSettings> {
        if self.client_p12.is_some() && client_cert.is_some() {
            return Err(crate::error::Error::InvalidConfig(format!(
                "a client identity from PEM ({client_cert_method}) and one from PKCS#12 \
                 (client_identity_p12): give one"
            )));
        }
        if self.tls_config.is_some() {
            let mut also = Vec::new();
            if self.trust_roots != crate::net::tls::TrustRoots::Webpki {
                also.push("trust_roots".to_string());
            }
            if !self.ca_pems.is_empty() {
                also.push("ca_pem".to_string());
            }
            if client_cert.is_some() {
                also.push(client_cert_method.to_string());
            }
            if self.client_p12.is_some() {
                also.push("client_identity_p12".to_string());
            }
            if !also.is_empty() {
                return Err(crate::error::Error::InvalidConfig(format!(
                    "tls_config is used as it is, so {} would be ignored: put the roots, CAs \
                     and client identity in the rustls ClientConfig instead",
                    also.join(" and ")
                )));
            }
        }
        #[cfg(feature = "pkcs12")]
        let client_der = match &self.client_p12 {
            Some((bundle, password)) => {
                Some(crate::net::tls::identity_from_pkcs12(bundle, password)?)
            }
            None => None,
        };
        #[cfg(not(feature = "pkcs12"))]
        let client_der = None;
        Ok(crate::net::tls::TlsSettings {
            roots: self.trust_roots,
            extra_ca_pems: self.ca_pems.clone(),
            client_cert,
            client_der,
            config: self.tls_config.clone(),
        })
    }
}

impl std::fmt::Debug for ConnectionOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the password or header values (they may carry tokens).
        f.debug_struct("ConnectionOptions")
            .field("client_id", &self.client_id)
            .field("keep_alive", &self.keep_alive)
            .field("clean_session", &self.clean_session)
            // A custom authorizer over MQTT puts its token and signature in the
            // username's query string.
            .field(
                "username",
                &self.username.as_deref().map(|u| match u.split_once('?') {
                    Some((name, _)) => format!("{name}?<redacted>"),
                    None => u.to_string(),
                }),
            )
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field(
                "headers",
                &self.headers.iter().map(|(k, _)| k).collect::<Vec<_>>(),
            )
            .field("reconnect", &self.reconnect)
            .field("trust_roots", &self.trust_roots)
            .field(
                "client_p12",
                &self
                    .client_p12
                    .as_ref()
                    .map(|_| "<bundle, password redacted>"),
            )
            .field("tls_config", &self.tls_config.as_ref().map(|_| "<user's>"))
            .field(
                "proxy",
                &match &self.proxy {
                    None => "from the environment".to_string(),
                    Some(None) => "none".to_string(),
                    Some(Some(url)) => crate::net::proxy::Proxy::parse(url)
                        .map(|p| p.to_string())
                        .unwrap_or_else(|_| "<unparsable>".into()),
                },
            )
            .finish_non_exhaustive()
    }
}

/// Builder methods shared by the provider builders (they hold `options: ConnectionOptions`).
macro_rules! connection_builder_methods {
    () => {
        /// The provider's name (what `PublishOptions::provider` and `Message::provider` use).
        pub fn name(mut self, name: impl Into<String>) -> Self {
            self.name = name.into();
            self
        }

        /// The MQTT client identifier (default: `mqtt-pubsub-` and 16 random hex digits).
        pub fn client_id(mut self, id: impl Into<String>) -> Self {
            self.options.client_id = Some(id.into());
            self
        }

        /// Keep-alive interval (default 60 s). A dead link is noticed within 1.5 × this.
        /// Zero disables keep-alive; over 65535 s (MQTT's limit) `build()` fails. MQTT
        /// sends it in whole seconds: a fraction is rounded up (1.5 s is 2 s, 0.5 s is 1 s),
        /// and the client pings on the interval it announced.
        pub fn keep_alive(mut self, interval: std::time::Duration) -> Self {
            self.options.keep_alive = if interval.subsec_nanos() == 0 {
                interval
            } else {
                std::time::Duration::from_secs(interval.as_secs().saturating_add(1))
            };
            self
        }

        /// Clean session (default true). With `false` the broker keeps subscriptions and
        /// QoS 1/2 messages for us while we are away.
        pub fn clean_session(mut self, clean: bool) -> Self {
            self.options.clean_session = clean;
            self
        }

        /// User name and password sent in CONNECT (never logged).
        pub fn username_password(
            mut self,
            username: impl Into<String>,
            password: impl Into<String>,
        ) -> Self {
            self.options.username = Some(username.into());
            self.options.password = Some(password.into());
            self
        }

        /// A user name without a password (MQTT allows one alone; never logged).
        pub fn username(mut self, username: impl Into<String>) -> Self {
            self.options.username = Some(username.into());
            self.options.password = None;
            self
        }

        /// The last will (`build()` fails with `InvalidTopic` if its topic is not a valid topic
        /// name: empty, or with a wildcard).
        pub fn last_will(mut self, will: $crate::options::LastWill) -> Self {
            self.options.will = Some(will);
            self
        }

        /// Time allowed for TCP, TLS, WebSocket and CONNECT → CONNACK together (default 10 s).
        pub fn connect_timeout(mut self, timeout: std::time::Duration) -> Self {
            self.options.connect_timeout = timeout;
            self
        }

        /// Default time a publish or subscribe call may block (default 10 s).
        pub fn operation_timeout(mut self, timeout: std::time::Duration) -> Self {
            self.options.operation_timeout = timeout;
            self
        }

        /// Largest incoming MQTT packet accepted, in bytes (default 16 MiB). A larger one is
        /// refused before it is buffered, and the connection is reset.
        pub fn max_packet_size(mut self, bytes: usize) -> Self {
            self.options.max_packet_size = bytes;
            self
        }

        /// An extra HTTP header on the WebSocket upgrade request (its value is never logged).
        pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
            self.options.headers.push((name.into(), value.into()));
            self
        }

        /// Trust these CA certificates (PEM) in addition to the roots chosen with
        /// [`trust_roots`](Self::trust_roots) (default: the webpki roots).
        pub fn ca_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
            self.options.ca_pems.push(pem.into());
            self
        }

        /// Which roots `wss://` and `mqtts://` trust: [`TrustRoots::Webpki`]
        /// (Mozilla's, compiled in; the default) or [`TrustRoots::Platform`] (the operating
        /// system's store, read by `build()`). Extra CAs from
        /// [`ca_pem`](Self::ca_pem) are trusted on top of either.
        ///
        /// [`TrustRoots::Webpki`]: $crate::TrustRoots::Webpki
        /// [`TrustRoots::Platform`]: $crate::TrustRoots::Platform
        pub fn trust_roots(mut self, roots: $crate::TrustRoots) -> Self {
            self.options.trust_roots = roots;
            self
        }

        /// Use this rustls configuration as it is, for a verifier of your own (a pinned
        /// certificate), a FIPS crypto provider, session-resumption settings or client
        /// authentication from elsewhere: [`trust_roots`](Self::trust_roots),
        /// [`ca_pem`](Self::ca_pem) and [`client_cert_pem`](Self::client_cert_pem) are then
        /// ignored (`build()` refuses the combination). The library changes nothing in it but
        /// its ALPN protocols where a connection needs one (AWS IoT certificate
        /// authentication on port 443 offers `x-amzn-mqtt-ca`).
        pub fn tls_config(mut self, config: std::sync::Arc<rustls::ClientConfig>) -> Self {
            self.options.tls_config = Some(config);
            self
        }

        /// Present this client certificate chain and private key (PEM) for mutual TLS.
        pub fn client_cert_pem(
            mut self,
            cert_chain: impl Into<Vec<u8>>,
            private_key: impl Into<Vec<u8>>,
        ) -> Self {
            self.options.client_cert = Some((cert_chain.into(), private_key.into()));
            self
        }

        /// Present the client certificate and key of this PKCS#12 bundle (`.p12`, `.pfx`,
        /// as device fleets ship them), opened with `password` when the provider is built.
        /// A wrong password, a file that is not PKCS#12 and a bundle without a key each give
        /// an `Error::Tls` saying which. The password is never logged or shown. Feature
        /// `pkcs12`.
        #[cfg(feature = "pkcs12")]
        pub fn client_identity_p12(
            mut self,
            bundle: impl Into<Vec<u8>>,
            password: impl Into<String>,
        ) -> Self {
            self.options.client_p12 = Some((bundle.into(), password.into()));
            self
        }

        /// Connect through this HTTP proxy (`http://[user:password@]host[:port]`, tunnelled
        /// with `CONNECT`; the password is never logged or shown in errors), whatever the
        /// environment says. Default: the proxy environment variables (`HTTPS_PROXY` for
        /// `wss://`/`mqtts://`, `HTTP_PROXY` for `ws://`/`mqtt://`, else `ALL_PROXY`, each
        /// also lower case; `NO_PROXY` exempts hosts and domains), read when `build()` runs.
        pub fn proxy(mut self, url: impl Into<String>) -> Self {
            self.options.proxy = Some(Some(url.into()));
            self
        }

        /// Acknowledge after processing on this whole provider (default `false`): every
        /// subscription made through it behaves as with
        /// [`SubscribeOptions::ack_after_processing`](crate::SubscribeOptions::ack_after_processing),
        /// and so does a persistent session's message that arrives before the subscription
        /// that will take it (right after CONNACK): held unacknowledged until it is claimed
        /// and processed. Keep `unclaimed_capacity` above the broker's in-flight window (the
        /// unacknowledged messages it sends at most): a held message dropped for room is
        /// acknowledged (and counted).
        pub fn ack_after_processing(mut self, on: bool) -> Self {
            self.options.ack_after_processing = on;
            self
        }

        /// Whether `PubSub::add_provider` returns at once, before any connection attempt
        /// (default `false`). Then the provider's I/O thread makes the first attempt at once
        /// and retries with the reconnect backoff; state events say how it goes, and
        /// publishes and subscribes queue meanwhile as they do while reconnecting (Amplify's
        /// `addPluggable` behaves so). By default `add_provider` waits for the first
        /// connection and fails with its error — what a script wants — except with an
        /// [`outbox`](Self::outbox): then a failed first attempt is reported as a state
        /// event (`ConnectionDisrupted` with the reason), the provider is registered all
        /// the same and keeps trying, so a device that boots offline can publish into its
        /// outbox.
        ///
        /// ```no_run
        /// use mqtt_pubsub::{ConnectionState, MqttOverWsProvider, PubSub};
        /// let pubsub = PubSub::new();
        /// let states = pubsub.state_changes();
        /// pubsub.add_provider(
        ///     MqttOverWsProvider::builder("mqtt://broker.local:1883")
        ///         .connect_in_background(true)
        ///         .build()?,
        /// )?; // returns at once, whether the broker is there or not
        /// for event in states.iter() {
        ///     if event.state == ConnectionState::Connected {
        ///         break;
        ///     }
        /// }
        /// # Ok::<(), mqtt_pubsub::Error>(())
        /// ```
        pub fn connect_in_background(mut self, background: bool) -> Self {
            self.options.connect_in_background = background;
            self
        }

        /// Keep QoS 1 and 2 publishes in a durable outbox in directory `dir` (created if
        /// missing): a publish is on stable storage before `publish` returns `Ok` (and
        /// `publish_nowait`'s receipt completes), stays there until acknowledged (PUBACK, or
        /// PUBCOMP for QoS 2), and a later process that opens the same outbox resends it, in
        /// order. Needs a fixed [`client_id`](Self::client_id); one process per outbox.
        /// `PubSub::flush` still waits for the broker's acknowledgements. See docs/guide.md's
        /// "Durable outbox" for exactly what survives what.
        pub fn outbox(mut self, dir: impl Into<std::path::PathBuf>) -> Self {
            self.options.outbox_dir = Some(dir.into());
            self
        }

        /// Most bytes of unfinished publishes the outbox holds (topic + payload + 64 each;
        /// default 64 MiB); a publish beyond it is refused with `Error::OutboxFull`.
        pub fn outbox_max_bytes(mut self, bytes: u64) -> Self {
            self.options.outbox_max_bytes = bytes;
            self
        }

        /// When the outbox forces writes to storage (default
        /// [`OutboxSync::Always`](crate::OutboxSync::Always)).
        pub fn outbox_sync(mut self, sync: $crate::OutboxSync) -> Self {
            self.options.outbox_sync = sync;
            self
        }

        /// Connect directly, whatever the proxy environment variables say.
        pub fn no_proxy(mut self) -> Self {
            self.options.proxy = Some(None);
            self
        }

        /// How lost connections come back (default: 1 s doubling to 60 s, full jitter).
        pub fn reconnect(mut self, policy: $crate::options::ReconnectPolicy) -> Self {
            self.options.reconnect = policy;
            self
        }

        /// Most unacknowledged QoS 1/2 publishes (and subscribes) at once (default 100).
        pub fn max_inflight(mut self, window: u16) -> Self {
            self.options.max_inflight = window;
            self
        }

        /// Most QoS 2 publishes unacknowledged at once over MQTT 3.1.1 (default 20, within
        /// `max_inflight`). A 3.1.1 broker cannot say how many it takes, and mosquitto (whose
        /// `max_inflight_messages` is 20 by default) acknowledges and drops the QoS 2
        /// publishes over its window, so that a burst at 100 lost four in five. Over MQTT 5
        /// the server says its limit in CONNACK (Receive Maximum) and that is used instead. 0:
        /// no limit of its own.
        pub fn max_inflight_qos2(mut self, window: u16) -> Self {
            self.options.max_inflight_qos2 = window;
            self
        }

        /// Most requests queued while the in-flight window is full or the connection is
        /// down (default 1000). When it is full, publish blocks up to its timeout.
        pub fn queue_capacity(mut self, capacity: usize) -> Self {
            self.options.queue_capacity = capacity;
            self
        }

        /// What a QoS 0 publish does while disconnected: queue (default) or fail fast.
        pub fn offline_qos0(mut self, policy: $crate::options::OfflineQoS0) -> Self {
            self.options.offline_qos0 = policy;
            self
        }

        /// How long `close()` (and dropping the last `PubSub`, and `remove_provider`) may spend
        /// sending what was accepted before it and waiting for its acknowledgements before
        /// DISCONNECT (default 10 s; DISCONNECT itself gets at most 1 s more).
        pub fn close_timeout(mut self, timeout: std::time::Duration) -> Self {
            self.options.close_timeout = timeout;
            self
        }

        /// With `clean_session(false)`: how many messages, and bytes of payload, the broker
        /// sends for no current subscription (what it stored while we were away arrives right
        /// after CONNACK, before the application subscribes) are held for the first
        /// subscription that matches them (default 1000 messages and 16 MiB). Past either
        /// bound the oldest held message is dropped, counted and logged.
        pub fn unclaimed_capacity(mut self, messages: usize, bytes: usize) -> Self {
            self.options.unclaimed_messages = messages;
            self.options.unclaimed_bytes = bytes;
            self
        }

        /// Default bound of each subscription's buffer in bytes (default 64 MiB), besides its
        /// bound in messages: past either, messages are dropped for that subscription and
        /// counted, as on overflow. A single message larger than this still gets into an
        /// empty buffer.
        pub fn subscription_max_bytes(mut self, bytes: usize) -> Self {
            self.options.subscription_max_bytes = bytes;
            self
        }

        /// The MQTT version to speak (default [`MqttVersion::V3_1_1`](crate::MqttVersion)).
        /// With [`MqttVersion::V5`](crate::MqttVersion) the same calls work, and the MQTT 5
        /// settings and options become available (see the MQTT 5 section of docs/guide.md).
        pub fn mqtt_version(mut self, version: $crate::MqttVersion) -> Self {
            self.options.mqtt_version = version;
            self
        }

        /// MQTT 5: how long the server keeps the session after the connection ends (Session
        /// Expiry Interval, whole seconds, at most `u32::MAX`: never). Default: 0 with
        /// `clean_session(true)`, never with `clean_session(false)` (as in 3.1.1).
        pub fn session_expiry(mut self, expiry: std::time::Duration) -> Self {
            self.options.session_expiry = Some(expiry);
            self
        }

        /// MQTT 5: most unacknowledged QoS 1/2 messages the server may send us at once
        /// (Receive Maximum, 1..=65535; default: not sent, i.e. 65535).
        pub fn receive_maximum(mut self, n: u16) -> Self {
            self.options.receive_maximum = Some(n);
            self
        }

        /// MQTT 5: most topic aliases the server may define towards us (default 64; 0: none).
        pub fn topic_alias_maximum(mut self, n: u16) -> Self {
            self.options.topic_alias_maximum = Some(n);
            self
        }

        /// MQTT 5: asks the server for Response Information in CONNACK (the basis of the
        /// response topics it wants); it comes in the `Connected` state event's
        /// `response_information`.
        pub fn request_response_information(mut self, on: bool) -> Self {
            self.options.request_response_information = on;
            self
        }

        /// MQTT 5: a user property sent in CONNECT (may be repeated; order is kept).
        pub fn connect_user_property(
            mut self,
            key: impl Into<String>,
            value: impl Into<String>,
        ) -> Self {
            self.options
                .connect_user_properties
                .push((key.into(), value.into()));
            self
        }

        /// Default buffer of each subscription, in messages (default 8192).
        pub fn subscription_capacity(mut self, capacity: usize) -> Self {
            self.options.subscription_capacity = capacity;
            self
        }
    };
}
pub(crate) use connection_builder_methods;

//! What travels: incoming [`Message`]s and outgoing [`Payload`]s.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::mqtt::packet::PublishFrame;
use crate::mqtt::QoS;

/// A message received on a subscription.
///
/// Cheap to clone: the topic and payload are shared, and are the very bytes the packet arrived
/// in (no copy was made). The payload is delivered exactly as it arrived, JSON or not, text or
/// binary.
///
/// ```no_run
/// use mqtt_pubsub::{MqttOverWsProvider, PubSub};
/// # #[derive(serde::Deserialize)] struct Reading { celsius: f64 }
/// let pubsub = PubSub::new();
/// pubsub.add_provider(MqttOverWsProvider::builder("ws://localhost:8080/mqtt").build()?)?;
/// let sub = pubsub.subscribe("sensors/+/temp")?;
/// for msg in &sub {
///     let reading: Reading = msg.json()?;           // or msg.text()?, msg.payload()
///     println!("{} via {}: {} °C", msg.topic(), msg.provider(), reading.celsius);
/// }
/// # Ok::<(), mqtt_pubsub::Error>(())
/// ```
pub struct Message {
    publish: PublishFrame,
    provider: Arc<str>,
    /// The bytes this message counts against its subscription's buffer bound, given back
    /// when it is dropped (not carried by clones).
    credit: Option<Credit>,
    /// For a subscription that acknowledges after processing: shared by every copy, its
    /// acknowledgement goes out once the last copy is dropped.
    ack: Option<Arc<AckToken>>,
}

impl Clone for Message {
    fn clone(&self) -> Message {
        Message {
            publish: self.publish.clone(),
            provider: self.provider.clone(),
            credit: None,
            ack: self.ack.clone(),
        }
    }
}

/// Bytes a buffered message counts against a subscription's bound, until it is dropped;
/// for a subscription that acknowledges after processing, also one message of what the
/// application holds (its provider stops reading while that is at the bound).
pub(crate) struct Credit {
    counter: Arc<std::sync::atomic::AtomicUsize>,
    bytes: usize,
    flow: Option<Arc<crate::connection::wake::Flow>>,
}

impl Drop for Credit {
    fn drop(&mut self) {
        self.counter
            .fetch_sub(self.bytes, std::sync::atomic::Ordering::AcqRel);
        if let Some(flow) = &self.flow {
            flow.released();
        }
    }
}

/// Held by every copy of a message whose acknowledgement waits for the application: when
/// the last copy is dropped, the provider's I/O thread is woken to send it (the I/O thread
/// holds a weak reference, in arrival order).
pub(crate) struct AckToken {
    pub wake: Arc<crate::connection::wake::Wake>,
}

impl Drop for AckToken {
    fn drop(&mut self) {
        self.wake.notify();
    }
}

impl Message {
    pub(crate) fn new(publish: PublishFrame, provider: Arc<str>) -> Message {
        Message {
            publish,
            provider,
            credit: None,
            ack: None,
        }
    }

    /// Makes its acknowledgement wait for every copy to be dropped.
    pub(crate) fn hold_ack(&mut self, token: Arc<AckToken>) {
        self.ack = Some(token);
    }

    /// The memory it holds: the packet it arrived in, and its MQTT 5 properties as read.
    pub(crate) fn size(&self) -> usize {
        self.publish.as_bytes().len() + self.publish.properties().map_or(0, |p| p.memory())
    }

    /// Counts it as held by the application of an acknowledge-after-processing subscription
    /// (after [`Message::charge`]).
    pub(crate) fn hold_in(&mut self, flow: &Arc<crate::connection::wake::Flow>) {
        if let Some(c) = self.credit.as_mut() {
            flow.held.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
            c.flow = Some(flow.clone());
        }
    }

    /// Counts it against `counter` until it is dropped.
    pub(crate) fn charge(&mut self, counter: &Arc<std::sync::atomic::AtomicUsize>) {
        let bytes = self.size();
        counter.fetch_add(bytes, std::sync::atomic::Ordering::AcqRel);
        self.credit = Some(Credit {
            counter: counter.clone(),
            bytes,
            flow: None,
        });
    }

    /// The topic it was published to.
    pub fn topic(&self) -> &str {
        self.publish.topic()
    }

    /// The payload bytes.
    pub fn payload(&self) -> &[u8] {
        self.publish.payload()
    }

    /// The payload as UTF-8 text.
    pub fn text(&self) -> Result<&str> {
        std::str::from_utf8(self.payload()).map_err(Error::Utf8)
    }

    /// The payload parsed as JSON into `T` (e.g. `serde_json::Value` or your own type).
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_slice(self.payload()).map_err(Error::Json)
    }

    /// The QoS the broker delivered it with.
    pub fn qos(&self) -> QoS {
        self.publish.qos()
    }

    /// Whether the broker sent it as a retained message (on subscribe).
    pub fn retain(&self) -> bool {
        self.publish.retain()
    }

    /// The name of the provider it came through.
    pub fn provider(&self) -> &str {
        &self.provider
    }

    fn props(&self) -> Option<&crate::mqtt::packet::Properties> {
        self.publish.properties()
    }

    /// MQTT 5: the user properties it came with, in the order they were sent (keys may
    /// repeat); none for 3.1.1. An iterator over the message's own bytes: nothing is
    /// allocated.
    ///
    /// ```no_run
    /// # fn show(msg: &mqtt_pubsub::Message) {
    /// for (key, value) in msg.user_properties() {
    ///     println!("{key}={value}");
    /// }
    /// let site = msg.user_properties().find(|(k, _)| *k == "site").map(|(_, v)| v);
    /// # let _ = site;
    /// # }
    /// ```
    pub fn user_properties(&self) -> impl Iterator<Item = (&str, &str)> + '_ {
        self.props().into_iter().flat_map(|p| p.user())
    }

    /// MQTT 5: its content type.
    pub fn content_type(&self) -> Option<&str> {
        self.props()?.str(crate::mqtt::packet::id::CONTENT_TYPE)
    }

    /// MQTT 5: its payload format indicator (`Some(true)`: the sender says it is UTF-8).
    pub fn payload_format_utf8(&self) -> Option<bool> {
        self.props()?
            .byte(crate::mqtt::packet::id::PAYLOAD_FORMAT_INDICATOR)
            .map(|b| b == 1)
    }

    /// MQTT 5: what is left of its message expiry interval (the server counts down the time
    /// it held the message).
    pub fn message_expiry(&self) -> Option<Duration> {
        self.props()?
            .int(crate::mqtt::packet::id::MESSAGE_EXPIRY_INTERVAL)
            .map(|s| Duration::from_secs(u64::from(s)))
    }

    /// MQTT 5: the topic the sender wants a response on.
    pub fn response_topic(&self) -> Option<&str> {
        self.props()?.str(crate::mqtt::packet::id::RESPONSE_TOPIC)
    }

    /// MQTT 5: the correlation data the sender wants copied into the response.
    pub fn correlation_data(&self) -> Option<&[u8]> {
        self.props()?.bin(crate::mqtt::packet::id::CORRELATION_DATA)
    }

    /// MQTT 5: the subscription identifiers of the subscriptions it matched on the server
    /// (an iterator: nothing is allocated).
    pub fn subscription_identifiers(&self) -> impl Iterator<Item = u32> + '_ {
        self.publish.subscription_id_iter()
    }
}

impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Message")
            .field("provider", &self.provider())
            .field("topic", &self.topic())
            .field("qos", &self.qos())
            .field("retain", &self.retain())
            .field("payload_len", &self.payload().len())
            .finish()
    }
}

/// Bytes to publish.
///
/// `&str` and `String` are sent as their UTF-8 bytes (not JSON-quoted), `Vec<u8>` and `&[u8]`
/// as they are, a `serde_json::Value` and [`Payload::json`] as JSON text.
///
/// ```
/// use mqtt_pubsub::Payload;
/// assert_eq!(Payload::from("21.5").as_bytes(), b"21.5");
/// assert_eq!(Payload::from(serde_json::json!({"on": true})).as_bytes(), br#"{"on":true}"#);
/// assert_eq!(Payload::json(&[1, 2])?.as_bytes(), b"[1,2]");
/// assert_eq!(Payload::from(vec![0u8, 255]).into_bytes(), [0, 255]);
/// # Ok::<(), mqtt_pubsub::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Payload(pub(crate) Vec<u8>);

impl Payload {
    /// Serializes any `Serialize` value as JSON.
    pub fn json<T: serde::Serialize + ?Sized>(value: &T) -> Result<Payload> {
        serde_json::to_vec(value).map(Payload).map_err(Error::Json)
    }

    /// The bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The bytes, owned.
    pub fn into_bytes(self) -> Vec<u8> {
        self.0
    }
}

impl From<Vec<u8>> for Payload {
    fn from(v: Vec<u8>) -> Self {
        Payload(v)
    }
}
impl From<&[u8]> for Payload {
    fn from(v: &[u8]) -> Self {
        Payload(v.to_vec())
    }
}
impl<const N: usize> From<&[u8; N]> for Payload {
    fn from(v: &[u8; N]) -> Self {
        Payload(v.to_vec())
    }
}
impl From<&str> for Payload {
    fn from(v: &str) -> Self {
        Payload(v.as_bytes().to_vec())
    }
}
impl From<String> for Payload {
    fn from(v: String) -> Self {
        Payload(v.into_bytes())
    }
}
impl From<&String> for Payload {
    fn from(v: &String) -> Self {
        Payload(v.as_bytes().to_vec())
    }
}
impl From<serde_json::Value> for Payload {
    fn from(v: serde_json::Value) -> Self {
        Payload(v.to_string().into_bytes())
    }
}
impl From<&serde_json::Value> for Payload {
    fn from(v: &serde_json::Value) -> Self {
        Payload(v.to_string().into_bytes())
    }
}

/// One topic or many: `"a/b"`, `String`, `["a", "b"]`, `vec![..]`, `&[..]`.
///
/// ```no_run
/// # let pubsub = mqtt_pubsub::PubSub::new();
/// pubsub.publish("a/b", "one topic")?;
/// pubsub.publish(["a/b", "c/d"], "two topics")?;
/// let topics = vec![String::from("e/f")];
/// pubsub.publish(topics, "an owned list")?;
/// # Ok::<(), mqtt_pubsub::Error>(())
/// ```
pub trait Topics {
    /// The topics as owned strings.
    fn into_topics(self) -> Vec<String>;
}

impl Topics for &str {
    fn into_topics(self) -> Vec<String> {
        vec![self.to_string()]
    }
}
impl Topics for String {
    fn into_topics(self) -> Vec<String> {
        vec![self]
    }
}
impl Topics for &String {
    fn into_topics(self) -> Vec<String> {
        vec![self.clone()]
    }
}
impl<T: AsRef<str>, const N: usize> Topics for [T; N] {
    fn into_topics(self) -> Vec<String> {
        self.iter().map(|t| t.as_ref().to_string()).collect()
    }
}
impl<T: AsRef<str>> Topics for Vec<T> {
    fn into_topics(self) -> Vec<String> {
        self.iter().map(|t| t.as_ref().to_string()).collect()
    }
}
impl<T: AsRef<str>> Topics for &[T] {
    fn into_topics(self) -> Vec<String> {
        self.iter().map(|t| t.as_ref().to_string()).collect()
    }
}

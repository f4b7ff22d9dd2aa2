//! MQTT 3.1.1 and 5: framing and codecs, the sans-IO session, and the subscription router.
//!
//! The protocol layer: it depends on nothing above it (only `error` and `topic`), so that it
//! can be read, tested and fuzzed alone.

pub mod codec;
pub mod packet;
mod qos;
pub mod reason;
pub mod router;
pub mod session;
mod version;

pub use qos::QoS;
pub use version::MqttVersion;

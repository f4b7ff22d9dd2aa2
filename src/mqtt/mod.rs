//! MQTT 3.1.1: framing and codec, the sans-IO session, and the subscription router.
//!
//! The protocol layer: it depends on nothing above it (only `error` and `topic`), so that it
//! can be read, tested and fuzzed alone.

pub mod codec;
mod qos;
pub mod router;
pub mod session;

pub use qos::QoS;

//! MQTT 3.1.1: framing and codec, the sans-IO session, and the subscription router.
//!
//! The protocol layer: it depends on nothing above it (only `error` and `topic`), so that it
//! can be read, tested and fuzzed alone.

// Some of it serves only the fuzz targets, the benchmark and the tests (`__internals`).
#![cfg_attr(not(feature = "__internals"), allow(dead_code))]

pub mod codec;
mod qos;
pub mod router;
pub mod session;

pub use qos::QoS;

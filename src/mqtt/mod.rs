//! MQTT 3.1.1: framing and codec, the sans-IO session, and the subscription router.

pub mod codec;
pub mod router;
pub mod session;

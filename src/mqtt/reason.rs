//! MQTT 5 reason codes (§2.4).

use std::fmt;

/// An MQTT 5 reason code: below 0x80 success, from 0x80 on a failure.
///
/// ```
/// use mqtt_pubsub::ReasonCode;
/// let code = ReasonCode(0x87);
/// assert!(code.is_failure());
/// assert_eq!(code.meaning(), "not authorized");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct ReasonCode(pub u8);

impl ReasonCode {
    /// Whether it reports a failure (0x80 and above).
    pub fn is_failure(self) -> bool {
        self.0 >= 0x80
    }

    /// What the code means, as the specification names it.
    pub fn meaning(self) -> &'static str {
        match self.0 {
            0x00 => "success",
            0x01 => "granted QoS 1",
            0x02 => "granted QoS 2",
            0x04 => "disconnect with will message",
            0x10 => "no matching subscribers",
            0x11 => "no subscription existed",
            0x18 => "continue authentication",
            0x19 => "re-authenticate",
            0x80 => "unspecified error",
            0x81 => "malformed packet",
            0x82 => "protocol error",
            0x83 => "implementation specific error",
            0x84 => "unsupported protocol version",
            0x85 => "client identifier not valid",
            0x86 => "bad user name or password",
            0x87 => "not authorized",
            0x88 => "server unavailable",
            0x89 => "server busy",
            0x8a => "banned",
            0x8b => "server shutting down",
            0x8c => "bad authentication method",
            0x8d => "keep alive timeout",
            0x8e => "session taken over",
            0x8f => "topic filter invalid",
            0x90 => "topic name invalid",
            0x91 => "packet identifier in use",
            0x92 => "packet identifier not found",
            0x93 => "receive maximum exceeded",
            0x94 => "topic alias invalid",
            0x95 => "packet too large",
            0x96 => "message rate too high",
            0x97 => "quota exceeded",
            0x98 => "administrative action",
            0x99 => "payload format invalid",
            0x9a => "retain not supported",
            0x9b => "QoS not supported",
            0x9c => "use another server",
            0x9d => "server moved",
            0x9e => "shared subscriptions not supported",
            0x9f => "connection rate exceeded",
            0xa0 => "maximum connect time",
            0xa1 => "subscription identifiers not supported",
            0xa2 => "wildcard subscriptions not supported",
            _ => "unknown reason code",
        }
    }
}

impl fmt::Display for ReasonCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#04x} ({})", self.0, self.meaning())
    }
}

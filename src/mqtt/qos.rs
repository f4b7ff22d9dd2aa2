//! [`QoS`]: the quality of service of the protocol.

use mqtt::QualityOfService;

/// MQTT quality of service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum QoS {
    /// At most once: fire and forget.
    #[default]
    AtMostOnce = 0,
    /// At least once: acknowledged by PUBACK, may be duplicated.
    AtLeastOnce = 1,
    /// Exactly once: four-way handshake (not supported by AWS IoT).
    ExactlyOnce = 2,
}

impl QoS {
    /// From the wire value 0, 1 or 2.
    pub fn from_u8(v: u8) -> Option<QoS> {
        match v {
            0 => Some(QoS::AtMostOnce),
            1 => Some(QoS::AtLeastOnce),
            2 => Some(QoS::ExactlyOnce),
            _ => None,
        }
    }

    pub(crate) fn to_mqtt(self) -> QualityOfService {
        match self {
            QoS::AtMostOnce => QualityOfService::Level0,
            QoS::AtLeastOnce => QualityOfService::Level1,
            QoS::ExactlyOnce => QualityOfService::Level2,
        }
    }
}

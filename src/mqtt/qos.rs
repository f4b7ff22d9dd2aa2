//! [`QoS`]: the quality of service of the protocol.

use mqtt::QualityOfService;

/// MQTT quality of service.
///
/// ```
/// use mqtt_pubsub::QoS;
/// assert_eq!(QoS::try_from(1u8).unwrap(), QoS::AtLeastOnce);
/// assert!(QoS::try_from(3u8).is_err());
/// ```
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

/// ```
/// use mqtt_pubsub::QoS;
/// assert_eq!(QoS::try_from(1).unwrap(), QoS::AtLeastOnce);
/// assert!(QoS::try_from(3).is_err());
/// ```
impl TryFrom<u8> for QoS {
    type Error = crate::error::Error;

    fn try_from(v: u8) -> Result<QoS, Self::Error> {
        QoS::from_u8(v)
            .ok_or_else(|| crate::error::Error::InvalidConfig(format!("QoS {v}: it is 0, 1 or 2")))
    }
}

impl From<QoS> for u8 {
    fn from(q: QoS) -> u8 {
        q as u8
    }
}

//! [`MqttVersion`]: a leaf every layer may use.

use crate::error::Error;

/// Which MQTT version a connection speaks.
///
/// Shown and parsed as `3.1.1` and `5` (parsing also takes `311`, `4`, `5.0`):
///
/// ```
/// use mqtt_pubsub::MqttVersion;
/// let v: MqttVersion = "5".parse().unwrap();
/// assert_eq!(v, MqttVersion::V5);
/// assert_eq!(MqttVersion::V3_1_1.to_string(), "3.1.1");
/// assert!("6".parse::<MqttVersion>().is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum MqttVersion {
    /// MQTT 3.1.1 (protocol level 4): the default.
    #[default]
    V3_1_1,
    /// MQTT 5.0 (protocol level 5).
    V5,
}

impl std::fmt::Display for MqttVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            MqttVersion::V3_1_1 => "3.1.1",
            MqttVersion::V5 => "5",
        })
    }
}

impl std::str::FromStr for MqttVersion {
    type Err = Error;

    fn from_str(s: &str) -> Result<MqttVersion, Error> {
        match s.trim() {
            "3.1.1" | "311" | "4" => Ok(MqttVersion::V3_1_1),
            "5" | "5.0" => Ok(MqttVersion::V5),
            other => Err(Error::InvalidConfig(format!(
                "MQTT version {:?}: it is 3.1.1 or 5",
                crate::error::printable_max(other, 20)
            ))),
        }
    }
}

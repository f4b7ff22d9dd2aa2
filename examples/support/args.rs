// Minimal `--flag value` parsing, shared by the examples and the benchmark (`include!`d).

/// Minimal `--flag value` parsing.
#[allow(dead_code)]
pub struct Args(Vec<String>);

// Each program uses some of these.
#[allow(dead_code)]
impl Args {
    pub fn from_env() -> Args {
        Args(std::env::args().skip(1).collect())
    }
    /// The last value of a flag.
    pub fn value(&self, flag: &str) -> Option<String> {
        self.values(flag).pop()
    }
    /// Every value of a repeated flag.
    pub fn values(&self, flag: &str) -> Vec<String> {
        self.0
            .windows(2)
            .filter(|w| w[0] == flag)
            .map(|w| w[1].clone())
            .collect()
    }
    pub fn has(&self, flag: &str) -> bool {
        self.0.iter().any(|a| a == flag)
    }
    pub fn qos(&self) -> mqtt_pubsub::QoS {
        match self.value("--qos").as_deref() {
            None | Some("0") => mqtt_pubsub::QoS::AtMostOnce,
            Some("1") => mqtt_pubsub::QoS::AtLeastOnce,
            Some("2") => mqtt_pubsub::QoS::ExactlyOnce,
            Some(q) => {
                eprintln!("--qos must be 0, 1 or 2, not {q}");
                std::process::exit(2)
            }
        }
    }
}

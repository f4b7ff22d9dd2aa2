#![allow(dead_code)]
//! Shared by the examples: the broker URL from `--url`, or an embedded rumqttd.

include!("embedded_config.rs");

/// `--url U` if given; otherwise starts rumqttd in this process with a WebSocket listener on
/// a free loopback port and returns its URL.
pub fn url_or_embedded(args: &Args) -> String {
    if let Some(url) = args.value("--url") {
        return url;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port");
    let config = embedded_config(port);
    std::thread::spawn(move || {
        let _ = rumqttd::Broker::new(config).start();
    });
    let start = std::time::Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(10),
            "embedded broker did not start"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let url = format!("ws://127.0.0.1:{port}/mqtt");
    eprintln!("started an embedded rumqttd broker at {url}");
    url
}

/// Minimal `--flag value` parsing for the examples.
pub struct Args(Vec<String>);

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

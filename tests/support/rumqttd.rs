//! rumqttd, embedded in the test process.

use std::time::Duration;

use super::{free_port, wait_port};

/// rumqttd embedded in this process (packs several packets into one WebSocket frame).
/// It has no shutdown: it lives until the test process ends.
pub struct Rumqttd {
    pub ws_port: u16,
}

impl Rumqttd {
    pub fn start() -> Rumqttd {
        Self::start_with_auth(None)
    }

    pub fn start_with_auth(auth: Option<(&str, &str)>) -> Rumqttd {
        let ws_port = free_port();
        let mut config = embedded_config(ws_port);
        if let Some((u, p)) = auth {
            for s in config.ws.as_mut().unwrap().values_mut() {
                s.connections.auth = Some([(u.to_string(), p.to_string())].into_iter().collect());
            }
        }
        std::thread::spawn(move || {
            let mut broker = rumqttd::Broker::new(config);
            let _ = broker.start();
        });
        wait_port(ws_port, Duration::from_secs(10));
        Rumqttd { ws_port }
    }

    /// rumqttd with one MQTT 5 listener (plain TCP: rumqttd's v5 has no WebSocket); returns
    /// its `mqtt://` URL.
    pub fn start_v5() -> String {
        let port = free_port();
        let mut config = embedded_config(free_port());
        let mut v5 = config.ws.take().unwrap();
        for s in v5.values_mut() {
            s.name = "v5".into();
            s.listen = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        }
        config.v5 = Some(v5);
        std::thread::spawn(move || {
            let mut broker = rumqttd::Broker::new(config);
            let _ = broker.start();
        });
        wait_port(port, Duration::from_secs(10));
        format!("mqtt://127.0.0.1:{port}")
    }

    pub fn ws_url(&self) -> String {
        format!("ws://127.0.0.1:{}/mqtt", self.ws_port)
    }
}

include!("../../examples/support/embedded_config.rs");

//! nats-server, from the machine's packages.

use super::process::{retry_start, Process};
use super::{available, free_port, on_path, TempDir};

/// nats-server with JetStream (needed for MQTT), MQTT over ws on `/mqtt` and plain MQTT.
pub struct Nats {
    pub process: Process,
    pub ws_port: u16,
    pub mqtt_port: u16,
    _dir: TempDir,
}

impl Nats {
    pub fn start() -> Option<Nats> {
        let bin = on_path("nats-server");
        if !available("nats", bin.is_some()) {
            return None;
        }
        let dir = TempDir::new("nats");
        let bin = bin.unwrap();
        let (process, (ws_port, mqtt_port)) = retry_start("nats-server", || {
            let (client, mqtt, ws_port) = (free_port(), free_port(), free_port());
            // ack_wait: NATS redelivers a QoS 1 message it sent to a connection that died only
            // after this long (default 30 s), not when the session reconnects; the broker-kill
            // stream test waited out the default in about one run in three.
            let conf = format!(
                "server_name: test_nats_{ws_port}\nlisten: 127.0.0.1:{client}\nmax_payload: 8MB\n\
             jetstream {{ store_dir: \"{}\" }}\n\
             mqtt {{ host: 127.0.0.1, port: {mqtt}, ack_wait: \"5s\" }}\n\
             websocket {{ host: 127.0.0.1, port: {ws_port}, no_tls: true }}\n",
                dir.path().join("js").display()
            );
            let conf_path = dir.path().join("nats.conf");
            std::fs::write(&conf_path, conf).unwrap();
            let mut process = Process::spawn(
                &bin,
                &["-c".into(), conf_path.display().to_string()],
                &[mqtt, ws_port],
                None,
            )?;
            process
                .wait_ws(ws_port, "/mqtt")
                .then_some((process, (ws_port, mqtt)))
        });
        Some(Nats {
            process,
            ws_port,
            mqtt_port,
            _dir: dir,
        })
    }

    pub fn ws_url(&self) -> String {
        format!("ws://127.0.0.1:{}/mqtt", self.ws_port)
    }

    /// Plain MQTT (`mqtt://`), no WebSocket.
    pub fn mqtt_url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.mqtt_port)
    }
}

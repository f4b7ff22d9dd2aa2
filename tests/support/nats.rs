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

/// Three nats-server nodes in one cluster with clustered JetStream, MQTT on each node.
pub struct NatsCluster {
    pub nodes: Vec<Process>,
    pub mqtt_ports: Vec<u16>,
    _dir: TempDir,
}

impl NatsCluster {
    /// Starts the three nodes and waits until each accepts an MQTT session (the JetStream
    /// meta leader is elected and the MQTT streams exist).
    pub fn start() -> Option<NatsCluster> {
        let bin = on_path("nats-server");
        if !available("nats", bin.is_some()) {
            return None;
        }
        let bin = bin.unwrap();
        let dir = TempDir::new("nats-cluster");
        let (nodes, mqtt_ports) = retry_start("a nats-server cluster", || {
            let ports: Vec<[u16; 3]> = (0..3)
                .map(|_| [free_port(), free_port(), free_port()])
                .collect();
            let mut nodes = Vec::new();
            for (i, [client, route, mqtt]) in ports.iter().enumerate() {
                let routes: Vec<String> = ports
                    .iter()
                    .enumerate()
                    .filter(|(j, _)| *j != i)
                    .map(|(_, p)| format!("\"nats-route://127.0.0.1:{}\"", p[1]))
                    .collect();
                // Every MQTT stream and consumer on all three nodes (`stream_replicas`):
                // with one replica, a stream on the killed node stops the others too.
                let conf = format!(
                    "server_name: node{i}_{client}\nlisten: 127.0.0.1:{client}\n\
                     jetstream {{ store_dir: \"{}\" }}\n\
                     cluster {{ name: test_cluster_{}, listen: 127.0.0.1:{route}, routes: [{}] }}\n\
                     mqtt {{ host: 127.0.0.1, port: {mqtt}, ack_wait: \"5s\", stream_replicas: 3 }}\nlog_file: \"{}.log\"\n",
                    dir.path().join(format!("js{i}_{client}")).display(),
                    ports[0][0],
                    routes.join(", "),
                    dir.path().join(format!("node{i}")).display()
                );
                let conf_path = dir.path().join(format!("node{i}.conf"));
                std::fs::write(&conf_path, conf).unwrap();
                // Only the client port is waited for here: MQTT opens once JetStream is up,
                // which needs the other nodes.
                nodes.push(Process::spawn(
                    &bin,
                    &["-c".into(), conf_path.display().to_string()],
                    &[*client],
                    None,
                )?);
            }
            let mqtt_ports: Vec<u16> = ports.iter().map(|p| p[2]).collect();
            // A cluster that does not form (a route or MQTT port taken meanwhile by another
            // test: the ports were free when chosen) is started again on fresh ports.
            for (i, port) in mqtt_ports.iter().enumerate() {
                if !wait_mqtt(*port) {
                    let log = dir.path().join(format!("node{i}.log"));
                    let log = std::fs::read_to_string(log).unwrap_or_default();
                    let tail: Vec<&str> = log.lines().rev().take(10).collect();
                    eprintln!(
                        "NATS cluster node {i} (MQTT on {port}) not ready after 60 s; its log \
                         ends: {tail:?}"
                    );
                    return None;
                }
            }
            Some((nodes, mqtt_ports))
        });
        Some(NatsCluster {
            nodes,
            mqtt_ports,
            _dir: dir,
        })
    }
}

/// Waits (at most 60 s) until the node on `port` accepts an MQTT session.
fn wait_mqtt(port: u16) -> bool {
    let start = std::time::Instant::now();
    loop {
        let ps = mqtt_pubsub::PubSub::new();
        let ok = ps
            .add_provider(
                mqtt_pubsub::MqttOverWsProvider::builder(format!("mqtt://127.0.0.1:{port}"))
                    .connect_timeout(std::time::Duration::from_secs(5))
                    .no_proxy()
                    .build()
                    .unwrap(),
            )
            .is_ok();
        let _ = ps.close();
        if ok {
            return true;
        }
        if start.elapsed() >= std::time::Duration::from_secs(60) {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
}

impl NatsCluster {
    /// `mqtt://` URLs of the nodes, in node order.
    pub fn mqtt_urls(&self) -> Vec<String> {
        self.mqtt_ports
            .iter()
            .map(|p| format!("mqtt://127.0.0.1:{p}"))
            .collect()
    }
}

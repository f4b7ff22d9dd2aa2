//! Test support: real brokers on free loopback ports, started and stopped by the tests,
//! and a TCP proxy under test control for fault injection.
#![allow(dead_code)]

pub mod fake_server;
#[cfg(feature = "aws-iot")]
pub mod gateway;
pub mod http;
pub mod proxy;

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Runs one of the calling test file's `child_*` entry points (an `#[ignore]`d test) in a
/// new process of the same test binary; panics if it fails.
pub fn run_child(name: &str, env: &[(&str, String)]) -> std::process::Output {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([
        name,
        "--exact",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ]);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "child {name} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

pub fn child_env(key: &str) -> String {
    std::env::var(key).unwrap_or_else(|_| panic!("{key} is set by the parent test"))
}

/// The memory high-water mark of this process (VmHWM), in KiB.
pub fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/self/status")
}

/// A loopback port free right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits until something accepts TCP connections on the port.
pub fn wait_port(port: u16, timeout: Duration) {
    let start = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < timeout,
            "nothing listens on port {port} after {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Subscribes to `topic` at QoS 1, publishes one QoS 1 message to it, and checks that exactly
/// that message arrives; returns it.
pub fn assert_roundtrip(ps: &mqtt_pubsub::PubSub, topic: &str) -> mqtt_pubsub::Message {
    use mqtt_pubsub::{PublishOptions, QoS, SubscribeOptions};
    let sub = ps
        .subscribe_with(topic, SubscribeOptions::default().qos(QoS::AtLeastOnce))
        .unwrap();
    let payload = format!("round trip on {topic}");
    ps.publish_with(
        topic,
        payload.as_str(),
        PublishOptions::default().qos(QoS::AtLeastOnce),
    )
    .unwrap();
    let m = sub
        .recv_timeout(Duration::from_secs(20))
        .expect("the message comes back");
    assert_eq!((m.topic(), m.payload()), (topic, payload.as_bytes()));
    m
}

/// Waits until a WebSocket upgrade on the port succeeds: a listening TCP port is not yet a
/// broker ready to upgrade (an early upgrade was seen reset under load).
pub fn wait_ws(port: u16, path: &str, timeout: Duration) {
    assert!(
        wait_ws_while(port, path, timeout, || true),
        "unreachable: always alive"
    );
}

/// [`wait_ws`] while `alive()` says the server process still runs; `false` if it ended.
fn wait_ws_while(
    port: u16,
    path: &str,
    timeout: Duration,
    mut alive: impl FnMut() -> bool,
) -> bool {
    let start = Instant::now();
    loop {
        if !alive() {
            return false;
        }
        if let Ok(tcp) = TcpStream::connect(("127.0.0.1", port)) {
            let _ = tcp.set_read_timeout(Some(Duration::from_secs(2)));
            let url = format!("ws://127.0.0.1:{port}{path}");
            let mut req = tungstenite::client::IntoClientRequest::into_client_request(url).unwrap();
            req.headers_mut()
                .insert("Sec-WebSocket-Protocol", "mqtt".parse().unwrap());
            if let Ok((mut ws, _)) = tungstenite::client::client(req, tcp) {
                let _ = ws.close(None);
                return true;
            }
        }
        assert!(
            start.elapsed() < timeout,
            "no WebSocket upgrade on port {port} after {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether a broker may be used: `true` if it is installed. If it is not, the test is
/// skipped with a message, unless `MQTT_PUBSUB_REQUIRE_BROKERS` names it: then it fails.
pub fn available(broker: &str, installed: bool) -> bool {
    if installed {
        return true;
    }
    let required = std::env::var("MQTT_PUBSUB_REQUIRE_BROKERS").unwrap_or_default();
    if required.split(',').any(|b| b.trim() == broker) {
        panic!("{broker} is required (MQTT_PUBSUB_REQUIRE_BROKERS) but not installed");
    }
    eprintln!("SKIPPED: {broker} is not installed");
    false
}

fn on_path(cmd: &str) -> Option<PathBuf> {
    let candidates = [
        format!("/usr/sbin/{cmd}"),
        format!("/usr/bin/{cmd}"),
        format!("/usr/local/bin/{cmd}"),
    ];
    for c in candidates {
        if Path::new(&c).exists() {
            return Some(c.into());
        }
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(cmd))
        .find(|p| p.exists())
}

/// A scratch directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let p = std::env::temp_dir().join(format!(
            "mqtt-pubsub-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A broker child process, killed on drop.
pub struct Process {
    child: Option<Child>,
    program: PathBuf,
    args: Vec<String>,
    ports: Vec<u16>,
}

impl Process {
    /// Starts the program and waits for its ports; `None` if it exited first (a port picked
    /// by [`free_port`] can be taken by someone else before the program binds it: the caller
    /// picks new ports and tries again, see [`retry_start`]).
    fn spawn(
        program: &Path,
        args: &[String],
        ports: &[u16],
        cwd: Option<&Path>,
    ) -> Option<Process> {
        let mut p = Process {
            child: None,
            program: program.to_path_buf(),
            args: args.to_vec(),
            ports: ports.to_vec(),
        };
        p.start_in(cwd).then_some(p)
    }

    /// Whether the process is still running.
    fn alive(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Waits for a WebSocket upgrade on `port` of this process; `false` if it exited.
    fn wait_ws(&mut self, port: u16, path: &str) -> bool {
        wait_ws_while(port, path, Duration::from_secs(20), || self.alive())
    }

    /// Starts the program; `false` if it exited before all its ports accepted connections.
    fn start_in(&mut self, cwd: Option<&Path>) -> bool {
        let mut cmd = Command::new(&self.program);
        cmd.args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(d) = cwd {
            cmd.current_dir(d);
        }
        self.child = Some(
            cmd.spawn()
                .unwrap_or_else(|e| panic!("starting {:?}: {e}", self.program)),
        );
        let start = Instant::now();
        for p in self.ports.clone() {
            while TcpStream::connect(("127.0.0.1", p)).is_err() {
                if !self.alive() {
                    eprintln!("{:?} exited before port {p} was up", self.program);
                    return false;
                }
                assert!(
                    start.elapsed() < Duration::from_secs(20),
                    "{:?}: nothing listens on port {p} after 20 s",
                    self.program
                );
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        true
    }

    /// SIGKILL, then wait for the exit.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts again with the same arguments (same ports).
    pub fn restart(&mut self) {
        self.kill();
        let start = Instant::now();
        loop {
            // The port may linger briefly after a kill.
            if self
                .ports
                .iter()
                .all(|p| TcpListener::bind(("127.0.0.1", *p)).is_ok())
                || start.elapsed() > Duration::from_secs(10)
            {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(self.start_in(None), "{:?} did not restart", self.program);
    }
}

/// Runs `start` until it gives a server (at most three times, each on fresh ports).
fn retry_start<T>(what: &str, mut start: impl FnMut() -> Option<T>) -> T {
    for attempt in 1..=3 {
        if let Some(server) = start() {
            return server;
        }
        eprintln!("{what} did not start (attempt {attempt}); trying fresh ports");
    }
    panic!("{what} did not start in three attempts");
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A test CA and a server certificate for `localhost` and `127.0.0.1`, made with openssl.
pub struct Certs {
    pub ca_pem: Vec<u8>,
    pub dir: PathBuf,
}

pub fn make_certs(dir: &Path) -> Certs {
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "30",
        "-subj",
        "/CN=mqtt-pubsub test CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=localhost",
    ]);
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.crt",
        "-days",
        "30",
        "-sha256",
        "-extfile",
        "server.ext",
    ]);
    // A client certificate from the same CA, for mutual TLS.
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "client.key",
        "-out",
        "client.csr",
        "-subj",
        "/CN=mqtt-pubsub-client",
    ]);
    std::fs::write(
        dir.join("client.ext"),
        "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=clientAuth\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "client.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "client.crt",
        "-days",
        "30",
        "-sha256",
        "-extfile",
        "client.ext",
    ]);
    Certs {
        ca_pem: std::fs::read(dir.join("ca.crt")).unwrap(),
        dir: dir.to_path_buf(),
    }
}

impl Certs {
    /// The client certificate and key (PEM) signed by the test CA.
    pub fn client(&self) -> (Vec<u8>, Vec<u8>) {
        (
            std::fs::read(self.dir.join("client.crt")).unwrap(),
            std::fs::read(self.dir.join("client.key")).unwrap(),
        )
    }
}

/// mosquitto with a plain ws listener, a wss listener (test CA) and a ws listener that needs
/// alice/alicepw (bob/bobpw may only read test/#; test/secret is denied to alice).
pub struct Mosquitto {
    pub process: Process,
    pub ws_port: u16,
    pub wss_port: u16,
    pub auth_port: u16,
    /// wss that requires a client certificate from the test CA.
    pub mtls_port: u16,
    pub ca_pem: Vec<u8>,
    pub client_cert: (Vec<u8>, Vec<u8>),
    _dir: TempDir,
}

impl Mosquitto {
    pub fn start() -> Option<Mosquitto> {
        Self::start_with("")
    }

    /// Starts with extra global configuration lines.
    pub fn start_with(extra: &str) -> Option<Mosquitto> {
        let bin = on_path("mosquitto");
        if !available("mosquitto", bin.is_some()) {
            return None;
        }
        let dir = TempDir::new("mosquitto");
        let certs = make_certs(dir.path());
        let d = dir.path().display();
        let passwd = dir.path().join("passwd");
        let st = Command::new(on_path("mosquitto_passwd").expect("mosquitto_passwd"))
            .args(["-c", "-b"])
            .arg(&passwd)
            .args(["alice", "alicepw"])
            .output()
            .unwrap();
        assert!(st.status.success());
        let st = Command::new(on_path("mosquitto_passwd").unwrap())
            .arg("-b")
            .arg(&passwd)
            .args(["bob", "bobpw"])
            .output()
            .unwrap();
        assert!(st.status.success());
        std::fs::write(dir.path().join("acl"), "user alice\ntopic readwrite test/#\ntopic deny test/secret\nuser bob\ntopic read test/#\n").unwrap();
        let bin = bin.unwrap();
        let (process, [ws_port, wss_port, auth_port, mtls_port]) = retry_start("mosquitto", || {
            let (tcp, ws_port, wss_port, auth_port, mtls_port) = (
                free_port(),
                free_port(),
                free_port(),
                free_port(),
                free_port(),
            );
            // mosquitto will not start with only websockets listeners: a plain one is needed too.
            // `user root` keeps it able to read these files when the tests run as root.
            let conf = format!(
            "user root\nper_listener_settings true\npersistence false\nlog_dest none\n{extra}\n\
             listener {tcp} 127.0.0.1\nallow_anonymous true\n\
             listener {ws_port} 127.0.0.1\nprotocol websockets\nallow_anonymous true\n\
             listener {wss_port} 127.0.0.1\nprotocol websockets\nallow_anonymous true\n\
             cafile {d}/ca.crt\ncertfile {d}/server.crt\nkeyfile {d}/server.key\n\
             listener {auth_port} 127.0.0.1\nprotocol websockets\nallow_anonymous false\n\
             password_file {d}/passwd\nacl_file {d}/acl\n\
             listener {mtls_port} 127.0.0.1\nprotocol websockets\nallow_anonymous true\n\
             cafile {d}/ca.crt\ncertfile {d}/server.crt\nkeyfile {d}/server.key\nrequire_certificate true\n"
        );
            let conf_path = dir.path().join("mosquitto.conf");
            std::fs::write(&conf_path, conf).unwrap();
            let mut process = Process::spawn(
                &bin,
                &["-c".into(), conf_path.display().to_string()],
                &[tcp, ws_port, wss_port, auth_port, mtls_port],
                None,
            )?;
            for p in [ws_port, auth_port] {
                if !process.wait_ws(p, "/mqtt") {
                    return None;
                }
            }
            Some((process, [ws_port, wss_port, auth_port, mtls_port]))
        });
        Some(Mosquitto {
            process,
            ws_port,
            wss_port,
            auth_port,
            mtls_port,
            client_cert: certs.client(),
            ca_pem: certs.ca_pem,
            _dir: dir,
        })
    }

    pub fn ws_url(&self) -> String {
        format!("ws://127.0.0.1:{}/mqtt", self.ws_port)
    }
    pub fn wss_url(&self) -> String {
        format!("wss://localhost:{}/mqtt", self.wss_port)
    }
    pub fn auth_url(&self) -> String {
        format!("ws://127.0.0.1:{}/mqtt", self.auth_port)
    }
}

/// nats-server with JetStream (needed for MQTT) and MQTT over ws on `/mqtt`.
pub struct Nats {
    pub process: Process,
    pub ws_port: u16,
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
        let (process, ws_port) = retry_start("nats-server", || {
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
                .then_some((process, ws_port))
        });
        Some(Nats {
            process,
            ws_port,
            _dir: dir,
        })
    }

    pub fn ws_url(&self) -> String {
        format!("ws://127.0.0.1:{}/mqtt", self.ws_port)
    }
}

/// The folder holding `node_modules/aedes` and `node_modules/ws` (`.ci/run` installs them).
pub fn node_dir() -> PathBuf {
    std::env::var_os("MQTT_PUBSUB_NODE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".ci/node"))
}

/// aedes (node) over ws; splits packets over several WebSocket frames.
pub struct Aedes {
    pub process: Process,
    pub ws_port: u16,
}

impl Aedes {
    pub fn start(auth: bool) -> Option<Aedes> {
        let node = on_path("node");
        let dir = node_dir();
        let installed = node.is_some()
            && dir.join("node_modules/aedes").exists()
            && dir.join("node_modules/ws").exists();
        if !available("aedes", installed) {
            return None;
        }
        // The script must sit beside node_modules for ESM resolution.
        let node = node.unwrap();
        let (process, ws_port) = retry_start("aedes", || {
            let ws_port = free_port();
            let script = dir.join(format!("aedes-test-broker-{ws_port}.mjs"));
            std::fs::write(&script, include_str!("aedes.mjs")).unwrap();
            let mut args = vec![script.display().to_string(), ws_port.to_string()];
            if auth {
                args.push("auth".into());
            }
            let mut process = Process::spawn(&node, &args, &[ws_port], Some(&dir))?;
            process.wait_ws(ws_port, "/").then_some((process, ws_port))
        });
        Some(Aedes { process, ws_port })
    }

    pub fn ws_url(&self) -> String {
        format!("ws://127.0.0.1:{}/", self.ws_port)
    }
}

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

    pub fn ws_url(&self) -> String {
        format!("ws://127.0.0.1:{}/mqtt", self.ws_port)
    }
}

include!("../../examples/support/embedded_config.rs");

/// moto's server (Cognito Identity among others), from `pip install 'moto[server]'`.
pub struct Moto {
    pub process: Process,
    pub port: u16,
}

impl Moto {
    pub fn start() -> Option<Moto> {
        let bin = on_path("moto_server");
        if !available("moto", bin.is_some()) {
            return None;
        }
        let bin = bin.unwrap();
        let (process, port) = retry_start("moto", || {
            let port = free_port();
            let args = [
                "-H".into(),
                "127.0.0.1".into(),
                "-p".into(),
                port.to_string(),
            ];
            Process::spawn(&bin, &args, &[port], None).map(|p| (p, port))
        });
        Some(Moto { process, port })
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/", self.port)
    }
}

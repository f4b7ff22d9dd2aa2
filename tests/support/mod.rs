//! Test support: real brokers on free loopback ports, started and stopped by the tests,
//! and a TCP proxy under test control for fault injection.

mod aedes;
mod certs;
pub mod connect_proxy;
pub mod fake_server;
#[cfg(feature = "aws-iot")]
pub mod gateway;
pub mod http;
mod mosquitto;
mod moto;
mod nats;
pub mod openssl_server;
mod process;
pub mod proxy;
mod rumqttd;
#[cfg(feature = "aws-iot")]
pub mod tls_gateway;
pub mod v5_server;

pub use aedes::Aedes;
pub use certs::{issue, make_certs, openssl, pkcs12, Certs};
pub use mosquitto::Mosquitto;
pub use moto::Moto;
pub use nats::{Nats, NatsCluster};
pub use process::Process;
pub use rumqttd::Rumqttd;

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Runs one of the calling test file's `child_*` entry points (an `#[ignore]`d test) in a
/// new process of the same test binary; panics if it fails.
pub fn run_child(name: &str, env: &[(&str, String)]) -> std::process::Output {
    let out = child_command(name, env).output().unwrap();
    assert!(
        out.status.success(),
        "child {name} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Starts one of the calling test file's `child_*` entry points in a new process of the
/// same test binary, with its stdout and stderr piped, without waiting for it.
pub fn spawn_child(name: &str, env: &[(&str, String)]) -> std::process::Child {
    child_command(name, env)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

/// This test binary running only its `#[ignore]`d entry point `name`, with `env`.
fn child_command(name: &str, env: &[(&str, String)]) -> Command {
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
    cmd
}

pub fn child_env(key: &str) -> String {
    std::env::var(key).unwrap_or_else(|_| panic!("{key} is set by the parent test"))
}

/// The `PEAK_KIB n` a child printed.
pub fn peak_in(text: &str) -> u64 {
    number_in(text, "PEAK_KIB ")
}

/// The number after `key` (`"HELD "`, `"DROPPED "`) in what a child printed.
pub fn number_in(text: &str, key: &str) -> u64 {
    text.split(key)
        .nth(1)
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {key:?} in {text}"))
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

/// Waits until a WebSocket upgrade on the port succeeds, while `alive()` says the server
/// process still runs; `false` if it ended. A listening TCP port is not yet a broker ready to
/// upgrade (an early upgrade was seen reset under load).
pub(crate) fn wait_ws_while(
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

pub(crate) fn on_path(cmd: &str) -> Option<PathBuf> {
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

/// A loopback port where a TCP connect hangs: a listener with a backlog of one that never
/// accepts, its backlog filled. (What a firewall that drops SYNs looks like.) Keep the
/// returned value alive as long as the port must hang.
pub fn hanging_port() -> (impl Drop, u16) {
    use rustix::net::{bind, listen, socket, AddressFamily, SocketType};
    let fd = socket(AddressFamily::INET, SocketType::STREAM, None).unwrap();
    let any: std::net::SocketAddr = "127.0.0.1:0".parse().unwrap();
    bind(&fd, &any).unwrap();
    listen(&fd, 0).unwrap();
    let port = match rustix::net::getsockname(&fd).unwrap().try_into() {
        Ok(std::net::SocketAddr::V4(a)) => a.port(),
        _ => panic!("an IPv4 listener"),
    };
    // The one connection the backlog holds: every later SYN is dropped.
    let filler = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    struct Hanging(
        #[allow(dead_code)] rustix::fd::OwnedFd,
        #[allow(dead_code)] std::net::TcpStream,
    );
    impl Drop for Hanging {
        fn drop(&mut self) {}
    }
    (Hanging(fd, filler), port)
}

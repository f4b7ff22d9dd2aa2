//! mosquitto, from the machine's packages.

use std::process::Command;

use super::certs::make_certs;
use super::process::{retry_start, Process};
use super::{available, free_port, on_path, TempDir};

/// mosquitto with a plain ws listener, a wss listener (test CA) and a ws listener that needs
/// alice/alicepw (bob/bobpw may only read test/#; test/secret is denied to alice).
pub struct Mosquitto {
    pub process: Process,
    /// The plain MQTT listener.
    pub tcp_port: u16,
    /// MQTT over TLS (test CA), no WebSocket.
    pub mqtts_port: u16,
    pub ws_port: u16,
    pub wss_port: u16,
    pub auth_port: u16,
    /// wss that requires a client certificate from the test CA.
    pub mtls_port: u16,
    /// mqtts (no WebSocket) that requires a client certificate from the test CA.
    pub mqtts_mtls_port: u16,
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
        Self::start_configured(extra, "")
    }

    /// Starts with extra configuration lines for every listener (`per_listener_settings` is
    /// on: e.g. `max_qos`, `retain_available`).
    pub fn start_with_listener(each: &str) -> Option<Mosquitto> {
        Self::start_configured("", each)
    }

    fn start_configured(extra: &str, each: &str) -> Option<Mosquitto> {
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
        let (
            process,
            [tcp_port, ws_port, wss_port, auth_port, mtls_port, mqtts_port, mqtts_mtls_port],
        ) = retry_start("mosquitto", || {
            let (tcp, ws_port, wss_port, auth_port, mtls_port, mqtts, mqtts_mtls) = (
                free_port(),
                free_port(),
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
             cafile {d}/ca.crt\ncertfile {d}/server.crt\nkeyfile {d}/server.key\nrequire_certificate true\n\
             listener {mqtts} 127.0.0.1\nallow_anonymous true\n\
             cafile {d}/ca.crt\ncertfile {d}/server.crt\nkeyfile {d}/server.key\n\
             listener {mqtts_mtls} 127.0.0.1\nallow_anonymous true\n\
             cafile {d}/ca.crt\ncertfile {d}/server.crt\nkeyfile {d}/server.key\nrequire_certificate true\n"
        )
            .replace(" 127.0.0.1\n", &format!(" 127.0.0.1\n{each}"));
            let conf_path = dir.path().join("mosquitto.conf");
            std::fs::write(&conf_path, conf).unwrap();
            let mut process = Process::spawn(
                &bin,
                &["-c".into(), conf_path.display().to_string()],
                &[
                    tcp, ws_port, wss_port, auth_port, mtls_port, mqtts, mqtts_mtls,
                ],
                None,
            )?;
            for p in [ws_port, auth_port] {
                if !process.wait_ws(p, "/mqtt") {
                    return None;
                }
            }
            Some((
                process,
                [
                    tcp, ws_port, wss_port, auth_port, mtls_port, mqtts, mqtts_mtls,
                ],
            ))
        });
        Some(Mosquitto {
            process,
            tcp_port,
            mqtts_port,
            ws_port,
            wss_port,
            auth_port,
            mtls_port,
            mqtts_mtls_port,
            client_cert: certs.client(),
            ca_pem: certs.ca_pem,
            _dir: dir,
        })
    }

    /// The folder of the test CA and certificates (`ca.crt`, `ca.key`, `server.crt`,
    /// `server.key`, `client.crt`, `client.key`).
    pub fn certs_dir(&self) -> &std::path::Path {
        self._dir.path()
    }

    pub fn ws_url(&self) -> String {
        format!("ws://127.0.0.1:{}/mqtt", self.ws_port)
    }
    /// The plain MQTT listener (`mqtt://`), no WebSocket.
    pub fn mqtt_url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.tcp_port)
    }
    pub fn wss_url(&self) -> String {
        format!("wss://localhost:{}/mqtt", self.wss_port)
    }
    pub fn auth_url(&self) -> String {
        format!("ws://127.0.0.1:{}/mqtt", self.auth_port)
    }
}

//! No password, secret key, session token or signature appears in any log line, at any
//! level, from this crate or its dependencies, on success and on failure.
//! Alone in its binary: it installs the process-wide logger.
#![cfg(feature = "aws-iot")]

mod support;

use std::sync::Mutex;

use mqtt_pubsub::aws::StaticCredentials;
use mqtt_pubsub::{AwsIotProvider, MqttOverWsProvider, PubSub, PublishOptions, QoS};
use support::gateway::Gateway;
use support::{make_certs, Mosquitto, Rumqttd, TempDir};

static LINES: Mutex<Vec<String>> = Mutex::new(Vec::new());

struct Capture;

impl log::Log for Capture {
    fn enabled(&self, _: &log::Metadata) -> bool {
        true
    }
    fn log(&self, record: &log::Record) {
        LINES.lock().unwrap().push(format!(
            "{} {} {}",
            record.level(),
            record.target(),
            record.args()
        ));
    }
    fn flush(&self) {}
}

const PASSWORD: &str = "pw-SECRET-0123";
const SECRET_KEY: &str = "sk-SECRET-4567";
const TOKEN: &str = "tok-SECRET-89ab";

#[test]
fn no_secret_in_any_log_line_at_any_level() {
    log::set_logger(&Capture).unwrap();
    log::set_max_level(log::LevelFilter::Trace);

    // A password, accepted and refused.
    let b = Rumqttd::start_with_auth(Some(("alice", PASSWORD)));
    let ps = PubSub::new();
    ps.add_provider(
        MqttOverWsProvider::builder(b.ws_url())
            .username_password("alice", PASSWORD)
            .build()
            .unwrap(),
    )
    .unwrap();
    let sub = ps.subscribe("log/x").unwrap();
    ps.publish_with(
        "log/x",
        "payload",
        PublishOptions::default().qos(QoS::AtLeastOnce),
    )
    .unwrap();
    sub.recv_timeout(std::time::Duration::from_secs(10))
        .unwrap();
    ps.close().unwrap();
    let refused = PubSub::new().add_provider(
        MqttOverWsProvider::builder(b.ws_url())
            .username_password("alice", format!("{PASSWORD}-wrong"))
            .connect_timeout(std::time::Duration::from_secs(3))
            .build()
            .unwrap(),
    );
    assert!(refused.is_err(), "a wrong password is refused");

    // A signed URL with a session token, accepted and refused.
    if let Some(m) = Mosquitto::start() {
        let dir = TempDir::new("logs");
        let certs = make_certs(dir.path());
        let gateway = Gateway::start(&certs, "us-east-1", m.ws_port);
        gateway.allow("AKIDLOG", SECRET_KEY, Some(TOKEN));
        let aws = |secret: &str| {
            AwsIotProvider::builder(gateway.url())
                .region("us-east-1")
                .ca_pem(certs.ca_pem.clone())
                .credentials(StaticCredentials::new("AKIDLOG", secret).session_token(TOKEN))
                .build()
                .unwrap()
        };
        let ps = PubSub::new();
        ps.add_provider(aws(SECRET_KEY)).unwrap();
        ps.publish_with(
            "log/aws",
            "x",
            PublishOptions::default().qos(QoS::AtLeastOnce),
        )
        .unwrap();
        ps.close().unwrap();
        let err = PubSub::new().add_provider(aws("wrong-secret")).unwrap_err();
        assert!(!err.to_string().contains(TOKEN));
    }

    let lines = LINES.lock().unwrap();
    assert!(
        lines.len() > 10,
        "the logger saw the traffic ({} lines)",
        lines.len()
    );
    for line in lines.iter() {
        for secret in [
            PASSWORD,
            SECRET_KEY,
            TOKEN,
            "X-Amz-Signature",
            "X-Amz-Security-Token",
        ] {
            assert!(
                !line.contains(secret),
                "log line reveals {secret:?}: {line}"
            );
        }
    }
}

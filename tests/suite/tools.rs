//! `mqtt-pub` and `mqtt-sub` beside `mosquitto_pub` and `mosquitto_sub`, against one real
//! mosquitto: the same argument lists give the same output bytes and exit codes.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use mqtt_pubsub::{PubSub, QoS, SubscribeOptions};

use crate::support::Mosquitto;

/// Our tool `name` (`pub` or `sub`), as cargo built it for this test.
pub(crate) fn ours(name: &str) -> PathBuf {
    PathBuf::from(match name {
        "pub" => env!("CARGO_BIN_EXE_mqtt-pub"),
        _ => env!("CARGO_BIN_EXE_mqtt-sub"),
    })
}

/// mosquitto's tool `name`; the suite needs mosquitto's clients wherever it has mosquitto.
fn theirs(name: &str) -> PathBuf {
    let program = PathBuf::from(format!("mosquitto_{name}"));
    let found = Command::new(&program)
        .arg("--help")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    assert!(
        found,
        "mosquitto_{name} is missing: install mosquitto-clients (apt)"
    );
    program
}

/// Runs `program` with `args` (each `{T}` replaced by `topic`), feeding `stdin`.
fn run(program: &PathBuf, args: &[&str], topic: &str, stdin: &[u8]) -> Output {
    let args: Vec<String> = args.iter().map(|a| a.replace("{T}", topic)).collect();
    let mut child = Command::new(program)
        .args(&args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

/// What a subscriber sees on `topic` as retained (payload, QoS, retain flag, length and the
/// MQTT 5 properties), or nothing. Event-based, not a wait that a slow machine could cut
/// short: after the SUBSCRIBE to `topic` a second one to a retained sentinel follows on the
/// same connection, so the sentinel arrives after whatever `topic` holds, and one I/O thread
/// delivers them in that order.
fn retained(m: &Mosquitto, topic: &str, version: &str) -> String {
    const SENTINEL: &str = "side/sentinel";
    let connect = || {
        let ps = PubSub::new();
        let mut b = mqtt_pubsub::MqttOverWsProvider::builder(m.mqtt_url());
        if version == "mqttv5" {
            b = b.mqtt_version(mqtt_pubsub::MqttVersion::V5);
        }
        ps.add_provider(b.build().unwrap()).unwrap();
        ps
    };
    let ps = connect();
    let keep = mqtt_pubsub::PublishOptions::default()
        .retain(true)
        .qos(QoS::AtLeastOnce);
    ps.publish_with(SENTINEL, "end", keep).unwrap();
    let q2 = SubscribeOptions::default().qos(QoS::ExactlyOnce);
    let held = ps.subscribe_with(topic, q2.clone()).unwrap();
    let end = ps.subscribe_with(SENTINEL, q2).unwrap();
    end.recv_timeout(std::time::Duration::from_secs(20))
        .expect("the sentinel");
    let Ok(msg) = held.try_recv() else {
        return String::new();
    };
    assert!(held.try_recv().is_err(), "one retained message per topic");
    format!(
        "{}|{}|{}|{}|{:?}|{:?}|{:?}|{:?}|{:?}",
        String::from_utf8_lossy(msg.payload()),
        msg.qos() as u8,
        msg.retain(),
        msg.payload().len(),
        msg.content_type(),
        msg.user_properties().collect::<Vec<_>>(),
        msg.response_topic(),
        msg.correlation_data(),
        msg.payload_format_utf8()
    )
}

/// mosquitto_pub and mqtt-pub with the same arguments: the same exit code, and the same
/// retained message left on the broker (its payload, QoS, properties), or both none.
#[test]
fn mqtt_pub_matches_mosquitto_pub_mosquitto() {
    let Some(m) = Mosquitto::start() else { return };
    let dir = crate::support::TempDir::new("tools-pub");
    let file = dir.path().join("payload.bin");
    std::fs::write(&file, b"from a file\x00\xff").unwrap();
    let ca = dir.path().join("ca.crt");
    std::fs::write(&ca, &m.ca_pem).unwrap();
    let certs = m.certs_dir();
    let port = m.tcp_port.to_string();
    let mqtts = m.mqtts_port.to_string();
    let mtls = m.mqtts_mtls_port.to_string();
    let url = format!("mqtt://localhost:{port}/{{T}}");
    let file = file.display().to_string();
    let (ca, cert, key) = (
        ca.display().to_string(),
        certs.join("client.crt").display().to_string(),
        certs.join("client.key").display().to_string(),
    );
    #[rustfmt::skip]
    let cases: Vec<(&str, Vec<&str>, &[u8], &str)> = vec![
        ("basic", vec!["-p", &port, "-t", "{T}", "-m", "hello", "-r"], b"", "mqttv311"),
        ("qos1", vec!["-p", &port, "-t", "{T}", "-m", "one", "-r", "-q", "1"], b"", "mqttv311"),
        ("qos2", vec!["-p", &port, "-t", "{T}", "-m", "two", "-r", "-q", "2"], b"", "mqttv311"),
        ("file", vec!["-p", &port, "-t", "{T}", "-f", &file, "-r"], b"", "mqttv311"),
        ("stdin", vec!["-p", &port, "-t", "{T}", "-s", "-r"], b"all of\nstdin", "mqttv311"),
        ("null", vec!["-p", &port, "-t", "{T}", "-n", "-r"], b"", "mqttv311"),
        ("url", vec!["-L", &url, "-m", "by url", "-r"], b"", "mqttv311"),
        ("user only", vec!["-p", &port, "-u", "someone", "-t", "{T}", "-m", "u", "-r"], b"", "mqttv311"),
        ("v5 properties", vec![
            "-p", &port, "-V", "mqttv5", "-t", "{T}", "-m", "{}", "-r", "-q", "1",
            "-D", "publish", "content-type", "application/json",
            "-D", "publish", "user-property", "site", "north",
            "-D", "publish", "response-topic", "replies/x",
            "-D", "publish", "correlation-data", "c0rr",
            "-D", "publish", "payload-format-indicator", "1",
        ], b"", "mqttv5"),
        ("tls cafile", vec!["-h", "localhost", "-p", &mqtts, "--cafile", &ca, "-t", "{T}", "-m", "tls", "-r"], b"", "mqttv311"),
        ("tls client certificate", vec![
            "-h", "localhost", "-p", &mtls, "--cafile", &ca, "--cert", &cert, "--key", &key,
            "-t", "{T}", "-m", "mtls", "-r",
        ], b"", "mqttv311"),
        ("refused", vec!["-p", "1", "-t", "{T}", "-m", "x"], b"", "mqttv311"),
        ("wrong flag", vec!["-p", &port, "-t", "{T}", "-m", "x", "--bogus"], b"", "mqttv311"),
        ("no message", vec!["-p", &port, "-t", "{T}"], b"", "mqttv311"),
        ("two messages", vec!["-p", &port, "-t", "{T}", "-m", "x", "-n"], b"", "mqttv311"),
        ("bad qos", vec!["-p", &port, "-t", "{T}", "-m", "x", "-q", "3"], b"", "mqttv311"),
        ("unknown property", vec!["-p", &port, "-t", "{T}", "-m", "x", "-D", "publish", "bogus", "x"], b"", "mqttv311"),
        ("property without its value", vec!["-p", &port, "-t", "{T}", "-m", "x", "-D", "publish", "user-property", "k"], b"", "mqttv311"),
        ("empty stdin", vec!["-p", &port, "-t", "{T}", "-s", "-r"], b"", "mqttv311"),
        ("session expiry on 3.1.1", vec!["-p", &port, "-x", "60", "-t", "{T}", "-m", "x", "-r"], b"", "mqttv311"),
        ("properties on 3.1.1", vec![
            "-p", &port, "-t", "{T}", "-m", "x", "-r", "-D", "publish", "content-type", "text/plain",
        ], b"", "mqttv311"),
        ("session expiry without an id", vec![
            "-p", &port, "-V", "mqttv5", "-x", "60", "-t", "{T}", "-m", "x", "-r",
        ], b"", "mqttv5"),
        ("port after the URL", vec!["-L", "mqtt://localhost:1/{T}", "-p", &port, "-m", "late", "-r"], b"", "mqttv311"),
    ];
    for (name, args, stdin, version) in cases {
        let topic = |who: &str| format!("side/pub/{}/{who}", name.replace(' ', "-"));
        let theirs_out = run(&theirs("pub"), &args, &topic("theirs"), stdin);
        let ours_out = run(&ours("pub"), &args, &topic("ours"), stdin);
        assert_eq!(
            ours_out.status.code(),
            theirs_out.status.code(),
            "{name}: exit code; ours {ours_out:?} theirs {theirs_out:?}"
        );
        let kept = retained(&m, &topic("theirs"), version);
        assert_eq!(
            retained(&m, &topic("ours"), version),
            kept,
            "{name}: what the broker kept"
        );
        // The comparison is not of two nothings: a retained publish that succeeded left a
        // message (but `-n`, which clears).
        if theirs_out.status.success() && args.contains(&"-r") && !args.contains(&"-n") {
            assert!(!kept.is_empty(), "{name}: nothing was retained");
        }
        // (mosquitto_pub prints its usage on stdout after an error; ours on stderr.)
        if theirs_out.status.success() {
            assert_eq!(ours_out.stdout, theirs_out.stdout, "{name}: stdout");
        }
    }
}

/// `-l`: one message per line of stdin (a blank one too), at each QoS, as a subscriber
/// of the library sees them.
#[test]
fn mqtt_pub_lines_match_mosquitto_pub_mosquitto() {
    let Some(m) = Mosquitto::start() else { return };
    let ps = PubSub::new();
    ps.add_provider(
        mqtt_pubsub::MqttOverWsProvider::builder(m.mqtt_url())
            .build()
            .unwrap(),
    )
    .unwrap();
    let port = m.tcp_port.to_string();
    for qos in ["0", "1", "2"] {
        let seen = |who: &str| {
            let topic = format!("side/lines/{qos}/{who}");
            let sub = ps
                .subscribe_with(
                    topic.as_str(),
                    SubscribeOptions::default().qos(QoS::ExactlyOnce),
                )
                .unwrap();
            let program = if who == "ours" {
                ours("pub")
            } else {
                theirs("pub")
            };
            let args = ["-p", &port, "-t", "{T}", "-l", "-q", qos];
            let out = run(&program, &args, &topic, b"first\n\nsecond\r\nthird");
            assert!(out.status.success(), "{who} -q {qos}: {out:?}");
            // Ended by a marker this process publishes on the topic once the tool has
            // exited, not by a quiet spell a slow machine could stretch.
            ps.publish_with(
                topic.as_str(),
                "END-MARKER",
                mqtt_pubsub::PublishOptions::default().qos(QoS::AtLeastOnce),
            )
            .unwrap();
            let mut got = Vec::new();
            loop {
                let msg = sub
                    .recv_timeout(std::time::Duration::from_secs(20))
                    .expect("the end marker");
                if msg.payload() == b"END-MARKER" {
                    break got;
                }
                got.push(msg.payload().to_vec());
            }
        };
        let theirs_seen = seen("theirs");
        assert_eq!(
            theirs_seen.len(),
            4,
            "mosquitto_pub -l -q {qos}: {theirs_seen:?}"
        );
        assert_eq!(seen("ours"), theirs_seen, "-q {qos}");
    }
    drop(ps);
}

/// mosquitto_sub and mqtt-sub with the same arguments over the same retained messages: the
/// same stdout bytes and exit code. (At most QoS 1 where several messages are printed:
/// libmosquitto hands a QoS 2 message on at PUBREL, after a QoS 1 one sent later; both orders
/// are MQTT's.)
#[test]
fn mqtt_sub_matches_mosquitto_sub_mosquitto() {
    let Some(m) = Mosquitto::start() else { return };
    let ps = PubSub::new();
    ps.add_provider(
        mqtt_pubsub::MqttOverWsProvider::builder(m.mqtt_url())
            .mqtt_version(mqtt_pubsub::MqttVersion::V5)
            .build()
            .unwrap(),
    )
    .unwrap();
    let retain = mqtt_pubsub::PublishOptions::default()
        .retain(true)
        .qos(QoS::AtLeastOnce);
    ps.publish_with("side/sub/a", "one", retain.clone())
        .unwrap();
    ps.publish_with(
        "side/sub/b",
        "two\ttabbed",
        retain.clone().qos(QoS::ExactlyOnce),
    )
    .unwrap();
    ps.publish_with(
        "side/sub/c",
        "{}",
        retain
            .clone()
            .content_type("application/json")
            .user_property("k", "v")
            .response_topic("r/t"),
    )
    .unwrap();
    let port = m.tcp_port.to_string();
    let p = port.as_str();
    #[rustfmt::skip]
    let cases: Vec<(&str, Vec<&str>)> = vec![
        ("basic", vec!["-p", p, "-t", "side/sub/#", "-C", "3"]),
        ("verbose", vec!["-p", p, "-t", "side/sub/#", "-C", "3", "-v"]),
        ("no newline", vec!["-p", p, "-t", "side/sub/#", "-C", "3", "-v", "-N"]),
        ("format", vec!["-p", p, "-t", "side/sub/#", "-C", "3", "-q", "1", "-F", "%t|%p|%q|%r|%l|%x|%X\\t%%"]),
        ("v5 format", vec!["-p", p, "-V", "mqttv5", "-t", "side/sub/c", "-C", "1", "-F", "%C|%P|%R"]),
        ("filter out", vec!["-p", p, "-t", "side/sub/#", "-T", "side/sub/b", "-C", "2", "-v"]),
        ("two topics", vec!["-p", p, "-t", "side/sub/a", "-t", "side/sub/c", "-C", "2", "-v"]),
        ("no retained, timeout", vec!["-p", p, "-t", "side/sub/#", "-R", "-W", "1"]),
        ("timeout", vec!["-p", p, "-t", "side/none", "-W", "1"]),
        ("exit when subscribed", vec!["-p", p, "-t", "side/none", "-E"]),
        ("bad format", vec!["-p", p, "-t", "side/sub/#", "-F", "%e"]),
        ("wrong flag", vec!["-p", p, "-t", "side/sub/#", "--bogus"]),
        ("no topic", vec!["-p", p]),
        ("refused", vec!["-p", "1", "-t", "x"]),
        ("stale, not cleared", vec!["-p", p, "-t", "side/sub/#", "-R", "--remove-retained", "-W", "1"]),
    ];
    for (name, args) in cases {
        // -R is checked before --remove-retained: nothing was cleared.
        assert!(
            !retained(&m, "side/sub/a", "mqttv311").is_empty(),
            "{name}: the retained message is gone"
        );
        let theirs_out = run(&theirs("sub"), &args, "", b"");
        let ours_out = run(&ours("sub"), &args, "", b"");
        assert_eq!(
            ours_out.status.code(),
            theirs_out.status.code(),
            "{name}: exit code; ours {ours_out:?} theirs {theirs_out:?}"
        );
        if theirs_out.status.code() != Some(1) {
            assert_eq!(
                String::from_utf8_lossy(&ours_out.stdout),
                String::from_utf8_lossy(&theirs_out.stdout),
                "{name}: stdout"
            );
        }
    }
}

/// A password in a `-L` URL is never printed, whatever is wrong with the URL. Before: "Error:
/// -L mqtt://user:s3cr3tpw@…: invalid port number", and the bad percent-encoding quoted.
#[test]
fn a_password_in_a_bad_url_is_never_printed() {
    for url in [
        "mqtt://user:s3cr3tpw@127.0.0.1:99999/t",
        "mqtt://user:s3cr3tpw@[::1/t",
        "mqtt://user:s3cr3tpw%zz@127.0.0.1:1/t",
        "mqtt://user:s3cr3tpw@127.0.0.1:1/t",
    ] {
        for tool in ["pub", "sub"] {
            let extra = if tool == "pub" {
                ["-m", "x"]
            } else {
                ["-W", "1"]
            };
            let out = Command::new(ours(tool))
                .args(["-L", url])
                .args(extra)
                .output()
                .unwrap();
            let all = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            assert_eq!(out.status.code(), Some(1), "{tool} {url}: {all}");
            assert!(!all.contains("s3cr3tpw"), "{tool} {url}: {all}");
        }
    }
}

//! The durable outbox from the user's side: a publishing process SIGKILLed at random points
//! (also while the broker is unreachable) loses nothing it reported accepted; QoS 2 stays
//! exactly-once across a kill between PUBREC and PUBCOMP; one process per outbox.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use mqtt_pubsub::{
    Error, MqttOverWsProvider, OutboxSync, PubSub, PublishOptions, QoS, ReconnectPolicy,
    SubscribeOptions,
};

use crate::support::proxy::Proxy;
use crate::support::{child_env, run_child, Mosquitto, Nats, TempDir};

const TOPIC: &str = "outbox/stream";

/// A number in `lo..hi` that differs between runs.
fn random(lo: usize, hi: usize) -> usize {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(Instant::now().elapsed().as_nanos());
    lo + (h.finish() as usize) % (hi - lo)
}

/// This test binary again, on `child_outbox_publisher`, with its stdout piped.
fn spawn_publisher(env: &[(&str, String)]) -> Child {
    crate::support::spawn_child("outbox::child_outbox_publisher", env)
}

/// Publishes `COUNT` numbers from `START` on [`TOPIC`] at `QOS` with an outbox in
/// `OUTBOX_DIR`, printing each number once its `publish` call has returned; then flushes
/// (every acknowledgement in) and closes. With `COUNT=0` it only resends what the outbox
/// kept.
#[test]
#[ignore = "run by the outbox tests in a process of their own"]
fn child_outbox_publisher() {
    let qos = if child_env("QOS") == "2" {
        QoS::ExactlyOnce
    } else {
        QoS::AtLeastOnce
    };
    // `SYNC=every`: the relaxed mode, which must lose nothing to a process kill either.
    let sync = match std::env::var("SYNC").as_deref() {
        Ok("every") => OutboxSync::Every(Duration::from_millis(100)),
        _ => OutboxSync::Always,
    };
    let ps = PubSub::new();
    ps.add_provider(
        MqttOverWsProvider::builder(child_env("BROKER_URL"))
            .mqtt_version(version(mqtt5_child()))
            .client_id(child_env("CLIENT_ID"))
            .clean_session(child_env("CLEAN") == "1")
            .outbox(child_env("OUTBOX_DIR"))
            .outbox_sync(sync)
            .reconnect(ReconnectPolicy::exponential(
                Duration::from_millis(50),
                Duration::from_millis(200),
            ))
            .build()
            .unwrap(),
    )
    .unwrap();
    let start: u64 = child_env("START").parse().unwrap();
    let count: u64 = child_env("COUNT").parse().unwrap();
    let mut out = std::io::stdout().lock();
    for i in start..start + count {
        ps.publish_with(TOPIC, i.to_string(), {
            let opts = PublishOptions::default()
                .qos(qos)
                .timeout(Duration::from_secs(60));
            if mqtt5_child() {
                opts.user_property("n", i.to_string())
            } else {
                opts
            }
        })
        .unwrap_or_else(|e| panic!("publish {i}: {e}"));
        writeln!(out, "{i}").unwrap();
        out.flush().unwrap();
    }
    ps.flush(Duration::from_secs(60)).unwrap();
    writeln!(out, "flushed").unwrap();
    ps.close().unwrap();
}

/// `MQTT5=1`: the child speaks MQTT 5 and gives each message a user property.
fn mqtt5_child() -> bool {
    std::env::var("MQTT5").as_deref() == Ok("1")
}

/// Counts a delivered number; with MQTT 5, every copy (resent by a later process or not)
/// must carry the user property its publisher gave it.
fn tally(got: &mut BTreeMap<usize, usize>, m: &mqtt_pubsub::Message, v5: bool) {
    let text = m.text().unwrap();
    if v5 {
        assert_eq!(
            m.user_properties().collect::<Vec<_>>(),
            [("n", text)],
            "{text}"
        );
    }
    *got.entry(text.parse().unwrap()).or_default() += 1;
}

fn version(v5: bool) -> mqtt_pubsub::MqttVersion {
    if v5 {
        mqtt_pubsub::MqttVersion::V5
    } else {
        mqtt_pubsub::MqttVersion::V3_1_1
    }
}

/// Runs kill rounds against the broker at `tcp_port` (the child goes through a TCP proxy,
/// which plays "broker unreachable"), then a last child with no new messages; the
/// subscriber (`sub_url`, persistent session) must receive every number a child printed.
/// Returns `(printed, duplicates)`.
fn kill_rounds(tcp_port: u16, sub_url: String, qos: QoS, clean: bool) -> (usize, usize) {
    kill_rounds_with(tcp_port, sub_url, qos, clean, "always", false)
}

fn kill_rounds_with(
    tcp_port: u16,
    sub_url: String,
    qos: QoS,
    clean: bool,
    sync: &str,
    v5: bool,
) -> (usize, usize) {
    let proxy = Proxy::start(tcp_port);
    let dir = TempDir::new("outbox-kills");
    let tag = format!("{}-{}", std::process::id(), random(0, 1 << 30));
    let sub_ps = PubSub::new();
    sub_ps
        .add_provider(
            MqttOverWsProvider::builder(sub_url)
                .client_id(format!("outbox-sub-{tag}"))
                .clean_session(false)
                .mqtt_version(version(v5))
                .build()
                .unwrap(),
        )
        .unwrap();
    let sub = sub_ps
        .subscribe_with(
            TOPIC,
            SubscribeOptions::default().qos(qos).capacity(100_000),
        )
        .unwrap();
    let env = |start: usize, count: usize| {
        vec![
            ("BROKER_URL", format!("mqtt://127.0.0.1:{}", proxy.port)),
            ("CLIENT_ID", format!("outbox-pub-{tag}")),
            ("OUTBOX_DIR", dir.path().display().to_string()),
            ("QOS", (qos as u8).to_string()),
            ("CLEAN", if clean { "1" } else { "0" }.to_string()),
            ("START", start.to_string()),
            ("COUNT", count.to_string()),
            ("SYNC", sync.to_string()),
            ("MQTT5", if v5 { "1" } else { "0" }.to_string()),
        ]
    };
    let mut printed = Vec::new();
    for round in 0..4 {
        let mut child = spawn_publisher(&env(round * 1000, 1000));
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let kill_after = random(30, 400);
        // Round 2: the broker becomes unreachable half-way (publishes go on, into the
        // outbox), and the child is killed while it still is.
        let cut_at = (round == 2).then_some(kill_after / 2);
        let mut seen = 0;
        for line in lines {
            let line = line.unwrap();
            let Ok(n) = line.trim().parse::<usize>() else {
                continue;
            };
            printed.push(n);
            seen += 1;
            if Some(seen) == cut_at {
                proxy.refuse(true);
                proxy.cut_all();
            }
            if seen == kill_after {
                child.kill().unwrap();
                break;
            }
        }
        let status = child.wait().unwrap();
        assert!(
            !status.success(),
            "round {round}: the child finished before it was killed ({seen} printed)"
        );
        proxy.refuse(false);
    }
    // The last process brings no new messages: it only resends what the outbox kept.
    let mut last = spawn_publisher(&env(0, 0));
    let mut stdout = String::new();
    last.stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    let status = last.wait().unwrap();
    let mut stderr = String::new();
    last.stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(
        status.success() && stdout.contains("flushed"),
        "{stdout}\n{stderr}"
    );
    let mut got: BTreeMap<usize, usize> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while printed.iter().any(|n| !got.contains_key(n)) && Instant::now() < deadline {
        if let Ok(m) = sub.recv_timeout(Duration::from_millis(500)) {
            tally(&mut got, &m, v5);
        }
    }
    // Whatever else is delivered (duplicates) arrives within a moment.
    while let Ok(m) = sub.recv_timeout(Duration::from_millis(500)) {
        tally(&mut got, &m, v5);
    }
    let lost: Vec<&usize> = printed.iter().filter(|n| !got.contains_key(n)).collect();
    let duplicates: usize = got.values().map(|c| c - 1).sum();
    eprintln!(
        "{} printed over 4 killed processes, {} lost, {duplicates} duplicates, {} delivered that \
         were accepted but not yet printed",
        printed.len(),
        lost.len(),
        got.len() - printed.len().min(got.len())
    );
    assert!(
        lost.is_empty(),
        "lost {} of {}: {lost:?}",
        lost.len(),
        printed.len()
    );
    (printed.len(), duplicates)
}

#[test]
fn a_killed_publisher_loses_nothing_it_reported_accepted_mosquitto() {
    let Some(m) = Mosquitto::start_with("max_inflight_messages 0") else {
        return;
    };
    kill_rounds(m.tcp_port, m.mqtt_url(), QoS::AtLeastOnce, true);
}

#[test]
fn a_killed_publisher_loses_nothing_it_reported_accepted_nats() {
    let Some(n) = Nats::start() else { return };
    kill_rounds(n.mqtt_port, n.mqtt_url(), QoS::AtLeastOnce, true);
}

/// The relaxed mode (`OutboxSync::Every`) writes before the call returns and fsyncs later:
/// a process kill (not a power loss) must still lose nothing.
#[test]
fn a_killed_publisher_with_relaxed_sync_loses_nothing_mosquitto() {
    let Some(m) = Mosquitto::start_with("max_inflight_messages 0") else {
        return;
    };
    kill_rounds_with(
        m.tcp_port,
        m.mqtt_url(),
        QoS::AtLeastOnce,
        true,
        "every",
        false,
    );
}

/// MQTT 5 through killed publishers: nothing lost, and what the outbox resends keeps the
/// properties it was published with.
#[test]
fn a_killed_mqtt5_publisher_loses_nothing_and_its_properties_stay_mosquitto() {
    let Some(m) = Mosquitto::start_with("max_inflight_messages 0") else {
        return;
    };
    kill_rounds_with(
        m.tcp_port,
        m.mqtt_url(),
        QoS::AtLeastOnce,
        true,
        "always",
        true,
    );
}

/// QoS 2 end to end on a real broker: with the outbox and a persistent session, killed
/// processes neither lose nor duplicate.
#[test]
fn qos2_through_killed_publishers_arrives_exactly_once_mosquitto() {
    let Some(m) = Mosquitto::start_with("max_inflight_messages 0") else {
        return;
    };
    let (_, duplicates) = kill_rounds(m.tcp_port, m.mqtt_url(), QoS::ExactlyOnce, false);
    assert_eq!(duplicates, 0);
}

/// One MQTT packet from a raw stream: (first byte, body).
fn read_packet(s: &mut TcpStream) -> Option<(u8, Vec<u8>)> {
    let mut first = [0u8; 1];
    s.read_exact(&mut first).ok()?;
    let (mut len, mut shift) = (0usize, 0);
    loop {
        let mut b = [0u8; 1];
        s.read_exact(&mut b).ok()?;
        len |= ((b[0] & 0x7f) as usize) << shift;
        shift += 7;
        if b[0] & 0x80 == 0 {
            break;
        }
    }
    let mut body = vec![0; len];
    s.read_exact(&mut body).ok()?;
    Some((first[0], body))
}

/// The kill point a real broker cannot be made to hold: a scripted server takes the QoS 2
/// PUBLISH, answers PUBREC, receives PUBREL and never sends PUBCOMP; the publisher is
/// SIGKILLed then. The next process on the same outbox must send PUBREL for the same packet
/// identifier, and never the PUBLISH again.
#[test]
fn qos2_killed_between_pubrec_and_pubcomp_resumes_with_pubrel() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = crossbeam_channel::unbounded::<String>();
    std::thread::spawn(move || {
        for (n, conn) in listener.incoming().enumerate() {
            let mut s = conn.unwrap();
            let tx = tx.clone();
            std::thread::spawn(move || {
                let Some((0x10, _)) = read_packet(&mut s) else {
                    return;
                };
                // Session present: the broker kept our QoS 2 state.
                s.write_all(&[0x20, 2, 1, 0]).unwrap();
                while let Some((head, body)) = read_packet(&mut s) {
                    match head >> 4 {
                        3 => {
                            let tlen = u16::from_be_bytes([body[0], body[1]]) as usize;
                            let pid = [body[2 + tlen], body[3 + tlen]];
                            let _ = tx.send(format!(
                                "conn {n}: PUBLISH {} dup={}",
                                u16::from_be_bytes(pid),
                                head & 0x08 != 0
                            ));
                            s.write_all(&[0x50, 2, pid[0], pid[1]]).unwrap();
                        }
                        6 => {
                            let pid = u16::from_be_bytes([body[0], body[1]]);
                            let _ = tx.send(format!("conn {n}: PUBREL {pid}"));
                            if n > 0 {
                                s.write_all(&[0x70, 2, body[0], body[1]]).unwrap();
                            }
                        }
                        12 => s.write_all(&[0xd0, 0]).unwrap(),
                        14 => return,
                        other => {
                            let _ = tx.send(format!("conn {n}: packet type {other}"));
                        }
                    }
                }
            });
        }
    });
    let dir = TempDir::new("outbox-qos2");
    let env = |count: usize| {
        vec![
            ("BROKER_URL", format!("mqtt://127.0.0.1:{port}")),
            ("CLIENT_ID", "qos2-kill".to_string()),
            ("OUTBOX_DIR", dir.path().display().to_string()),
            ("QOS", "2".to_string()),
            ("CLEAN", "0".to_string()),
            ("START", "0".to_string()),
            ("COUNT", count.to_string()),
        ]
    };
    let mut first = spawn_publisher(&env(1));
    let wait = |what: &str| {
        rx.recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|_| panic!("no {what}"))
    };
    let publish = wait("PUBLISH");
    assert!(publish.starts_with("conn 0: PUBLISH "), "{publish}");
    let pid = publish.split(' ').nth(3).unwrap().parse::<u16>().unwrap();
    assert_eq!(wait("PUBREL"), format!("conn 0: PUBREL {pid}"));
    first.kill().unwrap();
    first.wait().unwrap();
    let second = spawn_publisher(&env(0));
    let out = second.wait_with_output().unwrap();
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("flushed"),
        "{out:?}"
    );
    let rest: Vec<String> = rx.try_iter().collect();
    assert_eq!(rest, vec![format!("conn 1: PUBREL {pid}")]);
}

#[test]
fn a_second_process_on_one_outbox_gets_a_lock_error() {
    let Some(m) = Mosquitto::start() else { return };
    let dir = TempDir::new("outbox-lock");
    let ps = PubSub::new();
    ps.add_provider(
        MqttOverWsProvider::builder(m.mqtt_url())
            .client_id("outbox-lock")
            .outbox(dir.path())
            .build()
            .unwrap(),
    )
    .unwrap();
    run_child(
        "outbox::child_opens_a_locked_outbox",
        &[
            ("BROKER_URL", m.mqtt_url()),
            ("OUTBOX_DIR", dir.path().display().to_string()),
        ],
    );
    // Once the first provider is gone, the outbox opens again.
    ps.close().unwrap();
    PubSub::new()
        .add_provider(
            MqttOverWsProvider::builder(m.mqtt_url())
                .client_id("outbox-lock")
                .outbox(dir.path())
                .build()
                .unwrap(),
        )
        .unwrap();
}

#[test]
#[ignore = "run by a_second_process_on_one_outbox_gets_a_lock_error"]
fn child_opens_a_locked_outbox() {
    let dir = child_env("OUTBOX_DIR");
    let err = PubSub::new()
        .add_provider(
            MqttOverWsProvider::builder(child_env("BROKER_URL"))
                .client_id("outbox-lock")
                .outbox(&dir)
                .build()
                .unwrap(),
        )
        .unwrap_err();
    assert!(
        matches!(&err, Error::Outbox { path, message } if path == &dir && message.contains("in use")),
        "{err:?}"
    );
}

#[test]
fn outbox_misuse_is_a_clear_error() {
    let dir = TempDir::new("outbox-misuse");
    let e = MqttOverWsProvider::builder("mqtt://127.0.0.1:1")
        .outbox(dir.path())
        .build()
        .unwrap_err();
    assert!(e.to_string().contains("fixed client_id"), "{e}");
    // A corrupt outbox: an error naming the path, never a panic.
    std::fs::create_dir_all(dir.path()).unwrap();
    std::fs::write(dir.path().join("outbox.log"), b"garbage, not an outbox").unwrap();
    let e = PubSub::new()
        .add_provider(
            MqttOverWsProvider::builder("mqtt://127.0.0.1:1")
                .client_id("c")
                .outbox(dir.path())
                .build()
                .unwrap(),
        )
        .unwrap_err();
    assert!(
        matches!(&e, Error::Outbox { message, .. } if message.contains("corrupt")),
        "{e:?}"
    );
}

/// Full is refused, never dropped: with the broker unreachable, publishes fill the outbox
/// and the next one gets `OutboxFull`; every accepted one still arrives later.
#[test]
fn a_full_outbox_refuses_and_keeps_what_it_accepted() {
    let Some(m) = Mosquitto::start() else { return };
    let proxy = Proxy::start(m.tcp_port);
    let dir = TempDir::new("outbox-full");
    let sub_ps = PubSub::new();
    sub_ps
        .add_provider(MqttOverWsProvider::builder(m.mqtt_url()).build().unwrap())
        .unwrap();
    let sub = sub_ps
        .subscribe_with(
            "outbox/full",
            SubscribeOptions::default().qos(QoS::AtLeastOnce),
        )
        .unwrap();
    let ps = PubSub::new();
    ps.add_provider(
        MqttOverWsProvider::builder(format!("mqtt://127.0.0.1:{}", proxy.port))
            .client_id("outbox-full")
            .outbox(dir.path())
            .outbox_max_bytes(10 * 1024)
            .reconnect(ReconnectPolicy::exponential(
                Duration::from_millis(50),
                Duration::from_millis(200),
            ))
            .build()
            .unwrap(),
    )
    .unwrap();
    proxy.refuse(true);
    proxy.cut_all();
    let opts = PublishOptions::default().qos(QoS::AtLeastOnce);
    let mut accepted = 0;
    let err = loop {
        match ps.publish_with("outbox/full", vec![b'x'; 1000], opts.clone()) {
            Ok(()) => accepted += 1,
            Err(e) => break e,
        }
        assert!(accepted < 100, "the bound never applied");
    };
    assert!(
        matches!(
            err,
            Error::OutboxFull {
                max_bytes: 10240,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(accepted, 9, "1064 bytes each against 10240");
    proxy.refuse(false);
    ps.flush(Duration::from_secs(30)).unwrap();
    for _ in 0..accepted {
        sub.recv_timeout(Duration::from_secs(10)).unwrap();
    }
}

/// The `pub` example's `--outbox`: delivers, leaves an outbox behind, and refuses to run
/// without a client id.
#[test]
fn pub_example_takes_an_outbox() {
    let Some(m) = Mosquitto::start() else { return };
    let dir = TempDir::new("outbox-pub");
    let ps = PubSub::new();
    ps.add_provider(MqttOverWsProvider::builder(m.mqtt_url()).build().unwrap())
        .unwrap();
    let sub = ps
        .subscribe_with(
            "cli/outbox",
            SubscribeOptions::default().qos(QoS::AtLeastOnce),
        )
        .unwrap();
    let out = Command::new(crate::tools::ours("pub"))
        .args(["--url", &m.mqtt_url(), "-i", "pub-outbox", "--outbox"])
        .arg(dir.path())
        .args(["-t", "cli/outbox", "-m", "kept", "-q", "1", "--count", "3"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    for _ in 0..3 {
        assert_eq!(
            sub.recv_timeout(Duration::from_secs(10)).unwrap().payload(),
            b"kept"
        );
    }
    assert!(dir.path().join("outbox.log").exists());
    let out = Command::new(crate::tools::ours("pub"))
        .args(["--url", &m.mqtt_url(), "--outbox"])
        .arg(dir.path())
        .args(["-t", "cli/outbox", "-m", "x"])
        .output()
        .unwrap();
    // mosquitto_pub's exit code for bad arguments.
    assert_eq!(out.status.code(), Some(1), "{out:?}");
}

/// MQTT 5 properties are kept by the outbox: a publish accepted while the broker is
/// unreachable (a proxy that cut the connection and refuses new ones) is sent by the next
/// `PubSub` on the same outbox with its properties.
#[test]
fn the_outbox_keeps_mqtt5_properties_for_the_next_run() {
    let Some(m) = Mosquitto::start() else { return };
    let proxy = crate::support::proxy::Proxy::start(m.tcp_port);
    let dir = TempDir::new("outbox-v5");
    let ps = PubSub::new();
    ps.add_provider(
        MqttOverWsProvider::builder(m.mqtt_url())
            .mqtt_version(mqtt_pubsub::MqttVersion::V5)
            .build()
            .unwrap(),
    )
    .unwrap();
    let sub = ps
        .subscribe_with(
            "cli/outbox5",
            SubscribeOptions::default().qos(QoS::AtLeastOnce),
        )
        .unwrap();
    let publisher = || {
        let p = PubSub::new();
        p.add_provider(
            MqttOverWsProvider::builder(format!("mqtt://127.0.0.1:{}", proxy.port))
                .mqtt_version(mqtt_pubsub::MqttVersion::V5)
                .client_id("outbox-v5")
                .outbox(dir.path())
                .close_timeout(Duration::from_millis(300))
                .build()
                .unwrap(),
        )
        .unwrap();
        p
    };
    let first = publisher();
    proxy.refuse(true);
    proxy.cut_all();
    let opts = PublishOptions::default()
        .qos(QoS::AtLeastOnce)
        .user_property("k", "v")
        .content_type("text/plain");
    // Returns once on disk.
    first.publish_with("cli/outbox5", "kept", opts).unwrap();
    // Kept on disk, unacknowledged (close does not fail for what the outbox keeps).
    let _ = first.close();
    assert!(
        sub.recv_timeout(Duration::from_millis(300)).is_err(),
        "nothing got through the cut proxy"
    );
    proxy.refuse(false);
    let second = publisher();
    second.flush(Duration::from_secs(10)).unwrap();
    let msg = sub.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(msg.payload(), b"kept");
    assert_eq!(msg.user_properties().collect::<Vec<_>>(), [("k", "v")]);
    assert_eq!(msg.content_type(), Some("text/plain"));
}

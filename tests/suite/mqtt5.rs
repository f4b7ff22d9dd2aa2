//! MQTT 5 end to end: against mosquitto 2 (ws and tcp) and rumqttd's v5 listener, and a
//! scripted v5 server for what no broker does on demand (receive maximum 2, topic aliases
//! towards the client, a DISCONNECT naming another server).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::support::v5_server::{self, Peer};
use crate::support::{Mosquitto, Rumqttd};
use mqtt_pubsub::{
    ConnackCode, Error, Message, MqttOverWsProvider, MqttVersion, PubSub, PublishOptions, QoS,
    ReasonCode, ReconnectPolicy, RetainHandling, SubscribeOptions, Subscription,
};

const WAIT: Duration = Duration::from_secs(10);

fn v5(url: &str) -> PubSub {
    let ps = PubSub::new();
    ps.add_provider(
        MqttOverWsProvider::builder(url)
            .mqtt_version(MqttVersion::V5)
            .build()
            .unwrap(),
    )
    .unwrap();
    ps
}

fn recv(sub: &Subscription) -> Message {
    sub.recv_timeout(WAIT)
        .expect("a message within the timeout")
}

fn properties_survive_the_round_trip(url: &str) {
    let ps = v5(url);
    let sub = ps
        .subscribe_with(
            "v5/props",
            SubscribeOptions::default().qos(QoS::AtLeastOnce),
        )
        .unwrap();
    let opts = PublishOptions::default()
        .qos(QoS::AtLeastOnce)
        .user_property("k", "1")
        .user_property("other", "x")
        .user_property("k", "2")
        .content_type("application/json")
        .payload_format_utf8(true)
        .response_topic("v5/replies")
        .correlation_data(vec![0, 1, 2, 255])
        .message_expiry(Duration::from_secs(600));
    ps.publish_with("v5/props", r#"{"a":1}"#, opts).unwrap();
    let m = recv(&sub);
    assert_eq!(m.payload(), br#"{"a":1}"#);
    assert_eq!(
        m.user_properties().collect::<Vec<_>>(),
        [("k", "1"), ("other", "x"), ("k", "2")],
        "user properties in order"
    );
    assert_eq!(m.content_type(), Some("application/json"));
    assert_eq!(m.payload_format_utf8(), Some(true));
    assert_eq!(m.response_topic(), Some("v5/replies"));
    assert_eq!(m.correlation_data(), Some(&[0u8, 1, 2, 255][..]));
    let left = m.message_expiry().expect("expiry");
    assert!(
        left <= Duration::from_secs(600) && left >= Duration::from_secs(590),
        "{left:?}"
    );
    // Without properties, a v5 message has none.
    ps.publish_with(
        "v5/props",
        "plain",
        PublishOptions::default().qos(QoS::AtLeastOnce),
    )
    .unwrap();
    let m = recv(&sub);
    assert_eq!(m.payload(), b"plain");
    assert!(m.user_properties().next().is_none() && m.content_type().is_none());
}

#[test]
fn properties_survive_the_round_trip_mosquitto_ws() {
    let Some(m) = Mosquitto::start() else { return };
    properties_survive_the_round_trip(&m.ws_url());
}

#[test]
fn properties_survive_the_round_trip_mosquitto_tcp() {
    let Some(m) = Mosquitto::start() else { return };
    properties_survive_the_round_trip(&m.mqtt_url());
}

#[test]
fn properties_survive_the_round_trip_rumqttd_v5() {
    properties_survive_the_round_trip(&Rumqttd::start_v5());
}

#[test]
fn v5_options_on_a_3_1_1_provider_are_a_clear_error() {
    let Some(m) = Mosquitto::start() else { return };
    let ps = PubSub::new();
    ps.add_provider(MqttOverWsProvider::builder(m.ws_url()).build().unwrap())
        .unwrap();
    let err = ps
        .publish_with("a", "x", PublishOptions::default().user_property("k", "v"))
        .unwrap_err();
    assert!(
        matches!(&err, Error::Unsupported(m) if m.contains("3.1.1")),
        "{err}"
    );
    let err = ps
        .subscribe_with("a", SubscribeOptions::default().no_local(true))
        .unwrap_err();
    assert!(
        matches!(&err, Error::Unsupported(m) if m.contains("3.1.1")),
        "{err}"
    );
    let err = MqttOverWsProvider::builder(m.ws_url())
        .session_expiry(Duration::from_secs(60))
        .build()
        .unwrap_err();
    assert!(
        matches!(&err, Error::InvalidConfig(m) if m.contains("MQTT 5")),
        "{err}"
    );
}

#[test]
fn no_local_suppresses_our_own_messages() {
    let Some(m) = Mosquitto::start() else { return };
    let me = v5(&m.ws_url());
    let other = v5(&m.ws_url());
    let sub = me
        .subscribe_with("v5/chat", SubscribeOptions::default().no_local(true))
        .unwrap();
    let q1 = PublishOptions::default().qos(QoS::AtLeastOnce);
    // Ours is routed before its PUBACK; the other's is published after that.
    me.publish_with("v5/chat", "mine", q1.clone()).unwrap();
    other.publish_with("v5/chat", "theirs", q1).unwrap();
    assert_eq!(recv(&sub).payload(), b"theirs");
    // Without no_local, our own comes back.
    let echo = me.subscribe("v5/echo").unwrap();
    me.publish_with(
        "v5/echo",
        "mine",
        PublishOptions::default().qos(QoS::AtLeastOnce),
    )
    .unwrap();
    assert_eq!(recv(&echo).payload(), b"mine");
}

#[test]
fn retain_handling_do_not_send_gets_no_retained_message() {
    let Some(m) = Mosquitto::start() else { return };
    let ps = v5(&m.ws_url());
    let retained = PublishOptions::default().qos(QoS::AtLeastOnce).retain(true);
    ps.publish_with("v5/retained", "old", retained).unwrap();
    let plain = ps.subscribe("v5/retained").unwrap();
    let none = ps
        .subscribe_with(
            "v5/+",
            SubscribeOptions::default().retain_handling(RetainHandling::DoNotSend),
        )
        .unwrap();
    let first = recv(&plain);
    assert!(first.retain() && first.payload() == b"old", "{first:?}");
    ps.publish_with(
        "v5/retained",
        "live",
        PublishOptions::default().qos(QoS::AtLeastOnce),
    )
    .unwrap();
    assert_eq!(
        recv(&none).payload(),
        b"live",
        "the retained one was not sent"
    );
}

#[test]
fn message_expiry_drops_an_expired_retained_message() {
    let Some(m) = Mosquitto::start() else { return };
    let ps = v5(&m.ws_url());
    let expiring = PublishOptions::default()
        .qos(QoS::AtLeastOnce)
        .retain(true)
        .message_expiry(Duration::from_secs(1));
    ps.publish_with("v5/expiring", "soon gone", expiring)
        .unwrap();
    let before = ps.subscribe("v5/expiring").unwrap();
    let m1 = recv(&before);
    assert!(m1.retain() && m1.message_expiry() <= Some(Duration::from_secs(1)));
    drop(before);
    // The expiry is what is tested: the broker counts whole seconds.
    std::thread::sleep(Duration::from_millis(2200));
    let after = ps.subscribe("v5/expiring").unwrap();
    ps.publish_with(
        "v5/expiring",
        "marker",
        PublishOptions::default().qos(QoS::AtLeastOnce),
    )
    .unwrap();
    assert_eq!(
        recv(&after).payload(),
        b"marker",
        "the expired message was dropped"
    );
}

#[test]
fn a_shared_subscription_splits_a_stream_with_nothing_lost() {
    let Some(m) = Mosquitto::start() else { return };
    let (a, b) = (v5(&m.ws_url()), v5(&m.ws_url()));
    let opts = SubscribeOptions::default().qos(QoS::AtLeastOnce);
    let sa = a
        .subscribe_with("$share/workers/v5/jobs/#", opts.clone())
        .unwrap();
    let sb = b.subscribe_with("$share/workers/v5/jobs/#", opts).unwrap();
    let publisher = v5(&m.ws_url());
    let n = 200;
    for i in 0..n {
        publisher
            .publish_with(
                format!("v5/jobs/{}", i % 7),
                format!("{i}"),
                PublishOptions::default().qos(QoS::AtLeastOnce),
            )
            .unwrap();
    }
    let mut seen = std::collections::BTreeSet::new();
    let (mut on_a, mut on_b) = (0, 0);
    while seen.len() < n {
        let (msg, side) = crossbeam_channel::select! {
            recv(sa.receiver()) -> m => (m.unwrap(), &mut on_a),
            recv(sb.receiver()) -> m => (m.unwrap(), &mut on_b),
            default(WAIT) => panic!("{} of {n} arrived", seen.len()),
        };
        *side += 1;
        assert!(seen.insert(msg.text().unwrap().to_string()), "a duplicate");
    }
    assert!(on_a > 0 && on_b > 0, "split {on_a}/{on_b}");
}

#[test]
fn reason_codes_name_what_mosquitto_refused() {
    let Some(m) = Mosquitto::start() else { return };
    let err = PubSub::new()
        .add_provider(
            MqttOverWsProvider::builder(m.auth_url())
                .mqtt_version(MqttVersion::V5)
                .username_password("alice", "wrong")
                .reconnect(ReconnectPolicy::disabled())
                .build()
                .unwrap(),
        )
        .unwrap_err();
    assert!(
        matches!(err, Error::ConnectionRefused(ConnackCode(0x86 | 0x87))),
        "{err}"
    );
    assert!(
        err.to_string().contains("bad user name or password")
            || err.to_string().contains("not authorized")
    );
    let ps = PubSub::new();
    ps.add_provider(
        MqttOverWsProvider::builder(m.auth_url())
            .mqtt_version(MqttVersion::V5)
            .username_password("alice", "alicepw")
            .build()
            .unwrap(),
    )
    .unwrap();
    let err = ps
        .publish_with(
            "test/secret",
            "x",
            PublishOptions::default().qos(QoS::AtLeastOnce),
        )
        .unwrap_err();
    assert!(
        matches!(
            &err,
            Error::Rejected {
                code: ReasonCode(0x87),
                ..
            }
        ),
        "{err}"
    );
    // The provider carries on.
    let sub = ps.subscribe("test/ok").unwrap();
    ps.publish_with(
        "test/ok",
        "fine",
        PublishOptions::default().qos(QoS::AtLeastOnce),
    )
    .unwrap();
    assert_eq!(recv(&sub).payload(), b"fine");
}

/// Receive maximum 2 from a scripted server: it never sees a third unacknowledged PUBLISH.
#[test]
fn the_server_receive_maximum_is_never_exceeded() {
    let max_seen = Arc::new(AtomicUsize::new(0));
    let acked = Arc::new(AtomicUsize::new(0));
    let (m, a) = (max_seen.clone(), acked.clone());
    let url = v5_server::start(move |mut peer: Peer| {
        peer.accept(&[0x21, 0, 2]); // Receive Maximum 2
        let mut open: Vec<[u8; 2]> = Vec::new();
        while a.load(Ordering::SeqCst) < 6 {
            // Read whatever comes within 300 ms, then acknowledge the oldest.
            match peer.read_within(Duration::from_millis(300)) {
                Ok(None) => return,
                Ok(Some((first, body))) if first >> 4 == 3 => {
                    let topic_len = u16::from_be_bytes([body[0], body[1]]) as usize;
                    open.push([body[2 + topic_len], body[3 + topic_len]]);
                    m.fetch_max(open.len(), Ordering::SeqCst);
                }
                Ok(Some((0xc0, _))) => peer.send(&[0xd0, 0]),
                Ok(Some(_)) => {}
                Err(()) if open.is_empty() => {}
                Err(()) => {
                    let id = open.remove(0);
                    // Counted before it is sent: the test reads the count once the client
                    // has every PUBACK.
                    a.fetch_add(1, Ordering::SeqCst);
                    peer.send(&[0x40, 2, id[0], id[1]]);
                }
            }
        }
    });
    let ps = v5(&url);
    let receipts: Vec<_> = (0..6)
        .map(|i| {
            ps.publish_nowait(
                "t",
                vec![i],
                PublishOptions::default().qos(QoS::AtLeastOnce),
            )
            .unwrap()
        })
        .collect();
    for r in receipts {
        r.wait().unwrap();
    }
    assert_eq!(acked.load(Ordering::SeqCst), 6);
    assert_eq!(
        max_seen.load(Ordering::SeqCst),
        2,
        "at most 2 unacknowledged"
    );
}

/// Topic aliases from the server are resolved; one it never defined reconnects (a protocol
/// error), it does not panic or deliver to the wrong topic.
#[test]
fn incoming_topic_aliases_are_resolved_and_an_undefined_one_reconnects() {
    let connections = Arc::new(AtomicUsize::new(0));
    let c = connections.clone();
    let url = v5_server::start(move |mut peer: Peer| {
        let n = c.fetch_add(1, Ordering::SeqCst);
        peer.accept(&[]);
        // SUBSCRIBE: answer SUBACK granting QoS 0, then send aliased publishes.
        let Some((0x82, body)) = peer.read() else {
            return;
        };
        peer.send(&[0x90, 4, body[0], body[1], 0, 0]);
        if n == 0 {
            peer.send(&v5_server::publish("alias/one", 1, b"a"));
            peer.send(&v5_server::publish("", 1, b"b"));
            peer.send(&v5_server::publish("", 2, b"undefined"));
        } else {
            peer.send(&v5_server::publish("alias/two", 0, b"after"));
        }
        while peer.read().is_some() {}
    });
    let ps = PubSub::new();
    let events = ps.state_changes();
    ps.add_provider(
        MqttOverWsProvider::builder(&url)
            .mqtt_version(MqttVersion::V5)
            .reconnect(ReconnectPolicy::exponential(
                Duration::from_millis(50),
                Duration::from_millis(200),
            ))
            .build()
            .unwrap(),
    )
    .unwrap();
    let sub = ps.subscribe("alias/#").unwrap();
    let got: Vec<(String, String)> = (0..3)
        .map(|_| {
            let m = recv(&sub);
            (m.topic().to_string(), m.text().unwrap().to_string())
        })
        .collect();
    assert_eq!(
        got,
        [
            ("alias/one".into(), "a".into()),
            ("alias/one".into(), "b".into()),
            ("alias/two".into(), "after".into())
        ]
    );
    let reasons: Vec<String> = events.try_iter().filter_map(|e| e.reason).collect();
    assert!(
        reasons.iter().any(|r| r.contains("never defined")),
        "{reasons:?}"
    );
}

/// A server DISCONNECT with "use another server" is reported with its reference. (A scripted
/// server: mosquitto 2.0.11 closes the connection without a DISCONNECT on session takeover
/// and on shutdown, as a raw v5 client shows.)
#[test]
fn a_server_disconnect_reports_its_reason_and_reference() {
    let url = v5_server::start(move |mut peer: Peer| {
        peer.accept(&[]);
        // After the first packet from the client (its publish below).
        let _ = peer.read();
        let reference = b"other.example:8883";
        let mut p = vec![
            0xe0,
            (5 + reference.len()) as u8,
            0x9c,
            (3 + reference.len()) as u8,
            0x1c,
            0,
        ];
        p.push(reference.len() as u8);
        p.extend_from_slice(reference);
        peer.send(&p);
        while peer.read().is_some() {}
    });
    let ps = PubSub::new();
    let events = ps.state_changes();
    ps.add_provider(
        MqttOverWsProvider::builder(&url)
            .mqtt_version(MqttVersion::V5)
            .reconnect(ReconnectPolicy::disabled())
            .build()
            .unwrap(),
    )
    .unwrap();
    ps.publish("x", "x").unwrap();
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let e = events.recv_deadline(deadline).expect("a state event");
        if let Some(r) = e.reason {
            assert!(
                r.contains("0x9c (use another server)") && r.contains("other.example:8883"),
                "{r}"
            );
            break;
        }
    }
}

#[test]
fn outgoing_topic_aliases_work_with_mosquitto() {
    let Some(m) = Mosquitto::start() else { return };
    let ps = v5(&m.mqtt_url());
    let topic = "$aws/things/a-long-thing-name-0001/shadow/update";
    let sub = ps.subscribe("$aws/things/+/shadow/update").unwrap();
    for i in 0..5 {
        ps.publish_with(
            topic,
            format!("{i}"),
            PublishOptions::default().qos(QoS::AtLeastOnce),
        )
        .unwrap();
    }
    for i in 0..5 {
        let m = recv(&sub);
        assert_eq!(
            (m.topic(), m.text().unwrap()),
            (topic, format!("{i}").as_str())
        );
    }
}

/// The tools speak MQTT 5: `mqtt-pub -V 5` with mosquitto's `-D publish …` properties
/// (retained), then `mqtt-sub -V mqttv5 -F` prints them with mosquitto_sub's fields; bad
/// property or version arguments exit with code 1, as mosquitto's tools do.
#[test]
fn the_tools_carry_and_print_mqtt5_properties() {
    use std::process::Command;
    let Some(m) = Mosquitto::start() else { return };
    let url = m.mqtt_url();
    let out = Command::new(crate::tools::ours("pub"))
        .args([
            "--url", &url, "-V", "5", "-t", "cli/v5", "-m", "{}", "-q", "1", "-r",
        ])
        .args(["-D", "publish", "content-type", "application/json"])
        .args(["-D", "publish", "user-property", "site", "north"])
        .args(["-D", "publish", "user-property", "site", "south"])
        .args(["-D", "publish", "correlation-data", "ab"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let out = Command::new(crate::tools::ours("sub"))
        .args(["--url", &url, "-V", "mqttv5", "-t", "cli/#", "-C", "1"])
        .args(["-F", "%t %p|%P|%C|%D|%S"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "cli/v5 {}|site:north site:south|application/json|ab|1\n"
    );
    for args in [
        vec!["-D", "publish", "bogus", "x"],
        vec!["-D", "publish", "user-property", "novalue"],
        vec!["-V", "4"],
    ] {
        let out = Command::new(crate::tools::ours("pub"))
            .args(["--url", &url, "-t", "a", "-m", "b"])
            .args(&args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{args:?}: {out:?}");
    }
    // A property on a 3.1.1 connection is ignored, as mosquitto_pub does.
    let out = Command::new(crate::tools::ours("pub"))
        .args(["--url", &url, "-t", "a", "-m", "b"])
        .args(["-D", "publish", "user-property", "k", "v"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
}

/// request()/respond(): a responder on another connection answers; concurrent requests each
/// get their own answer; with no responder the request times out within its bound; a 3.1.1
/// provider is refused.
#[test]
fn request_and_respond_pair_answers_by_correlation_data() {
    let Some(m) = Mosquitto::start() else { return };
    let responder = v5(&m.ws_url());
    let requests = responder.subscribe("svc/echo").unwrap();
    let server = std::thread::spawn(move || {
        for _ in 0..5 {
            let req = requests.recv_timeout(WAIT).expect("a request");
            let answer = format!("pong:{}", req.text().unwrap());
            responder.respond(&req, answer).unwrap();
        }
        responder
    });
    let client = Arc::new(v5(&m.ws_url()));
    let answer = client.request("svc/echo", "0", WAIT).unwrap();
    assert_eq!(answer.text().unwrap(), "pong:0");
    let threads: Vec<_> = (1..5)
        .map(|i| {
            let c = client.clone();
            std::thread::spawn(move || {
                let a = c.request("svc/echo", format!("{i}"), WAIT).unwrap();
                assert_eq!(a.text().unwrap(), format!("pong:{i}"));
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    drop(server.join().unwrap());
    // Nobody answers: a timeout, bounded.
    let start = std::time::Instant::now();
    let err = client
        .request("svc/nobody", "x", Duration::from_millis(500))
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Timeout {
                operation: mqtt_pubsub::Operation::Request,
                ..
            }
        ),
        "{err}"
    );
    // The request's own 500 ms, with headroom: the bound guards a request that never ends.
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "{:?}",
        start.elapsed()
    );
    let old = PubSub::new();
    old.add_provider(MqttOverWsProvider::builder(m.ws_url()).build().unwrap())
        .unwrap();
    let err = old.request("svc/echo", "x", WAIT).unwrap_err();
    assert!(
        matches!(&err, Error::Unsupported(m) if m.contains("3.1.1")),
        "{err}"
    );
}

/// Will properties: the will comes with its user property and content type, after its
/// delay; on a 3.1.1 provider they fail `build()`.
#[test]
fn the_will_carries_its_properties_after_its_delay() {
    use mqtt_pubsub::LastWill;
    let Some(m) = Mosquitto::start() else { return };
    let observer = v5(&m.ws_url());
    let sub = observer.subscribe("will/v5").unwrap();
    let proxy = crate::support::proxy::Proxy::start(m.tcp_port);
    let will = LastWill::new("will/v5", "gone")
        .qos(QoS::AtLeastOnce)
        .user_property("why", "cut")
        .content_type("text/plain")
        .delay(Duration::from_secs(1));
    let doomed = PubSub::new();
    doomed
        .add_provider(
            MqttOverWsProvider::builder(format!("mqtt://127.0.0.1:{}", proxy.port))
                .mqtt_version(MqttVersion::V5)
                .last_will(will.clone())
                .reconnect(ReconnectPolicy::disabled())
                .build()
                .unwrap(),
        )
        .unwrap();
    let cut = std::time::Instant::now();
    proxy.cut_all();
    let m = recv(&sub);
    let after = cut.elapsed();
    assert_eq!(m.payload(), b"gone");
    assert_eq!(m.user_properties().collect::<Vec<_>>(), [("why", "cut")]);
    assert_eq!(m.content_type(), Some("text/plain"));
    assert!(
        after >= Duration::from_millis(800),
        "the will waited its delay: {after:?}"
    );
    let err = MqttOverWsProvider::builder("mqtt://127.0.0.1:1")
        .last_will(will)
        .build()
        .unwrap_err();
    assert!(
        matches!(&err, Error::InvalidConfig(t) if t.contains("MQTT 5")),
        "{err}"
    );
}

/// Subscription identifiers: the library gives each SUBSCRIBE one, and routes by them. A
/// plain and a shared subscription of the same filter on one connection each get their own
/// copy of every message — exactly once — where 3.1.1 can only guess which copy is which.
#[test]
fn subscription_identifiers_route_each_copy_to_its_own_subscription() {
    let Some(m) = Mosquitto::start() else { return };
    let ps = v5(&m.ws_url());
    let opts = SubscribeOptions::default().qos(QoS::AtLeastOnce);
    let plain = ps.subscribe_with("v5/ids/#", opts.clone()).unwrap();
    let shared = ps.subscribe_with("$share/g/v5/ids/#", opts).unwrap();
    let n = 50;
    for i in 0..n {
        ps.publish_with(
            format!("v5/ids/{i}"),
            format!("{i}"),
            PublishOptions::default().qos(QoS::AtLeastOnce),
        )
        .unwrap();
    }
    for sub in [&plain, &shared] {
        let mut got: Vec<String> = (0..n)
            .map(|_| recv(sub).text().unwrap().to_string())
            .collect();
        got.sort_by_key(|s| s.parse::<u32>().unwrap());
        assert_eq!(got, (0..n).map(|i| i.to_string()).collect::<Vec<_>>());
        let m = recv_none(sub);
        assert!(m.is_none(), "a second copy: {m:?}");
    }
    ps.publish_with(
        "v5/ids/last",
        "x",
        PublishOptions::default().qos(QoS::AtLeastOnce),
    )
    .unwrap();
    let ids: Vec<u32> = recv(&plain).subscription_identifiers().collect();
    assert_eq!(ids.len(), 1, "{ids:?}");
}

fn recv_none(sub: &Subscription) -> Option<Message> {
    sub.recv_timeout(Duration::from_millis(300)).ok()
}

/// Request Response Information: the CONNECT asks for it (a scripted server checks the
/// property), and the CONNACK's answer comes in the Connected state event.
#[test]
fn response_information_is_asked_for_and_reported_on_connected() {
    let url = v5_server::start(move |mut peer: Peer| {
        let Some((0x10, connect)) = peer.read() else {
            return;
        };
        // Variable header: "MQTT", level 5, flags, keep-alive, then the properties.
        let props_len = connect[10] as usize;
        let props = &connect[11..11 + props_len];
        let asked = props.windows(2).any(|w| w == [0x19, 1]);
        let info: &[u8] = if asked { b"replies/for-you" } else { b"" };
        let mut connack = vec![0x20, 0, 0, 0];
        if asked {
            connack.push((3 + info.len()) as u8);
            connack.push(0x1a);
            connack.extend_from_slice(&(info.len() as u16).to_be_bytes());
            connack.extend_from_slice(info);
        } else {
            connack.push(0);
        }
        connack[1] = (connack.len() - 2) as u8;
        peer.send(&connack);
        while peer.read().is_some() {}
    });
    let ps = PubSub::new();
    let events = ps.state_changes();
    ps.add_provider(
        MqttOverWsProvider::builder(&url)
            .mqtt_version(MqttVersion::V5)
            .request_response_information(true)
            .build()
            .unwrap(),
    )
    .unwrap();
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let e = events.recv_deadline(deadline).expect("Connected");
        if e.state == mqtt_pubsub::ConnectionState::Connected {
            assert_eq!(e.response_information.as_deref(), Some("replies/for-you"));
            break;
        }
    }
}

/// A broker without MQTT 5 (NATS, aedes) refuses a v5 CONNECT with a 3.1.1 CONNACK: a clear
/// error naming the protocol version, not a decoding failure or a hang.
#[test]
fn a_broker_without_mqtt5_is_a_clear_error() {
    use crate::support::{Aedes, Nats};
    let mut urls = Vec::new();
    let nats = Nats::start();
    if let Some(n) = &nats {
        urls.push(n.ws_url());
    }
    let aedes = Aedes::start(false);
    if let Some(a) = &aedes {
        urls.push(a.ws_url());
    }
    for url in urls {
        let start = std::time::Instant::now();
        let err = PubSub::new()
            .add_provider(
                MqttOverWsProvider::builder(&url)
                    .mqtt_version(MqttVersion::V5)
                    .reconnect(ReconnectPolicy::disabled())
                    .connect_timeout(Duration::from_secs(5))
                    .build()
                    .unwrap(),
            )
            .unwrap_err();
        // Within the 5 s connect timeout, with headroom: guards an attempt that never ends.
        assert!(start.elapsed() < Duration::from_secs(15), "{url}: bounded");
        // Both answer with a 3.1.1 CONNACK, return code 1.
        assert!(
            matches!(err, Error::ConnectionRefused(ConnackCode(1))),
            "{url}: {err}"
        );
        assert!(err.to_string().contains("3.1.1 only"), "{err}");
    }
}

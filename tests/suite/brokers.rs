//! Behaviour against real brokers over real sockets. Each broker is started by the test on
//! free loopback ports; the lists at the bottom say which behaviour runs against which broker
//! (brokers.md says where they differ).

use std::time::{Duration, Instant};

use crate::support::proxy::Proxy;
use crate::support::{Aedes, Mosquitto, Nats, Rumqttd};
use mqtt_pubsub::{
    ConnackCode, ConnectionState, Error, LastWill, Message, MqttOverWsProvider, PubSub,
    PublishOptions, QoS, ReconnectPolicy, SubscribeOptions, TryRecvError,
};

const WAIT: Duration = Duration::from_secs(10);

/// A started broker and what it can do.
pub struct Target {
    url: String,
    /// Delivers at the QoS the subscriber asked for (rumqttd upgrades QoS 0 to 1).
    exact_qos: bool,
    qos2: bool,
    /// Lets a test point a proxy at the broker's WebSocket port.
    port: u16,
    path: &'static str,
    _guard: Box<dyn std::any::Any>,
}

fn target(kind: &str) -> Option<Target> {
    Some(match kind {
        "rumqttd" => {
            let b = Rumqttd::start();
            Target {
                url: b.ws_url(),
                exact_qos: false,
                qos2: true,
                port: b.ws_port,
                path: "/mqtt",
                _guard: Box::new(b),
            }
        }
        "mosquitto" => {
            let b = Mosquitto::start()?;
            Target {
                url: b.ws_url(),
                exact_qos: true,
                qos2: true,
                port: b.ws_port,
                path: "/mqtt",
                _guard: Box::new(b),
            }
        }
        "nats" => {
            let b = Nats::start()?;
            // NATS' MQTT does not support QoS 2.
            Target {
                url: b.ws_url(),
                exact_qos: true,
                qos2: false,
                port: b.ws_port,
                path: "/mqtt",
                _guard: Box::new(b),
            }
        }
        // The same broker over plain MQTT, no WebSocket (`port`/`path` stay the WebSocket
        // listener's, for the proxy tests, which only run over ws).
        "mosquitto_tcp" => {
            let b = Mosquitto::start()?;
            Target {
                url: b.mqtt_url(),
                exact_qos: true,
                qos2: true,
                port: b.ws_port,
                path: "/mqtt",
                _guard: Box::new(b),
            }
        }
        "nats_tcp" => {
            let b = Nats::start()?;
            Target {
                url: b.mqtt_url(),
                exact_qos: true,
                qos2: false,
                port: b.ws_port,
                path: "/mqtt",
                _guard: Box::new(b),
            }
        }
        "aedes" => {
            let b = Aedes::start(false)?;
            Target {
                url: b.ws_url(),
                exact_qos: true,
                qos2: true,
                port: b.ws_port,
                path: "/",
                _guard: Box::new(b),
            }
        }
        other => panic!("unknown broker {other}"),
    })
}

fn client(url: &str) -> PubSub {
    let p = PubSub::new();
    p.add_provider(MqttOverWsProvider::builder(url).build().unwrap())
        .unwrap();
    p
}

fn recv(sub: &mqtt_pubsub::Subscription) -> Message {
    sub.recv_timeout(WAIT)
        .expect("a message within the timeout")
}

fn roundtrip(t: &Target, qos: QoS) {
    let ps = client(&t.url);
    let topic = format!("rt/{}", qos as u8);
    let sub = ps
        .subscribe_with(topic.as_str(), SubscribeOptions::default().qos(qos))
        .unwrap();
    ps.publish_with(topic.as_str(), "hello", PublishOptions::default().qos(qos))
        .unwrap();
    let m = recv(&sub);
    assert_eq!(m.topic(), topic);
    assert_eq!(m.payload(), b"hello");
    assert_eq!(m.provider(), MqttOverWsProvider::DEFAULT_NAME);
    if t.exact_qos {
        assert_eq!(m.qos(), qos);
    }
    assert!(!m.retain());
    // A receiver blocked when the PubSub closes is woken and told the subscription ended.
    // Left asleep, it would find out only when its timeout ran out.
    std::thread::scope(|s| {
        let blocked = s.spawn(|| {
            let t = Instant::now();
            (sub.recv_timeout(WAIT), t.elapsed())
        });
        ps.close().unwrap();
        let (result, waited) = blocked.join().unwrap();
        assert!(
            matches!(
                result,
                Err(crossbeam_channel::RecvTimeoutError::Disconnected)
            ),
            "the subscription ends on close"
        );
        assert!(
            waited < WAIT / 2,
            "woken at the end, not at the timeout: {waited:?}"
        );
    });
}

pub fn roundtrip_qos0(t: Target) {
    roundtrip(&t, QoS::AtMostOnce)
}

pub fn roundtrip_qos1(t: Target) {
    roundtrip(&t, QoS::AtLeastOnce)
}

pub fn roundtrip_qos2(t: Target) {
    assert!(t.qos2);
    roundtrip(&t, QoS::ExactlyOnce)
}

pub fn json_and_binary_payloads_arrive_as_sent(t: Target) {
    let ps = client(&t.url);
    let sub = ps.subscribe("p/#").unwrap();
    ps.publish(
        "p/json",
        serde_json::json!({"msg": "Hello to all subscribers!"}),
    )
    .unwrap();
    ps.publish("p/bin", vec![0u8, 159, 146, 150, 255]).unwrap();
    ps.publish("p/text", String::from("plain \"text\""))
        .unwrap();
    let mut got: Vec<Message> = (0..3).map(|_| recv(&sub)).collect();
    got.sort_by(|a, b| a.topic().cmp(b.topic()));
    let v: serde_json::Value = got[1].json().unwrap();
    assert_eq!(v["msg"], "Hello to all subscribers!");
    assert_eq!(got[0].payload(), [0u8, 159, 146, 150, 255]);
    assert!(got[0].text().is_err());
    assert_eq!(got[2].text().unwrap(), "plain \"text\"");
}

pub fn wildcards_and_multiple_topics(t: Target) {
    let ps = client(&t.url);
    let sub = ps.subscribe(["w/+/temp", "alerts/#"]).unwrap();
    for topic in [
        "w/kitchen/temp",
        "w/kitchen/humidity",
        "alerts",
        "alerts/fire/big",
        "other/x",
        "w/a/b/temp",
    ] {
        ps.publish_with(
            topic,
            topic,
            PublishOptions::default().qos(QoS::AtLeastOnce),
        )
        .unwrap();
    }
    ps.publish_with(
        "alerts/zz-end",
        "end",
        PublishOptions::default().qos(QoS::AtLeastOnce),
    )
    .unwrap();
    let mut got = Vec::new();
    loop {
        let m = recv(&sub);
        if m.topic() == "alerts/zz-end" {
            break;
        }
        got.push(m.topic().to_string());
    }
    got.sort();
    assert_eq!(got, ["alerts", "alerts/fire/big", "w/kitchen/temp"]);
}

pub fn overlapping_filters_deliver_once(t: Target) {
    let ps = client(&t.url);
    let sub = ps.subscribe(["o/#", "o/+", "o/a"]).unwrap();
    ps.publish_with("o/a", "1", PublishOptions::default().qos(QoS::AtLeastOnce))
        .unwrap();
    ps.publish_with(
        "o/end",
        "2",
        PublishOptions::default().qos(QoS::AtLeastOnce),
    )
    .unwrap();
    let mut topics = vec![
        recv(&sub).topic().to_string(),
        recv(&sub).topic().to_string(),
    ];
    topics.sort();
    assert_eq!(topics, ["o/a", "o/end"]);
    // Nothing else is buffered or arrives after the marker: publish one more and it is next.
    ps.publish_with("o/z", "3", PublishOptions::default().qos(QoS::AtLeastOnce))
        .unwrap();
    assert_eq!(recv(&sub).topic(), "o/z");
}

pub fn unsubscribe_stops_delivery_and_shares_filters(t: Target) {
    let ps = client(&t.url);
    let a = ps.subscribe("u/#").unwrap();
    let b = ps.subscribe("u/#").unwrap();
    ps.publish_with("u/1", "1", PublishOptions::default().qos(QoS::AtLeastOnce))
        .unwrap();
    assert_eq!(recv(&a).topic(), "u/1");
    assert_eq!(recv(&b).topic(), "u/1");
    a.unsubscribe().expect("unsubscribe is confirmed");
    assert!(
        a.recv().is_err(),
        "an unsubscribed subscription ends at once"
    );
    ps.publish_with("u/2", "2", PublishOptions::default().qos(QoS::AtLeastOnce))
        .unwrap();
    assert_eq!(
        recv(&b).topic(),
        "u/2",
        "the shared broker subscription stays for b"
    );
    drop(b);
    // Both gone: UNSUBSCRIBE went out; a new subscription SUBSCRIBEs again and receives.
    let c = ps.subscribe("u/#").unwrap();
    ps.publish_with("u/3", "3", PublishOptions::default().qos(QoS::AtLeastOnce))
        .unwrap();
    assert_eq!(recv(&c).topic(), "u/3");
}

pub fn retained_message_reaches_a_later_subscriber(t: Target) {
    let publisher = client(&t.url);
    publisher
        .publish_with(
            "r/state",
            "on",
            PublishOptions::default().qos(QoS::AtLeastOnce).retain(true),
        )
        .unwrap();
    publisher.close().unwrap();
    let later = client(&t.url);
    let sub = later.subscribe("r/#").unwrap();
    let m = recv(&sub);
    assert_eq!(
        (m.topic(), m.payload(), m.retain()),
        ("r/state", &b"on"[..], true)
    );
}

pub fn last_will_is_published_when_a_client_vanishes(t: Target) {
    let observer = client(&t.url);
    let sub = observer.subscribe("will/#").unwrap();
    let proxy = Proxy::start(t.port);
    let doomed = PubSub::new();
    doomed
        .add_provider(
            MqttOverWsProvider::builder(proxy.url(t.path))
                .last_will(LastWill::new("will/doomed", "gone").qos(QoS::AtLeastOnce))
                .reconnect(ReconnectPolicy::disabled())
                .build()
                .unwrap(),
        )
        .unwrap();
    proxy.cut_all();
    let m = recv(&sub);
    assert_eq!((m.topic(), m.payload()), ("will/doomed", &b"gone"[..]));
}

pub fn one_mebibyte_payload(t: Target) {
    let ps = client(&t.url);
    let sub = ps
        .subscribe_with("big", SubscribeOptions::default().qos(QoS::AtLeastOnce))
        .unwrap();
    let payload: Vec<u8> = (0..1024 * 1024).map(|i| (i % 251) as u8).collect();
    ps.publish_with(
        "big",
        payload.clone(),
        PublishOptions::default().qos(QoS::AtLeastOnce),
    )
    .unwrap();
    let m = recv(&sub);
    assert_eq!(m.payload().len(), payload.len());
    assert!(m.payload() == payload.as_slice());
}

pub fn try_recv_polls_without_blocking(t: Target) {
    let ps = client(&t.url);
    let sub = ps.subscribe("poll").unwrap();
    assert_eq!(sub.try_recv().unwrap_err(), TryRecvError::Empty);
    for i in 0..3 {
        ps.publish_with(
            "poll",
            format!("{i}"),
            PublishOptions::default().qos(QoS::AtLeastOnce),
        )
        .unwrap();
    }
    let deadline = Instant::now() + WAIT;
    let mut got = Vec::new();
    while got.len() < 3 {
        match sub.try_recv() {
            Ok(m) => got.push(m.text().unwrap().to_string()),
            Err(TryRecvError::Empty) => {
                assert!(Instant::now() < deadline, "only {got:?} arrived");
                std::thread::yield_now();
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(got, ["0", "1", "2"]);
    assert_eq!(sub.try_iter().count(), 0);
}

pub fn publishing_to_invalid_topics_fails_with_the_reason(t: Target) {
    let ps = client(&t.url);
    for bad in ["", "a/+", "a/#"] {
        assert!(
            matches!(ps.publish(bad, "x"), Err(Error::InvalidTopic { .. })),
            "{bad:?}"
        );
    }
    assert!(matches!(
        ps.subscribe("a/#/b"),
        Err(Error::InvalidTopic { .. })
    ));
    assert!(matches!(
        ps.publish_with("a", "x", PublishOptions::default().provider("nope")),
        Err(Error::UnknownProvider(_))
    ));
}

macro_rules! broker_tests {
    ($broker:ident: $($test:ident),* $(,)?) => {
        mod $broker {
            $(
                #[test]
                fn $test() {
                    if let Some(t) = super::target(stringify!($broker)) {
                        super::$test(t);
                    }
                }
            )*
        }
    };
}

broker_tests!(rumqttd: roundtrip_qos0, roundtrip_qos1, roundtrip_qos2, json_and_binary_payloads_arrive_as_sent,
    wildcards_and_multiple_topics, overlapping_filters_deliver_once, unsubscribe_stops_delivery_and_shares_filters,
    retained_message_reaches_a_later_subscriber, one_mebibyte_payload, try_recv_polls_without_blocking,
    publishing_to_invalid_topics_fails_with_the_reason, last_will_is_published_when_a_client_vanishes);
broker_tests!(mosquitto: roundtrip_qos0, roundtrip_qos1, roundtrip_qos2, json_and_binary_payloads_arrive_as_sent,
    wildcards_and_multiple_topics, overlapping_filters_deliver_once, unsubscribe_stops_delivery_and_shares_filters,
    retained_message_reaches_a_later_subscriber, last_will_is_published_when_a_client_vanishes,
    try_recv_polls_without_blocking);
// (mosquitto 2.0.11 reads large websocket packets ~4 KB per timer tick: 1 MiB takes over
// 10 s, so the large payload runs on the other brokers.)
broker_tests!(nats: roundtrip_qos0, roundtrip_qos1, json_and_binary_payloads_arrive_as_sent, wildcards_and_multiple_topics,
    overlapping_filters_deliver_once, unsubscribe_stops_delivery_and_shares_filters, retained_message_reaches_a_later_subscriber,
    last_will_is_published_when_a_client_vanishes, one_mebibyte_payload, try_recv_polls_without_blocking);
// The matrix over `mqtt://` (raw MQTT on the stream, no WebSocket).
broker_tests!(mosquitto_tcp: roundtrip_qos0, roundtrip_qos1, roundtrip_qos2, json_and_binary_payloads_arrive_as_sent,
    wildcards_and_multiple_topics, overlapping_filters_deliver_once, unsubscribe_stops_delivery_and_shares_filters,
    retained_message_reaches_a_later_subscriber, last_will_is_published_when_a_client_vanishes,
    try_recv_polls_without_blocking, one_mebibyte_payload);
broker_tests!(nats_tcp: roundtrip_qos0, roundtrip_qos1, json_and_binary_payloads_arrive_as_sent, wildcards_and_multiple_topics,
    overlapping_filters_deliver_once, unsubscribe_stops_delivery_and_shares_filters, retained_message_reaches_a_later_subscriber,
    last_will_is_published_when_a_client_vanishes, one_mebibyte_payload, try_recv_polls_without_blocking);
broker_tests!(aedes: roundtrip_qos0, roundtrip_qos1, roundtrip_qos2, json_and_binary_payloads_arrive_as_sent,
    wildcards_and_multiple_topics, overlapping_filters_deliver_once, unsubscribe_stops_delivery_and_shares_filters,
    retained_message_reaches_a_later_subscriber, last_will_is_published_when_a_client_vanishes, one_mebibyte_payload,
    try_recv_polls_without_blocking);

// ---- Behaviour that only some brokers can show ----

#[test]
fn two_providers_publish_to_all_or_to_one() {
    let (a, b) = (Rumqttd::start(), Rumqttd::start());
    let ps = PubSub::new();
    ps.add_provider(
        MqttOverWsProvider::builder(a.ws_url())
            .name("A")
            .build()
            .unwrap(),
    )
    .unwrap();
    ps.add_provider(
        MqttOverWsProvider::builder(b.ws_url())
            .name("B")
            .build()
            .unwrap(),
    )
    .unwrap();
    assert!(matches!(
        ps.add_provider(MqttOverWsProvider::builder(b.ws_url()).name("A").build().unwrap()),
        Err(Error::DuplicateProvider(n)) if n == "A"
    ));
    let all = ps.subscribe("two/#").unwrap();
    let only_b = ps
        .subscribe_with("two/#", SubscribeOptions::default().provider("B"))
        .unwrap();
    ps.publish_with(
        "two/all",
        "x",
        PublishOptions::default().qos(QoS::AtLeastOnce),
    )
    .unwrap();
    let mut providers = vec![
        recv(&all).provider().to_string(),
        recv(&all).provider().to_string(),
    ];
    providers.sort();
    assert_eq!(providers, ["A", "B"]);
    assert_eq!(recv(&only_b).provider(), "B");
    ps.publish_with(
        "two/a",
        "x",
        PublishOptions::default()
            .provider("A")
            .qos(QoS::AtLeastOnce),
    )
    .unwrap();
    let m = recv(&all);
    assert_eq!((m.topic(), m.provider()), ("two/a", "A"));
    // B never saw two/a: the next thing B delivers is the marker.
    ps.publish_with(
        "two/b-end",
        "x",
        PublishOptions::default()
            .provider("B")
            .qos(QoS::AtLeastOnce),
    )
    .unwrap();
    assert_eq!(recv(&only_b).topic(), "two/b-end");
    let m = recv(&all);
    assert_eq!((m.topic(), m.provider()), ("two/b-end", "B"));
    // Many topics on every provider: each topic reaches each broker once.
    ps.publish_with(
        ["two/m1", "two/m2"],
        "x",
        PublishOptions::default().qos(QoS::AtLeastOnce),
    )
    .unwrap();
    let mut got: Vec<(String, String)> = (0..4)
        .map(|_| {
            let m = recv(&all);
            (m.topic().to_string(), m.provider().to_string())
        })
        .collect();
    got.sort();
    let want = [
        ("two/m1", "A"),
        ("two/m1", "B"),
        ("two/m2", "A"),
        ("two/m2", "B"),
    ];
    assert_eq!(got, want.map(|(t, p)| (t.to_string(), p.to_string())));
    let mut on_b = [
        recv(&only_b).topic().to_string(),
        recv(&only_b).topic().to_string(),
    ];
    on_b.sort();
    assert_eq!(on_b, ["two/m1", "two/m2"]);
    ps.remove_provider("B").unwrap();
    let t = Instant::now();
    assert!(
        matches!(
            only_b.recv_timeout(WAIT),
            Err(crossbeam_channel::RecvTimeoutError::Disconnected)
        ) && t.elapsed() < WAIT / 2,
        "a subscription on a removed provider ends"
    );
    assert!(matches!(
        ps.remove_provider("B"),
        Err(Error::UnknownProvider(_))
    ));
    assert_eq!(ps.provider_names(), ["A"]);
}

#[test]
fn no_provider_is_an_error_not_a_no_op() {
    let ps = PubSub::new();
    assert!(matches!(ps.publish("a", "x"), Err(Error::NoProviders)));
    assert!(matches!(ps.subscribe("a"), Err(Error::NoProviders)));
}

#[test]
fn mosquitto_refuses_a_bad_password_with_its_connack_code() {
    let Some(m) = Mosquitto::start() else { return };
    let err = PubSub::new()
        .add_provider(
            MqttOverWsProvider::builder(m.auth_url())
                .username_password("alice", "wrong")
                .build()
                .unwrap(),
        )
        .unwrap_err();
    assert!(
        matches!(err, Error::ConnectionRefused(ConnackCode(4 | 5))),
        "{err}"
    );
    let ok = PubSub::new();
    ok.add_provider(
        MqttOverWsProvider::builder(m.auth_url())
            .username_password("alice", "alicepw")
            .build()
            .unwrap(),
    )
    .unwrap();
}

/// Credentials in the broker URL are the MQTT user name and password (as `mosquitto_pub -L`
/// takes them); they were ignored without a word, and the connection went anonymous (the
/// hostile review). Percent-encoded characters are decoded; other credentials from the builder as well are refused.
#[test]
fn credentials_in_the_url_log_in_mosquitto() {
    let Some(m) = Mosquitto::start() else { return };
    let with = |user_info: &str| {
        m.auth_url()
            .replacen("ws://", &format!("ws://{user_info}@"), 1)
    };
    let ok = PubSub::new();
    ok.add_provider(
        MqttOverWsProvider::builder(with("alice:alice%70w"))
            .build()
            .unwrap(),
    )
    .unwrap();
    let err = PubSub::new()
        .add_provider(
            MqttOverWsProvider::builder(with("alice:not-alices-pw"))
                .build()
                .unwrap(),
        )
        .unwrap_err();
    assert!(
        matches!(err, Error::ConnectionRefused(ConnackCode(4 | 5))),
        "{err}"
    );
    assert!(
        !format!("{err} {err:?}").contains("not-alices-pw"),
        "{err:?}"
    );
    // The same ones twice are one; different ones are refused.
    MqttOverWsProvider::builder(with("alice:alicepw"))
        .username_password("alice", "alicepw")
        .build()
        .unwrap();
    let both = MqttOverWsProvider::builder(with("alice:alicepw"))
        .username_password("alice", "a-second-password")
        .build()
        .unwrap_err();
    assert!(matches!(both, Error::InvalidConfig(_)), "{both}");
    assert!(!both.to_string().contains("alicepw"), "{both}");
}

#[test]
fn mosquitto_denied_topic_is_granted_but_delivers_nothing() {
    let Some(m) = Mosquitto::start() else { return };
    let ps = PubSub::new();
    ps.add_provider(
        MqttOverWsProvider::builder(m.auth_url())
            .username_password("alice", "alicepw")
            .build()
            .unwrap(),
    )
    .unwrap();
    let sub = ps.subscribe("test/#").unwrap();
    ps.publish_with(
        "test/secret",
        "hidden",
        PublishOptions::default().qos(QoS::AtLeastOnce),
    )
    .unwrap();
    ps.publish_with(
        "test/marker",
        "seen",
        PublishOptions::default().qos(QoS::AtLeastOnce),
    )
    .unwrap();
    assert_eq!(recv(&sub).topic(), "test/marker");
}

#[test]
fn aedes_refuses_a_bad_password_with_its_connack_code() {
    let Some(a) = Aedes::start(true) else { return };
    let err = PubSub::new()
        .add_provider(
            MqttOverWsProvider::builder(a.ws_url())
                .username_password("alice", "nope")
                .build()
                .unwrap(),
        )
        .unwrap_err();
    assert!(
        matches!(err, Error::ConnectionRefused(ConnackCode(4))),
        "{err}"
    );
    PubSub::new()
        .add_provider(
            MqttOverWsProvider::builder(a.ws_url())
                .username_password("alice", "alicepw")
                .build()
                .unwrap(),
        )
        .unwrap();
}

#[test]
fn rumqttd_refuses_a_bad_password() {
    let b = Rumqttd::start_with_auth(Some(("alice", "alicepw")));
    let err = PubSub::new()
        .add_provider(
            MqttOverWsProvider::builder(b.ws_url())
                .username_password("alice", "nope")
                .connect_timeout(Duration::from_secs(5))
                .build()
                .unwrap(),
        )
        .unwrap_err();
    // rumqttd answers a bad password by closing the connection, without a CONNACK code.
    assert!(matches!(err, Error::ConnectionLost(_)), "{err}");
    PubSub::new()
        .add_provider(
            MqttOverWsProvider::builder(b.ws_url())
                .username_password("alice", "alicepw")
                .build()
                .unwrap(),
        )
        .unwrap();
}

#[test]
fn aedes_refused_subscription_fails_naming_the_filter_and_subscribes_nothing() {
    let Some(a) = Aedes::start(false) else { return };
    let ps = client(&a.ws_url());
    let err = ps.subscribe(["ok/x", "test/secret"]).unwrap_err();
    assert!(
        matches!(&err, Error::SubscriptionRefused { filter, .. } if filter == "test/secret"),
        "{err}"
    );
    // The accepted half was undone: a new subscription to ok/x gets only what follows.
    let sub = ps.subscribe("ok/x").unwrap();
    ps.publish_with("ok/x", "1", PublishOptions::default().qos(QoS::AtLeastOnce))
        .unwrap();
    assert_eq!(recv(&sub).payload(), b"1");
}

#[test]
fn mosquitto_wss_with_the_test_ca() {
    let Some(m) = Mosquitto::start() else { return };
    let ps = PubSub::new();
    ps.add_provider(
        MqttOverWsProvider::builder(m.wss_url())
            .ca_pem(m.ca_pem.clone())
            .build()
            .unwrap(),
    )
    .unwrap();
    crate::support::assert_roundtrip(&ps, "tls");
}

#[test]
fn mosquitto_wss_to_a_name_the_certificate_does_not_cover_fails_with_a_tls_error() {
    let Some(m) = Mosquitto::start() else { return };
    // The certificate covers localhost and 127.0.0.1, not 127.0.0.2 (the listener binds all).
    let url = format!("wss://127.0.0.2:{}/mqtt", m.wss_port);
    let err = PubSub::new()
        .add_provider(
            MqttOverWsProvider::builder(url)
                .ca_pem(m.ca_pem.clone())
                .build()
                .unwrap(),
        )
        .unwrap_err();
    assert!(
        matches!(&err, Error::Tls { message, source: Some(_) } if message.contains("not for 127.0.0.2")),
        "{err}"
    );
}

#[test]
fn mosquitto_wss_without_the_ca_fails_with_a_tls_error() {
    let Some(m) = Mosquitto::start() else { return };
    let err = PubSub::new()
        .add_provider(MqttOverWsProvider::builder(m.wss_url()).build().unwrap())
        .unwrap_err();
    assert!(
        matches!(&err, Error::Tls { message, source: Some(_) } if message.contains("not signed by a CA")),
        "{err}"
    );
}

#[test]
fn mosquitto_mqtts_works_with_the_test_ca_and_fails_without_it() {
    let Some(m) = Mosquitto::start() else { return };
    let url = format!("mqtts://localhost:{}", m.mqtts_port);
    let ps = PubSub::new();
    ps.add_provider(
        MqttOverWsProvider::builder(&url)
            .ca_pem(m.ca_pem.clone())
            .build()
            .unwrap(),
    )
    .unwrap();
    crate::support::assert_roundtrip(&ps, "mqtts");
    let err = PubSub::new()
        .add_provider(MqttOverWsProvider::builder(&url).build().unwrap())
        .unwrap_err();
    assert!(
        matches!(&err, Error::Tls { message, .. } if message.contains("not signed by a CA")),
        "{err}"
    );
    // A name the certificate does not cover.
    let err = PubSub::new()
        .add_provider(
            MqttOverWsProvider::builder(format!("mqtts://127.0.0.2:{}", m.mqtts_port))
                .ca_pem(m.ca_pem.clone())
                .connect_timeout(Duration::from_secs(5))
                .build()
                .unwrap(),
        )
        .unwrap_err();
    assert!(
        matches!(&err, Error::Tls { .. } | Error::Io { .. }),
        "{err}"
    );
}

#[test]
fn mosquitto_mutual_tls_needs_the_client_certificate() {
    let Some(m) = Mosquitto::start() else { return };
    for url in [
        format!("wss://localhost:{}/mqtt", m.mtls_port),
        format!("mqtts://localhost:{}", m.mqtts_mtls_port),
    ] {
        let err = PubSub::new()
            .add_provider(
                MqttOverWsProvider::builder(url.as_str())
                    .ca_pem(m.ca_pem.clone())
                    .build()
                    .unwrap(),
            )
            .unwrap_err();
        // TLS 1.3: the broker answers with a CertificateRequired alert.
        assert!(matches!(err, Error::Tls { .. }), "{url}: {err}");
        // The cause is kept, not only its text (in the variant's field: `source()` is
        // `None`, the message carries the cause's text).
        assert!(
            matches!(
                &err,
                Error::Tls {
                    source: Some(_),
                    ..
                }
            ),
            "{err:?}"
        );
        let (cert, key) = m.client_cert.clone();
        let ps = PubSub::new();
        ps.add_provider(
            MqttOverWsProvider::builder(url.as_str())
                .ca_pem(m.ca_pem.clone())
                .client_cert_pem(cert, key)
                .build()
                .unwrap(),
        )
        .unwrap();
        crate::support::assert_roundtrip(&ps, "mtls");
    }
}

#[test]
fn bad_tls_material_fails_when_building() {
    let build = |b: mqtt_pubsub::MqttOverWsProviderBuilder| b.build().unwrap_err();
    let e = build(MqttOverWsProvider::builder("wss://x/mqtt").ca_pem("not a pem"));
    assert!(matches!(e, Error::Tls { .. }), "{e}");
    let e = build(MqttOverWsProvider::builder("wss://x/mqtt").client_cert_pem("nope", "nope"));
    assert!(matches!(e, Error::Tls { .. }), "{e}");
}

#[test]
fn bad_urls_fail_before_connecting() {
    for url in [
        "http://x/mqtt",
        "ftp://x:1883",
        "not a url",
        "ws://",
        "mqtt://",
    ] {
        assert!(
            matches!(
                MqttOverWsProvider::builder(url).build(),
                Err(Error::InvalidUrl(_))
            ),
            "{url}"
        );
    }
}

#[test]
fn nothing_listening_is_an_io_error() {
    let port = crate::support::free_port();
    let err = PubSub::new()
        .add_provider(
            MqttOverWsProvider::builder(format!("ws://127.0.0.1:{port}/mqtt"))
                .build()
                .unwrap(),
        )
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Io {
                context: "TCP connect",
                ..
            }
        ),
        "{err}"
    );
}

/// Hundreds of providers on one `PubSub` (the registry keeps them by name as well as in
/// order): names come back in the order added, each is found by name for a publish to it
/// alone, one removed from the middle is gone from every call while its final counts stay
/// readable by name, and its name can be taken again.
#[test]
fn hundreds_of_providers_are_kept_in_order_and_by_name_mosquitto() {
    let Some(m) = Mosquitto::start() else { return };
    const N: usize = 200;
    let ps = PubSub::new();
    let states = ps.state_changes();
    for i in 0..N {
        ps.add_provider(
            MqttOverWsProvider::builder(m.mqtt_url())
                .name(format!("dev-{i}"))
                .connect_in_background(true)
                .build()
                .unwrap(),
        )
        .unwrap();
    }
    let expected: Vec<String> = (0..N).map(|i| format!("dev-{i}")).collect();
    assert_eq!(ps.provider_names(), expected);
    let mut up = std::collections::HashSet::new();
    while up.len() < N {
        let e = states.recv_timeout(WAIT).expect("every provider connects");
        if e.state == ConnectionState::Connected {
            up.insert(e.provider.clone());
        }
    }
    assert!(matches!(
        ps.add_provider(MqttOverWsProvider::builder(m.mqtt_url()).name("dev-7").build().unwrap()),
        Err(Error::DuplicateProvider(n)) if n == "dev-7"
    ));
    // A publish to one provider by name goes out on that provider alone.
    let sub = ps
        .subscribe_with("reg/#", SubscribeOptions::default().provider("dev-0"))
        .unwrap();
    ps.publish_with(
        "reg/one",
        "x",
        PublishOptions::default().provider("dev-123"),
    )
    .unwrap();
    assert_eq!(sub.recv_timeout(WAIT).unwrap().topic(), "reg/one");
    // Counters are as of each I/O thread's last turn; exact after a flush.
    ps.flush(WAIT).unwrap();
    assert_eq!(ps.stats("dev-123").unwrap().published, 1);
    assert_eq!(ps.stats("dev-124").unwrap().published, 0);
    // Removed from the middle: gone from the names, the state and a publish by name; its
    // final counts stay.
    ps.remove_provider("dev-123").unwrap();
    let names = ps.provider_names();
    assert_eq!(names.len(), N - 1);
    assert!(!names.iter().any(|n| n == "dev-123"));
    assert_eq!(names[122], "dev-122");
    assert_eq!(names[123], "dev-124");
    assert_eq!(ps.state("dev-123"), None);
    assert!(matches!(
        ps.publish_with("reg/one", "x", PublishOptions::default().provider("dev-123")),
        Err(Error::UnknownProvider(n)) if n == "dev-123"
    ));
    assert_eq!(ps.stats("dev-123").unwrap().published, 1);
    // The name is free again, and its new provider's counts replace the retired ones.
    ps.add_provider(
        MqttOverWsProvider::builder(m.mqtt_url())
            .name("dev-123")
            .build()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(ps.provider_names().last().unwrap(), "dev-123");
    assert_eq!(ps.state("dev-123"), Some(ConnectionState::Connected));
    assert_eq!(ps.stats("dev-123").unwrap().published, 0);
    // Publish to all reaches each of them once.
    ps.publish("reg/all", "y").unwrap();
    assert_eq!(sub.recv_timeout(WAIT).unwrap().topic(), "reg/all");
    ps.flush(WAIT).unwrap();
    let published: u64 = ps
        .provider_names()
        .iter()
        .map(|n| ps.stats(n).unwrap().published)
        .sum();
    assert_eq!(published, N as u64);
    ps.close().unwrap();
}

/// `close()` racing with `add_provider`: whichever comes first, no provider is left alive
/// on the closed `PubSub` (a thread and a connection nobody can use). Before: the add,
/// which checked for a close only before connecting, inserted its provider after the close
/// had taken the list, and `provider_names()` then showed it connected.
#[test]
fn a_close_racing_with_an_add_leaves_no_provider_alive_mosquitto() {
    let Some(m) = Mosquitto::start() else { return };
    for round in 0..20u64 {
        let ps = PubSub::new();
        let (p2, url) = (ps.clone(), m.ws_url());
        let adder = std::thread::spawn(move || {
            p2.add_provider(
                MqttOverWsProvider::builder(url)
                    .name("late")
                    .build()
                    .unwrap(),
            )
        });
        // Varying the interleaving, not waiting for anything.
        std::thread::sleep(Duration::from_micros(300 + 100 * round));
        let closed = ps.close();
        let added = adder.join().unwrap();
        assert!(
            ps.provider_names().is_empty() && ps.state("late").is_none(),
            "round {round}: close {closed:?}, add {added:?}, then {:?} is {:?}",
            ps.provider_names(),
            ps.state("late")
        );
        assert!(
            matches!(added, Ok(()) | Err(Error::Closed)),
            "round {round}: {added:?}"
        );
    }
}

/// Two threads adding a provider of the same name at once: one is refused before it
/// connects, so the other is never disturbed (same client id: the loser would take its
/// session over at the broker). Before: the loser connected, kicked the winner off
/// (state events for the name: a second Connected, Disconnected) and was then refused.
#[test]
fn two_adds_of_one_name_at_once_connect_once_mosquitto() {
    let Some(m) = Mosquitto::start() else { return };
    for round in 0..10 {
        let ps = PubSub::new();
        let states = ps.state_changes();
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(2));
        let adds: Vec<_> = (0..2)
            .map(|_| {
                let (ps, barrier, url) = (ps.clone(), barrier.clone(), m.ws_url());
                std::thread::spawn(move || {
                    let p = MqttOverWsProvider::builder(url)
                        .name("x")
                        .client_id(format!("same-name-{round}"))
                        .build()
                        .unwrap();
                    barrier.wait();
                    ps.add_provider(p)
                })
            })
            .collect();
        let results: Vec<_> = adds.into_iter().map(|h| h.join().unwrap()).collect();
        assert_eq!(
            results.iter().filter(|r| r.is_ok()).count(),
            1,
            "{results:?}"
        );
        assert!(
            results
                .iter()
                .any(|r| matches!(r, Err(Error::DuplicateProvider(n)) if n == "x")),
            "{results:?}"
        );
        // Every event of both adds has been sent by now (each add returns after them).
        let seen: Vec<ConnectionState> = states.try_iter().map(|e| e.state).collect();
        assert_eq!(
            seen.iter()
                .filter(|s| **s == ConnectionState::Connected)
                .count(),
            1,
            "round {round}: {seen:?}"
        );
        assert!(
            seen.iter()
                .all(|s| matches!(s, ConnectionState::Connecting | ConnectionState::Connected)),
            "round {round}: {seen:?}"
        );
        ps.close().unwrap();
    }
}

/// While a provider is being removed (its close draining), `stats` by its name gives its own
/// counts, never those of an earlier provider of the same name it replaced. Before: the
/// provider left the list before its counters were retired, and in between `stats` found
/// the replaced one's.
#[test]
fn stats_during_a_remove_are_the_removed_providers_mosquitto() {
    let Some(m) = Mosquitto::start() else { return };
    let ps = PubSub::new();
    ps.add_provider(
        MqttOverWsProvider::builder(m.ws_url())
            .name("x")
            .build()
            .unwrap(),
    )
    .unwrap();
    for _ in 0..5 {
        ps.publish("stats/r", "1").unwrap();
    }
    ps.flush(WAIT).unwrap();
    ps.remove_provider("x").unwrap();
    assert_eq!(ps.stats("x").unwrap().published, 5);
    // Its replacement publishes once to a server that never acknowledges: its close drains
    // for the close timeout.
    let fake = crate::support::fake_server::FakeServer::start(vec![
        crate::support::fake_server::Misbehaviour::NoPuback,
    ]);
    ps.add_provider(
        MqttOverWsProvider::builder(fake.url())
            .name("x")
            .close_timeout(Duration::from_secs(3))
            .build()
            .unwrap(),
    )
    .unwrap();
    let _receipt = ps
        .publish_nowait(
            "stats/r",
            "1",
            PublishOptions::default().qos(QoS::AtLeastOnce),
        )
        .unwrap();
    // Counted once its I/O thread has taken it (no event says so; polled).
    let until = Instant::now() + WAIT;
    while ps.stats("x").unwrap().published < 1 {
        assert!(Instant::now() < until, "the publish never taken");
        std::thread::sleep(Duration::from_millis(1));
    }
    let remover = {
        let ps = ps.clone();
        std::thread::spawn(move || ps.remove_provider("x"))
    };
    // Out of the list (no event says so; polled), its close still draining.
    let until = Instant::now() + WAIT;
    while ps.state("x").is_some() {
        assert!(Instant::now() < until, "never removed");
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(
        ps.stats("x").map(|s| s.published),
        Some(1),
        "stats during the remove"
    );
    let _ = remover.join().unwrap();
    assert_eq!(ps.stats("x").map(|s| s.published), Some(1), "after");
}

/// Subscribing to all providers while one of them is removed succeeds, with or without it,
/// and the removal reports no unfinished publish when there was none. Before: a subscribe
/// that reached the provider being closed failed with `Closed` (the `PubSub` was open), and
/// the remove returned a close Timeout when the subscribe's commands were still queued.
#[test]
fn subscribing_to_all_while_one_is_removed_succeeds_mosquitto() {
    let Some(m) = Mosquitto::start() else { return };
    let mut errors = Vec::new();
    for round in 0..30u64 {
        let ps = PubSub::new();
        for name in ["a", "b"] {
            ps.add_provider(
                MqttOverWsProvider::builder(m.ws_url())
                    .name(name)
                    .build()
                    .unwrap(),
            )
            .unwrap();
        }
        let subscriber = {
            let ps = ps.clone();
            std::thread::spawn(move || {
                (0..20)
                    .map(|_| ps.subscribe("race/#").map(drop))
                    .collect::<Vec<_>>()
            })
        };
        // Varying the interleaving, not waiting for anything.
        std::thread::sleep(Duration::from_micros(500 + 300 * round));
        if let Err(e) = ps.remove_provider("b") {
            errors.push(format!("round {round}: remove: {e:?}"));
        }
        for r in subscriber.join().unwrap() {
            if let Err(e) = r {
                errors.push(format!("round {round}: subscribe: {e:?}"));
            }
        }
        ps.close().unwrap();
    }
    assert!(errors.is_empty(), "{errors:?}");
}

/// A QoS 0 publish to all providers, each set to fail fast while offline, that meets one of
/// them being removed goes out on the others. Before: the removed provider's Disconnected
/// state failed the whole call (`ConnectionLost`) and the provider that stayed published
/// nothing. The publish's many topics keep it checking the eight providers before the last
/// while that one is removed; the removal starts after a range of delays, since nothing
/// signals where the publish is.
#[test]
fn a_fail_fast_publish_to_all_meeting_a_removal_goes_to_the_others_mosquitto() {
    let Some(m) = Mosquitto::start() else { return };
    const TOPICS: usize = 10_000;
    const STAYING: usize = 8;
    for delay_ms in [10, 20, 40, 80] {
        let ps = PubSub::new();
        let names = (0..STAYING)
            .map(|i| format!("a{i}"))
            .chain(["b".to_string()]);
        for name in names {
            ps.add_provider(
                MqttOverWsProvider::builder(m.mqtt_url())
                    .name(name)
                    .offline_qos0(mqtt_pubsub::OfflineQoS0::FailFast)
                    .build()
                    .unwrap(),
            )
            .unwrap();
        }
        let topics: Vec<String> = (0..TOPICS).map(|i| format!("ff/{i}")).collect();
        let publisher = {
            let ps = ps.clone();
            std::thread::spawn(move || ps.publish(topics, "x"))
        };
        std::thread::sleep(Duration::from_millis(delay_ms));
        ps.remove_provider("b").unwrap();
        let published = publisher.join().unwrap();
        assert!(
            published.is_ok(),
            "removed after {delay_ms} ms: {published:?}"
        );
        ps.flush(WAIT).unwrap();
        for i in 0..STAYING {
            assert_eq!(ps.stats(&format!("a{i}")).unwrap().published, TOPICS as u64);
        }
        ps.close().unwrap();
    }
}

/// A close that begins while `add_provider` is still connecting makes the add give up at
/// once (`Closed`) and returns only after it has: no provider connects after `close()`
/// returned. Before: the close returned at once and the add went on connecting for its
/// whole connect timeout (here 30 s, against a server that never sends CONNACK).
#[test]
fn a_close_overtaking_a_connecting_add_waits_for_it_to_give_up() {
    let server = crate::support::fake_server::FakeServer::start(vec![
        crate::support::fake_server::Misbehaviour::NoConnack,
    ]);
    let ps = PubSub::new();
    let states = ps.state_changes();
    let adder = {
        let (ps, url) = (ps.clone(), server.url());
        std::thread::spawn(move || {
            ps.add_provider(
                MqttOverWsProvider::builder(url)
                    .name("late")
                    .connect_timeout(Duration::from_secs(30))
                    .build()
                    .unwrap(),
            )
        })
    };
    let e = states
        .recv_timeout(WAIT)
        .expect("the add starts connecting");
    assert_eq!(e.state, ConnectionState::Connecting);
    let t = Instant::now();
    ps.close().unwrap();
    // Gave up well before its 30 s connect timeout (a loaded machine takes longer than
    // the 0.1 s an abandoned attempt needs, but not this long).
    assert!(t.elapsed() < Duration::from_secs(15), "{:?}", t.elapsed());
    let added = adder.join().unwrap();
    assert!(matches!(added, Err(Error::Closed)), "{added:?}");
    assert!(ps.provider_names().is_empty());
}

//! The error-message table: each connect error a user can cause, from the user's side, names
//! what failed (the URL or host:port, the limit that ran out, each URL when all fail), gives
//! a hint where the cause is likely, and says each prefix once.

use std::time::Duration;

use mqtt_pubsub::{MqttOverWsProvider, PubSub};

use crate::support::fake_server::{ws_frame, FakeServer, Misbehaviour};
use crate::support::{free_port, Mosquitto};

/// The error `add_provider` gives for `builder` (no retries: the first attempt's error).
fn first_error(builder: mqtt_pubsub::MqttOverWsProviderBuilder) -> String {
    let err = PubSub::new()
        .add_provider(builder.build().unwrap())
        .unwrap_err();
    err.to_string()
}

/// No prefix of the message (its first words, up to a colon) appears twice.
fn said_once(text: &str) {
    let prefix = text.split(':').next().unwrap_or_default();
    assert_eq!(
        text.matches(prefix).count(),
        1,
        "prefix {prefix:?} repeated: {text}"
    );
}

#[test]
fn connect_errors_name_what_failed() {
    let Some(m) = Mosquitto::start() else { return };
    let closed = free_port();
    let mut table: Vec<(&str, String, Vec<String>)> = Vec::new();
    // Nothing listens.
    let text = first_error(MqttOverWsProvider::builder(format!(
        "mqtt://127.0.0.1:{closed}"
    )));
    table.push(("refused", text, vec![format!("127.0.0.1:{closed}")]));
    // A name that does not resolve.
    let text = first_error(MqttOverWsProvider::builder(
        "mqtt://no-such-host.invalid:1883",
    ));
    table.push(("DNS", text, vec!["no-such-host.invalid".into()]));
    // A listener that accepts (the kernel's backlog) and never answers: the limit is named.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let text = first_error(
        MqttOverWsProvider::builder(format!("mqtt://127.0.0.1:{port}"))
            .connect_timeout(Duration::from_millis(1500)),
    );
    table.push((
        "timeout",
        text,
        vec![format!("127.0.0.1:{port}"), "1.5 s".into()],
    ));
    // Every URL fails: each one's own error.
    let other = free_port();
    let text = first_error(
        MqttOverWsProvider::builder(format!("mqtt://127.0.0.1:{closed}"))
            .fallback_urls([format!("ws://127.0.0.1:{other}/mqtt")]),
    );
    table.push((
        "every URL",
        text,
        vec![
            "every URL failed".into(),
            format!("127.0.0.1:{closed}"),
            format!("127.0.0.1:{other}"),
        ],
    ));
    // TLS to a plain port.
    let text = first_error(MqttOverWsProvider::builder(format!(
        "mqtts://127.0.0.1:{}",
        m.tcp_port
    )));
    table.push((
        "TLS to plain",
        text,
        vec![
            "does not speak TLS".into(),
            format!("127.0.0.1:{}", m.tcp_port),
        ],
    ));
    // Plain MQTT to mosquitto's WebSocket listener (an HTTP server): said at once, not at
    // the connect timeout.
    let started = std::time::Instant::now();
    let text = first_error(
        MqttOverWsProvider::builder(format!("mqtt://127.0.0.1:{}", m.ws_port))
            .connect_timeout(Duration::from_secs(20)),
    );
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "waited for the connect timeout: {text}"
    );
    table.push((
        "MQTT to a WebSocket listener",
        text,
        vec![format!("127.0.0.1:{}", m.ws_port)],
    ));
    // A WebSocket upgrade to an HTTP server that is no WebSocket endpoint.
    let http = crate::support::connect_proxy::ConnectProxy::start(None);
    let text = first_error(MqttOverWsProvider::builder(format!(
        "ws://127.0.0.1:{}/mqtt",
        http.port
    )));
    table.push((
        "not WebSocket",
        text,
        vec![format!("ws://127.0.0.1:{}/mqtt", http.port), "path".into()],
    ));
    // Garbage where CONNACK belongs.
    let server = FakeServer::start(vec![Misbehaviour::RawConnack(ws_frame(
        0x82,
        &[0xf0, 0x00],
    ))]);
    let text = first_error(MqttOverWsProvider::builder(server.url()));
    table.push(("not MQTT", text, vec![format!("127.0.0.1:{}", server.port)]));
    for (case, text, wanted) in &table {
        println!("{case}: {text}");
        for w in wanted {
            assert!(text.contains(w.as_str()), "{case}: {w:?} in {text}");
        }
        said_once(text);
    }
    // A URL without a scheme says what to write.
    let err = MqttOverWsProvider::builder("127.0.0.1:1883")
        .build()
        .unwrap_err()
        .to_string();
    assert!(err.contains("write mqtt://127.0.0.1:1883"), "{err}");
}

/// The hostile review's finding: a broker URL without `//` was quoted whole in the error,
/// password included. Now the credentials are left out, and a scheme of ours without its
/// `//` is said so (it was "has no scheme").
#[test]
fn a_bad_url_never_shows_its_password() {
    // The second review's: a `#` or `?` in the password, one with an unencoded `/` (which
    // parses as a port and a path), and the builder's Debug of each.
    for url in [
        "user:s3cretpassw0rd@broker:1883",
        "mqtt:user:s3cretpassw0rd@broker:1883",
        "ws:/user:s3cretpassw0rd@broker/mqtt",
        "mqtt:/user:s3cretpassw0rd@broker",
        "mqtt:user:pa#s3cretpassw0rd@broker:1883",
        "mqtt:user:pa?s3cretpassw0rd@broker:1883",
        "user:pa#s3cretpassw0rd@broker:1883",
        "mqtt://user:12/s3cretpassw0rd@broker",
    ] {
        let builder = MqttOverWsProvider::builder(url);
        let debug = format!("{builder:?}");
        assert!(!debug.contains("s3cretpassw0rd"), "{debug}");
        let e = builder.build().unwrap_err();
        let text = format!("{e} {e:?}");
        assert!(!text.contains("s3cretpassw0rd"), "{text}");
    }
    let e = MqttOverWsProvider::builder("mqtt:127.0.0.1:1883")
        .build()
        .unwrap_err()
        .to_string();
    assert!(e.contains("write mqtt://127.0.0.1:1883"), "{e}");
}

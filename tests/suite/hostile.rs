//! Hostile servers and disks, round 3 (issue 27), from the user's side: a scripted server
//! where no real one misbehaves so, crafted files where a disk would.

use std::io::Write;
use std::net::TcpListener;

use mqtt_pubsub::{Error, MqttOverWsProvider, PubSub};

use crate::support::{free_port, TempDir};

/// Answers each connection with the next raw HTTP response (after reading the request).
#[cfg(feature = "aws-iot")]
fn raw_http_server(answers: Vec<String>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for (answer, conn) in answers.into_iter().zip(listener.incoming()) {
            let mut conn = conn.unwrap();
            if crate::support::http::read_request(&mut conn).is_err() {
                continue;
            }
            let _ = conn.write_all(answer.as_bytes());
        }
    });
    format!("http://127.0.0.1:{port}/")
}

// ---- Panics ----

/// A Cognito answer whose chunk size overflows the body's running length: a credentials
/// error, on the caller's thread and through a provider. Before: "attempt to add with
/// overflow" (an out-of-range slice in a plain release build).
#[cfg(feature = "aws-iot")]
#[test]
fn a_chunked_cognito_answer_that_overflows_is_an_error_not_a_panic() {
    use mqtt_pubsub::aws::{CognitoCredentials, CredentialsProvider};
    use mqtt_pubsub::AwsIotProvider;
    let answer =
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\n{\r\nffffffffffffffff\r\n";
    let url = raw_http_server(vec![answer.to_string()]);
    let err = CognitoCredentials::unauthenticated("us-east-1:pool")
        .endpoint(url)
        .credentials()
        .unwrap_err();
    assert!(matches!(err, Error::Credentials(_)), "{err}");
    let url = raw_http_server(vec![answer.to_string()]);
    let err = PubSub::new()
        .add_provider(
            AwsIotProvider::builder("wss://127.0.0.1:1/mqtt")
                .region("us-east-1")
                .credentials(CognitoCredentials::unauthenticated("us-east-1:pool").endpoint(url))
                .build()
                .unwrap(),
        )
        .unwrap_err();
    assert!(matches!(err, Error::Credentials(_)), "{err}");
}

/// An outbox log whose publish carries ticket `u64::MAX` (crafted, or a flipped bit) is
/// `Error::Outbox` from `add_provider`. Before: "connecting panicked" with overflow checks;
/// in release the next ticket wrapped to 0 and the outbox was unusable for good.
#[test]
fn an_outbox_ticket_of_u64_max_is_an_outbox_error_not_a_panic() {
    use mqtt_pubsub::internals::outbox_log::{encode, Record, MAGIC};
    let dir = TempDir::new("ticket-max");
    let url = format!("ws://127.0.0.1:{}/", free_port());
    let mut log = MAGIC.to_vec();
    encode(
        &Record::Binding {
            client_id: "crafted".into(),
            url: url.clone(),
        },
        &mut log,
    );
    encode(
        &Record::Publish {
            ticket: u64::MAX,
            qos: 1,
            retain: false,
            topic: "t".into(),
            payload: b"x".to_vec(),
            props: Vec::new(),
        },
        &mut log,
    );
    std::fs::write(dir.path().join("outbox.log"), &log).unwrap();
    let err = PubSub::new()
        .add_provider(
            MqttOverWsProvider::builder(&url)
                .client_id("crafted")
                .outbox(dir.path())
                .build()
                .unwrap(),
        )
        .unwrap_err();
    assert!(
        matches!(&err, Error::Outbox { message, .. } if message.contains("impossible ticket")),
        "{err}"
    );
}

// ---- Deadlines: close() abandons an attempt in every blocking step ----

/// How long `close()` takes while the provider's attempt is stuck in `stuck`; the README
/// promises 0.1 s ("a connection attempt in progress is abandoned within 0.1 s").
fn close_while_connecting(provider: impl mqtt_pubsub::Provider) -> std::time::Duration {
    use mqtt_pubsub::ConnectionState;
    let ps = PubSub::new();
    let states = ps.state_changes();
    ps.add_provider(provider).unwrap();
    loop {
        let e = states
            .recv_timeout(std::time::Duration::from_secs(20))
            .unwrap();
        if e.state == ConnectionState::Connecting {
            break;
        }
    }
    // The attempt is under way (inside the blocking step: nothing answers there).
    std::thread::sleep(std::time::Duration::from_millis(300));
    let start = std::time::Instant::now();
    let _ = ps.close();
    start.elapsed()
}

/// close() while the attempt is inside the TCP handshake (SYNs dropped) with a 10 s
/// connect timeout. Before: 9 s (std's connect_timeout cannot be interrupted).
#[test]
fn close_abandons_an_attempt_inside_the_tcp_connect() {
    let (_hang, port) = crate::support::hanging_port();
    let took = close_while_connecting(
        MqttOverWsProvider::builder(format!("ws://127.0.0.1:{port}/"))
            .connect_in_background(true)
            .connect_timeout(std::time::Duration::from_secs(10))
            .build()
            .unwrap(),
    );
    // The promise is 0.1 s; the bound leaves a loaded machine headroom and catches the
    // 10 s the connect timeout would take.
    assert!(took < std::time::Duration::from_secs(3), "{took:?}");
}

/// close() while the attempt is inside a Cognito call: its TCP connect, then its wait for
/// an answer that never comes. Before: the call ran to the connect timeout (10 s).
#[cfg(feature = "aws-iot")]
#[test]
fn close_abandons_an_attempt_inside_a_cognito_call() {
    use mqtt_pubsub::aws::CognitoCredentials;
    use mqtt_pubsub::AwsIotProvider;
    let (_hang, hanging) = crate::support::hanging_port();
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    std::thread::spawn(move || {
        // Accepts, reads, never answers.
        let held: Vec<_> = silent.incoming().take(4).collect();
        std::thread::sleep(std::time::Duration::from_secs(60));
        drop(held);
    });
    for endpoint in [
        format!("http://127.0.0.1:{hanging}/"),
        format!("http://127.0.0.1:{silent_port}/"),
    ] {
        let took = close_while_connecting(
            AwsIotProvider::builder("wss://127.0.0.1:1/mqtt")
                .region("us-east-1")
                .credentials(
                    CognitoCredentials::unauthenticated("us-east-1:pool").endpoint(&endpoint),
                )
                .connect_in_background(true)
                .connect_timeout(std::time::Duration::from_secs(10))
                .build()
                .unwrap(),
        );
        assert!(
            took < std::time::Duration::from_secs(3),
            "{endpoint}: {took:?}"
        );
    }
}

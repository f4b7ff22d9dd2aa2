//! No password, secret key, session token or signature appears in any log line, at any
//! level, from this crate or its dependencies, on success and on failure.
//! Alone in its binary: it installs the process-wide logger.
#![cfg(feature = "aws-iot")]

// Only a part of the shared support is used here (it uses a part of the shared support).
#[allow(dead_code, unused_imports)]
mod support;

use std::sync::Mutex;

use std::io::Write;

use mqtt_pubsub::aws::{CognitoCredentials, CredentialsProvider, StaticCredentials};
use mqtt_pubsub::{
    AwsIotProvider, CustomAuthorizer, MqttOverWsProvider, PubSub, PublishOptions, QoS,
};
use support::connect_proxy::ConnectProxy;
use support::fake_server::{FakeServer, Misbehaviour};
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

const PASSWORD: &str = "pw-7Hq2LmZx90";
const SECRET_KEY: &str = "sk-Rt5Vn8Wc31";
const PROXY_PASSWORD: &str = "pp-Hy3Qe7Zm52";
const TOKEN: &str = "tk-Jd4Pg6Ys27";
const LOGIN_TOKEN: &str = "lt-Bm3Xw9Qe58";
const COGNITO_SECRET: &str = "cs-Nf6Ua2Hk74";
const COGNITO_TOKEN: &str = "ct-Ge8Zr5Tp13";
const QUERY_TOKEN: &str = "qt-Wy1Kc7Dv66";
const HEADER_TOKEN: &str = "ht-Ls9Fb4Mj85";

/// A Cognito stub: GetId, then credentials holding `COGNITO_SECRET` and `COGNITO_TOKEN`.
fn cognito_stub() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!(
        "http://127.0.0.1:{}/",
        listener.local_addr().unwrap().port()
    );
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let mut conn = conn.unwrap();
            let Ok(req) = support::http::read_request(&mut conn) else {
                continue;
            };
            let body = if req.contains("GetId") {
                r#"{"IdentityId":"us-east-1:log"}"#.to_string()
            } else {
                format!(
                    r#"{{"Credentials":{{"AccessKeyId":"AKIDCOG","SecretKey":"{COGNITO_SECRET}","SessionToken":"{COGNITO_TOKEN}","Expiration":4102444800.0}}}}"#
                )
            };
            let _ = write!(
                conn,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    url
}

/// Answers each connection once with `answer` (after reading what comes, up to a blank
/// line). Returns the port.
fn raw_server(answer: String) -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let mut conn = conn.unwrap();
            let _ = support::http::read_request(&mut conn);
            let _ = conn.write_all(answer.as_bytes());
        }
    });
    port
}

fn base64(input: &[u8]) -> String {
    const TABLE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    input
        .chunks(3)
        .flat_map(|c| {
            let b = [c[0], *c.get(1).unwrap_or(&0), *c.get(2).unwrap_or(&0)];
            let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
            (0..4).map(move |i| {
                if i <= c.len() {
                    TABLE[(n >> (18 - 6 * i) & 63) as usize] as char
                } else {
                    '='
                }
            })
        })
        .collect()
}

/// Hostile echoes; returns every error and state-event text they produced (the caller logs
/// them, as an application would). Each is checked here to be one short line.
fn hostile_echoes() -> Vec<String> {
    use mqtt_pubsub::{ConnectionState, MqttVersion};
    let mut shown = Vec::new();
    // Cognito: an error whose message echoes the login token, with a newline, ESC and a
    // U+2028, 100 KiB long; at an endpoint URL carrying credentials and a token.
    let echo = format!(
        "Invalid login token {LOGIN_TOKEN}\nERROR forged line \u{1b}[31m\u{2028}{}",
        "x".repeat(100 * 1024)
    );
    let body = serde_json::json!({"__type": "NotAuthorizedException", "message": echo}).to_string();
    let port = raw_server(format!(
        "HTTP/1.1 400 Bad\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    ));
    let cognito = CognitoCredentials::authenticated(
        "us-east-1:pool",
        [("accounts.example.com".to_string(), LOGIN_TOKEN.to_string())],
    )
    .endpoint(format!(
        "http://user:{PROXY_PASSWORD}@127.0.0.1:{port}/?X-Amz-Security-Token={TOKEN}"
    ));
    shown.push(cognito.credentials().unwrap_err().to_string());
    // A proxy whose 407 reason phrase echoes our Proxy-Authorization.
    let basic = base64(format!("puser:{PROXY_PASSWORD}").as_bytes());
    let port = raw_server(format!(
        "HTTP/1.1 407 Proxy-Authorization: Basic {basic}\u{2028}forged\r\n\r\n"
    ));
    let ps = PubSub::new();
    let states = ps.state_changes();
    let err = ps
        .add_provider(
            MqttOverWsProvider::builder("ws://127.0.0.1:1/mqtt")
                .proxy(format!("http://puser:{PROXY_PASSWORD}@127.0.0.1:{port}"))
                .build()
                .unwrap(),
        )
        .unwrap_err();
    shown.push(format!("{err} / {err:?}"));
    shown.extend(states.try_iter().filter_map(|e| e.reason));
    // An MQTT 5 CONNACK refusing us with a reason string that quotes our CONNECT's password.
    let url = support::v5_server::start(|mut peer| {
        peer.read();
        let reason = format!("bad password {PASSWORD}\nERROR forged");
        let mut props = vec![0x1f, 0, reason.len() as u8];
        props.extend_from_slice(reason.as_bytes());
        let mut p = vec![0x20, (3 + props.len()) as u8, 0, 0x86, props.len() as u8];
        p.extend_from_slice(&props);
        peer.send(&p);
    });
    let ps = PubSub::new();
    let states = ps.state_changes();
    let err = ps
        .add_provider(
            MqttOverWsProvider::builder(url)
                .mqtt_version(MqttVersion::V5)
                .username_password("alice", PASSWORD)
                .build()
                .unwrap(),
        )
        .unwrap_err();
    shown.push(format!("{err} / {err:?}"));
    shown.extend(
        states
            .try_iter()
            .filter(|e| e.state != ConnectionState::Connecting)
            .filter_map(|e| e.reason),
    );
    // A 101 whose subprotocol echoes our Authorization header, 12 KB long (found by the
    // hostile review: that error text was neither capped nor redacted).
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        if let Some(Ok(mut conn)) = listener.incoming().next() {
            let req = support::http::read_request(&mut conn).unwrap_or_default();
            let key = req
                .lines()
                .find_map(|l| l.strip_prefix("Sec-WebSocket-Key: "))
                .unwrap_or("")
                .trim()
                .to_string();
            let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
            let _ = write!(
                conn,
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                 Sec-WebSocket-Accept: {accept}\r\nSec-WebSocket-Protocol: Bearer {HEADER_TOKEN} {}\r\n\r\n",
                "A".repeat(12_000)
            );
        }
    });
    let err = PubSub::new()
        .add_provider(
            MqttOverWsProvider::builder(format!("ws://127.0.0.1:{port}/mqtt"))
                .header("Authorization", format!("Bearer {HEADER_TOKEN}"))
                .reconnect(mqtt_pubsub::ReconnectPolicy::disabled())
                .build()
                .unwrap(),
        )
        .unwrap_err();
    shown.push(format!("{err} / {err:?}"));
    for text in &shown {
        let head: String = text.chars().take(300).collect();
        assert!(
            !text.contains('\n') && !text.contains('\u{1b}') && !text.contains('\u{2028}'),
            "unescaped server text: {head:?}"
        );
        assert!(text.len() < 2048, "a {} byte text: {head:?}", text.len());
        for secret in [
            LOGIN_TOKEN,
            PROXY_PASSWORD,
            PASSWORD,
            TOKEN,
            HEADER_TOKEN,
            basic.as_str(),
        ] {
            assert!(!text.contains(secret), "{secret:?} shown: {head}");
        }
    }
    assert!(shown.len() >= 3, "{shown:?}");
    shown
}

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

    // An HTTP proxy's password: a tunnel made, then refused (the application logs the error),
    // and the builder's Debug.
    let proxy = ConnectProxy::start(Some(("puser", PROXY_PASSWORD)));
    let via_proxy = || {
        MqttOverWsProvider::builder(b.ws_url())
            .username_password("alice", PASSWORD)
            .proxy(proxy.url(Some(("puser", PROXY_PASSWORD))))
    };
    log::debug!("a builder with a proxy: {:?}", via_proxy());
    let ps = PubSub::new();
    ps.add_provider(via_proxy().build().unwrap()).unwrap();
    ps.publish("log/proxy", "x").unwrap();
    ps.close().unwrap();
    assert_eq!(proxy.seen().len(), 1, "the tunnel was used");
    proxy.refuse_with(403);
    let err = PubSub::new()
        .add_provider(via_proxy().build().unwrap())
        .unwrap_err();
    log::error!("the application logs the error: {err} / {err:?}");

    // Cognito: login tokens go out, secret keys and session tokens come back.
    let cognito = CognitoCredentials::authenticated(
        "us-east-1:pool",
        [("accounts.example.com".to_string(), LOGIN_TOKEN.to_string())],
    )
    .endpoint(cognito_stub());
    let creds = cognito.credentials().unwrap();
    assert_eq!(creds.secret_access_key(), COGNITO_SECRET);

    // A server echoing our request line (with its query token) in a 403 body.
    let echo = FakeServer::start(vec![Misbehaviour::HttpStatusEcho(403)]);
    let err = PubSub::new()
        .add_provider(
            MqttOverWsProvider::builder(format!(
                "ws://127.0.0.1:{}/mqtt?token={QUERY_TOKEN}",
                echo.port
            ))
            .build()
            .unwrap(),
        )
        .unwrap_err();
    log::error!("the application logs the error: {err} / {err:?}");

    // A server whose close reason holds a newline (a forged log line).
    let closer = FakeServer::start(vec![Misbehaviour::CloseWithReason(
        "bye\nERROR forged".into(),
    )]);
    let ps = PubSub::new();
    let states = ps.state_changes();
    ps.add_provider(MqttOverWsProvider::builder(closer.url()).build().unwrap())
        .unwrap();
    while states
        .recv_timeout(std::time::Duration::from_secs(10))
        .unwrap()
        .state
        != mqtt_pubsub::ConnectionState::ConnectionDisrupted
    {}
    ps.close().unwrap();

    // Issue 27, items 4 and 5: servers that echo what we sent them, with line breaks and
    // escape sequences, into the errors, state events and log lines that carry their text.
    let shown = hostile_echoes();
    for text in &shown {
        log::error!("the application logs what it was told: {text}");
    }

    // Every public type's Debug, as an application might log it.
    let ws_builder = || {
        MqttOverWsProvider::builder(format!(
            "ws://alice:{PASSWORD}@127.0.0.1:1/mqtt?token={QUERY_TOKEN}"
        ))
        .username_password("alice", PASSWORD)
        .header("Authorization", HEADER_TOKEN)
    };
    let authorizer = CustomAuthorizer::new("auth")
        .token("tok", QUERY_TOKEN)
        .signature(HEADER_TOKEN);
    let aws_builder = || {
        AwsIotProvider::builder(format!("wss://127.0.0.1:1/mqtt?x={QUERY_TOKEN}"))
            .region("us-east-1")
            .credentials(StaticCredentials::new("AKIDDBG", SECRET_KEY).session_token(TOKEN))
    };
    let debugs = [
        format!("{:?}", ws_builder()),
        format!("{:?}", ws_builder().build().unwrap()),
        format!("{:?}", aws_builder()),
        format!("{:?}", aws_builder().build().unwrap()),
        format!(
            "{:?}",
            AwsIotProvider::builder("a.iot.us-east-1.amazonaws.com")
                .custom_authorizer(authorizer.clone())
        ),
        format!("{authorizer:?}"),
        // Over MQTT the token and signature ride in the username.
        format!(
            "{:?}",
            AwsIotProvider::builder("a.iot.us-east-1.amazonaws.com")
                .custom_authorizer(authorizer.clone().over_mqtt(true))
                .build()
                .unwrap()
        ),
        format!(
            "{:?}",
            StaticCredentials::new("AKIDDBG", SECRET_KEY).session_token(TOKEN)
        ),
        format!("{creds:?}"),
        format!("{cognito:?}"),
    ];
    for d in debugs {
        log::debug!("debug of a public value: {d}");
    }

    let lines = LINES.lock().unwrap();
    // One record of ours, one line: nothing a server says forges another (tungstenite's own
    // trace records of frames span lines by design).
    for line in lines.iter().filter(|l| {
        l.split(' ')
            .nth(1)
            .is_some_and(|t| t.starts_with("mqtt_pubsub"))
    }) {
        assert!(!line.contains('\n'), "a log record spans lines: {line:?}");
    }
    // Secrets split across lines or hex-dumped (16 bytes a row) are found too: every 8-byte
    // piece of every secret is looked for in all output joined, with and without the
    // layout, as text and as hex.
    let joined: String = lines.join("");
    let bare: String = joined.chars().filter(|c| !c.is_whitespace()).collect();
    let bare_lower = bare.to_ascii_lowercase();
    for secret in [
        PASSWORD,
        PROXY_PASSWORD,
        SECRET_KEY,
        TOKEN,
        LOGIN_TOKEN,
        COGNITO_SECRET,
        COGNITO_TOKEN,
        QUERY_TOKEN,
        HEADER_TOKEN,
    ] {
        for piece in secret.as_bytes().windows(8) {
            let text = std::str::from_utf8(piece).unwrap();
            let hex: String = piece.iter().map(|b| format!("{b:02x}")).collect();
            assert!(
                !bare.contains(text) && !bare_lower.contains(&hex),
                "output reveals {text:?} of {secret:?}"
            );
        }
    }
    assert!(
        lines.len() > 10,
        "the logger saw the traffic ({} lines)",
        lines.len()
    );
    for line in lines.iter() {
        for secret in [
            PASSWORD,
            PROXY_PASSWORD,
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

//! AWS IoT end to end without AWS: a loopback gateway that verifies the presigned URL with an
//! independent verifier and relays to mosquitto; Cognito through moto's server; Cognito
//! errors through a stub (moto answers those with HTTP 500).
#![cfg(feature = "aws-iot")]

use std::collections::HashMap;
use std::io::Write;
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::support::gateway::{verify, Gateway};
use crate::support::{make_certs, Mosquitto, Moto, TempDir};
use mqtt_pubsub::aws::{
    parse_amz_date, CognitoCredentials, Credentials, CredentialsProvider, StaticCredentials,
};
use mqtt_pubsub::{
    AwsIotProvider, ConnectionState, Error, PubSub, PublishOptions, QoS, ReconnectPolicy,
};

const WAIT: Duration = Duration::from_secs(20);

#[test]
fn the_gateway_verifier_accepts_the_botocore_vectors() {
    // The verifier is independent of the signer: check it against the shared vectors first.
    let v: serde_json::Value =
        serde_json::from_str(include_str!("../vectors/aws-iot-presign.json")).unwrap();
    for t in v["vectors"].as_array().unwrap() {
        let i = &t["inputs"];
        let url = t["expected_url"].as_str().unwrap();
        let rest = url.strip_prefix("wss://").unwrap();
        let (authority, target) = rest.split_at(rest.find('/').unwrap());
        let keys = HashMap::from([(
            i["access_key"].as_str().unwrap().to_string(),
            (
                i["secret_key"].as_str().unwrap().to_string(),
                i["session_token"].as_str().map(String::from),
            ),
        )]);
        let at = parse_amz_date(i["timestamp"].as_str().unwrap()).unwrap();
        let region = i["region"].as_str().unwrap();
        assert_eq!(
            verify(target, authority, region, &keys, at).unwrap(),
            i["access_key"].as_str().unwrap()
        );
        // And refuses a tampered one.
        let tampered = target.replace("X-Amz-Date=20", "X-Amz-Date=21");
        assert!(verify(&tampered, authority, region, &keys, at).is_err());
    }
}

struct Setup {
    gateway: Gateway,
    ca_pem: Vec<u8>,
    _mosquitto: Mosquitto,
    _dir: TempDir,
}

fn setup() -> Option<Setup> {
    let mosquitto = Mosquitto::start()?;
    let dir = TempDir::new("gateway");
    let certs = make_certs(dir.path());
    let gateway = Gateway::start(&certs, "us-east-1", mosquitto.ws_port);
    Some(Setup {
        gateway,
        ca_pem: certs.ca_pem,
        _mosquitto: mosquitto,
        _dir: dir,
    })
}

fn provider(s: &Setup, creds: impl CredentialsProvider) -> AwsIotProvider {
    AwsIotProvider::builder(s.gateway.url())
        .region("us-east-1")
        .ca_pem(s.ca_pem.clone())
        .credentials(creds)
        .reconnect(ReconnectPolicy::exponential(
            Duration::from_millis(50),
            Duration::from_millis(300),
        ))
        .build()
        .unwrap()
}

fn roundtrip(ps: &PubSub) {
    let m = crate::support::assert_roundtrip(ps, "aws/test");
    assert_eq!(m.provider(), "AWSIoTProvider");
}

#[test]
fn a_good_signature_connects_and_pubsub_works() {
    let Some(s) = setup() else { return };
    s.gateway
        .allow("AKIDGOOD", "good-secret", Some("session/token+="));
    let ps = PubSub::new();
    ps.add_provider(provider(
        &s,
        StaticCredentials::new("AKIDGOOD", "good-secret").session_token("session/token+="),
    ))
    .unwrap();
    roundtrip(&ps);
    assert_eq!(s.gateway.seen(), ["AKIDGOOD"]);
}

/// The same, speaking MQTT 5 over the SigV4-presigned URL (as AWS IoT Core allows), with a
/// user property and a content type through the gateway.
#[test]
fn a_good_signature_connects_and_pubsub_works_in_mqtt5() {
    let Some(s) = setup() else { return };
    s.gateway.allow("AKIDGOOD", "good-secret", None);
    let ps = PubSub::new();
    ps.add_provider(
        AwsIotProvider::builder(s.gateway.url())
            .region("us-east-1")
            .ca_pem(s.ca_pem.clone())
            .credentials(StaticCredentials::new("AKIDGOOD", "good-secret"))
            .mqtt_version(mqtt_pubsub::MqttVersion::V5)
            .build()
            .unwrap(),
    )
    .unwrap();
    roundtrip(&ps);
    let sub = ps.subscribe("aws/v5").unwrap();
    let opts = mqtt_pubsub::PublishOptions::default()
        .qos(mqtt_pubsub::QoS::AtLeastOnce)
        .user_property("device", "d-1")
        .content_type("application/json");
    ps.publish_with("aws/v5", "{}", opts).unwrap();
    let m = sub.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(m.user_properties().collect::<Vec<_>>(), [("device", "d-1")]);
    assert_eq!(m.content_type(), Some("application/json"));
}

#[test]
fn a_wrong_secret_is_refused_with_403_and_guidance() {
    let Some(s) = setup() else { return };
    s.gateway.allow("AKIDGOOD", "good-secret", None);
    let err = PubSub::new()
        .add_provider(provider(
            &s,
            StaticCredentials::new("AKIDGOOD", "wrong-secret"),
        ))
        .unwrap_err();
    assert!(
        matches!(&err, Error::HandshakeRejected { status: 403, .. }),
        "{err}"
    );
    let text = err.to_string();
    assert!(
        text.contains("policy") && text.contains("us-east-1"),
        "{text}"
    );
    assert!(!text.contains("wrong-secret"));
    assert_eq!(s.gateway.refusals().len(), 1);
    assert!(
        s.gateway.refusals()[0].contains("signature"),
        "{:?}",
        s.gateway.refusals()
    );
}

#[test]
fn a_clock_the_gateway_calls_skewed_is_named_in_the_error() {
    let Some(s) = setup() else { return };
    s.gateway.allow("AKIDGOOD", "good-secret", None);
    s.gateway.skew_clock(900);
    let err = PubSub::new()
        .add_provider(provider(
            &s,
            StaticCredentials::new("AKIDGOOD", "good-secret"),
        ))
        .unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(err, Error::HandshakeRejected { status: 403, .. }),
        "{text}"
    );
    assert!(
        text.contains("check the system clock") && text.contains("Signature expired"),
        "{text}"
    );
}

/// Gives the next credentials on every call.
struct Rotating {
    list: Vec<Credentials>,
    calls: AtomicUsize,
}

impl CredentialsProvider for Rotating {
    fn credentials(&self) -> mqtt_pubsub::Result<Credentials> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        Ok(self.list[n.min(self.list.len() - 1)].clone())
    }
}

#[test]
fn credentials_that_change_are_used_on_the_reconnect() {
    let Some(s) = setup() else { return };
    s.gateway.allow("AKIDFIRST", "first-secret", None);
    s.gateway.allow("AKIDSECOND", "second-secret", Some("tok2"));
    let rotating = Arc::new(Rotating {
        list: vec![
            Credentials::new("AKIDFIRST", "first-secret", None),
            Credentials::new("AKIDSECOND", "second-secret", Some("tok2".into())),
        ],
        calls: AtomicUsize::new(0),
    });
    let ps = PubSub::new();
    let states = ps.state_changes();
    ps.add_provider(provider(&s, rotating.clone())).unwrap();
    let sub = ps.subscribe("aws/rotate").unwrap();
    s.gateway.cut_all();
    loop {
        let e = states.recv_timeout(WAIT).unwrap();
        if e.state == ConnectionState::ConnectionDisrupted {
            break;
        }
    }
    loop {
        let e = states.recv_timeout(WAIT).unwrap();
        if e.state == ConnectionState::Connected {
            break;
        }
    }
    assert_eq!(
        s.gateway.seen(),
        ["AKIDFIRST", "AKIDSECOND"],
        "signed afresh with the new credentials"
    );
    assert_eq!(rotating.calls.load(Ordering::SeqCst), 2);
    ps.publish_with(
        "aws/rotate",
        "again",
        PublishOptions::default().qos(QoS::AtLeastOnce),
    )
    .unwrap();
    assert_eq!(
        sub.recv_timeout(WAIT).unwrap().payload(),
        b"again",
        "resubscribed after the re-signed reconnect"
    );
}

#[test]
fn expired_credentials_are_reported_as_such() {
    let Some(s) = setup() else { return };
    let expired = Credentials::new("AKIDOLD", "s", None)
        .with_expiration(SystemTime::now() - Duration::from_secs(60));
    let err = PubSub::new()
        .add_provider(provider(&s, expired))
        .unwrap_err();
    assert!(
        matches!(&err, Error::Credentials(m) if m.contains("expired")),
        "{err}"
    );
}

#[test]
fn aws_iot_limits_are_checked_before_sending() {
    let Some(s) = setup() else { return };
    s.gateway.allow("AKIDGOOD", "good-secret", None);
    let ps = PubSub::new();
    ps.add_provider(provider(
        &s,
        StaticCredentials::new("AKIDGOOD", "good-secret"),
    ))
    .unwrap();
    assert!(matches!(
        ps.publish("a/b/c/d/e/f/g/h/i", "x"),
        Err(Error::InvalidTopic { .. })
    ));
    assert!(matches!(
        ps.publish("t".repeat(257), "x"),
        Err(Error::InvalidTopic { .. })
    ));
    assert!(matches!(
        ps.publish("t", vec![0u8; 128 * 1024 + 1]),
        Err(Error::PayloadTooLarge { .. })
    ));
    assert!(matches!(
        ps.publish_with("t", "x", PublishOptions::default().qos(QoS::ExactlyOnce)),
        Err(Error::Unsupported(_))
    ));
    // Twelve filters: split into SUBSCRIBEs of at most 8, all acknowledged.
    let filters: Vec<String> = (0..12).map(|i| format!("many/{i}")).collect();
    let sub = ps.subscribe(filters).unwrap();
    ps.publish_with(
        "many/11",
        "last",
        PublishOptions::default().qos(QoS::AtLeastOnce),
    )
    .unwrap();
    assert_eq!(sub.recv_timeout(WAIT).unwrap().topic(), "many/11");
}

pub(crate) fn create_pool(moto: &Moto) -> String {
    let mut resp = ureq::post(moto.url())
        .header(
            "X-Amz-Target",
            "AWSCognitoIdentityService.CreateIdentityPool",
        )
        .header("Content-Type", "application/x-amz-json-1.1")
        .send(r#"{"IdentityPoolName":"mqtt_pubsub_test","AllowUnauthenticatedIdentities":true}"#)
        .unwrap();
    let v: serde_json::Value =
        serde_json::from_str(&resp.body_mut().read_to_string().unwrap()).unwrap();
    v["IdentityPoolId"].as_str().unwrap().to_string()
}

#[test]
fn cognito_credentials_from_moto_connect_through_the_gateway() {
    let Some(s) = setup() else { return };
    let Some(moto) = Moto::start() else { return };
    let pool = create_pool(&moto);
    let cognito = Arc::new(CognitoCredentials::unauthenticated(pool).endpoint(moto.url()));
    let creds = cognito.credentials().unwrap();
    assert!(creds.session_token().is_some() && creds.expiration().is_some());
    let identity = cognito.identity_id().expect("the identity id is kept");
    // moto's credentials expire ~20 s after issue, inside the 5-minute refresh margin: the
    // next call fetches again, for the same identity (caching is tested against the stub).
    assert_eq!(
        cognito.credentials().unwrap().access_key_id(),
        creds.access_key_id()
    );
    assert_eq!(cognito.identity_id().unwrap(), identity);
    s.gateway.allow(
        creds.access_key_id(),
        creds.secret_access_key(),
        creds.session_token(),
    );
    let ps = PubSub::new();
    ps.add_provider(provider(&s, cognito)).unwrap();
    roundtrip(&ps);
}

/// One HTTP answer per connection, from a fixed list.
fn stub_server(answers: Vec<(u16, &'static str)>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for ((status, body), conn) in answers.into_iter().zip(listener.incoming()) {
            let mut conn = conn.unwrap();
            // The whole request first: closing with part of it unread resets the connection.
            if crate::support::http::read_request(&mut conn).is_err() {
                continue;
            }
            let _ = write!(
                conn,
                "HTTP/1.1 {status} X\r\nContent-Type: application/x-amz-json-1.1\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    format!("http://127.0.0.1:{port}/")
}

#[test]
fn cognito_errors_surface_their_type_and_message() {
    let url = stub_server(vec![(
        400,
        r#"{"__type":"NotAuthorizedException","message":"Unauthenticated access is not supported for this identity pool."}"#,
    )]);
    let err = CognitoCredentials::unauthenticated("us-east-1:pool")
        .endpoint(url)
        .credentials()
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("NotAuthorizedException") && text.contains("Unauthenticated access"),
        "{text}"
    );

    let url = stub_server(vec![
        (200, r#"{"IdentityId":"us-east-1:id"}"#),
        (
            400,
            r#"{"__type":"com.amazonaws#ResourceNotFoundException","message":"Identity 'x' not found."}"#,
        ),
    ]);
    let err = CognitoCredentials::unauthenticated("us-east-1:pool")
        .endpoint(url)
        .credentials()
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("GetCredentialsForIdentity: ResourceNotFoundException"),
        "{err}"
    );

    let url = stub_server(vec![(500, "<html>Internal Server Error</html>")]);
    let err = CognitoCredentials::unauthenticated("us-east-1:pool")
        .endpoint(url)
        .credentials()
        .unwrap_err();
    assert!(err.to_string().contains("HTTP 500"), "{err}");

    let err = CognitoCredentials::unauthenticated("us-east-1:pool")
        .endpoint(format!("http://127.0.0.1:{}/", crate::support::free_port()))
        .credentials()
        .unwrap_err();
    assert!(matches!(err, Error::Credentials(_)), "{err}");
}

fn creds_answer(key: &str, expires_in_secs: u64) -> &'static str {
    let exp = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + expires_in_secs;
    let body = format!(
        r#"{{"IdentityId":"us-east-1:id","Credentials":{{"AccessKeyId":"{key}","SecretKey":"s","SessionToken":"t","Expiration":{exp}.5}}}}"#
    );
    Box::leak(body.into_boxed_str())
}

#[test]
fn cognito_credentials_are_cached_until_five_minutes_before_expiry() {
    // GetId once, then one GetCredentialsForIdentity; a further request would find no server.
    let url = stub_server(vec![
        (200, r#"{"IdentityId":"us-east-1:id"}"#),
        (200, creds_answer("AKIDCACHED", 3600)),
    ]);
    let c = CognitoCredentials::unauthenticated("us-east-1:pool").endpoint(url);
    let first = c.credentials().unwrap();
    assert_eq!(c.credentials().unwrap(), first);
    assert_eq!(first.access_key_id(), "AKIDCACHED");
    assert_eq!(c.identity_id().as_deref(), Some("us-east-1:id"));
}

#[test]
fn cognito_credentials_are_refreshed_ahead_of_expiry_for_the_same_identity() {
    let url = stub_server(vec![
        (200, r#"{"IdentityId":"us-east-1:id"}"#),
        (200, creds_answer("AKIDSOON", 60)),
        // No second GetId: the next request is GetCredentialsForIdentity.
        (200, creds_answer("AKIDFRESH", 3600)),
    ]);
    let c = CognitoCredentials::unauthenticated("us-east-1:pool").endpoint(url);
    assert_eq!(c.credentials().unwrap().access_key_id(), "AKIDSOON");
    assert_eq!(c.credentials().unwrap().access_key_id(), "AKIDFRESH");
}

#[test]
fn a_cognito_that_never_answers_is_bounded_by_the_connect_deadline() {
    // Accepts, reads the request, answers nothing.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!(
        "http://127.0.0.1:{}/",
        listener.local_addr().unwrap().port()
    );
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in listener.incoming().take(4) {
            let mut conn = conn.unwrap();
            let _ = crate::support::http::read_request(&mut conn);
            held.push(conn);
        }
    });
    let start = std::time::Instant::now();
    let err = PubSub::new()
        .add_provider(
            AwsIotProvider::builder("wss://127.0.0.1:1/mqtt")
                .region("us-east-1")
                .credentials(CognitoCredentials::unauthenticated("us-east-1:pool").endpoint(url))
                .connect_timeout(Duration::from_secs(2))
                .build()
                .unwrap(),
        )
        .unwrap_err();
    // Before: ureq's own 15 s per call, outside the connect deadline (2 s here).
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "{:?}",
        start.elapsed()
    );
    assert!(matches!(err, Error::Credentials(_)), "{err}");
}

#[test]
fn an_out_of_range_cognito_expiration_is_a_credentials_error_not_a_panic() {
    for expiration in ["1e300", "1e19", "-5"] {
        let creds: &'static str = Box::leak(
            format!(
                r#"{{"Credentials":{{"AccessKeyId":"AKIDX","SecretKey":"s","SessionToken":"t","Expiration":{expiration}}}}}"#
            )
            .into_boxed_str(),
        );
        let url = stub_server(vec![
            (200, r#"{"IdentityId":"us-east-1:id"}"#),
            (200, creds),
        ]);
        let err = CognitoCredentials::unauthenticated("us-east-1:pool")
            .endpoint(url.clone())
            .credentials()
            .unwrap_err();
        assert!(
            matches!(&err, Error::Credentials(m) if m.contains("Expiration")),
            "{expiration}: {err}"
        );
        // Through a provider: a clear error from add_provider, not `Closed` from a dead thread.
        let url = stub_server(vec![
            (200, r#"{"IdentityId":"us-east-1:id"}"#),
            (200, creds),
        ]);
        let err = PubSub::new()
            .add_provider(
                AwsIotProvider::builder("wss://127.0.0.1:1/mqtt")
                    .region("us-east-1")
                    .credentials(
                        CognitoCredentials::unauthenticated("us-east-1:pool").endpoint(url),
                    )
                    .build()
                    .unwrap(),
            )
            .unwrap_err();
        assert!(matches!(err, Error::Credentials(_)), "{expiration}: {err}");
    }
}

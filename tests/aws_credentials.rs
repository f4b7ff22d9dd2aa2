//! Credential sources read the environment and profile files from temporary directories;
//! no test reads the real home directory. One test, run alone in its binary, because it
//! changes the process environment.
#![cfg(feature = "aws-iot")]

// Only a part of the shared support is used here (it uses a part of the shared support).
#[allow(dead_code, unused_imports)]
mod support;

use std::io::Write;
use std::net::TcpListener;

use mqtt_pubsub::aws::{
    CognitoCredentials, CredentialsProvider, DefaultCredentials, EnvironmentCredentials,
    ProfileCredentials,
};
use support::TempDir;

const VARS: [&str; 9] = [
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_PROFILE",
    "AWS_SHARED_CREDENTIALS_FILE",
    "AWS_CONFIG_FILE",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_COGNITO_IDENTITY",
    "HOME",
];

fn clear() {
    for v in VARS {
        std::env::remove_var(v);
    }
}

/// Answers GetId then GetCredentialsForIdentity; returns its URL and the number of requests.
fn cognito_stub() -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!(
        "http://127.0.0.1:{}/",
        listener.local_addr().unwrap().port()
    );
    let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let h = hits.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let mut conn = conn.unwrap();
            // The whole request first: closing with part of it unread resets the connection.
            let Ok(req) = support::http::read_request(&mut conn) else {
                continue;
            };
            h.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let body = if req.contains("AWSCognitoIdentityService.GetId") {
                r#"{"IdentityId":"us-east-1:env"}"#
            } else {
                r#"{"Credentials":{"AccessKeyId":"AKIDENDPOINT","SecretKey":"s","SessionToken":"t","Expiration":4102444800.0}}"#
            };
            let _ = write!(
                conn,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (url, hits)
}

#[test]
fn environment_profile_files_chain_and_endpoint_overrides() {
    clear();
    let home = TempDir::new("home");
    std::env::set_var("HOME", home.path());

    // Environment.
    let err = EnvironmentCredentials::new().credentials().unwrap_err();
    assert!(err.to_string().contains("AWS_ACCESS_KEY_ID"), "{err}");
    std::env::set_var("AWS_ACCESS_KEY_ID", "AKIDENV");
    let err = EnvironmentCredentials::new().credentials().unwrap_err();
    assert!(err.to_string().contains("AWS_SECRET_ACCESS_KEY"), "{err}");
    std::env::set_var("AWS_SECRET_ACCESS_KEY", "env-secret");
    std::env::set_var("AWS_SESSION_TOKEN", "env-token");
    let c = EnvironmentCredentials::new().credentials().unwrap();
    assert_eq!(
        (c.access_key_id(), c.secret_access_key(), c.session_token()),
        ("AKIDENV", "env-secret", Some("env-token"))
    );
    // The chain prefers the environment.
    assert_eq!(
        DefaultCredentials::new()
            .credentials()
            .unwrap()
            .access_key_id(),
        "AKIDENV"
    );
    clear();
    std::env::set_var("HOME", home.path());

    // Profile files in ~/.aws (here: the temporary HOME).
    let aws = home.path().join(".aws");
    std::fs::create_dir_all(&aws).unwrap();
    std::fs::write(
        aws.join("credentials"),
        "[default]\naws_access_key_id = AKIDDEFAULT\naws_secret_access_key = default-secret\n\n[dev]\naws_access_key_id=AKIDDEV\naws_secret_access_key=dev-secret\naws_session_token=dev-token\n",
    )
    .unwrap();
    std::fs::write(
        aws.join("config"),
        "[default]\nregion = us-east-1\n[profile cfgonly]\naws_access_key_id = AKIDCONFIG\naws_secret_access_key = config-secret\n",
    )
    .unwrap();
    assert_eq!(
        ProfileCredentials::new()
            .credentials()
            .unwrap()
            .access_key_id(),
        "AKIDDEFAULT"
    );
    assert_eq!(
        DefaultCredentials::new()
            .credentials()
            .unwrap()
            .access_key_id(),
        "AKIDDEFAULT"
    );
    std::env::set_var("AWS_PROFILE", "dev");
    let c = ProfileCredentials::new().credentials().unwrap();
    assert_eq!(
        (c.access_key_id(), c.session_token()),
        ("AKIDDEV", Some("dev-token"))
    );
    std::env::set_var("AWS_PROFILE", "cfgonly");
    assert_eq!(
        ProfileCredentials::new()
            .credentials()
            .unwrap()
            .access_key_id(),
        "AKIDCONFIG"
    );
    assert_eq!(
        ProfileCredentials::new()
            .profile("dev")
            .credentials()
            .unwrap()
            .access_key_id(),
        "AKIDDEV"
    );
    std::env::set_var("AWS_PROFILE", "nope");
    let err = ProfileCredentials::new().credentials().unwrap_err();
    assert!(err.to_string().contains("\"nope\""), "{err}");
    // The chain says what it tried.
    let err = DefaultCredentials::new().credentials().unwrap_err();
    assert!(
        err.to_string().contains("environment") && err.to_string().contains("profile"),
        "{err}"
    );
    std::env::remove_var("AWS_PROFILE");

    // AWS_SHARED_CREDENTIALS_FILE and AWS_CONFIG_FILE point elsewhere.
    let other = TempDir::new("other");
    std::fs::write(
        other.path().join("c"),
        "[default]\naws_access_key_id=AKIDOTHER\naws_secret_access_key=o\n",
    )
    .unwrap();
    std::env::set_var("AWS_SHARED_CREDENTIALS_FILE", other.path().join("c"));
    std::env::set_var("AWS_CONFIG_FILE", other.path().join("missing"));
    assert_eq!(
        ProfileCredentials::new()
            .credentials()
            .unwrap()
            .access_key_id(),
        "AKIDOTHER"
    );
    clear();

    // Endpoint overrides for Cognito: the service variable, then the general one.
    let (url, hits) = cognito_stub();
    std::env::set_var("AWS_ENDPOINT_URL_COGNITO_IDENTITY", &url);
    std::env::set_var("AWS_ENDPOINT_URL", "http://127.0.0.1:1/");
    let c = CognitoCredentials::unauthenticated("us-east-1:pool")
        .credentials()
        .unwrap();
    assert_eq!(c.access_key_id(), "AKIDENDPOINT");
    assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 2);
    std::env::remove_var("AWS_ENDPOINT_URL_COGNITO_IDENTITY");
    std::env::set_var("AWS_ENDPOINT_URL", &url);
    CognitoCredentials::unauthenticated("us-east-1:pool")
        .credentials()
        .unwrap();
    assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 4);
    clear();
}

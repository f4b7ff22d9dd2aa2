//! Publish and subscribe on AWS IoT Core.
//!
//! ```text
//! cargo run --example aws_iot -- --endpoint abc123-ats.iot.eu-west-1.amazonaws.com \
//!     [--region eu-west-1] [--cognito-pool eu-west-1:1234-...] [--topic demo/hello]
//! cargo run --example aws_iot -- --endpoint abc123-ats.iot.eu-west-1.amazonaws.com \
//!     --cert device.pem.crt --key private.pem.key [--port 8883|443] [--ca AmazonRootCA1.pem]
//! ```
//!
//! With `--cert`/`--key`, the device certificate authenticates (MQTT over mutual TLS, port
//! 8883, or 443 with ALPN). Otherwise, without `--cognito-pool`, credentials come from the
//! environment (`AWS_ACCESS_KEY_ID`, ...) or the profile files (`~/.aws/credentials`,
//! `AWS_PROFILE`). `--proxy http://host:port` tunnels through an HTTP proxy.

mod broker {
    //! `--flag value` parsing.
    include!("support/args.rs");
}

use std::time::Duration;

use mqtt_pubsub::aws::{CognitoCredentials, CredentialsProvider, DefaultCredentials};
use mqtt_pubsub::{AwsIotProvider, PubSub, PublishOptions, QoS};

fn main() {
    let args = broker::Args::from_env();
    let Some(endpoint) = args.value("--endpoint") else {
        eprintln!(
            "usage: aws_iot --endpoint <your-id>-ats.iot.<region>.amazonaws.com [--region R] [--cognito-pool POOL] [--topic T]\n\
             \x20      aws_iot --endpoint ... --cert device.pem.crt --key private.pem.key [--port 8883|443] [--ca CA.pem] [--client-id ID]\n\
             \x20      (either form) [--proxy http://[user:password@]host:port]\n\
             The endpoint is in the AWS IoT console under Settings (or `aws iot describe-endpoint --endpoint-type iot:Data-ATS`).\n\
             Credentials: --cognito-pool for a Cognito identity pool (its role and the IoT policy attached to the identity\n\
             must allow iot:Connect/Publish/Subscribe/Receive), else AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or a profile."
        );
        std::process::exit(2);
    };
    let topic = args
        .value("--topic")
        .unwrap_or_else(|| "mqtt-pubsub/demo".to_string());
    let run = || -> mqtt_pubsub::Result<()> {
        let mut builder = AwsIotProvider::builder(endpoint.as_str());
        if let Some(r) = args.value("--region") {
            builder = builder.region(r);
        }
        let read = |flag: &str, path: String| {
            std::fs::read(&path)
                .map_err(|e| mqtt_pubsub::Error::InvalidConfig(format!("{flag} {path}: {e}")))
        };
        if let Some(ca) = args.value("--ca") {
            builder = builder.ca_pem(read("--ca", ca)?);
        }
        if let Some(port) = args.value("--port") {
            let port = port.parse().map_err(|_| {
                mqtt_pubsub::Error::InvalidConfig(format!("--port {port}: not a port number"))
            })?;
            builder = builder.port(port);
        }
        if let Some(id) = args.value("--client-id") {
            builder = builder.client_id(id);
        }
        if let Some(proxy) = args.value("--proxy") {
            builder = builder.proxy(proxy);
        }
        let certificate = match (args.value("--cert"), args.value("--key")) {
            (Some(cert), Some(key)) => Some((read("--cert", cert)?, read("--key", key)?)),
            (None, None) => None,
            _ => {
                return Err(mqtt_pubsub::Error::InvalidConfig(
                    "--cert and --key go together".into(),
                ))
            }
        };
        builder = match (certificate, args.value("--cognito-pool")) {
            // Both: build() says they exclude each other.
            (Some((cert, key)), Some(pool)) => builder
                .client_certificate(cert, key)
                .credentials(CognitoCredentials::unauthenticated(pool)),
            (Some((cert, key)), None) => builder.client_certificate(cert, key),
            (None, Some(pool)) => builder.credentials(CognitoCredentials::unauthenticated(pool)),
            (None, None) => {
                // Say early what is missing rather than failing on the first connect.
                DefaultCredentials::new().credentials()?;
                builder.credentials(DefaultCredentials::new())
            }
        };
        let pubsub = PubSub::new();
        pubsub.add_provider(builder.build()?)?;
        println!("connected to {endpoint}");
        let sub = pubsub.subscribe(topic.as_str())?;
        pubsub.publish_with(
            topic.as_str(),
            serde_json::json!({"msg": "Hello from mqtt-pubsub"}),
            PublishOptions::default().qos(QoS::AtLeastOnce),
        )?;
        match sub.recv_timeout(Duration::from_secs(10)) {
            Ok(m) => println!(
                "received on {}: {}",
                m.topic(),
                String::from_utf8_lossy(m.payload())
            ),
            Err(_) => println!(
                "nothing arrived within 10 s (does the policy allow iot:Receive on {topic}?)"
            ),
        }
        pubsub.close()
    };
    if let Err(e) = run() {
        eprintln!("aws_iot: {e}");
        std::process::exit(1);
    }
}

//! Publish and subscribe on AWS IoT Core.
//!
//! ```text
//! cargo run --example aws_iot -- --endpoint abc123-ats.iot.eu-west-1.amazonaws.com \
//!     [--region eu-west-1] [--cognito-pool eu-west-1:1234-...] [--topic demo/hello]
//! ```
//!
//! Without `--cognito-pool`, credentials come from the environment (`AWS_ACCESS_KEY_ID`, ...)
//! or the profile files (`~/.aws/credentials`, `AWS_PROFILE`).

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
        builder = match args.value("--cognito-pool") {
            Some(pool) => builder.credentials(CognitoCredentials::unauthenticated(pool)),
            None => {
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

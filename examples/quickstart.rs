//! Subscribe, publish, receive, unsubscribe — against an embedded broker, or `--url U`.
//!
//! ```text
//! cargo run --example quickstart
//! cargo run --example quickstart -- --url ws://localhost:8080/mqtt
//! ```

#[path = "support/broker.rs"]
mod broker;

use std::time::Duration;

use mqtt_pubsub::{MqttOverWsProvider, PubSub, PublishOptions, QoS};

fn main() -> Result<(), mqtt_pubsub::Error> {
    let args = broker::Args::from_env();
    let url = broker::url_or_embedded(&args);

    let pubsub = PubSub::new();
    pubsub.add_provider(
        MqttOverWsProvider::builder(&url)
            .client_id("quickstart")
            .build()?,
    )?;
    println!("connected to {url}");

    let sub = pubsub.subscribe(["sensors/+/temp", "alerts/#"])?;
    println!("subscribed to {:?}", sub.topics());

    pubsub.publish("sensors/kitchen/temp", "21.5")?;
    pubsub.publish_with(
        "alerts/fire",
        serde_json::json!({"msg": "Hello to all subscribers!"}),
        PublishOptions::default().qos(QoS::AtLeastOnce),
    )?;
    println!("published 2 messages");

    for _ in 0..2 {
        match sub.recv_timeout(Duration::from_secs(5)) {
            Ok(msg) => println!(
                "received on {} from {}: {}",
                msg.topic(),
                msg.provider(),
                msg.text()?
            ),
            Err(e) => {
                eprintln!("no message: {e}");
                std::process::exit(1);
            }
        }
    }

    sub.unsubscribe()?;
    println!(
        "unsubscribed; the subscription has ended: {}",
        sub.recv().is_err()
    );
    pubsub.close()?;
    println!("closed");
    Ok(())
}

//! Publish one message: the API in a few lines. (`mqtt-pub`, with mosquitto_pub's flags, is
//! the full tool: `cargo install mqtt-pubsub --features cli`.)
//!
//! ```text
//! cargo run --example pub -- ws://localhost:8080/mqtt a/b hello 1
//! ```

use mqtt_pubsub::{MqttOverWsProvider, PubSub, PublishOptions, QoS};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [url, topic, payload, qos @ ..] = args.as_slice() else {
        eprintln!("usage: pub URL TOPIC PAYLOAD [QOS]");
        std::process::exit(2)
    };
    let qos = match qos.first() {
        Some(q) => QoS::try_from(q.parse::<u8>()?)?,
        None => QoS::AtMostOnce,
    };
    let pubsub = PubSub::new();
    pubsub.add_provider(MqttOverWsProvider::builder(url).build()?)?;
    // Returns when the broker has it (QoS 1: PUBACK; QoS 2: PUBCOMP), or when it is written
    // (QoS 0).
    pubsub.publish_with(
        topic.as_str(),
        payload.as_str(),
        PublishOptions::default().qos(qos),
    )?;
    // Sends what was accepted, then DISCONNECT.
    pubsub.close()?;
    Ok(())
}

//! Publish like `mosquitto_pub`.
//!
//! ```text
//! cargo run --example pub -- --url ws://localhost:8080/mqtt --topic a/b --message hello [--qos 1] [--retain] [--count 3]
//! ```

#[path = "support/broker.rs"]
mod broker;

use mqtt_pubsub::{MqttOverWsProvider, PubSub, PublishOptions};

fn main() {
    let args = broker::Args::from_env();
    let (Some(url), Some(topic), Some(message)) = (
        args.value("--url"),
        args.value("--topic"),
        args.value("--message"),
    ) else {
        eprintln!("usage: pub --url U --topic T --message M [--qos Q] [--retain] [--count N]");
        std::process::exit(2);
    };
    let count: usize = args
        .value("--count")
        .map_or(1, |c| c.parse().expect("--count takes a number"));
    let options = PublishOptions::default()
        .qos(args.qos())
        .retain(args.has("--retain"));
    let run = || -> Result<(), mqtt_pubsub::Error> {
        let pubsub = PubSub::new();
        pubsub.add_provider(MqttOverWsProvider::builder(url).build()?)?;
        for _ in 0..count {
            pubsub.publish_with(topic.as_str(), message.as_str(), options.clone())?;
        }
        pubsub.close()
    };
    if let Err(e) = run() {
        eprintln!("pub: {e}");
        std::process::exit(1);
    }
}

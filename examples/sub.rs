//! Print messages like `mosquitto_sub -v`: one line per message, `topic<TAB>payload`.
//!
//! ```text
//! cargo run --example sub -- --url ws://localhost:8080/mqtt --topic 'a/#' [--topic T2] [--qos 1] [--count 10]
//! ```

#[path = "support/broker.rs"]
mod broker;

use std::io::Write;

use mqtt_pubsub::{MqttOverWsProvider, PubSub, SubscribeOptions};

fn main() {
    let args = broker::Args::from_env();
    let (Some(url), topics) = (args.value("--url"), args.values("--topic")) else {
        eprintln!("usage: sub --url U --topic T [--topic T2 ...] [--qos Q] [--count N]");
        std::process::exit(2);
    };
    if topics.is_empty() {
        eprintln!("at least one --topic is needed");
        std::process::exit(2);
    }
    let count: Option<usize> = args
        .value("--count")
        .map(|c| c.parse().expect("--count takes a number"));
    let run = || -> Result<(), mqtt_pubsub::Error> {
        let pubsub = PubSub::new();
        pubsub.add_provider(MqttOverWsProvider::builder(url).build()?)?;
        let sub = pubsub.subscribe_with(topics, SubscribeOptions::default().qos(args.qos()))?;
        let stdout = std::io::stdout();
        for (i, msg) in sub.into_iter().enumerate() {
            let mut out = stdout.lock();
            let _ = out.write_all(msg.topic().as_bytes());
            let _ = out.write_all(b"\t");
            let _ = out.write_all(msg.payload());
            let _ = out.write_all(b"\n");
            let _ = out.flush();
            if count.is_some_and(|n| i + 1 >= n) {
                break;
            }
        }
        Ok(())
    };
    if let Err(e) = run() {
        eprintln!("sub: {e}");
        std::process::exit(1);
    }
}

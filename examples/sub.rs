//! Print what arrives on some topic filters: the API in a few lines. (`mqtt-sub`, with
//! mosquitto_sub's flags, is the full tool: `cargo install mqtt-pubsub --features cli`.)
//!
//! ```text
//! cargo run --example sub -- ws://localhost:8080/mqtt 'a/#' 'b/+'
//! ```

use mqtt_pubsub::{MqttOverWsProvider, PubSub};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [url, filters @ ..] = args.as_slice() else {
        eprintln!("usage: sub URL FILTER...");
        std::process::exit(2)
    };
    let pubsub = PubSub::new();
    pubsub.add_provider(MqttOverWsProvider::builder(url).build()?)?;
    // Returns after SUBACK; iterating blocks for each message.
    let subscription = pubsub.subscribe(filters.to_vec())?;
    for msg in &subscription {
        println!("{} {}", msg.topic(), String::from_utf8_lossy(msg.payload()));
    }
    Ok(())
}

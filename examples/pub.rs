//! Publish like `mosquitto_pub`.
//!
//! ```text
//! cargo run --example pub -- --url ws://localhost:8080/mqtt -t a/b -m hello [-q 1] [-r] [--count 3]
//! ```
//!
//! Everything accepted is delivered before the program exits: `flush` waits until what was
//! published is out (QoS 0 written, QoS 1/2 acknowledged), then `close()` sends DISCONNECT.
//! With `--outbox DIR -i ID`, QoS 1/2 messages are on disk before each publish returns: if
//! the broker is unreachable, or the program is killed, the next run with the same outbox
//! and client id sends them (`--count 0` sends only those). Bad arguments exit with code 2
//! and a usage line; a failed publish or flush with code 1.

use clap::Parser;
use mqtt_pubsub::{PubSub, PublishOptions, QoS};

include!("support/cli.rs");

/// Publish one message (or `--count` copies) to an MQTT broker.
#[derive(Parser, Debug)]
#[command(name = "pub")]
struct Args {
    #[command(flatten)]
    conn: Connection,
    /// Topic to publish to (repeat for several topics).
    #[arg(short, long, required = true)]
    topic: Vec<String>,
    /// The payload.
    #[arg(short, long)]
    message: String,
    /// Quality of service: 0, 1 or 2.
    #[arg(short, long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=2))]
    qos: u8,
    /// Ask the broker to retain the message.
    #[arg(short, long)]
    retain: bool,
    /// How many times to publish it (0: only what an outbox kept from an earlier run).
    #[arg(long, default_value_t = 1)]
    count: usize,
    /// Keep QoS 1/2 messages in a durable outbox in this directory until acknowledged
    /// (needs -i/--client-id).
    #[arg(long, requires = "client_id")]
    outbox: Option<std::path::PathBuf>,
    /// How long to wait for the broker's acknowledgements before exiting, in seconds.
    #[arg(long, default_value_t = 30)]
    flush_timeout: u64,
}

fn main() {
    let args = Args::parse();
    let qos = QoS::from_u8(args.qos).expect("checked by the parser");
    let options = PublishOptions::default().qos(qos).retain(args.retain);
    let run = || -> Result<(), Box<dyn std::error::Error>> {
        let pubsub = PubSub::new();
        let mut builder = args.conn.builder()?;
        if let Some(dir) = &args.outbox {
            builder = builder.outbox(dir);
        }
        pubsub.add_provider(builder.build()?)?;
        for _ in 0..args.count {
            pubsub.publish_with(args.topic.clone(), args.message.as_str(), options.clone())?;
        }
        // Everything accepted above is out (QoS 1/2: acknowledged) before DISCONNECT.
        pubsub.flush(std::time::Duration::from_secs(args.flush_timeout))?;
        Ok(pubsub.close()?)
    };
    if let Err(e) = run() {
        eprintln!("pub: {e}");
        std::process::exit(1);
    }
}

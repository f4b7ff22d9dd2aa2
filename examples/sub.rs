//! Print messages like `mosquitto_sub -v`: one line per message, `topic<TAB>payload`.
//!
//! ```text
//! cargo run --example sub -- --url ws://localhost:8080/mqtt -t 'a/#' [-t T2] [-q 1] [-C 10]
//! ```
//!
//! `-C 0` (the default) prints until interrupted. Bad arguments exit with code 2 and a usage
//! line.

use std::io::Write;

use clap::Parser;
use mqtt_pubsub::{PubSub, QoS, SubscribeOptions};

include!("support/cli.rs");

/// Subscribe to topic filters on an MQTT broker and print what arrives.
#[derive(Parser, Debug)]
#[command(name = "sub")]
struct Args {
    #[command(flatten)]
    conn: Connection,
    /// Topic filter (`+` and `#` wildcards; repeat for several).
    #[arg(short, long, required = true)]
    topic: Vec<String>,
    /// Maximum quality of service: 0, 1 or 2.
    #[arg(short, long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=2))]
    qos: u8,
    /// Exit after this many messages; 0 means never.
    #[arg(short = 'C', long, default_value_t = 0)]
    count: usize,
    /// Persistent session: the broker keeps the subscription and stores messages while away
    /// (give a fixed --client-id).
    #[arg(short = 'c', long, requires = "client_id")]
    persistent: bool,
}

fn main() {
    let args = Args::parse();
    let qos = QoS::from_u8(args.qos).expect("checked by the parser");
    let run = || -> Result<(), Box<dyn std::error::Error>> {
        let builder = args.conn.builder()?.clean_session(!args.persistent);
        let pubsub = PubSub::new();
        pubsub.add_provider(builder.build()?)?;
        let sub =
            pubsub.subscribe_with(args.topic.clone(), SubscribeOptions::default().qos(qos))?;
        let stdout = std::io::stdout();
        for (i, msg) in sub.into_iter().enumerate() {
            let mut out = stdout.lock();
            let _ = out.write_all(msg.topic().as_bytes());
            let _ = out.write_all(b"\t");
            let _ = out.write_all(msg.payload());
            let _ = out.write_all(b"\n");
            let _ = out.flush();
            if args.count != 0 && i + 1 >= args.count {
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

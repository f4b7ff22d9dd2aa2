//! Print messages like `mosquitto_sub -v`: one line per message, `topic<TAB>payload`.
//!
//! ```text
//! cargo run --example sub -- --url ws://localhost:8080/mqtt -t 'a/#' [-t T2] [-q 1] [-C 10]
//! cargo run --example sub -- --url mqtt://localhost -V 5 -t 'a/#' -v
//! ```
//!
//! `-C 0` (the default) prints until interrupted. With `-v`, MQTT 5 properties follow the
//! payload after a tab, as `name=value` separated by spaces (`user:KEY=VALUE`,
//! `content-type=`, `response-topic=`, `correlation-data=` in hex, `message-expiry=` seconds
//! left, `payload-format=utf8`, `subscription-id=`), like `mosquitto_sub -F` would show them. Bad arguments exit with code 2 and a usage
//! line.

use std::io::Write;

use clap::Parser;
use mqtt_pubsub::{PubSub, QoS, RetainHandling, SubscribeOptions};

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
    /// Print MQTT 5 properties after the payload.
    #[arg(short, long)]
    verbose: bool,
    /// MQTT 5: do not receive our own publishes (no local).
    #[arg(long)]
    no_local: bool,
    /// MQTT 5 retain handling: 0 send retained messages, 1 only for a new subscription,
    /// 2 never.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=2))]
    retain_handling: u8,
}

/// The `-v` suffix: the message's MQTT 5 properties (empty when it has none).
fn properties(msg: &mqtt_pubsub::Message) -> String {
    let mut p: Vec<String> = Vec::new();
    for (k, v) in msg.user_properties() {
        p.push(format!("user:{k}={v}"));
    }
    if let Some(t) = msg.content_type() {
        p.push(format!("content-type={t}"));
    }
    if let Some(t) = msg.response_topic() {
        p.push(format!("response-topic={t}"));
    }
    if let Some(d) = msg.correlation_data() {
        let hex: String = d.iter().map(|b| format!("{b:02x}")).collect();
        p.push(format!("correlation-data={hex}"));
    }
    if let Some(e) = msg.message_expiry() {
        p.push(format!("message-expiry={}", e.as_secs()));
    }
    if msg.payload_format_utf8() == Some(true) {
        p.push("payload-format=utf8".into());
    }
    for id in msg.subscription_identifiers() {
        p.push(format!("subscription-id={id}"));
    }
    p.join(" ")
}

fn main() {
    let args = Args::parse();
    let qos = QoS::from_u8(args.qos).expect("checked by the parser");
    let run = || -> Result<(), Box<dyn std::error::Error>> {
        let builder = args.conn.builder()?.clean_session(!args.persistent);
        let pubsub = PubSub::new();
        pubsub.add_provider(builder.build()?)?;
        let mut options = SubscribeOptions::default().qos(qos);
        if args.no_local {
            options = options.no_local(true);
        }
        if args.retain_handling > 0 {
            options = options.retain_handling(match args.retain_handling {
                1 => RetainHandling::SendIfNew,
                _ => RetainHandling::DoNotSend,
            });
        }
        let sub = pubsub.subscribe_with(args.topic.clone(), options)?;
        let stdout = std::io::stdout();
        for (i, msg) in sub.into_iter().enumerate() {
            let mut out = stdout.lock();
            let _ = out.write_all(msg.topic().as_bytes());
            let _ = out.write_all(b"\t");
            let _ = out.write_all(msg.payload());
            if args.verbose {
                let _ = out.write_all(b"\t");
                let _ = out.write_all(properties(&msg).as_bytes());
            }
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

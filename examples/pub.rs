//! Publish like `mosquitto_pub`.
//!
//! ```text
//! cargo run --example pub -- --url ws://localhost:8080/mqtt -t a/b -m hello [-q 1] [-r] [--count 3]
//! cargo run --example pub -- --url mqtt://localhost -V 5 -t a/b -m '{}' \
//!     --content-type application/json --property user:site=north --property message-expiry:60
//! ```
//!
//! Everything accepted is delivered before the program exits: `flush` waits until what was
//! published is out (QoS 0 written, QoS 1/2 acknowledged), then `close()` sends DISCONNECT.
//! With `--outbox DIR -i ID`, QoS 1/2 messages are on disk before each publish returns: if
//! the broker is unreachable, or the program is killed, the next run with the same outbox
//! and client id sends them (`--count 0` sends only those). With an outbox, an unreachable
//! broker is no failure: once everything is on disk the program exits 0 and says on stderr
//! how many publishes are still pending. Bad arguments exit with code 2 and a usage line; a
//! failed publish or flush with code 1.

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
    /// MQTT 5 property (repeatable): user:KEY=VALUE, content-type:T, response-topic:T,
    /// correlation-data:TEXT, message-expiry:SECONDS, payload-format:utf8.
    #[arg(long = "property", value_parser = parse_property)]
    properties: Vec<Property>,
    /// MQTT 5 content type (the same as --property content-type:T).
    #[arg(long)]
    content_type: Option<String>,
    /// How long to wait for the broker's acknowledgements before exiting, in seconds.
    #[arg(long, default_value_t = 30)]
    flush_timeout: u64,
}

/// One `--property`.
#[derive(Debug, Clone)]
enum Property {
    User(String, String),
    ContentType(String),
    ResponseTopic(String),
    CorrelationData(String),
    MessageExpiry(u64),
    Utf8,
}

fn parse_property(p: &str) -> Result<Property, String> {
    let (name, value) = p
        .split_once(':')
        .ok_or_else(|| format!("{p:?}: give NAME:VALUE, e.g. user:k=v"))?;
    Ok(match name {
        "user" => {
            let (k, v) = value
                .split_once('=')
                .ok_or_else(|| format!("{p:?}: a user property is user:KEY=VALUE"))?;
            Property::User(k.into(), v.into())
        }
        "content-type" => Property::ContentType(value.into()),
        "response-topic" => Property::ResponseTopic(value.into()),
        "correlation-data" => Property::CorrelationData(value.into()),
        "message-expiry" => Property::MessageExpiry(
            value
                .parse()
                .map_err(|_| format!("{p:?}: message-expiry takes whole seconds"))?,
        ),
        "payload-format" if value == "utf8" => Property::Utf8,
        other => return Err(format!("{other:?}: unknown property")),
    })
}

fn main() {
    let args = Args::parse();
    let qos = QoS::from_u8(args.qos).expect("checked by the parser");
    if args.outbox.is_some() && qos == QoS::AtMostOnce {
        // QoS 0 is never stored: an outbox would promise what it cannot keep.
        eprintln!("pub: --outbox keeps QoS 1 and 2 messages only; give -q 1 or -q 2");
        std::process::exit(2);
    }
    let mut options = PublishOptions::default().qos(qos).retain(args.retain);
    for p in args.properties.iter().cloned() {
        options = match p {
            Property::User(k, v) => options.user_property(k, v),
            Property::ContentType(t) => options.content_type(t),
            Property::ResponseTopic(t) => options.response_topic(t),
            Property::CorrelationData(d) => options.correlation_data(d.into_bytes()),
            Property::MessageExpiry(s) => options.message_expiry(std::time::Duration::from_secs(s)),
            Property::Utf8 => options.payload_format_utf8(true),
        };
    }
    if let Some(t) = &args.content_type {
        options = options.content_type(t.clone());
    }
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
        // Everything accepted above is out (QoS 1/2: acknowledged) before DISCONNECT. With an
        // outbox, what the broker has not acknowledged is on disk for the next run: an
        // offline broker is reported, not a failure (one second lets a connection that is
        // about to be made send what it can).
        let name = pubsub.provider_names().remove(0);
        let online = pubsub.state(&name) == Some(mqtt_pubsub::ConnectionState::Connected);
        let timeout = match (&args.outbox, online) {
            (Some(_), false) => std::time::Duration::from_secs(1),
            _ => std::time::Duration::from_secs(args.flush_timeout),
        };
        match (pubsub.flush(timeout), &args.outbox) {
            (Ok(()), _) => Ok(pubsub.close()?),
            (
                Err(mqtt_pubsub::Error::Timeout {
                    unfinished: Some(n),
                    ..
                }),
                Some(dir),
            ) => {
                let _ = pubsub.close();
                let noun = if n == 1 {
                    "publish is"
                } else {
                    "publishes are"
                };
                eprintln!(
                    "pub: {n} {noun} in the outbox {}, not yet acknowledged by the broker \
                     ({}); the next run with the same --outbox and -i sends them",
                    dir.display(),
                    if online { "connected" } else { "not connected" }
                );
                Ok(())
            }
            (Err(e), _) => Err(e.into()),
        }
    };
    if let Err(e) = run() {
        eprintln!("pub: {e}");
        std::process::exit(1);
    }
}

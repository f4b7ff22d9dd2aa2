//! `mqtt-pub`: publish like `mosquitto_pub`, over `mqtt://`, `mqtts://`, `ws://` and `wss://`.
//!
//! ```text
//! mqtt-pub -h localhost -t a/b -m hello -q 1
//! mqtt-pub -L wss://broker.example/mqtt -t a/b -l < lines.txt
//! mqtt-pub -L mqtt://localhost/a/b -f reading.json -V 5 -D publish content-type application/json
//! ```
//!
//! mosquitto_pub's flags, meanings and exit codes (0, or 1 with "Error: …" on stderr);
//! everything accepted is delivered before it exits: QoS 1/2 publishes are pipelined and
//! their acknowledgements awaited together. With `--outbox DIR -i ID`, QoS 1/2 messages are
//! on disk before each publish returns, and an unreachable broker is no failure: the next
//! run with the same outbox and id sends them.

mod tool;

use std::io::{BufRead, Read};
use std::time::Duration;

use clap::Parser;
use mqtt_pubsub::{ConnectionState, Error, PubSub, PublishOptions, QoS};
use tool::connection::{number, unsupported, Connection};

/// Publish a message to an MQTT broker (mosquitto_pub's flags).
#[derive(Parser, Debug)]
#[command(name = "mqtt-pub", disable_help_flag = true, version = None)]
struct Args {
    #[command(flatten)]
    conn: Connection,
    /// Topic to publish to.
    #[arg(short = 't', long)]
    topic: Option<String>,
    /// The payload.
    #[arg(short = 'm', long, group = "source")]
    message: Option<String>,
    /// Send this file's contents as the payload.
    #[arg(short = 'f', long, group = "source")]
    file: Option<std::path::PathBuf>,
    /// Send each line of stdin as a message.
    #[arg(short = 'l', long = "stdin-line", group = "source")]
    lines: bool,
    /// Send all of stdin as one message.
    #[arg(short = 's', long = "stdin-file", group = "source")]
    stdin: bool,
    /// Send an empty (null) message.
    #[arg(short = 'n', long = "null-message", group = "source")]
    null: bool,
    /// Quality of service: 0, 1 or 2.
    #[arg(short = 'q', long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=2))]
    qos: u8,
    /// Retain the message.
    #[arg(short = 'r', long)]
    retain: bool,
    /// Publish the message this many times (0 with --outbox: only what it kept).
    #[arg(long, alias = "count", default_value_t = 1)]
    repeat: u64,
    /// Seconds to wait between repeats.
    #[arg(long, default_value_t = 0.0)]
    repeat_delay: f64,
    /// Keep QoS 1/2 messages in a durable outbox in this directory until acknowledged
    /// (needs -i).
    #[arg(long, requires = "id")]
    outbox: Option<std::path::PathBuf>,
    /// Seconds to wait for the broker's acknowledgements before giving up.
    #[arg(long, default_value_t = 30)]
    flush_timeout: u64,
    /// Print this help.
    #[arg(long, action = clap::ArgAction::Help)]
    help: Option<bool>,
}

fn main() {
    let args: Args = tool::parse("mqtt-pub");
    let quiet = args.conn.quiet;
    if let Err(e) = run(&args) {
        tool::fail(quiet, e);
    }
}

/// The publish options the flags say (`-D publish …` included).
fn publish_options(args: &Args) -> Result<PublishOptions, String> {
    let qos = QoS::try_from(args.qos).map_err(|e| e.to_string())?;
    let mut o = PublishOptions::default().qos(qos).retain(args.retain);
    // As mosquitto_pub: properties mean nothing to MQTT 3.1.1 and are ignored there.
    let v5 = args.conn.v5();
    for p in args
        .conn
        .properties()
        .iter()
        .filter(|p| p[0] == "publish" && v5)
    {
        let value = p.get(2).cloned().unwrap_or_default();
        o = match p[1].as_str() {
            "content-type" => o.content_type(value),
            "correlation-data" => o.correlation_data(value.into_bytes()),
            "message-expiry-interval" => o.message_expiry(Duration::from_secs(number(
                &value,
                "message-expiry-interval",
            )?)),
            "payload-format-indicator" => {
                o.payload_format_utf8(number(&value, "payload-format-indicator")? == 1)
            }
            "response-topic" => o.response_topic(value),
            "user-property" => o.user_property(value, p.get(3).cloned().unwrap_or_default()),
            other => return Err(unsupported("publish", other)),
        };
    }
    Ok(o)
}

/// The payloads to send: one, or one per line of stdin (read as they come).
enum Payloads {
    One(Vec<u8>),
    Lines,
}

fn payloads(args: &Args) -> Result<Payloads, String> {
    Ok(if let Some(m) = &args.message {
        Payloads::One(m.clone().into_bytes())
    } else if let Some(f) = &args.file {
        Payloads::One(tool::connection::read(f)?)
    } else if args.stdin {
        let mut all = Vec::new();
        std::io::stdin()
            .read_to_end(&mut all)
            .map_err(|e| format!("reading stdin: {e}"))?;
        if all.is_empty() {
            // As mosquitto_pub.
            return Err("Zero length input.".into());
        }
        Payloads::One(all)
    } else if args.null {
        Payloads::One(Vec::new())
    } else if args.lines {
        Payloads::Lines
    } else if args.outbox.is_some() && args.repeat == 0 {
        Payloads::One(Vec::new())
    } else {
        return Err("Both topic and message must be supplied (-m, -f, -l, -s or -n).".into());
    })
}

fn run(args: &Args) -> Result<(), String> {
    let options = publish_options(args)?;
    if args.outbox.is_some() && args.qos == 0 {
        return Err("--outbox keeps QoS 1 and 2 messages only; give -q 1 or -q 2".into());
    }
    let payloads = payloads(args)?;
    let made = args.conn.make("mqtt-pub", args.outbox.as_deref())?;
    let topic = args
        .topic
        .clone()
        .or(made.url_topic)
        .ok_or("Both topic and message must be supplied (-t or a topic in -L).")?;
    let pubsub = PubSub::new();
    let states = args.conn.debug.then(|| tool::watch_states(&pubsub));
    made.provider.add_to(&pubsub).map_err(|e| e.to_string())?;
    let mut progress = tool::progress::Progress::new("mqtt-pub", Some(args.repeat));
    let mut sent = 0u64;
    let mut send = |payload: Vec<u8>| -> Result<(), String> {
        // Receipts are not awaited one by one: flush() below waits for them all.
        let _receipt = pubsub
            .publish_nowait(topic.as_str(), payload, options.clone())
            .map_err(|e| e.to_string())?;
        sent += 1;
        progress.at(sent, "sent");
        Ok(())
    };
    match payloads {
        Payloads::One(p) => {
            for i in 0..args.repeat {
                if i > 0 && args.repeat_delay > 0.0 {
                    std::thread::sleep(Duration::from_secs_f64(args.repeat_delay));
                }
                send(p.clone())?;
            }
        }
        Payloads::Lines => {
            // As mosquitto_pub: every line is a message, a blank one too; only the newline
            // is taken off.
            for line in std::io::stdin().lock().split(b'\n') {
                send(line.map_err(|e| format!("reading stdin: {e}"))?)?;
            }
        }
    }
    progress.finish();
    let result = finish(&pubsub, args);
    drop(states);
    result
}

/// Waits until everything is out (QoS 1/2: acknowledged), then disconnects. With an outbox,
/// what the broker has not acknowledged stays on disk: reported, not a failure.
fn finish(pubsub: &PubSub, args: &Args) -> Result<(), String> {
    let name = pubsub.provider_names().remove(0);
    let online = pubsub.state(&name) == Some(ConnectionState::Connected);
    let timeout = match (&args.outbox, online) {
        (Some(_), false) => Duration::from_secs(1),
        _ => Duration::from_secs(args.flush_timeout),
    };
    let flushed = pubsub.flush(timeout);
    let names = pubsub.provider_names();
    let result = match (flushed, &args.outbox) {
        (Ok(()), _) => pubsub.close().map_err(|e| e.to_string()),
        (
            Err(Error::Timeout {
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
                "mqtt-pub: {n} {noun} in the outbox {}, not yet acknowledged by the broker \
                 ({}); the next run with the same --outbox and -i sends them",
                dir.display(),
                if online { "connected" } else { "not connected" }
            );
            Ok(())
        }
        (Err(e), _) => Err(e.to_string()),
    };
    if args.conn.debug {
        // After close: the final counts.
        tool::print_stats(pubsub, &names);
    }
    result
}

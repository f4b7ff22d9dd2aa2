//! `mqtt-sub`: subscribe like `mosquitto_sub`, over `mqtt://`, `mqtts://`, `ws://` and
//! `wss://`.
//!
//! ```text
//! mqtt-sub -h localhost -t 'a/#' -v
//! mqtt-sub -L wss://broker.example/mqtt -t 'sensors/+/temp' -C 10 -F '%t %p'
//! ```
//!
//! mosquitto_sub's flags, output (the payload; `-v` the topic, a space and the payload; `-F`
//! its fields) and exit codes (0; 1 with "Error: …" on stderr; 27 when `-W` runs out).

mod tool;

use std::io::Write;
use std::time::{Duration, Instant};

use clap::Parser;
use mqtt_pubsub::{Message, PubSub, PublishOptions, QoS, RecvTimeoutError, SubscribeOptions};
use tool::connection::Connection;
use tool::format::Format;

/// Subscribe to topics on an MQTT broker and print what arrives (mosquitto_sub's flags).
#[derive(Parser, Debug)]
#[command(name = "mqtt-sub", disable_help_flag = true, version = None)]
struct Args {
    #[command(flatten)]
    conn: Connection,
    /// Topic filter to subscribe to (`+` and `#` wildcards; repeat for several).
    #[arg(short = 't', long)]
    topic: Vec<String>,
    /// Topic filter whose messages are not printed (repeat for several).
    #[arg(short = 'T', long = "filter-out")]
    filter_out: Vec<String>,
    /// Maximum quality of service: 0, 1 or 2.
    #[arg(short = 'q', long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=2))]
    qos: u8,
    /// Exit after printing this many messages.
    #[arg(short = 'C', long = "count")]
    count: Option<u64>,
    /// Exit once subscribed.
    #[arg(short = 'E')]
    exit_when_subscribed: bool,
    /// Do not print stale (retained) messages.
    #[arg(short = 'R', long = "no-retained")]
    no_retained: bool,
    /// Print only retained messages; exit at the first message that is not.
    #[arg(long)]
    retained_only: bool,
    /// Clear each retained message received (publish an empty retained message to its
    /// topic); -T filters out topics not to clear.
    #[arg(long)]
    remove_retained: bool,
    /// Print the topic, a space, then the payload.
    #[arg(short = 'v', long)]
    verbose: bool,
    /// No newline after each message.
    #[arg(short = 'N')]
    no_eol: bool,
    /// Output format: %t topic, %p payload, %q QoS, %r retain, %l length, %x/%X payload in
    /// hex, %I ISO 8601 time, %U Unix time, MQTT 5: %P user properties, %C content type, %D
    /// correlation data, %E message expiry, %F payload format, %R response topic, %S
    /// subscription ids; escapes \n \t \\ \0 \a \e \r \v.
    #[arg(short = 'F', long = "format", value_parser = Format::parse)]
    format: Option<Format>,
    /// Exit after this many seconds, with code 27 if it was the timeout that ended it.
    #[arg(short = 'W', long = "timeout", value_parser = clap::value_parser!(u64).range(1..))]
    timeout: Option<u64>,
    /// Print this help.
    #[arg(long, action = clap::ArgAction::Help)]
    help: Option<bool>,
}

/// What ended the run.
enum End {
    Done,
    TimedOut,
}

fn main() {
    let args: Args = tool::parse("mqtt-sub");
    let quiet = args.conn.quiet;
    match run(&args) {
        Ok(End::Done) => {}
        Ok(End::TimedOut) => {
            if !quiet {
                eprintln!("Timed out");
            }
            std::process::exit(27)
        }
        Err(e) => tool::fail(quiet, e),
    }
}

fn covers(filter: &str, topic: &str) -> bool {
    let mut f = filter.split('/');
    let mut t = topic.split('/');
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) => return !topic.starts_with('$') || !filter.starts_with('#'),
            (Some("+"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

fn run(args: &Args) -> Result<End, String> {
    let made = args.conn.make("mqtt-sub", None)?;
    let mut topics = args.topic.clone();
    topics.extend(made.url_topic);
    if topics.is_empty() {
        return Err("You must specify a topic to subscribe to (-t).".into());
    }
    let qos = QoS::try_from(args.qos).map_err(|e| e.to_string())?;
    let deadline = args
        .timeout
        .map(|s| Instant::now() + Duration::from_secs(s));
    let pubsub = PubSub::new();
    let _states = args.conn.debug.then(|| tool::watch_states(&pubsub));
    made.provider.add_to(&pubsub).map_err(|e| e.to_string())?;
    let sub = pubsub
        .subscribe_with(topics, SubscribeOptions::default().qos(qos))
        .map_err(|e| e.to_string())?;
    if args.exit_when_subscribed {
        return close(&pubsub, End::Done, args.conn.debug);
    }
    let stdout = std::io::stdout();
    let mut line = Vec::new();
    let mut printed = 0u64;
    loop {
        let msg = match deadline {
            None => sub.recv().map_err(|_| "the connection was closed")?,
            Some(d) => match sub.recv_timeout(d.saturating_duration_since(Instant::now())) {
                Ok(m) => m,
                Err(RecvTimeoutError::Timeout) => {
                    return close(&pubsub, End::TimedOut, args.conn.debug)
                }
                Err(e) => return Err(e.to_string()),
            },
        };
        if args.retained_only && !msg.retain() {
            return close(&pubsub, End::Done, args.conn.debug);
        }
        if args.filter_out.iter().any(|f| covers(f, msg.topic())) {
            continue;
        }
        // As mosquitto_sub: -R is checked first (a stale message is neither printed nor
        // cleared).
        if args.no_retained && msg.retain() {
            continue;
        }
        if args.remove_retained && msg.retain() {
            let clear = PublishOptions::default().retain(true);
            pubsub
                .publish_with(msg.topic(), Vec::new(), clear)
                .map_err(|e| e.to_string())?;
        }
        line.clear();
        render(args, &msg, &mut line);
        let mut out = stdout.lock();
        if out.write_all(&line).and_then(|_| out.flush()).is_err() {
            // The reader went away (a closed pipe): nothing more to print to.
            return close(&pubsub, End::Done, args.conn.debug);
        }
        printed += 1;
        if args.count.is_some_and(|c| printed >= c) {
            return close(&pubsub, End::Done, args.conn.debug);
        }
    }
}

/// One message as mosquitto_sub prints it.
fn render(args: &Args, msg: &Message, out: &mut Vec<u8>) {
    match &args.format {
        Some(f) => f.write(msg, out),
        // As mosquitto_sub: an empty payload prints nothing at all, or "(null)" after the
        // topic with -v.
        None if msg.payload().is_empty() && !args.verbose => return,
        None => {
            if args.verbose {
                out.extend_from_slice(msg.topic().as_bytes());
                out.push(b' ');
            }
            if msg.payload().is_empty() {
                out.extend_from_slice(b"(null)");
            }
            out.extend_from_slice(msg.payload());
        }
    }
    if !args.no_eol {
        out.push(b'\n');
    }
}

fn close(pubsub: &PubSub, end: End, debug: bool) -> Result<End, String> {
    let names = pubsub.provider_names();
    let closed = pubsub.close().map_err(|e| e.to_string());
    if debug {
        // After close: the final counts.
        tool::print_stats(pubsub, &names);
    }
    closed?;
    Ok(end)
}

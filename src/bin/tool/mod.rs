//! What `mqtt-pub` and `mqtt-sub` share: mosquitto's connection flags, the `-F` output
//! format, the progress line, and how they report errors and exit.

// Each tool compiles this module and uses part of it (the output format is mqtt-sub's, the
// progress line mqtt-pub's).
pub mod connection;
#[allow(dead_code)]
pub mod format;
#[allow(dead_code)]
pub mod progress;

use std::process::exit;

/// Parses the arguments as mosquitto's tools do: a bad one is an error on stderr and exit
/// code 1 (clap's own is 2); `--help` prints the help and exits 0.
pub fn parse<T: clap::Parser>(tool: &str) -> T {
    match T::try_parse() {
        Ok(args) => args,
        Err(e) if e.kind() == clap::error::ErrorKind::DisplayHelp => {
            let _ = e.print();
            exit(0)
        }
        Err(e) => {
            let text = e.render().to_string();
            let first = text.lines().next().unwrap_or_default();
            let first = first.strip_prefix("error: ").unwrap_or(first);
            eprintln!("Error: {first}\n\nUse '{tool} --help' to see usage.");
            exit(1)
        }
    }
}

/// Reports an error as mosquitto does ("Error: …" on stderr, unless `--quiet`) and exits 1.
pub fn fail(quiet: bool, message: impl std::fmt::Display) -> ! {
    if !quiet {
        eprintln!("Error: {message}");
    }
    exit(1)
}

/// `-d`: prints every state change of `pubsub`'s providers on stderr, from a thread that ends
/// when the `PubSub` is closed.
pub fn watch_states(pubsub: &mqtt_pubsub::PubSub) -> std::thread::JoinHandle<()> {
    let changes = pubsub.state_changes();
    std::thread::spawn(move || {
        for e in changes {
            let mut line = format!("{}: {}", e.provider, e.state);
            if let Some(url) = &e.url {
                line.push_str(&format!(" to {url}"));
            }
            if let Some(reason) = &e.reason {
                line.push_str(&format!(" ({reason})"));
            }
            eprintln!("{line}");
        }
    })
}

/// `-d`: the final counters of the providers `names` on stderr, one line each (read after
/// `close()`, which keeps them).
pub fn print_stats(pubsub: &mqtt_pubsub::PubSub, names: &[String]) {
    for name in names {
        if let Some(s) = pubsub.stats(name) {
            eprintln!(
                "{name}: published {} sent {} acknowledged {} rejected {} resent {} received {} \
                 delivered {} dropped {} reconnects {} bytes in {} out {}",
                s.published,
                s.sent,
                s.acknowledged,
                s.rejected,
                s.resent,
                s.received,
                s.delivered,
                s.dropped_full + s.dropped_oversized + s.dropped_unclaimed,
                s.reconnects,
                s.bytes_in,
                s.bytes_out
            );
        }
    }
}

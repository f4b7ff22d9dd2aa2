//! Print an AWS IoT presigned WebSocket URL on one line (treat it as a secret).
//!
//! ```text
//! cargo run --example presign -- --host abc123-ats.iot.us-east-1.amazonaws.com --region us-east-1 \
//!     --access-key AKIA... --secret-key ... [--session-token T] [--port 443] \
//!     [--time 20240115T123456Z] [--expires 300]
//! ```

mod broker {
    //! `--flag value` parsing.
    include!("support/args.rs");
}

use std::time::{Duration, SystemTime};

use mqtt_pubsub::aws::{parse_amz_date, presign_url, Credentials, PresignParams};

fn main() {
    let args = broker::Args::from_env();
    let need = |flag: &str| {
        args.value(flag).unwrap_or_else(|| {
            eprintln!(
                "usage: presign --host H --region R --access-key A --secret-key S [--session-token T] [--port P] [--time 20240115T123456Z] [--expires N]\nmissing {flag}"
            );
            std::process::exit(2)
        })
    };
    let (host, region, access_key, secret_key) = (
        need("--host"),
        need("--region"),
        need("--access-key"),
        need("--secret-key"),
    );
    let time = match args.value("--time") {
        Some(t) => parse_amz_date(&t).unwrap_or_else(|| {
            eprintln!("--time must look like 20240115T123456Z");
            std::process::exit(2)
        }),
        None => SystemTime::now(),
    };
    let number = |flag: &str| {
        args.value(flag).map(|v| {
            v.parse::<u64>().unwrap_or_else(|_| {
                eprintln!("{flag} takes a number");
                std::process::exit(2)
            })
        })
    };
    let params = PresignParams {
        host: &host,
        port: number("--port").map_or(443, |p| p as u16),
        path: "/mqtt",
        region: &region,
        time,
        expires: number("--expires").map(Duration::from_secs),
    };
    let creds = Credentials::new(access_key, secret_key, args.value("--session-token"));
    println!("{}", presign_url(&params, &creds));
}

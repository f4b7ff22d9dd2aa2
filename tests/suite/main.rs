//! The integration suite, one test binary (the crate and its test dependencies are linked
//! once): behaviour against real brokers, fault injection and hostile servers, AWS IoT
//! without AWS, what users rely on, and the fuzz regressions. Tests that must be alone in
//! their process have binaries of their own: `leaks.rs` (counts the process's threads),
//! `log_secrets.rs` (installs the process-wide logger), `aws_credentials.rs` (changes the
//! process environment).

#[path = "../support/mod.rs"]
mod support;

#[cfg(feature = "aws-iot")]
mod architecture;
mod aws;
mod brokers;
mod correctness;
mod delivery;
mod errors;
mod fuzz_regressions;
mod hostile;
mod mqtt5;
mod outbox;
mod reliability;
mod stats;
mod tls;
mod tools;
mod transports;

//! Idle memory as a user's program pays it: a binary of its own that links only
//! mqtt-pubsub (the benchmark's binary also carries rumqttc and tokio, whose code pages the
//! first connection's page faults would share), `n` idle connections, every one counted.
//!
//! `idle-ours URL N SECS [KEEPALIVE]` prints one JSON line: RSS of the bare process, after
//! the first connection and after all `n`, and per connection with and without the first.
//! KEEPALIVE (seconds, default 60 as the library's) below SECS puts ping round trips in
//! the window.

use std::time::Duration;

use mqtt_pubsub::{MqttOverWsProvider, PubSub};

fn rss_kib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0.0)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let url = args
        .first()
        .cloned()
        .unwrap_or_else(|| "ws://127.0.0.1:9001/mqtt".into());
    let n: usize = args.get(1).and_then(|v| v.parse().ok()).unwrap_or(100);
    let secs: u64 = args.get(2).and_then(|v| v.parse().ok()).unwrap_or(3);
    let keep_alive: u64 = args.get(3).and_then(|v| v.parse().ok()).unwrap_or(60);
    let bare = rss_kib();
    let mut all = Vec::with_capacity(n);
    let mut first = 0.0;
    for i in 0..n {
        let ps = PubSub::new();
        let provider = MqttOverWsProvider::builder(url.as_str())
            .keep_alive(Duration::from_secs(keep_alive))
            .build()
            .unwrap();
        ps.add_provider(provider).unwrap();
        all.push(ps);
        if i == 0 {
            first = rss_kib();
        }
    }
    std::thread::sleep(Duration::from_secs(secs));
    let end = rss_kib();
    println!(
        "{{\"bare_kib\":{bare},\"first_kib\":{first},\"end_kib\":{end},\"per_conn_all_kib\":{:.2},\"per_conn_after_first_kib\":{:.2}}}",
        (end - bare) / n as f64,
        (end - first) / (n.max(2) - 1) as f64
    );
    drop(all);
}

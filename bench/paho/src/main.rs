//! Paho C's idle memory, counted as `idle-ours` counts ours: a binary of its own that links
//! only the Paho C client (through the paho-mqtt crate), `n` idle connections over the URL,
//! every one counted.
//!
//! `idle-paho URL N SECS [KEEPALIVE]` prints one JSON line with the same fields as
//! `idle-ours`.

use std::time::Duration;

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
    // As paho-mqtt's README shows a client (the asynchronous one, which the synchronous
    // one wraps): a unique client id, a clean session, the keep-alive asked (by default
    // 60 s, as ours). The connects run concurrently: mosquitto answers a WebSocket upgrade
    // a loop turn late, and Paho C's one-by-one connect then takes about 2 s each.
    let connect = |i: usize| {
        let create = paho_mqtt::CreateOptionsBuilder::new()
            .server_uri(url.as_str())
            .client_id(format!("idle-paho-{}-{i}", std::process::id()))
            .finalize();
        let client = paho_mqtt::AsyncClient::new(create).expect("paho client");
        let conn = paho_mqtt::ConnectOptionsBuilder::new()
            .keep_alive_interval(Duration::from_secs(keep_alive))
            .clean_session(true)
            .finalize();
        let token = client.connect(conn);
        (client, token)
    };
    let (client, token) = connect(0);
    token.wait().expect("paho connect");
    let first = rss_kib();
    let mut all = vec![client];
    let pending: Vec<_> = (1..n).map(connect).collect();
    for (client, token) in pending {
        token.wait().expect("paho connect");
        all.push(client);
    }
    std::thread::sleep(Duration::from_secs(secs));
    let end = rss_kib();
    let threads = std::fs::read_dir("/proc/self/task").map_or(0, |d| d.count());
    println!(
        "{{\"bare_kib\":{bare},\"first_kib\":{first},\"end_kib\":{end},\"per_conn_all_kib\":{:.2},\"per_conn_after_first_kib\":{:.2},\"threads\":{threads}}}",
        (end - bare) / n as f64,
        (end - first) / (n.max(2) - 1) as f64
    );
    for c in &all {
        let _ = c.disconnect(None).wait();
    }
}

//! Shared by the examples: the broker URL from `--url`, or an embedded rumqttd.

include!("embedded_config.rs");
include!("args.rs");

/// `--url U` if given; otherwise starts rumqttd in this process with a WebSocket listener on
/// a free loopback port and returns its URL.
pub fn url_or_embedded(args: &Args) -> String {
    if let Some(url) = args.value("--url") {
        return url;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port");
    let config = embedded_config(port);
    std::thread::spawn(move || {
        let _ = rumqttd::Broker::new(config).start();
    });
    let start = std::time::Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(10),
            "embedded broker did not start"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let url = format!("ws://127.0.0.1:{port}/mqtt");
    eprintln!("started an embedded rumqttd broker at {url}");
    url
}

//! Creating and closing a `PubSub` many times leaks no thread and no file descriptor.
//! Alone in its own test binary: other tests' threads would be counted too.

// Only a part of the shared support is used here (it uses one broker of the shared support).
#[allow(dead_code, unused_imports)]
mod support;

use mqtt_pubsub::{MqttOverWsProvider, PubSub};
use support::Nats;

fn threads_and_fds() -> (usize, usize) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let threads = status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let fds = std::fs::read_dir("/proc/self/fd").unwrap().count();
    (threads, fds)
}

#[test]
fn a_thousand_create_close_cycles_leak_no_thread_and_no_fd() {
    // An external broker, so that only our own threads and descriptors are in this process.
    let Some(n) = Nats::start() else { return };
    let url = n.ws_url();
    let cycle = || {
        let ps = PubSub::new();
        ps.add_provider(MqttOverWsProvider::builder(url.as_str()).build().unwrap())
            .unwrap();
        let _sub = ps.subscribe("leak").unwrap();
        ps.close().unwrap();
    };
    cycle();
    let before = threads_and_fds();
    for _ in 0..1000 {
        cycle();
    }
    let after = threads_and_fds();
    assert_eq!(before, after, "(threads, fds) before and after 1000 cycles");
}

//! Creating and closing a `PubSub` many times leaks no thread and no file descriptor, and an
//! idle provider holds one thread and two descriptors, also after QoS 1 traffic.
//! Alone in its own test binary: other tests' threads would be counted too.

// Only a part of the shared support is used here (it uses one broker of the shared support).
#[allow(dead_code, unused_imports)]
mod support;

use mqtt_pubsub::{MqttOverWsProvider, PubSub, PublishOptions, QoS};
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
    // A joined thread can still be counted in /proc for a moment while the kernel tears it
    // down (seen once under CI load: 3 threads "before", 2 after), and nothing signals its
    // end: the counts are read until they stop falling (polling with a deadline).
    let settled = |limit: Option<(usize, usize)>| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        let mut last = threads_and_fds();
        loop {
            std::thread::sleep(std::time::Duration::from_millis(20));
            let now = threads_and_fds();
            let done = match limit {
                Some(l) => now.0 <= l.0 && now.1 <= l.1,
                None => now == last,
            };
            if done || std::time::Instant::now() >= deadline {
                return now;
            }
            last = now;
        }
    };
    let before = settled(None);
    for _ in 0..1000 {
        cycle();
    }
    let after = settled(Some(before));
    assert_eq!(before, after, "(threads, fds) before and after 1000 cycles");

    // What an idle provider holds: one thread and two descriptors (its socket and an
    // eventfd that wakes its I/O thread), so that a process under the usual 1,024 open files
    // fits 500 providers. Before: three (an epoll besides), and four once a QoS 1 publish's
    // output had been held back for a sub-millisecond (a timerfd).
    let idle: Vec<PubSub> = (0..10)
        .map(|_| {
            let ps = PubSub::new();
            ps.add_provider(MqttOverWsProvider::builder(url.as_str()).build().unwrap())
                .unwrap();
            ps
        })
        .collect();
    let (threads, fds) = settled(None);
    assert_eq!(
        (threads - after.0, fds - after.1),
        (10, 20),
        "(threads, fds) of 10 idle providers"
    );
    // QoS 1 publishes back to back: the second is held back while the first is in flight.
    let opts = PublishOptions::default().qos(QoS::AtLeastOnce);
    for ps in &idle {
        let receipts: Vec<_> = (0..5)
            .map(|i| {
                ps.publish_nowait("leak/q1", format!("{i}"), opts.clone())
                    .unwrap()
            })
            .collect();
        for r in receipts {
            r.wait().unwrap();
        }
    }
    let (threads, fds) = settled(None);
    assert_eq!(
        (threads - after.0, fds - after.1),
        (10, 20),
        "(threads, fds) of 10 providers idle again after QoS 1 publishes"
    );
    drop(idle);
}

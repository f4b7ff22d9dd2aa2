//! Benchmark: this crate against rumqttc's sync `Client` (which runs tokio inside) over
//! WebSocket, with a raw ceiling, in the same run.
//!
//! ```text
//! cd bench && cargo run --release -- [--url ws://127.0.0.1:PORT/mqtt] [--runs 5]
//!     [--transport ws|tcp|wss|both|all] [--messages 200000]
//!     [--only throughput,qos1,latency,connect,idle,decode,user] [--idle-secs 30] [--json]
//!     [--mqtt-version 5]
//! ```
//!
//! Without `--url` it starts mosquitto (must be installed) on free loopback ports, and runs
//! the throughput, QoS 1, latency, connect and user-harness scenarios over WebSocket, again
//! over plain TCP and again over TLS WebSocket with a certificate it makes with openssl
//! (`--transport ws|tcp|wss|both|all`, default all; TCP rows are marked `TCP:`, TLS rows
//! `TLS:`), both clients on each; connection set-up also against NATS (if `nats-server` is
//! installed) and an embedded rumqttd. The raw ceiling (a hand-written client with no API)
//! runs beside QoS 0 and QoS 1 on every transport. Every
//! measurement runs in a fresh child process (so `getrusage` sees only that client), clients
//! alternate within each run, and the table shows medians and the ratio ours / rumqttc.
//! Rounds: `--runs` (default 5); latency at least 7 (its 99th percentile is the noisiest
//! figure); idle at most 3 (each round holds 100 connections for `--idle-secs`).
//! 4 KiB payloads are 4000 bytes: mosquitto 2.0's websockets slow down past ~4112-byte packets.

/// `--flag value` parsing and the embedded rumqttd, the same as the examples'.
#[path = "../../examples/support/broker.rs"]
mod broker;

use std::collections::VecDeque;
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const TIMEOUT: Duration = Duration::from_secs(120);

// ---------------------------------------------------------------- measuring

fn cpu_secs() -> f64 {
    // user + sys of the whole process, from /proc/self/stat (utime, stime in clock ticks).
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // Fields after the command: state is index 0, utime 11, stime 12.
    (ticks(11) + ticks(12)) / clock_ticks()
}

fn clock_ticks() -> f64 {
    // sysconf(_SC_CLK_TCK) is 100 on Linux everywhere this runs; getconf confirms it.
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

fn rss_kib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0.0)
}

fn threads() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Context switches (voluntary + involuntary) of every live thread: each is a wake-up.
fn context_switches() -> f64 {
    let mut total = 0.0;
    for task in std::fs::read_dir("/proc/self/task")
        .into_iter()
        .flatten()
        .flatten()
    {
        let status = std::fs::read_to_string(task.path().join("status")).unwrap_or_default();
        for l in status.lines() {
            if let Some(v) = l
                .strip_prefix("voluntary_ctxt_switches:")
                .or_else(|| l.strip_prefix("nonvoluntary_ctxt_switches:"))
            {
                total += v.trim().parse::<f64>().unwrap_or(0.0);
            }
        }
    }
    total
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    percentile(&v, 0.5)
}

/// What `getrusage` says of the whole process, with no file descriptor (for a process that
/// gave them all to its providers): (user + system seconds, voluntary + involuntary context
/// switches, peak RSS in KiB).
#[allow(unsafe_code)]
fn rusage() -> (f64, f64, f64) {
    // SAFETY: `getrusage` fills the struct it is given; all-zero is a valid `rusage`.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    (
        secs(u.ru_utime) + secs(u.ru_stime),
        (u.ru_nvcsw + u.ru_nivcsw) as f64,
        u.ru_maxrss as f64,
    )
}

/// The soft limit on open files.
#[allow(unsafe_code)]
fn open_file_limit() -> usize {
    // SAFETY: `getrlimit` fills the struct it is given.
    let mut l: libc::rlimit = unsafe { std::mem::zeroed() };
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) };
    l.rlim_cur as usize
}

/// Where a child that closed its standard output writes its result (set by `run_child`).
const RESULT_FILE: &str = "BENCH_RESULT_FILE";

// ---------------------------------------------------------------- our client

mod ours {
    use super::*;
    use mqtt_pubsub::{MqttOverWsProvider, PubSub, PublishOptions, QoS, SubscribeOptions};

    fn connect(url: &str, window: u16) -> PubSub {
        connect_with(url, window, None)
    }

    /// A builder for `url`, trusting the benchmark's CA on `wss://`.
    fn builder(url: &str) -> mqtt_pubsub::MqttOverWsProviderBuilder {
        let mut b = MqttOverWsProvider::builder(url);
        if mqtt5() {
            b = b.mqtt_version(mqtt_pubsub::MqttVersion::V5);
        }
        match bench_ca() {
            Some(ca) if url.starts_with("wss://") => b.ca_pem(ca),
            _ => b,
        }
    }

    fn connect_with(url: &str, window: u16, outbox: Option<&std::path::Path>) -> PubSub {
        let ps = PubSub::new();
        let mut b = builder(url)
            .max_inflight(window)
            .queue_capacity(4096)
            .subscription_capacity(1 << 20);
        if let Some(dir) = outbox {
            b = b
                .outbox(dir)
                .client_id(format!("bench-durable-{}", std::process::id()));
        }
        ps.add_provider(b.build().unwrap()).unwrap();
        ps
    }

    pub fn throughput(url: &str, qos: u8, size: usize, n: usize, window: u16) -> Value {
        throughput_with(url, qos, size, n, window, false)
    }

    /// QoS 1/2 with a durable outbox on the publisher (a fresh directory under the system's
    /// temporary directory, on whatever disk that is).
    pub fn throughput_durable(url: &str, qos: u8, size: usize, n: usize, window: u16) -> Value {
        throughput_with(url, qos, size, n, window, true)
    }

    fn throughput_with(
        url: &str,
        qos: u8,
        size: usize,
        n: usize,
        window: u16,
        durable: bool,
    ) -> Value {
        let q = QoS::from_u8(qos).unwrap();
        let sub_ps = connect(url, window);
        let topic = format!("bench/{}", std::process::id());
        let sub = sub_ps
            .subscribe_with(topic.as_str(), SubscribeOptions::default().qos(q))
            .unwrap();
        let dir =
            std::env::temp_dir().join(format!("mqtt-pubsub-bench-outbox-{}", std::process::id()));
        let pub_ps = connect_with(url, window, durable.then_some(dir.as_path()));
        let payload = vec![b'x'; size];
        let syncs0 =
            mqtt_pubsub::internals::OUTBOX_SYNCS.load(std::sync::atomic::Ordering::Relaxed);
        let (cpu0, t0) = (cpu_secs(), Instant::now());
        let publisher = {
            let topic = topic.clone();
            std::thread::spawn(move || {
                let opts = PublishOptions::default().qos(q).timeout(TIMEOUT);
                let mut receipts = VecDeque::new();
                for _ in 0..n {
                    if q == QoS::AtMostOnce {
                        pub_ps
                            .publish_with(topic.as_str(), payload.clone(), opts.clone())
                            .unwrap();
                    } else {
                        receipts.push_back(
                            pub_ps
                                .publish_nowait(topic.as_str(), payload.clone(), opts.clone())
                                .unwrap(),
                        );
                        if receipts.len() > window as usize * 2 {
                            receipts.pop_front().unwrap().wait().unwrap();
                        }
                    }
                }
                for r in receipts {
                    r.wait().unwrap();
                }
                pub_ps
            })
        };
        let mut got = 0;
        while got < n {
            match sub.recv_timeout(Duration::from_secs(10)) {
                Ok(_) => got += 1,
                Err(_) => break,
            }
        }
        let elapsed = t0.elapsed().as_secs_f64();
        let cpu = cpu_secs() - cpu0;
        let pub_ps = publisher.join().unwrap();
        let syncs = mqtt_pubsub::internals::OUTBOX_SYNCS.load(std::sync::atomic::Ordering::Relaxed)
            - syncs0;
        drop((pub_ps, sub, sub_ps));
        let _ = std::fs::remove_dir_all(&dir);
        json!({"received": got, "msgs_per_sec": got as f64 / elapsed, "cpu_us_per_msg": cpu * 1e6 / got.max(1) as f64,
               "fsyncs_per_1000": syncs as f64 * 1000.0 / got.max(1) as f64})
    }

    pub fn latency(url: &str, n: usize) -> Value {
        let ps = connect(url, 100);
        let topic = format!("lat/{}", std::process::id());
        let sub = ps.subscribe(topic.as_str()).unwrap();
        let mut samples = Vec::with_capacity(n);
        for i in 0..n + 100 {
            let t = Instant::now();
            ps.publish(topic.as_str(), "ping").unwrap();
            sub.recv_timeout(Duration::from_secs(10))
                .expect("round trip");
            if i >= 100 {
                samples.push(t.elapsed().as_secs_f64() * 1e6);
            }
        }
        summarize_latency(samples)
    }

    /// Connection set-up: from the call to `add_provider` returning (CONNACK received),
    /// `n` times one after another, each connection closed before the next.
    pub fn connect_time(url: &str, n: usize) -> Value {
        let mut samples = Vec::with_capacity(n);
        for i in 0..n {
            dephase(i);
            let t = Instant::now();
            let ps = PubSub::new();
            ps.add_provider(builder(url).build().unwrap()).unwrap();
            samples.push(t.elapsed().as_secs_f64() * 1e6);
            ps.close().unwrap();
        }
        summarize_latency(samples)
    }

    pub fn idle(url: &str, conns: usize, secs: u64) -> Value {
        // A first connection, not counted, faults in the code and the process-wide state
        // (TLS roots, the allocator's arenas) that a second one shares: only what each
        // connection adds is measured, as for rumqttc.
        let bare = rss_kib();
        let warm = PubSub::new();
        warm.add_provider(builder(url).build().unwrap()).unwrap();
        let (rss0, threads0) = (rss_kib(), threads());
        // One after another from this thread, as for rumqttc: helper threads would leave their
        // cached stacks and arenas in the measurement.
        let handles: Vec<_> = (0..conns)
            .map(|_| {
                let ps = PubSub::new();
                ps.add_provider(builder(url).build().unwrap()).unwrap();
                ps
            })
            .collect();
        idle_measure(conns, secs, (bare, rss0), threads0, || {
            drop((handles, warm))
        })
    }

    /// `n` providers on one `PubSub` against one broker (a gateway bridging many devices):
    /// the time to connect them all (added with `connect_in_background`, so that no add
    /// waits for another's CONNACK), RSS and threads per provider counted from the bare
    /// process, CPU and wake-ups while idle for `secs`, a QoS 0 and a QoS 1 publish to all,
    /// and one subscription over all of them (SUBACK from each, then one message in each).
    ///
    /// Each provider holds two descriptors (its socket and its I/O thread's eventfd). When
    /// `n` of them need every descriptor the process may open (10,000 under a limit of
    /// 20,000), the child closes its standard streams first, measures with `getrusage`
    /// alone (the peak RSS, no thread count: reading `/proc` takes a descriptor) and writes
    /// its result to [`RESULT_FILE`] once the providers are closed.
    pub fn scale(url: &str, n: usize, secs: u64) -> Value {
        let (rss0, threads0) = (rss_kib(), threads());
        let tight = 2 * n + 8 > open_file_limit();
        // Descriptors this child inherited besides the standard streams (a shell's or a CI
        // runner's, left open across exec): closed with them in tight mode.
        let mut inherited: Vec<(i32, String)> = Vec::new();
        if tight {
            let fds: Vec<(i32, String)> = std::fs::read_dir("/proc/self/fd")
                .unwrap()
                .flatten()
                .filter_map(|e| {
                    let fd: i32 = e.file_name().to_str()?.parse().ok()?;
                    let to = std::fs::read_link(e.path()).ok()?;
                    Some((fd, to.display().to_string()))
                })
                .collect();
            // (The read_dir's own handle is closed by now.)
            for (fd, to) in fds {
                // SAFETY: F_GETFD only asks whether `fd` is open.
                #[allow(unsafe_code)]
                let open = unsafe { libc::fcntl(fd, libc::F_GETFD) } != -1;
                if fd > 2 && open {
                    inherited.push((fd, to));
                }
            }
            assert!(
                2 * n <= open_file_limit(),
                "{n} providers need {} descriptors, over the limit of {}",
                2 * n,
                open_file_limit()
            );
            // A panic's message goes to a file next to the result (if a descriptor is free
            // then), not to standard error: descriptor 2 is a provider's by then.
            std::panic::set_hook(Box::new(|info| {
                if let Some(path) = std::env::var_os(RESULT_FILE) {
                    let mut path = std::path::PathBuf::from(path);
                    path.set_extension("panic");
                    let _ = std::fs::write(path, info.to_string());
                }
            }));
            // SAFETY: nothing in this process uses the standard streams or the inherited
            // descriptors from here on (the result goes to a file, written after the
            // providers have given their descriptors back).
            #[allow(unsafe_code)]
            unsafe {
                for fd in 0..3 {
                    libc::close(fd);
                }
                for (fd, _) in &inherited {
                    libc::close(*fd);
                }
            }
        }
        let ps = PubSub::new();
        let states = ps.state_changes();
        let t0 = Instant::now();
        for i in 0..n {
            ps.add_provider(
                builder(url)
                    .name(format!("p{i}"))
                    .connect_in_background(true)
                    .build()
                    .unwrap(),
            )
            .unwrap();
        }
        let added = t0.elapsed().as_secs_f64();
        // Polled: thousands of providers' events outrun one bounded receiver of state events
        // (it keeps the latest 1024), so counting `Connected` events would miss some.
        drop(states);
        let names = ps.provider_names();
        let mut waiting: Vec<&String> = names.iter().collect();
        while !waiting.is_empty() {
            assert!(
                t0.elapsed() < Duration::from_secs(300),
                "{} of {n} providers never connected",
                waiting.len()
            );
            waiting.retain(|name| ps.state(name) != Some(mqtt_pubsub::ConnectionState::Connected));
            std::thread::sleep(Duration::from_millis(20));
        }
        let connect_all = t0.elapsed().as_secs_f64();
        std::thread::sleep(Duration::from_millis(500));
        let (rss1, threads1) = if tight {
            (rusage().2, f64::NAN)
        } else {
            (rss_kib(), threads())
        };
        let (cpu0, switches0, _) = rusage();
        std::thread::sleep(Duration::from_secs(secs));
        let (cpu1, switches1, _) = rusage();
        let idle_cpu = cpu1 - cpu0;
        // The sleeping thread's own wake-up is not the providers'.
        let wakeups = (switches1 - switches0 - 1.0).max(0.0) / secs as f64;
        let t = Instant::now();
        ps.publish("scale/all", "x").unwrap();
        let publish_q0_ms = t.elapsed().as_secs_f64() * 1e3;
        let t = Instant::now();
        ps.publish_with(
            "scale/all",
            "x",
            PublishOptions::default().qos(QoS::AtLeastOnce),
        )
        .unwrap();
        let publish_q1_ms = t.elapsed().as_secs_f64() * 1e3;
        let (t, cpu_sub0) = (Instant::now(), rusage().0);
        let sub = ps
            .subscribe_with(
                "scale/fan",
                SubscribeOptions::default().capacity(n.max(1) * 2),
            )
            .unwrap();
        let subscribe_ms = t.elapsed().as_secs_f64() * 1e3;
        // Our CPU in it: the rest of the wall time is the broker's (SUBACKs in its turns).
        let subscribe_cpu_ms = (rusage().0 - cpu_sub0) * 1e3;
        let rss_before_fan = if tight { rusage().2 } else { rss_kib() };
        let (cpu_fan0, t) = (rusage().0, Instant::now());
        // One provider publishes; the broker sends a copy to each of the n.
        ps.publish_with("scale/fan", "fan", PublishOptions::default().provider("p0"))
            .unwrap();
        for _ in 0..n {
            sub.recv_timeout(Duration::from_secs(60))
                .expect("a copy from every provider");
        }
        let fan_ms = t.elapsed().as_secs_f64() * 1e3;
        let fan_cpu_ms = (rusage().0 - cpu_fan0) * 1e3;
        let fan_rss_kib = if tight { rusage().2 } else { rss_kib() } - rss_before_fan;
        let t = Instant::now();
        ps.close().unwrap();
        let close_s = t.elapsed().as_secs_f64();
        let result = json!({
            "providers": n,
            "add_all_s": added,
            "connect_all_s": connect_all,
            "rss_kib_per_provider": (rss1 - rss0) / n as f64,
            "threads_per_provider": (threads1 - threads0) / n as f64,
            "idle_cpu_pct": idle_cpu / secs as f64 * 100.0,
            "idle_wakeups_per_s": wakeups,
            "publish_all_q0_ms": publish_q0_ms,
            "publish_all_q1_ms": publish_q1_ms,
            "subscribe_all_ms": subscribe_ms,
            "subscribe_all_cpu_ms": subscribe_cpu_ms,
            "fan_in_ms": fan_ms,
            "fan_in_cpu_ms": fan_cpu_ms,
            "fan_in_rss_kib": fan_rss_kib,
            "close_all_s": close_s,
            "rss": if tight { "peak (getrusage)" } else { "current (/proc)" },
            "closed_inherited": inherited
                .iter()
                .map(|(fd, to)| format!("{fd} -> {to}"))
                .collect::<Vec<_>>(),
        });
        if tight {
            if let Some(path) = std::env::var_os(RESULT_FILE) {
                let _ = std::fs::write(path, result.to_string());
            }
        }
        result
    }

    pub fn decode(size: usize) -> Value {
        use mqtt_pubsub::internals::codec::Framer;
        use mqtt_pubsub::internals::packet::encode;
        let packet = mqtt::packet::PublishPacket::new(
            mqtt::TopicName::new("bench/decode").unwrap(),
            mqtt::packet::QoSWithPacketIdentifier::Level0,
            vec![b'x'; size],
        );
        let mut one = Vec::new();
        encode(&packet, &mut one);
        let stream: Vec<u8> = one
            .iter()
            .copied()
            .cycle()
            .take(one.len() * (32 << 20) / one.len())
            .collect();
        // In 16 KiB pieces, as WebSocket frames bring it (tungstenite hands over `Bytes`).
        let chunks: Vec<tungstenite::Bytes> = stream
            .chunks(16 * 1024)
            .map(tungstenite::Bytes::copy_from_slice)
            .collect();
        let (t0, mut packets) = (Instant::now(), 0usize);
        let mut rounds = 0;
        while t0.elapsed() < Duration::from_secs(2) || rounds == 0 {
            let mut f = Framer::new(1 << 20);
            for chunk in &chunks {
                f.feed_bytes(chunk.clone(), |p| {
                    std::hint::black_box(p);
                    packets += 1;
                    Ok(())
                })
                .unwrap();
            }
            rounds += 1;
        }
        let secs = t0.elapsed().as_secs_f64();
        json!({"mb_per_sec": (stream.len() * rounds) as f64 / secs / 1e6, "packets_per_sec": packets as f64 / secs})
    }
}

/// Whether this run speaks MQTT 5 (`--mqtt-version 5`; the parent sets `BENCH_MQTT5` for
/// its children).
fn mqtt5() -> bool {
    std::env::var_os("BENCH_MQTT5").is_some()
}

// ---------------------------------------------------------------- the user harness

/// Both clients driven the way the README shows and a user writes them, with every setting
/// at its default (issue 17's "second harness"): one publishing client calling its publish
/// with `payload.clone()`, one subscribing client drained on its own thread (ours: `for m in
/// &sub` with the subscription's capacity set to N; rumqttc: `Connection::iter()` on its own
/// thread forwarding each message into a std `mpsc` channel, drained by another thread); CPU
/// is the whole process's from the first publish to the last receive.
mod user {
    use super::*;
    use std::sync::mpsc;

    pub fn ours_throughput(url: &str, size: usize, n: usize) -> Value {
        use mqtt_pubsub::{MqttOverWsProvider, PubSub, PublishOptions, SubscribeOptions};
        let connect = || {
            let ps = PubSub::new();
            ps.add_provider(MqttOverWsProvider::builder(url).build().unwrap())
                .unwrap();
            ps
        };
        let topic = format!("user/{}", std::process::id());
        let sub_ps = connect();
        let sub = sub_ps
            .subscribe_with(topic.as_str(), SubscribeOptions::default().capacity(n))
            .unwrap();
        let (done_tx, done_rx) = mpsc::channel();
        let drain = std::thread::spawn(move || {
            let mut got = 0;
            for _m in &sub {
                got += 1;
                if got == n {
                    break;
                }
            }
            let _ = done_tx.send(Instant::now());
            got
        });
        let pub_ps = connect();
        let payload = vec![b'x'; size];
        let opts = PublishOptions::default();
        let (cpu0, t0) = (cpu_secs(), Instant::now());
        for _ in 0..n {
            pub_ps
                .publish_with(topic.as_str(), payload.clone(), opts.clone())
                .unwrap();
        }
        let end = done_rx.recv_timeout(Duration::from_secs(30)).ok();
        let cpu = cpu_secs() - cpu0;
        let got = if end.is_some() {
            drain.join().unwrap()
        } else {
            0
        };
        let elapsed = end.map_or(f64::NAN, |e| (e - t0).as_secs_f64());
        json!({"received": got, "msgs_per_sec": got as f64 / elapsed, "cpu_us_per_msg": cpu * 1e6 / got.max(1) as f64})
    }

    pub fn ours_latency(url: &str, n: usize) -> Value {
        use mqtt_pubsub::{MqttOverWsProvider, PubSub, PublishOptions};
        let ps = PubSub::new();
        ps.add_provider(MqttOverWsProvider::builder(url).build().unwrap())
            .unwrap();
        let topic = format!("user-lat/{}", std::process::id());
        let sub = ps.subscribe(topic.as_str()).unwrap();
        let payload = vec![b'x'; 64];
        let opts = PublishOptions::default();
        let mut samples = Vec::with_capacity(n);
        for _ in 0..n {
            let t = Instant::now();
            ps.publish_with(topic.as_str(), payload.clone(), opts.clone())
                .unwrap();
            sub.recv_timeout(Duration::from_secs(10))
                .expect("round trip");
            samples.push(t.elapsed().as_secs_f64() * 1e6);
        }
        summarize_latency(samples)
    }

    fn rumqttc_client(url: &str, id: &str) -> (rumqttc::Client, mpsc::Receiver<rumqttc::Publish>) {
        use rumqttc::{Client, Event, MqttOptions, Packet, Transport};
        let u = url::Url::parse(url).unwrap();
        let port = u.port().unwrap_or(80);
        let mut o = if u.scheme() == "mqtt" {
            MqttOptions::new(id, u.host_str().unwrap(), port)
        } else {
            let mut o = MqttOptions::new(id, url, port);
            o.set_transport(Transport::Ws);
            o
        };
        o.set_keep_alive(Duration::from_secs(60));
        let (client, mut connection) = Client::new(o, 10);
        let (tx, rx) = mpsc::channel();
        let (ready_tx, ready_rx) = mpsc::channel();
        std::thread::spawn(move || {
            for ev in connection.iter() {
                match ev {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        let _ = ready_tx.send(());
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        if tx.send(p).is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(_) => return,
                }
            }
        });
        ready_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("rumqttc connected");
        (client, rx)
    }

    pub fn rumqttc_throughput(url: &str, size: usize, n: usize) -> Value {
        use rumqttc::QoS;
        let topic = format!("user/{}", std::process::id());
        let (sub_client, rx) = rumqttc_client(url, &format!("user-sub-{}", std::process::id()));
        sub_client
            .subscribe(topic.as_str(), QoS::AtMostOnce)
            .unwrap();
        // rumqttc has no call that waits for SUBACK: a first message proves it.
        let (pub_client, _) = rumqttc_client(url, &format!("user-pub-{}", std::process::id()));
        loop {
            pub_client
                .publish(topic.as_str(), QoS::AtMostOnce, false, "warm-up")
                .unwrap();
            if rx.recv_timeout(Duration::from_millis(200)).is_ok() {
                break;
            }
        }
        while rx.try_recv().is_ok() {}
        let (done_tx, done_rx) = mpsc::channel();
        let drain = std::thread::spawn(move || {
            let mut got = 0;
            while got < n {
                match rx.recv_timeout(Duration::from_secs(30)) {
                    Ok(_) => got += 1,
                    Err(_) => break,
                }
            }
            let _ = done_tx.send(Instant::now());
            got
        });
        let payload = vec![b'x'; size];
        let (cpu0, t0) = (cpu_secs(), Instant::now());
        for _ in 0..n {
            pub_client
                .publish(topic.as_str(), QoS::AtMostOnce, false, payload.clone())
                .unwrap();
        }
        let end = done_rx.recv_timeout(Duration::from_secs(60)).ok();
        let cpu = cpu_secs() - cpu0;
        let got = drain.join().unwrap();
        let elapsed = end.map_or(f64::NAN, |e| (e - t0).as_secs_f64());
        json!({"received": got, "msgs_per_sec": got as f64 / elapsed, "cpu_us_per_msg": cpu * 1e6 / got.max(1) as f64})
    }

    pub fn rumqttc_latency(url: &str, n: usize) -> Value {
        use rumqttc::QoS;
        let topic = format!("user-lat/{}", std::process::id());
        let (client, rx) = rumqttc_client(url, &format!("user-lat-{}", std::process::id()));
        client.subscribe(topic.as_str(), QoS::AtMostOnce).unwrap();
        loop {
            client
                .publish(topic.as_str(), QoS::AtMostOnce, false, "warm-up")
                .unwrap();
            if rx.recv_timeout(Duration::from_millis(200)).is_ok() {
                break;
            }
        }
        while rx.try_recv().is_ok() {}
        let payload = vec![b'x'; 64];
        let mut samples = Vec::with_capacity(n);
        for _ in 0..n {
            let t = Instant::now();
            client
                .publish(topic.as_str(), QoS::AtMostOnce, false, payload.clone())
                .unwrap();
            rx.recv_timeout(Duration::from_secs(10))
                .expect("round trip");
            samples.push(t.elapsed().as_secs_f64() * 1e6);
        }
        summarize_latency(samples)
    }
}

// ---------------------------------------------------------------- rumqttc, both clients

/// The rumqttc scenarios shared by its MQTT 3.1.1 and MQTT 5 clients, expanded in `peer` and
/// `peer5`: there `Client`, `Event`, `Incoming` (its incoming-packet enum), `QoS` and
/// `options` name that client's own types and settings.
macro_rules! rumqttc_scenarios {
    () => {
        fn next_id() -> u64 {
            use std::sync::atomic::{AtomicU64, Ordering};
            static N: AtomicU64 = AtomicU64::new(0);
            N.fetch_add(1, Ordering::Relaxed)
        }

        fn qos(q: u8) -> QoS {
            match q {
                0 => QoS::AtMostOnce,
                1 => QoS::AtLeastOnce,
                _ => QoS::ExactlyOnce,
            }
        }

        /// Starts a connection thread; `on_event` sees every event; returns the client.
        fn start(
            url: &str,
            window: u16,
            mut on_event: impl FnMut(&Event) -> bool + Send + 'static,
        ) -> (Client, std::thread::JoinHandle<()>) {
            let (client, mut connection) = Client::new(options(url, window), 4096);
            let (ready_tx, ready_rx) = crossbeam_channel::bounded(1);
            let h = std::thread::spawn(move || {
                let mut ready = Some(ready_tx);
                for ev in connection.iter() {
                    match ev {
                        Ok(ev) => {
                            if let Event::Incoming(Incoming::ConnAck(_)) = ev {
                                if let Some(r) = ready.take() {
                                    let _ = r.send(());
                                }
                            }
                            if !on_event(&ev) {
                                return;
                            }
                        }
                        Err(_) => return,
                    }
                }
            });
            ready_rx
                .recv_timeout(Duration::from_secs(10))
                .expect("rumqttc connected");
            (client, h)
        }

        /// A client subscribed to `topic` (its SUBACK in): a unit arrives on the receiver
        /// per PUBLISH it gets.
        fn subscriber(
            url: &str,
            window: u16,
            topic: &str,
            q: QoS,
        ) -> (Client, crossbeam_channel::Receiver<()>) {
            let (got_tx, got_rx) = crossbeam_channel::unbounded::<()>();
            let (suback_tx, suback_rx) = crossbeam_channel::bounded(1);
            let (client, _thread) = start(url, window, move |ev| {
                match ev {
                    Event::Incoming(Incoming::Publish(_)) => {
                        let _ = got_tx.send(());
                    }
                    Event::Incoming(Incoming::SubAck(_)) => {
                        let _ = suback_tx.try_send(());
                    }
                    _ => {}
                }
                true
            });
            client.subscribe(topic, q).unwrap();
            suback_rx
                .recv_timeout(Duration::from_secs(10))
                .expect("SUBACK");
            (client, got_rx)
        }

        pub fn throughput(url: &str, q: u8, size: usize, n: usize, window: u16) -> Value {
            let topic = format!("bench/{}", std::process::id());
            let (_sub_client, got_rx) = subscriber(url, window, &topic, qos(q));
            let (ack_tx, ack_rx) = crossbeam_channel::unbounded::<()>();
            let (pub_client, _pub_thread) = start(url, window, move |ev| {
                if let Event::Incoming(Incoming::PubAck(_)) = ev {
                    let _ = ack_tx.send(());
                }
                true
            });
            let payload = vec![b'x'; size];
            let (cpu0, t0) = (cpu_secs(), Instant::now());
            let publisher = {
                let topic = topic.clone();
                std::thread::spawn(move || {
                    for _ in 0..n {
                        pub_client
                            .publish(topic.as_str(), qos(q), false, payload.clone())
                            .unwrap();
                    }
                    pub_client
                })
            };
            let mut got = 0;
            while got < n && got_rx.recv_timeout(Duration::from_secs(10)).is_ok() {
                got += 1;
            }
            if q > 0 {
                for _ in 0..n {
                    if ack_rx.recv_timeout(Duration::from_secs(10)).is_err() {
                        break;
                    }
                }
            }
            let elapsed = t0.elapsed().as_secs_f64();
            let cpu = cpu_secs() - cpu0;
            let _ = publisher.join();
            json!({"received": got, "msgs_per_sec": got as f64 / elapsed, "cpu_us_per_msg": cpu * 1e6 / got.max(1) as f64})
        }

        pub fn latency(url: &str, n: usize) -> Value {
            let topic = format!("lat/{}", std::process::id());
            let (client, got_rx) = subscriber(url, 100, &topic, QoS::AtMostOnce);
            let mut samples = Vec::with_capacity(n);
            for i in 0..n + 100 {
                let t = Instant::now();
                client
                    .publish(topic.as_str(), QoS::AtMostOnce, false, "ping")
                    .unwrap();
                got_rx
                    .recv_timeout(Duration::from_secs(10))
                    .expect("round trip");
                if i >= 100 {
                    samples.push(t.elapsed().as_secs_f64() * 1e6);
                }
            }
            summarize_latency(samples)
        }
    };
}

// ---------------------------------------------------------------- rumqttc's v5 client

mod peer5 {
    use super::*;
    use rumqttc::v5::mqttbytes::QoS;
    use rumqttc::v5::{Client, Event, Incoming, MqttOptions};
    use rumqttc::Transport;

    fn options(url: &str, window: u16) -> MqttOptions {
        let u = url::Url::parse(url).unwrap();
        let port = u.port().unwrap_or(80);
        let id = format!("rumqttc5-{}-{}", std::process::id(), next_id());
        let mut o = if u.scheme() == "mqtt" {
            MqttOptions::new(id, u.host_str().unwrap(), port)
        } else {
            let mut o = MqttOptions::new(id, url, port);
            o.set_transport(Transport::Ws);
            o
        };
        o.set_keep_alive(Duration::from_secs(60));
        o.set_outgoing_inflight_upper_limit(window);
        o.set_max_packet_size(Some(1 << 20));
        o.set_request_channel_capacity(4096);
        o
    }

    rumqttc_scenarios!();
}

/// Bytes on the wire per MQTT 5 PUBLISH of 64 B to a 52-byte AWS-style topic, computed by
/// our encoder: the topic every time, or once and then a topic alias (what a server with a
/// Topic Alias Maximum lets us do).
fn alias_saving() -> Value {
    use mqtt_pubsub::internals::packet::Outgoing;
    use mqtt_pubsub::internals::packet::{encode_publish, Alias};
    let o = Outgoing {
        topic: "$aws/things/sensor-0001-north-wing/shadow/update/delta".into(),
        payload: vec![b'x'; 64],
        qos: mqtt_pubsub::QoS::AtMostOnce,
        retain: false,
        props: Vec::new(),
    };
    let size = |a| {
        let mut b = Vec::new();
        encode_publish(&o, 0, false, a, &mut b);
        b.len() as f64
    };
    json!({"topic_bytes": o.topic.len(), "without_alias": size(Alias::None), "with_alias": size(Alias::Use(1))})
}

// ---------------------------------------------------------------- rumqttc

mod peer {
    use super::*;
    use rumqttc::Packet as Incoming;
    use rumqttc::{Client, Event, MqttOptions, Packet, QoS, Transport};

    fn options(url: &str, window: u16) -> MqttOptions {
        let u = url::Url::parse(url).unwrap();
        let port = u.port().unwrap_or(80);
        let id = format!("rumqttc-{}-{}", std::process::id(), next_id());
        let mut o = if u.scheme() == "mqtt" {
            // rumqttc's TCP transport takes the host; its WebSocket transport the whole URL.
            MqttOptions::new(id, u.host_str().unwrap(), port)
        } else if u.scheme() == "wss" {
            // ring as the process's rustls provider (rumqttc is built without one).
            let _ = rustls::crypto::ring::default_provider().install_default();
            let mut o = MqttOptions::new(id, url, port);
            o.set_transport(Transport::wss_with_config(
                rumqttc::TlsConfiguration::Simple {
                    ca: bench_ca().expect("the benchmark's CA"),
                    alpn: None,
                    client_auth: None,
                },
            ));
            o
        } else {
            let mut o = MqttOptions::new(id, url, port);
            o.set_transport(Transport::Ws);
            o
        };
        o.set_keep_alive(Duration::from_secs(60));
        o.set_inflight(window);
        o.set_max_packet_size(1 << 20, 1 << 20);
        o.set_request_channel_capacity(4096);
        o
    }

    rumqttc_scenarios!();

    /// Connection set-up: from `Client::new` to the CONNACK event, as a user of the sync
    /// client waits for it (its event loop on its own thread, as in every scenario).
    pub fn connect_time(url: &str, n: usize) -> Value {
        let mut samples = Vec::with_capacity(n);
        for i in 0..n {
            dephase(i);
            let t = Instant::now();
            let (client, handle) = start(url, 10, |_| true);
            samples.push(t.elapsed().as_secs_f64() * 1e6);
            let _ = client.disconnect();
            let _ = handle.join();
        }
        summarize_latency(samples)
    }

    pub fn idle(url: &str, conns: usize, secs: u64) -> Value {
        // The uncounted first connection, as for ours.
        let bare = rss_kib();
        let warm = start(url, 100, |_| true);
        let (rss0, threads0) = (rss_kib(), threads());
        let mut handles = Vec::new();
        for _ in 0..conns {
            handles.push(start(url, 100, |_| true));
        }
        idle_measure(conns, secs, (bare, rss0), threads0, || {
            drop((handles, warm))
        })
    }

    pub fn decode(size: usize) -> Value {
        use bytes::BytesMut;
        let mut one = BytesMut::new();
        rumqttc::Publish::new("bench/decode", QoS::AtMostOnce, vec![b'x'; size])
            .write(&mut one)
            .unwrap();
        let stream: Vec<u8> = one
            .iter()
            .copied()
            .cycle()
            .take(one.len() * (32 << 20) / one.len())
            .collect();
        let (t0, mut packets) = (Instant::now(), 0usize);
        let mut rounds = 0;
        while t0.elapsed() < Duration::from_secs(2) || rounds == 0 {
            // Fed in 16 KiB pieces, as a socket read would bring it.
            let mut buf = BytesMut::with_capacity(64 * 1024);
            for chunk in stream.chunks(16 * 1024) {
                buf.extend_from_slice(chunk);
                loop {
                    match Packet::read(&mut buf, 1 << 20) {
                        Ok(p) => {
                            std::hint::black_box(p);
                            packets += 1;
                        }
                        Err(rumqttc::Error::InsufficientBytes(_)) => break,
                        Err(e) => panic!("{e:?}"),
                    }
                }
            }
            rounds += 1;
        }
        let secs = t0.elapsed().as_secs_f64();
        json!({"mb_per_sec": (stream.len() * rounds) as f64 / secs / 1e6, "packets_per_sec": packets as f64 / secs})
    }
}

// ---------------------------------------------------------------- raw ceiling

mod raw {
    use super::*;
    use tungstenite::Message;

    fn rl(mut n: usize, out: &mut Vec<u8>) {
        loop {
            let mut b = (n % 128) as u8;
            n /= 128;
            if n > 0 {
                b |= 0x80;
            }
            out.push(b);
            if n == 0 {
                return;
            }
        }
    }

    /// The raw client's connection: MQTT in WebSocket frames, or on the TCP stream.
    #[allow(clippy::large_enum_variant)]
    enum Conn {
        Ws(tungstenite::WebSocket<TcpStream>),
        Wss(tungstenite::WebSocket<Tls>),
        Tcp(TcpStream),
    }

    type Tls = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

    /// TLS over `tcp` to `host`, trusting the benchmark's CA (ring, as for rumqttc).
    fn tls(host: &str, tcp: TcpStream) -> Tls {
        use rustls::pki_types::{pem::PemObject, CertificateDer, ServerName};
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(&bench_ca().expect("the benchmark's CA")) {
            roots.add(c.unwrap()).unwrap();
        }
        let config = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let name = ServerName::try_from(host.to_string()).unwrap();
        let conn = rustls::ClientConnection::new(std::sync::Arc::new(config), name).unwrap();
        rustls::StreamOwned::new(conn, tcp)
    }

    impl Conn {
        /// Sends `bytes` (one frame on WebSocket), unflushed.
        fn write(&mut self, bytes: bytes::Bytes) {
            match self {
                Conn::Ws(ws) => ws.write(Message::Binary(bytes)).unwrap(),
                Conn::Wss(ws) => ws.write(Message::Binary(bytes)).unwrap(),
                Conn::Tcp(t) => std::io::Write::write_all(t, &bytes).unwrap(),
            }
        }

        fn flush(&mut self) {
            match self {
                Conn::Ws(ws) => ws.flush().unwrap(),
                Conn::Wss(ws) => ws.flush().unwrap(),
                Conn::Tcp(t) => std::io::Write::flush(t).unwrap(),
            }
        }

        /// The next bytes received (a frame's, or one read's), `None` at the end or a
        /// timeout.
        fn read(&mut self) -> Option<Vec<u8>> {
            match self {
                Conn::Ws(ws) => loop {
                    match ws.read() {
                        Ok(Message::Binary(b)) => return Some(b.to_vec()),
                        Ok(_) => continue,
                        Err(_) => return None,
                    }
                },
                Conn::Wss(ws) => loop {
                    match ws.read() {
                        Ok(Message::Binary(b)) => return Some(b.to_vec()),
                        Ok(_) => continue,
                        Err(_) => return None,
                    }
                },
                Conn::Tcp(t) => {
                    let mut buf = vec![0u8; 64 * 1024];
                    match std::io::Read::read(t, &mut buf) {
                        Ok(0) | Err(_) => None,
                        Ok(n) => {
                            buf.truncate(n);
                            Some(buf)
                        }
                    }
                }
            }
        }

        fn tcp(&self) -> &TcpStream {
            match self {
                Conn::Ws(ws) => ws.get_ref(),
                Conn::Wss(ws) => &ws.get_ref().sock,
                Conn::Tcp(t) => t,
            }
        }
    }

    fn connect(url: &str, id: &str) -> Conn {
        let u = url::Url::parse(url).unwrap();
        let tcp = TcpStream::connect((u.host_str().unwrap(), u.port().unwrap())).unwrap();
        tcp.set_nodelay(true).unwrap();
        let mut conn = if u.scheme() == "mqtt" {
            Conn::Tcp(tcp)
        } else {
            let mut req = tungstenite::client::IntoClientRequest::into_client_request(url).unwrap();
            req.headers_mut()
                .insert("Sec-WebSocket-Protocol", "mqtt".parse().unwrap());
            if u.scheme() == "wss" {
                let tls = tls(u.host_str().unwrap(), tcp);
                Conn::Wss(tungstenite::client::client(req, tls).unwrap().0)
            } else {
                Conn::Ws(tungstenite::client::client(req, tcp).unwrap().0)
            }
        };
        let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', 4, 2, 0, 60, 0, id.len() as u8];
        body.extend_from_slice(id.as_bytes());
        let mut connect = vec![0x10];
        rl(body.len(), &mut connect);
        connect.extend(body);
        conn.write(connect.into());
        conn.flush();
        // CONNACK: four bytes, in one frame or one read.
        let ack = conn.read().expect("CONNACK");
        assert_eq!(ack.first(), Some(&0x20), "CONNACK");
        conn
    }

    /// Pre-encoded PUBLISH packets pushed as fast as the socket takes them (packed into
    /// frames under 4 KB, mosquitto's fast path); the reader only parses fixed headers.
    pub fn throughput(url: &str, size: usize, n: usize) -> Value {
        let topic = format!("bench/{}", std::process::id());
        let mut reader = connect(url, &format!("raw-r-{}", std::process::id()));
        subscribe(&mut reader, &topic, 0);
        let mut writer = connect(url, &format!("raw-w-{}", std::process::id()));
        let mut one = vec![0x30];
        rl(2 + topic.len() + size, &mut one);
        one.extend_from_slice(&(topic.len() as u16).to_be_bytes());
        one.extend_from_slice(topic.as_bytes());
        one.extend(std::iter::repeat_n(b'x', size));
        let per_frame = (4000 / one.len()).max(1);
        let frame: Vec<u8> = one
            .iter()
            .copied()
            .cycle()
            .take(one.len() * per_frame)
            .collect();
        let frame = bytes::Bytes::from(frame);
        let (cpu0, t0) = (cpu_secs(), Instant::now());
        let w = std::thread::spawn(move || {
            let mut sent = 0;
            while sent < n {
                writer.write(frame.clone());
                sent += per_frame;
                if sent % (per_frame * 16) == 0 {
                    writer.flush();
                }
            }
            writer.flush();
            writer
        });
        let (mut got, mut buf) = (0usize, Vec::<u8>::new());
        reader
            .tcp()
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        while got < n {
            let Some(b) = reader.read() else {
                break;
            };
            buf.extend_from_slice(&b);
            split_packets(&mut buf, |p| {
                if p[0] >> 4 == 3 {
                    got += 1;
                }
            });
        }
        let elapsed = t0.elapsed().as_secs_f64();
        let cpu = cpu_secs() - cpu0;
        let _ = w.join();
        json!({"received": got, "msgs_per_sec": got as f64 / elapsed, "cpu_us_per_msg": cpu * 1e6 / got.max(1) as f64})
    }
    /// Calls `each` with every complete MQTT packet at the front of `buf` and removes them.
    fn split_packets(buf: &mut Vec<u8>, mut each: impl FnMut(&[u8])) {
        let mut at = 0;
        loop {
            let mut len = 0usize;
            let mut i = 0;
            let done = loop {
                let Some(&byte) = buf.get(at + 1 + i) else {
                    break None;
                };
                len |= ((byte & 0x7f) as usize) << (7 * i);
                i += 1;
                if byte & 0x80 == 0 {
                    break Some(1 + i + len);
                }
            };
            match done {
                Some(total) if at + total <= buf.len() => {
                    each(&buf[at..at + total]);
                    at += total;
                }
                _ => break,
            }
        }
        buf.drain(..at);
    }

    /// Subscribes `conn` to `topic` at `qos` and waits for the SUBACK.
    fn subscribe(conn: &mut Conn, topic: &str, qos: u8) {
        let mut sub = vec![0x82];
        let mut body = vec![0, 1, 0, topic.len() as u8];
        body.extend_from_slice(topic.as_bytes());
        body.push(qos);
        rl(body.len(), &mut sub);
        sub.extend(body);
        conn.write(sub.into());
        conn.flush();
        while conn.read().expect("SUBACK")[0] != 0x90 {}
    }

    /// A connection past its handshake, read and written without tungstenite: the reader
    /// takes every WebSocket frame (and MQTT packet) one `read` brought, and a write is one
    /// masked frame — what a minimal hand-written client does.
    struct Bare {
        io: BareIo,
        ws: bool,
        frames: Vec<u8>,
        packets: Vec<u8>,
    }

    enum BareIo {
        Tcp(TcpStream),
        Tls(Box<Tls>),
    }

    impl std::io::Read for BareIo {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            match self {
                BareIo::Tcp(t) => t.read(buf),
                BareIo::Tls(t) => t.read(buf),
            }
        }
    }

    impl std::io::Write for BareIo {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            match self {
                BareIo::Tcp(t) => t.write(buf),
                BareIo::Tls(t) => t.write(buf),
            }
        }
        fn flush(&mut self) -> std::io::Result<()> {
            match self {
                BareIo::Tcp(t) => t.flush(),
                BareIo::Tls(t) => t.flush(),
            }
        }
    }

    impl Bare {
        fn new(conn: Conn) -> Bare {
            conn.tcp()
                .set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            // The handshake's WebSocket (if any) is done with: nothing more was sent to it.
            let (io, ws) = match conn {
                Conn::Ws(ws) => (BareIo::Tcp(ws.into_inner()), true),
                Conn::Wss(ws) => (BareIo::Tls(Box::new(ws.into_inner())), true),
                Conn::Tcp(t) => (BareIo::Tcp(t), false),
            };
            Bare {
                io,
                ws,
                frames: Vec::new(),
                packets: Vec::new(),
            }
        }

        /// One blocking read; `each` sees every MQTT packet completed by it. `false` at the
        /// end or a timeout.
        fn read(&mut self, each: impl FnMut(&[u8])) -> bool {
            let mut chunk = [0u8; 64 * 1024];
            let got = match std::io::Read::read(&mut self.io, &mut chunk) {
                Ok(0) | Err(_) => return false,
                Ok(n) => &chunk[..n],
            };
            if !self.ws {
                self.packets.extend_from_slice(got);
            } else {
                // Server frames are unmasked: 2 header bytes, then a 16- or 64-bit length.
                self.frames.extend_from_slice(got);
                let mut at = 0;
                while self.frames.len() >= at + 2 {
                    let f = &self.frames[at..];
                    let (len, head) = match f[1] & 0x7f {
                        126 if f.len() >= 4 => (u16::from_be_bytes([f[2], f[3]]) as usize, 4),
                        127 if f.len() >= 10 => (
                            u64::from_be_bytes(f[2..10].try_into().unwrap()) as usize,
                            10,
                        ),
                        126 | 127 => break,
                        l => (l as usize, 2),
                    };
                    if f.len() < head + len {
                        break;
                    }
                    self.packets.extend_from_slice(&f[head..head + len]);
                    at += head + len;
                }
                self.frames.drain(..at);
            }
            split_packets(&mut self.packets, each);
            true
        }

        /// `bytes` in one write (one masked binary frame on WebSocket).
        fn write(&mut self, bytes: &[u8]) {
            if !self.ws {
                std::io::Write::write_all(&mut self.io, bytes).unwrap();
                return;
            }
            let key = [0x5a, 0x17, 0xc3, 0x81];
            let mut out = Vec::with_capacity(bytes.len() + 14);
            out.push(0x82);
            match bytes.len() {
                l if l < 126 => out.push(0x80 | l as u8),
                l if l < 65536 => {
                    out.push(0x80 | 126);
                    out.extend_from_slice(&(l as u16).to_be_bytes());
                }
                l => {
                    out.push(0x80 | 127);
                    out.extend_from_slice(&(l as u64).to_be_bytes());
                }
            }
            out.extend_from_slice(&key);
            out.extend(bytes.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
            std::io::Write::write_all(&mut self.io, &out).unwrap();
            std::io::Write::flush(&mut self.io).unwrap();
        }
    }

    /// QoS 1 pipelined at the least cost a client can have: the publisher writes as many
    /// PUBLISH packets as the window allows in one frame, then blocks reading PUBACKs; the
    /// subscriber answers every read's PUBLISH packets with one frame of PUBACKs. No API,
    /// no queue, no thread hand-off: the floor under any QoS 1 client on this machine.
    pub fn qos1(url: &str, size: usize, n: usize, window: usize) -> Value {
        let topic = format!("bench/{}", std::process::id());
        let mut reader = connect(url, &format!("raw-r-{}", std::process::id()));
        subscribe(&mut reader, &topic, 1);
        let mut reader = Bare::new(reader);
        let mut writer = Bare::new(connect(url, &format!("raw-w-{}", std::process::id())));
        let publish = move |id: u16, out: &mut Vec<u8>| {
            out.push(0x32);
            rl(2 + topic.len() + 2 + size, out);
            out.extend_from_slice(&(topic.len() as u16).to_be_bytes());
            out.extend_from_slice(topic.as_bytes());
            out.extend_from_slice(&id.to_be_bytes());
            out.extend(std::iter::repeat_n(b'x', size));
        };
        let (cpu0, t0) = (cpu_secs(), Instant::now());
        let w = std::thread::spawn(move || {
            let (mut sent, mut acked, mut id) = (0usize, 0usize, 0u16);
            let mut out = Vec::new();
            while acked < n {
                let room = (window - (sent - acked)).min(n - sent);
                if room > 0 {
                    out.clear();
                    for _ in 0..room {
                        id = id % u16::MAX + 1;
                        publish(id, &mut out);
                    }
                    writer.write(&out);
                    sent += room;
                }
                if !writer.read(|p| {
                    if p[0] >> 4 == 4 {
                        acked += 1;
                    }
                }) {
                    break;
                }
            }
        });
        let mut got = 0usize;
        let mut acks = Vec::new();
        while got < n {
            acks.clear();
            if !reader.read(|p| {
                if p[0] >> 4 == 3 {
                    got += 1;
                    // Fixed header, topic, then the packet id.
                    let mut h = 1;
                    while p[h] & 0x80 != 0 {
                        h += 1;
                    }
                    let t = u16::from_be_bytes([p[h + 1], p[h + 2]]) as usize;
                    acks.extend_from_slice(&[0x40, 2, p[h + 3 + t], p[h + 4 + t]]);
                }
            }) {
                break;
            }
            if !acks.is_empty() {
                reader.write(&acks);
            }
        }
        let elapsed = t0.elapsed().as_secs_f64();
        let cpu = cpu_secs() - cpu0;
        let _ = w.join();
        json!({"received": got, "msgs_per_sec": got as f64 / elapsed, "cpu_us_per_msg": cpu * 1e6 / got.max(1) as f64})
    }
}

/// An uncounted pause before the `i`th sequential connect, the same series for every client:
/// 0–100 ms in 50 distinct steps. Without it, back-to-back connects lock into the phase of a
/// server's timer loop (mosquitto services WebSockets once per turn of its 100 ms loop):
/// every connect of a round took the same number of turns, 200 or 300 ms over `wss://`, so a
/// round's p50 was one coin toss for the whole round, for both clients alike.
fn dephase(i: usize) {
    if i > 0 {
        std::thread::sleep(Duration::from_micros((i as u64 * 37_003) % 100_000));
    }
}

fn summarize_latency(mut samples: Vec<f64>) -> Value {
    samples.sort_by(|a, b| a.total_cmp(b));
    let mean = samples.iter().sum::<f64>() / samples.len().max(1) as f64;
    json!({"p50_us": percentile(&samples, 0.5), "p99_us": percentile(&samples, 0.99), "max_us": samples.last().copied().unwrap_or(0.0), "mean_us": mean})
}

/// `rss`: the process's RSS before any connection and after the uncounted first one.
/// One run of an own-binary idle measurement (`idle-ours` or `idle-paho`): KiB per
/// connection, every one counted.
fn own_idle(bin: &std::path::Path, url: &str, secs: &str, keep_alive: &str) -> f64 {
    let mut child = Command::new(bin)
        .args([url, "100", secs, keep_alive])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{} runs: {e}", bin.display()));
    // Connecting 100 takes seconds to a minute (mosquitto answers an upgrade a loop turn
    // late): a run that has not ended in 5 minutes is stuck, and counts as no figure.
    let deadline = Instant::now() + Duration::from_secs(300);
    while child.try_wait().ok().flatten().is_none() {
        if Instant::now() > deadline {
            eprintln!("  {} did not end in 5 minutes: no figure", bin.display());
            let _ = child.kill();
            let _ = child.wait();
            return f64::NAN;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut out = Vec::new();
    if let Some(mut stdout) = child.stdout.take() {
        let _ = std::io::Read::read_to_end(&mut stdout, &mut out);
    }
    let v: Value = serde_json::from_slice(&out).unwrap_or(Value::Null);
    v["per_conn_all_kib"].as_f64().unwrap_or(f64::NAN)
}

/// Paho C's idle binary (`bench/paho`, the paho-mqtt crate with its bundled C library),
/// built on first use where cmake is present; `None` (and a message) otherwise.
fn idle_paho() -> Option<std::path::PathBuf> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("paho");
    let bin = dir.join("target/release/idle-paho");
    if bin.exists() {
        return Some(bin);
    }
    let cmake = std::process::Command::new("cmake")
        .arg("--version")
        .output();
    if !cmake.is_ok_and(|o| o.status.success()) {
        eprintln!("  Paho C: no cmake here, so its idle row is skipped (apt-get install cmake)");
        return None;
    }
    eprintln!("  building Paho C's idle binary (cargo build --release in bench/paho)");
    let built = std::process::Command::new(env!("CARGO"))
        .args(["build", "--release", "--manifest-path"])
        .arg(dir.join("Cargo.toml"))
        .status();
    match built {
        Ok(s) if s.success() && bin.exists() => Some(bin),
        other => {
            eprintln!("  Paho C's idle binary did not build ({other:?}): its row is skipped");
            None
        }
    }
}

fn idle_measure(
    conns: usize,
    secs: u64,
    (bare, rss0): (f64, f64),
    threads0: f64,
    close: impl FnOnce(),
) -> Value {
    // Let connection set-up settle, then measure only the idle window.
    std::thread::sleep(Duration::from_millis(500));
    let (rss1, threads1, cpu0) = (rss_kib(), threads(), cpu_secs());
    // The main thread's own sleep is one switch; the rest are the connections' threads.
    let switches0 = context_switches();
    std::thread::sleep(Duration::from_secs(secs));
    let switches = context_switches() - switches0 - 1.0;
    let cpu = cpu_secs() - cpu0;
    close();
    json!({
        "wakeups": switches.max(0.0),
        "cpu_seconds": cpu,
        "rss_kib_per_conn": (rss1 - rss0) / conns as f64,
        // Every connection counted, the first included: what a user's process pays.
        "rss_kib_per_conn_all": (rss1 - bare) / (conns + 1) as f64,
        "threads": threads1 - threads0,
    })
}

// ---------------------------------------------------------------- driver

fn child(args: &[String]) -> Value {
    let get = |i: usize| args.get(i).cloned().unwrap_or_default();
    let num = |i: usize| get(i).parse::<usize>().unwrap_or(0);
    let (scenario, client, url) = (get(0), get(1), get(2));
    match (scenario.as_str(), client.as_str()) {
        ("throughput", "ours") => {
            ours::throughput(&url, num(3) as u8, num(4), num(5), num(6) as u16)
        }
        ("throughput", "rumqttc") if mqtt5() => {
            peer5::throughput(&url, num(3) as u8, num(4), num(5), num(6) as u16)
        }
        ("throughput", "rumqttc") => {
            peer::throughput(&url, num(3) as u8, num(4), num(5), num(6) as u16)
        }
        ("throughput", "ceiling") if num(3) == 1 => raw::qos1(&url, num(4), num(5), num(6)),
        ("throughput", "ceiling") => raw::throughput(&url, num(4), num(5)),
        // rumqttc has no durable mode: its in-memory figure is the comparison.
        ("throughput-durable", "ours") => {
            ours::throughput_durable(&url, num(3) as u8, num(4), num(5), num(6) as u16)
        }
        ("throughput-durable", "rumqttc") => {
            peer::throughput(&url, num(3) as u8, num(4), num(5), num(6) as u16)
        }
        ("user-throughput", "ours") => user::ours_throughput(&url, num(4), num(5)),
        ("user-throughput", "rumqttc") => user::rumqttc_throughput(&url, num(4), num(5)),
        ("user-latency", "ours") => user::ours_latency(&url, num(3)),
        ("user-latency", "rumqttc") => user::rumqttc_latency(&url, num(3)),
        ("latency", "ours") => ours::latency(&url, num(3)),
        ("latency", "rumqttc") if mqtt5() => peer5::latency(&url, num(3)),
        ("latency", "rumqttc") => peer::latency(&url, num(3)),
        ("connect", "ours") => ours::connect_time(&url, num(3)),
        ("connect", "rumqttc") => peer::connect_time(&url, num(3)),
        ("idle", "ours") => ours::idle(&url, num(3), num(4) as u64),
        ("scale", "ours") => ours::scale(&url, num(3), num(4) as u64),
        ("idle", "rumqttc") => peer::idle(&url, num(3), num(4) as u64),
        ("decode", "ours") => ours::decode(num(3)),
        ("decode", "rumqttc") => peer::decode(num(3)),
        _ => panic!("unknown child {args:?}"),
    }
}

fn run_child(args: &[String]) -> Value {
    let exe = std::env::current_exe().unwrap();
    // A child may close its standard output (see `ours::scale`) and write its result here.
    let result_file =
        std::env::temp_dir().join(format!("mqtt-pubsub-bench-{}.json", std::process::id()));
    let _ = std::fs::remove_file(&result_file);
    let _ = std::fs::remove_file(result_file.with_extension("panic"));
    let out = Command::new(exe)
        .arg("--child")
        .args(args)
        .env(RESULT_FILE, &result_file)
        .output()
        .expect("child");
    let written = std::fs::read_to_string(&result_file).ok();
    let _ = std::fs::remove_file(&result_file);
    let text = String::from_utf8_lossy(&out.stdout);
    match written
        .as_deref()
        .or_else(|| text.lines().last())
        .and_then(|l| serde_json::from_str(l).ok())
    {
        Some(v) => v,
        None => {
            let panic_file = result_file.with_extension("panic");
            let panicked = std::fs::read_to_string(&panic_file).unwrap_or_default();
            let _ = std::fs::remove_file(&panic_file);
            eprintln!(
                "child {args:?} failed: {}{panicked}",
                String::from_utf8_lossy(&out.stderr)
            );
            json!({})
        }
    }
}

/// The CA certificate (PEM) the benchmark's `wss://` listener is signed by, from
/// `BENCH_CA_FILE` (set by the parent for its children).
fn bench_ca() -> Option<Vec<u8>> {
    std::fs::read(std::env::var_os("BENCH_CA_FILE")?).ok()
}

/// The test suite's certificate maker (a CA, a server certificate for `localhost` and
/// `127.0.0.1`, a client certificate), made with openssl.
#[allow(dead_code)]
#[path = "../../tests/support/certs.rs"]
mod certs;

/// mosquitto with a WebSocket, a plain and a TLS WebSocket listener (a certificate made
/// here): `(ws://, mqtt://, wss://, process, dir)`.
/// A free loopback port.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// nats-server with JetStream, an MQTT listener and a WebSocket one, on free loopback ports;
/// `None` if it is not installed. Returns it, its `ws://` and `mqtt://` URLs and its
/// directory, once both answer a CONNECT.
fn start_nats() -> Option<(std::process::Child, String, String, std::path::PathBuf)> {
    let (client, mqtt, ws) = (free_port(), free_port(), free_port());
    let dir = std::env::temp_dir().join(format!("mqtt-pubsub-bench-nats-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let conf = dir.join("nats.conf");
    std::fs::write(
        &conf,
        format!(
            "server_name: bench_{ws}\nlisten: 127.0.0.1:{client}\n\
             jetstream {{ store_dir: \"{}\" }}\n\
             mqtt {{ host: 127.0.0.1, port: {mqtt} }}\n\
             websocket {{ host: 127.0.0.1, port: {ws}, no_tls: true }}\n",
            dir.join("js").display()
        ),
    )
    .unwrap();
    let child = Command::new("nats-server")
        .arg("-c")
        .arg(&conf)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .ok()?;
    let urls = (
        format!("ws://127.0.0.1:{ws}/mqtt"),
        format!("mqtt://127.0.0.1:{mqtt}"),
    );
    // JetStream starts after the listeners: ready when a client gets its CONNACK.
    let t0 = Instant::now();
    for url in [&urls.0, &urls.1] {
        loop {
            let ps = mqtt_pubsub::PubSub::new();
            let provider = mqtt_pubsub::MqttOverWsProvider::builder(url.as_str())
                .connect_timeout(Duration::from_secs(2))
                .build()
                .unwrap();
            if ps.add_provider(provider).is_ok() {
                break;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "nats-server did not start"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    Some((child, urls.0, urls.1, dir))
}

fn start_mosquitto() -> (
    String,
    String,
    String,
    std::process::Child,
    std::path::PathBuf,
) {
    let (tcp, ws, wss) = (free_port(), free_port(), free_port());
    let dir = std::env::temp_dir().join(format!("mqtt-pubsub-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    certs::make_certs(&dir);
    let d = dir.display();
    let conf = dir.join("mosquitto.conf");
    // Unlimited in-flight and queue so that the broker never drops or throttles a client.
    std::fs::write(
        &conf,
        format!(
            "user root\npersistence false\nlog_dest none\nmax_inflight_messages 0\nmax_queued_messages 0\n\
             listener {tcp} 127.0.0.1\nallow_anonymous true\nlistener {ws} 127.0.0.1\nprotocol websockets\nallow_anonymous true\n\
             listener {wss} 127.0.0.1\nprotocol websockets\nallow_anonymous true\n\
             certfile {d}/server.crt\nkeyfile {d}/server.key\n"
        ),
    )
    .unwrap();
    let bin = ["/usr/sbin/mosquitto", "/usr/bin/mosquitto"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("mosquitto is not installed (apt-get install mosquitto), or pass --url");
    let child = Command::new(bin).arg("-c").arg(&conf).spawn().unwrap();
    let t0 = Instant::now();
    while TcpStream::connect(("127.0.0.1", ws)).is_err()
        || TcpStream::connect(("127.0.0.1", wss)).is_err()
    {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "mosquitto did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    (
        format!("ws://127.0.0.1:{ws}/mqtt"),
        format!("mqtt://127.0.0.1:{tcp}"),
        format!("wss://localhost:{wss}/mqtt"),
        child,
        dir,
    )
}

struct Row {
    name: String,
    unit: &'static str,
    ours: f64,
    peer: f64,
    ceiling: Option<f64>,
    lower_is_better: bool,
}

fn main() {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    if argv.first().map(String::as_str) == Some("--child") {
        println!("{}", child(&argv[1..]));
        return;
    }
    let args = broker::Args::from_env();
    let runs: usize = args.value("--runs").map_or(5, |v| v.parse().unwrap());
    let n: usize = args
        .value("--messages")
        .map_or(200_000, |v| v.parse().unwrap());
    let idle_secs: u64 = args.value("--idle-secs").map_or(30, |v| v.parse().unwrap());
    let only = args
        .value("--only")
        .unwrap_or_else(|| "throughput,qos1,latency,connect,idle,decode,user".into());
    let want = |s: &str| only.split(',').any(|o| o == s);
    let transport = args.value("--transport").unwrap_or_else(|| "all".into());
    if let Some(v) = args.value("--mqtt-version") {
        match v.as_str() {
            // The children read it from the environment (no other thread runs yet).
            "5" => std::env::set_var("BENCH_MQTT5", "1"),
            "3.1.1" => {}
            other => panic!("--mqtt-version {other}: 5 or 3.1.1"),
        }
    }
    let (urls, mut broker, dir) = match args.value("--url") {
        Some(u) => (vec![u], None, None),
        None => {
            let (ws, tcp, wss, c, d) = start_mosquitto();
            // The children read the CA of the wss:// listener from here (edition 2021: safe;
            // no other thread runs yet).
            std::env::set_var("BENCH_CA_FILE", d.join("ca.crt"));
            let urls = match transport.as_str() {
                "ws" => vec![ws],
                "tcp" => vec![tcp],
                "wss" => vec![wss],
                "both" => vec![ws, tcp],
                "all" => vec![ws, tcp, wss],
                other => panic!("--transport {other}: ws, tcp, wss, both (ws, tcp) or all"),
            };
            (urls, Some(c), Some(d))
        }
    };
    eprintln!(
        "broker {urls:?}; {runs} runs, clients alternating, each measurement a fresh process"
    );
    let mut rows: Vec<Row> = Vec::new();
    // One child process per (scenario, client, round); every metric of a scenario is read from
    // the same runs.
    let mut measure = |url: &str,
                       base: Vec<String>,
                       rounds: usize,
                       with_ceiling: bool,
                       metrics: &[(&str, &'static str, &str, bool)]| {
        let expected: usize = if base[0].starts_with("throughput") || base[0] == "user-throughput" {
            base[3].parse().unwrap_or(0)
        } else {
            0
        };
        let mut results: Vec<(&str, Value)> = Vec::new();
        for run in 0..rounds {
            let mut order = vec!["ours", "rumqttc"];
            if with_ceiling {
                order.push("ceiling");
            }
            let k = run % order.len();
            order.rotate_left(k);
            for client in order {
                let mut a = vec![base[0].clone(), client.to_string(), url.to_string()];
                a.extend(base[1..].iter().cloned());
                let v = run_child(&a);
                if let Some(r) = v["received"].as_u64() {
                    if r as usize != expected {
                        eprintln!("  {base:?} {client}: only {r} of {expected} messages arrived");
                    }
                }
                results.push((client, v));
            }
        }
        for &(name, unit, key, lower) in metrics {
            let pick = |c: &str| -> Vec<f64> {
                results
                    .iter()
                    .filter(|(k, _)| *k == c)
                    .map(|(_, v)| v[key].as_f64().unwrap_or(f64::NAN))
                    .collect()
            };
            let (o, p, c) = (pick("ours"), pick("rumqttc"), pick("ceiling"));
            // Rows over plain TCP and over TLS are marked; WebSocket is the default.
            let name = if url.starts_with("mqtt://") {
                format!("TCP: {name}")
            } else if url.starts_with("wss://") {
                format!("TLS: {name}")
            } else {
                name.to_string()
            };
            let name = if mqtt5() { format!("v5 {name}") } else { name };
            eprintln!("  {name}: ours {o:.2?} rumqttc {p:.2?} ceiling {c:.2?}");
            rows.push(Row {
                name,
                unit,
                ours: median(o),
                peer: median(p),
                ceiling: with_ceiling.then(|| median(c)),
                lower_is_better: lower,
            });
        }
    };
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let n_s = n.to_string();
    for (i, url) in urls.iter().enumerate() {
        let url = url.as_str();
        // Idle and decode do not depend on the transport: measured once, on the first.
        let first = i == 0;
        if want("throughput") {
            for size in ["64", "4000"] {
                let (t, c) = (
                    format!("QoS 0 {size} B throughput"),
                    format!("QoS 0 {size} B client CPU"),
                );
                measure(
                    url,
                    s(&["throughput", "0", size, &n_s, "100"]),
                    runs,
                    // The raw ceiling speaks ws://, mqtt:// and wss:// (rustls with ring).
                    true,
                    &[
                        (&t, "msg/s", "msgs_per_sec", false),
                        (&c, "µs/msg", "cpu_us_per_msg", true),
                    ],
                );
            }
        }
        if want("qos1") {
            let q1 = (n / 4).to_string();
            measure(
                url,
                s(&["throughput", "1", "64", &q1, "100"]),
                runs,
                // The raw QoS 1 client: one frame per window refill, one of acks per read.
                true,
                &[
                    (
                        "QoS 1 64 B pipelined (window 100)",
                        "msg/s",
                        "msgs_per_sec",
                        false,
                    ),
                    ("QoS 1 64 B client CPU", "µs/msg", "cpu_us_per_msg", true),
                ],
            );
            measure(
                url,
                s(&["throughput-durable", "1", "64", &q1, "100"]),
                runs,
                false,
                &[
                    (
                        "QoS 1 64 B pipelined, durable outbox (rumqttc: in memory)",
                        "msg/s",
                        "msgs_per_sec",
                        false,
                    ),
                    (
                        "QoS 1 durable: client CPU (rumqttc: in memory)",
                        "µs/msg",
                        "cpu_us_per_msg",
                        true,
                    ),
                    (
                        "QoS 1 durable: fsyncs per 1000 msgs",
                        "",
                        "fsyncs_per_1000",
                        true,
                    ),
                ],
            );
        }
        if want("latency") {
            measure(
                url,
                s(&["latency", "10000"]),
                // A 99th percentile moves by ±30 % between runs on two shared cores, for both
                // clients; more rounds (a run is ~2 s) make its median steadier.
                runs.max(7),
                false,
                &[
                    ("round trip p50", "µs", "p50_us", true),
                    ("round trip p99", "µs", "p99_us", true),
                    ("round trip max", "µs", "max_us", true),
                ],
            );
        }
        if want("connect") {
            measure(
                url,
                s(&["connect", "50"]),
                runs,
                false,
                &[
                    ("connect (to CONNACK) p50", "µs", "p50_us", true),
                    ("connect (to CONNACK) p99", "µs", "p99_us", true),
                    // mosquitto's WebSocket listener answers in steps of its 100 ms loop:
                    // connects are bimodal for every client, and the p50 of one round lands
                    // on either step; the mean shows the mix.
                    ("connect (to CONNACK) mean", "µs", "mean_us", true),
                ],
            );
        }
        if want("scale") && first {
            // Ours alone (a scenario of one client, not a comparison). The limit a user meets
            // first is open files, two per provider (raise `ulimit -n`, here and for the
            // broker); a child whose providers need all of them closes its standard streams
            // (see `ours::scale`).
            let providers = args.value("--providers").unwrap_or_else(|| "1000".into());
            for n in providers.split(',') {
                let v = run_child(&s(&["scale", "ours", url, n, &idle_secs.to_string()]));
                eprintln!("  scale {n}: {v}");
                println!("| {n} providers | {} |", v);
            }
        }
        if want("idle") && first {
            let secs = idle_secs.to_string();
            let cpu = format!("100 idle conns, CPU over {secs} s");
            measure(
                url,
                s(&["idle", "100", &secs]),
                runs.min(3),
                false,
                &[
                    (&cpu, "s", "cpu_seconds", true),
                    ("idle wake-ups (all threads)", "", "wakeups", true),
                    ("idle RSS per connection", "KiB", "rss_kib_per_conn", true),
                    (
                        "idle RSS per connection, every one counted",
                        "KiB",
                        "rss_kib_per_conn_all",
                        true,
                    ),
                    ("idle threads added", "", "threads", true),
                ],
            );
            // As a user's program pays it: a binary of its own (no rumqttc or tokio code
            // beside ours), every connection counted, beside Paho C measured the same way
            // (`paho/`, built here where cmake is present). Twice: with the default
            // keep-alive (no ping in the window) and with a 2 s keep-alive (ping round trips
            // in the window, as a long-idle connection makes one a minute).
            let own = std::env::current_exe().map(|e| e.with_file_name("idle-ours"));
            let paho = idle_paho();
            match own {
                Ok(bin) if bin.exists() => {
                    for keep_alive in ["60", "2"] {
                        let (mut ours, mut theirs) = (Vec::new(), Vec::new());
                        for _ in 0..runs.min(3) {
                            ours.push(own_idle(&bin, url, &secs, keep_alive));
                            if let Some(p) = &paho {
                                theirs.push(own_idle(p, url, &secs, keep_alive));
                            }
                        }
                        println!(
                            "  idle RSS per connection, every one counted, keep-alive {keep_alive} s: ours (idle-ours) {ours:.2?} KiB, Paho C (idle-paho) {}",
                            if paho.is_some() { format!("{theirs:.2?} KiB") } else { "not built (no cmake)".into() }
                        );
                    }
                }
                _ => println!(
                    "  idle-ours not built (cargo build --release --bins): the own-binary idle row is skipped"
                ),
            }
        }
        // The user harness is written from the README, which trusts system roots: no wss://.
        if want("user") && !url.starts_with("wss://") {
            // The README's obvious code, every setting at its default (see `mod user`).
            for size in ["64", "4000"] {
                let (t, c) = (
                    format!("user harness: QoS 0 {size} B throughput"),
                    format!("user harness: QoS 0 {size} B client CPU"),
                );
                measure(
                    url,
                    s(&["user-throughput", "0", size, &n_s]),
                    runs,
                    false,
                    &[
                        (&t, "msg/s", "msgs_per_sec", false),
                        (&c, "µs/msg", "cpu_us_per_msg", true),
                    ],
                );
            }
            measure(
                url,
                s(&["user-latency", "10000"]),
                runs,
                false,
                &[
                    ("user harness: round trip p50", "µs", "p50_us", true),
                    ("user harness: round trip p99", "µs", "p99_us", true),
                ],
            );
        }
        if want("decode") && first {
            for size in ["64", "4096"] {
                let name = format!("decode PUBLISH {size} B");
                measure(
                    url,
                    s(&["decode", size]),
                    runs,
                    false,
                    &[(&name, "MB/s", "mb_per_sec", false)],
                );
            }
        }
    }
    // Connection set-up against the other brokers the tests use (issue 17): NATS, when
    // nats-server is installed (ws:// and mqtt://, as the run's transports ask), and an
    // embedded rumqttd (ws://; its v4 listener is not configured, as in the examples).
    let mut nats = None;
    if want("connect") && args.value("--url").is_none() && !mqtt5() {
        let ws = matches!(transport.as_str(), "ws" | "both" | "all");
        let tcp = matches!(transport.as_str(), "tcp" | "both" | "all");
        let mut others: Vec<(&str, String)> = Vec::new();
        match start_nats() {
            Some((child, ws_url, mqtt_url, dir)) => {
                if ws {
                    others.push(("NATS", ws_url));
                }
                if tcp {
                    others.push(("NATS", mqtt_url));
                }
                nats = Some((child, dir));
            }
            None => eprintln!("nats-server is not installed: no NATS connect rows"),
        }
        if ws {
            others.push(("rumqttd", broker::url_or_embedded(&args)));
        }
        for (name, url) in &others {
            let (p50, p99) = (
                format!("connect to {name} (to CONNACK) p50"),
                format!("connect to {name} (to CONNACK) p99"),
            );
            measure(
                url,
                s(&["connect", "50"]),
                runs,
                false,
                &[(&p50, "µs", "p50_us", true), (&p99, "µs", "p99_us", true)],
            );
        }
    }
    if let Some((mut child, dir)) = nats {
        let _ = child.kill();
        let _ = child.wait();
        let _ = std::fs::remove_dir_all(dir);
    }
    if mqtt5() && want("throughput") {
        let a = alias_saving();
        eprintln!("topic alias: {a}");
        rows.push(Row {
            name: format!(
                "v5 PUBLISH bytes, 64 B to a {}-byte topic: with alias (ours) / without (peer)",
                a["topic_bytes"]
            ),
            unit: "B",
            ours: a["with_alias"].as_f64().unwrap_or(f64::NAN),
            peer: a["without_alias"].as_f64().unwrap_or(f64::NAN),
            ceiling: None,
            lower_is_better: true,
        });
    }
    if let Some(b) = broker.as_mut() {
        let _ = b.kill();
        let _ = b.wait();
    }
    if let Some(d) = dir {
        let _ = std::fs::remove_dir_all(d);
    }

    println!(
        "| scenario | unit | mqtt-pubsub | rumqttc | ours / rumqttc | ceiling | ours / ceiling |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|");
    for r in &rows {
        let ratio = if r.peer == 0.0 && r.ours == 0.0 {
            1.0
        } else {
            r.ours / r.peer
        };
        let better = if r.lower_is_better {
            ratio <= 1.0
        } else {
            ratio >= 1.0
        };
        let ceil = r.ceiling.map_or(String::from("–"), |c| format!("{c:.1}"));
        let ceil_ratio = r
            .ceiling
            .map_or(String::from("–"), |c| format!("{:.2}", r.ours / c));
        println!(
            "| {} | {} | {:.2} | {:.2} | {:.2}{} | {} | {} |",
            r.name,
            r.unit,
            r.ours,
            r.peer,
            ratio,
            if better { "" } else { " (worse)" },
            ceil,
            ceil_ratio
        );
    }
    if args.has("--json") {
        let summary: Vec<Value> = rows
            .iter()
            .map(|r| json!({"scenario": r.name, "unit": r.unit, "ours": r.ours, "rumqttc": r.peer, "ceiling": r.ceiling}))
            .collect();
        println!(
            "{}",
            json!({"runs": runs, "messages": n, "results": summary})
        );
    }
}

//! A loopback TCP proxy under test control: forward, black-hole (hold connections open but
//! pass nothing), cut every connection abruptly, or throttle.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Default)]
struct Control {
    blackhole: AtomicBool,
    /// Bytes per second per direction; 0 = unlimited.
    throttle: AtomicU64,
    refuse: AtomicBool,
    stop: AtomicBool,
    accepted: AtomicUsize,
    conns: Mutex<Vec<TcpStream>>,
}

pub struct Proxy {
    pub port: u16,
    ctl: Arc<Control>,
}

impl Proxy {
    pub fn start(upstream_port: u16) -> Proxy {
        Proxy::start_at(0, upstream_port)
    }

    /// Listens on `port` (0: any free one): a server that appears on a port where a client
    /// was refused until now.
    pub fn start_at(port: u16, upstream_port: u16) -> Proxy {
        let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
        let port = listener.local_addr().unwrap().port();
        let ctl = Arc::new(Control::default());
        let c = ctl.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if c.stop.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(client) = client else { continue };
                if c.refuse.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream_port)) else {
                    continue;
                };
                c.accepted.fetch_add(1, Ordering::SeqCst);
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                {
                    let mut conns = c.conns.lock().unwrap();
                    conns.push(client.try_clone().unwrap());
                    conns.push(server.try_clone().unwrap());
                }
                pump(
                    client.try_clone().unwrap(),
                    server.try_clone().unwrap(),
                    c.clone(),
                );
                pump(server, client, c.clone());
            }
        });
        Proxy { port, ctl }
    }

    pub fn url(&self, path: &str) -> String {
        format!("ws://127.0.0.1:{}{path}", self.port)
    }

    /// Stop passing bytes (both ways) without closing anything.
    pub fn blackhole(&self, on: bool) {
        self.ctl.blackhole.store(on, Ordering::SeqCst);
    }

    /// Limit each direction to `bytes_per_sec` (0: unlimited).
    pub fn throttle(&self, bytes_per_sec: u64) {
        self.ctl.throttle.store(bytes_per_sec, Ordering::SeqCst);
    }

    /// Close new connections at once.
    pub fn refuse(&self, on: bool) {
        self.ctl.refuse.store(on, Ordering::SeqCst);
    }

    /// Cut every open connection abruptly (both sides see the TCP connection end).
    pub fn cut_all(&self) {
        for s in self.ctl.conns.lock().unwrap().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    /// Connections accepted and forwarded so far.
    pub fn accepted(&self) -> usize {
        self.ctl.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.ctl.stop.store(true, Ordering::SeqCst);
        self.cut_all();
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn pump(mut from: TcpStream, mut to: TcpStream, ctl: Arc<Control>) {
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 16 * 1024];
        let _ = from.set_read_timeout(Some(Duration::from_millis(50)));
        loop {
            if ctl.stop.load(Ordering::SeqCst) {
                break;
            }
            if ctl.blackhole.load(Ordering::SeqCst) {
                // Hold the bytes back: neither forwarded nor acknowledged by a close.
                std::thread::sleep(Duration::from_millis(20));
                continue;
            }
            let limit = ctl.throttle.load(Ordering::SeqCst);
            let want = if limit == 0 {
                buf.len()
            } else {
                (limit as usize / 20).clamp(1, buf.len())
            };
            match from.read(&mut buf[..want]) {
                Ok(0) => break,
                Ok(n) => {
                    if to.write_all(&buf[..n]).is_err() {
                        break;
                    }
                    if limit != 0 {
                        std::thread::sleep(Duration::from_millis(50));
                    }
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => break,
            }
        }
        let _ = to.shutdown(Shutdown::Both);
        let _ = from.shutdown(Shutdown::Both);
    });
}

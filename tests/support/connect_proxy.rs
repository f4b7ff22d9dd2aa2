//! A real HTTP CONNECT proxy on loopback: it parses `CONNECT host:port`, checks Basic
//! credentials when it has them, opens the upstream connection and relays bytes both ways;
//! or refuses with a chosen status. It records what each client asked for.

use std::io::Write;
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};

/// One CONNECT request as the proxy received it.
#[derive(Debug, Clone)]
pub struct Seen {
    /// `host:port` of the CONNECT line.
    pub target: String,
    /// The `Proxy-Authorization` header value, if any.
    pub authorization: Option<String>,
}

pub struct ConnectProxy {
    pub port: u16,
    seen: Arc<Mutex<Vec<Seen>>>,
    refuse_with: Arc<AtomicU16>,
}

impl ConnectProxy {
    /// A proxy; with `credentials`, it answers 407 unless they come as Basic auth.
    pub fn start(credentials: Option<(&str, &str)>) -> ConnectProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let refuse_with = Arc::new(AtomicU16::new(0));
        let want = credentials.map(|(u, p)| format!("Basic {}", base64(&format!("{u}:{p}"))));
        let (s, r) = (seen.clone(), refuse_with.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                let (s, r, want) = (s.clone(), r.clone(), want.clone());
                std::thread::spawn(move || serve(client, &s, &r, want.as_deref()));
            }
        });
        ConnectProxy {
            port,
            seen,
            refuse_with,
        }
    }

    /// `http://[user:password@]127.0.0.1:port`.
    pub fn url(&self, credentials: Option<(&str, &str)>) -> String {
        match credentials {
            Some((u, p)) => format!("http://{u}:{p}@127.0.0.1:{}", self.port),
            None => format!("http://127.0.0.1:{}", self.port),
        }
    }

    /// Answer every later CONNECT with `status` (0: tunnel again).
    pub fn refuse_with(&self, status: u16) {
        self.refuse_with.store(status, Ordering::SeqCst);
    }

    /// Every CONNECT so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

fn serve(mut client: TcpStream, seen: &Mutex<Vec<Seen>>, refuse: &AtomicU16, want: Option<&str>) {
    let Ok(head) = crate::support::http::read_request(&mut client) else {
        return;
    };
    let mut lines = head.lines();
    let first = lines.next().unwrap_or_default().to_string();
    let authorization = lines.find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case("proxy-authorization")
            .then(|| v.trim().to_string())
    });
    let mut parts = first.split(' ');
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    seen.lock().unwrap().push(Seen {
        target: target.to_string(),
        authorization: authorization.clone(),
    });
    let answer = |c: &mut TcpStream, status: &str| {
        let _ = c.write_all(
            format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        );
    };
    if method != "CONNECT" {
        return answer(&mut client, "405 Method Not Allowed");
    }
    if let Some(want) = want {
        if authorization.as_deref() != Some(want) {
            return answer(
                &mut client,
                "407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"test\"",
            );
        }
    }
    match refuse.load(Ordering::SeqCst) {
        0 => {}
        403 => return answer(&mut client, "403 Forbidden"),
        502 => return answer(&mut client, "502 Bad Gateway"),
        other => return answer(&mut client, &format!("{other} Refused")),
    }
    let Ok(upstream) = TcpStream::connect(target) else {
        return answer(&mut client, "502 Bad Gateway");
    };
    let _ = client.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n");
    relay(client, upstream);
}

fn relay(client: TcpStream, upstream: TcpStream) {
    let (mut c2, mut u2) = (client.try_clone().unwrap(), upstream.try_clone().unwrap());
    let (mut c, mut u) = (client, upstream);
    let t = std::thread::spawn(move || {
        let _ = std::io::copy(&mut c2, &mut u2);
        let _ = u2.shutdown(Shutdown::Write);
    });
    let _ = std::io::copy(&mut u, &mut c);
    let _ = c.shutdown(Shutdown::Write);
    let _ = t.join();
}

fn base64(s: &str) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in s.as_bytes().chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for i in 0..4 {
            out.push(if i <= chunk.len() {
                T[(n >> (18 - 6 * i) & 63) as usize] as char
            } else {
                '='
            });
        }
    }
    out
}

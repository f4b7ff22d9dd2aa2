//! A scripted MQTT-over-WebSocket server for what no real broker will do: malformed bytes,
//! stalls, refusals. Each accepted connection takes the next scripted [`Misbehaviour`]; once
//! the script is used up, connections get a minimal well-behaved server (CONNACK, SUBACK,
//! PUBACK, PINGRESP, and publishes echoed back to the same client when it subscribed).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use tungstenite::Message;

#[derive(Debug, Clone)]
pub enum Misbehaviour {
    /// Answer the upgrade with this HTTP status instead of 101.
    HttpStatus(u16),
    /// Accept the WebSocket, never send CONNACK.
    NoConnack,
    /// CONNACK with this return code.
    ConnackRefused(u8),
    /// After a good CONNACK, send these raw bytes in a binary frame, then behave.
    Bytes(Vec<u8>),
    /// Behave, but never acknowledge a PUBLISH.
    NoPuback,
    /// After a good CONNACK, send a WebSocket close frame.
    Close,
    /// After a good CONNACK, send a text frame.
    Text,
    /// Behave, and send a WebSocket ping before every PUBACK; each pong is reported on
    /// [`FakeServer::pongs`] (`true` when it echoes the oldest unanswered ping).
    PingEachPublish,
    /// Answer the upgrade with this HTTP status and a body echoing the request line (as
    /// some servers and proxies do).
    HttpStatusEcho(u16),
    /// Answer the upgrade one byte every 300 ms (a valid 101, eventually).
    DripUpgrade,
    /// CONNACK with the session-present flag, whatever was asked.
    ConnackSessionPresent,
    /// CONNACK and these bytes in one WebSocket frame.
    ConnackWith(Vec<u8>),
    /// Behave, but answer SUBSCRIBE with a SUBACK of no return codes.
    SubackWithoutCodes,
    /// After CONNACK, never read again; send `packet` repeated in frames of about 64 KiB for
    /// up to `seconds` (until a write blocks for 2 s), when it is not empty.
    NeverRead { packet: Vec<u8>, seconds: u64 },
    /// Behave, reading at most this many bytes per second.
    SlowReader(usize),
    /// After CONNACK, a WebSocket close frame with this reason.
    CloseWithReason(String),
    /// Behave; after the first SUBACK, send `count` copies of `packet`, `per_frame` copies
    /// to a WebSocket frame.
    BurstAfterSuback {
        packet: Vec<u8>,
        count: usize,
        per_frame: usize,
    },
    /// Behave; after the first SUBACK, send `count` copies of `packet`, one to a WebSocket
    /// frame, then end the connection: with a reset (`reset`), or by closing its sending
    /// side (a FIN) and reading until the client goes.
    BurstAfterSubackThenEnd {
        packet: Vec<u8>,
        count: usize,
        reset: bool,
    },
    /// Instead of the CONNACK frame, these raw bytes on the socket (WebSocket frames made by
    /// hand: fragments, pings, what tungstenite would not send), then behave.
    RawConnack(Vec<u8>),
    /// After a good CONNACK, these raw bytes on the socket, then behave.
    Raw(Vec<u8>),
    /// After a good CONNACK, `frame` (raw bytes) over and over for `seconds`, reading
    /// nothing and answering nothing, then hold the connection until the client goes.
    Flood { frame: Vec<u8>, seconds: u64 },
    /// Behave; after the first SUBACK, open one binary frame announcing 2^40 bytes and
    /// send `packets` inside it, one every `every_ms`, then hold the connection.
    LongFrameAfterSuback {
        packets: Vec<Vec<u8>>,
        every_ms: u64,
    },
}

/// A server-to-client WebSocket frame (unmasked): `first` is FIN/RSV/opcode.
pub fn ws_frame(first: u8, payload: &[u8]) -> Vec<u8> {
    let mut v = vec![first];
    match payload.len() {
        n if n < 126 => v.push(n as u8),
        n if n <= 0xffff => {
            v.push(126);
            v.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            v.push(127);
            v.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    v.extend_from_slice(payload);
    v
}

pub struct FakeServer {
    pub port: u16,
    pub connections: Arc<AtomicUsize>,
    /// SUBSCRIBE packets received, over all connections.
    pub subscribes: Arc<AtomicUsize>,
    /// One entry per pong received (see [`Misbehaviour::PingEachPublish`]).
    pub pongs: mpsc::Receiver<bool>,
    stop: Arc<AtomicBool>,
}

impl FakeServer {
    pub fn start(script: Vec<Misbehaviour>) -> FakeServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let script = Arc::new(Mutex::new(script.into_iter()));
        let connections = Arc::new(AtomicUsize::new(0));
        let subscribes = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (c, s, subs) = (connections.clone(), stop.clone(), subscribes.clone());
        let (pong_tx, pongs) = mpsc::channel();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(stream) = stream else { continue };
                c.fetch_add(1, Ordering::SeqCst);
                let step = script.lock().unwrap().next();
                let pong_tx = pong_tx.clone();
                let subs = subs.clone();
                std::thread::spawn(move || serve(stream, step, pong_tx, subs));
            }
        });
        FakeServer {
            port,
            connections,
            subscribes,
            pongs,
            stop,
        }
    }

    pub fn url(&self) -> String {
        format!("ws://127.0.0.1:{}/mqtt", self.port)
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

const CONNACK_OK: [u8; 4] = [0x20, 0x02, 0x00, 0x00];

#[allow(clippy::result_large_err)]
fn serve(
    mut stream: TcpStream,
    step: Option<Misbehaviour>,
    pongs: mpsc::Sender<bool>,
    subscribes: Arc<AtomicUsize>,
) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    if let Some(Misbehaviour::HttpStatus(code)) = step {
        if super::http::read_request(&mut stream).is_err() {
            return;
        }
        let _ = write!(
            stream,
            "HTTP/1.1 {code} Nope\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        return;
    }
    if let Some(Misbehaviour::HttpStatusEcho(code)) = step {
        let Ok(req) = super::http::read_request(&mut stream) else {
            return;
        };
        let body = format!("bad request: {}", req.lines().next().unwrap_or(""));
        let _ = write!(
            stream,
            "HTTP/1.1 {code} Nope\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        return;
    }
    if let Some(Misbehaviour::DripUpgrade) = step {
        let Ok(req) = super::http::read_request(&mut stream) else {
            return;
        };
        let key = req
            .lines()
            .find_map(|l| l.strip_prefix("Sec-WebSocket-Key: "))
            .unwrap_or("")
            .trim()
            .to_string();
        let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
        let answer = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: {accept}\r\nSec-WebSocket-Protocol: mqtt\r\n\r\n"
        );
        for b in answer.bytes() {
            if stream.write_all(&[b]).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(300));
        }
        return;
    }
    let callback = |_req: &tungstenite::handshake::server::Request,
                    mut resp: tungstenite::handshake::server::Response| {
        resp.headers_mut()
            .insert("Sec-WebSocket-Protocol", "mqtt".parse().unwrap());
        Ok(resp)
    };
    let Ok(mut ws) = tungstenite::accept_hdr(stream, callback) else {
        return;
    };
    // Wait for CONNECT (assumed to arrive in one frame, as this client sends it).
    match ws.read() {
        Ok(Message::Binary(_)) => {}
        _ => return,
    }
    let send = |ws: &mut tungstenite::WebSocket<TcpStream>, bytes: Vec<u8>| {
        ws.send(Message::Binary(bytes.into()))
    };
    match step {
        Some(Misbehaviour::NoConnack) => {
            // Hold the connection open, reading, until the client gives up.
            while ws.read().is_ok() {}
            return;
        }
        Some(Misbehaviour::ConnackRefused(code)) => {
            let _ = send(&mut ws, vec![0x20, 0x02, 0x00, code]);
            let _ = ws.close(None);
            while ws.read().is_ok() {}
            return;
        }
        Some(Misbehaviour::ConnackSessionPresent) => {
            let _ = send(&mut ws, vec![0x20, 0x02, 0x01, 0x00]);
            while ws.read().is_ok() {}
            return;
        }
        Some(Misbehaviour::RawConnack(ref raw)) => {
            if ws.get_mut().write_all(raw).is_err() {
                return;
            }
        }
        Some(Misbehaviour::ConnackWith(ref more)) => {
            let mut bytes = CONNACK_OK.to_vec();
            bytes.extend_from_slice(more);
            let _ = send(&mut ws, bytes);
            while ws.read().is_ok() {}
            return;
        }
        _ => {
            if send(&mut ws, CONNACK_OK.to_vec()).is_err() {
                return;
            }
        }
    }
    let ack_publishes = !matches!(step, Some(Misbehaviour::NoPuback));
    let ping = matches!(step, Some(Misbehaviour::PingEachPublish)).then_some(pongs);
    match step {
        // Scripted bytes, then the server behaves on the same connection.
        Some(Misbehaviour::Bytes(b)) if send(&mut ws, b.clone()).is_err() => return,
        Some(Misbehaviour::Raw(b)) if ws.get_mut().write_all(&b).is_err() => return,
        Some(Misbehaviour::Close) => {
            let _ = ws.close(None);
            while ws.read().is_ok() {}
            return;
        }
        Some(Misbehaviour::Text) => {
            let _ = ws.send(Message::Text("hello".into()));
            while ws.read().is_ok() {}
            return;
        }
        Some(Misbehaviour::CloseWithReason(ref reason)) => {
            let _ = ws.close(Some(tungstenite::protocol::CloseFrame {
                code: tungstenite::protocol::frame::coding::CloseCode::Normal,
                reason: reason.clone().into(),
            }));
            while ws.read().is_ok() {}
            return;
        }
        Some(Misbehaviour::NeverRead {
            ref packet,
            seconds,
        }) => {
            never_read(ws, packet, seconds);
            return;
        }
        Some(Misbehaviour::SlowReader(rate)) => {
            slow_reader(ws, rate);
            return;
        }
        Some(Misbehaviour::Flood { ref frame, seconds }) => {
            let start = std::time::Instant::now();
            let batch: Vec<u8> = frame
                .iter()
                .copied()
                .cycle()
                .take(frame.len() * (64 * 1024 / frame.len()))
                .collect();
            // Writes wait as long as the client takes: the flood goes on however slowly it
            // is read.
            let _ = ws
                .get_ref()
                .set_write_timeout(Some(Duration::from_secs(seconds)));
            while start.elapsed() < Duration::from_secs(seconds) {
                if ws.get_mut().write_all(&batch).is_err() {
                    break;
                }
            }
            while ws.read().is_ok() {}
            return;
        }
        _ => {}
    }
    let options = Behaviour {
        ack_publishes,
        ping,
        suback_codes: !matches!(step, Some(Misbehaviour::SubackWithoutCodes)),
        subscribes,
        long_frame: match &step {
            Some(Misbehaviour::LongFrameAfterSuback { packets, every_ms }) => {
                Some((packets.clone(), *every_ms))
            }
            _ => None,
        },
        end_after_burst: match &step {
            Some(Misbehaviour::BurstAfterSubackThenEnd { reset, .. }) => Some(*reset),
            _ => None,
        },
        burst: match step {
            Some(Misbehaviour::BurstAfterSuback {
                packet,
                count,
                per_frame,
            }) => Some((packet, count, per_frame)),
            Some(Misbehaviour::BurstAfterSubackThenEnd { packet, count, .. }) => {
                Some((packet, count, 1))
            }
            _ => None,
        },
    };
    behave(ws, options);
}

/// Never reads after CONNACK; floods `packet` (if any) until a write blocks for 2 s or
/// `seconds` pass, then holds the connection until the client goes.
fn never_read(mut ws: tungstenite::WebSocket<TcpStream>, packet: &[u8], seconds: u64) {
    let start = std::time::Instant::now();
    if !packet.is_empty() {
        let _ = ws.get_ref().set_write_timeout(Some(Duration::from_secs(2)));
        let frame: Vec<u8> = packet
            .iter()
            .copied()
            .cycle()
            .take(packet.len() * (64 * 1024 / packet.len()))
            .collect();
        while start.elapsed() < Duration::from_secs(seconds) {
            if ws.send(Message::Binary(frame.clone().into())).is_err() {
                break;
            }
        }
    }
    // Hold it open (unread) until the client closes or the test ends.
    let _ = ws.get_ref().set_read_timeout(Some(Duration::from_secs(60)));
    let mut byte = [0u8; 1];
    while start.elapsed() < Duration::from_secs(seconds + 60) {
        std::thread::sleep(Duration::from_millis(200));
        if ws.get_ref().peek(&mut byte).map_or(true, |n| n == 0) {
            return;
        }
    }
}

/// Reads `rate` bytes per second, answering nothing.
fn slow_reader(ws: tungstenite::WebSocket<TcpStream>, rate: usize) {
    let mut tcp = ws.into_inner();
    let chunk = (rate / 10).max(1);
    let mut buf = vec![0u8; chunk];
    loop {
        match tcp.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

struct Behaviour {
    ack_publishes: bool,
    ping: Option<mpsc::Sender<bool>>,
    suback_codes: bool,
    subscribes: Arc<AtomicUsize>,
    burst: Option<(Vec<u8>, usize, usize)>,
    long_frame: Option<(Vec<Vec<u8>>, u64)>,
    /// After the burst: end with a reset (`true`) or a FIN (`false`).
    end_after_burst: Option<bool>,
}

/// Just enough of a broker: one client, exact-match subscriptions, QoS 0/1. With `ping`,
/// a WebSocket ping goes before every PUBACK and each pong is checked and reported.
fn behave(mut ws: tungstenite::WebSocket<TcpStream>, options: Behaviour) {
    let Behaviour {
        ack_publishes,
        ping,
        suback_codes,
        subscribes,
        mut burst,
        mut long_frame,
        end_after_burst,
    } = options;
    let mut subscribed: Vec<String> = Vec::new();
    let mut buf: Vec<u8> = Vec::new();
    let mut pings_sent: u32 = 0;
    let mut unanswered = std::collections::VecDeque::new();
    while let Ok(msg) = ws.read() {
        if let (Message::Pong(p), Some(tx)) = (&msg, &ping) {
            let _ = tx.send(unanswered.pop_front().as_deref() == Some(&p[..]));
            continue;
        }
        let Message::Binary(b) = msg else { continue };
        buf.extend_from_slice(&b);
        while let Some((first, body, used)) = split_packet(&buf) {
            let mut out = Vec::new();
            match first >> 4 {
                3 => {
                    let qos = (first >> 1) & 3;
                    let tlen = u16::from_be_bytes([body[0], body[1]]) as usize;
                    let topic = String::from_utf8_lossy(&body[2..2 + tlen]).to_string();
                    let (id, payload) = if qos > 0 {
                        (Some([body[2 + tlen], body[3 + tlen]]), &body[4 + tlen..])
                    } else {
                        (None, &body[2 + tlen..])
                    };
                    if let (Some(id), true) = (id, ack_publishes) {
                        if ping.is_some() {
                            pings_sent += 1;
                            let p = pings_sent.to_be_bytes().to_vec();
                            unanswered.push_back(p.clone());
                            if ws.send(Message::Ping(p.into())).is_err() {
                                return;
                            }
                            // A slow reader: the client's socket fills and its frames go out
                            // in parts, with pings arriving in between.
                            std::thread::sleep(Duration::from_millis(2));
                        }
                        out.extend_from_slice(&[0x40, 0x02, id[0], id[1]]);
                    }
                    if subscribed.contains(&topic) {
                        // Echo at QoS 0.
                        let rem = 2 + tlen + payload.len();
                        out.push(0x30);
                        encode_len(rem, &mut out);
                        out.extend_from_slice(&body[..2 + tlen]);
                        out.extend_from_slice(payload);
                    }
                }
                8 => {
                    subscribes.fetch_add(1, Ordering::SeqCst);
                    let id = [body[0], body[1]];
                    let mut i = 2;
                    let mut codes = Vec::new();
                    while i + 2 <= body.len() {
                        let l = u16::from_be_bytes([body[i], body[i + 1]]) as usize;
                        subscribed
                            .push(String::from_utf8_lossy(&body[i + 2..i + 2 + l]).to_string());
                        codes.push(0u8);
                        i += 3 + l;
                    }
                    if !suback_codes {
                        codes.clear();
                    }
                    out.push(0x90);
                    encode_len(2 + codes.len(), &mut out);
                    out.extend_from_slice(&id);
                    out.extend_from_slice(&codes);
                }
                10 => out.extend_from_slice(&[0xb0, 0x02, body[0], body[1]]),
                12 => out.extend_from_slice(&[0xd0, 0x00]),
                14 => return,
                _ => {}
            }
            let subscribed_now = first >> 4 == 8;
            buf.drain(..used);
            if !out.is_empty() && ws.send(Message::Binary(out.into())).is_err() {
                return;
            }
            if let (true, Some((packets, every_ms))) = (subscribed_now, long_frame.take()) {
                let mut header = vec![0x82, 127];
                header.extend_from_slice(&(1u64 << 40).to_be_bytes());
                if ws.get_mut().write_all(&header).is_err() {
                    return;
                }
                for p in packets {
                    std::thread::sleep(Duration::from_millis(every_ms));
                    if ws.get_mut().write_all(&p).is_err() {
                        return;
                    }
                }
                // Inside the long frame for good: nothing more can be framed.
                let mut sink = [0u8; 4096];
                while ws.get_mut().read(&mut sink).is_ok_and(|n| n > 0) {}
                return;
            }
            if let (true, Some((packet, count, per_frame))) = (subscribed_now, burst.take()) {
                let mut left = count;
                while left > 0 {
                    let n = left.min(per_frame.max(1));
                    left -= n;
                    let frame: Vec<u8> = packet
                        .iter()
                        .copied()
                        .cycle()
                        .take(packet.len() * n)
                        .collect();
                    if ws.send(Message::Binary(frame.into())).is_err() {
                        return;
                    }
                }
                match end_after_burst {
                    Some(true) => {
                        // Late enough that a client has read the burst (a reset discards
                        // what it has not read), then closed with nothing lingering: a reset.
                        std::thread::sleep(Duration::from_millis(200));
                        let _ = rustix::net::sockopt::set_socket_linger(
                            ws.get_ref(),
                            Some(Duration::ZERO),
                        );
                        return;
                    }
                    Some(false) => {
                        let _ = ws.get_ref().shutdown(std::net::Shutdown::Write);
                        let mut sink = [0u8; 4096];
                        while ws.get_mut().read(&mut sink).is_ok_and(|n| n > 0) {}
                        return;
                    }
                    None => {}
                }
            }
        }
    }
}

fn split_packet(buf: &[u8]) -> Option<(u8, &[u8], usize)> {
    let mut len = 0usize;
    for i in 0..4 {
        let b = *buf.get(1 + i)?;
        len |= ((b & 0x7f) as usize) << (7 * i);
        if b & 0x80 == 0 {
            let start = 2 + i;
            let end = start + len;
            return (buf.len() >= end).then(|| (buf[0], &buf[start..end], end));
        }
    }
    None
}

fn encode_len(mut n: usize, out: &mut Vec<u8>) {
    loop {
        let mut b = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            b |= 0x80;
        }
        out.push(b);
        if n == 0 {
            break;
        }
    }
}

//! A scripted MQTT 5 server over plain TCP (`mqtt://`), for what no real broker will do on
//! demand: a receive maximum of 2 that it checks, topic aliases it sends, a DISCONNECT with a
//! server reference. Each connection runs the test's script with a [`Peer`].

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

/// One accepted connection, packet by packet.
pub struct Peer {
    stream: TcpStream,
}

impl Peer {
    /// The next packet: its first byte and its body (`None` when the client closed).
    pub fn read(&mut self) -> Option<(u8, Vec<u8>)> {
        let mut first = [0u8; 1];
        self.stream.read_exact(&mut first).ok()?;
        let mut len = 0usize;
        for i in 0..4 {
            let mut b = [0u8; 1];
            self.stream.read_exact(&mut b).ok()?;
            len |= ((b[0] & 0x7f) as usize) << (7 * i);
            if b[0] & 0x80 == 0 {
                break;
            }
        }
        let mut body = vec![0; len];
        self.stream.read_exact(&mut body).ok()?;
        Some((first[0], body))
    }

    /// The next packet if one starts within `wait`: `Err(())` when none did, `Ok(None)` when
    /// the client closed.
    #[allow(clippy::result_unit_err)]
    pub fn read_within(&mut self, wait: Duration) -> Result<Option<(u8, Vec<u8>)>, ()> {
        self.stream.set_read_timeout(Some(wait)).unwrap();
        let mut first = [0u8; 1];
        let got = self.stream.peek(&mut first);
        self.stream.set_read_timeout(None).unwrap();
        match got {
            Ok(0) => Ok(None),
            Ok(_) => Ok(self.read()),
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                Err(())
            }
            Err(_) => Ok(None),
        }
    }

    /// Sends raw packet bytes.
    pub fn send(&mut self, bytes: &[u8]) {
        let _ = self.stream.write_all(bytes);
    }

    /// Reads CONNECT and answers CONNACK (success) with these property bytes.
    pub fn accept(&mut self, props: &[u8]) {
        let (first, _) = self.read().expect("CONNECT");
        assert_eq!(first, 0x10, "CONNECT first");
        let mut p = vec![0x20, (3 + props.len()) as u8, 0, 0, props.len() as u8];
        p.extend_from_slice(props);
        self.send(&p);
    }
}

/// Starts the server; every connection runs `script`. Returns its `mqtt://` URL.
pub fn start(script: impl Fn(Peer) + Send + Sync + 'static) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let script = std::sync::Arc::new(script);
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let script = script.clone();
            std::thread::spawn(move || script(Peer { stream }));
        }
    });
    format!("mqtt://127.0.0.1:{port}")
}

/// A v5 PUBLISH at QoS 0 with `topic` and a topic alias (0: none).
/// `n` as an MQTT variable byte integer.
pub fn varint(mut n: usize) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let b = (n % 128) as u8;
        n /= 128;
        out.push(if n > 0 { b | 0x80 } else { b });
        if n == 0 {
            return out;
        }
    }
}

/// A packet: `first` byte, the remaining length, `body`.
pub fn packet(first: u8, body: &[u8]) -> Vec<u8> {
    let mut p = vec![first];
    p.extend(varint(body.len()));
    p.extend_from_slice(body);
    p
}

pub fn publish(topic: &str, alias: u16, payload: &[u8]) -> Vec<u8> {
    let mut body = (topic.len() as u16).to_be_bytes().to_vec();
    body.extend_from_slice(topic.as_bytes());
    if alias > 0 {
        body.push(3);
        body.push(0x23);
        body.extend_from_slice(&alias.to_be_bytes());
    } else {
        body.push(0);
    }
    body.extend_from_slice(payload);
    let mut p = vec![0x30, body.len() as u8];
    p.extend(body);
    p
}

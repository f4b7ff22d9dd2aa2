//! A loopback stand-in for AWS IoT's device-certificate endpoint: a TLS server (the test
//! CA's server certificate) that requires a client certificate from the test CA, records the
//! ALPN protocols each client offers, accepts `x-amzn-mqtt-ca` when offered, and relays the
//! decrypted MQTT bytes to a broker's plain TCP listener.

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{Acceptor, WebPkiClientVerifier};
use rustls::{RootCertStore, ServerConfig, ServerConnection, StreamOwned};

use super::Certs;

/// What one client did in its handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// The ALPN protocols it offered, in order (empty: no ALPN extension).
    pub alpn: Vec<String>,
    /// Whether the handshake completed (it presented an accepted certificate).
    pub completed: bool,
    /// The MQTT username and password of its CONNECT (custom-authorizer mode only).
    pub credentials: Option<(Option<String>, Option<Vec<u8>>)>,
}

pub struct TlsGateway {
    pub port: u16,
    hellos: Arc<Mutex<Vec<Hello>>>,
}

impl TlsGateway {
    /// The device-certificate endpoint: a client certificate from the test CA is required.
    pub fn start(certs: &Certs, upstream_port: u16) -> TlsGateway {
        Self::start_mode(certs, upstream_port, true)
    }

    /// The custom-authorizer endpoint over MQTT: no client certificate; the ALPN protocol
    /// `mqtt` is accepted when offered, and each CONNECT's username and password are recorded
    /// before it is relayed.
    pub fn start_custom_auth(certs: &Certs, upstream_port: u16) -> TlsGateway {
        Self::start_mode(certs, upstream_port, false)
    }

    fn start_mode(certs: &Certs, upstream_port: u16, client_certs: bool) -> TlsGateway {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(&certs.ca_pem) {
            roots.add(c.unwrap()).unwrap();
        }
        let verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .unwrap();
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_file_iter(certs.dir.join("server.crt"))
                .unwrap()
                .map(Result::unwrap)
                .collect();
        let key = PrivateKeyDer::from_pem_file(certs.dir.join("server.key")).unwrap();
        let builder = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap();
        let builder = if client_certs {
            builder.with_client_cert_verifier(verifier)
        } else {
            builder.with_no_client_auth()
        };
        let base = builder.with_single_cert(chain, key).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let hellos = Arc::new(Mutex::new(Vec::new()));
        let h = hellos.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                let (h, base) = (h.clone(), base.clone());
                std::thread::spawn(move || {
                    let _ = serve(client, &h, base, upstream_port, !client_certs);
                });
            }
        });
        TlsGateway { port, hellos }
    }

    /// Every client hello so far.
    pub fn hellos(&self) -> Vec<Hello> {
        self.hellos.lock().unwrap().clone()
    }
}

fn serve(
    mut tcp: TcpStream,
    hellos: &Mutex<Vec<Hello>>,
    mut config: ServerConfig,
    upstream_port: u16,
    record_connect: bool,
) -> io::Result<()> {
    tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut acceptor = Acceptor::default();
    let accepted = loop {
        acceptor.read_tls(&mut tcp)?;
        if let Some(a) = acceptor.accept().map_err(|(e, _)| io::Error::other(e))? {
            break a;
        }
    };
    let alpn: Vec<String> = accepted
        .client_hello()
        .alpn()
        .map(|i| i.map(|p| String::from_utf8_lossy(p).into_owned()).collect())
        .unwrap_or_default();
    let index = {
        let mut h = hellos.lock().unwrap();
        h.push(Hello {
            alpn: alpn.clone(),
            completed: false,
            credentials: None,
        });
        h.len() - 1
    };
    if alpn.iter().any(|p| p == "x-amzn-mqtt-ca") {
        config.alpn_protocols = vec![b"x-amzn-mqtt-ca".to_vec()];
    } else if record_connect && alpn.iter().any(|p| p == "mqtt") {
        config.alpn_protocols = vec![b"mqtt".to_vec()];
    }
    let mut conn: ServerConnection = accepted
        .into_connection(Arc::new(config))
        .map_err(|(e, _)| io::Error::other(e))?;
    while conn.is_handshaking() {
        conn.complete_io(&mut tcp)?;
    }
    hellos.lock().unwrap()[index].completed = true;
    let mut upstream = TcpStream::connect(("127.0.0.1", upstream_port))?;
    let mut tls = StreamOwned::new(conn, tcp);
    if record_connect {
        let connect = read_packet(&mut tls)?;
        hellos.lock().unwrap()[index].credentials = Some(connect_credentials(&connect));
        upstream.write_all(&connect)?;
    }
    relay(&mut tls, &mut upstream, || false)
}

/// One whole MQTT packet.
fn read_packet(r: &mut impl Read) -> io::Result<Vec<u8>> {
    let mut packet = vec![0u8; 1];
    r.read_exact(&mut packet)?;
    let mut len = 0usize;
    for i in 0..4 {
        let mut b = [0u8; 1];
        r.read_exact(&mut b)?;
        packet.push(b[0]);
        len |= ((b[0] & 0x7f) as usize) << (7 * i);
        if b[0] & 0x80 == 0 {
            break;
        }
    }
    let start = packet.len();
    packet.resize(start + len, 0);
    r.read_exact(&mut packet[start..])?;
    Ok(packet)
}

/// The username and password of an MQTT 3.1.1 CONNECT.
fn connect_credentials(packet: &[u8]) -> (Option<String>, Option<Vec<u8>>) {
    let mut at = 1;
    while packet[at] & 0x80 != 0 {
        at += 1;
    }
    at += 1;
    let field = |at: &mut usize| -> Vec<u8> {
        let n = u16::from_be_bytes([packet[*at], packet[*at + 1]]) as usize;
        let v = packet[*at + 2..*at + 2 + n].to_vec();
        *at += 2 + n;
        v
    };
    field(&mut at); // protocol name
    at += 1; // level
    let flags = packet[at];
    at += 3; // flags, keep-alive
    field(&mut at); // client id
    if flags & 0x04 != 0 {
        field(&mut at);
        field(&mut at);
    }
    let username = (flags & 0x80 != 0).then(|| String::from_utf8(field(&mut at)).unwrap());
    let password = (flags & 0x40 != 0).then(|| field(&mut at));
    (username, password)
}

/// Relays decrypted bytes between a TLS server stream and a plain upstream socket, both
/// ways, until either side ends or `stop()` says so (then both are shut down).
pub(crate) fn relay(
    tls: &mut StreamOwned<ServerConnection, TcpStream>,
    up: &mut TcpStream,
    stop: impl Fn() -> bool,
) -> io::Result<()> {
    tls.sock.set_read_timeout(Some(Duration::from_millis(5)))?;
    up.set_read_timeout(Some(Duration::from_millis(5)))?;
    let mut buf = vec![0u8; 64 * 1024];
    let idle = |e: &io::Error| {
        matches!(
            e.kind(),
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
        )
    };
    loop {
        if stop() {
            let _ = tls.sock.shutdown(std::net::Shutdown::Both);
            let _ = up.shutdown(std::net::Shutdown::Both);
            return Ok(());
        }
        match tls.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => up.write_all(&buf[..n])?,
            Err(e) if idle(&e) => {}
            Err(e) => return Err(e),
        }
        match up.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => {
                tls.write_all(&buf[..n])?;
                tls.flush()?;
            }
            Err(e) if idle(&e) => {}
            Err(e) => return Err(e),
        }
    }
}

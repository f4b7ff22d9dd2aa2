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
}

pub struct TlsGateway {
    pub port: u16,
    hellos: Arc<Mutex<Vec<Hello>>>,
}

impl TlsGateway {
    pub fn start(certs: &Certs, upstream_port: u16) -> TlsGateway {
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
        let base = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)
            .unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let hellos = Arc::new(Mutex::new(Vec::new()));
        let h = hellos.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                let (h, base) = (h.clone(), base.clone());
                std::thread::spawn(move || {
                    let _ = serve(client, &h, base, upstream_port);
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
        });
        h.len() - 1
    };
    if alpn.iter().any(|p| p == "x-amzn-mqtt-ca") {
        config.alpn_protocols = vec![b"x-amzn-mqtt-ca".to_vec()];
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
    relay(&mut tls, &mut upstream, || false)
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

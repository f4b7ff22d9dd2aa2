//! A test certificate authority, server and client certificates, made with openssl.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A test CA and a server certificate for `localhost` and `127.0.0.1`, made with openssl.
pub struct Certs {
    pub ca_pem: Vec<u8>,
    pub dir: PathBuf,
}

/// Runs `openssl` with `args` in `dir`; a failure fails the test with openssl's words.
pub fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

pub fn make_certs(dir: &Path) -> Certs {
    let run = |args: &[&str]| openssl(dir, args);
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "30",
        "-subj",
        "/CN=mqtt-pubsub test CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=localhost",
    ]);
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.crt",
        "-days",
        "30",
        "-sha256",
        "-extfile",
        "server.ext",
    ]);
    // A client certificate from the same CA, for mutual TLS.
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "client.key",
        "-out",
        "client.csr",
        "-subj",
        "/CN=mqtt-pubsub-client",
    ]);
    std::fs::write(
        dir.join("client.ext"),
        "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=clientAuth\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "client.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "client.crt",
        "-days",
        "30",
        "-sha256",
        "-extfile",
        "client.ext",
    ]);
    Certs {
        ca_pem: std::fs::read(dir.join("ca.crt")).unwrap(),
        dir: dir.to_path_buf(),
    }
}

impl Certs {
    /// The client certificate and key (PEM) signed by the test CA.
    pub fn client(&self) -> (Vec<u8>, Vec<u8>) {
        (
            std::fs::read(self.dir.join("client.crt")).unwrap(),
            std::fs::read(self.dir.join("client.key")).unwrap(),
        )
    }
}

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

/// Issues `<name>.crt` (with a new key `<name>.key`) for `subject`, signed by the CA in
/// `dir` (`ca.crt`, `ca.key`), valid for `days`, with the X.509 v3 extensions `ext` (one per
/// line, as an `-extfile`), or none at all, which makes an X.509 v1 certificate.
pub fn issue(dir: &Path, name: &str, subject: &str, ext: Option<&str>, days: u32) {
    let (key, csr, crt, extfile) = (
        format!("{name}.key"),
        format!("{name}.csr"),
        format!("{name}.crt"),
        format!("{name}.ext"),
    );
    openssl(
        dir,
        &[
            "req", "-newkey", "rsa:2048", "-nodes", "-keyout", &key, "-out", &csr, "-subj", subject,
        ],
    );
    let days = days.to_string();
    let mut args = vec![
        "x509",
        "-req",
        "-in",
        &csr,
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        &crt,
        "-days",
        &days,
        "-sha256",
    ];
    if let Some(ext) = ext {
        std::fs::write(dir.join(&extfile), ext).unwrap();
        args.extend(["-extfile", extfile.as_str()]);
    }
    openssl(dir, &args);
}

/// Bundles the test client's certificate and key (`client.crt`, `client.key` in `dir`) into
/// the PKCS#12 file `out` with `password`, as `openssl pkcs12 -export` does (OpenSSL 3's
/// defaults: AES-256, PBKDF2, a SHA-256 MAC), with `extra` options (e.g. `-nomac`).
pub fn pkcs12(dir: &Path, out: &str, password: &str, extra: &[&str]) {
    let pass = format!("pass:{password}");
    let mut args = vec![
        "pkcs12",
        "-export",
        "-in",
        "client.crt",
        "-inkey",
        "client.key",
        "-out",
        out,
        "-passout",
        &pass,
    ];
    args.extend_from_slice(extra);
    openssl(dir, &args);
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
    issue(
        dir,
        "server",
        "/CN=localhost",
        Some("subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n"),
        30,
    );
    // A client certificate from the same CA, for mutual TLS.
    issue(
        dir,
        "client",
        "/CN=mqtt-pubsub-client",
        Some("basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=clientAuth\n"),
        30,
    );
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

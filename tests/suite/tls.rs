//! Trust and identity against real TLS listeners (mosquitto's `wss://` and `mqtts://`, with
//! a CA and certificates made by the test): the platform's trust store, a configuration of
//! the user's with a pinned-certificate verifier, and the errors a wrong identity gives.

use std::sync::Arc;

use mqtt_pubsub::rustls;
use mqtt_pubsub::{Error, MqttOverWsProvider, PubSub, TrustRoots};

use crate::support::{openssl, Mosquitto};

/// Connects in a process of its own to `CHILD_URL` trusting `CHILD_ROOTS` (`platform` or
/// `webpki`), with the environment the parent gives it (`SSL_CERT_FILE`): prints `OK` after a
/// round trip, or `ERROR <message>`.
#[test]
#[ignore = "run by the platform-roots test in a process of its own"]
fn child_platform_roots() {
    let roots = match crate::support::child_env("CHILD_ROOTS").as_str() {
        "platform" => TrustRoots::Platform,
        _ => TrustRoots::Webpki,
    };
    let ps = PubSub::new();
    let built = MqttOverWsProvider::builder(crate::support::child_env("CHILD_URL"))
        .trust_roots(roots)
        .build();
    match built.and_then(|p| ps.add_provider(p)) {
        Ok(()) => {
            crate::support::assert_roundtrip(&ps, "tls/platform");
            println!("OK");
        }
        Err(e) => println!("ERROR {e}"),
    }
}

fn platform_child(url: &str, roots: &str, cert_file: &std::path::Path) -> String {
    let empty = crate::support::TempDir::new("empty-cert-dir");
    let out = crate::support::run_child(
        "tls::child_platform_roots",
        &[
            ("CHILD_URL", url.to_string()),
            ("CHILD_ROOTS", roots.to_string()),
            // The platform lookup reads these: the test CA stands for what IT installed,
            // and the machine's own store is left out (and never modified).
            ("SSL_CERT_FILE", cert_file.display().to_string()),
            ("SSL_CERT_DIR", empty.path().display().to_string()),
        ],
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `TrustRoots::Platform` trusts a CA installed in the platform's store (here the bundle
/// `SSL_CERT_FILE` names, as on Linux); the default webpki roots do not know it.
#[test]
fn platform_roots_trust_what_the_platform_store_holds_mosquitto() {
    let Some(m) = Mosquitto::start() else { return };
    let ca = m.certs_dir().join("ca.crt");
    for url in [m.wss_url(), format!("mqtts://localhost:{}", m.mqtts_port)] {
        let platform = platform_child(&url, "platform", &ca);
        assert!(
            platform.contains("OK"),
            "{url} with the platform's roots: {platform}"
        );
        let webpki = platform_child(&url, "webpki", &ca);
        assert!(
            webpki.contains("ERROR") && webpki.contains("TLS"),
            "{url} with webpki roots: {webpki}"
        );
    }
}

/// A verifier that accepts exactly one server certificate (pinning), with the signatures
/// checked by rustls's own code.
#[derive(Debug)]
struct Pinned {
    cert: Vec<u8>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl rustls::client::danger::ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        if end_entity.as_ref() == self.cert.as_slice() {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General("not the pinned certificate".into()))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The DER of the first certificate in a PEM file.
fn der(pem_file: &std::path::Path) -> Vec<u8> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::pem_file_iter(pem_file)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .to_vec()
}

fn pinned_config(cert: Vec<u8>) -> Arc<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Pinned { cert, provider }))
        .with_no_client_auth();
    Arc::new(config)
}

/// `tls_config` takes the user's configuration as it is: a verifier pinning the broker's
/// certificate connects (no CA given to the library), one pinning another certificate is
/// refused with a TLS error; mixing it with `ca_pem` is a build error.
#[test]
fn a_user_configuration_with_a_pinned_certificate_is_used_as_it_is_mosquitto() {
    let Some(m) = Mosquitto::start() else { return };
    let dir = m.certs_dir();
    for url in [m.wss_url(), format!("mqtts://localhost:{}", m.mqtts_port)] {
        let ps = PubSub::new();
        ps.add_provider(
            MqttOverWsProvider::builder(url.as_str())
                .tls_config(pinned_config(der(&dir.join("server.crt"))))
                .build()
                .unwrap(),
        )
        .unwrap();
        crate::support::assert_roundtrip(&ps, "tls/pinned");
        let err = PubSub::new()
            .add_provider(
                MqttOverWsProvider::builder(url.as_str())
                    .tls_config(pinned_config(der(&dir.join("client.crt"))))
                    .build()
                    .unwrap(),
            )
            .unwrap_err();
        assert!(matches!(err, Error::Tls { .. }), "{url}: {err}");
        assert!(err.to_string().contains("pinned"), "{url}: {err}");
    }
    let err = MqttOverWsProvider::builder(m.wss_url())
        .tls_config(pinned_config(der(&dir.join("server.crt"))))
        .ca_pem(m.ca_pem.clone())
        .build()
        .unwrap_err();
    assert!(matches!(err, Error::InvalidConfig(_)), "{err}");
}

/// A client key that is not the certificate's, and an X.509 v1 certificate (what
/// `openssl x509 -req` makes without an extensions file), each say which it is and what to
/// do. Before: both showed "client certificate: invalid peer certificate:
/// Other(OtherError(UnsupportedCertVersion))" or rustls's Debug text.
#[test]
fn a_wrong_client_identity_says_what_is_wrong() {
    let Some(m) = Mosquitto::start() else { return };
    let dir = m.certs_dir();
    let read = |f: &str| std::fs::read(dir.join(f)).unwrap();
    let err = MqttOverWsProvider::builder(m.wss_url())
        .ca_pem(m.ca_pem.clone())
        .client_cert_pem(read("client.crt"), read("server.key"))
        .build()
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("private key does not belong to the certificate"),
        "{text}"
    );
    assert!(!text.contains("KeyMismatch"), "no Debug text: {text}");
    // A v1 certificate signed by the test CA.
    crate::support::issue(dir, "v1", "/CN=device-v1", None, 2);
    for key in ["v1.key", "server.key"] {
        let err = MqttOverWsProvider::builder(m.wss_url())
            .ca_pem(m.ca_pem.clone())
            .client_cert_pem(read("v1.crt"), read(key))
            .build()
            .unwrap_err();
        let text = err.to_string();
        assert!(text.contains("X.509 v1"), "{key}: {text}");
        assert!(text.contains("v3"), "says what to do: {text}");
        assert!(
            !text.contains("OtherError") && !text.contains("peer"),
            "{text}"
        );
    }
}

/// A PKCS#12 bundle (what `openssl pkcs12 -export` makes; OpenSSL 3's defaults: AES-256,
/// PBKDF2, SHA-256 MAC) with the right password is the client identity mosquitto requires;
/// a wrong password and a file that is no bundle each say so, without the password.
#[test]
fn a_pkcs12_bundle_is_a_client_identity_mosquitto() {
    let Some(m) = Mosquitto::start() else { return };
    let dir = m.certs_dir();
    crate::support::pkcs12(dir, "client.p12", "s3cret-p12-pass", &[]);
    let bundle = std::fs::read(dir.join("client.p12")).unwrap();
    for url in [
        format!("wss://localhost:{}/mqtt", m.mtls_port),
        format!("mqtts://localhost:{}", m.mqtts_mtls_port),
    ] {
        let ps = PubSub::new();
        ps.add_provider(
            MqttOverWsProvider::builder(url.as_str())
                .ca_pem(m.ca_pem.clone())
                .client_identity_p12(bundle.clone(), "s3cret-p12-pass")
                .build()
                .unwrap(),
        )
        .unwrap();
        crate::support::assert_roundtrip(&ps, "tls/p12");
    }
    let err = MqttOverWsProvider::builder(m.wss_url())
        .client_identity_p12(bundle.clone(), "wrong-password")
        .build()
        .unwrap_err();
    assert!(matches!(err, Error::Tls { .. }), "{err}");
    assert!(err.to_string().contains("wrong password"), "{err}");
    assert!(!format!("{err:?}").contains("wrong-password"), "{err:?}");
    let err = MqttOverWsProvider::builder(m.wss_url())
        .client_identity_p12(m.ca_pem.clone(), "x")
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("not a PKCS#12 file"), "{err}");
    // Debug never shows the password.
    let b = MqttOverWsProvider::builder(m.wss_url()).client_identity_p12(bundle, "s3cret-p12-pass");
    assert!(!format!("{b:?}").contains("s3cret"), "{b:?}");
}

/// A server whose CA is not trusted: the error says so and names both ways to trust it.
/// Before: "invalid peer certificate: UnknownIssuer".
#[test]
fn an_untrusted_server_certificate_says_how_to_trust_it_mosquitto() {
    let Some(m) = Mosquitto::start() else { return };
    for url in [m.wss_url(), format!("mqtts://localhost:{}", m.mqtts_port)] {
        let err = PubSub::new()
            .add_provider(MqttOverWsProvider::builder(url.as_str()).build().unwrap())
            .unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, Error::Tls { .. }), "{url}: {text}");
        assert!(
            text.contains("not signed by a CA")
                && text.contains("ca_pem")
                && text.contains("TrustRoots::Platform"),
            "{url}: {text}"
        );
    }
}

/// The `pub` tool with a PKCS#12 bundle whose password comes from an environment variable
/// (never the command line) publishes over mutual TLS; `--system-roots` with the CA given as
/// the platform's store (SSL_CERT_FILE) trusts the broker without `--cafile`.
#[test]
fn the_pub_tool_takes_a_pkcs12_bundle_and_the_system_roots_mosquitto() {
    let Some(m) = Mosquitto::start() else { return };
    let dir = m.certs_dir();
    crate::support::pkcs12(dir, "cli.p12", "cli-p12-secret", &[]);
    let url = format!("mqtts://localhost:{}", m.mqtts_mtls_port);
    let ps = PubSub::new();
    let (cert, key) = m.client_cert.clone();
    ps.add_provider(
        MqttOverWsProvider::builder(url.as_str())
            .ca_pem(m.ca_pem.clone())
            .client_cert_pem(cert, key)
            .build()
            .unwrap(),
    )
    .unwrap();
    let sub = ps.subscribe("cli/p12").unwrap();
    let empty = crate::support::TempDir::new("cli-empty-certs");
    let out = std::process::Command::new(crate::tools::ours("pub"))
        .args(["--url", &url, "--system-roots", "--p12"])
        .arg(dir.join("cli.p12"))
        .args(["--p12-password-env", "CLI_P12_PASSWORD"])
        .args(["-t", "cli/p12", "-m", "with a bundle", "-q", "1"])
        .env("CLI_P12_PASSWORD", "cli-p12-secret")
        .env("SSL_CERT_FILE", dir.join("ca.crt"))
        .env("SSL_CERT_DIR", empty.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let m1 = sub
        .recv_timeout(std::time::Duration::from_secs(20))
        .unwrap();
    assert_eq!(m1.payload(), b"with a bundle");
    // The variable unset: a clear error naming it, exit code 1 or 2, no connection.
    let out = std::process::Command::new(crate::tools::ours("pub"))
        .args(["--url", &url, "--system-roots", "--p12"])
        .arg(dir.join("cli.p12"))
        .args([
            "--p12-password-env",
            "CLI_P12_UNSET_VAR",
            "-t",
            "cli/p12",
            "-m",
            "x",
        ])
        .env_remove("CLI_P12_UNSET_VAR")
        .output()
        .unwrap();
    assert!(!out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("CLI_P12_UNSET_VAR"),
        "{out:?}"
    );
}

/// Server certificates rustls refuses for their shape, from a real TLS server (openssl
/// s_server): the self-signed certificate `openssl req -x509` makes (a CA certificate, even
/// when trusted) and an X.509 v1 one. Each error says what is wrong and what to do, with no
/// Debug text. Before: "invalid peer certificate: Other(OtherError(CaUsedAsEndEntity))" and
/// "… Other(OtherError(UnsupportedCertVersion))".
#[test]
fn a_server_certificate_rustls_refuses_says_why_and_what_to_do() {
    let dir = crate::support::TempDir::new("refused-server-cert");
    let d = dir.path();
    let certs = crate::support::make_certs(d);
    openssl(
        d,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "self.key",
            "-out",
            "self.crt",
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost",
        ],
    );
    crate::support::issue(d, "v1server", "/CN=localhost", None, 2);
    let cases = [
        (
            "self.crt",
            "self.key",
            std::fs::read(d.join("self.crt")).unwrap(),
            ["CA certificate", "basicConstraints=CA:FALSE"],
        ),
        (
            "v1server.crt",
            "v1server.key",
            certs.ca_pem.clone(),
            ["X.509 v1", "reissued as v3"],
        ),
    ];
    for (cert, key, trusted, words) in cases {
        let server = crate::support::openssl_server::OpensslServer::start(d, cert, key);
        let err = PubSub::new()
            .add_provider(
                MqttOverWsProvider::builder(format!("mqtts://localhost:{}", server.port))
                    .ca_pem(trusted)
                    .build()
                    .unwrap(),
            )
            .unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, Error::Tls { .. }), "{cert}: {text}");
        for w in words {
            assert!(text.contains(w), "{cert}: {w:?} in {text}");
        }
        assert!(
            !text.contains("OtherError") && !text.contains("Other("),
            "{cert}: no Debug text: {text}"
        );
    }
}

/// AWS IoT certificate mode: a server certificate this device does not trust gets the words
/// for that, not the device-certificate checklist (which is for a handshake the server
/// refused). Before: every TLS error ended with "(AWS IoT device certificate: check …)".
#[cfg(feature = "aws-iot")]
#[test]
fn aws_certificate_mode_blames_the_device_certificate_only_when_it_may_be_at_fault() {
    use mqtt_pubsub::AwsIotProvider;
    let dir = crate::support::TempDir::new("aws-untrusted-server");
    let certs = crate::support::make_certs(dir.path());
    let (cert, key) = certs.client();
    let server = crate::support::openssl_server::OpensslServer::start(
        dir.path(),
        "server.crt",
        "server.key",
    );
    let err = PubSub::new()
        .add_provider(
            AwsIotProvider::builder(format!("mqtts://localhost:{}", server.port))
                .client_certificate(cert, key)
                .build()
                .unwrap(),
        )
        .unwrap_err();
    let text = err.to_string();
    assert!(text.contains("not signed by a CA"), "{text}");
    assert!(!text.contains("device certificate"), "{text}");
}

/// A passphrase-protected PEM key (PKCS#8 `ENCRYPTED PRIVATE KEY`, and the traditional
/// `Proc-Type: 4,ENCRYPTED` form) is named as such, with how to decrypt it. Before: "bad
/// client key PEM: no items found" and a base64 error.
#[test]
fn an_encrypted_pem_key_says_it_is_encrypted_and_how_to_decrypt_it() {
    let dir = crate::support::TempDir::new("encrypted-key");
    let d = dir.path();
    let certs = crate::support::make_certs(d);
    openssl(
        d,
        &[
            "pkcs8",
            "-topk8",
            "-in",
            "client.key",
            "-out",
            "p8.key",
            "-passout",
            "pass:k3y-pass",
        ],
    );
    openssl(
        d,
        &[
            "rsa",
            "-in",
            "client.key",
            "-aes256",
            "-traditional",
            "-out",
            "trad.key",
            "-passout",
            "pass:k3y-pass",
        ],
    );
    let (cert, _) = certs.client();
    for key in ["p8.key", "trad.key"] {
        let err = MqttOverWsProvider::builder("mqtts://localhost:8883")
            .client_cert_pem(cert.clone(), std::fs::read(d.join(key)).unwrap())
            .build()
            .unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("encrypted") && text.contains("openssl pkey"),
            "{key}: {text}"
        );
    }
}

/// A PKCS#12 bundle without an integrity check (`-nomac`): a wrong password is named as one,
/// the right one opens it. Before: "PKCS#12 bundle: PKCS#5 decryption failed".
#[test]
fn a_pkcs12_bundle_without_a_mac_names_a_wrong_password() {
    let dir = crate::support::TempDir::new("p12-nomac");
    let d = dir.path();
    crate::support::make_certs(d);
    crate::support::pkcs12(d, "nomac.p12", "right-pass", &["-nomac"]);
    let bundle = std::fs::read(d.join("nomac.p12")).unwrap();
    MqttOverWsProvider::builder("mqtts://localhost:8883")
        .client_identity_p12(bundle.clone(), "right-pass")
        .build()
        .unwrap();
    for wrong in ["wrong-pass", "x", ""] {
        let err = MqttOverWsProvider::builder("mqtts://localhost:8883")
            .client_identity_p12(bundle.clone(), wrong)
            .build()
            .unwrap_err();
        assert!(
            err.to_string().contains("wrong password"),
            "{wrong:?}: {err}"
        );
    }
}

/// `TrustRoots::Platform` with `SSL_CERT_FILE` naming an empty file: the error names the
/// variable and what it points at (installing ca-certificates would not help: the system's
/// store is not read while it is set). Before: "… install ca-certificates, or point
/// SSL_CERT_FILE / SSL_CERT_DIR at a bundle".
#[test]
fn an_empty_platform_store_names_what_ssl_cert_file_points_at() {
    let dir = crate::support::TempDir::new("empty-store");
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, b"").unwrap();
    let out = platform_child("mqtts://localhost:8883", "platform", &empty);
    assert!(
        out.contains("SSL_CERT_FILE names") && out.contains("empty.pem"),
        "{out}"
    );
    assert!(out.contains("a directory of PEM certificates"), "{out}");
    assert!(!out.contains("install ca-certificates"), "{out}");
}

/// Handshakes that fail for reasons other than trust, against real servers: a certificate
/// issued for clients only (openssl s_server), TLS to mosquitto's plain port, and a server
/// that requires a client certificate none was given for. Each says which and what to do.
/// Before: "invalid peer certificate: certificate does not allow extended key usage for
/// server authentication…", "received corrupt message of type InvalidContentType", and
/// "received fatal alert: CertificateRequired".
#[test]
fn handshake_failures_say_what_went_wrong_mosquitto() {
    let Some(m) = Mosquitto::start() else { return };
    let dir = crate::support::TempDir::new("handshake-failures");
    let certs = crate::support::make_certs(dir.path());
    crate::support::issue(
        dir.path(),
        "eku",
        "/CN=localhost",
        Some("subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n"),
        2,
    );
    let server =
        crate::support::openssl_server::OpensslServer::start(dir.path(), "eku.crt", "eku.key");
    let connect = |url: String, ca: &[u8]| {
        PubSub::new()
            .add_provider(
                MqttOverWsProvider::builder(url)
                    .ca_pem(ca.to_vec())
                    .connect_timeout(std::time::Duration::from_secs(10))
                    .build()
                    .unwrap(),
            )
            .unwrap_err()
            .to_string()
    };
    let eku = connect(format!("mqtts://localhost:{}", server.port), &certs.ca_pem);
    assert!(eku.contains("serverAuth"), "{eku}");
    // mosquitto's plain port resets the connection at the ClientHello.
    let plain = connect(format!("mqtts://localhost:{}", m.tcp_port), &m.ca_pem);
    assert!(plain.contains("does not speak TLS"), "{plain}");
    let required = connect(
        format!("mqtts://localhost:{}", m.mqtts_mtls_port),
        &m.ca_pem,
    );
    assert!(
        required.contains("requires a client certificate")
            || required.contains("refused this client's certificate"),
        "{required}"
    );
    assert!(!required.contains("CertificateRequired"), "{required}");
}

/// Identity files of the wrong shape say which: empty, binary DER, certificate and key
/// swapped; a platform store file that does not exist says so. Before: "no items found",
/// "no certificate found in client certificate PEM", and the cause only in a log line.
#[test]
fn identity_files_of_the_wrong_shape_say_which() {
    let dir = crate::support::TempDir::new("identity-shapes");
    let d = dir.path();
    crate::support::make_certs(d);
    openssl(
        d,
        &[
            "pkey",
            "-in",
            "client.key",
            "-outform",
            "DER",
            "-out",
            "client.key.der",
        ],
    );
    let read = |f: &str| std::fs::read(d.join(f)).unwrap();
    let build = |cert: Vec<u8>, key: Vec<u8>| {
        MqttOverWsProvider::builder("mqtts://localhost:8883")
            .client_cert_pem(cert, key)
            .build()
            .unwrap_err()
            .to_string()
    };
    let empty = build(read("client.crt"), Vec::new());
    assert!(empty.contains("client key: the file is empty"), "{empty}");
    let der = build(read("client.crt"), read("client.key.der"));
    assert!(
        der.contains("not PEM") && der.contains("openssl pkey"),
        "{der}"
    );
    let swapped = build(read("client.key"), read("client.crt"));
    assert!(swapped.contains("swapped"), "{swapped}");
    let missing = platform_child(
        "mqtts://localhost:8883",
        "platform",
        &d.join("no-such-bundle.pem"),
    );
    assert!(
        missing.contains("SSL_CERT_FILE names") && missing.contains("No such file"),
        "{missing}"
    );
}

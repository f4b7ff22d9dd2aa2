//! What went wrong in a TLS handshake, in words that say what to do: the server's certificate
//! refused here, or the server refusing us (rustls says "invalid peer certificate:
//! UnknownIssuer", "received fatal alert: CertificateRequired"). A leaf of `net/`: both the
//! handshake and the transport's error mapping use it.

/// "the server HOST" and "the certificate of HOST" (without a host: "the server", "the
/// server's certificate").
fn names(host: &str) -> (String, String) {
    if host.is_empty() {
        ("the server".into(), "the server's certificate".into())
    } else {
        (
            format!("the server {host}"),
            format!("the certificate of {host}"),
        )
    }
}

/// What went wrong in a handshake, and what to do: the server's certificate refused here, or
/// the server refusing us (rustls says "received fatal alert: CertificateRequired").
pub fn handshake_problem(e: &rustls::Error, host: &str) -> Option<String> {
    use rustls::AlertDescription as A;
    use rustls::Error as E;
    let (server, _) = names(host);
    Some(match e {
        E::AlertReceived(A::CertificateRequired) => format!(
            "{server} requires a client certificate: give one (client_cert_pem or \
             client_identity_p12; the tools' --cert/--key or --p12)"
        ),
        E::AlertReceived(
            alert @ (A::BadCertificate
            | A::UnknownCA
            | A::CertificateUnknown
            | A::CertificateExpired
            | A::CertificateRevoked
            | A::AccessDenied),
        ) => format!(
            "{server} refused this client's certificate (alert {}): check that it is \
             issued by a CA the server trusts, still valid, and the one the server expects",
            alert_words(*alert)
        ),
        E::AlertReceived(A::HandshakeFailure) => format!(
            "{server} refused the TLS handshake: no protocol version or cipher in \
             common, or a client certificate it requires is missing or refused"
        ),
        E::AlertReceived(A::ProtocolVersion) => format!(
            "{server} speaks only TLS versions rustls refuses (TLS 1.0 or 1.1): it \
             needs TLS 1.2 or 1.3"
        ),
        E::InvalidMessage(rustls::InvalidMessage::InvalidContentType) => format!(
            "{server} does not speak TLS on this port: check the port (e.g. 8883 \
             is MQTT over TLS, 1883 plain MQTT) or use mqtt:// / ws://"
        ),
        _ => return server_certificate_problem(e, host),
    })
}

/// A TLS alert about a certificate, in words ("bad certificate").
fn alert_words(alert: rustls::AlertDescription) -> &'static str {
    use rustls::AlertDescription as A;
    match alert {
        A::BadCertificate => "bad certificate",
        A::UnknownCA => "unknown CA",
        A::CertificateExpired => "certificate expired",
        A::CertificateRevoked => "certificate revoked",
        A::AccessDenied => "access denied",
        _ => "certificate unknown",
    }
}

/// What is wrong with the server's certificate, and what to do, for the problems a user
/// meets (rustls says "invalid peer certificate: UnknownIssuer").
pub fn server_certificate_problem(e: &rustls::Error, host: &str) -> Option<String> {
    use rustls::CertificateError as C;
    let rustls::Error::InvalidCertificate(c) = e else {
        return None;
    };
    let (server, cert) = names(host);
    let host_name = if host.is_empty() { "this host" } else { host };
    Some(match c {
        C::UnknownIssuer => format!(
            "{cert} is not signed by a CA this provider trusts: add its CA \
             with ca_pem(..) (the tools' --cafile), or trust the operating system's store \
             with trust_roots(TrustRoots::Platform) (--tls-use-os-certs); with a tls_config of \
             your own, add the CA to its root store. If the CA is trusted already, the server \
             may not be sending its intermediate certificates: configure it with the full \
             chain"
        ),
        C::InvalidPurpose | C::InvalidPurposeContext { .. } => format!(
            "{cert} is not issued for TLS servers (its extendedKeyUsage \
             lacks serverAuth): it must be reissued with extendedKeyUsage=serverAuth"
        ),
        C::BadSignature => format!(
            "the signature on {cert} does not verify: it was signed by \
             another key than the trusted CA's (a CA re-created under the same name?), or \
             with a key rustls finds too weak"
        ),
        #[allow(deprecated)]
        C::UnsupportedSignatureAlgorithm | C::UnsupportedSignatureAlgorithmContext { .. } => {
            format!(
                "{cert} is signed with an algorithm rustls does not \
                 accept (SHA-1, or a key type such as Ed448): it must be reissued with \
                 SHA-256 and an RSA (2048 bits or more), ECDSA or Ed25519 key"
            )
        }
        C::BadEncoding => format!("{cert} is malformed (not valid DER)"),
        C::Expired | C::ExpiredContext { .. } => {
            format!("{cert} has expired (or this machine's clock is wrong)")
        }
        C::NotValidYet | C::NotValidYetContext { .. } => {
            format!("{cert} is not valid yet (check this machine's clock)")
        }
        C::NotValidForName | C::NotValidForNameContext { .. } => format!(
            "the certificate the server presented is not for {host_name} (a wrong host name in the \
             URL, or a server answering for another name)"
        ),
        C::Revoked => format!("{cert} has been revoked"),
        C::Other(other) => {
            let name = format!("{other:?}");
            if name.contains("CaUsedAsEndEntity") {
                format!(
                    "{server} presents a CA certificate (basicConstraints CA:TRUE, \
                     as `openssl req -x509` makes by default) as its own, which rustls refuses \
                     even when trusted: give the server a certificate signed by a CA, with \
                     basicConstraints=CA:FALSE and a subjectAltName for {host_name}, and trust that \
                     CA with ca_pem(..)"
                )
            } else if name.contains("UnsupportedCertVersion") {
                format!(
                    "{cert} is an X.509 v1 certificate, which rustls does \
                     not accept: the server's certificate must be reissued as v3 (e.g. \
                     `openssl x509 -req ... -extfile` with subjectAltName and \
                     basicConstraints=CA:FALSE lines)"
                )
            } else if name.contains("RequiredEkuNotFound") {
                format!(
                    "{cert} is not issued for TLS servers (its \
                     extendedKeyUsage lacks serverAuth): it must be reissued with \
                     extendedKeyUsage=serverAuth"
                )
            } else if name.contains("UnsupportedCriticalExtension") {
                format!(
                    "{cert} has a critical extension rustls does not know, \
                     so it must refuse it: the certificate must be reissued without it"
                )
            } else {
                let reason: String = name
                    .trim_start_matches("OtherError(")
                    .chars()
                    .take_while(|c| c.is_alphanumeric())
                    .collect();
                format!("{cert} was refused ({reason})")
            }
        }
        _ => return None,
    })
}

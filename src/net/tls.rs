//! rustls client configuration: webpki or platform roots, extra CAs, client certificates, or
//! the user's own configuration; and the TLS handshake.

use std::sync::Arc;

use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};
use rustls_pki_types::ServerName;

use crate::net::tcp::Tcp;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::error::{Error, Result};

/// Which roots a TLS connection trusts (extra CAs from `ca_pem` are added to either).
///
/// ```
/// use mqtt_pubsub::{MqttOverWsProvider, TrustRoots};
/// // The operating system's store: what IT installed, a private CA in /etc/ssl/certs.
/// let provider = MqttOverWsProvider::builder("wss://broker.internal/mqtt")
///     .trust_roots(TrustRoots::Platform)
///     .build()?;
/// # let _ = provider;
/// # Ok::<(), mqtt_pubsub::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum TrustRoots {
    /// Mozilla's root program, compiled in (the `webpki-roots` crate): the same on every
    /// machine, blind to roots an administrator installed. The default.
    #[default]
    Webpki,
    /// The operating system's trust store, read when the provider is built (the
    /// `rustls-native-certs` crate: on Linux the distribution's bundle, or the file and
    /// directory `SSL_CERT_FILE` and `SSL_CERT_DIR` name; the keychain on macOS; the
    /// certificate store on Windows). A store with no usable certificate is an error.
    Platform,
}

/// Everything a provider's TLS configuration is made of.
#[derive(Clone, Default)]
pub struct TlsSettings {
    /// The roots trusted.
    pub roots: TrustRoots,
    /// Extra CA certificates (PEM), trusted on top of `roots`.
    pub extra_ca_pems: Vec<Vec<u8>>,
    /// Client certificate chain and key (PEM) for mutual TLS.
    pub client_cert: Option<(Vec<u8>, Vec<u8>)>,
    /// Client certificate chain and PKCS#8 key (DER), from a PKCS#12 bundle.
    pub client_der: Option<(Vec<CertificateDer<'static>>, Vec<u8>)>,
    /// A configuration of the user's, used as it is (its ALPN protocols replaced only where
    /// the connection needs one, AWS IoT's `x-amzn-mqtt-ca` on port 443).
    pub config: Option<Arc<ClientConfig>>,
}

impl TlsSettings {
    /// The configuration, offering the ALPN protocols `alpn` (none: no ALPN extension).
    ///
    /// The default settings share one configuration (and its session cache) across every
    /// provider: the root store and resumption cache are ~20 KiB of heap, which every
    /// `ws://` provider used to carry without ever using it.
    pub fn client_config(&self, alpn: &[&[u8]]) -> Result<Arc<ClientConfig>> {
        if let Some(user) = &self.config {
            if alpn.is_empty() {
                return Ok(user.clone());
            }
            let mut config = (**user).clone();
            config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
            return Ok(Arc::new(config));
        }
        if !alpn.is_empty() {
            let mut config = (*self.build()?).clone();
            config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
            return Ok(Arc::new(config));
        }
        static DEFAULT: std::sync::OnceLock<Arc<ClientConfig>> = std::sync::OnceLock::new();
        let plain = self.roots == TrustRoots::Webpki
            && self.extra_ca_pems.is_empty()
            && self.client_cert.is_none()
            && self.client_der.is_none();
        if plain {
            if let Some(shared) = DEFAULT.get() {
                return Ok(shared.clone());
            }
            let config = self.build()?;
            return Ok(DEFAULT.get_or_init(|| config).clone());
        }
        self.build()
    }

    fn roots(&self) -> Result<RootCertStore> {
        let mut roots = match self.roots {
            TrustRoots::Webpki => {
                RootCertStore::from_iter(webpki_roots::TLS_SERVER_ROOTS.iter().cloned())
            }
            TrustRoots::Platform => platform_roots()?,
        };
        for pem in &self.extra_ca_pems {
            let mut found = 0;
            for cert in CertificateDer::pem_slice_iter(pem) {
                let cert =
                    cert.map_err(|e| Error::tls(format!("bad CA certificate PEM: {e}"), e))?;
                roots
                    .add(cert)
                    .map_err(|e| Error::tls(format!("unusable CA certificate: {e}"), e))?;
                found += 1;
            }
            if found == 0 {
                return Err(Error::tls_msg("no certificate found in CA PEM"));
            }
        }
        Ok(roots)
    }

    fn build(&self) -> Result<Arc<ClientConfig>> {
        let roots = self.roots()?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::tls(e.to_string(), e))?
            .with_root_certificates(roots);
        let config = match (&self.client_cert, &self.client_der) {
            (None, None) => builder.with_no_client_auth(),
            (_, Some((chain, key))) => builder
                .with_client_auth_cert(chain.clone(), PrivateKeyDer::Pkcs8(key.clone().into()))
                .map_err(client_identity_error)?,
            (Some((chain, key)), None) => {
                let chain = CertificateDer::pem_slice_iter(chain)
                    .collect::<std::result::Result<Vec<_>, _>>()
                    .map_err(|e| Error::tls(format!("bad client certificate PEM: {e}"), e))?;
                if chain.is_empty() {
                    return Err(Error::tls_msg(
                        "no certificate found in client certificate PEM",
                    ));
                }
                let key = PrivateKeyDer::from_pem_slice(key)
                    .map_err(|e| Error::tls(format!("bad client key PEM: {e}"), e))?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(client_identity_error)?
            }
        };
        Ok(Arc::new(config))
    }
}

/// The operating system's roots; the certificates it cannot parse are skipped (and logged),
/// none at all is an error.
fn platform_roots() -> Result<RootCertStore> {
    let found = rustls_native_certs::load_native_certs();
    for e in found.errors.iter().take(3) {
        log::warn!(
            "platform trust store: {}",
            crate::error::printable_max(&e.to_string(), 200)
        );
    }
    let mut roots = RootCertStore::empty();
    let (added, ignored) = roots.add_parsable_certificates(found.certs);
    if ignored > 0 {
        log::debug!("platform trust store: {ignored} certificates rustls cannot use were skipped");
    }
    if added == 0 {
        return Err(Error::tls_msg(
            "the platform's trust store has no usable certificate (on Linux: install \
             ca-certificates, or point SSL_CERT_FILE / SSL_CERT_DIR at a bundle)",
        ));
    }
    Ok(roots)
}

/// What rustls says of a client certificate and key, in words that say which is wrong and
/// what to do (rustls calls our own certificate the "peer" here and prints a Debug string).
fn client_identity_error(e: rustls::Error) -> Error {
    use rustls::{CertificateError, Error as E, InconsistentKeys};
    let text = match &e {
        E::InconsistentKeys(InconsistentKeys::KeyMismatch) => {
            "client certificate: the private key does not belong to the certificate (check \
             that the key file is the one the certificate was issued for)"
                .to_string()
        }
        E::InvalidCertificate(CertificateError::Other(other))
            if format!("{other:?}").contains("UnsupportedCertVersion") =>
        {
            "client certificate: it is an X.509 v1 certificate, which rustls does not accept; \
             reissue it as v3 (e.g. `openssl x509 -req ... -extfile` with a \
             `basicConstraints=CA:FALSE` line)"
                .to_string()
        }
        E::InvalidCertificate(c) => format!("client certificate: {c}"),
        other => format!("client certificate and key: {other}"),
    };
    Error::tls(text, e)
}

/// The TLS handshake, completed now so that a certificate problem is reported as such.
pub fn handshake(
    config: Arc<ClientConfig>,
    host: &str,
    tcp: Tcp,
) -> Result<StreamOwned<ClientConnection, Tcp>> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let name =
        ServerName::try_from(bare.to_string()).map_err(|e| Error::InvalidUrl(format!("{e}")))?;
    let conn = ClientConnection::new(config, name).map_err(|e| Error::tls(e.to_string(), e))?;
    let mut s = StreamOwned::new(conn, tcp);
    while s.conn.is_handshaking() {
        s.conn.complete_io(&mut s.sock).map_err(|e| {
            let tls = e
                .get_ref()
                .and_then(|i| i.downcast_ref::<rustls::Error>())
                .and_then(|r| server_certificate_problem(r, bare));
            match tls {
                Some(text) => Error::tls(text, e),
                None => crate::net::error::map_io("TLS handshake", e),
            }
        })?;
    }
    Ok(s)
}

/// What is wrong with the server's certificate, and what to do, for the problems a user
/// meets (rustls says "invalid peer certificate: UnknownIssuer").
fn server_certificate_problem(e: &rustls::Error, host: &str) -> Option<String> {
    use rustls::CertificateError as C;
    let rustls::Error::InvalidCertificate(c) = e else {
        return None;
    };
    Some(match c {
        C::UnknownIssuer => format!(
            "the certificate of {host} is not signed by a CA this provider trusts: add its CA \
             with ca_pem(..), or trust the operating system's store with \
             trust_roots(TrustRoots::Platform)"
        ),
        C::Expired | C::ExpiredContext { .. } => {
            format!("the certificate of {host} has expired (or this machine's clock is wrong)")
        }
        C::NotValidYet | C::NotValidYetContext { .. } => {
            format!("the certificate of {host} is not valid yet (check this machine's clock)")
        }
        C::NotValidForName | C::NotValidForNameContext { .. } => format!(
            "the certificate the server presented is not for {host} (a wrong host name in the \
             URL, or a server answering for another name)"
        ),
        C::Revoked => format!("the certificate of {host} has been revoked"),
        _ => return None,
    })
}

/// The certificate chain and private key of a PKCS#12 bundle (`.p12`, `.pfx`) opened with
/// `password`: the first entry that holds a key and its certificates.
#[cfg(feature = "pkcs12")]
pub fn identity_from_pkcs12(
    bundle: &[u8],
    password: &str,
) -> Result<(Vec<CertificateDer<'static>>, Vec<u8>)> {
    use p12_keystore::error::Error as P12;
    use p12_keystore::{KeyStore, KeyStoreEntry, Pkcs12ImportPolicy};
    let store =
        KeyStore::from_pkcs12(bundle, password, Pkcs12ImportPolicy::Strict).map_err(|e| {
            let text = match &e {
                P12::MacError(_) => {
                    "PKCS#12 bundle: wrong password (its integrity check failed)".to_string()
                }
                P12::DerError(_) | P12::InvalidVersion | P12::InvalidData | P12::InvalidLength => {
                    "PKCS#12 bundle: not a PKCS#12 file (or a damaged one)".to_string()
                }
                P12::UnsupportedEncryptionScheme | P12::UnsupportedMacAlgorithm => format!(
                    "PKCS#12 bundle: {e}; re-export it with AES-256 and SHA-256 \
                 (openssl pkcs12 -export -keypbe AES-256-CBC -certpbe AES-256-CBC -macalg sha256)"
                ),
                P12::UnpadError => {
                    "PKCS#12 bundle: wrong password (it does not decrypt)".to_string()
                }
                other => format!("PKCS#12 bundle: {other}"),
            };
            Error::tls(text, e)
        })?;
    for (_, entry) in store.entries() {
        if let KeyStoreEntry::PrivateKeyChain(chain) = entry {
            if chain.certs().is_empty() {
                continue;
            }
            let certs = chain
                .certs()
                .iter()
                .map(|c| CertificateDer::from(c.as_der().to_vec()))
                .collect();
            return Ok((certs, chain.key().as_der().to_vec()));
        }
    }
    Err(Error::tls_msg(
        "PKCS#12 bundle: no private key with its certificate in it",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_certificate_problems_say_what_to_do() {
        use rustls::CertificateError as C;
        let say =
            |c: C| server_certificate_problem(&rustls::Error::InvalidCertificate(c), "b.example");
        assert!(say(C::UnknownIssuer).unwrap().contains("ca_pem"));
        assert!(say(C::Expired).unwrap().contains("expired"));
        assert!(say(C::NotValidYet).unwrap().contains("clock"));
        assert!(say(C::NotValidForName)
            .unwrap()
            .contains("not for b.example"));
        assert!(
            say(C::BadSignature).is_none(),
            "rustls's own words otherwise"
        );
    }

    #[test]
    fn default_configuration_is_shared_and_custom_ones_are_not() {
        let a = TlsSettings::default().client_config(&[]).unwrap();
        let b = TlsSettings::default().client_config(&[]).unwrap();
        assert!(Arc::ptr_eq(&a, &b), "one default configuration per process");
        // A custom CA gets its own configuration (a bad PEM proves it is really parsed).
        let custom = TlsSettings {
            extra_ca_pems: vec![b"not a pem".to_vec()],
            ..TlsSettings::default()
        };
        assert!(custom.client_config(&[]).is_err());
        // A user's configuration is used as it is, ALPN set only when asked for.
        let user = TlsSettings {
            config: Some(a.clone()),
            ..TlsSettings::default()
        };
        assert!(Arc::ptr_eq(&user.client_config(&[]).unwrap(), &a));
        let alpn = user.client_config(&[b"x-amzn-mqtt-ca"]).unwrap();
        assert_eq!(alpn.alpn_protocols, vec![b"x-amzn-mqtt-ca".to_vec()]);
    }
}

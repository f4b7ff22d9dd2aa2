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

/// The TLS configuration a connection attempt uses.
#[derive(Clone, Debug)]
pub enum Tls {
    /// The process-wide default (webpki roots, no client identity, no ALPN), built on the
    /// first TLS handshake: a process whose providers all use `ws://` or `mqtt://` never
    /// builds it (nor faults in the TLS code and the root store for it).
    Default,
    /// A configuration of its own.
    Own(Arc<ClientConfig>),
}

/// The process-wide default configuration ([`Tls::Default`]).
static DEFAULT: std::sync::OnceLock<Arc<ClientConfig>> = std::sync::OnceLock::new();

impl Tls {
    /// The configuration to hand the handshake.
    pub fn config(&self) -> Result<Arc<ClientConfig>> {
        match self {
            Tls::Own(c) => Ok(c.clone()),
            Tls::Default => TlsSettings::default().client_config(&[]),
        }
    }
}

impl TlsSettings {
    /// Whether these are the default settings (webpki roots, nothing added).
    fn is_default(&self) -> bool {
        self.config.is_none()
            && self.roots == TrustRoots::Webpki
            && self.extra_ca_pems.is_empty()
            && self.client_cert.is_none()
            && self.client_der.is_none()
    }

    /// What a connection without ALPN uses: [`Tls::Default`] for the default settings (built
    /// when first needed), else the configuration built now (so that bad TLS material fails
    /// `build()`).
    pub fn for_connection(&self) -> Result<Tls> {
        if self.is_default() {
            return Ok(Tls::Default);
        }
        self.client_config(&[]).map(Tls::Own)
    }

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
        if self.is_default() {
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
                let cert = cert.map_err(|e| Error::tls(pem_words("CA certificate", &e), e))?;
                roots.add(cert).map_err(|e| {
                    let words = match &e {
                        rustls::Error::InvalidCertificate(
                            rustls::CertificateError::BadEncoding,
                        ) => "it is malformed (not valid DER inside the PEM)".to_string(),
                        other => other.to_string(),
                    };
                    Error::tls(format!("unusable CA certificate: {words}"), e)
                })?;
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
        // ring, deprecated in rustls 0.23.48 for want of post-quantum key exchange, stays
        // the provider: aws-lc-rs would bring a C build (cmake, and NASM on Windows) to every
        // user. A user who wants post-quantum groups hands in a tls_config of their own.
        #[allow(deprecated)]
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
                if let Some(problem) = pem_shape(
                    "client certificate",
                    chain,
                    "CERTIFICATE",
                    "openssl x509 -inform DER -in cert.der -out cert.pem",
                ) {
                    return Err(Error::tls_msg(problem));
                }
                let chain = CertificateDer::pem_slice_iter(chain)
                    .collect::<std::result::Result<Vec<_>, _>>()
                    .map_err(|e| Error::tls(pem_words("client certificate", &e), e))?;
                if chain.is_empty() {
                    return Err(Error::tls_msg(
                        "no certificate found in client certificate PEM",
                    ));
                }
                let key = client_key(key)?;
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
            crate::error::printable_max(&store_error_words(e), 300)
        );
    }
    let mut roots = RootCertStore::empty();
    let (added, ignored) = roots.add_parsable_certificates(found.certs);
    if ignored > 0 {
        log::debug!("platform trust store: {ignored} certificates rustls cannot use were skipped");
    }
    if added == 0 {
        let mut text = empty_store_message(
            std::env::var_os("SSL_CERT_FILE"),
            std::env::var_os("SSL_CERT_DIR"),
        );
        if let Some(first) = found.errors.first() {
            text.push_str(&format!(
                " (the store said: {})",
                crate::error::printable_max(&store_error_words(first), 300)
            ));
        }
        return Err(Error::tls_msg(text));
    }
    Ok(roots)
}

/// Why the platform's store gave no certificate, naming what `SSL_CERT_FILE` and
/// `SSL_CERT_DIR` point at when they are set (they replace the system's own locations).
fn empty_store_message(
    file: Option<std::ffi::OsString>,
    dir: Option<std::ffi::OsString>,
) -> String {
    let shown = |v: &std::ffi::OsString| {
        crate::error::printable_max(&std::path::Path::new(v).display().to_string(), 200)
    };
    let mut named = Vec::new();
    if let Some(f) = &file {
        named.push(format!("SSL_CERT_FILE names {} (a PEM bundle)", shown(f)));
    }
    if let Some(d) = &dir {
        named.push(format!(
            "SSL_CERT_DIR names {} (a directory of PEM certificates, as `openssl rehash` \
             leaves them)",
            shown(d)
        ));
    }
    if named.is_empty() {
        "the platform's trust store has no usable certificate (on Linux: install \
         ca-certificates, or point SSL_CERT_FILE at a PEM bundle or SSL_CERT_DIR at a \
         directory of PEM certificates)"
            .to_string()
    } else {
        format!(
            "the platform's trust store has no usable certificate: {}, and the system's own \
             store is not read while either is set; put PEM certificates there, or unset them",
            named.join("; ")
        )
    }
}

/// One problem the platform's store reported, in words (no Debug bytes).
fn store_error_words(e: &rustls_native_certs::Error) -> String {
    match &e.kind {
        rustls_native_certs::ErrorKind::Pem(p) => pem_words(e.context, p),
        _ => e.to_string(),
    }
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
        E::InvalidCertificate(rustls::CertificateError::BadEncoding) => {
            "client certificate: it is malformed (not valid DER inside the PEM)".to_string()
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
                .and_then(|r| {
                    Some((
                        crate::net::tls_words::handshake_problem(r, bare)?,
                        r.clone(),
                    ))
                });
            match tls {
                Some((text, cause)) => Error::tls(text, cause),
                None if matches!(
                    e.kind(),
                    std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::UnexpectedEof
                ) =>
                {
                    let text = format!(
                        "the server {bare} closed the connection during the TLS handshake ({e}): \
                         a server that does not speak TLS on this port (e.g. 1883 is plain \
                         MQTT; use mqtt:// or ws://), or one that refuses this client"
                    );
                    Error::tls(text, e)
                }
                None => crate::net::error::map_io("TLS handshake", e),
            }
        })?;
    }
    Ok(s)
}

#[cfg(feature = "aws-iot")]
/// Whether `err` is the server refusing this client's certificate (or requiring one), which
/// is when a checklist about the device certificate helps.
pub fn is_client_certificate_refused(err: &Error) -> bool {
    use rustls::AlertDescription as A;
    matches!(
        rustls_cause(err),
        Some(rustls::Error::AlertReceived(
            A::CertificateRequired
                | A::BadCertificate
                | A::UnknownCA
                | A::CertificateUnknown
                | A::CertificateExpired
                | A::CertificateRevoked
                | A::AccessDenied
                | A::HandshakeFailure
        ))
    )
}

#[cfg(feature = "aws-iot")]
/// The rustls error behind `err`, if any.
fn rustls_cause(err: &Error) -> Option<&rustls::Error> {
    let Error::Tls {
        source: Some(source),
        ..
    } = err
    else {
        return None;
    };
    source.downcast_ref::<rustls::Error>().or_else(|| {
        source
            .downcast_ref::<std::io::Error>()
            .and_then(|e| e.get_ref())
            .and_then(|i| i.downcast_ref::<rustls::Error>())
    })
}

/// A PEM problem in words (pki-types prints the offending bytes as a Debug list).
fn pem_words(what: &str, e: &rustls_pki_types::pem::Error) -> String {
    use rustls_pki_types::pem::Error as P;
    match e {
        P::MissingSectionEnd { .. } => {
            format!("{what}: a PEM section has no END line (the file is cut short)")
        }
        P::IllegalSectionStart { .. } => format!("{what}: a malformed PEM BEGIN line"),
        P::Base64Decode(_) => format!("{what}: a PEM section is not valid base64"),
        P::NoItemsFound => format!("{what}: no PEM section of the expected kind"),
        other => format!("{what}: {other}"),
    }
}

/// Why a file meant to hold PEM `kind` (e.g. "CERTIFICATE") cannot: it is empty, binary
/// (DER), or holds something else (a key where a certificate belongs: swapped arguments).
fn pem_shape(what: &str, pem: &[u8], kind: &str, convert: &str) -> Option<String> {
    if pem.iter().all(u8::is_ascii_whitespace) {
        return Some(format!("{what}: the file is empty"));
    }
    let text = String::from_utf8_lossy(pem);
    if !text.contains("-----BEGIN ") {
        return Some(format!(
            "{what}: the file is not PEM (binary DER?): convert it with `{convert}`"
        ));
    }
    if !text.contains(kind) {
        let holds = if text.contains("PRIVATE KEY") {
            "a private key (certificate and key swapped?)"
        } else if text.contains("CERTIFICATE") {
            "a certificate (certificate and key swapped?)"
        } else {
            "no section of the expected kind"
        };
        return Some(format!("{what}: the PEM file holds {holds}"));
    }
    None
}

/// The private key of a client identity, or why not: an encrypted key says so and how to
/// decrypt it (pki-types only sees "no items found" in it).
fn client_key(pem: &[u8]) -> Result<PrivateKeyDer<'static>> {
    let text = String::from_utf8_lossy(pem);
    if text.contains("BEGIN ENCRYPTED PRIVATE KEY") || text.contains("Proc-Type: 4,ENCRYPTED") {
        return Err(Error::tls_msg(
            "client key: the private key is encrypted with a passphrase, which PEM keys \
             cannot be here: decrypt it once (`openssl pkey -in key.pem -out plain-key.pem`, \
             kept readable only by the device's user) or ship the identity as a PKCS#12 \
             bundle with client_identity_p12(..)",
        ));
    }
    if let Some(problem) = pem_shape(
        "client key",
        pem,
        "PRIVATE KEY",
        "openssl pkey -inform DER -in key.der -out key.pem",
    ) {
        return Err(Error::tls_msg(problem));
    }
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| Error::tls(pem_words("client key", &e), e))
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
                // Without an integrity check (`-nomac`) a wrong password shows as a key or
                // certificate that does not decrypt.
                P12::UnpadError | P12::Pkcs5Error(_) => {
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
        let say = |c: C| {
            crate::net::tls_words::server_certificate_problem(
                &rustls::Error::InvalidCertificate(c),
                "b.example",
            )
        };
        assert!(say(C::UnknownIssuer).unwrap().contains("ca_pem"));
        assert!(say(C::Expired).unwrap().contains("expired"));
        assert!(say(C::NotValidYet).unwrap().contains("clock"));
        assert!(say(C::NotValidForName)
            .unwrap()
            .contains("not for b.example"));
        assert!(say(C::BadSignature).unwrap().contains("does not verify"));
        assert!(
            say(C::ApplicationVerificationFailure).is_none(),
            "rustls's own words otherwise"
        );
    }

    #[test]
    fn platform_store_problems_are_words_without_debug_bytes() {
        let e = rustls_native_certs::Error {
            context: "failed to read PEM from file",
            kind: rustls_native_certs::ErrorKind::Pem(
                rustls_pki_types::pem::Error::MissingSectionEnd {
                    end_marker: b"-----END CERTIFICATE-----".to_vec(),
                },
            ),
        };
        let text = store_error_words(&e);
        assert!(text.contains("cut short"), "{text}");
        assert!(!text.contains("[45, 45"), "no Debug bytes: {text}");
        let dir_only = empty_store_message(None, Some("/certs".into()));
        assert!(
            dir_only.contains("SSL_CERT_DIR names /certs (a directory"),
            "{dir_only}"
        );
        assert!(!dir_only.contains("SSL_CERT_FILE names"), "{dir_only}");
        let neither = empty_store_message(None, None);
        assert!(neither.contains("ca-certificates"), "{neither}");
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

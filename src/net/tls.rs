//! rustls client configuration: webpki roots, extra CAs, client certificates.

use std::sync::Arc;

use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};
use rustls_pki_types::ServerName;

use crate::net::tcp::Tcp;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::error::{Error, Result};

/// A client configuration trusting the webpki roots plus `extra_ca_pems`, presenting
/// `client_cert` (chain PEM, key PEM) when given.
///
/// Without extra CAs or a client certificate every provider shares one configuration (and
/// its session cache): the root store and resumption cache are ~20 KiB of heap, which every
/// `ws://` provider used to carry without ever using it.
pub fn client_config(
    extra_ca_pems: &[Vec<u8>],
    client_cert: Option<&(Vec<u8>, Vec<u8>)>,
) -> Result<Arc<ClientConfig>> {
    client_config_alpn(extra_ca_pems, client_cert, &[])
}

/// [`client_config`] offering the ALPN protocols `alpn` (none: no ALPN extension).
pub fn client_config_alpn(
    extra_ca_pems: &[Vec<u8>],
    client_cert: Option<&(Vec<u8>, Vec<u8>)>,
    alpn: &[&[u8]],
) -> Result<Arc<ClientConfig>> {
    if !alpn.is_empty() {
        let mut config = (*build(extra_ca_pems, client_cert)?).clone();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        return Ok(Arc::new(config));
    }
    static DEFAULT: std::sync::OnceLock<Arc<ClientConfig>> = std::sync::OnceLock::new();
    if extra_ca_pems.is_empty() && client_cert.is_none() {
        if let Some(shared) = DEFAULT.get() {
            return Ok(shared.clone());
        }
        let config = build(&[], None)?;
        return Ok(DEFAULT.get_or_init(|| config).clone());
    }
    build(extra_ca_pems, client_cert)
}

fn build(
    extra_ca_pems: &[Vec<u8>],
    client_cert: Option<&(Vec<u8>, Vec<u8>)>,
) -> Result<Arc<ClientConfig>> {
    let mut roots = RootCertStore::from_iter(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    for pem in extra_ca_pems {
        let mut found = 0;
        for cert in CertificateDer::pem_slice_iter(pem) {
            let cert = cert.map_err(|e| Error::tls(format!("bad CA certificate PEM: {e}"), e))?;
            roots
                .add(cert)
                .map_err(|e| Error::tls(format!("unusable CA certificate: {e}"), e))?;
            found += 1;
        }
        if found == 0 {
            return Err(Error::tls_msg("no certificate found in CA PEM"));
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::tls(e.to_string(), e))?
        .with_root_certificates(roots);
    let config = match client_cert {
        None => builder.with_no_client_auth(),
        Some((chain, key)) => {
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
                .map_err(|e| Error::tls(format!("client certificate: {e}"), e))?
        }
    };
    Ok(Arc::new(config))
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
        s.conn
            .complete_io(&mut s.sock)
            .map_err(|e| crate::net::error::map_io("TLS handshake", e))?;
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_configuration_is_shared_and_custom_ones_are_not() {
        let a = client_config(&[], None).unwrap();
        let b = client_config(&[], None).unwrap();
        assert!(Arc::ptr_eq(&a, &b), "one default configuration per process");
        // A custom CA gets its own configuration (a bad PEM proves it is really parsed).
        assert!(client_config(&[b"not a pem".to_vec()], None).is_err());
    }
}

//! The transport's errors: an I/O error met while connecting, mapped to what the caller
//! sees (rustls errors become [`Error::Tls`], timeouts [`Error::Timeout`]). Every file of
//! `net/` maps its errors here, so no transport depends on another for it.

use std::io;

use crate::error::{Error, Operation};

/// Maps an I/O error met while connecting: rustls errors become [`Error::Tls`], timeouts
/// [`Error::Timeout`].
pub fn map_io(context: &'static str, e: io::Error) -> Error {
    if let Some(tls) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
        let text = crate::net::tls_words::handshake_problem(tls, "").unwrap_or(tls.to_string());
        return Error::tls(text, tls.clone());
    }
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
            Error::timeout(Operation::Connect, context)
        }
        _ => Error::Io {
            context,
            source: e,
            target: None,
        },
    }
}

//! Opening the transport: TCP, optional TLS, and the WebSocket upgrade.

pub mod error;
pub mod head;
#[cfg(feature = "aws-iot")]
pub mod http;
pub mod link;
pub mod proxy;
pub mod tcp;
pub mod tls;
pub mod tls_words;
pub mod websocket;

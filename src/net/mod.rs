//! Opening the transport: TCP, optional TLS, and the WebSocket upgrade.

pub mod tls;
pub mod websocket;

//! The transport layer: TCP with one deadline per attempt (`tcp`), TLS (`tls`), an HTTP
//! proxy (`proxy`), the byte stream every scheme writes on (`stream`), the WebSocket upgrade
//! and frames (`websocket`), and `link`, which opens the scheme a URL names and hands MQTT
//! bytes to the engine. One HTTP/1.x head reader (`head`) serves the upgrade, the proxy and
//! Cognito (`http`). To add a scheme: a file here that opens it, its arm in `link::open`, and
//! its name in `request::SCHEMES`.

pub mod error;
pub mod head;
#[cfg(feature = "aws-iot")]
pub mod http;
pub mod link;
pub mod proxy;
pub mod request;
pub mod stream;
pub mod tcp;
pub mod tls;
pub mod tls_words;
pub mod websocket;

//! # mqtt-pubsub
//!
//! The PubSub category of AWS Amplify for Rust programs without an async runtime: publish
//! and subscribe through named *providers*, each one MQTT 3.1.1 or MQTT 5 connection over
//! WebSocket or the plain stream, with plain threads, blocking calls and channels.
//!
//! ```no_run
//! use mqtt_pubsub::{MqttOverWsProvider, PubSub, PublishOptions, QoS};
//!
//! let pubsub = PubSub::new();
//! pubsub.add_provider(MqttOverWsProvider::builder("ws://localhost:9001/mqtt").build()?)?;
//! let sub = pubsub.subscribe(["sensors/+/temp", "alerts/#"])?;
//! pubsub.publish_with("alerts/fire", serde_json::json!({"msg": "Hello"}),
//!     PublishOptions::default().qos(QoS::AtLeastOnce))?;
//! for msg in &sub {
//!     println!("{} {} {}", msg.provider(), msg.topic(), msg.text()?);
//!     break;
//! }
//! # Ok::<(), mqtt_pubsub::Error>(())
//! ```
//!
//! ## In scope
//! - MQTT 3.1.1 and MQTT 5 client over `ws://` and `wss://`, or on the plain stream with
//!   `mqtt://` and `mqtts://` (rustls: webpki roots, the platform's store or your own
//!   configuration, extra CAs, client certificates from PEM or PKCS#12), QoS 0,
//!   1 and 2, retained messages, last will, persistent sessions, an HTTP proxy, failover
//!   URLs, and a durable outbox for QoS 1/2 publishes that outlives the process.
//! - MQTT 5: properties on publish, subscribe and disconnect, topic aliases, request and
//!   response, reason codes and strings, the server's limits from CONNACK.
//! - Several providers on one [`PubSub`]; publish and subscribe on all or one by name.
//! - [`Subscription`]s that are bounded channels and `Iterator`s, pollable without blocking.
//! - Blocking calls that return real outcomes: `subscribe` after SUBACK, QoS 1 `publish`
//!   after PUBACK, `add_provider` after CONNACK — each with a timeout.
//! - Automatic reconnect with backoff, resubscription, resending of unacknowledged messages,
//!   keep-alive that detects dead links, and observable [`ConnectionState`].
//! - AWS IoT Core (feature `aws-iot`, on by default): SigV4-presigned URLs re-signed on every
//!   reconnect, credentials static, from the environment, profile files, or Cognito.
//!
//! ## Out of scope
//! - A broker. Async APIs (use `rumqttc` with tokio). MQTT 5 enhanced authentication (AUTH
//!   exchanges) and shared-subscription load balancing beyond what the broker does.
//!
//! ## Threads
//! One I/O thread per provider, sleeping until its socket is ready, a command arrives, or a
//! keep-alive deadline falls due; callers hand it commands over a bounded channel.
//!
//! ## Counters
//! [`PubSub::stats`] gives a provider's [`ProviderStats`]: what it published, had
//! acknowledged, received, delivered and dropped, reconnects, bytes, and what it holds now.
//!
//! ## Cargo features
//! - `aws-iot` (default): `AwsIotProvider` and the `aws` module (aws-sigv4, sha2).
//! - `pkcs12`: client identities from PKCS#12 bundles (p12-keystore, pure Rust).
//! - `cli`: the `mqtt-pub` and `mqtt-sub` tools (clap; includes `pkcs12` and `aws-iot`).

#![deny(unsafe_code)]
#![deny(missing_docs)]
#![deny(missing_debug_implementations)]

#[cfg(feature = "aws-iot")]
pub mod aws;
mod connection;
mod deadline;
mod error;
mod message;
mod mqtt;
mod net;
mod options;
mod outbox;
mod provider;
mod pubsub;
mod state;
mod stats;
mod subscription;
pub mod topic;

/// The channel crate of [`Subscription::receiver`], re-exported so that `select!` and the
/// receiver's type come from the same version.
pub use crossbeam_channel;
pub use crossbeam_channel::{RecvError, RecvTimeoutError, TryRecvError};
pub use error::{ConnackCode, Error, Operation, Result};
pub use message::{Message, Payload, Topics};
pub use mqtt::reason::ReasonCode;
pub use mqtt::{MqttVersion, QoS};
pub use net::tls::TrustRoots;
pub use options::{
    DisconnectOptions, LastWill, OfflineQoS0, PublishOptions, ReconnectPolicy, RetainHandling,
    SubscribeOptions,
};
pub use outbox::OutboxSync;
#[cfg(feature = "aws-iot")]
pub use provider::{AwsIotProvider, AwsIotProviderBuilder, CustomAuthorizer};
pub use provider::{MqttOverWsProvider, MqttOverWsProviderBuilder, Provider};
pub use pubsub::{PubSub, PublishReceipt};
/// The TLS library whose [`ClientConfig`](rustls::ClientConfig) `tls_config(..)` takes.
pub use rustls;
pub use state::{Connack, ConnectionState, StateEvent};
pub use stats::ProviderStats;
pub use subscription::{Iter, Subscription, TryIter};

/// The sans-IO layers, exposed for the fuzz targets, the benchmark and the tests (feature
/// `__internals`). Not a stable API.
#[cfg(feature = "__internals")]
#[doc(hidden)]
pub mod internals {
    pub use crate::mqtt::{codec, packet, router, session};
    /// The WebSocket frame decoder (server to client).
    pub use crate::net::websocket::reader as websocket_reader;
    pub use crate::outbox::log as outbox_log;
    pub use crate::outbox::SYNCS as OUTBOX_SYNCS;
    pub use crate::outbox::{Outbox, OutboxOptions};
    /// The HTTP/1.x response reader (Cognito) and status-line parser (every reader).
    #[cfg(feature = "aws-iot")]
    pub mod http {
        pub use crate::net::head::{read_head, status_line, Head, StatusLine};
        pub use crate::net::http::{read_response, Response};
    }
}

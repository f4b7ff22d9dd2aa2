//! What the engine needs from a provider, owned by the engine: how to open a connection
//! ([`Opener`]), the limits on what is sent ([`Limits`]), and the whole of it
//! ([`ProviderSpec`]). Providers (`crate::provider`) implement and fill them in.

use crate::error::Result;
use crate::net::request::OpenRequest;
use crate::options::ConnectionOptions;

/// Opens a connection: gives a fresh request per attempt (AWS IoT re-signs each time).
pub(crate) trait Opener: Send + 'static {
    /// The URLs (by index) one connect tries, in order, until one connects.
    fn plan(&mut self) -> Vec<usize> {
        vec![0]
    }

    /// A request for one attempt on URL `url` of [`plan`](Self::plan); whatever it fetches
    /// (credentials) finishes before `deadline`, the attempt's connect deadline.
    fn open_request(&mut self, url: usize, deadline: std::time::Instant) -> Result<OpenRequest>;

    /// Adds what this provider knows about an error (e.g. what an AWS 403 means).
    fn explain(&self, err: crate::error::Error) -> crate::error::Error {
        err
    }
}

/// Limits a provider puts on what is sent, checked before anything is queued.
#[derive(Debug, Clone)]
pub(crate) struct Limits {
    pub max_topic_len: usize,
    pub max_topic_slashes: Option<usize>,
    pub max_payload: usize,
    pub qos2: bool,
    pub max_filters_per_subscribe: usize,
    pub max_client_id: Option<usize>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_topic_len: crate::topic::MAX_TOPIC_LEN,
            max_topic_slashes: None,
            // The largest MQTT remaining length, less the topic and header.
            max_payload: 268_435_455 - 65_537,
            qos2: true,
            max_filters_per_subscribe: 64,
            max_client_id: None,
        }
    }
}

/// Everything the connection engine needs from a provider.
pub struct ProviderSpec {
    pub(crate) name: String,
    pub(crate) options: ConnectionOptions,
    pub(crate) opener: Box<dyn Opener>,
    pub(crate) limits: Limits,
    /// The broker as a durable outbox records it (its first URL, without credentials).
    pub(crate) binding_url: String,
}

impl std::fmt::Debug for ProviderSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProviderSpec")
            .field("name", &self.name)
            .field("options", &self.options)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

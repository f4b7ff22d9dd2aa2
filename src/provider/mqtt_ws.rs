//! A provider for any MQTT-over-WebSocket broker.

use std::sync::Arc;

use rustls::ClientConfig;
use url::Url;

use super::{sealed, Limits, Opener, Provider, ProviderSpec};
use crate::error::Result;
use crate::net::tls;
use crate::net::websocket::{parse_url, OpenRequest};
use crate::options::{connection_builder_methods, ConnectionOptions};

/// Any MQTT 3.1.1 broker reachable over `ws://` or `wss://` (mosquitto, NATS, aedes, EMQX,
/// HiveMQ, RabbitMQ, rumqttd, ...), or without WebSocket over `mqtt://` (TCP, port 1883 by
/// default) and `mqtts://` (TLS, 8883): the name is Amplify's, the schemes are all four.
/// Default name: `"MqttOverWSProvider"` (Amplify's).
///
/// ```no_run
/// use mqtt_pubsub::{MqttOverWsProvider, PubSub};
/// let pubsub = PubSub::new();
/// pubsub.add_provider(
///     MqttOverWsProvider::builder("wss://broker.example:8884/mqtt").client_id("sensor-7").build()?,
/// )?;
/// # Ok::<(), mqtt_pubsub::Error>(())
/// ```
pub struct MqttOverWsProvider {
    name: String,
    url: Url,
    options: ConnectionOptions,
    tls: Arc<ClientConfig>,
}

impl std::fmt::Debug for MqttOverWsProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MqttOverWsProvider")
            .field("name", &self.name)
            .field("url", &crate::net::websocket::redact(&self.url))
            .field("options", &self.options)
            .finish()
    }
}

impl MqttOverWsProvider {
    /// The default provider name.
    pub const DEFAULT_NAME: &'static str = "MqttOverWSProvider";

    /// Starts building a provider for `url`: `ws://host:port/path`, `wss://...`,
    /// `mqtt://host[:1883]` or `mqtts://host[:8883]`.
    pub fn builder(url: impl Into<String>) -> MqttOverWsProviderBuilder {
        MqttOverWsProviderBuilder {
            name: Self::DEFAULT_NAME.to_string(),
            url: url.into(),
            options: ConnectionOptions::default(),
        }
    }
}

impl Provider for MqttOverWsProvider {
    fn name(&self) -> &str {
        &self.name
    }
}

struct StaticUrl {
    req: OpenRequest,
}

impl Opener for StaticUrl {
    fn open_request(&mut self, _deadline: std::time::Instant) -> Result<OpenRequest> {
        Ok(self.req.clone())
    }
}

impl sealed::Sealed for MqttOverWsProvider {
    fn into_spec(self) -> ProviderSpec {
        let req = OpenRequest {
            url: self.url,
            headers: self.options.headers.clone(),
            tls: self.tls,
        };
        ProviderSpec {
            name: self.name,
            options: self.options,
            opener: Box::new(StaticUrl { req }),
            limits: Limits::default(),
        }
    }
}

/// Builds a [`MqttOverWsProvider`]; every setting has a documented default.
pub struct MqttOverWsProviderBuilder {
    name: String,
    url: String,
    options: ConnectionOptions,
}

impl std::fmt::Debug for MqttOverWsProviderBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may hold a password or a `?token=`: printed without them.
        f.debug_struct("MqttOverWsProviderBuilder")
            .field("name", &self.name)
            .field("url", &crate::net::websocket::redact_text(&self.url))
            .field("options", &self.options)
            .finish()
    }
}

impl MqttOverWsProviderBuilder {
    connection_builder_methods!();

    /// Checks the URL and TLS material and makes the provider (nothing connects yet).
    pub fn build(self) -> Result<MqttOverWsProvider> {
        self.options.validate()?;
        let url = parse_url(&self.url)?;
        let tls = tls::client_config(&self.options.ca_pems, self.options.client_cert.as_ref())?;
        Ok(MqttOverWsProvider {
            name: self.name,
            url,
            options: self.options,
            tls,
        })
    }
}

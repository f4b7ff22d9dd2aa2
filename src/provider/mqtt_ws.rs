//! A provider for any MQTT broker over WebSocket or the raw stream.

use url::Url;

use super::{sealed, Limits, Opener, Provider, ProviderSpec};
use crate::error::{Error, Result};
use crate::net::proxy::ProxySetting;
use crate::net::request::{parse_url, OpenRequest};
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
///
/// A cluster behind several addresses is one provider with
/// [`fallback_urls`](MqttOverWsProviderBuilder::fallback_urls): every connect and reconnect
/// tries the URLs in order until one answers.
pub struct MqttOverWsProvider {
    name: String,
    urls: Vec<Url>,
    shuffle: bool,
    options: ConnectionOptions,
    tls: crate::net::tls::Tls,
    proxy: ProxySetting,
}

impl std::fmt::Debug for MqttOverWsProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MqttOverWsProvider")
            .field("name", &self.name)
            .field(
                "urls",
                &self
                    .urls
                    .iter()
                    .map(crate::net::request::redact)
                    .collect::<Vec<_>>(),
            )
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
            urls: vec![url.into()],
            shuffle: false,
            options: ConnectionOptions::default(),
        }
    }
}

impl Provider for MqttOverWsProvider {
    fn name(&self) -> &str {
        &self.name
    }
}

struct StaticUrls {
    reqs: Vec<OpenRequest>,
    shuffle: bool,
    seed: u64,
}

impl Opener for StaticUrls {
    fn plan(&mut self) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.reqs.len()).collect();
        if self.shuffle {
            // Fisher-Yates with xorshift: spreading clients over nodes needs no better dice.
            for i in (1..order.len()).rev() {
                self.seed ^= self.seed << 13;
                self.seed ^= self.seed >> 7;
                self.seed ^= self.seed << 17;
                order.swap(i, (self.seed % (i as u64 + 1)) as usize);
            }
        }
        order
    }

    fn open_request(&mut self, url: usize, _deadline: std::time::Instant) -> Result<OpenRequest> {
        Ok(self.reqs[url].clone())
    }
}

impl sealed::Sealed for MqttOverWsProvider {
    fn into_spec(self) -> ProviderSpec {
        // A URL's query values (a signed URL's token) are redacted wherever a server echoes
        // them; its credentials were taken out by `build()` and registered there.
        for u in &self.urls {
            for (_, v) in u.query_pairs().filter(|(_, v)| v.len() >= 8) {
                crate::error::register_secret(&v);
            }
        }
        // The outbox is bound to the set of brokers, not to the order of the failover list.
        let mut shown: Vec<String> = self.urls.iter().map(crate::net::request::redact).collect();
        shown.sort();
        shown.dedup();
        let binding_url = shown.join(" ");
        let reqs = self
            .urls
            .into_iter()
            .map(|url| OpenRequest {
                // Checked by build().
                proxy: self.proxy.for_url(&url).unwrap_or(None),
                url,
                headers: self.options.headers.clone(),
                tls: self.tls.clone(),
            })
            .collect();
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
            | 1;
        ProviderSpec {
            name: self.name,
            options: self.options,
            opener: Box::new(StaticUrls {
                reqs,
                shuffle: self.shuffle,
                seed,
            }),
            limits: Limits::default(),
            binding_url,
        }
    }
}

/// Builds a [`MqttOverWsProvider`]; every setting has a documented default.
///
/// ```
/// use std::time::Duration;
/// use mqtt_pubsub::{MqttOverWsProvider, MqttVersion};
/// let provider = MqttOverWsProvider::builder("wss://broker.example.com/mqtt")
///     .name("cloud")
///     .client_id("sensor-17")
///     .username_password("user", "secret")
///     .keep_alive(Duration::from_secs(30))
///     .mqtt_version(MqttVersion::V5)
///     .build()?;
/// # Ok::<(), mqtt_pubsub::Error>(())
/// ```
#[must_use = "a builder does nothing until it is used"]
pub struct MqttOverWsProviderBuilder {
    name: String,
    urls: Vec<String>,
    shuffle: bool,
    options: ConnectionOptions,
}

impl std::fmt::Debug for MqttOverWsProviderBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may hold a password or a `?token=`: printed without them.
        f.debug_struct("MqttOverWsProviderBuilder")
            .field("name", &self.name)
            .field(
                "urls",
                &self
                    .urls
                    .iter()
                    .map(|u| crate::net::request::redact_text(u))
                    .collect::<Vec<_>>(),
            )
            .field("options", &self.options)
            .finish()
    }
}

impl MqttOverWsProviderBuilder {
    connection_builder_methods!();

    /// More URLs of the same broker cluster, after the builder's: the first connect and every
    /// reconnect try them in order until one connects (each attempt within its own
    /// `connect_timeout`); the `Connected` state event names the one in use. Every scheme
    /// may be mixed; the other settings (credentials, client id, TLS, proxy) apply to all.
    /// The session (persistent or not) is the cluster's to keep: NATS, EMQX, HiveMQ and
    /// VerneMQ share it between nodes.
    pub fn fallback_urls<I, S>(mut self, urls: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.urls.extend(urls.into_iter().map(Into::into));
        self
    }

    /// Try the URLs in a fresh random order on every connect instead of in the order given
    /// (spreads many clients over a cluster's nodes). Default: in order.
    pub fn shuffle_urls(mut self, shuffle: bool) -> Self {
        self.shuffle = shuffle;
        self
    }

    /// Checks the URLs and TLS material and makes the provider (nothing connects yet).
    pub fn build(self) -> Result<MqttOverWsProvider> {
        self.options.validate()?;
        if self.urls.len() > 64 {
            return Err(Error::InvalidConfig(format!(
                "{} URLs for one provider; at most 64",
                self.urls.len()
            )));
        }
        let mut urls = self
            .urls
            .iter()
            .map(|u| parse_url(u))
            .collect::<Result<Vec<_>>>()?;
        // `mqtt://user:password@host`: the MQTT credentials, as mosquitto_pub -L takes them.
        let mut options = self.options;
        if let Some((user, password)) = crate::net::request::take_credentials(&mut urls)? {
            let same =
                options.username.as_deref() == Some(user.as_str()) && options.password == password;
            if options.username.is_some() && !same {
                return Err(Error::InvalidConfig(
                    "a user name and password in the URL and other ones from \
                     username_password/username: give one"
                        .into(),
                ));
            }
            options.username = Some(user);
            options.password = password;
            // Checked (and the password registered for redaction) as if given by the
            // builder's methods.
            options.validate()?;
        }
        let tls = options
            .tls_settings(options.client_cert.clone(), "client_cert_pem")?
            .for_connection()?;
        let proxy = options.proxy_setting()?;
        for url in &urls {
            proxy.for_url(url)?;
        }
        Ok(MqttOverWsProvider {
            name: self.name,
            urls,
            shuffle: self.shuffle,
            options,
            tls,
            proxy,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_tried_in_order_or_shuffled() {
        let b = MqttOverWsProvider::builder("mqtt://a")
            .fallback_urls(["ws://b/mqtt", "mqtts://c"])
            .no_proxy();
        let mut spec = sealed::Sealed::into_spec(b.build().unwrap());
        assert_eq!(spec.opener.plan(), vec![0, 1, 2]);
        let at = std::time::Instant::now() + std::time::Duration::from_secs(1);
        let hosts: Vec<String> = (0..3)
            .map(|i| spec.opener.open_request(i, at).unwrap().url.to_string())
            .collect();
        assert_eq!(hosts, ["mqtt://a", "ws://b/mqtt", "mqtts://c"]);
        let b = MqttOverWsProvider::builder("mqtt://a")
            .fallback_urls(["mqtt://b", "mqtt://c", "mqtt://d"])
            .shuffle_urls(true);
        let mut spec = sealed::Sealed::into_spec(b.build().unwrap());
        let plans: Vec<Vec<usize>> = (0..20).map(|_| spec.opener.plan()).collect();
        for p in &plans {
            let mut sorted = p.clone();
            sorted.sort();
            assert_eq!(sorted, vec![0, 1, 2, 3]);
        }
        assert!(plans.iter().any(|p| p != &plans[0]), "{plans:?}");
        assert!(MqttOverWsProvider::builder("mqtt://a")
            .fallback_urls(["ftp://b"])
            .build()
            .is_err());
    }

    #[test]
    fn a_bad_proxy_is_a_build_error() {
        let e = MqttOverWsProvider::builder("mqtt://a")
            .proxy("socks5://p:1080")
            .build()
            .unwrap_err();
        assert!(e.to_string().contains("only http://"), "{e}");
    }
}

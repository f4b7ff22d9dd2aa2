//! AWS IoT Core over WebSocket: a SigV4-presigned URL, signed afresh on every attempt.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls::ClientConfig;

use super::{sealed, Limits, Opener, Provider, ProviderSpec};
use crate::aws::{presign_url, CredentialsProvider, DefaultCredentials, PresignParams};
use crate::error::{Error, Result};
use crate::net::proxy::ProxySetting;
use crate::net::request::{parse_url, OpenRequest};
use crate::options::{connection_builder_methods, ConnectionOptions};

/// Connects with an AWS IoT custom authorizer instead of SigV4: the authorizer's name, the
/// token under its token key name, and the token signature (when signing is enabled), sent
/// as upgrade headers or query parameters over `wss://`, or in the MQTT username over
/// `mqtts://` ([`over_mqtt`](Self::over_mqtt)).
///
/// ```
/// use mqtt_pubsub::{AwsIotProvider, CustomAuthorizer};
/// let provider = AwsIotProvider::builder("abc123-ats.iot.eu-west-1.amazonaws.com")
///     .custom_authorizer(
///         CustomAuthorizer::new("my-authorizer")
///             .token("token", "eyJhbGciOi...")
///             .signature("c2lnbmF0dXJl...")
///             .over_mqtt(true), // MQTT on 443 with ALPN "mqtt", no WebSocket
///     )
///     .username_password("device-17", "passed to the authorizer")
///     .build()?;
/// # let _ = provider;
/// # Ok::<(), mqtt_pubsub::Error>(())
/// ```
#[derive(Clone)]
pub struct CustomAuthorizer {
    name: String,
    token: Option<(String, String)>,
    signature: Option<String>,
    in_query: bool,
    mqtt: bool,
}

impl std::fmt::Debug for CustomAuthorizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CustomAuthorizer")
            .field("name", &self.name)
            .field("token_key_name", &self.token.as_ref().map(|t| &t.0))
            .field("in_query", &self.in_query)
            .field("over_mqtt", &self.mqtt)
            .finish_non_exhaustive()
    }
}

impl CustomAuthorizer {
    /// The authorizer named `name`.
    pub fn new(name: impl Into<String>) -> CustomAuthorizer {
        CustomAuthorizer {
            name: name.into(),
            token: None,
            signature: None,
            in_query: false,
            mqtt: false,
        }
    }

    /// The token, sent under the authorizer's token key name.
    pub fn token(mut self, token_key_name: impl Into<String>, token: impl Into<String>) -> Self {
        let token = token.into();
        crate::error::register_secret(&token);
        self.token = Some((token_key_name.into(), token));
        self
    }

    /// The token signature (base64), when the authorizer has signing enabled.
    pub fn signature(mut self, signature: impl Into<String>) -> Self {
        let signature = signature.into();
        crate::error::register_secret(&signature);
        self.signature = Some(signature);
        self
    }

    /// Send as query parameters instead of headers (over `wss://`).
    pub fn in_query(mut self, yes: bool) -> Self {
        self.in_query = yes;
        self
    }

    /// Connect with MQTT over TLS instead of WebSocket, as AWS IoT allows for custom
    /// authentication: port 443 offering the ALPN protocol `mqtt` (or the port given with
    /// `port(..)`, 8883 without ALPN), the authorizer's name, token and signature in the
    /// MQTT username's query string
    /// (`username?x-amz-customauthorizer-name=…&x-amz-customauthorizer-signature=…&token-key=…`,
    /// each value percent-encoded), the password from `username_password(..)` passed as it
    /// is.
    pub fn over_mqtt(mut self, yes: bool) -> Self {
        self.mqtt = yes;
        self
    }

    /// The authorizer's values as a query string (percent-encoded): in the URL over
    /// `wss://` with `in_query`, in the MQTT username over MQTT.
    fn query(&self) -> String {
        self.pairs()
            .iter()
            .map(|(k, v)| {
                format!(
                    "{}={}",
                    crate::aws::uri_encode(k),
                    crate::aws::uri_encode(v)
                )
            })
            .collect::<Vec<_>>()
            .join("&")
    }

    fn pairs(&self) -> Vec<(String, String)> {
        let mut v = vec![("x-amz-customauthorizer-name".to_string(), self.name.clone())];
        if let Some(sig) = &self.signature {
            v.push(("x-amz-customauthorizer-signature".to_string(), sig.clone()));
        }
        if let Some((k, t)) = &self.token {
            v.push((k.clone(), t.clone()));
        }
        v
    }
}

#[derive(Clone)]
enum Auth {
    SigV4 {
        credentials: Arc<dyn CredentialsProvider>,
        expires: Option<Duration>,
    },
    Custom(CustomAuthorizer),
    /// MQTT over TLS with an X.509 device certificate (the TLS configuration carries it).
    Certificate,
}

/// The ALPN protocol AWS IoT expects for MQTT with a device certificate on port 443.
pub(crate) const AWS_IOT_ALPN: &[u8] = b"x-amzn-mqtt-ca";
/// The ALPN protocol AWS IoT expects for MQTT with a custom authorizer on port 443.
pub(crate) const AWS_IOT_CUSTOM_AUTH_ALPN: &[u8] = b"mqtt";

impl Auth {
    /// MQTT over TLS rather than WebSocket.
    fn raw_mqtt(&self) -> bool {
        matches!(
            self,
            Auth::Certificate | Auth::Custom(CustomAuthorizer { mqtt: true, .. })
        )
    }
}

/// AWS IoT Core (default name `"AWSIoTProvider"`, Amplify's).
///
/// ```no_run
/// use mqtt_pubsub::{AwsIotProvider, PubSub};
/// use mqtt_pubsub::aws::CognitoCredentials;
/// let pubsub = PubSub::new();
/// pubsub.add_provider(
///     AwsIotProvider::builder("abc123-ats.iot.eu-west-1.amazonaws.com")
///         .credentials(CognitoCredentials::unauthenticated("eu-west-1:1234-abcd"))
///         .build()?,
/// )?;
/// # Ok::<(), mqtt_pubsub::Error>(())
/// ```
///
/// Devices that hold an X.509 certificate registered with AWS IoT connect with it instead of
/// SigV4: MQTT over mutual TLS to port 8883, or to 443 with the ALPN protocol
/// `x-amzn-mqtt-ca` where only 443 is open:
///
/// ```no_run
/// use mqtt_pubsub::{AwsIotProvider, PubSub};
/// let pubsub = PubSub::new();
/// pubsub.add_provider(
///     AwsIotProvider::builder("abc123-ats.iot.eu-west-1.amazonaws.com")
///         .client_certificate(std::fs::read("device.pem.crt")?, std::fs::read("private.pem.key")?)
///         .port(443)
///         .client_id("sensor-7")
///         .build()?,
/// )?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// Limits of AWS IoT are checked before anything is sent, in every mode: topics at most 256 bytes and 7
/// slashes, payloads at most 128 KiB, client ids at most 128 bytes, no QoS 2, keep-alive
/// 30–1200 s; subscribe calls with more than 8 filters are split into several SUBSCRIBEs.
pub struct AwsIotProvider {
    name: String,
    host: String,
    port: u16,
    path: String,
    region: String,
    auth: Auth,
    options: ConnectionOptions,
    tls: Arc<ClientConfig>,
    proxy: ProxySetting,
}

impl std::fmt::Debug for AwsIotProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsIotProvider")
            .field("name", &self.name)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("region", &self.region)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl AwsIotProvider {
    /// The default provider name.
    pub const DEFAULT_NAME: &'static str = "AWSIoTProvider";

    /// Starts building a provider for an endpoint host (`abc123-ats.iot.eu-west-1.amazonaws.com`)
    /// or a full `wss://host[:port]/mqtt` URL.
    pub fn builder(endpoint: impl Into<String>) -> AwsIotProviderBuilder {
        AwsIotProviderBuilder {
            name: Self::DEFAULT_NAME.to_string(),
            endpoint: endpoint.into(),
            region: None,
            auth: None,
            certificate: None,
            certificate_in_tls_config: false,
            port: None,
            alpn: None,
            expires: None,
            options: ConnectionOptions {
                // AWS IoT allows 30..=1200 s; Amplify uses 60.
                keep_alive: Duration::from_secs(60),
                ..ConnectionOptions::default()
            },
        }
    }

    /// The region it signs for (empty in certificate mode when none was given).
    pub fn region(&self) -> &str {
        &self.region
    }
}

impl Provider for AwsIotProvider {
    fn name(&self) -> &str {
        &self.name
    }
}

/// The region of `*.iot.<region>.amazonaws.com[.cn]`.
pub(crate) fn region_from_host(host: &str) -> Option<String> {
    let mut parts = host.split('.');
    while let Some(p) = parts.next() {
        if p == "iot" {
            let region = parts.next()?;
            let rest: Vec<&str> = parts.collect();
            if rest.first() == Some(&"amazonaws") && !region.is_empty() {
                return Some(region.to_string());
            }
            return None;
        }
    }
    None
}

struct AwsOpener {
    host: String,
    port: u16,
    path: String,
    region: String,
    auth: Auth,
    headers: Vec<(String, String)>,
    tls: Arc<ClientConfig>,
    proxy: ProxySetting,
}

impl Opener for AwsOpener {
    fn open_request(&mut self, _url: usize, deadline: std::time::Instant) -> Result<OpenRequest> {
        let mut headers = self.headers.clone();
        let url = match &self.auth {
            // Over MQTT the authorizer's values are in the CONNECT username (see `build`).
            auth if auth.raw_mqtt() => {
                headers.clear();
                format!("mqtts://{}:{}", self.host, self.port)
            }
            Auth::SigV4 {
                credentials,
                expires,
            } => {
                let creds = credentials.credentials_before(deadline)?;
                let now = SystemTime::now();
                if creds.is_expired(now) {
                    return Err(Error::Credentials(format!(
                        "the credentials of access key {} have expired; the credentials source must give fresh ones",
                        creds.access_key_id()
                    )));
                }
                let params = PresignParams {
                    host: &self.host,
                    port: self.port,
                    path: &self.path,
                    region: &self.region,
                    time: now,
                    expires: *expires,
                };
                presign_url(&params, &creds)
            }
            Auth::Certificate => unreachable!("raw MQTT, above"),
            Auth::Custom(a) => {
                let authority = if self.port == 443 {
                    self.host.clone()
                } else {
                    format!("{}:{}", self.host, self.port)
                };
                let mut url = format!("wss://{authority}{}", self.path);
                if a.in_query {
                    url = format!("{url}?{}", a.query());
                } else {
                    headers.extend(a.pairs());
                }
                url
            }
        };
        let url = url::Url::parse(&url).map_err(|e| Error::InvalidUrl(e.to_string()))?;
        Ok(OpenRequest {
            proxy: self.proxy.for_url(&url)?,
            url,
            headers,
            tls: crate::net::tls::Tls::Own(self.tls.clone()),
        })
    }

    fn explain(&self, err: Error) -> Error {
        // The device-certificate checklist is for a handshake in which the server refused
        // this client's certificate, nothing else (a server certificate refused here, a
        // server that does not speak TLS have their own words).
        let device_certificate = matches!(self.auth, Auth::Certificate)
            && crate::net::tls::is_client_certificate_refused(&err);
        match err {
            Error::Tls { message, source } if device_certificate => Error::Tls {
                message: format!(
                    "{message} (AWS IoT device certificate: check that the endpoint is your \
                     account's *-ats endpoint, that the certificate is registered and ACTIVE, \
                     and that its private key is the one given)"
                ),
                source,
            },
            Error::HandshakeRejected { status: status @ (401 | 403), hint, target } => Error::HandshakeRejected {
                status,
                target,
                hint: format!(
                    "AWS IoT refused the {what}. Check: the IoT policy attached to the identity \
                     (for Cognito: AttachPolicy on the identity id) allows iot:Connect for this client id \
                     and iot:Publish/iot:Subscribe/iot:Receive for the topics; the IAM role of the identity \
                     pool allows iot:* actions; the region ({}) matches the endpoint; the system clock is \
                     right (signatures are valid for 5 minutes){}",
                    self.region,
                    if hint.is_empty() { String::new() } else { format!("; {hint}") },
                    what = if matches!(self.auth, Auth::Custom(_)) { "custom authorizer credentials" } else { "signature or the policy" },
                ),
            },
            other => other,
        }
    }
}

impl sealed::Sealed for AwsIotProvider {
    fn into_spec(self) -> ProviderSpec {
        let scheme = if self.auth.raw_mqtt() { "mqtts" } else { "wss" };
        let binding_url = format!("{scheme}://{}:{}{}", self.host, self.port, self.path);
        let opener = AwsOpener {
            host: self.host,
            port: self.port,
            path: self.path,
            region: self.region,
            auth: self.auth,
            headers: self.options.headers.clone(),
            tls: self.tls,
            proxy: self.proxy,
        };
        ProviderSpec {
            name: self.name,
            options: self.options,
            opener: Box::new(opener),
            limits: Limits {
                max_topic_len: 256,
                max_topic_slashes: Some(7),
                max_payload: 128 * 1024,
                qos2: false,
                max_filters_per_subscribe: 8,
                max_client_id: Some(128),
            },
            binding_url,
        }
    }
}

/// Builds an [`AwsIotProvider`].
///
/// ```
/// use mqtt_pubsub::aws::StaticCredentials;
/// use mqtt_pubsub::AwsIotProvider;
/// let provider = AwsIotProvider::builder("abc123-ats.iot.us-east-1.amazonaws.com")
///     .region("us-east-1")
///     .credentials(StaticCredentials::new("AKIDEXAMPLE", "secret"))
///     .client_id("thing-1")
///     .build()?;
/// # Ok::<(), mqtt_pubsub::Error>(())
/// ```
#[must_use = "a builder does nothing until it is used"]
pub struct AwsIotProviderBuilder {
    name: String,
    endpoint: String,
    region: Option<String>,
    auth: Option<Auth>,
    certificate: Option<(Vec<u8>, Vec<u8>)>,
    certificate_in_tls_config: bool,
    port: Option<u16>,
    alpn: Option<bool>,
    expires: Option<Duration>,
    options: ConnectionOptions,
}

impl std::fmt::Debug for AwsIotProviderBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsIotProviderBuilder")
            .field("name", &self.name)
            .field(
                "endpoint",
                &if self.endpoint.contains("://") {
                    crate::net::request::redact_text(&self.endpoint)
                } else {
                    self.endpoint.clone()
                },
            )
            .field("region", &self.region)
            .finish_non_exhaustive()
    }
}

impl AwsIotProviderBuilder {
    connection_builder_methods!();

    /// The region to sign for (default: parsed from `*.iot.<region>.amazonaws.com`).
    pub fn region(mut self, region: impl Into<String>) -> Self {
        self.region = Some(region.into());
        self
    }

    /// Where credentials come from (default: [`DefaultCredentials`]: environment, then
    /// profile files). Asked on every connect and reconnect.
    pub fn credentials(mut self, provider: impl CredentialsProvider) -> Self {
        self.auth = Some(Auth::SigV4 {
            credentials: Arc::new(provider),
            expires: None,
        });
        self
    }

    /// Adds `X-Amz-Expires` to the signed URL (default: none).
    pub fn expires(mut self, expires: Duration) -> Self {
        self.expires = Some(expires);
        self
    }

    /// Authenticate with a custom authorizer instead of SigV4.
    pub fn custom_authorizer(mut self, authorizer: CustomAuthorizer) -> Self {
        self.auth = Some(Auth::Custom(authorizer));
        self
    }

    /// Connect with this X.509 device certificate (chain PEM) and its private key (PEM)
    /// instead of SigV4: MQTT over mutual TLS to the endpoint's port 8883, or 443 with
    /// [`port(443)`](Self::port) (ALPN `x-amzn-mqtt-ca`). No credentials source, custom
    /// authorizer or region is used in this mode; configuring one as well is a `build()`
    /// error.
    pub fn client_certificate(
        mut self,
        cert_chain: impl Into<Vec<u8>>,
        private_key: impl Into<Vec<u8>>,
    ) -> Self {
        self.certificate = Some((cert_chain.into(), private_key.into()));
        self
    }

    /// Connect in device-certificate mode (as [`client_certificate`](Self::client_certificate))
    /// with the certificate and key already inside the [`tls_config`](Self::tls_config) given:
    /// for a key that never leaves an HSM, a TPM or a PKCS#11 token, behind rustls's
    /// `ResolvesClientCert`. The configuration's roots must trust AWS IoT's (Amazon's root
    /// CAs); its ALPN protocols are replaced by `x-amzn-mqtt-ca` on port 443.
    ///
    /// ```no_run
    /// # fn hsm_config() -> std::sync::Arc<mqtt_pubsub::rustls::ClientConfig> { unimplemented!() }
    /// use mqtt_pubsub::AwsIotProvider;
    /// let provider = AwsIotProvider::builder("abc123-ats.iot.eu-west-1.amazonaws.com")
    ///     .tls_config(hsm_config())
    ///     .client_certificate_in_tls_config()
    ///     .build()?;
    /// # let _ = provider;
    /// # Ok::<(), mqtt_pubsub::Error>(())
    /// ```
    pub fn client_certificate_in_tls_config(mut self) -> Self {
        self.certificate_in_tls_config = true;
        self
    }

    /// The port (default: 443 for SigV4 and custom authorizers over `wss://`; 8883 with a
    /// device certificate, or 443 where only 443 is open).
    pub fn port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }

    /// Whether a certificate-mode connection offers the ALPN protocol `x-amzn-mqtt-ca`
    /// (default: when the port is 443, which is where AWS IoT needs it to tell MQTT from
    /// HTTPS). For a gateway on another port that forwards to AWS IoT's 443.
    pub fn alpn(mut self, offer: bool) -> Self {
        self.alpn = Some(offer);
        self
    }

    /// For a custom authorizer over MQTT: checks what AWS would refuse and puts the
    /// authorizer's query string into the MQTT username. `Ok(true)` in that mode.
    fn custom_over_mqtt(&mut self) -> Result<bool> {
        let Some(Auth::Custom(a)) = &self.auth else {
            return Ok(false);
        };
        if !a.mqtt {
            return Ok(false);
        }
        if a.in_query {
            return Err(Error::InvalidConfig(
                "in_query() is for wss://; over MQTT the authorizer's values go in the \
                 username"
                    .into(),
            ));
        }
        if !self.options.headers.is_empty() {
            return Err(Error::InvalidConfig(
                "headers are for wss://; over MQTT there is no HTTP request to carry them".into(),
            ));
        }
        let base = self.options.username.take().unwrap_or_default();
        if base.contains('?') {
            return Err(Error::InvalidConfig(
                "over MQTT the username's query string is the authorizer's: the username \
                 itself may not contain '?'"
                    .into(),
            ));
        }
        let username = format!("{base}?{}", a.query());
        if username.len() > u16::MAX as usize {
            return Err(Error::InvalidConfig(
                "the MQTT username with the authorizer's token and signature is longer than \
                 65535 bytes"
                    .into(),
            ));
        }
        self.options.username = Some(username);
        Ok(true)
    }

    /// Checks everything and makes the provider (nothing connects yet).
    pub fn build(mut self) -> Result<AwsIotProvider> {
        self.options.validate()?;
        if self.certificate_in_tls_config && self.options.tls_config.is_none() {
            return Err(Error::InvalidConfig(
                "client_certificate_in_tls_config() needs the configuration: call \
                 tls_config(..) with a rustls ClientConfig that holds the client certificate"
                    .into(),
            ));
        }
        if self.certificate.is_some() && self.options.client_cert.is_some() {
            return Err(Error::InvalidConfig(
                "both client_certificate and client_cert_pem are given: they are the same \
                 thing here, give one"
                    .into(),
            ));
        }
        if self.certificate_in_tls_config {
            let has_certs = self
                .options
                .tls_config
                .as_ref()
                .is_some_and(|c| c.client_auth_cert_resolver.has_certs());
            if !has_certs {
                return Err(Error::InvalidConfig(
                    "client_certificate_in_tls_config(): the tls_config has no client \
                     certificate (built with_no_client_auth?)"
                        .into(),
                ));
            }
        }
        // client_cert_pem is client_certificate by another name (the shared builder's).
        let certificate_mode = self.certificate.is_some()
            || self.options.client_cert.is_some()
            || self.options.client_p12.is_some()
            || self.certificate_in_tls_config;
        let custom_mqtt = self.custom_over_mqtt()?;
        if certificate_mode {
            if self.auth.is_some() {
                return Err(Error::InvalidConfig(
                    "both a device certificate and a credentials source or custom authorizer \
                     are configured: AWS IoT takes one of them per connection"
                        .into(),
                ));
            }
            if self.expires.is_some() {
                return Err(Error::InvalidConfig(
                    "expires() is for SigV4 URLs; a device certificate does not sign".into(),
                ));
            }
        } else if self.alpn.is_some() && !custom_mqtt {
            return Err(Error::InvalidConfig(
                "alpn() applies to MQTT connections only (device certificate, or a custom \
                 authorizer over_mqtt)"
                    .into(),
            ));
        }
        let raw_mqtt = certificate_mode || custom_mqtt;
        let scheme = if raw_mqtt { "mqtts" } else { "wss" };
        let url = if self.endpoint.contains("://") {
            let u = parse_url(&self.endpoint)?;
            if u.scheme() != scheme {
                return Err(Error::InvalidUrl(if raw_mqtt {
                    "AWS IoT over MQTT (a device certificate, or a custom authorizer over_mqtt) \
                     needs mqtts:// (or just the endpoint host)"
                        .into()
                } else {
                    "AWS IoT needs wss:// (or just the endpoint host)".into()
                }));
            }
            u
        } else {
            parse_url(&format!(
                "{scheme}://{}/mqtt",
                self.endpoint.trim_end_matches('/')
            ))?
        };
        let host = url.host_str().unwrap_or_default().to_string();
        let default_port = if certificate_mode { 8883 } else { 443 };
        let port = self.port.or(url.port()).unwrap_or(default_port);
        let path = if url.path().is_empty() {
            "/mqtt".to_string()
        } else {
            url.path().to_string()
        };
        let region = match self.region.or_else(|| region_from_host(&host)) {
            Some(r) => r,
            None if raw_mqtt => String::new(),
            None => {
                return Err(Error::InvalidConfig(format!(
                    "no region given and none in the endpoint {host:?} (expected *.iot.<region>.amazonaws.com)"
                )))
            }
        };
        let ka = self.options.keep_alive.as_secs();
        if !(30..=1200).contains(&ka) {
            return Err(Error::InvalidConfig(format!(
                "AWS IoT needs a keep-alive of 30 to 1200 s, not {ka} s"
            )));
        }
        if let Some(id) = &self.options.client_id {
            if id.len() > 128 {
                return Err(Error::InvalidConfig(format!(
                    "AWS IoT client ids are at most 128 bytes, not {}",
                    id.len()
                )));
            }
        }
        let mut client_cert = self.options.client_cert.clone();
        let client_cert_method = if self.certificate.is_some() {
            "client_certificate"
        } else {
            "client_cert_pem"
        };
        if let Some((cert, key)) = self.certificate {
            if cert.iter().all(u8::is_ascii_whitespace) {
                return Err(Error::InvalidConfig(
                    "client_certificate: the certificate PEM is empty".into(),
                ));
            }
            if key.iter().all(u8::is_ascii_whitespace) {
                return Err(Error::InvalidConfig(
                    "client_certificate: a certificate without its private key".into(),
                ));
            }
            client_cert = Some((cert, key));
        }
        let auth = match self.auth {
            _ if certificate_mode => Auth::Certificate,
            Some(Auth::SigV4 { credentials, .. }) => Auth::SigV4 {
                credentials,
                expires: self.expires,
            },
            Some(custom) => custom,
            None => Auth::SigV4 {
                credentials: Arc::new(DefaultCredentials::new()),
                expires: self.expires,
            },
        };
        let offer_alpn = raw_mqtt && self.alpn.unwrap_or(port == 443);
        let alpn: &[&[u8]] = match (offer_alpn, certificate_mode) {
            (false, _) => &[],
            (true, true) => &[AWS_IOT_ALPN],
            (true, false) => &[AWS_IOT_CUSTOM_AUTH_ALPN],
        };
        let tls = self
            .options
            .tls_settings(client_cert, client_cert_method)?
            .client_config(alpn)?;
        let proxy = self.options.proxy_setting()?;
        Ok(AwsIotProvider {
            name: self.name,
            host,
            port,
            path,
            region,
            auth,
            options: self.options,
            tls,
            proxy,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aws::StaticCredentials;

    #[test]
    fn region_is_parsed_from_the_endpoint() {
        assert_eq!(
            region_from_host("abc123-ats.iot.eu-west-1.amazonaws.com").as_deref(),
            Some("eu-west-1")
        );
        assert_eq!(
            region_from_host("abc.iot.cn-north-1.amazonaws.com.cn").as_deref(),
            Some("cn-north-1")
        );
        assert_eq!(region_from_host("localhost"), None);
        assert_eq!(region_from_host("iot.example.com"), None);
    }

    #[test]
    fn endpoint_forms_and_ports() {
        let p = AwsIotProvider::builder("abc-ats.iot.us-east-1.amazonaws.com")
            .build()
            .unwrap();
        assert_eq!(
            (p.host.as_str(), p.port, p.path.as_str(), p.region()),
            (
                "abc-ats.iot.us-east-1.amazonaws.com",
                443,
                "/mqtt",
                "us-east-1"
            )
        );
        let p = AwsIotProvider::builder("wss://localhost:8443/mqtt")
            .region("eu-west-2")
            .build()
            .unwrap();
        assert_eq!((p.host.as_str(), p.port), ("localhost", 8443));
        assert!(matches!(
            AwsIotProvider::builder("localhost").build(),
            Err(Error::InvalidConfig(_))
        ));
        assert!(matches!(
            AwsIotProvider::builder("ws://x/mqtt").region("r").build(),
            Err(Error::InvalidUrl(_))
        ));
    }

    #[test]
    fn limits_are_checked_when_building() {
        let b = || AwsIotProvider::builder("a.iot.us-east-1.amazonaws.com");
        assert!(b().keep_alive(Duration::from_secs(10)).build().is_err());
        assert!(b().keep_alive(Duration::from_secs(1201)).build().is_err());
        assert!(b().client_id("x".repeat(129)).build().is_err());
        assert!(b().client_id("x".repeat(128)).build().is_ok());
    }

    #[test]
    fn each_request_is_signed_afresh_with_current_credentials() {
        let p = AwsIotProvider::builder("a.iot.us-east-1.amazonaws.com")
            .credentials(StaticCredentials::new("AKIDEXAMPLE", "secret").session_token("tok/en"))
            .build()
            .unwrap();
        let mut spec = sealed::Sealed::into_spec(p);
        let r = spec
            .opener
            .open_request(0, std::time::Instant::now() + Duration::from_secs(10))
            .unwrap();
        let q = r.url.query().unwrap();
        assert!(q.contains("X-Amz-Credential=AKIDEXAMPLE%2F"), "{q}");
        assert!(q.ends_with("&X-Amz-Security-Token=tok%2Fen"), "{q}");
        assert_eq!(spec.limits.max_filters_per_subscribe, 8);
    }

    #[test]
    fn custom_authorizer_headers_or_query() {
        let auth = CustomAuthorizer::new("my-auth")
            .token("x-token", "t0k")
            .signature("c2ln");
        let p = AwsIotProvider::builder("a.iot.us-east-1.amazonaws.com")
            .custom_authorizer(auth.clone())
            .build()
            .unwrap();
        let r = sealed::Sealed::into_spec(p)
            .opener
            .open_request(0, std::time::Instant::now() + Duration::from_secs(10))
            .unwrap();
        assert!(r.url.query().is_none());
        assert!(r
            .headers
            .contains(&("x-amz-customauthorizer-name".into(), "my-auth".into())));
        assert!(r.headers.contains(&("x-token".into(), "t0k".into())));
        let p = AwsIotProvider::builder("a.iot.us-east-1.amazonaws.com")
            .custom_authorizer(auth.in_query(true))
            .build()
            .unwrap();
        let r = sealed::Sealed::into_spec(p)
            .opener
            .open_request(0, std::time::Instant::now() + Duration::from_secs(10))
            .unwrap();
        assert_eq!(r.url.query(), Some("x-amz-customauthorizer-name=my-auth&x-amz-customauthorizer-signature=c2ln&x-token=t0k"));
    }

    #[test]
    fn a_403_names_what_to_check() {
        let p = AwsIotProvider::builder("a.iot.us-east-1.amazonaws.com")
            .build()
            .unwrap();
        let spec = sealed::Sealed::into_spec(p);
        let e = spec.opener.explain(Error::HandshakeRejected {
            status: 403,
            hint: String::new(),
            target: None,
        });
        let s = e.to_string();
        assert!(
            s.contains("403")
                && s.contains("policy")
                && s.contains("region")
                && s.contains("clock"),
            "{s}"
        );
    }
}

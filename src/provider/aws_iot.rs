//! AWS IoT Core over WebSocket: a SigV4-presigned URL, signed afresh on every attempt.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls::ClientConfig;

use super::{sealed, Limits, Opener, Provider, ProviderSpec};
use crate::aws::{presign_url, CredentialsProvider, DefaultCredentials, PresignParams};
use crate::error::{Error, Result};
use crate::net::tls;
use crate::net::websocket::{parse_url, OpenRequest};
use crate::options::{connection_builder_methods, ConnectionOptions};

/// Connects with an AWS IoT custom authorizer instead of SigV4: the authorizer's name, the
/// token under its token key name, and the token signature (when signing is enabled), sent
/// as upgrade headers or as query parameters.
#[derive(Clone)]
pub struct CustomAuthorizer {
    name: String,
    token: Option<(String, String)>,
    signature: Option<String>,
    in_query: bool,
}

impl std::fmt::Debug for CustomAuthorizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CustomAuthorizer")
            .field("name", &self.name)
            .field("token_key_name", &self.token.as_ref().map(|t| &t.0))
            .field("in_query", &self.in_query)
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
        }
    }

    /// The token, sent under the authorizer's token key name.
    pub fn token(mut self, token_key_name: impl Into<String>, token: impl Into<String>) -> Self {
        self.token = Some((token_key_name.into(), token.into()));
        self
    }

    /// The token signature (base64), when the authorizer has signing enabled.
    pub fn signature(mut self, signature: impl Into<String>) -> Self {
        self.signature = Some(signature.into());
        self
    }

    /// Send as query parameters instead of headers.
    pub fn in_query(mut self, yes: bool) -> Self {
        self.in_query = yes;
        self
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
/// Limits of AWS IoT are checked before anything is sent: topics at most 256 bytes and 7
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
            expires: None,
            options: ConnectionOptions {
                // AWS IoT allows 30..=1200 s; Amplify uses 60.
                keep_alive: Duration::from_secs(60),
                ..ConnectionOptions::default()
            },
        }
    }

    /// The region it signs for.
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
}

impl Opener for AwsOpener {
    fn open_request(&mut self, deadline: std::time::Instant) -> Result<OpenRequest> {
        let mut headers = self.headers.clone();
        let url = match &self.auth {
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
            Auth::Custom(a) => {
                let authority = if self.port == 443 {
                    self.host.clone()
                } else {
                    format!("{}:{}", self.host, self.port)
                };
                let mut url = format!("wss://{authority}{}", self.path);
                if a.in_query {
                    let q: Vec<String> = a
                        .pairs()
                        .iter()
                        .map(|(k, v)| {
                            format!(
                                "{}={}",
                                crate::aws::uri_encode(k),
                                crate::aws::uri_encode(v)
                            )
                        })
                        .collect();
                    url = format!("{url}?{}", q.join("&"));
                } else {
                    headers.extend(a.pairs());
                }
                url
            }
        };
        Ok(OpenRequest {
            url: url::Url::parse(&url).map_err(|e| Error::InvalidUrl(e.to_string()))?,
            headers,
            tls: self.tls.clone(),
        })
    }

    fn explain(&self, err: Error) -> Error {
        match err {
            Error::HandshakeRejected { status: status @ (401 | 403), hint } => Error::HandshakeRejected {
                status,
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
        let opener = AwsOpener {
            host: self.host,
            port: self.port,
            path: self.path,
            region: self.region,
            auth: self.auth,
            headers: self.options.headers.clone(),
            tls: self.tls,
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
        }
    }
}

/// Builds an [`AwsIotProvider`].
pub struct AwsIotProviderBuilder {
    name: String,
    endpoint: String,
    region: Option<String>,
    auth: Option<Auth>,
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
                    crate::net::websocket::redact_text(&self.endpoint)
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

    /// Checks everything and makes the provider (nothing connects yet).
    pub fn build(self) -> Result<AwsIotProvider> {
        self.options.validate()?;
        let url = if self.endpoint.contains("://") {
            let u = parse_url(&self.endpoint)?;
            if u.scheme() != "wss" {
                return Err(Error::InvalidUrl("AWS IoT needs wss://".into()));
            }
            u
        } else {
            parse_url(&format!(
                "wss://{}/mqtt",
                self.endpoint.trim_end_matches('/')
            ))?
        };
        let host = url.host_str().unwrap_or_default().to_string();
        let port = url.port().unwrap_or(443);
        let path = if url.path().is_empty() {
            "/mqtt".to_string()
        } else {
            url.path().to_string()
        };
        let region = match self.region.or_else(|| region_from_host(&host)) {
            Some(r) => r,
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
        let auth = match self.auth {
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
        let tls = tls::client_config(&self.options.ca_pems, self.options.client_cert.as_ref())?;
        Ok(AwsIotProvider {
            name: self.name,
            host,
            port,
            path,
            region,
            auth,
            options: self.options,
            tls,
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
            .open_request(std::time::Instant::now() + Duration::from_secs(10))
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
            .open_request(std::time::Instant::now() + Duration::from_secs(10))
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
            .open_request(std::time::Instant::now() + Duration::from_secs(10))
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

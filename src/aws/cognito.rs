//! Credentials from an Amazon Cognito identity pool: `GetId`, then
//! `GetCredentialsForIdentity` (JSON 1.1, unsigned), cached and refreshed ahead of expiry.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use super::credentials::{Credentials, CredentialsProvider};
use crate::error::{Error, Result};

/// Credentials are refreshed this long before they expire.
const REFRESH_AHEAD: Duration = Duration::from_secs(5 * 60);
/// Default bound of one credentials fetch (both calls) when no connect deadline applies.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest answer read.
const MAX_ANSWER: usize = 1024 * 1024;
/// The latest `Expiration` taken as a time (9999-12-31): later or non-finite values are a
/// broken answer, not credentials that never expire.
const MAX_EXPIRATION_SECS: f64 = 253_402_300_799.0;

/// Temporary credentials of an identity in a Cognito identity pool, unauthenticated or
/// authenticated with a `logins` map (provider name → id token).
///
/// The identity id is kept after the first `GetId`; credentials are cached and fetched again
/// five minutes before `Expiration`. The endpoint is
/// `https://cognito-identity.<region>.amazonaws.com/`, or [`CognitoCredentials::endpoint`],
/// or `AWS_ENDPOINT_URL_COGNITO_IDENTITY`, or `AWS_ENDPOINT_URL`.
///
/// ```
/// use mqtt_pubsub::aws::CognitoCredentials;
/// use mqtt_pubsub::AwsIotProvider;
/// let provider = AwsIotProvider::builder("abc123-ats.iot.us-east-1.amazonaws.com")
///     .credentials(CognitoCredentials::unauthenticated(
///         "us-east-1:11111111-2222-3333-4444-555555555555",
///     ))
///     .build()?;
/// # Ok::<(), mqtt_pubsub::Error>(())
/// ```
pub struct CognitoCredentials {
    pool_id: String,
    region: String,
    logins: BTreeMap<String, String>,
    endpoint: Option<String>,
    timeout: Duration,
    proxy: Option<Option<String>>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    identity_id: Option<String>,
    cached: Option<Credentials>,
}

impl std::fmt::Debug for CognitoCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CognitoCredentials")
            .field("pool_id", &self.pool_id)
            .field("region", &self.region)
            .field("logins", &self.logins.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl CognitoCredentials {
    /// Guest access to `pool_id` (`<region>:<uuid>`; the region is taken from it).
    pub fn unauthenticated(pool_id: impl Into<String>) -> CognitoCredentials {
        let pool_id = pool_id.into();
        let region = pool_id.split(':').next().unwrap_or_default().to_string();
        CognitoCredentials {
            pool_id,
            region,
            logins: BTreeMap::new(),
            endpoint: None,
            timeout: DEFAULT_TIMEOUT,
            proxy: None,
            state: Mutex::new(State::default()),
        }
    }

    /// Authenticated access: `logins` maps a provider name (e.g.
    /// `cognito-idp.<region>.amazonaws.com/<user pool id>`) to its id token.
    pub fn authenticated(
        pool_id: impl Into<String>,
        logins: impl IntoIterator<Item = (String, String)>,
    ) -> CognitoCredentials {
        let mut c = CognitoCredentials::unauthenticated(pool_id);
        c.logins = logins.into_iter().collect();
        for token in c.logins.values() {
            crate::error::register_secret(token);
        }
        c
    }

    /// Overrides the region (otherwise the pool id's prefix).
    pub fn region(mut self, region: impl Into<String>) -> CognitoCredentials {
        self.region = region.into();
        self
    }

    /// Overrides the endpoint URL (LocalStack, moto, a VPC endpoint).
    pub fn endpoint(mut self, url: impl Into<String>) -> CognitoCredentials {
        self.endpoint = Some(url.into());
        self
    }

    /// Calls Cognito through this HTTP proxy (`http://[user:password@]host[:port]`), whatever
    /// the environment says. Default: the proxy environment variables, as the provider
    /// builders (`HTTPS_PROXY`, else `ALL_PROXY`; `NO_PROXY` exempts hosts). A provider's own
    /// `.proxy()` does not reach its credentials source: set both.
    pub fn proxy(mut self, url: impl Into<String>) -> CognitoCredentials {
        self.proxy = Some(Some(url.into()));
        self
    }

    /// Calls Cognito directly, whatever the proxy environment variables say.
    pub fn no_proxy(mut self) -> CognitoCredentials {
        self.proxy = Some(None);
        self
    }

    /// Bounds a credentials fetch (`GetId` and `GetCredentialsForIdentity` together) when it
    /// is not made for a connection, whose connect deadline bounds it otherwise (default
    /// 10 s).
    pub fn timeout(mut self, timeout: Duration) -> CognitoCredentials {
        self.timeout = timeout;
        self
    }

    /// The identity id, once known.
    pub fn identity_id(&self) -> Option<String> {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .identity_id
            .clone()
    }

    fn url(&self) -> String {
        super::endpoint_url(
            self.endpoint.as_deref(),
            "COGNITO_IDENTITY",
            format!("https://cognito-identity.{}.amazonaws.com/", self.region),
        )
    }

    fn call(&self, action: &str, body: Value, deadline: Instant) -> Result<Value> {
        let url = self.url();
        let parsed_url = url::Url::parse(&url).map_err(|e| {
            Error::Credentials(format!(
                "Cognito endpoint {}: {e}",
                crate::net::request::redact_text(&url)
            ))
        })?;
        // Shown in errors without a user, password or query (a token may be in either).
        let shown = crate::net::request::redact(&parsed_url);
        let target = format!("AWSCognitoIdentityService.{action}");
        let tls = crate::net::tls::TlsSettings::default().client_config(&[])?;
        let proxy = match &self.proxy {
            None => crate::net::proxy::ProxySetting::FromEnv,
            Some(None) => crate::net::proxy::ProxySetting::Off,
            Some(Some(p)) => crate::net::proxy::ProxySetting::Use(
                crate::net::proxy::Proxy::parse(p)
                    .map_err(|e| Error::Credentials(format!("Cognito: {e}")))?,
            ),
        }
        .for_url(&parsed_url)
        .map_err(|e| Error::Credentials(format!("Cognito: {e}")))?;
        let resp = crate::net::http::post(
            &parsed_url,
            proxy.as_ref(),
            &[
                ("X-Amz-Target", &target),
                ("Content-Type", "application/x-amz-json-1.1"),
            ],
            body.to_string().as_bytes(),
            tls,
            deadline,
            MAX_ANSWER,
        )
        .map_err(|e| Error::Credentials(format!("Cognito {action} at {shown}: {e}")))?;
        let status = resp.status;
        let text = String::from_utf8_lossy(&resp.body).into_owned();
        let parsed: Option<Value> = serde_json::from_str(&text).ok();
        if (200..300).contains(&status) {
            return parsed.ok_or_else(|| {
                Error::Credentials(format!("Cognito {action}: the answer is not JSON"))
            });
        }
        // AWS JSON errors: {"__type": "[prefix#]NotAuthorizedException", "message": "..."}.
        let (kind, message) = match &parsed {
            Some(v) => (
                v["__type"]
                    .as_str()
                    .map(|t| crate::error::printable_max(t.rsplit('#').next().unwrap_or(t), 100)),
                v["message"]
                    .as_str()
                    .or(v["Message"].as_str())
                    .map(crate::error::printable),
            ),
            None => (None, None),
        };
        Err(Error::Credentials(match (kind, message) {
            (Some(k), Some(m)) => format!("Cognito {action}: {k}: {m} (HTTP {status})"),
            (Some(k), None) => format!("Cognito {action}: {k} (HTTP {status})"),
            _ => {
                let snippet = crate::error::printable(&text);
                format!("Cognito {action}: HTTP {status}: {snippet}")
            }
        }))
    }

    fn fetch(&self, state: &mut State, deadline: Instant) -> Result<Credentials> {
        let identity_id = match &state.identity_id {
            Some(id) => id.clone(),
            None => {
                let mut body = json!({ "IdentityPoolId": self.pool_id });
                if !self.logins.is_empty() {
                    body["Logins"] = json!(self.logins);
                }
                let v = self.call("GetId", body, deadline)?;
                let id = v["IdentityId"]
                    .as_str()
                    .ok_or_else(|| {
                        Error::Credentials("Cognito GetId: no IdentityId in the answer".into())
                    })?
                    .to_string();
                state.identity_id = Some(id.clone());
                id
            }
        };
        let mut body = json!({ "IdentityId": identity_id });
        if !self.logins.is_empty() {
            body["Logins"] = json!(self.logins);
        }
        let v = self.call("GetCredentialsForIdentity", body, deadline)?;
        let c = &v["Credentials"];
        let field = |name: &str| {
            c[name].as_str().map(String::from).ok_or_else(|| {
                Error::Credentials(format!(
                    "Cognito GetCredentialsForIdentity: no {name} in the answer"
                ))
            })
        };
        let mut creds = Credentials::new(
            field("AccessKeyId")?,
            field("SecretKey")?,
            Some(field("SessionToken")?),
        );
        // Epoch seconds, as a number (AWS and moto send a float).
        if let Some(secs) = c["Expiration"].as_f64() {
            if !(0.0..=MAX_EXPIRATION_SECS).contains(&secs) {
                return Err(Error::Credentials(format!(
                    "Cognito GetCredentialsForIdentity: Expiration {secs} is not a time \
                     (epoch seconds up to the year 9999 expected)"
                )));
            }
            creds = creds.with_expiration(UNIX_EPOCH + Duration::from_secs_f64(secs));
        }
        Ok(creds)
    }
}

impl CredentialsProvider for CognitoCredentials {
    fn credentials(&self) -> Result<Credentials> {
        self.credentials_before(crate::deadline::deadline_after(self.timeout))
    }

    fn credentials_before(&self, deadline: Instant) -> Result<Credentials> {
        let deadline = deadline.min(crate::deadline::deadline_after(self.timeout));
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let fresh_until = SystemTime::now() + REFRESH_AHEAD;
        if let Some(c) = &state.cached {
            if !c.is_expired(fresh_until) {
                return Ok(c.clone());
            }
        }
        let creds = self.fetch(&mut state, deadline)?;
        log::debug!(
            "Cognito credentials obtained for identity {:?}",
            state.identity_id
        );
        state.cached = Some(creds.clone());
        Ok(creds)
    }
}

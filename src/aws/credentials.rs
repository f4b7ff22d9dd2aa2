//! AWS credentials and where they come from.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use crate::error::{Error, Result};

/// An access key, its secret, and an optional session token. `Debug` never shows the secret
/// or the token.
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use mqtt_pubsub::aws::Credentials;
/// let c = Credentials::new("AKIDEXAMPLE", "wJalrXUtnFEMI", Some("token".into()))
///     .with_expiration(SystemTime::now() + Duration::from_secs(3600));
/// assert!(!c.is_expired(SystemTime::now()));
/// assert!(!format!("{c:?}").contains("wJalrXUtnFEMI")); // Debug redacts the secret
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    access_key_id: String,
    secret_access_key: String,
    session_token: Option<String>,
    expiration: Option<SystemTime>,
}

impl Credentials {
    /// Long-term or temporary credentials.
    pub fn new(
        access_key_id: impl Into<String>,
        secret_access_key: impl Into<String>,
        session_token: Option<String>,
    ) -> Credentials {
        let secret_access_key = secret_access_key.into();
        // Whatever a server echoes of these is redacted from errors and logs.
        crate::error::register_secret(&secret_access_key);
        if let Some(t) = &session_token {
            crate::error::register_secret(t);
        }
        Credentials {
            access_key_id: access_key_id.into(),
            secret_access_key,
            session_token,
            expiration: None,
        }
    }

    /// The same credentials, valid until `expiration`.
    pub fn with_expiration(mut self, expiration: SystemTime) -> Credentials {
        self.expiration = Some(expiration);
        self
    }

    /// The access key id (not secret; appears in signed URLs).
    pub fn access_key_id(&self) -> &str {
        &self.access_key_id
    }

    /// The secret access key.
    pub fn secret_access_key(&self) -> &str {
        &self.secret_access_key
    }

    /// The session token of temporary credentials.
    pub fn session_token(&self) -> Option<&str> {
        self.session_token.as_deref()
    }

    /// When temporary credentials expire.
    pub fn expiration(&self) -> Option<SystemTime> {
        self.expiration
    }

    /// Whether they have expired at `now`.
    pub fn is_expired(&self, now: SystemTime) -> bool {
        self.expiration.is_some_and(|e| e <= now)
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field(
                "session_token",
                &self.session_token.as_ref().map(|_| "<redacted>"),
            )
            .field("expiration", &self.expiration)
            .finish()
    }
}

/// A source of credentials, asked again on every connect and reconnect.
///
/// ```
/// use mqtt_pubsub::aws::{Credentials, CredentialsProvider};
/// /// Keys from the application's own vault.
/// struct Vault;
/// impl CredentialsProvider for Vault {
///     fn credentials(&self) -> mqtt_pubsub::Result<Credentials> {
///         Ok(Credentials::new("AKIDEXAMPLE", "secret", None))
///     }
/// }
/// let provider = mqtt_pubsub::AwsIotProvider::builder("abc123-ats.iot.us-east-1.amazonaws.com")
///     .credentials(Vault)
///     .build()?;
/// # Ok::<(), mqtt_pubsub::Error>(())
/// ```
pub trait CredentialsProvider: Send + Sync + 'static {
    /// Current credentials, or why there are none.
    fn credentials(&self) -> Result<Credentials>;

    /// Current credentials, fetched before `deadline` (the provider's connect deadline: a
    /// source that calls a service, as Cognito does, must not outlive it). The default
    /// calls [`CredentialsProvider::credentials`].
    fn credentials_before(&self, deadline: std::time::Instant) -> Result<Credentials> {
        let _ = deadline;
        self.credentials()
    }
}

impl<P: CredentialsProvider + ?Sized> CredentialsProvider for Arc<P> {
    fn credentials(&self) -> Result<Credentials> {
        (**self).credentials()
    }
    fn credentials_before(&self, deadline: std::time::Instant) -> Result<Credentials> {
        (**self).credentials_before(deadline)
    }
}

impl CredentialsProvider for Credentials {
    fn credentials(&self) -> Result<Credentials> {
        Ok(self.clone())
    }
}

/// Fixed keys.
///
/// ```
/// use mqtt_pubsub::aws::{CredentialsProvider, StaticCredentials};
/// let keys = StaticCredentials::new("AKIDEXAMPLE", "secret").session_token("token");
/// assert_eq!(keys.credentials()?.session_token(), Some("token"));
/// # Ok::<(), mqtt_pubsub::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct StaticCredentials(Credentials);

impl StaticCredentials {
    /// Fixed keys without a session token.
    pub fn new(
        access_key_id: impl Into<String>,
        secret_access_key: impl Into<String>,
    ) -> StaticCredentials {
        StaticCredentials(Credentials::new(access_key_id, secret_access_key, None))
    }

    /// Adds a session token (temporary credentials).
    pub fn session_token(mut self, token: impl Into<String>) -> StaticCredentials {
        self.0.session_token = Some(token.into());
        self
    }
}

impl CredentialsProvider for StaticCredentials {
    fn credentials(&self) -> Result<Credentials> {
        Ok(self.0.clone())
    }
}

/// `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and optional `AWS_SESSION_TOKEN`, read on
/// every call.
///
/// ```no_run
/// use mqtt_pubsub::aws::{CredentialsProvider, EnvironmentCredentials};
/// // AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_SESSION_TOKEN.
/// let keys = EnvironmentCredentials::new().credentials()?;
/// # Ok::<(), mqtt_pubsub::Error>(())
/// ```
#[derive(Clone, Debug, Default)]
pub struct EnvironmentCredentials;

impl EnvironmentCredentials {
    /// Reads the environment on each call.
    pub fn new() -> EnvironmentCredentials {
        EnvironmentCredentials
    }
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

impl CredentialsProvider for EnvironmentCredentials {
    fn credentials(&self) -> Result<Credentials> {
        match (env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY")) {
            (Some(a), Some(s)) => Ok(Credentials::new(a, s, env("AWS_SESSION_TOKEN"))),
            (Some(_), None) => Err(Error::Credentials(
                "AWS_ACCESS_KEY_ID is set but AWS_SECRET_ACCESS_KEY is not".into(),
            )),
            (None, Some(_)) => Err(Error::Credentials(
                "AWS_SECRET_ACCESS_KEY is set but AWS_ACCESS_KEY_ID is not".into(),
            )),
            (None, None) => Err(Error::Credentials(
                "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY are not set".into(),
            )),
        }
    }
}

/// A profile of the shared files: `~/.aws/credentials` (or `AWS_SHARED_CREDENTIALS_FILE`)
/// and `~/.aws/config` (or `AWS_CONFIG_FILE`), profile `AWS_PROFILE` or `default`. The
/// credentials file wins over the config file. Files are read on every call.
///
/// ```no_run
/// use mqtt_pubsub::aws::{CredentialsProvider, ProfileCredentials};
/// // `[iot]` in ~/.aws/credentials (and ~/.aws/config).
/// let keys = ProfileCredentials::new().profile("iot").credentials()?;
/// # Ok::<(), mqtt_pubsub::Error>(())
/// ```
#[derive(Clone, Debug, Default)]
pub struct ProfileCredentials {
    profile: Option<String>,
    credentials_file: Option<PathBuf>,
    config_file: Option<PathBuf>,
}

impl ProfileCredentials {
    /// The profile named by `AWS_PROFILE`, else `default`, from the usual files.
    pub fn new() -> ProfileCredentials {
        ProfileCredentials::default()
    }

    /// A named profile.
    pub fn profile(mut self, name: impl Into<String>) -> ProfileCredentials {
        self.profile = Some(name.into());
        self
    }

    /// Read these files instead of the environment's or the home directory's.
    pub fn files(
        mut self,
        credentials_file: Option<PathBuf>,
        config_file: Option<PathBuf>,
    ) -> ProfileCredentials {
        self.credentials_file = credentials_file;
        self.config_file = config_file;
        self
    }

    fn paths(&self) -> (Option<PathBuf>, Option<PathBuf>) {
        let home = || std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".aws"));
        let creds = self
            .credentials_file
            .clone()
            .or_else(|| std::env::var_os("AWS_SHARED_CREDENTIALS_FILE").map(PathBuf::from))
            .or_else(|| home().map(|h| h.join("credentials")));
        let config = self
            .config_file
            .clone()
            .or_else(|| std::env::var_os("AWS_CONFIG_FILE").map(PathBuf::from))
            .or_else(|| home().map(|h| h.join("config")));
        (creds, config)
    }
}

/// The `key = value` pairs of section `[wanted]` of an INI-style AWS file.
fn section(text: &str, wanted: &str) -> Option<Vec<(String, String)>> {
    let mut current: Option<String> = None;
    let mut found: Option<Vec<(String, String)>> = None;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            current = Some(name.trim().to_string());
            if current.as_deref() == Some(wanted) {
                found.get_or_insert_with(Vec::new);
            }
            continue;
        }
        if current.as_deref() == Some(wanted) {
            if let Some((k, v)) = line.split_once('=') {
                found
                    .get_or_insert_with(Vec::new)
                    .push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
            }
        }
    }
    found
}

fn from_pairs(pairs: &[(String, String)]) -> Option<Credentials> {
    let get = |k: &str| {
        pairs
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
    };
    Some(Credentials::new(
        get("aws_access_key_id")?,
        get("aws_secret_access_key")?,
        get("aws_session_token"),
    ))
}

fn read(path: &Path) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

impl CredentialsProvider for ProfileCredentials {
    fn credentials(&self) -> Result<Credentials> {
        let profile = self
            .profile
            .clone()
            .or_else(|| env("AWS_PROFILE"))
            .unwrap_or_else(|| "default".to_string());
        let (creds_path, config_path) = self.paths();
        if let Some(text) = creds_path.as_deref().and_then(read) {
            if let Some(c) = section(&text, &profile).as_deref().and_then(from_pairs) {
                return Ok(c);
            }
        }
        if let Some(text) = config_path.as_deref().and_then(read) {
            // In the config file, profiles other than default are `[profile name]`.
            let name = if profile == "default" {
                profile.clone()
            } else {
                format!("profile {profile}")
            };
            let pairs = section(&text, &name).or_else(|| section(&text, &profile));
            if let Some(c) = pairs.as_deref().and_then(from_pairs) {
                return Ok(c);
            }
        }
        let shown = |p: &Option<PathBuf>| {
            p.as_ref()
                .map_or("(none)".to_string(), |p| p.display().to_string())
        };
        Err(Error::Credentials(format!(
            "profile {profile:?} has no aws_access_key_id/aws_secret_access_key in {} or {}",
            shown(&creds_path),
            shown(&config_path)
        )))
    }
}

/// The environment, then the profile files — what AWS SDKs try first.
///
/// ```no_run
/// use mqtt_pubsub::aws::DefaultCredentials;
/// use mqtt_pubsub::AwsIotProvider;
/// // The environment first, then the profile files (what AwsIotProvider uses by default).
/// let provider = AwsIotProvider::builder("abc123-ats.iot.us-east-1.amazonaws.com")
///     .credentials(DefaultCredentials::new())
///     .build()?;
/// # Ok::<(), mqtt_pubsub::Error>(())
/// ```
#[derive(Clone, Debug, Default)]
pub struct DefaultCredentials {
    profile: ProfileCredentials,
}

impl DefaultCredentials {
    /// Environment, then `ProfileCredentials::new()`.
    pub fn new() -> DefaultCredentials {
        DefaultCredentials::default()
    }
}

impl CredentialsProvider for DefaultCredentials {
    fn credentials(&self) -> Result<Credentials> {
        let env_err = match EnvironmentCredentials.credentials() {
            Ok(c) => return Ok(c),
            Err(e) => e,
        };
        self.profile.credentials().map_err(|profile_err| {
            Error::Credentials(format!(
                "none found. environment: {}; profile: {}",
                strip(&env_err),
                strip(&profile_err)
            ))
        })
    }
}

fn strip(e: &Error) -> String {
    match e {
        Error::Credentials(s) => s.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_secrets() {
        let c = Credentials::new("AKID", "very-secret", Some("tok-secret".into()));
        let s = format!("{c:?}");
        assert!(
            s.contains("AKID") && !s.contains("very-secret") && !s.contains("tok-secret"),
            "{s}"
        );
    }

    #[test]
    fn sections_are_parsed_with_comments_and_spaces() {
        let text = "# c\n[default]\naws_access_key_id = A\n[profile dev]\n AWS_ACCESS_KEY_ID=B \naws_secret_access_key=S\n";
        assert_eq!(section(text, "default").unwrap().len(), 1);
        let dev = from_pairs(&section(text, "profile dev").unwrap()).unwrap();
        assert_eq!((dev.access_key_id(), dev.secret_access_key()), ("B", "S"));
        assert!(section(text, "missing").is_none());
    }
}

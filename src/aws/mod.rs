//! AWS IoT Core support (cargo feature `aws-iot`): SigV4 presigning and credential sources.

mod cognito;
mod credentials;
mod presign;
mod time;

pub use cognito::CognitoCredentials;
pub use credentials::{
    Credentials, CredentialsProvider, DefaultCredentials, EnvironmentCredentials,
    ProfileCredentials, StaticCredentials,
};
pub(crate) use presign::uri_encode;
pub use presign::{presign_url, PresignParams, SERVICE};
pub use time::{format_amz_date, parse_amz_date};

/// The endpoint URL for `service` as the AWS SDKs choose it: an explicit value first, then
/// `AWS_ENDPOINT_URL_<SERVICE>` (e.g. `AWS_ENDPOINT_URL_COGNITO_IDENTITY`), then
/// `AWS_ENDPOINT_URL`, then the default.
pub(crate) fn endpoint_url(explicit: Option<&str>, service_env: &str, default: String) -> String {
    if let Some(e) = explicit {
        return e.to_string();
    }
    for var in [
        format!("AWS_ENDPOINT_URL_{service_env}"),
        "AWS_ENDPOINT_URL".to_string(),
    ] {
        if let Ok(v) = std::env::var(&var) {
            if !v.is_empty() {
                return v;
            }
        }
    }
    default
}

//! SigV4 query presigning of the AWS IoT WebSocket URL.
//!
//! The URL is `wss://<host>[:port]/mqtt?<query>`: GET, service `iotdevicegateway`, signed
//! header `host` (with `:port` when the port is not 443), payload hash of the empty string,
//! `X-Amz-Expires` only when asked for, and `X-Amz-Security-Token` appended after
//! `X-Amz-Signature`, percent-encoded and not signed — what AWS IoT expects and what
//! botocore produces. (aws-sigv4's own query presigning always signs an `X-Amz-Expires`, so
//! the canonical request is built here and aws-sigv4 derives the key and the HMAC.)

use std::fmt::Write;
use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha256};

use super::credentials::Credentials;
use super::time::format_amz_date;

/// The SigV4 service name of the AWS IoT data plane.
pub const SERVICE: &str = "iotdevicegateway";

/// What to presign.
///
/// ```
/// use mqtt_pubsub::aws::{presign_url, Credentials, PresignParams};
/// let params = PresignParams::new("abc123-ats.iot.us-east-1.amazonaws.com", "us-east-1");
/// let url = presign_url(&params, &Credentials::new("AKIDEXAMPLE", "secret", None));
/// assert!(url.starts_with("wss://abc123-ats.iot.us-east-1.amazonaws.com/mqtt?"));
/// assert!(url.contains("X-Amz-Signature="));
/// ```
#[derive(Debug, Clone)]
pub struct PresignParams<'a> {
    /// The endpoint host, e.g. `abc123-ats.iot.us-east-1.amazonaws.com`.
    pub host: &'a str,
    /// The port (443 unless a proxy or test gateway says otherwise).
    pub port: u16,
    /// The path, `/mqtt` for AWS IoT.
    pub path: &'a str,
    /// The region, e.g. `us-east-1`.
    pub region: &'a str,
    /// The signing time.
    pub time: SystemTime,
    /// `X-Amz-Expires`, only when set.
    pub expires: Option<Duration>,
}

impl<'a> PresignParams<'a> {
    /// Port 443, path `/mqtt`, the current time, no expiry.
    pub fn new(host: &'a str, region: &'a str) -> PresignParams<'a> {
        PresignParams {
            host,
            port: 443,
            path: "/mqtt",
            region,
            time: SystemTime::now(),
            expires: None,
        }
    }
}

/// RFC 3986 percent-encoding: unreserved characters `A-Z a-z 0-9 - _ . ~` stay.
pub(crate) fn uri_encode(s: &str) -> String {
    crate::error::rfc3986(s)
}

fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// The canonical request, string to sign and signature (for tests against the vectors).
pub(crate) fn sign_parts(
    p: &PresignParams<'_>,
    credentials: &Credentials,
) -> (String, String, String, String) {
    let amz_date = format_amz_date(p.time);
    let date = &amz_date[..8];
    let scope = format!("{date}/{}/{SERVICE}/aws4_request", p.region);
    let host = if p.port == 443 {
        p.host.to_string()
    } else {
        format!("{}:{}", p.host, p.port)
    };
    let mut query = format!(
        "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential={}&X-Amz-Date={amz_date}",
        uri_encode(&format!("{}/{scope}", credentials.access_key_id()))
    );
    if let Some(e) = p.expires {
        let _ = write!(query, "&X-Amz-Expires={}", e.as_secs());
    }
    query.push_str("&X-Amz-SignedHeaders=host");
    let empty_payload = hex(&Sha256::digest(b""));
    let canonical = format!(
        "GET\n{}\n{query}\nhost:{host}\n\nhost\n{empty_payload}",
        p.path
    );
    let string_to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
        hex(&Sha256::digest(canonical.as_bytes()))
    );
    let key = aws_sigv4::sign::v4::generate_signing_key(
        credentials.secret_access_key(),
        p.time,
        p.region,
        SERVICE,
    );
    let signature = aws_sigv4::sign::v4::calculate_signature(key, string_to_sign.as_bytes());
    (canonical, string_to_sign, signature, query)
}

/// The presigned `wss://` URL. Contains the signature and (when present) the session token:
/// treat it as a secret.
pub fn presign_url(params: &PresignParams<'_>, credentials: &Credentials) -> String {
    let (_, _, signature, query) = sign_parts(params, credentials);
    let authority = if params.port == 443 {
        params.host.to_string()
    } else {
        format!("{}:{}", params.host, params.port)
    };
    let mut url = format!(
        "wss://{authority}{}?{query}&X-Amz-Signature={signature}",
        params.path
    );
    if let Some(token) = credentials.session_token() {
        let _ = write!(url, "&X-Amz-Security-Token={}", uri_encode(token));
    }
    url
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aws::time::parse_amz_date;

    #[test]
    fn botocore_vectors_byte_for_byte() {
        let v: serde_json::Value =
            serde_json::from_str(include_str!("../../tests/vectors/aws-iot-presign.json")).unwrap();
        let vectors = v["vectors"].as_array().unwrap();
        assert!(vectors.len() >= 3);
        for t in vectors {
            let i = &t["inputs"];
            let creds = Credentials::new(
                i["access_key"].as_str().unwrap(),
                i["secret_key"].as_str().unwrap(),
                i["session_token"].as_str().map(String::from),
            );
            let p = PresignParams {
                host: i["host"].as_str().unwrap(),
                port: i["port"].as_u64().unwrap() as u16,
                path: i["path"].as_str().unwrap(),
                region: i["region"].as_str().unwrap(),
                time: parse_amz_date(i["timestamp"].as_str().unwrap()).unwrap(),
                expires: i["expires"].as_u64().map(Duration::from_secs),
            };
            let (canonical, sts, sig, _) = sign_parts(&p, &creds);
            let name = t["name"].as_str().unwrap();
            assert_eq!(
                canonical,
                t["canonical_request"].as_str().unwrap(),
                "{name}"
            );
            assert_eq!(sts, t["string_to_sign"].as_str().unwrap(), "{name}");
            assert_eq!(sig, t["signature"].as_str().unwrap(), "{name}");
            assert_eq!(
                presign_url(&p, &creds),
                t["expected_url"].as_str().unwrap(),
                "{name}"
            );
        }
    }

    #[test]
    fn expires_is_signed_when_asked_for() {
        let creds = Credentials::new("AK", "SK", None);
        let mut p = PresignParams::new("h.iot.eu-west-1.amazonaws.com", "eu-west-1");
        p.expires = Some(Duration::from_secs(300));
        let (canonical, ..) = sign_parts(&p, &creds);
        assert!(canonical.contains("&X-Amz-Expires=300&X-Amz-SignedHeaders=host"));
        assert!(presign_url(&p, &creds).contains("X-Amz-Expires=300"));
    }

    #[test]
    fn token_is_rfc3986_encoded_after_the_signature() {
        let creds = Credentials::new("AK", "SK", Some("a/b+c=d e~*".into()));
        let url = presign_url(&PresignParams::new("h", "r"), &creds);
        assert!(
            url.ends_with("&X-Amz-Security-Token=a%2Fb%2Bc%3Dd%20e~%2A"),
            "{url}"
        );
        let sig = url.find("X-Amz-Signature=").unwrap();
        assert!(sig < url.find("X-Amz-Security-Token").unwrap());
    }
}

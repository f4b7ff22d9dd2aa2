//! A stand-in for the AWS IoT WebSocket gateway: accepts `wss://` on loopback, verifies the
//! SigV4-presigned URL with its own verifier (written from the AWS IoT developer guide's
//! recipe: canonical request, string to sign, derived key, HMAC-SHA256 — not with aws-sigv4),
//! answers 403 when it does not verify, and otherwise relays the connection to a real broker.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::{ServerConfig, ServerConnection, StreamOwned};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};

use super::Certs;

#[derive(Default)]
struct Shared {
    /// access key → (secret, session token)
    keys: Mutex<HashMap<String, (String, Option<String>)>>,
    seen: Mutex<Vec<String>>,
    refusals: Mutex<Vec<String>>,
    generation: AtomicUsize,
    stop: AtomicBool,
    /// Seconds added to the gateway's clock.
    skew: std::sync::atomic::AtomicI64,
}

pub struct Gateway {
    pub port: u16,
    shared: Arc<Shared>,
}

impl Gateway {
    /// A gateway for `region` relaying to the broker's WebSocket port.
    pub fn start(certs: &Certs, region: &str, upstream_ws_port: u16) -> Gateway {
        let chain = CertificateDer::pem_file_iter(certs.dir.join("server.crt"))
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_file(certs.dir.join("server.key")).unwrap();
        let config = Arc::new(
            ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(chain, key)
                .unwrap(),
        );
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let shared = Arc::new(Shared::default());
        let (s, region_owned) = (shared.clone(), region.to_string());
        std::thread::spawn(move || {
            for tcp in listener.incoming() {
                if s.stop.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(tcp) = tcp else { continue };
                let (s, config, region) = (s.clone(), config.clone(), region_owned.clone());
                std::thread::spawn(move || {
                    let _ = serve(tcp, config, &s, &region, upstream_ws_port);
                });
            }
        });
        Gateway { port, shared }
    }

    /// Accept these credentials.
    pub fn allow(&self, access_key: &str, secret: &str, token: Option<&str>) {
        self.shared.keys.lock().unwrap().insert(
            access_key.to_string(),
            (secret.to_string(), token.map(String::from)),
        );
    }

    /// Access keys of the connections that verified, in order.
    pub fn seen(&self) -> Vec<String> {
        self.shared.seen.lock().unwrap().clone()
    }

    /// Why connections were refused, in order.
    pub fn refusals(&self) -> Vec<String> {
        self.shared.refusals.lock().unwrap().clone()
    }

    /// Runs the gateway's clock `secs` ahead (negative: behind).
    pub fn skew_clock(&self, secs: i64) {
        self.shared.skew.store(secs, Ordering::SeqCst);
    }

    /// Closes every relayed connection (clients see the connection end).
    pub fn cut_all(&self) {
        self.shared.generation.fetch_add(1, Ordering::SeqCst);
    }

    pub fn url(&self) -> String {
        format!("wss://localhost:{}/mqtt", self.port)
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.cut_all();
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn serve(
    tcp: TcpStream,
    config: Arc<ServerConfig>,
    s: &Shared,
    region: &str,
    upstream: u16,
) -> std::io::Result<()> {
    let generation = s.generation.load(Ordering::SeqCst);
    tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut tls = StreamOwned::new(
        ServerConnection::new(config).map_err(std::io::Error::other)?,
        tcp,
    );
    // The HTTP request head.
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if tls.read(&mut byte)? == 0 || head.len() > 16 * 1024 {
            return Ok(());
        }
        head.push(byte[0]);
    }
    let text = String::from_utf8_lossy(&head).to_string();
    let target = text.split_whitespace().nth(1).unwrap_or("").to_string();
    let host = text
        .lines()
        .find_map(|l| {
            l.split_once(':')
                .filter(|(k, _)| k.eq_ignore_ascii_case("host"))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_default();
    let keys = s.keys.lock().unwrap().clone();
    let skew = s.skew.load(Ordering::SeqCst);
    let now = if skew >= 0 {
        SystemTime::now() + Duration::from_secs(skew as u64)
    } else {
        SystemTime::now() - Duration::from_secs(skew.unsigned_abs())
    };
    match verify(&target, &host, region, &keys, now) {
        Err(reason) => {
            s.refusals.lock().unwrap().push(reason.clone());
            let body = format!("{{\"message\":\"Forbidden: {reason}\"}}");
            write!(
                tls,
                "HTTP/1.1 403 Forbidden\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )?;
            tls.flush()?;
            return Ok(());
        }
        Ok(access_key) => s.seen.lock().unwrap().push(access_key),
    }
    // Relay: the same upgrade request without the signature, then bytes both ways.
    let mut up = TcpStream::connect(("127.0.0.1", upstream))?;
    let forwarded = text.replacen(&target, "/mqtt", 1);
    up.write_all(forwarded.as_bytes())?;
    super::tls_gateway::relay(&mut tls, &mut up, || {
        s.generation.load(Ordering::SeqCst) != generation || s.stop.load(Ordering::SeqCst)
    })
}

// ---- The independent SigV4 verifier ----

fn hmac_sha256(key: &[u8], msg: &[u8]) -> [u8; 32] {
    let mut k = [0u8; 64];
    if key.len() > 64 {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let mut inner = Sha256::new();
    inner.update(k.map(|b| b ^ 0x36));
    inner.update(msg);
    let mut outer = Sha256::new();
    outer.update(k.map(|b| b ^ 0x5c));
    outer.update(inner.finalize());
    let mut out = [0u8; 32];
    out.copy_from_slice(&outer.finalize());
    out
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).to_string()
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Days since 1970-01-01 of a `YYYYMMDD` date (for the ±5 minute check).
fn epoch_secs(amz_date: &str) -> Option<u64> {
    let n = |a: usize, b: usize| amz_date.get(a..b)?.parse::<i64>().ok();
    let (y, m, d) = (n(0, 4)?, n(4, 6)?, n(6, 8)?);
    let (hh, mm, ss) = (n(9, 11)?, n(11, 13)?, n(13, 15)?);
    let (y2, m2) = if m <= 2 { (y - 1, m + 9) } else { (y, m - 3) };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let doy = (153 * m2 + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some((days * 86_400 + hh * 3600 + mm * 60 + ss) as u64)
}

/// Checks a presigned request target; returns the access key, or why it is refused.
pub fn verify(
    target: &str,
    host: &str,
    region: &str,
    keys: &HashMap<String, (String, Option<String>)>,
    now: SystemTime,
) -> Result<String, String> {
    let (path, query) = target.split_once('?').ok_or("no query string")?;
    let mut params: Vec<(String, String)> = query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (percent_decode(k), percent_decode(v)))
        .collect();
    let get = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    if get("X-Amz-Algorithm").as_deref() != Some("AWS4-HMAC-SHA256") {
        return Err("algorithm".into());
    }
    if get("X-Amz-SignedHeaders").as_deref() != Some("host") {
        return Err("signed headers".into());
    }
    let credential = get("X-Amz-Credential").ok_or("no credential")?;
    let parts: Vec<&str> = credential.split('/').collect();
    let [access_key, date, cred_region, service, "aws4_request"] = parts[..] else {
        return Err(format!("credential scope {credential}"));
    };
    if service != "iotdevicegateway" || cred_region != region {
        return Err(format!("scope {cred_region}/{service}"));
    }
    let amz_date = get("X-Amz-Date").ok_or("no date")?;
    if !amz_date.starts_with(date) {
        return Err("date does not match the scope".into());
    }
    let signed_at = epoch_secs(&amz_date).ok_or("bad date")?;
    let now_secs = now.duration_since(UNIX_EPOCH).unwrap().as_secs();
    if signed_at.abs_diff(now_secs) > 300 {
        return Err("Signature expired or clock skew".into());
    }
    let (secret, token) = keys
        .get(access_key)
        .ok_or_else(|| format!("unknown access key {access_key}"))?;
    if get("X-Amz-Security-Token") != *token {
        return Err("security token".into());
    }
    let signature = get("X-Amz-Signature").ok_or("no signature")?;
    // Canonical query: every parameter but the signature and the (unsigned) token, sorted.
    params.retain(|(k, _)| k != "X-Amz-Signature" && k != "X-Amz-Security-Token");
    params.sort();
    let canonical_query = params
        .iter()
        .map(|(k, v)| format!("{}={}", percent_encode(k), percent_encode(v)))
        .collect::<Vec<_>>()
        .join("&");
    let canonical = format!(
        "GET\n{path}\n{canonical_query}\nhost:{host}\n\nhost\n{}",
        hex(&Sha256::digest(b""))
    );
    let scope = format!("{date}/{region}/iotdevicegateway/aws4_request");
    let to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
        hex(&Sha256::digest(canonical.as_bytes()))
    );
    let k_date = hmac_sha256(format!("AWS4{secret}").as_bytes(), date.as_bytes());
    let k_region = hmac_sha256(&k_date, region.as_bytes());
    let k_service = hmac_sha256(&k_region, b"iotdevicegateway");
    let k_signing = hmac_sha256(&k_service, b"aws4_request");
    let expected = hex(&hmac_sha256(&k_signing, to_sign.as_bytes()));
    if expected != signature {
        return Err(
            "The request signature we calculated does not match the signature you provided".into(),
        );
    }
    Ok(access_key.to_string())
}

//! mosquitto's connection flags (`-h -p -L -i -I -u -P -k -c -x -V --will-* --cafile
//! --capath --cert --key --tls-use-os-certs -D connect …`), plus this library's own as long
//! options that mosquitto does not use (`--http-proxy`, `--no-proxy`, `--p12`, `--outbox`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use mqtt_pubsub::{LastWill, MqttOverWsProvider, MqttVersion, QoS};

/// Where and how to connect.
#[derive(clap::Args, Debug)]
pub struct Connection {
    /// Host to connect to (default: localhost).
    #[arg(short = 'h', long)]
    pub host: Option<String>,
    /// Port (default: 1883, or 8883 with TLS).
    #[arg(short = 'p', long)]
    pub port: Option<u16>,
    /// A URL instead of -h/-p: `mqtt(s)://[user[:password]@]host[:port]/topic`, or
    /// `ws(s)://[user[:password]@]host[:port]/path` for MQTT over WebSocket.
    #[arg(short = 'L', long)]
    pub url: Option<String>,
    /// Client id (default: random).
    #[arg(short = 'i', long = "id")]
    pub id: Option<String>,
    /// Client id prefix: the id is this prefix followed by the process id.
    #[arg(short = 'I', long = "id-prefix", conflicts_with = "id")]
    pub id_prefix: Option<String>,
    /// User name.
    #[arg(short = 'u', long)]
    pub username: Option<String>,
    /// Password (a command line is visible to every user of the machine: prefer -L with
    /// care, or a broker without passwords on the command line).
    #[arg(short = 'P', long = "pw")]
    pub password: Option<String>,
    /// Keep-alive in seconds (default 60).
    #[arg(short = 'k', long, default_value_t = 60)]
    pub keepalive: u16,
    /// Persistent session: the broker keeps the session after we go (needs -i).
    #[arg(short = 'c', long = "disable-clean-session")]
    pub disable_clean_session: bool,
    /// MQTT 5 session expiry interval in seconds (-1: never).
    #[arg(
        short = 'x',
        long = "session-expiry-interval",
        allow_negative_numbers = true
    )]
    pub session_expiry: Option<i64>,
    /// MQTT version: mqttv5 (or 5), mqttv311 (or 311; the default).
    #[arg(short = 'V', long = "protocol-version", default_value = "mqttv311", value_parser = parse_version)]
    pub version: MqttVersion,
    /// MQTT 5 property: -D COMMAND NAME VALUE (user-property takes KEY VALUE). Commands:
    /// connect (session-expiry-interval, receive-maximum, user-property) and publish
    /// (content-type, correlation-data, message-expiry-interval, payload-format-indicator,
    /// response-topic, user-property).
    #[arg(short = 'D', long = "property", num_args = 3..=4, value_names = ["COMMAND", "NAME", "VALUE"])]
    pub property_words: Vec<String>,
    /// Print connection state changes, and the counters at the end, on stderr.
    #[arg(short = 'd', long)]
    pub debug: bool,
    /// Do not print error messages.
    #[arg(long)]
    pub quiet: bool,
    /// The will's topic.
    #[arg(long)]
    pub will_topic: Option<String>,
    /// The will's payload (default: empty).
    #[arg(long, requires = "will_topic")]
    pub will_payload: Option<String>,
    /// The will's QoS.
    #[arg(long, requires = "will_topic", default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=2))]
    pub will_qos: u8,
    /// Retain the will.
    #[arg(long, requires = "will_topic")]
    pub will_retain: bool,
    /// A CA certificate (PEM) to trust, on top of Mozilla's roots compiled in (or the
    /// system's with --tls-use-os-certs); turns TLS on.
    #[arg(long)]
    pub cafile: Option<PathBuf>,
    /// A directory of CA certificates (PEM files) to trust, as --cafile; turns TLS on.
    #[arg(long)]
    pub capath: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS (with --key); turns TLS on.
    #[arg(long, requires = "key")]
    pub cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(long, requires = "cert")]
    pub key: Option<PathBuf>,
    /// Trust the operating system's certificate store (SSL_CERT_FILE / SSL_CERT_DIR when set)
    /// instead of Mozilla's roots compiled in; turns TLS on.
    #[arg(long, alias = "system-roots")]
    pub tls_use_os_certs: bool,
    /// A PKCS#12 bundle (.p12/.pfx) with the client certificate and key (with
    /// --p12-password-env); turns TLS on.
    #[arg(long, conflicts_with_all = ["cert", "key"], requires = "p12_password_env")]
    pub p12: Option<PathBuf>,
    /// The environment variable holding the --p12 password. Not the password itself: a
    /// command line is visible to every user of the machine (ps, /proc) and kept in shell
    /// history.
    #[arg(long, requires = "p12")]
    pub p12_password_env: Option<String>,
    /// mosquitto's SOCKS5 proxy: not supported (use --http-proxy).
    #[arg(long, hide = true)]
    pub proxy: Option<String>,
    /// Tunnel through this HTTP proxy: `http://[user:password@]host[:port]` (default:
    /// HTTPS_PROXY / HTTP_PROXY / ALL_PROXY, minus NO_PROXY).
    #[arg(long, conflicts_with = "no_proxy")]
    pub http_proxy: Option<String>,
    /// Connect directly, whatever the proxy environment variables say.
    #[arg(long)]
    pub no_proxy: bool,
    /// AWS IoT Core: this endpoint (`<id>-ats.iot.<region>.amazonaws.com`, or a URL) instead
    /// of -h/-p/-L. With --cert/--key or --p12 the device certificate authenticates (MQTT
    /// over mutual TLS, port 8883, or -p 443); otherwise SigV4 over wss:// with
    /// --cognito-pool, or the credentials of the environment or the AWS profile files.
    #[arg(long, conflicts_with = "url", value_name = "ENDPOINT")]
    pub aws_iot: Option<String>,
    /// AWS IoT: the region (default: the one in the endpoint's name).
    #[arg(long, requires = "aws_iot")]
    pub aws_region: Option<String>,
    /// AWS IoT: SigV4 credentials from this Amazon Cognito identity pool (unauthenticated
    /// identities).
    #[arg(long, requires = "aws_iot", conflicts_with_all = ["cert", "p12"])]
    pub cognito_pool: Option<String>,
    /// Accepted for mosquitto's sake: Nagle's algorithm is always off here.
    #[arg(long, hide = true)]
    pub nodelay: bool,
}

fn parse_version(v: &str) -> Result<MqttVersion, String> {
    match v {
        "5" | "mqttv5" => Ok(MqttVersion::V5),
        "311" | "mqttv311" | "3.1.1" => Ok(MqttVersion::V3_1_1),
        "31" | "mqttv31" => Err("MQTT 3.1 is not supported: give mqttv311 or mqttv5".into()),
        other => Err(format!("{other:?}: give mqttv5 or mqttv311")),
    }
}

/// The broker URL, and the user name, password and topic a `-L` URL carried.
type Target = (String, Option<String>, Option<String>, Option<String>);

/// A provider of either kind.
pub enum Built {
    Broker(Box<MqttOverWsProvider>),
    AwsIot(Box<mqtt_pubsub::AwsIotProvider>),
}

impl Built {
    /// Registers it on `pubsub` (connecting it).
    pub fn add_to(self, pubsub: &mqtt_pubsub::PubSub) -> mqtt_pubsub::Result<()> {
        match self {
            Built::Broker(p) => pubsub.add_provider(*p),
            Built::AwsIot(p) => pubsub.add_provider(*p),
        }
    }
}

/// What the connection flags make: the provider, and a topic the `-L` URL carried.
pub struct Made {
    pub provider: Built,
    pub url_topic: Option<String>,
}

/// The options both builders share, from the flags: one expansion per builder type.
macro_rules! common {
    ($conn:expr, $tool:expr, $b:expr, $url_user:expr, $url_password:expr, $outbox:expr) => {{
        let conn: &Connection = $conn;
        let mut b = $b
            .mqtt_version(conn.version)
            .keep_alive(Duration::from_secs(u64::from(conn.keepalive)))
            .clean_session(!conn.disable_clean_session);
        match (&conn.id, &conn.id_prefix) {
            (Some(id), _) => b = b.client_id(id),
            (None, Some(prefix)) => b = b.client_id(format!("{prefix}{}", std::process::id())),
            (None, None) if conn.disable_clean_session => {
                return Err(format!(
                    "{}: -c (a persistent session) needs a client id: give -i ID",
                    $tool
                ))
            }
            // As mosquitto: a session that outlives the connection gets an id of its own.
            (None, None) if conn.v5() && conn.session_expiry.is_some_and(|x| x != 0) => {
                b = b.client_id(format!("{}_{}", $tool, std::process::id()))
            }
            (None, None) => {}
        }
        let username = conn.username.clone().or($url_user);
        let password = conn.password.clone().or($url_password);
        b = match (username, password) {
            (Some(u), Some(p)) => b.username_password(u, p),
            (Some(u), None) => b.username(u),
            (None, Some(_)) => return Err("a password (-P) needs a user name (-u)".into()),
            (None, None) => b,
        };
        // As mosquitto: -x means nothing to MQTT 3.1.1 and is ignored there.
        if let Some(x) = conn.session_expiry.filter(|_| conn.v5()) {
            let secs = if x < 0 { u64::from(u32::MAX) } else { x as u64 };
            b = b.session_expiry(Duration::from_secs(secs));
        }
        if let Some(topic) = &conn.will_topic {
            let payload = conn.will_payload.clone().unwrap_or_default();
            let qos = QoS::try_from(conn.will_qos).map_err(|e| e.to_string())?;
            b = b.last_will(
                LastWill::new(topic.as_str(), payload)
                    .qos(qos)
                    .retain(conn.will_retain),
            );
        }
        if conn.tls_use_os_certs {
            b = b.trust_roots(mqtt_pubsub::TrustRoots::Platform);
        }
        for pem in conn.ca_pems()? {
            b = b.ca_pem(pem);
        }
        if let (Some(cert), Some(key)) = (&conn.cert, &conn.key) {
            b = b.client_cert_pem(read(cert)?, read(key)?);
        }
        if let (Some(p12), Some(var)) = (&conn.p12, &conn.p12_password_env) {
            let password = std::env::var(var).map_err(|_| p12_variable_missing(var))?;
            b = b.client_identity_p12(read(p12)?, password);
        }
        for prop in conn.connect_properties()? {
            b = match prop {
                ConnectProperty::SessionExpiry(d) => b.session_expiry(d),
                ConnectProperty::ReceiveMaximum(n) => b.receive_maximum(n),
                ConnectProperty::User(k, v) => b.connect_user_property(k, v),
            };
        }
        if let Some(proxy) = &conn.http_proxy {
            b = b.proxy(proxy);
        }
        if conn.no_proxy {
            b = b.no_proxy();
        }
        if let Some(dir) = $outbox {
            b = b.outbox(dir);
        }
        b
    }};
}

impl Connection {
    /// The `-D` properties, one `[command, name, value…]` each (a user property has two
    /// values, every other one).
    pub fn properties(&self) -> Vec<Vec<String>> {
        let mut words = self.property_words.iter().cloned();
        let mut out = Vec::new();
        while let (Some(command), Some(name)) = (words.next(), words.next()) {
            let values = if name == "user-property" { 2 } else { 1 };
            let mut p = vec![command, name];
            p.extend(words.by_ref().take(values));
            out.push(p);
        }
        out
    }

    /// Whether the connection speaks MQTT 5 (`-D` and `-x` apply only then, as in
    /// mosquitto's tools, which ignore them over 3.1.1).
    pub fn v5(&self) -> bool {
        self.version == MqttVersion::V5
    }

    fn tls(&self) -> bool {
        self.cafile.is_some()
            || self.capath.is_some()
            || self.cert.is_some()
            || self.p12.is_some()
            || self.tls_use_os_certs
    }

    /// The broker URL, user name, password and topic these flags say.
    fn target(&self) -> Result<Target, String> {
        let Some(given) = &self.url else {
            let (scheme, port) = if self.tls() {
                ("mqtts", 8883)
            } else {
                ("mqtt", 1883)
            };
            let host = self.host.as_deref().unwrap_or("localhost");
            let host = if host.contains(':') && !host.starts_with('[') {
                format!("[{host}]")
            } else {
                host.to_string()
            };
            let port = self.port.unwrap_or(port);
            return Ok((format!("{scheme}://{host}:{port}"), None, None, None));
        };
        let with_scheme = if given.contains("://") {
            given.clone()
        } else {
            format!("mqtt://{given}")
        };
        // Never echoed as given: it may carry a password.
        let mut url = url::Url::parse(&with_scheme)
            .map_err(|e| format!("-L {}: {e}", without_password(given)))?;
        let decode = |s: &str| {
            percent_decode(s)
                .ok_or_else(|| "-L: bad percent-encoding in the user name or password".to_string())
        };
        let user = match url.username() {
            "" => None,
            u => Some(decode(u)?),
        };
        let password = url.password().map(decode).transpose()?;
        let _ = url.set_username("");
        let _ = url.set_password(None);
        let mut topic = None;
        if matches!(url.scheme(), "mqtt" | "mqtts") {
            // As mosquitto: the path is the topic as written (not percent-decoded).
            let path = url.path().trim_start_matches('/').to_string();
            if !path.is_empty() {
                topic = Some(path);
            }
            url.set_path("");
        }
        // As mosquitto: -h and -p given as well override the URL's.
        if let Some(h) = &self.host {
            url.set_host(Some(h)).map_err(|e| format!("-h {h}: {e}"))?;
        }
        if let Some(p) = self.port {
            let _ = url.set_port(Some(p));
        }
        Ok((url.to_string(), user, password, topic))
    }

    /// The provider these flags describe, with a durable outbox in `outbox` if given.
    pub fn make(&self, tool: &str, outbox: Option<&Path>) -> Result<Made, String> {
        if let Some(p) = &self.proxy {
            return Err(format!(
                "--proxy {p}: SOCKS proxies are not supported; --http-proxy takes an HTTP \
                 proxy that tunnels with CONNECT"
            ));
        }
        if let Some(endpoint) = &self.aws_iot {
            let mut b = mqtt_pubsub::AwsIotProvider::builder(endpoint.as_str());
            if let Some(r) = &self.aws_region {
                b = b.region(r);
            }
            if let Some(p) = self.port {
                b = b.port(p);
            }
            let identity = self.cert.is_some() || self.p12.is_some();
            b = match (&self.cognito_pool, identity) {
                (Some(pool), _) => b.credentials(
                    mqtt_pubsub::aws::CognitoCredentials::unauthenticated(pool.as_str()),
                ),
                // The device certificate authenticates (client_cert_pem or the bundle,
                // below, select certificate mode); else the default chain (environment,
                // profile files).
                (None, true) => b,
                (None, false) => b.credentials(mqtt_pubsub::aws::DefaultCredentials::new()),
            };
            let b = common!(self, tool, b, None, None, outbox);
            let provider = b.build().map_err(|e| e.to_string())?;
            return Ok(Made {
                provider: Built::AwsIot(Box::new(provider)),
                url_topic: None,
            });
        }
        let (url, url_user, url_password, url_topic) = self.target()?;
        let b = common!(
            self,
            tool,
            MqttOverWsProvider::builder(url.as_str()),
            url_user,
            url_password,
            outbox
        );
        let provider = b.build().map_err(|e| e.to_string())?;
        Ok(Made {
            provider: Built::Broker(Box::new(provider)),
            url_topic,
        })
    }

    /// The CA certificates of --cafile and --capath.
    fn ca_pems(&self) -> Result<Vec<Vec<u8>>, String> {
        let mut pems = Vec::new();
        if let Some(ca) = &self.cafile {
            pems.push(read(ca)?);
        }
        if let Some(dir) = &self.capath {
            pems.extend(ca_directory(dir)?);
        }
        Ok(pems)
    }

    /// The `-D connect …` properties (none over MQTT 3.1.1, as mosquitto's tools), after
    /// checking every `-D` whatever the version.
    fn connect_properties(&self) -> Result<Vec<ConnectProperty>, String> {
        let properties = self.properties();
        let mut out = Vec::new();
        for p in properties.iter().filter(|p| p[0] == "connect" && self.v5()) {
            let value = |i: usize| p.get(i).cloned().unwrap_or_default();
            out.push(match p[1].as_str() {
                "session-expiry-interval" => ConnectProperty::SessionExpiry(Duration::from_secs(
                    number(&value(2), "session-expiry-interval")?,
                )),
                "receive-maximum" => ConnectProperty::ReceiveMaximum(
                    u16::try_from(number(&value(2), "receive-maximum")?)
                        .map_err(|_| "receive-maximum: at most 65535".to_string())?,
                ),
                "user-property" if p.len() == 4 => ConnectProperty::User(value(2), value(3)),
                other => return Err(unsupported("connect", other)),
            });
        }
        check_properties(&properties)?;
        Ok(out)
    }
}

/// A `-D connect` property.
enum ConnectProperty {
    SessionExpiry(Duration),
    ReceiveMaximum(u16),
    User(String, String),
}

/// Every `-D`: a command this tool sends properties for, a name it knows, the values it
/// takes (checked whatever the version, as mosquitto's tools do).
fn check_properties(properties: &[Vec<String>]) -> Result<(), String> {
    for p in properties {
        if p[0] != "connect" && p[0] != "publish" {
            return Err(format!(
                "-D {}: properties are supported for connect and publish",
                p[0]
            ));
        }
        if p[1] == "user-property" && p.len() != 4 {
            return Err("-D … user-property takes a key and a value".into());
        }
        let known: &[&str] = if p[0] == "connect" {
            &[
                "session-expiry-interval",
                "receive-maximum",
                "user-property",
            ]
        } else {
            &[
                "content-type",
                "correlation-data",
                "message-expiry-interval",
                "payload-format-indicator",
                "response-topic",
                "user-property",
            ]
        };
        if !known.contains(&p[1].as_str()) {
            return Err(unsupported(&p[0], &p[1]));
        }
    }
    Ok(())
}

/// `-D COMMAND NAME` that this tool does not send.
pub fn unsupported(command: &str, name: &str) -> String {
    format!("-D {command} {name}: not a property this tool can send")
}

/// A whole number from a `-D` value.
pub fn number(value: &str, what: &str) -> Result<u64, String> {
    value
        .parse()
        .map_err(|_| format!("{what}: {value:?} is not a whole number"))
}

/// A file's bytes, or an error naming it.
pub fn read(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))
}

/// Every PEM file in a `--capath` directory (OpenSSL's hashed links included: a certificate
/// reached twice is trusted once, which is harmless).
fn ca_directory(dir: &Path) -> Result<Vec<Vec<u8>>, String> {
    let entries = std::fs::read_dir(dir).map_err(|e| format!("--capath {}: {e}", dir.display()))?;
    let mut pems = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        if !path.is_file() {
            continue;
        }
        let bytes = read(&path)?;
        if bytes
            .windows(27)
            .any(|w| w == b"-----BEGIN CERTIFICATE-----")
        {
            pems.push(bytes);
        }
    }
    if pems.is_empty() {
        return Err(format!(
            "--capath {}: no PEM certificate in that directory",
            dir.display()
        ));
    }
    Ok(pems)
}

/// A URL as given with the password of its user information replaced (for errors).
fn without_password(given: &str) -> String {
    let Some((scheme, rest)) = given.split_once("://") else {
        return given.to_string();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) if rest[..at].contains(':') => {
            let user = rest[..at].split(':').next().unwrap_or_default();
            format!("{scheme}://{user}:<redacted>{}", &rest[at..])
        }
        _ => given.to_string(),
    }
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// `--p12-password-env VAR` names no set variable. A name is shown; anything else may be a
/// password given there by mistake, and is not echoed.
fn p12_variable_missing(var: &str) -> String {
    let looks_like_a_name = !var.is_empty()
        && var
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
    let shown = if looks_like_a_name {
        var
    } else {
        "(not shown)"
    };
    format!(
        "--p12-password-env {shown}: no environment variable of that name is set (give the \
         name of a variable that holds the password, not the password)"
    )
}

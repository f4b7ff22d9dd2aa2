// The connection flags shared by the `pub` and `sub` examples (`include!`d), like
// mosquitto_pub/sub's.

/// Where and how to connect.
#[derive(clap::Args, Debug)]
struct Connection {
    /// Broker URL: ws://host:port/path, wss://..., mqtt://host[:1883] or mqtts://host[:8883]
    #[arg(long)]
    url: String,
    /// MQTT client identifier (default: random).
    #[arg(short = 'i', long)]
    client_id: Option<String>,
    /// User name (with --password).
    #[arg(short, long, requires = "password")]
    username: Option<String>,
    /// Password (with --username).
    #[arg(short = 'P', long, requires = "username")]
    password: Option<String>,
    /// A CA certificate (PEM file) to trust for wss:// and mqtts://, on top of the roots
    /// trusted anyway: Mozilla's (compiled in), or the system's with --system-roots.
    #[arg(long)]
    cafile: Option<std::path::PathBuf>,
    /// Trust the operating system's certificate store (SSL_CERT_FILE / SSL_CERT_DIR when
    /// set) instead of Mozilla's roots compiled into the program.
    #[arg(long)]
    system_roots: bool,
    /// A client certificate chain (PEM file) for mutual TLS (with --key).
    #[arg(long, requires = "key")]
    cert: Option<std::path::PathBuf>,
    /// The client certificate's private key (PEM file) (with --cert).
    #[arg(long, requires = "cert")]
    key: Option<std::path::PathBuf>,
    /// A PKCS#12 bundle (.p12/.pfx) holding the client certificate and key, for mutual TLS
    /// (with --p12-password-env).
    #[cfg(feature = "pkcs12")]
    #[arg(long, conflicts_with_all = ["cert", "key"], requires = "p12_password_env")]
    p12: Option<std::path::PathBuf>,
    /// The environment variable holding the --p12 bundle's password. Not the password
    /// itself: a command line is visible to every user of the machine (ps, /proc) and kept in
    /// shell history.
    #[cfg(feature = "pkcs12")]
    #[arg(long, requires = "p12")]
    p12_password_env: Option<String>,
    /// An HTTP proxy to tunnel through: http://[user:password@]host[:port]
    /// (default: HTTPS_PROXY / HTTP_PROXY / ALL_PROXY, minus NO_PROXY).
    #[arg(long, conflicts_with = "no_proxy")]
    proxy: Option<String>,
    /// Connect directly, whatever the proxy environment variables say.
    #[arg(long)]
    no_proxy: bool,
    /// MQTT version: 5 (or mqttv5) or 3.1.1 (311, mqttv311; the default).
    #[arg(short = 'V', long, default_value = "3.1.1", value_parser = parse_version)]
    mqtt_version: mqtt_pubsub::MqttVersion,
}

fn parse_version(v: &str) -> Result<mqtt_pubsub::MqttVersion, String> {
    match v {
        "5" | "mqttv5" => Ok(mqtt_pubsub::MqttVersion::V5),
        "3.1.1" | "311" | "mqttv311" => Ok(mqtt_pubsub::MqttVersion::V3_1_1),
        other => Err(format!("{other:?}: give 5 or 3.1.1")),
    }
}

impl Connection {
    /// The provider these flags describe.
    fn builder(&self) -> Result<mqtt_pubsub::MqttOverWsProviderBuilder, Box<dyn std::error::Error>> {
        let read = |p: &std::path::Path| {
            std::fs::read(p).map_err(|e| format!("reading {}: {e}", p.display()))
        };
        let mut b = mqtt_pubsub::MqttOverWsProvider::builder(&self.url)
            .mqtt_version(self.mqtt_version);
        if let Some(id) = &self.client_id {
            b = b.client_id(id);
        }
        if let (Some(u), Some(p)) = (&self.username, &self.password) {
            b = b.username_password(u, p);
        }
        if self.system_roots {
            b = b.trust_roots(mqtt_pubsub::TrustRoots::Platform);
        }
        if let Some(ca) = &self.cafile {
            b = b.ca_pem(read(ca)?);
        }
        if let (Some(cert), Some(key)) = (&self.cert, &self.key) {
            b = b.client_cert_pem(read(cert)?, read(key)?);
        }
        #[cfg(feature = "pkcs12")]
        if let (Some(p12), Some(var)) = (&self.p12, &self.p12_password_env) {
            let password = std::env::var(var).map_err(|_| p12_variable_missing(var))?;
            b = b.client_identity_p12(read(p12)?, password);
        }
        if let Some(proxy) = &self.proxy {
            b = b.proxy(proxy);
        }
        if self.no_proxy {
            b = b.no_proxy();
        }
        Ok(b)
    }
}

/// `--p12-password-env VAR` names no set variable. A name is shown; anything else may be a
/// password given there by mistake, and is not echoed.
#[cfg(feature = "pkcs12")]
fn p12_variable_missing(var: &str) -> String {
    let looks_like_a_name = !var.is_empty()
        && var
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
    let shown = if looks_like_a_name { var } else { "(not shown)" };
    format!(
        "--p12-password-env {shown}: no environment variable of that name is set (give the \
         name of a variable that holds the password, not the password)"
    )
}

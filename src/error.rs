//! The one error type of the crate.

use std::fmt;
use std::io;

/// Which blocking operation ran out of time.
///
/// ```no_run
/// use mqtt_pubsub::{Error, Operation};
/// # let pubsub = mqtt_pubsub::PubSub::new();
/// match pubsub.flush(std::time::Duration::from_secs(5)) {
///     Err(Error::Timeout { operation: Operation::Flush, unfinished, .. }) => {
///         eprintln!("still unfinished: {unfinished:?}");
///     }
///     other => other?,
/// }
/// # Ok::<(), mqtt_pubsub::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Operation {
    /// TCP connect, TLS and WebSocket handshakes, CONNECT → CONNACK.
    Connect,
    /// Waiting for PUBACK (QoS 1) or PUBCOMP (QoS 2), or for room in the outgoing queue.
    Publish,
    /// Waiting for SUBACK.
    Subscribe,
    /// Waiting for the I/O thread to remove a subscription.
    Unsubscribe,
    /// Waiting for the I/O thread to send DISCONNECT and stop.
    Close,
    /// Waiting in [`PubSub::flush`](crate::PubSub::flush).
    Flush,
    /// Waiting for the response in [`PubSub::request`](crate::PubSub::request).
    Request,
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Operation::Connect => "connect",
            Operation::Publish => "publish",
            Operation::Subscribe => "subscribe",
            Operation::Unsubscribe => "unsubscribe",
            Operation::Close => "close",
            Operation::Flush => "flush",
            Operation::Request => "request",
        })
    }
}

/// The return code of a refused CONNACK (MQTT 3.1.1 §3.2.2.3: 1–5; MQTT 5 §3.2.2.2: the
/// reason codes from 0x80 on).
///
/// ```
/// use mqtt_pubsub::{ConnackCode, Error};
/// let e = Error::ConnectionRefused(ConnackCode(5));
/// if let Error::ConnectionRefused(code) = &e {
///     assert_eq!(code.meaning(), "not authorized");
/// }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnackCode(pub u8);

impl ConnackCode {
    /// What the code means, as the specification words it.
    pub fn meaning(self) -> &'static str {
        match self.0 {
            0 => "connection accepted",
            1 => "unacceptable protocol version (for MQTT 5: the server speaks 3.1.1 only)",
            2 => "client identifier rejected",
            3 => "server unavailable",
            4 => "bad user name or password",
            5 => "not authorized",
            c @ 0x80.. => crate::mqtt::reason::ReasonCode(c).meaning(),
            _ => "unknown return code",
        }
    }
}

impl fmt::Display for ConnackCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.0, self.meaning())
    }
}

/// Everything that can go wrong, one enum for the whole crate.
///
/// The message (`Display`) tells the whole story, the cause's own text included, so that
/// printing an error once says everything; [`std::error::Error::source`] is therefore
/// `None`, so that a chain printer (`anyhow`'s `{:#}`, `eyre`) does not print the cause
/// twice. An error that comes from elsewhere keeps its cause in the variant's field (I/O,
/// rustls, JSON, UTF-8) for code that needs the typed value.
///
/// ```no_run
/// use mqtt_pubsub::{Error, MqttOverWsProvider, PubSub, PublishOptions, QoS};
/// let pubsub = PubSub::new();
/// pubsub.add_provider(MqttOverWsProvider::builder("ws://localhost:8080/mqtt").build()?)?;
/// match pubsub.publish_with("a/b", "x", PublishOptions::default().qos(QoS::AtLeastOnce)) {
///     Ok(()) => {}
///     Err(Error::Timeout { .. }) => eprintln!("no PUBACK yet; it may still be delivered"),
///     Err(Error::Refused(what)) => eprintln!("the broker will not take {what}"),
///     Err(e) => return Err(e),
/// }
/// # Ok::<(), mqtt_pubsub::Error>(())
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The broker URL could not be parsed or has an unsupported scheme.
    InvalidUrl(String),
    /// A configuration value is out of range or inconsistent.
    InvalidConfig(String),
    /// DNS resolution, TCP connect or a socket read/write failed.
    Io {
        /// What was being done.
        context: &'static str,
        /// The underlying error.
        source: io::Error,
        /// Where to, for an error while connecting: the URL of the attempt, without
        /// credentials or query (`mqtt://127.0.0.1:1883`).
        target: Option<String>,
    },
    /// TLS failed: unknown certificate authority, name mismatch, bad PEM, ...
    Tls {
        /// What failed, in words.
        message: String,
        /// The underlying error (rustls', or the PEM parser's), when there is one.
        source: Option<BoxError>,
    },
    /// The HTTP proxy could not be reached or refused the tunnel (`CONNECT`).
    Proxy {
        /// The proxy, as `http://[user@]host:port` (never its password).
        proxy: String,
        /// The status it answered `CONNECT` with (407: credentials wanted or refused, 403:
        /// not allowed, 502: it could not reach the broker), when it answered.
        status: Option<u16>,
        /// What happened, in words.
        message: String,
    },
    /// The server answered the WebSocket upgrade with something other than `101`.
    HandshakeRejected {
        /// The HTTP status code (403 means the signature or policy was refused on AWS IoT).
        status: u16,
        /// A hint on what to check.
        hint: String,
        /// The URL of the upgrade, without credentials or query.
        target: Option<String>,
    },
    /// A WebSocket protocol error (bad frame, unexpected close, text frame, ...).
    WebSocket {
        /// What failed, in words.
        message: String,
        /// tungstenite's error, when there is one.
        source: Option<BoxError>,
    },
    /// The broker refused the connection in its CONNACK.
    ConnectionRefused(ConnackCode),
    /// The broker sent bytes that are not valid MQTT, or a packet it must never send.
    Protocol(String),
    /// MQTT 5: the server refused a publish with a failure reason code in PUBACK or PUBREC
    /// (e.g. 0x87 not authorized, 0x97 quota exceeded). Nothing is resent.
    Rejected {
        /// Which publish.
        what: String,
        /// The reason code.
        code: crate::mqtt::reason::ReasonCode,
        /// The server's reason string, if it sent one.
        reason: Option<String>,
    },
    /// MQTT 5: the server closed the connection with a DISCONNECT packet, naming why (e.g.
    /// 0x8b server shutting down, 0x9c use another server, 0x9d server moved: then
    /// `server_reference` says where). The connection comes back by itself like after any
    /// other loss.
    ServerDisconnect {
        /// The reason code.
        code: crate::mqtt::reason::ReasonCode,
        /// The server's reason string, if it sent one.
        reason: Option<String>,
        /// The server reference ("use another server", "server moved"), if it sent one.
        server_reference: Option<String>,
    },
    /// An incoming packet is larger than the configured maximum.
    PacketTooLarge {
        /// Its announced size in bytes.
        size: usize,
        /// The configured limit.
        max: usize,
    },
    /// A blocking call ran out of time.
    Timeout {
        /// Which operation.
        operation: Operation,
        /// Additional context (e.g. "the message may still be delivered").
        detail: &'static str,
        /// For a flush: how many publishes were still unfinished (queued, or awaiting
        /// acknowledgement, on every provider; commands not yet taken by a provider's
        /// thread count too).
        unfinished: Option<usize>,
        /// For a connect: the URL of the attempt (without credentials or query).
        target: Option<String>,
        /// The time limit that ran out, where one call has one (a connect's
        /// `connect_timeout`, an unsubscribe's operation timeout).
        limit: Option<std::time::Duration>,
    },
    /// The broker refused a subscription (SUBACK return code 0x80 and above).
    SubscriptionRefused {
        /// The refused filter.
        filter: String,
        /// The provider that refused it.
        provider: String,
        /// MQTT 5: the reason code, and the server's reason string when it sent one.
        reason: Option<String>,
    },
    /// A topic name or filter is not valid.
    InvalidTopic {
        /// The topic as given (truncated to 100 bytes).
        topic: String,
        /// Why it is invalid.
        reason: &'static str,
    },
    /// A payload exceeds the provider's or the protocol's limit.
    PayloadTooLarge {
        /// The payload size in bytes (for a packet limit, the whole packet's).
        size: usize,
        /// The limit.
        max: usize,
        /// Whose limit it is and what it counts (e.g. "provider AWSIoTProvider's payload
        /// limit").
        limit: String,
    },
    /// The operation is not supported by this provider (e.g. QoS 2 on AWS IoT).
    Unsupported(String),
    /// The connection was lost before the operation completed.
    ConnectionLost(String),
    /// The broker closed the connection right after this message or subscription each time
    /// it was sent (three times in a row), which is how brokers refuse what they will not
    /// take: NATS for QoS 2 or a topic with a space, mosquitto for a control character in a
    /// topic or a packet over its size limit, AWS IoT for any policy denial. It was dropped
    /// so that the connection can carry on; nothing of it is resent.
    Refused(String),
    /// The provider or the `PubSub` was closed.
    Closed,
    /// No provider with this name is registered.
    UnknownProvider(String),
    /// A provider with this name is already registered.
    DuplicateProvider(String),
    /// The operation needs at least one provider and there is none.
    NoProviders,
    /// A payload is not valid UTF-8.
    Utf8(std::str::Utf8Error),
    /// A payload is not the JSON that was asked for, or a value could not be serialized.
    Json(serde_json::Error),
    /// AWS credentials could not be obtained.
    Credentials(String),
    /// Every URL of a provider with fallback URLs failed in one connect: each attempt's
    /// error, in the order tried (each names its URL).
    EveryUrlFailed(Vec<Error>),
    /// The durable outbox cannot be used: locked by another process, corrupt, bound to
    /// another client id or broker, or a write or fsync failed.
    Outbox {
        /// The outbox directory.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// The durable outbox holds its maximum of unfinished publishes: this one was not
    /// accepted (nothing is dropped to make room).
    OutboxFull {
        /// The outbox directory.
        path: String,
        /// Its bound, in bytes.
        max_bytes: u64,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::InvalidUrl(s) => write!(f, "invalid broker URL: {s}"),
            Error::InvalidConfig(s) => write!(f, "invalid configuration: {s}"),
            Error::Io {
                context,
                source,
                target,
            } => match target {
                Some(t) => write!(f, "{context} ({t}): {source}"),
                None => write!(f, "{context}: {source}"),
            },
            Error::Tls { message, .. } => write!(f, "TLS error: {message}"),
            Error::Proxy { proxy, message, .. } => write!(f, "proxy {proxy}: {message}"),
            Error::Outbox { path, message } => write!(f, "outbox {path}: {message}"),
            Error::OutboxFull { path, max_bytes } => write!(
                f,
                "outbox {path} is full ({max_bytes} bytes of unfinished publishes): \
                 not accepted; wait for acknowledgements (flush) or raise outbox_max_bytes"
            ),
            Error::HandshakeRejected {
                status,
                hint,
                target,
            } => {
                match target {
                    Some(t) => write!(f, "WebSocket upgrade at {t} refused with HTTP {status}")?,
                    None => write!(f, "WebSocket upgrade refused with HTTP {status}")?,
                }
                if !hint.is_empty() {
                    write!(f, ": {hint}")?;
                }
                Ok(())
            }
            Error::WebSocket { message, .. } => write!(f, "WebSocket error: {message}"),
            Error::ConnectionRefused(code) => write!(f, "broker refused the connection: {code}"),
            Error::Protocol(s) => write!(f, "MQTT protocol error: {s}"),
            Error::Rejected { what, code, reason } => {
                write!(f, "the server refused {what} with reason code {code}")?;
                if let Some(r) = reason {
                    write!(f, ": {r}")?;
                }
                Ok(())
            }
            Error::ServerDisconnect {
                code,
                reason,
                server_reference,
            } => {
                write!(f, "the server disconnected with reason code {code}")?;
                if let Some(r) = reason {
                    write!(f, ": {r}")?;
                }
                if let Some(s) = server_reference {
                    write!(f, " (server reference: {s})")?;
                }
                Ok(())
            }
            Error::PacketTooLarge { size, max } => {
                write!(
                    f,
                    "incoming packet of {size} bytes exceeds the limit of {max} bytes"
                )
            }
            Error::Timeout {
                operation,
                detail,
                unfinished,
                target,
                limit,
            } => {
                write!(f, "{operation}")?;
                if let Some(t) = target {
                    write!(f, " to {t}")?;
                }
                write!(f, " timed out")?;
                if let Some(l) = limit {
                    write!(f, " after {}", crate::error::seconds(*l))?;
                }
                if let Some(n) = unfinished {
                    let noun = if *n == 1 { "publish" } else { "publishes" };
                    write!(f, " with {n} {noun} unfinished")?;
                }
                if !detail.is_empty() {
                    write!(f, " ({detail})")?;
                }
                Ok(())
            }
            Error::SubscriptionRefused {
                filter,
                provider,
                reason,
            } => {
                write!(
                    f,
                    "provider {provider} refused the subscription to {filter:?}"
                )?;
                if let Some(r) = reason {
                    write!(f, " ({r})")?;
                }
                Ok(())
            }
            Error::InvalidTopic { topic, reason } => write!(f, "invalid topic {topic:?}: {reason}"),
            Error::PayloadTooLarge { size, max, limit } => {
                write!(f, "{size} bytes exceed {limit} of {max} bytes")
            }
            Error::Unsupported(s) => write!(f, "unsupported: {s}"),
            Error::ConnectionLost(s) => write!(f, "connection lost: {s}"),
            Error::Refused(s) => write!(
                f,
                "the broker closed the connection right after {s}: it refuses it \
                 (unsupported QoS, a topic or size it rejects, or an ACL/policy denial); \
                 dropped"
            ),
            Error::Closed => f.write_str("closed"),
            Error::UnknownProvider(s) => write!(f, "no provider named {s:?}"),
            Error::DuplicateProvider(s) => {
                write!(f, "a provider named {s:?} is already registered")
            }
            Error::NoProviders => f.write_str("no provider is registered"),
            Error::Utf8(e) => write!(f, "payload is not UTF-8: {e}"),
            Error::Json(e) => write!(f, "JSON: {e}"),
            Error::Credentials(s) => write!(f, "AWS credentials: {s}"),
            Error::EveryUrlFailed(errors) => {
                write!(f, "every URL failed")?;
                for (i, e) in errors.iter().enumerate() {
                    write!(f, "{} {}. {e}", if i == 0 { ":" } else { ";" }, i + 1)?;
                }
                Ok(())
            }
        }
    }
}

/// A duration as a person reads it in an error: "10 s", "1.5 s", "250 ms".
pub(crate) fn seconds(d: std::time::Duration) -> String {
    if d.as_millis() < 1000 {
        format!("{} ms", d.as_millis())
    } else if d.subsec_millis() == 0 {
        format!("{} s", d.as_secs())
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}

/// `source()` is `None`: the message already carries the cause's text (see [`Error`]).
impl std::error::Error for Error {}

/// A boxed error kept as the [`std::error::Error::source`] of an [`Error`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

impl Error {
    /// A TLS error with its cause.
    pub(crate) fn tls(
        message: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Error {
        Error::Tls {
            message: message.into(),
            source: Some(Box::new(source)),
        }
    }

    /// A TLS error without an underlying one.
    pub(crate) fn tls_msg(message: impl Into<String>) -> Error {
        Error::Tls {
            message: message.into(),
            source: None,
        }
    }

    /// A WebSocket error without an underlying one.
    pub(crate) fn websocket_msg(message: impl Into<String>) -> Error {
        Error::WebSocket {
            message: message.into(),
            source: None,
        }
    }

    pub(crate) fn invalid_topic(topic: &str, reason: &'static str) -> Error {
        let mut end = topic.len().min(100);
        while !topic.is_char_boundary(end) {
            end -= 1;
        }
        Error::InvalidTopic {
            topic: topic[..end].to_string(),
            reason,
        }
    }

    pub(crate) fn timeout(operation: Operation, detail: &'static str) -> Error {
        Error::Timeout {
            operation,
            detail,
            unfinished: None,
            target: None,
            limit: None,
        }
    }

    /// This error of a connection attempt to `target` (a URL without credentials or query),
    /// naming it, and the limit `connect_limit` for a connect timeout. Errors that name their
    /// target already are left as they are.
    pub(crate) fn at(self, target: &str, connect_limit: std::time::Duration) -> Error {
        // Named already: the URL, or its host and port, is in the text (a host alone is not
        // enough: two URLs of one host differ by port).
        let authority = url::Url::parse(target)
            .ok()
            .and_then(|u| {
                let host = u.host_str()?.to_string();
                Some(match u.port_or_known_default() {
                    Some(p) => format!("{host}:{p}"),
                    None => host,
                })
            })
            .unwrap_or_default();
        let named = |text: &str| {
            text.contains(target) || (!authority.is_empty() && text.contains(&authority))
        };
        match self {
            Error::Io {
                context,
                source,
                target: None,
            } => Error::Io {
                context,
                source,
                target: Some(target.to_string()),
            },
            Error::Timeout {
                operation: Operation::Connect,
                detail,
                unfinished,
                target: None,
                limit,
            } => Error::Timeout {
                operation: Operation::Connect,
                detail,
                unfinished,
                target: Some(target.to_string()),
                limit: limit.or(Some(connect_limit)),
            },
            Error::HandshakeRejected {
                status,
                hint,
                target: None,
            } => Error::HandshakeRejected {
                status,
                hint,
                target: Some(target.to_string()),
            },
            Error::Tls { message, source } if !named(&message) => Error::Tls {
                message: format!("{message} ({target})"),
                source,
            },
            Error::WebSocket { message, source } if !named(&message) => Error::WebSocket {
                message: format!("{target}: {message}"),
                source,
            },
            Error::Protocol(s) if !named(&s) => Error::Protocol(format!("{target}: {s}")),
            Error::ConnectionLost(s) if !named(&s) => {
                Error::ConnectionLost(format!("{target}: {s}"))
            }
            other => other,
        }
    }

    /// Whether retrying the connection later could succeed (used by the reconnect loop to
    /// tell a refused configuration from a passing outage; both are retried, but the former
    /// is reported louder).
    pub(crate) fn is_auth_refusal(&self) -> bool {
        if let Error::EveryUrlFailed(errors) = self {
            return errors.iter().any(Error::is_auth_refusal);
        }
        matches!(
            self,
            Error::ConnectionRefused(ConnackCode(4 | 5 | 0x86 | 0x87 | 0x8a | 0x8c))
                | Error::HandshakeRejected {
                    status: 401 | 403,
                    ..
                }
                | Error::Proxy {
                    status: Some(407),
                    ..
                }
        )
    }
}

/// The secrets of every provider built in this process (passwords, tokens, header values,
/// proxy credentials, each also as percent-encoded and base64 text): whatever a server
/// echoes of them is replaced by `<redacted>` in [`printable_max`], which every error, state
/// event and log line that carries text from elsewhere goes through.
static SECRETS: std::sync::RwLock<Vec<String>> = std::sync::RwLock::new(Vec::new());

/// Shortest value taken as a secret: shorter ones (`1`, `true`) would blank out ordinary
/// words, and are no secret worth the name.
const MIN_SECRET: usize = 4;

/// RFC 3986 percent-encoding: unreserved `A-Z a-z 0-9 - _ . ~` stay, the rest is `%XX`.
pub(crate) fn rfc3986(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Registers `secret` (and its percent-encoded and base64 forms) for redaction.
pub(crate) fn register_secret(secret: &str) {
    if secret.len() < MIN_SECRET {
        return;
    }
    let mut forms = vec![secret.to_string(), base64(secret.as_bytes())];
    let encoded: String =
        url::form_urlencoded::byte_serialize(secret.as_bytes()).collect::<String>();
    // Percent-encoded as a form would, as a URI would, and with lower-case hex digits.
    let lower_hex = |s: &str| {
        let mut out = String::with_capacity(s.len());
        let mut hex = 0;
        for c in s.chars() {
            if c == '%' {
                hex = 2;
                out.push(c);
            } else if hex > 0 {
                hex -= 1;
                out.push(c.to_ascii_lowercase());
            } else {
                out.push(c);
            }
        }
        out
    };
    forms.push(lower_hex(&encoded));
    // RFC 3986 (what SigV4 and a custom authorizer's MQTT username use): `~` kept, `*`
    // encoded, the reverse of a form's choices.
    let rfc3986 = rfc3986(secret);
    forms.push(lower_hex(&rfc3986));
    forms.push(rfc3986);
    forms.push(encoded.replace('+', "%20"));
    forms.push(lower_hex(&encoded.replace('+', "%20")));
    forms.push(encoded.clone());
    let mut all = SECRETS.write().unwrap_or_else(|e| e.into_inner());
    for f in forms {
        // A base64 form ends in padding that a server may drop; the body still identifies it.
        let f = f.trim_end_matches('=').to_string();
        if f.len() >= MIN_SECRET && !all.contains(&f) {
            all.push(f);
        }
    }
    // Longest first, so that a secret containing another is replaced whole.
    all.sort_by_key(|s| std::cmp::Reverse(s.len()));
}

/// Registers a user name and password as HTTP Basic credentials: the password, and
/// `base64(user:password)` as a `Proxy-Authorization`/`Authorization` echo would show it.
pub(crate) fn register_basic(user: &str, password: &str) {
    register_secret(password);
    register_secret(&format!("{user}:{password}"));
}

/// RFC 3986 percent-decoding of a URL's user name or password; `None` when it is malformed
/// or not UTF-8.
pub(crate) fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let pair = bytes.get(i + 1..i + 3)?;
            // Two hex digits, nothing else (`from_str_radix` would take `+1`).
            if !pair.iter().all(u8::is_ascii_hexdigit) {
                return None;
            }
            out.push(u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Standard base64 with padding (RFC 4648).
pub(crate) fn base64(input: &[u8]) -> String {
    const TABLE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(TABLE[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Whether `c` must not appear as itself in a log line: control characters (new lines,
/// ESC), the Unicode line and paragraph separators (which some viewers and JSON-based log
/// pipelines break lines at) and the bidirectional overrides (which reorder what is shown).
fn unprintable(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// Text from elsewhere (a topic, a server's close reason, body or reason string) made safe
/// to put into a log line or an error — the one function all such text goes through: every
/// registered secret it echoes is replaced by `<redacted>`, characters that could forge or
/// reorder lines are escaped, and it is cut at `max` bytes.
pub(crate) fn printable_max(s: &str, max: usize) -> String {
    // Redacted before it is cut, so that a cut cannot leave part of a secret behind; only
    // as much of a long text as can be shown is looked at (plus the longest secret).
    let secrets = SECRETS.read().unwrap_or_else(|e| e.into_inner());
    let longest = secrets.first().map_or(0, String::len);
    let mut end = s.len().min(max.saturating_mul(4).saturating_add(longest));
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    let mut text = std::borrow::Cow::Borrowed(&s[..end]);
    for secret in secrets.iter() {
        if text.contains(secret.as_str()) {
            text = std::borrow::Cow::Owned(text.replace(secret.as_str(), "<redacted>"));
        }
    }
    drop(secrets);
    // A secret cut in two by the window's end no longer matches: when the text went on
    // beyond the window, its last `longest` bytes are never shown.
    if end < s.len() {
        let mut keep = text.len().saturating_sub(longest);
        while !text.is_char_boundary(keep) {
            keep -= 1;
        }
        text = std::borrow::Cow::Owned(text[..keep].to_string());
    }
    let mut out = String::with_capacity(text.len().min(max) + 8);
    for c in text.chars() {
        if out.len() >= max {
            out.push('…');
            break;
        }
        if unprintable(c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    if end < s.len() && !out.ends_with('…') {
        out.push('…');
    }
    out
}

/// [`printable_max`] at 200 bytes.
pub(crate) fn printable(s: &str) -> String {
    printable_max(s, 200)
}

/// `Result` with this crate's [`Error`].
///
/// ```no_run
/// fn send(pubsub: &mqtt_pubsub::PubSub) -> mqtt_pubsub::Result<()> {
///     pubsub.publish("a/b", "x")
/// }
/// ```
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    /// A secret is found in its RFC 3986 percent-encoded form too (`~` kept, `*` encoded), as
    /// a custom authorizer's token is sent in an MQTT username. Found by the hostile review
    /// of the TLS and identity work: such a token, echoed by a server, reached the logs.
    #[test]
    fn a_secret_is_redacted_in_its_uri_encoded_form() {
        for token in ["tok~en+val/ue-0917", "tokAB*CDen-0917"] {
            register_secret(token);
            let echoed = rfc3986(token);
            let out = printable(&format!("server said: user?x-token={echoed}&x=1"));
            assert!(!out.contains(&echoed), "{out}");
            assert!(out.contains("<redacted>"), "{out}");
        }
    }

    /// A chain printer prints each cause once: the message has the cause's text, and
    /// `source()` adds nothing.
    #[test]
    fn a_cause_is_printed_once() {
        let e = Error::Io {
            context: "TCP connect",
            source: std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused"),
            target: None,
        };
        assert_eq!(e.to_string(), "TCP connect: refused");
        assert!(std::error::Error::source(&e).is_none());
        let json = serde_json::from_str::<u8>("x").unwrap_err();
        let e = Error::Json(json);
        assert!(e.to_string().starts_with("JSON: "));
        assert!(std::error::Error::source(&e).is_none());
    }

    /// Found by the hostile review: a text of many copies of a secret shrinks as it is
    /// redacted, and the copy cut in two at the look-ahead window's end was shown.
    #[test]
    fn no_part_of_a_secret_survives_the_window() {
        let secret = "S3cr3t-".repeat(9) + "XYZ";
        register_secret(&secret);
        for copies in [1, 3, 13, 20, 200] {
            let out = printable(&secret.repeat(copies));
            assert!(!out.contains("S3cr3t-S3cr3t"), "{copies}: {out}");
        }
        // Lower-case percent-encoding is redacted too.
        register_secret("p@ss/w0rd!");
        assert_eq!(printable("x p%40ss%2fw0rd%21 y"), "x <redacted> y");
        // Line separators and escapes.
        assert_eq!(printable("a\nb\u{2028}c"), "a\\nb\\u{2028}c");
    }
}

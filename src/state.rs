//! Connection state, as Amplify names it, and its change events.

use std::fmt;
use std::sync::{Arc, Mutex};

use crossbeam_channel::{Receiver, Sender};

/// The state of one provider's connection.
///
/// ```no_run
/// use mqtt_pubsub::ConnectionState;
/// # let pubsub = mqtt_pubsub::PubSub::new();
/// if pubsub.state("default") == Some(ConnectionState::Connected) {
///     pubsub.publish("status", "up")?;
/// }
/// # Ok::<(), mqtt_pubsub::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
#[repr(u8)]
pub enum ConnectionState {
    /// Opening the connection (first time or reconnecting).
    Connecting,
    /// CONNACK accepted; publishing and subscribing flow.
    Connected,
    /// The connection was lost or an attempt failed; it will be retried after a backoff.
    ConnectionDisrupted,
    /// Closed for good: removed, `PubSub` closed, or lost with reconnecting disabled.
    Disconnected,
}

impl fmt::Display for ConnectionState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// A provider's current state, readable without a lock from any thread, and what its
/// server's last CONNACK allows (so that a publish it would refuse fails at the call).
#[derive(Debug)]
pub(crate) struct SharedState {
    state: std::sync::atomic::AtomicU8,
    /// Maximum QoS (0–2) | retain available (bit 7).
    caps: std::sync::atomic::AtomicU8,
    /// Maximum Packet Size (0: none said).
    max_packet: std::sync::atomic::AtomicU32,
    /// MQTT 5 properties for the DISCONNECT of a graceful close (set before it starts).
    disconnect_props: std::sync::Mutex<Vec<u8>>,
}

impl SharedState {
    pub fn new(state: ConnectionState) -> SharedState {
        SharedState {
            state: std::sync::atomic::AtomicU8::new(state as u8),
            caps: std::sync::atomic::AtomicU8::new(0x80 | 2),
            max_packet: std::sync::atomic::AtomicU32::new(0),
            disconnect_props: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// Sets the properties the graceful close's DISCONNECT carries.
    pub fn set_disconnect_properties(&self, props: Vec<u8>) {
        *self
            .disconnect_props
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = props;
    }

    /// The properties the graceful close's DISCONNECT carries.
    pub fn disconnect_properties(&self) -> Vec<u8> {
        self.disconnect_props
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Takes the limits of a new connection's CONNACK.
    pub fn set_server_limits(&self, limits: &crate::mqtt::session::ServerLimits) {
        use std::sync::atomic::Ordering::SeqCst;
        self.caps.store(
            (limits.maximum_qos as u8) | if limits.retain_available { 0x80 } else { 0 },
            SeqCst,
        );
        self.max_packet
            .store(limits.maximum_packet_size.unwrap_or(0), SeqCst);
    }

    /// Whether the server of the last connection takes a publish of this shape, or the error
    /// naming the limit and `provider`. (A reconnect may bring other limits: the I/O thread
    /// checks again when it sends.)
    pub fn check_publish(
        &self,
        provider: &str,
        qos: crate::mqtt::QoS,
        retain: bool,
        size: impl Fn() -> usize,
    ) -> crate::error::Result<()> {
        use std::sync::atomic::Ordering::SeqCst;
        let caps = self.caps.load(SeqCst);
        if qos as u8 > caps & 3 {
            return Err(crate::error::Error::Unsupported(format!(
                "QoS {} publish: provider {provider}'s server allows at most QoS {} (CONNACK \
                 Maximum QoS)",
                qos as u8,
                caps & 3
            )));
        }
        if retain && caps & 0x80 == 0 {
            return Err(crate::error::Error::Unsupported(format!(
                "retained publish: provider {provider}'s server has no retained messages \
                 (CONNACK Retain Available 0)"
            )));
        }
        let max = self.max_packet.load(SeqCst) as usize;
        if max > 0 && size() > max {
            return Err(crate::error::Error::PayloadTooLarge {
                size: size(),
                max,
                limit: format!(
                    "provider {provider}'s server Maximum Packet Size (CONNACK), which counts \
                     the whole PUBLISH packet"
                ),
            });
        }
        Ok(())
    }

    pub fn get(&self) -> ConnectionState {
        match self.state.load(std::sync::atomic::Ordering::SeqCst) {
            0 => ConnectionState::Connecting,
            1 => ConnectionState::Connected,
            2 => ConnectionState::ConnectionDisrupted,
            _ => ConnectionState::Disconnected,
        }
    }

    pub fn set(&self, state: ConnectionState) {
        self.state
            .store(state as u8, std::sync::atomic::Ordering::SeqCst);
    }
}

/// A change of a provider's connection state.
///
/// ```no_run
/// use mqtt_pubsub::{ConnectionState, PubSub};
/// let pubsub = PubSub::new();
/// let events = pubsub.state_changes();
/// std::thread::spawn(move || {
///     for e in events {
///         if e.state == ConnectionState::ConnectionDisrupted {
///             eprintln!("{} lost: {}", e.provider, e.reason.unwrap_or_default());
///         }
///     }
/// });
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StateEvent {
    /// The provider's name.
    pub provider: String,
    /// The new state.
    pub state: ConnectionState,
    /// Why, when there is a reason (the error of a lost connection or failed attempt).
    pub reason: Option<String>,
    /// On `Connected`: the URL connected to, without credentials or query (which of a
    /// provider's URLs is in use).
    pub url: Option<String>,
    /// On `Connected`, MQTT 5: the Response Information the server's CONNACK gave (the basis
    /// of response topics it wants), when `request_response_information(true)` asked for it
    /// and the server had one.
    pub response_information: Option<String>,
    /// On `Connected`: what the server said in CONNACK (whether it kept our session, the
    /// client identifier it assigned, the keep-alive and limits in force).
    pub connack: Option<Connack>,
}

/// What a server said in its CONNACK, as a `Connected` [`StateEvent`] carries it. A
/// persistent-session application learns here whether its session survived.
///
/// ```no_run
/// use mqtt_pubsub::{ConnectionState, PubSub};
/// # let pubsub = PubSub::new();
/// let events = pubsub.state_changes();
/// for e in events {
///     if let (ConnectionState::Connected, Some(c)) = (e.state, &e.connack) {
///         if !c.session_present {
///             println!("{}: the broker kept no session; resubscribed", e.provider);
///         }
///     }
/// }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Connack {
    /// The server kept a session for this client id (always `false` on a clean session).
    pub session_present: bool,
    /// MQTT 5: the client identifier the server assigned (when we sent none of our own).
    pub assigned_client_id: Option<String>,
    /// The keep-alive in force: the server's (MQTT 5 Server Keep Alive) when it set one, else
    /// ours.
    pub keep_alive: std::time::Duration,
    /// MQTT 5: most unacknowledged QoS 1/2 publishes the server takes (65535: no limit said).
    pub receive_maximum: u16,
    /// MQTT 5: the largest packet the server takes, if it said.
    pub maximum_packet_size: Option<u32>,
    /// MQTT 5: the highest QoS the server supports (QoS 2 when it did not say).
    pub maximum_qos: crate::QoS,
    /// MQTT 5: whether the server keeps retained messages.
    pub retain_available: bool,
    /// MQTT 5: the highest topic alias the server takes from us (0: none).
    pub topic_alias_maximum: u16,
}

/// Fans state events out to every `state_changes()` receiver.
#[derive(Clone, Default)]
pub(crate) struct StateHub {
    listeners: Arc<Mutex<Vec<Sender<StateEvent>>>>,
}

/// Events a listener can hold before further ones are dropped for it.
const LISTENER_CAPACITY: usize = 1024;

impl StateHub {
    pub fn subscribe(&self) -> Receiver<StateEvent> {
        let (tx, rx) = crossbeam_channel::bounded(LISTENER_CAPACITY);
        self.listeners
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(tx);
        rx
    }

    pub fn emit(&self, event: StateEvent) {
        let mut listeners = self.listeners.lock().unwrap_or_else(|e| e.into_inner());
        listeners.retain(|tx| match tx.try_send(event.clone()) {
            Ok(()) => true,
            Err(crossbeam_channel::TrySendError::Full(_)) => {
                log::warn!(
                    "a state_changes() receiver is full; dropping {:?}",
                    event.state
                );
                true
            }
            Err(crossbeam_channel::TrySendError::Disconnected(_)) => false,
        });
    }
}

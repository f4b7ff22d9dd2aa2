//! Connection state, as Amplify names it, and its change events.

use std::fmt;
use std::sync::{Arc, Mutex};

use crossbeam_channel::{Receiver, Sender};

/// The state of one provider's connection.
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

/// A provider's current state, readable without a lock from any thread.
#[derive(Debug)]
pub(crate) struct SharedState(std::sync::atomic::AtomicU8);

impl SharedState {
    pub fn new(state: ConnectionState) -> SharedState {
        SharedState(std::sync::atomic::AtomicU8::new(state as u8))
    }

    pub fn get(&self) -> ConnectionState {
        match self.0.load(std::sync::atomic::Ordering::SeqCst) {
            0 => ConnectionState::Connecting,
            1 => ConnectionState::Connected,
            2 => ConnectionState::ConnectionDisrupted,
            _ => ConnectionState::Disconnected,
        }
    }

    pub fn set(&self, state: ConnectionState) {
        self.0
            .store(state as u8, std::sync::atomic::Ordering::SeqCst);
    }
}

/// A change of a provider's connection state.
#[derive(Debug, Clone, PartialEq, Eq)]
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

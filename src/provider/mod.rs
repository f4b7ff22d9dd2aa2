//! Providers: a name, connection options, and how to open the connection each time.

#[cfg(feature = "aws-iot")]
mod aws_iot;
mod mqtt_ws;

#[cfg(feature = "aws-iot")]
pub use aws_iot::{AwsIotProvider, AwsIotProviderBuilder, CustomAuthorizer};
pub use mqtt_ws::{MqttOverWsProvider, MqttOverWsProviderBuilder};

pub(crate) use crate::connection::spec::{Limits, Opener, ProviderSpec};

pub(crate) mod sealed {
    /// Turns a provider into what the engine runs.
    pub trait Sealed {
        fn into_spec(self) -> super::ProviderSpec;
    }
}

/// A way to reach a broker, registered on a [`PubSub`](crate::PubSub) under its name:
/// [`MqttOverWsProvider`] or `AwsIotProvider`.
///
/// ```no_run
/// use mqtt_pubsub::{MqttOverWsProvider, PubSub};
/// let pubsub = PubSub::new();
/// pubsub.add_provider(MqttOverWsProvider::builder("ws://localhost:9001/mqtt").name("local").build()?)?;
/// pubsub.publish_with("a/b", "x", mqtt_pubsub::PublishOptions::default().provider("local"))?;
/// # Ok::<(), mqtt_pubsub::Error>(())
/// ```
pub trait Provider: sealed::Sealed + Send {
    /// The name it is registered under.
    fn name(&self) -> &str;
}

//! A fixed-rate loop (60 frames per second) that drains its subscription without blocking
//! once per frame and publishes its own state without stalling the frame.
//!
//! ```text
//! cargo run --example game_loop [-- --url ws://localhost:8080/mqtt] [--frames 180]
//! ```

#[path = "support/broker.rs"]
mod broker;

use std::time::{Duration, Instant};

use mqtt_pubsub::{MqttOverWsProvider, PubSub};

fn main() -> Result<(), mqtt_pubsub::Error> {
    let args = broker::Args::from_env();
    let url = broker::url_or_embedded(&args);
    let frames: u32 = args
        .value("--frames")
        .map_or(180, |f| f.parse().expect("--frames takes a number"));

    let pubsub = PubSub::new();
    pubsub.add_provider(MqttOverWsProvider::builder(url).build()?)?;
    let world = pubsub.subscribe("game/players/+/position")?;

    let frame = Duration::from_secs_f64(1.0 / 60.0);
    let mut next = Instant::now();
    let (mut received, mut slowest) = (0usize, Duration::ZERO);
    for n in 0..frames {
        let start = Instant::now();
        // Input: everything that arrived since the last frame, without waiting.
        received += world.try_iter().count();
        // Output: QoS 0 is queued for the I/O thread; the frame does not wait for the network.
        pubsub.publish(
            "game/players/me/position",
            format!("{{\"frame\":{n},\"x\":{}}}", n % 100),
        )?;
        slowest = slowest.max(start.elapsed());
        next += frame;
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    received += world
        .recv_timeout(Duration::from_millis(500))
        .map_or(0, |_| 1)
        + world.try_iter().count();
    println!("{frames} frames, {received} positions received, slowest frame work {slowest:?}");
    pubsub.close()
}

//! aedes, a node broker (`.ci/run` installs it under `.ci/node`).

use std::path::{Path, PathBuf};

use super::process::{retry_start, Process};
use super::{available, free_port, on_path};

/// The folder holding `node_modules/aedes` and `node_modules/ws` (`.ci/run` installs them).
pub fn node_dir() -> PathBuf {
    std::env::var_os("MQTT_PUBSUB_NODE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".ci/node"))
}

/// aedes (node) over ws; splits packets over several WebSocket frames.
pub struct Aedes {
    /// Kept for its drop (which kills the broker).
    _process: Process,
    pub ws_port: u16,
}

impl Aedes {
    pub fn start(auth: bool) -> Option<Aedes> {
        let node = on_path("node");
        let dir = node_dir();
        let installed = node.is_some()
            && dir.join("node_modules/aedes").exists()
            && dir.join("node_modules/ws").exists();
        if !available("aedes", installed) {
            return None;
        }
        // The script must sit beside node_modules for ESM resolution.
        let node = node.unwrap();
        let (process, ws_port) = retry_start("aedes", || {
            let ws_port = free_port();
            let script = dir.join(format!("aedes-test-broker-{ws_port}.mjs"));
            std::fs::write(&script, include_str!("aedes.mjs")).unwrap();
            let mut args = vec![script.display().to_string(), ws_port.to_string()];
            if auth {
                args.push("auth".into());
            }
            let mut process = Process::spawn(&node, &args, &[ws_port], Some(&dir))?;
            process.wait_ws(ws_port, "/").then_some((process, ws_port))
        });
        Some(Aedes {
            _process: process,
            ws_port,
        })
    }

    pub fn ws_url(&self) -> String {
        format!("ws://127.0.0.1:{}/", self.ws_port)
    }
}

//! moto's server, for Cognito Identity (`pip install 'moto[server]'`).

use super::process::{retry_start, Process};
use super::{available, free_port, on_path};

/// moto's server (Cognito Identity among others), from `pip install 'moto[server]'`.
pub struct Moto {
    /// Kept for its drop (which kills the server).
    _process: Process,
    pub port: u16,
}

impl Moto {
    pub fn start() -> Option<Moto> {
        let bin = on_path("moto_server");
        if !available("moto", bin.is_some()) {
            return None;
        }
        let bin = bin.unwrap();
        let (process, port) = retry_start("moto", || {
            let port = free_port();
            let args = [
                "-H".into(),
                "127.0.0.1".into(),
                "-p".into(),
                port.to_string(),
            ];
            Process::spawn(&bin, &args, &[port], None).map(|p| (p, port))
        });
        Some(Moto {
            _process: process,
            port,
        })
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/", self.port)
    }
}

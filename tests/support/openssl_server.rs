//! `openssl s_server`: a real TLS server presenting whatever certificate a test made, for the
//! certificates no broker configuration here uses (self-signed CA certificates, X.509 v1).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// An `openssl s_server` on a free loopback port, killed on drop.
pub struct OpensslServer {
    pub port: u16,
    child: Child,
}

impl OpensslServer {
    /// Serves TLS with `cert` and `key` (files in `dir`) on `127.0.0.1`, on a port the kernel
    /// picks (s_server prints it).
    pub fn start(dir: &Path, cert: &str, key: &str) -> OpensslServer {
        let mut child = Command::new("openssl")
            .args([
                "s_server",
                "-accept",
                "127.0.0.1:0",
                "-cert",
                cert,
                "-key",
                key,
            ])
            .current_dir(dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("openssl s_server");
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        let port = loop {
            line.clear();
            assert!(
                out.read_line(&mut line).unwrap() > 0,
                "openssl s_server exited before listening"
            );
            if let Some(addr) = line.trim().strip_prefix("ACCEPT ") {
                break addr.rsplit(':').next().unwrap().parse().unwrap();
            }
        };
        // Keep its output drained so that it never blocks on a full pipe.
        std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
        OpensslServer { port, child }
    }
}

impl Drop for OpensslServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

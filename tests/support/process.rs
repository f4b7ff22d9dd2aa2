//! Broker processes: started on fresh ports, waited for, killed on drop.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::wait_ws_while;

/// A broker child process, killed on drop.
pub struct Process {
    child: Option<Child>,
    program: PathBuf,
    args: Vec<String>,
    ports: Vec<u16>,
}

impl Process {
    /// Starts the program and waits for its ports; `None` if it exited first (a port picked
    /// by [`free_port`] can be taken by someone else before the program binds it: the caller
    /// picks new ports and tries again, see [`retry_start`]).
    pub(crate) fn spawn(
        program: &Path,
        args: &[String],
        ports: &[u16],
        cwd: Option<&Path>,
    ) -> Option<Process> {
        let mut p = Process {
            child: None,
            program: program.to_path_buf(),
            args: args.to_vec(),
            ports: ports.to_vec(),
        };
        p.start_in(cwd).then_some(p)
    }

    /// Whether the process is still running.
    pub(crate) fn alive(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Waits for a WebSocket upgrade on `port` of this process; `false` if it exited.
    pub(crate) fn wait_ws(&mut self, port: u16, path: &str) -> bool {
        wait_ws_while(port, path, Duration::from_secs(20), || self.alive())
    }

    /// Starts the program; `false` if it exited before all its ports accepted connections.
    fn start_in(&mut self, cwd: Option<&Path>) -> bool {
        let mut cmd = Command::new(&self.program);
        cmd.args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(d) = cwd {
            cmd.current_dir(d);
        }
        self.child = Some(
            cmd.spawn()
                .unwrap_or_else(|e| panic!("starting {:?}: {e}", self.program)),
        );
        let start = Instant::now();
        for p in self.ports.clone() {
            while TcpStream::connect(("127.0.0.1", p)).is_err() {
                if !self.alive() {
                    eprintln!("{:?} exited before port {p} was up", self.program);
                    return false;
                }
                assert!(
                    start.elapsed() < Duration::from_secs(20),
                    "{:?}: nothing listens on port {p} after 20 s",
                    self.program
                );
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        true
    }

    /// SIGKILL, then wait for the exit.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts again with the same arguments (same ports).
    pub fn restart(&mut self) {
        self.kill();
        let start = Instant::now();
        loop {
            // The port may linger briefly after a kill.
            if self
                .ports
                .iter()
                .all(|p| TcpListener::bind(("127.0.0.1", *p)).is_ok())
                || start.elapsed() > Duration::from_secs(10)
            {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(self.start_in(None), "{:?} did not restart", self.program);
    }
}

/// Runs `start` until it gives a server (at most three times, each on fresh ports).
pub(crate) fn retry_start<T>(what: &str, mut start: impl FnMut() -> Option<T>) -> T {
    for attempt in 1..=3 {
        if let Some(server) = start() {
            return server;
        }
        eprintln!("{what} did not start (attempt {attempt}); trying fresh ports");
    }
    panic!("{what} did not start in three attempts");
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

//! TCP with one deadline for a whole phase (DNS, connect, TLS, upgrade, CONNACK, an HTTP
//! call), and a flag that aborts it.
//!
//! A socket read timeout bounds one `read`; a server that sends one byte every second passes
//! every one of them and keeps a handshake going for ever. [`Tcp`] checks the deadline on
//! every read and write instead, and waits in slices of at most [`SLICE`] so that a close
//! requested meanwhile ends the attempt promptly.

use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// The longest single wait while a deadline is set (how late an abort is noticed).
const SLICE: Duration = Duration::from_millis(100);

/// A TCP stream; while a deadline is set, every read and write is bounded by it.
#[derive(Debug)]
pub struct Tcp {
    sock: TcpStream,
    deadline: Option<Instant>,
    abort: Option<Arc<AtomicBool>>,
}

impl Tcp {
    /// The socket.
    pub fn socket(&self) -> &TcpStream {
        &self.sock
    }

    /// Bounds every later read and write by `deadline` (`None`: plain socket behaviour, for
    /// the non-blocking phase after connecting).
    pub fn set_deadline(&mut self, deadline: Option<Instant>) {
        self.deadline = deadline;
    }

    /// How long the next wait may be, or the error that ends the phase.
    fn slice(&self) -> io::Result<Duration> {
        if self
            .abort
            .as_ref()
            .is_some_and(|a| a.load(Ordering::SeqCst))
        {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "closing: the connection attempt was abandoned",
            ));
        }
        let deadline = self.deadline.expect("called with a deadline");
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "deadline passed"));
        }
        Ok(left.min(SLICE))
    }

    #[inline]
    fn bounded<T>(
        &mut self,
        set: fn(&TcpStream, Option<Duration>) -> io::Result<()>,
        mut op: impl FnMut(&mut TcpStream) -> io::Result<T>,
    ) -> io::Result<T> {
        if self.deadline.is_none() {
            return op(&mut self.sock);
        }
        loop {
            let wait = self.slice()?;
            set(&self.sock, Some(wait))?;
            match op(&mut self.sock) {
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) => {}
                other => return other,
            }
        }
    }
}

impl From<TcpStream> for Tcp {
    /// A stream without a deadline.
    fn from(sock: TcpStream) -> Tcp {
        Tcp {
            sock,
            deadline: None,
            abort: None,
        }
    }
}

impl Read for Tcp {
    #[inline]
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.bounded(TcpStream::set_read_timeout, |s| s.read(buf))
    }
}

impl Write for Tcp {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.bounded(TcpStream::set_write_timeout, |s| s.write(buf))
    }
    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        self.bounded(TcpStream::set_write_timeout, |s| s.write_vectored(bufs))
    }
    fn flush(&mut self) -> io::Result<()> {
        self.sock.flush()
    }
}

thread_local! {
    /// The abort flag of the connection attempt this thread is making, for the calls it
    /// makes through code that cannot be handed one (a credentials provider's HTTPS calls:
    /// `CredentialsProvider::credentials` takes no flag).
    static ATTEMPT_ABORT: std::cell::RefCell<Option<Arc<AtomicBool>>> =
        const { std::cell::RefCell::new(None) };
}

/// Runs `f` with `abort` as this thread's attempt flag: every TCP connection opened inside
/// without a flag of its own (e.g. Cognito's) takes it, so that `close()` abandons it.
pub fn with_attempt_abort<T>(abort: Option<Arc<AtomicBool>>, f: impl FnOnce() -> T) -> T {
    let before = ATTEMPT_ABORT.with(|a| a.replace(abort));
    let result = f();
    ATTEMPT_ABORT.with(|a| *a.borrow_mut() = before);
    result
}

/// Resolves `host` and connects to the first address that answers, before `deadline`; the
/// stream keeps that deadline (and `abort`) until [`Tcp::set_deadline`] lifts it. Without an
/// `abort` of its own it takes the thread's attempt flag ([`with_attempt_abort`]). The TCP
/// handshake itself is abandoned within [`SLICE`] of an abort (on Linux; elsewhere it is
/// bounded by the deadline alone).
pub fn connect(
    host: &str,
    port: u16,
    deadline: Instant,
    abort: Option<Arc<AtomicBool>>,
) -> Result<Tcp> {
    let abort = abort.or_else(|| ATTEMPT_ABORT.with(|a| a.borrow().clone()));
    // Url keeps IPv6 literals bracketed; the resolver wants them bare.
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let addrs: Vec<_> = (bare, port)
        .to_socket_addrs()
        .map_err(|e| Error::Io {
            context: "DNS lookup",
            source: e,
            target: None,
        })?
        .collect();
    let mut last = None;
    for addr in addrs {
        match connect_one(&addr, deadline, abort.as_deref()) {
            Ok(sock) => {
                sock.set_nodelay(true)
                    .map_err(|e| super::error::map_io("TCP setup", e))?;
                return Ok(Tcp {
                    sock,
                    deadline: Some(deadline),
                    abort,
                });
            }
            Err(e) => last = Some(e),
        }
    }
    Err(match last {
        Some(e) => super::error::map_io("TCP connect", e),
        None => Error::Io {
            context: "DNS lookup",
            source: io::Error::new(io::ErrorKind::NotFound, "no address"),
            target: None,
        },
    })
}

/// Connects to `addr` before `deadline`, noticing `abort` within [`SLICE`]: a non-blocking
/// connect and a poll in slices (std's `connect_timeout` cannot be interrupted).
#[cfg(target_os = "linux")]
fn connect_one(
    addr: &std::net::SocketAddr,
    deadline: Instant,
    abort: Option<&AtomicBool>,
) -> io::Result<TcpStream> {
    use rustix::event::{poll, PollFd, PollFlags};
    use rustix::net::{AddressFamily, SocketFlags, SocketType};
    let family = if addr.is_ipv4() {
        AddressFamily::INET
    } else {
        AddressFamily::INET6
    };
    let fd = rustix::net::socket_with(
        family,
        SocketType::STREAM,
        SocketFlags::NONBLOCK | SocketFlags::CLOEXEC,
        None,
    )?;
    match rustix::net::connect(&fd, addr) {
        Ok(()) => {}
        Err(rustix::io::Errno::INPROGRESS) => loop {
            if abort.is_some_and(|a| a.load(Ordering::SeqCst)) {
                return Err(io::Error::new(
                    io::ErrorKind::ConnectionAborted,
                    "closing: the connection attempt was abandoned",
                ));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::Error::new(io::ErrorKind::TimedOut, "connect timed out"));
            }
            let wait = left.min(SLICE);
            let spec = rustix::time::Timespec {
                tv_sec: wait.as_secs() as _,
                tv_nsec: wait.subsec_nanos().into(),
            };
            let mut fds = [PollFd::new(&fd, PollFlags::OUT)];
            match poll(&mut fds, Some(&spec)) {
                Ok(0) | Err(rustix::io::Errno::INTR) => continue,
                Ok(_) => break,
                Err(e) => return Err(e.into()),
            }
        },
        Err(e) => return Err(e.into()),
    }
    if let Err(e) = rustix::net::sockopt::socket_error(&fd)? {
        return Err(e.into());
    }
    let sock = TcpStream::from(fd);
    sock.set_nonblocking(false)?;
    Ok(sock)
}

#[cfg(not(target_os = "linux"))]
fn connect_one(
    addr: &std::net::SocketAddr,
    deadline: Instant,
    _abort: Option<&AtomicBool>,
) -> io::Result<TcpStream> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(io::Error::new(io::ErrorKind::TimedOut, "connect timed out"));
    }
    TcpStream::connect_timeout(addr, left)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    /// A server dripping one byte every 50 ms passes every per-read timeout; the deadline
    /// still holds.
    #[test]
    fn a_dripping_server_cannot_stretch_the_deadline() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            // Bytes flow for 20 s: a read that ignored the deadline would run that long.
            for _ in 0..400 {
                if s.write_all(b"x").is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        let start = Instant::now();
        let mut tcp = connect("127.0.0.1", port, start + Duration::from_millis(400), None).unwrap();
        let mut got = Vec::new();
        let mut b = [0u8; 1];
        let err = loop {
            match tcp.read(&mut b) {
                Ok(n) => got.extend_from_slice(&b[..n]),
                Err(e) => break e,
            }
        };
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        // The deadline is 400 ms; the bound guards a read that ignores it (20 s of bytes),
        // with headroom for a loaded machine.
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{:?}",
            start.elapsed()
        );
        assert!(!got.is_empty(), "bytes did flow");
    }

    #[test]
    fn an_abort_ends_a_wait() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let abort = Arc::new(AtomicBool::new(false));
        let mut tcp = connect(
            "127.0.0.1",
            port,
            Instant::now() + Duration::from_secs(30),
            Some(abort.clone()),
        )
        .unwrap();
        let a = abort.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            a.store(true, Ordering::SeqCst);
        });
        let start = Instant::now();
        let err = tcp.read(&mut [0u8; 1]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionAborted);
        assert!(start.elapsed() < Duration::from_secs(5));
        drop(listener);
    }
}

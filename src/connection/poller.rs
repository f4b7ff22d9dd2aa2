//! The I/O thread's wait: for its socket, for a caller's wake-up, or for a deadline.
//!
//! On Linux this is `ppoll` over two descriptors, the socket and an eventfd: one system call
//! per wait, no registration calls when the interest changes (it is a field of the next
//! wait), the eventfd read only when a caller did wake the thread, and the deadline kept to
//! the microsecond by the call itself (the output-coalescing hold is 200 µs). An idle
//! provider holds two descriptors: its socket and the eventfd. (An epoll instance and a
//! timerfd for sub-millisecond deadlines made it three, and four once a hold had needed the
//! timer; setting the timer and reading it were two more system calls per hold.) `polling`
//! spends four more system calls on every wait (it re-arms a timerfd and its notifier and
//! drains the notifier each time); on a pipelined QoS 1 stream the thread waits about once
//! per two messages, so that was two system calls per message. Elsewhere, `polling`.

use std::io;
use std::net::TcpStream;
use std::time::Duration;

/// What the socket is watched for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Interest {
    /// Wake when there is something to read (or the peer closed, or an error).
    pub readable: bool,
    /// Wake when the socket takes more output.
    pub writable: bool,
}

#[cfg(target_os = "linux")]
pub(crate) use linux::Poller;
#[cfg(not(target_os = "linux"))]
pub(crate) use portable::Poller;

#[cfg(target_os = "linux")]
mod linux {
    use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};
    use std::sync::atomic::{AtomicI32, AtomicU8, Ordering};

    use rustix::event::{eventfd, poll, EventfdFlags, PollFd, PollFlags};
    use rustix::time::Timespec;

    use super::*;

    const READABLE: u8 = 1;
    const WRITABLE: u8 = 2;

    /// An eventfd for wake-ups, and the socket the I/O thread registered with what it is
    /// watched for (both read by that thread's own waits).
    pub(crate) struct Poller {
        notify: OwnedFd,
        /// The registered socket's descriptor, or -1.
        socket: AtomicI32,
        /// [`READABLE`] and [`WRITABLE`].
        interest: AtomicU8,
    }

    impl Poller {
        pub fn new() -> io::Result<Poller> {
            let notify = eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)?;
            Ok(Poller {
                notify,
                socket: AtomicI32::new(-1),
                interest: AtomicU8::new(0),
            })
        }

        fn bits(interest: Interest) -> u8 {
            (if interest.readable { READABLE } else { 0 })
                | (if interest.writable { WRITABLE } else { 0 })
        }

        /// Waits for `socket` as asked until [`Poller::delete`], which the caller calls
        /// before closing it.
        pub fn add(&self, socket: &TcpStream, interest: Interest) -> io::Result<()> {
            self.interest.store(Self::bits(interest), Ordering::Relaxed);
            self.socket.store(socket.as_raw_fd(), Ordering::Relaxed);
            Ok(())
        }

        pub fn modify(&self, socket: &TcpStream, interest: Interest) -> io::Result<()> {
            debug_assert_eq!(self.socket.load(Ordering::Relaxed), socket.as_raw_fd());
            self.interest.store(Self::bits(interest), Ordering::Relaxed);
            Ok(())
        }

        pub fn delete(&self, socket: &TcpStream) -> io::Result<()> {
            debug_assert_eq!(self.socket.load(Ordering::Relaxed), socket.as_raw_fd());
            self.socket.store(-1, Ordering::Relaxed);
            Ok(())
        }

        /// Wakes the current or next [`Poller::wait`]. (Callers only call it while the
        /// thread sleeps, see `Wake`; several calls add up in the eventfd's counter, which
        /// one read empties.)
        pub fn notify(&self) -> io::Result<()> {
            match rustix::io::write(&self.notify, &1u64.to_ne_bytes()) {
                // A full counter (never in practice) wakes the waiter just as well.
                Ok(_) | Err(rustix::io::Errno::AGAIN) => Ok(()),
                Err(e) => Err(e.into()),
            }
        }

        /// Waits until the socket is ready as asked, [`Poller::notify`], or `timeout`
        /// (`None`: no deadline). `Ok(true)` when the socket was reported readable (or the
        /// peer closed it, or an error: a read then says which).
        #[allow(unsafe_code)]
        pub fn wait(&self, timeout: Option<Duration>) -> io::Result<bool> {
            // Beyond ~24 days (`Duration::MAX` included) the wait just ends early and the
            // caller waits again.
            let timeout = timeout.map(|t| Timespec {
                tv_sec: t.as_secs().min(2_000_000) as _,
                tv_nsec: t.subsec_nanos().into(),
            });
            let raw: RawFd = self.socket.load(Ordering::Relaxed);
            let bits = self.interest.load(Ordering::Relaxed);
            let mut flags = PollFlags::empty();
            if bits & READABLE != 0 {
                flags |= PollFlags::IN | PollFlags::RDHUP;
            }
            if bits & WRITABLE != 0 {
                flags |= PollFlags::OUT;
            }
            let mut fds = [
                PollFd::new(&self.notify, PollFlags::IN),
                PollFd::new(&self.notify, PollFlags::empty()),
            ];
            // Watched for nothing (reading paused for the application): left out of the wait.
            // A reset or an error, which poll reports unasked, would otherwise end every wait
            // at once with nothing reading it; what the server sent before closing is read,
            // and the close seen, once reading resumes.
            let n = if raw >= 0 && !flags.is_empty() {
                // SAFETY: `raw` is the socket registered by `add`; the driver deletes it
                // before dropping it, and only the I/O thread both registers and waits.
                fds[1] = PollFd::from_borrowed_fd(unsafe { BorrowedFd::borrow_raw(raw) }, flags);
                2
            } else {
                1
            };
            match poll(&mut fds[..n], timeout.as_ref()) {
                Ok(_) => {}
                Err(rustix::io::Errno::INTR) => return Ok(true),
                Err(e) => return Err(e.into()),
            }
            if !fds[0].revents().is_empty() {
                let mut drain = [0u8; 8];
                let _ = rustix::io::read(&self.notify, &mut drain);
            }
            let revents = if n == 2 {
                fds[1].revents()
            } else {
                PollFlags::empty()
            };
            Ok(revents.intersects(
                PollFlags::IN
                    | PollFlags::RDHUP
                    | PollFlags::HUP
                    | PollFlags::ERR
                    | PollFlags::NVAL,
            ))
        }
    }
}

// Also built for the tests on Linux, which run the same test against it.
#[cfg(any(not(target_os = "linux"), test))]
mod portable {
    use std::sync::Mutex;

    use polling::{Event, Events, PollMode};

    use super::*;

    const SOCKET: usize = 1;

    /// `polling`'s poller.
    #[cfg_attr(all(test, target_os = "linux"), allow(dead_code))]
    pub(crate) struct Poller {
        poller: polling::Poller,
        events: Mutex<Events>,
    }

    impl Poller {
        pub fn new() -> io::Result<Poller> {
            Ok(Poller {
                poller: polling::Poller::new()?,
                events: Mutex::new(Events::new()),
            })
        }

        fn event(interest: Interest) -> Event {
            match (interest.readable, interest.writable) {
                (true, true) => Event::all(SOCKET),
                (false, true) => Event::writable(SOCKET),
                (true, false) => Event::readable(SOCKET),
                (false, false) => Event::none(SOCKET),
            }
        }

        #[allow(unsafe_code)]
        pub fn add(&self, socket: &TcpStream, interest: Interest) -> io::Result<()> {
            // SAFETY: the driver deletes the socket before dropping it.
            unsafe {
                self.poller
                    .add_with_mode(socket, Self::event(interest), PollMode::Level)
            }
        }

        pub fn modify(&self, socket: &TcpStream, interest: Interest) -> io::Result<()> {
            self.poller
                .modify_with_mode(socket, Self::event(interest), PollMode::Level)
        }

        pub fn delete(&self, socket: &TcpStream) -> io::Result<()> {
            self.poller.delete(socket)
        }

        pub fn notify(&self) -> io::Result<()> {
            self.poller.notify()
        }

        pub fn wait(&self, timeout: Option<Duration>) -> io::Result<bool> {
            let mut events = self.events.lock().unwrap_or_else(|e| e.into_inner());
            events.clear();
            match self.poller.wait(&mut events, timeout) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(true),
                Err(e) => return Err(e),
            }
            let readable = events.iter().any(|e| e.key == SOCKET && e.readable);
            Ok(readable)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::sync::Arc;
    use std::time::Instant;

    fn pair() -> (TcpStream, TcpStream) {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let a = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (b, _) = l.accept().unwrap();
        (a, b)
    }

    /// Readability, a wake-up from another thread, and deadlines both short and long (never
    /// early): epoll's own on Linux.
    #[test]
    fn waits_for_the_socket_a_notify_or_the_deadline() {
        waits!(Poller);
    }

    /// A sub-millisecond deadline is not rounded up to a millisecond: a 200 µs wait with
    /// nothing else to wake it returns, and not early. (How long past the deadline is the
    /// benchmark's business; a loaded machine may make any wait long, never early.)
    #[cfg(target_os = "linux")]
    #[test]
    fn sub_millisecond_deadlines_end_the_wait() {
        let p = Poller::new().unwrap();
        for us in [1, 200, 999, 1500] {
            let d = Duration::from_micros(us);
            let t = Instant::now();
            assert!(!p.wait(Some(d)).unwrap());
            assert!(t.elapsed() >= d, "{us} µs");
        }
    }

    /// A socket watched for nothing (reading paused for the application) is left out of the
    /// wait: a peer's reset, which poll reports unasked, does not end every wait at once
    /// (the I/O thread spun on it at 100 % CPU until the keep-alive). Watched again, the
    /// close is reported.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_reset_does_not_end_a_wait_that_watches_nothing() {
        let none = Interest {
            readable: false,
            writable: false,
        };
        let p = Poller::new().unwrap();
        let (a, b) = pair();
        p.add(&a, none).unwrap();
        rustix::net::sockopt::set_socket_linger(&b, Some(Duration::ZERO)).unwrap();
        drop(b);
        let d = Duration::from_millis(20);
        let t = Instant::now();
        assert!(!p.wait(Some(d)).unwrap());
        assert!(t.elapsed() >= d, "ended early: {:?}", t.elapsed());
        p.modify(
            &a,
            Interest {
                readable: true,
                writable: false,
            },
        )
        .unwrap();
        assert!(p.wait(Some(Duration::from_secs(5))).unwrap());
        p.delete(&a).unwrap();
    }

    /// The same of `polling`'s, used on other systems.
    #[test]
    fn the_portable_poller_does_the_same() {
        waits!(portable::Poller);
    }

    /// Every notify made while a wait runs ends that wait, however it races with the
    /// previous wake-up's clean-up (a pending-notification flag cleared before draining the
    /// eventfd once swallowed a notify and left the flag set: no notify woke the thread
    /// again, and a QoS 1 stream stalled until the keep-alive).
    #[test]
    fn no_notify_is_lost_however_it_races() {
        let p = Arc::new(Poller::new().unwrap());
        let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
        let q = p.clone();
        let helper = std::thread::spawn(move || {
            // The second notify lands at varying points of the woken wait's clean-up.
            for (i, ()) in go_rx.into_iter().enumerate() {
                q.notify().unwrap();
                for _ in 0..i % 64 {
                    std::hint::spin_loop();
                }
                q.notify().unwrap();
            }
        });
        for round in 0..30_000 {
            go_tx.send(()).unwrap();
            let t = Instant::now();
            // A lost notify lasts the whole 30 s wait; a loaded machine wakes in milliseconds.
            p.wait(Some(Duration::from_secs(30))).unwrap();
            assert!(
                t.elapsed() < Duration::from_secs(15),
                "round {round}: not woken"
            );
        }
        drop(go_tx);
        helper.join().unwrap();
    }

    macro_rules! waits {
        ($poller:ty) => {{
            let p = Arc::new(<$poller>::new().unwrap());
            let (a, mut b) = pair();
            let on = Interest {
                readable: true,
                writable: false,
            };
            p.add(&a, on).unwrap();
            // Nothing to read: the deadline ends it, not earlier (a bound from below only: a
            // loaded machine can make a wait longer, never shorter).
            for d in [
                Duration::from_micros(200),
                Duration::from_micros(300),
                Duration::from_millis(15),
            ] {
                let t = Instant::now();
                assert!(!p.wait(Some(d)).unwrap());
                let took = t.elapsed();
                assert!(took >= d, "{d:?}: woke after {took:?}");
            }
            // A notify from another thread wakes a wait with no deadline.
            let q = p.clone();
            let waker = std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(20));
                q.notify().unwrap();
            });
            assert!(!p.wait(None).unwrap());
            waker.join().unwrap();
            // Two before a wait wake it once.
            p.notify().unwrap();
            p.notify().unwrap();
            assert!(!p.wait(Some(Duration::from_secs(5))).unwrap());
            let t = Instant::now();
            p.wait(Some(Duration::from_millis(30))).unwrap();
            assert!(t.elapsed() >= Duration::from_millis(30), "a second wake-up");
            // Data makes it readable, and it stays so (level-triggered) until read.
            b.write_all(b"x").unwrap();
            assert!(p.wait(Some(Duration::from_secs(5))).unwrap());
            assert!(p.wait(Some(Duration::from_secs(5))).unwrap());
            // Not watched for reading: not reported.
            p.modify(
                &a,
                Interest {
                    readable: false,
                    writable: false,
                },
            )
            .unwrap();
            assert!(!p.wait(Some(Duration::from_millis(5))).unwrap());
            p.delete(&a).unwrap();
        }};
    }
    use waits;
}

//! The I/O thread's wait: for its socket, for a caller's wake-up, or for a deadline.
//!
//! On Linux this is epoll, used directly: one `epoll_pwait` per wait, the eventfd read only
//! when a caller did wake the thread, and a timerfd armed only for the rare deadline that
//! needs sub-millisecond precision (the output-coalescing hold of 200 µs; epoll's own
//! timeout is in milliseconds, rounded up). `polling` spends four more system calls on every
//! wait (it re-arms a timerfd and its notifier and drains the notifier each time); on a
//! pipelined QoS 1 stream the thread waits about once per two messages, so that was two
//! system calls per message. Elsewhere, `polling`.

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
    use std::mem::MaybeUninit;
    use std::os::fd::OwnedFd;

    use rustix::event::epoll;
    use rustix::event::{eventfd, EventfdFlags};
    use rustix::time::{
        timerfd_create, timerfd_settime, Itimerspec, TimerfdClockId, TimerfdFlags,
        TimerfdTimerFlags, Timespec,
    };

    use super::*;

    const SOCKET: u64 = 1;
    const NOTIFY: u64 = 2;
    const TIMER: u64 = 3;

    /// Deadlines shorter than this are kept to the microsecond (a timerfd); longer ones are
    /// rounded up to epoll's millisecond.
    const PRECISE_BELOW: Duration = Duration::from_millis(10);

    /// Whether a wait of `timeout` needs the timerfd: a deadline under [`PRECISE_BELOW`] that
    /// epoll's whole milliseconds would round up (a sub-millisecond hold would otherwise last
    /// a full millisecond or more).
    pub(super) fn needs_timer(timeout: Option<Duration>) -> bool {
        matches!(timeout, Some(t) if !t.is_zero() && t < PRECISE_BELOW && t.subsec_nanos() % 1_000_000 != 0)
    }

    /// epoll with an eventfd (wake-ups) and, once a precise deadline is first needed, a
    /// timerfd registered: an idle provider holds three descriptors (with its socket), not
    /// four, and a process fits a third more providers under its open-file limit.
    pub(crate) struct Poller {
        epoll: OwnedFd,
        notify: OwnedFd,
        /// Made by the first wait that needs it (only the I/O thread waits).
        timer: std::sync::OnceLock<OwnedFd>,
    }

    impl Poller {
        pub fn new() -> io::Result<Poller> {
            let epoll = epoll::create(epoll::CreateFlags::CLOEXEC)?;
            let notify = eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)?;
            epoll::add(
                &epoll,
                &notify,
                epoll::EventData::new_u64(NOTIFY),
                epoll::EventFlags::IN,
            )?;
            Ok(Poller {
                epoll,
                notify,
                timer: std::sync::OnceLock::new(),
            })
        }

        /// The timerfd, made and registered on first use.
        fn timer(&self) -> io::Result<&OwnedFd> {
            if let Some(t) = self.timer.get() {
                return Ok(t);
            }
            let timer = timerfd_create(
                TimerfdClockId::Monotonic,
                TimerfdFlags::CLOEXEC | TimerfdFlags::NONBLOCK,
            )?;
            epoll::add(
                &self.epoll,
                &timer,
                epoll::EventData::new_u64(TIMER),
                epoll::EventFlags::IN,
            )?;
            Ok(self.timer.get_or_init(|| timer))
        }

        fn flags(interest: Interest) -> epoll::EventFlags {
            let mut f = epoll::EventFlags::empty();
            if interest.readable {
                f |= epoll::EventFlags::IN | epoll::EventFlags::RDHUP;
            }
            if interest.writable {
                f |= epoll::EventFlags::OUT;
            }
            f
        }

        pub fn add(&self, socket: &TcpStream, interest: Interest) -> io::Result<()> {
            let data = epoll::EventData::new_u64(SOCKET);
            Ok(epoll::add(
                &self.epoll,
                socket,
                data,
                Self::flags(interest),
            )?)
        }

        pub fn modify(&self, socket: &TcpStream, interest: Interest) -> io::Result<()> {
            let data = epoll::EventData::new_u64(SOCKET);
            Ok(epoll::modify(
                &self.epoll,
                socket,
                data,
                Self::flags(interest),
            )?)
        }

        pub fn delete(&self, socket: &TcpStream) -> io::Result<()> {
            Ok(epoll::delete(&self.epoll, socket)?)
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
        /// (`None`: no deadline). `Ok(true)` when the socket was reported readable.
        pub fn wait(&self, timeout: Option<Duration>) -> io::Result<bool> {
            // Without a descriptor for the timer (the process is out of them) the wait keeps
            // to epoll's own timeout, up to a millisecond late: failing it would drop a
            // healthy connection that then cannot get a socket to come back either.
            let timer = if needs_timer(timeout) {
                self.timer().ok()
            } else {
                None
            };
            let epoll_timeout = match (timeout, timer) {
                (Some(t), Some(timer)) => {
                    let spec = Itimerspec {
                        it_interval: Timespec {
                            tv_sec: 0,
                            tv_nsec: 0,
                        },
                        it_value: Timespec {
                            tv_sec: 0,
                            tv_nsec: t.subsec_nanos().into(),
                        },
                    };
                    timerfd_settime(timer, TimerfdTimerFlags::empty(), &spec)?;
                    None
                }
                // Beyond ~24 days (`Duration::MAX` included) the wait just ends early and
                // the caller waits again.
                (Some(t), None) => Some(Timespec {
                    tv_sec: t.as_secs().min(2_000_000) as _,
                    tv_nsec: t.subsec_nanos().into(),
                }),
                (None, _) => None,
            };
            let mut buf = [MaybeUninit::<epoll::Event>::uninit(); 4];
            let (events, _) = match epoll::wait(&self.epoll, &mut buf, epoll_timeout.as_ref()) {
                Ok(got) => got,
                Err(rustix::io::Errno::INTR) => return Ok(true),
                Err(e) => return Err(e.into()),
            };
            let mut readable = false;
            let mut drain = [0u8; 8];
            for e in events.iter() {
                match e.data.u64() {
                    NOTIFY => {
                        let _ = rustix::io::read(&self.notify, &mut drain);
                    }
                    TIMER => {
                        if let Some(timer) = self.timer.get() {
                            let _ = rustix::io::read(timer, &mut drain);
                        }
                    }
                    _ => {
                        let flags = e.flags;
                        readable |= flags.intersects(
                            epoll::EventFlags::IN
                                | epoll::EventFlags::RDHUP
                                | epoll::EventFlags::HUP
                                | epoll::EventFlags::ERR,
                        );
                    }
                }
            }
            Ok(readable)
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

    /// A sub-millisecond deadline is not rounded up to epoll's millisecond: it goes to the
    /// timerfd. (Decided without a clock: how long a wait takes is the benchmark's business;
    /// a loaded machine may make any wait long, never early.)
    #[cfg(target_os = "linux")]
    #[test]
    fn sub_millisecond_deadlines_use_the_timer() {
        use super::linux::needs_timer;
        for us in [1, 200, 999, 1500, 9_999] {
            assert!(needs_timer(Some(Duration::from_micros(us))), "{us} µs");
        }
        // Whole milliseconds, long deadlines, no deadline and zero need no timer.
        for t in [
            Some(Duration::from_millis(1)),
            Some(Duration::from_millis(5)),
            Some(Duration::from_millis(10)),
            Some(Duration::from_secs(60)),
            Some(Duration::ZERO),
            None,
        ] {
            assert!(!needs_timer(t), "{t:?}");
        }
        // And the timer really ends the wait: a 200 µs wait with nothing else to wake it
        // returns (the long deadline epoll would otherwise use is none at all).
        let p = Poller::new().unwrap();
        let t = Instant::now();
        assert!(!p.wait(Some(Duration::from_micros(200))).unwrap());
        assert!(t.elapsed() >= Duration::from_micros(200));
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

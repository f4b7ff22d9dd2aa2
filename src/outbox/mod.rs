//! The durable outbox: QoS 1/2 publishes on stable storage from acceptance to acknowledgement,
//! so that a later process resends what an earlier one could not.
//!
//! One append-only log per outbox directory ([`log`]), locked by one process at a time.
//! Records are appended to a buffer as the I/O thread works and written with one `write`
//! and (in [`OutboxSync::Always`]) one `fsync` per batch: group commit. Records that only
//! shorten the resend list (a publish finished, an incoming PUBREL) are written but wait for
//! the next fsync: losing them resends an acknowledged message once (a duplicate), never
//! loses one. When the log is mostly finished records it is rewritten with only the live
//! ones (a new file, fsynced, renamed over the old).

pub mod log;

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use self::log::{Record, State};
use crate::error::{Error, Result};
use crate::mqtt::session::{Journal, Restored};
use crate::mqtt::QoS;

/// The log's file name in the outbox directory.
const LOG: &str = "outbox.log";
/// The lock file's name.
const LOCK: &str = "outbox.lock";
/// Rewrite the log once it is this much larger than what it holds live.
const COMPACT_OVER: u64 = 4 * 1024 * 1024;

/// fsyncs made by every outbox of the process (the benchmark reports them per message).
pub static SYNCS: AtomicU64 = AtomicU64::new(0);

/// When the outbox forces its writes to stable storage.
///
/// ```
/// use std::time::Duration;
/// use mqtt_pubsub::{MqttOverWsProvider, OutboxSync};
/// // A device on flash: fsync at most once a second.
/// let provider = MqttOverWsProvider::builder("ws://localhost:9001/mqtt")
///     .client_id("device-7")
///     .outbox("/var/lib/device/outbox")
///     .outbox_sync(OutboxSync::Every(Duration::from_secs(1)))
///     .build()?;
/// # Ok::<(), mqtt_pubsub::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum OutboxSync {
    /// Before a QoS 1/2 publish is reported accepted (one fsync per batch of publishes taken
    /// together). Survives a process kill, a crash and a power loss. The default.
    #[default]
    Always,
    /// At most once per interval: a publish is reported accepted once written to the
    /// operating system, which survives a process kill or crash; a power loss or kernel
    /// crash can lose what was accepted in the last interval. For flash that wears.
    Every(Duration),
}

/// How a provider's outbox is set up.
#[derive(Debug, Clone)]
pub struct OutboxOptions {
    /// The directory (created if missing).
    pub dir: PathBuf,
    /// Most bytes of unfinished publishes (topic + payload + 64 each).
    pub max_bytes: u64,
    /// When writes are forced to storage.
    pub sync: OutboxSync,
}

/// An open outbox.
#[derive(Debug)]
pub struct Outbox {
    dir: PathBuf,
    file: File,
    /// Held (locked) while open.
    _lock: File,
    /// This process's claim on the directory.
    _claim: Claim,
    binding: Record,
    /// Records not yet written.
    pending: Vec<u8>,
    /// Whether `pending` (or what was written since the last fsync) holds a record that
    /// must be durable before the next acceptance or output.
    must_sync: bool,
    written_unsynced: bool,
    sync: OutboxSync,
    last_sync: Instant,
    /// Unfinished publishes: ticket → size.
    live: std::collections::HashMap<u64, u64>,
    live_bytes: u64,
    max_bytes: u64,
    file_len: u64,
}

/// The outbox directories open in this process. The lock file tells processes apart, not
/// two openers in one process (a second `PubSub`, a second provider), which deserve their
/// own error.
static OPEN_HERE: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());

/// One directory of [`OPEN_HERE`], released when the outbox closes.
#[derive(Debug)]
struct Claim(PathBuf);

impl Claim {
    fn take(dir: &std::path::Path) -> std::result::Result<Claim, String> {
        let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
        let mut open = OPEN_HERE.lock().unwrap_or_else(|e| e.into_inner());
        if open.contains(&dir) {
            return Err(
                "already open in this process (by another provider, or another PubSub \
                 that has not closed it yet): one provider per outbox"
                    .into(),
            );
        }
        open.push(dir.clone());
        Ok(Claim(dir))
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        OPEN_HERE
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|d| *d != self.0);
    }
}

/// Whether an outbox bound to `stored` may be opened for `wanted`: each is a client id and
/// a space-separated list of broker URLs. The same client and a broker set that shares a URL
/// (a failover list reordered, or grown) is the same destination.
fn same_destination(stored: (&str, &str), wanted: (&str, &str)) -> bool {
    stored.0 == wanted.0
        && stored
            .1
            .split(' ')
            .any(|u| wanted.1.split(' ').any(|w| w == u))
}

/// Opens a file of the outbox for writing (and reading), created 0600 if `create` — never
/// through a symbolic link (a link planted at a file's name would redirect our writes).
fn open_private(path: &Path, create: bool, append: bool) -> std::io::Result<File> {
    let mut o = OpenOptions::new();
    o.read(true).write(!append).append(append).create(create);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
        #[cfg(target_os = "linux")]
        o.custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32);
    }
    o.open(path)
}

/// Creates `dir` (0700, as ssh and gpg do: payloads are private) if missing, and refuses
/// one that another user owns or that others may write to: whoever can write there can
/// replace the log with publishes of their choosing (valid checksums are no protection),
/// and whoever can read it reads the payloads.
fn private_dir(dir: &Path) -> std::result::Result<(), String> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| format!("creating the directory: {e}"))?;
        let meta =
            std::fs::symlink_metadata(dir).map_err(|e| format!("reading the directory: {e}"))?;
        if !meta.is_dir() {
            return Err("not a directory (a symbolic link is not followed)".into());
        }
        #[cfg(target_os = "linux")]
        {
            let me = rustix::process::geteuid().as_raw();
            if meta.uid() != me {
                return Err(format!(
                    "the directory belongs to user {} (this process runs as {me}): another \
                     user could replace what it holds; use a directory of your own",
                    meta.uid()
                ));
            }
        }
        if meta.mode() & 0o022 != 0 {
            return Err(format!(
                "the directory is writable by others (mode {:o}): anyone could replace what \
                 it holds; chmod 700 it or use another",
                meta.permissions().mode() & 0o777
            ));
        }
        Ok(())
    }
    #[cfg(not(unix))]
    {
        std::fs::create_dir_all(dir).map_err(|e| format!("creating the directory: {e}"))
    }
}

/// What an outbox kept from an earlier process.
#[derive(Debug, Default)]
pub struct Kept {
    /// Unfinished publishes, in acceptance order.
    pub publishes: Vec<Restored>,
    /// Incoming QoS 2 identifiers awaiting PUBREL.
    pub inbound_qos2: Vec<u16>,
    /// Where tickets continue.
    pub next_ticket: u64,
}

impl Outbox {
    /// Opens (or creates) the outbox in `options.dir` for `client_id` at `url`: locks it,
    /// checks the binding, cuts a torn tail, and returns what it kept.
    pub fn open(options: &OutboxOptions, client_id: &str, url: &str) -> Result<(Outbox, Kept)> {
        let dir = options.dir.clone();
        let err = |message: String| Error::Outbox {
            path: dir.display().to_string(),
            message,
        };
        private_dir(&dir).map_err(err)?;
        let claim = Claim::take(&dir).map_err(err)?;
        let lock = open_private(&dir.join(LOCK), true, false)
            .map_err(|e| err(format!("opening the lock file: {e}")))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(err(
                    "in use by another process (one process per outbox)".into()
                ))
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(err(format!("locking: {e}"))),
        }
        let path = dir.join(LOG);
        // Streamed: one record at a time, never the whole file (see `log::replay_stream`).
        let limits = log::Limits {
            max_live: options.max_bytes,
            max_tail: options.max_bytes.saturating_add(1 << 20),
        };
        let state = match open_private(&path, false, false) {
            Ok(f) => {
                let len = f
                    .metadata()
                    .map_err(|e| err(format!("reading {LOG}: {e}")))?
                    .len();
                let mut r = std::io::BufReader::with_capacity(64 * 1024, f);
                log::replay_stream(&mut r, len, limits)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(log::State::default()),
            Err(e) => return Err(err(format!("reading {LOG}: {e}"))),
        }
        .map_err(|e| err(format!("{LOG}: {e}")))?;
        let binding = Record::Binding {
            client_id: client_id.to_string(),
            url: url.to_string(),
        };
        if let Some((c, u)) = &state.binding {
            if !same_destination((c, u), (client_id, url)) {
                return Err(err(format!(
                    "it belongs to client {c:?} at {u}, not to client {client_id:?} at {url}; \
                     open it with that client id and one of those broker URLs to send what it \
                     holds, or move the directory away to start afresh (what it holds is then \
                     not sent)"
                )));
            }
        }
        if state.torn > 0 {
            ::log::warn!(
                "outbox {}: dropped a torn last record ({} bytes; power lost while writing)",
                dir.display(),
                state.torn
            );
        }
        let mut outbox = Outbox {
            file: open_private(&path, true, true)
                .map_err(|e| err(format!("opening {LOG}: {e}")))?,
            dir: dir.clone(),
            _lock: lock,
            _claim: claim,
            binding,
            pending: Vec::new(),
            must_sync: false,
            written_unsynced: false,
            sync: options.sync,
            last_sync: Instant::now(),
            live: Default::default(),
            live_bytes: 0,
            max_bytes: options.max_bytes,
            file_len: 0,
        };
        // Always start from a clean file: the live records only, no torn tail.
        outbox
            .rewrite(&state)
            .map_err(|e| err(format!("rewriting {LOG}: {e}")))?;
        let next_ticket = state.last_ticket.map_or(0, |t| t.saturating_add(1));
        let inbound_qos2 = state.inbound.iter().copied().collect();
        // Moved, not copied: what the log holds is in memory once.
        let kept = Kept {
            publishes: state
                .publishes
                .into_iter()
                .map(|(ticket, p)| Restored {
                    ticket,
                    topic: p.topic,
                    payload: p.payload,
                    props: p.props,
                    qos: if p.qos == 2 {
                        QoS::ExactlyOnce
                    } else {
                        QoS::AtLeastOnce
                    },
                    retain: p.retain,
                    pid: p.pid,
                    released: p.released,
                })
                .collect(),
            inbound_qos2,
            next_ticket,
        };
        Ok((outbox, kept))
    }

    /// Unfinished publishes held.
    pub fn records(&self) -> u64 {
        self.live.len() as u64
    }

    /// Their bytes as the bound counts them.
    pub fn live_bytes(&self) -> u64 {
        self.live_bytes
    }

    /// The directory, for errors.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Records a QoS 1/2 publish being accepted (written at the next [`Outbox::commit`]);
    /// [`Error::OutboxFull`] if it does not fit.
    pub fn accept(
        &mut self,
        ticket: u64,
        topic: &str,
        payload: &[u8],
        props: &[u8],
        qos: QoS,
        retain: bool,
    ) -> Result<()> {
        let size = (topic.len() + payload.len() + props.len() + 64) as u64;
        if self.live_bytes + size > self.max_bytes {
            return Err(Error::OutboxFull {
                path: self.dir.display().to_string(),
                max_bytes: self.max_bytes,
            });
        }
        log::encode(
            &Record::Publish {
                ticket,
                qos: qos as u8,
                retain,
                topic: topic.to_string(),
                payload: payload.to_vec(),
                props: props.to_vec(),
            },
            &mut self.pending,
        );
        self.live.insert(ticket, size);
        self.live_bytes += size;
        self.must_sync = true;
        Ok(())
    }

    /// Records what the session reported.
    pub fn journal(&mut self, entries: Vec<Journal>) {
        for entry in entries {
            let record = match entry {
                Journal::Assigned { ticket, pid } => {
                    self.must_sync = true;
                    Record::Assigned { ticket, pid }
                }
                Journal::Released { ticket } => {
                    self.must_sync = true;
                    Record::Released { ticket }
                }
                Journal::InboundReceived { pid } => {
                    self.must_sync = true;
                    Record::InboundReceived { pid }
                }
                Journal::Finished { ticket } => {
                    if let Some(size) = self.live.remove(&ticket) {
                        self.live_bytes -= size;
                    }
                    Record::Finished { ticket }
                }
                Journal::InboundReleased { pid } => Record::InboundReleased { pid },
            };
            log::encode(&record, &mut self.pending);
        }
    }

    /// Whether [`Outbox::commit`] has anything to do.
    pub fn dirty(&self) -> bool {
        !self.pending.is_empty() || (self.written_unsynced && self.sync_due())
    }

    fn sync_due(&self) -> bool {
        match self.sync {
            OutboxSync::Always => true,
            OutboxSync::Every(d) => self.last_sync.elapsed() >= d,
        }
    }

    /// When a relaxed outbox next wants an fsync of what it wrote (`None`: nothing waits).
    pub fn next_sync(&self) -> Option<Instant> {
        match self.sync {
            OutboxSync::Every(d) if self.written_unsynced => Some(self.last_sync + d),
            _ => None,
        }
    }

    /// Writes what is pending, and fsyncs when a record needs it (every time in
    /// [`OutboxSync::Always`], at most once per interval in [`OutboxSync::Every`]). Once it
    /// returns `Ok`, what was accepted survives what the mode promises.
    pub fn commit(&mut self) -> Result<()> {
        if !self.pending.is_empty() {
            let io = |e: std::io::Error| Error::Outbox {
                path: self.dir.display().to_string(),
                message: format!("writing: {e}"),
            };
            if let Err(e) = self.file.write_all(&self.pending) {
                // A full disk (or any failure) may have left part of a record: cut the file
                // back to its last whole record, so that it stays readable and the next
                // write (the same records again) lands where they belong. Those callers
                // hear the error; nothing is reported durable that is not.
                if let Err(cut) = self.file.set_len(self.file_len) {
                    return Err(io(std::io::Error::new(
                        cut.kind(),
                        format!("{e}; and cutting back the partial record failed: {cut}"),
                    )));
                }
                return Err(io(e));
            }
            self.file_len += self.pending.len() as u64;
            self.pending.clear();
            self.written_unsynced = true;
        }
        let wanted = match self.sync {
            OutboxSync::Always => self.must_sync,
            OutboxSync::Every(_) => self.sync_due(),
        };
        if self.written_unsynced && wanted {
            self.file.sync_data().map_err(|e| Error::Outbox {
                path: self.dir.display().to_string(),
                message: format!("fsync: {e}"),
            })?;
            SYNCS.fetch_add(1, Ordering::Relaxed);
            self.written_unsynced = false;
            self.must_sync = false;
            self.last_sync = Instant::now();
        }
        if self.file_len > COMPACT_OVER.max(self.live_bytes * 4) && !self.written_unsynced {
            self.compact()?;
        }
        Ok(())
    }

    /// Writes what is pending and fsyncs whatever is not yet on storage, whatever the mode
    /// (when the provider closes).
    pub fn sync_now(&mut self) -> Result<()> {
        self.must_sync = true;
        self.last_sync = Instant::now() - Duration::from_secs(3600 * 24);
        self.commit()
    }

    /// Rewrites the log with only its live records.
    fn compact(&mut self) -> Result<()> {
        let path = self.dir.display().to_string();
        let err = |message: String| Error::Outbox {
            path: path.clone(),
            message,
        };
        let f = open_private(&self.dir.join(LOG), false, false)
            .map_err(|e| err(format!("reading {LOG} to compact it: {e}")))?;
        let len = f
            .metadata()
            .map_err(|e| err(format!("reading {LOG} to compact it: {e}")))?
            .len();
        let limits = log::Limits {
            max_live: self.max_bytes,
            max_tail: self.max_bytes.saturating_add(1 << 20),
        };
        let state = log::replay_stream(&mut std::io::BufReader::new(f), len, limits)
            .map_err(|e| err(format!("{LOG}: {e}")))?;
        self.rewrite(&state)
            .map_err(|e| err(format!("compacting {LOG}: {e}")))
    }

    /// Replaces the log by `state`'s live records: a new file, fsynced, renamed over the old
    /// one, the directory fsynced; then appends go to it.
    fn rewrite(&mut self, state: &State) -> std::io::Result<()> {
        let tmp = self.dir.join(format!("{LOG}.tmp"));
        // Whatever is at the name goes (a link is removed, not followed), and the file is
        // made new: never someone else's file written through.
        match std::fs::remove_file(&tmp) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let mut o = OpenOptions::new();
        o.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
        let f = o.open(&tmp)?;
        // Written record by record through a buffer: the live publishes are in memory once
        // (in `state`), never a second time as the new file's bytes.
        let mut w = std::io::BufWriter::with_capacity(64 * 1024, f);
        let mut written = 0u64;
        let mut record = Vec::new();
        let mut put = |w: &mut std::io::BufWriter<File>, r: &Record| -> std::io::Result<()> {
            record.clear();
            log::encode(r, &mut record);
            written += record.len() as u64;
            w.write_all(&record)
        };
        self.live.clear();
        self.live_bytes = 0;
        let result = (|| {
            w.write_all(log::MAGIC)?;
            put(&mut w, &self.binding)?;
            for (ticket, p) in &state.publishes {
                put(
                    &mut w,
                    &Record::Publish {
                        ticket: *ticket,
                        qos: p.qos,
                        retain: p.retain,
                        topic: p.topic.clone(),
                        payload: p.payload.clone(),
                        props: p.props.clone(),
                    },
                )?;
                if let Some(pid) = p.pid {
                    put(
                        &mut w,
                        &Record::Assigned {
                            ticket: *ticket,
                            pid,
                        },
                    )?;
                }
                if p.released {
                    put(&mut w, &Record::Released { ticket: *ticket })?;
                }
            }
            for pid in &state.inbound {
                put(&mut w, &Record::InboundReceived { pid: *pid })?;
            }
            let f = w.into_inner().map_err(|e| e.into_error())?;
            f.sync_all()
        })();
        if let Err(e) = result {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        for (ticket, p) in &state.publishes {
            self.live.insert(*ticket, p.size());
            self.live_bytes += p.size();
        }
        let out_len = log::MAGIC.len() as u64 + written;
        // The handle appends go to is the new file's, taken before the rename: once the
        // rename is done, nothing that fails after it (the directory's fsync) may leave
        // appends going to the replaced file, which no longer has a name.
        let new = open_private(&tmp, false, true)?;
        std::fs::rename(&tmp, self.dir.join(LOG))?;
        self.file = new;
        self.file_len = out_len;
        SYNCS.fetch_add(2, Ordering::Relaxed);
        File::open(&self.dir)?.sync_all()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "mqtt-pubsub-outbox-{tag}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    fn options(d: &Path) -> OutboxOptions {
        OutboxOptions {
            dir: d.to_path_buf(),
            max_bytes: 1 << 20,
            sync: OutboxSync::Always,
        }
    }

    #[test]
    fn what_is_unfinished_comes_back_and_the_binding_is_checked() {
        let d = dir("reopen");
        {
            let (mut o, kept) = Outbox::open(&options(&d), "c", "mqtt://b").unwrap();
            assert!(kept.publishes.is_empty());
            for t in 0..5 {
                o.accept(t, "t", &[t as u8], &[], QoS::AtLeastOnce, false)
                    .unwrap();
            }
            o.journal(vec![
                Journal::Finished { ticket: 1 },
                Journal::Finished { ticket: 3 },
            ]);
            o.commit().unwrap();
            // A second opener in this process is refused too, and told so.
            let e = Outbox::open(&options(&d), "c", "mqtt://b").unwrap_err();
            assert!(
                e.to_string().contains("already open in this process"),
                "{e}"
            );
        }
        let (_o, kept) = Outbox::open(&options(&d), "c", "mqtt://b").unwrap();
        let tickets: Vec<u64> = kept.publishes.iter().map(|p| p.ticket).collect();
        assert_eq!((tickets, kept.next_ticket), (vec![0, 2, 4], 5));
        drop(_o);
        let e = Outbox::open(&options(&d), "other", "mqtt://b").unwrap_err();
        assert!(e.to_string().contains("belongs to client"), "{e}");
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn full_is_an_error_and_finishing_makes_room() {
        let d = dir("full");
        let mut opts = options(&d);
        opts.max_bytes = 1000;
        let (mut o, _) = Outbox::open(&opts, "c", "u").unwrap();
        o.accept(0, "t", &[0; 800], &[], QoS::AtLeastOnce, false)
            .unwrap();
        let e = o
            .accept(1, "t", &[0; 800], &[], QoS::AtLeastOnce, false)
            .unwrap_err();
        assert!(
            matches!(
                e,
                Error::OutboxFull {
                    max_bytes: 1000,
                    ..
                }
            ),
            "{e}"
        );
        o.journal(vec![Journal::Finished { ticket: 0 }]);
        o.accept(1, "t", &[0; 800], &[], QoS::AtLeastOnce, false)
            .unwrap();
        drop(o);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn compaction_keeps_only_live_records() {
        let d = dir("compact");
        let mut opts = options(&d);
        opts.max_bytes = 64 << 20;
        let (mut o, _) = Outbox::open(&opts, "c", "u").unwrap();
        let payload = vec![7u8; 64 * 1024];
        for t in 0..100 {
            o.accept(t, "t", &payload, &[], QoS::AtLeastOnce, false)
                .unwrap();
            if t < 99 {
                o.journal(vec![Journal::Finished { ticket: t }]);
            }
            o.commit().unwrap();
        }
        let len = std::fs::metadata(d.join(LOG)).unwrap().len();
        assert!(len < COMPACT_OVER, "{len}");
        drop(o);
        let (_o, kept) = Outbox::open(&opts, "c", "u").unwrap();
        assert_eq!(kept.publishes.len(), 1);
        assert_eq!(kept.publishes[0].ticket, 99);
        drop(_o);
        let _ = std::fs::remove_dir_all(&d);
    }
}

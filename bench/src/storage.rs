//! The durable outbox's workload on three stores, in one run: our append-only log
//! (`src/outbox/`), SQLite (rusqlite, bundled, WAL, `synchronous=FULL`) and redb.
//!
//! ```text
//! cd bench && cargo run --release --bin storage -- [--messages 20000] [--batch 100] [--runs 3]
//! ```
//!
//! Workload, as the I/O thread makes it: messages of 64 B arrive in batches; each batch is
//! made durable with one commit (what a publish call waits for); the acknowledgements of
//! the batch before it are recorded in the same commit, in order, except 1 % acknowledged a
//! batch later (out of order). At the end 1000 messages are left unacknowledged, the store
//! is closed, and reopened: "replay" reads them back in order. Figures: messages per second
//! for append + ack, replay time, and the file size at the end.

use std::path::{Path, PathBuf};
use std::time::Instant;

use mqtt_pubsub::internals::session::Journal;
use mqtt_pubsub::internals::{Outbox, OutboxOptions};
use mqtt_pubsub::{OutboxSync, QoS};

const TOPIC: &str = "bench/storage/topic";

trait Store {
    fn name(&self) -> &'static str;
    /// One durable commit: `add` new messages, `ack` finished ones.
    fn commit(&mut self, add: &[(u64, Vec<u8>)], ack: &[u64]);
    /// Closes, reopens, reads every live message in order; returns how many.
    fn replay(self: Box<Self>) -> usize;
}

struct OurLog {
    dir: PathBuf,
    outbox: Option<Outbox>,
}

fn options(dir: &Path) -> OutboxOptions {
    OutboxOptions {
        dir: dir.to_path_buf(),
        max_bytes: 1 << 30,
        sync: OutboxSync::Always,
    }
}

impl Store for OurLog {
    fn name(&self) -> &'static str {
        "mqtt-pubsub log"
    }
    fn commit(&mut self, add: &[(u64, Vec<u8>)], ack: &[u64]) {
        let o = self.outbox.as_mut().unwrap();
        o.journal(
            ack.iter()
                .map(|t| Journal::Finished { ticket: *t })
                .collect(),
        );
        for (t, p) in add {
            o.accept(*t, TOPIC, p, &[], QoS::AtLeastOnce, false)
                .unwrap();
        }
        o.commit().unwrap();
    }
    fn replay(mut self: Box<Self>) -> usize {
        drop(self.outbox.take());
        let (_o, kept) = Outbox::open(&options(&self.dir), "bench", "mqtt://bench").unwrap();
        kept.publishes.len()
    }
}

struct Sqlite {
    path: PathBuf,
    conn: Option<rusqlite::Connection>,
}

impl Sqlite {
    fn open(path: &Path) -> rusqlite::Connection {
        let c = rusqlite::Connection::open(path).unwrap();
        c.execute_batch(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;
             CREATE TABLE IF NOT EXISTS outbox (ticket INTEGER PRIMARY KEY, topic TEXT, payload BLOB);",
        )
        .unwrap();
        c
    }
}

impl Store for Sqlite {
    fn name(&self) -> &'static str {
        "SQLite (WAL, synchronous=FULL)"
    }
    fn commit(&mut self, add: &[(u64, Vec<u8>)], ack: &[u64]) {
        let c = self.conn.as_mut().unwrap();
        let tx = c.transaction().unwrap();
        {
            let mut del = tx
                .prepare_cached("DELETE FROM outbox WHERE ticket = ?1")
                .unwrap();
            for t in ack {
                del.execute([*t as i64]).unwrap();
            }
            let mut ins = tx
                .prepare_cached("INSERT INTO outbox (ticket, topic, payload) VALUES (?1, ?2, ?3)")
                .unwrap();
            for (t, p) in add {
                ins.execute(rusqlite::params![*t as i64, TOPIC, p]).unwrap();
            }
        }
        tx.commit().unwrap();
    }
    fn replay(mut self: Box<Self>) -> usize {
        drop(self.conn.take());
        let c = Sqlite::open(&self.path);
        let mut q = c
            .prepare("SELECT ticket, topic, payload FROM outbox ORDER BY ticket")
            .unwrap();
        let rows = q
            .query_map([], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, Vec<u8>>(2)?,
                ))
            })
            .unwrap();
        rows.count()
    }
}

use redb::ReadableTable;

const TABLE: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("outbox");

struct Redb {
    path: PathBuf,
    db: Option<redb::Database>,
}

impl Store for Redb {
    fn name(&self) -> &'static str {
        "redb (durable commits)"
    }
    fn commit(&mut self, add: &[(u64, Vec<u8>)], ack: &[u64]) {
        let tx = self.db.as_ref().unwrap().begin_write().unwrap();
        {
            let mut t = tx.open_table(TABLE).unwrap();
            for k in ack {
                t.remove(*k).unwrap();
            }
            for (k, p) in add {
                let mut v = Vec::with_capacity(TOPIC.len() + p.len());
                v.extend_from_slice(TOPIC.as_bytes());
                v.extend_from_slice(p);
                t.insert(*k, v.as_slice()).unwrap();
            }
        }
        tx.commit().unwrap();
    }
    fn replay(mut self: Box<Self>) -> usize {
        drop(self.db.take());
        let db = redb::Database::create(&self.path).unwrap();
        let tx = db.begin_read().unwrap();
        let t = tx.open_table(TABLE).unwrap();
        t.iter().unwrap().count()
    }
}

fn dir_size(p: &Path) -> u64 {
    if p.is_dir() {
        std::fs::read_dir(p)
            .unwrap()
            .map(|e| dir_size(&e.unwrap().path()))
            .sum()
    } else {
        std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
    }
}

fn run(store: &str, base: &Path, n: u64, batch: u64) -> (f64, f64, u64) {
    let dir = base.join(store);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut s: Box<dyn Store> = match store {
        "log" => Box::new(OurLog {
            outbox: Some(
                Outbox::open(&options(&dir.join("outbox")), "bench", "mqtt://bench")
                    .unwrap()
                    .0,
            ),
            dir: dir.join("outbox"),
        }),
        "sqlite" => Box::new(Sqlite {
            conn: Some(Sqlite::open(&dir.join("outbox.db"))),
            path: dir.join("outbox.db"),
        }),
        _ => Box::new(Redb {
            db: Some(redb::Database::create(dir.join("outbox.redb")).unwrap()),
            path: dir.join("outbox.redb"),
        }),
    };
    let payload = vec![b'x'; 64];
    let mut late: Vec<u64> = Vec::new();
    let t0 = Instant::now();
    let mut next = 0u64;
    let keep_from = n.saturating_sub(1000);
    while next < n {
        let add: Vec<(u64, Vec<u8>)> = (next..(next + batch).min(n))
            .map(|t| (t, payload.clone()))
            .collect();
        // Acknowledge the batch before this one (in order), but 1 % a batch later.
        let mut ack: Vec<u64> = std::mem::take(&mut late);
        if next >= batch {
            for t in next - batch..next {
                if t >= keep_from {
                    continue;
                }
                if t % 100 == 7 {
                    late.push(t);
                } else {
                    ack.push(t);
                }
            }
        }
        s.commit(&add, &ack);
        next += batch;
    }
    let secs = t0.elapsed().as_secs_f64();
    let name = s.name();
    let t1 = Instant::now();
    let live = s.replay();
    let replay_ms = t1.elapsed().as_secs_f64() * 1e3;
    let size = dir_size(&dir);
    eprintln!(
        "  {name}: {:.0} msg/s, replay {replay_ms:.1} ms ({live} live), {size} bytes",
        n as f64 / secs
    );
    let _ = std::fs::remove_dir_all(&dir);
    (n as f64 / secs, replay_ms, size)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let get = |flag: &str, default: u64| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .map_or(default, |v| v.parse().unwrap())
    };
    let (n, batch, runs) = (
        get("--messages", 20_000),
        get("--batch", 100),
        get("--runs", 3),
    );
    let base = std::env::temp_dir().join(format!("mqtt-pubsub-storage-{}", std::process::id()));
    eprintln!(
        "{n} messages of 64 B, batches of {batch}, {runs} rounds, stores alternating, in {}",
        base.display()
    );
    let stores = ["log", "sqlite", "redb"];
    let mut results: Vec<Vec<(f64, f64, u64)>> = vec![Vec::new(); stores.len()];
    for round in 0..runs as usize {
        for k in 0..stores.len() {
            let i = (k + round) % stores.len();
            results[i].push(run(stores[i], &base, n, batch));
        }
    }
    let _ = std::fs::remove_dir_all(&base);
    println!("| store | append + ack, msg/s | replay of 1000, ms | file size, KiB |");
    println!("|---|---:|---:|---:|");
    for (i, s) in stores.iter().enumerate() {
        let med = |f: &dyn Fn(&(f64, f64, u64)) -> f64| {
            let mut v: Vec<f64> = results[i].iter().map(f).collect();
            v.sort_by(|a, b| a.total_cmp(b));
            v[v.len() / 2]
        };
        println!(
            "| {} | {:.0} | {:.1} | {:.0} |",
            match *s {
                "log" => "mqtt-pubsub log",
                "sqlite" => "SQLite (rusqlite 0.37, bundled; WAL, synchronous=FULL)",
                _ => "redb 2",
            },
            med(&|r| r.0),
            med(&|r| r.1),
            med(&|r| r.2 as f64 / 1024.0)
        );
    }
}

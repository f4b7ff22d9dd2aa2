//! The outbox's on-disk format: an append-only log of checksummed records, and the reader
//! that replays it (pure: a byte stream in, state out; fuzzed). The reader streams: it holds
//! one record at a time, plus at most a torn tail's worth of bytes when a record cannot be
//! read, so opening a log costs what the log holds live, never the log's size.
//!
//! File: `MQPSOBX1` (8 bytes), then records. Record: body length (u32 LE), CRC-32 of the
//! body (u32 LE), body. Body: a type byte and its fields (integers little-endian, strings
//! and payloads with a u32 length). The first record binds the file to a client id and a
//! broker URL.
//!
//! A record that runs past the end of the file, or the last record when its checksum is
//! wrong, is a torn write (power lost while appending): it and anything after it are
//! dropped. A wrong checksum with more records after it is corruption: an error.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;

/// The file's first bytes.
pub const MAGIC: &[u8; 8] = b"MQPSOBX1";
/// Bytes before a record's body.
pub const RECORD_HEADER: usize = 8;

const BINDING: u8 = 1;
const PUBLISH: u8 = 2;
const ASSIGNED: u8 = 3;
const RELEASED: u8 = 4;
const FINISHED: u8 = 5;
const INBOUND_RECEIVED: u8 = 6;
const INBOUND_RELEASED: u8 = 7;
/// A publish with MQTT 5 properties (a `PUBLISH` record and the encoded properties).
const PUBLISH_V5: u8 = 8;

/// One record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// Which client and broker the file belongs to (first record).
    Binding {
        /// Client identifier.
        client_id: String,
        /// Broker URL, without credentials or query.
        url: String,
    },
    /// A QoS 1/2 publish accepted.
    Publish {
        /// Its id (the session's ticket).
        ticket: u64,
        /// 1 or 2.
        qos: u8,
        /// Retain flag.
        retain: bool,
        /// Topic.
        topic: String,
        /// Payload.
        payload: Vec<u8>,
        /// MQTT 5 properties, encoded (empty: none; then the record is the 3.1.1 one).
        props: Vec<u8>,
    },
    /// A QoS 2 publish took a packet identifier.
    Assigned {
        /// The publish.
        ticket: u64,
        /// Its packet identifier.
        pid: u16,
    },
    /// A QoS 2 publish got its PUBREC.
    Released {
        /// The publish.
        ticket: u64,
    },
    /// A publish is finished (acknowledged, or refused and dropped).
    Finished {
        /// The publish.
        ticket: u64,
    },
    /// An incoming QoS 2 message awaits PUBREL.
    InboundReceived {
        /// Its packet identifier.
        pid: u16,
    },
    /// Its PUBREL came.
    InboundReleased {
        /// Its packet identifier.
        pid: u16,
    },
}

/// Appends `record`, framed, to `out`.
pub fn encode(record: &Record, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&[0; RECORD_HEADER]);
    let str_field = |out: &mut Vec<u8>, b: &[u8]| {
        out.extend_from_slice(&(b.len() as u32).to_le_bytes());
        out.extend_from_slice(b);
    };
    match record {
        Record::Binding { client_id, url } => {
            out.push(BINDING);
            str_field(out, client_id.as_bytes());
            str_field(out, url.as_bytes());
        }
        Record::Publish {
            ticket,
            qos,
            retain,
            topic,
            payload,
            props,
        } => {
            out.push(if props.is_empty() {
                PUBLISH
            } else {
                PUBLISH_V5
            });
            out.extend_from_slice(&ticket.to_le_bytes());
            out.push(*qos);
            out.push(u8::from(*retain));
            str_field(out, topic.as_bytes());
            str_field(out, payload);
            if !props.is_empty() {
                str_field(out, props);
            }
        }
        Record::Assigned { ticket, pid } => {
            out.push(ASSIGNED);
            out.extend_from_slice(&ticket.to_le_bytes());
            out.extend_from_slice(&pid.to_le_bytes());
        }
        Record::Released { ticket } => {
            out.push(RELEASED);
            out.extend_from_slice(&ticket.to_le_bytes());
        }
        Record::Finished { ticket } => {
            out.push(FINISHED);
            out.extend_from_slice(&ticket.to_le_bytes());
        }
        Record::InboundReceived { pid } => {
            out.push(INBOUND_RECEIVED);
            out.extend_from_slice(&pid.to_le_bytes());
        }
        Record::InboundReleased { pid } => {
            out.push(INBOUND_RELEASED);
            out.extend_from_slice(&pid.to_le_bytes());
        }
    }
    let body = &out[start + RECORD_HEADER..];
    let (len, crc) = (body.len() as u32, crc32(body));
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// A publish the log still holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Live {
    /// 1 or 2.
    pub qos: u8,
    /// Retain flag.
    pub retain: bool,
    /// Topic.
    pub topic: String,
    /// Payload.
    pub payload: Vec<u8>,
    /// MQTT 5 properties, encoded (empty: none).
    pub props: Vec<u8>,
    /// For QoS 2: the packet identifier it took.
    pub pid: Option<u16>,
    /// For QoS 2: PUBREC received.
    pub released: bool,
}

impl Live {
    /// Bytes it counts against the outbox's bound.
    pub fn size(&self) -> u64 {
        (self.topic.len() + self.payload.len() + self.props.len() + 64) as u64
    }
}

/// What a log says, replayed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct State {
    /// `(client id, URL)` of the binding record.
    pub binding: Option<(String, String)>,
    /// Unfinished publishes by ticket (ticket order is acceptance order).
    pub publishes: BTreeMap<u64, Live>,
    /// Incoming QoS 2 identifiers awaiting PUBREL.
    pub inbound: BTreeSet<u16>,
    /// The largest ticket ever recorded (tickets continue after it).
    pub last_ticket: Option<u64>,
    /// The length of the valid part of the file (a torn tail is cut here).
    pub valid_len: usize,
    /// Bytes of a torn tail that were dropped.
    pub torn: usize,
    /// What the unfinished publishes count against the outbox's bound ([`Live::size`]).
    pub live_bytes: u64,
}

/// How much a replay may hold.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// The outbox's bound: a log whose unfinished publishes exceed it at its end was not
    /// written with this bound, and is refused rather than loaded. While replaying, what is
    /// unfinished may exceed it for a while (a burst written with a larger bound, finished
    /// since), up to [`TRANSIENT_FACTOR`] times it.
    pub max_live: u64,
    /// The most bytes read into memory after a record that cannot be read, to tell a torn
    /// tail (what a power loss leaves: part of one group of appends, or zeros) from
    /// corruption in the middle; more than this after it is corruption.
    pub max_tail: u64,
}

/// How many times the bound the publishes unfinished at some point of a log may take
/// while it is replayed (memory is held for them until they are finished).
pub const TRANSIENT_FACTOR: u64 = 4;

impl Limits {
    /// No limits: the whole input may be held (it is in memory already).
    // Used by the fuzz targets and the tests only.
    #[cfg_attr(not(feature = "__internals"), allow(dead_code))]
    pub const NONE: Limits = Limits {
        max_live: u64::MAX,
        max_tail: u64::MAX,
    };
}

/// Replays a whole log held in memory. `Err` is corruption (not a torn tail), in words.
// Used by the fuzz targets and the tests only.
#[cfg_attr(not(feature = "__internals"), allow(dead_code))]
pub fn replay(bytes: &[u8]) -> Result<State, String> {
    replay_stream(&mut &bytes[..], bytes.len() as u64, Limits::NONE)
}

/// Replays a log of `len` bytes read from `r` (buffer it), holding one record at a time.
/// `Err` is corruption (not a torn tail), a log over `limits`, or a read error, in words.
pub fn replay_stream(r: &mut impl Read, len: u64, limits: Limits) -> Result<State, String> {
    let mut magic = [0u8; MAGIC.len()];
    let got = read_full(r, &mut magic)?;
    if got < MAGIC.len() {
        // Power lost while the file was being created.
        return Ok(State {
            torn: got,
            ..State::default()
        });
    }
    if &magic != MAGIC {
        return Err("corrupt: not an mqtt-pubsub outbox (wrong magic bytes)".into());
    }
    let mut state = State::default();
    let mut at = MAGIC.len() as u64;
    let max_transient = limits.max_live.saturating_mul(TRANSIENT_FACTOR);
    // A record longer than that (plus room for its fields) is not one we wrote.
    let max_record = max_transient.saturating_add(64 * 1024);
    let mut body = Vec::new();
    while at < len {
        let left = len - at;
        let mut header = [0u8; RECORD_HEADER];
        let mut consumed = read_full(r, &mut header[..left.min(RECORD_HEADER as u64) as usize])?;
        if consumed == RECORD_HEADER {
            let n = u64::from(u32::from_le_bytes(
                header[0..4].try_into().expect("4 bytes"),
            ));
            let crc = u32::from_le_bytes(header[4..8].try_into().expect("4 bytes"));
            if n > 0 && n <= left - RECORD_HEADER as u64 && n <= max_record {
                if body.capacity() < n as usize + RECORD_HEADER {
                    // Room for the header too: a torn tail is made of this buffer (below).
                    body = Vec::with_capacity(n as usize + RECORD_HEADER);
                }
                body.resize(n as usize, 0);
                consumed += read_full(r, &mut body)?;
                if consumed as u64 == RECORD_HEADER as u64 + n && crc32(&body) == crc {
                    if let Ok(record) = decode(&body) {
                        apply(&mut state, record)
                            .map_err(|e| format!("corrupt: record at byte {at}: {e}"))?;
                        if state.live_bytes > max_transient {
                            return Err(over_bound(limits.max_live));
                        }
                        at += RECORD_HEADER as u64 + n;
                        if body.capacity() > 1 << 20 {
                            body = Vec::new();
                        }
                        continue;
                    }
                }
            }
        }
        // A record that cannot be read (short header, a length past the end, a wrong
        // checksum, fields that do not parse) is a torn tail — what a power loss during an
        // append leaves, zeros included — unless a chain of whole records runs from some
        // later byte to the end of the file: then something in the middle was corrupted (a
        // flipped bit), and the records after it must not be dropped silently.
        if left > limits.max_tail {
            return Err(format!(
                "corrupt: record at byte {at} is unreadable (its length or checksum is \
                 corrupt) and {left} bytes follow it, more than a torn write leaves"
            ));
        }
        // The tail is the record's own buffer, header put in front (its room was reserved):
        // never a second copy of what was read.
        let mut tail = std::mem::take(&mut body);
        tail.truncate(consumed.saturating_sub(RECORD_HEADER));
        tail.splice(0..0, header[..consumed.min(RECORD_HEADER)].iter().copied());
        tail.reserve_exact((left as usize).saturating_sub(tail.len()));
        r.take(left - tail.len() as u64)
            .read_to_end(&mut tail)
            .map_err(|e| format!("reading: {e}"))?;
        if let Some(j) = valid_chain_after(&tail, 1) {
            return Err(format!(
                "corrupt: record at byte {at} is unreadable (its length or checksum is \
                 corrupt) and whole records follow from byte {} to the end",
                at + j as u64
            ));
        }
        state.valid_len = at as usize;
        state.torn = (len - at) as usize;
        return finish(state, limits);
    }
    state.valid_len = at as usize;
    finish(state, limits)
}

/// What is unfinished at the end must fit the bound.
fn finish(state: State, limits: Limits) -> Result<State, String> {
    if state.live_bytes > limits.max_live {
        return Err(over_bound(limits.max_live));
    }
    Ok(state)
}

fn over_bound(max_live: u64) -> String {
    format!(
        "its unsent publishes take more than the outbox's bound ({max_live} bytes, \
         outbox_max_bytes): it was written with a larger bound; open it with that bound to \
         send them"
    )
}

/// Reads until `buf` is full or the input ends; how much was read.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> Result<usize, String> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("reading: {e}")),
        }
    }
    Ok(n)
}

/// The whole, valid record at `at` (length within the file, checksum right, fields that
/// parse; a zero length is never one) and where it ends.
fn read_record(bytes: &[u8], at: usize) -> Option<(Record, usize)> {
    let rest = bytes.get(at..)?;
    if rest.len() < RECORD_HEADER {
        return None;
    }
    let len = u32::from_le_bytes(rest[0..4].try_into().expect("4 bytes")) as usize;
    let crc = u32::from_le_bytes(rest[4..8].try_into().expect("4 bytes"));
    let body = rest.get(RECORD_HEADER..RECORD_HEADER.checked_add(len)?)?;
    if body.is_empty() || crc32(body) != crc {
        return None;
    }
    let record = decode(body).ok()?;
    Some((record, at + RECORD_HEADER + len))
}

/// The first byte from `from` on where whole records follow one another to exactly the end
/// of the file, if any. A torn tail has none (zeros, or part of a record — even one whose
/// payload holds record-shaped bytes, which stop short of the end). Bounded work: at most
/// [`SCAN_CHECKS`] candidates, and each byte is walked over by the cheap length check at
/// most once across all of them (a position already seen on a failed walk fails again), so
/// that checksums are computed only for chains that end exactly at the end of the file.
fn valid_chain_after(bytes: &[u8], from: usize) -> Option<usize> {
    let len_at = |j: usize| -> Option<usize> {
        let l = u32::from_le_bytes(bytes.get(j..j + 4)?.try_into().expect("4 bytes")) as usize;
        (l > 0 && j + RECORD_HEADER + l <= bytes.len()).then_some(l)
    };
    // Positions known to lead to no whole chain, one bit each.
    let mut failed = vec![0u64; bytes.len() / 64 + 1];
    let seen = |f: &[u64], p: usize| (f[p / 64] >> (p % 64)) & 1 == 1;
    let mut checks = 0;
    for j in from..bytes.len().saturating_sub(RECORD_HEADER) {
        if seen(&failed, j) || len_at(j).is_none() {
            continue;
        }
        checks += 1;
        if checks > SCAN_CHECKS {
            return None;
        }
        // Lengths only: does the chain from `j` land exactly on the end?
        let mut at = j;
        let reaches_end = loop {
            if at == bytes.len() {
                break true;
            }
            if seen(&failed, at) {
                break false;
            }
            match len_at(at) {
                Some(l) => at += RECORD_HEADER + l,
                None => break false,
            }
        };
        // Then checksums and fields, only for such a chain.
        if reaches_end {
            let mut at = j;
            while let Some((_, end)) = read_record(bytes, at) {
                at = end;
            }
            if at == bytes.len() {
                return Some(j);
            }
        }
        // The walk's positions lead nowhere: never walked again.
        let mut at = j;
        while at < bytes.len() && !seen(&failed, at) {
            failed[at / 64] |= 1 << (at % 64);
            match len_at(at) {
                Some(l) => at += RECORD_HEADER + l,
                None => break,
            }
        }
    }
    None
}

/// Candidate records [`valid_chain_after`] checks at most.
const SCAN_CHECKS: usize = 4096;

fn apply(state: &mut State, record: Record) -> Result<(), String> {
    if state.binding.is_none() && !matches!(record, Record::Binding { .. }) {
        return Err("the first record is not the binding".into());
    }
    match record {
        Record::Binding { client_id, url } => {
            if state.binding.is_some() {
                return Err("a second binding record".into());
            }
            state.binding = Some((client_id, url));
        }
        Record::Publish {
            ticket,
            qos,
            retain,
            topic,
            payload,
            props,
        } => {
            if state.last_ticket.is_some_and(|t| ticket <= t) {
                return Err(format!("publish {ticket} is out of order"));
            }
            // No process makes 2^63 publishes; a larger ticket is corruption (and the next
            // ticket after u64::MAX would overflow).
            if ticket >= 1 << 63 {
                return Err(format!("publish {ticket} has an impossible ticket"));
            }
            if !(1..=2).contains(&qos) {
                return Err(format!("publish {ticket} has QoS {qos}"));
            }
            state.last_ticket = Some(ticket);
            let live = Live {
                qos,
                retain,
                topic,
                payload,
                props,
                pid: None,
                released: false,
            };
            state.live_bytes += live.size();
            state.publishes.insert(ticket, live);
        }
        Record::Assigned { ticket, pid } => {
            if let Some(p) = state.publishes.get_mut(&ticket) {
                p.pid = Some(pid);
            }
        }
        Record::Released { ticket } => {
            if let Some(p) = state.publishes.get_mut(&ticket) {
                p.released = true;
            }
        }
        Record::Finished { ticket } => {
            if let Some(p) = state.publishes.remove(&ticket) {
                state.live_bytes -= p.size();
            }
        }
        Record::InboundReceived { pid } => {
            state.inbound.insert(pid);
        }
        Record::InboundReleased { pid } => {
            state.inbound.remove(&pid);
        }
    }
    Ok(())
}

struct Reader<'a> {
    b: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.b.len() < n {
            return Err("record shorter than its fields".into());
        }
        let (head, rest) = self.b.split_at(n);
        self.b = rest;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, String> {
        Ok(u16::from_le_bytes(self.take(2)?.try_into().expect("2")))
    }
    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8")))
    }
    fn bytes(&mut self) -> Result<&'a [u8], String> {
        let n = u32::from_le_bytes(self.take(4)?.try_into().expect("4")) as usize;
        self.take(n)
    }
    fn string(&mut self) -> Result<String, String> {
        String::from_utf8(self.bytes()?.to_vec()).map_err(|_| "text that is not UTF-8".into())
    }
}

fn decode(body: &[u8]) -> Result<Record, String> {
    let mut r = Reader { b: body };
    let record = match r.u8()? {
        BINDING => Record::Binding {
            client_id: r.string()?,
            url: r.string()?,
        },
        tag @ (PUBLISH | PUBLISH_V5) => Record::Publish {
            ticket: r.u64()?,
            qos: r.u8()?,
            retain: r.u8()? != 0,
            topic: r.string()?,
            payload: r.bytes()?.to_vec(),
            props: if tag == PUBLISH_V5 {
                let props = r.bytes()?.to_vec();
                if props.is_empty() {
                    return Err("a v5 publish record without properties".into());
                }
                props
            } else {
                Vec::new()
            },
        },
        ASSIGNED => Record::Assigned {
            ticket: r.u64()?,
            pid: r.u16()?,
        },
        RELEASED => Record::Released { ticket: r.u64()? },
        FINISHED => Record::Finished { ticket: r.u64()? },
        INBOUND_RECEIVED => Record::InboundReceived { pid: r.u16()? },
        INBOUND_RELEASED => Record::InboundReleased { pid: r.u16()? },
        other => return Err(format!("unknown record type {other}")),
    };
    if !r.b.is_empty() {
        return Err("bytes after the record's fields".into());
    }
    Ok(record)
}

/// CRC-32 (IEEE 802.3, as zlib and gzip), table-driven.
pub fn crc32(data: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut t = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut c = i as u32;
            let mut k = 0;
            while k < 8 {
                c = if c & 1 != 0 {
                    0xEDB8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
                k += 1;
            }
            t[i] = c;
            i += 1;
        }
        t
    };
    let mut c = !0u32;
    for &b in data {
        c = TABLE[((c ^ u32::from(b)) & 0xff) as usize] ^ (c >> 8);
    }
    !c
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(records: &[Record]) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        for r in records {
            encode(r, &mut out);
        }
        out
    }

    fn binding() -> Record {
        Record::Binding {
            client_id: "c".into(),
            url: "mqtt://b:1883".into(),
        }
    }

    fn publish(ticket: u64) -> Record {
        Record::Publish {
            ticket,
            qos: 1,
            retain: false,
            topic: "t".into(),
            payload: vec![ticket as u8; 3],
            props: Vec::new(),
        }
    }

    /// Found by the hostile review: what a power loss leaves is a torn tail, not corruption
    /// — a tail of zeros (the size reached the disk, the data did not), a batch torn into
    /// zeros, a torn record whose payload holds record-shaped bytes — while a flipped length
    /// with whole records after it stays corruption.
    #[test]
    fn torn_tails_and_corruption_are_told_apart() {
        let base = file(&[
            Record::Binding {
                client_id: "c".into(),
                url: "u".into(),
            },
            publish(0),
        ]);
        let kept = |b: &[u8]| replay(b).map(|s| s.publishes.keys().copied().collect::<Vec<_>>());
        // Zeros after the last whole record.
        let mut zeros = base.clone();
        zeros.extend(vec![0u8; 512]);
        assert_eq!(kept(&zeros), Ok(vec![0]));
        // A batch of two records torn after 20 bytes, the rest zeros.
        let mut batch = Vec::new();
        encode(&publish(1), &mut batch);
        encode(&publish(2), &mut batch);
        let mut torn = base.clone();
        torn.extend_from_slice(&batch[..20]);
        torn.extend(vec![0u8; batch.len() - 20]);
        assert_eq!(kept(&torn), Ok(vec![0]));
        // A record whose payload holds a whole record, torn in its payload.
        let mut inner = Vec::new();
        encode(&Record::Finished { ticket: 0 }, &mut inner);
        let mut payload = b"hello ".to_vec();
        payload.extend(&inner);
        payload.extend(vec![b'x'; 1000]);
        let mut big = Vec::new();
        encode(
            &Record::Publish {
                ticket: 1,
                qos: 1,
                retain: false,
                topic: "t".into(),
                payload,
                props: Vec::new(),
            },
            &mut big,
        );
        let mut embedded = base.clone();
        embedded.extend_from_slice(&big[..big.len() - 500]);
        assert_eq!(kept(&embedded), Ok(vec![0]));
        // A flipped bit in a middle record's length, whole records after it: corruption.
        let at = base.len();
        let mut flipped = file(&[
            Record::Binding {
                client_id: "c".into(),
                url: "u".into(),
            },
            publish(0),
            publish(1),
            publish(2),
        ]);
        flipped[at + 3] ^= 0x40;
        assert!(replay(&flipped).is_err());
        // And a garbled checksum in the middle.
        let mut garbled = file(&[
            Record::Binding {
                client_id: "c".into(),
                url: "u".into(),
            },
            publish(0),
            publish(1),
            publish(2),
        ]);
        garbled[at + 5] ^= 1;
        assert!(replay(&garbled).is_err());
    }

    #[test]
    fn crc32_matches_the_standard_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
    }

    #[test]
    fn replay_keeps_what_is_unfinished_in_order() {
        let bytes = file(&[
            binding(),
            publish(1),
            publish(2),
            Record::Finished { ticket: 1 },
            Record::Publish {
                ticket: 3,
                qos: 2,
                retain: true,
                topic: "q2".into(),
                payload: vec![],
                // MQTT 5 properties: the PUBLISH_V5 record.
                props: vec![0x03, 0, 1, b'x'],
            },
            Record::Assigned { ticket: 3, pid: 7 },
            Record::Released { ticket: 3 },
            Record::InboundReceived { pid: 9 },
            Record::InboundReceived { pid: 10 },
            Record::InboundReleased { pid: 9 },
        ]);
        let s = replay(&bytes).unwrap();
        assert_eq!(s.publishes.keys().copied().collect::<Vec<_>>(), [2, 3]);
        let q2 = &s.publishes[&3];
        assert_eq!((q2.pid, q2.released, q2.retain), (Some(7), true, true));
        assert_eq!(q2.props, [0x03, 0, 1, b'x']);
        assert_eq!(s.inbound.iter().copied().collect::<Vec<_>>(), [10]);
        assert_eq!(
            (s.last_ticket, s.valid_len, s.torn),
            (Some(3), bytes.len(), 0)
        );
    }

    /// Cut anywhere inside the last record: the earlier ones survive, the tail is torn.
    #[test]
    fn a_torn_last_record_is_dropped_at_every_offset() {
        let before = file(&[binding(), publish(1)]);
        let bytes = file(&[binding(), publish(1), publish(2)]);
        for cut in before.len()..bytes.len() {
            let s = replay(&bytes[..cut]).unwrap_or_else(|e| panic!("cut {cut}: {e}"));
            assert_eq!(
                s.publishes.keys().copied().collect::<Vec<_>>(),
                [1],
                "cut {cut}"
            );
            assert_eq!((s.valid_len, s.torn), (before.len(), cut - before.len()));
        }
        // A garbled (not short) last record is torn too; garbled in the middle is corrupt.
        let mut garbled = bytes.clone();
        *garbled.last_mut().unwrap() ^= 0xff;
        assert_eq!(replay(&garbled).unwrap().publishes.len(), 1);
        let mut middle = bytes.clone();
        middle[before.len() - 1] ^= 0xff;
        assert!(replay(&middle).unwrap_err().contains("checksum"));
    }

    #[test]
    fn wrong_files_are_errors_not_panics() {
        assert!(replay(b"NOTANOUTBOX").is_err());
        assert!(replay(&file(&[publish(1)]))
            .unwrap_err()
            .contains("binding"));
        assert!(replay(&file(&[binding(), publish(2), publish(1)]))
            .unwrap_err()
            .contains("out of order"));
        // A length that claims 4 GiB is a torn tail, not an allocation.
        let mut huge = file(&[binding()]);
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        huge.extend_from_slice(&[0; 12]);
        assert_eq!(replay(&huge).unwrap().torn, 16);
        assert_eq!(replay(b"MQP").unwrap().torn, 3);
    }
}

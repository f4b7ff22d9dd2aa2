//! `mqtt-sub`'s output: the payload, `-v` topic and payload separated by a space, or a `-F`
//! format with mosquitto_sub's fields and escapes.

use std::time::{SystemTime, UNIX_EPOCH};

use mqtt_pubsub::Message;

/// One piece of a parsed `-F` format.
#[derive(Debug, Clone, PartialEq)]
enum Piece {
    Text(Vec<u8>),
    Field(char),
}

/// A parsed `-F` format.
#[derive(Debug, Clone)]
pub struct Format(Vec<Piece>);

/// The fields this tool prints (mosquitto_sub's `%m` message id, `%A` topic alias and the
/// JSON forms are not among them).
const FIELDS: &str = "tpqrlxXIUPCDEFRS";

impl Format {
    /// Parses `%` fields and `\` escapes as mosquitto_sub does.
    pub fn parse(format: &str) -> Result<Format, String> {
        let mut pieces = Vec::new();
        let mut text = Vec::new();
        let mut chars = format.chars();
        while let Some(c) = chars.next() {
            match c {
                '%' => match chars.next() {
                    Some('%') => text.push(b'%'),
                    Some(f) if FIELDS.contains(f) => {
                        if !text.is_empty() {
                            pieces.push(Piece::Text(std::mem::take(&mut text)));
                        }
                        pieces.push(Piece::Field(f));
                    }
                    Some(f) => return Err(format!("Invalid format specifier '{f}'.")),
                    None => return Err("Incomplete format specifier.".into()),
                },
                '\\' => {
                    let byte = match chars.next() {
                        Some('\\') => b'\\',
                        Some('0') => 0,
                        Some('a') => 7,
                        Some('e') => 0x1b,
                        Some('n') => b'\n',
                        Some('r') => b'\r',
                        Some('t') => b'\t',
                        Some('v') => 0x0b,
                        Some(other) => return Err(format!("Invalid escape specifier '{other}'.")),
                        None => return Err("Incomplete escape specifier.".into()),
                    };
                    text.push(byte);
                }
                other => {
                    let mut buf = [0; 4];
                    text.extend_from_slice(other.encode_utf8(&mut buf).as_bytes());
                }
            }
        }
        if !text.is_empty() {
            pieces.push(Piece::Text(text));
        }
        Ok(Format(pieces))
    }

    /// Writes `msg` in this format into `out`.
    pub fn write(&self, msg: &Message, out: &mut Vec<u8>) {
        for piece in &self.0 {
            match piece {
                Piece::Text(t) => out.extend_from_slice(t),
                Piece::Field(f) => field(*f, msg, out),
            }
        }
    }
}

fn hex(bytes: &[u8], upper: bool) -> String {
    bytes
        .iter()
        .map(|b| {
            if upper {
                format!("{b:02X}")
            } else {
                format!("{b:02x}")
            }
        })
        .collect()
}

fn field(f: char, msg: &Message, out: &mut Vec<u8>) {
    let text = match f {
        't' => msg.topic().to_string(),
        'p' => {
            out.extend_from_slice(msg.payload());
            return;
        }
        'q' => (msg.qos() as u8).to_string(),
        'r' => u8::from(msg.retain()).to_string(),
        'l' => msg.payload().len().to_string(),
        'x' => hex(msg.payload(), false),
        'X' => hex(msg.payload(), true),
        'I' => iso_time(),
        'U' => {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default();
            format!("{}.{:09}", now.as_secs(), now.subsec_nanos())
        }
        'P' => msg
            .user_properties()
            .map(|(k, v)| format!("{k}:{v}"))
            .collect::<Vec<_>>()
            .join(" "),
        'C' => msg.content_type().unwrap_or_default().to_string(),
        'D' => msg
            .correlation_data()
            .map(|d| String::from_utf8_lossy(d).into_owned())
            .unwrap_or_default(),
        'E' => msg
            .message_expiry()
            .map(|e| e.as_secs().to_string())
            .unwrap_or_default(),
        'F' => msg
            .payload_format_utf8()
            .map(|u| u8::from(u).to_string())
            .unwrap_or_default(),
        'R' => msg.response_topic().unwrap_or_default().to_string(),
        'S' => msg
            .subscription_identifiers()
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join(","),
        _ => String::new(),
    };
    out.extend_from_slice(text.as_bytes());
}

/// Now in ISO 8601, UTC, to the second (`2026-12-06T14:51:57+0000`, as mosquitto prints),
/// from the crate's `X-Amz-Date` formatter (`20261206T145157Z`; the `cli` feature includes
/// `aws-iot`).
fn iso_time() -> String {
    let d = mqtt_pubsub::aws::format_amz_date(SystemTime::now());
    format!(
        "{}-{}-{}T{}:{}:{}+0000",
        &d[0..4],
        &d[4..6],
        &d[6..8],
        &d[9..11],
        &d[11..13],
        &d[13..15]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_iso_time_is_mosquittos_shape() {
        let t = iso_time();
        assert_eq!(t.len(), 24, "{t}");
        assert_eq!((&t[4..5], &t[10..11], &t[19..]), ("-", "T", "+0000"), "{t}");
    }

    #[test]
    fn formats_parse_fields_and_escapes() {
        let f = Format::parse("%t\\t%p%%\\n").unwrap();
        assert_eq!(
            f.0,
            vec![
                Piece::Field('t'),
                Piece::Text(b"\t".to_vec()),
                Piece::Field('p'),
                Piece::Text(b"%\n".to_vec()),
            ]
        );
        assert!(Format::parse("%e").unwrap_err().contains("'e'"));
        assert!(Format::parse("%").is_err());
    }
}

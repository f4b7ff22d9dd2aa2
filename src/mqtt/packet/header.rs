//! The fixed header every packet starts with: its first byte and the remaining length
//! (a variable-length integer of at most four bytes, minimally encoded).

use crate::error::Error;

/// Reads the remaining-length varint of a fixed header in `buf` (which starts at the first
/// byte of a packet). Returns `Ok(None)` when more bytes are needed, else the header length
/// and the remaining length.
pub fn parse_fixed_header(buf: &[u8]) -> Result<Option<(usize, usize)>, Error> {
    let mut remaining: usize = 0;
    for i in 0..4 {
        let Some(&byte) = buf.get(1 + i) else {
            return Ok(None);
        };
        remaining |= ((byte & 0x7f) as usize) << (7 * i);
        if byte & 0x80 == 0 {
            // The encoding is minimal [MQTT-1.5.5-1 in 5.0; 3.1.1 §2.2.3's algorithm]: a last
            // byte of zero after a continuation encodes the same value in more bytes. Every
            // packet type is held to it, PUBLISH included.
            if i > 0 && byte == 0 {
                return Err(Error::Protocol(
                    "malformed remaining length (not minimally encoded)".into(),
                ));
            }
            return Ok(Some((2 + i, remaining)));
        }
    }
    // [MQTT-2.2.3]: at most four bytes of remaining length.
    Err(Error::Protocol(
        "malformed remaining length (more than 4 bytes)".into(),
    ))
}

/// Bytes of the remaining-length field of a complete frame.
pub(crate) fn remaining_length_len(frame: &[u8]) -> usize {
    frame
        .iter()
        .skip(1)
        .take(4)
        .position(|b| b & 0x80 == 0)
        .map_or(4, |i| i + 1)
}

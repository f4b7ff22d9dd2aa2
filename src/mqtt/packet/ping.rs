//! PINGREQ and PINGRESP (§3.12, §3.13): a fixed header and nothing else, in both versions.

/// Appends a PINGREQ.
pub fn encode_pingreq(out: &mut Vec<u8>) {
    out.extend_from_slice(&[0xc0, 0]);
}

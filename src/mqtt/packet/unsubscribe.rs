//! UNSUBSCRIBE (§3.10), encoded.

use super::{put_bin, put_header};

/// Appends an UNSUBSCRIBE of `filters` with packet id `id` and no properties.
pub fn encode_unsubscribe(id: u16, filters: &[&str], out: &mut Vec<u8>) {
    let body = 3 + filters.iter().map(|f| 2 + f.len()).sum::<usize>();
    put_header(0xa2, body, out);
    out.extend_from_slice(&id.to_be_bytes());
    out.push(0);
    for f in filters {
        put_bin(f.as_bytes(), out);
    }
}

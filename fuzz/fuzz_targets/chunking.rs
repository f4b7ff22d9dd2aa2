/// How the `decode` target cuts its input into WebSocket-frame-sized pieces: the first byte
/// seeds the lengths (1 to 97 bytes). Shared with `tests/suite/fuzz_regressions.rs`, which replays
/// saved inputs exactly as the target saw them.
pub fn chunks(seed: u8, mut rest: &[u8]) -> Vec<&[u8]> {
    let mut chunks = Vec::new();
    let mut i = 0usize;
    while !rest.is_empty() {
        let len = 1 + (seed as usize).wrapping_mul(i + 7) % 97;
        let (c, r) = rest.split_at(len.min(rest.len()));
        chunks.push(c);
        rest = r;
        i += 1;
    }
    chunks
}

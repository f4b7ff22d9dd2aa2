//! A reader that hands out one byte per call (a server dripping its answer), shared by the
//! fuzz targets that compare whole and dripped reads.

/// Reads `0` one byte per call.
pub struct Drip<'a>(pub &'a [u8]);

impl std::io::Read for Drip<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match (self.0.split_first(), buf.first_mut()) {
            (Some((&b, rest)), Some(slot)) => {
                *slot = b;
                self.0 = rest;
                Ok(1)
            }
            _ => Ok(0),
        }
    }
}

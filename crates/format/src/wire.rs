//! A strict MessagePack reader for the envelope, and the matching writer.
//!
//! The envelope is decoded by hand rather than through serde because the format promises more
//! than serde checks: every length is bounded before anything is read or allocated, only the
//! smallest encoding of each integer and length is accepted (so one call has exactly one byte
//! string), keys must come in the documented order, and every failure has a precise
//! [`ErrorKind`]. The writer uses `rmp`'s encoders, which always pick the smallest form; the
//! reader accepts exactly what they produce.

use rmp::Marker;

use crate::error::{Error, ErrorKind, Result};

pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    pub(crate) fn position(&self) -> usize {
        self.pos
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.pos == self.buf.len()
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        let remaining = self.buf.len() - self.pos;
        if n > remaining {
            return Err(Error::new(
                ErrorKind::Truncated,
                format!(
                    "{what} at offset {} needs {n} bytes but only {remaining} remain",
                    self.pos
                ),
            ));
        }
        let out = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    fn byte(&mut self, what: &str) -> Result<u8> {
        Ok(self.take(1, what)?[0])
    }

    fn be(&mut self, n: usize, what: &str) -> Result<u64> {
        Ok(self
            .take(n, what)?
            .iter()
            .fold(0u64, |acc, &b| acc << 8 | u64::from(b)))
    }

    fn marker(&mut self, what: &str) -> Result<(usize, Marker)> {
        let at = self.pos;
        Ok((at, Marker::from_u8(self.byte(what)?)))
    }

    /// Reads a map header and returns its number of entries.
    pub(crate) fn map_len(&mut self, what: &str) -> Result<u32> {
        let (at, marker) = self.marker(what)?;
        let len = match marker {
            Marker::FixMap(n) => u32::from(n),
            Marker::Map16 => self.be(2, what)? as u32,
            Marker::Map32 => self.be(4, what)? as u32,
            other => return Err(mistyped(what, "a map", other, at)),
        };
        let minimal = match marker {
            Marker::Map16 => len >= 16,
            Marker::Map32 => len > 0xffff,
            _ => true,
        };
        if !minimal {
            return Err(non_canonical_len(what, len, at));
        }
        Ok(len)
    }

    /// Reads a string of at most `max` bytes.
    pub(crate) fn str(&mut self, what: &str, max: usize) -> Result<&'a str> {
        let (at, marker) = self.marker(what)?;
        let len = match marker {
            Marker::FixStr(n) => usize::from(n),
            Marker::Str8 => self.be(1, what)? as usize,
            Marker::Str16 => self.be(2, what)? as usize,
            Marker::Str32 => self.be(4, what)? as usize,
            other => return Err(mistyped(what, "a string", other, at)),
        };
        let minimal = match marker {
            Marker::Str8 => len >= 32,
            Marker::Str16 => len > 0xff,
            Marker::Str32 => len > 0xffff,
            _ => true,
        };
        if !minimal {
            return Err(non_canonical_len(what, len as u32, at));
        }
        check_max(what, len, max)?;
        let bytes = self.take(len, what)?;
        std::str::from_utf8(bytes).map_err(|_| {
            Error::new(
                ErrorKind::Malformed,
                format!("{what} at offset {at} is not valid UTF-8"),
            )
        })
    }

    /// Reads a key and checks that it is the one the format expects next.
    pub(crate) fn key(&mut self, expected: &str, container: &str) -> Result<()> {
        let at = self.pos;
        let key = self.str(container, 64)?;
        if key != expected {
            return Err(Error::new(
                ErrorKind::Malformed,
                format!("{container}: expected key {expected:?} at offset {at}, found {key:?}"),
            ));
        }
        Ok(())
    }

    /// Reads the next key if there is one left, without judging it.
    pub(crate) fn any_key(&mut self, container: &str) -> Result<(usize, &'a str)> {
        let at = self.pos;
        Ok((at, self.str(container, 64)?))
    }

    /// Reads a byte string of at most `max` bytes. The maximum is checked before the length
    /// is compared with the input, so a hostile header reports `Oversize`, not `Truncated`.
    pub(crate) fn bin(&mut self, what: &str, max: usize) -> Result<&'a [u8]> {
        let (at, marker) = self.marker(what)?;
        let len = match marker {
            Marker::Bin8 => self.be(1, what)? as usize,
            Marker::Bin16 => self.be(2, what)? as usize,
            Marker::Bin32 => self.be(4, what)? as usize,
            other => return Err(mistyped(what, "a byte string (bin)", other, at)),
        };
        let minimal = match marker {
            Marker::Bin16 => len > 0xff,
            Marker::Bin32 => len > 0xffff,
            _ => true,
        };
        if !minimal {
            return Err(non_canonical_len(what, len as u32, at));
        }
        check_max(what, len, max)?;
        self.take(len, what)
    }

    /// Reads an unsigned integer in its smallest encoding.
    pub(crate) fn uint(&mut self, what: &str) -> Result<u64> {
        let (at, marker) = self.marker(what)?;
        let (value, minimal) = match marker {
            Marker::FixPos(n) => (u64::from(n), true),
            Marker::U8 => {
                let v = self.be(1, what)?;
                (v, v >= 0x80)
            }
            Marker::U16 => {
                let v = self.be(2, what)?;
                (v, v > 0xff)
            }
            Marker::U32 => {
                let v = self.be(4, what)?;
                (v, v > 0xffff)
            }
            Marker::U64 => {
                let v = self.be(8, what)?;
                (v, v > 0xffff_ffff)
            }
            other => return Err(mistyped(what, "an unsigned integer", other, at)),
        };
        if !minimal {
            return Err(Error::new(
                ErrorKind::NonCanonical,
                format!("{what} at offset {at}: {value} is not in its smallest encoding"),
            ));
        }
        Ok(value)
    }
}

fn check_max(what: &str, len: usize, max: usize) -> Result<()> {
    if len > max {
        return Err(Error::new(
            ErrorKind::Oversize,
            format!("{what} is {len} bytes, more than the limit of {max}"),
        ));
    }
    Ok(())
}

fn mistyped(what: &str, expected: &str, found: Marker, at: usize) -> Error {
    Error::new(
        ErrorKind::Malformed,
        format!(
            "{what} at offset {at}: expected {expected}, found msgpack marker 0x{:02x}",
            found.to_u8()
        ),
    )
}

fn non_canonical_len(what: &str, len: u32, at: usize) -> Error {
    Error::new(
        ErrorKind::NonCanonical,
        format!("{what} at offset {at}: length {len} is not in its smallest encoding"),
    )
}

/// Writers over `Vec<u8>`, which cannot fail. `rmp` always picks the smallest encoding.
pub(crate) mod write {
    pub(crate) fn map_len(out: &mut Vec<u8>, len: u32) {
        rmp::encode::write_map_len(out, len).expect("writing to a Vec cannot fail");
    }

    pub(crate) fn str(out: &mut Vec<u8>, s: &str) {
        rmp::encode::write_str(out, s).expect("writing to a Vec cannot fail");
    }

    pub(crate) fn bin(out: &mut Vec<u8>, b: &[u8]) {
        rmp::encode::write_bin(out, b).expect("writing to a Vec cannot fail");
    }

    pub(crate) fn uint(out: &mut Vec<u8>, v: u64) {
        rmp::encode::write_uint(out, v).expect("writing to a Vec cannot fail");
    }
}

/// The encoded size of a string or bin header for a payload of `len` bytes.
pub(crate) fn header_len(len: usize, is_str: bool) -> usize {
    match len {
        0..=31 if is_str => 1,
        0..=0xff => 2,
        0x100..=0xffff => 3,
        _ => 5,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uint_rejects_non_minimal_forms() {
        // 5 as u8 (0xcc 0x05) instead of positive fixint 0x05
        let err = Reader::new(&[0xcc, 0x05]).uint("x").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NonCanonical);
        // 300 as u32 instead of u16
        let err = Reader::new(&[0xce, 0, 0, 1, 44]).uint("x").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NonCanonical);
        assert_eq!(Reader::new(&[0xcd, 1, 44]).uint("x").unwrap(), 300);
    }

    #[test]
    fn bin_checks_max_before_length() {
        let err = Reader::new(&[0xc6, 0xff, 0xff, 0xff, 0xff, 1, 2])
            .bin("env", 1024)
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Oversize);
        let err = Reader::new(&[0xc4, 10, 1, 2]).bin("env", 1024).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Truncated);
    }

    #[test]
    fn header_len_matches_rmp() {
        for len in [0usize, 1, 31, 32, 255, 256, 65535, 65536] {
            let mut s = Vec::new();
            rmp::encode::write_str_len(&mut s, len as u32).unwrap();
            assert_eq!(header_len(len, true), s.len(), "str {len}");
            let mut b = Vec::new();
            rmp::encode::write_bin_len(&mut b, len as u32).unwrap();
            assert_eq!(header_len(len, false), b.len(), "bin {len}");
        }
    }
}

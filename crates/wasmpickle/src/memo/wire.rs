//! The small MessagePack writer and reader behind recorded outcomes and journal records.
//!
//! Both formats are maps keyed by strings in a fixed order, written with the smallest encoding
//! of every integer and length, like the pickle format (`docs/format.md` §4). The reader is
//! lenient about encodings; callers get strictness by re-encoding what they decoded and
//! comparing bytes, so that one value has exactly one accepted byte string.

use rmp::encode;

/// Appends MessagePack to a `Vec`, which cannot fail.
pub(crate) struct Writer {
    pub(crate) out: Vec<u8>,
}

impl Writer {
    pub(crate) fn new() -> Writer {
        Writer { out: Vec::new() }
    }

    pub(crate) fn map(&mut self, len: u32) {
        encode::write_map_len(&mut self.out, len).expect("writing to a Vec cannot fail");
    }

    pub(crate) fn array(&mut self, len: u32) {
        encode::write_array_len(&mut self.out, len).expect("writing to a Vec cannot fail");
    }

    pub(crate) fn str(&mut self, s: &str) {
        encode::write_str(&mut self.out, s).expect("writing to a Vec cannot fail");
    }

    pub(crate) fn bin(&mut self, b: &[u8]) {
        encode::write_bin(&mut self.out, b).expect("writing to a Vec cannot fail");
    }

    pub(crate) fn uint(&mut self, n: u64) {
        encode::write_uint(&mut self.out, n).expect("writing to a Vec cannot fail");
    }

    pub(crate) fn bool(&mut self, b: bool) {
        encode::write_bool(&mut self.out, b).expect("writing to a Vec cannot fail");
    }
}

/// Reads MessagePack from a byte slice. Every method fails (with a short reason) rather than
/// panicking or allocating more than the input holds.
pub(crate) struct Reader<'a> {
    rest: &'a [u8],
}

pub(crate) type Read<T> = std::result::Result<T, String>;

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Reader<'a> {
        Reader { rest: bytes }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    pub(crate) fn map(&mut self) -> Read<u32> {
        rmp::decode::read_map_len(&mut self.rest).map_err(|e| format!("expected a map: {e}"))
    }

    pub(crate) fn array(&mut self) -> Read<u32> {
        rmp::decode::read_array_len(&mut self.rest).map_err(|e| format!("expected an array: {e}"))
    }

    pub(crate) fn str(&mut self) -> Read<&'a str> {
        let len = rmp::decode::read_str_len(&mut self.rest)
            .map_err(|e| format!("expected a string: {e}"))?;
        let bytes = self.take(len)?;
        std::str::from_utf8(bytes).map_err(|_| "a string is not UTF-8".to_owned())
    }

    pub(crate) fn bin(&mut self) -> Read<&'a [u8]> {
        let len = rmp::decode::read_bin_len(&mut self.rest)
            .map_err(|e| format!("expected binary: {e}"))?;
        self.take(len)
    }

    pub(crate) fn uint(&mut self) -> Read<u64> {
        rmp::decode::read_int(&mut self.rest)
            .map_err(|e| format!("expected an unsigned integer: {e}"))
    }

    pub(crate) fn bool(&mut self) -> Read<bool> {
        rmp::decode::read_bool(&mut self.rest).map_err(|e| format!("expected a boolean: {e}"))
    }

    /// Reads a key and checks that it is `name`.
    pub(crate) fn key(&mut self, name: &str) -> Read<()> {
        let got = self.str()?;
        if got == name {
            Ok(())
        } else {
            Err(format!("expected key `{name}`, found `{got}`"))
        }
    }

    /// The next key, without consuming it, when the next value is a string.
    pub(crate) fn peek_key(&self) -> Option<&'a str> {
        Reader { rest: self.rest }.str().ok()
    }

    fn take(&mut self, len: u32) -> Read<&'a [u8]> {
        let len = len as usize;
        if len > self.rest.len() {
            return Err(format!(
                "a length of {len} runs past the end ({} bytes left)",
                self.rest.len()
            ));
        }
        let (head, tail) = self.rest.split_at(len);
        self.rest = tail;
        Ok(head)
    }
}

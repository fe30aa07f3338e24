//! Frames: a big-endian `u32` length, then that many bytes of payload.
//!
//! Framing is the one place where bytes from a possibly hostile peer decide how much memory
//! the receiver spends, so [`read_frame`] checks the declared length against a cap **before**
//! it allocates anything, and then grows its buffer only as bytes actually arrive: a header
//! that promises 64 MiB followed by ten bytes costs ten bytes (plus the buffer's first 64 KiB
//! chunk), not 64 MiB. A connection that ends between frames is a clean end; one that ends
//! inside a frame, header included, is [`ErrorKind::UnexpectedEof`]. The format is the same as
//! tokio-util's `LengthDelimitedCodec` with its defaults, so an async peer can speak it too.
//!
//! ```
//! use wasmpickle_pool::frame::{read_frame, write_frame};
//!
//! let mut wire = Vec::new();
//! write_frame(&mut wire, b"hello")?;
//! assert_eq!(wire, b"\0\0\0\x05hello");
//!
//! let mut reader = &wire[..];
//! let mut buf = Vec::new();
//! assert!(read_frame(&mut reader, 1024, &mut buf)?);
//! assert_eq!(buf, b"hello");
//! assert!(!read_frame(&mut reader, 1024, &mut buf)?, "a clean end between frames");
//! # Ok::<(), wasmpickle_pool::Error>(())
//! ```

use std::io::{self, Read, Write};

use crate::error::{Error, ErrorKind, Result};

/// Bytes in a frame header.
pub const HEADER_LEN: usize = 4;

/// The default cap on a frame's payload: 65 MiB, room for a 64 MiB module (the default
/// largest module a runtime compiles) or a call whose environment and arguments together
/// take up to 64 MiB, plus the message around them. Both ends of a connection may lower or
/// raise it (`PoolConfig::max_frame`, `WorkerConfig::max_frame`, `--max-frame`).
pub const DEFAULT_MAX_FRAME: usize = 65 << 20;

/// The cap on frames before a connection has completed its handshake and `Hello`: nothing a
/// peer may say before then needs more, and an unauthenticated peer gets no say over how much
/// the worker allocates.
pub const GREETING_MAX_FRAME: usize = 4 << 10;

/// How much buffer a frame gets before its bytes arrive; the rest grows with them.
const FIRST_CHUNK: usize = 64 << 10;

/// Reads one frame's payload into `buf` (replacing what it held).
///
/// Returns `Ok(false)` when the reader ends cleanly before the first header byte, which is how
/// a peer closes a connection. The declared length is checked against `max` before anything
/// is allocated, and the buffer then grows only as payload bytes arrive.
///
/// # Errors
///
/// [`ErrorKind::FrameTooLarge`] when the header declares more than `max` bytes (the payload is
/// not read; the stream is then out of step and the connection must be closed);
/// [`ErrorKind::UnexpectedEof`] when the reader ends inside a header or a payload;
/// [`ErrorKind::Io`] for other read errors.
pub fn read_frame<R: Read + ?Sized>(reader: &mut R, max: usize, buf: &mut Vec<u8>) -> Result<bool> {
    let mut header = [0u8; HEADER_LEN];
    let mut got = 0;
    while got < HEADER_LEN {
        match reader.read(&mut header[got..]) {
            Ok(0) if got == 0 => return Ok(false),
            Ok(0) => {
                return Err(Error::io(
                    format!("connection closed {got} bytes into a frame header"),
                    io::ErrorKind::UnexpectedEof.into(),
                ));
            }
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::io("cannot read a frame header", e)),
        }
    }
    let len = u32::from_be_bytes(header) as usize;
    if len > max {
        return Err(Error::new(
            ErrorKind::FrameTooLarge,
            format!("a frame of {len} bytes is over the cap of {max} bytes"),
        ));
    }
    buf.clear();
    if buf.capacity() < len.min(FIRST_CHUNK) {
        buf.reserve(len.min(FIRST_CHUNK));
    }
    // `take` + `read_to_end` grows the buffer as data comes in, never ahead of it by more
    // than the vector's doubling, so a lying header costs what was actually sent.
    let read = reader
        .take(len as u64)
        .read_to_end(buf)
        .map_err(|e| Error::io(format!("cannot read a frame of {len} bytes"), e))?;
    if read < len {
        return Err(Error::io(
            format!("connection closed {read} bytes into a frame of {len} bytes"),
            io::ErrorKind::UnexpectedEof.into(),
        ));
    }
    Ok(true)
}

/// Writes one frame: the length of `payload`, then `payload`.
///
/// # Errors
///
/// [`ErrorKind::FrameTooLarge`] when `payload` is longer than `u32::MAX` bytes;
/// [`ErrorKind::Io`] when writing fails.
pub fn write_frame<W: Write + ?Sized>(writer: &mut W, payload: &[u8]) -> Result<()> {
    let len = u32::try_from(payload.len()).map_err(|_| {
        Error::new(
            ErrorKind::FrameTooLarge,
            format!(
                "a frame of {} bytes does not fit a u32 length",
                payload.len()
            ),
        )
    })?;
    writer
        .write_all(&len.to_be_bytes())
        .and_then(|()| writer.write_all(payload))
        .map_err(|e| Error::io("cannot write a frame", e))
}

/// True when `bytes` starts with at least one complete frame, so that reading it will not
/// wait for the peer.
pub(crate) fn holds_frame(bytes: &[u8]) -> bool {
    match bytes.first_chunk::<HEADER_LEN>() {
        Some(header) => bytes.len() - HEADER_LEN >= u32::from_be_bytes(*header) as usize,
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reader that declares a frame of `declared` bytes and then sends `sent` of them. It
    /// never holds the bytes it pretends to send, so a reader that allocated the declared
    /// length up front would show up in `buf.capacity()`.
    struct Liar {
        header: [u8; 4],
        pos: usize,
        sent: usize,
    }

    impl Liar {
        fn new(declared: u32, sent: usize) -> Liar {
            Liar {
                header: declared.to_be_bytes(),
                pos: 0,
                sent,
            }
        }
    }

    impl Read for Liar {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            if self.pos < 4 {
                let n = (4 - self.pos).min(out.len());
                out[..n].copy_from_slice(&self.header[self.pos..self.pos + n]);
                self.pos += n;
                return Ok(n);
            }
            let left = self.sent + 4 - self.pos;
            let n = left.min(out.len());
            out[..n].fill(0xab);
            self.pos += n;
            Ok(n)
        }
    }

    /// Hands out one byte per read, the worst split a pipe can produce.
    struct OneByte<'a>(&'a [u8]);

    impl Read for OneByte<'_> {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            match (self.0.split_first(), out.first_mut()) {
                (Some((b, rest)), Some(slot)) => {
                    *slot = *b;
                    self.0 = rest;
                    Ok(1)
                }
                _ => Ok(0),
            }
        }
    }

    #[test]
    fn a_header_over_the_cap_is_refused_before_allocating() {
        // 4 GiB declared: refused from the header alone, whatever follows.
        let mut buf = Vec::new();
        let err =
            read_frame(&mut Liar::new(u32::MAX, 10), DEFAULT_MAX_FRAME, &mut buf).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::FrameTooLarge);
        assert!(err.to_string().contains("4294967295"), "{err}");
        assert!(
            err.to_string().contains(&DEFAULT_MAX_FRAME.to_string()),
            "{err}"
        );
        assert_eq!(buf.capacity(), 0, "nothing was allocated");
    }

    #[test]
    fn a_frame_of_exactly_the_cap_is_accepted_and_one_more_is_not() {
        let mut buf = Vec::new();
        assert!(read_frame(&mut Liar::new(1000, 1000), 1000, &mut buf).unwrap());
        assert_eq!(buf.len(), 1000);
        let err = read_frame(&mut Liar::new(1001, 1001), 1000, &mut buf).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::FrameTooLarge);
    }

    #[test]
    fn a_lying_header_costs_only_what_arrives() {
        // Declares the whole default cap, sends ten bytes, then ends.
        let mut buf = Vec::new();
        let err = read_frame(
            &mut Liar::new(DEFAULT_MAX_FRAME as u32, 10),
            DEFAULT_MAX_FRAME,
            &mut buf,
        )
        .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::UnexpectedEof);
        assert!(err.to_string().contains("10 bytes into a frame"), "{err}");
        assert!(
            buf.capacity() <= 2 * FIRST_CHUNK,
            "allocated {} bytes for 10",
            buf.capacity()
        );
    }

    #[test]
    fn a_frame_split_into_single_bytes_reads_whole() {
        let mut wire = Vec::new();
        write_frame(&mut wire, b"first").unwrap();
        write_frame(&mut wire, b"").unwrap();
        write_frame(&mut wire, &[7; 300]).unwrap();
        let mut reader = OneByte(&wire);
        let mut buf = Vec::new();
        assert!(read_frame(&mut reader, 1024, &mut buf).unwrap());
        assert_eq!(buf, b"first");
        assert!(read_frame(&mut reader, 1024, &mut buf).unwrap());
        assert!(buf.is_empty());
        assert!(read_frame(&mut reader, 1024, &mut buf).unwrap());
        assert_eq!(buf, [7; 300]);
        assert!(!read_frame(&mut reader, 1024, &mut buf).unwrap());
    }

    #[test]
    fn eof_inside_a_frame_is_unexpected_eof() {
        let mut wire = Vec::new();
        write_frame(&mut wire, b"0123456789").unwrap();
        for cut in 1..wire.len() {
            let mut reader = &wire[..cut];
            let err = read_frame(&mut reader, 1024, &mut Vec::new()).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::UnexpectedEof, "cut at {cut}: {err}");
            let source = std::error::Error::source(&err)
                .and_then(|s| s.downcast_ref::<io::Error>())
                .expect("an io::Error source");
            assert_eq!(source.kind(), io::ErrorKind::UnexpectedEof);
        }
    }

    #[test]
    fn holds_frame_needs_the_whole_payload() {
        let mut wire = Vec::new();
        write_frame(&mut wire, b"abc").unwrap();
        assert!(holds_frame(&wire));
        assert!(!holds_frame(&wire[..wire.len() - 1]));
        assert!(!holds_frame(&wire[..3]));
        assert!(!holds_frame(&[]));
    }
}

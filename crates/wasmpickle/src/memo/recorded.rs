//! A call's result as canonical bytes: what a memo stores, what a journal records, and exactly
//! what replay compares.

use std::fmt;

use wasmpickle_format::CodeHash;
use wasmpickle_format::abi::{self, GuestFailure};

use super::wire::{Read, Reader, Writer};
use crate::error::{Error, ErrorKind, Result};
use crate::runtime::Outcome;

/// The version of the outcome encoding, its first field. A decoder refuses other versions
/// ([`ErrorKind::Version`]) rather than misreading them.
pub const OUTCOME_VERSION: u64 = 1;

/// The result of a call — a returned value or a failure — as data that can be stored,
/// compared and turned back into a result.
///
/// Its [bytes](RecordedResult::to_bytes) are canonical: one result has exactly one encoding,
/// and [`from_bytes`](RecordedResult::from_bytes) accepts only that one, so two results are
/// equal exactly when their bytes are. They hold everything about a result that a call
/// determines and nothing a machine or a moment does (no duration, no backtrace addresses);
/// `docs/memo.md` specifies them byte by byte.
///
/// ```
/// use wasmpickle::RecordedResult;
///
/// let returned = RecordedResult::Returned { value: vec![0xc0], fuel_used: 42 }; // nil
/// let bytes = returned.to_bytes();
/// assert_eq!(RecordedResult::from_bytes(&bytes).unwrap(), returned);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RecordedResult {
    /// The call returned.
    Returned {
        /// The MessagePack bytes of the returned value (`c0`, nil, for `()` and `None`).
        value: Vec<u8>,
        /// The fuel the call consumed.
        fuel_used: u64,
    },
    /// The call failed.
    Failed {
        /// The error's kind, as [`ErrorKind::as_str`] names it (kept as text, so that a
        /// recording made by a later wasmpickle with more kinds still reads).
        kind: String,
        /// The error's message followed by those of its causes, joined by `": "` (as `{:#}`
        /// prints an error chain, and as a pool's worker reports a failure).
        message: String,
        /// What the guest said, for guest errors, bad input and panics.
        guest: Option<GuestFailure>,
        /// The fuel consumed before the failure, for failures that happened while guest code
        /// ran.
        fuel_used: Option<u64>,
    },
}

impl RecordedResult {
    /// The record of a call's result.
    pub fn of(result: &Result<Outcome>) -> RecordedResult {
        match result {
            Ok(outcome) => RecordedResult::Returned {
                value: outcome.value().to_vec(),
                fuel_used: outcome.fuel_used(),
            },
            Err(e) => RecordedResult::Failed {
                kind: e.kind().as_str().to_owned(),
                message: chain(e),
                guest: e.guest_failure().cloned(),
                fuel_used: e.fuel_used(),
            },
        }
    }

    /// The fuel the call consumed, when known.
    pub fn fuel_used(&self) -> Option<u64> {
        match self {
            RecordedResult::Returned { fuel_used, .. } => Some(*fuel_used),
            RecordedResult::Failed { fuel_used, .. } => *fuel_used,
        }
    }

    /// The error kind's name, for a failure.
    pub fn error_kind(&self) -> Option<&str> {
        match self {
            RecordedResult::Returned { .. } => None,
            RecordedResult::Failed { kind, .. } => Some(kind),
        }
    }

    /// The canonical bytes (`docs/memo.md`, "Recorded results").
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer::new();
        match self {
            RecordedResult::Returned { value, fuel_used } => {
                w.map(3);
                w.str("version");
                w.uint(OUTCOME_VERSION);
                w.str("value");
                w.bin(value);
                w.str("fuel_used");
                w.uint(*fuel_used);
            }
            RecordedResult::Failed {
                kind,
                message,
                guest,
                fuel_used,
            } => {
                w.map(3 + u32::from(guest.is_some()) + u32::from(fuel_used.is_some()));
                w.str("version");
                w.uint(OUTCOME_VERSION);
                w.str("error");
                w.str(kind);
                w.str("message");
                w.str(message);
                if let Some(g) = guest {
                    w.str("guest");
                    w.map(
                        1 + u32::from(g.file.is_some())
                            + u32::from(g.line.is_some())
                            + u32::from(g.column.is_some()),
                    );
                    w.str("message");
                    w.str(&g.message);
                    if let Some(file) = &g.file {
                        w.str("file");
                        w.str(file);
                    }
                    if let Some(line) = g.line {
                        w.str("line");
                        w.uint(line.into());
                    }
                    if let Some(column) = g.column {
                        w.str("column");
                        w.uint(column.into());
                    }
                }
                if let Some(fuel) = fuel_used {
                    w.str("fuel_used");
                    w.uint(*fuel);
                }
            }
        }
        w.out
    }

    /// Decodes canonical bytes.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Version`] for another version of the encoding; [`ErrorKind::Decode`] for
    /// anything but the canonical encoding of one result.
    pub fn from_bytes(bytes: &[u8]) -> Result<RecordedResult> {
        let decoded = match decode(bytes) {
            Ok(d) => d,
            Err(Undecodable::Version(v)) => {
                return Err(Error::new(
                    ErrorKind::Version,
                    format!(
                        "recorded result of version {v}; this build reads version {OUTCOME_VERSION}"
                    ),
                ));
            }
            Err(Undecodable::Malformed(why)) => {
                return Err(Error::new(
                    ErrorKind::Decode,
                    format!("not a recorded result: {why}"),
                ));
            }
        };
        if decoded.to_bytes() != bytes {
            return Err(Error::new(
                ErrorKind::Decode,
                "not a recorded result: not in canonical form",
            ));
        }
        Ok(decoded)
    }

    /// The result this records, for a call of `export` in module `code`; `None` for a failure
    /// whose kind this build does not know.
    pub(crate) fn to_result(&self, code: CodeHash, export: &str) -> Option<Result<Outcome>> {
        match self {
            RecordedResult::Returned { value, fuel_used } => {
                let mut reply = Vec::with_capacity(value.len() + 1);
                reply.push(abi::Status::Ok as u8);
                reply.extend_from_slice(value);
                Some(Ok(Outcome::new(reply, *fuel_used)))
            }
            RecordedResult::Failed {
                kind,
                message,
                guest,
                fuel_used,
            } => {
                let kind = kind_from_str(kind)?;
                let mut e = Error::new(kind, message.clone())
                    .with_code(code)
                    .with_export(export);
                if let Some(g) = guest {
                    e = e.with_guest(g.clone());
                }
                if let Some(f) = fuel_used {
                    e = e.with_fuel_used(*f);
                }
                Some(Err(e))
            }
        }
    }
}

impl fmt::Display for RecordedResult {
    /// `returned <n> bytes of MessagePack, <fuel> fuel` or `<kind>: <message> (<fuel> fuel)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecordedResult::Returned { value, fuel_used } => write!(
                f,
                "returned {} bytes of MessagePack, {fuel_used} fuel",
                value.len()
            ),
            RecordedResult::Failed {
                kind,
                message,
                fuel_used,
                ..
            } => {
                write!(f, "{kind}: {message}")?;
                if let Some(fuel) = fuel_used {
                    write!(f, " ({fuel} fuel)")?;
                }
                Ok(())
            }
        }
    }
}

/// An error's message and its causes', joined by `": "`.
fn chain(e: &Error) -> String {
    let mut message = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        message.push_str(": ");
        message.push_str(&s.to_string());
        source = s.source();
    }
    message
}

enum Undecodable {
    Version(u64),
    Malformed(String),
}

impl From<String> for Undecodable {
    fn from(why: String) -> Undecodable {
        Undecodable::Malformed(why)
    }
}

fn decode(bytes: &[u8]) -> std::result::Result<RecordedResult, Undecodable> {
    let mut r = Reader::new(bytes);
    let len = r.map()?;
    r.key("version")?;
    let version = r.uint()?;
    if version != OUTCOME_VERSION {
        return Err(Undecodable::Version(version));
    }
    let result = match r.peek_key() {
        Some("value") => {
            if len != 3 {
                return Err(format!("a returned result has 3 keys, not {len}").into());
            }
            r.key("value")?;
            let value = r.bin()?.to_vec();
            r.key("fuel_used")?;
            let fuel_used = r.uint()?;
            RecordedResult::Returned { value, fuel_used }
        }
        Some("error") => {
            r.key("error")?;
            let kind = r.str()?.to_owned();
            r.key("message")?;
            let message = r.str()?.to_owned();
            let mut seen = 3;
            let mut guest = None;
            let mut fuel_used = None;
            if seen < len && r.peek_key() == Some("guest") {
                r.key("guest")?;
                guest = Some(decode_guest(&mut r)?);
                seen += 1;
            }
            if seen < len {
                r.key("fuel_used")?;
                fuel_used = Some(r.uint()?);
                seen += 1;
            }
            if seen != len {
                return Err(format!("a failed result has at most 5 keys, not {len}").into());
            }
            RecordedResult::Failed {
                kind,
                message,
                guest,
                fuel_used,
            }
        }
        _ => {
            return Err("expected key `value` or `error` after `version`"
                .to_owned()
                .into());
        }
    };
    if !r.is_empty() {
        return Err("bytes after the result".to_owned().into());
    }
    Ok(result)
}

fn decode_guest(r: &mut Reader<'_>) -> Read<GuestFailure> {
    let len = r.map()?;
    r.key("message")?;
    let mut g = GuestFailure::new(r.str()?);
    let mut seen = 1;
    for (name, slot) in [("file", 0), ("line", 1), ("column", 2)] {
        if seen < len && r.peek_key() == Some(name) {
            r.key(name)?;
            match slot {
                0 => g.file = Some(r.str()?.to_owned()),
                1 => g.line = Some(small(r.uint()?)?),
                _ => g.column = Some(small(r.uint()?)?),
            }
            seen += 1;
        }
    }
    if seen != len {
        return Err(format!("unexpected keys in a guest failure ({len} keys)"));
    }
    Ok(g)
}

fn small(n: u64) -> Read<u32> {
    u32::try_from(n).map_err(|_| format!("{n} does not fit a line or column"))
}

/// The kinds a recorded failure can be turned back into an [`Error`] of. Only these are ever
/// served from a memo (see `memo.rs`); a kind this build does not know is a miss.
fn kind_from_str(kind: &str) -> Option<ErrorKind> {
    const KINDS: &[ErrorKind] = &[
        ErrorKind::GuestError,
        ErrorKind::GuestPanic,
        ErrorKind::BadInput,
        ErrorKind::Trap,
        ErrorKind::AbiViolation,
        ErrorKind::WrongSignature,
        ErrorKind::MemoryLimit,
        ErrorKind::OutOfFuel,
        ErrorKind::MissingExport,
        ErrorKind::ForbiddenImport,
    ];
    KINDS.iter().copied().find(|k| k.as_str() == kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples() -> Vec<RecordedResult> {
        vec![
            RecordedResult::Returned {
                value: vec![0xc0],
                fuel_used: 0,
            },
            RecordedResult::Returned {
                value: vec![0xcb, 0x40, 0x24, 0, 0, 0, 0, 0, 0],
                fuel_used: u64::MAX,
            },
            RecordedResult::Failed {
                kind: "trap".into(),
                message: "`f` trapped: integer divide by zero".into(),
                guest: None,
                fuel_used: Some(300),
            },
            RecordedResult::Failed {
                kind: "guest-panic".into(),
                message: "`f` panicked: boom at src/lib.rs:3:5".into(),
                guest: Some(GuestFailure {
                    message: "boom".into(),
                    file: Some("src/lib.rs".into()),
                    line: Some(3),
                    column: Some(5),
                }),
                fuel_used: Some(1),
            },
            RecordedResult::Failed {
                kind: "guest-error".into(),
                message: "no".into(),
                guest: Some(GuestFailure::new("no")),
                fuel_used: None,
            },
            RecordedResult::Failed {
                kind: "memory-limit".into(),
                message: "too big".into(),
                guest: None,
                fuel_used: None,
            },
        ]
    }

    #[test]
    fn round_trips_and_is_canonical() {
        for r in samples() {
            let bytes = r.to_bytes();
            assert_eq!(RecordedResult::from_bytes(&bytes).unwrap(), r);
            // Every truncation and every single-bit flip is refused or decodes to another
            // result whose bytes are exactly the flipped bytes; never a panic.
            for cut in 0..bytes.len() {
                assert!(RecordedResult::from_bytes(&bytes[..cut]).is_err());
            }
            for i in 0..bytes.len() * 8 {
                let mut b = bytes.clone();
                b[i / 8] ^= 1 << (i % 8);
                if let Ok(other) = RecordedResult::from_bytes(&b) {
                    assert_eq!(other.to_bytes(), b);
                    assert_ne!(other, r);
                }
            }
            let mut longer = bytes.clone();
            longer.push(0xc0);
            assert!(RecordedResult::from_bytes(&longer).is_err());
        }
    }

    #[test]
    fn the_returned_encoding_is_pinned() {
        let bytes = RecordedResult::Returned {
            value: vec![0xc0],
            fuel_used: 300,
        }
        .to_bytes();
        let mut expected = vec![0x83, 0xa7];
        expected.extend_from_slice(b"version");
        expected.push(0x01);
        expected.push(0xa5);
        expected.extend_from_slice(b"value");
        expected.extend_from_slice(&[0xc4, 0x01, 0xc0, 0xa9]);
        expected.extend_from_slice(b"fuel_used");
        expected.extend_from_slice(&[0xcd, 0x01, 0x2c]);
        assert_eq!(bytes, expected);
    }

    #[test]
    fn other_versions_are_refused_as_version_errors() {
        let mut bytes = RecordedResult::Returned {
            value: vec![0xc0],
            fuel_used: 1,
        }
        .to_bytes();
        bytes[9] = 2; // the version's fixint
        assert_eq!(
            RecordedResult::from_bytes(&bytes).unwrap_err().kind(),
            ErrorKind::Version
        );
    }
}

//! The one error type of this crate.

use std::fmt;

/// What went wrong while encoding or decoding a pickle or a MessagePack value.
///
/// The kind is what a caller branches on; the message (via `Display`) names the offending
/// field or value for humans.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The input ended before the value it announces.
    Truncated,
    /// The input does not start with the wasmpickle magic bytes.
    BadMagic,
    /// The pickle was written by a format version this build cannot read.
    UnsupportedVersion,
    /// The pickle holds another kind of object than the one asked for (a closure where a
    /// call was expected, say), or a kind this build does not know.
    WrongKind,
    /// A field is longer than the format or the caller's [`DecodeLimits`](crate::DecodeLimits)
    /// allow. Checked before anything is allocated for it.
    Oversize,
    /// The bytes are MessagePack but not the structure the format specifies: a missing,
    /// unknown or mistyped field, a hash of the wrong length, an empty export name.
    Malformed,
    /// The bytes decode, but not from the one canonical encoding (a map key out of order, an
    /// integer or length not in its smallest form). Accepting these would let two different
    /// byte strings name the same call.
    NonCanonical,
    /// Bytes follow the end of the pickle.
    TrailingBytes,
    /// A Rust value could not be encoded to, or decoded from, MessagePack (a type mismatch
    /// between the bytes and the type asked for).
    Value,
    /// A receiver that requires signatures got an unsigned call, a call signed with a key it
    /// does not hold, or one whose signature does not match its bytes.
    Signature,
}

impl ErrorKind {
    /// A short, stable, kebab-case name for logs and command-line output.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Truncated => "truncated",
            ErrorKind::BadMagic => "bad-magic",
            ErrorKind::UnsupportedVersion => "unsupported-version",
            ErrorKind::WrongKind => "wrong-kind",
            ErrorKind::Oversize => "oversize",
            ErrorKind::Malformed => "malformed",
            ErrorKind::NonCanonical => "non-canonical",
            ErrorKind::TrailingBytes => "trailing-bytes",
            ErrorKind::Value => "value",
            ErrorKind::Signature => "signature",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error from encoding or decoding. Opaque: inspect it through [`Error::kind`].
#[derive(Clone)]
pub struct Error {
    kind: ErrorKind,
    message: Box<str>,
}

impl Error {
    pub(crate) fn new(kind: ErrorKind, message: impl Into<Box<str>>) -> Error {
        Error {
            kind,
            message: message.into(),
        }
    }

    /// What went wrong.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Error")
            .field("kind", &self.kind)
            .field("message", &self.message)
            .finish()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

//! The pool's error type: opaque, with a [`kind`](Error::kind) a caller can act on.
//!
//! A call that reached a worker and failed there comes back as data (see `docs/protocol.md`,
//! message `Failed`) and is rebuilt here as an [`ErrorKind::Call`] error that keeps everything
//! the worker said: the wasmpickle kind ([`Error::remote_kind`]), the message, the guest's
//! failure, the wasm backtrace and the fuel used. Failures of the machinery around the call —
//! a worker that died or hung on every attempt, a connection that spoke garbage, a pool that
//! was shut down — have kinds of their own, because a caller acts on them differently.

use std::error::Error as StdError;
use std::fmt;

use wasmpickle::{CallId, CodeHash, GuestFailure};

/// What went wrong, in terms a caller can act on. New kinds may be added.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// Spawning a worker, connecting to one, or reading or writing a connection failed.
    Io,
    /// The peer closed the connection in the middle of a frame.
    UnexpectedEof,
    /// A frame header declared more bytes than the receiver accepts; nothing was allocated
    /// for it and the connection is closed.
    FrameTooLarge,
    /// The peer sent bytes that are not a message of this protocol, a message out of order, or
    /// a protocol version this build does not speak. The connection is closed.
    Protocol,
    /// The shared-key handshake failed: the peer does not hold the key, or does not answer
    /// the challenge. The connection is closed.
    Handshake,
    /// The call ran on a worker and failed there (or the worker refused it, say for a module
    /// it cannot compile). [`Error::remote_kind`] says how, in wasmpickle's terms; this is an
    /// answer, never retried.
    Call,
    /// Every attempt at the call ended with its worker dying or passing the pool's deadline,
    /// up to the retry budget. The error names the call and says what happened each time.
    WorkerLost,
    /// A value could not be encoded to MessagePack (arguments given to `map`).
    Encode,
    /// A result did not decode into the type asked for.
    Decode,
    /// The pool was shut down, or has no worker left, before the call could run.
    Closed,
    /// The configuration cannot work: no worker program, a TCP worker without a key, an
    /// address that does not parse.
    Config,
}

impl ErrorKind {
    /// A short, stable, kebab-case name, used in command-line output.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Io => "io",
            ErrorKind::UnexpectedEof => "unexpected-eof",
            ErrorKind::FrameTooLarge => "frame-too-large",
            ErrorKind::Protocol => "protocol",
            ErrorKind::Handshake => "handshake",
            ErrorKind::Call => "call",
            ErrorKind::WorkerLost => "worker-lost",
            ErrorKind::Encode => "encode",
            ErrorKind::Decode => "decode",
            ErrorKind::Closed => "closed",
            ErrorKind::Config => "config",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error from the pool, a worker connection or the protocol. Inspect it through
/// [`Error::kind`] and the accessors.
///
/// `Display` names the offending value (a call id, a frame length, a worker) and does not
/// repeat the [`source`](std::error::Error::source), so print the chain to see everything.
pub struct Error {
    inner: Box<Inner>,
}

struct Inner {
    kind: ErrorKind,
    message: String,
    call: Option<CallId>,
    attempts: u32,
    remote: Option<Remote>,
    source: Option<Box<dyn StdError + Send + Sync>>,
}

/// What a worker said about a call that failed there.
#[derive(Clone, Debug, Default)]
pub(crate) struct Remote {
    pub(crate) kind: String,
    pub(crate) code: Option<CodeHash>,
    pub(crate) export: Option<String>,
    pub(crate) guest: Option<GuestFailure>,
    pub(crate) backtrace: Option<String>,
    pub(crate) fuel_used: Option<u64>,
    pub(crate) imports: Vec<String>,
}

impl Error {
    pub(crate) fn new(kind: ErrorKind, message: impl Into<String>) -> Error {
        Error {
            inner: Box::new(Inner {
                kind,
                message: message.into(),
                call: None,
                attempts: 0,
                remote: None,
                source: None,
            }),
        }
    }

    pub(crate) fn io(message: impl Into<String>, source: std::io::Error) -> Error {
        let kind = if source.kind() == std::io::ErrorKind::UnexpectedEof {
            ErrorKind::UnexpectedEof
        } else {
            ErrorKind::Io
        };
        Error::new(kind, message).with_source(source)
    }

    pub(crate) fn with_source(
        mut self,
        source: impl Into<Box<dyn StdError + Send + Sync>>,
    ) -> Self {
        self.inner.source = Some(source.into());
        self
    }

    pub(crate) fn with_call(mut self, call: CallId) -> Self {
        self.inner.call = Some(call);
        self
    }

    pub(crate) fn with_attempts(mut self, attempts: u32) -> Self {
        self.inner.attempts = attempts;
        self
    }

    pub(crate) fn with_remote(mut self, remote: Remote) -> Self {
        self.inner.remote = Some(remote);
        self
    }

    /// What went wrong.
    pub fn kind(&self) -> ErrorKind {
        self.inner.kind
    }

    /// The call this error is about, when it is about one.
    pub fn call_id(&self) -> Option<CallId> {
        self.inner.call
    }

    /// How many times the call was sent to a worker before this error: for
    /// [`ErrorKind::WorkerLost`], the retry budget plus one. Zero when not applicable.
    pub fn attempts(&self) -> u32 {
        self.inner.attempts
    }

    /// For [`ErrorKind::Call`]: how the call failed, as the worker's wasmpickle runtime
    /// classified it. `None` for other kinds, and when the worker sent a kind this build does
    /// not know (a newer worker); [`Error::remote_kind_name`] still has its name then.
    pub fn remote_kind(&self) -> Option<wasmpickle::ErrorKind> {
        self.remote_kind_name().and_then(wasmpickle_kind)
    }

    /// For [`ErrorKind::Call`]: the stable name of the worker's error kind, as
    /// [`wasmpickle::ErrorKind::as_str`] spells it (`out-of-fuel`, `guest-panic`, ...).
    pub fn remote_kind_name(&self) -> Option<&str> {
        self.inner.remote.as_ref().map(|r| r.kind.as_str())
    }

    /// The module involved in a failed call, when the worker named one.
    pub fn code_hash(&self) -> Option<CodeHash> {
        self.inner.remote.as_ref().and_then(|r| r.code)
    }

    /// The export involved in a failed call, when the worker named one.
    pub fn export(&self) -> Option<&str> {
        self.inner.remote.as_ref().and_then(|r| r.export.as_deref())
    }

    /// What the guest said: the message of a guest error or bad input, and the message and
    /// location of a guest panic.
    pub fn guest_failure(&self) -> Option<&GuestFailure> {
        self.inner.remote.as_ref().and_then(|r| r.guest.as_ref())
    }

    /// The WebAssembly backtrace of a trap or panic, one frame per line.
    pub fn wasm_backtrace(&self) -> Option<&str> {
        self.inner
            .remote
            .as_ref()
            .and_then(|r| r.backtrace.as_deref())
    }

    /// Fuel the guest consumed before it failed, when the worker reported it.
    pub fn fuel_used(&self) -> Option<u64> {
        self.inner.remote.as_ref().and_then(|r| r.fuel_used)
    }

    /// For a module refused for its imports: every import of the module, as `module.name`.
    pub fn imports(&self) -> &[String] {
        self.inner
            .remote
            .as_ref()
            .map_or(&[][..], |r| r.imports.as_slice())
    }
}

/// The wasmpickle kind with this stable name, if this build knows it.
pub(crate) fn wasmpickle_kind(name: &str) -> Option<wasmpickle::ErrorKind> {
    wasmpickle::ErrorKind::from_name(name)
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Error");
        d.field("kind", &self.inner.kind)
            .field("message", &self.inner.message);
        if let Some(call) = &self.inner.call {
            d.field("call", call);
        }
        if self.inner.attempts > 0 {
            d.field("attempts", &self.inner.attempts);
        }
        if let Some(remote) = &self.inner.remote {
            d.field("remote", remote);
        }
        if let Some(source) = &self.inner.source {
            d.field("source", source);
        }
        d.finish()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.inner.message)
    }
}

impl StdError for Error {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.inner
            .source
            .as_ref()
            .map(|s| &**s as &(dyn StdError + 'static))
    }
}

impl Clone for Error {
    /// Clones everything but the source, which is not `Clone`; its message is kept in the
    /// clone's message instead.
    fn clone(&self) -> Error {
        let message = match &self.inner.source {
            Some(source) => format!("{}: {source}", self.inner.message),
            None => self.inner.message.clone(),
        };
        Error {
            inner: Box::new(Inner {
                kind: self.inner.kind,
                message,
                call: self.inner.call,
                attempts: self.inner.attempts,
                remote: self.inner.remote.clone(),
                source: None,
            }),
        }
    }
}

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_wasmpickle_kind_name_maps_back() {
        for name in [
            "decode",
            "out-of-fuel",
            "guest-panic",
            "code-not-found",
            "runtime",
        ] {
            assert_eq!(wasmpickle_kind(name).map(|k| k.as_str()), Some(name));
        }
        assert_eq!(wasmpickle_kind("from-the-future"), None);
    }

    #[test]
    fn error_is_send_sync() {
        fn check<T: Send + Sync + 'static>() {}
        check::<Error>();
    }
}

//! The host's error type: opaque, with a [`kind`](Error::kind) a caller can act on.

use std::error::Error as StdError;
use std::fmt;

use wasmpickle_format::CodeHash;
use wasmpickle_format::abi::GuestFailure;

/// What went wrong, in terms a caller can act on. New kinds may be added.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// Bytes that should be a pickle or a MessagePack value are not (truncated, bad magic,
    /// malformed, non-canonical, or a result that does not fit the type asked for).
    Decode,
    /// The pickle was written by a format version this build cannot read.
    Version,
    /// A Rust value could not be encoded to MessagePack.
    Encode,
    /// Module bytes do not hash to the code hash they came with.
    HashMismatch,
    /// The call names its code by hash and this runtime has no module with that hash.
    CodeNotFound,
    /// An object in a code store is damaged (flipped bits, truncated, or another module's
    /// bytes under its name). The error names the object's hash; the object is never returned.
    StoreCorrupt,
    /// The bytes are not a WebAssembly module this sandbox accepts: they do not parse or
    /// validate, use a disabled feature (threads, relaxed SIMD, several memories), or exceed
    /// the runtime's module size cap.
    InvalidModule,
    /// The module imports something the runtime does not grant.
    ForbiddenImport,
    /// The module has no export of that name.
    MissingExport,
    /// The export exists but is not a function of the pickled signature
    /// `(i32, i32, i32, i32) -> i64`.
    WrongSignature,
    /// The guest could not decode the environment or the arguments into the export's types.
    BadInput,
    /// The guest function returned an error of its own.
    GuestError,
    /// The guest panicked; the message and location are in [`Error::guest_failure`].
    GuestPanic,
    /// The guest trapped (out-of-bounds access, `unreachable`, stack overflow, ...); the wasm
    /// backtrace is in [`Error::wasm_backtrace`].
    Trap,
    /// The call used up its fuel budget. Deterministic: the same call runs out at the same
    /// instruction everywhere.
    OutOfFuel,
    /// The call ran past its wall-clock deadline.
    Deadline,
    /// The call asked for more linear memory or table space than its limits allow.
    MemoryLimit,
    /// The guest broke the contract of `docs/abi.md`: a missing `memory` or allocator, a
    /// pointer or length outside memory, or a malformed reply.
    AbiViolation,
    /// The runtime requires signed calls and this one is unsigned, signed with an unknown key,
    /// or altered after signing.
    Signature,
    /// Reading or writing a file failed.
    Io,
    /// The sandbox itself failed (the engine could not be configured, or an instance could not
    /// be allocated for reasons unrelated to the module).
    Runtime,
    /// A memo refused the call: its export can reach a host import that the runtime grants and
    /// that is not deterministic (such as `wasmpickle.clock_ms`), so a stored result could
    /// differ from a fresh one. Run it without the memo.
    NotMemoizable,
    /// The module cannot hold a live object: the export is not a constructor `<Name>.new`,
    /// the module changes tables at run time or imports its memory (so a snapshot could not
    /// capture its state), or the module given to restore is not a snapshot.
    NotAnObject,
    /// An earlier call on this object trapped, so its state may be half-updated; it refuses
    /// calls and snapshots. Restore its last snapshot.
    ObjectPoisoned,
    /// The runtime already holds as many live objects as it may.
    ObjectLimit,
}

impl ErrorKind {
    /// Every kind, in declaration order.
    pub const ALL: [ErrorKind; 25] = [
        ErrorKind::Decode,
        ErrorKind::Version,
        ErrorKind::Encode,
        ErrorKind::HashMismatch,
        ErrorKind::CodeNotFound,
        ErrorKind::StoreCorrupt,
        ErrorKind::InvalidModule,
        ErrorKind::ForbiddenImport,
        ErrorKind::MissingExport,
        ErrorKind::WrongSignature,
        ErrorKind::BadInput,
        ErrorKind::GuestError,
        ErrorKind::GuestPanic,
        ErrorKind::Trap,
        ErrorKind::OutOfFuel,
        ErrorKind::Deadline,
        ErrorKind::MemoryLimit,
        ErrorKind::AbiViolation,
        ErrorKind::Signature,
        ErrorKind::Io,
        ErrorKind::Runtime,
        ErrorKind::NotMemoizable,
        ErrorKind::NotAnObject,
        ErrorKind::ObjectPoisoned,
        ErrorKind::ObjectLimit,
    ];

    /// The kind whose [`as_str`](ErrorKind::as_str) is `name`, as a worker or a log spells
    /// it; `None` for a name this build does not know.
    pub fn from_name(name: &str) -> Option<ErrorKind> {
        ErrorKind::ALL.into_iter().find(|k| k.as_str() == name)
    }

    /// A short, stable, kebab-case name, used in command-line output.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Decode => "decode",
            ErrorKind::Version => "version",
            ErrorKind::Encode => "encode",
            ErrorKind::HashMismatch => "hash-mismatch",
            ErrorKind::CodeNotFound => "code-not-found",
            ErrorKind::StoreCorrupt => "store-corrupt",
            ErrorKind::InvalidModule => "invalid-module",
            ErrorKind::ForbiddenImport => "forbidden-import",
            ErrorKind::MissingExport => "missing-export",
            ErrorKind::WrongSignature => "wrong-signature",
            ErrorKind::BadInput => "bad-input",
            ErrorKind::GuestError => "guest-error",
            ErrorKind::GuestPanic => "guest-panic",
            ErrorKind::Trap => "trap",
            ErrorKind::OutOfFuel => "out-of-fuel",
            ErrorKind::Deadline => "deadline",
            ErrorKind::MemoryLimit => "memory-limit",
            ErrorKind::AbiViolation => "abi-violation",
            ErrorKind::Signature => "signature",
            ErrorKind::Io => "io",
            ErrorKind::Runtime => "runtime",
            ErrorKind::NotMemoizable => "not-memoizable",
            ErrorKind::NotAnObject => "not-an-object",
            ErrorKind::ObjectPoisoned => "object-poisoned",
            ErrorKind::ObjectLimit => "object-limit",
        }
    }

    /// True for failures that are a property of the call itself, so running the same call
    /// again anywhere gives the same error: everything except deadlines, I/O and runtime
    /// failures and damage found in a code store.
    pub fn is_deterministic(self) -> bool {
        !matches!(
            self,
            ErrorKind::Deadline
                | ErrorKind::Io
                | ErrorKind::Runtime
                | ErrorKind::StoreCorrupt
                | ErrorKind::ObjectLimit
        )
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error from the wasmpickle host. Inspect it through [`Error::kind`] and the accessors.
///
/// `Display` says what failed at this level and names the offending value; the underlying
/// cause, when there is one, is [`source`](std::error::Error::source) and is not repeated in
/// the message, so print the chain (`anyhow`'s `{:#}` does) to see everything.
pub struct Error {
    inner: Box<Inner>,
}

struct Inner {
    kind: ErrorKind,
    message: String,
    code: Option<CodeHash>,
    export: Option<String>,
    guest: Option<GuestFailure>,
    backtrace: Option<String>,
    imports: Vec<String>,
    fuel_used: Option<u64>,
    source: Option<Box<dyn StdError + Send + Sync>>,
}

impl Error {
    pub(crate) fn new(kind: ErrorKind, message: impl Into<String>) -> Error {
        Error {
            inner: Box::new(Inner {
                kind,
                message: message.into(),
                code: None,
                export: None,
                guest: None,
                backtrace: None,
                imports: Vec::new(),
                fuel_used: None,
                source: None,
            }),
        }
    }

    pub(crate) fn with_source(
        mut self,
        source: impl Into<Box<dyn StdError + Send + Sync>>,
    ) -> Self {
        self.inner.source = Some(source.into());
        self
    }

    pub(crate) fn with_code(mut self, code: CodeHash) -> Self {
        self.inner.code = Some(code);
        self
    }

    pub(crate) fn with_export(mut self, export: &str) -> Self {
        self.inner.export = Some(export.to_owned());
        self
    }

    pub(crate) fn with_guest(mut self, failure: GuestFailure) -> Self {
        self.inner.guest = Some(failure);
        self
    }

    pub(crate) fn with_backtrace(mut self, backtrace: Option<String>) -> Self {
        self.inner.backtrace = backtrace;
        self
    }

    pub(crate) fn with_imports(mut self, imports: Vec<String>) -> Self {
        self.inner.imports = imports;
        self
    }

    pub(crate) fn with_fuel_used(mut self, fuel: u64) -> Self {
        self.inner.fuel_used = Some(fuel);
        self
    }

    /// What went wrong.
    pub fn kind(&self) -> ErrorKind {
        self.inner.kind
    }

    /// The module involved, when there is one.
    pub fn code_hash(&self) -> Option<CodeHash> {
        self.inner.code
    }

    /// The export involved, when there is one.
    pub fn export(&self) -> Option<&str> {
        self.inner.export.as_deref()
    }

    /// What the guest said: the message of a guest error or bad input, and the message and
    /// location of a guest panic.
    pub fn guest_failure(&self) -> Option<&GuestFailure> {
        self.inner.guest.as_ref()
    }

    /// The WebAssembly backtrace of a trap or panic, one frame per line.
    pub fn wasm_backtrace(&self) -> Option<&str> {
        self.inner.backtrace.as_deref()
    }

    /// For [`ErrorKind::ForbiddenImport`]: every import of the module, as `module.name`.
    pub fn imports(&self) -> &[String] {
        &self.inner.imports
    }

    /// Fuel consumed before the guest failed, for failures that happened while it ran.
    pub fn fuel_used(&self) -> Option<u64> {
        self.inner.fuel_used
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Error");
        d.field("kind", &self.inner.kind)
            .field("message", &self.inner.message);
        if let Some(code) = &self.inner.code {
            d.field("code", code);
        }
        if let Some(export) = &self.inner.export {
            d.field("export", export);
        }
        if let Some(guest) = &self.inner.guest {
            d.field("guest", guest);
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

/// Format errors keep their own message and kind as the source; the host error says which
/// step failed.
impl From<wasmpickle_format::Error> for Error {
    fn from(e: wasmpickle_format::Error) -> Error {
        use wasmpickle_format::ErrorKind as F;
        let (kind, message) = match e.kind() {
            F::UnsupportedVersion => (ErrorKind::Version, "unsupported pickle version"),
            F::Signature => (ErrorKind::Signature, "signature refused"),
            F::Value => (ErrorKind::Decode, "cannot decode value"),
            _ => (ErrorKind::Decode, "cannot decode pickle"),
        };
        Error::new(kind, message).with_source(e)
    }
}

/// Turns a format error from encoding a value into an [`ErrorKind::Encode`] error.
pub(crate) fn encode_error(e: wasmpickle_format::Error) -> Error {
    if e.kind() == wasmpickle_format::ErrorKind::Value {
        Error::new(ErrorKind::Encode, "cannot encode value").with_source(e)
    } else {
        Error::from(e)
    }
}

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_a_unique_name_that_parses_back() {
        let mut names = std::collections::HashSet::new();
        for kind in ErrorKind::ALL {
            assert!(names.insert(kind.as_str()), "{kind:?}");
            assert_eq!(ErrorKind::from_name(kind.as_str()), Some(kind));
        }
        assert_eq!(ErrorKind::from_name("no-such-kind"), None);
    }
}

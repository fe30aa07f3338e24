//! Pickle functions by value as WebAssembly, and run them in a sandbox.
//!
//! A *closure* is a WebAssembly module (addressed by the SHA-256 of its code), the name of one
//! of its exports, and a captured environment encoded as MessagePack. A *call* is a closure
//! plus arguments: plain bytes to store, log, queue or send. A receiving process rehydrates the
//! call and runs it in a fresh wasmtime instance with no host access unless granted, bounded
//! by fuel, a wall-clock deadline and a memory cap. Unpickling runs nothing; running executes
//! only inside the sandbox; and a pickle loads on any machine and any later version of
//! wasmpickle, not only the interpreter that wrote it.
//!
//! # Example
//!
//! ```no_run
//! use wasmpickle::{Call, Code, Runtime, RuntimeConfig};
//!
//! #[derive(serde::Serialize)]
//! struct Scale { factor: f64 }
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // In one process: pickle a call of `scale` over a captured `Scale`.
//! let code = Code::from_file("math.wasm")?;
//! let call = code.closure("scale", &Scale { factor: 2.5 })?.call(&(4.0,))?;
//! let bytes = call.to_bytes();
//!
//! // ... in another process, on another machine, or next year:
//! let runtime = Runtime::new(&RuntimeConfig::default())?;
//! let y: f64 = runtime.run(&Call::from_bytes(&bytes)?)?.decode()?;
//! assert_eq!(y, 10.0);
//! # Ok(()) }
//! ```
//!
//! # Core concepts
//!
//! * [`Code`]: a module's bytes, its canonical [`CodeHash`], exports and imports. Made once
//!   per module; cheap to clone.
//! * [`Closure`] and [`Call`] (re-exported from `wasmpickle-format`): the pickles themselves,
//!   with canonical bytes and a stable [`CallId`].
//! * [`Runtime`]: one wasmtime engine, `Send + Sync`, meant to live as long as the process.
//!   It compiles each module once per hash and gives every call a fresh instance from a
//!   pooling allocator.
//! * [`CodeStore`]: where modules live by hash, so that calls can name their code instead of
//!   carrying it. [`DirStore`] (a directory; every read re-verifies the hash) and
//!   [`MemoryStore`]. A runtime resolves by-hash calls through one
//!   ([`RuntimeConfig::code_store`]).
//! * The compiled cache ([`RuntimeConfig::compiled_cache`]): compiled modules on disk, so the
//!   next process maps them in instead of compiling; only artifacts the cache wrote itself
//!   are ever loaded. [`Runtime::stats`] says where modules came from.
//! * [`seal_call`] and [`seal_closure`]: a call or a closure as one standalone module, its
//!   environment and arguments baked in as data, that any WebAssembly engine runs through
//!   one exported entry point with no wasmpickle code (`docs/abi.md`, "Sealed modules").
//! * [`Limits`]: fuel, deadline, memory and table caps; a call may ask for less, never more.
//! * [`Grant`]: the host functions a runtime may let modules import. None by default.
//! * [`Outcome`]: a returned value (MessagePack) and the fuel it took.
//! * [`Memo`]: results of calls cached under keys that change exactly when the code an export
//!   can reach, its environment or its arguments change, in a [`MemoBackend`]:
//!   [`LruBackend`] (memory, bounded in bytes), [`RedbBackend`] (a file) or, with the `redis`
//!   feature, `RedisBackend`. Calls that can reach a granted clock are refused.
//! * [`Journal`]: an append-only, checksummed file of executed calls and their
//!   [`RecordedResult`]s; [`replay`] runs them again anywhere and reports every divergence.
//! * [`Object`]: a guest value living in one instance between calls (a "twin"), made by
//!   [`Runtime::spawn`] from a constructor call; [`Object::snapshot`] turns its whole state
//!   into a new module that [`Runtime::restore`] (or any engine) resumes anywhere.
//! * [`Error`] / [`ErrorKind`]: every failure has a kind a caller can act on — decode,
//!   hash mismatch, missing export, guest panic, out of fuel, memory limit, and so on.
//!
//! # Determinism
//!
//! The sandbox grants no clock, randomness or I/O unless asked to, canonicalizes NaNs, and
//! disables threads and relaxed SIMD; fuel counts instructions the same way everywhere. The
//! same call therefore gives the same bytes, id, result and fuel on every run and machine. A
//! deadline, by nature, does not; it is a backstop, and fuel is the budget.
//!
//! The guest side of the contract is in `docs/abi.md`; the byte format in `docs/format.md`.
//!
//! # Features
//!
//! * `redis` (off by default): the Redis memo backend, `RedisBackend`, through redis-rs's
//!   synchronous API (no async runtime).

mod cache;
mod code;
mod error;
mod journal;
mod limits;
mod memo;
mod object;
mod runtime;
mod sandbox;
mod seal;
mod shake;
mod store;

pub use cache::RuntimeStats;
pub use code::{Code, Export, Import, UNHASHED_SECTIONS, canonical_bytes, canonical_hash};
pub use error::{Error, ErrorKind, Result};
pub use journal::{
    Divergence, JOURNAL_MAGIC, Journal, JournalConfig, JournalReader, JournalRecord, NotReplayed,
    ReplayConfig, ReplayReport, TornTail, replay, replay_with_progress,
};
pub use limits::{Grant, Limits};
#[cfg(feature = "redis")]
pub use memo::RedisBackend;
pub use memo::{
    BackendStats, Fetched, LruBackend, MEMO_FORMAT_VERSION, Memo, MemoBackend, MemoConfig, MemoKey,
    MemoLookup, MemoMiss, MemoStats, OUTCOME_VERSION, RecordedResult, RedbBackend,
};
pub use object::{CONSTRUCTOR, OBJECT_SECTION, Object, snapshot_object};
pub use runtime::{Outcome, Runtime, RuntimeConfig};
pub use seal::{SEALED_ENTRY, SEALED_SECTION, seal_call, seal_closure};
pub use shake::{export_version, shake};
pub use store::{CodeStore, Corrupt, DirStore, GcReport, MemoryStore, VerifyReport};

pub use wasmpickle_format as format;
pub use wasmpickle_format::abi::{ExportDescription, GuestFailure};
pub use wasmpickle_format::{
    Call, CallId, CallLimits, Closure, CodeHash, CodeRef, Keyring, SignedCall, SigningKey,
};

//! The wasmpickle wire format: what a pickled closure and a pickled call are, as bytes.
//!
//! This crate has no WebAssembly runtime in it. It is shared by the host (`wasmpickle`), the
//! guest SDK (`wasmpickle-guest`, compiled to wasm32) and any tool that only needs to read,
//! write or inspect pickles. `docs/format.md` in the repository is the byte-level
//! specification; this crate is its reference implementation.
//!
//! # Core concepts
//!
//! * [`CodeHash`]: the SHA-256 address of a module, shown as `sha256:<hex>`.
//! * [`CodeRef`]: which module to run — its hash, and its bytes when the code travels inline.
//! * [`Closure`]: code + export name + captured environment (MessagePack bytes).
//! * [`Call`]: a closure + arguments (MessagePack bytes) + optional [`CallLimits`]; its
//!   [`CallId`] is the same on every run and machine.
//! * [`SignedCall`] and [`Keyring`]: an HMAC-SHA256 over a call's bytes with a shared key, for
//!   receivers that only run calls from senders they trust.
//! * The envelope: magic `C1 57 50 4B`, a big-endian `u16` [`FORMAT_VERSION`], a
//!   [`PickleKind`] byte, then one MessagePack map in canonical form.
//! * [`codec`]: how Rust values become MessagePack — the one place the encoding is chosen.
//! * [`abi`]: the guest contract as data (export names, the reply layout, export descriptions).
//!
//! # Guarantees
//!
//! * **Canonical.** Encoding is deterministic and decoding accepts only the canonical
//!   encoding, so bytes and values correspond one to one and a call's bytes, like its id, are
//!   the same everywhere.
//! * **Total.** Decoding any byte string returns a value or a typed [`Error`] — never a panic —
//!   and no field is allocated before its length has been checked against a limit.
//! * **Stable.** Pickles written by format version 1 decode with every later version; the
//!   repository's golden pickles hold that promise to account.
//!
//! # Example
//!
//! ```
//! use std::sync::Arc;
//! use wasmpickle_format::{Call, Closure, CodeHash, CodeRef, codec};
//!
//! #[derive(serde::Serialize)]
//! struct Scale { factor: f64 }
//!
//! let wasm: Arc<[u8]> = Arc::from(&b"\0asm\x01\0\0\0"[..]);
//! let code = CodeRef::inline(CodeHash::digest(&wasm), wasm)?;
//! let call = Closure::new(code, "scale", &Scale { factor: 2.5 })?.call(&(4.0,))?;
//!
//! let bytes = call.to_bytes();
//! let back = Call::from_bytes(&bytes)?;
//! assert_eq!(back, call);
//! assert_eq!(back.id(), call.by_reference().id());
//! let (x,): (f64,) = codec::from_msgpack(back.args())?;
//! assert_eq!(x, 4.0);
//! # Ok::<(), wasmpickle_format::Error>(())
//! ```

pub mod abi;
pub mod codec;
mod error;
mod hash;
mod pickle;
mod sign;
mod wire;

pub use error::{Error, ErrorKind, Result};
pub use hash::{CallId, CodeHash};
pub use pickle::{
    Call, CallLimits, Closure, CodeRef, DecodeLimits, FORMAT_VERSION, HEADER_LEN, Header, MAGIC,
    MAX_ARGS_BYTES, MAX_CODE_BYTES, MAX_ENV_BYTES, MAX_EXPORT_NAME, PickleKind,
};
pub use sign::{Keyring, MAX_KEY_ID, MIN_SECRET_BYTES, SignedCall, SigningKey};

//! Guest SDK for wasmpickle: turn ordinary Rust functions into picklable WebAssembly exports.
//!
//! A guest is a `cdylib` crate built for `wasm32-unknown-unknown`. Each function marked
//! [`#[export]`](export) becomes an export the host can call as a pickled closure: the first
//! parameter is the closure's captured environment, the rest are the call's arguments, and
//! the return value is the result. The SDK writes the glue `docs/abi.md` asks for: the
//! allocator exports, MessagePack decoding and encoding (through the same
//! [`codec`] the host uses), error and panic replies, and a description of every export in a
//! custom section. An `impl` block marked [`#[object]`](object) exports a type as a live
//! object instead, whose constructor and methods the host calls on one instance it keeps.
//!
//! # Example
//!
//! ```
//! use serde::{Deserialize, Serialize};
//! use wasmpickle_guest::export;
//!
//! /// The captured state: what the closure "closes over".
//! #[derive(Serialize, Deserialize)]
//! pub struct Scale {
//!     factor: f64,
//! }
//!
//! /// Multiplies `x` by the captured factor.
//! #[export]
//! pub fn scale(env: Scale, x: f64) -> f64 {
//!     env.factor * x
//! }
//!
//! /// Divides `x` by `divisor`, failing cleanly on zero. No environment: the host passes `nil`.
//! #[export]
//! pub fn checked_div(x: i64, divisor: i64) -> Result<i64, String> {
//!     x.checked_div(divisor).ok_or_else(|| format!("cannot divide {x} by {divisor}"))
//! }
//!
//! // The functions stay ordinary functions, so guest logic can be unit-tested natively.
//! assert_eq!(scale(Scale { factor: 2.5 }, 4.0), 10.0);
//! assert_eq!(checked_div(7, 0), Err("cannot divide 7 by 0".to_owned()));
//! ```
//!
//! Built for wasm32, that crate exports `scale` and `checked_div` with the signature
//! `(i32, i32, i32, i32) -> i64`, plus `memory`, `wasmpickle_alloc`, `wasmpickle_free` and the
//! panic slot `wasmpickle_panic`, and imports nothing.
//!
//! # Core concepts
//!
//! * [`export`]: the attribute. The environment is the first parameter when it is named `env`
//!   or `_env` or marked `#[env]`; a function without one gets `nil`. The remaining
//!   parameters are decoded as one tuple from the arguments array; borrowed parameters
//!   (`&str`, `&[u8]`) borrow straight from the input without a copy. A return type whose
//!   last path segment is `Result` (`Result<T, E>`, `anyhow::Result<T>`, `io::Result<T>`)
//!   replies `Ok(v)` as a result and `Err(e)` as a guest error with `e.to_string()`; any other
//!   `T: Serialize` is the result.
//! * [`object`]: the attribute on an inherent `impl` block that exports the type as a live
//!   object (a *twin*) instead of a closure: `new` becomes the export `Type.new`, which
//!   stores the object in the instance, and every `pub` method with `&self` or `&mut self`
//!   becomes `Type.method`, which runs on it. The instance holds one object, in linear memory,
//!   so the host can keep it across calls and snapshot it (`docs/abi.md` §11).
//! * Replies (`docs/abi.md` §5): status 0 with the result, 1 for an `Err`, 2 for a panic,
//!   3 when the environment or the arguments do not decode into the parameter types (the
//!   message says which, and serde's reason).
//! * Panics: guests build with `panic = "abort"`, so a panic cannot return. A panic hook
//!   (installed on the first call) encodes a status-2 reply with the message and location and
//!   stores its address in the exported panic slot just before the instance traps; the host
//!   reads it from there.
//! * [`BumpAlloc`]: an optional global allocator for the lean profile below.
//! * [`host`]: functions the host may grant (`log`). Unused ones are not imported.
//! * [`codec`], [`abi`] and [`serde`]: re-exported so a guest and its tests use exactly the
//!   encoding the host uses.
//!
//! # Dependencies of a guest crate
//!
//! `wasmpickle-guest` and `serde` with the `derive` feature. The derive macros generate paths
//! to `::serde`, so `serde` must be a direct dependency (re-exporting it does not help
//! `#[derive(Deserialize)]`); [`serde`] is re-exported for code that names serde's traits
//! without depending on it. Byte buffers should use `serde_bytes` so they travel as msgpack
//! `bin`. Build with:
//!
//! ```toml
//! [lib]
//! crate-type = ["cdylib"]
//!
//! [profile.release]
//! opt-level = "s"
//! lto = true
//! codegen-units = 1
//! panic = "abort"          # the panic slot replaces unwinding
//! strip = "debuginfo"      # keep the name section for readable wasm backtraces
//! ```
//!
//! # The lean profile
//!
//! The host gives every call a fresh instance, and what a fresh instance costs is mostly
//! first-touch page faults in its linear memory and the `memory.grow` of the default
//! allocator's first allocation, not instantiation: a prototype on wasmtime 48 with the
//! pooling allocator measured 19 µs per fresh-instance call with Rust's defaults, of which
//! instantiation is 3 µs. Three changes take that to 4.7 µs with no page fault at all, when
//! the host's pool also keeps 256 KiB of memory resident:
//!
//! * a 64 KiB stack instead of Rust's 1 MiB, so the stack, static data and heap share a few
//!   pages: link argument `-zstack-size=65536`;
//! * an initial memory big enough that nothing grows: `--initial-memory=524288` (512 KiB);
//! * [`BumpAlloc`] as the global allocator, which touches only the bytes it hands out.
//!
//! A guest opts in with a build script (`build.rs`; `guest-examples/math` has one), so the
//! flags apply to its `cdylib` only:
//!
//! ```text
//! fn main() {
//!     println!("cargo:rustc-link-arg-cdylib=-zstack-size=65536");
//!     println!("cargo:rustc-link-arg-cdylib=--initial-memory=524288");
//! }
//! ```
//!
//! and `#[global_allocator] static A: BumpAlloc = BumpAlloc::new();`. The small stack suits
//! shallow code: Rust keeps only address-taken locals on it (most values live in wasm locals),
//! but deep recursion over big frames needs the default. See [`BumpAlloc`] for
//! when a bump allocator is the wrong choice.
//!
//! # Features
//!
//! None. The SDK compiles on every target; its wasm-only parts (the ABI exports, the panic
//! slot, the description section, the `extern "C"` export wrappers) are compiled only for
//! `target_family = "wasm"`, so doc tests, native unit tests of guest code and `trybuild`
//! run on the host.

// Lets `::wasmpickle_guest::...` paths in generated code resolve inside this crate's own
// tests and doc tests too.
extern crate self as wasmpickle_guest;

mod bump;
pub mod host;
mod object;
mod runtime;

pub use bump::BumpAlloc;
pub use serde;
pub use wasmpickle_format::{abi, codec};

/// Exports a function as a pickled closure.
///
/// ```
/// use serde::Deserialize;
/// use wasmpickle_guest::export;
///
/// #[derive(Deserialize)]
/// pub struct Greeting {
///     salutation: String,
/// }
///
/// /// Greets `name`. (Doc comments become the export's description.)
/// #[export]
/// pub fn greet(env: Greeting, name: &str) -> String {
///     format!("{}, {name}!", env.salutation)
/// }
///
/// /// The environment may have any name when it is marked `#[env]`.
/// #[export(name = "add_offset")]
/// pub fn add(#[env] offset: i64, x: i64) -> i64 {
///     offset + x
/// }
///
/// /// No environment: the host passes `nil`.
/// #[export]
/// pub fn answer() -> u32 {
///     42
/// }
///
/// assert_eq!(greet(Greeting { salutation: "Hello".into() }, "Ada"), "Hello, Ada!");
/// assert_eq!(add(10, 5), 15);
/// ```
///
/// # Signature
///
/// * **Environment**: the first parameter when it is named `env` or `_env`, or carries
///   `#[env]`; its type must implement `Deserialize`. Without one the environment must be
///   `nil`, i.e. the unit value.
/// * **Arguments**: every other parameter, decoded together as a tuple from the arguments
///   array (`nil` when there are none); each type must implement `Deserialize`. Borrowed
///   types such as `&str` and `&[u8]` borrow from the input bytes.
/// * **Result**: any `T: Serialize`; nothing is `()`, i.e. `nil`. A return type written as a
///   path whose last segment is `Result` is unpacked: `Ok(v)` is the result, `Err(e)` a guest
///   error with message `e.to_string()` (so `E: Display`). To return a `Result` as a plain
///   value instead (`{"Ok": v}`), name it through a type alias with another name.
///
/// # Arguments
///
/// * `name = "..."`: the export's name, instead of the function's. It may not be empty, be
///   longer than 256 bytes, or be one of the ABI's own names (`memory`, `wasmpickle_*`,
///   `__heap_base`, `__data_end`).
///
/// # Errors
///
/// A compile error, pointing at the offending tokens, for an item that is not a free `fn`,
/// and for an `async`, `unsafe`, `extern "ABI"`, generic (type, const or lifetime
/// parameters, `where` clause) or variadic function, a `self` receiver, an `impl Trait`
/// parameter, `#[env]` on a parameter other than the first, an unknown attribute argument and
/// a reserved or invalid export name.
///
/// # What it generates
///
/// The function itself, unchanged (callable natively); a hidden decoder/encoder around it;
/// and, for wasm targets only, the `extern "C"` export
/// `(env_ptr: i32, env_len: i32, args_ptr: i32, args_len: i32) -> i64` and the export's
/// description (name, doc comment, environment, parameter and result types as written) in the
/// `wasmpickle.exports` custom section.
#[doc(inline)]
pub use wasmpickle_macros::export;

/// Exports a type as a live object, a *twin*: its constructor and methods become exports
/// that share one object kept in the instance between calls.
///
/// ```
/// use serde::Deserialize;
/// use wasmpickle_guest::object;
///
/// /// The constructor's environment.
/// #[derive(Deserialize)]
/// pub struct Start {
///     value: i64,
///     step: i64,
/// }
///
/// pub struct Counter {
///     value: i64,
///     step: i64,
/// }
///
/// #[object]
/// impl Counter {
///     /// Exported as `Counter.new`: builds the object the other exports work on.
///     pub fn new(env: Start) -> Result<Self, String> {
///         match env.step {
///             0 => Err("a step of 0 would never count".to_owned()),
///             step => Ok(Counter { value: env.value, step }),
///         }
///     }
///
///     /// Exported as `Counter.incr`: adds the step, returns the new value.
///     pub fn incr(&mut self) -> i64 {
///         self.value += self.step;
///         self.value
///     }
///
///     /// Exported as `Counter.add_times`, taking the arguments `[n, times]`.
///     #[method(name = "add_times")]
///     pub fn add(&mut self, n: i64, times: u32) -> i64 {
///         self.value += n * i64::from(times);
///         self.value
///     }
///
///     /// Exported as `Counter.get`.
///     pub fn get(&self) -> i64 {
///         self.value
///     }
///
///     /// Not exported: not `pub`.
///     fn clamp(&mut self) {
///         self.value = self.value.max(0);
///     }
/// }
///
/// // The impl stays an ordinary impl, so the object can be unit-tested natively.
/// let mut counter = Counter::new(Start { value: 10, step: 5 }).unwrap();
/// assert_eq!(counter.incr(), 15);
/// assert_eq!(counter.add(1, 3), 18);
/// counter.clamp();
/// assert_eq!(counter.get(), 18);
/// ```
///
/// Built for wasm32, that crate exports `Counter.new`, `Counter.incr`, `Counter.add_times`
/// and `Counter.get`, each with the signature of [`export`]'s exports.
///
/// # Exports
///
/// * **Constructor**: the associated function `new`, required. Its parameters follow
///   [`export`]'s rules exactly (an environment first when named `env` or `_env` or marked
///   `#[env]`, then the arguments; borrowed `&str` and `&[u8]` allowed). It returns `Self` or
///   `Result<Self, E>` with `E: Display` (any path whose last segment is `Result`). Exported
///   as `Name.new`: on success it stores the object in the instance, dropping the one it
///   replaces, and replies `nil`; an `Err(e)` replies a guest error with `e.to_string()` and
///   leaves the previous object, if any, in place.
/// * **Methods**: every `pub fn` with a `&self` or `&mut self` receiver (also spelled
///   `self: &Self`, `self: &mut Self`), exported as `Name.method`. A method takes no
///   environment: the host must pass `nil`. Its parameters are the arguments, and its result
///   is replied as [`export`] replies one (a `Result` unpacked, a panic in the panic slot).
///   Before the constructor has succeeded once, a method replies a guest error with the
///   message `object Name is not constructed`, without decoding its arguments.
/// * **Left alone**: functions that are not `pub` (`pub(crate)` included), associated
///   functions without a receiver other than `new`, constants and types.
///
/// Each export is described in the `wasmpickle.exports` custom section like an [`export`]'s,
/// with `Self` spelled as the type's name; methods have no environment. A constructor's result
/// is described as written (`Counter`, `Result<Counter, String>`), although its reply carries
/// `nil`.
///
/// # Arguments
///
/// * `name = "..."`: the object's name, the prefix of its exports, instead of the type's
///   (last path segment) name. The rules of [`export`] names apply, and it may not contain
///   `.`, which separates it from the method.
/// * On a method, `#[method(name = "...")]` exports it under another name. A method name may
///   not be empty, contain `.`, be `new`, or be taken by another method.
///
/// # State
///
/// An instance holds at most one object per type, in a `static` in linear memory: the host
/// keeps an object alive by keeping its instance, and snapshots it by copying the instance's
/// linear memory and globals. All of an object's state must therefore live there, as it does
/// in Rust compiled for `wasm32-unknown-unknown` on its own: not in host-side resources (an
/// imported handle), and not in a table changed at run time. A long-lived object that allocates
/// also wants an allocator that frees: use Rust's default allocator, not [`BumpAlloc`].
///
/// # Errors
///
/// A compile error, pointing at the offending tokens, for an item that is not an `impl`
/// block, a trait impl, a generic impl or one with a `where` clause, an impl of a type that is
/// not a named path, a missing `new`, a `new` with a receiver or that does not return `Self` or
/// `Result<Self, E>`, an exported method that takes `self` by value (or as `Box<Self>`), the
/// function misuses [`export`] rejects (`async`, `unsafe`, `extern`, generic, variadic,
/// `impl Trait` parameters, `'static` borrows), `#[env]` anywhere but on `new`'s first
/// parameter, `#[method]` on a function that is not exported, and an invalid or reserved
/// object or method name.
///
/// Two `#[object]` impls for one name, or an [`export`] named like one of their exports, are
/// caught by the linker (a duplicate symbol), not by the attribute.
#[doc(inline)]
pub use wasmpickle_macros::object;

/// Runtime glue for the code `#[export]` and `#[object]` generate. Not public API: it changes
/// with the macros.
#[doc(hidden)]
pub mod __private {
    pub use std::vec::Vec;

    pub use crate::object::ObjectSlot;
    #[cfg(target_family = "wasm")]
    pub use crate::runtime::{PANIC_SLOT, install_panic_hook, run};
    pub use crate::runtime::{PanicSlot, decode_args, decode_env, error_reply, ok_reply};
}

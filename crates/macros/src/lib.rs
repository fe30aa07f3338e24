//! The `#[export]` attribute of the wasmpickle guest SDK.
//!
//! Use it through [`wasmpickle-guest`](https://docs.rs/wasmpickle-guest), which re-exports it
//! as `wasmpickle_guest::export` and provides the runtime the generated code calls (always
//! through `::wasmpickle_guest::__private`). The attribute is documented there; this crate
//! only holds the expansion, because procedural macros must live in a crate of their own.
//!
//! # Core concepts
//!
//! * `export`: turns `fn name(env: Env, a: A, b: B) -> R` into a pickled export
//!   `(env_ptr, env_len, args_ptr, args_len) -> i64` as `docs/abi.md` specifies, and records
//!   the signature in the `wasmpickle.exports` custom section.
//! * Misuse (an `async` or generic function, a `self` receiver, `impl Trait` parameters, a
//!   reserved export name, ...) is a compile error pointing at the offending tokens; the macro
//!   never panics.

mod export;
mod render;

use proc_macro::TokenStream;

/// Exports a function as a pickled closure. See `wasmpickle_guest::export` for the full
/// documentation and examples.
#[proc_macro_attribute]
pub fn export(attr: TokenStream, item: TokenStream) -> TokenStream {
    export::expand(attr.into(), item.into()).into()
}

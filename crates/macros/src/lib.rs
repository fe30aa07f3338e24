//! The `#[export]` and `#[object]` attributes of the wasmpickle guest SDK.
//!
//! Use them through [`wasmpickle-guest`](https://docs.rs/wasmpickle-guest), which re-exports
//! them as `wasmpickle_guest::export` and `wasmpickle_guest::object` and provides the runtime
//! the generated code calls (always through `::wasmpickle_guest::__private`). The attributes
//! are documented there; this crate only holds the expansions, because procedural macros must
//! live in a crate of their own.
//!
//! # Core concepts
//!
//! * `export`: turns `fn name(env: Env, a: A, b: B) -> R` into a pickled export
//!   `(env_ptr, env_len, args_ptr, args_len) -> i64` as `docs/abi.md` specifies, and records
//!   the signature in the `wasmpickle.exports` custom section.
//! * `object`: turns an inherent `impl Name { ... }` into a live object, its constructor
//!   `new` into the export `Name.new` and each `pub` method with `&self` or `&mut self` into
//!   `Name.method`, sharing one object slot in linear memory (`docs/abi.md` §11). The checks
//!   and the glue of each export are `export`'s.
//! * Misuse (an `async` or generic function, a `self` receiver, `impl Trait` parameters, a
//!   reserved export name, a trait impl, a missing `new`, ...) is a compile error pointing at
//!   the offending tokens; the macros never panic.

mod export;
mod object;
mod render;

use proc_macro::TokenStream;

/// Exports a function as a pickled closure. See `wasmpickle_guest::export` for the full
/// documentation and examples.
#[proc_macro_attribute]
pub fn export(attr: TokenStream, item: TokenStream) -> TokenStream {
    export::expand(attr.into(), item.into()).into()
}

/// Exports an inherent `impl` block as a live object (a twin). See
/// `wasmpickle_guest::object` for the full documentation and examples.
#[proc_macro_attribute]
pub fn object(attr: TokenStream, item: TokenStream) -> TokenStream {
    object::expand(attr.into(), item.into()).into()
}

//! One guest built in variants that differ in a single function, to test export versions
//! (`wasmpickle::export_version`): editing a function changes the version of the exports
//! that can reach it and of no other.
//!
//! | export | calls | variant `a` (default) | `b` | `c` |
//! |---|---|---|---|---|
//! | `uses_helper(x) -> u64` | [`helper`] | `3x + 1` | `7x + 1` | `3x + 1` |
//! | `standalone(x) -> u64` | nothing | `rotl(x, 5) ^ 0x5a5a` | same | same |
//! | `uses_lonely(x) -> u64` | [`lonely`] | `x + 100` | same | `x + 200` |
//!
//! The variant is read at compile time from `WASMPICKLE_VERSIONED_VARIANT` (unset: `a`). Not a
//! cargo feature: cargo hashes the feature set into the crate's `-C metadata`, which changes
//! every symbol's hash, which changes the order LLVM emits generic instantiations in, and with
//! it the function table and the vtables in data: every export's code would move, which is
//! not what editing one function does. An environment variable changes the source the
//! compiler sees and nothing else, like an edit.
//!
//! Every variant has the same lines: the variant picks a constant inside an expression, so no
//! panic location or other data moves. The edited functions are `#[inline(never)]` and their
//! inputs go through `black_box`, so LLVM can neither inline them into their callers nor fold
//! them into constants: the edit stays inside the one function.
//!
//! Built with Rust's default allocator and stack.

use std::hint::black_box;

use wasmpickle_guest::export;

/// Which variant this is: `a`, `b` or `c`.
const VARIANT: &str = match option_env!("WASMPICKLE_VERSIONED_VARIANT") {
    Some(v) => v,
    None => "a",
};

/// Whether this is variant `v` (a `const fn`, so each variant's constant is fixed when it is
/// compiled).
const fn is(v: &str) -> bool {
    let (a, b) = (VARIANT.as_bytes(), v.as_bytes());
    a.len() == 1 && b.len() == 1 && a[0] == b[0]
}

/// Calls [`helper`], the function variant `b` edits.
#[export]
pub fn uses_helper(x: u64) -> u64 {
    helper(x)
}

/// Calls nothing of this crate: its version is the same in every variant.
#[export]
pub fn standalone(x: u64) -> u64 {
    black_box(x).rotate_left(5) ^ 0x5a5a
}

/// Calls [`lonely`], the function variant `c` edits.
#[export]
pub fn uses_lonely(x: u64) -> u64 {
    lonely(x)
}

/// `3x + 1`, or `7x + 1` in variant `b`.
#[inline(never)]
pub fn helper(x: u64) -> u64 {
    let k: u64 = if is("b") { 7 } else { 3 };
    black_box(x).wrapping_mul(black_box(k)).wrapping_add(1)
}

/// `x + 100`, or `x + 200` in variant `c`. Reached only from [`uses_lonely`].
#[inline(never)]
pub fn lonely(x: u64) -> u64 {
    let k: u64 = if is("c") { 200 } else { 100 };
    black_box(x).wrapping_add(black_box(k))
}

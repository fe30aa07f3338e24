//! The example guests, compiled from source, for wasmpickle's tests and benchmarks.
//!
//! The build script builds `guest-examples/` (a workspace of its own) for
//! `wasm32-unknown-unknown` with its release profile, assembles `guest-examples/wat/*.wat`,
//! and copies the modules into this crate's `OUT_DIR`. Each constant below is the absolute
//! path of one module, fixed at build time; the repository never holds `.wasm` files. A change
//! to any guest's source, to the guest SDK (`crates/guest`, `crates/macros`) or to the format
//! crate rebuilds them.
//!
//! # Core concepts
//!
//! * [`MATH`]: well-behaved closures over captured state, built with the lean profile
//!   (64 KiB stack, 512 KiB initial memory, bump allocator): `scale`, `polynomial`,
//!   `word_counts`, `fold_bytes`, `checked_div` (an `Err` on a zero divisor) and `describe`.
//! * [`FAULTY`]: exports that loop, exhaust memory or the stack, panic, or return a broken
//!   reply, plus `ok() -> 7`; built with Rust's default allocator and stack.
//! * [`FAULTY_IMPORT`]: imports `env.read_host_file`, which no sandbox grants.
//! * [`TWINS`]: live objects (`#[object]`): `Counter`, `Stats` and `Kv`, exported as
//!   `Counter.new`, `Counter.incr`, ...; built with Rust's default allocator and a 128 KiB
//!   stack.
//! * [`WAT_ADD`]: `add`, written by hand in WebAssembly text without the SDK.
//! * [`VERSIONED_A`], [`VERSIONED_B`], [`VERSIONED_C`]: one guest in three variants that each
//!   differ in one function, for export versions: `uses_helper`, `standalone`, `uses_lonely`.
//! * [`MATH_ELSEWHERE`]: `math` again, built from a copy of the guest workspace in another
//!   directory, for path independence.
//!
//! # Example
//!
//! ```
//! let wasm = wasmpickle_test_artifacts::read(wasmpickle_test_artifacts::MATH);
//! assert_eq!(&wasm[..4], b"\0asm");
//! ```

/// `guest-examples/math`: the lean, well-behaved guest.
pub const MATH: &str = env!("WASMPICKLE_ARTIFACT_MATH");

/// `guest-examples/faulty`: misbehaving exports (`spin`, `memory_bomb`, `recurse`,
/// `panic_now`, `bad_pointer`, `bad_reply`) and `ok`.
pub const FAULTY: &str = env!("WASMPICKLE_ARTIFACT_FAULTY");

/// `guest-examples/faulty-import`: imports a function no sandbox grants.
pub const FAULTY_IMPORT: &str = env!("WASMPICKLE_ARTIFACT_FAULTY_IMPORT");

/// `guest-examples/twins`: the objects `Counter` (`new(env: {start, step})`, `incr`, `add`,
/// `get`, `reset`, and `fail`, which panics), `Stats` (`new()`, `push`, `extend`, `summary`)
/// and `Kv` (`new(env: {max_entries})`, failing on 0; `set`, `get`, `remove`, `len`,
/// `is_empty`, `keys`), each export named `Type.method`.
pub const TWINS: &str = env!("WASMPICKLE_ARTIFACT_TWINS");

/// `guest-examples/wat/add.wat`, assembled: a guest written without the SDK.
pub const WAT_ADD: &str = env!("WASMPICKLE_ARTIFACT_WAT_ADD");

/// `guest-examples/versioned`, variant `a`: `uses_helper(x) = 3x + 1`,
/// `standalone(x) = rotl(x, 5) ^ 0x5a5a`, `uses_lonely(x) = x + 100`.
pub const VERSIONED_A: &str = env!("WASMPICKLE_ARTIFACT_VERSIONED_A");

/// `guest-examples/versioned`, variant `b`: only `helper` differs, and
/// `uses_helper(x) = 7x + 1`.
pub const VERSIONED_B: &str = env!("WASMPICKLE_ARTIFACT_VERSIONED_B");

/// `guest-examples/versioned`, variant `c`: only `lonely` differs, and
/// `uses_lonely(x) = x + 200`.
pub const VERSIONED_C: &str = env!("WASMPICKLE_ARTIFACT_VERSIONED_C");

/// `guest-examples/math` built from a copy of the guest workspace in another directory (under
/// this crate's `OUT_DIR`), against the same SDK, with the same flags. Its raw bytes may
/// differ from [`MATH`]'s; its canonical hash must not.
pub const MATH_ELSEWHERE: &str = env!("WASMPICKLE_ARTIFACT_MATH_ELSEWHERE");

/// Every module, by file stem, for tests that run over all of them.
pub const ALL: &[(&str, &str)] = &[
    ("math", MATH),
    ("faulty", FAULTY),
    ("faulty_import", FAULTY_IMPORT),
    ("twins", TWINS),
    ("add", WAT_ADD),
    ("versioned_a", VERSIONED_A),
    ("versioned_b", VERSIONED_B),
    ("versioned_c", VERSIONED_C),
    ("math_elsewhere", MATH_ELSEWHERE),
];

/// Reads a module.
///
/// # Panics
///
/// When the file cannot be read, naming it: the artifacts are built with this crate, so that
/// is a broken build, not a condition for a test to handle.
pub fn read(path: &str) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("cannot read guest module {path}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_module_is_wasm() {
        for (name, path) in ALL {
            let wasm = read(path);
            assert_eq!(&wasm[..8], b"\0asm\x01\0\0\0", "{name} at {path}");
        }
    }
}

//! Functions the host may grant a guest (`docs/abi.md` §7).
//!
//! Each one is an import under the module `wasmpickle`. A module that imports something the
//! runtime has not granted is refused before it runs, so call these only when the host grants
//! them. A guest that never calls a function here does not import it: the linker drops
//! imports that no remaining code uses.

/// Logs `msg` through the host's `tracing` (target `wasmpickle::guest`), via the import
/// `(import "wasmpickle" "log" (func (param i32 i32)))`.
///
/// Logging does not influence the result, so a call stays deterministic. On targets other
/// than wasm (native unit tests of a guest crate) the message goes to standard error.
pub fn log(msg: &str) {
    #[cfg(target_family = "wasm")]
    // SAFETY: the host reads `msg.len()` bytes at `msg.as_ptr()`, which `msg` keeps valid for
    // the call; it writes nothing.
    unsafe {
        imports::log(msg.as_ptr(), msg.len())
    }
    #[cfg(not(target_family = "wasm"))]
    eprintln!("{msg}");
}

#[cfg(target_family = "wasm")]
mod imports {
    #[link(wasm_import_module = "wasmpickle")]
    unsafe extern "C" {
        /// `wasmpickle.log(ptr, len)`.
        pub(super) fn log(ptr: *const u8, len: usize);
    }
}

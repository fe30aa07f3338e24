//! A guest that imports `env.read_host_file`, a function no wasmpickle sandbox grants. The
//! runtime must refuse the module before running it and list the import.

use wasmpickle_guest::export;

#[cfg(target_family = "wasm")]
#[link(wasm_import_module = "env")]
unsafe extern "C" {
    /// Reads a file of the host: exactly what a sandboxed closure must not be able to do.
    fn read_host_file(path_ptr: u32, path_len: u32) -> i32;
}

/// Tries to read `path` on the host and returns what the import returned. Using the import
/// here is what keeps it in the module: the linker drops imports no code calls.
#[export]
pub fn read_file(path: String) -> i32 {
    #[cfg(target_family = "wasm")]
    // SAFETY: the import, were it granted, would read `path.len()` bytes at `path.as_ptr()`,
    // which `path` keeps valid for the call.
    return unsafe { read_host_file(path.as_ptr() as usize as u32, path.len() as u32) };
    #[cfg(not(target_family = "wasm"))]
    {
        let _ = path;
        -1
    }
}

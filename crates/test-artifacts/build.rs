//! Builds `guest-examples/` from source for `wasm32-unknown-unknown` and converts
//! `guest-examples/wat/*.wat` to wasm, then hands the module paths to `lib.rs`.
//!
//! The guests are a workspace of their own, built by a child `cargo` in its own target dir
//! (`guest-examples/target`) with its own profile and lockfile (`--locked`). The environment
//! the outer build gives this script describes the *outer* build (its target dir, profile,
//! rustflags, clippy as a wrapper, ...), so it is scrubbed before the child sees it; what
//! locates the toolchain, the registry and the jobserver is kept.
//!
//! The finished modules are copied into `OUT_DIR`, so a test binary keeps reading the modules
//! it was built with even while another build rewrites `guest-examples/target`.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::{env, fs};

/// The Rust guests: (constant in lib.rs, file cargo writes).
const GUESTS: &[(&str, &str)] = &[
    ("MATH", "math.wasm"),
    ("FAULTY", "faulty.wasm"),
    ("FAULTY_IMPORT", "faulty_import.wasm"),
];

/// The hand-written modules: (constant in lib.rs, file in guest-examples/wat).
const WAT: &[(&str, &str)] = &[("WAT_ADD", "add.wat")];

const TARGET: &str = "wasm32-unknown-unknown";

fn main() {
    let manifest_dir = PathBuf::from(env_var("CARGO_MANIFEST_DIR"));
    let repo = manifest_dir.join("..").join("..");
    let guests = repo.join("guest-examples");
    let out_dir = PathBuf::from(env_var("OUT_DIR"));

    watch_tree(&guests);
    for krate in ["guest", "macros", "format"] {
        watch(&repo.join("crates").join(krate).join("Cargo.toml"));
        watch_tree(&repo.join("crates").join(krate).join("src"));
    }
    // The SDK crates inherit versions and dependencies from the root workspace, and the
    // toolchain file picks the compiler.
    watch(&repo.join("Cargo.toml"));
    watch(&repo.join("rust-toolchain.toml"));

    build_guests(&guests);
    let built = guests.join("target").join(TARGET).join("release");
    for (name, file) in GUESTS {
        let dest = out_dir.join(file);
        fs::copy(built.join(file), &dest).unwrap_or_else(|e| {
            panic!(
                "cannot copy {} to {}: {e}",
                built.join(file).display(),
                dest.display()
            )
        });
        export_path(name, &dest);
    }

    for (name, file) in WAT {
        let src = guests.join("wat").join(file);
        let wasm = wat::parse_file(&src)
            .unwrap_or_else(|e| panic!("cannot assemble {}: {e}", src.display()));
        let dest = out_dir.join(Path::new(file).with_extension("wasm"));
        fs::write(&dest, wasm).unwrap_or_else(|e| panic!("cannot write {}: {e}", dest.display()));
        export_path(name, &dest);
    }
}

fn env_var(name: &str) -> OsString {
    env::var_os(name).unwrap_or_else(|| panic!("cargo did not set {name} for the build script"))
}

/// Runs `cargo build --release --locked --target wasm32-unknown-unknown` in `guests`.
fn build_guests(guests: &Path) {
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(&cargo);
    cmd.args(["build", "--release", "--locked", "--target", TARGET])
        .current_dir(guests);
    for (key, _) in env::vars_os() {
        if let Some(key) = key.to_str()
            && leaks_from_outer_build(key)
        {
            cmd.env_remove(key);
        }
    }
    let output = cmd.output().unwrap_or_else(|e| {
        panic!(
            "cannot run {} to build guest-examples: {e}",
            Path::new(&cargo).display()
        )
    });
    if !output.status.success() {
        // Cargo shows a failing build script's output, so the child's errors appear in full.
        println!("--- stdout of the guest-examples build ---");
        println!("{}", String::from_utf8_lossy(&output.stdout));
        println!("--- stderr of the guest-examples build ---");
        println!("{}", String::from_utf8_lossy(&output.stderr));
        panic!(
            "building guest-examples failed ({}): see its output above. To reproduce: \
             cd guest-examples && cargo build --release --locked --target {TARGET} \
             (if only Cargo.lock is stale, run it once without --locked and commit the lockfile)",
            output.status
        );
    }
}

/// Whether an environment variable describes the outer build and must not reach the child
/// cargo. Kept: `CARGO_HOME` and the registry, network and terminal settings, the jobserver
/// (`CARGO_MAKEFLAGS`), `RUSTUP_*`, `RUSTC` (the same compiler as the outer build), `PATH`.
fn leaks_from_outer_build(key: &str) -> bool {
    const KEEP_PREFIXES: &[&str] = &[
        "CARGO_HOME",
        "CARGO_MAKEFLAGS",
        "CARGO_NET_",
        "CARGO_HTTP_",
        "CARGO_REGISTRY_",
        "CARGO_REGISTRIES_",
        "CARGO_TERM_",
    ];
    const DROP: &[&str] = &[
        "CARGO",
        "RUSTFLAGS",
        "RUSTDOCFLAGS",
        "RUSTDOC",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTC_LINKER",
        // Set by cargo for build scripts; the child sets its own for its build scripts.
        "OUT_DIR",
        "TARGET",
        "HOST",
        "NUM_JOBS",
        "OPT_LEVEL",
        "DEBUG",
        "PROFILE",
    ];
    (key.starts_with("CARGO_") && !KEEP_PREFIXES.iter().any(|p| key.starts_with(p)))
        || DROP.contains(&key)
}

fn export_path(name: &str, path: &Path) {
    let path = path
        .to_str()
        .unwrap_or_else(|| panic!("OUT_DIR path {} is not UTF-8", path.display()));
    println!("cargo:rustc-env=WASMPICKLE_ARTIFACT_{name}={path}");
}

fn watch(path: &Path) {
    println!("cargo:rerun-if-changed={}", path.display());
}

/// Watches everything under `dir` except build output (`target`) and hidden entries (`.git`,
/// editor files), so that adding, changing or deleting a source file rebuilds.
///
/// `dir` itself is not watched: cargo checks a watched directory by scanning it recursively,
/// which for `guest-examples/` would include the `target` dir the child build writes, and the
/// script would run on every build. Subdirectories are watched (a new file changes their
/// listing); a new top-level guest also changes `guest-examples/Cargo.toml`.
fn watch_tree(dir: &Path) {
    let entries =
        fs::read_dir(dir).unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()));
    for entry in entries {
        let entry = entry.unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()));
        let name = entry.file_name();
        if name == "target" || name.to_string_lossy().starts_with('.') {
            continue;
        }
        let path = entry.path();
        match entry.file_type() {
            Ok(t) if t.is_dir() => {
                watch(&path);
                watch_tree(&path);
            }
            _ => watch(&path),
        }
    }
}

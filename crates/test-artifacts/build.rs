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
//!
//! # Path independence
//!
//! A module's hash must not depend on where it was built, but rustc writes the paths of the
//! source files it compiles into panic locations (`Location::caller`, `file!()`). Cargo passes
//! the sources of workspace members relative to the workspace root (`math/src/lib.rs`), but
//! path dependencies outside it (the SDK under `crates/`) and registry crates (under
//! `CARGO_HOME`) as absolute paths. So the child build gets `--remap-path-prefix` for the
//! repository root (`/wasmpickle`) and for `CARGO_HOME` (`/cargo`); the standard library's
//! paths are already `/rustc/<commit>/...`. The flags are the same for every child build, so
//! that they share compiled dependencies instead of rebuilding them.
//!
//! That removes every absolute path, but is not enough on its own for *another checkout* of
//! this repository to build identical modules: cargo mixes the absolute path of a path
//! dependency that lies outside the workspace into its `-C metadata` (rust-lang/cargo#7645,
//! #13586), which changes symbol hashes, which changes the order LLVM emits generic
//! instantiations in, and so the code section. Guests whose SDK comes from a registry, or that
//! share a workspace with it, do not have that problem. `MATH_ELSEWHERE` is `math` built from
//! a copy of the guest workspace in another directory, against the same SDK checkout: it shows
//! that the guest crate itself hashes the same wherever it is built.
//!
//! # Variants
//!
//! `guest-examples/versioned` is built three times, with `WASMPICKLE_VERSIONED_VARIANT` set to
//! `a`, `b` and `c` (an environment variable rather than a cargo feature, which would change
//! every symbol: see that crate's docs). The variants are one cargo unit rebuilt with another
//! input, and a `cdylib` has no hash in its file name either, so the variants (and `math`
//! built elsewhere) overwrite each other's output in the shared target dir; each build
//! therefore deletes that output first, so cargo cannot take another variant's file for a
//! fresh one, and its result is copied away before the next build.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::{env, fs};

/// The Rust guests built once: (constant in lib.rs, file cargo writes).
const GUESTS: &[(&str, &str)] = &[
    ("MATH", "math.wasm"),
    ("FAULTY", "faulty.wasm"),
    ("FAULTY_IMPORT", "faulty_import.wasm"),
    ("TWINS", "twins.wasm"),
];

/// The builds of `guest-examples/versioned`: (constant in lib.rs, value of
/// `WASMPICKLE_VERSIONED_VARIANT`, file in `OUT_DIR`).
const VERSIONED: &[(&str, &str, &str)] = &[
    ("VERSIONED_A", "a", "versioned_a.wasm"),
    ("VERSIONED_B", "b", "versioned_b.wasm"),
    ("VERSIONED_C", "c", "versioned_c.wasm"),
];

/// The hand-written modules: (constant in lib.rs, file in guest-examples/wat).
const WAT: &[(&str, &str)] = &[("WAT_ADD", "add.wat")];

const TARGET: &str = "wasm32-unknown-unknown";

fn main() {
    let manifest_dir = PathBuf::from(env_var("CARGO_MANIFEST_DIR"));
    // `parent` rather than `..`: the root is used as a path prefix, so it must be spelled the
    // way cargo spells the paths it passes to rustc (normalized, symlinks not resolved).
    let repo = manifest_dir
        .parent()
        .and_then(Path::parent)
        .expect("crates/test-artifacts has a grandparent")
        .to_path_buf();
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

    let target_dir = guests.join("target");
    let built = target_dir.join(TARGET).join("release");
    let flags = rustflags(&repo);
    // Builds of the variants overwrite each other's output between a build and its copy, so
    // two build scripts (of outer builds with different target dirs, say an IDE's) must not
    // interleave. The lock is released when `main` returns.
    fs::create_dir_all(&target_dir)
        .unwrap_or_else(|e| panic!("cannot create {}: {e}", target_dir.display()));
    let lock_path = target_dir.join("wasmpickle-test-artifacts.lock");
    let lock = fs::File::create(&lock_path)
        .unwrap_or_else(|e| panic!("cannot create {}: {e}", lock_path.display()));
    lock.lock()
        .unwrap_or_else(|e| panic!("cannot lock {}: {e}", lock_path.display()));
    // `math` shares its output file with the copy built elsewhere below.
    remove_output(&built, "math.wasm");
    build_guests(
        &guests,
        &target_dir,
        &flags,
        &["--workspace", "--exclude", "versioned"],
    );
    for (name, file) in GUESTS {
        copy_out(&built.join(file), &out_dir.join(file), name);
    }

    for (name, variant, file) in VERSIONED {
        remove_output(&built, "versioned.wasm");
        build_guests_with(
            &guests,
            &target_dir,
            &flags,
            &["-p", "versioned"],
            &[("WASMPICKLE_VERSIONED_VARIANT", variant)],
        );
        copy_out(&built.join("versioned.wasm"), &out_dir.join(file), name);
    }

    let elsewhere = out_dir.join("elsewhere").join("guest-examples");
    stage_elsewhere(&guests, &repo, &elsewhere);
    remove_output(&built, "math.wasm");
    build_guests(&elsewhere, &target_dir, &flags, &["-p", "math"]);
    copy_out(
        &built.join("math.wasm"),
        &out_dir.join("math_elsewhere.wasm"),
        "MATH_ELSEWHERE",
    );
    // Leave no file of the copy's to pass for the real `math` in the next build.
    remove_output(&built, "math.wasm");

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

/// The rustflags of every child build: remap the absolute paths rustc would otherwise write
/// into panic locations (see the module docs). When several prefixes match, rustc applies the
/// last, so the repository (which might live under `CARGO_HOME`, as a git dependency) comes
/// after `CARGO_HOME`.
fn rustflags(repo: &Path) -> OsString {
    let cargo_home = env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| env::home_dir().map(|home| home.join(".cargo")));
    let mut remaps: Vec<(PathBuf, &str)> = Vec::new();
    if let Some(cargo_home) = cargo_home {
        remaps.push((cargo_home, "/cargo"));
    }
    remaps.push((repo.to_path_buf(), "/wasmpickle"));
    // The same root with symlinks resolved, in case a tool hands rustc that spelling.
    if let Ok(real) = fs::canonicalize(repo)
        && real != repo
    {
        remaps.push((real, "/wasmpickle"));
    }
    let mut flags = OsString::new();
    for (from, to) in remaps {
        if !flags.is_empty() {
            flags.push("\x1f");
        }
        flags.push("--remap-path-prefix=");
        flags.push(from.as_os_str());
        flags.push("=");
        flags.push(to);
    }
    flags
}

/// Runs `cargo build --release --locked --target wasm32-unknown-unknown` with `args` in the
/// guest workspace `dir`, with `target_dir` as its target dir.
fn build_guests(dir: &Path, target_dir: &Path, rustflags: &OsString, args: &[&str]) {
    build_guests_with(dir, target_dir, rustflags, args, &[]);
}

/// [`build_guests`] with more environment variables for the child.
fn build_guests_with(
    dir: &Path,
    target_dir: &Path,
    rustflags: &OsString,
    args: &[&str],
    vars: &[(&str, &str)],
) {
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(&cargo);
    cmd.args(["build", "--release", "--locked", "--target", TARGET])
        .args(args)
        .current_dir(dir);
    for (key, _) in env::vars_os() {
        if let Some(key) = key.to_str()
            && leaks_from_outer_build(key)
        {
            cmd.env_remove(key);
        }
    }
    // Set after the scrub, which removes every inherited CARGO_ variable.
    cmd.env("CARGO_TARGET_DIR", target_dir)
        .env("CARGO_ENCODED_RUSTFLAGS", rustflags)
        .envs(vars.iter().copied());
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
            "building guest-examples failed ({}) in {}: see its output above. To reproduce: \
             cd guest-examples && cargo build --release --locked --target {TARGET} {} \
             (if only Cargo.lock is stale, run it once without --locked and commit the lockfile)",
            output.status,
            dir.display(),
            args.join(" ")
        );
    }
}

/// Deletes a `cdylib` that several builds write (see the module docs), both the copy in the
/// profile dir and the one in `deps`.
fn remove_output(built: &Path, file: &str) {
    for path in [built.join(file), built.join("deps").join(file)] {
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => panic!("cannot remove {}: {e}", path.display()),
        }
    }
}

fn copy_out(built: &Path, dest: &Path, name: &str) {
    fs::copy(built, dest)
        .unwrap_or_else(|e| panic!("cannot copy {} to {}: {e}", built.display(), dest.display()));
    export_path(name, dest);
}

/// Copies the guest workspace (manifests, lockfile and every member's sources) to `dest`,
/// pointing its SDK dependencies at this checkout's `crates/` (see the module docs for why).
/// Files are written only when they change, so cargo sees the copy as up to date.
fn stage_elsewhere(guests: &Path, repo: &Path, dest: &Path) {
    let manifest = fs::read_to_string(guests.join("Cargo.toml"))
        .unwrap_or_else(|e| panic!("cannot read guest-examples/Cargo.toml: {e}"));
    let crates = repo.join("crates");
    let crates = crates
        .to_str()
        .unwrap_or_else(|| panic!("{} is not UTF-8", crates.display()))
        .replace('\\', "\\\\")
        .replace('"', "\\\"");
    let relocated = manifest.replace("path = \"../crates/", &format!("path = \"{crates}/"));
    assert!(
        relocated != manifest,
        "guest-examples/Cargo.toml no longer names the SDK as `path = \"../crates/...\"`: \
         update stage_elsewhere in crates/test-artifacts/build.rs"
    );
    write_if_changed(&dest.join("Cargo.toml"), relocated.as_bytes());
    copy_tree(guests, dest, true);
}

/// Copies the files under `from` to `to`, skipping build output and hidden entries, and at the
/// top level the manifest (written by the caller) and the hand-written `wat/`.
fn copy_tree(from: &Path, to: &Path, top: bool) {
    let entries =
        fs::read_dir(from).unwrap_or_else(|e| panic!("cannot list {}: {e}", from.display()));
    for entry in entries {
        let entry = entry.unwrap_or_else(|e| panic!("cannot list {}: {e}", from.display()));
        let name = entry.file_name();
        let skip = name == "target"
            || name.to_string_lossy().starts_with('.')
            || (top && (name == "Cargo.toml" || name == "wat"));
        if skip {
            continue;
        }
        let path = entry.path();
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            copy_tree(&path, &to.join(&name), false);
        } else {
            let bytes =
                fs::read(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
            write_if_changed(&to.join(&name), &bytes);
        }
    }
}

fn write_if_changed(path: &Path, bytes: &[u8]) {
    if fs::read(path).is_ok_and(|old| old == bytes) {
        return;
    }
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
    }
    fs::write(path, bytes).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
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

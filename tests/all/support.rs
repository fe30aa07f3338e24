//! Fixtures shared by the suite.

use std::sync::Arc;

use wasmpickle::{Code, Limits, Runtime, RuntimeConfig};

/// A minimal module following docs/abi.md: `echo` replies Ok with the args value, `env` replies
/// with the env value, and a handful of hostile exports.
pub(crate) const ABI_WAT: &str = r#"
(module
  (memory (export "memory") 1)
  (global $next (mut i32) (i32.const 1024))
  (func (export "wasmpickle_alloc") (param $len i32) (result i32)
    (local $p i32)
    global.get $next
    local.set $p
    global.get $next
    local.get $len
    i32.add
    global.set $next
    local.get $p)
  ;; Writes status 0 in front of the given region (which the host placed after one spare
  ;; byte it never uses: alloc starts at 1024, so ptr-1 is free) and returns it.
  (func $reply_ok (param $ptr i32) (param $len i32) (result i64)
    local.get $ptr
    i32.const 1
    i32.sub
    i32.const 0
    i32.store8
    local.get $ptr
    i32.const 1
    i32.sub
    i64.extend_i32_u
    i64.const 32
    i64.shl
    local.get $len
    i32.const 1
    i32.add
    i64.extend_i32_u
    i64.or)
  (func (export "echo") (param i32 i32 i32 i32) (result i64)
    local.get 2
    local.get 3
    call $reply_ok)
  (func (export "env") (param i32 i32 i32 i32) (result i64)
    local.get 0
    local.get 1
    call $reply_ok)
  (func (export "spin") (param i32 i32 i32 i32) (result i64)
    (loop $l (br $l))
    i64.const 0)
  (func (export "grow") (param i32 i32 i32 i32) (result i64)
    (loop $l
      i32.const 16
      memory.grow
      i32.const -1
      i32.ne
      br_if $l)
    unreachable)
  (func (export "oob") (param i32 i32 i32 i32) (result i64)
    i64.const 0x7fff000000000010)
  (func (export "trap") (param i32 i32 i32 i32) (result i64)
    i32.const 1
    i32.const 0
    i32.div_u
    drop
    i64.const 0)
  (func (export "not_pickled") (param i32) (result i32) local.get 0)
)
"#;

pub(crate) fn wat(src: &str) -> Vec<u8> {
    wat::parse_str(src).expect("test WAT parses")
}

pub(crate) fn abi_code() -> Code {
    Code::new(wat(ABI_WAT)).expect("the ABI fixture is valid")
}

pub(crate) fn runtime_with(limits: Limits) -> Runtime {
    Runtime::new(RuntimeConfig::new().limits(limits)).expect("runtime")
}

pub(crate) fn runtime() -> Runtime {
    runtime_with(Limits::default())
}

#[allow(dead_code)]
pub(crate) fn shared(bytes: &[u8]) -> Arc<[u8]> {
    Arc::from(bytes)
}

/// The `wasmpickle` binary, built once per test process.
///
/// Cargo builds only the test's own package before running it, so the CLI is built here with
/// the same cargo, profile and target directory as the running test (cargo releases its
/// build lock while tests run). Panics with cargo's output when the build fails.
pub(crate) fn cli_binary() -> &'static std::path::Path {
    static BINARY: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    BINARY.get_or_init(|| {
        // target/<profile>/deps/all-<hash>
        let exe = std::env::current_exe().expect("the test executable's path");
        let profile_dir = exe
            .parent()
            .and_then(std::path::Path::parent)
            .expect("the test executable lives in target/<profile>/deps");
        let target_dir = profile_dir.parent().expect("target/<profile> has a parent");
        let profile = profile_dir
            .file_name()
            .and_then(|n| n.to_str())
            .expect("a UTF-8 profile directory name");
        let mut cargo = std::process::Command::new(env!("CARGO"));
        cargo
            .args(["build", "-p", "wasmpickle-cli", "--bin", "wasmpickle"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env("CARGO_TARGET_DIR", target_dir);
        match profile {
            "debug" => {}
            "release" => {
                cargo.arg("--release");
            }
            other => {
                cargo.args(["--profile", other]);
            }
        }
        let out = cargo.output().expect("cargo runs");
        assert!(
            out.status.success(),
            "building the wasmpickle CLI failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let binary = profile_dir.join(format!("wasmpickle{}", std::env::consts::EXE_SUFFIX));
        assert!(binary.is_file(), "cargo built no {}", binary.display());
        binary
    })
}

/// Runs the `wasmpickle` CLI with `args` and no stdin, with `RUST_LOG` set to `log` (unset
/// when `None`), and returns what it did.
#[allow(dead_code)]
pub(crate) fn wasmpickle_cli(args: &[&str], log: Option<&str>) -> std::process::Output {
    let mut cmd = std::process::Command::new(cli_binary());
    cmd.args(args)
        .env_remove("RUST_LOG")
        .stdin(std::process::Stdio::null());
    if let Some(filter) = log {
        cmd.env("RUST_LOG", filter);
    }
    cmd.output().expect("the CLI runs")
}

/// The environments of the example guests' exports (`guest-examples/math`, and `faulty`'s
/// `panic_now`), as the host side encodes them.
pub(crate) mod math {
    use serde::{Deserialize, Serialize};

    /// `scale`'s environment.
    #[derive(Clone, Debug, Serialize, Deserialize)]
    pub(crate) struct Scale {
        pub(crate) factor: f64,
    }

    /// `polynomial`'s environment.
    #[derive(Clone, Debug, Serialize, Deserialize)]
    pub(crate) struct Poly {
        pub(crate) coeffs: Vec<f64>,
    }

    /// `word_counts`' environment.
    #[derive(Clone, Debug, Serialize, Deserialize)]
    pub(crate) struct WordCfg {
        pub(crate) lowercase: bool,
        pub(crate) min_len: u32,
    }

    /// `fold_bytes`' environment.
    #[derive(Clone, Debug, Serialize, Deserialize)]
    pub(crate) struct Fold {
        pub(crate) seed: u64,
        pub(crate) multiplier: u64,
    }

    /// `checked_div`'s environment.
    #[derive(Clone, Debug, Serialize, Deserialize)]
    pub(crate) struct Div {
        pub(crate) divisor: i64,
    }

    /// `panic_now`'s environment (`guest-examples/faulty`).
    #[derive(Clone, Debug, Serialize, Deserialize)]
    pub(crate) struct Msg {
        pub(crate) text: String,
    }
}

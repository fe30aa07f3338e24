//! The `wasmpickle` command line, process against process: a call packed by one process is
//! inspected and run by others, and the bytes the CLI writes are the bytes the library writes.
//!
//! Every failure test checks the exact `error[<kind>]` line `run` prints, because that line
//! is the interface scripts branch on.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde::Serialize;
use serde_json::{Value, json};
use wasmpickle::{CallLimits, Code};

use crate::support::*;

/// A scratch directory holding the ABI fixture as `abi.wasm`.
struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    fn new() -> Scratch {
        let dir = tempfile::tempdir().expect("a temporary directory");
        std::fs::write(dir.path().join("abi.wasm"), wat(ABI_WAT)).expect("write abi.wasm");
        Scratch { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn module(&self) -> PathBuf {
        self.path("abi.wasm")
    }

    fn write(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, bytes).expect("write a scratch file");
        path
    }

    /// `wasmpickle pack abi.wasm <args>`, returning the pickle written to stdout.
    fn pack(&self, args: &[&str]) -> Vec<u8> {
        let out = wasmpickle(&[&["pack", path_str(&self.module())], args].concat(), None);
        assert_success(&out);
        assert!(!out.stdout.is_empty());
        out.stdout
    }

    /// Packs a call and stores it under `name`.
    fn pack_to(&self, name: &str, args: &[&str]) -> PathBuf {
        let bytes = self.pack(args);
        self.write(name, &bytes)
    }
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("temporary paths are UTF-8")
}

fn command(args: &[&str]) -> Command {
    let mut cmd = Command::new(cli_binary());
    cmd.args(args).env_remove("RUST_LOG");
    cmd
}

/// Runs the CLI with `args`, feeding `stdin` (or nothing).
fn wasmpickle(args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut cmd = command(args);
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("the CLI starts");
    let mut input = child.stdin.take().expect("piped stdin");
    if let Some(bytes) = stdin {
        input.write_all(bytes).expect("write stdin");
    }
    drop(input);
    child.wait_with_output().expect("the CLI finishes")
}

fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).expect("stdout is UTF-8")
}

fn stderr(out: &Output) -> String {
    String::from_utf8(out.stderr.clone()).expect("stderr is UTF-8")
}

fn assert_success(out: &Output) {
    assert!(
        out.status.success(),
        "the CLI failed with {}:\n{}",
        out.status,
        stderr(out)
    );
}

/// Asserts that `run` failed with status 1 and exactly one stderr line
/// `error[<kind>]: <message>`, and returns the message.
fn assert_run_error(out: &Output, kind: &str) -> String {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(1), "stderr: {err}");
    assert!(out.stdout.is_empty(), "stdout: {}", stdout(out));
    assert_eq!(err.lines().count(), 1, "one line expected, got:\n{err}");
    let prefix = format!("error[{kind}]: ");
    let message = err
        .strip_prefix(&prefix)
        .unwrap_or_else(|| panic!("expected `{prefix}...`, got {err:?}"));
    assert!(!message.trim().is_empty());
    message.trim_end().to_owned()
}

fn run_json(args: &[&str], stdin: Option<&[u8]>) -> Value {
    let out = wasmpickle(&[&["run"], args].concat(), stdin);
    assert_success(&out);
    let text = stdout(&out);
    assert_eq!(
        text.lines().count(),
        1,
        "one line of JSON expected: {text:?}"
    );
    serde_json::from_str(&text).expect("run prints JSON")
}

#[test]
fn a_call_packed_by_one_process_runs_in_another() {
    let s = Scratch::new();
    let pickle = s.pack_to(
        "echo.wpk",
        &[
            "--export",
            "echo",
            "--env",
            r#""captured""#,
            "--args",
            r#"[1, "two", 3.5]"#,
        ],
    );
    assert_eq!(run_json(&[path_str(&pickle)], None), json!([1, "two", 3.5]));

    let env = s.pack_to(
        "env.wpk",
        &[
            "--export",
            "env",
            "--env",
            r#"{"factor": 2.5, "tags": ["a", "b"]}"#,
        ],
    );
    assert_eq!(
        run_json(&[path_str(&env)], None),
        json!({"factor": 2.5, "tags": ["a", "b"]})
    );
}

#[test]
fn env_and_args_can_come_from_files_and_pack_can_write_a_file() {
    let s = Scratch::new();
    let env = s.write("env.json", br#"{"k": [1, 2, 3]}"#);
    let args = s.write("args.json", br#"[true, null]"#);
    let out_path = s.path("call.wpk");
    let out = wasmpickle(
        &[
            "pack",
            path_str(&s.module()),
            "-e",
            "echo",
            "--env-file",
            path_str(&env),
            "--args-file",
            path_str(&args),
            "-o",
            path_str(&out_path),
        ],
        None,
    );
    assert_success(&out);
    assert!(out.stdout.is_empty(), "-o writes nothing to stdout");
    assert_eq!(run_json(&[path_str(&out_path)], None), json!([true, null]));
    // The same call with the JSON inline is the same pickle.
    let inline = s.pack(&[
        "-e",
        "echo",
        "--env",
        r#"{"k":[1,2,3]}"#,
        "--args",
        "[true,null]",
    ]);
    assert_eq!(std::fs::read(&out_path).unwrap(), inline);
}

#[test]
fn cli_pickles_are_byte_identical_to_library_pickles() {
    #[derive(Serialize)]
    struct Scale {
        factor: f64,
        label: String,
    }
    let s = Scratch::new();
    let code = abi_code();

    // Environment as a struct, arguments as a tuple.
    let lib = code
        .closure(
            "echo",
            &Scale {
                factor: 2.5,
                label: "x".into(),
            },
        )
        .unwrap()
        .call(&(1u8, "two", 3.5, -7i64, vec![1u32, 2]))
        .unwrap();
    let cli = s.pack(&[
        "--export",
        "echo",
        "--env",
        r#"{"label": "x", "factor": 2.5}"#,
        "--args",
        r#"[1, "two", 3.5, -7, [1, 2]]"#,
    ]);
    assert_eq!(cli, lib.to_bytes());

    // No environment and no arguments: nil and nil, as `function(..).call(&())`.
    let lib = code.function("env").unwrap().call(&()).unwrap();
    assert_eq!(s.pack(&["--export", "env"]), lib.to_bytes());
    assert_eq!(
        s.pack(&["--export", "env", "--env", "null", "--args", "[]"]),
        lib.to_bytes()
    );

    // Limits and by-reference code.
    let lib = code
        .closure("echo", &[3u8, 4])
        .unwrap()
        .call(&("s",))
        .unwrap()
        .with_limits(
            CallLimits::new()
                .with_fuel(1000)
                .with_deadline_ms(50)
                .with_max_memory(1 << 20)
                .with_max_table_elements(10),
        )
        .by_reference();
    let cli = s.pack(&[
        "--export",
        "echo",
        "--env",
        "[3, 4]",
        "--args",
        r#"["s"]"#,
        "--fuel",
        "1000",
        "--deadline-ms",
        "50",
        "--max-memory",
        "1048576",
        "--max-table-elements",
        "10",
        "--by-ref",
    ]);
    assert_eq!(cli, lib.to_bytes());
}

#[test]
fn run_reads_the_pickle_from_stdin() {
    let s = Scratch::new();
    let pickle = s.pack(&["--export", "echo", "--args", r#"["from stdin"]"#]);
    assert_eq!(run_json(&[], Some(&pickle)), json!(["from stdin"]));
    assert_eq!(run_json(&["-"], Some(&pickle)), json!(["from stdin"]));
}

#[test]
fn by_reference_pickles_run_with_code_and_fail_without() {
    let s = Scratch::new();
    let pickle = s.pack_to(
        "ref.wpk",
        &["--export", "echo", "--args", "[42]", "--by-ref"],
    );
    let inline = s.pack(&["--export", "echo", "--args", "[42]"]);
    assert!(std::fs::read(&pickle).unwrap().len() < inline.len());

    let out = wasmpickle(&["run", path_str(&pickle)], None);
    let message = assert_run_error(&out, "code-not-found");
    assert!(
        message.contains(&abi_code().hash().to_string()),
        "the message names the hash: {message}"
    );

    // A module with another hash does not help.
    let other = s.write(
        "other.wasm",
        &wat(r#"(module (memory (export "memory") 1))"#),
    );
    let out = wasmpickle(
        &["run", path_str(&pickle), "--code", path_str(&other)],
        None,
    );
    assert_run_error(&out, "code-not-found");

    let result = run_json(
        &[
            path_str(&pickle),
            "--code",
            path_str(&other),
            "--code",
            path_str(&s.module()),
        ],
        None,
    );
    assert_eq!(result, json!([42]));
}

#[test]
fn run_fuel_flag_caps_the_call() {
    let s = Scratch::new();
    let pickle = s.pack_to("spin.wpk", &["--export", "spin"]);
    let out = wasmpickle(&["run", path_str(&pickle), "--fuel", "1000"], None);
    let message = assert_run_error(&out, "out-of-fuel");
    assert!(message.contains("1000"), "{message}");
}

#[test]
fn a_packed_fuel_request_is_honoured() {
    let s = Scratch::new();
    let pickle = s.pack_to("spin.wpk", &["--export", "spin", "--fuel", "5000"]);
    let out = wasmpickle(&["run", path_str(&pickle)], None);
    let message = assert_run_error(&out, "out-of-fuel");
    assert!(message.contains("5000"), "{message}");
}

#[test]
fn run_deadline_flag_stops_a_call_with_plenty_of_fuel() {
    let s = Scratch::new();
    let pickle = s.pack_to("spin.wpk", &["--export", "spin"]);
    let out = wasmpickle(
        &[
            "run",
            path_str(&pickle),
            "--fuel",
            &u64::MAX.to_string(),
            "--deadline-ms",
            "50",
        ],
        None,
    );
    assert_run_error(&out, "deadline");
}

#[test]
fn run_memory_flag_caps_growth() {
    let s = Scratch::new();
    let pickle = s.pack_to("grow.wpk", &["--export", "grow"]);
    let out = wasmpickle(&["run", path_str(&pickle), "--max-memory", "4194304"], None);
    assert_run_error(&out, "memory-limit");
}

#[test]
fn a_trap_is_one_line_and_verbose_adds_the_backtrace() {
    let s = Scratch::new();
    let pickle = s.pack_to("trap.wpk", &["--export", "trap"]);
    let out = wasmpickle(&["run", path_str(&pickle)], None);
    assert_run_error(&out, "trap");

    let out = wasmpickle(&["run", "-v", path_str(&pickle)], None);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    let first = err
        .lines()
        .find(|l| l.starts_with("error["))
        .expect("the summary line");
    assert!(first.starts_with("error[trap]: "), "{err}");
    assert!(err.contains("wasm backtrace"), "{err}");
    assert!(err.lines().count() > 1, "{err}");
}

#[test]
fn abi_violation_and_missing_export_have_their_kinds() {
    let s = Scratch::new();
    let oob = s.pack_to("oob.wpk", &["--export", "oob"]);
    assert_run_error(&wasmpickle(&["run", path_str(&oob)], None), "abi-violation");

    // A pickle may name an export the module lacks: pack refuses to write one, so make it
    // with the library.
    let code = abi_code();
    let closure = wasmpickle::Closure::from_parts(code.code_ref(), "nope", vec![0xc0]).unwrap();
    let pickle = s.write("nope.wpk", &closure.call(&()).unwrap().to_bytes());
    let message = assert_run_error(
        &wasmpickle(&["run", path_str(&pickle)], None),
        "missing-export",
    );
    assert!(message.contains("nope"), "{message}");
}

#[test]
fn broken_pickles_are_decode_and_version_errors() {
    let s = Scratch::new();
    let pickle = s.pack(&["--export", "echo", "--args", "[1]"]);

    let truncated = &pickle[..pickle.len() - 3];
    assert_run_error(&wasmpickle(&["run"], Some(truncated)), "decode");
    assert_run_error(&wasmpickle(&["run"], Some(b"")), "decode");
    assert_run_error(&wasmpickle(&["run"], Some(b"not a pickle")), "decode");

    let mut bumped = pickle.clone();
    bumped[5] += 1; // the low byte of the big-endian format version
    assert_run_error(&wasmpickle(&["run"], Some(&bumped)), "version");

    // A closure is not a call.
    let closure = abi_code().function("echo").unwrap().to_bytes();
    assert_run_error(&wasmpickle(&["run"], Some(&closure)), "decode");
}

#[test]
fn a_missing_input_file_is_an_io_error() {
    let s = Scratch::new();
    let out = wasmpickle(&["run", path_str(&s.path("absent.wpk"))], None);
    let message = assert_run_error(&out, "io");
    assert!(message.contains("absent.wpk"), "{message}");
}

#[test]
fn report_has_the_call_code_export_result_and_fuel() {
    let s = Scratch::new();
    let pickle = s.pack(&["--export", "echo", "--env", "7", "--args", r#"["r"]"#]);
    let report = run_json(&["--report"], Some(&pickle));
    let call = wasmpickle::Call::from_bytes(&pickle).unwrap();
    let fields: Vec<&str> = report
        .as_object()
        .expect("an object")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(fields.len(), 5, "{report}");
    assert_eq!(report["call"], json!(call.id().to_string()));
    assert_eq!(report["code"], json!(abi_code().hash().to_string()));
    assert_eq!(report["export"], json!("echo"));
    assert_eq!(report["result"], json!(["r"]));
    assert!(report["fuel_used"].as_u64().unwrap() > 0, "{report}");

    // The fuel is what the library measures for the same call.
    let fuel = runtime().run(&call).unwrap().fuel_used();
    assert_eq!(report["fuel_used"], json!(fuel));
}

#[test]
fn ten_processes_give_one_answer() {
    let s = Scratch::new();
    let pickle = s.pack_to(
        "det.wpk",
        &[
            "--export",
            "echo",
            "--env",
            r#"{"b": 2, "a": 1}"#,
            "--args",
            r#"[1.5, "x", {"z": [1, 2]}]"#,
        ],
    );
    let outputs: Vec<String> = (0..10)
        .map(|_| {
            let out = wasmpickle(&["run", "--report", path_str(&pickle)], None);
            assert_success(&out);
            stdout(&out)
        })
        .collect();
    let report: Value = serde_json::from_str(&outputs[0]).unwrap();
    assert_eq!(report["result"], json!([1.5, "x", {"z": [1, 2]}]));
    for out in &outputs[1..] {
        assert_eq!(
            out, &outputs[0],
            "every process reports the same call, result and fuel"
        );
    }
}

#[test]
fn inspect_shows_hash_export_env_args_and_limits() {
    let s = Scratch::new();
    let pickle = s.pack_to(
        "echo.wpk",
        &[
            "--export",
            "echo",
            "--env",
            r#"{"factor": 2.5}"#,
            "--args",
            r#"[4.0, "four"]"#,
            "--fuel",
            "1234",
        ],
    );
    let hash = abi_code().hash().to_string();
    let call_id = wasmpickle::Call::from_bytes(&std::fs::read(&pickle).unwrap())
        .unwrap()
        .id()
        .to_string();

    let out = wasmpickle(&["inspect", path_str(&pickle)], None);
    assert_success(&out);
    let text = stdout(&out);
    for needle in [
        "kind       call",
        &format!("call id    {call_id}"),
        &format!("code       {hash} (inline, "),
        "export     echo (i32, i32, i32, i32) -> i64",
        r#"env        {"factor":2.5}"#,
        r#"args       [4.0,"four"]"#,
        "limits     fuel=1234",
        "wasmpickle_alloc",
        "not_pickled",
        "imports    none",
    ] {
        assert!(text.contains(needle), "{needle:?} missing from:\n{text}");
    }

    let out = wasmpickle(
        &["inspect", "--json", "-"],
        Some(&std::fs::read(&pickle).unwrap()),
    );
    assert_success(&out);
    let report: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(report["kind"], json!("call"));
    assert_eq!(report["format_version"], json!(1));
    assert_eq!(report["call_id"], json!(call_id));
    assert_eq!(
        report["size"],
        json!(std::fs::metadata(&pickle).unwrap().len())
    );
    assert_eq!(report["code"]["hash"], json!(hash));
    assert_eq!(report["code"]["inline"], json!(true));
    assert_eq!(report["code"]["module"], json!("inline"));
    assert_eq!(report["code"]["hash_matches"], json!(true));
    assert_eq!(report["export"]["name"], json!("echo"));
    assert_eq!(report["export"]["found"], json!(true));
    assert_eq!(
        report["export"]["signature"],
        json!("(i32, i32, i32, i32) -> i64")
    );
    assert_eq!(report["env"]["value"], json!({"factor": 2.5}));
    assert_eq!(report["args"]["value"], json!([4.0, "four"]));
    assert_eq!(report["limits"]["fuel"], json!(1234));
    assert_eq!(report["limits"]["deadline_ms"], Value::Null);
    let exports = report["code"]["exports"].as_array().unwrap();
    let echo = exports.iter().find(|e| e["name"] == "echo").unwrap();
    assert_eq!(echo["kind"], json!("func"));
    assert_eq!(echo["pickled"], json!(true));
    let memory = exports.iter().find(|e| e["name"] == "memory").unwrap();
    assert_eq!(memory["kind"], json!("memory"));
    assert_eq!(report["code"]["imports"], json!([]));
}

#[test]
fn inspect_a_by_reference_pickle_with_and_without_its_module() {
    let s = Scratch::new();
    let pickle = s.pack_to("ref.wpk", &["--export", "env", "--by-ref"]);

    let out = wasmpickle(&["inspect", "--json", path_str(&pickle)], None);
    assert_success(&out);
    let report: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(report["code"]["inline"], json!(false));
    assert_eq!(report["code"]["exports"], Value::Null);
    assert_eq!(report["export"]["found"], Value::Null);
    assert_eq!(report["env"]["value"], Value::Null);
    assert_eq!(report["env"]["omitted"], Value::Null);
    assert_eq!(report["args"]["size"], json!(1));

    let out = wasmpickle(
        &[
            "inspect",
            "--json",
            path_str(&pickle),
            "--code",
            path_str(&s.module()),
        ],
        None,
    );
    assert_success(&out);
    let report: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(report["code"]["module"], json!("file"));
    assert_eq!(report["export"]["found"], json!(true));

    let out = wasmpickle(&["inspect", path_str(&pickle)], None);
    assert_success(&out);
    assert!(stdout(&out).contains("(by reference)"), "{}", stdout(&out));
}

#[test]
fn inspect_shows_a_closure_pickle() {
    let s = Scratch::new();
    let closure = abi_code().closure("env", &json!({"k": 1})).unwrap();
    let path = s.write("closure.wpk", &closure.to_bytes());
    let out = wasmpickle(&["inspect", "--json", path_str(&path)], None);
    assert_success(&out);
    let report: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(report["kind"], json!("closure"));
    assert_eq!(report["call_id"], Value::Null);
    assert_eq!(report["args"], Value::Null);
    assert_eq!(report["env"]["value"], json!({"k": 1}));
}

#[test]
fn inspect_and_pack_errors_print_the_chain_and_exit_1() {
    let s = Scratch::new();
    let bad = s.write("bad.wpk", b"\xc1WPK\x00\x01\x02\x85");
    let out = wasmpickle(&["inspect", path_str(&bad)], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).starts_with("error: cannot decode the call: "),
        "{}",
        stderr(&out)
    );

    let out = wasmpickle(&["pack", path_str(&s.module()), "--export", "nope"], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("has no export `nope`"),
        "{}",
        stderr(&out)
    );
    assert!(out.stdout.is_empty());

    let out = wasmpickle(
        &[
            "pack",
            path_str(&s.module()),
            "--export",
            "echo",
            "--args",
            r#"{"x": 1}"#,
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("must be a JSON array"),
        "{}",
        stderr(&out)
    );

    let out = wasmpickle(
        &[
            "pack",
            path_str(&s.module()),
            "--export",
            "echo",
            "--env",
            "{",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).starts_with("error: --env is not valid JSON: "),
        "{}",
        stderr(&out)
    );

    let not_wasm = s.write("not.wasm", b"hello");
    let out = wasmpickle(&["pack", path_str(&not_wasm), "--export", "echo"], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("not.wasm"), "{}", stderr(&out));
}

#[test]
fn usage_errors_exit_2() {
    let s = Scratch::new();
    let module = s.module();
    let module = path_str(&module);
    for args in [
        &["pack", module][..],
        &[
            "pack",
            module,
            "-e",
            "echo",
            "--env",
            "1",
            "--env-file",
            "x.json",
        ],
        &["run", "--grant", "network"],
        &["run", "--fuel", "lots"],
        &["frobnicate"],
    ] {
        let out = wasmpickle(args, None);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
    }
}

#[test]
fn hash_prints_the_code_hash_and_pickled_exports() {
    let s = Scratch::new();
    let code = Code::from_file(s.module()).unwrap();
    let out = wasmpickle(&["hash", path_str(&s.module())], None);
    assert_success(&out);
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], code.hash().to_string());
    // Each export with its version (the module has no descriptions, so no signatures).
    let expected: Vec<String> = ["echo", "env", "spin", "grow", "oob", "trap"]
        .iter()
        .map(|name| format!("{name:<4}  {}", code.export_version(name).unwrap()))
        .collect();
    assert_eq!(&lines[1..], expected);

    let out = wasmpickle(&["hash", "--json", path_str(&s.module())], None);
    assert_success(&out);
    let report: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(report["hash"], json!(code.hash().to_string()));
    assert_eq!(
        report["exports"][0],
        json!({
            "name": "echo",
            "signature": null,
            "doc": null,
            "version": code.export_version("echo").unwrap().to_string()
        })
    );
}

#[test]
fn a_closed_stdout_ends_quietly() {
    let s = Scratch::new();
    let pickle = s.pack_to("echo.wpk", &["--export", "echo", "--args", "[1]"]);
    let module = s.module();
    let module = path_str(&module);
    for args in [
        &["inspect", path_str(&pickle)][..],
        &["inspect", "--json", path_str(&pickle)],
        &["run", path_str(&pickle)],
        &["hash", module],
        &["pack", module, "--export", "echo"],
    ] {
        // The reading end is closed before the CLI starts, so its first write fails.
        let (reader, writer) = std::io::pipe().expect("a pipe");
        drop(reader);
        let out = command(args)
            .stdin(Stdio::null())
            .stdout(writer)
            .stderr(Stdio::piped())
            .output()
            .expect("the CLI runs");
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", stderr(&out));
        assert_eq!(stderr(&out), "", "{args:?}");
    }
}

#[test]
fn verbose_logs_go_to_stderr_only() {
    let s = Scratch::new();
    let out = wasmpickle(
        &["-v", "pack", path_str(&s.module()), "--export", "echo"],
        None,
    );
    assert_success(&out);
    let call = wasmpickle::Call::from_bytes(&out.stdout).expect("stdout is only the pickle");
    let log = stderr(&out);
    assert!(log.contains(&call.id().to_string()), "{log}");
    assert!(log.contains(&abi_code().hash().to_string()), "{log}");
}

/// A module that logs through the `wasmpickle.log` grant, then returns nil.
const LOGGING_WAT: &str = r#"
(module
  (import "wasmpickle" "log" (func $log (param i32 i32)))
  (memory (export "memory") 1)
  ;; at 16: a reply (status 0, nil), then the 20-byte log line
  (data (i32.const 16) "\00\c0hello from the guest")
  (func (export "wasmpickle_alloc") (param i32) (result i32) i32.const 1024)
  (func (export "hello") (param i32 i32 i32 i32) (result i64)
    i32.const 18
    i32.const 20
    call $log
    i64.const 0x0000001000000002))
"#;

#[test]
fn imports_need_a_grant() {
    let s = Scratch::new();
    let module = s.write("logging.wasm", &wat(LOGGING_WAT));
    let out = wasmpickle(&["pack", path_str(&module), "--export", "hello"], None);
    assert_success(&out);
    let pickle = out.stdout;

    let message = assert_run_error(&wasmpickle(&["run"], Some(&pickle)), "forbidden-import");
    assert!(message.contains("wasmpickle.log"), "{message}");

    let out = wasmpickle(&["run", "--grant", "log"], Some(&pickle));
    assert_success(&out);
    assert_eq!(stdout(&out), "null\n");
    assert_eq!(stderr(&out), "", "guest logs are info, shown only with -v");

    let out = wasmpickle(&["-v", "run", "--grant", "log"], Some(&pickle));
    assert_success(&out);
    assert_eq!(stdout(&out), "null\n");
    assert!(
        stderr(&out).contains("hello from the guest"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn inspect_does_not_render_payloads_over_one_mib() {
    let s = Scratch::new();
    let big = format!("[\"{}\"]", "x".repeat(1 << 20));
    let args = s.write("big.json", big.as_bytes());
    let pickle = s.pack_to(
        "big.wpk",
        &[
            "--export",
            "echo",
            "--env",
            "1",
            "--args-file",
            path_str(&args),
        ],
    );
    let size = (1 << 20) + 1 + 5; // fixarray, str32 header, the string

    let out = wasmpickle(&["inspect", path_str(&pickle)], None);
    assert_success(&out);
    let text = stdout(&out);
    assert!(
        text.contains(&format!("args       <{size} bytes>")),
        "{}",
        &text[..600]
    );
    assert!(text.contains("env        1"), "{}", &text[..600]);

    let out = wasmpickle(&["inspect", "--json", path_str(&pickle)], None);
    assert_success(&out);
    let report: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(report["args"]["size"], json!(size));
    assert_eq!(report["args"]["value"], Value::Null);
    assert_eq!(report["args"]["omitted"], json!(format!("<{size} bytes>")));
    assert_eq!(report["env"]["value"], json!(1));
}

/// Every export of the `math` guest, packed by one process and run by another, against the
/// same function computed natively.
mod math {
    use std::collections::BTreeMap;
    use std::path::Path;

    use serde::Serialize;
    use serde_json::{Value, json};
    use wasmpickle::Code;

    use super::{assert_run_error, assert_success, path_str, run_json, wasmpickle};

    fn module() -> &'static Path {
        Path::new(wasmpickle_test_artifacts::MATH)
    }

    /// `wasmpickle pack math.wasm --export <export> --env <env> --args <args>`.
    fn pack(export: &str, env: &Value, args: &Value) -> Vec<u8> {
        let out = wasmpickle(
            &[
                "pack",
                path_str(module()),
                "--export",
                export,
                "--env",
                &env.to_string(),
                "--args",
                &args.to_string(),
            ],
            None,
        );
        assert_success(&out);
        out.stdout
    }

    fn run(pickle: &[u8]) -> Value {
        run_json(&[], Some(pickle))
    }

    #[test]
    fn scale() {
        #[derive(Serialize)]
        struct Scale {
            factor: f64,
        }
        for (factor, x) in [(2.5f64, 4.0f64), (-0.5, 3.0), (1e300, 1e10), (0.0, -1.0)] {
            let pickle = pack("scale", &json!({"factor": factor}), &json!([x]));
            let expected = factor * x;
            match run(&pickle) {
                // JSON has no infinity: the CLI prints null for it.
                Value::Null => assert!(!expected.is_finite()),
                v => assert_eq!(v.as_f64(), Some(expected), "{factor} * {x}"),
            }
            // The library writes the same bytes for the same call.
            let lib = Code::from_file(module())
                .unwrap()
                .closure("scale", &Scale { factor })
                .unwrap()
                .call(&(x,))
                .unwrap();
            assert_eq!(pickle, lib.to_bytes());
        }
    }

    #[test]
    fn polynomial() {
        let coeffs = [2.0, -3.0, 0.5, 1.0];
        for x in [0.0, 1.5, -2.25] {
            let pickle = pack("polynomial", &json!({"coeffs": coeffs}), &json!([x]));
            let expected = coeffs.iter().fold(0.0, |acc, &c| acc * x + c);
            assert_eq!(run(&pickle).as_f64(), Some(expected), "p({x})");
        }
        let empty = pack("polynomial", &json!({"coeffs": []}), &json!([3.0]));
        assert_eq!(run(&empty).as_f64(), Some(0.0));
    }

    #[test]
    fn word_counts() {
        let text = "The cat saw the Hat; the hat SAW a cat, é é!";
        for (lowercase, min_len) in [(true, 2u32), (false, 1), (true, 4)] {
            let pickle = pack(
                "word_counts",
                &json!({"lowercase": lowercase, "min_len": min_len}),
                &json!([text]),
            );
            let mut expected: BTreeMap<String, u32> = BTreeMap::new();
            for word in text.split(|c: char| !c.is_alphanumeric()) {
                if word.is_empty() || word.chars().count() < min_len as usize {
                    continue;
                }
                let word = if lowercase {
                    word.to_lowercase()
                } else {
                    word.to_owned()
                };
                *expected.entry(word).or_default() += 1;
            }
            assert_eq!(run(&pickle), json!(expected), "{lowercase} {min_len}");
        }
    }

    #[test]
    fn fold_bytes() {
        // FNV-1a; JSON has no byte strings, so the data travels as an array of numbers,
        // which the guest's `serde_bytes::ByteBuf` accepts as well as msgpack bin.
        let (seed, multiplier) = (0xcbf2_9ce4_8422_2325u64, 0x0100_0000_01b3u64);
        for data in [&b""[..], b"hi", b"wasmpickle"] {
            let pickle = pack(
                "fold_bytes",
                &json!({"seed": seed, "multiplier": multiplier}),
                &json!([data]),
            );
            let expected = data.iter().fold(seed, |acc, &b| {
                (acc ^ u64::from(b)).wrapping_mul(multiplier)
            });
            assert_eq!(run(&pickle), json!(expected), "{data:?}");
        }
    }

    #[test]
    fn checked_div() {
        for (divisor, x) in [(3i64, -7i64), (-2, 9), (1, i64::MIN)] {
            let pickle = pack("checked_div", &json!({"divisor": divisor}), &json!([x]));
            assert_eq!(run(&pickle), json!(x / divisor), "{x} / {divisor}");
        }
        for (divisor, x) in [(0i64, 7i64), (-1, i64::MIN)] {
            let pickle = pack("checked_div", &json!({"divisor": divisor}), &json!([x]));
            let out = wasmpickle(&["run"], Some(&pickle));
            let message = assert_run_error(&out, "guest-error");
            assert!(message.contains(&x.to_string()), "{message}");
        }
    }

    #[test]
    fn describe() {
        let pickle = pack("describe", &Value::Null, &json!([]));
        let text = run(&pickle);
        let text = text.as_str().expect("a string");
        assert!(
            text.starts_with("wasmpickle example guest `math`"),
            "{text}"
        );
        // Every export of the module is exercised by this suite.
        let code = Code::from_file(module()).unwrap();
        let pickled: Vec<&str> = code
            .exports()
            .iter()
            .filter(|e| e.pickled)
            .map(|e| e.name.as_str())
            .collect();
        assert_eq!(
            pickled,
            [
                "checked_div",
                "describe",
                "fold_bytes",
                "polynomial",
                "scale",
                "word_counts"
            ]
        );
    }
}

/// The SDK-free WAT guest and the hostile guests, across processes.
mod other_guests {
    use serde_json::{Value, json};

    use super::{assert_run_error, assert_success, run_json, wasmpickle};

    fn pack(module: &str, export: &str, env: &Value, args: &Value) -> Vec<u8> {
        let out = wasmpickle(
            &[
                "pack",
                module,
                "--export",
                export,
                "--env",
                &env.to_string(),
                "--args",
                &args.to_string(),
            ],
            None,
        );
        assert_success(&out);
        out.stdout
    }

    #[test]
    fn the_wat_guest_adds() {
        let pickle = pack(
            wasmpickle_test_artifacts::WAT_ADD,
            "add",
            &json!(40),
            &json!([2]),
        );
        assert_eq!(run_json(&[], Some(&pickle)), json!(42));
        let pickle = pack(
            wasmpickle_test_artifacts::WAT_ADD,
            "add",
            &json!(-1),
            &json!([2]),
        );
        assert_run_error(&wasmpickle(&["run"], Some(&pickle)), "bad-input");
    }

    #[test]
    fn hostile_guests_fail_with_their_kinds() {
        let faulty = wasmpickle_test_artifacts::FAULTY;
        let panic = pack(faulty, "panic_now", &json!({"text": "no more"}), &json!([]));
        let message = assert_run_error(&wasmpickle(&["run"], Some(&panic)), "guest-panic");
        assert!(
            message.contains("no more") && message.contains("faulty/src/lib.rs"),
            "{message}"
        );

        let bomb = pack(faulty, "memory_bomb", &Value::Null, &json!([]));
        let out = wasmpickle(&["run", "--max-memory", "8388608"], Some(&bomb));
        assert_run_error(&out, "memory-limit");

        let deep = pack(faulty, "recurse", &Value::Null, &json!([u64::MAX]));
        assert_run_error(&wasmpickle(&["run"], Some(&deep)), "trap");

        let import = pack(
            wasmpickle_test_artifacts::FAULTY_IMPORT,
            "read_file",
            &Value::Null,
            &json!(["/etc/hostname"]),
        );
        let message = assert_run_error(&wasmpickle(&["run"], Some(&import)), "forbidden-import");
        assert!(message.contains("env.read_host_file"), "{message}");
    }
}

/// `hash` versions, `seal`, `key` and signed pickles (`pack --key`, `run --key`,
/// `inspect --key`), process against process.
mod seal_and_keys {
    use std::path::{Path, PathBuf};

    use serde_json::{Value, json};
    use wasmpickle::format::{HEADER_LEN, PickleKind};
    use wasmpickle::{Call, Code, SigningKey, canonical_hash, seal_call, seal_closure};
    use wasmpickle_test_artifacts::{MATH, VERSIONED_A, VERSIONED_B, VERSIONED_C};
    use wasmtime::{Engine, Instance, Module, Store, TypedFunc};

    use super::{assert_run_error, assert_success, path_str, run_json, stderr, stdout, wasmpickle};

    fn scratch() -> tempfile::TempDir {
        tempfile::tempdir().expect("a temporary directory")
    }

    fn file(dir: &tempfile::TempDir, name: &str) -> PathBuf {
        dir.path().join(name)
    }

    /// `wasmpickle pack math.wasm --export scale --env {"factor": 2.5} --args [4.0] <extra>`.
    fn pack_scale(extra: &[&str]) -> Vec<u8> {
        let out = wasmpickle(
            &[
                &[
                    "pack",
                    MATH,
                    "--export",
                    "scale",
                    "--env",
                    r#"{"factor": 2.5}"#,
                    "--args",
                    "[4.0]",
                ],
                extra,
            ]
            .concat(),
            None,
        );
        assert_success(&out);
        out.stdout
    }

    /// `wasmpickle key new --id <id> -o <dir>/<id>.key`, returning the file.
    fn new_key(dir: &tempfile::TempDir, id: &str) -> PathBuf {
        let path = file(dir, &format!("{id}.key"));
        let out = wasmpickle(&["key", "new", "--id", id, "-o", path_str(&path)], None);
        assert_success(&out);
        assert!(out.stdout.is_empty(), "the secret goes to the file only");
        path
    }

    /// Writes `key` to `<dir>/<name>`, private as `key new` would make it.
    fn write_key(dir: &tempfile::TempDir, name: &str, key: &SigningKey) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let path = file(dir, name);
        std::fs::write(&path, key.to_text()).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        path
    }

    fn versions(path: &str) -> Value {
        let out = wasmpickle(&["hash", "--json", path], None);
        assert_success(&out);
        let report: Value = serde_json::from_str(&stdout(&out)).unwrap();
        report["exports"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| (e["name"].as_str().unwrap().to_owned(), e["version"].clone()))
            .collect::<serde_json::Map<_, _>>()
            .into()
    }

    #[test]
    fn hash_shows_versions_that_move_only_with_what_an_export_reaches() {
        let (a, b, c) = (
            versions(VERSIONED_A),
            versions(VERSIONED_B),
            versions(VERSIONED_C),
        );
        // `b` edits a helper only `uses_helper` reaches; `c` one only `uses_lonely` reaches.
        assert_eq!(a["standalone"], b["standalone"]);
        assert_eq!(a["standalone"], c["standalone"]);
        assert_ne!(a["uses_helper"], b["uses_helper"]);
        assert_eq!(a["uses_helper"], c["uses_helper"]);
        assert_eq!(a["uses_lonely"], b["uses_lonely"]);
        assert_ne!(a["uses_lonely"], c["uses_lonely"]);
        let code = Code::from_file(VERSIONED_A).unwrap();
        for export in ["standalone", "uses_helper", "uses_lonely"] {
            let version = code.export_version(export).unwrap().to_string();
            assert_eq!(a[export], json!(version));
        }

        // The text output: the module hash, then one line per export with its version and,
        // for the described math guest, the signature after it.
        let out = wasmpickle(&["hash", MATH], None);
        assert_success(&out);
        let text = stdout(&out);
        let math = Code::from_file(MATH).unwrap();
        let scale = text
            .lines()
            .find(|l| l.starts_with("scale "))
            .expect("a line for scale");
        let version = math.export_version("scale").unwrap().to_string();
        assert!(
            scale.contains(&format!("  {version}  scale(env: Scale, x: f64) -> f64")),
            "{scale}"
        );
    }

    /// Runs a sealed call the way an embedder without wasmpickle does, returning the reply.
    fn run_sealed(wasm: &[u8]) -> Vec<u8> {
        let engine = Engine::default();
        let module = Module::new(&engine, wasm).unwrap();
        let mut store = Store::new(&engine, ());
        let instance = Instance::new(&mut store, &module, &[]).unwrap();
        let entry: TypedFunc<(), i64> = instance
            .get_typed_func(&mut store, "wasmpickle_sealed")
            .unwrap();
        let packed = entry.call(&mut store, ()).unwrap() as u64;
        let memory = instance.get_memory(&mut store, "memory").unwrap();
        let (ptr, len) = ((packed >> 32) as usize, (packed & 0xffff_ffff) as usize);
        memory.data(&store)[ptr..ptr + len].to_vec()
    }

    #[test]
    fn seal_writes_a_module_plain_wasmtime_runs() {
        let dir = scratch();
        let pickle = pack_scale(&[]);
        let call = Call::from_bytes(&pickle).unwrap();
        let out_path = file(&dir, "scale.wasm");
        let out = wasmpickle(&["seal", "-", "-o", path_str(&out_path)], Some(&pickle));
        assert_success(&out);
        let sealed = std::fs::read(&out_path).unwrap();
        // stderr is the sealed module's hash, and the bytes are the library's.
        let hash = canonical_hash(&sealed).unwrap();
        assert_eq!(stderr(&out).trim(), hash.to_string());
        let math = Code::from_file(MATH).unwrap();
        assert_eq!(sealed, seal_call(&math, &call).unwrap());

        let reply = run_sealed(&sealed);
        assert_eq!(reply[0], 0, "status ok");
        let y: f64 = wasmpickle::format::codec::from_msgpack(&reply[1..]).unwrap();
        assert_eq!(y, 10.0);
        assert_eq!(run_json(&[], Some(&pickle)), json!(10.0));

        // To stdout, and again: the same bytes.
        let out = wasmpickle(&["seal"], Some(&pickle));
        assert_success(&out);
        assert_eq!(out.stdout, sealed);
    }

    #[test]
    fn seal_resolves_by_hash_pickles_and_seals_closures() {
        let dir = scratch();
        let store = file(&dir, "store");
        let by_ref = pack_scale(&["--by-ref", "--store", path_str(&store)]);
        let math = Code::from_file(MATH).unwrap();
        let expected = seal_call(&math, &Call::from_bytes(&by_ref).unwrap()).unwrap();
        for flags in [vec!["--code", MATH], vec!["--store", path_str(&store)]] {
            let out = wasmpickle(&[&["seal"], &flags[..]].concat(), Some(&by_ref));
            assert_success(&out);
            assert_eq!(out.stdout, expected, "{flags:?}");
        }
        let out = wasmpickle(&["seal"], Some(&by_ref));
        assert_eq!(out.status.code(), Some(1));
        assert!(out.stdout.is_empty());
        assert!(
            stderr(&out).contains("not in the pickle"),
            "{}",
            stderr(&out)
        );

        // A closure pickle (the library writes those) seals to the library's closure module.
        let closure = math.closure("scale", &json!({"factor": 3.0})).unwrap();
        let out = wasmpickle(&["seal"], Some(&closure.to_bytes()));
        assert_success(&out);
        assert_eq!(out.stdout, seal_closure(&math, &closure).unwrap());
    }

    fn mode(path: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn key_new_writes_a_private_key_and_keeps_existing_ones() {
        let dir = scratch();
        let path = new_key(&dir, "ci");
        assert_eq!(mode(&path), 0o600);
        let text = std::fs::read_to_string(&path).unwrap();
        let key: SigningKey = text.parse().unwrap();
        assert_eq!(key.id(), "ci");
        assert_eq!(
            text.trim().len(),
            "ci:".len() + 64,
            "a 32-byte secret in hex"
        );

        let out = wasmpickle(&["key", "new", "--id", "ci", "-o", path_str(&path)], None);
        assert_eq!(out.status.code(), Some(1));
        assert!(stderr(&out).contains("--force"), "{}", stderr(&out));
        assert_eq!(std::fs::read_to_string(&path).unwrap(), text, "left alone");

        // --force replaces it with a fresh secret, still private even if the file was not.
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o644))
            .unwrap();
        let out = wasmpickle(
            &["key", "new", "--id", "ci", "-o", path_str(&path), "--force"],
            None,
        );
        assert_success(&out);
        assert_ne!(std::fs::read_to_string(&path).unwrap(), text);
        assert_eq!(mode(&path), 0o600);

        // Without -o, the key goes to stdout; a bad id is refused.
        let out = wasmpickle(&["key", "new", "--id", "dev"], None);
        assert_success(&out);
        assert!(stdout(&out).parse::<SigningKey>().is_ok());
        let out = wasmpickle(&["key", "new", "--id", "a:b"], None);
        assert_eq!(out.status.code(), Some(1));
    }

    fn artifacts(cache: &Path) -> usize {
        let Ok(dirs) = std::fs::read_dir(cache) else {
            return 0;
        };
        dirs.flatten()
            .filter(|d| d.path().is_dir())
            .flat_map(|d| std::fs::read_dir(d.path()).unwrap().flatten())
            .filter(|f| f.path().extension().is_some_and(|e| e == "cwasm"))
            .count()
    }

    #[test]
    fn signed_pickles_run_with_their_key_and_nothing_else_does() {
        let dir = scratch();
        let key = new_key(&dir, "ci");
        let signed = pack_scale(&["--key", path_str(&key)]);
        assert_eq!(signed[6], PickleKind::SignedCall as u8, "a signed pickle");
        let unsigned = pack_scale(&[]);
        let cache = file(&dir, "cache");
        let strict = ["run", "--key", path_str(&key), "--cache", path_str(&cache)];

        // Another key with the same id, and a key with another id.
        let forger = write_key(
            &dir,
            "forger.key",
            &SigningKey::new("ci", &[0x42; 32]).unwrap(),
        );
        let other = new_key(&dir, "other");

        let mut flipped = signed.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 0x01;
        // The body: a map, "key", "ci", "hmac", a bin header, then the 32-byte MAC.
        let mut flipped_mac = signed.clone();
        flipped_mac[HEADER_LEN + 1 + 4 + 3 + 5 + 2 + 17] ^= 0x80;

        for (what, pickle, keys) in [
            ("unsigned", &unsigned, vec![path_str(&key)]),
            ("another secret", &signed, vec![path_str(&forger)]),
            ("another key id", &signed, vec![path_str(&other)]),
            ("a flipped byte", &flipped, vec![path_str(&key)]),
            ("a flipped MAC byte", &flipped_mac, vec![path_str(&key)]),
        ] {
            let args: Vec<&str> = keys
                .iter()
                .flat_map(|k| ["--key", *k])
                .chain(["--cache", path_str(&cache), "--code", MATH])
                .collect();
            let out = wasmpickle(&[&["run"], &args[..]].concat(), Some(pickle));
            assert!(
                stderr(&out).starts_with("error[signature]: "),
                "{what}: {}",
                stderr(&out)
            );
            assert_run_error(&out, "signature");
        }
        assert_eq!(artifacts(&cache), 0, "a refused pickle compiles nothing");

        // The key vouches for the signed pickle; it also runs with several keys, and without
        // any (unchecked).
        assert_eq!(run_json(&strict[1..], Some(&signed)), json!(10.0));
        assert_eq!(artifacts(&cache), 1, "the signed call compiled");
        let both = ["--key", path_str(&other), "--key", path_str(&key)];
        assert_eq!(run_json(&both, Some(&signed)), json!(10.0));
        assert_eq!(run_json(&[], Some(&signed)), json!(10.0));

        // A key file that holds no key is a usage error.
        let junk = file(&dir, "junk.key");
        std::fs::write(&junk, "not a key").unwrap();
        let out = wasmpickle(&["run", "--key", path_str(&junk)], Some(&signed));
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
        assert!(
            // After a warning that others may read the file.
            stderr(&out)
                .lines()
                .last()
                .is_some_and(|l| l.starts_with("error[usage]: key file")),
            "{}",
            stderr(&out)
        );
    }

    #[test]
    fn inspect_shows_the_signer_and_checks_only_with_a_key() {
        let dir = scratch();
        let key = new_key(&dir, "ci");
        // The same id, another secret.
        let other = write_key(
            &dir,
            "other.key",
            &SigningKey::new("ci", &[0x42; 32]).unwrap(),
        );
        let signed = file(&dir, "signed.wpk");
        std::fs::write(&signed, pack_scale(&["--key", path_str(&key)])).unwrap();
        let call = Call::from_bytes(&pack_scale(&[])).unwrap();

        let inspect = |extra: &[&str]| -> Value {
            let out = wasmpickle(
                &[&["inspect", "--json", path_str(&signed)], extra].concat(),
                None,
            );
            assert_success(&out);
            serde_json::from_str(&stdout(&out)).unwrap()
        };
        let report = inspect(&[]);
        assert_eq!(report["kind"], json!("call"));
        assert_eq!(report["call_id"], json!(call.id().to_string()));
        assert_eq!(report["env"]["value"], json!({"factor": 2.5}));
        assert_eq!(
            report["signature"],
            json!({"key_id": "ci", "verified": null, "error": null})
        );
        let report = inspect(&["--key", path_str(&key)]);
        assert_eq!(report["signature"]["verified"], json!(true));
        let report = inspect(&["--key", path_str(&other)]);
        assert_eq!(report["signature"]["verified"], json!(false));
        assert!(
            report["signature"]["error"]
                .as_str()
                .is_some_and(|e| e.contains("does not match")),
            "{report}"
        );

        let out = wasmpickle(&["inspect", path_str(&signed)], None);
        assert_success(&out);
        assert!(
            stdout(&out).contains("signed     by key `ci`, not checked"),
            "{}",
            stdout(&out)
        );
        let out = wasmpickle(
            &["inspect", path_str(&signed), "--key", path_str(&key)],
            None,
        );
        assert!(stdout(&out).contains("signed     by key `ci`, verified"));
        let out = wasmpickle(
            &["inspect", path_str(&signed), "--key", path_str(&other)],
            None,
        );
        assert!(stdout(&out).contains("signed     by key `ci`, NOT verified: "));
        // An unsigned pickle has no signature to show.
        let out = wasmpickle(&["inspect", "--json", "-"], Some(&call.to_bytes()));
        let report: Value = serde_json::from_str(&stdout(&out)).unwrap();
        assert_eq!(report["signature"], Value::Null);
    }

    #[test]
    fn seal_accepts_signed_pickles() {
        let dir = scratch();
        let key = new_key(&dir, "ci");
        let other = new_key(&dir, "other");
        let signed = pack_scale(&["--key", path_str(&key)]);
        let unsigned = pack_scale(&[]);
        let expected = {
            let out = wasmpickle(&["seal"], Some(&unsigned));
            assert_success(&out);
            out.stdout
        };
        for args in [vec![], vec!["--key", path_str(&key)]] {
            let out = wasmpickle(&[&["seal"], &args[..]].concat(), Some(&signed));
            assert_success(&out);
            assert_eq!(out.stdout, expected, "{args:?}");
        }
        for (pickle, k) in [(&signed, &other), (&unsigned, &key)] {
            let out = wasmpickle(&["seal", "--key", path_str(k)], Some(pickle));
            assert_eq!(out.status.code(), Some(1));
            assert!(out.stdout.is_empty());
            assert!(stderr(&out).contains("signature"), "{}", stderr(&out));
        }
    }
}

//! `wasmpickle run`: run a pickled call in the sandbox and print its result as JSON.
//!
//! Unlike the other subcommands, `run` does not print an `anyhow` chain on failure: its
//! callers are scripts and supervisors that branch on *what* failed, so a failure is one line,
//! `error[<kind>]: <message>`, with the library's stable kind name. The details a human wants
//! (the WebAssembly backtrace, the causes) follow on later lines only with `-v`.

use std::io;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use clap::{Args, ValueEnum};
use serde::Serialize;
use wasmpickle::format::{DecodeLimits, Header, PickleKind};
use wasmpickle::{Call, Code, DirStore, Grant, Runtime, RuntimeConfig, SignedCall};

use crate::json;
use crate::key::{self, KeyFileError};
use crate::limits::LimitArgs;
use crate::memo::{Around, MemoArgs};
use crate::stdio;

const EXIT_CODES: &str = "\
Exit status:
  0  the call returned; its result is on stdout
  1  the call failed; stderr has one line `error[<kind>]: <message>`, where <kind> is one of
     decode, version, code-not-found, store-corrupt, hash-mismatch, invalid-module,
     forbidden-import,
     missing-export, wrong-signature, bad-input, guest-error, guest-panic, trap,
     out-of-fuel, deadline, memory-limit, abi-violation, signature, io, runtime,
     not-memoizable (with --memo, a call that can reach a granted clock)
  2  usage error (bad flags, a --key file that holds no key, or no pickle given and stdin
     is a terminal)";

/// Run a pickled call in the sandbox and print its result as one line of JSON.
///
/// The pickle is read from PICKLE, or from stdin when PICKLE is `-` or left out. Limit flags
/// set the runtime's caps (defaults otherwise); limits the pickle requests apply only below
/// them. A call that names its code by hash runs only when a `--code` module has that hash,
/// the `--store` has it, or the `--cache` has it compiled. Nothing is granted to the module
/// unless `--grant` says so.
///
/// With `--key`, only calls signed with one of the keys run: an unsigned pickle, one signed
/// with another key, and one changed after signing fail with `error[signature]` before
/// anything is compiled. Without `--key`, a signed pickle runs like an unsigned one, its
/// signature unchecked.
#[derive(Args, Debug)]
#[command(after_help = EXIT_CODES)]
pub(crate) struct Run {
    /// The call pickle [default: stdin]
    #[arg(value_name = "PICKLE|-")]
    pickle: Option<PathBuf>,

    /// A module the call may name by hash (repeatable); the one whose hash the call names is
    /// loaded, so by-reference pickles resolve
    #[arg(long, value_name = "MODULE.wasm")]
    code: Vec<PathBuf>,

    /// A directory code store (see `wasmpickle store`): by-hash pickles resolve through it,
    /// and inline code is put into it, so later pickles can name it by hash
    #[arg(long, value_name = "DIR")]
    store: Option<PathBuf>,

    /// Keep compiled modules in DIR, and load them from there instead of compiling
    /// [default: no cache]
    ///
    /// The next `run` of the same module then starts in about a millisecond instead of
    /// compiling for 100 ms or more. Only artifacts this cache wrote itself are loaded.
    /// There is no default location: a cache holds native code, so where it lives is the
    /// caller's choice, and a one-shot command leaves no files behind unless asked to.
    #[arg(long, value_name = "DIR")]
    cache: Option<PathBuf>,

    /// Let the module import a host function (repeatable): `log` (deterministic) or `clock`
    /// (not deterministic)
    #[arg(long, value_enum, value_name = "GRANT")]
    grant: Vec<GrantArg>,

    /// Run only calls signed with the key in FILE (repeatable: any of the keys will do; see
    /// `wasmpickle key new`)
    #[arg(long, value_name = "FILE")]
    key: Vec<PathBuf>,

    /// Print {"call", "code", "export", "result", "fuel_used"} instead of the bare result
    /// (and "memo": "hit" or "miss" with --memo)
    #[arg(long)]
    report: bool,

    /// Append the call and its result to FILE, a journal `wasmpickle replay` verifies (its
    /// modules go to --store, or to FILE.store)
    #[arg(long, value_name = "FILE")]
    journal: Option<PathBuf>,

    #[command(flatten)]
    memo: MemoArgs,

    // Last, because its help heading applies to the flags after it too.
    #[command(flatten)]
    limits: LimitArgs,
}

/// The `--grant` values.
#[derive(Clone, Copy, Debug, ValueEnum)]
enum GrantArg {
    /// `wasmpickle.log(ptr, len)`: guest log lines on stderr (shown with -v)
    Log,
    /// `wasmpickle.clock_ms() -> i64`: wall-clock milliseconds
    Clock,
}

impl From<GrantArg> for Grant {
    fn from(g: GrantArg) -> Grant {
        match g {
            GrantArg::Log => Grant::Log,
            GrantArg::Clock => Grant::Clock,
        }
    }
}

/// What `--report` prints. Field order is the output's order.
#[derive(Serialize)]
struct Report<'a> {
    call: String,
    code: String,
    export: &'a str,
    result: serde_json::Value,
    fuel_used: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    memo: Option<&'static str>,
}

impl Run {
    /// Runs the call and prints its result.
    ///
    /// # Errors
    ///
    /// A [`Failure`] naming the kind of what went wrong.
    pub(crate) fn run(&self) -> Result<(), Failure> {
        let path = self.pickle.as_deref();
        if stdio::is_stdin(path) && stdio::stdin_is_terminal() {
            return Err(Failure::usage(
                "no pickle given: pass a PICKLE file or pipe one to stdin",
            ));
        }
        let bytes = stdio::read_input(path).map_err(Failure::io)?;
        let keys = match self.key.is_empty() {
            true => None,
            false => Some(key::keyring(&self.key).map_err(Failure::key)?),
        };
        // With keys, the signature is checked before anything else is decoded, and before any
        // `--code` module below is compiled.
        let call = match &keys {
            Some(keys) => keys.verify_bytes(&bytes, &DecodeLimits::default()),
            None => decode(&bytes),
        }
        .map_err(wasmpickle::Error::from)?;

        let mut config = RuntimeConfig::new();
        // One call per process: one pooling slot reserves the least address space.
        config
            .limits(self.limits.runtime_limits())
            .max_concurrent_calls(1);
        for grant in &self.grant {
            config.grant((*grant).into());
        }
        if let Some(keys) = &keys {
            config.require_signatures(keys.clone());
        }
        let store: Option<Arc<dyn wasmpickle::CodeStore>> = match &self.store {
            Some(dir) => Some(Arc::new(DirStore::open(dir)?)),
            None => None,
        };
        if let Some(store) = &store {
            config.code_store(store.clone());
        }
        if let Some(dir) = &self.cache {
            config.compiled_cache(dir);
        }
        let runtime = Runtime::new(&config)?;
        let mut called_code = None;
        for path in &self.code {
            let code = Code::from_file(path).map_err(|e| {
                let file = path.display();
                match e.kind() {
                    wasmpickle::ErrorKind::Io => Failure::from(e),
                    _ => Failure::from(e).prefixed(&format!("module {file}")),
                }
            })?;
            // Only the module the call names is compiled: compiling the others would cost
            // time, and one the sandbox refuses (say, for its imports) would fail a call
            // that never uses it.
            if code.hash() == call.code().hash() {
                runtime.load(&code)?;
                called_code = Some(code);
            } else {
                tracing::debug!(module = %path.display(), code = %code.hash(), "not the called module");
            }
        }

        let started = Instant::now();
        let around = Around {
            memo: &self.memo,
            journal: self.journal.as_deref(),
            store,
            code: called_code.as_ref(),
        };
        let (outcome, memo_hit) = around.run(&runtime, &call, || match &keys {
            // The runtime checks the signature again itself: it is the one that enforces it.
            Some(_) => runtime.run_bytes(&bytes),
            None => runtime.run(&call),
        })?;
        tracing::info!(
            call = %call.id(),
            code = %call.code().hash(),
            export = call.export(),
            fuel_used = outcome.fuel_used(),
            ms = started.elapsed().as_secs_f64() * 1e3,
            "call returned"
        );
        let result = json::from_msgpack(outcome.value()).map_err(|e| Failure {
            kind: "decode",
            message: format!("the result is not one MessagePack value: {e:#}"),
            details: Vec::new(),
            exit: ExitCode::FAILURE,
        })?;
        let line = if self.report {
            serde_json::to_string(&Report {
                call: call.id().to_string(),
                code: call.code().hash().to_string(),
                export: call.export(),
                result,
                fuel_used: outcome.fuel_used(),
                memo: self
                    .memo
                    .memo
                    .is_some()
                    .then_some(if memo_hit { "hit" } else { "miss" }),
            })
        } else {
            serde_json::to_string(&result)
        }
        .expect("a serde_json::Value always serializes");
        match stdio::write_stdout(format!("{line}\n").as_bytes()) {
            Err(e) if e.kind() != io::ErrorKind::BrokenPipe => Err(Failure::io(e)),
            _ => Ok(()),
        }
    }
}

/// Why `run` failed, ready to print as `error[<kind>]: <message>`.
#[derive(Debug)]
pub(crate) struct Failure {
    kind: &'static str,
    message: String,
    details: Vec<String>,
    exit: ExitCode,
}

impl Failure {
    fn usage(message: &str) -> Failure {
        Failure {
            kind: "usage",
            message: message.to_owned(),
            details: Vec::new(),
            exit: ExitCode::from(2),
        }
    }

    fn key(e: KeyFileError) -> Failure {
        match e {
            KeyFileError::Io(e) => Failure::io(e),
            KeyFileError::Malformed(message) => Failure::usage(&message),
        }
    }

    fn io(e: io::Error) -> Failure {
        Failure {
            kind: "io",
            message: e.to_string(),
            details: Vec::new(),
            exit: ExitCode::FAILURE,
        }
    }

    fn prefixed(mut self, context: &str) -> Failure {
        self.message = format!("{context}: {}", self.message);
        self
    }

    /// Prints the failure on stderr and returns the exit status: the one-line summary, then
    /// with `-v` the backtrace and causes.
    pub(crate) fn report(&self, verbose: u8) -> ExitCode {
        let mut text = format!("error[{}]: {}\n", self.kind, one_line(&self.message));
        if verbose > 0 {
            for detail in &self.details {
                text.push_str(detail);
                if !detail.ends_with('\n') {
                    text.push('\n');
                }
            }
        }
        // Nothing sensible is left to do if stderr itself is gone.
        let _ = io::Write::write_all(&mut io::stderr().lock(), text.as_bytes());
        self.exit
    }
}

impl From<wasmpickle::Error> for Failure {
    fn from(e: wasmpickle::Error) -> Failure {
        let mut details = Vec::new();
        if let Some(bt) = e.wasm_backtrace() {
            details.push(format!("wasm backtrace:\n{bt}"));
        }
        if let Some(fuel) = e.fuel_used() {
            details.push(format!("fuel used: {fuel}"));
        }
        Failure {
            kind: e.kind().as_str(),
            // The whole chain on the one line: each level says only its own part.
            message: stdio::chain(&e).join(": "),
            details,
            exit: ExitCode::FAILURE,
        }
    }
}

/// A call pickle, signed or not, decoded without checking any signature.
fn decode(bytes: &[u8]) -> Result<Call, wasmpickle::format::Error> {
    match Header::read(bytes)?.kind {
        PickleKind::SignedCall => Call::from_bytes(SignedCall::from_bytes(bytes)?.call_bytes()),
        _ => Call::from_bytes(bytes),
    }
}

/// The message on one line: guest messages may hold newlines, and the summary line must stay
/// a single line for scripts that read it.
fn one_line(message: &str) -> String {
    message.trim_end().replace('\r', "\\r").replace('\n', "\\n")
}

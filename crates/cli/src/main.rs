//! `wasmpickle`: pack, inspect and run pickled WebAssembly calls from the command line.
//!
//! A pickled call is a WebAssembly module (addressed by the SHA-256 of its code), the name of
//! one export, a captured environment and the arguments, both MessagePack. This tool is the
//! shell's way in and out of that format:
//!
//! * `wasmpickle pack MODULE.wasm --export NAME --env JSON --args JSON` writes a call pickle,
//!   converting JSON to the same canonical MessagePack the Rust API writes, so the CLI and the
//!   library produce the same bytes (and the same call id) for the same call;
//! * `wasmpickle inspect PICKLE` shows what a pickle holds without running anything;
//! * `wasmpickle run PICKLE` runs a call in the sandbox and prints its result as JSON;
//! * `wasmpickle hash MODULE.wasm` prints a module's code hash and its pickled exports with
//!   their versions;
//! * `wasmpickle seal PICKLE -o OUT.wasm` turns a call or closure into one standalone module
//!   that plain `wasmtime run --invoke wasmpickle_sealed` runs;
//! * `wasmpickle key new --id NAME -o FILE` makes a signing key, which `pack --key` signs
//!   with and `run --key` requires;
//! * `wasmpickle store put|get|ls|verify|gc --store DIR` manages a directory code store, which
//!   `pack --store` fills and `run --store` resolves by-hash pickles through;
//! * `wasmpickle map MODULE.wasm --export NAME --args-file ARGS.jsonl` calls a closure once per
//!   line on a pool of worker processes and prints the results as JSON lines, in order;
//! * `wasmpickle worker` serves calls to pools and clients over stdin/stdout, a Unix socket or
//!   TCP (`docs/protocol.md`);
//! * `wasmpickle memo stats|clear --memo PATH|URL` looks at and clears the memo that
//!   `run --memo` answers calls from;
//! * `wasmpickle replay JOURNAL` runs the calls `run --journal` recorded again and verifies
//!   their results bit for bit.
//!
//! ```text
//! $ wasmpickle pack math.wasm --export scale --env '{"factor": 2.5}' --args '[4.0]' > call.wpk
//! $ wasmpickle run call.wpk
//! 10.0
//! ```
//!
//! # Output and errors
//!
//! Standard output carries only machine output (a pickle, JSON, a hash), so commands compose
//! in pipes; logs go to standard error through `tracing` (warnings by default, `-v` info,
//! `-vv` debug, `RUST_LOG` overrides). `pack`, `inspect`, `hash`, `seal`, `key` and `store`
//! report a failure as `error: <message>: <cause>: ...` and exit with status 1 (as does
//! `store verify` when it finds damage). `run` reports one line,
//! `error[<kind>]: <message>`, whose kind is the library's stable
//! [`ErrorKind::as_str`](wasmpickle::ErrorKind::as_str), so scripts can branch on it; `-v`
//! adds the WebAssembly backtrace and the causes on the lines after it. Usage errors exit
//! with status 2. A reader that closes the pipe early (`| head`) ends the command quietly
//! with status 0.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::{ArgAction, Parser, Subcommand};
use tracing_subscriber::EnvFilter;

mod hash;
mod inspect;
mod json;
mod key;
mod limits;
mod map;
mod memo;
mod pack;
mod replay;
mod run;
mod seal;
mod stdio;
mod store;
mod worker;

/// Pickle functions by value as WebAssembly: pack, inspect and run pickled calls.
#[derive(Debug, Parser)]
#[command(name = "wasmpickle", version, propagate_version = true)]
struct Cli {
    /// More log output on stderr: -v info, -vv debug, -vvv everything (RUST_LOG overrides)
    #[arg(short, long, action = ArgAction::Count, global = true)]
    verbose: u8,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    Pack(pack::Pack),
    Inspect(inspect::Inspect),
    Run(run::Run),
    Hash(hash::Hash),
    Seal(seal::Seal),
    Key(key::Key),
    Store(store::Store),
    Map(map::Map),
    Worker(worker::Worker),
    Memo(memo::MemoCommand),
    Replay(replay::Replay),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose);
    match &cli.command {
        Command::Pack(cmd) => report(cmd.run()),
        Command::Inspect(cmd) => report(cmd.run()),
        Command::Hash(cmd) => report(cmd.run()),
        Command::Seal(cmd) => report(cmd.run()),
        Command::Key(cmd) => report(cmd.run()),
        Command::Store(cmd) => match cmd.run() {
            Ok(status) => status,
            Err(err) => report(Err(err)),
        },
        Command::Worker(cmd) => report(cmd.run()),
        Command::Memo(cmd) => report(cmd.run()),
        // Replay's statuses: 0 all matched, 1 a divergence, 2 could not verify.
        Command::Replay(cmd) => match cmd.run() {
            Ok(status) => status,
            Err(err) if stdio::is_broken_pipe(&err) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("error: {err:#}");
                ExitCode::from(2)
            }
        },
        Command::Map(cmd) => match cmd.run() {
            Ok(status) => status,
            Err(err) => report(Err(err)),
        },
        Command::Run(cmd) => match cmd.run() {
            Ok(()) => ExitCode::SUCCESS,
            Err(failure) => failure.report(cli.verbose),
        },
    }
}

/// Logs go to stderr so that stdout stays machine output.
///
/// `-v` and `-vv` raise the level of wasmpickle's own logs only (the `wasmpickle` target
/// covers this tool, the library and guest log lines); wasmtime and cranelift log every
/// compiler pass at debug level, which would drown them. `-vvv` opens everything up.
fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "warn,wasmpickle=info",
        2 => "warn,wasmpickle=debug",
        _ => "debug,wasmpickle=trace",
    };
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|spec| EnvFilter::try_new(spec).ok())
        .unwrap_or_else(|| EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

/// Prints an error of `pack`, `inspect` or `hash` with its chain of causes.
fn report(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) if stdio::is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

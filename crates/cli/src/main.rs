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
//! * `wasmpickle hash MODULE.wasm` prints a module's code hash and pickled exports.
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
//! `-vv` debug, `RUST_LOG` overrides). `pack`, `inspect` and `hash` report a failure as
//! `error: <message>: <cause>: ...` and exit with status 1. `run` reports one line,
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
mod limits;
mod pack;
mod run;
mod stdio;

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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose);
    match &cli.command {
        Command::Pack(cmd) => report(cmd.run()),
        Command::Inspect(cmd) => report(cmd.run()),
        Command::Hash(cmd) => report(cmd.run()),
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

//! `wasmpickle map`: call a closure once per line of a JSON-lines file, on a pool of worker
//! processes, and print the results as JSON lines in input order.
//!
//! Every input line is checked before any worker starts, so a typo on line 90,000 costs an
//! error message, not 89,999 calls. The calls then run through a [`Pool`]; results are
//! written as soon as every earlier one is, so output streams and memory stays bounded by
//! the calls in flight. A progress bar is drawn on standard error only when it is a terminal.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufWriter, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, bail};
use clap::Args;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::{Value, json};
use wasmpickle::{Call, Closure};
use wasmpickle_pool::{Address, Pool, PoolConfig};

use crate::json;
use crate::limits::LimitArgs;
use crate::memo::{MapAround, MemoArgs};
use crate::stdio;
use crate::worker::GrantArg;

/// Calls submitted ahead of the output; bounds memory for any input size.
const AHEAD: usize = 4096;

/// Call a closure once per line of a JSON-lines file, on a pool of workers.
///
/// Each non-blank line of ARGS.jsonl holds one call's arguments as a JSON array (like `pack
/// --args`). Results are printed one JSON value per line, in input order; a call that failed
/// prints `{"error": {"kind": ..., "message": ..., "call": ...}}` on its line instead, and the
/// command then exits with status 1. The module crosses to each worker once. Limit flags are
/// requests carried by every call (and part of its id, as with `pack`); local workers are
/// started with the same values as caps.
///
/// With `--memo`, calls the memo answers are not sent to the pool, and returned values that
/// come back are stored (failures are not, whatever `--memo-errors` says); the memo assumes
/// remote workers run with at least the caps given here. With `--journal`, every call is
/// recorded in input order (record N is the call of line N, counting non-blank lines from
/// 0), memo hits included, its modules in FILE.store.
#[derive(Args, Debug)]
pub(crate) struct Map {
    /// The WebAssembly module
    #[arg(value_name = "MODULE.wasm")]
    module: PathBuf,

    /// The export to call
    #[arg(short, long, value_name = "NAME")]
    export: String,

    /// The captured environment as JSON [default: null]
    #[arg(
        long,
        value_name = "JSON",
        group = "env_source",
        allow_hyphen_values = true
    )]
    env: Option<String>,

    /// Read the environment as JSON from a file
    #[arg(long, value_name = "FILE.json", group = "env_source")]
    env_file: Option<PathBuf>,

    /// The arguments, one JSON array per line (`-` for stdin)
    #[arg(long, value_name = "ARGS.jsonl")]
    args_file: PathBuf,

    /// Write the results here instead of stdout
    #[arg(short, long, value_name = "OUT.jsonl")]
    output: Option<PathBuf>,

    /// Worker processes to start [default: the number of cores]
    #[arg(short = 'j', long, value_name = "N")]
    workers: Option<usize>,

    /// The program to run as `PROGRAM worker` [default: $WASMPICKLE_WORKER, else this
    /// executable]
    #[arg(long, value_name = "PATH")]
    worker_program: Option<PathBuf>,

    /// A running worker to use as well (repeatable): unix:PATH or tcp:HOST:PORT
    #[arg(long, value_name = "ADDRESS")]
    remote: Vec<String>,

    /// The key in FILE for remote workers' handshake (see `wasmpickle key new`). Required for
    /// tcp: remotes
    #[arg(long, value_name = "FILE")]
    key: Option<PathBuf>,

    /// Times a call is retried after its worker died or hung [default: 2]
    #[arg(long, value_name = "N")]
    retries: Option<u32>,

    /// Local workers keep compiled modules in DIR (see `run --cache`)
    #[arg(long, value_name = "DIR")]
    cache: Option<PathBuf>,

    /// Let modules import a host function on local workers (repeatable): `log` or `clock`
    #[arg(long, value_enum, value_name = "GRANT")]
    grant: Vec<GrantArg>,

    /// Print per-worker statistics on stderr at the end: calls, code bytes sent, restarts
    #[arg(long)]
    stats: bool,

    /// Append every call and its result to FILE, a journal `wasmpickle replay` verifies
    #[arg(long, value_name = "FILE")]
    journal: Option<PathBuf>,

    #[command(flatten)]
    memo: MemoArgs,

    // Last, because its help heading applies to the flags after it too.
    #[command(flatten)]
    limits: LimitArgs,
}

impl Map {
    /// Runs the map and writes the results.
    ///
    /// # Errors
    ///
    /// Bad input (module, environment, an arguments line), a pool that cannot start, or
    /// output that cannot be written. Failed calls are not errors here: they are reported on
    /// their lines, and the exit status is 1.
    pub(crate) fn run(&self) -> anyhow::Result<ExitCode> {
        let code = stdio::load_module(&self.module)?;
        code.check_export(&self.export)?;
        let env = crate::pack::read_json(self.env.as_deref(), self.env_file.as_deref(), "--env")?
            .unwrap_or(Value::Null);
        let closure = Closure::from_parts(code.code_ref(), &self.export, json::to_msgpack(&env)?)?;
        let limits = self.limits.call_limits();
        let calls = self.read_calls(&closure.by_reference(), &limits)?;

        let mut config = PoolConfig::new();
        if let Some(n) = self.workers {
            config.workers(n);
        }
        config.worker_program(match &self.worker_program {
            Some(p) => p.clone(),
            None => match std::env::var_os("WASMPICKLE_WORKER").filter(|p| !p.is_empty()) {
                Some(p) => PathBuf::from(p),
                None => std::env::current_exe().context("cannot find this executable")?,
            },
        });
        config.limits(self.limits.runtime_limits());
        if let Some(n) = self.retries {
            config.retries(n);
        }
        if let Some(dir) = &self.cache {
            config.worker_arg("--cache").worker_arg(dir);
        }
        for grant in &self.grant {
            config.worker_arg("--grant").worker_arg(grant.flag());
        }
        let key = match &self.key {
            Some(path) => Some(crate::key::load_any(path)?),
            None => None,
        };
        for remote in &self.remote {
            let address: Address = remote.parse()?;
            if address.requires_key() && key.is_none() {
                bail!("remote worker {address} is TCP and needs --key");
            }
            config.remote(address, key.clone());
        }
        let mut around = MapAround::new(
            &self.memo,
            self.journal.as_deref(),
            &code,
            self.limits.runtime_limits(),
            self.grant.iter().map(|g| (*g).into()).collect(),
        )?;
        let pool = Pool::new(&config).context("cannot start the pool")?;
        pool.load(&code);

        let started = Instant::now();
        let mut out: Box<dyn Write> = match &self.output {
            Some(path) => Box::new(BufWriter::new(
                File::create(path).with_context(|| format!("cannot create {}", path.display()))?,
            )),
            None => Box::new(BufWriter::new(io::stdout().lock())),
        };
        let progress = if io::stderr().is_terminal() {
            let bar = ProgressBar::with_draw_target(
                Some(calls.len() as u64),
                ProgressDrawTarget::stderr(),
            );
            bar.set_style(
                ProgressStyle::with_template(
                    "{bar:40} {pos}/{len} calls  {per_sec}  eta {eta}  {msg}",
                )
                .expect("the template is valid"),
            );
            bar
        } else {
            ProgressBar::hidden()
        };

        let total = calls.len();
        let mut failed = 0usize;
        let mut pending = calls.iter().enumerate();
        let mut batch = pool.batch();
        let mut done: BTreeMap<usize, String> = BTreeMap::new();
        let mut next_out = 0usize;
        // The input index of each call sent to the pool, by its index in the batch.
        let mut dispatched: Vec<usize> = Vec::new();
        loop {
            while batch.outstanding() < AHEAD {
                match pending.next() {
                    Some((input, call)) => match around.before(input, call)? {
                        Some(Ok(outcome)) => {
                            let line = match json::from_msgpack(outcome.value()) {
                                Ok(value) => value.to_string(),
                                Err(e) => {
                                    failed += 1;
                                    error_line("decode", &format!("{e:#}"), None)
                                }
                            };
                            done.insert(input, line);
                            progress.inc(1);
                        }
                        Some(Err(e)) => {
                            failed += 1;
                            let message = stdio::chain(&e).join(": ");
                            let id = call.id().to_string();
                            done.insert(input, error_line(e.kind().as_str(), &message, Some(id)));
                            progress.inc(1);
                        }
                        None => {
                            batch.submit(call);
                            dispatched.push(input);
                        }
                    },
                    None => break,
                }
            }
            let Some((index, result)) = batch.next() else {
                break;
            };
            let index = dispatched[index];
            around.after(index, &calls[index], &result)?;
            let line = match result {
                Ok(outcome) => match json::from_msgpack(outcome.value()) {
                    Ok(value) => value.to_string(),
                    Err(e) => {
                        failed += 1;
                        error_line("decode", &format!("{e:#}"), None)
                    }
                },
                Err(e) => {
                    failed += 1;
                    let kind = e
                        .remote_kind_name()
                        .map_or_else(|| e.kind().as_str().to_owned(), str::to_owned);
                    let message = stdio::chain(&e).join(": ");
                    error_line(&kind, &message, e.call_id().map(|id| id.to_string()))
                }
            };
            done.insert(index, line);
            progress.inc(1);
            if failed > 0 {
                progress.set_message(format!("{failed} failed"));
            }
            while let Some(line) = done.remove(&next_out) {
                writeln!(out, "{line}")?;
                next_out += 1;
            }
        }
        // Memo hits after the last call the pool answered.
        while let Some(line) = done.remove(&next_out) {
            writeln!(out, "{line}")?;
            next_out += 1;
        }
        around.finish()?;
        out.flush()?;
        progress.finish_and_clear();

        if self.stats {
            print_stats(&pool, total, started.elapsed());
        }
        if failed > 0 {
            eprintln!("error: {failed} of {total} calls failed");
            return Ok(ExitCode::FAILURE);
        }
        Ok(ExitCode::SUCCESS)
    }

    /// Every line of the arguments file as a call, checked before anything runs.
    fn read_calls(
        &self,
        closure: &Closure,
        limits: &wasmpickle::CallLimits,
    ) -> anyhow::Result<Vec<Call>> {
        let path = &self.args_file;
        let name = if stdio::is_stdin(Some(path)) {
            "stdin".to_owned()
        } else {
            path.display().to_string()
        };
        let bytes = stdio::read_input(Some(path))?;
        let text = String::from_utf8(bytes).with_context(|| format!("{name} is not UTF-8"))?;
        let mut calls = Vec::new();
        for (n, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let what = format!("line {} of {name}", n + 1);
            let args = json::parse(line, &what)?;
            let call = closure.call_raw(json::args_to_msgpack(&args, &what)?)?;
            calls.push(if limits.is_empty() {
                call
            } else {
                call.with_limits(*limits)
            });
        }
        Ok(calls)
    }
}

fn error_line(kind: &str, message: &str, call: Option<String>) -> String {
    let mut error = json!({"kind": kind, "message": message});
    if let Some(call) = call {
        error["call"] = Value::String(call);
    }
    json!({ "error": error }).to_string()
}

fn print_stats(pool: &Pool, total: usize, elapsed: std::time::Duration) {
    let mut text = String::new();
    for w in pool.workers() {
        let who = match (&w.address, w.pid) {
            (Some(address), _) => format!("worker {} at {address}", w.index),
            (None, Some(pid)) => format!("worker {} (pid {pid})", w.index),
            (None, None) => format!("worker {}", w.index),
        };
        text.push_str(&format!(
            "{who}: {} call{}, {} code bytes sent in {} module{}, {} restart{}\n",
            w.calls,
            if w.calls == 1 { "" } else { "s" },
            w.code_bytes_sent,
            w.modules_sent,
            if w.modules_sent == 1 { "" } else { "s" },
            w.restarts,
            if w.restarts == 1 { "" } else { "s" },
        ));
    }
    let secs = elapsed.as_secs_f64();
    text.push_str(&format!(
        "{total} calls in {secs:.3} s ({:.0} calls/s)\n",
        total as f64 / secs.max(1e-9)
    ));
    let _ = io::stderr().lock().write_all(text.as_bytes());
}

//! `wasmpickle worker`: serve pickled calls over stdin/stdout, a Unix socket or TCP.
//!
//! A thin wrapper around [`wasmpickle_pool::worker::serve`]: the flags become a
//! [`WorkerConfig`], and the protocol is `docs/protocol.md`. With `--listen stdio` (the
//! default, and what a pool spawns) standard output carries only frames; with a socket the
//! bound address is printed on standard output as one line, `listening <ADDRESS>`, so a
//! script that asked for port 0 learns the port.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use wasmpickle::{DirStore, Grant, RuntimeConfig};
use wasmpickle_pool::Address;
use wasmpickle_pool::worker::{Worker as PoolWorker, WorkerConfig};

use crate::limits::LimitArgs;

/// The environment variable that makes a worker abort on a call of one export: fault
/// injection for tests of supervisors, documented in `docs/protocol.md` §7.
pub(crate) const ABORT_ON_EXPORT_ENV: &str = "WASMPICKLE_WORKER_ABORT_ON_EXPORT";

/// Serve pickled calls to pools and clients (see docs/protocol.md).
///
/// With `--listen stdio` one session runs on stdin/stdout until stdin closes: that is how a
/// pool (`wasmpickle map`, the `wasmpickle-pool` crate) runs its workers. With `unix:PATH` or
/// `tcp:HOST:PORT` the worker accepts connections, one thread each, and prints `listening
/// <ADDRESS>` on stdout; TCP requires `--key`, and every connection must prove it holds a key
/// before anything else. Limit flags are the caps of every call; a call's own limits apply
/// below them. Modules clients send are kept for the life of the worker (or in `--store`).
#[derive(Args, Debug)]
pub(crate) struct Worker {
    /// Where to serve: stdio, unix:PATH or tcp:HOST:PORT (port 0 picks a free port)
    #[arg(long, value_name = "ADDRESS", default_value = "stdio")]
    listen: String,

    /// Clients must prove they hold the key in FILE (repeatable: any of the keys will do; see
    /// `wasmpickle key new`). Required for tcp:, optional otherwise
    #[arg(long, value_name = "FILE")]
    key: Vec<PathBuf>,

    /// Socket connections served at once, and so calls run at once [default: 16]
    #[arg(long, value_name = "N")]
    connections: Option<usize>,

    /// The largest frame accepted, in bytes [default: 68157440]
    #[arg(long, value_name = "BYTES")]
    max_frame: Option<usize>,

    /// Keep modules in this directory code store (`wasmpickle store`) instead of in memory, so
    /// they outlive the worker and clients need not send them again
    #[arg(long, value_name = "DIR")]
    store: Option<PathBuf>,

    /// Keep compiled modules in DIR, shared by every worker that uses it, so a module is
    /// compiled once per machine rather than once per worker process
    #[arg(long, value_name = "DIR")]
    cache: Option<PathBuf>,

    /// Let modules import a host function (repeatable): `log` or `clock`
    #[arg(long, value_enum, value_name = "GRANT")]
    grant: Vec<GrantArg>,

    // Last, because its help heading applies to the flags after it too.
    #[command(flatten)]
    limits: LimitArgs,
}

/// The `--grant` values.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub(crate) enum GrantArg {
    /// `wasmpickle.log(ptr, len)`: guest log lines on stderr (shown with -v)
    Log,
    /// `wasmpickle.clock_ms() -> i64`: wall-clock milliseconds
    Clock,
}

impl GrantArg {
    pub(crate) fn flag(self) -> &'static str {
        match self {
            GrantArg::Log => "log",
            GrantArg::Clock => "clock",
        }
    }
}

impl From<GrantArg> for Grant {
    fn from(g: GrantArg) -> Grant {
        match g {
            GrantArg::Log => Grant::Log,
            GrantArg::Clock => Grant::Clock,
        }
    }
}

impl Worker {
    /// Serves until stdin closes (stdio) or forever (sockets).
    ///
    /// # Errors
    ///
    /// Bad flags, a key file that does not parse, a socket that cannot be bound, or the
    /// error that ended a stdio session.
    pub(crate) fn run(&self) -> anyhow::Result<()> {
        let address: Address = self.listen.parse()?;
        let mut runtime = RuntimeConfig::new();
        runtime.limits(self.limits.runtime_limits());
        for grant in &self.grant {
            runtime.grant((*grant).into());
        }
        if let Some(dir) = &self.cache {
            runtime.compiled_cache(dir);
        }
        let mut config = WorkerConfig::new();
        config.runtime(runtime);
        if let Some(dir) = &self.store {
            config.code_store(Arc::new(DirStore::open(dir)?));
        }
        for path in &self.key {
            config.key(crate::key::load_any(path)?);
        }
        if self.key.is_empty() && address.requires_key() {
            bail!("a worker listening on {address} requires --key");
        }
        if let Some(n) = self.connections {
            config.max_connections(n);
        }
        if let Some(bytes) = self.max_frame {
            config.max_frame(bytes);
        }
        if let Some(export) = std::env::var_os(ABORT_ON_EXPORT_ENV) {
            let export = export.to_string_lossy().into_owned();
            tracing::warn!(
                export,
                "fault injection: this worker aborts on calls of `{export}`"
            );
            config.abort_on_export(export);
        }
        match address {
            Address::Stdio => wasmpickle_pool::worker::serve(&config, &address)?,
            _ => {
                let listener = PoolWorker::new(&config)?.bind(&address)?;
                let mut out = std::io::stdout().lock();
                writeln!(out, "listening {}", listener.address())
                    .and_then(|()| out.flush())
                    .context("cannot write the address to stdout")?;
                drop(out);
                listener.serve()?;
            }
        }
        Ok(())
    }
}

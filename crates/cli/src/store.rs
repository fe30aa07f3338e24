//! `wasmpickle store`: put modules into a directory code store, get them back, list, verify
//! and clean it up.
//!
//! The store is the one `pack --store` writes and `run --store` reads: a directory of modules
//! named by their code hash, each checked against its hash whenever it is read (layout in
//! `docs/storage.md`). `verify` is the store's fsck: it exits with status 1 and lists every
//! damaged object, so it can run from cron or CI.

use std::fmt::Write as _;
use std::fs;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use serde::Serialize;
use wasmpickle::{CodeHash, CodeStore, DirStore};

use crate::stdio;

/// Manage a directory code store: put, get, ls, verify, gc.
///
/// A code store holds modules by hash, so that pickles can name their code instead of
/// carrying it (`pack --by-ref --store DIR`, then `run --store DIR`). Every read re-verifies
/// the object against its hash; damaged objects are reported with their hash and never
/// returned.
#[derive(Args, Debug)]
pub(crate) struct Store {
    #[command(subcommand)]
    command: StoreCommand,
}

#[derive(Debug, Subcommand)]
enum StoreCommand {
    Put(Put),
    Get(Get),
    Ls(Ls),
    Verify(Verify),
    Gc(Gc),
}

/// The `--store DIR` every store subcommand takes.
#[derive(Args, Debug)]
struct StoreDir {
    /// The store directory
    #[arg(long, value_name = "DIR")]
    store: PathBuf,
}

impl StoreDir {
    /// Opens the store, creating it when `create` (for writers) and requiring that it exists
    /// otherwise (so that a mistyped path is an error, not an empty store).
    fn open(&self, create: bool) -> anyhow::Result<DirStore> {
        let store = if create {
            DirStore::open(&self.store)
        } else {
            DirStore::open_existing(&self.store)
        };
        Ok(store?)
    }
}

/// Store modules and print their hashes.
///
/// Each module is validated and hashed, stored, and its hash (`sha256:<hex>`) printed on a
/// line of its own. Storing a module that is already there changes nothing; one whose stored
/// copy is damaged is written again.
#[derive(Args, Debug)]
struct Put {
    /// The WebAssembly modules
    #[arg(value_name = "MODULE.wasm", required = true)]
    modules: Vec<PathBuf>,

    #[command(flatten)]
    dir: StoreDir,
}

/// Write out the module with this hash.
///
/// The module goes to OUT, or to stdout when stdout is not a terminal: the bytes as they were
/// put, checked against the hash on the way out.
#[derive(Args, Debug)]
struct Get {
    /// The code hash, `sha256:<64 hex digits>` (the prefix may be left out)
    #[arg(value_name = "HASH")]
    hash: String,

    /// Write the module here (`-` for stdout) instead of to stdout
    #[arg(short, long, value_name = "OUT")]
    output: Option<PathBuf>,

    #[command(flatten)]
    dir: StoreDir,
}

/// List the stored hashes.
///
/// One hash per line, sorted. Objects are not read or verified (see `verify`).
#[derive(Args, Debug)]
struct Ls {
    /// Print one JSON array of {"hash", "bytes"} instead
    #[arg(long)]
    json: bool,

    #[command(flatten)]
    dir: StoreDir,
}

/// Check every object; exit 1 if any is damaged.
///
/// Reads every object and checks it against its hash. Prints one line
/// `<hash> <what is wrong>` per damaged object and exits with status 1 if there is any; a
/// summary goes to stderr.
#[derive(Args, Debug)]
struct Verify {
    #[command(flatten)]
    dir: StoreDir,
}

/// Remove leftovers of interrupted writes; quarantine damaged objects.
///
/// Damaged objects move to `quarantine/` in the store: out of the way, but kept for whoever
/// investigates the disk (delete it when done). Prints `removed <path>` and
/// `quarantined <hash> <what was wrong>` lines; a summary goes to stderr.
#[derive(Args, Debug)]
struct Gc {
    #[command(flatten)]
    dir: StoreDir,
}

#[derive(Serialize)]
struct Listed {
    hash: String,
    bytes: Option<u64>,
}

impl Store {
    /// Runs the subcommand. `Ok` carries the exit status: `verify` fails without an error.
    ///
    /// # Errors
    ///
    /// When the store cannot be opened, read or written, a module is invalid, or a hash is
    /// malformed, missing or damaged.
    pub(crate) fn run(&self) -> anyhow::Result<ExitCode> {
        match &self.command {
            StoreCommand::Put(cmd) => cmd.run(),
            StoreCommand::Get(cmd) => cmd.run(),
            StoreCommand::Ls(cmd) => cmd.run(),
            StoreCommand::Verify(cmd) => cmd.run(),
            StoreCommand::Gc(cmd) => cmd.run(),
        }
    }
}

impl Put {
    fn run(&self) -> anyhow::Result<ExitCode> {
        let store = self.dir.open(true)?;
        let mut out = String::new();
        for path in &self.modules {
            let code = stdio::load_module(path)?;
            let new = store
                .put(&code)
                .with_context(|| format!("cannot store {}", path.display()))?;
            tracing::info!(code = %code.hash(), module = %path.display(), new, "stored module");
            writeln!(out, "{}", code.hash()).expect("writing to a String");
        }
        stdio::write_stdout(out.as_bytes()).context("cannot write to stdout")?;
        Ok(ExitCode::SUCCESS)
    }
}

impl Get {
    fn run(&self) -> anyhow::Result<ExitCode> {
        let to_stdout = self.output.as_deref().is_none_or(|p| p.as_os_str() == "-");
        if to_stdout && stdio::stdout_is_terminal() {
            bail!(
                "refusing to write a binary module to a terminal: redirect stdout or pass -o FILE"
            );
        }
        let hash = parse_hash(&self.hash)?;
        let store = self.dir.open(false)?;
        let code = store.get(&hash)?.with_context(|| {
            format!(
                "code {hash} is not in the store {}",
                self.dir.store.display()
            )
        })?;
        match self.output.as_deref().filter(|_| !to_stdout) {
            Some(path) => fs::write(path, &code.wasm()[..])
                .with_context(|| format!("cannot write {}", path.display()))?,
            None => stdio::write_stdout(code.wasm()).context("cannot write to stdout")?,
        }
        Ok(ExitCode::SUCCESS)
    }
}

impl Ls {
    fn run(&self) -> anyhow::Result<ExitCode> {
        let store = self.dir.open(false)?;
        let hashes = store.list()?;
        let out = if self.json {
            let listed: Vec<Listed> = hashes
                .iter()
                .map(|h| Listed {
                    hash: h.to_string(),
                    // The module's size: the object file less its header. `None` when the
                    // object vanished since it was listed or is shorter than a header.
                    bytes: fs::metadata(store.object_path(h))
                        .ok()
                        .and_then(|m| m.len().checked_sub(DirStore::HEADER_BYTES)),
                })
                .collect();
            let mut line = serde_json::to_string(&listed).expect("the listing serializes");
            line.push('\n');
            line
        } else {
            hashes.iter().fold(String::new(), |mut out, h| {
                writeln!(out, "{h}").expect("writing to a String");
                out
            })
        };
        stdio::write_stdout(out.as_bytes()).context("cannot write to stdout")?;
        Ok(ExitCode::SUCCESS)
    }
}

impl Verify {
    fn run(&self) -> anyhow::Result<ExitCode> {
        let store = self.dir.open(false)?;
        let report = store.verify()?;
        let out = report.corrupt.iter().fold(String::new(), |mut out, c| {
            writeln!(out, "{c}").expect("writing to a String");
            out
        });
        stdio::write_stdout(out.as_bytes()).context("cannot write to stdout")?;
        eprintln!(
            "verified {} objects in {}: {} corrupt",
            report.checked,
            self.dir.store.display(),
            report.corrupt.len()
        );
        Ok(if report.is_ok() {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        })
    }
}

impl Gc {
    fn run(&self) -> anyhow::Result<ExitCode> {
        let store = self.dir.open(false)?;
        let report = store.gc()?;
        let mut out = String::new();
        for path in &report.leftovers_removed {
            writeln!(out, "removed {path}").expect("writing to a String");
        }
        for c in &report.quarantined {
            writeln!(out, "quarantined {c}").expect("writing to a String");
        }
        stdio::write_stdout(out.as_bytes()).context("cannot write to stdout")?;
        eprintln!(
            "gc of {}: {} leftovers removed, {} corrupt objects quarantined",
            self.dir.store.display(),
            report.leftovers_removed.len(),
            report.quarantined.len()
        );
        Ok(ExitCode::SUCCESS)
    }
}

/// `sha256:<hex>`, or the 64 hex digits alone.
fn parse_hash(text: &str) -> anyhow::Result<CodeHash> {
    let prefixed;
    let text = if text.starts_with("sha256:") {
        text
    } else {
        prefixed = format!("sha256:{text}");
        &prefixed
    };
    Ok(text.parse::<CodeHash>()?)
}

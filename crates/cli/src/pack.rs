//! `wasmpickle pack`: pickle a call of one export of a module.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::Args;
use serde_json::Value;
use wasmpickle::{CodeStore, DirStore};

use crate::json;
use crate::key;
use crate::limits::LimitArgs;
use crate::stdio;

/// Pickle a call of one export of a module.
///
/// The module is validated and hashed, the export checked, and the environment and
/// arguments converted from JSON to the canonical MessagePack the Rust API writes, so the
/// same call packed here or with `Closure::call` gives the same bytes and the same call id.
/// Limit flags are requests stored in the call (and part of its id); a runtime honours them
/// up to its own caps. With --key, the call is signed (HMAC-SHA256 over its bytes, module
/// included) and the pickle is a signed call. The pickle goes to OUT, or to stdout when
/// stdout is not a terminal.
#[derive(Args, Debug)]
pub(crate) struct Pack {
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

    /// Read the environment as JSON from a file (`-` for stdin)
    #[arg(long, value_name = "FILE.json", group = "env_source")]
    env_file: Option<PathBuf>,

    /// The arguments as a JSON array, one element per parameter after the environment
    /// [default: []]
    #[arg(
        long,
        value_name = "JSON",
        group = "args_source",
        allow_hyphen_values = true
    )]
    args: Option<String>,

    /// Read the arguments as a JSON array from a file (`-` for stdin)
    #[arg(long, value_name = "FILE.json", group = "args_source")]
    args_file: Option<PathBuf>,

    /// Leave the module out of the pickle and name it by hash only; the receiver must already
    /// have it (see `run --code` and `run --store`)
    #[arg(long)]
    by_ref: bool,

    /// Also put the module into this directory code store (see `wasmpickle store`); with
    /// --by-ref, a receiver then needs only the pickle and `run --store DIR`
    #[arg(long, value_name = "DIR")]
    store: Option<PathBuf>,

    /// Sign the call with the key in FILE (see `wasmpickle key new`): the pickle is then a
    /// signed call, which `run --key` accepts only from the keys it is given
    #[arg(long, value_name = "FILE")]
    key: Option<PathBuf>,

    /// Write the pickle here (`-` for stdout) instead of to stdout
    #[arg(short, long, value_name = "OUT")]
    output: Option<PathBuf>,

    // Last, because its help heading applies to the flags after it too.
    #[command(flatten)]
    limits: LimitArgs,
}

impl Pack {
    /// Packs the call and writes it.
    ///
    /// # Errors
    ///
    /// When the module cannot be read or is invalid, the export is not a pickled function,
    /// the JSON is invalid or the arguments are not an array, or the pickle cannot be written
    /// (including to a terminal).
    pub(crate) fn run(&self) -> anyhow::Result<()> {
        let to_stdout = self.output.as_deref().is_none_or(|p| p.as_os_str() == "-");
        if to_stdout && stdio::stdout_is_terminal() {
            bail!(
                "refusing to write a binary pickle to a terminal: redirect stdout or pass -o FILE"
            );
        }
        // Read first: a missing or malformed key file should not cost hashing the module.
        let key = self.key.as_deref().map(key::load_any).transpose()?;
        let code = stdio::load_module(&self.module)?;
        let env = read_json(self.env.as_deref(), self.env_file.as_deref(), "--env")?
            .unwrap_or(Value::Null);
        let args = read_json(self.args.as_deref(), self.args_file.as_deref(), "--args")?
            .unwrap_or(Value::Array(Vec::new()));

        let closure = code.closure(&self.export, &env)?;
        let args_what = if self.args_file.is_some() {
            "--args-file"
        } else {
            "--args"
        };
        let mut call = closure
            .call_raw(json::args_to_msgpack(&args, args_what)?)?
            .with_limits(self.limits.call_limits());
        if self.by_ref {
            call = call.by_reference();
        }
        // Stored only once the call is known to be good, so a mistyped export stores nothing.
        if let Some(dir) = &self.store {
            let new = DirStore::open(dir)?
                .put(&code)
                .with_context(|| format!("cannot store {}", self.module.display()))?;
            tracing::info!(code = %code.hash(), store = %dir.display(), new, "stored module");
        }
        let bytes = match &key {
            Some(key) => call.sign(key).to_bytes(),
            None => call.to_bytes(),
        };
        tracing::info!(
            call = %call.id(),
            key = key.as_ref().map(|k| k.id()),
            code = %code.hash(),
            export = %self.export,
            bytes = bytes.len(),
            inline = !self.by_ref,
            "packed call"
        );

        match self.output.as_deref().filter(|_| !to_stdout) {
            Some(path) => {
                fs::write(path, &bytes).with_context(|| format!("cannot write {}", path.display()))
            }
            None => stdio::write_stdout(&bytes).context("cannot write the pickle to stdout"),
        }
    }
}

/// The JSON of `--env`/`--args` or their `-file` twins, if either was given.
pub(crate) fn read_json(
    inline: Option<&str>,
    file: Option<&Path>,
    flag: &str,
) -> anyhow::Result<Option<Value>> {
    if let Some(text) = inline {
        return json::parse(text, flag).map(Some);
    }
    let Some(path) = file else {
        return Ok(None);
    };
    let bytes = stdio::read_input(Some(path))?;
    let text = std::str::from_utf8(&bytes)
        .with_context(|| format!("{flag}-file {} is not UTF-8", path.display()))?;
    json::parse(text, &format!("{flag}-file {}", path.display())).map(Some)
}

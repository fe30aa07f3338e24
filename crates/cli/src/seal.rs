//! `wasmpickle seal`: turn a call or closure pickle into one standalone WebAssembly module.

use std::fs;
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Args;
use wasmpickle::format::{DecodeLimits, Header, PickleKind};
use wasmpickle::{
    Call, Closure, Code, CodeRef, CodeStore, DirStore, SignedCall, canonical_hash, seal_call,
    seal_closure,
};

use crate::key;
use crate::stdio;

const RUNNING: &str = "\
Running the output:
  wasmtime run --invoke wasmpickle_sealed OUT.wasm
runs a sealed call with nothing but wasmtime and prints one number, the i64 the entry
returns: the reply's location, pointer = n >> 32 and length = n & 0xffffffff. The reply lies
in the module's exported `memory`: a status byte (0 ok, 1 error, 2 panic, 3 bad input), then
MessagePack, as for a pickled call (docs/abi.md). An embedder reads it before dropping the
instance; after a panic's trap, the `wasmpickle_panic` global points at it instead.

A sealed closure's entry is wasmpickle_sealed(args_ptr, args_len) -> i64: write the
MessagePack arguments into memory from wasmpickle_alloc(args_len) first. Call the entry once
per fresh instance. A sealed module carries no limits: fuel, deadline and memory caps are the
embedder's to set. The pickled export stays exported, so `wasmpickle pack` and `run` work on
a sealed module too.";

/// Seal a call or closure pickle into one standalone WebAssembly module.
///
/// The module is the pickle's code shaken down to the export (and the guest contract's
/// memory, allocator and panic slot), with the environment, and for a call the arguments,
/// baked in as data, and one exported entry point, `wasmpickle_sealed`, that runs it: any
/// WebAssembly engine runs it with no wasmpickle code. The same pickle always seals to the
/// same bytes; the module's canonical hash, printed on stderr, identifies the closure.
///
/// The code comes from the pickle when inline, otherwise from a `--code` module or the
/// `--store` with the hash it names. Signed pickles are sealed too; with `--key`, only those
/// whose signature one of the keys verifies. The module goes to OUT, or to stdout when
/// stdout is not a terminal.
#[derive(Args, Debug)]
#[command(after_help = RUNNING)]
pub(crate) struct Seal {
    /// The call or closure pickle [default: stdin]
    #[arg(value_name = "PICKLE|-")]
    pickle: Option<PathBuf>,

    /// A module the pickle may name by hash (repeatable)
    #[arg(long, value_name = "MODULE.wasm")]
    code: Vec<PathBuf>,

    /// A directory code store to resolve a by-hash pickle through (see `wasmpickle store`)
    #[arg(long, value_name = "DIR")]
    store: Option<PathBuf>,

    /// Seal only a call signed with the key in FILE (repeatable; see `wasmpickle key`)
    #[arg(long, value_name = "FILE")]
    key: Vec<PathBuf>,

    /// Write the module here (`-` for stdout) instead of to stdout
    #[arg(short, long, value_name = "OUT.wasm")]
    output: Option<PathBuf>,
}

/// What a pickle asks to seal.
enum Sealable {
    Call(Call),
    Closure(Closure),
}

impl Seal {
    /// Seals the pickle, writes the module and prints its hash on stderr.
    ///
    /// # Errors
    ///
    /// When the pickle cannot be read or decoded, its signature does not verify (with
    /// `--key`), its code cannot be found or does not match its hash, the export cannot be
    /// sealed, or the module cannot be written (including to a terminal).
    pub(crate) fn run(&self) -> anyhow::Result<()> {
        let to_stdout = self.output.as_deref().is_none_or(|p| p.as_os_str() == "-");
        if to_stdout && stdio::stdout_is_terminal() {
            bail!(
                "refusing to write a binary module to a terminal: redirect stdout or pass -o FILE"
            );
        }
        if stdio::is_stdin(self.pickle.as_deref()) && stdio::stdin_is_terminal() {
            bail!("no pickle given: pass a PICKLE file or pipe one to stdin");
        }
        let bytes = stdio::read_input(self.pickle.as_deref())?;
        let sealable = self.decode(&bytes)?;
        let code_ref = match &sealable {
            Sealable::Call(call) => call.code(),
            Sealable::Closure(closure) => closure.code(),
        };
        let code = self.resolve(code_ref)?;
        let (sealed, what) = match &sealable {
            Sealable::Call(call) => (seal_call(&code, call)?, format!("call {}", call.id())),
            Sealable::Closure(closure) => (
                seal_closure(&code, closure)?,
                format!("closure of `{}`", closure.export()),
            ),
        };
        let hash = canonical_hash(&sealed)?;
        tracing::info!(sealed = %hash, code = %code.hash(), bytes = sealed.len(), "sealed {what}");

        match self.output.as_deref().filter(|_| !to_stdout) {
            Some(path) => fs::write(path, &sealed)
                .with_context(|| format!("cannot write {}", path.display()))?,
            None => stdio::write_stdout(&sealed).context("cannot write the module to stdout")?,
        }
        eprintln!("{hash}");
        Ok(())
    }

    fn decode(&self, bytes: &[u8]) -> anyhow::Result<Sealable> {
        let header = Header::read(bytes).context("cannot read the pickle's header")?;
        let keys = key::keyring_any(&self.key)?;
        if let Some(keys) = &keys {
            if header.kind == PickleKind::Closure {
                bail!("--key was given, and a closure pickle cannot be signed");
            }
            let call = keys
                .verify_bytes(bytes, &DecodeLimits::default())
                .map_err(wasmpickle::Error::from)
                .context("refusing to seal")?;
            return Ok(Sealable::Call(call));
        }
        Ok(match header.kind {
            PickleKind::Closure => {
                Sealable::Closure(Closure::from_bytes(bytes).context("cannot decode the closure")?)
            }
            PickleKind::SignedCall => {
                let signed = SignedCall::from_bytes(bytes).context("cannot decode the pickle")?;
                tracing::info!(
                    key = signed.key_id(),
                    "the pickle is signed; its signature is not checked without --key"
                );
                Sealable::Call(
                    Call::from_bytes(signed.call_bytes()).context("cannot decode the call")?,
                )
            }
            _ => Sealable::Call(Call::from_bytes(bytes).context("cannot decode the call")?),
        })
    }

    /// The module the pickle names: inline, a `--code` file or the `--store`'s.
    fn resolve(&self, code: &CodeRef) -> anyhow::Result<Code> {
        if let Some(wasm) = code.wasm() {
            let module = Code::new(wasm.clone()).context("the pickle's inline module")?;
            if module.hash() != code.hash() {
                bail!(
                    "the pickle's inline module hashes to {}, not to the {} it names",
                    module.hash(),
                    code.hash()
                );
            }
            return Ok(module);
        }
        for path in &self.code {
            let module = stdio::load_module(path)?;
            if module.hash() == code.hash() {
                return Ok(module);
            }
            tracing::info!(module = %path.display(), code = %module.hash(), "not the pickle's module");
        }
        if let Some(dir) = &self.store
            && let Some(module) = DirStore::open(dir)?.get(&code.hash())?
        {
            return Ok(module);
        }
        bail!(
            "code {} is not in the pickle, and no --code module or --store has it",
            code.hash()
        )
    }
}

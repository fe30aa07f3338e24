//! Memoized calls: [`Memo`] in front of a [`Runtime`], and its backends ([`LruBackend`],
//! [`RedbBackend`], `RedisBackend`). Why the key is what it is, what is stored and what is
//! not, is in [`Memo`]'s documentation; the bytes are specified in `docs/memo.md`.

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ::lru::LruCache;
use sha2::{Digest, Sha256};
use wasmpickle_format::{Call, CodeHash, abi};

use crate::code::Code;
use crate::error::{Error, ErrorKind, Result};
use crate::limits::{Grant, Limits};
use crate::runtime::{Outcome, Runtime};
use crate::store::CodeStore;

mod lru;
mod recorded;
mod redb;
#[cfg(feature = "redis")]
mod redis;
pub(crate) mod wire;

pub use self::lru::LruBackend;
pub use self::recorded::{OUTCOME_VERSION, RecordedResult};
pub use self::redb::RedbBackend;
#[cfg(feature = "redis")]
pub use self::redis::RedisBackend;

/// The version of the memo format: the key derivation, the recorded results and the entry
/// framing. Part of every key, so a later format never reads an earlier one's entries.
pub const MEMO_FORMAT_VERSION: u64 = 1;

/// How many modules' export versions a memo remembers. Computing a version shakes the module
/// (milliseconds), so a hit must not; a module forgotten is shaken again when next called.
const REMEMBERED_MODULES: usize = 256;

/// The key of one memoized call: a SHA-256, shown as `sha256:<hex>`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct MemoKey([u8; 32]);

impl MemoKey {
    /// Wraps a raw digest.
    pub const fn from_bytes(bytes: [u8; 32]) -> MemoKey {
        MemoKey(bytes)
    }

    /// The raw digest.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The digest as 64 lowercase hex digits.
    pub fn to_hex(&self) -> String {
        CodeHash::from_bytes(self.0).to_hex()
    }

    /// The key of a call of `export` at export version `version`, with environment `env`,
    /// arguments `args`, under `limits` (the limits in force: the runtime's caps lowered to
    /// the call's requests). Only the memory and table caps enter the key; see the module
    /// docs.
    pub fn derive(
        version: &CodeHash,
        export: &str,
        env: &[u8],
        args: &[u8],
        limits: &Limits,
    ) -> MemoKey {
        let mut h = Sha256::new();
        h.update(b"wasmpickle memo key\0");
        h.update(MEMO_FORMAT_VERSION.to_le_bytes());
        h.update(version.as_bytes());
        h.update(limits.get_max_memory().to_le_bytes());
        h.update(limits.get_max_table_elements().to_le_bytes());
        for part in [export.as_bytes(), env, args] {
            h.update((part.len() as u64).to_le_bytes());
            h.update(part);
        }
        MemoKey(h.finalize().into())
    }
}

impl std::hash::Hash for MemoKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        // A SHA-256 is uniform already: eight of its bytes are as good as all of them.
        let mut head = [0; 8];
        head.copy_from_slice(&self.0[..8]);
        state.write_u64(u64::from_le_bytes(head));
    }
}

impl fmt::Display for MemoKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.to_hex())
    }
}

impl fmt::Debug for MemoKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// What a [`MemoBackend`] found under a key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fetched {
    /// The stored value, checked.
    Value(Vec<u8>),
    /// Nothing, or an entry past its time to live.
    Absent,
    /// An entry that failed its checks, and why. The memo removes it and counts a miss.
    Corrupt(String),
}

/// Where a [`Memo`] keeps its entries: a small key-value interface, in the spirit of redb's
/// `StorageBackend`, so that a new store is a few dozen lines.
///
/// Values are opaque bytes (recorded results); keys are [`MemoKey`]s. Errors are
/// [`io::Error`]s, as for redb's backends: a backend says *that* it failed, and the memo
/// decides what that means (a miss, logged).
///
/// # The contract
///
/// * [`get`](MemoBackend::get) never returns a value other than the one last set under the
///   key: a backend whose storage can be damaged checks each entry (`docs/memo.md` gives the
///   framing the crate's backends use) and reports damage as [`Fetched::Corrupt`].
/// * An entry set with a time to live is [`Fetched::Absent`] once that time has passed.
/// * Every method may be called from several threads at once.
pub trait MemoBackend: Send + Sync + fmt::Debug {
    /// The value stored under `key`.
    ///
    /// # Errors
    ///
    /// When the backend cannot be read.
    fn get(&self, key: &MemoKey) -> io::Result<Fetched>;

    /// Stores `value` under `key`, replacing what was there, to expire after `ttl` (never
    /// when `None`).
    ///
    /// # Errors
    ///
    /// When the backend cannot be written.
    fn set(&self, key: &MemoKey, value: &[u8], ttl: Option<Duration>) -> io::Result<()>;

    /// Stores several entries; backends with transactions do it in one. The default calls
    /// [`set`](MemoBackend::set) for each.
    ///
    /// # Errors
    ///
    /// When the backend cannot be written; some entries may then be stored.
    fn set_many(&self, entries: &[(MemoKey, Vec<u8>)], ttl: Option<Duration>) -> io::Result<()> {
        entries
            .iter()
            .try_for_each(|(key, value)| self.set(key, value, ttl))
    }

    /// Removes the entry under `key`. Returns `true` when there was one.
    ///
    /// # Errors
    ///
    /// When the backend cannot be written.
    fn remove(&self, key: &MemoKey) -> io::Result<bool>;

    /// Removes every entry. Returns how many there were.
    ///
    /// # Errors
    ///
    /// When the backend cannot be written.
    fn clear(&self) -> io::Result<u64>;

    /// How many entries the backend holds, and how many bytes.
    ///
    /// # Errors
    ///
    /// When the backend cannot be read.
    fn stats(&self) -> io::Result<BackendStats>;
}

/// What a [`MemoBackend`] holds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct BackendStats {
    /// Entries stored (expired entries not yet removed included).
    pub entries: u64,
    /// Bytes stored: keys and values, as the backend counts them.
    pub bytes: u64,
    /// The most bytes the backend keeps, for a bounded backend.
    pub capacity: Option<u64>,
    /// Entries dropped to stay within the capacity, since the backend was made.
    pub evictions: u64,
}

impl BackendStats {
    /// Statistics of `entries` entries taking `bytes` bytes.
    pub fn new(entries: u64, bytes: u64) -> BackendStats {
        BackendStats {
            entries,
            bytes,
            ..BackendStats::default()
        }
    }
}

/// How a [`Memo`] behaves. Every setting states its default.
#[derive(Clone, Debug, Default)]
pub struct MemoConfig {
    ttl: Option<Duration>,
    cache_errors: bool,
    code_store: Option<Arc<dyn CodeStore>>,
}

impl MemoConfig {
    /// The defaults.
    pub fn new() -> MemoConfig {
        MemoConfig::default()
    }

    /// How long an entry lives after it is stored. Default: `None`, for ever (until removed,
    /// evicted or cleared): an entry cannot go stale, because its key changes whenever what
    /// decides the result does. A time to live bounds how long a result is kept, not whether
    /// it is right.
    pub fn ttl(&mut self, ttl: Option<Duration>) -> &mut Self {
        self.ttl = ttl;
        self
    }

    /// Also stores failures that the call alone determines (see the module docs for which).
    /// Default: `false`, only returned values are stored, so fixing a guest's environment or
    /// the host never meets a stored failure.
    pub fn cache_errors(&mut self, yes: bool) -> &mut Self {
        self.cache_errors = yes;
        self
    }

    /// Where the memo finds the module of a call that names its code by hash, to compute its
    /// export version (the runtime's code store, usually). Default: none; such calls are
    /// keyed only when their module arrived inline in an earlier call or through
    /// [`Memo::load`], and fail with [`ErrorKind::CodeNotFound`] otherwise.
    pub fn code_store(&mut self, store: Arc<dyn CodeStore>) -> &mut Self {
        self.code_store = Some(store);
        self
    }
}

/// The outcome of [`Memo::lookup`].
#[derive(Debug)]
pub enum MemoLookup {
    /// The stored result, to return without running the call.
    Hit(Result<Outcome>),
    /// Nothing usable is stored: run the call, then give its result to [`Memo::store`] with
    /// this.
    Miss(MemoMiss),
}

/// A lookup that missed: where to store the call's result once it ran.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoMiss {
    key: MemoKey,
    fuel: u64,
}

impl MemoMiss {
    /// The call's key.
    pub fn key(&self) -> &MemoKey {
        &self.key
    }
}

/// What a [`Memo`] did so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct MemoStats {
    /// Lookups answered from the backend.
    pub hits: u64,
    /// Lookups that found nothing usable (absent, expired, damaged, or over the fuel budget).
    pub misses: u64,
    /// Results stored.
    pub stores: u64,
    /// Entries found damaged or undecodable, and removed.
    pub corrupt: u64,
    /// Backend operations that failed (each treated as a miss, or as a result not stored).
    pub errors: u64,
    /// Calls refused as not memoizable.
    pub refused: u64,
}

#[derive(Default)]
struct Counters {
    hits: AtomicU64,
    misses: AtomicU64,
    stores: AtomicU64,
    corrupt: AtomicU64,
    errors: AtomicU64,
    refused: AtomicU64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// What the memo remembers about a module: its code, and for each export called so far its
/// version and the non-deterministic imports it can reach.
struct ModuleInfo {
    code: Code,
    /// The non-deterministic grants the module imports anywhere.
    nondeterministic: Vec<Grant>,
    exports: Mutex<HashMap<Box<str>, ExportInfo>>,
}

#[derive(Clone)]
struct ExportInfo {
    version: CodeHash,
    /// The non-deterministic grants the export can reach.
    reaches: Vec<Grant>,
}

/// Memoizes calls: results of pickled calls cached under keys that change exactly when what
/// decides the result changes.
///
/// A [`Memo`] sits in front of a [`Runtime`]: [`Memo::run`] looks the call up in a
/// [`MemoBackend`] and returns the stored result without running anything, or runs the call
/// and stores its result. Three backends come with the crate: [`LruBackend`] (in memory,
/// bounded in bytes), [`RedbBackend`] (one file, the embedded default) and, with the `redis`
/// feature, `RedisBackend` (a shared Redis server).
///
/// # The key, and why it is enough
///
/// The key ([`MemoKey`]) is the SHA-256 of the memo format version, the call's *export
/// version* ([`Code::export_version`]: the module shaken down to what the export can reach),
/// the export's name, the environment and argument bytes, and the two limits a guest can
/// observe (memory and table caps; below). So:
///
/// * editing code the export can reach — however deep in its callees — changes the key;
///   editing code it cannot reach does not, so a guest with many exports keeps the results
///   of those an edit did not touch (joblib.Memory and autocache hash only the top-level
///   function's code, and serve stale results after a helper changes);
/// * the environment and arguments are canonical MessagePack (`docs/format.md` §4), so equal
///   values give equal keys in every process, unlike keys built from Python's `hash()`;
/// * a call is deterministic (see the crate docs, "Determinism"), so the same key means the
///   same result and the same fuel on every run and machine.
///
/// **Limits.** A successful result does not depend on the fuel budget or the deadline: a guest
/// cannot observe either, so a call that finished under one budget computes the same thing
/// under any budget that lets it finish. Both are left out of the key. But a call that took
/// *F* fuel is only sure to finish under a budget of at least *F* (under less it may run out;
/// wasmtime checks fuel at function entries and loop heads, so it may also just finish), so
/// a hit is served only when the stored fuel is within the budget in force, and is otherwise
/// a [`MemoLookup::Miss`]: the call runs and decides for itself. A call that ends past its
/// budget reports the budget as its fuel, not what it used, so a result that used its whole
/// budget is not stored. The memory and table caps are different: a guest *can* observe
/// them, because `memory.grow` and `table.grow` return -1 at the cap and a guest may carry on
/// differently. They are in the key, so a result computed under one cap is never served
/// under another. Runtimes with the default caps share every entry.
///
/// **Determinism.** A call of an export that can reach a host import that is not
/// deterministic ([`Grant::is_deterministic`], e.g. `wasmpickle.clock_ms`), under a runtime
/// that grants it, is refused with [`ErrorKind::NotMemoizable`]. Reachability is what the
/// export version uses: an export of the same module that cannot reach the clock is memoized
/// normally.
///
/// **Not in the key:** the wasmpickle and wasmtime versions, whose determinism guarantee
/// covers results and fuel; and a runtime's signature requirement: [`Memo::run`] asks the
/// runtime only on a miss, so verify signed calls before memoizing them.
///
/// # What is stored
///
/// A [`RecordedResult`]: the canonical bytes of a returned value and its fuel, or of a
/// failure (kind, message, guest failure, fuel) — the same bytes a journal records and replay
/// compares. A value of "nothing" (`()`, `None`: MessagePack `nil`) is stored like any other
/// value; there is no sentinel that would make it a permanent miss (autocache's `None`).
///
/// Failures are stored only when asked to ([`MemoConfig::cache_errors`]) and only those a call
/// determines whatever the limits in force allow: guest errors, bad input, guest panics,
/// traps other than stack overflow (whose depth depends on the native stack), ABI
/// violations, wrong signatures and memory limits (the caps are in the key). Never: running
/// out of fuel (a bigger budget may finish), deadlines, I/O, runtime and store failures
/// ([`ErrorKind::is_deterministic`]), nor failures that depend on the runtime rather than the
/// call (code not found, forbidden imports, invalid modules, signatures).
///
/// # Damage is a miss
///
/// Persistent backends frame each value with a checksum over the key and the value
/// (`docs/memo.md`). An entry that fails it, or does not decode, is a miss: it is removed,
/// counted in [`MemoStats::corrupt`], and the call runs again. A backend that cannot be read
/// or written (a Redis server down) is a miss too, counted in [`MemoStats::errors`] and
/// logged: a cache never fails a call, and never returns a wrong result. The checksum detects
/// damage, not forgery: whoever can write the backend can make it serve any result, so keep
/// it as private as the results.
///
/// # Threads
///
/// `Send + Sync`; share one between threads. Two threads that miss on the same key at once
/// both run the call (and store the same result); there is no waiting on each other.
///
/// # Example
///
/// ```no_run
/// use std::sync::Arc;
/// use wasmpickle::{Code, LruBackend, Memo, Runtime, RuntimeConfig};
///
/// #[derive(serde::Serialize)]
/// struct Scale { factor: f64 }
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let runtime = Runtime::new(&RuntimeConfig::default())?;
/// let memo = Memo::new(Arc::new(LruBackend::new(64 << 20)));
/// let code = Code::from_file("math.wasm")?;
/// let call = code.closure("scale", &Scale { factor: 2.5 })?.call(&(4.0,))?;
/// let first: f64 = memo.run(&runtime, &call)?.decode()?; // runs
/// let again: f64 = memo.run(&runtime, &call)?.decode()?; // from the memo
/// assert_eq!(first, again);
/// assert_eq!(memo.stats().hits, 1);
/// # Ok(()) }
/// ```
pub struct Memo {
    backend: Arc<dyn MemoBackend>,
    config: MemoConfig,
    loaded: RwLock<HashMap<CodeHash, Code>>,
    modules: Mutex<LruCache<CodeHash, Arc<ModuleInfo>>>,
    counters: Counters,
}

impl Memo {
    /// A memo over `backend` with the default [`MemoConfig`].
    pub fn new(backend: Arc<dyn MemoBackend>) -> Memo {
        Memo::with_config(backend, &MemoConfig::default())
    }

    /// A memo over `backend`.
    pub fn with_config(backend: Arc<dyn MemoBackend>, config: &MemoConfig) -> Memo {
        Memo {
            backend,
            config: config.clone(),
            loaded: RwLock::default(),
            modules: Mutex::new(LruCache::new(
                NonZeroUsize::new(REMEMBERED_MODULES).expect("not zero"),
            )),
            counters: Counters::default(),
        }
    }

    /// The backend.
    pub fn backend(&self) -> &Arc<dyn MemoBackend> {
        &self.backend
    }

    /// Makes a module known, so that calls naming it by hash can be keyed. Kept until the
    /// memo is dropped.
    pub fn load(&self, code: &Code) {
        self.loaded
            .write()
            .expect("memo modules poisoned")
            .insert(code.hash(), code.clone());
    }

    /// Runs `call` on `runtime` through the memo: a hit returns the stored result without
    /// running anything; a miss runs the call and stores its result (failures only as
    /// [`MemoConfig::cache_errors`] says).
    ///
    /// # Errors
    ///
    /// [`ErrorKind::NotMemoizable`] when the export can reach a non-deterministic import the
    /// runtime grants; those of [`Memo::key`]; otherwise the call's own result, stored or
    /// fresh. A backend that fails is a miss, not an error.
    pub fn run(&self, runtime: &Runtime, call: &Call) -> Result<Outcome> {
        match self.lookup(call, runtime.limits(), runtime.grants())? {
            MemoLookup::Hit(result) => result,
            MemoLookup::Miss(miss) => {
                let result = runtime.run(call);
                self.store(&miss, &result);
                result
            }
        }
    }

    /// Looks `call` up for a runtime with caps `caps` and grants `grants`, for callers that
    /// run calls themselves (a pool, another process): on [`MemoLookup::Miss`], run the call
    /// and give its result to [`Memo::store`].
    ///
    /// # Errors
    ///
    /// As [`Memo::run`].
    pub fn lookup(&self, call: &Call, caps: &Limits, grants: &[Grant]) -> Result<MemoLookup> {
        let export = self.export_info(call)?;
        if let Some(grant) = export.reaches.iter().find(|g| grants.contains(g)) {
            bump(&self.counters.refused);
            return Err(Error::new(
                ErrorKind::NotMemoizable,
                format!(
                    "a call of `{}` in {} cannot be memoized: it can reach {}.{}, which is \
                     granted and not deterministic",
                    call.export(),
                    call.code().hash(),
                    abi::IMPORT_MODULE,
                    grant.import_name()
                ),
            )
            .with_code(call.code().hash())
            .with_export(call.export()));
        }
        let limits = caps.restrict(call.limits());
        let key = MemoKey::derive(
            &export.version,
            call.export(),
            call.env(),
            call.args(),
            &limits,
        );
        let fetched = match self.backend.get(&key) {
            Ok(fetched) => fetched,
            Err(e) => {
                bump(&self.counters.errors);
                tracing::warn!(%key, error = %e, "memo backend unreadable; running the call");
                Fetched::Absent
            }
        };
        let hit = match fetched {
            Fetched::Value(bytes) => match RecordedResult::from_bytes(&bytes)
                .ok()
                .and_then(|r| Some((r.to_result(call.code().hash(), call.export())?, r)))
            {
                Some((result, recorded)) => {
                    let within_budget = recorded
                        .fuel_used()
                        .is_none_or(|fuel| fuel <= limits.get_fuel());
                    let wanted = result.is_ok() || self.config.cache_errors;
                    (within_budget && wanted).then_some(result)
                }
                None => {
                    self.drop_corrupt(&key, "the stored result does not decode");
                    None
                }
            },
            Fetched::Absent => None,
            Fetched::Corrupt(reason) => {
                self.drop_corrupt(&key, &reason);
                None
            }
        };
        Ok(match hit {
            Some(result) => {
                bump(&self.counters.hits);
                MemoLookup::Hit(result)
            }
            None => {
                bump(&self.counters.misses);
                MemoLookup::Miss(MemoMiss {
                    key,
                    fuel: limits.get_fuel(),
                })
            }
        })
    }

    /// Stores the result of a call that missed, if it may be stored (returned values always;
    /// failures as [`MemoConfig::cache_errors`] says). Returns whether it was stored. A
    /// backend that fails is logged and counted, not returned.
    ///
    /// A result that used its whole fuel budget is not stored: wasmtime checks fuel only at
    /// function entries and loop heads, so a call may end a few units past its budget, and
    /// the fuel it reports is then the budget, not what it used.
    pub fn store(&self, miss: &MemoMiss, result: &Result<Outcome>) -> bool {
        if !self.cacheable(miss, result) {
            return false;
        }
        let bytes = RecordedResult::of(result).to_bytes();
        match self.backend.set(&miss.key, &bytes, self.config.ttl) {
            Ok(()) => {
                bump(&self.counters.stores);
                true
            }
            Err(e) => {
                bump(&self.counters.errors);
                tracing::warn!(key = %miss.key, error = %e, "cannot store a result in the memo");
                false
            }
        }
    }

    /// Stores several returned values at once (one transaction in backends that have them),
    /// for callers that ran the calls elsewhere (a pool's workers) and hold their results as
    /// [`RecordedResult`]s. Returns how many were stored. Failures are never stored this way:
    /// a recorded failure no longer says whether it was a stack overflow, which
    /// [`Memo::store`] must know.
    pub fn store_many(
        &self,
        results: impl IntoIterator<Item = (MemoMiss, RecordedResult)>,
    ) -> usize {
        let entries: Vec<(MemoKey, Vec<u8>)> = results
            .into_iter()
            .filter(|(miss, result)| match result {
                RecordedResult::Returned { fuel_used, .. } => *fuel_used < miss.fuel,
                RecordedResult::Failed { .. } => false,
            })
            .map(|(miss, result)| (miss.key, result.to_bytes()))
            .collect();
        if entries.is_empty() {
            return 0;
        }
        match self.backend.set_many(&entries, self.config.ttl) {
            Ok(()) => {
                self.counters
                    .stores
                    .fetch_add(entries.len() as u64, Ordering::Relaxed);
                entries.len()
            }
            Err(e) => {
                bump(&self.counters.errors);
                tracing::warn!(error = %e, entries = entries.len(), "cannot store results in the memo");
                0
            }
        }
    }

    /// The key of `call` for a runtime with caps `caps`, without looking it up.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::CodeNotFound`] when the call names its code by hash and the memo cannot
    /// find the module (see [`MemoConfig::code_store`]); [`ErrorKind::HashMismatch`] or
    /// [`ErrorKind::InvalidModule`] for inline code that is not the module it claims to be;
    /// [`ErrorKind::MissingExport`] when the module has no such export.
    pub fn key(&self, call: &Call, caps: &Limits) -> Result<MemoKey> {
        let export = self.export_info(call)?;
        Ok(MemoKey::derive(
            &export.version,
            call.export(),
            call.env(),
            call.args(),
            &caps.restrict(call.limits()),
        ))
    }

    /// What the memo did so far.
    pub fn stats(&self) -> MemoStats {
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        MemoStats {
            hits: get(&c.hits),
            misses: get(&c.misses),
            stores: get(&c.stores),
            corrupt: get(&c.corrupt),
            errors: get(&c.errors),
            refused: get(&c.refused),
        }
    }

    /// Removes every entry from the backend. Returns how many there were.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Io`] when the backend cannot be written.
    pub fn clear(&self) -> Result<u64> {
        self.backend
            .clear()
            .map_err(|e| Error::new(ErrorKind::Io, "cannot clear the memo").with_source(e))
    }

    fn cacheable(&self, miss: &MemoMiss, result: &Result<Outcome>) -> bool {
        let (kind_ok, fuel) = match result {
            Ok(outcome) => (true, Some(outcome.fuel_used())),
            Err(e) => (
                self.config.cache_errors && is_cacheable_error(e),
                e.fuel_used(),
            ),
        };
        kind_ok && fuel.is_none_or(|f| f < miss.fuel)
    }

    fn drop_corrupt(&self, key: &MemoKey, reason: &str) {
        bump(&self.counters.corrupt);
        tracing::warn!(%key, reason, "damaged memo entry; removing it and running the call");
        if let Err(e) = self.backend.remove(key) {
            bump(&self.counters.errors);
            tracing::warn!(%key, error = %e, "cannot remove a damaged memo entry");
        }
    }

    /// The version of the call's export and what it can reach, computed once per module and
    /// export.
    fn export_info(&self, call: &Call) -> Result<ExportInfo> {
        let module = self.module_info(call)?;
        let name = call.export();
        if let Some(info) = module.exports.lock().expect("memo poisoned").get(name) {
            return Ok(info.clone());
        }
        let version = module.code.export_version(name)?;
        let reaches = if module.nondeterministic.is_empty() {
            Vec::new()
        } else {
            reachable_nondeterministic(&module.code, name)?
        };
        let info = ExportInfo { version, reaches };
        module
            .exports
            .lock()
            .expect("memo poisoned")
            .insert(name.into(), info.clone());
        Ok(info)
    }

    fn module_info(&self, call: &Call) -> Result<Arc<ModuleInfo>> {
        let hash = call.code().hash();
        if let Some(info) = self.modules.lock().expect("memo poisoned").get(&hash) {
            return Ok(info.clone());
        }
        let loaded = self
            .loaded
            .read()
            .expect("memo modules poisoned")
            .get(&hash)
            .cloned();
        let code = match (loaded, call.code().wasm(), &self.config.code_store) {
            (Some(code), _, _) => code,
            (None, Some(wasm), _) => {
                let code = Code::new(wasm.clone())?;
                if code.hash() != hash {
                    return Err(Error::new(
                        ErrorKind::HashMismatch,
                        format!(
                            "module bytes hash to {}, but the pickle names {hash}",
                            code.hash()
                        ),
                    )
                    .with_code(hash));
                }
                code
            }
            (None, None, Some(store)) => store.fetch(&hash)?,
            (None, None, None) => {
                return Err(Error::new(
                    ErrorKind::CodeNotFound,
                    format!(
                        "the memo cannot key a call of code {hash}: the call names its code by \
                         hash, and the memo has no code store or loaded module with it"
                    ),
                )
                .with_code(hash));
            }
        };
        let info = Arc::new(ModuleInfo {
            nondeterministic: nondeterministic_imports(&code),
            code,
            exports: Mutex::default(),
        });
        self.modules
            .lock()
            .expect("memo poisoned")
            .put(hash, info.clone());
        Ok(info)
    }
}

impl fmt::Debug for Memo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Memo")
            .field("backend", &self.backend)
            .field("config", &self.config)
            .field("stats", &self.stats())
            .finish()
    }
}

/// The non-deterministic grants that `export` of `code` can reach: the imports of the module
/// shaken to the export (and the guest contract's exports, as for its version). Only modules
/// importing something non-deterministic at all need the shake.
pub(crate) fn reachable_nondeterministic(code: &Code, export: &str) -> Result<Vec<Grant>> {
    if nondeterministic_imports(code).is_empty() {
        return Ok(Vec::new());
    }
    let mut keep = vec![export];
    keep.extend(
        [
            abi::MEMORY_EXPORT,
            abi::ALLOC_EXPORT,
            abi::FREE_EXPORT,
            abi::PANIC_SLOT_EXPORT,
        ]
        .into_iter()
        .filter(|c| *c != export && code.exports().iter().any(|e| e.name == *c)),
    );
    let shaken = Code::new(crate::shake::shake(code.wasm(), &keep)?)?;
    Ok(nondeterministic_imports(&shaken))
}

/// The non-deterministic grants a module imports.
fn nondeterministic_imports(code: &Code) -> Vec<Grant> {
    let mut grants: Vec<Grant> = code
        .imports()
        .iter()
        .filter(|i| i.module == abi::IMPORT_MODULE)
        .filter_map(|i| Grant::from_import_name(&i.name))
        .filter(|g| !g.is_deterministic())
        .collect();
    grants.sort();
    grants.dedup();
    grants
}

/// Whether a failure is a property of the call alone, given the memory and table caps in the
/// key and the fuel check on hits (see the module docs).
pub(crate) fn is_cacheable_error(e: &Error) -> bool {
    match e.kind() {
        ErrorKind::GuestError
        | ErrorKind::GuestPanic
        | ErrorKind::BadInput
        | ErrorKind::AbiViolation
        | ErrorKind::WrongSignature
        | ErrorKind::MemoryLimit => true,
        // How deep the stack goes before it overflows depends on the native frames below
        // the guest's, which differ between builds and machines.
        ErrorKind::Trap => !is_stack_overflow(e),
        _ => false,
    }
}

pub(crate) fn is_stack_overflow(e: &Error) -> bool {
    std::error::Error::source(e)
        .and_then(|s| s.downcast_ref::<wasmtime::Trap>())
        .is_some_and(|t| *t == wasmtime::Trap::StackOverflow)
}

/// Milliseconds since the Unix epoch, now.
pub(crate) fn unix_ms_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The framing of an entry in a persistent backend (`docs/memo.md`, "Entries").
pub(crate) mod entry {
    use sha2::{Digest, Sha256};

    use super::MemoKey;

    pub(crate) const MAGIC: [u8; 4] = *b"wpm\x01";
    pub(crate) const HEADER: usize = 4 + 8 + 32;

    fn checksum(key: &MemoKey, expiry: &[u8], value: &[u8]) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(b"wasmpickle memo entry\0");
        h.update(key.as_bytes());
        h.update(expiry);
        h.update(value);
        h.finalize().into()
    }

    /// Frames `value`, to expire at `expires_ms` (Unix milliseconds; 0 for never).
    pub(crate) fn seal(key: &MemoKey, value: &[u8], expires_ms: u64) -> Vec<u8> {
        let expiry = expires_ms.to_le_bytes();
        let mut out = Vec::with_capacity(HEADER + value.len());
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&expiry);
        out.extend_from_slice(&checksum(key, &expiry, value));
        out.extend_from_slice(value);
        out
    }

    /// What an entry holds.
    pub(crate) enum Opened<'a> {
        Live(&'a [u8]),
        Expired,
    }

    /// Checks an entry stored under `key`, at `now_ms`.
    pub(crate) fn open<'a>(
        key: &MemoKey,
        bytes: &'a [u8],
        now_ms: u64,
    ) -> Result<Opened<'a>, String> {
        if bytes.len() < HEADER {
            return Err(format!(
                "entry of {} bytes, shorter than its header",
                bytes.len()
            ));
        }
        if bytes[..4] != MAGIC {
            return Err(format!(
                "entry starts with {:02x?}, not the magic",
                &bytes[..4]
            ));
        }
        let expiry = &bytes[4..12];
        let value = &bytes[HEADER..];
        if bytes[12..HEADER] != checksum(key, expiry, value) {
            return Err("entry fails its checksum".to_owned());
        }
        let expires = u64::from_le_bytes(expiry.try_into().expect("8 bytes"));
        if expires != 0 && expires <= now_ms {
            return Ok(Opened::Expired);
        }
        Ok(Opened::Live(value))
    }

    /// The expiry of an entry stored at `now_ms` with `ttl`: 0 for never, otherwise at least
    /// one millisecond ahead.
    pub(crate) fn expiry(now_ms: u64, ttl: Option<std::time::Duration>) -> u64 {
        match ttl {
            None => 0,
            Some(ttl) => now_ms
                .saturating_add(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX))
                .max(now_ms + 1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_separate_every_part() {
        let v = CodeHash::digest(b"v");
        let l = Limits::default();
        let k = MemoKey::derive(&v, "f", b"ab", b"c", &l);
        assert_eq!(k, MemoKey::derive(&v, "f", b"ab", b"c", &l));
        // Moving a byte between the environment and the arguments is another call.
        assert_ne!(k, MemoKey::derive(&v, "f", b"a", b"bc", &l));
        assert_ne!(k, MemoKey::derive(&v, "g", b"ab", b"c", &l));
        assert_ne!(
            k,
            MemoKey::derive(&CodeHash::digest(b"w"), "f", b"ab", b"c", &l)
        );
        assert_ne!(
            k,
            MemoKey::derive(&v, "f", b"ab", b"c", Limits::new().max_memory(1 << 20))
        );
        // Fuel and deadline are not observable by a guest and stay out of the key.
        assert_eq!(
            k,
            MemoKey::derive(
                &v,
                "f",
                b"ab",
                b"c",
                Limits::new().fuel(7).deadline(Duration::from_millis(3))
            )
        );
    }

    #[test]
    fn entries_check_key_value_and_expiry() {
        let key = MemoKey::from_bytes([7; 32]);
        let sealed = entry::seal(&key, b"value", 0);
        assert!(matches!(
            entry::open(&key, &sealed, u64::MAX),
            Ok(entry::Opened::Live(b"value"))
        ));
        assert!(entry::open(&MemoKey::from_bytes([8; 32]), &sealed, 0).is_err());
        for i in 0..sealed.len() * 8 {
            let mut b = sealed.clone();
            b[i / 8] ^= 1 << (i % 8);
            assert!(entry::open(&key, &b, 0).is_err(), "bit {i}");
        }
        for cut in 0..sealed.len() {
            assert!(
                entry::open(&key, &sealed[..cut], 0).is_err(),
                "cut at {cut}"
            );
        }
        let expiring = entry::seal(&key, b"v", 1000);
        assert!(matches!(
            entry::open(&key, &expiring, 999),
            Ok(entry::Opened::Live(_))
        ));
        assert!(matches!(
            entry::open(&key, &expiring, 1000),
            Ok(entry::Opened::Expired)
        ));
    }
}

//! The sandbox: one engine, compiled modules cached by hash, a fresh instance per call.

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::Duration;

use serde::Deserialize;
use wasmpickle_format::abi;
use wasmpickle_format::{
    Call, CodeHash, CodeRef, DecodeLimits, Header, Keyring, PickleKind, SignedCall,
};
use wasmtime::{
    Engine, ExternType, InstanceAllocationStrategy, InstancePre, Linker, Module, ModuleExport,
    PoolingAllocationConfig,
};

use crate::cache::{CompiledCache, Counters, Lookup, ModuleTable, RuntimeStats};
use crate::code::{Code, canonical_hash, missing_export};
use crate::error::{Error, ErrorKind, Result};
use crate::limits::{Grant, Limits};
use crate::sandbox::{self, Sandbox};
use crate::store::CodeStore;

const WASM_PAGE: u64 = 64 << 10;

/// Table elements a pool slot can hold, whatever the runtime's cap (which the limiter
/// enforces). 8 MiB of address space per slot, touched only as far as a table reaches.
const POOL_TABLE_ELEMENTS: u64 = 1 << 20;

/// How a [`Runtime`] is set up. Every setting states its default.
#[derive(Clone, Debug)]
pub struct RuntimeConfig {
    limits: Limits,
    pub(crate) keyring: Option<Keyring>,
    grants: Vec<Grant>,
    max_concurrent_calls: u32,
    pub(crate) max_objects: usize,
    max_module_bytes: usize,
    pub(crate) epoch_tick: Duration,
    code_store: Option<Arc<dyn CodeStore>>,
    compiled_cache: Option<PathBuf>,
    max_cached_modules: usize,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            limits: Limits::default(),
            keyring: None,
            grants: Vec::new(),
            max_concurrent_calls: 64,
            max_objects: 64,
            max_module_bytes: 64 << 20,
            epoch_tick: Duration::from_millis(10),
            code_store: None,
            compiled_cache: None,
            max_cached_modules: 256,
        }
    }
}

impl RuntimeConfig {
    /// The defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// The limits every call gets, and the cap on what a call may request. Default:
    /// [`Limits::default`].
    pub fn limits(&mut self, limits: Limits) -> &mut Self {
        self.limits = limits;
        self
    }

    /// Runs only calls signed with a key in `keys` ([`Call::sign`]); unsigned, unknown-key and
    /// tampered pickles are refused with [`ErrorKind::Signature`] before anything is decoded
    /// or compiled. Default: signatures are not required (and not checked).
    pub fn require_signatures(&mut self, keys: Keyring) -> &mut Self {
        self.keyring = Some(keys);
        self
    }

    /// Lets modules import `grant`. Default: nothing is granted, and a module that imports
    /// anything is refused.
    pub fn grant(&mut self, grant: Grant) -> &mut Self {
        if !self.grants.contains(&grant) {
            self.grants.push(grant);
            self.grants.sort();
        }
        self
    }

    /// How many calls may run at once; further calls wait for a slot. Each slot reserves
    /// address space (not memory) for one instance in the pooling allocator. Default: 64.
    pub fn max_concurrent_calls(&mut self, n: u32) -> &mut Self {
        self.max_concurrent_calls = n.max(1);
        self
    }

    /// How many live [`Object`](crate::Object)s the runtime may hold at once; each keeps an
    /// instance (and reserves its address space) for as long as it lives, apart from the
    /// slots of [`max_concurrent_calls`](RuntimeConfig::max_concurrent_calls). Beyond it,
    /// [`Runtime::spawn`] and [`Runtime::restore`] fail with [`ErrorKind::ObjectLimit`].
    /// Default: 64.
    pub fn max_objects(&mut self, n: usize) -> &mut Self {
        self.max_objects = n;
        self
    }

    /// The largest module the runtime will compile, in bytes; compiling is the one step whose
    /// cost the guest controls before any limit applies. Default: 64 MiB.
    pub fn max_module_bytes(&mut self, bytes: usize) -> &mut Self {
        self.max_module_bytes = bytes;
        self
    }

    /// How often the deadline timer ticks; deadlines fire up to one tick late. Default: 10 ms.
    pub fn epoch_tick(&mut self, tick: Duration) -> &mut Self {
        self.epoch_tick = tick.max(Duration::from_millis(1));
        self
    }

    /// Resolves calls that name their code by hash through `store`, and puts the modules that
    /// arrive inline or through [`Runtime::load`] into it, so that a module crosses to this
    /// receiver once and later calls need only its hash. Every module read from the store is
    /// checked against its hash before it is compiled. Default: no store; a by-hash call then
    /// runs only when its module was loaded or arrived inline earlier (and is still in the
    /// module table, or in the compiled cache).
    pub fn code_store(&mut self, store: Arc<dyn CodeStore>) -> &mut Self {
        self.code_store = Some(store);
        self
    }

    /// Keeps compiled modules in the directory `dir` (created if missing, private to its
    /// owner), so that a module compiled by one process is mapped into the next in well
    /// under a millisecond instead of compiled again. Default: none, and every process
    /// compiles the modules it runs.
    ///
    /// Compiled code is native code, and loading it is not sandboxed, so the cache loads
    /// only artifacts it wrote itself: each carries a MAC (keyed BLAKE3) under a secret key
    /// kept in the directory, over the artifact, the engine configuration's fingerprint and
    /// the code hash, checked before wasmtime sees a byte. A damaged or foreign artifact, or
    /// one for another configuration or module, is compiled again and overwritten. One
    /// directory can be shared by any number of runtimes and processes of the same user;
    /// `docs/storage.md` specifies the layout.
    pub fn compiled_cache(&mut self, dir: impl Into<PathBuf>) -> &mut Self {
        self.compiled_cache = Some(dir.into());
        self
    }

    /// How many compiled modules the runtime keeps in memory; beyond that, the least recently
    /// used is dropped (and found again in the compiled cache or code store when called
    /// again; without either, a by-hash call for it then fails with
    /// [`ErrorKind::CodeNotFound`]). A compiled module takes a few times its wasm size.
    /// Default: 256.
    pub fn max_cached_modules(&mut self, n: usize) -> &mut Self {
        self.max_cached_modules = n.max(1);
        self
    }
}

/// Runs pickled calls in a wasmtime sandbox.
///
/// A `Runtime` owns one wasmtime engine and is meant to live as long as the process: create
/// it once and share it (`Clone` is cheap, and it is `Send + Sync`). Each module is verified
/// against its hash and compiled once, then every call gets a fresh instance from a pooling
/// allocator, so nothing a call does is visible to the next and a trapped instance is never
/// reused.
#[derive(Clone)]
pub struct Runtime {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) engine: Engine,
    linker: Linker<Sandbox>,
    pub(crate) config: RuntimeConfig,
    pub(crate) objects: AtomicUsize,
    modules: ModuleTable<Arc<Compiled>>,
    compiling: Mutex<HashMap<CodeHash, Arc<Mutex<()>>>>,
    cache: Option<CompiledCache>,
    stats: Counters,
    slots: Slots,
    ticker_stop: Arc<AtomicBool>,
    ticker: Option<thread::JoinHandle<()>>,
}

/// A module compiled and linked, with its ABI exports resolved once.
pub(crate) struct Compiled {
    pub(crate) hash: CodeHash,
    pub(crate) pre: InstancePre<Sandbox>,
    pub(crate) memory: ModuleExport,
    pub(crate) alloc: ModuleExport,
    pub(crate) panic_slot: Option<ModuleExport>,
    pub(crate) exports: HashMap<Box<str>, Entry>,
    pub(crate) min_memory_bytes: u64,
    pub(crate) min_table_elements: u64,
}

pub(crate) enum Entry {
    Pickled(ModuleExport),
    Other(String),
}

/// Where the code of a module not yet in the table can come from, besides the compiled cache
/// and the code store.
enum Source<'a> {
    /// A call's code: inline bytes, not yet checked against the hash, or the hash alone.
    Call(Option<&'a Arc<[u8]>>),
    /// A module given to [`Runtime::load`], hashed when it was made.
    Code(&'a Code),
    /// The variant of a module that objects are instantiated from (`object.rs`), compiled
    /// under [`object_key`](crate::object::object_key) of its hash and never stored.
    Object(&'a Code),
}

impl Runtime {
    /// A runtime with the given configuration.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Runtime`] when wasmtime cannot set up the engine (for example when the
    /// pooling allocator cannot reserve address space); [`ErrorKind::Io`] when the compiled
    /// cache's directory cannot be created or its key read.
    pub fn new(config: &RuntimeConfig) -> Result<Runtime> {
        let limits = config.limits;
        let mut pool = PoolingAllocationConfig::new();
        let slots = config.max_concurrent_calls;
        // Objects keep their instances; they get slots of their own.
        let instances = slots.saturating_add(u32::try_from(config.max_objects).unwrap_or(u32::MAX));
        // The pool's own bounds are kept generous: a slot already reserves 4 GiB of address
        // space for a 32-bit memory, so allowing it all costs nothing, and the real caps are
        // enforced per call by the store's limiter. A module the caps forbid is then refused
        // with `MemoryLimit` when it is called, not as "invalid" when it is compiled.
        pool.total_core_instances(instances)
            .total_memories(instances)
            .total_tables(instances)
            .max_memories_per_module(1)
            .max_tables_per_module(1)
            .max_memory_size(1 << 32)
            .table_elements(
                usize::try_from(limits.get_max_table_elements().max(POOL_TABLE_ELEMENTS))
                    .unwrap_or(usize::MAX),
            )
            // Reset pages by memset rather than madvise when a slot is reused: fresh-instance
            // cost is dominated by page faults, and a small guest touches less than this.
            .linear_memory_keep_resident(256 << 10)
            .table_keep_resident(64 << 10);

        let mut wasm = wasmtime::Config::new();
        wasm.consume_fuel(true)
            .epoch_interruption(true)
            .cranelift_nan_canonicalization(true)
            // Threads are off because the `threads` feature of wasmtime is not compiled in.
            .wasm_relaxed_simd(false)
            .wasm_multi_memory(false)
            .parallel_compilation(true)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&wasm).map_err(|e| {
            Error::new(ErrorKind::Runtime, "cannot configure the engine")
                .with_source(e.into_boxed_dyn_error())
        })?;

        let cache = match &config.compiled_cache {
            Some(dir) => Some(CompiledCache::open(dir, &engine)?),
            None => None,
        };

        let mut linker = Linker::new(&engine);
        for grant in &config.grants {
            sandbox::define_grant(&mut linker, *grant).map_err(|e| {
                Error::new(ErrorKind::Runtime, format!("cannot define {grant:?}: {e}"))
            })?;
        }

        // The deadline is enforced with epochs: a thread bumps the engine's epoch every tick
        // and each store traps once its deadline's worth of ticks has passed. It holds a
        // clone of the engine, so it is stopped explicitly when the runtime is dropped.
        let ticker_stop = Arc::new(AtomicBool::new(false));
        let ticker = {
            let engine = engine.clone();
            let stop = ticker_stop.clone();
            let tick = config.epoch_tick;
            thread::Builder::new()
                .name("wasmpickle-epoch".into())
                .spawn(move || {
                    while !stop.load(Ordering::Acquire) {
                        thread::park_timeout(tick);
                        engine.increment_epoch();
                    }
                })
                .map_err(|e| {
                    Error::new(ErrorKind::Runtime, "cannot start the epoch timer").with_source(e)
                })?
        };

        Ok(Runtime {
            inner: Arc::new(Inner {
                engine,
                linker,
                config: config.clone(),
                modules: ModuleTable::new(config.max_cached_modules),
                compiling: Mutex::new(HashMap::new()),
                cache,
                stats: Counters::default(),
                objects: AtomicUsize::new(0),
                slots: Slots::new(slots),
                ticker_stop,
                ticker: Some(ticker),
            }),
        })
    }

    /// The limits every call gets, and the cap on what a call may request.
    pub fn limits(&self) -> &Limits {
        &self.inner.config.limits
    }

    /// The host functions modules may import.
    pub fn grants(&self) -> &[Grant] {
        &self.inner.config.grants
    }

    /// Compiles `code` ahead of the first call, so that calls which carry only its hash can
    /// run.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidModule`], [`ErrorKind::ForbiddenImport`] or
    /// [`ErrorKind::AbiViolation`] when the sandbox will not run the module.
    pub fn load(&self, code: &Code) -> Result<()> {
        self.compiled(code.hash(), Source::Code(code)).map(drop)
    }

    /// True when a module with this hash is compiled and ready in memory.
    pub fn contains(&self, hash: &CodeHash) -> bool {
        self.inner.modules.contains(hash)
    }

    /// Drops the compiled form of a module from memory (not from the compiled cache or the
    /// code store). Calls already running are not affected.
    pub fn forget(&self, hash: &CodeHash) -> bool {
        self.inner.modules.remove(hash)
    }

    /// Where this runtime's modules came from so far: how many were compiled, found in
    /// memory, loaded from the compiled cache or read from the code store.
    pub fn stats(&self) -> RuntimeStats {
        self.inner.stats.snapshot()
    }

    /// Runs a call in a fresh sandbox and returns its result.
    ///
    /// The module is looked up by hash in the runtime's module table, then in its compiled
    /// cache; failing both, its code (inline in the call, or from the code store) is
    /// verified against the hash and compiled. Inline code is put into the code store.
    ///
    /// # Errors
    ///
    /// Every failure has a kind: [`ErrorKind::CodeNotFound`] (naming the hash),
    /// [`ErrorKind::StoreCorrupt`], [`ErrorKind::HashMismatch`],
    /// [`ErrorKind::MissingExport`], [`ErrorKind::WrongSignature`], [`ErrorKind::BadInput`],
    /// [`ErrorKind::GuestError`], [`ErrorKind::GuestPanic`], [`ErrorKind::Trap`],
    /// [`ErrorKind::OutOfFuel`], [`ErrorKind::Deadline`], [`ErrorKind::MemoryLimit`],
    /// [`ErrorKind::AbiViolation`], and those of [`Runtime::load`].
    pub fn run(&self, call: &Call) -> Result<Outcome> {
        if self.inner.config.keyring.is_some() {
            return Err(Error::new(
                ErrorKind::Signature,
                "this runtime only runs signed calls; use run_signed or run_bytes",
            ));
        }
        self.run_verified(call)
    }

    /// Checks a signed call's signature (when the runtime requires signatures) and runs it.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Signature`] when the key is unknown or the signature does not match, then
    /// as [`Runtime::run`].
    pub fn run_signed(&self, signed: &SignedCall) -> Result<Outcome> {
        let limits = DecodeLimits::default();
        let call = match &self.inner.config.keyring {
            Some(keys) => signed.verify(keys, &limits)?,
            // Nothing to check against: the call runs as if it were unsigned.
            None => Call::from_bytes_with(signed.call_bytes(), &limits)?,
        };
        self.run_verified(&call)
    }

    fn run_verified(&self, call: &Call) -> Result<Outcome> {
        let compiled = self.resolve(call.code())?;
        let func = match compiled.exports.get(call.export()) {
            Some(Entry::Pickled(func)) => func,
            Some(Entry::Other(what)) => {
                return Err(Error::new(
                    ErrorKind::WrongSignature,
                    format!(
                        "export `{}` of {} is {what}, not a function (i32, i32, i32, i32) -> i64",
                        call.export(),
                        compiled.hash
                    ),
                )
                .with_code(compiled.hash)
                .with_export(call.export()));
            }
            None => {
                return Err(missing_export(
                    compiled.hash,
                    call.export(),
                    compiled.exports.iter().filter_map(|(name, e)| match e {
                        Entry::Pickled(_) => Some(&**name),
                        Entry::Other(_) => None,
                    }),
                ));
            }
        };
        let limits = self.limits().restrict(call.limits());
        let ticks = ticks_for(limits.get_deadline(), self.inner.config.epoch_tick);
        let _slot = self.inner.slots.acquire();
        sandbox::invoke(&self.inner.engine, &compiled, func, call, &limits, ticks)
    }

    /// Decodes a call pickle, signed or not, and runs it; see [`Runtime::run`] and
    /// [`Runtime::run_signed`]. With signatures required, the signature is checked before
    /// anything else is decoded.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Decode`] or [`ErrorKind::Version`] for bytes that are not a call pickle
    /// this build reads, [`ErrorKind::Signature`] as for [`Runtime::run_signed`], then as
    /// [`Runtime::run`].
    pub fn run_bytes(&self, pickle: &[u8]) -> Result<Outcome> {
        match Header::read(pickle)?.kind {
            PickleKind::SignedCall => self.run_signed(&SignedCall::from_bytes(pickle)?),
            _ => self.run(&Call::from_bytes(pickle)?),
        }
    }

    /// The module an object is made from: inline in its constructor call, or from the code
    /// store. (A compiled module alone is not enough: a snapshot is made from the bytes.)
    pub(crate) fn object_code(&self, code: &CodeRef) -> Result<Code> {
        let hash = code.hash();
        if let Some(wasm) = code.wasm() {
            let code = self.verify_inline(hash, wasm)?;
            self.put_in_store(&code);
            return Ok(code);
        }
        let found = match &self.inner.config.code_store {
            Some(store) => store.get(&hash)?,
            None => None,
        };
        match found {
            Some(code) if code.hash() == hash => Ok(code),
            Some(code) => Err(Error::new(
                ErrorKind::StoreCorrupt,
                format!("the code store returned {} for {hash}", code.hash()),
            )
            .with_code(hash)),
            None => Err(Error::new(
                ErrorKind::CodeNotFound,
                format!(
                    "code {hash} is not in this runtime's code store; an object's code must \
                     travel inline or be stored"
                ),
            )
            .with_code(hash)),
        }
    }

    /// The compiled object variant of `code`.
    pub(crate) fn object_compiled(&self, code: &Code) -> Result<Arc<Compiled>> {
        self.compiled(crate::object::object_key(code.hash()), Source::Object(code))
            .map_err(|e| match e.code_hash() {
                // Errors name the module, not its internal variant.
                Some(_) => e.with_code(code.hash()),
                None => e,
            })
    }

    /// Puts `code` into the code store, if there is one.
    pub(crate) fn put_code(&self, code: &Code) {
        self.put_in_store(code);
    }

    fn resolve(&self, code: &CodeRef) -> Result<Arc<Compiled>> {
        self.compiled(code.hash(), Source::Call(code.wasm()))
    }

    fn cached(&self, hash: &CodeHash) -> Option<Arc<Compiled>> {
        let compiled = self.inner.modules.get(hash)?;
        Counters::bump(&self.inner.stats.memory_hits);
        Some(compiled)
    }

    /// Finds or builds the module `hash` names, building it at most once even when several
    /// threads ask at once.
    fn compiled(&self, hash: CodeHash, source: Source<'_>) -> Result<Arc<Compiled>> {
        if let Some(c) = self.cached(&hash) {
            return Ok(c);
        }
        let gate = self
            .inner
            .compiling
            .lock()
            .expect("compile gates poisoned")
            .entry(hash)
            .or_default()
            .clone();
        let result = {
            let _held = gate.lock().expect("compile gate poisoned");
            match self.cached(&hash) {
                Some(c) => Ok(c),
                None => self.build(hash, source).map(|c| {
                    let c = Arc::new(c);
                    let evicted = self.inner.modules.insert(hash, c.clone());
                    Counters::add(&self.inner.stats.evictions, evicted as u64);
                    c
                }),
            }
        };
        self.inner
            .compiling
            .lock()
            .expect("compile gates poisoned")
            .remove(&hash);
        result
    }

    /// A module not in the table: from the compiled cache, or compiled from its code (which
    /// then goes into the compiled cache and the code store).
    fn build(&self, hash: CodeHash, source: Source<'_>) -> Result<Compiled> {
        let stats = &self.inner.stats;
        // The cache is keyed by the hash the call names, so a hit skips hashing the inline
        // bytes too: as with the module table, the hash is the identity, and inline bytes are
        // only one way to obtain the code it names.
        if let Some(cache) = &self.inner.cache {
            match cache.load(&self.inner.engine, &hash) {
                Lookup::Hit(module) => {
                    Counters::bump(&stats.disk_hits);
                    self.keep_in_store(hash, &source);
                    return self.link(hash, module);
                }
                Lookup::Miss => {
                    Counters::bump(&stats.disk_misses);
                    tracing::debug!(code = %hash, "compiled cache miss");
                }
                Lookup::Rejected(reason) => {
                    Counters::bump(&stats.disk_misses);
                    Counters::bump(&stats.disk_rejects);
                    tracing::debug!(
                        code = %hash,
                        %reason,
                        "compiled cache artifact rejected; compiling again"
                    );
                }
            }
        }
        let (wasm, verified) = self.code_for(hash, source)?;
        let module = self.compile(hash, &wasm, verified)?;
        if let Some(cache) = &self.inner.cache {
            // The cache only saves time; a full disk must not fail the call.
            match cache.store(&hash, &module) {
                Ok(()) => Counters::bump(&stats.disk_writes),
                Err(e) => {
                    tracing::warn!(code = %hash, error = %e, "cannot write to the compiled cache");
                }
            }
        }
        self.link(hash, module)
    }

    /// The bytes of the module `hash` names, and whether they are known to hash to it.
    fn code_for(&self, hash: CodeHash, source: Source<'_>) -> Result<(Arc<[u8]>, bool)> {
        let store = self.inner.config.code_store.as_ref();
        match source {
            Source::Code(code) => {
                self.put_in_store(code);
                Ok((code.wasm().clone(), true))
            }
            Source::Object(code) => Ok((crate::object::expose(code)?.into(), true)),
            // With a store, inline bytes are made into a `Code` (validated and hashed) so
            // that they can be stored; without one, `compile` checks the hash alone.
            Source::Call(Some(wasm)) if store.is_some() => {
                let code = self.verify_inline(hash, wasm)?;
                self.put_in_store(&code);
                Ok((code.wasm().clone(), true))
            }
            Source::Call(Some(wasm)) => Ok((wasm.clone(), false)),
            Source::Call(None) => {
                let Some(store) = store else {
                    return Err(Error::new(
                        ErrorKind::CodeNotFound,
                        format!("code {hash} is not loaded in this runtime"),
                    )
                    .with_code(hash));
                };
                match store.get(&hash)? {
                    // A `Code` is hashed when it is made, so this holds for any store; it is
                    // checked because a store is not trusted to return what was asked for.
                    Some(code) if code.hash() == hash => {
                        Counters::bump(&self.inner.stats.store_reads);
                        tracing::debug!(code = %hash, "read module from the code store");
                        Ok((code.wasm().clone(), true))
                    }
                    Some(code) => Err(Error::new(
                        ErrorKind::StoreCorrupt,
                        format!("the code store returned {} for {hash}", code.hash()),
                    )
                    .with_code(hash)),
                    None => Err(Error::new(
                        ErrorKind::CodeNotFound,
                        format!(
                            "code {hash} is not loaded in this runtime and not in its code store"
                        ),
                    )
                    .with_code(hash)),
                }
            }
        }
    }

    /// Validates and hashes inline bytes claimed to be the module `hash`.
    fn verify_inline(&self, hash: CodeHash, wasm: &Arc<[u8]>) -> Result<Code> {
        self.check_size(hash, wasm.len())?;
        let code = Code::new(wasm.clone()).map_err(|e| {
            Error::new(e.kind(), format!("module claimed as {hash} is not valid"))
                .with_code(hash)
                .with_source(e)
        })?;
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
        Ok(code)
    }

    /// Puts a module into the code store, if there is one. Storing only saves the next
    /// sender from shipping the code again, so a failure is logged, not returned.
    fn put_in_store(&self, code: &Code) {
        let Some(store) = &self.inner.config.code_store else {
            return;
        };
        match store.put(code) {
            Ok(true) => Counters::bump(&self.inner.stats.store_puts),
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(
                    code = %code.hash(),
                    error = %e,
                    "cannot put module into the code store"
                );
            }
        }
    }

    /// After a compiled-cache hit, stores the call's code if the store lacks it. Checked by
    /// name first, so the hit stays cheap when the store has it.
    fn keep_in_store(&self, hash: CodeHash, source: &Source<'_>) {
        let Some(store) = &self.inner.config.code_store else {
            return;
        };
        if store.contains(&hash).unwrap_or(false) {
            return;
        }
        match source {
            Source::Code(code) => self.put_in_store(code),
            Source::Call(Some(wasm)) => match self.verify_inline(hash, wasm) {
                Ok(code) => self.put_in_store(&code),
                Err(e) => tracing::debug!(code = %hash, error = %e, "inline code not stored"),
            },
            Source::Call(None) | Source::Object(_) => {}
        }
    }

    fn check_size(&self, hash: CodeHash, len: usize) -> Result<()> {
        let max = self.inner.config.max_module_bytes;
        if len > max {
            return Err(Error::new(
                ErrorKind::InvalidModule,
                format!("module {hash} is {len} bytes, more than this runtime compiles ({max})"),
            )
            .with_code(hash));
        }
        Ok(())
    }

    fn compile(&self, hash: CodeHash, wasm: &[u8], verified: bool) -> Result<Module> {
        self.check_size(hash, wasm.len())?;
        // The hash is checked before the compiler sees a byte: a pickle whose code does not
        // match its address is refused, never run under a name it does not have.
        if !verified {
            let actual = canonical_hash(wasm).map_err(|e| {
                Error::new(
                    ErrorKind::InvalidModule,
                    format!("module claimed as {hash} is not valid"),
                )
                .with_code(hash)
                .with_source(e)
            })?;
            if actual != hash {
                return Err(Error::new(
                    ErrorKind::HashMismatch,
                    format!("module bytes hash to {actual}, but the pickle names {hash}"),
                )
                .with_code(hash));
            }
        }
        Counters::bump(&self.inner.stats.compiles);
        let started = std::time::Instant::now();
        let module = Module::new(&self.inner.engine, wasm).map_err(|e| {
            Error::new(
                ErrorKind::InvalidModule,
                format!("module {hash} does not compile"),
            )
            .with_code(hash)
            .with_source(e.into_boxed_dyn_error())
        })?;
        tracing::debug!(code = %hash, bytes = wasm.len(), ms = started.elapsed().as_secs_f64() * 1e3, "compiled module");
        Ok(module)
    }

    fn link(&self, hash: CodeHash, module: Module) -> Result<Compiled> {
        let imports: Vec<String> = module
            .imports()
            .map(|i| format!("{}.{}", i.module(), i.name()))
            .collect();
        let refused: Vec<String> = module
            .imports()
            .filter(|i| {
                i.module() != abi::IMPORT_MODULE
                    || !Grant::from_import_name(i.name())
                        .is_some_and(|g| self.grants().contains(&g))
            })
            .map(|i| format!("{}.{}", i.module(), i.name()))
            .collect();
        if !refused.is_empty() {
            return Err(Error::new(
                ErrorKind::ForbiddenImport,
                format!(
                    "module {hash} imports {}, which this runtime does not grant (its imports: {})",
                    refused.join(", "),
                    imports.join(", ")
                ),
            )
            .with_code(hash)
            .with_imports(imports));
        }
        let pre = self.inner.linker.instantiate_pre(&module).map_err(|e| {
            Error::new(
                ErrorKind::ForbiddenImport,
                format!("module {hash} cannot be linked"),
            )
            .with_code(hash)
            .with_imports(imports.clone())
            .with_source(e.into_boxed_dyn_error())
        })?;

        let abi_export = |name: &str, what: &str| {
            module.get_export_index(name).ok_or_else(|| {
                Error::new(
                    ErrorKind::AbiViolation,
                    format!("module {hash} does not export {what} `{name}` (see docs/abi.md)"),
                )
                .with_code(hash)
            })
        };
        let mut exports = HashMap::new();
        let mut memory_ok = false;
        let mut alloc_ok = false;
        for export in module.exports() {
            let ty = export.ty();
            let entry = match ty.func() {
                Some(f) if sandbox::is_pickled(f) => Entry::Pickled(
                    module
                        .get_export_index(export.name())
                        .expect("the export was just listed"),
                ),
                Some(f) => {
                    if export.name() == abi::ALLOC_EXPORT {
                        alloc_ok = sandbox::is_alloc(f);
                    }
                    Entry::Other(format!("a function {f}"))
                }
                None => {
                    if export.name() == abi::MEMORY_EXPORT {
                        memory_ok = ty.memory().is_some_and(|m| !m.is_64() && !m.is_shared());
                    }
                    Entry::Other(
                        match ty {
                            ExternType::Memory(_) => "a memory",
                            ExternType::Global(_) => "a global",
                            ExternType::Table(_) => "a table",
                            _ => "not a function",
                        }
                        .to_owned(),
                    )
                }
            };
            exports.insert(export.name().into(), entry);
        }
        let memory = abi_export(abi::MEMORY_EXPORT, "a 32-bit memory")?;
        let alloc = abi_export(abi::ALLOC_EXPORT, "the function (i32) -> i32")?;
        if !memory_ok {
            return Err(Error::new(
                ErrorKind::AbiViolation,
                format!("module {hash} exports `memory`, but not as a 32-bit unshared memory"),
            )
            .with_code(hash));
        }
        if !alloc_ok {
            return Err(Error::new(
                ErrorKind::AbiViolation,
                format!(
                    "module {hash} exports `{}`, but not as a function (i32) -> i32",
                    abi::ALLOC_EXPORT
                ),
            )
            .with_code(hash));
        }
        let panic_slot = module
            .exports()
            .find(|e| e.name() == abi::PANIC_SLOT_EXPORT && e.ty().global().is_some())
            .and_then(|e| module.get_export_index(e.name()));
        let required = module.resources_required();
        Ok(Compiled {
            hash,
            pre,
            memory,
            alloc,
            panic_slot,
            exports,
            min_memory_bytes: required
                .max_initial_memory_size
                .unwrap_or(0)
                .saturating_mul(WASM_PAGE),
            min_table_elements: required.max_initial_table_size.unwrap_or(0),
        })
    }
}

impl fmt::Debug for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Runtime")
            .field("config", &self.inner.config)
            .field("modules", &self.inner.modules.len())
            .finish()
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.ticker_stop.store(true, Ordering::Release);
        if let Some(t) = self.ticker.take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}

/// Epoch ticks for a deadline: rounded up, plus one because the first tick may come at once.
pub(crate) fn ticks_for(deadline: Duration, tick: Duration) -> u64 {
    let ticks = deadline.as_nanos().div_ceil(tick.as_nanos().max(1));
    u64::try_from(ticks)
        .unwrap_or(u64::MAX - 1)
        .saturating_add(1)
}

/// A counting semaphore over the pooling allocator's instance slots, so that a burst of
/// calls waits for a slot instead of failing.
struct Slots {
    free: Mutex<u32>,
    freed: Condvar,
}

struct SlotGuard<'a>(&'a Slots);

impl Slots {
    fn new(n: u32) -> Slots {
        Slots {
            free: Mutex::new(n),
            freed: Condvar::new(),
        }
    }

    fn acquire(&self) -> SlotGuard<'_> {
        let mut free = self.free.lock().expect("slot counter poisoned");
        while *free == 0 {
            free = self.freed.wait(free).expect("slot counter poisoned");
        }
        *free -= 1;
        SlotGuard(self)
    }
}

impl Drop for SlotGuard<'_> {
    fn drop(&mut self) {
        *self.0.free.lock().expect("slot counter poisoned") += 1;
        self.0.freed.notify_one();
    }
}

/// The result of a call that returned normally.
#[derive(Clone, PartialEq, Eq)]
pub struct Outcome {
    reply: Vec<u8>,
    fuel_used: u64,
}

impl Outcome {
    pub(crate) fn new(reply: Vec<u8>, fuel_used: u64) -> Outcome {
        debug_assert_eq!(reply.first(), Some(&(abi::Status::Ok as u8)));
        Outcome { reply, fuel_used }
    }

    /// The MessagePack bytes of the returned value.
    pub fn value(&self) -> &[u8] {
        &self.reply[1..]
    }

    /// The returned value, decoded.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Decode`] when the value does not fit `T`.
    pub fn decode<'a, T: Deserialize<'a>>(&'a self) -> Result<T> {
        Ok(wasmpickle_format::codec::from_msgpack(self.value())?)
    }

    /// Fuel the call consumed. The same call consumes the same fuel on every run and machine.
    pub fn fuel_used(&self) -> u64 {
        self.fuel_used
    }

    /// The value's MessagePack bytes, taking ownership.
    pub fn into_value(mut self) -> Vec<u8> {
        self.reply.remove(0);
        self.reply
    }
}

impl fmt::Debug for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Outcome")
            .field("value_len", &self.value().len())
            .field("fuel_used", &self.fuel_used)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadline_ticks_round_up() {
        let tick = Duration::from_millis(10);
        assert_eq!(ticks_for(Duration::from_millis(10), tick), 2);
        assert_eq!(ticks_for(Duration::from_millis(11), tick), 3);
        assert_eq!(ticks_for(Duration::ZERO, tick), 1);
        assert!(ticks_for(Duration::MAX, tick) > 1 << 40);
    }

    #[test]
    fn runtime_is_send_sync_and_clone() {
        fn check<T: Send + Sync + Clone>() {}
        check::<Runtime>();
    }
}

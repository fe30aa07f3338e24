//! Compiled modules kept between calls: in memory (a table bounded by count) and on disk (a
//! directory of artifacts the runtime wrote itself).
//!
//! Compiling a module with Cranelift takes tens to hundreds of milliseconds; a call in a
//! fresh instance takes microseconds. So a [`Runtime`](crate::Runtime) compiles each module
//! once and keeps it in its module table, and with
//! [`RuntimeConfig::compiled_cache`](crate::RuntimeConfig::compiled_cache) it also writes the
//! compiled code to disk, so that the next *process* maps it into memory
//! (`Module::deserialize_open_file`) in well under a millisecond instead of compiling again.
//!
//! # Why the table is bounded by count
//!
//! A compiled module holds its machine code and metadata, a few times the size of the wasm. A
//! long-lived receiver that sees a stream of different modules would otherwise keep every
//! one of them. The table keeps the most recently used
//! [`max_cached_modules`](crate::RuntimeConfig::max_cached_modules) (default 256) and drops
//! the least recently used beyond that. A module dropped this way is found again in the
//! compiled cache or the code store; without either, a by-hash call for it fails with
//! [`ErrorKind::CodeNotFound`](crate::ErrorKind::CodeNotFound), so a runtime that
//! [`load`](crate::Runtime::load)s more modules than the bound should have a store.
//!
//! # Why artifacts carry a MAC
//!
//! A compiled artifact is native code: wasmtime's `Module::deserialize*` is `unsafe` because
//! it runs whatever the bytes say, with no validation. A cache that loaded any file found in
//! its directory would turn a damaged disk, a cache directory copied from another machine,
//! or a file dropped there by another program into code execution outside the sandbox. So
//! the cache deserializes **only artifacts it wrote itself**:
//!
//! * each cache directory has a secret key, 32 random bytes created on first use in a file
//!   only its owner can read;
//! * each artifact ends with a MAC under that key (keyed BLAKE3) of the artifact together
//!   with the engine fingerprint and the code hash it was compiled for;
//! * the MAC is checked over the bytes read from the open file *before* wasmtime sees them,
//!   and the module is then mapped from that same open file, so a rename in between cannot
//!   swap what was checked.
//!
//! An artifact whose MAC does not check (damaged, truncated, written under another key, or
//! moved to another hash's or configuration's name) is a miss: the module is compiled again
//! and the artifact overwritten. So is one wasmtime refuses. Nothing received from outside
//! the process is ever deserialized: the runtime compiles code it receives and caches its
//! own output. The key protects against accidents and against other programs; it does not
//! protect against the user the cache belongs to, who can read the key.
//!
//! The MAC is keyed BLAKE3 rather than HMAC-SHA256 for speed alone: the check reads every
//! byte of an artifact (650 KB for the 230 KB `math` guest) on every load, and keyed BLAKE3
//! does that in 92 µs where HMAC-SHA256 takes 370 µs, which was most of a cached cold start.
//!
//! # Why the fingerprint
//!
//! Compiled code is valid only for the engine configuration that produced it (fuel
//! metering changes every function, for instance) and for the CPU features it assumed.
//! Artifacts live under `<cache>/<fingerprint>/`, where the fingerprint is a SHA-256 of
//! wasmtime's [`Engine::precompile_compatibility_hash`] (compiler, target CPU flags,
//! tunables, wasm features, wasmtime version), the wasmtime version again and wasmpickle's
//! own version. Another configuration gets another directory, and wasmtime still checks
//! compatibility itself when loading.
//!
//! The bytes on disk are specified in `docs/storage.md`.

use std::collections::HashMap;
use std::fmt;
use std::fs::{self, File};
use std::hash::{Hash, Hasher};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use sha2::{Digest, Sha256};
use wasmpickle_format::CodeHash;
use wasmtime::{Engine, Module};

use crate::error::{Error, ErrorKind, Result};
use crate::store::{create_temp_named, io_error, remove_unlocked_files, sync_dir};

/// The wasmtime release this crate is built against (the workspace pins it exactly).
const WASMTIME_VERSION: &str = "48.0.8";

/// What the fingerprint hash starts with; a new cache layout changes it.
const FINGERPRINT_DOMAIN: &[u8] = b"wasmpickle compiled-cache fingerprint v1\0";
/// What the MAC input starts with.
const MAC_DOMAIN: &[u8] = b"wasmpickle compiled-cache artifact v1\0";
/// The last eight bytes of an artifact file: `wpk-mac` and the trailer format version.
pub(crate) const ARTIFACT_MAGIC: [u8; 8] = *b"wpk-mac\x01";
/// MAC (32) + magic (8).
pub(crate) const ARTIFACT_TRAILER: usize = 40;
/// Artifacts larger than this are not read.
const MAX_ARTIFACT_BYTES: u64 = 1 << 30;
const KEY_FILE: &str = "key";
const KEY_BYTES: usize = 32;

const CACHEDIR_TAG: &[u8] = b"Signature: 8a477f597d28d172789f06886806bc55\n\
# This file is a cache directory tag created by wasmpickle.\n\
# For information about cache directory tags see https://bford.info/cachedir/\n";

/// The on-disk compiled cache of one runtime.
pub(crate) struct CompiledCache {
    root: PathBuf,
    dir: PathBuf,
    tmp: PathBuf,
    fingerprint: [u8; 32],
    key: [u8; KEY_BYTES],
}

/// What looking an artifact up found.
pub(crate) enum Lookup {
    Hit(Module),
    Miss,
    /// There was an artifact and it was not loaded; why.
    Rejected(String),
}

impl CompiledCache {
    /// Opens (creating if needed) the cache in `root` for artifacts of `engine`.
    pub(crate) fn open(root: &Path, engine: &Engine) -> Result<CompiledCache> {
        create_private_dir(root)?;
        let tag = root.join("CACHEDIR.TAG");
        if !tag.exists() {
            // Only a hint to backup tools; a cache without it works the same.
            let _ = fs::write(&tag, CACHEDIR_TAG);
        }
        let tmp = root.join("tmp");
        create_private_dir(&tmp)?;
        let removed = remove_unlocked_files(&tmp, "tmp")?;
        if !removed.is_empty() {
            tracing::debug!(
                cache = %root.display(),
                removed = removed.len(),
                "removed leftovers of interrupted writes"
            );
        }
        let key = load_or_create_key(root, &tmp)?;
        let fingerprint = fingerprint(engine);
        let dir = root.join(hex(&fingerprint));
        create_private_dir(&dir)?;
        Ok(CompiledCache {
            root: root.to_path_buf(),
            dir,
            tmp,
            fingerprint,
            key,
        })
    }

    fn artifact_path(&self, hash: &CodeHash) -> PathBuf {
        self.dir.join(format!("{}.cwasm", hash.to_hex()))
    }

    /// The MAC state for the artifact of `hash`, before the artifact's bytes.
    fn mac(&self, hash: &CodeHash) -> blake3::Hasher {
        let mut mac = blake3::Hasher::new_keyed(&self.key);
        mac.update(MAC_DOMAIN);
        mac.update(&self.fingerprint);
        mac.update(hash.as_bytes());
        mac
    }

    /// Loads the artifact for `hash`, if there is one this cache wrote for this engine.
    pub(crate) fn load(&self, engine: &Engine, hash: &CodeHash) -> Lookup {
        let started = Instant::now();
        let path = self.artifact_path(hash);
        let mut file = match File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Lookup::Miss,
            Err(e) => return Lookup::Rejected(format!("cannot open {}: {e}", path.display())),
        };
        let len = match file.metadata() {
            Ok(meta) if meta.is_file() => meta.len(),
            Ok(_) => return Lookup::Rejected("not a regular file".into()),
            Err(e) => return Lookup::Rejected(format!("cannot read {}: {e}", path.display())),
        };
        if len < ARTIFACT_TRAILER as u64 || len > MAX_ARTIFACT_BYTES {
            return Lookup::Rejected(format!("{len} bytes is not the size of an artifact"));
        }
        // The artifact is streamed through the MAC in chunks rather than read whole: it is
        // several times the module's size, and fresh memory for all of it would cost more in
        // page faults than the copy itself.
        let body = len - ARTIFACT_TRAILER as u64;
        let mut mac = self.mac(hash);
        let mut chunk = [0u8; 32 << 10];
        let mut left = body;
        while left > 0 {
            let n = chunk.len().min(usize::try_from(left).unwrap_or(usize::MAX));
            if let Err(e) = file.read_exact(&mut chunk[..n]) {
                return Lookup::Rejected(format!("cannot read {}: {e}", path.display()));
            }
            mac.update(&chunk[..n]);
            left -= n as u64;
        }
        let mut trailer = [0u8; ARTIFACT_TRAILER];
        if let Err(e) = file.read_exact(&mut trailer) {
            return Lookup::Rejected(format!("cannot read {}: {e}", path.display()));
        }
        if trailer[32..] != ARTIFACT_MAGIC {
            return Lookup::Rejected("no wasmpickle trailer".into());
        }
        let stored: [u8; 32] = trailer[..32].try_into().expect("32 bytes");
        // `blake3::Hash` compares in constant time.
        if mac.finalize() != blake3::Hash::from_bytes(stored) {
            return Lookup::Rejected(
                "the MAC does not match (damaged, or written by another cache or for another \
                 module or configuration)"
                    .into(),
            );
        }
        // The file must end where it ended when its length was taken.
        if file.read(&mut chunk[..1]).map_or(true, |n| n != 0) {
            return Lookup::Rejected("the file changed size while being read".into());
        }
        let checked = started.elapsed();
        // SAFETY: `deserialize_open_file` runs the file's contents as native code, so it must
        // be an unmodified artifact of `Module::serialize`. The bytes just read from this very
        // open file, all of them up to its end, carry a valid MAC under this cache's secret
        // key, over this engine's fingerprint and this code hash, and only
        // `CompiledCache::store` below computes such a MAC, over the output of
        // `Module::serialize`. The file is mapped from the same open file, so a rename of the
        // path in between cannot substitute other bytes, and the cache never writes into an
        // existing file (it replaces files by rename), so the mapped inode does not change
        // while the module lives. Wasmtime checks that the artifact matches this engine's
        // configuration and refuses it with an error otherwise.
        match unsafe { Module::deserialize_open_file(engine, file) } {
            Ok(module) => {
                tracing::debug!(
                    code = %hash,
                    bytes = len,
                    check_ms = checked.as_secs_f64() * 1e3,
                    ms = started.elapsed().as_secs_f64() * 1e3,
                    "compiled cache hit"
                );
                Lookup::Hit(module)
            }
            Err(e) => Lookup::Rejected(format!("wasmtime refused it: {e}")),
        }
    }

    /// Writes the artifact of `module`, compiled from the code `hash` names, replacing any.
    pub(crate) fn store(&self, hash: &CodeHash, module: &Module) -> Result<()> {
        let mut bytes = module.serialize().map_err(|e| {
            Error::new(
                ErrorKind::Runtime,
                format!("cannot serialize module {hash}"),
            )
            .with_code(*hash)
            .with_source(e.into_boxed_dyn_error())
        })?;
        let mut mac = self.mac(hash);
        mac.update(&bytes);
        bytes.extend_from_slice(mac.finalize().as_bytes());
        bytes.extend_from_slice(&ARTIFACT_MAGIC);

        let target = self.artifact_path(hash);
        let (tmp, mut file) = create_temp_named(&self.tmp, "cwasm-", false)?;
        file.write_all(&bytes)
            .and_then(|()| file.sync_all())
            .map_err(|e| {
                let _ = fs::remove_file(&tmp);
                io_error(e, "cannot write", &tmp)
            })?;
        // Replacing by rename, never writing in place: a process that has the old artifact
        // mapped keeps its unchanged inode (see the SAFETY comment in `load`).
        fs::rename(&tmp, &target).map_err(|e| {
            let _ = fs::remove_file(&tmp);
            io_error(e, "cannot rename into", &target)
        })?;
        sync_dir(&self.dir)?;
        tracing::debug!(
            code = %hash,
            bytes = bytes.len(),
            path = %target.display(),
            "wrote compiled artifact"
        );
        Ok(())
    }
}

impl fmt::Debug for CompiledCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the key.
        f.debug_struct("CompiledCache")
            .field("root", &self.root)
            .field("fingerprint", &hex(&self.fingerprint))
            .finish()
    }
}

/// Creates a directory (and its parents) that only its owner may enter.
fn create_private_dir(dir: &Path) -> Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder
        .create(dir)
        .map_err(|e| io_error(e, "cannot create cache directory", dir))
}

/// Reads the cache's key, creating it on first use.
///
/// A new key is written to a private temporary file and hard-linked into place, which fails
/// if another process got there first; then that process's key is read, so concurrent first
/// uses agree on one key. A key file of the wrong size or readable by others is replaced,
/// which turns every existing artifact into a miss.
fn load_or_create_key(root: &Path, tmp: &Path) -> Result<[u8; KEY_BYTES]> {
    let path = root.join(KEY_FILE);
    for _ in 0..4 {
        let replace = match read_key(&path) {
            Ok(Some(key)) => return Ok(key),
            Ok(None) => false,
            Err(why) => {
                tracing::warn!(key = %path.display(), "{why}; replacing the compiled cache's key");
                true
            }
        };
        let mut key = [0u8; KEY_BYTES];
        getrandom::fill(&mut key).map_err(|e| {
            Error::new(
                ErrorKind::Runtime,
                "cannot get random bytes for the cache key",
            )
            .with_source(io::Error::other(e.to_string()))
        })?;
        let (tmp_path, mut file) = create_temp_named(tmp, "key-", true)?;
        file.write_all(&key)
            .and_then(|()| file.sync_all())
            .map_err(|e| {
                let _ = fs::remove_file(&tmp_path);
                io_error(e, "cannot write", &tmp_path)
            })?;
        let placed = if replace {
            fs::rename(&tmp_path, &path)
        } else {
            let linked = fs::hard_link(&tmp_path, &path);
            let _ = fs::remove_file(&tmp_path);
            linked
        };
        match placed {
            Ok(()) => {
                sync_dir(root)?;
                return Ok(key);
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(io_error(e, "cannot create", &path)),
        }
    }
    Err(Error::new(
        ErrorKind::Io,
        format!("cannot settle on a key in {}", path.display()),
    ))
}

/// The key, `None` when there is no key file, or why the file cannot be used.
fn read_key(path: &Path) -> std::result::Result<Option<[u8; KEY_BYTES]>, String> {
    let mut file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot open the key: {e}")),
    };
    let meta = file
        .metadata()
        .map_err(|e| format!("cannot read the key: {e}"))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if meta.permissions().mode() & 0o077 != 0 {
            return Err("the key file is readable by others".into());
        }
    }
    if meta.len() != KEY_BYTES as u64 {
        return Err(format!("the key file has {} bytes", meta.len()));
    }
    let mut key = [0u8; KEY_BYTES];
    file.read_exact(&mut key)
        .map_err(|e| format!("cannot read the key: {e}"))?;
    Ok(Some(key))
}

/// A `Hasher` that feeds SHA-256, to turn wasmtime's `impl Hash` into a stable digest.
struct Sha256Hasher(Sha256);

impl Hasher for Sha256Hasher {
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    fn finish(&self) -> u64 {
        unreachable!("only the SHA-256 is used")
    }
}

/// The engine fingerprint that names an artifact directory; see the module docs.
pub(crate) fn fingerprint(engine: &Engine) -> [u8; 32] {
    let mut hasher = Sha256Hasher(Sha256::new());
    hasher.write(FINGERPRINT_DOMAIN);
    hasher.write(WASMTIME_VERSION.as_bytes());
    hasher.write(&[0]);
    hasher.write(env!("CARGO_PKG_VERSION").as_bytes());
    hasher.write(&[0]);
    engine.precompile_compatibility_hash().hash(&mut hasher);
    hasher.0.finalize().into()
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

// ---------------------------------------------------------------------------------------------
// In memory

/// Compiled modules by hash, at most `capacity` of them, least recently used first out.
///
/// A lookup takes the read lock and stamps the entry with a tick of a global clock; an insert
/// beyond the capacity scans for the oldest stamp. Inserts follow a compile or a load from
/// disk, which cost far more than the scan of a few hundred entries.
pub(crate) struct ModuleTable<V> {
    entries: RwLock<HashMap<CodeHash, Slot<V>>>,
    clock: AtomicU64,
    capacity: usize,
}

struct Slot<V> {
    value: V,
    used: AtomicU64,
}

impl<V: Clone> ModuleTable<V> {
    pub(crate) fn new(capacity: usize) -> ModuleTable<V> {
        ModuleTable {
            entries: RwLock::new(HashMap::new()),
            clock: AtomicU64::new(0),
            capacity: capacity.max(1),
        }
    }

    /// The module, marked as just used.
    pub(crate) fn get(&self, hash: &CodeHash) -> Option<V> {
        let entries = self.entries.read().expect("module table poisoned");
        let slot = entries.get(hash)?;
        slot.used.store(
            self.clock.fetch_add(1, Ordering::Relaxed),
            Ordering::Relaxed,
        );
        Some(slot.value.clone())
    }

    /// True when the module is in the table; does not count as a use.
    pub(crate) fn contains(&self, hash: &CodeHash) -> bool {
        self.entries
            .read()
            .expect("module table poisoned")
            .contains_key(hash)
    }

    /// Adds a module, evicting the least recently used beyond the capacity. Returns how many
    /// were evicted.
    pub(crate) fn insert(&self, hash: CodeHash, value: V) -> usize {
        let mut entries = self.entries.write().expect("module table poisoned");
        let used = AtomicU64::new(self.clock.fetch_add(1, Ordering::Relaxed));
        entries.insert(hash, Slot { value, used });
        let mut evicted = 0;
        while entries.len() > self.capacity {
            let oldest = entries
                .iter()
                .filter(|(h, _)| **h != hash)
                .min_by_key(|(_, slot)| slot.used.load(Ordering::Relaxed))
                .map(|(h, _)| *h);
            match oldest {
                Some(h) => {
                    entries.remove(&h);
                    tracing::debug!(code = %h, "evicted module from the module table");
                    evicted += 1;
                }
                None => break,
            }
        }
        evicted
    }

    pub(crate) fn remove(&self, hash: &CodeHash) -> bool {
        self.entries
            .write()
            .expect("module table poisoned")
            .remove(hash)
            .is_some()
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.read().map(|e| e.len()).unwrap_or(0)
    }
}

// ---------------------------------------------------------------------------------------------
// Statistics

/// Where a [`Runtime`](crate::Runtime)'s modules came from, counted since it was created.
///
/// Read with [`Runtime::stats`](crate::Runtime::stats). Tests use it to check that nothing
/// reached the compiler, benchmarks to check which path they measured.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RuntimeStats {
    /// Modules compiled by Cranelift.
    pub compiles: u64,
    /// Modules found in the module table (one per call or load that found its module there).
    pub memory_hits: u64,
    /// Modules loaded from the compiled cache on disk instead of compiled.
    pub disk_hits: u64,
    /// Compiled-cache lookups that found no usable artifact (including the rejected ones).
    pub disk_misses: u64,
    /// Artifacts that were there but refused (damaged, foreign or for another configuration)
    /// and compiled again.
    pub disk_rejects: u64,
    /// Artifacts written to the compiled cache.
    pub disk_writes: u64,
    /// Modules read from the code store.
    pub store_reads: u64,
    /// Modules the runtime put into the code store that it did not have.
    pub store_puts: u64,
    /// Modules dropped from the module table to keep it within its bound.
    pub evictions: u64,
}

/// The live counters behind [`RuntimeStats`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) compiles: AtomicU64,
    pub(crate) memory_hits: AtomicU64,
    pub(crate) disk_hits: AtomicU64,
    pub(crate) disk_misses: AtomicU64,
    pub(crate) disk_rejects: AtomicU64,
    pub(crate) disk_writes: AtomicU64,
    pub(crate) store_reads: AtomicU64,
    pub(crate) store_puts: AtomicU64,
    pub(crate) evictions: AtomicU64,
}

impl Counters {
    pub(crate) fn bump(counter: &AtomicU64) {
        Counters::add(counter, 1);
    }

    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> RuntimeStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        RuntimeStats {
            compiles: get(&self.compiles),
            memory_hits: get(&self.memory_hits),
            disk_hits: get(&self.disk_hits),
            disk_misses: get(&self.disk_misses),
            disk_rejects: get(&self.disk_rejects),
            disk_writes: get(&self.disk_writes),
            store_reads: get(&self.store_reads),
            store_puts: get(&self.store_puts),
            evictions: get(&self.evictions),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(n: u8) -> CodeHash {
        CodeHash::from_bytes([n; 32])
    }

    #[test]
    fn the_table_evicts_the_least_recently_used() {
        let table = ModuleTable::new(2);
        assert_eq!(table.insert(h(1), 1), 0);
        assert_eq!(table.insert(h(2), 2), 0);
        assert_eq!(table.get(&h(1)), Some(1));
        assert_eq!(table.insert(h(3), 3), 1);
        assert!(table.contains(&h(1)) && table.contains(&h(3)));
        assert!(!table.contains(&h(2)), "2 was the least recently used");
        assert_eq!(table.len(), 2);
    }

    #[test]
    fn hex_is_lowercase() {
        assert_eq!(hex(&[0x0a, 0xff]), "0aff");
    }
}

//! Code stores: where modules live, by the hash that names them.
//!
//! A pickle may carry its module inline or name it by [`CodeHash`] only. A receiver that gets
//! code by hash finds it in a [`CodeStore`]: a small trait in the spirit of redb's
//! `StorageBackend`, with two implementations here, [`MemoryStore`] (a map, for tests and for
//! one process) and [`DirStore`] (a directory, the embedded default). Give a
//! [`Runtime`](crate::Runtime) a store with
//! [`RuntimeConfig::code_store`](crate::RuntimeConfig::code_store) and by-hash calls resolve
//! through it, while inline code it receives is put into it, so that a module crosses the
//! wire once and later calls name it by hash.
//!
//! # Why content addressing
//!
//! An object's name is the canonical hash of its module
//! ([`canonical_hash`](crate::canonical_hash)), so a name cannot point at the wrong bytes
//! without that being detectable: whoever holds the name can check what they got. Putting
//! the same module twice is the same object, which makes `put` idempotent and lets any
//! number of writers share one store without coordination.
//!
//! # Why every read re-verifies
//!
//! Disks flip bits, files get truncated by crashes and full disks, tools copy a file over the
//! wrong name. A store that handed such bytes to the compiler would run code under a name it
//! does not have. So [`DirStore::get`] checks each object before returning it: the framing and
//! length, a SHA-256 of the exact stored bytes (which covers the custom sections the code hash
//! leaves out, such as the `name` section, so that *any* damage is caught), and the canonical
//! hash against the object's name (which catches objects swapped or copied under another name,
//! whoever wrote them). A corrupt object is an [`ErrorKind::StoreCorrupt`] error naming its
//! hash, never a value. The check costs a hash of the module, paid only when code is read from
//! disk, which happens before a compile that costs a thousand times more, or never when the
//! compiled cache has the module.
//!
//! # Why writes go through a temporary file
//!
//! A `put` writes the object to `tmp/`, flushes it to disk (`fsync`), renames it into place
//! and flushes the directory. A rename is atomic, so a reader sees either no object or the
//! whole object, and a crash at any point leaves at worst a file in `tmp/`. Such leftovers are
//! removed when the store is opened and by [`CodeStore::gc`]; a writer holds an advisory lock
//! on its temporary file, so a concurrent process never removes a write in progress.
//!
//! The byte layout of a store directory is specified in `docs/storage.md`.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};
use wasmpickle_format::{CodeHash, MAX_CODE_BYTES};

use crate::code::Code;
use crate::error::{Error, ErrorKind, Result};

/// Where modules live, by hash.
///
/// Implementations must be safe to share between threads (`Send + Sync`), and the trait is
/// object safe, so a store is usually held as an `Arc<dyn CodeStore>`.
///
/// # The contract
///
/// * [`put`](CodeStore::put) is idempotent: putting a module that is already stored changes
///   nothing.
/// * [`get`](CodeStore::get) returns a module whose hash is the one asked for, `None` when
///   there is none, or an error; never other bytes. A [`Code`] can only be made by hashing its
///   bytes, so a caller can trust `code.hash()`; a store whose backing can be damaged reports
///   a damaged object as [`ErrorKind::StoreCorrupt`] with the hash.
/// * [`contains`](CodeStore::contains) and [`list`](CodeStore::list) say which objects exist,
///   without verifying them; [`verify`](CodeStore::verify) does.
pub trait CodeStore: Send + Sync + fmt::Debug {
    /// Stores a module under its hash. Returns `true` when it was not stored before (or only
    /// a corrupt copy was, which this replaces).
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Io`] when the store cannot be written.
    fn put(&self, code: &Code) -> Result<bool>;

    /// The module with this hash, or `None` when the store does not have it.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::StoreCorrupt`] naming the hash when the stored object is damaged;
    /// [`ErrorKind::Io`] when it cannot be read.
    fn get(&self, hash: &CodeHash) -> Result<Option<Code>>;

    /// True when an object with this hash exists. Cheap: the object is not read or verified.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Io`] when the store cannot be read.
    fn contains(&self, hash: &CodeHash) -> Result<bool>;

    /// The hashes of every object, sorted.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Io`] when the store cannot be read.
    fn list(&self) -> Result<Vec<CodeHash>>;

    /// Removes an object. Returns `true` when there was one.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Io`] when the store cannot be written.
    fn remove(&self, hash: &CodeHash) -> Result<bool>;

    /// Reads and checks every object and reports the damaged ones. Changes nothing.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Io`] when the store cannot be read; damage is reported, not an error.
    fn verify(&self) -> Result<VerifyReport> {
        let mut report = VerifyReport::default();
        for hash in self.list()? {
            match self.get(&hash) {
                Ok(Some(_)) => report.checked += 1,
                // Removed since it was listed.
                Ok(None) => {}
                Err(e) if e.kind() == ErrorKind::StoreCorrupt => {
                    report.checked += 1;
                    report.corrupt.push(Corrupt {
                        hash,
                        reason: corrupt_reason(&e),
                    });
                }
                Err(e) => return Err(e),
            }
        }
        Ok(report)
    }

    /// Cleans the store up: removes what interrupted writes left behind and takes damaged
    /// objects out of the read path. What that means is up to the store; see [`DirStore::gc`].
    /// The default does nothing.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Io`] when the store cannot be read or written.
    fn gc(&self) -> Result<GcReport> {
        Ok(GcReport::default())
    }

    /// Validates and hashes `wasm` and stores it. Returns its hash.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidModule`] when the bytes are not a valid module, otherwise as
    /// [`CodeStore::put`].
    fn put_bytes(&self, wasm: &[u8]) -> Result<CodeHash> {
        let code = Code::new(wasm.to_vec())?;
        self.put(&code)?;
        Ok(code.hash())
    }

    /// Like [`get`](CodeStore::get), with a missing object as an error.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::CodeNotFound`] naming the hash when the store does not have it, otherwise
    /// as [`CodeStore::get`].
    fn fetch(&self, hash: &CodeHash) -> Result<Code> {
        self.get(hash)?.ok_or_else(|| {
            Error::new(
                ErrorKind::CodeNotFound,
                format!("code {hash} is not in the code store"),
            )
            .with_code(*hash)
        })
    }
}

/// What [`CodeStore::verify`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct VerifyReport {
    /// How many objects were read and checked.
    pub checked: usize,
    /// The damaged objects, in hash order.
    pub corrupt: Vec<Corrupt>,
}

impl VerifyReport {
    /// True when no object is damaged.
    pub fn is_ok(&self) -> bool {
        self.corrupt.is_empty()
    }
}

/// What [`CodeStore::gc`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct GcReport {
    /// Leftovers of interrupted writes that were removed, as paths relative to the store.
    pub leftovers_removed: Vec<String>,
    /// Damaged objects taken out of the read path, with what was wrong with them.
    pub quarantined: Vec<Corrupt>,
}

/// A damaged object: its name and what is wrong with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Corrupt {
    /// The object's name.
    pub hash: CodeHash,
    /// What the check found, e.g. `truncated: 1200 bytes, the header announces 229773`.
    pub reason: String,
}

impl fmt::Display for Corrupt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.hash, self.reason)
    }
}

/// The reason part of a [`ErrorKind::StoreCorrupt`] error's message.
fn corrupt_reason(e: &Error) -> String {
    let text = e.to_string();
    match text.split_once(" is corrupt: ") {
        Some((_, reason)) => reason.to_owned(),
        None => text,
    }
}

// ---------------------------------------------------------------------------------------------
// In memory

/// A store in memory: a map from hash to [`Code`]. Nothing is written anywhere.
///
/// For tests, and for a runtime that should keep modules it was given even after they leave
/// its compiled-module table. Objects cannot be damaged, so there is nothing to verify.
#[derive(Debug, Default)]
pub struct MemoryStore {
    objects: RwLock<std::collections::BTreeMap<CodeHash, Code>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }
}

impl CodeStore for MemoryStore {
    fn put(&self, code: &Code) -> Result<bool> {
        let mut objects = self.objects.write().expect("store poisoned");
        if objects.contains_key(&code.hash()) {
            return Ok(false);
        }
        objects.insert(code.hash(), code.clone());
        Ok(true)
    }

    fn get(&self, hash: &CodeHash) -> Result<Option<Code>> {
        Ok(self
            .objects
            .read()
            .expect("store poisoned")
            .get(hash)
            .cloned())
    }

    fn contains(&self, hash: &CodeHash) -> Result<bool> {
        Ok(self
            .objects
            .read()
            .expect("store poisoned")
            .contains_key(hash))
    }

    fn list(&self) -> Result<Vec<CodeHash>> {
        Ok(self
            .objects
            .read()
            .expect("store poisoned")
            .keys()
            .copied()
            .collect())
    }

    fn remove(&self, hash: &CodeHash) -> Result<bool> {
        Ok(self
            .objects
            .write()
            .expect("store poisoned")
            .remove(hash)
            .is_some())
    }
}

// ---------------------------------------------------------------------------------------------
// In a directory

/// The first line of `<dir>/wasmpickle-store`, which marks a directory as a store and says
/// which layout it uses.
const MARKER_FILE: &str = "wasmpickle-store";
const MARKER: &str = "wasmpickle code store 1\n";

/// The eight bytes an object file starts with: `wpk-obj` and the object format version.
pub(crate) const OBJECT_MAGIC: [u8; 8] = *b"wpk-obj\x01";
/// magic (8) + code hash (32) + SHA-256 of the module bytes (32) + their length (8).
pub(crate) const OBJECT_HEADER: usize = 80;

/// Temporary files of `put` are called `put-<pid>-<n>.tmp`.
const TEMP_PREFIX: &str = "put-";
const TEMP_SUFFIX: &str = ".tmp";

/// A store in a directory: one file per module, named by its hash. The embedded default.
///
/// ```text
/// <dir>/wasmpickle-store          "wasmpickle code store 1\n"
/// <dir>/objects/ab/cdef…          one object: 80-byte header + the module's original bytes
/// <dir>/tmp/put-<pid>-<n>.tmp     a put in progress (or the leftover of a crash)
/// <dir>/quarantine/cdef…-<time>   damaged objects that gc took out of the read path
/// ```
///
/// Any number of threads and processes may use one directory at once. `docs/storage.md`
/// specifies the bytes.
///
/// # Every read re-verifies
///
/// Disks flip bits, crashes and full disks truncate files, tools copy a file over the wrong
/// name. So [`get`](CodeStore::get) checks each object before returning it: its framing and
/// length, a SHA-256 of the exact stored bytes (which covers the custom sections the code
/// hash leaves out, such as `name`, so that *any* damage is caught), and the module's
/// canonical hash against the object's name (which catches an object swapped or copied
/// under another name, whoever wrote it). A damaged object is an
/// [`ErrorKind::StoreCorrupt`] error naming its hash, never a value. The cost is a hash of
/// the module, paid only when code is read from disk: before a compile that costs far more,
/// or never, when the compiled cache has the module.
///
/// # Writes survive crashes
///
/// A `put` writes to `tmp/`, flushes the file (`fsync`), renames it into place and flushes
/// the directory. A rename is atomic, so a reader sees no object or the whole object, and a
/// crash leaves at worst a file in `tmp/`, which [`DirStore::open`] and
/// [`gc`](CodeStore::gc) remove. A writer holds an advisory lock on its temporary file, so
/// that another process never removes a write in progress.
#[derive(Debug)]
pub struct DirStore {
    root: PathBuf,
    objects: PathBuf,
    tmp: PathBuf,
    quarantine: PathBuf,
    /// Leftovers `open` removed, until `gc` reports them.
    removed_on_open: Mutex<Vec<String>>,
}

/// Makes temporary names unique within a process; the pid makes them unique across.
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

impl DirStore {
    /// Opens the store in `dir`, creating it when `dir` is missing or empty, and removes the
    /// leftovers of writes that a crash interrupted.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Io`] when the directory cannot be created or read, or is a non-empty
    /// directory that is not a store (so that a mistyped path does not scatter files into,
    /// say, a home directory); [`ErrorKind::Version`] when it is a store of a layout this
    /// build does not know.
    pub fn open(dir: impl AsRef<Path>) -> Result<DirStore> {
        let root = dir.as_ref().to_path_buf();
        let store = DirStore {
            objects: root.join("objects"),
            tmp: root.join("tmp"),
            quarantine: root.join("quarantine"),
            root,
            removed_on_open: Mutex::new(Vec::new()),
        };
        store.init()?;
        let removed = store.remove_leftovers()?;
        if !removed.is_empty() {
            tracing::info!(
                store = %store.root.display(),
                removed = removed.len(),
                "removed leftovers of interrupted writes"
            );
        }
        *store.removed_on_open.lock().expect("store poisoned") = removed;
        Ok(store)
    }

    /// How much longer an object file is than its module: the header's size.
    pub const HEADER_BYTES: u64 = OBJECT_HEADER as u64;

    /// Opens a store that must exist already: for tools that read, where creating an empty
    /// store at a mistyped path would only hide the mistake.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Io`] when `dir` is not a store, otherwise as [`DirStore::open`].
    pub fn open_existing(dir: impl AsRef<Path>) -> Result<DirStore> {
        let dir = dir.as_ref();
        if !dir.join(MARKER_FILE).is_file() {
            return Err(Error::new(
                ErrorKind::Io,
                format!(
                    "{} is not a wasmpickle code store (it has no {MARKER_FILE} file)",
                    dir.display()
                ),
            ));
        }
        DirStore::open(dir)
    }

    /// The store's directory.
    pub fn path(&self) -> &Path {
        &self.root
    }

    /// Where the object for `hash` lives (whether or not it exists).
    pub fn object_path(&self, hash: &CodeHash) -> PathBuf {
        let hex = hash.to_hex();
        self.objects.join(&hex[..2]).join(&hex[2..])
    }

    fn init(&self) -> Result<()> {
        let marker = self.root.join(MARKER_FILE);
        match fs::read(&marker) {
            Ok(found) if found == MARKER.as_bytes() => {}
            Ok(found) => {
                let first = String::from_utf8_lossy(&found);
                return Err(Error::new(
                    ErrorKind::Version,
                    format!(
                        "{} is a store of another layout ({:?}); this build reads {:?}",
                        self.root.display(),
                        first.lines().next().unwrap_or(""),
                        MARKER.trim_end()
                    ),
                ));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::create_dir_all(&self.root)
                    .map_err(|e| io_error(e, "cannot create store", &self.root))?;
                let entries = fs::read_dir(&self.root)
                    .map_err(|e| io_error(e, "cannot read store", &self.root))?;
                for entry in entries {
                    let entry = entry.map_err(|e| io_error(e, "cannot read store", &self.root))?;
                    // A store whose creation a crash interrupted has some of these and no
                    // marker yet; anything else means this is somebody else's directory.
                    if !matches!(
                        entry.file_name().to_str(),
                        Some("objects" | "tmp" | "quarantine")
                    ) {
                        return Err(Error::new(
                            ErrorKind::Io,
                            format!(
                                "{} is not empty and not a wasmpickle code store \
                                 (it has no {MARKER_FILE} file)",
                                self.root.display()
                            ),
                        ));
                    }
                }
                for dir in [&self.objects, &self.tmp] {
                    fs::create_dir_all(dir).map_err(|e| io_error(e, "cannot create", dir))?;
                }
                // The marker goes last: until it is there, the next open completes the store.
                write_atomically(&self.tmp, &marker, MARKER.as_bytes())?;
            }
            Err(e) => return Err(io_error(e, "cannot read", &marker)),
        }
        for dir in [&self.objects, &self.tmp] {
            fs::create_dir_all(dir).map_err(|e| io_error(e, "cannot create", dir))?;
        }
        Ok(())
    }

    /// Removes every file in `tmp/` that no writer holds a lock on.
    fn remove_leftovers(&self) -> Result<Vec<String>> {
        remove_unlocked_files(&self.tmp, "tmp")
    }

    /// Reads and checks one object; see the module docs for what is checked.
    fn read_object(&self, hash: &CodeHash) -> Result<Option<Code>> {
        let path = self.object_path(hash);
        let mut file = match File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_error(e, "cannot open", &path).with_code(*hash)),
        };
        let corrupt = |reason: String| {
            Error::new(
                ErrorKind::StoreCorrupt,
                format!("store object {hash} is corrupt: {reason}"),
            )
            .with_code(*hash)
        };
        let meta = file
            .metadata()
            .map_err(|e| io_error(e, "cannot read", &path))?;
        if !meta.is_file() {
            return Err(corrupt("not a regular file".into()));
        }
        let file_len = meta.len();
        if file_len < OBJECT_HEADER as u64 {
            return Err(corrupt(format!(
                "truncated: {file_len} bytes, less than the {OBJECT_HEADER}-byte header"
            )));
        }
        let mut header = [0u8; OBJECT_HEADER];
        file.read_exact(&mut header)
            .map_err(|e| io_error(e, "cannot read", &path))?;
        if header[..8] != OBJECT_MAGIC {
            return Err(corrupt(format!(
                "bad magic {:02x?} (expected {:02x?})",
                &header[..8],
                OBJECT_MAGIC
            )));
        }
        let named = CodeHash::from_bytes(header[8..40].try_into().expect("32 bytes"));
        if named != *hash {
            return Err(corrupt(format!("the object holds {named}")));
        }
        let len = u64::from_le_bytes(header[72..80].try_into().expect("8 bytes"));
        if len > MAX_CODE_BYTES as u64 {
            return Err(corrupt(format!(
                "the header announces {len} bytes, more than a module may have"
            )));
        }
        let expected = OBJECT_HEADER as u64 + len;
        if file_len != expected {
            return Err(corrupt(format!(
                "{} bytes, but the header announces {expected}",
                file_len
            )));
        }
        let mut wasm = Vec::with_capacity(len as usize);
        (&mut file)
            .take(len + 1)
            .read_to_end(&mut wasm)
            .map_err(|e| io_error(e, "cannot read", &path))?;
        if wasm.len() as u64 != len {
            // The file changed size under us: only a rename replaces objects, so this is
            // damage in progress, not a write.
            return Err(corrupt(format!(
                "read {} module bytes, the header announces {len}",
                wasm.len()
            )));
        }
        let digest: [u8; 32] = Sha256::digest(&wasm).into();
        if digest[..] != header[40..72] {
            return Err(corrupt(
                "the module bytes do not match their checksum".into(),
            ));
        }
        // The checksum proves the bytes are what was written; the canonical hash proves they
        // are the module this name promises, whoever wrote them.
        let code = Code::new(wasm).map_err(|e| corrupt(e.to_string()))?;
        if code.hash() != *hash {
            return Err(corrupt(format!("the module hashes to {}", code.hash())));
        }
        Ok(Some(code))
    }

    /// Writes an object through a locked temporary file, then renames it into place.
    fn write_object(&self, code: &Code) -> Result<()> {
        let hash = code.hash();
        let wasm = code.wasm();
        let mut bytes = Vec::with_capacity(OBJECT_HEADER + wasm.len());
        bytes.extend_from_slice(&OBJECT_MAGIC);
        bytes.extend_from_slice(hash.as_bytes());
        bytes.extend_from_slice(&Sha256::digest(&wasm[..]));
        bytes.extend_from_slice(&(wasm.len() as u64).to_le_bytes());
        bytes.extend_from_slice(wasm);

        let target = self.object_path(&hash);
        let fanout = target.parent().expect("objects/ab/...");
        if !fanout.is_dir() {
            fs::create_dir_all(fanout).map_err(|e| io_error(e, "cannot create", fanout))?;
            sync_dir(&self.objects)?;
        }
        // A cleaner in another process may remove our temporary file in the instant between
        // its creation and its lock; the rename then fails with NotFound and we try again.
        let mut attempts = 0;
        loop {
            let (tmp_path, mut file) = create_temp(&self.tmp)?;
            file.write_all(&bytes)
                .and_then(|()| file.sync_all())
                .map_err(|e| {
                    let _ = fs::remove_file(&tmp_path);
                    io_error(e, "cannot write", &tmp_path)
                })?;
            match fs::rename(&tmp_path, &target) {
                Ok(()) => break,
                Err(e) if e.kind() == io::ErrorKind::NotFound && attempts < 3 => {
                    attempts += 1;
                }
                Err(e) => {
                    let _ = fs::remove_file(&tmp_path);
                    return Err(io_error(e, "cannot rename into", &target));
                }
            }
        }
        sync_dir(fanout)
    }

    /// Moves a damaged object to `quarantine/`, out of the read path but kept for whoever
    /// wants to know what the disk did.
    fn quarantine(&self, hash: &CodeHash) -> Result<()> {
        fs::create_dir_all(&self.quarantine)
            .map_err(|e| io_error(e, "cannot create", &self.quarantine))?;
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let from = self.object_path(hash);
        let to = self.quarantine.join(format!("{}-{nanos}", hash.to_hex()));
        match fs::rename(&from, &to) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io_error(e, "cannot quarantine", &from)),
        }
        sync_dir(&self.quarantine)?;
        sync_dir(from.parent().expect("objects/ab/..."))
    }
}

impl CodeStore for DirStore {
    /// Writes the object unless an intact copy is already there; a damaged copy is replaced,
    /// so putting a module again repairs it.
    fn put(&self, code: &Code) -> Result<bool> {
        match self.read_object(&code.hash()) {
            Ok(Some(_)) => return Ok(false),
            Ok(None) => {}
            Err(e) if e.kind() == ErrorKind::StoreCorrupt => {
                tracing::warn!(code = %code.hash(), error = %e, "replacing a corrupt store object");
            }
            Err(e) => return Err(e),
        }
        self.write_object(code)?;
        tracing::debug!(
            code = %code.hash(),
            bytes = code.wasm().len(),
            store = %self.root.display(),
            "stored module"
        );
        Ok(true)
    }

    fn get(&self, hash: &CodeHash) -> Result<Option<Code>> {
        self.read_object(hash)
    }

    fn contains(&self, hash: &CodeHash) -> Result<bool> {
        match fs::metadata(self.object_path(hash)) {
            Ok(meta) => Ok(meta.is_file()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io_error(e, "cannot read", &self.object_path(hash))),
        }
    }

    /// Every file in `objects/` whose path spells a hash; anything else there is ignored.
    fn list(&self) -> Result<Vec<CodeHash>> {
        let mut hashes = Vec::new();
        let fanouts =
            fs::read_dir(&self.objects).map_err(|e| io_error(e, "cannot read", &self.objects))?;
        for fanout in fanouts {
            let fanout = fanout.map_err(|e| io_error(e, "cannot read", &self.objects))?;
            let prefix = fanout.file_name();
            let Some(prefix) = prefix.to_str().filter(|p| is_hex(p, 2)) else {
                continue;
            };
            let dir = fanout.path();
            if !dir.is_dir() {
                continue;
            }
            for object in fs::read_dir(&dir).map_err(|e| io_error(e, "cannot read", &dir))? {
                let object = object.map_err(|e| io_error(e, "cannot read", &dir))?;
                let rest = object.file_name();
                let Some(rest) = rest.to_str().filter(|r| is_hex(r, 62)) else {
                    continue;
                };
                if let Ok(hash) = format!("sha256:{prefix}{rest}").parse::<CodeHash>() {
                    hashes.push(hash);
                }
            }
        }
        hashes.sort();
        Ok(hashes)
    }

    fn remove(&self, hash: &CodeHash) -> Result<bool> {
        let path = self.object_path(hash);
        match fs::remove_file(&path) {
            Ok(()) => {
                sync_dir(path.parent().expect("objects/ab/..."))?;
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io_error(e, "cannot remove", &path)),
        }
    }

    /// Removes the leftovers of interrupted writes, then moves every damaged object to
    /// `quarantine/`. The leftovers reported include those [`DirStore::open`] removed.
    ///
    /// Damaged objects are quarantined rather than deleted: gc should not destroy the
    /// evidence of a failing disk, and out of `objects/` they no longer fail reads, so the
    /// next `put` of the module writes a good copy. Delete `quarantine/` when done with it.
    fn gc(&self) -> Result<GcReport> {
        let mut leftovers_removed =
            std::mem::take(&mut *self.removed_on_open.lock().expect("store poisoned"));
        leftovers_removed.extend(self.remove_leftovers()?);
        leftovers_removed.sort();
        let verified = self.verify()?;
        for corrupt in &verified.corrupt {
            self.quarantine(&corrupt.hash)?;
            tracing::info!(
                code = %corrupt.hash,
                reason = %corrupt.reason,
                "quarantined a corrupt store object"
            );
        }
        Ok(GcReport {
            leftovers_removed,
            quarantined: verified.corrupt,
        })
    }
}

/// Removes every regular file in `dir` that no writer holds a lock on, and returns their
/// names as `<shown>/<name>`, sorted.
///
/// A writer locks its temporary file from creation to rename; a file nobody holds is the
/// leftover of a process that died. A write whose file is removed between its creation and
/// its lock notices at rename time and starts over.
pub(crate) fn remove_unlocked_files(dir: &Path, shown: &str) -> Result<Vec<String>> {
    let mut removed = Vec::new();
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(removed),
        Err(e) => return Err(io_error(e, "cannot read", dir)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| io_error(e, "cannot read", dir))?;
        let path = entry.path();
        let Ok(file) = File::open(&path) else {
            continue;
        };
        if !file.metadata().is_ok_and(|m| m.is_file()) || file.try_lock().is_err() {
            continue;
        }
        match fs::remove_file(&path) {
            Ok(()) => removed.push(format!("{shown}/{}", entry.file_name().to_string_lossy())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_error(e, "cannot remove", &path)),
        }
    }
    removed.sort();
    Ok(removed)
}

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Creates a new, locked temporary file `<prefix><pid>-<n>.tmp` in `dir`, readable only by
/// its owner when `private`.
pub(crate) fn create_temp_named(
    dir: &Path,
    prefix: &str,
    private: bool,
) -> Result<(PathBuf, File)> {
    let pid = std::process::id();
    loop {
        let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = dir.join(format!("{prefix}{pid}-{n}{TEMP_SUFFIX}"));
        let mut options = OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        if private {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        #[cfg(not(unix))]
        let _ = private;
        match options.open(&path) {
            Ok(file) => {
                // Best effort: on a file system without advisory locks, cleaners cannot lock
                // any file either, so they remove nothing (and a crash's leftovers there stay
                // until removed by hand) rather than a write in progress.
                if let Err(e) = file.lock() {
                    tracing::debug!(
                        path = %path.display(),
                        error = %e,
                        "cannot lock a temporary file"
                    );
                }
                return Ok((path, file));
            }
            // Left by an earlier process with the same pid.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(io_error(e, "cannot create", &path)),
        }
    }
}

/// Creates a new, locked temporary file for a `put` in `dir`.
fn create_temp(dir: &Path) -> Result<(PathBuf, File)> {
    create_temp_named(dir, TEMP_PREFIX, false)
}

/// Writes a small file through a temporary file in `tmp_dir`, fsync and rename.
fn write_atomically(tmp_dir: &Path, target: &Path, bytes: &[u8]) -> Result<()> {
    let (tmp, mut file) = create_temp(tmp_dir)?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(|e| io_error(e, "cannot write", &tmp))?;
    fs::rename(&tmp, target).map_err(|e| {
        let _ = fs::remove_file(&tmp);
        io_error(e, "cannot rename into", target)
    })?;
    sync_dir(target.parent().unwrap_or(tmp_dir))
}

/// Flushes a directory's entries to disk, so that a rename or unlink in it survives a crash.
#[cfg(unix)]
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_error(e, "cannot sync", dir))
}

/// Elsewhere a directory cannot be opened as a file to flush it; renames there are made
/// durable by the file system itself or not at all.
#[cfg(not(unix))]
pub(crate) fn sync_dir(_dir: &Path) -> Result<()> {
    Ok(())
}

pub(crate) fn io_error(e: io::Error, what: &str, path: &Path) -> Error {
    Error::new(ErrorKind::Io, format!("{what} {}", path.display())).with_source(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn module(n: i32) -> Code {
        let wat = format!(r#"(module (func (export "f") (result i32) i32.const {n}))"#);
        Code::new(wat::parse_str(wat).unwrap()).unwrap()
    }

    #[test]
    fn the_trait_is_object_safe_and_shareable() {
        fn check<T: Send + Sync + ?Sized>() {}
        check::<dyn CodeStore>();
        let _: std::sync::Arc<dyn CodeStore> = std::sync::Arc::new(MemoryStore::new());
    }

    #[test]
    fn temp_files_are_recognizable() {
        let dir = tempfile::tempdir().unwrap();
        let store = DirStore::open(dir.path()).unwrap();
        let (path, file) = create_temp(&store.tmp).unwrap();
        let name = path.file_name().unwrap().to_str().unwrap();
        assert!(
            name.starts_with(TEMP_PREFIX) && name.ends_with(TEMP_SUFFIX),
            "{name}"
        );
        // Locked by us: a cleaner leaves it alone.
        assert!(store.remove_leftovers().unwrap().is_empty());
        drop(file);
        assert_eq!(store.remove_leftovers().unwrap().len(), 1);
        assert!(store.put(&module(1)).unwrap());
    }
}

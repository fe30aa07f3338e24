//! The journal of executed calls ([`Journal`], [`JournalReader`]) and its replay
//! ([`replay`]). Why it is shaped this way is in [`Journal`]'s documentation; the bytes are
//! specified in `docs/journal.md`.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use wasmpickle_format::{Call, CodeHash};

use crate::code::Code;
use crate::error::{Error, ErrorKind, Result};
use crate::limits::{Grant, Limits};
use crate::memo::wire::{Reader, Writer};
use crate::memo::{RecordedResult, unix_ms_now};
use crate::runtime::{Outcome, Runtime};
use crate::store::CodeStore;

mod replay;

pub use replay::{
    Divergence, NotReplayed, ReplayConfig, ReplayReport, replay, replay_with_progress,
};

/// The first 8 bytes of a journal: `"wpk-jnl"` and the layout version, 1.
pub const JOURNAL_MAGIC: [u8; 8] = *b"wpk-jnl\x01";

const HEADER_LEN: u64 = JOURNAL_MAGIC.len() as u64;
/// Bytes of a record around its payload: the length before it, the checksum after it.
const FRAME_LEN: u64 = 4 + 32;

/// How a [`Journal`] writes. Every setting states its default.
#[derive(Clone, Debug)]
pub struct JournalConfig {
    fsync: bool,
    wait: Duration,
}

impl Default for JournalConfig {
    fn default() -> Self {
        JournalConfig {
            fsync: true,
            wait: Duration::from_secs(1),
        }
    }
}

impl JournalConfig {
    /// The defaults.
    pub fn new() -> JournalConfig {
        JournalConfig::default()
    }

    /// Whether each append is flushed to the disk (`fdatasync`) before it returns. Default:
    /// `true`: a record appended has survived a crash of the machine. With `false`, the
    /// operating system writes records back when it chooses: a crash of the process still
    /// loses nothing appended, a crash of the machine may lose the last few seconds (and
    /// leave a torn tail, reported and cut as usual). Batching with
    /// [`Journal::append_many`] amortizes the flush instead.
    pub fn fsync(&mut self, yes: bool) -> &mut Self {
        self.fsync = yes;
        self
    }

    /// How long [`Journal::open`] waits while another process has the journal open for
    /// writing. Default: one second. Not zero, because the lock is an advisory `flock`, which
    /// a child process shares between being forked and starting its program: a program that
    /// spawns processes while it closes and reopens a journal would otherwise see it locked
    /// for an instant.
    pub fn wait_for_writer(&mut self, wait: Duration) -> &mut Self {
        self.wait = wait;
        self
    }
}

/// Where a journal's records end early: the tail a crash left, or damage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TornTail {
    /// Offset of the first byte not part of an intact record.
    pub offset: u64,
    /// Bytes from there to the end of the file.
    pub bytes: u64,
    /// Why the record there is not intact.
    pub reason: String,
    /// True when an intact record follows the damaged one: damage in the middle of the file
    /// rather than a write cut short. The journal then refuses to append (see the module
    /// docs).
    pub records_follow: bool,
}

impl fmt::Display for TornTail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} at offset {} ({} bytes to the end of the file)",
            self.reason, self.offset, self.bytes
        )?;
        if self.records_follow {
            f.write_str(", followed by an intact record")?;
        }
        Ok(())
    }
}

/// One executed call, as a journal records it.
#[derive(Clone, PartialEq, Eq)]
pub struct JournalRecord {
    call: Call,
    limits: Limits,
    grants: Vec<Grant>,
    unknown_grants: Vec<String>,
    outcome: Vec<u8>,
    duration: Duration,
    unix_ms: u64,
    memo_hit: bool,
}

impl JournalRecord {
    /// The record of `call`, which ran under `limits` (those in force: the runtime's caps
    /// lowered to the call's requests) with `grants`, gave `result` and took `duration`.
    /// Timestamped now. Deadlines are kept to the millisecond.
    pub fn new(
        call: &Call,
        limits: &Limits,
        grants: &[Grant],
        result: &Result<Outcome>,
        duration: Duration,
    ) -> JournalRecord {
        JournalRecord::from_recorded(call, limits, grants, &RecordedResult::of(result), duration)
    }

    /// Like [`JournalRecord::new`], from a result already recorded (say, one a pool's worker
    /// reported).
    pub fn from_recorded(
        call: &Call,
        limits: &Limits,
        grants: &[Grant],
        result: &RecordedResult,
        duration: Duration,
    ) -> JournalRecord {
        let mut limits = *limits;
        limits.deadline(Duration::from_millis(millis(limits.get_deadline())));
        let mut grants = grants.to_vec();
        grants.sort_by_key(|g| g.import_name());
        grants.dedup();
        JournalRecord {
            call: call.clone(),
            limits,
            grants,
            unknown_grants: Vec::new(),
            outcome: result.to_bytes(),
            duration,
            unix_ms: unix_ms_now(),
            memo_hit: false,
        }
    }

    /// Marks the record as answered by a memo rather than executed (replay runs it all the
    /// same, which verifies the memo).
    pub fn with_memo_hit(mut self, memo_hit: bool) -> JournalRecord {
        self.memo_hit = memo_hit;
        self
    }

    /// The call. Read back from a journal, its code is by hash.
    pub fn call(&self) -> &Call {
        &self.call
    }

    /// The limits the call ran under.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The host functions the runtime granted.
    pub fn grants(&self) -> &[Grant] {
        &self.grants
    }

    /// Granted host functions this build does not know, by import name (a journal written by
    /// a later wasmpickle). Replay skips such records.
    pub fn unknown_grants(&self) -> &[String] {
        &self.unknown_grants
    }

    /// The canonical bytes of the result: what replay compares.
    pub fn outcome_bytes(&self) -> &[u8] {
        &self.outcome
    }

    /// The result, decoded.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Decode`] or [`ErrorKind::Version`] when the bytes are not a recorded
    /// result this build reads.
    pub fn outcome(&self) -> Result<RecordedResult> {
        RecordedResult::from_bytes(&self.outcome)
    }

    /// How long the call took (not compared by replay: time is not deterministic).
    pub fn duration(&self) -> Duration {
        self.duration
    }

    /// When the record was made, in milliseconds since the Unix epoch.
    pub fn unix_ms(&self) -> u64 {
        self.unix_ms
    }

    /// Whether a memo answered the call.
    pub fn is_memo_hit(&self) -> bool {
        self.memo_hit
    }

    /// The payload (`docs/journal.md`, "Payload"), with the call by reference.
    fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.map(6 + u32::from(self.memo_hit));
        w.str("call");
        w.bin(&self.call.by_reference().to_bytes());
        w.str("limits");
        w.map(4);
        w.str("fuel");
        w.uint(self.limits.get_fuel());
        w.str("deadline_ms");
        w.uint(millis(self.limits.get_deadline()));
        w.str("max_memory");
        w.uint(self.limits.get_max_memory());
        w.str("max_table_elements");
        w.uint(self.limits.get_max_table_elements());
        w.str("grants");
        let mut names: Vec<&str> = self
            .grants
            .iter()
            .map(|g| g.import_name())
            .chain(self.unknown_grants.iter().map(String::as_str))
            .collect();
        names.sort_unstable();
        names.dedup();
        w.array(names.len() as u32);
        for name in names {
            w.str(name);
        }
        w.str("outcome");
        w.bin(&self.outcome);
        w.str("duration_ns");
        w.uint(u64::try_from(self.duration.as_nanos()).unwrap_or(u64::MAX));
        w.str("unix_ms");
        w.uint(self.unix_ms);
        if self.memo_hit {
            w.str("memo_hit");
            w.bool(true);
        }
        w.out
    }

    /// Decodes a payload; only the canonical encoding is accepted.
    fn decode(payload: &[u8]) -> std::result::Result<JournalRecord, String> {
        let mut r = Reader::new(payload);
        let len = r.map()?;
        if !(6..=7).contains(&len) {
            return Err(format!("a record has 6 or 7 keys, not {len}"));
        }
        r.key("call")?;
        let call = Call::from_bytes(r.bin()?).map_err(|e| format!("bad call: {e}"))?;
        r.key("limits")?;
        if r.map()? != 4 {
            return Err("limits have 4 keys".to_owned());
        }
        let mut limits = Limits::new();
        r.key("fuel")?;
        limits.fuel(r.uint()?);
        r.key("deadline_ms")?;
        limits.deadline(Duration::from_millis(r.uint()?));
        r.key("max_memory")?;
        limits.max_memory(r.uint()?);
        r.key("max_table_elements")?;
        limits.max_table_elements(r.uint()?);
        r.key("grants")?;
        let n = r.array()?;
        let mut grants = Vec::new();
        let mut unknown_grants = Vec::new();
        for _ in 0..n {
            let name = r.str()?;
            match Grant::from_import_name(name) {
                Some(g) => grants.push(g),
                None => unknown_grants.push(name.to_owned()),
            }
        }
        grants.sort_by_key(|g| g.import_name());
        r.key("outcome")?;
        let outcome = r.bin()?.to_vec();
        r.key("duration_ns")?;
        let duration = Duration::from_nanos(r.uint()?);
        r.key("unix_ms")?;
        let unix_ms = r.uint()?;
        let memo_hit = if len == 7 {
            r.key("memo_hit")?;
            if !r.bool()? {
                return Err("`memo_hit` is present only when true".to_owned());
            }
            true
        } else {
            false
        };
        if !r.is_empty() {
            return Err("bytes after the record".to_owned());
        }
        let record = JournalRecord {
            call,
            limits,
            grants,
            unknown_grants,
            outcome,
            duration,
            unix_ms,
            memo_hit,
        };
        if record.encode() != payload {
            return Err("not in canonical form".to_owned());
        }
        Ok(record)
    }
}

impl fmt::Debug for JournalRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JournalRecord")
            .field("call", &self.call.id())
            .field("code", &self.call.code().hash())
            .field("export", &self.call.export())
            .field("outcome", &RecordedResult::from_bytes(&self.outcome))
            .field("duration", &self.duration)
            .field("memo_hit", &self.memo_hit)
            .finish()
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Frames a payload as a record: length, payload, checksum.
fn frame(payload: &[u8], out: &mut Vec<u8>) {
    let len = u32::try_from(payload.len()).expect("records are under 4 GiB");
    let start = out.len();
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(payload);
    let checksum = Sha256::digest(&out[start..]);
    out.extend_from_slice(&checksum);
}

/// An append-only journal of executed calls, open for writing, that can be replayed
/// anywhere, later, and verified bit for bit.
///
/// Each record holds a call (its code by hash; the module goes into a [`CodeStore`]), the
/// limits and grants it ran under, its [`RecordedResult`] — the canonical bytes of its value
/// and fuel, or of its failure — how long it took, and when. [`replay`] runs every record
/// again in a fresh sandbox and compares the result bytes; because calls are deterministic,
/// anything but an identical result is a real divergence: different code under the same hash,
/// a different engine, a broken sandbox.
///
/// # Why this shape
///
/// * **Append-only, one record per write.** A record is framed as a length, the payload and
///   a SHA-256 checksum, and appended with a single write at the end of the file (then
///   `fdatasync`, unless [`JournalConfig::fsync`] is off). A crash in the middle of a write
///   can only leave a *torn tail*: a last record that is incomplete or fails its checksum.
///   Earlier records are never rewritten, so they cannot be damaged by it.
/// * **Torn tails are reported, then cut.** [`Journal::open`] and [`JournalReader`] keep every
///   record before a torn tail and report it ([`TornTail`]: where, how many bytes, why). The
///   next append truncates it first, so new records follow intact ones. A damaged record
///   *followed by an intact one* is not a torn tail but damage in the middle of the file:
///   the journal then refuses to append, which would cut the intact records off, until told
///   to with [`Journal::discard_tail`].
/// * **Code by hash.** Records name their module by hash, so a journal of a million calls of
///   one module holds the module once, in the code store (by default a [`DirStore`](crate::DirStore) beside
///   the journal, [`Journal::default_store`]). Journal and store together are what another
///   machine needs to replay.
/// * **The limits and grants in force are recorded**, not just what the call requested,
///   because they decide the result: a call replayed under the recorded limits runs out of
///   fuel, or hits its memory cap, exactly where it did.
///
/// One process appends at a time: [`Journal::open`] takes an exclusive advisory lock on the
/// file. Readers need no lock; one reading while a writer appends sees a possibly torn tail,
/// which is the write in progress.
///
/// The byte layout is specified in `docs/journal.md`.
///
/// # Threads
///
/// `Send + Sync`: threads of one process may append concurrently; each record is written
/// whole.
///
/// # Example
///
/// ```no_run
/// use std::sync::Arc;
/// use wasmpickle::{Code, DirStore, Journal, ReplayConfig, Runtime, RuntimeConfig};
///
/// #[derive(serde::Serialize)]
/// struct Scale { factor: f64 }
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let store = Arc::new(DirStore::open("calls.journal.store")?);
/// let journal = Journal::open("calls.journal", store.clone())?;
/// let runtime = Runtime::new(&RuntimeConfig::default())?;
/// let code = Code::from_file("math.wasm")?;
/// let call = code.closure("scale", &Scale { factor: 2.5 })?.call(&(4.0,))?;
/// let y: f64 = journal.run(&runtime, &call)?.decode()?;
///
/// // Later, anywhere with the journal and its store:
/// let report = wasmpickle::replay("calls.journal", ReplayConfig::new().code_store(store))?;
/// assert!(report.is_ok());
/// # Ok(()) }
/// ```
pub struct Journal {
    path: PathBuf,
    store: Arc<dyn CodeStore>,
    config: JournalConfig,
    torn_tail: Option<TornTail>,
    writer: Mutex<JournalWriter>,
    loaded: RwLock<HashMap<CodeHash, Code>>,
    stored: Mutex<HashSet<CodeHash>>,
}

struct JournalWriter {
    file: File,
    /// Where the next record goes: the end of the last intact record.
    end: u64,
    records: u64,
    /// A torn tail not yet cut off.
    pending: Option<TornTail>,
}

impl Journal {
    /// The code store a journal at `journal` uses by default: the directory `<journal>.store`
    /// beside it.
    pub fn default_store(journal: impl AsRef<Path>) -> PathBuf {
        let mut path = journal.as_ref().as_os_str().to_owned();
        path.push(".store");
        PathBuf::from(path)
    }

    /// Opens the journal at `path` for appending, creating it if missing, with `store` for
    /// the modules of the calls it records. Every record is read and checked; a torn tail is
    /// reported by [`Journal::torn_tail`] and cut off by the next append.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Io`] when the file cannot be opened or read, or another process has it
    /// open for writing; [`ErrorKind::Decode`] when it is not a journal;
    /// [`ErrorKind::Version`] when it is a journal of a later layout.
    pub fn open(path: impl AsRef<Path>, store: Arc<dyn CodeStore>) -> Result<Journal> {
        Journal::open_with(path, store, &JournalConfig::default())
    }

    /// [`Journal::open`] with a configuration.
    ///
    /// # Errors
    ///
    /// As [`Journal::open`].
    pub fn open_with(
        path: impl AsRef<Path>,
        store: Arc<dyn CodeStore>,
        config: &JournalConfig,
    ) -> Result<Journal> {
        let path = path.as_ref();
        let io_err = |what: &str, e: io::Error| {
            Error::new(
                ErrorKind::Io,
                format!("cannot {what} journal {}", path.display()),
            )
            .with_source(e)
        };
        let existed = path.exists();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|e| io_err("open", e))?;
        let deadline = Instant::now() + config.wait;
        let mut pause = Duration::from_millis(1);
        loop {
            match file.try_lock() {
                Ok(()) => break,
                Err(std::fs::TryLockError::WouldBlock) if Instant::now() < deadline => {
                    std::thread::sleep(
                        pause.min(deadline.saturating_duration_since(Instant::now())),
                    );
                    pause = (pause * 2).min(Duration::from_millis(50));
                }
                Err(std::fs::TryLockError::WouldBlock) => {
                    return Err(Error::new(
                        ErrorKind::Io,
                        format!(
                            "journal {} is open for writing in another process",
                            path.display()
                        ),
                    ));
                }
                Err(std::fs::TryLockError::Error(e)) => return Err(io_err("lock", e)),
            }
        }
        let len = file.metadata().map_err(|e| io_err("read", e))?.len();
        if len < HEADER_LEN {
            // Empty, or a header cut short by a crash while the journal was created.
            let mut head = vec![0; len as usize];
            file.read_exact_at(&mut head, 0)
                .map_err(|e| io_err("read", e))?;
            if !JOURNAL_MAGIC.starts_with(&head) {
                return Err(not_a_journal(path));
            }
            file.set_len(0).map_err(|e| io_err("write", e))?;
            file.write_all_at(&JOURNAL_MAGIC, 0)
                .map_err(|e| io_err("write", e))?;
            file.sync_all().map_err(|e| io_err("write", e))?;
            if !existed {
                sync_parent(path).map_err(|e| io_err("create", e))?;
            }
        }
        let (end, records, torn_tail) = {
            let mut scan = Scan::new(BufReader::new(&file), path)?;
            let mut records = 0;
            while scan.next_payload()?.is_some() {
                records += 1;
            }
            (scan.offset, records, scan.torn_tail)
        };
        if let Some(t) = &torn_tail {
            tracing::warn!(journal = %path.display(), tail = %t, "journal has a torn tail");
        }
        Ok(Journal {
            path: path.to_owned(),
            store,
            config: config.clone(),
            writer: Mutex::new(JournalWriter {
                file,
                end,
                records,
                pending: torn_tail.clone(),
            }),
            torn_tail,
            loaded: RwLock::default(),
            stored: Mutex::default(),
        })
    }

    /// The journal's file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The code store records' modules go to.
    pub fn store(&self) -> &Arc<dyn CodeStore> {
        &self.store
    }

    /// The torn tail found when the journal was opened, if any (kept after the next append
    /// cuts it off, for the record).
    pub fn torn_tail(&self) -> Option<&TornTail> {
        self.torn_tail.as_ref()
    }

    /// How many intact records the journal holds.
    pub fn len(&self) -> u64 {
        self.writer().records
    }

    /// True when the journal holds no intact record.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Makes a module known, for recording calls that name it by hash when the store lacks
    /// it.
    pub fn load(&self, code: &Code) {
        self.loaded
            .write()
            .expect("journal modules poisoned")
            .insert(code.hash(), code.clone());
    }

    /// Runs `call` on `runtime` and records it. Returns the call's result.
    ///
    /// # Errors
    ///
    /// The call's own error; or, when the call ran but could not be recorded, the
    /// journal's ([`ErrorKind::Io`], [`ErrorKind::CodeNotFound`], ...): a caller who asked
    /// for a journal learns that it is incomplete.
    pub fn run(&self, runtime: &Runtime, call: &Call) -> Result<Outcome> {
        let started = Instant::now();
        let result = runtime.run(call);
        self.record(runtime, call, &result, started.elapsed())?;
        result
    }

    /// Records a call that ran on `runtime`, with the limits and grants in force there.
    /// Returns the record's index.
    ///
    /// # Errors
    ///
    /// As [`Journal::append`].
    pub fn record(
        &self,
        runtime: &Runtime,
        call: &Call,
        result: &Result<Outcome>,
        duration: Duration,
    ) -> Result<u64> {
        let limits = runtime.limits().restrict(call.limits());
        self.append(&JournalRecord::new(
            call,
            &limits,
            runtime.grants(),
            result,
            duration,
        ))
    }

    /// Appends a record and returns its index. Its module is put into the code store first.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::CodeNotFound`] when the call names its code by hash and neither the store
    /// nor [`Journal::load`] has it (unless the recorded failure is one replay skips anyway,
    /// such as that very code being missing); [`ErrorKind::StoreCorrupt`] when the journal
    /// is damaged in the middle ([`TornTail::records_follow`]); [`ErrorKind::Io`] when the
    /// journal or the store cannot be written. A failed append leaves the journal as it was.
    pub fn append(&self, record: &JournalRecord) -> Result<u64> {
        self.append_many(std::slice::from_ref(record))
    }

    /// Appends several records with one write and one flush. Returns the index of the first.
    ///
    /// # Errors
    ///
    /// As [`Journal::append`]; none is appended when one fails.
    pub fn append_many(&self, records: &[JournalRecord]) -> Result<u64> {
        let mut buf = Vec::new();
        for record in records {
            self.keep_code(record)?;
            frame(&record.encode(), &mut buf);
        }
        let io_err = |e: io::Error| {
            Error::new(
                ErrorKind::Io,
                format!("cannot append to journal {}", self.path.display()),
            )
            .with_source(e)
        };
        let mut w = self.writer();
        if let Some(tail) = &w.pending {
            if tail.records_follow {
                return Err(Error::new(
                    ErrorKind::StoreCorrupt,
                    format!(
                        "journal {} is damaged in the middle ({tail}); appending would cut off \
                         the intact records after the damage, so it is refused (copy the file \
                         aside, then discard the tail explicitly)",
                        self.path.display()
                    ),
                ));
            }
            let at = tail.offset;
            w.file.set_len(at).map_err(io_err)?;
            w.file.sync_data().map_err(io_err)?;
            tracing::info!(journal = %self.path.display(), offset = at, "cut off a torn tail");
            w.pending = None;
        }
        if records.is_empty() {
            return Ok(w.records);
        }
        let end = w.end;
        let written = w.file.write_all_at(&buf, end).and_then(|()| {
            if self.config.fsync {
                w.file.sync_data()
            } else {
                Ok(())
            }
        });
        if let Err(e) = written {
            // Leave no partial record behind for the next append to follow.
            let _ = w.file.set_len(end);
            return Err(io_err(e));
        }
        let first = w.records;
        w.end += buf.len() as u64;
        w.records += records.len() as u64;
        Ok(first)
    }

    /// Cuts the journal at its torn tail even when intact records follow the damage (see
    /// [`TornTail::records_follow`]), losing them. Returns the bytes removed.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Io`] when the file cannot be truncated.
    pub fn discard_tail(&self) -> Result<u64> {
        let mut w = self.writer();
        let Some(tail) = w.pending.take() else {
            return Ok(0);
        };
        let io_err = |e: io::Error| {
            Error::new(
                ErrorKind::Io,
                format!("cannot truncate journal {}", self.path.display()),
            )
            .with_source(e)
        };
        w.file.set_len(tail.offset).map_err(io_err)?;
        w.file.sync_data().map_err(io_err)?;
        Ok(tail.bytes)
    }

    fn writer(&self) -> std::sync::MutexGuard<'_, JournalWriter> {
        self.writer.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Puts the record's module into the store, unless it is known to be there.
    fn keep_code(&self, record: &JournalRecord) -> Result<()> {
        let code_ref = record.call.code();
        let hash = code_ref.hash();
        if self
            .stored
            .lock()
            .expect("journal poisoned")
            .contains(&hash)
        {
            return Ok(());
        }
        let found = if self.store.contains(&hash)? {
            Ok(None)
        } else if let Some(code) = self.loaded.read().expect("journal poisoned").get(&hash) {
            Ok(Some(code.clone()))
        } else if let Some(wasm) = code_ref.wasm() {
            Code::new(wasm.clone()).and_then(|code| {
                if code.hash() == hash {
                    Ok(Some(code))
                } else {
                    Err(Error::new(
                        ErrorKind::HashMismatch,
                        format!(
                            "module bytes hash to {}, but the call names {hash}",
                            code.hash()
                        ),
                    )
                    .with_code(hash))
                }
            })
        } else {
            Err(Error::new(
                ErrorKind::CodeNotFound,
                format!(
                    "cannot journal a call of code {hash}: the call names its code by hash, \
                     and neither the journal's code store nor its loaded modules have it"
                ),
            )
            .with_code(hash))
        };
        match found {
            Ok(Some(code)) => {
                self.store.put(&code)?;
            }
            Ok(None) => {}
            // A call whose code is missing or broken failed for that reason; replay skips
            // such records, so they are journaled without their code.
            Err(e) if !replay::replayed(&record.outcome) => {
                tracing::debug!(code = %hash, error = %e, "journaling a call without its code");
                return Ok(());
            }
            Err(e) => return Err(e),
        }
        self.stored.lock().expect("journal poisoned").insert(hash);
        Ok(())
    }
}

impl fmt::Debug for Journal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Journal")
            .field("path", &self.path)
            .field("records", &self.len())
            .field("torn_tail", &self.torn_tail)
            .finish()
    }
}

fn not_a_journal(path: &Path) -> Error {
    Error::new(
        ErrorKind::Decode,
        format!("{} is not a wasmpickle journal", path.display()),
    )
}

fn sync_parent(path: &Path) -> io::Result<()> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    File::open(parent)?.sync_all()
}

/// Reads a journal's records in order, without locking it (see [`Journal`]).
///
/// The n-th item is record n: a record whose frame is intact but whose payload does not
/// decode is an `Err` in its place, and reading goes on. An I/O error ends the iteration.
/// After the last item, [`JournalReader::torn_tail`] says whether the records ended early.
pub struct JournalReader {
    scan: Scan<BufReader<File>>,
    index: u64,
    failed: bool,
}

impl JournalReader {
    /// Opens the journal at `path` for reading.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Io`] when it cannot be read; [`ErrorKind::Decode`] when it is not a
    /// journal; [`ErrorKind::Version`] when it is a journal of a later layout.
    pub fn open(path: impl AsRef<Path>) -> Result<JournalReader> {
        let path = path.as_ref();
        let file = File::open(path).map_err(|e| {
            Error::new(
                ErrorKind::Io,
                format!("cannot open journal {}", path.display()),
            )
            .with_source(e)
        })?;
        Ok(JournalReader {
            scan: Scan::new(BufReader::new(file), path)?,
            index: 0,
            failed: false,
        })
    }

    /// Where the records ended early, once the iteration has reached the end.
    pub fn torn_tail(&self) -> Option<&TornTail> {
        self.scan.torn_tail.as_ref()
    }

    /// Reads every remaining record and the torn tail, if any.
    ///
    /// # Errors
    ///
    /// The first error reading or decoding a record.
    pub fn read_all(mut self) -> Result<(Vec<JournalRecord>, Option<TornTail>)> {
        let records = self.by_ref().collect::<Result<Vec<_>>>()?;
        Ok((records, self.scan.torn_tail))
    }
}

impl Iterator for JournalReader {
    type Item = Result<JournalRecord>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        let index = self.index;
        match self.scan.next_payload() {
            Ok(Some(payload)) => {
                self.index += 1;
                Some(JournalRecord::decode(payload).map_err(|why| {
                    Error::new(
                        ErrorKind::Decode,
                        format!("journal record {index} does not decode: {why}"),
                    )
                }))
            }
            Ok(None) => None,
            Err(e) => {
                self.failed = true;
                Some(Err(e))
            }
        }
    }
}

impl fmt::Debug for JournalReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JournalReader")
            .field("path", &self.scan.path)
            .field("index", &self.index)
            .finish()
    }
}

/// Walks a journal's records from the header to the first record that is not intact.
struct Scan<R> {
    src: R,
    path: PathBuf,
    /// The end of the file when the scan began; appends after that are not read.
    len: u64,
    /// Where `src` is.
    pos: u64,
    /// The end of the last intact record read.
    offset: u64,
    payload: Vec<u8>,
    torn_tail: Option<TornTail>,
    done: bool,
}

impl<R: Read + Seek> Scan<R> {
    fn new(mut src: R, path: &Path) -> Result<Scan<R>> {
        let io_err = |e: io::Error| {
            Error::new(
                ErrorKind::Io,
                format!("cannot read journal {}", path.display()),
            )
            .with_source(e)
        };
        let len = src.seek(SeekFrom::End(0)).map_err(io_err)?;
        src.seek(SeekFrom::Start(0)).map_err(io_err)?;
        let mut head = [0; HEADER_LEN as usize];
        let got = read_up_to(&mut src, &mut head).map_err(io_err)?;
        let magic = got.min(JOURNAL_MAGIC.len() - 1);
        if head[..magic] != JOURNAL_MAGIC[..magic] {
            return Err(not_a_journal(path));
        }
        if got == HEADER_LEN as usize && head[7] != JOURNAL_MAGIC[7] {
            return Err(Error::new(
                ErrorKind::Version,
                format!(
                    "journal {} has layout version {}; this build reads version {}",
                    path.display(),
                    head[7],
                    JOURNAL_MAGIC[7]
                ),
            ));
        }
        let mut scan = Scan {
            src,
            path: path.to_owned(),
            len,
            pos: got as u64,
            offset: HEADER_LEN.min(len),
            payload: Vec::new(),
            torn_tail: None,
            done: false,
        };
        if got < HEADER_LEN as usize {
            // A header cut short by a crash while the journal was being created.
            scan.tear(0, "the header is incomplete".to_owned(), false);
            scan.offset = 0;
        }
        Ok(scan)
    }

    fn tear(&mut self, at: u64, reason: String, records_follow: bool) {
        self.torn_tail = Some(TornTail {
            offset: at,
            bytes: self.len - at,
            reason,
            records_follow,
        });
        self.done = true;
    }

    /// The next intact record's payload, or `None` at the end (or at a torn tail).
    fn next_payload(&mut self) -> Result<Option<&[u8]>> {
        if self.done {
            return Ok(None);
        }
        let at = self.offset;
        match self.check_record(at) {
            Ok(Checked::Intact(next)) => {
                self.offset = next;
                Ok(Some(&self.payload))
            }
            Ok(Checked::End) => {
                self.done = true;
                Ok(None)
            }
            Ok(Checked::Torn(reason, next)) => {
                // Damage in the middle of the file, rather than a write cut short, shows as
                // an intact record right after the damaged one.
                let follows =
                    next.is_some_and(|n| matches!(self.check_record(n), Ok(Checked::Intact(_))));
                self.tear(at, reason, follows);
                Ok(None)
            }
            Err(e) => {
                self.done = true;
                Err(Error::new(
                    ErrorKind::Io,
                    format!("cannot read journal {}", self.path.display()),
                )
                .with_source(e))
            }
        }
    }

    /// Checks the record at `at`, leaving its payload in `self.payload` when intact.
    fn check_record(&mut self, at: u64) -> io::Result<Checked> {
        let left = self.len - at;
        if left == 0 {
            return Ok(Checked::End);
        }
        if left < 4 {
            return Ok(Checked::Torn(
                format!("a record's length is cut short ({left} of 4 bytes)"),
                None,
            ));
        }
        if self.pos != at {
            self.src.seek(SeekFrom::Start(at))?;
            self.pos = at;
        }
        let mut len = [0; 4];
        self.src.read_exact(&mut len)?;
        self.pos += 4;
        let payload_len = u64::from(u32::from_le_bytes(len));
        let total = FRAME_LEN + payload_len;
        if total > left {
            return Ok(Checked::Torn(
                format!("a record of {total} bytes is cut short ({left} bytes left)"),
                None,
            ));
        }
        // The length is within the file, so this allocates no more than the file holds.
        self.payload.resize(payload_len as usize, 0);
        self.src.read_exact(&mut self.payload)?;
        let mut checksum = [0; 32];
        self.src.read_exact(&mut checksum)?;
        self.pos += total - 4;
        let mut h = Sha256::new();
        h.update(len);
        h.update(&self.payload);
        if h.finalize().as_slice() != checksum {
            return Ok(Checked::Torn(
                "a record fails its checksum".to_owned(),
                Some(at + total),
            ));
        }
        Ok(Checked::Intact(at + total))
    }
}

enum Checked {
    /// An intact record, ending at the offset given.
    Intact(u64),
    /// The end of the file, exactly at a record boundary.
    End,
    /// Not an intact record: why, and where it would end, when its length fits the file.
    Torn(String, Option<u64>),
}

/// Reads as much of `buf` as the source holds.
fn read_up_to(src: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match src.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_checksum_the_length_and_payload() {
        let mut out = Vec::new();
        frame(b"abc", &mut out);
        assert_eq!(&out[..4], &3u32.to_le_bytes());
        assert_eq!(&out[4..7], b"abc");
        let mut h = Sha256::new();
        h.update(&out[..7]);
        assert_eq!(&out[7..], h.finalize().as_slice());
    }
}

//! `wasmpickle memo`: look at and clear a memo; and the `--memo` flags `run` and `map` share.
//!
//! A memo is named by one string: `redis://...` (or `rediss://`, `redis+unix://`) for a Redis
//! server, anything else for a redb file, created on first use. The library's `Memo` keys
//! results by what the export can reach, its environment and arguments, so one memo serves
//! any number of modules and exports.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use serde::Serialize;
use wasmpickle::{
    Call, Code, CodeStore, DirStore, Grant, Journal, JournalConfig, JournalRecord, Limits, Memo,
    MemoBackend, MemoConfig, MemoLookup, MemoMiss, Outcome, RecordedResult, RedbBackend,
    RedisBackend, Runtime,
};

use crate::stdio;

/// How long a command waits for a redb memo file, or a journal, that another process has
/// open.
const WAIT_FOR_FILE: Duration = Duration::from_secs(60);

/// The memo flags of `run` and `map`.
#[derive(Args, Clone, Debug, Default)]
#[command(next_help_heading = "Memo")]
pub(crate) struct MemoArgs {
    /// Answer calls from a memo, and store the results of calls that ran: a redb file
    /// (created if missing), or redis://HOST[:PORT][/DB]
    ///
    /// A result is reused only for the same code the export can reach (editing code it
    /// cannot reach keeps the entries), environment, arguments and memory caps, and only
    /// within the fuel budget. Calls that can reach a granted clock are refused
    /// (error[not-memoizable]). A damaged entry is a miss. A redb file is used by one
    /// process at a time: others wait for it, and `run` holds it only while looking up and
    /// storing, not while the call runs.
    #[arg(long, value_name = "PATH|URL")]
    pub(crate) memo: Option<String>,

    /// Entries expire this long after they are stored, e.g. 90s, 30m, 12h, 7d [default:
    /// never]
    #[arg(long, value_name = "DURATION", requires = "memo", value_parser = parse_duration)]
    pub(crate) memo_ttl: Option<Duration>,

    /// Store failures too: those the call alone determines (guest errors and panics, bad
    /// input, traps, ABI violations, memory limits), never running out of fuel or time
    #[arg(long, requires = "memo")]
    pub(crate) memo_errors: bool,
}

impl MemoArgs {
    /// The memo named by `--memo`, which finds by-hash modules in `store` and `code`.
    pub(crate) fn open(
        &self,
        store: Option<&Arc<dyn CodeStore>>,
        code: Option<&Code>,
    ) -> wasmpickle::Result<Option<Memo>> {
        let Some(spec) = &self.memo else {
            return Ok(None);
        };
        let mut config = MemoConfig::new();
        config.ttl(self.memo_ttl).cache_errors(self.memo_errors);
        if let Some(store) = store {
            config.code_store(store.clone());
        }
        let memo = Memo::with_config(open_backend(spec)?, &config);
        if let Some(code) = code {
            memo.load(code);
        }
        Ok(Some(memo))
    }

    /// True when the memo is a file this process should hold only briefly.
    fn is_file(&self) -> bool {
        self.memo.as_deref().is_some_and(|spec| !is_redis(spec))
    }
}

/// What `run` does around one call with `--memo` and `--journal`: answer it from the memo or
/// run it and store the result, then record it in the journal.
pub(crate) struct Around<'a> {
    pub(crate) memo: &'a MemoArgs,
    pub(crate) journal: Option<&'a Path>,
    /// The `--store`, if given: where the memo finds by-hash modules, and the journal's store.
    pub(crate) store: Option<Arc<dyn CodeStore>>,
    /// The `--code` module the call names, if given.
    pub(crate) code: Option<&'a Code>,
}

impl Around<'_> {
    /// Runs `call` with `run` unless the memo has its result. Returns the result and whether
    /// it came from the memo.
    pub(crate) fn run(
        &self,
        runtime: &Runtime,
        call: &Call,
        run: impl FnOnce() -> wasmpickle::Result<Outcome>,
    ) -> wasmpickle::Result<(Outcome, bool)> {
        let started = Instant::now();
        let (result, hit) = match self.memo.open(self.store.as_ref(), self.code)? {
            None => (run(), false),
            Some(memo) => match memo.lookup(call, runtime.limits(), runtime.grants())? {
                MemoLookup::Hit(result) => {
                    tracing::info!(call = %call.id(), "answered from the memo");
                    (result, true)
                }
                MemoLookup::Miss(miss) => {
                    // A memo file is held only while looking up and storing, not while the
                    // call runs, so that other processes can use it meanwhile.
                    let memo = if self.memo.is_file() {
                        drop(memo);
                        None
                    } else {
                        Some(memo)
                    };
                    let result = run();
                    let memo = match memo {
                        Some(memo) => Some(memo),
                        None => self
                            .memo
                            .open(self.store.as_ref(), self.code)
                            .map_err(|e| tracing::warn!(error = %e, "cannot store the result in the memo"))
                            .ok()
                            .flatten(),
                    };
                    if let Some(memo) = memo {
                        memo.store(&miss, &result);
                    }
                    (result, false)
                }
            },
        };
        if let Some(path) = self.journal {
            let store = match &self.store {
                Some(store) => store.clone(),
                None => Arc::new(DirStore::open(Journal::default_store(path))?),
            };
            let journal = Journal::open_with(
                path,
                store,
                JournalConfig::new().wait_for_writer(WAIT_FOR_FILE),
            )?;
            if let Some(code) = self.code {
                journal.load(code);
            }
            let limits = runtime.limits().restrict(call.limits());
            journal.append(
                &JournalRecord::new(call, &limits, runtime.grants(), &result, started.elapsed())
                    .with_memo_hit(hit),
            )?;
        }
        result.map(|outcome| (outcome, hit))
    }
}

/// Results stored, and records appended, this many at a time by `map`: one transaction and
/// one write each.
const MAP_BATCH: usize = 256;

/// What `map` does around its calls with `--memo` and `--journal`: looks each call up before
/// it is dispatched to the pool, stores the results that come back, and journals every call
/// in input order (record *n* is line *n*), memo hits included.
pub(crate) struct MapAround {
    memo: Option<Memo>,
    journal: Option<Journal>,
    caps: Limits,
    grants: Vec<Grant>,
    /// Calls dispatched to the pool: their memo miss (with a memo) and when they left.
    misses: HashMap<usize, (Option<MemoMiss>, Instant)>,
    stores: Vec<(MemoMiss, RecordedResult)>,
    records: BTreeMap<usize, JournalRecord>,
    next_record: usize,
}

impl MapAround {
    /// For calls of `code` on workers with caps `caps` and grants `grants`.
    pub(crate) fn new(
        memo: &MemoArgs,
        journal: Option<&Path>,
        code: &Code,
        caps: Limits,
        grants: Vec<Grant>,
    ) -> wasmpickle::Result<MapAround> {
        let journal = match journal {
            None => None,
            Some(path) => {
                let store = Arc::new(DirStore::open(Journal::default_store(path))?);
                let journal = Journal::open_with(
                    path,
                    store,
                    JournalConfig::new().wait_for_writer(WAIT_FOR_FILE),
                )?;
                journal.load(code);
                Some(journal)
            }
        };
        Ok(MapAround {
            memo: memo.open(None, Some(code))?,
            journal,
            caps,
            grants,
            misses: HashMap::new(),
            stores: Vec::new(),
            records: BTreeMap::new(),
            next_record: 0,
        })
    }

    /// Before input `index` is dispatched: its result, when the memo has it.
    pub(crate) fn before(
        &mut self,
        index: usize,
        call: &Call,
    ) -> wasmpickle::Result<Option<wasmpickle::Result<Outcome>>> {
        let started = Instant::now();
        let Some(memo) = &self.memo else {
            if self.journal.is_some() {
                self.misses.insert(index, (None, started));
            }
            return Ok(None);
        };
        match memo.lookup(call, &self.caps, &self.grants)? {
            MemoLookup::Hit(result) => {
                let recorded = RecordedResult::of(&result);
                self.record(index, call, &recorded, started, true)?;
                Ok(Some(result))
            }
            MemoLookup::Miss(miss) => {
                self.misses.insert(index, (Some(miss), started));
                Ok(None)
            }
        }
    }

    /// After input `index`'s result came back from the pool.
    pub(crate) fn after(
        &mut self,
        index: usize,
        call: &Call,
        result: &Result<wasmpickle_pool::Outcome, wasmpickle_pool::Error>,
    ) -> wasmpickle::Result<()> {
        let Some((miss, started)) = self.misses.remove(&index) else {
            return Ok(());
        };
        let recorded = match result {
            Ok(outcome) => {
                let recorded = RecordedResult::Returned {
                    value: outcome.value().to_vec(),
                    fuel_used: outcome.fuel_used(),
                };
                if let Some(miss) = miss {
                    // Failures come back from workers as text, not as errors the memo can
                    // judge, so `map` stores returned values only.
                    self.stores.push((miss, recorded.clone()));
                    if self.stores.len() >= MAP_BATCH {
                        self.flush_stores();
                    }
                }
                recorded
            }
            // A worker reports a failure as the library's kind and the message with its causes,
            // exactly the fields of a recorded result.
            Err(e) => RecordedResult::Failed {
                kind: e
                    .remote_kind_name()
                    .map_or_else(|| e.kind().as_str().to_owned(), str::to_owned),
                message: e.to_string(),
                guest: e.guest_failure().cloned(),
                fuel_used: e.fuel_used(),
            },
        };
        self.record(index, call, &recorded, started, false)
    }

    /// Stores and appends what is left.
    pub(crate) fn finish(mut self) -> wasmpickle::Result<()> {
        self.flush_stores();
        self.flush_records(true)
    }

    fn record(
        &mut self,
        index: usize,
        call: &Call,
        result: &RecordedResult,
        started: Instant,
        hit: bool,
    ) -> wasmpickle::Result<()> {
        if self.journal.is_none() {
            return Ok(());
        }
        let limits = self.caps.restrict(call.limits());
        let record =
            JournalRecord::from_recorded(call, &limits, &self.grants, result, started.elapsed())
                .with_memo_hit(hit);
        self.records.insert(index, record);
        self.flush_records(false)
    }

    /// Appends the records that are next in input order, once there are enough of them (or
    /// all of them, at the end).
    fn flush_records(&mut self, all: bool) -> wasmpickle::Result<()> {
        let Some(journal) = &self.journal else {
            return Ok(());
        };
        let ready = (self.next_record..)
            .take_while(|i| self.records.contains_key(i))
            .count();
        if ready == 0 || (!all && ready < MAP_BATCH) {
            return Ok(());
        }
        let batch: Vec<JournalRecord> = (self.next_record..self.next_record + ready)
            .map(|i| self.records.remove(&i).expect("counted above"))
            .collect();
        self.next_record += ready;
        journal.append_many(&batch)?;
        Ok(())
    }

    fn flush_stores(&mut self) {
        if let Some(memo) = &self.memo {
            memo.store_many(std::mem::take(&mut self.stores));
        }
    }
}

/// Opens the memo named `spec`: a Redis URL or a redb file.
pub(crate) fn open_backend(spec: &str) -> wasmpickle::Result<Arc<dyn MemoBackend>> {
    if is_redis(spec) {
        return Ok(Arc::new(RedisBackend::open(spec)?));
    }
    Ok(Arc::new(RedbBackend::open_waiting(spec, WAIT_FOR_FILE)?))
}

fn is_redis(spec: &str) -> bool {
    ["redis://", "rediss://", "redis+unix://", "unix://"]
        .iter()
        .any(|scheme| spec.starts_with(scheme))
}

/// Parses `90s`, `30m`, `12h`, `7d`, `500ms`, or a plain number of seconds.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 90s, 30m, 12h or 7d"))?;
    let seconds = match unit.trim() {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        "d" => n * 86400.0,
        other => return Err(format!("unknown unit {other:?} (use ms, s, m, h or d)")),
    };
    Duration::try_from_secs_f64(seconds)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| format!("{text:?} is not a positive duration"))
}

/// Look at or clear a memo (see `run --memo`).
#[derive(Args, Debug)]
pub(crate) struct MemoCommand {
    #[command(subcommand)]
    command: MemoSubcommand,
}

#[derive(Debug, Subcommand)]
enum MemoSubcommand {
    /// Print the number of entries and bytes a memo holds, as JSON
    Stats(Target),
    /// Remove every entry of a memo (a Redis memo's keys only, not the rest of the server)
    Clear(Target),
}

#[derive(Args, Debug)]
struct Target {
    /// The memo: a redb file, or redis://HOST[:PORT][/DB]
    #[arg(long, value_name = "PATH|URL")]
    memo: String,
}

impl Target {
    fn open(&self) -> anyhow::Result<Arc<dyn MemoBackend>> {
        // Looking at a file that is not there should not create one.
        if !is_redis(&self.memo) && !Path::new(&self.memo).exists() {
            bail!("memo file {} does not exist", self.memo);
        }
        Ok(open_backend(&self.memo)?)
    }
}

#[derive(Serialize)]
struct StatsJson<'a> {
    memo: &'a str,
    backend: &'static str,
    entries: u64,
    bytes: u64,
}

impl MemoCommand {
    pub(crate) fn run(&self) -> anyhow::Result<()> {
        let line = match &self.command {
            MemoSubcommand::Stats(target) => {
                let stats = target
                    .open()?
                    .stats()
                    .with_context(|| format!("cannot read memo {}", target.memo))?;
                serde_json::to_string(&StatsJson {
                    memo: &target.memo,
                    backend: if is_redis(&target.memo) {
                        "redis"
                    } else {
                        "redb"
                    },
                    entries: stats.entries,
                    bytes: stats.bytes,
                })?
            }
            MemoSubcommand::Clear(target) => {
                let removed = target
                    .open()?
                    .clear()
                    .with_context(|| format!("cannot clear memo {}", target.memo))?;
                serde_json::json!({ "memo": target.memo, "removed": removed }).to_string()
            }
        };
        stdio::write_stdout(format!("{line}\n").as_bytes()).context("cannot write to stdout")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(604_800)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("5y").is_err());
    }
}

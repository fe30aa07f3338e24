//! Replay: run a journal's calls again and compare their results bit for bit.

use std::collections::HashMap;
use std::ops::{Bound, RangeBounds};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use wasmpickle_format::{Call, CallId, CallLimits, CodeHash, abi};

use super::{JournalReader, JournalRecord, TornTail};
use crate::code::Code;
use crate::error::{Error, ErrorKind, Result};
use crate::limits::{Grant, Limits};
use crate::memo::{RecordedResult, reachable_nondeterministic};
use crate::runtime::{Runtime, RuntimeConfig};
use crate::store::CodeStore;

/// Recorded failures that replay runs again: those a call determines under the recorded
/// limits and grants. The others depend on the machine or the moment (a deadline, I/O, the
/// runtime), or on the receiver's state rather than the call (code not found, an invalid or
/// mismatched module, a signature), and are skipped.
const REPLAYED_FAILURES: &[ErrorKind] = &[
    ErrorKind::GuestError,
    ErrorKind::GuestPanic,
    ErrorKind::BadInput,
    ErrorKind::Trap,
    ErrorKind::AbiViolation,
    ErrorKind::WrongSignature,
    ErrorKind::MemoryLimit,
    ErrorKind::OutOfFuel,
    ErrorKind::ForbiddenImport,
];

/// Failures of a replay that say nothing about the call: the replaying machine could not run
/// it (its code is missing, the disk failed, it was slower than the recorded deadline).
const INCONCLUSIVE_FAILURES: &[ErrorKind] = &[
    ErrorKind::CodeNotFound,
    ErrorKind::StoreCorrupt,
    ErrorKind::Deadline,
    ErrorKind::Io,
    ErrorKind::Runtime,
];

/// Whether replay runs a record with this recorded result again (see [`REPLAYED_FAILURES`]).
pub(crate) fn replayed(outcome: &[u8]) -> bool {
    match RecordedResult::from_bytes(outcome) {
        Ok(RecordedResult::Returned { .. }) => true,
        Ok(RecordedResult::Failed { kind, .. }) => {
            REPLAYED_FAILURES.iter().any(|k| k.as_str() == kind)
        }
        Err(_) => true,
    }
}

/// What [`replay`] replays, and with what. Every setting states its default.
#[derive(Clone, Debug, Default)]
pub struct ReplayConfig {
    from: u64,
    to: Option<u64>,
    code_store: Option<Arc<dyn CodeStore>>,
    compiled_cache: Option<PathBuf>,
}

impl ReplayConfig {
    /// The defaults.
    pub fn new() -> ReplayConfig {
        ReplayConfig::default()
    }

    /// Replays only the records whose indices (from 0) are in `range`. Default: all.
    pub fn range(&mut self, range: impl RangeBounds<u64>) -> &mut Self {
        self.from = match range.start_bound() {
            Bound::Included(&n) => n,
            Bound::Excluded(&n) => n.saturating_add(1),
            Bound::Unbounded => 0,
        };
        self.to = match range.end_bound() {
            Bound::Included(&n) => Some(n),
            Bound::Excluded(&0) => {
                // An empty range.
                self.from = 1;
                Some(0)
            }
            Bound::Excluded(&n) => Some(n - 1),
            Bound::Unbounded => None,
        };
        self
    }

    /// Where the records' modules are. Default: none, and every record is unverified for
    /// want of its code; pass the journal's store ([`Journal::default_store`] unless it was
    /// written with another).
    ///
    /// [`Journal::default_store`]: super::Journal::default_store
    pub fn code_store(&mut self, store: Arc<dyn CodeStore>) -> &mut Self {
        self.code_store = Some(store);
        self
    }

    /// A compiled cache for the replaying runtimes ([`RuntimeConfig::compiled_cache`]).
    /// Default: none; each module is compiled once per replay.
    pub fn compiled_cache(&mut self, dir: impl Into<PathBuf>) -> &mut Self {
        self.compiled_cache = Some(dir.into());
        self
    }

    fn contains(&self, index: u64) -> bool {
        index >= self.from && self.to.is_none_or(|to| index <= to)
    }
}

/// What [`replay`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReplayReport {
    /// Intact records in the journal.
    pub records: u64,
    /// Records in the range that were run again (matched or diverged).
    pub replayed: u64,
    /// Records whose result was identical: the same bytes, the same fuel.
    pub matched: u64,
    /// Records whose result was not.
    pub divergences: Vec<Divergence>,
    /// Records not run again because their result is not expected to reproduce: a recorded
    /// deadline, I/O or runtime failure, an export that can reach a granted non-deterministic
    /// import, a grant this build does not know.
    pub skipped: Vec<NotReplayed>,
    /// Records that could not be verified here: the record or its result does not decode,
    /// its code is missing, or the replay itself failed for reasons of this machine (a
    /// deadline, I/O).
    pub unverified: Vec<NotReplayed>,
    /// Where the journal's records ended early, if they did.
    pub torn_tail: Option<TornTail>,
}

impl ReplayReport {
    /// True when every record replayed matched and none was left unverified (skipped records
    /// are fine: they are not expected to reproduce).
    pub fn is_ok(&self) -> bool {
        self.divergences.is_empty() && self.unverified.is_empty()
    }
}

/// A record whose replay gave another result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Divergence {
    /// The record's index, from 0.
    pub index: u64,
    /// The module.
    pub code: CodeHash,
    /// The export called.
    pub export: String,
    /// The call's id.
    pub call: CallId,
    /// The recorded result's bytes.
    pub expected: Vec<u8>,
    /// The replayed result's bytes.
    pub actual: Vec<u8>,
}

impl Divergence {
    /// The recorded result, decoded.
    ///
    /// # Errors
    ///
    /// When the recorded bytes do not decode (which is itself reported as a divergence).
    pub fn expected_result(&self) -> Result<RecordedResult> {
        RecordedResult::from_bytes(&self.expected)
    }

    /// The replayed result, decoded.
    pub fn actual_result(&self) -> RecordedResult {
        RecordedResult::from_bytes(&self.actual).expect("replay encodes its own results")
    }
}

/// A record replay did not compare, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NotReplayed {
    /// The record's index, from 0.
    pub index: u64,
    /// The module, when the record decoded.
    pub code: Option<CodeHash>,
    /// The export, when the record decoded.
    pub export: Option<String>,
    /// Why.
    pub reason: String,
}

/// Replays the journal at `path`: runs each record in the configured range again, in a fresh
/// sandbox under the recorded limits and grants, and compares the result's canonical bytes
/// (value and fuel, or failure) with the recorded ones. Durations are not compared.
///
/// The journal is read twice — once for the limits and grants the runtimes need, once to
/// replay — and is not locked: records appended meanwhile are not replayed.
///
/// # Errors
///
/// [`ErrorKind::Io`], [`ErrorKind::Decode`] or [`ErrorKind::Version`] when the journal
/// cannot be read at all; [`ErrorKind::Runtime`] when a runtime cannot be made. Everything
/// about single records is in the report.
pub fn replay(path: impl AsRef<Path>, config: &ReplayConfig) -> Result<ReplayReport> {
    replay_with_progress(path, config, &mut |_, _| {})
}

/// [`replay`], calling `progress(done, total)` after each record in the range.
///
/// # Errors
///
/// As [`replay`].
pub fn replay_with_progress(
    path: impl AsRef<Path>,
    config: &ReplayConfig,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<ReplayReport> {
    let path = path.as_ref();

    // First pass: how many records, and the caps the runtimes need so that every record's
    // limits apply in full.
    let mut caps: Option<Limits> = None;
    let mut total = 0;
    for (index, record) in (0u64..).zip(JournalReader::open(path)?) {
        if !config.contains(index) {
            continue;
        }
        total += 1;
        if let Ok(record) = record {
            let l = record.limits();
            caps = Some(match caps {
                None => *l,
                Some(c) => *Limits::new()
                    .fuel(c.get_fuel().max(l.get_fuel()))
                    .deadline(c.get_deadline().max(l.get_deadline()))
                    .max_memory(c.get_max_memory().max(l.get_max_memory()))
                    .max_table_elements(c.get_max_table_elements().max(l.get_max_table_elements())),
            });
        }
    }
    let caps = caps.unwrap_or_default();

    let mut replayer = Replayer {
        config,
        caps,
        runtimes: HashMap::new(),
        reaches: HashMap::new(),
    };
    let mut report = ReplayReport::default();
    let mut done = 0;
    let mut reader = JournalReader::open(path)?;
    for (index, record) in (0u64..).zip(reader.by_ref()) {
        report.records = index + 1;
        if !config.contains(index) {
            continue;
        }
        match record {
            Ok(record) => replayer.replay(index, &record, &mut report)?,
            Err(e) if e.kind() == ErrorKind::Io => return Err(e),
            Err(e) => report.unverified.push(NotReplayed {
                index,
                code: None,
                export: None,
                reason: e.to_string(),
            }),
        }
        done += 1;
        progress(done, total);
    }
    report.torn_tail = reader.torn_tail().cloned();
    Ok(report)
}

struct Replayer<'a> {
    config: &'a ReplayConfig,
    caps: Limits,
    /// One runtime per set of grants.
    runtimes: HashMap<Vec<Grant>, Runtime>,
    /// The non-deterministic imports each export can reach.
    reaches: HashMap<(CodeHash, String), Vec<Grant>>,
}

impl Replayer<'_> {
    fn replay(
        &mut self,
        index: u64,
        record: &JournalRecord,
        report: &mut ReplayReport,
    ) -> Result<()> {
        let call = record.call();
        let code = call.code().hash();
        let not_replayed = |reason: String| NotReplayed {
            index,
            code: Some(code),
            export: Some(call.export().to_owned()),
            reason,
        };
        if !record.unknown_grants().is_empty() {
            report.skipped.push(not_replayed(format!(
                "recorded under grants this build does not know: {}",
                record.unknown_grants().join(", ")
            )));
            return Ok(());
        }
        match record.outcome() {
            Err(e) => {
                report.unverified.push(not_replayed(format!(
                    "the recorded result does not decode: {e}"
                )));
                return Ok(());
            }
            Ok(RecordedResult::Failed { kind, message, .. })
                if !REPLAYED_FAILURES.iter().any(|k| k.as_str() == kind) =>
            {
                report.skipped.push(not_replayed(format!(
                    "recorded failure `{kind}` is not expected to reproduce: {message}"
                )));
                return Ok(());
            }
            Ok(_) => {}
        }
        if record.grants().iter().any(|g| !g.is_deterministic()) {
            match self.reaches(call) {
                Ok(reaches) => {
                    if let Some(g) = reaches.iter().find(|g| record.grants().contains(g)) {
                        report.skipped.push(not_replayed(format!(
                            "it can reach {}.{}, which was granted and is not deterministic",
                            abi::IMPORT_MODULE,
                            g.import_name()
                        )));
                        return Ok(());
                    }
                }
                Err(e) => {
                    report.unverified.push(not_replayed(format!(
                        "cannot tell what it can reach: {}: {e}",
                        e.kind()
                    )));
                    return Ok(());
                }
            }
        }

        let runtime = self.runtime(record.grants())?;
        let l = record.limits();
        let limited = call.clone().with_limits(
            CallLimits::new()
                .with_fuel(l.get_fuel())
                .with_deadline_ms(u64::try_from(l.get_deadline().as_millis()).unwrap_or(u64::MAX))
                .with_max_memory(l.get_max_memory())
                .with_max_table_elements(l.get_max_table_elements()),
        );
        let result = runtime.run(&limited);
        let actual = RecordedResult::of(&result).to_bytes();
        if actual == record.outcome_bytes() {
            report.replayed += 1;
            report.matched += 1;
        } else if let Err(e) = result.as_ref().map(drop) {
            if INCONCLUSIVE_FAILURES.contains(&e.kind()) {
                report.unverified.push(not_replayed(format!(
                    "the replay failed here: {}: {e}",
                    e.kind()
                )));
            } else {
                report.replayed += 1;
                report
                    .divergences
                    .push(self.divergence(index, call, record, actual));
            }
        } else {
            report.replayed += 1;
            report
                .divergences
                .push(self.divergence(index, call, record, actual));
        }
        Ok(())
    }

    fn divergence(
        &self,
        index: u64,
        call: &Call,
        record: &JournalRecord,
        actual: Vec<u8>,
    ) -> Divergence {
        Divergence {
            index,
            code: call.code().hash(),
            export: call.export().to_owned(),
            call: call.id(),
            expected: record.outcome_bytes().to_vec(),
            actual,
        }
    }

    fn runtime(&mut self, grants: &[Grant]) -> Result<&Runtime> {
        if !self.runtimes.contains_key(grants) {
            let mut config = RuntimeConfig::new();
            config.limits(self.caps).max_concurrent_calls(1);
            for g in grants {
                config.grant(*g);
            }
            if let Some(store) = &self.config.code_store {
                config.code_store(store.clone());
            }
            if let Some(dir) = &self.config.compiled_cache {
                config.compiled_cache(dir);
            }
            self.runtimes
                .insert(grants.to_vec(), Runtime::new(&config)?);
        }
        Ok(&self.runtimes[grants])
    }

    fn reaches(&mut self, call: &Call) -> Result<Vec<Grant>> {
        let key = (call.code().hash(), call.export().to_owned());
        if let Some(r) = self.reaches.get(&key) {
            return Ok(r.clone());
        }
        let hash = call.code().hash();
        let code: Code = match &self.config.code_store {
            Some(store) => store.fetch(&hash)?,
            None => {
                return Err(Error::new(
                    ErrorKind::CodeNotFound,
                    format!("code {hash} is not available: replay has no code store"),
                )
                .with_code(hash));
            }
        };
        let reaches = reachable_nondeterministic(&code, call.export())?;
        self.reaches.insert(key, reaches.clone());
        Ok(reaches)
    }
}

//! The journal of executed calls (`wasmpickle::Journal`) and replay: records read back as
//! written, a torn tail at any offset costs only the last record, damage in the middle is
//! not papered over, and replay — in this process or another — verifies results bit for bit
//! and names every divergence by its index.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use sha2::{Digest, Sha256};
use wasmpickle::{
    Call, Code, CodeStore, DirStore, ErrorKind, Grant, Journal, JournalConfig, JournalReader,
    Limits, RecordedResult, ReplayConfig, Runtime, RuntimeConfig, replay,
};
use wasmpickle_test_artifacts::{MATH, VERSIONED_A};

use crate::memo::clock_code;
use crate::support::math::Scale;
use crate::support::{abi_code, cli_binary, runtime, runtime_with};

fn scale(x: f64) -> Call {
    Code::from_file(MATH)
        .unwrap()
        .closure("scale", &Scale { factor: 2.5 })
        .unwrap()
        .call(&(x,))
        .unwrap()
}

/// A journal in a scratch directory, with its default code store.
struct Scratch {
    _dir: tempfile::TempDir,
    path: PathBuf,
    store: Arc<DirStore>,
}

impl Scratch {
    fn new() -> Scratch {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("calls.journal");
        let store = Arc::new(DirStore::open(Journal::default_store(&path)).unwrap());
        Scratch {
            _dir: dir,
            path,
            store,
        }
    }

    fn open(&self) -> Journal {
        Journal::open_with(
            &self.path,
            self.store.clone(),
            JournalConfig::new().fsync(false),
        )
        .unwrap()
    }

    fn sibling(&self, name: &str) -> PathBuf {
        self.path.with_file_name(name)
    }

    fn replay_config(&self) -> ReplayConfig {
        let mut config = ReplayConfig::new();
        config.code_store(self.store.clone());
        config
    }
}

/// The six calls most tests journal: returned values, a trap, nothing, running out of fuel.
/// Record 0 returns 10.0 and record 3 returns 20.0, each as a MessagePack float 64 that occurs
/// nowhere else in its record.
fn journal_six(s: &Scratch) {
    let journal = s.open();
    let rt = runtime();
    let abi = abi_code();
    journal.run(&rt, &scale(4.0)).unwrap();
    let helper = Code::from_file(VERSIONED_A)
        .unwrap()
        .function("uses_helper")
        .unwrap()
        .call(&(5u64,))
        .unwrap();
    journal.run(&rt, &helper).unwrap();
    let trap = abi.function("trap").unwrap().call(&()).unwrap();
    assert_eq!(journal.run(&rt, &trap).unwrap_err().kind(), ErrorKind::Trap);
    journal.run(&rt, &scale(8.0)).unwrap();
    journal
        .run(&rt, &abi.function("echo").unwrap().call(&()).unwrap())
        .unwrap();
    let spin = abi.function("spin").unwrap().call(&()).unwrap();
    let short = runtime_with(*Limits::new().fuel(50_000));
    assert_eq!(
        journal.run(&short, &spin).unwrap_err().kind(),
        ErrorKind::OutOfFuel
    );
    assert_eq!(journal.len(), 6);
}

/// Where each record starts, and its payload's length (docs/journal.md).
fn record_spans(bytes: &[u8]) -> Vec<(usize, usize)> {
    let mut spans = Vec::new();
    let mut at = 8;
    while at < bytes.len() {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        spans.push((at, len));
        at += 4 + len + 32;
    }
    assert_eq!(at, bytes.len());
    spans
}

/// Rewrites record `index`'s payload with `edit` and fixes its checksum, as a forger would.
fn edit_record(path: &Path, index: usize, edit: impl FnOnce(&mut [u8])) {
    let mut bytes = fs::read(path).unwrap();
    let (at, len) = record_spans(&bytes)[index];
    edit(&mut bytes[at + 4..at + 4 + len]);
    let checksum = Sha256::digest(&bytes[at..at + 4 + len]);
    bytes[at + 4 + len..at + 4 + len + 32].copy_from_slice(&checksum);
    fs::write(path, bytes).unwrap();
}

fn f64_msgpack(x: f64) -> Vec<u8> {
    let mut v = vec![0xcb];
    v.extend_from_slice(&x.to_bits().to_be_bytes());
    v
}

fn replace_once(haystack: &mut [u8], from: &[u8], to: &[u8]) {
    let at = haystack
        .windows(from.len())
        .position(|w| w == from)
        .expect("the bytes to replace are there");
    assert!(
        !haystack[at + 1..].windows(from.len()).any(|w| w == from),
        "and only once"
    );
    haystack[at..at + from.len()].copy_from_slice(to);
}

#[test]
fn records_read_back_as_written() {
    let s = Scratch::new();
    journal_six(&s);
    let (records, torn) = JournalReader::open(&s.path).unwrap().read_all().unwrap();
    assert_eq!(torn, None);
    assert_eq!(records.len(), 6);

    let first = &records[0];
    assert!(!first.call().code().is_inline(), "code is kept by hash");
    assert_eq!(first.call().id(), scale(4.0).id());
    assert!(s.store.contains(&first.call().code().hash()).unwrap());
    assert_eq!(first.limits(), &Limits::default());
    assert_eq!(first.grants(), &[] as &[Grant]);
    assert!(!first.is_memo_hit());
    let fresh = runtime().run(&scale(4.0)).unwrap();
    assert_eq!(
        first.outcome().unwrap(),
        RecordedResult::Returned {
            value: f64_msgpack(10.0),
            fuel_used: fresh.fuel_used()
        }
    );
    match records[2].outcome().unwrap() {
        RecordedResult::Failed {
            kind,
            message,
            fuel_used,
            ..
        } => {
            assert_eq!(kind, "trap");
            assert!(message.contains("divide by zero"), "{message}");
            assert!(fuel_used.is_some());
        }
        other => panic!("{other:?}"),
    }
    match records[4].outcome().unwrap() {
        RecordedResult::Returned { value, .. } => assert_eq!(value, [0xc0], "nil"),
        other => panic!("{other:?}"),
    }
    assert_eq!(records[5].limits().get_fuel(), 50_000);
    assert_eq!(
        records[5].outcome().unwrap().error_kind(),
        Some("out-of-fuel")
    );

    // Reopened for writing, the journal appends after what it has.
    let journal = s.open();
    assert_eq!((journal.len(), journal.torn_tail()), (6, None));
    journal.run(&runtime(), &scale(1.0)).unwrap();
    assert_eq!(JournalReader::open(&s.path).unwrap().count(), 7);

    // One writer at a time.
    let err = Journal::open(&s.path, s.store.clone()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Io);
    assert!(err.to_string().contains("another process"), "{err}");
}

#[test]
fn a_tail_torn_at_any_offset_of_the_last_record_keeps_every_earlier_record() {
    let s = Scratch::new();
    journal_six(&s);
    let intact = fs::read(&s.path).unwrap();
    let (records, _) = JournalReader::open(&s.path).unwrap().read_all().unwrap();
    let spans = record_spans(&intact);
    let (last, _) = spans[5];
    let copy = s.sibling("torn.journal");

    for cut in last..intact.len() {
        fs::write(&copy, &intact[..cut]).unwrap();
        let (read, torn) = JournalReader::open(&copy).unwrap().read_all().unwrap();
        assert_eq!(read, records[..5], "cut at {cut}");
        match torn {
            None => assert_eq!(cut, last, "only a cut between records is clean"),
            Some(t) => {
                assert_eq!((t.offset, t.bytes), (last as u64, (cut - last) as u64));
                assert!(!t.records_follow);
            }
        }

        // Opened for writing: the tail is reported, and the next append cuts it off first,
        // so appending the lost record again restores the journal byte for byte.
        let journal =
            Journal::open_with(&copy, s.store.clone(), JournalConfig::new().fsync(false)).unwrap();
        assert_eq!(journal.len(), 5);
        assert_eq!(journal.torn_tail().is_some(), cut > last);
        journal.append(&records[5]).unwrap();
        drop(journal);
        assert!(fs::read(&copy).unwrap() == intact, "cut at {cut}");
    }

    // A crash while the journal was being created leaves part of its header: still a
    // journal, an empty one.
    for cut in 0..8 {
        fs::write(&copy, &intact[..cut]).unwrap();
        let reader = JournalReader::open(&copy).unwrap();
        let (read, torn) = reader.read_all().unwrap();
        assert!(read.is_empty() && torn.is_some(), "cut at {cut}");
        let journal = Journal::open(&copy, s.store.clone()).unwrap();
        assert!(journal.is_empty());
        journal.append(&records[0]).unwrap();
        drop(journal);
        assert_eq!(fs::read(&copy).unwrap(), intact[..spans[1].0]);
    }

    // Not a journal at all.
    fs::write(&copy, b"hello, world").unwrap();
    assert_eq!(
        JournalReader::open(&copy).unwrap_err().kind(),
        ErrorKind::Decode
    );
    assert_eq!(
        Journal::open(&copy, s.store.clone()).unwrap_err().kind(),
        ErrorKind::Decode
    );
    let mut later = intact.clone();
    later[7] = 2;
    fs::write(&copy, later).unwrap();
    assert_eq!(
        JournalReader::open(&copy).unwrap_err().kind(),
        ErrorKind::Version
    );
}

#[test]
fn damage_in_the_middle_is_reported_and_not_appended_over() {
    let s = Scratch::new();
    journal_six(&s);
    let (records, _) = JournalReader::open(&s.path).unwrap().read_all().unwrap();
    let mut bytes = fs::read(&s.path).unwrap();
    let (at, _) = record_spans(&bytes)[2];
    bytes[at + 10] ^= 0x40;
    fs::write(&s.path, &bytes).unwrap();

    let (read, torn) = JournalReader::open(&s.path).unwrap().read_all().unwrap();
    assert_eq!(read, records[..2]);
    let torn = torn.unwrap();
    assert_eq!(torn.offset, at as u64);
    assert!(torn.records_follow, "{torn}");
    assert!(torn.reason.contains("checksum"), "{torn}");

    let journal = s.open();
    let err = journal.append(&records[2]).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::StoreCorrupt);
    assert_eq!(fs::read(&s.path).unwrap(), bytes, "nothing was cut off");
    assert!(journal.discard_tail().unwrap() > 0);
    journal.append(&records[2]).unwrap();
    drop(journal);
    let (read, torn) = JournalReader::open(&s.path).unwrap().read_all().unwrap();
    assert_eq!((read, torn), (records[..3].to_vec(), None));
}

fn cli_replay(journal: &Path, args: &[&str]) -> (i32, Value, String) {
    let out = Command::new(cli_binary())
        .arg("replay")
        .arg(journal)
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    let json = if args.contains(&"--json") {
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout} {stderr}"))
    } else {
        Value::String(stdout)
    };
    (out.status.code().unwrap(), json, stderr)
}

#[test]
fn a_journal_replays_in_another_process_and_matches() {
    let s = Scratch::new();
    journal_six(&s);

    // In this process, through the library.
    let report = replay(&s.path, &s.replay_config()).unwrap();
    assert!(report.is_ok(), "{report:?}");
    assert_eq!((report.records, report.replayed, report.matched), (6, 6, 6));

    // In another process, with nothing but the journal and its store beside it.
    let (status, json, stderr) = cli_replay(&s.path, &["--json"]);
    assert_eq!(status, 0, "{json} {stderr}");
    assert_eq!(json["ok"], true);
    assert_eq!(json["matched"], 6);
    assert_eq!(json["divergences"], Value::Array(vec![]));
    let (status, text, _) = cli_replay(&s.path, &[]);
    assert_eq!(status, 0);
    assert!(
        text.as_str()
            .unwrap()
            .ends_with("6 of 6 records replayed: 6 matched, 0 diverged, 0 skipped, 0 unverified\n"),
        "{text}"
    );

    // A range.
    let mut config = s.replay_config();
    config.range(2..=3);
    let report = replay(&s.path, &config).unwrap();
    assert_eq!((report.records, report.replayed), (6, 2));
    let (status, json, _) = cli_replay(&s.path, &["--json", "--from", "4"]);
    assert_eq!((status, &json["replayed"]), (0, &Value::from(2)));
    let (status, json, _) = cli_replay(&s.path, &["--json", "--from", "1", "--to", "1"]);
    assert_eq!((status, &json["replayed"]), (0, &Value::from(1)));
}

#[test]
fn an_altered_outcome_is_a_divergence_with_its_index() {
    let s = Scratch::new();
    journal_six(&s);
    // Record 3 returned 20.0; make the journal claim 21.0.
    edit_record(&s.path, 3, |payload| {
        replace_once(payload, &f64_msgpack(20.0), &f64_msgpack(21.0))
    });
    // Record 0's fuel, one unit off.
    edit_record(&s.path, 0, |payload| {
        let key = b"\xa9fuel_used";
        let at = payload.windows(key.len()).rposition(|w| w == key).unwrap() + key.len();
        let width = match payload[at] {
            0x00..=0x7f => 0,
            0xcc => 1,
            0xcd => 2,
            0xce => 4,
            _ => 8,
        };
        payload[at + width] ^= 1;
    });

    let report = replay(&s.path, &s.replay_config()).unwrap();
    assert!(!report.is_ok());
    assert_eq!(report.matched, 4);
    let indices: Vec<u64> = report.divergences.iter().map(|d| d.index).collect();
    assert_eq!(indices, [0, 3]);
    let d = &report.divergences[1];
    assert_eq!(d.code, Code::from_file(MATH).unwrap().hash());
    assert_eq!(d.export, "scale");
    assert_eq!(d.call, scale(8.0).id());
    let (expected, actual) = (d.expected_result().unwrap(), d.actual_result());
    match (&expected, &actual) {
        (
            RecordedResult::Returned {
                value: e,
                fuel_used: fe,
            },
            RecordedResult::Returned {
                value: a,
                fuel_used: fa,
            },
        ) => {
            assert_eq!((e, a), (&f64_msgpack(21.0), &f64_msgpack(20.0)));
            assert_eq!(fe, fa);
        }
        other => panic!("{other:?}"),
    }
    let d = &report.divergences[0];
    assert_eq!(
        d.expected_result().unwrap().fuel_used().unwrap() ^ 1,
        d.actual_result().fuel_used().unwrap()
    );

    let (status, json, _) = cli_replay(&s.path, &["--json"]);
    assert_eq!(status, 1);
    assert_eq!(json["divergences"][1]["index"], 3);
    assert_eq!(json["divergences"][1]["expected"]["value"], 21.0);
    assert_eq!(json["divergences"][1]["actual"]["value"], 20.0);
    assert_eq!(
        json["divergences"][1]["code"],
        Code::from_file(MATH).unwrap().hash().to_string()
    );
    let (status, text, _) = cli_replay(&s.path, &[]);
    assert_eq!(status, 1);
    let text = text.as_str().unwrap();
    assert!(text.contains("record 3 diverged: code sha256:"), "{text}");
    assert!(text.contains("expected: {\"fuel_used\":"), "{text}");
    assert!(text.contains("\"value\":21.0"), "{text}");
}

#[test]
fn replay_skips_what_cannot_reproduce_and_flags_what_it_cannot_verify() {
    let s = Scratch::new();
    let journal = s.open();
    let abi = abi_code();
    // A deadline: wall-clock time, not expected to reproduce.
    let slow = runtime_with(
        *Limits::new()
            .fuel(u64::MAX / 2)
            .deadline(Duration::from_millis(30)),
    );
    let spin = abi.function("spin").unwrap().call(&()).unwrap();
    assert_eq!(
        journal.run(&slow, &spin).unwrap_err().kind(),
        ErrorKind::Deadline
    );
    // An export that reads a granted clock, and one of the same module that does not.
    let clock = clock_code();
    let granted = Runtime::new(RuntimeConfig::new().grant(Grant::Clock)).unwrap();
    journal
        .run(&granted, &clock.function("now").unwrap().call(&1).unwrap())
        .unwrap();
    journal
        .run(&granted, &clock.function("pure").unwrap().call(&1).unwrap())
        .unwrap();
    drop(journal);

    let report = replay(&s.path, &s.replay_config()).unwrap();
    assert!(report.is_ok(), "{report:?}");
    assert_eq!((report.replayed, report.matched), (1, 1));
    let skipped: Vec<(u64, &str)> = report
        .skipped
        .iter()
        .map(|n| (n.index, n.reason.as_str()))
        .collect();
    assert_eq!(skipped.len(), 2, "{skipped:?}");
    assert_eq!(skipped[0].0, 0);
    assert!(skipped[0].1.contains("deadline"), "{skipped:?}");
    assert_eq!(skipped[1].0, 1);
    assert!(skipped[1].1.contains("wasmpickle.clock_ms"), "{skipped:?}");

    // Without the modules, nothing can be verified: status 2, not a divergence.
    let empty = s.sibling("empty.store");
    DirStore::open(&empty).unwrap();
    let (status, json, _) = cli_replay(&s.path, &["--json", "--store", empty.to_str().unwrap()]);
    assert_eq!(status, 2, "{json}");
    assert_eq!(json["unverified"].as_array().unwrap().len(), 2, "{json}");
    assert!(
        json["unverified"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("code-not-found"),
        "{json}"
    );
    // A journal that is not there is status 2 too.
    let (status, _, stderr) = cli_replay(&s.sibling("nope.journal"), &[]);
    assert_eq!(status, 2);
    assert!(stderr.contains("does not exist"), "{stderr}");
}

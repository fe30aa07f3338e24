//! Memo hits and journal replay.
//!
//! Run with `cargo bench --bench memo`, or `scripts/bench-memo`, which also times
//! joblib.Memory's cache hit for the same function in the same run. Figures are quoted in
//! BENCHMARKS.md.
//!
//! * `memo_hit/<backend>/get`: the backend's `get` of a stored entry alone (for redb: a read
//!   transaction, the B-tree lookup, the entry's checksum);
//! * `memo_hit/<backend>/run`: `Memo::run` answering from the backend, end to end: the export
//!   version (remembered after the first call), the key (SHA-256 of version, export, env and
//!   args), the lookup, decoding the stored result into an `Outcome`, and `decode::<f64>`;
//! * `memo_hit/none/run`: the same call run in a fresh sandbox, what a hit saves;
//! * `replay/records`: `wasmpickle::replay` of a journal of 1,000 small calls, with a warm
//!   compiled cache; `replay/records_compiling` without one, so the module is compiled once
//!   per replay;
//! * `journal/append`: recording one call (`Journal::record`, without `fsync`).

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use serde::Serialize;
use wasmpickle::{
    Call, Code, DirStore, Journal, JournalConfig, LruBackend, Memo, MemoBackend, MemoLookup,
    RedbBackend, ReplayConfig, Runtime, RuntimeConfig, replay,
};

#[derive(Serialize)]
struct Scale {
    factor: f64,
}

fn scale_call(code: &Code, x: f64) -> Call {
    code.closure("scale", &Scale { factor: 2.5 })
        .unwrap()
        .call(&(x,))
        .unwrap()
}

fn memo_hits(c: &mut Criterion) {
    let code = Code::from_file(wasmpickle_test_artifacts::MATH).unwrap();
    let runtime = Runtime::new(&RuntimeConfig::default()).unwrap();
    let call = scale_call(&code, 4.0);
    let dir = tempfile::tempdir().unwrap();
    let backends: [(&str, Arc<dyn MemoBackend>); 2] = [
        ("memory", Arc::new(LruBackend::new(64 << 20))),
        (
            "redb",
            Arc::new(RedbBackend::open(dir.path().join("memo.redb")).unwrap()),
        ),
    ];

    let mut group = c.benchmark_group("memo_hit");
    group.measurement_time(Duration::from_secs(3));
    for (name, backend) in backends {
        let memo = Memo::new(backend.clone());
        // Fill the entry and remember the export's version.
        assert_eq!(
            memo.run(&runtime, &call).unwrap().decode::<f64>().unwrap(),
            10.0
        );
        let MemoLookup::Hit(_) = memo
            .lookup(&call, runtime.limits(), runtime.grants())
            .unwrap()
        else {
            panic!("the entry is stored");
        };
        let key = memo.key(&call, runtime.limits()).unwrap();
        group.bench_function(format!("{name}/get"), |b| {
            b.iter(|| black_box(backend.get(black_box(&key)).unwrap()))
        });
        group.bench_function(format!("{name}/run"), |b| {
            b.iter(|| {
                let y: f64 = memo
                    .run(&runtime, black_box(&call))
                    .unwrap()
                    .decode()
                    .unwrap();
                black_box(y)
            })
        });
        assert_eq!(memo.stats().misses, 1, "every timed run was a hit");
    }
    group.bench_function("none/run", |b| {
        b.iter(|| {
            let y: f64 = runtime.run(black_box(&call)).unwrap().decode().unwrap();
            black_box(y)
        })
    });
    group.finish();
}

const RECORDS: u64 = 1_000;

fn journal(c: &mut Criterion) {
    let code = Code::from_file(wasmpickle_test_artifacts::MATH).unwrap();
    let runtime = Runtime::new(&RuntimeConfig::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("calls.journal");
    let store = Arc::new(DirStore::open(Journal::default_store(&path)).unwrap());
    {
        let journal =
            Journal::open_with(&path, store.clone(), JournalConfig::new().fsync(false)).unwrap();
        for i in 0..RECORDS {
            journal.run(&runtime, &scale_call(&code, i as f64)).unwrap();
        }
    }
    let mut cold = ReplayConfig::new();
    cold.code_store(store.clone());
    // With a warm compiled cache, as a second replay on the same machine has: what is left is
    // the per-record cost, without compiling the module once per replay (about 270 ms here).
    let mut warm = cold.clone();
    warm.compiled_cache(dir.path().join("compiled"));
    replay(&path, &warm).unwrap();

    let mut group = c.benchmark_group("replay");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(10));
    group.throughput(Throughput::Elements(RECORDS));
    for (name, config) in [("records", &warm), ("records_compiling", &cold)] {
        group.bench_function(name, |b| {
            b.iter(|| {
                let report = replay(&path, config).unwrap();
                assert_eq!(report.matched, RECORDS);
                black_box(report)
            })
        });
    }
    group.finish();

    let mut group = c.benchmark_group("journal");
    let scratch = dir.path().join("append.journal");
    let journal = Journal::open_with(&scratch, store, JournalConfig::new().fsync(false)).unwrap();
    let call = scale_call(&code, 4.0);
    let result = runtime.run(&call);
    group.bench_function("append", |b| {
        b.iter(|| {
            journal
                .record(
                    &runtime,
                    black_box(&call),
                    &result,
                    Duration::from_micros(9),
                )
                .unwrap()
        })
    });
    group.finish();
}

criterion_group!(benches, memo_hits, journal);
criterion_main!(benches);

//! Memoized calls (`wasmpickle::Memo`): keys follow what an export can reach, results come
//! back bit for bit, damage and failing backends are misses, and non-deterministic calls are
//! refused. The backends run for real: an LRU in memory, a redb file, and a redis-server
//! started on a free loopback port.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use serde::Serialize;
use wasmpickle::{
    Call, Code, ErrorKind, Fetched, Grant, Limits, LruBackend, Memo, MemoBackend, MemoConfig,
    MemoKey, MemoLookup, MemoryStore, RecordedResult, RedbBackend, RedisBackend, Runtime,
    RuntimeConfig,
};
use wasmpickle_test_artifacts::{MATH, VERSIONED_A, VERSIONED_B, VERSIONED_C};

use crate::support::{ABI_WAT, abi_code, runtime, runtime_with, wat};

fn lru_memo() -> Memo {
    Memo::new(Arc::new(LruBackend::new(16 << 20)))
}

fn call_u64(code: &Code, export: &str, x: u64) -> Call {
    code.function(export).unwrap().call(&(x,)).unwrap()
}

fn value_u64(memo: &Memo, runtime: &Runtime, call: &Call) -> u64 {
    memo.run(runtime, call).unwrap().decode().unwrap()
}

#[test]
fn editing_a_function_invalidates_exactly_the_exports_that_reach_it() {
    let rt = runtime();
    let memo = lru_memo();
    let (a, b, c) = (
        Code::from_file(VERSIONED_A).unwrap(),
        Code::from_file(VERSIONED_B).unwrap(),
        Code::from_file(VERSIONED_C).unwrap(),
    );
    let rotl = 5u64.rotate_left(5) ^ 0x5a5a;

    // Variant a: three misses, three results stored.
    assert_eq!(value_u64(&memo, &rt, &call_u64(&a, "uses_helper", 5)), 16);
    assert_eq!(value_u64(&memo, &rt, &call_u64(&a, "standalone", 5)), rotl);
    assert_eq!(value_u64(&memo, &rt, &call_u64(&a, "uses_lonely", 5)), 105);
    let s = memo.stats();
    assert_eq!((s.hits, s.misses, s.stores), (0, 3, 3));

    // Variant b edits `helper`, which only `uses_helper` reaches: the other two still hit,
    // `uses_helper` misses and computes b's answer (7x + 1), not the stored 3x + 1.
    assert_eq!(value_u64(&memo, &rt, &call_u64(&b, "standalone", 5)), rotl);
    assert_eq!(value_u64(&memo, &rt, &call_u64(&b, "uses_lonely", 5)), 105);
    assert_eq!(memo.stats().hits, 2, "unreached edits keep the hits");
    assert_eq!(value_u64(&memo, &rt, &call_u64(&b, "uses_helper", 5)), 36);
    assert_eq!(memo.stats().misses, 4, "a reached edit is a miss");

    // Variant c edits `lonely`, which only `uses_lonely` reaches.
    assert_eq!(value_u64(&memo, &rt, &call_u64(&c, "uses_helper", 5)), 16);
    assert_eq!(value_u64(&memo, &rt, &call_u64(&c, "standalone", 5)), rotl);
    assert_eq!(memo.stats().hits, 4);
    assert_eq!(value_u64(&memo, &rt, &call_u64(&c, "uses_lonely", 5)), 205);
    assert_eq!(memo.stats().misses, 5);

    // The arguments are part of the key; so are the environment and the export.
    assert_eq!(value_u64(&memo, &rt, &call_u64(&a, "uses_helper", 6)), 19);
    assert_eq!(memo.stats().misses, 6);
    let caps = rt.limits();
    assert_ne!(
        memo.key(&call_u64(&a, "uses_helper", 5), caps).unwrap(),
        memo.key(&call_u64(&a, "uses_lonely", 5), caps).unwrap()
    );
}

#[test]
fn a_hit_is_the_result_and_fuel_of_a_fresh_run() {
    #[derive(Serialize)]
    struct Scale {
        factor: f64,
    }
    let rt = runtime();
    let memo = lru_memo();
    let code = Code::from_file(MATH).unwrap();
    let call = code
        .closure("scale", &Scale { factor: 2.5 })
        .unwrap()
        .call(&(4.0,))
        .unwrap();
    let fresh = rt.run(&call).unwrap();
    let first = memo.run(&rt, &call).unwrap();
    let hit = memo.run(&rt, &call).unwrap();
    assert_eq!(memo.stats().hits, 1);
    assert_eq!(hit, fresh, "same value bytes and fuel");
    assert_eq!(first, fresh);
    assert_eq!(hit.decode::<f64>().unwrap(), 10.0);

    // A different environment is another key.
    let other = code
        .closure("scale", &Scale { factor: 3.0 })
        .unwrap()
        .call(&(4.0,))
        .unwrap();
    assert_eq!(
        memo.run(&rt, &other).unwrap().decode::<f64>().unwrap(),
        12.0
    );
    assert_eq!(memo.stats().misses, 2);
}

#[test]
fn nothing_is_cached_like_any_other_value() {
    let rt = runtime();
    let memo = lru_memo();
    // `echo` returns its arguments: here `()`, MessagePack nil.
    let call = abi_code().function("echo").unwrap().call(&()).unwrap();
    let first = memo.run(&rt, &call).unwrap();
    assert_eq!(first.value(), [0xc0]);
    let again = memo.run(&rt, &call).unwrap();
    assert_eq!(again, first);
    let s = memo.stats();
    assert_eq!((s.hits, s.misses, s.stores), (1, 1, 1));
    let none: Option<u32> = again.decode().unwrap();
    assert_eq!(none, None);
}

#[test]
fn failures_are_cached_only_when_asked_and_only_deterministic_ones() {
    let rt = runtime_with(*Limits::new().fuel(100_000));
    let code = abi_code();
    let trap = code.function("trap").unwrap().call(&()).unwrap();
    let spin = code.function("spin").unwrap().call(&()).unwrap();

    // By default a failure is not stored: the call runs every time.
    let memo = lru_memo();
    for _ in 0..2 {
        assert_eq!(memo.run(&rt, &trap).unwrap_err().kind(), ErrorKind::Trap);
    }
    assert_eq!((memo.stats().stores, memo.stats().misses), (0, 2));

    // Asked to, the memo stores the trap, and a hit gives back the same failure.
    let memo = Memo::with_config(
        Arc::new(LruBackend::new(1 << 20)),
        MemoConfig::new().cache_errors(true),
    );
    let fresh = memo.run(&rt, &trap).unwrap_err();
    let hit = memo.run(&rt, &trap).unwrap_err();
    assert_eq!(memo.stats().hits, 1);
    assert_eq!(hit.kind(), ErrorKind::Trap);
    // The stored message is the whole chain: the fresh error's message and its causes.
    assert!(hit.to_string().starts_with(&fresh.to_string()), "{hit}");
    assert_eq!(hit.fuel_used(), fresh.fuel_used());
    assert_eq!(hit.code_hash(), Some(code.hash()));
    assert_eq!(
        RecordedResult::of(&Err(hit)),
        RecordedResult::of(&Err(fresh))
    );

    // Running out of fuel depends on the budget, not only on the call: never stored.
    for _ in 0..2 {
        assert_eq!(
            memo.run(&rt, &spin).unwrap_err().kind(),
            ErrorKind::OutOfFuel
        );
    }
    assert_eq!(memo.stats().stores, 1);
}

#[test]
fn a_hit_is_served_only_within_the_fuel_budget() {
    let rt = runtime();
    let memo = lru_memo();
    let call = abi_code()
        .function("echo")
        .unwrap()
        .call(&[1, 2, 3])
        .unwrap();
    let fuel = memo.run(&rt, &call).unwrap().fuel_used();
    assert!(fuel > 0);

    // Exactly enough fuel: the call would finish, so the stored result is served.
    let enough = *Limits::new().fuel(fuel);
    assert!(matches!(
        memo.lookup(&call, &enough, &[]).unwrap(),
        MemoLookup::Hit(Ok(_))
    ));
    // With less, the call may run out (wasmtime checks fuel at function entries and loop
    // heads, so a call can also end a few units past its budget): a miss, and the runtime
    // decides.
    for budget in [fuel - 1, 1] {
        let short = *Limits::new().fuel(budget);
        assert!(matches!(
            memo.lookup(&call, &short, &[]).unwrap(),
            MemoLookup::Miss(_)
        ));
        let rt_short = runtime_with(short);
        assert_eq!(
            RecordedResult::of(&memo.run(&rt_short, &call)),
            RecordedResult::of(&rt_short.run(&call)),
        );
    }
    let err = memo
        .run(&runtime_with(*Limits::new().fuel(1)), &call)
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::OutOfFuel);
    // A call that ends past its budget reports the budget as its fuel; such a result is
    // never stored, so the entry still holds the true figure.
    assert_eq!(memo.run(&rt, &call).unwrap().fuel_used(), fuel);
    // A call requesting less fuel than the caps is judged by its own request.
    let requested = call
        .clone()
        .with_limits(wasmpickle::CallLimits::new().with_fuel(fuel - 1));
    assert!(matches!(
        memo.lookup(&requested, &Limits::default(), &[]).unwrap(),
        MemoLookup::Miss(_)
    ));
}

#[test]
fn memory_and_table_caps_are_in_the_key_fuel_and_deadline_are_not() {
    let memo = lru_memo();
    let call = abi_code().function("echo").unwrap().call(&1).unwrap();
    let key = |l: &Limits| memo.key(&call, l).unwrap();
    let base = key(&Limits::default());
    assert_eq!(
        base,
        key(Limits::new().fuel(1).deadline(Duration::from_millis(1)))
    );
    assert_ne!(base, key(Limits::new().max_memory(1 << 20)));
    assert_ne!(base, key(Limits::new().max_table_elements(10)));
    // What counts is the limit in force: a call asking for less memory than the caps.
    let asks = call
        .clone()
        .with_limits(wasmpickle::CallLimits::new().with_max_memory(1 << 20));
    assert_eq!(
        memo.key(&asks, &Limits::default()).unwrap(),
        key(Limits::new().max_memory(1 << 20))
    );
}

/// The ABI fixture plus `now`, which reads the clock, and `pure`, which does not.
pub(crate) fn clock_code() -> Code {
    let src = ABI_WAT
        .replacen(
            "(module",
            "(module\n  (import \"wasmpickle\" \"clock_ms\" (func $clock (result i64)))",
            1,
        )
        .trim_end()
        .strip_suffix(')')
        .unwrap()
        .to_owned()
        + r#"
  (func (export "now") (param i32 i32 i32 i32) (result i64)
    call $clock
    drop
    local.get 2
    local.get 3
    call $reply_ok)
  (func (export "pure") (param i32 i32 i32 i32) (result i64)
    local.get 2
    local.get 3
    call $reply_ok)
)"#;
    Code::new(wat(&src)).unwrap()
}

#[test]
fn a_granted_clock_makes_the_exports_that_reach_it_not_memoizable() {
    let code = clock_code();
    let now = code.function("now").unwrap().call(&7).unwrap();
    let pure = code.function("pure").unwrap().call(&7).unwrap();
    let memo = lru_memo();

    let clock = Runtime::new(RuntimeConfig::new().grant(Grant::Clock)).unwrap();
    let err = memo.run(&clock, &now).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotMemoizable);
    assert_eq!(err.kind().as_str(), "not-memoizable");
    assert!(
        err.to_string().contains("wasmpickle.clock_ms") && err.to_string().contains("`now`"),
        "{err}"
    );
    assert_eq!(memo.stats().refused, 1);
    // `pure` cannot reach the clock: memoized as usual in the same module.
    for _ in 0..2 {
        assert_eq!(memo.run(&clock, &pure).unwrap().decode::<u32>().unwrap(), 7);
    }
    assert_eq!(memo.stats().hits, 1);

    // Without the grant the runtime refuses the module; the memo passes that on, unstored.
    let err = memo.run(&runtime(), &now).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ForbiddenImport);
    // A deterministic grant (log) does not stand in the way.
    let log = Runtime::new(RuntimeConfig::new().grant(Grant::Log)).unwrap();
    assert!(matches!(
        memo.lookup(&now, log.limits(), log.grants()),
        Ok(MemoLookup::Miss(_))
    ));
}

#[test]
fn by_hash_calls_are_keyed_through_a_code_store_or_a_loaded_module() {
    let code = abi_code();
    let call = code
        .function("echo")
        .unwrap()
        .call(&5)
        .unwrap()
        .by_reference();
    let store = Arc::new(MemoryStore::new());
    let rt = Runtime::new(RuntimeConfig::new().code_store(store.clone())).unwrap();
    rt.load(&code).unwrap();

    let bare = lru_memo();
    let err = bare.run(&rt, &call).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::CodeNotFound);
    assert!(err.to_string().contains("memo"), "{err}");
    bare.load(&code);
    assert_eq!(bare.run(&rt, &call).unwrap().decode::<u32>().unwrap(), 5);

    let with_store = Memo::with_config(
        Arc::new(LruBackend::new(1 << 20)),
        MemoConfig::new().code_store(store),
    );
    assert_eq!(
        with_store.run(&rt, &call).unwrap().decode::<u32>().unwrap(),
        5
    );
    // The key does not depend on how the code travelled.
    assert_eq!(
        with_store.key(&call, rt.limits()).unwrap(),
        with_store
            .key(
                &code.function("echo").unwrap().call(&5).unwrap(),
                rt.limits()
            )
            .unwrap()
    );
}

fn key(n: u8) -> MemoKey {
    MemoKey::from_bytes([n; 32])
}

fn fetched(backend: &dyn MemoBackend, k: u8) -> Option<Vec<u8>> {
    match backend.get(&key(k)).unwrap() {
        Fetched::Value(v) => Some(v),
        Fetched::Absent => None,
        Fetched::Corrupt(why) => panic!("entry {k} corrupt: {why}"),
    }
}

#[test]
fn the_lru_backend_evicts_least_recently_used_entries_by_bytes() {
    // Each entry below is charged 32 + 68 = 100 bytes; four fit in 450.
    let lru = LruBackend::new(450);
    let value = [0xab; 68];
    for k in 0..4 {
        lru.set(&key(k), &value, None).unwrap();
    }
    assert_eq!(lru.stats().unwrap().bytes, 400);
    // Reading entry 0 makes entry 1 the least recently used.
    assert!(fetched(&lru, 0).is_some());
    lru.set(&key(4), &value, None).unwrap();
    assert_eq!(fetched(&lru, 1), None, "the least recently used went first");
    for k in [0, 2, 3, 4] {
        assert!(fetched(&lru, k).is_some(), "entry {k}");
    }
    // A value of 268 bytes (300 charged) pushes out as many old entries as it takes.
    lru.set(&key(5), &[1; 268], None).unwrap();
    let stats = lru.stats().unwrap();
    assert!(stats.bytes <= 450, "{stats:?}");
    assert_eq!(stats.entries, 2);
    assert_eq!(stats.evictions, 4);
    assert_eq!(stats.capacity, Some(450));
    assert!(fetched(&lru, 5).is_some());
    // Larger than the whole budget: not stored, and nothing else is evicted for it.
    lru.set(&key(6), &[0; 500], None).unwrap();
    assert_eq!(fetched(&lru, 6), None);
    assert_eq!(lru.stats().unwrap().entries, 2);
    // Replacing an entry re-charges it; removing and clearing give the bytes back.
    lru.set(&key(5), &[1; 8], None).unwrap();
    assert_eq!(fetched(&lru, 5).unwrap(), [1; 8]);
    assert!(lru.remove(&key(5)).unwrap());
    assert!(!lru.remove(&key(5)).unwrap());
    assert_eq!(lru.clear().unwrap(), 1);
    assert_eq!(lru.stats().unwrap().bytes, 0);
}

/// A time to live, end to end through a memo, on any backend.
fn check_ttl(backend: Arc<dyn MemoBackend>) {
    let ttl = Duration::from_millis(150);
    let rt = runtime();
    let memo = Memo::with_config(backend.clone(), MemoConfig::new().ttl(Some(ttl)));
    let call = abi_code().function("echo").unwrap().call(&"ttl").unwrap();
    let started = Instant::now();
    memo.run(&rt, &call).unwrap();
    memo.run(&rt, &call).unwrap();
    let hits = memo.stats().hits;
    // A hit before the time is up, unless this machine was too slow to tell.
    if started.elapsed() < ttl {
        assert_eq!(hits, 1);
    }
    thread::sleep(ttl + Duration::from_millis(100));
    memo.run(&rt, &call).unwrap();
    assert_eq!(memo.stats().hits, hits, "expired: a miss");
    assert_eq!(memo.stats().misses, 3 - hits);

    // And directly on the backend, entries with and without a time to live.
    backend
        .set(&key(1), b"short", Some(Duration::from_millis(50)))
        .unwrap();
    backend.set(&key(2), b"long", None).unwrap();
    thread::sleep(Duration::from_millis(120));
    assert_eq!(fetched(&*backend, 1), None);
    assert_eq!(fetched(&*backend, 2).unwrap(), b"long");
}

#[test]
fn entries_expire_after_their_time_to_live() {
    check_ttl(Arc::new(LruBackend::new(1 << 20)));
    let dir = tempfile::tempdir().unwrap();
    check_ttl(Arc::new(
        RedbBackend::open(dir.path().join("memo.redb")).unwrap(),
    ));
}

/// Overwrites the stored bytes of every entry of a memo file through redb's own API.
fn damage_redb_entries(path: &Path, damage: impl Fn(&mut Vec<u8>)) -> usize {
    // The table's name and types, as docs/memo.md specifies them.
    const TABLE: redb::TableDefinition<&[u8], &[u8]> =
        redb::TableDefinition::new("wasmpickle-memo-1");
    use redb::{ReadableTable, ReadableTableMetadata};
    let db = redb::Database::open(path).unwrap();
    let txn = db.begin_write().unwrap();
    let n;
    {
        let mut table = txn.open_table(TABLE).unwrap();
        n = table.len().unwrap() as usize;
        let entries: Vec<(Vec<u8>, Vec<u8>)> = table
            .iter()
            .unwrap()
            .map(|e| {
                let (k, v) = e.unwrap();
                (k.value().to_vec(), v.value().to_vec())
            })
            .collect();
        for (k, mut v) in entries {
            damage(&mut v);
            table.insert(k.as_slice(), v.as_slice()).unwrap();
        }
    }
    txn.commit().unwrap();
    n
}

#[test]
fn a_damaged_redb_entry_is_a_miss_and_the_call_runs_again() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("memo.redb");
    let rt = runtime();
    let call = call_u64(&Code::from_file(VERSIONED_A).unwrap(), "uses_helper", 5);
    let open = || Memo::new(Arc::new(RedbBackend::open(&path).unwrap()));

    let memo = open();
    assert_eq!(value_u64(&memo, &rt, &call), 16);
    drop(memo);

    // A flipped bit in the last byte of the value, which is the stored result's fuel: a
    // decodable, wrong result, caught only by the entry's checksum.
    assert_eq!(
        damage_redb_entries(&path, |v| *v.last_mut().unwrap() ^= 1),
        1
    );
    let memo = open();
    assert_eq!(value_u64(&memo, &rt, &call), 16);
    let s = memo.stats();
    assert_eq!((s.hits, s.misses, s.corrupt, s.stores), (0, 1, 1, 1));
    let fresh = rt.run(&call).unwrap();
    assert_eq!(memo.run(&rt, &call).unwrap(), fresh, "re-stored intact");
    assert_eq!(memo.stats().hits, 1);
    drop(memo);

    // Garbage and truncation are misses too.
    for damage in [
        Box::new(|v: &mut Vec<u8>| v.truncate(10)) as Box<dyn Fn(&mut Vec<u8>)>,
        Box::new(|v: &mut Vec<u8>| v.iter_mut().for_each(|b| *b = 0x5a)),
        Box::new(|v: &mut Vec<u8>| v.clear()),
    ] {
        damage_redb_entries(&path, damage);
        let memo = open();
        assert_eq!(value_u64(&memo, &rt, &call), 16);
        assert_eq!((memo.stats().corrupt, memo.stats().hits), (1, 0));
    }
}

#[test]
fn a_redb_memo_outlives_its_process_and_has_one_process_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("memo.redb");
    let rt = runtime();
    let call = call_u64(&Code::from_file(VERSIONED_A).unwrap(), "standalone", 9);
    let backend = Arc::new(RedbBackend::open(&path).unwrap());
    Memo::new(backend.clone()).run(&rt, &call).unwrap();
    assert_eq!(backend.stats().unwrap().entries, 1);

    // The file is locked while open (in this process as in any other).
    let err = RedbBackend::open(&path).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Io);
    assert!(err.to_string().contains("open in another process"), "{err}");
    // Waiting for it works once the holder lets go.
    let holder = thread::spawn(move || {
        thread::sleep(Duration::from_millis(100));
        drop(backend);
    });
    let reopened = RedbBackend::open_waiting(&path, Duration::from_secs(10)).unwrap();
    holder.join().unwrap();
    let memo = Memo::new(Arc::new(reopened));
    memo.run(&rt, &call).unwrap();
    assert_eq!(memo.stats().hits, 1, "the entry survived closing the file");
    assert_eq!(memo.clear().unwrap(), 1);
    assert_eq!(memo.backend().stats().unwrap().entries, 0);
}

/// A redis-server of our own on a free loopback port, stopped when dropped.
struct RedisServer {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl RedisServer {
    fn start() -> RedisServer {
        let binary = "redis-server";
        if Command::new(binary)
            .arg("--version")
            .stdout(Stdio::null())
            .status()
            .is_err()
        {
            panic!(
                "redis-server is not installed, and the Redis memo backend is tested against a \
                 real one: install it (Debian: apt-get install redis-server; .ci/run does)"
            );
        }
        let mut last = String::new();
        for _ in 0..5 {
            // A free port: bind one, let go of it, and hope nobody takes it meanwhile (retried
            // if someone does).
            let port = TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let dir = tempfile::tempdir().unwrap();
            let log = dir.path().join("redis.log");
            let mut child = Command::new(binary)
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
                .arg("--dir")
                .arg(dir.path())
                .arg("--logfile")
                .arg(&log)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            let started = Instant::now();
            while started.elapsed() < Duration::from_secs(10) {
                if let Ok(Some(status)) = child.try_wait() {
                    let out = std::fs::read_to_string(&log).unwrap_or_default();
                    last = format!("redis-server exited with {status}: {out}");
                    break;
                }
                if ping(port) {
                    return RedisServer {
                        child,
                        port,
                        _dir: dir,
                    };
                }
                thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("could not start redis-server: {last}");
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn ping(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    if s.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).is_ok() && line.starts_with("+PONG")
}

#[test]
fn the_redis_backend_against_a_real_server() {
    let server = RedisServer::start();
    let backend = Arc::new(RedisBackend::open(&server.url()).unwrap());
    let rt = runtime();
    let memo = Memo::new(backend.clone());
    let code = Code::from_file(VERSIONED_A).unwrap();
    let call = call_u64(&code, "uses_lonely", 1);
    assert_eq!(value_u64(&memo, &rt, &call), 101);
    assert_eq!(value_u64(&memo, &rt, &call), 101);
    assert_eq!((memo.stats().hits, memo.stats().misses), (1, 1));

    // A second client (another process, as far as Redis knows) shares the entries.
    let other = Memo::new(Arc::new(RedisBackend::open(&server.url()).unwrap()));
    assert_eq!(value_u64(&other, &rt, &call), 101);
    assert_eq!(other.stats().hits, 1);

    // Someone overwrites the entry behind the backend's back: detected, a miss, re-run.
    let mut raw = redis::Client::open(server.url())
        .unwrap()
        .get_connection()
        .unwrap();
    let k = memo.key(&call, rt.limits()).unwrap();
    let name = format!("wasmpickle:memo:1:{}", k.to_hex());
    let stored: Vec<u8> = redis::cmd("GET").arg(&name).query(&mut raw).unwrap();
    let mut damaged = stored.clone();
    *damaged.last_mut().unwrap() ^= 0x01;
    let () = redis::cmd("SET")
        .arg(&name)
        .arg(damaged)
        .query(&mut raw)
        .unwrap();
    assert_eq!(value_u64(&memo, &rt, &call), 101);
    assert_eq!(memo.stats().corrupt, 1);
    let restored: Vec<u8> = redis::cmd("GET").arg(&name).query(&mut raw).unwrap();
    assert_eq!(restored, stored, "the entry was stored again, intact");

    // Time to live is Redis's own PX.
    backend
        .set(&key(9), b"later", Some(Duration::from_secs(60)))
        .unwrap();
    let pttl: i64 = redis::cmd("PTTL")
        .arg(format!("wasmpickle:memo:1:{}", key(9).to_hex()))
        .query(&mut raw)
        .unwrap();
    assert!((50_000..=60_000).contains(&pttl), "PTTL {pttl}");
    assert!(backend.remove(&key(9)).unwrap());
    backend
        .set(&key(10), b"soon gone", Some(Duration::from_millis(60)))
        .unwrap();
    thread::sleep(Duration::from_millis(150));
    assert_eq!(fetched(&*backend, 10), None);

    // Stats and clear cover the memo's keys only; other data on the server stays.
    let () = redis::cmd("SET")
        .arg("unrelated")
        .arg("x")
        .query(&mut raw)
        .unwrap();
    let stats = backend.stats().unwrap();
    assert_eq!(stats.entries, 1, "{stats:?}");
    assert!(stats.bytes > 44);
    assert_eq!(backend.clear().unwrap(), 1);
    assert_eq!(backend.stats().unwrap().entries, 0);
    let kept: String = redis::cmd("GET").arg("unrelated").query(&mut raw).unwrap();
    assert_eq!(kept, "x");

    // A server that goes away makes every lookup a miss: calls still run and answer right.
    drop(raw);
    drop(server);
    let errors = memo.stats().errors;
    assert_eq!(value_u64(&memo, &rt, &call), 101);
    assert!(memo.stats().errors > errors);

    // And a server that is not there at all is an I/O error when opening.
    let err = RedisBackend::open(&format!(
        "redis://127.0.0.1:{}/",
        TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    ))
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Io);
}

/// `wasmpickle <args>`: exit status, stdout, stderr.
fn wasmpickle(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(crate::support::cli_binary())
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

#[test]
fn run_memo_and_journal_from_the_command_line() {
    #[derive(Serialize)]
    struct Scale {
        factor: f64,
    }
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();
    let call = Code::from_file(MATH)
        .unwrap()
        .closure("scale", &Scale { factor: 2.5 })
        .unwrap()
        .call(&(4.0,))
        .unwrap();
    std::fs::write(file("call.wpk"), call.to_bytes()).unwrap();
    let (memo, journal) = (file("memo.redb"), file("calls.journal"));
    let run = [
        "run",
        &file("call.wpk"),
        "--memo",
        &memo,
        "--journal",
        &journal,
        "--report",
    ];

    let (status, out, err) = wasmpickle(&run);
    assert_eq!(status, 0, "{err}");
    let first = json(&out);
    assert_eq!(
        (&first["result"], &first["memo"]),
        (&10.0.into(), &"miss".into())
    );
    let (status, out, _) = wasmpickle(&run);
    assert_eq!(status, 0);
    let second = json(&out);
    assert_eq!(second["memo"], "hit");
    assert_eq!(second["fuel_used"], first["fuel_used"]);

    let (status, out, _) = wasmpickle(&["memo", "stats", "--memo", &memo]);
    assert_eq!(status, 0);
    assert_eq!(json(&out)["entries"], 1);

    // Both runs are in the journal, the hit marked as such; replay verifies both.
    let (records, _) = wasmpickle::JournalReader::open(&journal)
        .unwrap()
        .read_all()
        .unwrap();
    assert_eq!(records.len(), 2);
    assert!(!records[0].is_memo_hit() && records[1].is_memo_hit());
    let (status, out, err) = wasmpickle(&["replay", &journal]);
    assert_eq!(status, 0, "{out} {err}");
    assert!(out.contains("2 matched"), "{out}");

    // A call that can reach a granted clock is refused, with its own kind.
    std::fs::write(
        file("now.wpk"),
        clock_code()
            .function("now")
            .unwrap()
            .call(&1)
            .unwrap()
            .to_bytes(),
    )
    .unwrap();
    let (status, _, err) =
        wasmpickle(&["run", &file("now.wpk"), "--grant", "clock", "--memo", &memo]);
    assert_eq!(status, 1);
    assert!(err.starts_with("error[not-memoizable]: "), "{err}");

    let (status, out, _) = wasmpickle(&["memo", "clear", "--memo", &memo]);
    assert_eq!((status, json(&out)["removed"].clone()), (0, 1.into()));
    let (status, _, err) = wasmpickle(&["memo", "stats", "--memo", &file("nope.redb")]);
    assert_eq!(status, 1);
    assert!(err.contains("does not exist"), "{err}");
    let (status, _, _) = wasmpickle(&["run", &file("call.wpk"), "--memo-ttl", "5m"]);
    assert_eq!(status, 2, "--memo-ttl needs --memo");
}

#[test]
fn map_answers_from_the_memo_and_journals_in_input_order() {
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();
    std::fs::write(file("args.jsonl"), "[1]\n[2]\n\n[3]\n[4]\n").unwrap();
    let (memo, journal) = (file("memo.redb"), file("calls.journal"));
    let map = [
        "map",
        VERSIONED_A,
        "--export",
        "uses_helper",
        "--args-file",
        &file("args.jsonl"),
        "--workers",
        "1",
        "--memo",
        &memo,
        "--journal",
        &journal,
    ];
    for round in 0..2 {
        let (status, out, err) = wasmpickle(&map);
        assert_eq!(status, 0, "round {round}: {err}");
        assert_eq!(out, "4\n7\n10\n13\n", "round {round}");
    }
    let (_, out, _) = wasmpickle(&["memo", "stats", "--memo", &memo]);
    assert_eq!(json(&out)["entries"], 4);
    let (records, _) = wasmpickle::JournalReader::open(&journal)
        .unwrap()
        .read_all()
        .unwrap();
    let hits: Vec<bool> = records.iter().map(|r| r.is_memo_hit()).collect();
    assert_eq!(hits, [false, false, false, false, true, true, true, true]);
    let args: Vec<Vec<u8>> = records.iter().map(|r| r.call().args().to_vec()).collect();
    assert_eq!(args[..4], args[4..], "records follow the input order");
    let (status, out, err) = wasmpickle(&["replay", &journal, "--json"]);
    assert_eq!(status, 0, "{out} {err}");
    assert_eq!(json(&out)["matched"], 8);
}

#[test]
fn run_with_a_redis_memo_from_the_command_line() {
    let server = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let pickle = dir.path().join("call.wpk");
    std::fs::write(
        &pickle,
        call_u64(&Code::from_file(VERSIONED_A).unwrap(), "uses_lonely", 3).to_bytes(),
    )
    .unwrap();
    let url = server.url();
    let run = ["run", pickle.to_str().unwrap(), "--memo", &url, "--report"];
    let memo_of = |out: &str| json(out)["memo"].as_str().unwrap().to_owned();
    let (status, out, err) = wasmpickle(&run);
    assert_eq!((status, memo_of(&out)), (0, "miss".to_owned()), "{err}");
    let (status, out, _) = wasmpickle(&run);
    assert_eq!((status, memo_of(&out)), (0, "hit".to_owned()));
    assert_eq!(json(&out)["result"], 103);
    let (_, out, _) = wasmpickle(&["memo", "stats", "--memo", &url]);
    assert_eq!(json(&out)["backend"], "redis");
    assert_eq!(json(&out)["entries"], 1);
}

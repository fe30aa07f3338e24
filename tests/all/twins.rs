//! Twins: guest objects kept alive between calls, snapshotted as modules and resumed in
//! another runtime, another worker process, or a bare wasmtime with no wasmpickle code.
//!
//! The guests are `guest-examples/twins`: `Counter`, `Stats` (a running-statistics
//! accumulator) and `Kv` (a small key-value table), all made with `#[object]`.

use serde::Serialize;
use serde_json::{Value, json};
use wasmpickle::{Call, Code, ErrorKind, Limits, Object, Runtime, RuntimeConfig};
use wasmpickle_pool::{Pool, PoolConfig};

use crate::support::*;

#[derive(Serialize)]
struct CounterStart {
    start: i64,
    step: i64,
}

#[derive(Serialize)]
struct KvConfig {
    max_entries: u32,
}

fn twins() -> Code {
    Code::from_file(wasmpickle_test_artifacts::TWINS).expect("the twins guest loads")
}

fn counter(start: i64, step: i64) -> Call {
    twins()
        .closure("Counter.new", &CounterStart { start, step })
        .unwrap()
        .call(&())
        .unwrap()
}

fn stats() -> Call {
    twins().function("Stats.new").unwrap().call(&()).unwrap()
}

fn kv(max_entries: u32) -> Call {
    twins()
        .closure("Kv.new", &KvConfig { max_entries })
        .unwrap()
        .call(&())
        .unwrap()
}

fn runtime() -> Runtime {
    Runtime::new(&RuntimeConfig::new()).expect("runtime")
}

/// One step of a scripted session: a method and its arguments, MessagePack.
type Step = (&'static str, Vec<u8>);

fn step<A: Serialize>(method: &'static str, args: &A) -> Step {
    (method, wasmpickle::format::codec::to_msgpack(args).unwrap())
}

/// What each step returns: the reply bytes and the fuel, or the error kind.
type Answer = Result<(Vec<u8>, u64), String>;

fn play(object: &mut Object, steps: &[Step]) -> Vec<Answer> {
    steps
        .iter()
        .map(|(m, a)| {
            object
                .call_bytes(m, a, &Default::default())
                .map(|o| (o.value().to_vec(), o.fuel_used()))
                .map_err(|e| e.kind().to_string())
        })
        .collect()
}

fn stats_script() -> Vec<Step> {
    let mut steps = Vec::new();
    for i in 0..40 {
        steps.push(step("push", &(f64::from(i) * 1.5 - 7.25,)));
        if i % 10 == 9 {
            steps.push(step("summary", &()));
            steps.push(step("extend", &(vec![0.1 * f64::from(i), -3.0, 1e9],)));
        }
    }
    steps.push(step("summary", &()));
    steps
}

fn kv_script() -> Vec<Step> {
    let mut steps = Vec::new();
    for i in 0..30 {
        steps.push(step(
            "set",
            &(format!("key-{}", i % 12), format!("value {i}")),
        ));
        if i % 4 == 0 {
            steps.push(step("remove", &(format!("key-{}", (i + 3) % 12),)));
        }
        if i % 7 == 0 {
            steps.push(step("get", &(format!("key-{}", i % 5),)));
            steps.push(step("keys", &()));
            steps.push(step("len", &()));
        }
    }
    steps
}

/// Splits `script` in two; runs the first half on a fresh object, snapshots it, restores the
/// snapshot in another runtime and checks both halves of every answer against an
/// uninterrupted object.
fn interrupted_matches_uninterrupted(make: &Call, script: &[Step]) {
    let rt = runtime();
    let mut whole = rt.spawn(make).unwrap();
    let expected = play(&mut whole, script);
    assert!(
        expected.iter().any(Result::is_ok),
        "the script does something"
    );

    let (first, second) = script.split_at(script.len() / 2);
    let mut a = rt.spawn(make).unwrap();
    assert_eq!(play(&mut a, first), expected[..first.len()]);
    let snapshot = a.snapshot().unwrap();

    // Another runtime, and the snapshot only as bytes.
    let other = runtime();
    let bytes = snapshot.wasm().to_vec();
    let mut b = other.restore(&Code::new(bytes).unwrap()).unwrap();
    assert_eq!(b.name(), a.name());
    assert_eq!(play(&mut b, second), expected[first.len()..]);
    // The original goes on too, unaffected by its snapshot.
    assert_eq!(play(&mut a, second), expected[first.len()..]);
}

#[test]
fn counter_keeps_state_between_calls() {
    let rt = runtime();
    let mut c = rt.spawn(&counter(10, 5)).unwrap();
    assert_eq!(c.name(), "Counter");
    for m in ["add", "get", "incr", "reset"] {
        assert!(c.methods().iter().any(|x| x == m), "{:?}", c.methods());
    }
    assert_eq!(c.call("incr", &()).unwrap().decode::<i64>().unwrap(), 15);
    assert_eq!(c.call("incr", &()).unwrap().decode::<i64>().unwrap(), 20);
    assert_eq!(
        c.call("add", &(100,)).unwrap().decode::<i64>().unwrap(),
        120
    );
    assert_eq!(c.call("get", &()).unwrap().decode::<i64>().unwrap(), 120);
    c.call("reset", &()).unwrap();
    assert_eq!(c.call("get", &()).unwrap().decode::<i64>().unwrap(), 10);
    assert_eq!(c.calls(), 6);
    // Two objects of one module do not share state.
    let mut d = rt.spawn(&counter(0, 1)).unwrap();
    assert_eq!(d.call("incr", &()).unwrap().decode::<i64>().unwrap(), 1);
    assert_eq!(c.call("get", &()).unwrap().decode::<i64>().unwrap(), 10);
}

#[test]
fn stats_snapshot_resumes_exactly() {
    interrupted_matches_uninterrupted(&stats(), &stats_script());
}

#[test]
fn kv_snapshot_resumes_exactly() {
    interrupted_matches_uninterrupted(&kv(8), &kv_script());
}

#[test]
fn stats_answers_are_right() {
    let rt = runtime();
    let mut s = rt.spawn(&stats()).unwrap();
    for x in [2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0] {
        s.call("push", &(x,)).unwrap();
    }
    let summary: Value = s.call("summary", &()).unwrap().decode().unwrap();
    assert_eq!(summary["count"], json!(8));
    assert_eq!(summary["mean"], json!(5.0));
    assert_eq!(summary["min"], json!(2.0));
    assert_eq!(summary["max"], json!(9.0));
    // Sample variance of that data set: 32 / 7.
    let var = summary["variance"]
        .as_f64()
        .expect("a variance for 8 values");
    assert!((var - 32.0 / 7.0).abs() < 1e-12, "{var}");
}

#[test]
fn kv_guest_errors_do_not_poison() {
    let rt = runtime();
    let mut t = rt.spawn(&kv(2)).unwrap();
    t.call("set", &("a", "1")).unwrap();
    t.call("set", &("b", "2")).unwrap();
    let full = t.call("set", &("c", "3")).unwrap_err();
    assert_eq!(full.kind(), ErrorKind::GuestError);
    assert!(!t.is_poisoned());
    let bad = t.call("set", &(1, 2, 3)).unwrap_err();
    assert_eq!(bad.kind(), ErrorKind::BadInput);
    assert_eq!(
        t.call("get", &("b",))
            .unwrap()
            .decode::<Option<String>>()
            .unwrap(),
        Some("2".to_owned())
    );
    assert_eq!(t.call("len", &()).unwrap().decode::<u64>().unwrap(), 2);
}

#[test]
fn a_panic_poisons_the_object_and_the_snapshot_survives() {
    let rt = runtime();
    let mut c = rt.spawn(&counter(0, 1)).unwrap();
    c.call("incr", &()).unwrap();
    let before = c.snapshot().unwrap();
    let e = c.call("fail", &()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::GuestPanic);
    assert!(e.guest_failure().is_some());
    assert!(c.is_poisoned());
    assert_eq!(
        c.call("get", &()).unwrap_err().kind(),
        ErrorKind::ObjectPoisoned
    );
    assert_eq!(c.snapshot().unwrap_err().kind(), ErrorKind::ObjectPoisoned);
    // The last snapshot is the way on.
    let mut again = rt.restore(&before).unwrap();
    assert_eq!(again.call("incr", &()).unwrap().decode::<i64>().unwrap(), 2);
}

#[test]
fn fuel_is_per_call_and_memory_is_per_object() {
    let mut limits = Limits::default();
    limits.fuel(2_000_000).max_memory(4 << 20);
    let rt = Runtime::new(RuntimeConfig::new().limits(limits)).unwrap();
    let mut s = rt.spawn(&stats()).unwrap();
    // Many calls, each under the per-call budget, add up to far more than one budget.
    let mut total = 0;
    for i in 0..200 {
        total += s.call("push", &(f64::from(i),)).unwrap().fuel_used();
    }
    assert!(total > 0);
    let big: Vec<f64> = (0..2_000_000).map(f64::from).collect();
    let e = s.call("extend", &(big,)).unwrap_err();
    assert!(
        matches!(e.kind(), ErrorKind::MemoryLimit | ErrorKind::OutOfFuel),
        "{e}"
    );
}

#[test]
fn snapshots_are_deterministic() {
    let run = || {
        let rt = runtime();
        let mut k = rt.spawn(&kv(16)).unwrap();
        play(&mut k, &kv_script());
        k.snapshot().unwrap()
    };
    let (a, b) = (run(), run());
    assert_eq!(a.hash(), b.hash());
    assert_eq!(a.wasm(), b.wasm());
    assert_eq!(wasmpickle::snapshot_object(&a).as_deref(), Some("Kv"));
    // A different state is a different module.
    let rt = runtime();
    let mut k = rt.spawn(&kv(16)).unwrap();
    k.call("set", &("x", "y")).unwrap();
    assert_ne!(k.snapshot().unwrap().hash(), a.hash());
}

#[test]
fn a_snapshot_runs_in_bare_wasmtime() {
    let rt = runtime();
    let mut c = rt.spawn(&counter(40, 2)).unwrap();
    c.call("incr", &()).unwrap();
    let snapshot = c.snapshot().unwrap();
    let expected = c.call("incr", &()).unwrap();

    // No wasmpickle: wasmtime instantiates the module and the ABI is followed by hand.
    use wasmtime::{Engine, Instance, Module, Store};
    let engine = Engine::default();
    let module = Module::new(&engine, snapshot.wasm()).unwrap();
    let mut store = Store::new(&engine, ());
    let instance = Instance::new(&mut store, &module, &[]).unwrap();
    let memory = instance.get_memory(&mut store, "memory").unwrap();
    let alloc = instance
        .get_typed_func::<i32, i32>(&mut store, "wasmpickle_alloc")
        .unwrap();
    let incr = instance
        .get_typed_func::<(i32, i32, i32, i32), i64>(&mut store, "Counter.incr")
        .unwrap();
    // env nil, args nil: two bytes 0xc0 0xc0.
    let p = alloc.call(&mut store, 2).unwrap();
    memory.write(&mut store, p as usize, &[0xc0, 0xc0]).unwrap();
    let packed = incr.call(&mut store, (p, 1, p + 1, 1)).unwrap() as u64;
    let (ptr, len) = ((packed >> 32) as usize, (packed & 0xffff_ffff) as usize);
    let reply = &memory.data(&store)[ptr..ptr + len];
    assert_eq!(reply[0], 0, "status ok");
    assert_eq!(&reply[1..], expected.value());
    assert_eq!(
        wasmpickle::format::codec::from_msgpack::<i64>(&reply[1..]).unwrap(),
        44
    );
}

#[test]
fn hostile_snapshots_are_typed_errors() {
    let rt = runtime();
    // Not a snapshot at all.
    assert_eq!(
        rt.restore(&twins()).unwrap_err().kind(),
        ErrorKind::NotAnObject
    );
    // A constructor that is not one.
    let not_ctor = twins().function("Counter.get").unwrap().call(&()).unwrap();
    assert_eq!(
        rt.spawn(&not_ctor).unwrap_err().kind(),
        ErrorKind::NotAnObject
    );
    // A snapshot whose object section is garbage.
    let mut c = rt.spawn(&counter(0, 1)).unwrap();
    let snap = c.snapshot().unwrap();
    let mut module = wasm_encoder_free_rewrite(snap.wasm());
    let code = Code::new(std::mem::take(&mut module)).unwrap();
    assert_eq!(
        rt.restore(&code).unwrap_err().kind(),
        ErrorKind::NotAnObject
    );
}

/// The snapshot with its `wasmpickle.object` section's contents replaced by garbage of the
/// same length (so every size field stays right).
fn wasm_encoder_free_rewrite(wasm: &[u8]) -> Vec<u8> {
    let name = wasmpickle::OBJECT_SECTION.as_bytes();
    let at = wasm
        .windows(name.len())
        .rposition(|w| w == name)
        .expect("the snapshot names its section");
    let mut out = wasm.to_vec();
    for b in &mut out[at + name.len()..] {
        *b = 0xc1; // never valid MessagePack
    }
    out
}

/// A pool whose twins run in `wasmpickle worker` processes.
fn pool() -> Pool {
    let mut config = PoolConfig::new();
    config
        .workers(1)
        .worker_program(cli_binary())
        .worker_logs(false);
    Pool::new(&config).expect("pool")
}

#[test]
fn a_twin_moves_between_worker_processes() {
    let pool = pool();
    let script = stats_script();
    let (first, second) = script.split_at(script.len() / 2);

    // The reference: one object in this process, never interrupted.
    let rt = runtime();
    let mut local = rt.spawn(&stats()).unwrap();
    let expected = play(&mut local, &script);

    let mut a = pool.spawn_twin(&stats()).unwrap();
    assert_eq!(a.name(), "Stats");
    // The module crossed once.
    assert_eq!(a.code_bytes_sent(), twins().wasm().len() as u64);
    let remote = |t: &mut wasmpickle_pool::Twin, steps: &[Step]| -> Vec<Answer> {
        steps
            .iter()
            .map(|(m, args)| {
                t.call_bytes(m, args)
                    .map(|o| (o.value().to_vec(), o.fuel_used()))
                    .map_err(|e| e.remote_kind_name().unwrap_or("?").to_owned())
            })
            .collect()
    };
    assert_eq!(remote(&mut a, first), expected[..first.len()]);
    let snapshot = a.snapshot().unwrap();
    let mut b = pool.restore_twin(&snapshot).unwrap();
    assert_ne!(a.worker_pid(), b.worker_pid(), "another process");
    assert_eq!(b.code_bytes_sent(), snapshot.wasm().len() as u64);
    drop(a);
    assert_eq!(remote(&mut b, second), expected[first.len()..]);

    // The snapshot a worker made restores here too.
    let mut here = rt.restore(&snapshot).unwrap();
    assert_eq!(play(&mut here, second), expected[first.len()..]);
}

#[test]
fn twin_errors_cross_with_their_kinds() {
    let pool = pool();
    let mut c = pool.spawn_twin(&counter(0, 1)).unwrap();
    let e = c.call("nope", &()).unwrap_err();
    assert_eq!(e.remote_kind(), Some(ErrorKind::MissingExport));
    let e = c.call("fail", &()).unwrap_err();
    assert_eq!(e.remote_kind(), Some(ErrorKind::GuestPanic));
    let e = c.call("get", &()).unwrap_err();
    assert_eq!(e.remote_kind(), Some(ErrorKind::ObjectPoisoned));
    let e = pool
        .spawn_twin(&twins().function("Counter.get").unwrap().call(&()).unwrap())
        .unwrap_err();
    assert_eq!(e.remote_kind(), Some(ErrorKind::NotAnObject));
}

#[test]
fn inputs_and_replies_are_freed_so_memory_does_not_grow_with_calls() {
    let rt = runtime();
    let mut t = rt.spawn(&kv(4)).unwrap();
    let value = "v".repeat(64 << 10);
    let mut sizes = Vec::new();
    for i in 0..600 {
        // 64 KiB in, 64 KiB back (the replaced value), every call.
        t.call("set", &("k", &value)).unwrap();
        t.call("get", &("k",)).unwrap();
        if i == 99 || i == 599 {
            sizes.push(t.memory_size());
        }
    }
    // Without freeing, 600 × 192 KiB would have grown memory by over 100 MiB.
    assert_eq!(
        sizes[0], sizes[1],
        "memory grew between call 100 and call 600"
    );
}

#[test]
fn restoring_new_snapshots_does_not_compile_again() {
    let rt = runtime();
    let mut c = rt.spawn(&counter(0, 1)).unwrap();
    let mut snapshots = Vec::new();
    for _ in 0..5 {
        c.call("incr", &()).unwrap();
        snapshots.push(c.snapshot().unwrap());
    }
    let compiles = rt.stats().compiles;
    for (i, snap) in snapshots.iter().enumerate() {
        let mut r = rt.restore(snap).unwrap();
        assert_eq!(
            r.call("get", &()).unwrap().decode::<i64>().unwrap(),
            i as i64 + 1
        );
        // A snapshot of a restored object restores the same way.
        let mut again = rt.restore(&r.snapshot().unwrap()).unwrap();
        assert_eq!(
            again.call("incr", &()).unwrap().decode::<i64>().unwrap(),
            i as i64 + 2
        );
    }
    // Five different snapshots and five of their copies: one compile, of their shared shell.
    assert_eq!(rt.stats().compiles, compiles + 1);
}

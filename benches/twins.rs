//! Live objects ("twins") in this process: a method call on a kept instance against the same
//! call made by hand-written wasmtime code on a kept instance (the floor), in the same run;
//! and what moving an object costs: a snapshot and a restore.
//!
//! Run with `cargo bench --bench twins`; figures are quoted in BENCHMARKS.md. The remote
//! round trip of a twin method (a worker process of its own) is in `benches/pool.rs`.
//!
//! * `method/object/incr`: `Object::call_bytes("incr")` on a `Counter` of
//!   `guest-examples/twins`: copy the arguments in, call `Counter.incr`, read the reply, with
//!   fuel and a deadline set per call.
//! * `method/floor/incr`: the same export called on a kept instance by hand: an engine
//!   configured like ours (fuel, epochs, NaN canonicalization), fuel set per call, the
//!   allocator called and the arguments copied in, the reply copied out, both buffers freed.
//! * `move/snapshot/kv_{n}` and `move/restore/kv_{n}`: a `Kv` with `n` entries made into a
//!   module, and that module resumed (its compiled variant already cached).

use std::hint::black_box;

use criterion::Criterion;
use serde::Serialize;
use wasmpickle::{CallLimits, Code, Runtime, RuntimeConfig};
use wasmtime::{Config, Engine, Instance, Module, Store, TypedFunc};

#[derive(Serialize)]
struct CounterStart {
    start: i64,
    step: i64,
}

#[derive(Serialize)]
struct KvConfig {
    max_entries: u32,
}

/// A `Counter` called through the guest contract by hand, on one instance.
struct Floor {
    store: Store<()>,
    memory: wasmtime::Memory,
    alloc: TypedFunc<i32, i32>,
    free: TypedFunc<(i32, i32), ()>,
    incr: TypedFunc<(i32, i32, i32, i32), i64>,
}

impl Floor {
    fn new(wasm: &[u8]) -> Floor {
        let mut config = Config::new();
        config
            .consume_fuel(true)
            .epoch_interruption(true)
            .cranelift_nan_canonicalization(true)
            .wasm_relaxed_simd(false);
        let engine = Engine::new(&config).unwrap();
        let module = Module::new(&engine, wasm).unwrap();
        let mut store = Store::new(&engine, ());
        store.set_fuel(u64::MAX / 2).unwrap();
        store.set_epoch_deadline(u64::MAX / 2);
        let instance = Instance::new(&mut store, &module, &[]).unwrap();
        let memory = instance.get_memory(&mut store, "memory").unwrap();
        let alloc = instance
            .get_typed_func::<i32, i32>(&mut store, "wasmpickle_alloc")
            .unwrap();
        let free = instance
            .get_typed_func::<(i32, i32), ()>(&mut store, "wasmpickle_free")
            .unwrap();
        let new = instance
            .get_typed_func::<(i32, i32, i32, i32), i64>(&mut store, "Counter.new")
            .unwrap();
        let incr = instance
            .get_typed_func::<(i32, i32, i32, i32), i64>(&mut store, "Counter.incr")
            .unwrap();
        let mut floor = Floor {
            store,
            memory,
            alloc,
            free,
            incr,
        };
        let env =
            wasmpickle::format::codec::to_msgpack(&CounterStart { start: 0, step: 1 }).unwrap();
        floor.call(&new, &env, &[0xc0]);
        floor
    }

    fn call(
        &mut self,
        f: &TypedFunc<(i32, i32, i32, i32), i64>,
        env: &[u8],
        args: &[u8],
    ) -> Vec<u8> {
        self.store.set_fuel(10_000_000_000).unwrap();
        let total = env.len() + args.len();
        let p = self.alloc.call(&mut self.store, total as i32).unwrap();
        let data = self.memory.data_mut(&mut self.store);
        data[p as usize..p as usize + env.len()].copy_from_slice(env);
        data[p as usize + env.len()..p as usize + total].copy_from_slice(args);
        let packed = f
            .call(
                &mut self.store,
                (p, env.len() as i32, p + env.len() as i32, args.len() as i32),
            )
            .unwrap() as u64;
        let (ptr, len) = ((packed >> 32) as usize, (packed & 0xffff_ffff) as usize);
        let reply = self.memory.data(&self.store)[ptr..ptr + len].to_vec();
        // A kept instance must get its buffers back, as the host gives them.
        self.free.call(&mut self.store, (p, total as i32)).unwrap();
        self.free
            .call(&mut self.store, (ptr as i32, len as i32))
            .unwrap();
        reply
    }
}

fn bench(c: &mut Criterion) {
    let code = Code::from_file(wasmpickle_test_artifacts::TWINS).unwrap();
    let runtime = Runtime::new(&RuntimeConfig::new()).unwrap();
    let none = CallLimits::new();

    let mut group = c.benchmark_group("method");
    let start = code
        .closure("Counter.new", &CounterStart { start: 0, step: 1 })
        .unwrap()
        .call(&())
        .unwrap();
    let mut counter = runtime.spawn(&start).unwrap();
    group.bench_function("object/incr", |b| {
        b.iter(|| black_box(counter.call_bytes("incr", &[0xc0], &none).unwrap()))
    });
    let mut floor = Floor::new(code.wasm());
    let incr = floor.incr.clone();
    group.bench_function("floor/incr", |b| {
        b.iter(|| black_box(floor.call(&incr, &[0xc0], &[0xc0])))
    });
    group.finish();

    let mut group = c.benchmark_group("move");
    for n in [10u32, 1000] {
        let make = code
            .closure("Kv.new", &KvConfig { max_entries: n })
            .unwrap()
            .call(&())
            .unwrap();
        let mut kv = runtime.spawn(&make).unwrap();
        for i in 0..n {
            kv.call("set", &(format!("key {i}"), format!("value {i}")))
                .unwrap();
        }
        group.bench_function(format!("snapshot/kv_{n}"), |b| {
            b.iter(|| black_box(kv.snapshot().unwrap()))
        });
        let snapshot = kv.snapshot().unwrap();
        eprintln!(
            "kv_{n}: snapshot module {} bytes, memory {} bytes",
            snapshot.wasm().len(),
            kv.memory_size()
        );
        drop(runtime.restore(&snapshot).unwrap());
        group.bench_function(format!("restore/kv_{n}"), |b| {
            b.iter(|| black_box(runtime.restore(&snapshot).unwrap()))
        });
    }
    group.finish();
}

fn main() {
    let mut criterion = Criterion::default().configure_from_args();
    bench(&mut criterion);
    criterion.final_summary();
}

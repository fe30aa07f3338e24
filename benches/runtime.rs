//! A call of a cached module in a fresh instance, against the same guest work done by
//! hand-written wasmtime code (the floor), in the same run.
//!
//! Run with `cargo bench --bench runtime`. Figures are quoted in BENCHMARKS.md.
//!
//! The floor uses an engine configured exactly like `Runtime`'s (pooling allocator with the
//! same keep-resident sizes, fuel, epoch interruption, NaN canonicalization) and performs the
//! same steps the guest contract needs — new store with a limiter, fuel and deadline, instance
//! from a pre-linked `InstancePre`, one allocation, copy env and args in, call, copy the reply
//! out — with everything looked up in advance. What is left between the two is wasmpickle's
//! own cost: the module lookup by hash, limit resolution, export lookup, reply checks and
//! error plumbing.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use serde::Serialize;
use wasmpickle::{Call, Code, Runtime, RuntimeConfig};
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, Linker, Module, PoolingAllocationConfig, Store,
    StoreLimits, StoreLimitsBuilder,
};

#[derive(Serialize)]
struct Scale {
    factor: f64,
}

struct Floor {
    engine: Engine,
    pre: wasmtime::InstancePre<StoreLimits>,
}

impl Floor {
    fn new(wasm: &[u8]) -> Floor {
        let mut pool = PoolingAllocationConfig::new();
        pool.total_core_instances(64)
            .total_memories(64)
            .total_tables(64)
            .max_memory_size(256 << 20)
            .table_elements(65_536)
            .linear_memory_keep_resident(256 << 10)
            .table_keep_resident(64 << 10);
        let mut config = Config::new();
        config
            .consume_fuel(true)
            .epoch_interruption(true)
            .cranelift_nan_canonicalization(true)
            .wasm_relaxed_simd(false)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&config).unwrap();
        let module = Module::new(&engine, wasm).unwrap();
        let pre = Linker::new(&engine).instantiate_pre(&module).unwrap();
        Floor { engine, pre }
    }

    /// One call of `scale` in a fresh instance, by hand. Returns the reply bytes.
    fn call(&self, env: &[u8], args: &[u8]) -> Vec<u8> {
        let limits = StoreLimitsBuilder::new().memory_size(256 << 20).build();
        let mut store = Store::new(&self.engine, limits);
        store.limiter(|l| l);
        store.set_fuel(10_000_000_000).unwrap();
        store.set_epoch_deadline(1_000);
        let instance = self.pre.instantiate(&mut store).unwrap();
        let memory = instance.get_memory(&mut store, "memory").unwrap();
        let alloc = instance
            .get_typed_func::<i32, i32>(&mut store, "wasmpickle_alloc")
            .unwrap();
        let scale = instance
            .get_typed_func::<(i32, i32, i32, i32), i64>(&mut store, "scale")
            .unwrap();
        let ptr = alloc
            .call(&mut store, (env.len() + args.len()) as i32)
            .unwrap() as usize;
        memory.data_mut(&mut store)[ptr..ptr + env.len()].copy_from_slice(env);
        memory.data_mut(&mut store)[ptr + env.len()..ptr + env.len() + args.len()]
            .copy_from_slice(args);
        let packed = scale
            .call(
                &mut store,
                (
                    ptr as i32,
                    env.len() as i32,
                    (ptr + env.len()) as i32,
                    args.len() as i32,
                ),
            )
            .unwrap() as u64;
        let (rptr, rlen) = ((packed >> 32) as usize, (packed & 0xffff_ffff) as usize);
        memory.data(&store)[rptr..rptr + rlen].to_vec()
    }
}

fn runtime(c: &mut Criterion) {
    let code = Code::from_file(wasmpickle_test_artifacts::MATH).unwrap();
    let call = code
        .closure("scale", &Scale { factor: 2.5 })
        .unwrap()
        .call(&(4.0,))
        .unwrap();
    // What a receiver that already has the module gets: the call by hash, 108 bytes.
    let bytes = call.by_reference().to_bytes();
    let inline_bytes = call.to_bytes();
    let rt = Runtime::new(&RuntimeConfig::default()).unwrap();
    rt.load(&code).unwrap();
    assert_eq!(rt.run(&call).unwrap().decode::<f64>().unwrap(), 10.0);

    let floor = Floor::new(code.wasm());
    let reply = floor.call(call.env(), call.args());
    assert_eq!(
        &reply[1..],
        rt.run(&call).unwrap().value(),
        "floor and runtime agree"
    );

    let mut g = c.benchmark_group("fresh_instance_call");
    g.measurement_time(Duration::from_secs(5));
    g.bench_function("floor_wasmtime_by_hand", |b| {
        b.iter(|| floor.call(black_box(call.env()), black_box(call.args())))
    });
    g.bench_function("wasmpickle_run", |b| {
        b.iter(|| rt.run(black_box(&call)).unwrap())
    });
    g.bench_function("wasmpickle_decode_run_decode", |b| {
        b.iter(|| {
            rt.run(&Call::from_bytes(black_box(&bytes)).unwrap())
                .unwrap()
                .decode::<f64>()
                .unwrap()
        })
    });
    g.finish();

    // Decoding a pickle that carries the module inline copies the module out of the input.
    let mut g = c.benchmark_group("decode_inline_call");
    g.bench_function(format!("{}B", inline_bytes.len()), |b| {
        b.iter(|| Call::from_bytes(black_box(&inline_bytes)).unwrap())
    });
    g.finish();
}

criterion_group!(benches, runtime);
criterion_main!(benches);

//! Where a call's module comes from: the module table (in memory), the compiled cache (on
//! disk), or the compiler, in the same run.
//!
//! Run with `cargo bench --bench cache`. Figures are quoted in BENCHMARKS.md.
//!
//! Every case runs the same call of `scale` in `guest-examples/math` by hash, so the
//! differences are where the module came from:
//!
//! * `memory hit`: the module is in the runtime's table (the steady state);
//! * `disk load`: `Runtime::forget` first, so the runtime reads the artifact, checks its MAC,
//!   maps it (`Module::deserialize_open_file`) and pre-links it, then runs the call;
//! * `floor: deserialize_file + instantiate_pre`: the same load by hand-written wasmtime
//!   code, engine configured like ours, no MAC: what the disk load costs at least;
//! * `MAC`: the check the cache adds before loading (keyed BLAKE3), and HMAC-SHA256 for
//!   comparison;
//! * `compile`: `Runtime::forget` first, with no cache, so the module (carried inline) is
//!   hashed, compiled by Cranelift and pre-linked, then the call runs.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use serde::Serialize;
use wasmpickle::{Code, Runtime, RuntimeConfig};
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, Linker, Module, PoolingAllocationConfig,
};

#[derive(Serialize)]
struct Scale {
    factor: f64,
}

/// An engine configured like `Runtime`'s, for the floor.
fn engine() -> Engine {
    let mut pool = PoolingAllocationConfig::new();
    pool.total_core_instances(64)
        .total_memories(64)
        .total_tables(64)
        .max_memories_per_module(1)
        .max_tables_per_module(1)
        .max_memory_size(1 << 32)
        .table_elements(1 << 20)
        .linear_memory_keep_resident(256 << 10)
        .table_keep_resident(64 << 10);
    let mut config = Config::new();
    config
        .consume_fuel(true)
        .epoch_interruption(true)
        .cranelift_nan_canonicalization(true)
        .wasm_relaxed_simd(false)
        .wasm_multi_memory(false)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    Engine::new(&config).unwrap()
}

fn bench(c: &mut Criterion) {
    let code = Code::new(wasmpickle_test_artifacts::read(
        wasmpickle_test_artifacts::MATH,
    ))
    .unwrap();
    let hash = code.hash();
    let call = code
        .closure("scale", &Scale { factor: 2.5 })
        .unwrap()
        .call(&(4.0,))
        .unwrap();
    let by_hash = call.by_reference();
    let dir = tempfile::tempdir().unwrap();

    let mut g = c.benchmark_group("module");
    g.warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));

    let cached =
        Runtime::new(RuntimeConfig::new().compiled_cache(dir.path().join("cache"))).unwrap();
    cached.load(&code).unwrap();
    assert_eq!(cached.run(&by_hash).unwrap().decode::<f64>().unwrap(), 10.0);
    // Check the disk path is the one measured below: loaded, not compiled again.
    cached.forget(&hash);
    cached.run(&by_hash).unwrap();
    let stats = cached.stats();
    assert_eq!((stats.compiles, stats.disk_hits), (1, 1), "{stats:?}");
    g.bench_function("memory hit: run by hash", |b| {
        b.iter(|| black_box(cached.run(black_box(&by_hash)).unwrap()))
    });

    g.bench_function("disk load: forget + run by hash", |b| {
        b.iter(|| {
            cached.forget(&hash);
            black_box(cached.run(black_box(&by_hash)).unwrap())
        })
    });
    assert_eq!(cached.stats().compiles, 1, "compiled once only");

    let floor_engine = engine();
    let artifact = dir.path().join("floor.cwasm");
    std::fs::write(
        &artifact,
        floor_engine.precompile_module(code.wasm()).unwrap(),
    )
    .unwrap();
    let linker = Linker::<()>::new(&floor_engine);
    g.bench_function("floor: deserialize_file + instantiate_pre", |b| {
        b.iter(|| {
            // SAFETY: the file was just written by `precompile_module` of this engine.
            let module = unsafe { Module::deserialize_file(&floor_engine, &artifact) }.unwrap();
            black_box(linker.instantiate_pre(&module).unwrap())
        })
    });

    // What the MAC check costs: keyed BLAKE3 over an artifact of the same size, and the
    // HMAC-SHA256 it replaced.
    let bytes = std::fs::read(&artifact).unwrap();
    g.bench_function(format!("MAC: keyed BLAKE3, {} bytes", bytes.len()), |b| {
        b.iter(|| black_box(blake3::keyed_hash(&[7; 32], black_box(&bytes))))
    });
    g.bench_function(format!("MAC: HMAC-SHA256, {} bytes", bytes.len()), |b| {
        b.iter(|| black_box(hmac_sha256(&[7; 32], black_box(&bytes))))
    });

    let compiling = Runtime::new(&RuntimeConfig::new()).unwrap();
    g.sample_size(10).measurement_time(Duration::from_secs(20));
    g.bench_function("compile: forget + run inline", |b| {
        b.iter(|| {
            compiling.forget(&hash);
            black_box(compiling.run(black_box(&call)).unwrap())
        })
    });
    g.finish();
}

/// HMAC-SHA256 (RFC 2104) from `sha2` alone, for the comparison.
fn hmac_sha256(key: &[u8; 32], data: &[u8]) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let mut ipad = [0x36u8; 64];
    let mut opad = [0x5cu8; 64];
    for (i, k) in key.iter().enumerate() {
        ipad[i] ^= k;
        opad[i] ^= k;
    }
    let inner = Sha256::new()
        .chain_update(ipad)
        .chain_update(data)
        .finalize();
    Sha256::new()
        .chain_update(opad)
        .chain_update(inner)
        .finalize()
        .into()
}

criterion_group!(benches, bench);
criterion_main!(benches);

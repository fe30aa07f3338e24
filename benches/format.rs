//! Encoding and decoding a ~100-byte pickled call, and computing its id.
//!
//! Run with `cargo bench --bench format`. Figures are quoted in BENCHMARKS.md.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use serde::Serialize;
use wasmpickle::{Call, Closure, CodeHash, CodeRef};

#[derive(Serialize)]
struct Scale {
    factor: f64,
}

fn call() -> Call {
    let code = CodeRef::by_hash(CodeHash::digest(b"\0asm\x01\0\0\0"));
    Closure::new(code, "scale", &Scale { factor: 2.5 })
        .unwrap()
        .call(&(4.0,))
        .unwrap()
}

fn format(c: &mut Criterion) {
    let call = call();
    let bytes = call.to_bytes();
    assert_eq!(bytes.len(), 108);
    let mut g = c.benchmark_group("format");
    g.bench_function("encode_108B", |b| b.iter(|| black_box(&call).to_bytes()));
    g.bench_function("decode_108B", |b| {
        b.iter(|| Call::from_bytes(black_box(&bytes)).unwrap())
    });
    g.bench_function("encode_decode_108B", |b| {
        b.iter(|| Call::from_bytes(&black_box(&call).to_bytes()).unwrap())
    });
    g.bench_function("call_id", |b| b.iter(|| black_box(&call).id()));
    g.bench_function("typed_args_encode", |b| {
        let closure = call.closure().clone();
        b.iter(|| closure.call(black_box(&(4.0,))).unwrap())
    });
    g.finish();
}

criterion_group!(benches, format);
criterion_main!(benches);

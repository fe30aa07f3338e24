//! Signed calls: a runtime that requires signatures runs what its keys vouch for and refuses
//! everything else before anything is decoded or compiled.

use crate::support::math::Scale;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRng, TestRunner};
use wasmpickle::{Code, ErrorKind, Keyring, Runtime, RuntimeConfig, SigningKey};

fn key(id: &str, byte: u8) -> SigningKey {
    SigningKey::new(id, &[byte; 32]).unwrap()
}

fn strict_runtime() -> Runtime {
    let mut keys = Keyring::new();
    keys.add(key("ci", 1));
    Runtime::new(RuntimeConfig::new().require_signatures(keys)).unwrap()
}

fn math() -> Code {
    Code::from_file(wasmpickle_test_artifacts::MATH).unwrap()
}

#[test]
fn signed_calls_run_and_everything_else_is_refused() {
    let rt = strict_runtime();
    let math = math();
    let call = math
        .closure("scale", &Scale { factor: 2.5 })
        .unwrap()
        .call(&(4.0,))
        .unwrap();

    let signed = call.sign(&key("ci", 1)).to_bytes();
    assert_eq!(
        rt.run_bytes(&signed).unwrap().decode::<f64>().unwrap(),
        10.0
    );

    let refused = [
        (
            "unsigned bytes",
            rt.run_bytes(&call.to_bytes()).unwrap_err(),
        ),
        ("unsigned value", rt.run(&call).unwrap_err()),
        (
            "unknown key",
            rt.run_bytes(&call.sign(&key("other", 1)).to_bytes())
                .unwrap_err(),
        ),
        (
            "wrong secret",
            rt.run_bytes(&call.sign(&key("ci", 2)).to_bytes())
                .unwrap_err(),
        ),
    ];
    for (what, err) in refused {
        assert_eq!(err.kind(), ErrorKind::Signature, "{what}: {err}");
    }
}

#[test]
fn a_runtime_without_keys_runs_signed_calls_too() {
    let rt = Runtime::new(&RuntimeConfig::default()).unwrap();
    let call = math()
        .closure("scale", &Scale { factor: 2.0 })
        .unwrap()
        .call(&(1.5,))
        .unwrap();
    let signed = call.sign(&key("whoever", 9)).to_bytes();
    assert_eq!(rt.run_bytes(&signed).unwrap().decode::<f64>().unwrap(), 3.0);
}

/// 10,000 random single-bit tamperings of a signed pickle that carries its module inline:
/// every one is refused, and none of them gets the module compiled.
#[test]
fn ten_thousand_tamperings_are_refused_before_compiling() {
    let rt = strict_runtime();
    let math = math();
    let signed = math
        .closure("scale", &Scale { factor: 2.5 })
        .unwrap()
        .call(&(4.0,))
        .unwrap()
        .sign(&key("ci", 1))
        .to_bytes();
    let mut runner = TestRunner::new_with_rng(
        Config::default(),
        TestRng::from_seed(proptest::test_runner::RngAlgorithm::ChaCha, &[7; 32]),
    );
    let bits = (0..signed.len() * 8).boxed();
    let mut kinds = std::collections::BTreeMap::new();
    for _ in 0..10_000 {
        let bit = bits.new_tree(&mut runner).unwrap().current();
        let mut tampered = signed.clone();
        tampered[bit / 8] ^= 1 << (bit % 8);
        let err = rt.run_bytes(&tampered).expect_err("a tampered pickle ran");
        assert!(
            matches!(
                err.kind(),
                ErrorKind::Signature | ErrorKind::Decode | ErrorKind::Version
            ),
            "bit {bit}: {err}"
        );
        *kinds.entry(err.kind().as_str()).or_insert(0u32) += 1;
    }
    assert!(!rt.contains(&math.hash()), "nothing was cached");
    assert_eq!(rt.stats().compiles, 0, "nothing reached the compiler");
    // The untampered pickle still runs: the refusals were about the bytes, not the runtime.
    assert_eq!(
        rt.run_bytes(&signed).unwrap().decode::<f64>().unwrap(),
        10.0
    );
    assert!(kinds["signature"] > 9_000, "{kinds:?}");
}

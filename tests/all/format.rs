//! The wire format: golden pickles that every later version must still read byte for byte,
//! and property tests that decoding is total and canonical.

use std::path::PathBuf;
use std::sync::Arc;

use crate::support::math::Scale;
use proptest::prelude::*;
use serde::Serialize;
use wasmpickle::format::{ErrorKind, Header, PickleKind};
use wasmpickle::{Call, CallLimits, Closure, CodeHash, CodeRef};

/// The smallest valid module: magic and version, nothing else.
const EMPTY_MODULE: &[u8] = b"\0asm\x01\0\0\0";

#[derive(Serialize)]
struct Poly {
    coeffs: Vec<f64>,
    label: String,
}

fn by_hash() -> CodeRef {
    CodeRef::by_hash(CodeHash::digest(EMPTY_MODULE))
}

fn inline() -> CodeRef {
    CodeRef::inline(CodeHash::digest(EMPTY_MODULE), Arc::from(EMPTY_MODULE)).unwrap()
}

enum Golden {
    Call(Call),
    Closure(Closure),
}

impl Golden {
    fn to_bytes(&self) -> Vec<u8> {
        match self {
            Golden::Call(c) => c.to_bytes(),
            Golden::Closure(c) => c.to_bytes(),
        }
    }
}

/// The golden set: each entry is rebuilt here from typed values on every run, so a change to
/// how values or envelopes are encoded shows up as a byte difference against the stored file.
fn goldens() -> Vec<(&'static str, Golden)> {
    let scale = Closure::new(by_hash(), "scale", &Scale { factor: 2.5 }).unwrap();
    let long_env = Poly {
        coeffs: (0..40).map(f64::from).collect(),
        label: "x".repeat(300),
    };
    vec![
        ("call-by-hash", Golden::Call(scale.call(&(4.0,)).unwrap())),
        (
            "call-inline",
            Golden::Call(
                Closure::new(inline(), "scale", &Scale { factor: 2.5 })
                    .unwrap()
                    .call(&(4.0,))
                    .unwrap(),
            ),
        ),
        (
            "call-limits",
            Golden::Call(
                scale.call(&(-1.0,)).unwrap().with_limits(
                    CallLimits::new()
                        .with_fuel(5_000_000)
                        .with_deadline_ms(250)
                        .with_max_memory(16 << 20)
                        .with_max_table_elements(1000),
                ),
            ),
        ),
        (
            "call-no-env-no-args",
            Golden::Call(
                Closure::new(by_hash(), "describe", &())
                    .unwrap()
                    .call(&())
                    .unwrap(),
            ),
        ),
        (
            "call-long-fields",
            Golden::Call(
                Closure::new(by_hash(), &"e".repeat(200), &long_env)
                    .unwrap()
                    .call(&("t".repeat(70_000), vec![1u64 << 40, 7, 300]))
                    .unwrap(),
            ),
        ),
        (
            "closure-inline",
            Golden::Closure(Closure::new(inline(), "scale", &Scale { factor: 0.5 }).unwrap()),
        ),
    ]
}

fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

fn blessing() -> bool {
    std::env::var_os("WASMPICKLE_BLESS").is_some_and(|v| v == "1")
}

/// Every golden pickle decodes, re-encodes to the same bytes, equals what this build writes
/// for the same values, and keeps its call id. Regenerate only with `WASMPICKLE_BLESS=1`.
#[test]
fn golden_pickles() {
    let dir = golden_dir();
    for (name, golden) in goldens() {
        let path = dir.join(format!("{name}.wpk"));
        let id_path = dir.join(format!("{name}.id"));
        let bytes = golden.to_bytes();
        let id = match &golden {
            Golden::Call(c) => Some(c.id().to_string()),
            Golden::Closure(_) => None,
        };
        if blessing() {
            std::fs::write(&path, &bytes).unwrap();
            if let Some(id) = &id {
                std::fs::write(&id_path, format!("{id}\n")).unwrap();
            }
            continue;
        }
        let stored = std::fs::read(&path)
            .unwrap_or_else(|e| panic!("{}: {e} (bless with WASMPICKLE_BLESS=1)", path.display()));
        assert_eq!(
            bytes, stored,
            "{name}: this build encodes the golden values differently"
        );
        match Header::read(&stored).unwrap().kind {
            PickleKind::Call => {
                let call = Call::from_bytes(&stored).unwrap();
                assert_eq!(call.to_bytes(), stored, "{name}: re-encoding differs");
                let want = std::fs::read_to_string(&id_path).unwrap();
                assert_eq!(
                    call.id().to_string(),
                    want.trim(),
                    "{name}: call id changed"
                );
            }
            PickleKind::Closure => {
                let closure = Closure::from_bytes(&stored).unwrap();
                assert_eq!(closure.to_bytes(), stored, "{name}: re-encoding differs");
            }
            other => panic!("{name}: unexpected kind {other:?}"),
        }
    }
}

/// The canonical code hash is pinned too: it is what memo keys and stores will be keyed on.
#[test]
fn golden_canonical_hash() {
    let module = wat::parse_str(
        r#"(module $named
             (memory (export "memory") 1)
             (func $f (export "f") (result i32) i32.const 42)
             (@custom "producers" "rustc 1.95.0")
             (@custom "mine" "kept"))"#,
    )
    .unwrap();
    let hash = wasmpickle::canonical_hash(&module).unwrap().to_string();
    let path = golden_dir().join("module-canonical.id");
    if blessing() {
        std::fs::write(&path, format!("{hash}\n")).unwrap();
        return;
    }
    assert_eq!(hash, std::fs::read_to_string(path).unwrap().trim());
}

fn arb_call() -> impl Strategy<Value = Call> {
    (
        any::<bool>(),
        "[a-z_][a-z0-9_]{0,40}",
        proptest::collection::vec(any::<u8>(), 0..300),
        proptest::collection::vec(any::<u8>(), 0..300),
        proptest::option::of(any::<u64>()),
        proptest::option::of(any::<u64>()),
        proptest::option::of(0u64..1 << 40),
        proptest::option::of(0u64..300),
    )
        .prop_map(
            |(inline_code, export, env, args, fuel, deadline, mem, tables)| {
                let code = if inline_code { inline() } else { by_hash() };
                let mut limits = CallLimits::new();
                if let Some(f) = fuel {
                    limits = limits.with_fuel(f);
                }
                if let Some(d) = deadline {
                    limits = limits.with_deadline_ms(d);
                }
                if let Some(m) = mem {
                    limits = limits.with_max_memory(m);
                }
                if let Some(t) = tables {
                    limits = limits.with_max_table_elements(t);
                }
                Closure::from_parts(code, &export, env)
                    .unwrap()
                    .call_raw(args)
                    .unwrap()
                    .with_limits(limits)
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Any call round-trips, re-encodes to the same bytes, and has the same id inline or not.
    #[test]
    fn calls_round_trip(call in arb_call()) {
        let bytes = call.to_bytes();
        let back = Call::from_bytes(&bytes).unwrap();
        prop_assert_eq!(&back, &call);
        prop_assert_eq!(back.to_bytes(), bytes);
        prop_assert_eq!(call.id(), call.by_reference().id());
    }

    /// Every strict prefix of a pickle is refused as truncated.
    #[test]
    fn truncation_is_always_detected(call in arb_call()) {
        let bytes = call.to_bytes();
        for cut in 0..bytes.len() {
            let err = Call::from_bytes(&bytes[..cut]).unwrap_err();
            prop_assert_eq!(err.kind(), ErrorKind::Truncated, "cut at {} of {}", cut, bytes.len());
        }
    }

    /// Flipping any bit either gives a typed error or another canonical pickle; decoding never
    /// panics, and whatever decodes re-encodes to exactly the bytes it came from.
    #[test]
    fn bit_flips_never_panic(call in arb_call(), bit in any::<prop::sample::Index>()) {
        let mut bytes = call.to_bytes();
        let i = bit.index(bytes.len() * 8);
        bytes[i / 8] ^= 1 << (i % 8);
        if let Ok(other) = Call::from_bytes(&bytes) {
            prop_assert_eq!(other.to_bytes(), bytes);
        }
    }

    /// Arbitrary bytes behind a valid header never panic the decoder.
    #[test]
    fn garbage_never_panics(body in proptest::collection::vec(any::<u8>(), 0..512)) {
        let mut bytes = vec![0xc1, b'W', b'P', b'K', 0, 1, 2];
        bytes.extend(body);
        let _ = Call::from_bytes(&bytes);
        let _ = Closure::from_bytes(&bytes);
    }
}

/// Single-bit flips at every position of one small pickle, exhaustively.
#[test]
fn every_single_bit_flip_of_a_small_pickle() {
    let bytes = Closure::new(by_hash(), "scale", &Scale { factor: 2.5 })
        .unwrap()
        .call(&(4.0,))
        .unwrap()
        .to_bytes();
    let mut refused = 0;
    for i in 0..bytes.len() * 8 {
        let mut b = bytes.clone();
        b[i / 8] ^= 1 << (i % 8);
        match Call::from_bytes(&b) {
            Ok(other) => assert_eq!(other.to_bytes(), b, "flip {i} decoded non-canonically"),
            Err(_) => refused += 1,
        }
    }
    // Flips inside the hash, env and args bytes give other valid calls; flips in the
    // structure are refused.
    assert!(
        refused > bytes.len(),
        "{refused} of {} flips refused",
        bytes.len() * 8
    );
}

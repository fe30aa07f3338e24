//! The runtime against the compiled example guests: every math export round-trips through
//! bytes, every hostile guest produces its error kind, and the same runtime keeps serving.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crate::support::math::{Div, Fold, Msg, Poly, Scale, WordCfg};
use wasmpickle::{
    Call, CallLimits, Closure, Code, CodeHash, CodeRef, Error, ErrorKind, Limits, Runtime,
    RuntimeConfig,
};
use wasmpickle_test_artifacts::{FAULTY, FAULTY_IMPORT, MATH, WAT_ADD};

fn code(path: &str) -> Code {
    static CACHE: OnceLock<std::sync::Mutex<BTreeMap<String, Code>>> = OnceLock::new();
    let mut cache = CACHE.get_or_init(Default::default).lock().unwrap();
    cache
        .entry(path.to_owned())
        .or_insert_with(|| Code::from_file(path).unwrap())
        .clone()
}

/// One runtime for the tests that use default limits, so each guest compiles once.
fn shared_runtime() -> &'static Runtime {
    static RT: OnceLock<Runtime> = OnceLock::new();
    RT.get_or_init(|| Runtime::new(&RuntimeConfig::default()).unwrap())
}

/// Packs `call` to bytes and runs what decodes from them, like a receiver would.
fn run_via_bytes(rt: &Runtime, call: &Call) -> Result<wasmpickle::Outcome, Error> {
    rt.run(&Call::from_bytes(&call.to_bytes()).unwrap())
}

fn fold_native(seed: u64, multiplier: u64, data: &[u8]) -> u64 {
    // Mirrors guest-examples/math: acc = (acc ^ byte) * multiplier, wrapping.
    data.iter().fold(seed, |acc, &b| {
        (acc ^ u64::from(b)).wrapping_mul(multiplier)
    })
}

#[test]
fn every_math_export_round_trips_through_bytes() {
    let rt = shared_runtime();
    let math = code(MATH);

    let call = math
        .closure("scale", &Scale { factor: 2.5 })
        .unwrap()
        .call(&(4.0,))
        .unwrap();
    assert_eq!(
        run_via_bytes(rt, &call).unwrap().decode::<f64>().unwrap(),
        10.0
    );

    let coeffs = vec![2.0, -3.0, 0.5, 7.0];
    let x = 1.75;
    let native = coeffs.iter().fold(0.0, |acc, &c| acc * x + c);
    let call = math
        .closure("polynomial", &Poly { coeffs })
        .unwrap()
        .call(&(x,))
        .unwrap();
    assert_eq!(
        run_via_bytes(rt, &call).unwrap().decode::<f64>().unwrap(),
        native
    );

    let text = "The cat and the hat; THE end. a an";
    let call = math
        .closure(
            "word_counts",
            &WordCfg {
                lowercase: true,
                min_len: 2,
            },
        )
        .unwrap()
        .call(&(text,))
        .unwrap();
    let counts: BTreeMap<String, u32> = run_via_bytes(rt, &call).unwrap().decode().unwrap();
    assert_eq!(counts.get("the"), Some(&3));
    assert_eq!(counts.get("a"), None, "shorter than min_len");
    assert_eq!(counts.get("an"), Some(&1));

    let data: Vec<u8> = (0..=255).cycle().take(5000).collect();
    let fold = Fold {
        seed: 0xcbf2_9ce4_8422_2325,
        multiplier: 0x100_0000_01b3,
    };
    let call = math
        .closure("fold_bytes", &fold)
        .unwrap()
        .call(&(serde_bytes::Bytes::new(&data),))
        .unwrap();
    assert_eq!(
        run_via_bytes(rt, &call).unwrap().decode::<u64>().unwrap(),
        fold_native(fold.seed, fold.multiplier, &data)
    );

    let call = math
        .closure("checked_div", &Div { divisor: 4 })
        .unwrap()
        .call(&(-17i64,))
        .unwrap();
    assert_eq!(
        run_via_bytes(rt, &call).unwrap().decode::<i64>().unwrap(),
        -17 / 4
    );

    let call = math.function("describe").unwrap().call(&()).unwrap();
    let text: String = run_via_bytes(rt, &call).unwrap().decode().unwrap();
    assert!(!text.is_empty());
}

#[test]
fn the_sdk_free_wat_guest_follows_the_contract() {
    let rt = shared_runtime();
    let add = code(WAT_ADD);
    let call = add.closure("add", &3u8).unwrap().call(&(4u8,)).unwrap();
    assert_eq!(
        run_via_bytes(rt, &call).unwrap().decode::<u32>().unwrap(),
        7
    );
    let call = add.closure("add", &100u8).unwrap().call(&(100u8,)).unwrap();
    assert_eq!(
        run_via_bytes(rt, &call).unwrap().decode::<u32>().unwrap(),
        200
    );
    // Beyond what the hand-written decoder understands: reported, not misread.
    let call = add.closure("add", &1000u32).unwrap().call(&(1u8,)).unwrap();
    assert_eq!(
        run_via_bytes(rt, &call).unwrap_err().kind(),
        ErrorKind::BadInput
    );
    assert_eq!(
        add.description("add").map(|d| d.signature()).as_deref(),
        Some("add(env: u8, x: u8) -> u16")
    );
}

#[test]
fn guest_error_carries_the_guests_message() {
    let rt = shared_runtime();
    let call = code(MATH)
        .closure("checked_div", &Div { divisor: 0 })
        .unwrap()
        .call(&(1i64,))
        .unwrap();
    let err = run_via_bytes(rt, &call).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::GuestError, "{err}");
    let message = &err.guest_failure().unwrap().message;
    assert!(message.contains("zero"), "{message}");
    assert!(err.fuel_used().unwrap() > 0);
}

#[test]
fn inputs_of_the_wrong_shape_are_bad_input() {
    let rt = shared_runtime();
    let math = code(MATH);
    // An environment of another type.
    let call = math
        .closure("scale", &"not a Scale")
        .unwrap()
        .call(&(1.0,))
        .unwrap();
    let err = rt.run(&call).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::BadInput, "{err}");
    assert!(err.to_string().contains("environment"), "{err}");
    // Too many arguments.
    let call = math
        .closure("scale", &Scale { factor: 1.0 })
        .unwrap()
        .call(&(1.0, 2.0))
        .unwrap();
    let err = rt.run(&call).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::BadInput, "{err}");
    assert!(err.to_string().contains("arguments"), "{err}");
    // An environment given to an export that takes none.
    let call = math
        .closure("describe", &Scale { factor: 1.0 })
        .unwrap()
        .call(&())
        .unwrap();
    assert_eq!(rt.run(&call).unwrap_err().kind(), ErrorKind::BadInput);
}

#[test]
fn a_panic_reaches_the_host_with_message_and_location() {
    let rt = shared_runtime();
    let call = code(FAULTY)
        .closure(
            "panic_now",
            &Msg {
                text: "the sky is falling".into(),
            },
        )
        .unwrap()
        .call(&())
        .unwrap();
    let err = run_via_bytes(rt, &call).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::GuestPanic, "{err}");
    let failure = err.guest_failure().unwrap();
    assert_eq!(failure.message, "the sky is falling");
    assert!(
        failure
            .file
            .as_deref()
            .unwrap()
            .ends_with("faulty/src/lib.rs"),
        "{failure:?}"
    );
    assert!(failure.line.unwrap() > 0);
    let bt = err.wasm_backtrace().unwrap();
    assert!(bt.contains("panic_now"), "{bt}");
}

#[test]
fn unbounded_recursion_is_a_trap_with_a_backtrace() {
    let rt = shared_runtime();
    let call = code(FAULTY)
        .function("recurse")
        .unwrap()
        .call(&(1_000_000_000u64,))
        .unwrap();
    let err = rt.run(&call).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Trap, "{err}");
    assert!(err.to_string().contains("call stack exhausted"), "{err}");
    let bt = err.wasm_backtrace().unwrap();
    assert!(bt.contains("faulty::descend"), "{bt}");
    let trap = std::error::Error::source(&err)
        .and_then(|s| s.downcast_ref::<wasmtime::Trap>())
        .copied();
    assert_eq!(trap, Some(wasmtime::Trap::StackOverflow));
}

#[test]
fn an_infinite_loop_runs_out_of_fuel_at_the_same_point_every_time() {
    let rt = Runtime::new(RuntimeConfig::new().limits(*Limits::new().fuel(5_000_000))).unwrap();
    let call = code(FAULTY).function("spin").unwrap().call(&()).unwrap();
    for _ in 0..3 {
        let err = rt.run(&call).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::OutOfFuel, "{err}");
        assert_eq!(err.fuel_used(), Some(5_000_000));
    }
    // A call may ask for less fuel than the runtime's cap...
    let small = call.clone().with_limits(CallLimits::new().with_fuel(1000));
    assert_eq!(rt.run(&small).unwrap_err().fuel_used(), Some(1000));
    // ... but not for more.
    let big = call.with_limits(CallLimits::new().with_fuel(u64::MAX));
    assert_eq!(rt.run(&big).unwrap_err().fuel_used(), Some(5_000_000));
}

#[test]
fn a_loop_with_fuel_to_spare_is_stopped_by_the_deadline() {
    let limits = *Limits::new()
        .fuel(u64::MAX)
        .deadline(Duration::from_millis(100));
    let rt = Runtime::new(RuntimeConfig::new().limits(limits)).unwrap();
    let call = code(FAULTY).function("spin").unwrap().call(&()).unwrap();
    let started = std::time::Instant::now();
    let err = rt.run(&call).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Deadline, "{err}");
    // Not a timing assertion on the deadline itself: only that it did not wait for fuel.
    assert!(started.elapsed() < Duration::from_secs(60));
    // A call can ask for an earlier deadline.
    let err = rt
        .run(&call.with_limits(CallLimits::new().with_deadline_ms(10)))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Deadline);
}

#[test]
fn a_memory_bomb_hits_the_memory_limit() {
    let rt =
        Runtime::new(RuntimeConfig::new().limits(*Limits::new().max_memory(32 << 20))).unwrap();
    let call = code(FAULTY)
        .function("memory_bomb")
        .unwrap()
        .call(&())
        .unwrap();
    let err = rt.run(&call).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::MemoryLimit, "{err}");
    assert!(err.to_string().contains("limit 33554432"), "{err}");
    // The call's own request lowers it further.
    let err = rt
        .run(&call.with_limits(CallLimits::new().with_max_memory(4 << 20)))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::MemoryLimit);
    assert!(err.to_string().contains("limit 4194304"), "{err}");
}

#[test]
fn a_module_whose_initial_memory_exceeds_the_limit_is_refused() {
    // math starts with 8 pages (512 KiB).
    let rt =
        Runtime::new(RuntimeConfig::new().limits(*Limits::new().max_memory(256 << 10))).unwrap();
    let call = code(MATH)
        .closure("scale", &Scale { factor: 1.0 })
        .unwrap()
        .call(&(1.0,))
        .unwrap();
    let err = rt.run(&call).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::MemoryLimit, "{err}");
}

#[test]
fn broken_replies_are_abi_violations() {
    let rt = shared_runtime();
    let faulty = code(FAULTY);
    for export in ["bad_pointer", "bad_reply"] {
        let err = rt
            .run(&faulty.function(export).unwrap().call(&()).unwrap())
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::AbiViolation, "{export}: {err}");
        assert_eq!(err.export(), Some(export));
    }
}

#[test]
fn a_module_importing_what_is_not_granted_is_refused_with_its_imports() {
    let rt = shared_runtime();
    let module = code(FAULTY_IMPORT);
    let call = module
        .closure("read_file", &())
        .unwrap()
        .call(&("/etc/passwd",))
        .unwrap();
    let err = rt.run(&call).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ForbiddenImport, "{err}");
    assert_eq!(err.imports(), ["env.read_host_file"]);
    assert!(err.to_string().contains("env.read_host_file"), "{err}");
    assert!(
        !rt.contains(&module.hash()),
        "a refused module is not cached"
    );
    assert_eq!(
        rt.load(&module).unwrap_err().kind(),
        ErrorKind::ForbiddenImport
    );
}

#[test]
fn missing_export_and_wrong_signature() {
    let rt = shared_runtime();
    let math = code(MATH);
    // Code checks early...
    assert_eq!(
        math.function("nope").unwrap_err().kind(),
        ErrorKind::MissingExport
    );
    assert_eq!(
        math.function("wasmpickle_alloc").unwrap_err().kind(),
        ErrorKind::WrongSignature
    );
    // ... and the runtime checks what arrives, whoever built it.
    let forged = |export: &str| {
        Closure::from_parts(math.code_ref(), export, vec![0xc0])
            .unwrap()
            .call(&())
            .unwrap()
    };
    let err = rt.run(&forged("nope")).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::MissingExport, "{err}");
    assert!(
        err.to_string().contains("scale"),
        "lists what exists: {err}"
    );
    for export in ["wasmpickle_alloc", "memory", "wasmpickle_panic"] {
        let err = rt.run(&forged(export)).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::WrongSignature, "{export}: {err}");
    }
}

#[test]
fn code_must_match_its_hash_and_be_found() {
    let rt = Runtime::new(&RuntimeConfig::default()).unwrap();
    let math = code(MATH);
    let scale = math.closure("scale", &Scale { factor: 2.0 }).unwrap();

    // By reference, to a runtime that has never seen the module.
    let err = rt
        .run(&scale.by_reference().call(&(1.0,)).unwrap())
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::CodeNotFound, "{err}");
    assert_eq!(err.code_hash(), Some(math.hash()));

    // Inline bytes that are not the module the hash names: another module under math's hash.
    let other = code(WAT_ADD);
    let lying = CodeRef::inline(math.hash(), other.wasm().clone()).unwrap();
    let call = Closure::new(lying, "scale", &Scale { factor: 2.0 })
        .unwrap()
        .call(&(1.0,))
        .unwrap();
    let err = rt.run(&call).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::HashMismatch, "{err}");
    assert!(
        !rt.contains(&math.hash()),
        "nothing was compiled under the false name"
    );

    // One flipped byte in the code section.
    let mut tampered = math.wasm().to_vec();
    let mid = tampered.len() / 2;
    tampered[mid] ^= 0x01;
    let call = Closure::new(
        CodeRef::inline(math.hash(), Arc::from(tampered)).unwrap(),
        "scale",
        &Scale { factor: 2.0 },
    )
    .unwrap()
    .call(&(1.0,))
    .unwrap();
    let err = rt.run(&call).unwrap_err();
    assert!(
        matches!(
            err.kind(),
            ErrorKind::HashMismatch | ErrorKind::InvalidModule
        ),
        "{err}"
    );
    assert!(!rt.contains(&math.hash()));

    // Loaded once, by-reference calls run.
    rt.load(&math).unwrap();
    let out = rt
        .run(&scale.by_reference().call(&(1.5,)).unwrap())
        .unwrap();
    assert_eq!(out.decode::<f64>().unwrap(), 3.0);
}

#[test]
fn undecodable_pickles_are_decode_and_version_errors() {
    let rt = shared_runtime();
    let bytes = code(MATH)
        .closure("scale", &Scale { factor: 1.0 })
        .unwrap()
        .call(&(1.0,))
        .unwrap()
        .to_bytes();
    assert_eq!(
        rt.run_bytes(&bytes[..bytes.len() - 1]).unwrap_err().kind(),
        ErrorKind::Decode
    );
    let mut newer = bytes.clone();
    newer[5] += 1;
    assert_eq!(rt.run_bytes(&newer).unwrap_err().kind(), ErrorKind::Version);
    // A result decoded as the wrong type.
    let out = rt.run_bytes(&bytes).unwrap();
    assert_eq!(
        out.decode::<String>().unwrap_err().kind(),
        ErrorKind::Decode
    );
}

#[test]
fn not_a_module_is_invalid() {
    let rt = shared_runtime();
    let garbage: Arc<[u8]> = Arc::from(&b"\0asm\x01\0\0\0\x01\xff\xff"[..]);
    let call = Closure::new(
        CodeRef::inline(CodeHash::digest(&garbage), garbage.clone()).unwrap(),
        "f",
        &(),
    )
    .unwrap()
    .call(&())
    .unwrap();
    assert_eq!(rt.run(&call).unwrap_err().kind(), ErrorKind::InvalidModule);
    assert_eq!(
        Code::new(garbage).unwrap_err().kind(),
        ErrorKind::InvalidModule
    );
}

/// After every kind of hostile call, the same runtime still serves ordinary calls.
#[test]
fn the_runtime_survives_every_hostile_call() {
    let limits = *Limits::new()
        .fuel(50_000_000)
        .deadline(Duration::from_secs(5))
        .max_memory(16 << 20);
    let rt = Runtime::new(RuntimeConfig::new().limits(limits)).unwrap();
    let faulty = code(FAULTY);
    let math = code(MATH);
    let normal = math
        .closure("scale", &Scale { factor: 3.0 })
        .unwrap()
        .call(&(2.0,))
        .unwrap();
    let ok = faulty.function("ok").unwrap().call(&()).unwrap();
    let hostile: Vec<(Call, ErrorKind)> = vec![
        (
            faulty.function("spin").unwrap().call(&()).unwrap(),
            ErrorKind::OutOfFuel,
        ),
        (
            faulty.function("memory_bomb").unwrap().call(&()).unwrap(),
            ErrorKind::MemoryLimit,
        ),
        (
            faulty
                .function("recurse")
                .unwrap()
                .call(&(u64::MAX,))
                .unwrap(),
            ErrorKind::Trap,
        ),
        (
            faulty
                .closure("panic_now", &Msg { text: "x".into() })
                .unwrap()
                .call(&())
                .unwrap(),
            ErrorKind::GuestPanic,
        ),
        (
            faulty.function("bad_pointer").unwrap().call(&()).unwrap(),
            ErrorKind::AbiViolation,
        ),
        (
            faulty.function("bad_reply").unwrap().call(&()).unwrap(),
            ErrorKind::AbiViolation,
        ),
        (
            code(FAULTY_IMPORT)
                .closure("read_file", &())
                .unwrap()
                .call(&("x",))
                .unwrap(),
            ErrorKind::ForbiddenImport,
        ),
        (
            math.closure("checked_div", &Div { divisor: 0 })
                .unwrap()
                .call(&(1i64,))
                .unwrap(),
            ErrorKind::GuestError,
        ),
    ];
    for (call, kind) in &hostile {
        let err = rt.run(call).unwrap_err();
        assert_eq!(err.kind(), *kind, "{}: {err}", call.export());
        assert_eq!(
            rt.run(&normal).unwrap().decode::<f64>().unwrap(),
            6.0,
            "after {}",
            call.export()
        );
        assert_eq!(
            rt.run(&ok).unwrap().decode::<u32>().unwrap(),
            7,
            "after {}",
            call.export()
        );
    }
}

/// The same call gives the same bytes, id, result and fuel every time (across processes: see
/// `cli::ten_processes_give_one_answer`).
#[test]
fn determinism_within_a_process() {
    let math = code(MATH);
    let make = || {
        math.closure(
            "word_counts",
            &WordCfg {
                lowercase: true,
                min_len: 1,
            },
        )
        .unwrap()
        .call(&("b a c a b a",))
        .unwrap()
    };
    let first = make();
    let rt = shared_runtime();
    let fresh = Runtime::new(&RuntimeConfig::default()).unwrap();
    let out = rt.run(&first).unwrap();
    for i in 0..10 {
        let call = make();
        assert_eq!(call.to_bytes(), first.to_bytes());
        assert_eq!(call.id(), first.id());
        let runtime = if i % 2 == 0 { rt } else { &fresh };
        let again = runtime.run(&call).unwrap();
        assert_eq!(again.value(), out.value());
        assert_eq!(again.fuel_used(), out.fuel_used());
    }
}

/// NaNs come out with one bit pattern, whatever the hardware would produce.
#[test]
fn nans_are_canonical() {
    let wat = r#"(module
      (memory (export "memory") 1)
      (func (export "wasmpickle_alloc") (param i32) (result i32) i32.const 64)
      (func (export "nan") (param i32 i32 i32 i32) (result i64)
        ;; reply at 0: status 0, then msgpack u64 (0xcf) of the bits of 0.0/0.0, which x86
        ;; computes as 0xfff8000000000000
        (i32.store8 (i32.const 0) (i32.const 0))
        (i32.store8 (i32.const 1) (i32.const 0xcf))
        (i64.store (i32.const 2)
          (i64.reinterpret_f64 (f64.div (f64.const 0) (f64.const 0))))
        ;; msgpack integers are big-endian: byte-swap the 8 bytes written little-endian
        (call $bswap (i32.const 2))
        i64.const 10)
      (func $bswap (param $p i32)
        (local $i i32) (local $a i32) (local $b i32)
        (loop $l
          (local.set $a (i32.load8_u (i32.add (local.get $p) (local.get $i))))
          (local.set $b (i32.load8_u (i32.sub (i32.add (local.get $p) (i32.const 7)) (local.get $i))))
          (i32.store8 (i32.add (local.get $p) (local.get $i)) (local.get $b))
          (i32.store8 (i32.sub (i32.add (local.get $p) (i32.const 7)) (local.get $i)) (local.get $a))
          (local.set $i (i32.add (local.get $i) (i32.const 1)))
          (br_if $l (i32.lt_u (local.get $i) (i32.const 4))))))"#;
    let nan = Code::new(wat::parse_str(wat).unwrap()).unwrap();
    let bits: u64 = shared_runtime()
        .run(&nan.function("nan").unwrap().call(&()).unwrap())
        .unwrap()
        .decode()
        .unwrap();
    assert_eq!(bits, 0x7ff8_0000_0000_0000, "{bits:#x}");
}

/// Many threads share one runtime with fewer instance slots than threads: every call waits
/// for a slot, none fails, each gets its own answer.
#[test]
fn concurrent_calls_share_one_runtime() {
    let rt = Runtime::new(RuntimeConfig::new().max_concurrent_calls(2)).unwrap();
    let math = code(MATH);
    rt.load(&math).unwrap();
    let handles: Vec<_> = (0..8)
        .map(|t| {
            let rt = rt.clone();
            let scale = math
                .closure(
                    "scale",
                    &Scale {
                        factor: f64::from(t),
                    },
                )
                .unwrap();
            std::thread::spawn(move || {
                for i in 0..50 {
                    let y: f64 = rt
                        .run(&scale.by_reference().call(&(f64::from(i),)).unwrap())
                        .unwrap()
                        .decode()
                        .unwrap();
                    assert_eq!(y, f64::from(t) * f64::from(i));
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
}

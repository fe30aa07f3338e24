//! Sealed modules run on a plain wasmtime embedding — an `Engine`, a `Module`, an `Instance`,
//! one call of `wasmpickle_sealed` and a read of linear memory, no wasmpickle runtime — and
//! give the bytes the runtime gives for the pickled call; their hashes identify the closure.

use std::collections::BTreeMap;

use crate::support::math::{Div, Fold, Msg, Poly, Scale, WordCfg};
use serde::Deserialize;
use wasmpickle::format::abi::{self, Status};
use wasmpickle::format::codec;
use wasmpickle::{
    Call, CallLimits, Closure, Code, ErrorKind, Runtime, RuntimeConfig, SEALED_ENTRY,
    SEALED_SECTION, canonical_hash, seal_call, seal_closure,
};
use wasmpickle_test_artifacts::{
    FAULTY, MATH, MATH_ELSEWHERE, VERSIONED_A, VERSIONED_B, VERSIONED_C, WAT_ADD,
};
use wasmtime::{Engine, Instance, Module, Store, TypedFunc};

fn math() -> Code {
    Code::from_file(MATH).unwrap()
}

/// A call of every export of the math guest, with the environments and arguments of
/// `guests.rs`.
fn math_calls(math: &Code) -> Vec<Call> {
    let data: Vec<u8> = (0..=255).cycle().take(5000).collect();
    vec![
        math.closure("scale", &Scale { factor: 2.5 })
            .unwrap()
            .call(&(4.0,))
            .unwrap(),
        math.closure(
            "polynomial",
            &Poly {
                coeffs: vec![2.0, -3.0, 0.5, 7.0],
            },
        )
        .unwrap()
        .call(&(1.75,))
        .unwrap(),
        math.closure(
            "word_counts",
            &WordCfg {
                lowercase: true,
                min_len: 2,
            },
        )
        .unwrap()
        .call(&("The cat and the hat; THE end. a an",))
        .unwrap(),
        math.closure(
            "fold_bytes",
            &Fold {
                seed: 0xcbf2_9ce4_8422_2325,
                multiplier: 0x100_0000_01b3,
            },
        )
        .unwrap()
        .call(&(serde_bytes::Bytes::new(&data),))
        .unwrap(),
        math.closure("checked_div", &Div { divisor: 4 })
            .unwrap()
            .call(&(-17i64,))
            .unwrap(),
        math.function("describe").unwrap().call(&()).unwrap(),
    ]
}

/// An embedder that knows nothing of wasmpickle: wasmtime's default configuration.
fn engine() -> &'static Engine {
    static ENGINE: std::sync::OnceLock<Engine> = std::sync::OnceLock::new();
    ENGINE.get_or_init(Engine::default)
}

/// A fresh instance of a sealed module, the way any embedder makes one.
fn instantiate(wasm: &[u8]) -> (Store<()>, Instance) {
    let module = Module::new(engine(), wasm).expect("the sealed module compiles");
    assert_eq!(
        module.imports().len(),
        0,
        "a sealed math call imports nothing"
    );
    let mut store = Store::new(engine(), ());
    let instance = Instance::new(&mut store, &module, &[]).expect("it instantiates");
    (store, instance)
}

/// The reply at the pointer and length packed into `packed` (`docs/abi.md` §3, step 4).
fn read_reply(store: &mut Store<()>, instance: &Instance, packed: i64) -> Vec<u8> {
    let memory = instance.get_memory(&mut *store, "memory").expect("memory");
    let (ptr, len) = (
        (packed as u64 >> 32) as usize,
        packed as u64 as u32 as usize,
    );
    memory.data(&store)[ptr..ptr + len].to_vec()
}

/// Runs a sealed call: instantiate, call `wasmpickle_sealed()`, read the reply.
fn run_sealed_call(wasm: &[u8]) -> Vec<u8> {
    let (mut store, instance) = instantiate(wasm);
    let entry: TypedFunc<(), i64> = instance
        .get_typed_func(&mut store, SEALED_ENTRY)
        .expect("the entry is () -> i64");
    let packed = entry.call(&mut store, ()).expect("the sealed call returns");
    read_reply(&mut store, &instance, packed)
}

/// Runs a sealed closure on `args` (MessagePack): the embedder allocates and writes them, as
/// a host would, then calls `wasmpickle_sealed(args_ptr, args_len)`.
fn run_sealed_closure(wasm: &[u8], args: &[u8]) -> Vec<u8> {
    let (mut store, instance) = instantiate(wasm);
    let alloc: TypedFunc<i32, i32> = instance
        .get_typed_func(&mut store, "wasmpickle_alloc")
        .unwrap();
    let entry: TypedFunc<(i32, i32), i64> = instance
        .get_typed_func(&mut store, SEALED_ENTRY)
        .expect("the entry is (i32, i32) -> i64");
    let ptr = alloc.call(&mut store, args.len() as i32).unwrap();
    let memory = instance.get_memory(&mut store, "memory").unwrap();
    memory.write(&mut store, ptr as usize, args).unwrap();
    let packed = entry
        .call(&mut store, (ptr, args.len() as i32))
        .expect("the sealed closure returns");
    read_reply(&mut store, &instance, packed)
}

fn runtime() -> &'static Runtime {
    static RT: std::sync::OnceLock<Runtime> = std::sync::OnceLock::new();
    RT.get_or_init(|| Runtime::new(&RuntimeConfig::default()).unwrap())
}

#[test]
fn every_math_call_sealed_runs_on_plain_wasmtime_with_the_runtimes_result() {
    let math = math();
    for call in math_calls(&math) {
        let export = call.export().to_owned();
        let outcome = runtime().run(&call).unwrap();
        let sealed = seal_call(&math, &call).unwrap();

        let reply = run_sealed_call(&sealed);
        assert_eq!(reply[0], Status::Ok as u8, "{export}: status");
        assert_eq!(&reply[1..], outcome.value(), "{export}: result bytes");

        // The sealed module is an ordinary guest too: it keeps the export, so the runtime
        // runs the same call on it, for the same result and the same fuel.
        let module = Code::new(sealed).unwrap();
        let again = Closure::from_parts(module.code_ref(), &export, call.env().to_vec())
            .unwrap()
            .call_raw(call.args().to_vec())
            .unwrap();
        let on_sealed = runtime().run(&again).unwrap();
        assert_eq!(
            on_sealed.value(),
            outcome.value(),
            "{export}: via the runtime"
        );
        assert_eq!(on_sealed.fuel_used(), outcome.fuel_used(), "{export}: fuel");
    }
}

#[test]
fn a_guest_error_is_a_status_1_reply() {
    let math = math();
    let call = math
        .closure("checked_div", &Div { divisor: 0 })
        .unwrap()
        .call(&(1i64,))
        .unwrap();
    let expected = runtime().run(&call).unwrap_err();
    assert_eq!(expected.kind(), ErrorKind::GuestError);
    let reply = run_sealed_call(&seal_call(&math, &call).unwrap());
    match abi::decode_reply(&reply).unwrap() {
        abi::Reply::Failed(Status::Error, failure) => {
            assert_eq!(&failure, expected.guest_failure().unwrap());
        }
        other => panic!("expected a guest error, got {other:?}"),
    }
}

#[test]
fn a_sealed_closure_takes_its_arguments_from_the_embedder() {
    let math = math();
    let scale = math.closure("scale", &Scale { factor: 2.5 }).unwrap();
    let sealed = seal_closure(&math, &scale).unwrap();
    for x in [4.0f64, -1.5, 0.0, 1e300] {
        let args = codec::to_msgpack(&(x,)).unwrap();
        let reply = run_sealed_closure(&sealed, &args);
        assert_eq!(reply[0], Status::Ok as u8);
        let y: f64 = codec::from_msgpack(&reply[1..]).unwrap();
        assert_eq!(y, 2.5 * x);
        // The same bytes the runtime returns for the pickled call.
        let outcome = runtime().run(&scale.call(&(x,)).unwrap()).unwrap();
        assert_eq!(&reply[1..], outcome.value());
    }

    // The SDK-free guest too.
    let add = Code::from_file(WAT_ADD).unwrap();
    let sealed = seal_closure(&add, &add.closure("add", &40u8).unwrap()).unwrap();
    let reply = run_sealed_closure(&sealed, &codec::to_msgpack(&(2u8,)).unwrap());
    assert_eq!(codec::from_msgpack::<u32>(&reply[1..]).unwrap(), 42);

    // A sealed call and a sealed closure are different modules with different entries.
    let call = seal_call(&math, &scale.call(&(4.0,)).unwrap()).unwrap();
    assert_ne!(canonical_hash(&call).unwrap(), {
        canonical_hash(&seal_closure(&math, &scale).unwrap()).unwrap()
    });
}

#[test]
fn the_entry_runs_once_per_instance() {
    let math = math();
    let call = math
        .closure("scale", &Scale { factor: 2.0 })
        .unwrap()
        .call(&(1.0,))
        .unwrap();
    let (mut store, instance) = instantiate(&seal_call(&math, &call).unwrap());
    let entry: TypedFunc<(), i64> = instance.get_typed_func(&mut store, SEALED_ENTRY).unwrap();
    entry.call(&mut store, ()).unwrap();
    // The segment was dropped after the copy: a second call traps instead of running the
    // export on an instance that has already served one.
    let trap = entry.call(&mut store, ()).unwrap_err();
    assert!(
        format!("{trap:?}").contains("out of bounds"),
        "unexpected failure: {trap:?}"
    );
}

#[test]
fn a_panicking_sealed_call_leaves_its_reply_in_the_panic_slot() {
    let faulty = Code::from_file(FAULTY).unwrap();
    let call = faulty
        .closure(
            "panic_now",
            &Msg {
                text: "sealed and panicking".into(),
            },
        )
        .unwrap()
        .call(&())
        .unwrap();
    let sealed = seal_call(&faulty, &call).unwrap();
    let (mut store, instance) = instantiate(&sealed);
    let entry: TypedFunc<(), i64> = instance.get_typed_func(&mut store, SEALED_ENTRY).unwrap();
    let trap = entry.call(&mut store, ()).unwrap_err();
    assert_eq!(
        trap.downcast_ref::<wasmtime::Trap>(),
        Some(&wasmtime::Trap::UnreachableCodeReached),
        "{trap:?}"
    );

    // docs/abi.md §6: the global holds the slot's address; the slot, the reply's.
    let slot = instance
        .get_global(&mut store, abi::PANIC_SLOT_EXPORT)
        .expect("the sealed module keeps the panic slot")
        .get(&mut store)
        .i32()
        .unwrap() as usize;
    let memory = instance.get_memory(&mut store, "memory").unwrap();
    let bytes = &memory.data(&store)[slot..slot + 8];
    let ptr = u32::from_le_bytes(bytes[..4].try_into().unwrap()) as usize;
    let len = u32::from_le_bytes(bytes[4..].try_into().unwrap()) as usize;
    assert!(len > 0, "the slot holds a reply");
    let reply = memory.data(&store)[ptr..ptr + len].to_vec();
    match abi::decode_reply(&reply).unwrap() {
        abi::Reply::Failed(Status::Panic, failure) => {
            assert_eq!(failure.message, "sealed and panicking");
            assert!(
                failure
                    .file
                    .is_some_and(|f| f.ends_with("faulty/src/lib.rs"))
            );
        }
        other => panic!("expected a panic reply, got {other:?}"),
    }

    // The runtime, running the pickled call, reports the same panic.
    let err = runtime().run(&call).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::GuestPanic);
    assert_eq!(err.guest_failure().unwrap().message, "sealed and panicking");
}

#[test]
fn the_same_call_seals_to_the_same_bytes_and_hash() {
    let math = math();
    for call in math_calls(&math) {
        let a = seal_call(&math, &call).unwrap();
        // Through bytes, by another `Code` of the same module: nothing in-process matters.
        let other = Code::new(wasmpickle_test_artifacts::read(MATH)).unwrap();
        let b = seal_call(&other, &Call::from_bytes(&call.to_bytes()).unwrap()).unwrap();
        assert_eq!(a, b, "{}: byte-identical", call.export());
        assert_eq!(canonical_hash(&a).unwrap(), canonical_hash(&b).unwrap());
        assert_eq!(Code::new(a).unwrap().hash(), canonical_hash(&b).unwrap());
    }

    // The same guest built in another directory has other bytes and the same code hash,
    // and seals to the same bytes.
    let elsewhere = Code::from_file(MATH_ELSEWHERE).unwrap();
    assert_eq!(elsewhere.hash(), math.hash());
    let call = &math_calls(&math)[0];
    assert_eq!(
        seal_call(&elsewhere, call).unwrap(),
        seal_call(&math, call).unwrap()
    );
}

#[test]
fn a_different_closure_has_a_different_hash() {
    let math = math();
    let hash = |factor: f64, x: f64| {
        let call = math
            .closure("scale", &Scale { factor })
            .unwrap()
            .call(&(x,))
            .unwrap();
        canonical_hash(&seal_call(&math, &call).unwrap()).unwrap()
    };
    let base = hash(2.5, 4.0);
    assert_ne!(base, hash(2.0, 4.0), "another environment");
    assert_ne!(base, hash(2.5, 5.0), "other arguments");
    let closure = |factor: f64| {
        let c = math.closure("scale", &Scale { factor }).unwrap();
        canonical_hash(&seal_closure(&math, &c).unwrap()).unwrap()
    };
    assert_eq!(closure(2.5), closure(2.5));
    assert_ne!(closure(2.5), closure(2.0));

    // Requested limits are the embedder's business, not the module's: they change the call
    // id, which only the unhashed description names.
    let call = math
        .closure("scale", &Scale { factor: 2.5 })
        .unwrap()
        .call(&(4.0,))
        .unwrap();
    let limited = call.clone().with_limits(CallLimits::new().with_fuel(1_000));
    let (a, b) = (
        seal_call(&math, &call).unwrap(),
        seal_call(&math, &limited).unwrap(),
    );
    assert_ne!(a, b);
    assert_eq!(canonical_hash(&a).unwrap(), canonical_hash(&b).unwrap());
}

#[test]
fn the_hash_moves_only_with_code_the_export_reaches() {
    // `b` edits a helper only `uses_helper` reaches; `c` one only `uses_lonely` reaches.
    let sealed = |path: &str, export: &str| {
        let code = Code::from_file(path).unwrap();
        let call = code.function(export).unwrap().call(&(5u64,)).unwrap();
        let wasm = seal_call(&code, &call).unwrap();
        let reply = run_sealed_call(&wasm);
        (
            canonical_hash(&wasm).unwrap(),
            codec::from_msgpack::<u64>(&reply[1..]).unwrap(),
        )
    };
    let a = sealed(VERSIONED_A, "standalone");
    assert_eq!(a, sealed(VERSIONED_B, "standalone"));
    assert_eq!(a, sealed(VERSIONED_C, "standalone"));
    let a = sealed(VERSIONED_A, "uses_helper");
    assert_eq!(a.1, 16);
    assert_ne!(a, sealed(VERSIONED_B, "uses_helper"));
    assert_eq!(a, sealed(VERSIONED_C, "uses_helper"));
    let a = sealed(VERSIONED_A, "uses_lonely");
    assert_eq!(a, sealed(VERSIONED_B, "uses_lonely"));
    assert_ne!(a, sealed(VERSIONED_C, "uses_lonely"));
}

/// The `wasmpickle.sealed` section, as `docs/abi.md` specifies it.
#[derive(Debug, Deserialize, PartialEq)]
struct Description {
    kind: String,
    export: String,
    code: serde_bytes::ByteBuf,
    version: serde_bytes::ByteBuf,
    call: Option<serde_bytes::ByteBuf>,
    env_len: u64,
    args_len: Option<u64>,
}

fn description(wasm: &[u8]) -> Description {
    let mut found = Vec::new();
    for payload in wasmparser::Parser::new(0).parse_all(wasm) {
        if let wasmparser::Payload::CustomSection(c) = payload.unwrap()
            && c.name() == SEALED_SECTION
        {
            found.push(codec::from_msgpack(c.data()).unwrap());
        }
    }
    assert_eq!(found.len(), 1, "one description");
    found.pop().unwrap()
}

#[test]
fn the_sealed_module_describes_what_it_seals() {
    let math = math();
    let call = math
        .closure("polynomial", &Poly { coeffs: vec![1.0] })
        .unwrap()
        .call(&(2.0,))
        .unwrap();
    let sealed = seal_call(&math, &call).unwrap();
    assert_eq!(
        description(&sealed),
        Description {
            kind: "call".into(),
            export: "polynomial".into(),
            code: serde_bytes::ByteBuf::from(math.hash().as_bytes().to_vec()),
            version: serde_bytes::ByteBuf::from(
                math.export_version("polynomial")
                    .unwrap()
                    .as_bytes()
                    .to_vec()
            ),
            call: Some(serde_bytes::ByteBuf::from(call.id().as_bytes().to_vec())),
            env_len: call.env().len() as u64,
            args_len: Some(call.args().len() as u64),
        }
    );
    let closure = seal_closure(&math, call.closure()).unwrap();
    let d = description(&closure);
    assert_eq!(
        (d.kind.as_str(), d.call, d.args_len),
        ("closure", None, None)
    );

    // Exports: the contract's, the pickled export, and the entry, last.
    let module = Code::new(sealed).unwrap();
    let exports: BTreeMap<&str, (&str, Option<&str>)> = module
        .exports()
        .iter()
        .map(|e| (e.name.as_str(), (e.kind, e.signature.as_deref())))
        .collect();
    assert_eq!(module.exports().last().unwrap().name, SEALED_ENTRY);
    assert_eq!(exports[SEALED_ENTRY], ("func", Some("() -> i64")));
    assert_eq!(exports["memory"].0, "memory");
    assert_eq!(exports["wasmpickle_alloc"].0, "func");
    assert!(module.check_export("polynomial").is_ok());
    assert!(
        module.check_export("scale").is_err(),
        "unreached exports go"
    );
    assert!(module.imports().is_empty());
}

#[test]
fn sealing_checks_the_code_and_the_export() {
    let math = math();
    let add = Code::from_file(WAT_ADD).unwrap();
    let call = math.function("describe").unwrap().call(&()).unwrap();
    assert_eq!(
        seal_call(&add, &call).unwrap_err().kind(),
        ErrorKind::HashMismatch
    );
    let missing = Closure::from_parts(math.code_ref(), "nope", vec![0xc0]).unwrap();
    assert_eq!(
        seal_closure(&math, &missing).unwrap_err().kind(),
        ErrorKind::MissingExport
    );
    let not_pickled = Closure::from_parts(math.code_ref(), "wasmpickle_alloc", vec![0xc0]).unwrap();
    assert_eq!(
        seal_closure(&math, &not_pickled).unwrap_err().kind(),
        ErrorKind::WrongSignature
    );
}

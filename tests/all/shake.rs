//! Tree shaking and export versions (`wasmpickle::shake`, `export_version`): the shaken module
//! validates and behaves exactly like the original for its export — the same results, errors
//! and fuel — on the example guests and on a fixed corpus of random modules; and versions move
//! with what an export can reach, on a guest built in variants that differ in one function.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use crate::support::math::{Div, Fold, Msg, Poly, Scale, WordCfg};
use serde::Serialize;
use wasmpickle::{
    Call, Code, CodeHash, Error, ErrorKind, Limits, Outcome, Runtime, RuntimeConfig,
    canonical_hash, export_version, shake,
};
use wasmpickle_test_artifacts::{
    FAULTY, MATH, VERSIONED_A, VERSIONED_B, VERSIONED_C, WAT_ADD, read,
};

/// The exports `export_version` keeps besides the one it versions, when present.
const CONTRACT: &[&str] = &[
    "memory",
    "wasmpickle_alloc",
    "wasmpickle_free",
    "wasmpickle_panic",
];

/// One runtime for every guest call here: enough fuel for the well-behaved calls, little
/// enough that `spin` stops quickly, and a memory cap `memory_bomb` hits.
fn runtime() -> &'static Runtime {
    static RT: OnceLock<Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        Runtime::new(
            RuntimeConfig::new().limits(*Limits::new().fuel(5_000_000).max_memory(16 << 20)),
        )
        .expect("runtime")
    })
}

/// `wasm` shaken to `export` and the guest contract, as `export_version` does.
fn shaken_for(wasm: &[u8], export: &str) -> Vec<u8> {
    let exports = Code::new(wasm.to_vec()).unwrap();
    let mut keep = vec![export];
    keep.extend(
        CONTRACT
            .iter()
            .filter(|name| exports.exports().iter().any(|e| e.name == **name)),
    );
    let shaken = shake(wasm, &keep).unwrap();
    assert_eq!(
        canonical_hash(&shaken).unwrap(),
        export_version(wasm, export).unwrap(),
        "the version of `{export}` is the hash of its shaken module"
    );
    shaken
}

/// What a call did, in terms that must be identical for the original and the shaken module.
#[derive(Debug, PartialEq)]
enum Observed {
    Returned {
        value: Vec<u8>,
        fuel: u64,
    },
    Failed {
        kind: ErrorKind,
        fuel: Option<u64>,
        guest: String,
    },
}

impl From<Result<Outcome, Error>> for Observed {
    fn from(result: Result<Outcome, Error>) -> Observed {
        match result {
            Ok(o) => Observed::Returned {
                value: o.value().to_vec(),
                fuel: o.fuel_used(),
            },
            Err(e) => Observed::Failed {
                kind: e.kind(),
                fuel: e.fuel_used(),
                guest: format!("{:?}", e.guest_failure()),
            },
        }
    }
}

/// A sample call of one export: its environment and arguments, as MessagePack.
struct Sample {
    export: &'static str,
    env: Vec<u8>,
    args: Vec<u8>,
}

fn sample<E: Serialize, A: Serialize>(export: &'static str, env: E, args: A) -> Sample {
    Sample {
        export,
        env: wasmpickle::format::codec::to_canonical_msgpack(&env).unwrap(),
        args: wasmpickle::format::codec::to_canonical_msgpack(&args).unwrap(),
    }
}

fn samples() -> Vec<(&'static str, Vec<Sample>)> {
    let bytes: Vec<u8> = (0..=255).cycle().take(3000).collect();
    vec![
        (
            MATH,
            vec![
                sample("scale", Scale { factor: 2.5 }, (4.0,)),
                sample("scale", "not a Scale", (4.0,)),
                sample(
                    "polynomial",
                    Poly {
                        coeffs: vec![2.0, -3.0, 0.5, 7.0],
                    },
                    (1.75,),
                ),
                sample(
                    "word_counts",
                    WordCfg {
                        lowercase: true,
                        min_len: 2,
                    },
                    ("The cat and the hat; THE end. a an",),
                ),
                sample(
                    "fold_bytes",
                    Fold {
                        seed: 0xcbf2_9ce4_8422_2325,
                        multiplier: 0x100_0000_01b3,
                    },
                    (serde_bytes::Bytes::new(&bytes),),
                ),
                sample("checked_div", Div { divisor: 4 }, (-17i64,)),
                sample("checked_div", Div { divisor: 0 }, (1i64,)),
                sample("describe", (), ()),
            ],
        ),
        (
            FAULTY,
            vec![
                sample("ok", (), ()),
                sample("spin", (), ()),
                sample("memory_bomb", (), ()),
                sample("recurse", (), (20u64,)),
                sample("recurse", (), (1_000_000_000u64,)),
                sample(
                    "panic_now",
                    Msg {
                        text: "the sky is falling".into(),
                    },
                    (),
                ),
                sample("bad_pointer", (), ()),
                sample("bad_reply", (), ()),
            ],
        ),
        (
            WAT_ADD,
            vec![
                sample("add", 3u8, (4u8,)),
                sample("add", 100u8, (100u8,)),
                sample("add", 1000u32, (1u8,)),
            ],
        ),
        (
            VERSIONED_A,
            vec![
                sample("uses_helper", (), (5u64,)),
                sample("standalone", (), (5u64,)),
                sample("uses_lonely", (), (5u64,)),
            ],
        ),
    ]
}

fn run(code: &Code, s: &Sample) -> Observed {
    let closure =
        wasmpickle::Closure::from_parts(code.code_ref(), s.export, s.env.clone()).unwrap();
    let call: Call = closure.call_raw(s.args.clone()).unwrap();
    runtime().run(&call).into()
}

#[test]
fn shaken_guests_behave_like_the_originals_down_to_the_fuel() {
    for (path, samples) in samples() {
        let wasm = read(path);
        let original = Code::new(wasm.clone()).unwrap();
        // Every pickled export has a sample, so a new export cannot go untested.
        for export in original.exports().iter().filter(|e| e.pickled) {
            assert!(
                samples.iter().any(|s| s.export == export.name),
                "no sample call for `{}` of {path}",
                export.name
            );
        }
        for s in &samples {
            let shaken = shaken_for(&wasm, s.export);
            assert!(
                shaken.len() < wasm.len(),
                "`{}` of {path}: shaking removed nothing",
                s.export
            );
            let shaken = Code::new(shaken).expect("a shaken module validates");
            let (before, after) = (run(&original, s), run(&shaken, s));
            assert_eq!(before, after, "`{}` of {path}", s.export);
            println!("{path} `{}`: {before:?}", s.export);
        }
    }
}

#[test]
fn a_signature_mismatch_through_a_stubbed_slot_still_traps_the_same_way() {
    // `call` calls through slot `env_len - 1` with the unary type. Slot 0 holds an unreached
    // nullary function, which shaking replaces by a stub: the engine's signature check must
    // still fail there, with the same trap and fuel.
    let wasm = crate::support::wat(
        r#"(module
            (memory (export "memory") 1)
            (func (export "wasmpickle_alloc") (param i32) (result i32) i32.const 1024)
            (type $unary (func (param i32) (result i32)))
            (table 2 funcref)
            (elem (i32.const 0) $nullary $unary)
            (func $nullary (result i32) i32.const 7)
            (func $unary (param i32) (result i32) local.get 0)
            (func (export "call") (param i32 i32 i32 i32) (result i64)
                i32.const 1
                local.get 1
                i32.const 1
                i32.sub
                call_indirect (type $unary)
                i64.extend_i32_u))"#,
    );
    let original = Code::new(wasm.clone()).unwrap();
    let shaken = Code::new(shaken_for(&wasm, "call")).unwrap();
    let trap = |code: &Code, s: &Sample| {
        let closure =
            wasmpickle::Closure::from_parts(code.code_ref(), s.export, s.env.clone()).unwrap();
        let err = runtime()
            .run(&closure.call_raw(s.args.clone()).unwrap())
            .err()?;
        std::error::Error::source(&err)
            .and_then(|s| s.downcast_ref::<wasmtime::Trap>())
            .copied()
    };
    // Strings of 0, 1 and 2 characters encode in 1, 2 and 3 bytes: slots 0, 1 and 2.
    for (slot, env, expected) in [
        (0, "", Some(wasmtime::Trap::BadSignature)),
        (1, "a", None),
        (2, "ab", Some(wasmtime::Trap::TableOutOfBounds)),
    ] {
        let s = sample("call", env, ());
        assert_eq!(run(&original, &s), run(&shaken, &s), "slot {slot}");
        assert_eq!(trap(&original, &s), expected, "slot {slot}");
        assert_eq!(trap(&shaken, &s), expected, "slot {slot}");
    }
}

fn version(path: &str, export: &str) -> CodeHash {
    export_version(&read(path), export).unwrap()
}

#[test]
fn versions_move_only_with_what_an_export_reaches() {
    let hash = |path| canonical_hash(&read(path)).unwrap();
    let (a, b, c) = (hash(VERSIONED_A), hash(VERSIONED_B), hash(VERSIONED_C));
    assert!(
        a != b && b != c && a != c,
        "the variants are different modules"
    );

    // `variant-b` edits `helper`, which only `uses_helper` reaches.
    assert_eq!(
        version(VERSIONED_A, "standalone"),
        version(VERSIONED_B, "standalone")
    );
    assert_ne!(
        version(VERSIONED_A, "uses_helper"),
        version(VERSIONED_B, "uses_helper")
    );
    assert_eq!(
        version(VERSIONED_A, "uses_lonely"),
        version(VERSIONED_B, "uses_lonely")
    );
    // `variant-c` edits `lonely`, which only `uses_lonely` reaches.
    assert_eq!(
        version(VERSIONED_A, "standalone"),
        version(VERSIONED_C, "standalone")
    );
    assert_eq!(
        version(VERSIONED_A, "uses_helper"),
        version(VERSIONED_C, "uses_helper")
    );
    assert_ne!(
        version(VERSIONED_A, "uses_lonely"),
        version(VERSIONED_C, "uses_lonely")
    );

    // And the variants compute what they say.
    let expected: [(&str, [u64; 3]); 3] = [
        ("uses_helper", [3 * 5 + 1, 7 * 5 + 1, 3 * 5 + 1]),
        ("standalone", [(5u64.rotate_left(5)) ^ 0x5a5a; 3]),
        ("uses_lonely", [105, 105, 205]),
    ];
    for (export, values) in expected {
        for (path, value) in [VERSIONED_A, VERSIONED_B, VERSIONED_C]
            .into_iter()
            .zip(values)
        {
            let code = Code::from_file(path).unwrap();
            for code in [
                code.clone(),
                Code::new(shaken_for(code.wasm(), export)).unwrap(),
            ] {
                let call = code.function(export).unwrap().call(&(5u64,)).unwrap();
                let got: u64 = runtime().run(&call).unwrap().decode().unwrap();
                assert_eq!(got, value, "`{export}` of {path}");
            }
        }
    }
}

#[test]
fn code_lists_and_remembers_the_version_of_every_pickled_export() {
    let code = Code::from_file(MATH).unwrap();
    let versions = code.export_versions().unwrap();
    let pickled: Vec<&str> = code
        .exports()
        .iter()
        .filter(|e| e.pickled)
        .map(|e| e.name.as_str())
        .collect();
    assert_eq!(
        versions.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
        pickled
    );
    let distinct: BTreeMap<CodeHash, &str> =
        versions.iter().map(|(n, v)| (*v, n.as_str())).collect();
    assert_eq!(
        distinct.len(),
        versions.len(),
        "each export has its own version"
    );
    for (name, v) in &versions {
        assert_eq!(*v, version(MATH, name));
        assert_eq!(code.export_version(name).unwrap(), *v, "remembered");
        assert_ne!(*v, code.hash());
    }
    // Any export has a version, not only pickled ones; a missing one is an error.
    code.export_version("wasmpickle_alloc").unwrap();
    assert_eq!(
        code.export_version("nope").unwrap_err().kind(),
        ErrorKind::MissingExport
    );
}

/// The random-module corpus: every exported function of thousands of wasm-smith modules,
/// shaken to that export, run in plain wasmtime next to the original.
mod corpus {
    use arbitrary::Unstructured;
    use wasmtime::{Config, Engine, Instance, Module, OptLevel, Store, Trap, Val, ValType};

    use super::shake;

    /// Modules checked, each made by wasm-smith from 4 KiB of the sequence below.
    const MODULES: u64 = 3_000;
    /// Fuel for instantiation (the start function) and for each call.
    const FUEL: u64 = 100_000;

    /// SplitMix64: a fixed, portable sequence, so the corpus is the same everywhere.
    struct SplitMix(u64);

    impl SplitMix {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }

        fn bytes(&mut self, n: usize) -> Vec<u8> {
            (0..n.div_ceil(8))
                .flat_map(|_| self.next().to_le_bytes())
                .take(n)
                .collect()
        }
    }

    /// wasm-smith limited to the sandbox's feature set (`wasmpickle::Code` validates with it):
    /// no threads, relaxed SIMD, GC, exceptions, several memories, components or imports;
    /// small enough that thousands compile in seconds, and memories and tables small enough
    /// that instantiating never fails for lack of resources.
    ///
    /// With reference types, wasm-smith also writes `externref`, which the sandbox's wasmtime
    /// (built without GC) refuses, and it cannot be told not to: most such modules are
    /// refused, and those that are not are biased towards having few functions. So half the
    /// seeds go to a configuration without reference types (one table, `call_indirect`,
    /// `table.init`, `table.copy`, `elem.drop`) and half to one with them (`ref.func`,
    /// `table.get`/`set`, several tables).
    fn smith_config(reference_types: bool) -> wasm_smith::Config {
        wasm_smith::Config {
            threads_enabled: false,
            shared_everything_threads_enabled: false,
            relaxed_simd_enabled: false,
            gc_enabled: false,
            exceptions_enabled: false,
            custom_page_sizes_enabled: false,
            custom_descriptors_enabled: false,
            simd_enabled: true,
            // The sandbox's feature set (`wasmpickle::Code` validates against it): no
            // memory64, no wide arithmetic, as in wasmtime 48's defaults.
            memory64_enabled: false,
            wide_arithmetic_enabled: false,
            tail_call_enabled: true,
            extended_const_enabled: true,
            reference_types_enabled: reference_types,
            bulk_memory_enabled: true,
            multi_value_enabled: true,
            max_memories: 1,
            max_tables: if reference_types { 2 } else { 1 },
            max_imports: 0,
            min_funcs: 1,
            max_funcs: 6,
            // Every function, global, table and memory: each function is then shaken to on
            // its own, dropping the others' exports.
            export_everything: true,
            max_types: 12,
            max_globals: 8,
            max_instructions: 60,
            max_nesting_depth: 6,
            max_element_segments: 6,
            max_elements: 16,
            max_data_segments: 4,
            max_table_elements: 64,
            max_memory32_bytes: 4 << 16,
            max_memory64_bytes: 4 << 16,
            max_type_size: 64,
            ..wasm_smith::Config::default()
        }
    }

    fn engine() -> Engine {
        let mut config = Config::new();
        config
            .consume_fuel(true)
            .cranelift_nan_canonicalization(true)
            // Fuel counts wasm operators, not machine code, so it does not depend on how
            // well the code is optimized; compiling without optimization is faster.
            .cranelift_opt_level(OptLevel::None)
            .wasm_relaxed_simd(false)
            .wasm_multi_memory(false)
            .wasm_tail_call(true)
            .wasm_extended_const(true);
        Engine::new(&config).unwrap()
    }

    /// A value in terms that compare exactly: floats by their bits, references by nullness.
    #[derive(Debug, PartialEq, Eq)]
    enum Bits {
        Num(u128),
        Ref(bool),
    }

    /// How instantiating and then calling one export went.
    #[derive(Debug, PartialEq, Eq)]
    struct Run {
        instantiated: Result<(), String>,
        fuel_instantiating: u64,
        called: Option<Result<Vec<Bits>, String>>,
        fuel_calling: u64,
    }

    fn failure(e: &wasmtime::Error) -> String {
        // The trap code, or the innermost message: what a backtrace would add names
        // functions by index, which shaking renumbers.
        match e.downcast_ref::<Trap>() {
            Some(trap) => format!("trap: {trap:?}"),
            None => format!("error: {}", e.root_cause()),
        }
    }

    fn args(params: impl Iterator<Item = ValType>, rng: &mut SplitMix) -> Vec<Val> {
        params
            .map(|ty| {
                // Mostly small numbers, so loops and offsets land in range often enough.
                let r = rng.next();
                let n = if r.is_multiple_of(4) {
                    r >> 8
                } else {
                    (r >> 8) % 17
                };
                match ty {
                    ValType::I32 => Val::I32(n as i32),
                    ValType::I64 => Val::I64(n as i64),
                    ValType::F32 => Val::F32((n as f32).to_bits()),
                    ValType::F64 => Val::F64((n as f64).to_bits()),
                    ValType::V128 => Val::V128((u128::from(n) | u128::from(r) << 64).into()),
                    ValType::Ref(r) => Val::default_for_ty(&ValType::Ref(r))
                        .expect("without GC every reference type is nullable"),
                }
            })
            .collect()
    }

    fn bits(v: &Val) -> Bits {
        match v {
            Val::I32(x) => Bits::Num(u128::from(*x as u32)),
            Val::I64(x) => Bits::Num(u128::from(*x as u64)),
            Val::F32(x) => Bits::Num(u128::from(*x)),
            Val::F64(x) => Bits::Num(u128::from(*x)),
            Val::V128(x) => Bits::Num(x.as_u128()),
            Val::FuncRef(f) => Bits::Ref(f.is_some()),
            Val::ExternRef(r) => Bits::Ref(r.is_some()),
            other => panic!("a value of a type the corpus does not generate: {other:?}"),
        }
    }

    fn run(engine: &Engine, module: &Module, export: &str, args: &[Val]) -> Run {
        let mut store = Store::new(engine, ());
        store.set_fuel(FUEL).unwrap();
        let instance = Instance::new(&mut store, module, &[]);
        let fuel_instantiating = FUEL - store.get_fuel().unwrap();
        let instance = match instance {
            Ok(i) => i,
            Err(e) => {
                return Run {
                    instantiated: Err(failure(&e)),
                    fuel_instantiating,
                    called: None,
                    fuel_calling: 0,
                };
            }
        };
        store.set_fuel(FUEL).unwrap();
        let func = instance
            .get_func(&mut store, export)
            .expect("the export is a function");
        let mut results: Vec<Val> = func.ty(&store).results().map(|_| Val::I32(0)).collect();
        let called = func
            .call(&mut store, args, &mut results)
            .map(|()| results.iter().map(bits).collect())
            .map_err(|e| failure(&e));
        Run {
            instantiated: Ok(()),
            fuel_instantiating,
            called: Some(called),
            fuel_calling: FUEL - store.get_fuel().unwrap(),
        }
    }

    #[test]
    fn shaken_random_modules_behave_like_the_originals() {
        let engine = engine();
        let configs = [smith_config(false), smith_config(true)];
        let mut per_config = [0u64; 2];
        let mut rng = SplitMix(0x05ee_d0f5_ba4e);
        let (mut modules, mut exports, mut skipped) = (0u64, 0u64, 0u64);
        let mut outcomes: std::collections::BTreeMap<String, usize> = Default::default();
        let mut kept_bytes = (0usize, 0usize);
        let mut refused = 0;
        let mut cheaper_starts: std::collections::BTreeMap<&str, usize> = Default::default();
        let mut seed = 0u64;
        let mut plain_setups = 0u64;
        while modules < MODULES {
            seed += 1;
            assert!(
                seed < 10 * MODULES,
                "too many seeds made no usable module: {modules} modules, {skipped} none, {refused} with externref"
            );
            let data = rng.bytes(4096);
            let which = (seed % 2) as usize;
            let wasm = match wasm_smith::Module::new(
                configs[which].clone(),
                &mut Unstructured::new(&data),
            ) {
                Ok(m) => m.to_bytes(),
                Err(_) => {
                    skipped += 1;
                    continue;
                }
            };
            // wasm-smith cannot be told to leave out `externref`, which the sandbox's wasmtime
            // (built without GC) refuses; such modules are skipped, the rest must compile.
            let original = match Module::new(&engine, &wasm) {
                Ok(m) => m,
                Err(e) if format!("{e:#}").contains("gc types are disallowed") => {
                    refused += 1;
                    continue;
                }
                Err(e) => panic!("module {seed}: wasmtime refuses it: {e:#}"),
            };
            modules += 1;
            per_config[which] += 1;
            let names: Vec<String> = original
                .exports()
                .filter(|e| e.ty().func().is_some())
                .map(|e| e.name().to_owned())
                .collect();
            for name in names {
                let shaken = shake(&wasm, &[&name]).unwrap_or_else(|e| {
                    panic!("module {seed}, export {name:?}: {e}\n{}", wat(&wasm))
                });
                let module = Module::new(&engine, &shaken).unwrap_or_else(|e| {
                    panic!(
                        "module {seed}, export {name:?}: the shaken module does not compile: {e:?}"
                    )
                });
                let params: Vec<ValType> = original
                    .get_export(&name)
                    .and_then(|t| t.func().map(|f| f.params().collect()))
                    .unwrap();
                let args = args(params.into_iter(), &mut rng);
                let before = run(&engine, &original, &name, &args);
                let mut after = run(&engine, &module, &name, &args);
                // Instantiating is where the shaken module may use less fuel, never more,
                // without running different instructions of the module (see
                // `wasmpickle::shake`): wasmtime initializes what it cannot set up statically
                // (globals not initialized by one constant, element and data segments it
                // does not apply ahead of time, the start function) in a compiled startup
                // function that is charged fuel, and shaking drops what nothing reaches. So
                // the fuel must be equal for a module with nothing of that kind but a start
                // function, and may be lower otherwise. And a start function that overflows
                // the stack does so at a depth that depends on the native size of every frame
                // below it, the startup function's included: the trap must agree, the fuel
                // spent until then need not. Calls must agree exactly.
                let plain = plain_setup(&wasm);
                plain_setups += u64::from(plain);
                if before.instantiated == after.instantiated
                    && before.fuel_instantiating != after.fuel_instantiating
                {
                    let overflow = before.instantiated == Err("trap: StackOverflow".to_owned());
                    assert!(
                        overflow
                            || (!plain && after.fuel_instantiating < before.fuel_instantiating),
                        "module {seed}, export {name:?}: instantiating took {} fuel, shaken {}\n\
                         original:\n{}\nshaken:\n{}",
                        before.fuel_instantiating,
                        after.fuel_instantiating,
                        wat(&wasm),
                        wat(&shaken)
                    );
                    *cheaper_starts
                        .entry(if overflow { "start overflowed" } else { "less" })
                        .or_default() += 1;
                    after.fuel_instantiating = before.fuel_instantiating;
                }
                assert_eq!(
                    before,
                    after,
                    "module {seed}, export {name:?}\noriginal:\n{}\nshaken:\n{}",
                    wat(&wasm),
                    wat(&shaken)
                );
                exports += 1;
                kept_bytes.0 += wasm.len();
                kept_bytes.1 += shaken.len();
                let what = match (&before.instantiated, &before.called) {
                    (Err(e), _) => format!("instantiation {e}"),
                    (Ok(()), Some(Ok(_))) => "returned".to_owned(),
                    (Ok(()), Some(Err(e))) => e.clone(),
                    (Ok(()), None) => unreachable!(),
                };
                *outcomes.entry(what).or_default() += 1;
            }
        }
        println!(
            "{modules} modules ({} without reference types, {} with) from {seed} seeds \
             ({skipped} made no module, {refused} used externref), {exports} exports checked; shaken modules are {:.0}% of the \
             originals' bytes; {plain_setups} with nothing for wasmtime to initialize in code; \
             instantiations that took other fuel: {cheaper_starts:?}; \
             outcomes: {outcomes:#?}",
            per_config[0],
            per_config[1],
            100.0 * kept_bytes.1 as f64 / kept_bytes.0.max(1) as f64
        );
        assert!(
            exports >= 2_000,
            "the corpus has too few exports: {exports}"
        );
    }

    /// Whether wasmtime has nothing to initialize in compiled code but the start function:
    /// every global is initialized by one numeric constant, and there are no element or data
    /// segments and no table initializers.
    fn plain_setup(wasm: &[u8]) -> bool {
        use wasmparser::{Operator, Parser, Payload, TableInit};
        let constant = |expr: &wasmparser::ConstExpr<'_>| {
            let mut ops = expr.get_operators_reader();
            matches!(
                (ops.read(), ops.read()),
                (
                    Ok(Operator::I32Const { .. }
                        | Operator::I64Const { .. }
                        | Operator::F32Const { .. }
                        | Operator::F64Const { .. }
                        | Operator::V128Const { .. }),
                    Ok(Operator::End)
                )
            )
        };
        Parser::new(0).parse_all(wasm).all(|p| match p.unwrap() {
            Payload::GlobalSection(s) => s.into_iter().all(|g| constant(&g.unwrap().init_expr)),
            Payload::TableSection(s) => s
                .into_iter()
                .all(|t| matches!(t.unwrap().init, TableInit::RefNull)),
            Payload::ElementSection(s) => s.count() == 0,
            Payload::DataSection(s) => s.count() == 0,
            _ => true,
        })
    }

    /// The module as text, for failure messages.
    fn wat(wasm: &[u8]) -> String {
        wasmprinter::print_bytes(wasm).unwrap_or_else(|e| format!("(unprintable: {e})"))
    }
}

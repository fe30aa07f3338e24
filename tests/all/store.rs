//! Code stores: round trips through both stores, the directory store against 1,000 injected
//! faults, leftovers of interrupted writes, and by-hash calls resolving through a store.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use wasmpickle::{
    Code, CodeHash, CodeStore, DirStore, ErrorKind, MemoryStore, Runtime, RuntimeConfig,
};
use wasmpickle_test_artifacts::{FAULTY, MATH, WAT_ADD, read};

use crate::support::*;

/// The guests, plus `n` small distinct modules with names and a producers section, so that
/// faults also land in the parts of a module its code hash leaves out.
fn modules(n: usize) -> Vec<Code> {
    let mut out: Vec<Code> = [MATH, FAULTY, WAT_ADD]
        .iter()
        .map(|p| Code::new(read(p)).unwrap())
        .collect();
    for i in 0..n {
        out.push(small(i));
    }
    out
}

fn small(i: usize) -> Code {
    let wat = format!(
        r#"(module $m{i}
             (memory (export "memory") 1)
             (func $alloc (export "wasmpickle_alloc") (param i32) (result i32) i32.const 1024)
             (func $f{i} (export "f") (result i32) i32.const {i})
             (@custom "producers" "built by the store test, module {i}"))"#
    );
    Code::new(wat::parse_str(wat).unwrap()).unwrap()
}

fn stores(dir: &Path) -> Vec<(&'static str, Arc<dyn CodeStore>)> {
    vec![
        ("memory", Arc::new(MemoryStore::new())),
        ("dir", Arc::new(DirStore::open(dir).unwrap())),
    ]
}

#[test]
fn both_stores_round_trip() {
    let tmp = tempfile::tempdir().unwrap();
    let codes = modules(3);
    for (name, store) in stores(&tmp.path().join("store")) {
        for code in &codes {
            assert!(!store.contains(&code.hash()).unwrap(), "{name}");
            assert!(store.put(code).unwrap(), "{name}: first put stores");
            assert!(!store.put(code).unwrap(), "{name}: put is idempotent");
            assert!(store.contains(&code.hash()).unwrap(), "{name}");
            let back = store.get(&code.hash()).unwrap().expect("stored");
            assert_eq!(back.hash(), code.hash(), "{name}");
            assert_eq!(back.wasm(), code.wasm(), "{name}: the original bytes");
        }
        let mut hashes: Vec<CodeHash> = codes.iter().map(Code::hash).collect();
        hashes.sort();
        assert_eq!(store.list().unwrap(), hashes, "{name}: list is sorted");
        assert!(store.verify().unwrap().is_ok(), "{name}");
        assert_eq!(store.verify().unwrap().checked, codes.len(), "{name}");

        let gone = codes[1].hash();
        assert!(store.remove(&gone).unwrap(), "{name}");
        assert!(!store.remove(&gone).unwrap(), "{name}: removed once");
        assert!(store.get(&gone).unwrap().is_none(), "{name}");
        assert_eq!(store.list().unwrap().len(), codes.len() - 1, "{name}");
        let err = store.fetch(&gone).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::CodeNotFound, "{name}");
        assert_eq!(err.code_hash(), Some(gone), "{name}");
        assert!(err.to_string().contains(&gone.to_string()), "{name}: {err}");

        // put_bytes hashes what it is given, and refuses what is not a module.
        let wasm = read(WAT_ADD);
        assert_eq!(
            store.put_bytes(&wasm).unwrap(),
            wasmpickle::canonical_hash(&wasm).unwrap()
        );
        let err = store.put_bytes(b"\0asm not really").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidModule, "{name}");
    }
}

#[test]
fn a_dir_store_persists_and_refuses_foreign_directories() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    let code = small(1);
    DirStore::open(&dir).unwrap().put(&code).unwrap();
    let again = DirStore::open_existing(&dir).unwrap();
    assert_eq!(
        again.get(&code.hash()).unwrap().unwrap().wasm(),
        code.wasm()
    );
    assert_eq!(again.path(), dir);

    // A directory with other things in it is not made into a store.
    let home = tmp.path().join("home");
    fs::create_dir(&home).unwrap();
    fs::write(home.join("notes.txt"), "mine").unwrap();
    let err = DirStore::open(&home).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Io);
    assert!(
        err.to_string().contains("not a wasmpickle code store"),
        "{err}"
    );
    assert_eq!(
        fs::read_dir(&home).unwrap().count(),
        1,
        "nothing was written"
    );
    // Readers require an existing store.
    let err = DirStore::open_existing(tmp.path().join("missing")).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Io);
    assert!(!tmp.path().join("missing").exists());
    // A store of another layout version is refused, not rewritten.
    let other = tmp.path().join("other");
    fs::create_dir(&other).unwrap();
    fs::write(other.join("wasmpickle-store"), "wasmpickle code store 2\n").unwrap();
    assert_eq!(
        DirStore::open(&other).unwrap_err().kind(),
        ErrorKind::Version
    );
}

#[test]
fn reads_re_verify_and_put_repairs() {
    let tmp = tempfile::tempdir().unwrap();
    let store = DirStore::open(tmp.path()).unwrap();
    let code = Code::new(read(MATH)).unwrap();
    store.put(&code).unwrap();
    let path = store.object_path(&code.hash());

    // One flipped bit in the `name` section, which the code hash does not cover: the
    // module still hashes to its name, and is still refused.
    let wasm = code.wasm();
    let name_at = find(wasm, b"\x04name").expect("math.wasm keeps its name section") + 40;
    let mut bytes = fs::read(&path).unwrap();
    bytes[DirStore::HEADER_BYTES as usize + name_at] ^= 0x01;
    let mut damaged = wasm.to_vec();
    damaged[name_at] ^= 0x01;
    assert_eq!(
        wasmpickle::canonical_hash(&damaged).unwrap(),
        code.hash(),
        "the damage is invisible to the code hash"
    );
    fs::write(&path, &bytes).unwrap();
    let err = store.get(&code.hash()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::StoreCorrupt);
    assert_eq!(err.code_hash(), Some(code.hash()));
    assert!(err.to_string().contains(&code.hash().to_string()), "{err}");
    assert!(
        store.contains(&code.hash()).unwrap(),
        "contains does not read"
    );

    // Putting the module again writes a good copy.
    assert!(store.put(&code).unwrap(), "a corrupt copy counts as absent");
    assert_eq!(
        store.get(&code.hash()).unwrap().unwrap().wasm(),
        code.wasm()
    );
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[test]
fn leftovers_of_interrupted_writes_are_cleaned() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    let store = DirStore::open(&dir).unwrap();
    let code = small(7);
    // A crash between write and rename: the object is not there, a temporary file is.
    fs::write(dir.join("tmp/put-4242-0.tmp"), &code.wasm()[..10]).unwrap();
    assert!(store.get(&code.hash()).unwrap().is_none());
    assert!(
        store.list().unwrap().is_empty(),
        "a temporary file is not an object"
    );
    let report = store.gc().unwrap();
    assert_eq!(
        report.leftovers_removed,
        vec!["tmp/put-4242-0.tmp".to_owned()]
    );
    assert!(report.quarantined.is_empty());
    assert_eq!(fs::read_dir(dir.join("tmp")).unwrap().count(), 0);

    // Opening the store cleans up too.
    fs::write(dir.join("tmp/put-4243-9.tmp"), b"half an object").unwrap();
    drop(store);
    let _store = DirStore::open(&dir).unwrap();
    assert_eq!(fs::read_dir(dir.join("tmp")).unwrap().count(), 0);
}

#[test]
fn concurrent_puts_agree() {
    let tmp = tempfile::tempdir().unwrap();
    let store: Arc<dyn CodeStore> = Arc::new(DirStore::open(tmp.path()).unwrap());
    let codes = Arc::new(modules(8));
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let store = store.clone();
            let codes = codes.clone();
            std::thread::spawn(move || {
                for i in 0..codes.len() {
                    let code = &codes[(i + t) % codes.len()];
                    store.put(code).unwrap();
                    assert_eq!(
                        store.get(&code.hash()).unwrap().unwrap().wasm(),
                        code.wasm()
                    );
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let report = store.verify().unwrap();
    assert!(report.is_ok(), "{report:?}");
    assert_eq!(report.checked, codes.len());
    assert_eq!(fs::read_dir(tmp.path().join("tmp")).unwrap().count(), 0);
}

// ---------------------------------------------------------------------------------------------
// 1,000 injected faults

/// splitmix64: a fixed seed gives the same faults on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Fault {
    /// One byte XORed with a random non-zero mask, anywhere in the file.
    FlipByte,
    /// Cut to half its length.
    TruncateHalf,
    /// Cut to a random shorter length.
    TruncateRandom,
    /// Zero bytes left (a crash after the rename reached the disk and the data did not).
    Empty,
    /// A 4 KiB block of zeros where data was (a lost page).
    ZeroBlock,
    /// Garbage after the end.
    Append,
    /// Two objects' files exchanged.
    Swap,
    /// Another object's file copied over this one.
    CopyOther,
    /// A put that crashed before its rename: the object is absent and a partial temporary
    /// file is left in `tmp/`.
    Leftover,
}

const FAULTS: [Fault; 9] = [
    Fault::FlipByte,
    Fault::TruncateHalf,
    Fault::TruncateRandom,
    Fault::Empty,
    Fault::ZeroBlock,
    Fault::Append,
    Fault::Swap,
    Fault::CopyOther,
    Fault::Leftover,
];

/// 100 rounds of 10 faults over 43 objects. After each round every damaged object must fail
/// `get` with `StoreCorrupt` naming it, every intact one must come back byte for byte,
/// `verify` must report exactly the damaged set, and `gc` (or reopening and putting again)
/// must bring the store back.
#[test]
fn a_thousand_injected_faults_are_all_detected() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    let mut store = DirStore::open(&dir).unwrap();
    let codes = modules(40);
    let by_hash: BTreeMap<CodeHash, Code> = codes.iter().map(|c| (c.hash(), c.clone())).collect();
    let hashes: Vec<CodeHash> = by_hash.keys().copied().collect();
    for code in &codes {
        store.put(code).unwrap();
    }
    let mut rng = Rng(0x5EED_0F57_0BE5);
    let mut injected = 0;
    let mut detected = 0;
    let mut damaged = 0;
    let mut seen = BTreeSet::new();
    // Leftovers an open removed, which the next gc reports.
    let mut removed_on_open = 0;

    for round in 0..100 {
        let mut touched = BTreeSet::new();
        let mut corrupt = BTreeSet::new();
        let mut absent = BTreeSet::new();
        let mut leftovers = 0;
        let mut targets = Vec::new();
        for _ in 0..10 {
            let target = loop {
                let h = hashes[rng.below(hashes.len())];
                if touched.insert(h) {
                    break h;
                }
            };
            let fault = FAULTS[rng.below(FAULTS.len())];
            seen.insert(fault);
            let path = store.object_path(&target);
            let original = fs::read(&path).unwrap();
            let len = original.len();
            let partner = |rng: &mut Rng, touched: &mut BTreeSet<CodeHash>| loop {
                let h = hashes[rng.below(hashes.len())];
                if touched.insert(h) {
                    break h;
                }
            };
            match fault {
                Fault::FlipByte => {
                    let mut bytes = original.clone();
                    let at = rng.below(len);
                    bytes[at] ^= 1 + rng.below(255) as u8;
                    fs::write(&path, bytes).unwrap();
                }
                Fault::TruncateHalf => truncate(&path, len / 2),
                Fault::TruncateRandom => truncate(&path, rng.below(len)),
                Fault::Empty => truncate(&path, 0),
                Fault::ZeroBlock => {
                    let mut bytes = original.clone();
                    let blocks = len.div_ceil(4096);
                    let mut block = rng.below(blocks);
                    // A block that is zero already would change nothing; take the next one
                    // with data (the header block always has some).
                    while bytes[block * 4096..len.min(block * 4096 + 4096)]
                        .iter()
                        .all(|b| *b == 0)
                    {
                        block = (block + 1) % blocks;
                    }
                    bytes[block * 4096..len.min(block * 4096 + 4096)].fill(0);
                    fs::write(&path, bytes).unwrap();
                }
                Fault::Append => {
                    let mut bytes = original.clone();
                    for _ in 0..1 + rng.below(64) {
                        bytes.push(rng.next() as u8);
                    }
                    fs::write(&path, bytes).unwrap();
                }
                Fault::Swap => {
                    let other = partner(&mut rng, &mut touched);
                    let other_path = store.object_path(&other);
                    let theirs = fs::read(&other_path).unwrap();
                    fs::write(&path, &theirs).unwrap();
                    fs::write(&other_path, &original).unwrap();
                    corrupt.insert(other);
                }
                Fault::CopyOther => {
                    let other = partner(&mut rng, &mut touched);
                    fs::copy(store.object_path(&other), &path).unwrap();
                }
                Fault::Leftover => {
                    fs::remove_file(&path).unwrap();
                    let cut = rng.below(len);
                    fs::write(
                        dir.join(format!("tmp/put-{}-{round}.tmp", 90_000 + injected)),
                        &original[..cut],
                    )
                    .unwrap();
                    absent.insert(target);
                    leftovers += 1;
                }
            }
            if fault != Fault::Leftover {
                assert_ne!(
                    fs::read(&path).unwrap(),
                    original,
                    "{fault:?} changed nothing"
                );
                corrupt.insert(target);
                targets.push(target);
            }
            injected += 1;
        }

        // Every read either fails naming the object or returns exactly what was put.
        for hash in &hashes {
            match store.get(hash) {
                Ok(Some(code)) => {
                    assert!(
                        !corrupt.contains(hash),
                        "round {round}: {hash} returned as valid"
                    );
                    assert_eq!(code.hash(), *hash);
                    assert_eq!(code.wasm(), by_hash[hash].wasm(), "round {round}: {hash}");
                }
                Ok(None) => assert!(absent.contains(hash), "round {round}: {hash} lost"),
                Err(e) => {
                    assert!(corrupt.contains(hash), "round {round}: {hash}: {e}");
                    assert_eq!(e.kind(), ErrorKind::StoreCorrupt, "{e}");
                    assert_eq!(e.code_hash(), Some(*hash));
                    assert!(e.to_string().contains(&hash.to_string()), "{e}");
                }
            }
        }
        let report = store.verify().unwrap();
        let reported: BTreeSet<CodeHash> = report.corrupt.iter().map(|c| c.hash).collect();
        assert_eq!(
            reported, corrupt,
            "round {round}: verify reports each damaged object"
        );
        assert_eq!(report.checked, hashes.len() - absent.len());
        detected += targets.iter().filter(|t| reported.contains(t)).count();
        damaged += reported.len();

        // Recover, alternately by gc and by reopening (which removes leftovers) and putting
        // everything again (which rewrites damaged objects).
        if round % 2 == 0 {
            let gc = store.gc().unwrap();
            assert_eq!(
                gc.leftovers_removed.len(),
                leftovers + removed_on_open,
                "round {round}"
            );
            removed_on_open = 0;
            let quarantined: BTreeSet<CodeHash> = gc.quarantined.iter().map(|c| c.hash).collect();
            assert_eq!(quarantined, corrupt, "round {round}");
            for hash in &corrupt {
                assert!(
                    store.get(hash).unwrap().is_none(),
                    "quarantined objects are gone"
                );
            }
        } else {
            drop(store);
            store = DirStore::open(&dir).unwrap();
            removed_on_open = leftovers;
        }
        // Every leftover is gone: removed by gc (which counted them above) or by the open.
        assert_eq!(
            fs::read_dir(dir.join("tmp")).unwrap().count(),
            0,
            "round {round}"
        );
        detected += leftovers;
        for code in &codes {
            let rewritten = store.put(code).unwrap();
            let h = code.hash();
            assert_eq!(
                rewritten,
                corrupt.contains(&h) || absent.contains(&h),
                "round {round}"
            );
        }
        assert!(store.verify().unwrap().is_ok(), "round {round}: recovered");
    }
    assert_eq!(injected, 1000);
    assert_eq!(detected, 1000, "every fault was detected");
    assert_eq!(seen.len(), FAULTS.len(), "every kind of fault was injected");
    // Swaps damage two objects each.
    assert!(damaged > 800, "{damaged}");
    let quarantine = dir.join("quarantine");
    assert!(
        fs::read_dir(&quarantine).unwrap().count() > 0,
        "gc kept the evidence"
    );
}

fn truncate(path: &PathBuf, len: usize) {
    fs::OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(len as u64)
        .unwrap();
}

// ---------------------------------------------------------------------------------------------
// Through the runtime

fn config_with(store: Arc<dyn CodeStore>) -> RuntimeConfig {
    let mut config = RuntimeConfig::new();
    config.code_store(store).max_concurrent_calls(2);
    config
}

#[test]
fn a_by_hash_call_resolves_through_the_store_in_a_fresh_runtime() {
    let tmp = tempfile::tempdir().unwrap();
    let code = abi_code();
    let call = code.closure("echo", &()).unwrap().call(&(1, 2)).unwrap();

    // The first receiver gets the code inline and keeps it in its store.
    let first = Runtime::new(&config_with(Arc::new(DirStore::open(tmp.path()).unwrap()))).unwrap();
    first.run(&call).unwrap();
    let stats = first.stats();
    assert_eq!((stats.compiles, stats.store_puts), (1, 1), "{stats:?}");
    drop(first);

    // A fresh runtime, with only the store, runs the same call by hash.
    let store = Arc::new(DirStore::open(tmp.path()).unwrap());
    let second = Runtime::new(&config_with(store)).unwrap();
    let out = second.run(&call.by_reference()).unwrap();
    assert_eq!(out.decode::<(u8, u8)>().unwrap(), (1, 2));
    let stats = second.stats();
    assert_eq!((stats.store_reads, stats.compiles), (1, 1), "{stats:?}");
    // The module is in memory now: the store is not read again.
    second.run(&call.by_reference()).unwrap();
    assert_eq!(second.stats().store_reads, 1);
    assert_eq!(second.stats().memory_hits, 1);
}

#[test]
fn a_missing_hash_fails_naming_it() {
    let code = abi_code();
    let call = code
        .function("echo")
        .unwrap()
        .call(&())
        .unwrap()
        .by_reference();
    let rt = Runtime::new(&config_with(Arc::new(MemoryStore::new()))).unwrap();
    let err = rt.run(&call).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::CodeNotFound);
    assert_eq!(err.code_hash(), Some(code.hash()));
    assert!(err.to_string().contains(&code.hash().to_string()), "{err}");
    assert!(err.to_string().contains("code store"), "{err}");
    assert_eq!(rt.stats().compiles, 0);
}

#[test]
fn a_corrupt_object_fails_the_call_naming_it_and_reaches_no_compiler() {
    let tmp = tempfile::tempdir().unwrap();
    let store = DirStore::open(tmp.path()).unwrap();
    let code = abi_code();
    store.put(&code).unwrap();
    let path = store.object_path(&code.hash());
    let mut bytes = fs::read(&path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x80;
    fs::write(&path, bytes).unwrap();

    let rt = Runtime::new(&config_with(Arc::new(store))).unwrap();
    let call = code
        .function("echo")
        .unwrap()
        .call(&())
        .unwrap()
        .by_reference();
    let err = rt.run(&call).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::StoreCorrupt, "{err}");
    assert_eq!(err.code_hash(), Some(code.hash()));
    assert!(err.to_string().contains(&code.hash().to_string()), "{err}");
    assert_eq!(rt.stats().compiles, 0, "nothing reached the compiler");
    assert_eq!(ErrorKind::StoreCorrupt.as_str(), "store-corrupt");
}

#[test]
fn loaded_and_inline_code_is_put_into_the_store() {
    let store = Arc::new(MemoryStore::new());
    let rt = Runtime::new(&config_with(store.clone())).unwrap();
    let abi = abi_code();
    rt.load(&abi).unwrap();
    assert!(store.contains(&abi.hash()).unwrap());
    let add = Code::new(read(WAT_ADD)).unwrap();
    rt.run(&add.closure("add", &40).unwrap().call(&(2,)).unwrap())
        .unwrap();
    assert!(store.contains(&add.hash()).unwrap());
    assert_eq!(rt.stats().store_puts, 2);

    // Inline bytes that do not match their hash are refused and not stored.
    let forged = wasmpickle::format::CodeRef::inline(small(1).hash(), abi.wasm().clone()).unwrap();
    let closure = wasmpickle::Closure::new(forged, "echo", &()).unwrap();
    let err = rt.run(&closure.call(&()).unwrap()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::HashMismatch, "{err}");
    assert!(!store.contains(&small(1).hash()).unwrap());
}

/// A store is not trusted to return what it was asked for.
#[test]
fn a_store_that_returns_the_wrong_module_is_caught() {
    #[derive(Debug)]
    struct Liar(Code);
    impl CodeStore for Liar {
        fn put(&self, _: &Code) -> wasmpickle::Result<bool> {
            Ok(false)
        }
        fn get(&self, _: &CodeHash) -> wasmpickle::Result<Option<Code>> {
            Ok(Some(self.0.clone()))
        }
        fn contains(&self, _: &CodeHash) -> wasmpickle::Result<bool> {
            Ok(true)
        }
        fn list(&self) -> wasmpickle::Result<Vec<CodeHash>> {
            Ok(vec![self.0.hash()])
        }
        fn remove(&self, _: &CodeHash) -> wasmpickle::Result<bool> {
            Ok(false)
        }
    }
    let rt = Runtime::new(&config_with(Arc::new(Liar(small(3))))).unwrap();
    let code = abi_code();
    let err = rt
        .run(
            &code
                .function("echo")
                .unwrap()
                .call(&())
                .unwrap()
                .by_reference(),
        )
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::StoreCorrupt, "{err}");
    assert_eq!(err.code_hash(), Some(code.hash()));
    assert_eq!(rt.stats().compiles, 0);
}

// ---------------------------------------------------------------------------------------------
// From the command line

mod cli {
    use std::fs;
    use std::path::Path;
    use std::process::Output;

    use wasmpickle::{Code, DirStore};
    use wasmpickle_test_artifacts::{MATH, WAT_ADD, read};

    use crate::support::wasmpickle_cli;

    fn text(bytes: &[u8]) -> String {
        String::from_utf8(bytes.to_vec()).expect("UTF-8 output")
    }

    fn ok(out: &Output) -> String {
        assert!(out.status.success(), "{}", text(&out.stderr));
        text(&out.stdout)
    }

    fn s(path: &Path) -> &str {
        path.to_str().expect("temporary paths are UTF-8")
    }

    #[test]
    fn put_get_ls_verify_gc() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("store");
        let store = s(&dir);
        let math = Code::new(read(MATH)).unwrap();
        let add = Code::new(read(WAT_ADD)).unwrap();

        let put = ok(&wasmpickle_cli(
            &["store", "put", MATH, WAT_ADD, "--store", store],
            None,
        ));
        assert_eq!(put, format!("{}\n{}\n", math.hash(), add.hash()));
        // Idempotent.
        let again = ok(&wasmpickle_cli(
            &["store", "put", MATH, "--store", store],
            None,
        ));
        assert_eq!(again, format!("{}\n", math.hash()));

        let mut sorted = [math.hash(), add.hash()];
        sorted.sort();
        let ls = ok(&wasmpickle_cli(&["store", "ls", "--store", store], None));
        assert_eq!(ls, format!("{}\n{}\n", sorted[0], sorted[1]));
        let json: serde_json::Value = serde_json::from_str(&ok(&wasmpickle_cli(
            &["store", "ls", "--json", "--store", store],
            None,
        )))
        .unwrap();
        let math_entry = json
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["hash"] == math.hash().to_string())
            .unwrap();
        assert_eq!(math_entry["bytes"], math.wasm().len());

        // get, by `sha256:<hex>` or bare hex, to a file or stdout.
        let out = tmp.path().join("back.wasm");
        let hash = math.hash().to_string();
        ok(&wasmpickle_cli(
            &["store", "get", &hash, "-o", s(&out), "--store", store],
            None,
        ));
        assert_eq!(fs::read(&out).unwrap(), &math.wasm()[..]);
        let bytes = wasmpickle_cli(
            &["store", "get", &add.hash().to_hex(), "--store", store],
            None,
        );
        assert!(bytes.status.success(), "{}", text(&bytes.stderr));
        assert_eq!(bytes.stdout, &add.wasm()[..]);
        let missing = Code::new(wat::parse_str("(module)").unwrap())
            .unwrap()
            .hash();
        let err = wasmpickle_cli(
            &["store", "get", &missing.to_string(), "--store", store],
            None,
        );
        assert_eq!(err.status.code(), Some(1));
        assert!(
            text(&err.stderr).contains(&missing.to_string()),
            "{}",
            text(&err.stderr)
        );

        assert_eq!(
            ok(&wasmpickle_cli(
                &["store", "verify", "--store", store],
                None
            )),
            ""
        );

        // Damage one object and leave a crashed write behind.
        let opened = DirStore::open(&dir).unwrap();
        let object = opened.object_path(&add.hash());
        drop(opened);
        let mut damaged = fs::read(&object).unwrap();
        damaged.truncate(damaged.len() - 1);
        fs::write(&object, damaged).unwrap();
        fs::write(dir.join("tmp/put-99999-0.tmp"), b"partial").unwrap();

        let verify = wasmpickle_cli(&["store", "verify", "--store", store], None);
        assert_eq!(verify.status.code(), Some(1), "verify fails on damage");
        let lines = text(&verify.stdout);
        assert_eq!(lines.lines().count(), 1, "{lines}");
        assert!(lines.starts_with(&add.hash().to_string()), "{lines}");
        assert!(
            text(&verify.stderr).contains("1 corrupt"),
            "{}",
            text(&verify.stderr)
        );
        let err = wasmpickle_cli(
            &["store", "get", &add.hash().to_string(), "--store", store],
            None,
        );
        assert_eq!(err.status.code(), Some(1));
        assert!(
            err.stdout.is_empty(),
            "nothing of a corrupt object is written"
        );
        assert!(
            text(&err.stderr).contains("corrupt"),
            "{}",
            text(&err.stderr)
        );

        // Opening the store for verify already removed the leftover; gc quarantines.
        let gc = ok(&wasmpickle_cli(&["store", "gc", "--store", store], None));
        assert!(!gc.contains("removed"), "{gc}");
        assert!(gc.contains(&format!("quarantined {}", add.hash())), "{gc}");
        assert_eq!(
            ok(&wasmpickle_cli(
                &["store", "verify", "--store", store],
                None
            )),
            ""
        );
        ok(&wasmpickle_cli(
            &["store", "put", WAT_ADD, "--store", store],
            None,
        ));
        let ls = ok(&wasmpickle_cli(&["store", "ls", "--store", store], None));
        assert_eq!(ls.lines().count(), 2);
    }

    #[test]
    fn gc_reports_leftovers() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("store");
        ok(&wasmpickle_cli(
            &["store", "put", WAT_ADD, "--store", s(&dir)],
            None,
        ));
        // Written after the last open, as by a process that died mid-put just now.
        fs::write(dir.join("tmp/put-424242-1.tmp"), b"partial").unwrap();
        let gc = wasmpickle_cli(&["store", "gc", "--store", s(&dir)], None);
        assert_eq!(ok(&gc), "removed tmp/put-424242-1.tmp\n");
        assert!(
            text(&gc.stderr).contains("1 leftovers removed"),
            "{}",
            text(&gc.stderr)
        );
        assert!(!dir.join("tmp/put-424242-1.tmp").exists());
    }

    #[test]
    fn readers_want_an_existing_store() {
        let tmp = tempfile::tempdir().unwrap();
        let missing = tmp.path().join("nope");
        for cmd in ["ls", "verify", "gc"] {
            let out = wasmpickle_cli(&["store", cmd, "--store", s(&missing)], None);
            assert_eq!(out.status.code(), Some(1), "{cmd}");
            assert!(
                text(&out.stderr).contains("not a wasmpickle code store"),
                "{cmd}"
            );
        }
        assert!(!missing.exists(), "no store was created");
    }

    #[test]
    fn pack_by_ref_into_a_store_then_run_from_it() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("store");
        let pickle = tmp.path().join("call.wpk");
        ok(&wasmpickle_cli(
            &[
                "pack",
                WAT_ADD,
                "--export",
                "add",
                "--env",
                "40",
                "--args",
                "[2]",
                "--by-ref",
                "--store",
                s(&dir),
                "-o",
                s(&pickle),
            ],
            None,
        ));
        let hash = Code::new(read(WAT_ADD)).unwrap().hash();
        assert!(
            fs::metadata(&pickle).unwrap().len() < 200,
            "the pickle names the code"
        );

        // A fresh process with only the store runs it.
        let out = ok(&wasmpickle_cli(
            &["run", s(&pickle), "--store", s(&dir)],
            None,
        ));
        assert_eq!(out, "42\n");

        // Without the store, or with an empty one, the error names the hash.
        for args in [
            vec!["run", s(&pickle)],
            vec!["run", s(&pickle), "--store", s(&tmp.path().join("empty"))],
        ] {
            let out = wasmpickle_cli(&args, None);
            assert_eq!(out.status.code(), Some(1));
            let err = text(&out.stderr);
            assert!(err.starts_with("error[code-not-found]: "), "{err}");
            assert!(err.contains(&hash.to_string()), "{err}");
        }

        // A damaged object is reported as such, naming the hash.
        let object = DirStore::open(&dir).unwrap().object_path(&hash);
        let mut bytes = fs::read(&object).unwrap();
        let at = bytes.len() - 5;
        bytes[at] ^= 0x20;
        fs::write(&object, bytes).unwrap();
        let out = wasmpickle_cli(&["run", s(&pickle), "--store", s(&dir)], None);
        let err = text(&out.stderr);
        assert!(err.starts_with("error[store-corrupt]: "), "{err}");
        assert!(err.contains(&hash.to_string()), "{err}");
    }

    #[test]
    fn run_puts_inline_code_into_the_store() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("store");
        let inline = tmp.path().join("inline.wpk");
        let by_ref = tmp.path().join("by-ref.wpk");
        for (path, extra) in [(&inline, None), (&by_ref, Some("--by-ref"))] {
            let mut args = vec![
                "pack", WAT_ADD, "--export", "add", "--env", "1", "--args", "[2]",
            ];
            args.extend(extra);
            args.extend(["-o", s(path)]);
            ok(&wasmpickle_cli(&args, None));
        }
        // The by-ref pickle cannot run yet; the inline one runs and leaves its code behind.
        let out = wasmpickle_cli(&["run", s(&by_ref), "--store", s(&dir)], None);
        assert_eq!(out.status.code(), Some(1));
        assert_eq!(
            ok(&wasmpickle_cli(
                &["run", s(&inline), "--store", s(&dir)],
                None
            )),
            "3\n"
        );
        assert_eq!(
            ok(&wasmpickle_cli(
                &["run", s(&by_ref), "--store", s(&dir)],
                None
            )),
            "3\n"
        );
    }
}

/// The object layout of docs/storage.md, written and read by hand: a store of layout 1 stays
/// readable.
#[test]
fn the_object_layout_is_as_documented() {
    use sha2::{Digest, Sha256};
    let tmp = tempfile::tempdir().unwrap();
    let store = DirStore::open(tmp.path()).unwrap();
    assert_eq!(
        fs::read(tmp.path().join("wasmpickle-store")).unwrap(),
        b"wasmpickle code store 1\n"
    );
    let code = small(5);
    let wasm = code.wasm();
    let mut expected = b"wpk-obj\x01".to_vec();
    expected.extend_from_slice(code.hash().as_bytes());
    expected.extend_from_slice(&Sha256::digest(&wasm[..]));
    expected.extend_from_slice(&(wasm.len() as u64).to_le_bytes());
    expected.extend_from_slice(wasm);

    store.put(&code).unwrap();
    let hex = code.hash().to_hex();
    let path = tmp.path().join("objects").join(&hex[..2]).join(&hex[2..]);
    assert_eq!(store.object_path(&code.hash()), path);
    assert_eq!(
        fs::read(&path).unwrap(),
        expected,
        "put writes the documented bytes"
    );
    assert_eq!(DirStore::HEADER_BYTES, 80);

    // An object written by hand is read back.
    let other = small(6);
    let hex = other.hash().to_hex();
    let mut bytes = b"wpk-obj\x01".to_vec();
    bytes.extend_from_slice(other.hash().as_bytes());
    bytes.extend_from_slice(&Sha256::digest(&other.wasm()[..]));
    bytes.extend_from_slice(&(other.wasm().len() as u64).to_le_bytes());
    bytes.extend_from_slice(other.wasm());
    fs::create_dir_all(tmp.path().join("objects").join(&hex[..2])).unwrap();
    fs::write(
        tmp.path().join("objects").join(&hex[..2]).join(&hex[2..]),
        bytes,
    )
    .unwrap();
    assert_eq!(
        store.get(&other.hash()).unwrap().unwrap().wasm(),
        other.wasm()
    );
}

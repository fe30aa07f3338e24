//! The compiled cache: a fresh runtime (and a fresh process) loads from disk instead of
//! compiling; artifacts that are damaged, foreign, for another configuration or under another
//! module's name are never loaded and are compiled again; the module table stays within its
//! bound.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use wasmpickle::{Call, Code, CodeHash, ErrorKind, MemoryStore, Runtime, RuntimeConfig};
use wasmpickle_test_artifacts::{MATH, WAT_ADD, read};

use crate::support::math::Scale;
use crate::support::*;

fn scale_call() -> (Code, Call) {
    let code = Code::new(read(MATH)).unwrap();
    let call = code
        .closure("scale", &Scale { factor: 2.5 })
        .unwrap()
        .call(&(4.0,))
        .unwrap();
    (code, call)
}

fn cached_runtime(cache: &Path) -> Runtime {
    Runtime::new(
        RuntimeConfig::new()
            .compiled_cache(cache)
            .max_concurrent_calls(2),
    )
    .unwrap()
}

/// Runs the call in a fresh runtime on `cache` and returns the runtime's statistics.
fn run_fresh(cache: &Path, call: &Call) -> wasmpickle::RuntimeStats {
    let rt = cached_runtime(cache);
    let out = rt.run(call).unwrap();
    assert_eq!(out.decode::<f64>().unwrap(), 10.0);
    rt.stats()
}

/// The one `<fingerprint>` directory of a cache.
fn fingerprint_dir(cache: &Path) -> PathBuf {
    let dirs: Vec<PathBuf> = fs::read_dir(cache)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.is_dir()
                && p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.len() == 64)
        })
        .collect();
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    dirs.into_iter().next().unwrap()
}

fn artifact_path(cache: &Path, hash: &CodeHash) -> PathBuf {
    fingerprint_dir(cache).join(format!("{}.cwasm", hash.to_hex()))
}

/// Seals `elf` as docs/storage.md specifies: keyed BLAKE3 under the cache's key over the
/// domain string, the fingerprint, the code hash and the artifact, then the magic.
fn seal(cache: &Path, fingerprint: &[u8; 32], hash: &CodeHash, elf: &[u8]) -> Vec<u8> {
    let key: [u8; 32] = fs::read(cache.join("key")).unwrap().try_into().unwrap();
    let mut mac = blake3::Hasher::new_keyed(&key);
    mac.update(b"wasmpickle compiled-cache artifact v1\0");
    mac.update(fingerprint);
    mac.update(hash.as_bytes());
    mac.update(elf);
    let mut out = elf.to_vec();
    out.extend_from_slice(mac.finalize().as_bytes());
    out.extend_from_slice(b"wpk-mac\x01");
    out
}

/// The trailer this suite computes is the one the cache writes: the spec is the format.
#[test]
fn artifacts_are_sealed_as_documented() {
    let tmp = tempfile::tempdir().unwrap();
    let (code, call) = scale_call();
    run_fresh(tmp.path(), &call);
    let written = fs::read(artifact_path(tmp.path(), &code.hash())).unwrap();
    let elf = &written[..written.len() - 40];
    assert_eq!(&elf[..4], b"\x7fELF");
    let fp = fingerprint_of(tmp.path());
    assert_eq!(seal(tmp.path(), &fp, &code.hash(), elf), written);
}

fn fingerprint_of(cache: &Path) -> [u8; 32] {
    let name = fingerprint_dir(cache);
    let hex = name.file_name().unwrap().to_str().unwrap();
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap();
    }
    out
}

#[test]
fn a_second_runtime_loads_from_disk_without_compiling() {
    let tmp = tempfile::tempdir().unwrap();
    let (code, call) = scale_call();
    let first = run_fresh(tmp.path(), &call);
    assert_eq!(
        (
            first.compiles,
            first.disk_hits,
            first.disk_misses,
            first.disk_writes
        ),
        (1, 0, 1, 1),
        "{first:?}"
    );
    assert!(artifact_path(tmp.path(), &code.hash()).is_file());

    let second = run_fresh(tmp.path(), &call);
    assert_eq!((second.compiles, second.disk_hits), (0, 1), "{second:?}");
    // The same answer and the same fuel, compiled or loaded.
    let a = cached_runtime(tmp.path()).run(&call).unwrap();
    let b = runtime().run(&call).unwrap();
    assert_eq!(a, b);

    // A by-hash call needs no code at all when the cache has the module.
    let rt = cached_runtime(tmp.path());
    rt.run(&call.by_reference()).unwrap();
    assert_eq!((rt.stats().compiles, rt.stats().disk_hits), (0, 1));
}

#[test]
fn a_fresh_process_loads_from_disk_without_compiling() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, call) = scale_call();
    let pickle = tmp.path().join("call.wpk");
    fs::write(&pickle, call.to_bytes()).unwrap();
    let cache = tmp.path().join("cache");
    let args = [
        "run",
        "--cache",
        cache.to_str().unwrap(),
        pickle.to_str().unwrap(),
    ];
    let log = Some("warn,wasmpickle=debug");

    let cold = wasmpickle_cli(&args, log);
    let cold_log = String::from_utf8_lossy(&cold.stderr);
    assert!(cold.status.success(), "{cold_log}");
    assert_eq!(String::from_utf8_lossy(&cold.stdout), "10.0\n");
    assert!(cold_log.contains("compiled module"), "{cold_log}");
    assert!(cold_log.contains("wrote compiled artifact"), "{cold_log}");

    let warm = wasmpickle_cli(&args, log);
    let warm_log = String::from_utf8_lossy(&warm.stderr);
    assert!(warm.status.success(), "{warm_log}");
    assert_eq!(warm.stdout, cold.stdout);
    assert!(warm_log.contains("compiled cache hit"), "{warm_log}");
    assert!(
        !warm_log.contains("compiled module"),
        "compiled again:\n{warm_log}"
    );
}

#[test]
fn artifacts_for_another_configuration_are_compiled_again() {
    let tmp = tempfile::tempdir().unwrap();
    let (code, call) = scale_call();
    run_fresh(tmp.path(), &call);
    let path = artifact_path(tmp.path(), &code.hash());
    let ours = fs::read(&path).unwrap();
    let elf = &ours[..ours.len() - 40];

    // Our own artifact, sealed for another engine fingerprint: as if written by a runtime
    // with another configuration and then moved here.
    let mut other = fingerprint_of(tmp.path());
    other[0] ^= 1;
    fs::write(&path, seal(tmp.path(), &other, &code.hash(), elf)).unwrap();
    let stats = run_fresh(tmp.path(), &call);
    assert_eq!(
        (stats.disk_rejects, stats.disk_hits, stats.compiles),
        (1, 0, 1),
        "{stats:?}"
    );

    // An artifact compiled by an engine without fuel metering, correctly sealed for our
    // fingerprint: the MAC passes, and wasmtime's own check refuses it.
    let mut config = wasmtime::Config::new();
    config.consume_fuel(false).epoch_interruption(true);
    let engine = wasmtime::Engine::new(&config).unwrap();
    let foreign = engine.precompile_module(code.wasm()).unwrap();
    let fp = fingerprint_of(tmp.path());
    fs::write(&path, seal(tmp.path(), &fp, &code.hash(), &foreign)).unwrap();
    let stats = run_fresh(tmp.path(), &call);
    assert_eq!(
        (stats.disk_rejects, stats.disk_hits, stats.compiles),
        (1, 0, 1),
        "{stats:?}"
    );

    // Each time the artifact was rewritten, so the next runtime loads it.
    assert_eq!(run_fresh(tmp.path(), &call).disk_hits, 1);
}

#[test]
fn damaged_artifacts_are_never_loaded() {
    let tmp = tempfile::tempdir().unwrap();
    let (code, call) = scale_call();
    run_fresh(tmp.path(), &call);
    let path = artifact_path(tmp.path(), &code.hash());
    let good = fs::read(&path).unwrap();
    let elf_len = good.len() - 40;

    let damaged: Vec<(&str, Vec<u8>)> = vec![
        ("a flipped byte in the code", {
            let mut b = good.clone();
            b[elf_len / 2] ^= 0x10;
            b
        }),
        ("a flipped byte in the MAC", {
            let mut b = good.clone();
            b[elf_len + 3] ^= 0x01;
            b
        }),
        ("truncated", good[..good.len() / 2].to_vec()),
        ("empty", Vec::new()),
        (
            "a bare wasmtime artifact without our trailer",
            good[..elf_len].to_vec(),
        ),
        ("garbage appended", [&good[..], b"more"].concat()),
    ];
    for (what, bytes) in damaged {
        fs::write(&path, &bytes).unwrap();
        let stats = run_fresh(tmp.path(), &call);
        assert_eq!(
            (stats.disk_rejects, stats.disk_hits, stats.compiles),
            (1, 0, 1),
            "{what}: {stats:?}"
        );
        assert_eq!(
            fs::read(&path).unwrap().len(),
            good.len(),
            "{what}: rewritten"
        );
        assert_eq!(run_fresh(tmp.path(), &call).disk_hits, 1, "{what}");
    }
}

#[test]
fn an_artifact_under_another_modules_name_is_not_run() {
    let tmp = tempfile::tempdir().unwrap();
    let add = Code::new(read(WAT_ADD)).unwrap();
    let abi = abi_code();
    let rt = cached_runtime(tmp.path());
    rt.load(&add).unwrap();
    rt.load(&abi).unwrap();
    drop(rt);
    // `add`'s artifact copied over `abi`'s: if it were loaded, `echo` would be missing.
    fs::copy(
        artifact_path(tmp.path(), &add.hash()),
        artifact_path(tmp.path(), &abi.hash()),
    )
    .unwrap();
    let rt = cached_runtime(tmp.path());
    let call = abi.closure("echo", &()).unwrap().call(&(7,)).unwrap();
    assert_eq!(rt.run(&call).unwrap().decode::<(u8,)>().unwrap(), (7,));
    let stats = rt.stats();
    assert_eq!((stats.disk_rejects, stats.compiles), (1, 1), "{stats:?}");
}

#[test]
fn an_artifact_from_another_cache_is_not_run() {
    let tmp = tempfile::tempdir().unwrap();
    let (mine, theirs) = (tmp.path().join("mine"), tmp.path().join("theirs"));
    let (code, call) = scale_call();
    run_fresh(&mine, &call);
    // Another cache directory has its own key.
    let _ = cached_runtime(&theirs);
    assert_ne!(
        fs::read(mine.join("key")).unwrap(),
        fs::read(theirs.join("key")).unwrap()
    );
    fs::copy(
        artifact_path(&mine, &code.hash()),
        fingerprint_dir(&theirs).join(format!("{}.cwasm", code.hash().to_hex())),
    )
    .unwrap();
    let stats = run_fresh(&theirs, &call);
    assert_eq!(
        (stats.disk_rejects, stats.disk_hits, stats.compiles),
        (1, 0, 1),
        "{stats:?}"
    );
}

#[cfg(unix)]
#[test]
fn the_key_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let _ = cached_runtime(&cache);
    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&cache.join("key")), 0o600);
    assert_eq!(mode(&cache), 0o700);
    assert_eq!(fs::metadata(cache.join("key")).unwrap().len(), 32);
    let key = fs::read(cache.join("key")).unwrap();
    // The same key on every open; a key readable by others is replaced.
    let _ = cached_runtime(&cache);
    assert_eq!(fs::read(cache.join("key")).unwrap(), key);
    fs::set_permissions(cache.join("key"), fs::Permissions::from_mode(0o644)).unwrap();
    let _ = cached_runtime(&cache);
    assert_ne!(fs::read(cache.join("key")).unwrap(), key);
    assert_eq!(mode(&cache.join("key")), 0o600);
}

/// `n` small modules that follow the guest contract, each distinct.
fn tiny(n: usize) -> Code {
    Code::new(wat(&ABI_WAT.replace(
        "(memory (export \"memory\") 1)",
        &format!("(memory (export \"memory\") 1) (global i32 (i32.const {n}))"),
    )))
    .unwrap()
}

#[test]
fn the_module_table_keeps_the_most_recently_used() {
    let store = Arc::new(MemoryStore::new());
    let rt = Runtime::new(
        RuntimeConfig::new()
            .max_cached_modules(2)
            .code_store(store)
            .max_concurrent_calls(2),
    )
    .unwrap();
    let codes: Vec<Code> = (0..3).map(tiny).collect();
    let echo = |c: &Code| {
        c.function("echo")
            .unwrap()
            .call(&(1,))
            .unwrap()
            .by_reference()
    };
    rt.load(&codes[0]).unwrap();
    rt.load(&codes[1]).unwrap();
    rt.run(&echo(&codes[0])).unwrap(); // 0 is now more recent than 1
    rt.load(&codes[2]).unwrap();
    assert!(rt.contains(&codes[0].hash()));
    assert!(
        !rt.contains(&codes[1].hash()),
        "the least recently used went"
    );
    assert!(rt.contains(&codes[2].hash()));
    assert_eq!(rt.stats().evictions, 1);
    assert_eq!(rt.stats().compiles, 3);

    // The evicted module comes back from the store.
    rt.run(&echo(&codes[1])).unwrap();
    assert_eq!((rt.stats().store_reads, rt.stats().compiles), (1, 4));
    assert_eq!(rt.stats().evictions, 2);
}

#[test]
fn an_evicted_module_comes_back_from_the_compiled_cache() {
    let tmp = tempfile::tempdir().unwrap();
    let rt = Runtime::new(
        RuntimeConfig::new()
            .max_cached_modules(1)
            .compiled_cache(tmp.path())
            .max_concurrent_calls(2),
    )
    .unwrap();
    let (a, b) = (tiny(10), tiny(11));
    rt.load(&a).unwrap();
    rt.load(&b).unwrap();
    assert!(!rt.contains(&a.hash()));
    rt.run(
        &a.function("echo")
            .unwrap()
            .call(&(1,))
            .unwrap()
            .by_reference(),
    )
    .unwrap();
    let stats = rt.stats();
    assert_eq!((stats.compiles, stats.disk_hits), (2, 1), "{stats:?}");
}

#[test]
fn the_module_size_cap_holds_on_every_path() {
    let (code, call) = scale_call();
    let store = Arc::new(MemoryStore::new());
    wasmpickle::CodeStore::put(&*store, &code).unwrap();
    let rt = Runtime::new(
        RuntimeConfig::new()
            .max_module_bytes(1000)
            .code_store(store)
            .max_concurrent_calls(2),
    )
    .unwrap();
    for call in [call.clone(), call.by_reference()] {
        let err = rt.run(&call).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidModule, "{err}");
        assert!(
            err.to_string()
                .contains("more than this runtime compiles (1000)"),
            "{err}"
        );
    }
    assert_eq!(rt.stats().compiles, 0);
}

//! Worker processes and the pool, process against process: supervision under SIGKILL, poison
//! calls, deadlines, code crossing once, framing limits and garbage on sockets, the TCP
//! handshake, remote workers, the async API and the `map` and `worker` commands.
//!
//! Workers are the `wasmpickle` CLI built by `cli_binary()`. They share one compiled cache per
//! test process, so a respawned worker loads the math guest instead of compiling it again.

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde::Serialize;
use wasmpickle::{Call, CallLimits, Code, Limits, Runtime, RuntimeConfig, SigningKey};
use wasmpickle_pool::frame::{read_frame, write_frame};
use wasmpickle_pool::{Address, Client, ErrorKind, Pool, PoolConfig};

use crate::support::math::{Fold, Scale};
use crate::support::*;

fn math() -> Code {
    Code::from_file(wasmpickle_test_artifacts::MATH).expect("the math guest loads")
}

/// A compiled cache shared by every worker of this test process.
fn cache_dir() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().expect("a temporary directory"))
        .path()
}

/// A pool of `n` CLI workers sharing the compiled cache, their logs silenced.
fn config(n: usize) -> PoolConfig {
    let mut config = PoolConfig::new();
    config
        .workers(n)
        .worker_program(cli_binary())
        .worker_arg("--cache")
        .worker_arg(cache_dir())
        .worker_logs(false);
    config
}

/// What the same calls give in this process, with wasmpickle's own runtime.
fn in_process(calls: &[Call]) -> Vec<(Vec<u8>, u64)> {
    let runtime = Runtime::new(&RuntimeConfig::new()).expect("runtime");
    calls
        .iter()
        .map(|c| {
            let o = runtime.run(c).expect("the call runs in process");
            (o.value().to_vec(), o.fuel_used())
        })
        .collect()
}

fn kill9(pid: u32) {
    let status = Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill -9 {pid} failed");
}

fn process_exists(pid: u32) -> bool {
    Command::new("kill")
        .args(["-0", &pid.to_string()])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// `n` calls of `fold_bytes` over varied data (up to 64 KiB) and seeds.
fn fold_calls(code: &Code, n: usize) -> Vec<Call> {
    (0..n)
        .map(|i| {
            let closure = code
                .closure(
                    "fold_bytes",
                    &Fold {
                        seed: i as u64 * 7919,
                        multiplier: 0x100_0000_01b3 + (i as u64 % 5),
                    },
                )
                .unwrap();
            let data: Vec<u8> = (0..(i * 613 % 65536)).map(|j| (i * 31 + j) as u8).collect();
            closure.call(&(serde_bytes::ByteBuf::from(data),)).unwrap()
        })
        .collect()
}

#[test]
fn sigkill_of_a_busy_worker_every_50_calls_loses_and_repeats_nothing() {
    let code = math();
    let calls = fold_calls(&code, 1000);
    let expected = in_process(&calls);

    let pool = Pool::new(&config(3)).expect("the pool starts");
    let mut seen = HashSet::new();
    let mut results = vec![None; calls.len()];
    let finished = std::sync::atomic::AtomicBool::new(false);
    let killed = std::thread::scope(|scope| {
        // The killer watches the pool's own count of answered calls, so that it keeps pace
        // with the workers whatever the thread reading results does; at every 50th answer it
        // kills a busy worker (never the same process twice).
        let killer = scope.spawn(|| {
            let mut killed = HashSet::new();
            let mut mark = 50;
            while !finished.load(std::sync::atomic::Ordering::Acquire) && mark < calls.len() {
                let stats = pool.workers();
                let answered: u64 = stats.iter().map(|w| w.calls).sum();
                if answered >= mark as u64 {
                    let victim = stats
                        .iter()
                        .filter(|w| w.alive && w.in_flight > 0)
                        .filter_map(|w| w.pid)
                        .find(|pid| !killed.contains(pid));
                    if let Some(pid) = victim {
                        kill9(pid);
                        killed.insert(pid);
                        mark += 50;
                    }
                }
                std::thread::sleep(Duration::from_micros(200));
            }
            killed
        });
        let mut batch = pool.batch();
        batch.submit_all(calls.iter().cloned());
        for (index, result) in batch.by_ref() {
            assert!(seen.insert(index), "call {index} was answered twice");
            results[index] = Some(result.unwrap_or_else(|e| panic!("call {index} failed: {e:?}")));
        }
        finished.store(true, std::sync::atomic::Ordering::Release);
        killer.join().unwrap()
    });
    assert_eq!(seen.len(), calls.len(), "every call answered");
    for (i, (result, (value, fuel))) in results.iter().zip(&expected).enumerate() {
        let outcome = result.as_ref().expect("every call has a result");
        assert_eq!(
            outcome.value(),
            &value[..],
            "call {i}: the bytes of a single-process run"
        );
        assert_eq!(
            outcome.fuel_used(),
            *fuel,
            "call {i}: the fuel of a single-process run"
        );
    }
    // A worker killed after its last call is found dead by the pool's watchdog, not by a
    // call; give it a moment.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut stats = pool.workers();
    while stats.iter().map(|w| w.restarts).sum::<u64>() < killed.len() as u64
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(20));
        stats = pool.workers();
    }
    let restarts: u64 = stats.iter().map(|w| w.restarts).sum();
    let served: u64 = stats.iter().map(|w| w.calls).sum();
    // 19 marks. A kill comes at the first moment after its mark that a worker is busy, so
    // on a loaded machine the last ones may not fit before the map ends.
    eprintln!("{} busy workers killed", killed.len());
    assert!(killed.len() >= 15, "only {} kills happened", killed.len());
    assert_eq!(
        restarts,
        killed.len() as u64,
        "one restart per kill: {stats:?}"
    );
    assert_eq!(served, calls.len() as u64, "answers counted once each");
    assert!(killed.iter().all(|pid| !process_exists(*pid)));
}

#[test]
fn a_poison_call_fails_after_the_retry_budget_and_the_rest_succeed() {
    let code = math();
    let scale = code.closure("scale", &Scale { factor: 3.0 }).unwrap();
    let mut calls: Vec<Call> = (0..40)
        .map(|i| scale.call(&(f64::from(i),)).unwrap())
        .collect();
    let poison = code.function("describe").unwrap().call(&()).unwrap();
    calls.insert(17, poison.clone());

    let mut cfg = config(2);
    cfg.worker_env("WASMPICKLE_WORKER_ABORT_ON_EXPORT", "describe")
        .retries(2);
    let pool = Pool::new(&cfg).unwrap();
    let results = pool.run_all(calls);

    let err = results[17].as_ref().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::WorkerLost, "{err:?}");
    assert_eq!(err.call_id(), Some(poison.id()));
    assert_eq!(
        err.attempts(),
        3,
        "the budget of 2 retries, plus the first attempt"
    );
    let message = err.to_string();
    assert!(message.contains(&poison.id().to_string()), "{message}");
    assert!(message.contains("SIGABRT"), "{message}");
    for (i, r) in results.iter().enumerate().filter(|(i, _)| *i != 17) {
        let x = if i < 17 { i } else { i - 1 } as f64;
        let y: f64 = r
            .as_ref()
            .expect("an innocent call succeeds")
            .decode()
            .unwrap();
        assert_eq!(y, 3.0 * x);
    }
    // Workers send replies in bursts, so a crash among several calls in flight cannot be
    // pinned on one: those calls run again alone, uncounted. The poison is in at most one
    // such crash, then takes the blame three times, then fails.
    let shared = message.matches("other calls in flight").count();
    assert!(shared <= 1, "{message}");
    let restarts: u64 = pool.workers().iter().map(|w| w.restarts).sum();
    assert_eq!(
        restarts,
        3 + shared as u64,
        "one crash per attempt, then no more: {message}"
    );
}

#[test]
fn a_worker_hung_past_the_pool_deadline_is_killed_and_the_call_fails_by_name() {
    let spin = Code::new(wat(ABI_WAT))
        .unwrap()
        .function("spin")
        .unwrap()
        .call(&())
        .unwrap();
    let echo = abi_code().function("echo").unwrap();
    let mut cfg = config(1);
    // The worker itself would let `spin` run for a minute; the pool gives it 300 ms.
    cfg.limits(
        *Limits::new()
            .fuel(u64::MAX / 2)
            .deadline(Duration::from_secs(60)),
    )
    .call_timeout(Duration::from_millis(300))
    .retries(1);
    let pool = Pool::new(&cfg).unwrap();
    let started = Instant::now();
    let err = pool.run(&spin).unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(20));
    assert_eq!(err.kind(), ErrorKind::WorkerLost, "{err:?}");
    assert_eq!(err.attempts(), 2);
    assert_eq!(err.call_id(), Some(spin.id()));
    assert!(err.to_string().contains("deadline of 300ms"), "{err}");
    // The replacement worker serves the next call.
    let ok = pool.run(&echo.call(&(5,)).unwrap()).unwrap();
    assert_eq!(ok.decode::<(u8,)>().unwrap(), (5,));
}

/// The math guest with a 2 MiB custom section: unknown custom sections are part of the
/// module's identity, so this is a 2 MiB module that must cross as a whole.
fn big_math() -> Code {
    let mut wasm = wasmpickle_test_artifacts::read(wasmpickle_test_artifacts::MATH);
    let name = b"wasmpickle-test.padding";
    let payload = vec![0x5a; 2 << 20];
    let mut body = Vec::new();
    leb(&mut body, name.len() as u64);
    body.extend_from_slice(name);
    body.extend_from_slice(&payload);
    wasm.push(0);
    leb(&mut wasm, body.len() as u64);
    wasm.extend_from_slice(&body);
    Code::new(wasm).expect("the padded module is valid")
}

fn leb(out: &mut Vec<u8>, mut n: u64) {
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

#[test]
fn a_2mb_module_crosses_to_each_worker_once_for_1000_calls() {
    let code = big_math();
    assert!(code.wasm().len() > 2 << 20);
    assert_ne!(
        code.hash(),
        math().hash(),
        "the padding is part of the identity"
    );
    let scale = code.closure("scale", &Scale { factor: 0.5 }).unwrap();
    let pool = Pool::new(&config(2)).unwrap();
    let results = pool.map(&scale, (0..1000).map(|i| (f64::from(i),)));
    for (i, r) in results.iter().enumerate() {
        assert_eq!(r.as_ref().unwrap().decode::<f64>().unwrap(), 0.5 * i as f64);
    }
    let stats = pool.workers();
    assert!(stats.iter().any(|w| w.calls > 0));
    for w in stats.iter().filter(|w| w.calls > 0) {
        assert_eq!(w.code_bytes_sent, code.wasm().len() as u64, "{w:?}");
        assert_eq!(w.modules_sent, 1, "{w:?}");
    }
    assert_eq!(stats.iter().map(|w| w.calls).sum::<u64>(), 1000);
}

#[test]
fn call_failures_come_back_with_their_kind_and_details() {
    let code = math();
    let pool = Pool::new(&config(1)).unwrap();
    let runtime = runtime();

    let fuel = code
        .closure("scale", &Scale { factor: 2.0 })
        .unwrap()
        .call(&(1.0,))
        .unwrap()
        .with_limits(CallLimits::new().with_fuel(10));
    let err = pool.run(&fuel).unwrap_err();
    let local = runtime.run(&fuel).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Call);
    assert_eq!(err.remote_kind(), Some(wasmpickle::ErrorKind::OutOfFuel));
    assert_eq!(err.remote_kind(), Some(local.kind()));
    assert_eq!(err.fuel_used(), local.fuel_used());
    assert_eq!(err.call_id(), Some(fuel.id()));

    #[derive(Serialize)]
    struct Div {
        divisor: i64,
    }
    let div = code.closure("checked_div", &Div { divisor: 0 }).unwrap();
    let err = pool.run(&div.call(&(7,)).unwrap()).unwrap_err();
    assert_eq!(err.remote_kind(), Some(wasmpickle::ErrorKind::GuestError));
    assert_eq!(
        err.guest_failure().unwrap().message,
        "cannot divide 7 by zero"
    );

    let missing = Call::from_bytes(&fuel.to_bytes()).unwrap();
    let missing = wasmpickle::Closure::from_parts(missing.code().clone(), "nope", vec![0xc0])
        .unwrap()
        .call(&())
        .unwrap();
    let err = pool.run(&missing).unwrap_err();
    assert_eq!(err.remote_kind_name(), Some("missing-export"));

    // A call by hash that neither the pool nor the worker can resolve.
    let orphan = abi_code()
        .function("echo")
        .unwrap()
        .by_reference()
        .call(&(1,))
        .unwrap();
    let err = pool.run(&orphan).unwrap_err();
    assert_eq!(err.remote_kind(), Some(wasmpickle::ErrorKind::CodeNotFound));

    // And a success is the same bytes and fuel as in process.
    let ok = code
        .closure("scale", &Scale { factor: 2.0 })
        .unwrap()
        .call(&(21.0,))
        .unwrap();
    let remote = pool.run(&ok).unwrap();
    let local = runtime.run(&ok).unwrap();
    assert_eq!(remote.value(), local.value());
    assert_eq!(remote.fuel_used(), local.fuel_used());
}

#[tokio::test(flavor = "current_thread")]
async fn the_async_api_does_not_block_a_single_threaded_executor() {
    let code = math();
    let scale = code.closure("scale", &Scale { factor: 2.0 }).unwrap();
    let pool = std::sync::Arc::new(Pool::new(&config(2)).unwrap());

    // A task that only makes progress while the executor's one thread is free.
    let ticks = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let ticker = {
        let ticks = ticks.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(1)).await;
                ticks.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        })
    };
    let results = pool
        .map_async(&scale, (0..300).map(|i| (f64::from(i),)))
        .await;
    for (i, r) in results.iter().enumerate() {
        assert_eq!(r.as_ref().unwrap().decode::<f64>().unwrap(), 2.0 * i as f64);
    }
    let singles: Vec<_> = (0..20)
        .map(|i| pool.run_async(&scale.call(&(f64::from(i),)).unwrap()))
        .collect();
    for (i, f) in singles.into_iter().enumerate() {
        assert_eq!(f.await.unwrap().decode::<f64>().unwrap(), 2.0 * i as f64);
    }
    assert!(
        ticks.load(std::sync::atomic::Ordering::Relaxed) > 0,
        "the executor was blocked while the pool worked"
    );
    ticker.abort();
}

#[test]
fn dropping_the_pool_stops_its_workers() {
    let pool = Pool::new(&config(2)).unwrap();
    let pids: Vec<u32> = pool.workers().iter().filter_map(|w| w.pid).collect();
    assert_eq!(pids.len(), 2);
    assert!(pids.iter().all(|p| process_exists(*p)));
    drop(pool);
    assert!(
        pids.iter().all(|p| !process_exists(*p)),
        "workers outlived the pool"
    );
}

#[test]
fn a_program_that_is_not_a_worker_is_refused() {
    let mut cfg = config(1);
    cfg.worker_program("/bin/echo");
    let err = Pool::new(&cfg).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Protocol, "{err:?}");
    assert!(err.to_string().contains("/bin/echo"), "{err}");
    assert!(err.to_string().contains("exited with status 0"), "{err}");
    cfg.worker_program("/nonexistent/wasmpickle");
    assert_eq!(Pool::new(&cfg).unwrap_err().kind(), ErrorKind::Io);
}

/// A `wasmpickle worker --listen ADDRESS` process, stopped when dropped.
struct Listening {
    child: Child,
    address: Address,
    _dir: tempfile::TempDir,
}

impl Listening {
    fn start(listen: &str, extra: &[&str]) -> Listening {
        let dir = tempfile::tempdir().unwrap();
        let listen = listen.replace("{dir}", dir.path().to_str().unwrap());
        let mut child = Command::new(cli_binary())
            .args(["worker", "--listen", &listen])
            .args(extra)
            .current_dir(dir.path())
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let address = line
            .trim()
            .strip_prefix("listening ")
            .unwrap_or_else(|| panic!("no address announced: {line:?}"))
            .parse()
            .unwrap();
        Listening {
            child,
            address,
            _dir: dir,
        }
    }

    fn unix_path(&self) -> PathBuf {
        match &self.address {
            Address::Unix(p) => p.clone(),
            other => panic!("not a unix address: {other}"),
        }
    }

    fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .expect("VmRSS in /proc")
    }
}

impl Drop for Listening {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The frames of a session's start: `Hello`, as docs/protocol.md shows it byte by byte.
fn hello_frame() -> Vec<u8> {
    let mut body = vec![0x10, 0x82];
    body.extend_from_slice(b"\xa8protocol\x01\xa6client\xa4test");
    let mut frame = Vec::new();
    write_frame(&mut frame, &body).unwrap();
    frame
}

/// Reads frames until the peer closes; returns the type bytes seen.
fn drain_types(stream: &mut UnixStream) -> Vec<u8> {
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut types = Vec::new();
    let mut buf = Vec::new();
    loop {
        match read_frame(stream, 1 << 20, &mut buf) {
            Ok(true) => types.push(buf[0]),
            Ok(false) => return types,
            Err(e) => panic!("the worker did not close cleanly: {e:?}"),
        }
    }
}

fn echo_call(x: u8) -> Call {
    abi_code().function("echo").unwrap().call(&(x,)).unwrap()
}

#[test]
fn garbage_on_one_connection_closes_it_and_the_worker_serves_the_others() {
    let worker = Listening::start("unix:{dir}/w.sock", &[]);
    let mut good = Client::connect(&worker.address, None).unwrap();
    assert_eq!(good.run(&echo_call(1)).unwrap().value(), b"\x91\x01");

    // Not a frame at all: "GET " read as a length is over the greeting cap.
    let mut http = UnixStream::connect(worker.unix_path()).unwrap();
    http.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    assert_eq!(drain_types(&mut http), [0x7f], "one Bye, then closed");

    // A well-framed message that is not MessagePack, after a valid Hello.
    let mut junk = UnixStream::connect(worker.unix_path()).unwrap();
    junk.write_all(&hello_frame()).unwrap();
    let mut frame = Vec::new();
    write_frame(&mut frame, b"\x30\xc1\xc1\xc1 not msgpack").unwrap();
    junk.write_all(&frame).unwrap();
    assert_eq!(drain_types(&mut junk), [0x11, 0x7f], "Welcome, Bye, closed");

    // Random bytes.
    let mut noise = UnixStream::connect(worker.unix_path()).unwrap();
    let bytes: Vec<u8> = (0u32..4096)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let _ = noise.write_all(&bytes);
    drain_types(&mut noise);

    // The first connection is still served, and new ones are too.
    assert_eq!(good.run(&echo_call(2)).unwrap().value(), b"\x91\x02");
    let mut late = Client::connect(&worker.address, None).unwrap();
    assert_eq!(late.run(&echo_call(3)).unwrap().value(), b"\x91\x03");
}

#[test]
fn a_frame_over_the_cap_is_refused_without_allocating_it() {
    let worker = Listening::start("unix:{dir}/w.sock", &["--max-frame", "1048576"]);
    let mut good = Client::connect(&worker.address, None).unwrap();
    good.run(&echo_call(1)).unwrap();
    let rss_before = worker.rss_kib();

    for declared in [u32::MAX, (1 << 20) + 1] {
        let mut s = UnixStream::connect(worker.unix_path()).unwrap();
        s.write_all(&hello_frame()).unwrap();
        s.write_all(&declared.to_be_bytes()).unwrap();
        s.write_all(b"0123456789").unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut buf = Vec::new();
        assert!(read_frame(&mut s, 1 << 20, &mut buf).unwrap());
        assert_eq!(buf[0], 0x11, "Welcome");
        assert!(read_frame(&mut s, 1 << 20, &mut buf).unwrap());
        assert_eq!(buf[0], 0x7f, "Bye");
        let text = String::from_utf8_lossy(&buf);
        assert!(text.contains("frame-too-large"), "{text}");
        assert!(
            text.contains(&declared.to_string()) && text.contains("1048576"),
            "{text}"
        );
        assert!(
            !read_frame(&mut s, 1 << 20, &mut buf).unwrap(),
            "then closed"
        );
    }

    // Exactly the cap is allowed: a header promising 1 MiB and ten bytes, then the peer
    // leaves. The connection ends (unexpected EOF) and nothing close to 1 MiB per lie stays.
    for _ in 0..20 {
        let mut s = UnixStream::connect(worker.unix_path()).unwrap();
        s.write_all(&hello_frame()).unwrap();
        s.write_all(&(1u32 << 20).to_be_bytes()).unwrap();
        s.write_all(b"0123456789").unwrap();
    }
    let rss_after = worker.rss_kib();
    assert!(
        rss_after < rss_before + 16 * 1024,
        "RSS grew from {rss_before} KiB to {rss_after} KiB"
    );
    // A 4 GiB header did not take the worker down, and it still serves.
    assert_eq!(good.run(&echo_call(9)).unwrap().value(), b"\x91\x09");
}

#[test]
fn requests_split_into_single_bytes_are_served() {
    let worker = Listening::start("unix:{dir}/w.sock", &[]);
    let mut s = UnixStream::connect(worker.unix_path()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut wire = hello_frame();
    // Ping {id: 7}, then a request type this worker does not know, then Ping {id: 8}.
    for (t, id) in [(0x40u8, 7u8), (0x55, 9), (0x40, 8)] {
        let body = [t, 0x81, 0xa2, b'i', b'd', id];
        write_frame(&mut wire, &body).unwrap();
    }
    for byte in &wire {
        s.write_all(std::slice::from_ref(byte)).unwrap();
        s.flush().unwrap();
    }
    let mut buf = Vec::new();
    let mut next = |s: &mut UnixStream| {
        assert!(read_frame(s, 1 << 20, &mut buf).unwrap());
        buf.clone()
    };
    assert_eq!(next(&mut s)[0], 0x11, "Welcome");
    assert_eq!(next(&mut s), b"\x41\x81\xa2id\x07", "Pong 7");
    let failed = next(&mut s);
    assert_eq!(
        failed[0], 0x32,
        "an unknown request is answered with Failed"
    );
    assert!(String::from_utf8_lossy(&failed).contains("unsupported"));
    assert_eq!(
        next(&mut s),
        b"\x41\x81\xa2id\x08",
        "and the session goes on"
    );

    // Half a frame, then the end: the worker closes its side cleanly and keeps serving.
    let mut half = UnixStream::connect(worker.unix_path()).unwrap();
    half.write_all(&hello_frame()[..5]).unwrap();
    half.shutdown(std::net::Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    half.read_to_end(&mut rest).unwrap();
    let mut again = Client::connect(&worker.address, None).unwrap();
    again.ping().unwrap();
}

fn key_file(dir: &Path, key: &SigningKey) -> PathBuf {
    let path = dir.join("worker.key");
    std::fs::write(&path, format!("{}\n", key.to_text())).unwrap();
    // Key files readable by others are warned about.
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    path
}

#[test]
fn tcp_workers_require_the_shared_key_and_join_pools_by_address() {
    let dir = tempfile::tempdir().unwrap();
    let key = SigningKey::new("pool", &[7; 32]).unwrap();
    let keys = key_file(dir.path(), &key);

    // No key, no TCP listener.
    let out = wasmpickle_cli(&["worker", "--listen", "tcp:127.0.0.1:0"], None);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("requires --key"));

    let worker = Listening::start("tcp:127.0.0.1:0", &["--key", keys.to_str().unwrap()]);
    let mut client = Client::connect(&worker.address, Some(&key)).unwrap();
    assert_eq!(client.run(&echo_call(4)).unwrap().value(), b"\x91\x04");

    let wrong = SigningKey::new("pool", &[8; 32]).unwrap();
    let err = Client::connect(&worker.address, Some(&wrong)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Handshake, "{err:?}");
    let stranger = SigningKey::new("stranger", &[7; 32]).unwrap();
    assert_eq!(
        Client::connect(&worker.address, Some(&stranger))
            .unwrap_err()
            .kind(),
        ErrorKind::Handshake
    );
    assert_eq!(
        Client::connect(&worker.address, None).unwrap_err().kind(),
        ErrorKind::Config
    );
    // Skipping the handshake gets the connection closed, not a session.
    let Address::Tcp(hostport) = &worker.address else {
        unreachable!()
    };
    let mut raw = std::net::TcpStream::connect(hostport).unwrap();
    raw.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    raw.write_all(&hello_frame()).unwrap();
    let mut buf = Vec::new();
    assert!(read_frame(&mut raw, 1 << 20, &mut buf).unwrap());
    assert_eq!(buf[0], 0x7f, "Bye");
    assert!(!read_frame(&mut raw, 1 << 20, &mut buf).unwrap());

    // The worker joins a pool that has no local workers.
    let code = math();
    let scale = code.closure("scale", &Scale { factor: 4.0 }).unwrap();
    let mut cfg = config(0);
    cfg.remote(worker.address.clone(), Some(key.clone()));
    let pool = Pool::new(&cfg).unwrap();
    let results = pool.map(&scale, (0..50).map(|i| (f64::from(i),)));
    for (i, r) in results.iter().enumerate() {
        assert_eq!(r.as_ref().unwrap().decode::<f64>().unwrap(), 4.0 * i as f64);
    }
    let stats = pool.workers();
    assert_eq!(stats[0].address.as_ref(), Some(&worker.address));
    assert_eq!(stats[0].code_bytes_sent, code.wasm().len() as u64);
}

#[test]
fn a_remote_worker_that_dies_mid_map_loses_no_call() {
    let mut worker = Listening::start("unix:{dir}/w.sock", &[]);
    let code = math();
    let calls = fold_calls(&code, 300);
    let expected = in_process(&calls);
    let mut cfg = config(1);
    cfg.remote(worker.address.clone(), None);
    let pool = Pool::new(&cfg).unwrap();
    let mut batch = pool.batch();
    batch.submit_all(calls.iter().cloned());
    let mut results = vec![None; calls.len()];
    let mut n = 0;
    for (index, result) in batch.by_ref() {
        n += 1;
        if n == 40 {
            worker.child.kill().unwrap();
            worker.child.wait().unwrap();
        }
        assert!(results[index].replace(result.unwrap()).is_none());
    }
    for (r, (value, _)) in results.iter().zip(&expected) {
        assert_eq!(r.as_ref().unwrap().value(), &value[..]);
    }
}

#[test]
fn the_map_command_prints_results_in_order_and_counts_code_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let args = dir.path().join("args.jsonl");
    let mut lines: Vec<String> = (0..200).map(|i| format!("[{i}.5]")).collect();
    lines.insert(100, String::new());
    lines.insert(150, r#"["not a number"]"#.to_owned());
    std::fs::write(&args, lines.join("\n") + "\n").unwrap();
    let out = Command::new(cli_binary())
        .args(["map", wasmpickle_test_artifacts::MATH, "--export", "scale"])
        .args(["--env", r#"{"factor": 2.0}"#, "--args-file"])
        .arg(&args)
        .args(["--workers", "2", "--stats", "--cache"])
        .arg(cache_dir())
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(1), "one call failed: {stderr}");
    let got: Vec<&str> = stdout.lines().collect();
    assert_eq!(got.len(), 201, "one line per non-blank input line");
    let mut expect = (0..200)
        .map(|i| format!("{}.0", 2 * i + 1))
        .collect::<Vec<_>>();
    expect.insert(149, String::new());
    for (i, (g, e)) in got.iter().zip(&expect).enumerate() {
        if i == 149 {
            let v: serde_json::Value = serde_json::from_str(g).unwrap();
            assert_eq!(v["error"]["kind"], "bad-input", "{g}");
            assert!(v["error"]["call"].as_str().unwrap().starts_with("sha256:"));
        } else {
            assert_eq!(g, e, "line {i}");
        }
    }
    let module_len = std::fs::metadata(wasmpickle_test_artifacts::MATH)
        .unwrap()
        .len();
    let counted: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("worker "))
        .collect();
    assert_eq!(counted.len(), 2, "{stderr}");
    for line in counted {
        assert!(
            line.contains(&format!("{module_len} code bytes")) || line.contains(": 0 calls"),
            "{line}"
        );
    }
    assert!(stderr.contains("1 of 201 calls failed"), "{stderr}");
    assert!(
        !stderr.contains('\r'),
        "no progress bar off a terminal: {stderr:?}"
    );

    // A bad line is refused before any work, by number.
    std::fs::write(&args, "[1.0]\n[2.0\n").unwrap();
    let out = wasmpickle_cli(
        &[
            "map",
            wasmpickle_test_artifacts::MATH,
            "--export",
            "scale",
            "--args-file",
            args.to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("line 2 of"));
}

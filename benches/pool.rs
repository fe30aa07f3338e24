//! Calls through a pool of worker processes, against a bare pipe echo (the floor), in the same
//! run. The Python peer (multiprocessing with cloudpickle) runs from `scripts/bench-pool`,
//! which also runs this benchmark; figures are quoted in BENCHMARKS.md.
//!
//! Run with `cargo bench --bench pool`. Workers are the release `wasmpickle` binary, built
//! on first use (or `WASMPICKLE_WORKER=PATH` to use another).
//!
//! * `round_trip/pool/scale`: one small call (`scale` of the math guest, by hash, module
//!   already on the worker) through a pool of one worker: pipe, worker, fresh sandbox, and
//!   back (an idle pool runs a blocking call on the caller's thread, without a hand-off to
//!   its dispatcher). `round_trip/client/scale` is the same over a lone [`Client`].
//! * `floor/pipe_echo`: a frame of the same size as that call's `Call` message written to a
//!   child process that reads it and writes it back (this benchmark's own binary, re-run as
//!   a bare echo loop with the same buffered pipes a worker uses): two pipes and two context
//!   switches, nothing else.
//! * `*/add`: the same for `add` of `guest-examples/wat/add.wat`, a guest written by hand
//!   without the SDK: the same closure shape (a captured constant and one argument) with
//!   almost no guest work, so the pool's own cost shows.
//! * `round_trip/twin/incr`: a method of a live object (`Counter.incr` of
//!   `guest-examples/twins`) in a worker process of its own, through its `Twin` handle.
//! * `throughput/{scale,add}/{1,2}`: 2,000 calls through `run_all` on 1 and 2 workers.

use std::hint::black_box;
use std::io::{BufReader, BufWriter, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use criterion::{Criterion, Throughput};
use serde::Serialize;
use wasmpickle::{Call, Code};
use wasmpickle_pool::frame::{read_frame, write_frame};
use wasmpickle_pool::{Client, Pool, PoolConfig};

#[derive(Serialize)]
struct Scale {
    factor: f64,
}

#[derive(Serialize)]
struct CounterStart {
    start: i64,
    step: i64,
}

const BATCH: usize = 2000;

/// The `wasmpickle` binary workers run: `$WASMPICKLE_WORKER`, or the release build, built here
/// with the cargo and target directory running this benchmark.
fn worker_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("WASMPICKLE_WORKER").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    // target/release/deps/pool-<hash>
    let exe = std::env::current_exe().expect("the benchmark's path");
    let profile_dir = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("target/<profile>");
    let target_dir = profile_dir.parent().expect("target/");
    let status = Command::new(env!("CARGO"))
        .args([
            "build",
            "--release",
            "-p",
            "wasmpickle-cli",
            "--bin",
            "wasmpickle",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("CARGO_TARGET_DIR", target_dir)
        .status()
        .expect("cargo runs");
    assert!(status.success(), "building the wasmpickle CLI failed");
    target_dir.join("release").join("wasmpickle")
}

fn pool(workers: usize, program: &PathBuf) -> Pool {
    Pool::new(
        PoolConfig::new()
            .workers(workers)
            .worker_program(program)
            .worker_logs(false),
    )
    .expect("the pool starts")
}

/// Set in the environment of this benchmark's binary re-run as the echo child.
const ECHO_ENV: &str = "WASMPICKLE_BENCH_ECHO";

/// The echo child's loop: frames in, the same frames out, until standard input closes.
fn echo_loop() {
    let mut reader = BufReader::with_capacity(64 << 10, std::io::stdin().lock());
    let mut writer = BufWriter::with_capacity(64 << 10, std::io::stdout().lock());
    let mut buf = Vec::new();
    while read_frame(&mut reader, 1 << 20, &mut buf).unwrap() {
        write_frame(&mut writer, &buf).unwrap();
        writer.flush().unwrap();
    }
}

/// This binary re-run as a bare echo of frames.
struct Echo {
    child: Child,
    writer: BufWriter<std::process::ChildStdin>,
    reader: BufReader<std::process::ChildStdout>,
}

impl Echo {
    fn new() -> Echo {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .env(ECHO_ENV, "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("the echo child starts");
        let writer = BufWriter::new(child.stdin.take().unwrap());
        let reader = BufReader::new(child.stdout.take().unwrap());
        Echo {
            child,
            writer,
            reader,
        }
    }

    fn round_trip(&mut self, frame: &[u8], buf: &mut Vec<u8>) {
        write_frame(&mut self.writer, frame).unwrap();
        self.writer.flush().unwrap();
        assert!(read_frame(&mut self.reader, 1 << 20, buf).unwrap());
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The two guests: the SDK's `scale` and the hand-written `add`, each a closure over a
/// captured constant, and a call of each by hash.
fn guests() -> Vec<(&'static str, Code, Vec<Call>)> {
    let math = Code::from_file(wasmpickle_test_artifacts::MATH).unwrap();
    let scale = math
        .closure("scale", &Scale { factor: 2.5 })
        .unwrap()
        .by_reference();
    let scale_calls = (0..BATCH)
        .map(|i| scale.call(&(i as f64,)).unwrap())
        .collect();
    let add = Code::from_file(wasmpickle_test_artifacts::WAT_ADD).unwrap();
    let plus = add.closure("add", &5u8).unwrap().by_reference();
    let add_calls = (0..BATCH)
        .map(|i| plus.call(&((i % 100) as u8,)).unwrap())
        .collect();
    vec![("scale", math, scale_calls), ("add", add, add_calls)]
}

fn bench(c: &mut Criterion) {
    let program = worker_binary();
    let guests = guests();

    let mut group = c.benchmark_group("round_trip");
    group.measurement_time(Duration::from_secs(4));

    // The floor: a frame the size of a call's `Call` message, echoed by a bare child.
    let one = &guests[0].2[4];
    let call_message_len = 1 + 8 + one.to_bytes().len() + 8;
    let frame = vec![0x5a; call_message_len];
    let mut echo = Echo::new();
    let mut buf = Vec::new();
    group.bench_function("floor/pipe_echo", |b| {
        b.iter(|| echo.round_trip(black_box(&frame), &mut buf))
    });
    drop(echo);

    for (name, code, calls) in &guests {
        let one = &calls[4];
        let p1 = pool(1, &program);
        p1.load(code);
        p1.run(one).unwrap();
        group.bench_function(format!("pool/{name}"), |b| {
            b.iter(|| black_box(p1.run(black_box(one)).unwrap()))
        });
    }

    let mut worker = Command::new(&program)
        .args(["worker", "--listen", "stdio"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut client = Client::over(
        worker.stdout.take().unwrap(),
        worker.stdin.take().unwrap(),
        None,
    )
    .unwrap();
    let (_, math, scale_calls) = &guests[0];
    client.load(math).unwrap();
    group.bench_function("client/scale", |b| {
        b.iter(|| black_box(client.run(black_box(&scale_calls[4])).unwrap()))
    });
    drop(client);
    let _ = worker.wait();

    // A method of a live object in a worker process of its own: the same pipes, no fresh
    // sandbox (the instance is kept), the arguments and reply of `Counter.incr`.
    let twins = Code::from_file(wasmpickle_test_artifacts::TWINS).expect("the twins guest");
    let start = twins
        .closure("Counter.new", &CounterStart { start: 0, step: 1 })
        .expect("a closure")
        .call(&())
        .expect("a constructor call");
    let host = pool(1, &program);
    let mut counter = host.spawn_twin(&start).expect("the twin starts");
    group.bench_function("twin/incr", |b| {
        b.iter(|| black_box(counter.call_bytes("incr", &[0xc0]).unwrap()))
    });
    drop(counter);
    group.finish();

    let mut group = c.benchmark_group("throughput");
    group
        .throughput(Throughput::Elements(BATCH as u64))
        .sample_size(30)
        .measurement_time(Duration::from_secs(6));
    for (name, code, calls) in &guests {
        for workers in [1, 2] {
            let p = pool(workers, &program);
            p.load(code);
            // Every worker has the module and its dispatcher its pipeline estimate.
            for r in p.run_all(calls.iter().cloned()) {
                r.unwrap();
            }
            group.bench_function(format!("{name}/{workers}"), |b| {
                b.iter(|| {
                    for r in p.run_all(calls.iter().cloned()) {
                        black_box(r.unwrap());
                    }
                })
            });
        }
    }
    group.finish();
}

fn main() {
    if std::env::var_os(ECHO_ENV).is_some() {
        echo_loop();
        return;
    }
    let mut criterion = Criterion::default().configure_from_args();
    bench(&mut criterion);
    criterion.final_summary();
}

//! The pool: worker processes it spawns and supervises, remote workers that joined by
//! address, one shared queue, and a dispatcher thread per worker.
//!
//! # Supervision
//!
//! Every call is a [`Job`] that exactly one place owns at any time: the queue, a dispatcher's
//! pipeline, or — once answered — nobody, because answering consumes it. A job is therefore
//! answered at most once by construction, and a job that is dropped unanswered (a dispatcher
//! thread that panicked) answers [`ErrorKind::Closed`] from its destructor, so none is lost
//! either. Replies are matched to requests by id; a reply no request is waiting for is a
//! protocol error, never a second answer.
//!
//! A worker processes one request at a time, in order. When its connection breaks with one
//! call in flight, that call is the culprit: its attempt count goes up and it goes back to
//! the front of the queue, or, once the retry budget is spent, fails with
//! [`ErrorKind::WorkerLost`] naming the call and what happened at each attempt. With several
//! calls in flight the culprit is not certain — a worker may hold back the replies of calls
//! it finished while more wait, and those die with it — so none is blamed: they all go back
//! to the front of the queue marked to run alone, where a break is unambiguous. Calls taken
//! for the pipeline but not yet sent go back unmarked. A poison call that always kills its
//! worker thus costs `retries + 1` restarts (plus at most one shared break) and then fails,
//! instead of looping, and an innocent call is never failed for sharing a pipeline with it.
//!
//! A worker "breaks" when its connection ends or errs (it died, was killed, or spoke
//! garbage) or when the call it runs passes the pool's deadline: the call's own deadline
//! (or the worker's cap, whichever is less) plus [`PoolConfig::deadline_grace`], capped by
//! [`PoolConfig::call_timeout`]. A watchdog thread checks deadlines and kills a local worker
//! that passed one (SIGKILL) or cuts a remote worker's connection. Local workers are then
//! respawned (a program that fails to start five times running is given up on); remote ones
//! reconnected (for about a minute, with back-off, before the pool gives up on them). When no
//! worker is left, queued and later calls fail with [`ErrorKind::Closed`]. Call *failures* —
//! a trap, running out of fuel, the worker's own deadline — are answers, not breaks, and are
//! never retried.
//!
//! # Pipelining
//!
//! A dispatcher keeps a window of calls in flight on its worker, so the worker finds its next
//! call already waiting, and replies come back in bursts (a worker holds back at most 16
//! replies while more requests wait, and none while calls are slow). The window holds about
//! [`PoolConfig::pipeline`] worth of work, judged from the run times the worker reports: up
//! to [`PoolConfig::max_in_flight`] for microsecond calls, one for calls that take
//! milliseconds, so a long call never holds others back behind it while another worker is
//! idle.
//!
//! A blocking [`Pool::run`] that finds a worker idle and nothing queued runs the call on the
//! calling thread, over that worker's connection, instead of handing it to the dispatcher
//! and back: two thread wake-ups less, which is most of a small call's round trip. It is
//! supervised the same way (the watchdog, the blame, the retry through the queue).
//!
//! # Code
//!
//! Calls go to workers by hash. The pool remembers the bytes of every module it has seen
//! inline (or been given with [`Pool::load`]); before a worker's first call of a module, its
//! dispatcher asks the worker whether it has it and sends the bytes only if not, once per
//! worker process. [`WorkerStats::code_bytes_sent`] counts them.

use std::collections::{HashMap, VecDeque};
use std::ffi::OsString;
use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock, mpsc};
use std::task::{Context, Poll, Waker};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use futures_channel::oneshot;
use serde::Serialize;
use wasmpickle::{Call, Closure, Code, CodeHash, Limits, SigningKey};

use crate::address::{Address, Socket};
use crate::client::{Client, Outcome, Reply, WorkerInfo, failed_error};
use crate::error::{Error, ErrorKind, Result};
use crate::frame::DEFAULT_MAX_FRAME;
use crate::twin::Twin;

/// How a [`Pool`] is set up. Every setting states its default.
#[derive(Clone, Debug)]
pub struct PoolConfig {
    workers: Option<usize>,
    program: Option<PathBuf>,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    worker_logs: bool,
    limits: Option<Limits>,
    retries: u32,
    deadline_grace: Duration,
    call_timeout: Option<Duration>,
    code_timeout: Duration,
    start_timeout: Duration,
    max_frame: usize,
    max_in_flight: usize,
    pipeline: Duration,
    remotes: Vec<(Address, Option<SigningKey>)>,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            workers: None,
            program: None,
            args: Vec::new(),
            env: Vec::new(),
            worker_logs: true,
            limits: None,
            retries: 2,
            deadline_grace: Duration::from_secs(1),
            call_timeout: None,
            code_timeout: Duration::from_secs(120),
            start_timeout: Duration::from_secs(30),
            max_frame: DEFAULT_MAX_FRAME,
            max_in_flight: 64,
            pipeline: Duration::from_millis(2),
            remotes: Vec::new(),
        }
    }
}

impl PoolConfig {
    /// The defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many worker processes to spawn. Default: the number of cores
    /// ([`std::thread::available_parallelism`]). Zero is allowed when remote workers are
    /// added.
    pub fn workers(&mut self, n: usize) -> &mut Self {
        self.workers = Some(n);
        self
    }

    /// The program spawned as `PROGRAM worker --listen stdio [flags]`; it must speak
    /// `docs/protocol.md` on its standard input and output (the `wasmpickle` command does,
    /// and so does any program that calls [`crate::worker::serve`]). Default, in order: the
    /// environment variable `WASMPICKLE_WORKER`; a `wasmpickle` executable next to the
    /// current one; `wasmpickle` on the `PATH`.
    pub fn worker_program(&mut self, path: impl Into<PathBuf>) -> &mut Self {
        self.program = Some(path.into());
        self
    }

    /// Adds an argument after the ones the pool passes (for example `--cache DIR` or
    /// `--grant log` for the `wasmpickle` worker). Default: none.
    pub fn worker_arg(&mut self, arg: impl Into<OsString>) -> &mut Self {
        self.args.push(arg.into());
        self
    }

    /// Sets an environment variable for spawned workers. Default: they inherit this
    /// process's environment unchanged.
    pub fn worker_env(
        &mut self,
        key: impl Into<OsString>,
        value: impl Into<OsString>,
    ) -> &mut Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Whether spawned workers' standard error (their logs) goes to this process's standard
    /// error. Default: true.
    pub fn worker_logs(&mut self, on: bool) -> &mut Self {
        self.worker_logs = on;
        self
    }

    /// The caps of spawned workers' runtimes (passed as `--fuel`, `--deadline-ms`,
    /// `--max-memory`, `--max-table-elements`); a call's own limits apply below them.
    /// Default: the worker's defaults ([`Limits::default`]).
    pub fn limits(&mut self, limits: Limits) -> &mut Self {
        self.limits = Some(limits);
        self
    }

    /// How many times a call is sent to a worker again after the worker running it died or
    /// passed its deadline, before the call fails with [`ErrorKind::WorkerLost`]. Default: 2
    /// (three attempts in all).
    pub fn retries(&mut self, n: u32) -> &mut Self {
        self.retries = n;
        self
    }

    /// Time a worker gets beyond a call's deadline before the pool gives up on it and kills
    /// it. The worker's own deadline normally ends the call first (with an answer); this
    /// catches a worker that hangs. Default: 1 s.
    pub fn deadline_grace(&mut self, grace: Duration) -> &mut Self {
        self.deadline_grace = grace;
        self
    }

    /// A hard cap on how long any call may keep its worker, whatever its deadline. Default:
    /// none (deadline plus grace).
    pub fn call_timeout(&mut self, timeout: Duration) -> &mut Self {
        self.call_timeout = Some(timeout);
        self
    }

    /// How long a worker may take to check for, receive and compile a module. Default: 120 s.
    pub fn code_timeout(&mut self, timeout: Duration) -> &mut Self {
        self.code_timeout = timeout;
        self
    }

    /// How long a worker may take to start and answer `Hello` (or a remote worker to accept
    /// the connection and pass the handshake). Default: 30 s.
    pub fn start_timeout(&mut self, timeout: Duration) -> &mut Self {
        self.start_timeout = timeout;
        self
    }

    /// The largest frame accepted from workers, and the cap spawned workers are given.
    /// Default: [`DEFAULT_MAX_FRAME`] (65 MiB).
    pub fn max_frame(&mut self, bytes: usize) -> &mut Self {
        self.max_frame = bytes;
        self
    }

    /// The most calls a dispatcher keeps in flight on one worker. 1 turns pipelining off.
    /// Default: 64.
    pub fn max_in_flight(&mut self, n: usize) -> &mut Self {
        self.max_in_flight = n.max(1);
        self
    }

    /// About how much work (by the worker's reported run times) a dispatcher keeps queued
    /// on its worker. Default: 2 ms.
    pub fn pipeline(&mut self, work: Duration) -> &mut Self {
        self.pipeline = work;
        self
    }

    /// Adds a worker already running at `address` (`wasmpickle worker --listen ...`), with
    /// the key for its handshake (required for TCP). It is not spawned or respawned by the
    /// pool; when its connection drops, its in-flight call goes back to the queue and the
    /// pool reconnects. Default: none.
    pub fn remote(&mut self, address: Address, key: Option<SigningKey>) -> &mut Self {
        self.remotes.push((address, key));
        self
    }
}

/// Counters of one worker slot: a spawned worker (across its restarts) or a remote one.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct WorkerStats {
    /// The slot's index; [`Outcome::worker`] names the same.
    pub index: usize,
    /// For a remote worker, its address.
    pub address: Option<Address>,
    /// The worker's current process id (for a remote worker, as it reported it).
    pub pid: Option<u32>,
    /// True while a session with a worker is up.
    pub alive: bool,
    /// Calls sent to the worker and not yet answered.
    pub in_flight: usize,
    /// Calls the worker answered (returned or failed).
    pub calls: u64,
    /// Module bytes sent to the worker, over all its sessions.
    pub code_bytes_sent: u64,
    /// Modules sent to the worker, over all its sessions.
    pub modules_sent: u64,
    /// Sessions that ended because the worker died, hung or broke the protocol.
    pub restarts: u64,
}

/// A pool of workers running pickled calls in parallel.
///
/// `Send + Sync`: share it between threads by reference or in an `Arc`. The blocking methods
/// ([`Pool::run`], [`Pool::run_all`], [`Pool::map`], [`Pool::batch`]) wait on the calling
/// thread; the `_async` ones return futures that do not block an executor and need no
/// particular one. Dropping the pool answers queued calls with [`ErrorKind::Closed`], waits
/// for the calls already on workers, and stops the workers.
pub struct Pool {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
    watchdog: Option<JoinHandle<()>>,
}

impl fmt::Debug for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool")
            .field("workers", &self.workers())
            .finish()
    }
}

struct Shared {
    config: PoolConfig,
    program: PathBuf,
    queue: Mutex<Queue>,
    ready: Condvar,
    code: RwLock<HashMap<CodeHash, Arc<[u8]>>>,
    slots: Vec<Slot>,
    stop: AtomicBool,
    /// Where [`Shared::direct`] starts looking for an idle worker, so that callers spread.
    next_direct: std::sync::atomic::AtomicUsize,
}

struct Queue {
    jobs: VecDeque<Job>,
    closed: bool,
    /// Slots that have not given up.
    live: usize,
    /// Why no slot is left, once none is.
    dead: Option<String>,
}

struct Slot {
    index: usize,
    remote: Option<(Address, Option<SigningKey>)>,
    state: Mutex<SlotState>,
    /// Calls answered, counted before the answer is delivered, so that a caller who has
    /// every result sees every call counted.
    calls: AtomicU64,
    /// The live session, whoever drives it: the slot's dispatcher, or a thread in
    /// [`Pool::run`] that found the worker idle ([`Shared::direct`]). `None` between a break
    /// and the next session.
    conn: Mutex<Option<Conn>>,
    /// False once a session broke and until the dispatcher has the next one up. Written
    /// while `conn` is locked.
    connected: AtomicBool,
}

/// A live session and what the pool has learned about it.
struct Conn {
    client: Client,
    info: WorkerInfo,
    /// Moving average of the worker's reported run times, in µs.
    ewma_us: f64,
    answered: u64,
}

impl Conn {
    fn learn(&mut self, outcome: &Outcome) {
        let us = outcome.run_time().as_secs_f64() * 1e6;
        self.ewma_us = if self.answered == 0 {
            us
        } else {
            0.8 * self.ewma_us + 0.2 * us
        };
    }
}

#[derive(Default)]
struct SlotState {
    stats: WorkerStats,
    child: Option<Child>,
    socket: Option<Socket>,
    armed: Option<Armed>,
    fired: Option<Duration>,
}

#[derive(Clone, Copy)]
struct Armed {
    deadline: Instant,
    allowed: Duration,
}

/// One call, owned by exactly one place until it is answered (see the module docs).
struct Job {
    call: Call,
    index: usize,
    attempts: u32,
    history: Vec<String>,
    code_retried: bool,
    /// Run alone: see [`blame`].
    isolate: bool,
    /// Breaks this job was in flight for but not blamed for.
    suspected: Vec<String>,
    sink: Option<Sink>,
}

enum Sink {
    Channel(mpsc::Sender<(usize, Result<Outcome>)>),
    Oneshot(oneshot::Sender<Result<Outcome>>),
    Collect(Arc<Collector>),
}

/// Where the results of `run_all` and its async forms gather: one slot per call, and one
/// wake-up when the last arrives rather than one per result.
struct Collector {
    state: Mutex<Collected>,
    done: Condvar,
}

struct Collected {
    results: Vec<Option<Result<Outcome>>>,
    remaining: usize,
    waker: Option<Waker>,
}

impl Collector {
    fn new(n: usize) -> Arc<Collector> {
        Arc::new(Collector {
            state: Mutex::new(Collected {
                results: (0..n).map(|_| None).collect(),
                remaining: n,
                waker: None,
            }),
            done: Condvar::new(),
        })
    }

    fn put(&self, index: usize, result: Result<Outcome>) {
        let mut state = lock(&self.state);
        if let Some(slot) = state.results.get_mut(index)
            && slot.is_none()
        {
            *slot = Some(result);
            state.remaining -= 1;
            if state.remaining == 0 {
                let waker = state.waker.take();
                drop(state);
                self.done.notify_all();
                if let Some(w) = waker {
                    w.wake();
                }
            }
        }
    }

    fn take(state: &mut Collected) -> Vec<Result<Outcome>> {
        state
            .results
            .iter_mut()
            .map(|r| r.take().unwrap_or_else(|| Err(closed_error())))
            .collect()
    }

    /// Blocks until every result is in.
    fn wait(&self) -> Vec<Result<Outcome>> {
        let mut state = lock(&self.state);
        while state.remaining > 0 {
            state = self
                .done
                .wait(state)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        Collector::take(&mut state)
    }
}

impl Job {
    fn new(call: Call, index: usize, sink: Sink) -> Job {
        Job {
            call,
            index,
            attempts: 0,
            history: Vec::new(),
            code_retried: false,
            isolate: false,
            suspected: Vec::new(),
            sink: Some(sink),
        }
    }

    /// Answers the job. Consumes it, so it cannot be answered twice.
    fn finish(mut self, result: Result<Outcome>) {
        if let Some(sink) = self.sink.take() {
            sink.send(self.index, result);
        }
    }
}

impl Sink {
    fn send(self, index: usize, result: Result<Outcome>) {
        // A caller that stopped waiting (a dropped future) is not an error.
        match self {
            Sink::Channel(tx) => {
                let _ = tx.send((index, result));
            }
            Sink::Oneshot(tx) => {
                let _ = tx.send(result);
            }
            Sink::Collect(collector) => collector.put(index, result),
        }
    }
}

impl Drop for Job {
    fn drop(&mut self) {
        if let Some(sink) = self.sink.take() {
            sink.send(
                self.index,
                Err(Error::new(
                    ErrorKind::Closed,
                    format!("call {} was dropped unanswered", self.call.id()),
                )
                .with_call(self.call.id())),
            );
        }
    }
}

impl Pool {
    /// Starts the workers and connects to the remote ones; returns when every one has
    /// answered `Hello`.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Config`] for a pool without workers or a TCP remote without a key;
    /// [`ErrorKind::Io`] when a worker cannot be spawned or reached; [`ErrorKind::Protocol`]
    /// or [`ErrorKind::Handshake`] when one does not speak the protocol or hold the key.
    pub fn new(config: &PoolConfig) -> Result<Pool> {
        let locals = config
            .workers
            .unwrap_or_else(|| thread::available_parallelism().map_or(1, |n| n.get()));
        let total = locals + config.remotes.len();
        if total == 0 {
            return Err(Error::new(
                ErrorKind::Config,
                "a pool needs at least one worker",
            ));
        }
        for (address, key) in &config.remotes {
            if address.requires_key() && key.is_none() {
                return Err(Error::new(
                    ErrorKind::Config,
                    format!("remote worker {address} is TCP, which requires a key"),
                ));
            }
            if *address == Address::Stdio {
                return Err(Error::new(
                    ErrorKind::Config,
                    "a remote worker needs a unix: or tcp: address",
                ));
            }
        }
        let slots = (0..total)
            .map(|index| Slot {
                index,
                remote: index.checked_sub(locals).map(|r| config.remotes[r].clone()),
                state: Mutex::new(SlotState {
                    stats: WorkerStats {
                        index,
                        address: index
                            .checked_sub(locals)
                            .map(|r| config.remotes[r].0.clone()),
                        ..WorkerStats::default()
                    },
                    ..SlotState::default()
                }),
                calls: AtomicU64::new(0),
                conn: Mutex::new(None),
                connected: AtomicBool::new(false),
            })
            .collect();
        let shared = Arc::new(Shared {
            config: config.clone(),
            program: resolve_program(config),
            queue: Mutex::new(Queue {
                jobs: VecDeque::new(),
                closed: false,
                live: total,
                dead: None,
            }),
            ready: Condvar::new(),
            code: RwLock::new(HashMap::new()),
            slots,
            stop: AtomicBool::new(false),
            next_direct: std::sync::atomic::AtomicUsize::new(0),
        });

        let (started_tx, started_rx) = mpsc::channel();
        let mut threads = Vec::with_capacity(total);
        for index in 0..total {
            let for_thread = shared.clone();
            let started = started_tx.clone();
            let spawned = thread::Builder::new()
                .name(format!("wasmpickle-dispatch-{index}"))
                .spawn(move || dispatch(&for_thread, index, started))
                .map_err(|e| Error::io("cannot start a dispatcher thread", e));
            match spawned {
                Ok(t) => threads.push(t),
                Err(e) => {
                    shutdown(&shared, threads, None);
                    return Err(e);
                }
            }
        }
        drop(started_tx);
        let watchdog = {
            let for_thread = shared.clone();
            thread::Builder::new()
                .name("wasmpickle-watchdog".into())
                .spawn(move || watch(&for_thread))
                .map_err(|e| Error::io("cannot start the watchdog thread", e))
        };
        let watchdog = match watchdog {
            Ok(w) => w,
            Err(e) => {
                shutdown(&shared, threads, None);
                return Err(e);
            }
        };
        let mut first_error = None;
        for _ in 0..total {
            match started_rx.recv() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    first_error.get_or_insert(e);
                }
                Err(_) => {
                    first_error.get_or_insert(Error::new(
                        ErrorKind::Closed,
                        "a dispatcher thread ended while starting",
                    ));
                }
            }
        }
        if let Some(e) = first_error {
            shutdown(&shared, threads, Some(watchdog));
            return Err(e);
        }
        Ok(Pool {
            shared,
            threads,
            watchdog: Some(watchdog),
        })
    }

    /// How many worker slots the pool has.
    pub fn len(&self) -> usize {
        self.shared.slots.len()
    }

    /// Always false: a pool has at least one worker.
    pub fn is_empty(&self) -> bool {
        self.shared.slots.is_empty()
    }

    /// Counters of every worker slot, in slot order.
    pub fn workers(&self) -> Vec<WorkerStats> {
        self.shared
            .slots
            .iter()
            .map(|s| {
                let mut stats = lock(&s.state).stats.clone();
                stats.calls = s.calls.load(Ordering::Acquire);
                stats
            })
            .collect()
    }

    /// Keeps `code`'s bytes, so that calls naming it by hash can be shipped to workers that
    /// lack it. Calls that carry their code inline are remembered the same way.
    pub fn load(&self, code: &Code) {
        self.shared.remember(code.hash(), code.wasm());
    }

    /// Forgets a module's bytes (workers that have it keep it).
    pub fn forget(&self, hash: &CodeHash) -> bool {
        write(&self.shared.code).remove(hash).is_some()
    }

    /// Makes a live object (a twin) in a worker process of its own, by running the
    /// constructor call `call` (`<Name>.new`) there. Like an actor, a twin does not share its
    /// process with the pool's workers or other twins: it is started with the pool's worker
    /// program, arguments, environment and limits, and ends when the [`Twin`] is dropped.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Io`] or [`ErrorKind::Protocol`] when the process does not start a
    /// session; [`ErrorKind::Call`] with the worker's error kind when the object cannot be
    /// made (see [`wasmpickle::Runtime::spawn`]).
    pub fn spawn_twin(&self, call: &Call) -> Result<Twin> {
        let (client, child) = dedicated(&self.shared)?;
        Twin::spawn_in(client, Some(child), call)
    }

    /// Resumes a twin from a snapshot ([`Twin::snapshot`]) in a worker process of its own.
    ///
    /// # Errors
    ///
    /// As [`Pool::spawn_twin`].
    pub fn restore_twin(&self, snapshot: &Code) -> Result<Twin> {
        let (client, child) = dedicated(&self.shared)?;
        Twin::restore_in(client, Some(child), snapshot)
    }

    /// Runs one call on a worker and waits for its result.
    ///
    /// When a worker is idle and nothing is queued, the call runs over that worker's
    /// connection from the calling thread, sparing the hand-off to the worker's dispatcher
    /// thread and back; otherwise it waits its turn in the queue.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Call`] when the call fails on the worker ([`Error::remote_kind`] says
    /// how); [`ErrorKind::WorkerLost`] when every attempt lost its worker;
    /// [`ErrorKind::Closed`] when the pool has no worker left.
    pub fn run(&self, call: &Call) -> Result<Outcome> {
        let by_reference;
        let call = match call.code().wasm() {
            Some(wasm) => {
                self.shared.remember(call.code().hash(), wasm);
                by_reference = call.by_reference();
                &by_reference
            }
            None => call,
        };
        let rx = match self.shared.direct(call) {
            Direct::Done(result) => return result,
            Direct::HandedOff(rx) => rx,
            Direct::Queue { code_retried } => {
                let (tx, rx) = mpsc::channel();
                let mut job = Job::new(call.clone(), 0, Sink::Channel(tx));
                job.code_retried = code_retried;
                self.shared.submit(vec![job]);
                rx
            }
        };
        rx.recv()
            .map(|(_, r)| r)
            .unwrap_or_else(|_| Err(closed_error()))
    }

    /// Runs calls in parallel and returns their results in the order of the calls.
    pub fn run_all(&self, calls: impl IntoIterator<Item = Call>) -> Vec<Result<Outcome>> {
        self.collect(calls).wait()
    }

    /// Submits calls whose results gather in one [`Collector`].
    fn collect(&self, calls: impl IntoIterator<Item = Call>) -> Arc<Collector> {
        let calls: Vec<Call> = calls.into_iter().collect();
        let collector = Collector::new(calls.len());
        let jobs = calls
            .into_iter()
            .enumerate()
            .map(|(index, call)| {
                self.shared
                    .job_owned(call, index, Sink::Collect(collector.clone()))
            })
            .collect();
        self.shared.submit(jobs);
        collector
    }

    /// Calls `closure` once per element of `args` (each the arguments of one call, a tuple or
    /// a sequence of the parameters after the environment), in parallel; results in the
    /// order of `args`. An argument that cannot be encoded fails its own call only.
    pub fn map<A: Serialize>(
        &self,
        closure: &Closure,
        args: impl IntoIterator<Item = A>,
    ) -> Vec<Result<Outcome>> {
        let (calls, encoded) = self.calls_of(closure, args);
        merge(encoded, self.run_all(calls))
    }

    /// A batch of calls whose results arrive in the order they finish.
    pub fn batch(&self) -> Batch<'_> {
        let (tx, rx) = mpsc::channel();
        Batch {
            pool: self,
            tx,
            rx,
            submitted: 0,
            received: 0,
        }
    }

    /// [`Pool::run`] as a future, for async code: it does not block the executor and needs
    /// no particular runtime. Dropping the future does not cancel the call.
    pub fn run_async(&self, call: &Call) -> Pending {
        let (tx, rx) = oneshot::channel();
        self.shared
            .submit(vec![self.shared.job(call, 0, Sink::Oneshot(tx))]);
        Pending { rx }
    }

    /// [`Pool::run_all`] as a future.
    pub fn run_all_async(&self, calls: impl IntoIterator<Item = Call>) -> PendingAll {
        PendingAll {
            collector: self.collect(calls),
            encoded: None,
        }
    }

    /// [`Pool::map`] as a future.
    pub fn map_async<A: Serialize>(
        &self,
        closure: &Closure,
        args: impl IntoIterator<Item = A>,
    ) -> PendingAll {
        let (calls, encoded) = self.calls_of(closure, args);
        PendingAll {
            collector: self.collect(calls),
            encoded: Some(encoded),
        }
    }

    /// The calls of a map, by reference to the closure's code (remembered here), and per
    /// argument whether it encoded.
    fn calls_of<A: Serialize>(
        &self,
        closure: &Closure,
        args: impl IntoIterator<Item = A>,
    ) -> (Vec<Call>, Vec<Result<()>>) {
        if let Some(wasm) = closure.code().wasm() {
            self.shared.remember(closure.code().hash(), wasm);
        }
        let closure = closure.by_reference();
        let mut calls = Vec::new();
        let encoded = args
            .into_iter()
            .enumerate()
            .map(|(i, a)| match closure.call(&a) {
                Ok(call) => {
                    calls.push(call);
                    Ok(())
                }
                Err(e) => Err(Error::new(
                    ErrorKind::Encode,
                    format!("cannot encode argument {i} of the map"),
                )
                .with_source(e)),
            })
            .collect();
        (calls, encoded)
    }
}

/// Puts encoding failures back among the results, in argument order.
fn merge(encoded: Vec<Result<()>>, results: Vec<Result<Outcome>>) -> Vec<Result<Outcome>> {
    let mut results = results.into_iter();
    encoded
        .into_iter()
        .map(|e| match e {
            Ok(()) => results.next().unwrap_or_else(|| Err(closed_error())),
            Err(e) => Err(e),
        })
        .collect()
}

/// The result of one call to come: the future [`Pool::run_async`] returns.
///
/// It needs no particular executor (it is woken through a oneshot channel, never by blocking
/// a thread). Dropping it does not cancel the call.
#[derive(Debug)]
#[must_use = "a future does nothing unless awaited"]
pub struct Pending {
    rx: oneshot::Receiver<Result<Outcome>>,
}

impl Future for Pending {
    type Output = Result<Outcome>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.rx)
            .poll(cx)
            .map(|r| r.unwrap_or_else(|_| Err(closed_error())))
    }
}

/// The results of many calls to come, in their order: the future [`Pool::run_all_async`] and
/// [`Pool::map_async`] return. It is woken once, when the last result is in.
#[must_use = "a future does nothing unless awaited"]
pub struct PendingAll {
    collector: Arc<Collector>,
    /// For a map: which arguments encoded, to put the others' errors in their places.
    encoded: Option<Vec<Result<()>>>,
}

impl fmt::Debug for PendingAll {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PendingAll")
            .field("remaining", &lock(&self.collector.state).remaining)
            .finish()
    }
}

impl Future for PendingAll {
    type Output = Vec<Result<Outcome>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let results = {
            let mut state = lock(&self.collector.state);
            if state.remaining > 0 {
                state.waker = Some(cx.waker().clone());
                return Poll::Pending;
            }
            Collector::take(&mut state)
        };
        Poll::Ready(match self.encoded.take() {
            Some(encoded) => merge(encoded, results),
            None => results,
        })
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        shutdown(
            &self.shared,
            std::mem::take(&mut self.threads),
            self.watchdog.take(),
        );
    }
}

/// Calls submitted together whose results come back as they finish: an iterator of
/// `(index, result)`, indexes in submission order from 0. Made by [`Pool::batch`].
#[derive(Debug)]
pub struct Batch<'p> {
    pool: &'p Pool,
    tx: mpsc::Sender<(usize, Result<Outcome>)>,
    rx: mpsc::Receiver<(usize, Result<Outcome>)>,
    submitted: usize,
    received: usize,
}

impl Batch<'_> {
    /// Queues a call and returns its index.
    pub fn submit(&mut self, call: &Call) -> usize {
        let index = self.submitted;
        self.submitted += 1;
        let job = self
            .pool
            .shared
            .job(call, index, Sink::Channel(self.tx.clone()));
        self.pool.shared.submit(vec![job]);
        index
    }

    /// Queues calls together (one lock of the queue for all of them).
    pub fn submit_all(&mut self, calls: impl IntoIterator<Item = Call>) {
        let jobs: Vec<Job> = calls
            .into_iter()
            .map(|call| {
                let index = self.submitted;
                self.submitted += 1;
                self.pool
                    .shared
                    .job_owned(call, index, Sink::Channel(self.tx.clone()))
            })
            .collect();
        self.pool.shared.submit(jobs);
    }

    /// Calls submitted and not yet returned by the iterator.
    pub fn outstanding(&self) -> usize {
        self.submitted - self.received
    }
}

impl Iterator for Batch<'_> {
    type Item = (usize, Result<Outcome>);

    /// Waits for the next call to finish; `None` when none is outstanding.
    fn next(&mut self) -> Option<Self::Item> {
        if self.outstanding() == 0 {
            return None;
        }
        let item = self.rx.recv().ok()?;
        self.received += 1;
        Some(item)
    }
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared")
            .field("program", &self.program)
            .finish_non_exhaustive()
    }
}

impl Shared {
    fn remember(&self, hash: CodeHash, wasm: &Arc<[u8]>) {
        if !read(&self.code).contains_key(&hash) {
            write(&self.code).insert(hash, wasm.clone());
        }
    }

    /// A job for `call`, by reference; inline code is remembered for shipping.
    fn job(&self, call: &Call, index: usize, sink: Sink) -> Job {
        let call = match call.code().wasm() {
            Some(wasm) => {
                self.remember(call.code().hash(), wasm);
                call.by_reference()
            }
            None => call.clone(),
        };
        Job::new(call, index, sink)
    }

    /// [`Shared::job`] for a call the caller gives up.
    fn job_owned(&self, call: Call, index: usize, sink: Sink) -> Job {
        if call.code().is_inline() {
            return self.job(&call, index, sink);
        }
        Job::new(call, index, sink)
    }

    fn submit(&self, jobs: Vec<Job>) {
        let mut queue = lock(&self.queue);
        if queue.closed || queue.dead.is_some() {
            let error = queue.dead.clone();
            drop(queue);
            for job in jobs {
                let e = match &error {
                    Some(why) => Error::new(ErrorKind::Closed, why.clone()),
                    None => closed_error(),
                };
                job.finish(Err(e));
            }
            return;
        }
        let many = jobs.len() > 1;
        queue.jobs.extend(jobs);
        drop(queue);
        if many {
            self.ready.notify_all();
        } else {
            self.ready.notify_one();
        }
    }

    /// Puts jobs back at the front of the queue, in their order.
    fn requeue(&self, jobs: impl DoubleEndedIterator<Item = Job>) {
        let mut queue = lock(&self.queue);
        if queue.closed {
            drop(queue);
            for job in jobs {
                job.finish(Err(closed_error()));
            }
            return;
        }
        for job in jobs.rev() {
            queue.jobs.push_front(job);
        }
        drop(queue);
        self.ready.notify_all();
    }

    /// The next job for `slot`'s dispatcher, waiting for one.
    fn take_for(&self, slot: &Slot) -> Taken {
        let mut queue = lock(&self.queue);
        loop {
            if !slot.connected.load(Ordering::Acquire) {
                return Taken::Broken;
            }
            if let Some(job) = queue.jobs.pop_front() {
                return Taken::Job(job);
            }
            if queue.closed {
                return Taken::Closed;
            }
            queue = self
                .ready
                .wait(queue)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
    }

    /// The next job, if one is queued.
    fn try_take(&self) -> Option<Job> {
        lock(&self.queue).jobs.pop_front()
    }

    /// Runs a call (by hash) on the calling thread when a worker is idle and nothing is queued: one
    /// hand-off between threads less each way, which is most of a small call's round trip.
    /// The job goes to the queue instead when no worker is idle, when its module has not
    /// crossed to an idle one yet, or when the worker says it lost the module.
    ///
    /// A break found here is handled as the dispatcher would: the job is blamed (it was alone
    /// on the worker) and requeued or failed, and the dispatcher is woken to start the next
    /// session.
    fn direct(&self, call: &Call) -> Direct {
        let queue_it = Direct::Queue {
            code_retried: false,
        };
        {
            let queue = lock(&self.queue);
            if !queue.jobs.is_empty() || queue.closed || queue.dead.is_some() {
                return queue_it;
            }
        }
        let hash = call.code().hash();
        let n = self.slots.len();
        let start = self.next_direct.fetch_add(1, Ordering::Relaxed);
        for k in 0..n {
            let slot = &self.slots[(start + k) % n];
            let mut guard = match slot.conn.try_lock() {
                Ok(guard) => guard,
                Err(std::sync::TryLockError::WouldBlock) => continue,
                Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
            };
            let Some(conn) = guard.as_mut() else { continue };
            if !conn.client.knows(&hash) {
                continue;
            }
            let allowed = self.allowed(call, &conn.info);
            let sent = conn
                .client
                .send_call(call)
                .and_then(|id| conn.client.flush().map(|()| id));
            let idle_write_failed = sent.is_err();
            {
                let mut state = lock(&slot.state);
                state.armed = Some(Armed {
                    deadline: Instant::now() + allowed,
                    allowed,
                });
                state.stats.in_flight = 1;
            }
            let reply = sent.and_then(|id| conn.client.recv().map(|r| (id, r)));
            {
                let mut state = lock(&slot.state);
                state.armed = None;
                state.stats.in_flight = 0;
            }
            let error = match reply {
                Ok((id, Reply::Done(got, mut outcome))) if got == id => {
                    slot.calls.fetch_add(1, Ordering::AcqRel);
                    conn.learn(&outcome);
                    conn.answered += 1;
                    outcome.set_worker(slot.index);
                    return Direct::Done(Ok(outcome));
                }
                Ok((id, Reply::Failed(got, failed))) if got == id => {
                    slot.calls.fetch_add(1, Ordering::AcqRel);
                    conn.answered += 1;
                    if failed.kind == wasmpickle::ErrorKind::CodeNotFound.as_str() {
                        // Let the dispatcher ship the module again.
                        conn.client.forget(&hash);
                        return Direct::Queue { code_retried: true };
                    }
                    return Direct::Done(Err(failed_error(failed).with_call(call.id())));
                }
                Ok((_, _)) => Error::new(
                    ErrorKind::Protocol,
                    "the worker answered a request that is not outstanding",
                ),
                Err(e) => e,
            };
            // The session broke under this call. Take it down here, then let the dispatcher
            // start the next one.
            let broken = guard.take();
            slot.connected.store(false, Ordering::Release);
            drop(guard);
            drop(broken);
            let reason = lost_reason(slot, &error);
            tracing::warn!(worker = slot.index, reason = %reason, "worker lost");
            {
                let mut state = lock(&slot.state);
                state.stats.restarts += 1;
                state.stats.alive = false;
            }
            let (tx, rx) = mpsc::channel();
            let job = Job::new(call.clone(), 0, Sink::Channel(tx));
            if idle_write_failed {
                self.requeue(std::iter::once(job));
            } else {
                blame(self, vec![job], 1, &reason);
            }
            self.ready.notify_all();
            return Direct::HandedOff(rx);
        }
        queue_it
    }

    /// Up to `n` jobs in all in `out`, without waiting, stopping before one that must run
    /// alone ([`needs_alone`]).
    fn take_more(&self, n: usize, client: &Client, out: &mut Vec<Job>) {
        let mut queue = lock(&self.queue);
        while out.len() < n {
            match queue.jobs.front() {
                Some(job) if !needs_alone(job, client) => out.extend(queue.jobs.pop_front()),
                _ => break,
            }
        }
    }

    fn closed(&self) -> bool {
        lock(&self.queue).closed
    }

    /// A slot gave up for good; with none left, every queued and later call fails.
    fn slot_lost(&self, why: String) {
        let mut queue = lock(&self.queue);
        queue.live = queue.live.saturating_sub(1);
        if queue.live > 0 {
            return;
        }
        let message = format!("the pool has no worker left: {why}");
        queue.dead = Some(message.clone());
        let jobs: Vec<Job> = queue.jobs.drain(..).collect();
        drop(queue);
        for job in jobs {
            job.finish(Err(Error::new(ErrorKind::Closed, message.clone())));
        }
    }

    /// The time the call of `job` may keep a worker: its deadline (or the worker's cap, if
    /// less), plus grace, capped by the pool's call timeout.
    fn allowed(&self, call: &Call, info: &WorkerInfo) -> Duration {
        let cap = info.limits.get_deadline();
        let run = call
            .limits()
            .deadline_ms()
            .map_or(cap, |ms| Duration::from_millis(ms).min(cap));
        let allowed = run.saturating_add(self.config.deadline_grace);
        match self.config.call_timeout {
            Some(t) => allowed.min(t),
            None => allowed,
        }
    }
}

/// What a dispatcher found when it waited for work.
// Returned once and taken apart at once; boxing the job would cost an allocation per call.
#[allow(clippy::large_enum_variant)]
enum Taken {
    Job(Job),
    /// A caller found the session broken and took it down.
    Broken,
    Closed,
}

/// What [`Shared::direct`] did with a job.
#[allow(clippy::large_enum_variant)]
enum Direct {
    /// Ran it; here is the answer.
    Done(Result<Outcome>),
    /// Did not run it; queue it (with the module to be shipped again, if the worker said it
    /// lost it).
    Queue { code_retried: bool },
    /// Its worker broke under it; it is back in the queue (or answered) as a job, and its
    /// answer will come through this channel.
    HandedOff(mpsc::Receiver<(usize, Result<Outcome>)>),
}

fn closed_error() -> Error {
    Error::new(
        ErrorKind::Closed,
        "the pool was shut down before the call was answered",
    )
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The data under these locks stays consistent between statements, so a thread that
    // panicked while holding one leaves nothing half-done.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn resolve_program(config: &PoolConfig) -> PathBuf {
    if let Some(p) = &config.program {
        return p.clone();
    }
    if let Some(p) = std::env::var_os("WASMPICKLE_WORKER").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let name = format!("wasmpickle{}", std::env::consts::EXE_SUFFIX);
    if let Ok(exe) = std::env::current_exe() {
        let sibling = exe.with_file_name(&name);
        if sibling.is_file() {
            return sibling;
        }
    }
    PathBuf::from(name)
}

fn shutdown(shared: &Shared, threads: Vec<JoinHandle<()>>, watchdog: Option<JoinHandle<()>>) {
    let jobs: Vec<Job> = {
        let mut queue = lock(&shared.queue);
        queue.closed = true;
        queue.jobs.drain(..).collect()
    };
    for job in jobs {
        job.finish(Err(closed_error()));
    }
    shared.ready.notify_all();
    for t in threads {
        let _ = t.join();
    }
    shared.stop.store(true, Ordering::Release);
    if let Some(w) = watchdog {
        w.thread().unpark();
        let _ = w.join();
    }
}

/// The watchdog: kills workers whose current request passed its deadline.
fn watch(shared: &Shared) {
    const TICK: Duration = Duration::from_millis(50);
    while !shared.stop.load(Ordering::Acquire) {
        let now = Instant::now();
        let mut next = now + TICK;
        for slot in &shared.slots {
            let exited = lock(&slot.state)
                .child
                .as_mut()
                .is_some_and(|c| matches!(c.try_wait(), Ok(Some(_))));
            if exited {
                retire_idle(shared, slot);
            }
            let mut state = lock(&slot.state);
            let Some(armed) = state.armed else { continue };
            if now < armed.deadline {
                next = next.min(armed.deadline);
                continue;
            }
            if state.fired.is_none() {
                state.fired = Some(armed.allowed);
                state.armed = None;
                tracing::warn!(worker = slot.index, allowed = ?armed.allowed, "worker passed its deadline; killing it");
                if let Some(child) = &mut state.child {
                    let _ = child.kill();
                }
                if let Some(socket) = &state.socket {
                    socket.shutdown();
                }
            }
        }
        thread::park_timeout(
            next.saturating_duration_since(Instant::now())
                .max(Duration::from_millis(1)),
        );
    }
}

/// Takes down the session of a local worker that exited while idle, so that the next call
/// does not find out by failing to write to it, and wakes its dispatcher to start another.
/// A session that is busy (its lock held) is left to its driver, which sees the end of the
/// pipe itself.
fn retire_idle(shared: &Shared, slot: &Slot) {
    let mut guard = match slot.conn.try_lock() {
        Ok(guard) => guard,
        Err(std::sync::TryLockError::WouldBlock) => return,
        Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
    };
    let Some(conn) = guard.take() else { return };
    slot.connected.store(false, Ordering::Release);
    drop(guard);
    drop(conn);
    let reason = lost_reason(
        slot,
        &Error::new(ErrorKind::Io, "it exited while it had no call"),
    );
    tracing::warn!(worker = slot.index, reason = %reason, "idle worker lost");
    {
        let mut state = lock(&slot.state);
        state.stats.restarts += 1;
        state.stats.alive = false;
    }
    shared.ready.notify_all();
}

/// How a session ended.
enum End {
    /// The pool closed; the worker was idle.
    Shutdown,
    /// A caller running a call directly found the session broken and already dealt with it.
    Gone { answered: u64 },
    /// The connection broke; the jobs it held, oldest first.
    Lost {
        error: Error,
        /// How many of `jobs` (the first ones) had been sent to the worker.
        sent: usize,
        jobs: Vec<Job>,
        answered: u64,
        /// False when the worker was running nothing when the break showed (a write to an
        /// idle worker failed): then no job is to blame.
        blame: bool,
    },
}

/// A dispatcher: keeps its slot's worker alive and feeds it jobs.
fn dispatch(shared: &Shared, index: usize, started: mpsc::Sender<Result<()>>) {
    let slot = &shared.slots[index];
    let mut started = Some(started);
    // Sessions in a row that ended without answering anything: their restarts back off.
    let mut barren = 0u32;
    let mut failed_starts = 0u32;
    loop {
        if shared.closed() {
            break;
        }
        let client = match connect(shared, slot) {
            Ok(client) => client,
            Err(e) => {
                if let Some(tx) = started.take() {
                    let _ = tx.send(Err(e));
                    return;
                }
                failed_starts += 1;
                tracing::warn!(worker = index, attempt = failed_starts, error = %e, "cannot start a worker");
                // A local program that fails to start five times running is broken; a remote
                // worker gets about a minute to come back (a restart, a network blip).
                let budget = if slot.remote.is_some() { 35 } else { 5 };
                if failed_starts > budget {
                    lock(&slot.state).stats.alive = false;
                    shared.slot_lost(format!("worker {index} could not be started: {e}"));
                    return;
                }
                backoff(shared, failed_starts);
                continue;
            }
        };
        failed_starts = 0;
        {
            let info = client.worker_info().clone();
            let mut conn = lock(&slot.conn);
            *conn = Some(Conn {
                client,
                info,
                ewma_us: 0.0,
                answered: 0,
            });
            slot.connected.store(true, Ordering::Release);
        }
        if let Some(tx) = started.take() {
            let _ = tx.send(Ok(()));
        }
        match session(shared, slot) {
            End::Shutdown => {
                // Closing the session's pipes tells the worker to exit.
                drop(lock(&slot.conn).take());
                stop_worker(slot);
                break;
            }
            End::Gone { answered } => {
                barren = if answered > 0 { 0 } else { barren + 1 };
                if barren > 1 {
                    backoff(shared, barren - 1);
                }
            }
            End::Lost {
                error,
                sent,
                jobs,
                answered,
                blame: guilty,
            } => {
                let reason = lost_reason(slot, &error);
                tracing::warn!(worker = index, reason = %reason, "worker lost");
                {
                    let mut state = lock(&slot.state);
                    state.stats.restarts += 1;
                    state.stats.alive = false;
                    state.stats.in_flight = 0;
                }
                if guilty {
                    blame(shared, jobs, sent, &reason);
                } else {
                    shared.requeue(jobs.into_iter());
                }
                barren = if answered > 0 { 0 } else { barren + 1 };
                if barren > 1 {
                    backoff(shared, barren - 1);
                }
            }
        }
    }
}

/// Sleeps 50 ms × 2^(n-1), at most 2 s, waking early if the pool closes.
fn backoff(shared: &Shared, n: u32) {
    let total =
        Duration::from_millis(50u64 << n.saturating_sub(1).min(6)).min(Duration::from_secs(2));
    let until = Instant::now() + total;
    while Instant::now() < until && !shared.closed() {
        thread::sleep(Duration::from_millis(10).min(until - Instant::now()));
    }
}

/// Decides who pays for a broken session.
///
/// A worker answers in order but buffers replies while more requests wait, so when several
/// calls were in flight the break cannot be pinned on one of them: the ones before the
/// culprit may have run, their replies lost with the process. Then no attempt is counted;
/// every call that was in flight goes back marked to run alone, where a break is
/// unambiguous. A call that was alone on its worker (or whose module was crossing) when it
/// broke is the culprit: its attempt counts, and past the retry budget it fails. Jobs taken
/// but not yet sent go back as they were.
fn blame(shared: &Shared, jobs: Vec<Job>, sent: usize, reason: &str) {
    let mut jobs = jobs.into_iter();
    if sent > 1 {
        let mut again = Vec::new();
        for mut job in jobs.by_ref().take(sent) {
            job.isolate = true;
            job.suspected
                .push(format!("{reason}, with {} other calls in flight", sent - 1));
            again.push(job);
        }
        again.extend(jobs);
        shared.requeue(again.into_iter());
        return;
    }
    let Some(mut head) = jobs.next() else { return };
    head.attempts += 1;
    head.history.push(reason.to_owned());
    if head.attempts > shared.config.retries {
        let id = head.call.id();
        let mut message = format!(
            "call {id} failed after {} attempts, each losing its worker: ",
            head.attempts
        );
        message.push_str(&head.history.join("; "));
        if !head.suspected.is_empty() {
            message.push_str(" (before that, it was among the calls on a worker that broke: ");
            message.push_str(&head.suspected.join("; "));
            message.push(')');
        }
        let attempts = head.attempts;
        head.finish(Err(Error::new(ErrorKind::WorkerLost, message)
            .with_call(id)
            .with_attempts(attempts)));
        shared.requeue(jobs);
    } else {
        shared.requeue(
            std::iter::once(head)
                .chain(jobs)
                .collect::<Vec<_>>()
                .into_iter(),
        );
    }
}

/// The command that starts a local worker on stdin/stdout with the pool's settings.
fn worker_command(shared: &Shared) -> Command {
    let config = &shared.config;
    let mut command = Command::new(&shared.program);
    command
        .arg("worker")
        .args(["--listen", "stdio"])
        .arg("--max-frame")
        .arg(config.max_frame.to_string());
    if let Some(limits) = &config.limits {
        command
            .arg("--fuel")
            .arg(limits.get_fuel().to_string())
            .arg("--deadline-ms")
            .arg(limits.get_deadline().as_millis().to_string())
            .arg("--max-memory")
            .arg(limits.get_max_memory().to_string())
            .arg("--max-table-elements")
            .arg(limits.get_max_table_elements().to_string());
    }
    command
        .args(&config.args)
        .envs(config.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(if config.worker_logs {
            Stdio::inherit()
        } else {
            Stdio::null()
        });
    command
}

/// Starts a worker process of its own for a twin and opens its session.
fn dedicated(shared: &Shared) -> Result<(Client, Child)> {
    let mut child = worker_command(shared).spawn().map_err(|e| {
        Error::io(
            format!(
                "cannot start the worker program {}",
                shared.program.display()
            ),
            e,
        )
    })?;
    let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
        unreachable!("both streams were configured as pipes");
    };
    match Client::over(stdout, stdin, None) {
        Ok(mut client) => {
            client.set_max_frame(shared.config.max_frame);
            Ok((client, child))
        }
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            Err(e)
        }
    }
}

/// Spawns (or connects to) the slot's worker and starts a session.
fn connect(shared: &Shared, slot: &Slot) -> Result<Client> {
    let config = &shared.config;
    let mut client = match &slot.remote {
        Some((address, key)) => {
            let (client, socket) =
                Client::connect_socket(address, key.as_ref(), config.start_timeout)?;
            let mut state = lock(&slot.state);
            state.socket = Some(socket);
            state.fired = None;
            state.stats.pid = Some(client.worker_info().pid);
            client
        }
        None => {
            let mut command = worker_command(shared);
            let mut child = command.spawn().map_err(|e| {
                Error::io(
                    format!(
                        "cannot start the worker program {}",
                        shared.program.display()
                    ),
                    e,
                )
            })?;
            let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
                unreachable!("both streams were configured as pipes");
            };
            let pid = child.id();
            {
                let mut state = lock(&slot.state);
                state.child = Some(child);
                state.fired = None;
                state.stats.pid = Some(pid);
                state.armed = Some(Armed {
                    deadline: Instant::now() + config.start_timeout,
                    allowed: config.start_timeout,
                });
            }
            let result = Client::over(stdout, stdin, None);
            lock(&slot.state).armed = None;
            match result {
                Ok(client) => client,
                Err(e) => {
                    let status = reap(slot);
                    // Whatever the program did instead of answering `Hello` (printed a usage
                    // message, read as a frame length; exited before reading), it is not a
                    // worker.
                    let kind = ErrorKind::Protocol;
                    return Err(Error::new(
                        kind,
                        format!(
                            "worker program {} (pid {pid}) did not start a session; it {status}",
                            shared.program.display()
                        ),
                    )
                    .with_source(e));
                }
            }
        }
    };
    client.set_max_frame(config.max_frame);
    let mut state = lock(&slot.state);
    state.stats.alive = true;
    state.stats.in_flight = 0;
    Ok(client)
}

/// Kills the slot's worker process if it is still running, waits for it, and says how it
/// ended. For a remote worker, cuts the connection.
fn reap(slot: &Slot) -> String {
    let mut state = lock(&slot.state);
    if let Some(socket) = state.socket.take() {
        socket.shutdown();
        return "lost its connection".to_owned();
    }
    let Some(mut child) = state.child.take() else {
        return "is gone".to_owned();
    };
    drop(state);
    // A worker whose output just closed is usually exiting: give it a moment to become
    // reapable, so the reason names how it ended rather than that it was killed here.
    let mut status = None;
    let until = Instant::now() + Duration::from_millis(100);
    while status.is_none() && Instant::now() < until {
        match child.try_wait() {
            Ok(Some(s)) => status = Some(s),
            Ok(None) => thread::sleep(Duration::from_millis(1)),
            Err(_) => break,
        }
    }
    if status.is_none() {
        let _ = child.kill();
    }
    let killed_here = status.is_none();
    let status = status.or_else(|| child.wait().ok());
    describe_exit(status, killed_here)
}

fn describe_exit(status: Option<std::process::ExitStatus>, killed_here: bool) -> String {
    use std::os::unix::process::ExitStatusExt;
    match status {
        _ if killed_here => "was still running and was killed".to_owned(),
        Some(s) => match (s.code(), s.signal()) {
            (Some(code), _) => format!("exited with status {code}"),
            (None, Some(9)) => "was killed by signal 9 (SIGKILL)".to_owned(),
            (None, Some(6)) => "aborted (signal 6, SIGABRT)".to_owned(),
            (None, Some(sig)) => format!("was killed by signal {sig}"),
            (None, None) => "ended".to_owned(),
        },
        None => "could not be waited for".to_owned(),
    }
}

/// Why a session broke, for the blamed call's history.
fn lost_reason(slot: &Slot, error: &Error) -> String {
    let fired = lock(&slot.state).fired.take();
    let pid = lock(&slot.state).stats.pid;
    let who = match (&slot.remote, pid) {
        (Some((address, _)), _) => format!("remote worker {} at {address}", slot.index),
        (None, Some(pid)) => format!("worker {} (pid {pid})", slot.index),
        (None, None) => format!("worker {}", slot.index),
    };
    let ended = reap(slot);
    match fired {
        Some(allowed) => format!("{who} passed the pool's deadline of {allowed:?} and was stopped"),
        None if slot.remote.is_some() => format!("{who}: {}", chain(error)),
        None => format!("{who} {ended} ({})", chain(error)),
    }
}

fn chain(e: &Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Ends a session the pool no longer needs: the worker sees its input close and exits; one
/// that does not within a second is killed.
fn stop_worker(slot: &Slot) {
    let (child, socket) = {
        let mut state = lock(&slot.state);
        state.stats.alive = false;
        (state.child.take(), state.socket.take())
    };
    if let Some(socket) = socket {
        socket.shutdown();
    }
    if let Some(mut child) = child {
        let until = Instant::now() + Duration::from_secs(1);
        loop {
            match child.try_wait() {
                Ok(Some(_)) => return,
                Ok(None) if Instant::now() < until => thread::sleep(Duration::from_millis(5)),
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return;
                }
            }
        }
    }
}

/// A job in a worker's pipeline.
struct InFlight {
    id: u64,
    job: Job,
    allowed: Duration,
}

/// True for a job that must be the only one in its worker's pipeline: its module has to
/// cross first, or it was among several calls on a worker that broke, so the next break
/// while it runs must say for sure that it was the culprit.
fn needs_alone(job: &Job, client: &Client) -> bool {
    job.isolate || !client.knows(&job.call.code().hash())
}

/// Feeds one worker session until the pool closes or the connection breaks.
///
/// While the worker is idle the session's lock is free, so that [`Shared::direct`] can run a
/// call on it from the caller's thread; the dispatcher holds it from taking a job until its
/// pipeline is empty again.
fn session(shared: &Shared, slot: &Slot) -> End {
    let mut window = 1usize;
    loop {
        let job = match shared.take_for(slot) {
            Taken::Job(job) => job,
            Taken::Closed => return End::Shutdown,
            Taken::Broken => return End::Gone { answered: 0 },
        };
        let mut guard = lock(&slot.conn);
        let Some(conn) = guard.as_mut() else {
            // A caller broke the session between our wake-up and this lock.
            shared.requeue(std::iter::once(job));
            return End::Gone { answered: 0 };
        };
        if let Err(end) = busy(shared, slot, conn, job, &mut window) {
            let broken = guard.take();
            slot.connected.store(false, Ordering::Release);
            drop(guard);
            drop(broken);
            return end;
        }
    }
}

/// Runs jobs on the session from `first` on, pipelined, until its pipeline is empty and no
/// job is queued. Errs with how the session ended when it breaks.
fn busy(
    shared: &Shared,
    slot: &Slot,
    conn: &mut Conn,
    first: Job,
    window: &mut usize,
) -> std::result::Result<(), End> {
    let budget_us = shared.config.pipeline.as_secs_f64() * 1e6;
    let client = &mut conn.client;
    let info = &conn.info;
    let mut in_flight: VecDeque<InFlight> = VecDeque::new();
    let mut taken: Vec<Job> = vec![first];
    let mut answered = 0u64;
    // True while the one call in flight must stay alone.
    let mut alone = false;

    macro_rules! lost {
        ($error:expr, $blame:expr) => {{
            let sent = in_flight.len();
            return Err(End::Lost {
                error: $error,
                sent,
                jobs: in_flight.into_iter().map(|f| f.job).chain(taken).collect(),
                answered: conn.answered + answered,
                blame: $blame,
            });
        }};
    }

    loop {
        // Fill the pipeline.
        let was_empty = in_flight.is_empty();
        if was_empty && taken.is_empty() {
            match shared.try_take() {
                Some(job) => taken.push(job),
                None => {
                    conn.answered += answered;
                    return Ok(());
                }
            }
        }
        if was_empty {
            if !needs_alone(&taken[0], client) {
                shared.take_more(*window, client, &mut taken);
            }
        } else if !alone && in_flight.len() < *window {
            shared.take_more(*window - in_flight.len(), client, &mut taken);
        }
        let mut jobs = std::mem::take(&mut taken).into_iter();
        while let Some(job) = jobs.next() {
            let hash = job.call.code().hash();
            if !client.knows(&hash) {
                // Only the first job of an empty pipeline can get here (`take_more` stops
                // before such jobs), so nothing else is on the worker while the module
                // crosses.
                let wasm = read(&shared.code).get(&hash).cloned();
                arm(slot, shared.config.code_timeout);
                let before = client.code_bytes_sent();
                let shipped = client.ensure_code(hash, wasm.as_ref());
                let sent = client.code_bytes_sent() - before;
                {
                    let mut state = lock(&slot.state);
                    state.armed = None;
                    state.stats.code_bytes_sent += sent;
                    state.stats.modules_sent += u64::from(sent > 0);
                }
                match shipped {
                    Ok(_) => {}
                    Err(e) if e.kind() == ErrorKind::Call => {
                        if e.remote_kind() == Some(wasmpickle::ErrorKind::HashMismatch) {
                            write(&shared.code).remove(&hash);
                        }
                        let id = job.call.id();
                        job.finish(Err(e.with_call(id)));
                        continue;
                    }
                    Err(e) => {
                        taken = std::iter::once(job).chain(jobs).collect();
                        lost!(e, true)
                    }
                }
            }
            match client.send_call(&job.call) {
                Ok(id) => {
                    if in_flight.is_empty() {
                        alone = job.isolate;
                    }
                    let allowed = shared.allowed(&job.call, info);
                    in_flight.push_back(InFlight { id, job, allowed });
                }
                Err(e) if e.kind() == ErrorKind::FrameTooLarge => {
                    let id = job.call.id();
                    job.finish(Err(e.with_call(id)));
                }
                Err(e) => {
                    taken = std::iter::once(job).chain(jobs).collect();
                    lost!(e, !was_empty)
                }
            }
        }
        if in_flight.is_empty() {
            continue;
        }
        if let Err(e) = client.flush() {
            lost!(e, !was_empty);
        }
        if was_empty {
            arm(slot, in_flight[0].allowed);
        }
        lock(&slot.state).stats.in_flight = in_flight.len();

        // Take in the replies that are there, waiting for at least one.
        loop {
            let reply = match client.recv() {
                Ok(reply) => reply,
                Err(e) => lost!(e, true),
            };
            let (id, result) = match reply {
                Reply::Done(id, mut outcome) => {
                    outcome.set_worker(slot.index);
                    let us = outcome.run_time().as_secs_f64() * 1e6;
                    conn.ewma_us = if conn.answered + answered == 0 {
                        us
                    } else {
                        0.8 * conn.ewma_us + 0.2 * us
                    };
                    (id, Ok(outcome))
                }
                Reply::Failed(id, failed) => (id, Err(failed)),
            };
            let Some(pos) = in_flight.iter().position(|f| f.id == id) else {
                lost!(
                    Error::new(
                        ErrorKind::Protocol,
                        format!("the worker answered request {id}, which is not outstanding"),
                    ),
                    true
                );
            };
            let done = in_flight.remove(pos).expect("the position was just found");
            answered += 1;
            slot.calls.fetch_add(1, Ordering::AcqRel);
            match result {
                Ok(outcome) => done.job.finish(Ok(outcome)),
                Err(failed)
                    if failed.kind == wasmpickle::ErrorKind::CodeNotFound.as_str()
                        && !done.job.code_retried =>
                {
                    // The worker lost a module this session thought it had (its store
                    // dropped it): ship it again, once.
                    let mut job = done.job;
                    job.code_retried = true;
                    client.forget(&job.call.code().hash());
                    shared.requeue(std::iter::once(job));
                }
                Err(failed) => {
                    let id = done.job.call.id();
                    done.job.finish(Err(failed_error(failed).with_call(id)));
                }
            }
            if !client.has_ready() {
                break;
            }
        }
        if in_flight.is_empty() {
            alone = false;
        }
        {
            let mut state = lock(&slot.state);
            state.stats.in_flight = in_flight.len();
            // The worker starts the next call as soon as it has answered the previous one.
            state.armed = in_flight.front().map(|f| Armed {
                deadline: Instant::now() + f.allowed,
                allowed: f.allowed,
            });
        }
        *window = if conn.ewma_us > 0.0 {
            ((budget_us / conn.ewma_us) as usize).clamp(1, shared.config.max_in_flight)
        } else {
            1
        };
    }
}

fn arm(slot: &Slot, allowed: Duration) {
    lock(&slot.state).armed = Some(Armed {
        deadline: Instant::now() + allowed,
        allowed,
    });
}

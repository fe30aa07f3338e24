//! The worker: serves pickled calls over standard input and output, a Unix socket or TCP.
//!
//! A worker is one process with one [`wasmpickle::Runtime`] (one engine, modules compiled
//! once, a fresh sandbox per call) that answers the requests of `docs/protocol.md`. The
//! `wasmpickle worker` command is a thin wrapper around this module; any program can embed a
//! worker the same way:
//!
//! ```no_run
//! use wasmpickle_pool::worker::{self, WorkerConfig};
//!
//! # fn main() -> Result<(), wasmpickle_pool::Error> {
//! // In your own binary: `my-app worker` serves on stdin/stdout, as a pool expects.
//! worker::serve(&WorkerConfig::new(), &"stdio".parse()?)?;
//! # Ok(()) }
//! ```
//!
//! # Connections
//!
//! * **stdio** — one session on stdin/stdout, ending when stdin closes. This is how a
//!   [`Pool`](crate::Pool) talks to the workers it spawns. Standard output carries only
//!   frames; logs go to standard error.
//! * **unix:PATH**, **tcp:HOST:PORT** — a thread per connection, up to
//!   [`WorkerConfig::max_connections`] at once; the runtime runs as many calls at once as
//!   there may be connections. Over TCP every connection must first pass the shared-key
//!   handshake (`auth` in the protocol), so a TCP worker cannot start without a key; over a
//!   Unix socket or stdio it is required only when keys are configured.
//!
//! # Failure
//!
//! Whatever a connection sends, it can only close itself: a frame over the cap, bytes that
//! are not a message, a message out of order, or a failed handshake end that connection (with
//! a `Bye` saying why, when the worker can still write), and the worker goes on serving the
//! others. A call that fails in the sandbox is not a connection failure: its error travels
//! back as data (`Failed`) and the session continues.
//!
//! Modules a client `Put`s are verified against their hash, compiled, and kept in the
//! worker's code store (in memory unless [`WorkerConfig::code_store`] says otherwise), so they
//! stay available to every connection for the life of the worker even when the runtime's
//! compiled-module table evicts them.

use std::collections::HashMap;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::net::TcpListener;
use std::os::unix::net::UnixListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use wasmpickle::format::{Header, PickleKind, SignedCall};
use wasmpickle::{Call, Code, CodeStore, MemoryStore, Object, Runtime, RuntimeConfig, SigningKey};

use crate::address::{Address, Socket};
use crate::auth;
use crate::error::{Error, ErrorKind, Result};
use crate::frame::{DEFAULT_MAX_FRAME, GREETING_MAX_FRAME, holds_frame, read_frame};
use crate::message::{
    self, Bye, CallMsg, Done, Failed, Has, Have, Hello, Invoke, PROTOCOL_VERSION, Ping, Put,
    Restore, Snapshotted, Spawn, Spawned, Stored, TwinRef, UNSUPPORTED, Welcome, WireLimits, ty,
};

/// How a [`Worker`] is set up. Every setting states its default.
#[derive(Clone, Debug)]
pub struct WorkerConfig {
    runtime: RuntimeConfig,
    code_store: Option<Arc<dyn CodeStore>>,
    keys: Vec<SigningKey>,
    max_frame: usize,
    max_connections: usize,
    handshake_timeout: Duration,
    abort_on_export: Option<String>,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            runtime: RuntimeConfig::new(),
            code_store: None,
            keys: Vec::new(),
            max_frame: DEFAULT_MAX_FRAME,
            max_connections: 16,
            handshake_timeout: Duration::from_secs(10),
            abort_on_export: None,
        }
    }
}

impl WorkerConfig {
    /// The defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// The runtime's configuration: limits (the caps on every call), grants, compiled cache.
    /// Its code store and concurrency are set by the worker (see
    /// [`WorkerConfig::code_store`] and [`WorkerConfig::max_connections`]). Default:
    /// [`RuntimeConfig::default`].
    pub fn runtime(&mut self, config: RuntimeConfig) -> &mut Self {
        self.runtime = config;
        self
    }

    /// Where modules clients send are kept, and where `Has` looks. Default: a
    /// [`MemoryStore`], so modules live as long as the worker process.
    pub fn code_store(&mut self, store: Arc<dyn CodeStore>) -> &mut Self {
        self.code_store = Some(store);
        self
    }

    /// Accepts clients that prove they hold this key (repeatable: any of the keys will do).
    /// Required for TCP. With keys, every connection [`serve`] and [`Listener::serve`] accept
    /// must pass the handshake first, stdio included; [`Worker::serve_stdio`] and
    /// [`Worker::serve_streams`] take an explicit flag instead. Default: no keys.
    pub fn key(&mut self, key: SigningKey) -> &mut Self {
        self.keys.retain(|k| k.id() != key.id());
        self.keys.push(key);
        self
    }

    /// The largest frame accepted after the greeting, in bytes. Default:
    /// [`DEFAULT_MAX_FRAME`] (65 MiB).
    pub fn max_frame(&mut self, bytes: usize) -> &mut Self {
        self.max_frame = bytes;
        self
    }

    /// How many socket connections are served at once, and so how many calls may run at once;
    /// further connections are told `busy` and closed. Default: 16.
    pub fn max_connections(&mut self, n: usize) -> &mut Self {
        self.max_connections = n.max(1);
        self
    }

    /// How long a socket connection may take to complete its handshake and `Hello`.
    /// Default: 10 s.
    pub fn handshake_timeout(&mut self, timeout: Duration) -> &mut Self {
        self.handshake_timeout = timeout;
        self
    }

    /// **Fault injection, for tests of supervisors:** the worker process aborts (as if it
    /// crashed) when asked to run a call of this export. `wasmpickle worker` sets it from the
    /// environment variable `WASMPICKLE_WORKER_ABORT_ON_EXPORT`. Default: never.
    #[doc(hidden)]
    pub fn abort_on_export(&mut self, export: impl Into<String>) -> &mut Self {
        self.abort_on_export = Some(export.into());
        self
    }
}

/// A worker: one runtime and its code store, serving any number of sessions.
///
/// Cheap to clone; clones share the runtime.
#[derive(Clone, Debug)]
pub struct Worker {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    runtime: Runtime,
    store: Arc<dyn CodeStore>,
    config: WorkerConfig,
    welcome: Welcome,
}

impl Worker {
    /// A worker with its runtime.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Config`] when the runtime cannot be created (the wasmpickle error is the
    /// source).
    pub fn new(config: &WorkerConfig) -> Result<Worker> {
        Worker::with_concurrency(config, config.max_connections)
    }

    fn with_concurrency(config: &WorkerConfig, concurrency: usize) -> Result<Worker> {
        let store = config
            .code_store
            .clone()
            .unwrap_or_else(|| Arc::new(MemoryStore::new()));
        let mut runtime_config = config.runtime.clone();
        runtime_config
            .code_store(store.clone())
            .max_concurrent_calls(u32::try_from(concurrency).unwrap_or(u32::MAX));
        let runtime = Runtime::new(&runtime_config).map_err(|e| {
            Error::new(ErrorKind::Config, "cannot create the worker's runtime").with_source(e)
        })?;
        let welcome = Welcome {
            protocol: PROTOCOL_VERSION,
            worker: concat!("wasmpickle-pool ", env!("CARGO_PKG_VERSION")).to_owned(),
            pid: std::process::id(),
            limits: WireLimits::from(runtime.limits()),
            max_frame: config.max_frame as u64,
            features: Vec::new(),
        };
        Ok(Worker {
            inner: Arc::new(Inner {
                runtime,
                store,
                config: config.clone(),
                welcome,
            }),
        })
    }

    /// The worker's runtime.
    pub fn runtime(&self) -> &Runtime {
        &self.inner.runtime
    }

    /// Serves one session on standard input and output until standard input closes.
    /// `authenticate` runs the handshake first (with the configured keys).
    ///
    /// # Errors
    ///
    /// The error that ended the session, when it did not end with standard input closing
    /// between frames.
    pub fn serve_stdio(&self, authenticate: bool) -> Result<()> {
        // Duplicates of the descriptors, not `io::stdin()`/`io::stdout()`: those add a buffer
        // of their own, and standard output's flushes at every newline byte, which in binary
        // frames would split replies into arbitrary writes.
        let dup = |fd: std::os::fd::BorrowedFd<'_>| {
            fd.try_clone_to_owned()
                .map(std::fs::File::from)
                .map_err(|e| Error::io("cannot duplicate a standard stream", e))
        };
        let input = dup(std::os::fd::AsFd::as_fd(&io::stdin()))?;
        let output = dup(std::os::fd::AsFd::as_fd(&io::stdout()))?;
        self.serve_streams(input, output, authenticate)
    }

    /// Serves one session over a pair of streams until the reader ends.
    ///
    /// # Errors
    ///
    /// As [`Worker::serve_stdio`].
    pub fn serve_streams(
        &self,
        reader: impl Read,
        writer: impl Write,
        authenticate: bool,
    ) -> Result<()> {
        let mut session = Session {
            worker: &self.inner,
            reader: BufReader::with_capacity(64 << 10, reader),
            writer: BufWriter::with_capacity(64 << 10, writer),
            buf: Vec::new(),
            out: Vec::new(),
            objects: HashMap::new(),
            next_twin: 1,
        };
        session.run(authenticate, None)
    }

    /// Binds a listener on a Unix socket or TCP address. A TCP address with port 0 gets a
    /// free port, which [`Listener::address`] reports. A Unix socket file left behind by a
    /// worker that is gone is replaced; one a live worker listens on is an error.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Config`] for `stdio` and for TCP without a key; [`ErrorKind::Io`] when
    /// binding fails.
    pub fn bind(&self, address: &Address) -> Result<Listener> {
        let failed = |e: io::Error| Error::io(format!("cannot listen on {address}"), e);
        let listener = match address {
            Address::Stdio => {
                return Err(Error::new(
                    ErrorKind::Config,
                    "stdio is served with serve_stdio, not bound",
                ));
            }
            Address::Tcp(hostport) => {
                if self.inner.config.keys.is_empty() {
                    return Err(Error::new(
                        ErrorKind::Config,
                        format!(
                            "a worker listening on {address} must require a key; configure one"
                        ),
                    ));
                }
                Bound::Tcp(TcpListener::bind(hostport).map_err(failed)?)
            }
            Address::Unix(path) => {
                if std::os::unix::net::UnixStream::connect(path).is_ok() {
                    return Err(Error::new(
                        ErrorKind::Io,
                        format!("{address} is in use by a worker that is running"),
                    ));
                }
                if std::fs::symlink_metadata(path)
                    .is_ok_and(|m| std::os::unix::fs::FileTypeExt::is_socket(&m.file_type()))
                {
                    let _ = std::fs::remove_file(path);
                }
                Bound::Unix(UnixListener::bind(path).map_err(failed)?)
            }
        };
        let address = match &listener {
            Bound::Tcp(l) => Address::Tcp(l.local_addr().map_err(failed)?.to_string()),
            Bound::Unix(_) => address.clone(),
        };
        Ok(Listener {
            worker: self.clone(),
            listener,
            address,
        })
    }
}

/// A bound listener; [`Listener::serve`] accepts connections until the process ends.
#[derive(Debug)]
pub struct Listener {
    worker: Worker,
    listener: Bound,
    address: Address,
}

#[derive(Debug)]
enum Bound {
    Unix(UnixListener),
    Tcp(TcpListener),
}

impl Listener {
    /// The address clients connect to (for TCP, with the port actually bound).
    pub fn address(&self) -> &Address {
        &self.address
    }

    /// Accepts connections and serves each on its own thread. Returns only when accepting
    /// fails.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Io`] when the listener fails.
    pub fn serve(self) -> Result<()> {
        let open = Arc::new(AtomicUsize::new(0));
        let max = self.worker.inner.config.max_connections;
        let authenticate = self.address.requires_key() || !self.worker.inner.config.keys.is_empty();
        let mut serial = 0u64;
        loop {
            let socket = match &self.listener {
                Bound::Unix(l) => l.accept().map(|(s, _)| Socket::Unix(s)),
                Bound::Tcp(l) => l.accept().and_then(|(s, _)| {
                    s.set_nodelay(true)?;
                    Ok(Socket::Tcp(s))
                }),
            };
            let socket = match socket {
                Ok(s) => s,
                // A connection that went away before it was accepted, or a momentary lack of
                // descriptors, is not a reason to stop serving everyone else.
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::ConnectionAborted
                            | io::ErrorKind::ConnectionReset
                            | io::ErrorKind::Interrupted
                    ) =>
                {
                    continue;
                }
                Err(e) if e.raw_os_error().is_some_and(|c| c == 24 || c == 23) => {
                    tracing::warn!(error = %e, "out of file descriptors; pausing accept");
                    thread::sleep(Duration::from_millis(100));
                    continue;
                }
                Err(e) => {
                    return Err(Error::io(format!("cannot accept on {}", self.address), e));
                }
            };
            serial += 1;
            if open.fetch_add(1, Ordering::AcqRel) >= max {
                open.fetch_sub(1, Ordering::AcqRel);
                tracing::warn!(connection = serial, max, "refusing a connection: all busy");
                let mut socket = socket;
                let mut out = Vec::new();
                let _ = message::encode(
                    &mut out,
                    ty::BYE,
                    &Bye {
                        kind: "busy".to_owned(),
                        message: format!("the worker serves {max} connections already"),
                    },
                );
                let _ = socket.write_all(&out);
                continue;
            }
            let worker = self.worker.clone();
            let open = open.clone();
            let spawned = thread::Builder::new()
                .name(format!("wasmpickle-conn-{serial}"))
                .spawn(move || {
                    let _guard = Decrement(open);
                    worker.serve_socket(socket, serial, authenticate);
                });
            if let Err(e) = spawned {
                tracing::warn!(error = %e, "cannot start a connection thread");
            }
        }
    }
}

struct Decrement(Arc<AtomicUsize>);

impl Drop for Decrement {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Worker {
    fn serve_socket(&self, socket: Socket, serial: u64, authenticate: bool) {
        let reader = match socket.try_clone() {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(connection = serial, error = %e, "cannot clone a socket");
                return;
            }
        };
        let control = socket.try_clone().ok();
        let mut session = Session {
            worker: &self.inner,
            reader: BufReader::with_capacity(64 << 10, reader),
            writer: BufWriter::with_capacity(64 << 10, socket),
            buf: Vec::new(),
            out: Vec::new(),
            objects: HashMap::new(),
            next_twin: 1,
        };
        tracing::debug!(connection = serial, "connection opened");
        match session.run(authenticate, control.as_ref()) {
            Ok(()) => tracing::debug!(connection = serial, "connection closed by the client"),
            Err(e) => tracing::warn!(connection = serial, error = %chain(&e), "connection closed"),
        }
        if let Some(control) = control {
            control.shutdown();
        }
    }
}

/// Serves `address` with a worker made from `config`: one session on stdin/stdout for
/// [`Address::Stdio`] (authenticated only when keys are configured), or a listener. Returns
/// when the stdio session ends; a listener serves until the process ends.
///
/// # Errors
///
/// As [`Worker::new`], [`Worker::bind`] and [`Listener::serve`]; for stdio, the error that
/// ended the session.
pub fn serve(config: &WorkerConfig, address: &Address) -> Result<()> {
    match address {
        Address::Stdio => {
            // One session: one call at a time, and one pool slot's worth of address space.
            let worker = Worker::with_concurrency(config, 1)?;
            worker.serve_stdio(!config.keys.is_empty())
        }
        _ => Worker::new(config)?.bind(address)?.serve(),
    }
}

/// The most replies held back while further requests are waiting.
const FLUSH_EVERY: usize = 16;

/// Calls slower than this on average (µs) have their replies sent before the next call
/// starts.
const SLOW_CALL_US: f64 = 200.0;

/// One connection's state.
struct Session<'w, R: Read, W: Write> {
    worker: &'w Inner,
    reader: BufReader<R>,
    writer: BufWriter<W>,
    buf: Vec<u8>,
    out: Vec<u8>,
    /// The live objects ("twins") this session made; they end with it.
    objects: HashMap<u64, Object>,
    next_twin: u64,
}

impl<R: Read, W: Write> Session<'_, R, W> {
    /// Handshake, `Hello`, then requests until the client closes. On a protocol error the
    /// client is told why (`Bye`) before the connection closes.
    fn run(&mut self, authenticate: bool, socket: Option<&Socket>) -> Result<()> {
        let result = self.greet(authenticate, socket).and_then(|()| self.serve());
        if let Err(e) = &result {
            // Best effort: the peer may be gone, or may be why.
            if !matches!(e.kind(), ErrorKind::Io | ErrorKind::UnexpectedEof) {
                self.out.clear();
                let _ = message::encode(
                    &mut self.out,
                    ty::BYE,
                    &Bye {
                        kind: e.kind().as_str().to_owned(),
                        message: e.to_string(),
                    },
                );
                let _ = self.writer.write_all(&self.out);
                let _ = self.writer.flush();
            }
        }
        result
    }

    fn greet(&mut self, authenticate: bool, socket: Option<&Socket>) -> Result<()> {
        let config = &self.worker.config;
        if let Some(s) = socket {
            s.set_read_timeout(Some(config.handshake_timeout))
                .map_err(|e| Error::io("cannot set a read timeout", e))?;
        }
        if authenticate {
            if config.keys.is_empty() {
                return Err(Error::new(
                    ErrorKind::Config,
                    "authentication is required but no key is configured",
                ));
            }
            auth::worker(&mut self.reader, &mut self.writer, &config.keys)?;
        }
        if !read_frame(&mut self.reader, GREETING_MAX_FRAME, &mut self.buf)? {
            return Err(Error::io(
                "the client closed the connection before Hello",
                io::ErrorKind::UnexpectedEof.into(),
            ));
        }
        let (t, body) = message::split(&self.buf)?;
        if t != ty::HELLO {
            return Err(Error::new(
                ErrorKind::Protocol,
                format!("expected Hello (type 0x10), got message type 0x{t:02x}"),
            ));
        }
        let hello: Hello = message::decode(t, body)?;
        if hello.protocol == 0 {
            return Err(Error::new(
                ErrorKind::Protocol,
                "protocol version 0 does not exist",
            ));
        }
        let mut welcome = self.worker.welcome.clone();
        welcome.protocol = hello.protocol.min(PROTOCOL_VERSION);
        tracing::debug!(client = %hello.client, protocol = welcome.protocol, "session started");
        self.send(ty::WELCOME, &welcome)?;
        self.flush()?;
        if let Some(s) = socket {
            s.set_read_timeout(None)
                .map_err(|e| Error::io("cannot clear a read timeout", e))?;
        }
        Ok(())
    }

    /// Answers requests until the client closes.
    ///
    /// Replies to a burst of pipelined requests go out together, one write for several, but
    /// never more than [`FLUSH_EVERY`] at a time, so that the client can send more work while
    /// the rest of the burst runs; and not at all while calls are slow, so that a reply never
    /// waits behind a long call.
    fn serve(&mut self) -> Result<()> {
        let max_frame = self.worker.config.max_frame;
        let mut unflushed = 0usize;
        let mut call_us = 0.0f64;
        loop {
            if !read_frame(&mut self.reader, max_frame, &mut self.buf)? {
                return Ok(());
            }
            if unflushed > 0 && call_us >= SLOW_CALL_US && self.buf.first() == Some(&ty::CALL) {
                self.flush()?;
                unflushed = 0;
            }
            let buf = std::mem::take(&mut self.buf);
            let started = Instant::now();
            let handled = self.handle(&buf);
            if buf.first() == Some(&ty::CALL) {
                call_us = 0.8 * call_us + 0.2 * started.elapsed().as_secs_f64() * 1e6;
            }
            self.buf = buf;
            handled?;
            unflushed += 1;
            if unflushed >= FLUSH_EVERY || !holds_frame(self.reader.buffer()) {
                self.flush()?;
                unflushed = 0;
            }
        }
    }

    fn handle(&mut self, payload: &[u8]) -> Result<()> {
        let (t, body) = message::split(payload)?;
        match t {
            ty::CALL => {
                let msg: CallMsg = message::decode(t, body)?;
                self.call(msg.id, msg.call)
            }
            ty::HAS => {
                let has: Has = message::decode(t, body)?;
                let present = has
                    .hashes
                    .iter()
                    .map(|h| {
                        self.worker.runtime.contains(h)
                            || self.worker.store.contains(h).unwrap_or(false)
                    })
                    .collect();
                self.send(ty::HAVE, &Have {
                    id: has.id,
                    present,
                })
            }
            ty::PUT => {
                let put: Put = message::decode(t, body)?;
                match self.put(&put) {
                    Ok(()) => self.send(ty::STORED, &Stored {
                        id: put.id,
                        sha256: put.sha256,
                    }),
                    Err(failed) => self.send(ty::FAILED, &failed),
                }
            }
            ty::PING => {
                let ping: Ping = message::decode(t, body)?;
                self.send(ty::PONG, &ping)
            }
            ty::SPAWN => {
                let spawn: Spawn = message::decode(t, body)?;
                let made = self.worker.runtime.spawn_bytes(spawn.call);
                self.adopt(spawn.id, made)
            }
            ty::RESTORE => {
                let restore: Restore = message::decode(t, body)?;
                match self.worker.store.get(&restore.sha256) {
                    Ok(Some(code)) => {
                        let made = self.worker.runtime.restore(&code);
                        self.adopt(restore.id, made)
                    }
                    Ok(None) => self.send(ty::FAILED, &Failed {
                        id: restore.id,
                        kind: wasmpickle::ErrorKind::CodeNotFound.as_str().to_owned(),
                        message: format!(
                            "snapshot {} is not on this worker; Put it first",
                            restore.sha256
                        ),
                        code: Some(restore.sha256),
                        ..Failed::default()
                    }),
                    Err(e) => self.send(ty::FAILED, &Failed::from_error(restore.id, &e)),
                }
            }
            ty::INVOKE => {
                let invoke: Invoke = message::decode(t, body)?;
                let started = Instant::now();
                let Some(object) = self.objects.get_mut(&invoke.twin) else {
                    return self.send(ty::FAILED, &no_twin(invoke.id, invoke.twin));
                };
                let result = object.call_bytes(
                    invoke.method,
                    invoke.args,
                    &wasmpickle::format::CallLimits::new(),
                );
                let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
                match result {
                    Ok(outcome) => self.send(
                        ty::DONE,
                        &Done {
                            id: invoke.id,
                            value: outcome.value(),
                            fuel_used: outcome.fuel_used(),
                            micros,
                        },
                    ),
                    Err(e) => self.send(ty::FAILED, &Failed::from_error(invoke.id, &e)),
                }
            }
            ty::SNAPSHOT => {
                let req: TwinRef = message::decode(t, body)?;
                let Some(object) = self.objects.get_mut(&req.twin) else {
                    return self.send(ty::FAILED, &no_twin(req.id, req.twin));
                };
                match object.snapshot() {
                    Ok(code) => {
                        // Kept, so that a Restore on this worker needs no Put.
                        if let Err(e) = self.worker.store.put(&code) {
                            tracing::warn!(error = %e, "cannot keep a snapshot in the code store");
                        }
                        self.send(
                            ty::SNAPSHOTTED,
                            &Snapshotted {
                                id: req.id,
                                sha256: code.hash(),
                                wasm: code.wasm(),
                            },
                        )
                    }
                    Err(e) => self.send(ty::FAILED, &Failed::from_error(req.id, &e)),
                }
            }
            ty::DROP => {
                let req: TwinRef = message::decode(t, body)?;
                match self.objects.remove(&req.twin) {
                    Some(_) => self.send(ty::DROPPED, &Ping { id: req.id }),
                    None => self.send(ty::FAILED, &no_twin(req.id, req.twin)),
                }
            }
            ty::HELLO | ty::AUTH_HELLO | ty::AUTH_PROOF => Err(Error::new(
                ErrorKind::Protocol,
                format!("message type 0x{t:02x} is only valid when a session starts"),
            )),
            other => match message::request_id(body) {
                // A request of a kind this worker does not know (a newer client's): answered,
                // and the session goes on.
                Some(id) => self.send(ty::FAILED, &Failed {
                    id,
                    kind: UNSUPPORTED.to_owned(),
                    message: format!(
                        "this worker does not know request type 0x{other:02x} (protocol {PROTOCOL_VERSION})"
                    ),
                    ..Failed::default()
                }),
                None => Err(Error::new(
                    ErrorKind::Protocol,
                    format!("message type 0x{other:02x} is not a request of this protocol"),
                )),
            },
        }
    }

    /// Keeps a new object under the next twin id and answers `Spawned`, or `Failed`.
    fn adopt(&mut self, id: u64, made: wasmpickle::Result<Object>) -> Result<()> {
        match made {
            Ok(object) => {
                let twin = self.next_twin;
                self.next_twin += 1;
                let spawned = Spawned {
                    id,
                    twin,
                    object: object.name().to_owned(),
                    methods: object.methods(),
                };
                tracing::debug!(twin, object = object.name(), "object made");
                self.objects.insert(twin, object);
                self.send(ty::SPAWNED, &spawned)
            }
            Err(e) => self.send(ty::FAILED, &Failed::from_error(id, &e)),
        }
    }

    fn put(&self, put: &Put<'_>) -> std::result::Result<(), Box<Failed>> {
        let code =
            Code::new(put.wasm.to_vec()).map_err(|e| Box::new(Failed::from_error(put.id, &e)))?;
        if code.hash() != put.sha256 {
            return Err(Box::new(Failed {
                id: put.id,
                kind: wasmpickle::ErrorKind::HashMismatch.as_str().to_owned(),
                message: format!(
                    "module bytes hash to {}, but the Put names {}",
                    code.hash(),
                    put.sha256
                ),
                code: Some(put.sha256),
                ..Failed::default()
            }));
        }
        if wasmpickle::snapshot_object(&code).is_some() {
            // A snapshot is only ever restored, which compiles its own variant: keep it.
            self.worker
                .store
                .put(&code)
                .map_err(|e| Box::new(Failed::from_error(put.id, &e)))?;
        } else {
            self.worker
                .runtime
                .load(&code)
                .map_err(|e| Box::new(Failed::from_error(put.id, &e)))?;
        }
        tracing::debug!(code = %code.hash(), bytes = put.wasm.len(), "module stored");
        Ok(())
    }

    fn call(&mut self, id: u64, pickle: &[u8]) -> Result<()> {
        let started = Instant::now();
        let result = self.run_pickle(pickle);
        let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        match result {
            Ok(outcome) => self.send(
                ty::DONE,
                &Done {
                    id,
                    value: outcome.value(),
                    fuel_used: outcome.fuel_used(),
                    micros,
                },
            ),
            Err(e) => self.send(ty::FAILED, &Failed::from_error(id, &e)),
        }
    }

    fn run_pickle(&self, pickle: &[u8]) -> wasmpickle::Result<wasmpickle::Outcome> {
        let runtime = &self.worker.runtime;
        if Header::read(pickle).map_err(wasmpickle::Error::from)?.kind == PickleKind::SignedCall {
            let signed = SignedCall::from_bytes(pickle)?;
            if let Some(export) = &self.worker.config.abort_on_export
                && Call::from_bytes(signed.call_bytes()).is_ok_and(|c| c.export() == export)
            {
                fault_abort(export);
            }
            return runtime.run_signed(&signed);
        }
        let call = Call::from_bytes(pickle)?;
        if self
            .worker
            .config
            .abort_on_export
            .as_deref()
            .is_some_and(|e| e == call.export())
        {
            fault_abort(call.export());
        }
        runtime.run(&call)
    }

    fn send<T: serde::Serialize>(&mut self, t: u8, body: &T) -> Result<()> {
        self.out.clear();
        message::encode(&mut self.out, t, body)?;
        self.writer
            .write_all(&self.out)
            .map_err(|e| Error::io("cannot write to the client", e))
    }

    fn flush(&mut self) -> Result<()> {
        self.writer
            .flush()
            .map_err(|e| Error::io("cannot write to the client", e))
    }
}

/// The error for a twin id this session does not hold.
fn no_twin(id: u64, twin: u64) -> Failed {
    Failed {
        id,
        kind: wasmpickle::ErrorKind::NotAnObject.as_str().to_owned(),
        message: format!(
            "this session holds no object {twin} (dropped, or made on another connection)"
        ),
        ..Failed::default()
    }
}

fn fault_abort(export: &str) -> ! {
    eprintln!(
        "wasmpickle worker: aborting on a call of `{export}` (WASMPICKLE_WORKER_ABORT_ON_EXPORT)"
    );
    std::process::abort()
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

#[cfg(test)]
mod tests {
    use std::os::unix::net::UnixStream;
    use std::thread::JoinHandle;

    use wasmpickle::{Closure, CodeHash};

    use super::*;
    use crate::Client;

    /// `echo` replies with its arguments; the allocator bumps from 1024.
    const ECHO: &str = r#"(module
      (memory (export "memory") 1)
      (global $next (mut i32) (i32.const 1024))
      (func (export "wasmpickle_alloc") (param $len i32) (result i32)
        (local $p i32)
        (local.set $p (global.get $next))
        (global.set $next (i32.add (global.get $next) (local.get $len)))
        (local.get $p))
      (func (export "echo") (param i32 i32 i32 i32) (result i64)
        (i32.store8 (i32.sub (local.get 2) (i32.const 1)) (i32.const 0))
        (i64.or
          (i64.shl (i64.extend_i32_u (i32.sub (local.get 2) (i32.const 1))) (i64.const 32))
          (i64.extend_i32_u (i32.add (local.get 3) (i32.const 1))))))"#;

    fn echo() -> Code {
        Code::new(wat::parse_str(ECHO).unwrap()).unwrap()
    }

    /// A worker serving one session on a socket pair, and the client end.
    fn session(
        config: &WorkerConfig,
        key: Option<&SigningKey>,
    ) -> (Result<Client>, JoinHandle<Result<()>>) {
        let worker = Worker::new(config).unwrap();
        let (a, b) = UnixStream::pair().unwrap();
        let authenticate = key.is_some();
        let served = thread::spawn(move || {
            let reader = b.try_clone().unwrap();
            worker.serve_streams(reader, b, authenticate)
        });
        let client = Client::over(a.try_clone().unwrap(), a, key);
        (client, served)
    }

    #[test]
    fn a_module_crosses_once_and_calls_run_by_hash() {
        let (client, served) = session(&WorkerConfig::new(), None);
        let mut client = client.unwrap();
        let code = echo();
        let closure = code.function("echo").unwrap();
        for i in 0..5u8 {
            let outcome = client.run(&closure.call(&(i,)).unwrap()).unwrap();
            assert_eq!(outcome.value(), [0x91, i]);
        }
        assert_eq!(client.code_bytes_sent(), code.wasm().len() as u64);
        assert_eq!(client.modules_sent(), 1);
        assert!(!client.load(&code).unwrap(), "already there");
        assert_eq!(client.worker_info().pid, std::process::id());
        client.ping().unwrap();
        drop(client);
        served.join().unwrap().unwrap();
    }

    #[test]
    fn a_call_by_hash_of_a_module_the_worker_lacks_is_code_not_found() {
        let (client, _served) = session(&WorkerConfig::new(), None);
        let mut client = client.unwrap();
        let closure = Closure::from_parts(
            wasmpickle::CodeRef::by_hash(CodeHash::digest(b"nothing")),
            "echo",
            vec![0xc0],
        )
        .unwrap();
        let err = client.run(&closure.call(&()).unwrap()).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Call);
        assert_eq!(err.remote_kind(), Some(wasmpickle::ErrorKind::CodeNotFound));
        assert_eq!(client.code_bytes_sent(), 0);
    }

    #[test]
    fn a_put_under_the_wrong_hash_is_refused() {
        let (client, _served) = session(&WorkerConfig::new(), None);
        let mut client = client.unwrap();
        let wasm: Arc<[u8]> = echo().wasm().clone();
        let err = client
            .ensure_code(CodeHash::digest(b"another module"), Some(&wasm))
            .unwrap_err();
        assert_eq!(err.remote_kind(), Some(wasmpickle::ErrorKind::HashMismatch));
        // The session goes on.
        client.ping().unwrap();
    }

    #[test]
    fn with_keys_the_session_needs_the_handshake() {
        let key = SigningKey::new("k", &[1; 16]).unwrap();
        let mut config = WorkerConfig::new();
        config.key(key.clone());
        let (client, served) = session(&config, Some(&key));
        client.unwrap().ping().unwrap();
        drop(served);

        // Without the handshake, `Hello` is refused.
        let (client, served) = {
            let worker = Worker::new(&config).unwrap();
            let (a, b) = UnixStream::pair().unwrap();
            let served =
                thread::spawn(move || worker.serve_streams(b.try_clone().unwrap(), b, true));
            (Client::over(a.try_clone().unwrap(), a, None), served)
        };
        assert_eq!(client.unwrap_err().kind(), ErrorKind::Handshake);
        assert_eq!(
            served.join().unwrap().unwrap_err().kind(),
            ErrorKind::Handshake
        );
    }
}

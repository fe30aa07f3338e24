//! One connection to one worker: the client side of `docs/protocol.md`.
//!
//! [`Client`] is what the pool's dispatchers are built on, and is public for programs that
//! want to drive a single worker themselves. It remembers which modules the worker has, so
//! [`Client::run`] ships a module at most once per connection: before the first call of a
//! module it asks (`Has`), and only if the worker lacks it sends the bytes (`Put`). Calls
//! themselves always travel by hash.

use std::collections::HashSet;
use std::fmt;
use std::io::{BufReader, BufWriter, Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Deserialize;
use wasmpickle::{Call, Code, CodeHash, Limits, SigningKey};

use crate::address::{Address, Socket};
use crate::auth;
use crate::error::{Error, ErrorKind, Remote, Result};
use crate::frame::{DEFAULT_MAX_FRAME, GREETING_MAX_FRAME, holds_frame, read_frame};
use crate::message::{
    self, Bye, CallMsg, Done, Failed, Has, Have, Hello, Invoke, PROTOCOL_VERSION, Ping, Put,
    Restore, Snapshotted, Spawn, Spawned, Stored, TwinRef, Welcome, WireLimits, ty,
};

/// A live object on a worker, as [`Client::spawn`] and [`Client::restore`] report it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TwinInfo {
    /// The id the object has in its session.
    pub twin: u64,
    /// The object type's name.
    pub object: String,
    /// Its methods, sorted.
    pub methods: Vec<String>,
}

/// The result of a call that returned normally on a worker: the pool's counterpart of
/// [`wasmpickle::Outcome`], with the same bytes and fuel a local [`wasmpickle::Runtime`]
/// gives for the same call.
#[derive(Clone, PartialEq, Eq)]
pub struct Outcome {
    value: Vec<u8>,
    fuel_used: u64,
    micros: u64,
    worker: usize,
}

impl Outcome {
    /// The MessagePack bytes of the returned value.
    pub fn value(&self) -> &[u8] {
        &self.value
    }

    /// The returned value, decoded.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Decode`] when the value does not fit `T`.
    pub fn decode<'a, T: Deserialize<'a>>(&'a self) -> Result<T> {
        wasmpickle::format::codec::from_msgpack(&self.value)
            .map_err(|e| Error::new(ErrorKind::Decode, "cannot decode the result").with_source(e))
    }

    /// Fuel the call consumed: the same on every run and machine.
    pub fn fuel_used(&self) -> u64 {
        self.fuel_used
    }

    /// How long the call ran on the worker, as the worker measured it.
    pub fn run_time(&self) -> Duration {
        Duration::from_micros(self.micros)
    }

    /// The index of the pool worker that ran the call (0 for a lone [`Client`]).
    pub fn worker(&self) -> usize {
        self.worker
    }

    /// The value's MessagePack bytes, taking ownership.
    pub fn into_value(self) -> Vec<u8> {
        self.value
    }

    pub(crate) fn set_worker(&mut self, worker: usize) {
        self.worker = worker;
    }
}

impl fmt::Debug for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Outcome")
            .field("value_len", &self.value.len())
            .field("fuel_used", &self.fuel_used)
            .field("micros", &self.micros)
            .field("worker", &self.worker)
            .finish()
    }
}

/// What a worker said about itself when the session started.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkerInfo {
    /// The protocol version the session speaks.
    pub protocol: u32,
    /// The worker's name and version (`wasmpickle-pool 0.1.0`).
    pub worker: String,
    /// The worker's process id, as the worker sees it.
    pub pid: u32,
    /// The worker's caps; a call's own limits apply only below them.
    pub limits: Limits,
    /// The largest frame the worker accepts.
    pub max_frame: usize,
    /// Optional operations the worker offers beyond this protocol version's core.
    pub features: Vec<String>,
}

impl From<&Welcome> for WorkerInfo {
    fn from(w: &Welcome) -> WorkerInfo {
        let WireLimits {
            fuel,
            deadline_ms,
            max_memory,
            max_table_elements,
        } = w.limits;
        let mut limits = Limits::new();
        limits
            .fuel(fuel)
            .deadline(Duration::from_millis(deadline_ms))
            .max_memory(max_memory)
            .max_table_elements(max_table_elements);
        WorkerInfo {
            protocol: w.protocol,
            worker: w.worker.clone(),
            pid: w.pid,
            limits,
            max_frame: usize::try_from(w.max_frame).unwrap_or(usize::MAX),
            features: w.features.clone(),
        }
    }
}

/// A reply to a pipelined request, as the pool's dispatcher sees it.
#[derive(Debug)]
pub(crate) enum Reply {
    Done(u64, Outcome),
    Failed(u64, Failed),
}

/// A connection to one worker, after the handshake and `Hello`.
///
/// Requests are answered in order; [`Client::run`] sends one and waits for its answer. The
/// worker's failures come back as [`ErrorKind::Call`] errors; a broken connection as
/// [`ErrorKind::Io`], [`ErrorKind::UnexpectedEof`] or [`ErrorKind::Protocol`], after which the
/// client is of no further use.
pub struct Client {
    reader: BufReader<Box<dyn Read + Send>>,
    writer: BufWriter<Box<dyn Write + Send>>,
    info: WorkerInfo,
    known: HashSet<CodeHash>,
    code_bytes_sent: u64,
    modules_sent: u64,
    next_id: u64,
    max_frame: usize,
    out: Vec<u8>,
    buf: Vec<u8>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("worker", &self.info)
            .field("known", &self.known.len())
            .field("code_bytes_sent", &self.code_bytes_sent)
            .finish()
    }
}

/// Buffer sizes of a connection: big enough that a burst of small frames is one syscall.
const BUFFER: usize = 64 << 10;

impl Client {
    /// Connects to a worker listening on `address` (see `wasmpickle worker --listen`),
    /// authenticating with `key` when given. TCP requires a key.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Config`] for `stdio` or TCP without a key; [`ErrorKind::Io`] when the
    /// connection fails; [`ErrorKind::Handshake`] when the worker does not hold the key;
    /// [`ErrorKind::Protocol`] when it does not speak this protocol.
    pub fn connect(address: &Address, key: Option<&SigningKey>) -> Result<Client> {
        Client::connect_socket(address, key, Duration::from_secs(30)).map(|(client, _)| client)
    }

    /// Connects with a timeout on connecting and on the greeting, and returns a handle on
    /// the socket with which the session can be cut from another thread.
    pub(crate) fn connect_socket(
        address: &Address,
        key: Option<&SigningKey>,
        timeout: Duration,
    ) -> Result<(Client, Socket)> {
        if address.requires_key() && key.is_none() {
            return Err(Error::new(
                ErrorKind::Config,
                format!("{address} is TCP, which requires a key for the handshake"),
            ));
        }
        let socket = Socket::connect(address, timeout)?;
        let clone = |s: &Socket| {
            s.try_clone()
                .map_err(|e| Error::io("cannot clone a socket", e))
        };
        // The greeting must not hang forever on a peer that accepts and says nothing.
        socket
            .set_read_timeout(Some(timeout))
            .map_err(|e| Error::io("cannot set a read timeout", e))?;
        let client = Client::over(clone(&socket)?, clone(&socket)?, key)
            .map_err(|e| with_context(e, &format!("worker at {address}")))?;
        socket
            .set_read_timeout(None)
            .map_err(|e| Error::io("cannot clear a read timeout", e))?;
        Ok((client, socket))
    }

    /// Starts a session over any pair of streams: a child process's stdout and stdin, a
    /// socket's two halves. Runs the handshake when `key` is given, then `Hello`.
    ///
    /// # Errors
    ///
    /// As [`Client::connect`].
    pub fn over(
        reader: impl Read + Send + 'static,
        writer: impl Write + Send + 'static,
        key: Option<&SigningKey>,
    ) -> Result<Client> {
        let mut reader: BufReader<Box<dyn Read + Send>> =
            BufReader::with_capacity(BUFFER, Box::new(reader));
        let mut writer: BufWriter<Box<dyn Write + Send>> =
            BufWriter::with_capacity(BUFFER, Box::new(writer));
        if let Some(key) = key {
            auth::client(&mut reader, &mut writer, key)?;
        }
        let mut out = Vec::new();
        message::encode(
            &mut out,
            ty::HELLO,
            &Hello {
                protocol: PROTOCOL_VERSION,
                client: concat!("wasmpickle-pool ", env!("CARGO_PKG_VERSION")).to_owned(),
            },
        )?;
        writer
            .write_all(&out)
            .and_then(|()| writer.flush())
            .map_err(|e| Error::io("cannot send Hello", e))?;
        let mut buf = Vec::new();
        if !read_frame(&mut reader, GREETING_MAX_FRAME, &mut buf)? {
            return Err(Error::new(
                ErrorKind::Protocol,
                "the worker closed the connection instead of answering Hello",
            ));
        }
        let (t, body) = message::split(&buf)?;
        let welcome: Welcome = match t {
            ty::WELCOME => message::decode(t, body)?,
            ty::BYE => return Err(bye(message::decode(t, body)?)),
            other => {
                return Err(Error::new(
                    ErrorKind::Protocol,
                    format!("the worker answered Hello with message type 0x{other:02x}"),
                ));
            }
        };
        if welcome.protocol == 0 || welcome.protocol > PROTOCOL_VERSION {
            return Err(Error::new(
                ErrorKind::Protocol,
                format!(
                    "the worker speaks protocol version {}, this client {PROTOCOL_VERSION}",
                    welcome.protocol
                ),
            ));
        }
        Ok(Client {
            reader,
            writer,
            info: WorkerInfo::from(&welcome),
            known: HashSet::new(),
            code_bytes_sent: 0,
            modules_sent: 0,
            next_id: 1,
            max_frame: DEFAULT_MAX_FRAME,
            out,
            buf,
        })
    }

    /// What the worker said about itself.
    pub fn worker_info(&self) -> &WorkerInfo {
        &self.info
    }

    /// Module bytes sent to the worker over this connection.
    pub fn code_bytes_sent(&self) -> u64 {
        self.code_bytes_sent
    }

    /// Modules sent to the worker over this connection.
    pub fn modules_sent(&self) -> u64 {
        self.modules_sent
    }

    /// Sets the largest reply frame this client accepts. Default: [`DEFAULT_MAX_FRAME`].
    pub fn set_max_frame(&mut self, bytes: usize) {
        self.max_frame = bytes;
    }

    /// Runs a call on the worker and waits for its result. Its module is shipped first if
    /// the worker lacks it, from the call's inline code; the call itself travels by hash.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Call`] when the call fails on the worker (including `code-not-found`
    /// when the worker lacks the module and the call does not carry it); connection errors
    /// otherwise.
    pub fn run(&mut self, call: &Call) -> Result<Outcome> {
        let hash = call.code().hash();
        if !self.knows(&hash) {
            self.ensure_code(hash, call.code().wasm())?;
        }
        let id = self.send_call(&call.by_reference())?;
        self.flush()?;
        match self.recv()? {
            Reply::Done(got, outcome) if got == id => Ok(outcome),
            Reply::Failed(got, failed) if got == id => Err(failed_error(failed)),
            _ => Err(Error::new(
                ErrorKind::Protocol,
                "the worker answered a request that was not asked",
            )),
        }
    }

    /// Makes sure the worker has `code`, sending it only when the worker says it lacks it.
    /// Returns true when the bytes were sent.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Call`] when the worker refuses the module (it does not compile, imports
    /// something not granted, ...); connection errors otherwise.
    pub fn load(&mut self, code: &Code) -> Result<bool> {
        if self.knows(&code.hash()) {
            return Ok(false);
        }
        self.ensure_code(code.hash(), Some(code.wasm()))
    }

    /// Asks the worker for a no-op reply and returns the round-trip time.
    ///
    /// # Errors
    ///
    /// Connection errors.
    pub fn ping(&mut self) -> Result<Duration> {
        let started = Instant::now();
        let id = self.take_id();
        self.out.clear();
        message::encode(&mut self.out, ty::PING, &Ping { id })?;
        self.write_out()?;
        self.flush()?;
        let (t, body) = self.read_message()?;
        match t {
            ty::PONG if message::decode::<Ping>(t, body)?.id == id => Ok(started.elapsed()),
            _ => Err(unexpected(t)),
        }
    }

    /// Makes a live object on the worker by running the constructor call `call` (a call of
    /// `<Name>.new`; see [`wasmpickle::Runtime::spawn`]). The module is shipped first if the
    /// worker lacks it. The object lives in this session until [`Client::drop_twin`] or the
    /// end of the connection.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Call`] with the worker's error kind (`not-an-object`, `object-limit`,
    /// the constructor's failure, ...); connection errors otherwise.
    pub fn spawn(&mut self, call: &Call) -> Result<TwinInfo> {
        let hash = call.code().hash();
        if !self.knows(&hash) {
            self.ensure_code(hash, call.code().wasm())?;
        }
        let id = self.take_id();
        let pickle = call.by_reference().to_bytes();
        self.out.clear();
        message::encode(&mut self.out, ty::SPAWN, &Spawn { id, call: &pickle })?;
        self.spawned(id)
    }

    /// Resumes an object on the worker from a snapshot (see [`Client::snapshot`]), shipping
    /// the snapshot first if the worker lacks it.
    ///
    /// # Errors
    ///
    /// As [`Client::spawn`].
    pub fn restore(&mut self, snapshot: &Code) -> Result<TwinInfo> {
        let hash = snapshot.hash();
        if !self.knows(&hash) {
            self.ensure_code(hash, Some(snapshot.wasm()))?;
        }
        let id = self.take_id();
        self.out.clear();
        message::encode(&mut self.out, ty::RESTORE, &Restore { id, sha256: hash })?;
        self.spawned(id)
    }

    fn spawned(&mut self, id: u64) -> Result<TwinInfo> {
        self.write_out()?;
        self.flush()?;
        let (t, body) = self.read_message()?;
        match t {
            ty::SPAWNED => {
                let s: Spawned = message::decode(t, body)?;
                if s.id != id {
                    return Err(unexpected(t));
                }
                Ok(TwinInfo {
                    twin: s.twin,
                    object: s.object,
                    methods: s.methods,
                })
            }
            ty::FAILED => Err(failed_error(message::decode(t, body)?)),
            other => Err(unexpected(other)),
        }
    }

    /// Calls `method` of the object `twin` with MessagePack-encoded arguments.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Call`] with the worker's error kind (`missing-export`, `guest-error`,
    /// `object-poisoned` after a trap, `not-an-object` for an unknown twin, ...); connection
    /// errors otherwise.
    pub fn invoke(&mut self, twin: u64, method: &str, args: &[u8]) -> Result<Outcome> {
        let id = self.take_id();
        self.out.clear();
        message::encode(
            &mut self.out,
            ty::INVOKE,
            &Invoke {
                id,
                twin,
                method,
                args,
            },
        )?;
        self.write_out()?;
        self.flush()?;
        match self.recv()? {
            Reply::Done(got, outcome) if got == id => Ok(outcome),
            Reply::Failed(got, failed) if got == id => Err(failed_error(failed)),
            _ => Err(Error::new(
                ErrorKind::Protocol,
                "the worker answered a request that was not asked",
            )),
        }
    }

    /// The whole state of the object `twin` as a module (see
    /// [`wasmpickle::Object::snapshot`]), checked against the hash the worker names. The
    /// worker keeps it too, so restoring it there sends no code.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Call`] (`object-poisoned`, ...); [`ErrorKind::Protocol`] when the bytes
    /// do not hash to the hash the worker names; connection errors otherwise.
    pub fn snapshot(&mut self, twin: u64) -> Result<Code> {
        let id = self.take_id();
        self.out.clear();
        message::encode(&mut self.out, ty::SNAPSHOT, &TwinRef { id, twin })?;
        self.write_out()?;
        self.flush()?;
        let (t, body) = self.read_message()?;
        match t {
            ty::SNAPSHOTTED => {
                let s: Snapshotted = message::decode(t, body)?;
                let sha256 = s.sha256;
                if s.id != id {
                    return Err(unexpected(t));
                }
                let code = Code::new(s.wasm.to_vec()).map_err(|e| {
                    Error::new(
                        ErrorKind::Protocol,
                        "the worker sent a snapshot that is not a valid module",
                    )
                    .with_source(e)
                })?;
                if code.hash() != sha256 {
                    return Err(Error::new(
                        ErrorKind::Protocol,
                        format!(
                            "the worker's snapshot hashes to {}, not {sha256}",
                            code.hash()
                        ),
                    ));
                }
                self.known.insert(sha256);
                Ok(code)
            }
            ty::FAILED => Err(failed_error(message::decode(t, body)?)),
            other => Err(unexpected(other)),
        }
    }

    /// Ends the object `twin` on the worker, freeing its instance.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Call`] (`not-an-object`) for an unknown twin; connection errors
    /// otherwise.
    pub fn drop_twin(&mut self, twin: u64) -> Result<()> {
        let id = self.take_id();
        self.out.clear();
        message::encode(&mut self.out, ty::DROP, &TwinRef { id, twin })?;
        self.write_out()?;
        self.flush()?;
        let (t, body) = self.read_message()?;
        match t {
            ty::DROPPED if message::decode::<Ping>(t, body)?.id == id => Ok(()),
            ty::FAILED => Err(failed_error(message::decode(t, body)?)),
            other => Err(unexpected(other)),
        }
    }

    /// True when this client knows the worker has the module.
    pub(crate) fn knows(&self, hash: &CodeHash) -> bool {
        self.known.contains(hash)
    }

    /// Forgets that the worker has a module (it said it does not, after all).
    pub(crate) fn forget(&mut self, hash: &CodeHash) {
        self.known.remove(hash);
    }

    /// `Has`, then `Put` if needed. Must be called with no request outstanding. Returns true
    /// when the bytes were sent.
    pub(crate) fn ensure_code(&mut self, hash: CodeHash, wasm: Option<&Arc<[u8]>>) -> Result<bool> {
        let id = self.take_id();
        self.out.clear();
        message::encode(
            &mut self.out,
            ty::HAS,
            &Has {
                id,
                hashes: vec![hash],
            },
        )?;
        self.write_out()?;
        self.flush()?;
        let (t, body) = self.read_message()?;
        let present = match t {
            ty::HAVE => {
                let have: Have = message::decode(t, body)?;
                if have.id != id || have.present.len() != 1 {
                    return Err(Error::new(
                        ErrorKind::Protocol,
                        "the worker's Have does not answer the Has sent",
                    ));
                }
                have.present[0]
            }
            ty::FAILED => return Err(failed_error(message::decode(t, body)?)),
            other => return Err(unexpected(other)),
        };
        if present {
            self.known.insert(hash);
            return Ok(false);
        }
        let Some(wasm) = wasm else {
            return Err(Error::new(
                ErrorKind::Call,
                format!("code {hash} is not on the worker, and the call does not carry it"),
            )
            .with_remote(Remote {
                kind: wasmpickle::ErrorKind::CodeNotFound.as_str().to_owned(),
                code: Some(hash),
                ..Remote::default()
            }));
        };
        let id = self.take_id();
        self.out.clear();
        message::encode(
            &mut self.out,
            ty::PUT,
            &Put {
                id,
                sha256: hash,
                wasm,
            },
        )?;
        self.write_out()?;
        self.flush()?;
        self.code_bytes_sent += wasm.len() as u64;
        self.modules_sent += 1;
        let (t, body) = self.read_message()?;
        match t {
            ty::STORED => {
                let stored: Stored = message::decode(t, body)?;
                if stored.id != id || stored.sha256 != hash {
                    return Err(Error::new(
                        ErrorKind::Protocol,
                        "the worker's Stored does not answer the Put sent",
                    ));
                }
                self.known.insert(hash);
                Ok(true)
            }
            ty::FAILED => Err(failed_error(message::decode(t, body)?)),
            other => Err(unexpected(other)),
        }
    }

    /// Queues a `Call` (by hash) in the write buffer and returns its request id.
    pub(crate) fn send_call(&mut self, call: &Call) -> Result<u64> {
        let id = self.take_id();
        let pickle = call.to_bytes();
        self.out.clear();
        message::encode(&mut self.out, ty::CALL, &CallMsg { id, call: &pickle })?;
        self.write_out()?;
        Ok(id)
    }

    /// Sends everything buffered.
    pub(crate) fn flush(&mut self) -> Result<()> {
        self.writer
            .flush()
            .map_err(|e| Error::io("cannot write to the worker", e))
    }

    /// True when a whole reply is already buffered, so [`Client::recv`] will not block.
    pub(crate) fn has_ready(&self) -> bool {
        holds_frame(self.reader.buffer())
    }

    /// Waits for the next reply to a `Call`.
    pub(crate) fn recv(&mut self) -> Result<Reply> {
        let (t, body) = self.read_message()?;
        match t {
            ty::DONE => {
                let done: Done = message::decode(t, body)?;
                Ok(Reply::Done(
                    done.id,
                    Outcome {
                        value: done.value.to_vec(),
                        fuel_used: done.fuel_used,
                        micros: done.micros,
                        worker: 0,
                    },
                ))
            }
            ty::FAILED => {
                let failed: Failed = message::decode(t, body)?;
                Ok(Reply::Failed(failed.id, failed))
            }
            other => Err(unexpected(other)),
        }
    }

    fn take_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    fn write_out(&mut self) -> Result<()> {
        let len = self.out.len() - crate::frame::HEADER_LEN;
        if len > self.info.max_frame {
            return Err(Error::new(
                ErrorKind::FrameTooLarge,
                format!(
                    "a message of {len} bytes is over the worker's frame cap of {} bytes",
                    self.info.max_frame
                ),
            ));
        }
        self.writer
            .write_all(&self.out)
            .map_err(|e| Error::io("cannot write to the worker", e))
    }

    /// Reads one message; a `Bye` becomes the error it announces.
    fn read_message(&mut self) -> Result<(u8, &[u8])> {
        if !read_frame(&mut self.reader, self.max_frame, &mut self.buf)? {
            return Err(Error::io(
                "the worker closed the connection",
                std::io::ErrorKind::UnexpectedEof.into(),
            ));
        }
        let (t, body) = message::split(&self.buf)?;
        if t == ty::BYE {
            return Err(bye(message::decode(t, body)?));
        }
        Ok((t, body))
    }
}

fn unexpected(t: u8) -> Error {
    Error::new(
        ErrorKind::Protocol,
        format!("the worker sent message type 0x{t:02x} where it was not expected"),
    )
}

fn bye(bye: Bye) -> Error {
    let kind = match bye.kind.as_str() {
        "frame-too-large" => ErrorKind::FrameTooLarge,
        "handshake" => ErrorKind::Handshake,
        _ => ErrorKind::Protocol,
    };
    Error::new(
        kind,
        format!("the worker closed the connection: {}", bye.message),
    )
}

/// Wraps an error in one that says which worker it is about; the original stays the source.
fn with_context(e: Error, context: &str) -> Error {
    Error::new(e.kind(), format!("no session with the {context}")).with_source(e)
}

/// Rebuilds a worker's `Failed` as an [`ErrorKind::Call`] error.
pub(crate) fn failed_error(f: Failed) -> Error {
    let message = f.message;
    Error::new(ErrorKind::Call, message).with_remote(Remote {
        kind: f.kind,
        code: f.code,
        export: f.export,
        guest: f.guest,
        backtrace: f.backtrace,
        fuel_used: f.fuel_used,
        imports: f.imports,
    })
}

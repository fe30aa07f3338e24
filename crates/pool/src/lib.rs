//! Run pickled calls on a pool of worker processes: wasmpickle's answer to Python's
//! `multiprocessing.Pool`, with functions sent by value as WebAssembly.
//!
//! A [`Pool`] spawns worker processes (by default one per core) and talks to each over its
//! standard input and output with a small framed protocol (`docs/protocol.md`); workers that
//! run elsewhere join by address. Calls go to workers by the hash of their code, and each
//! module crosses to each worker once: before a worker's first call of a module the pool asks
//! whether the worker has it, and sends the bytes only if not — a 2 MB module costs 2 MB per
//! worker, however many calls follow. The pool supervises its workers: one that dies or hangs
//! is replaced, and the call it was running is retried up to a budget and then fails with an
//! error naming it. No call is lost, and none is answered twice.
//!
//! # Example
//!
//! ```no_run
//! use wasmpickle::Code;
//! use wasmpickle_pool::{Pool, PoolConfig};
//!
//! #[derive(serde::Serialize)]
//! struct Scale { factor: f64 }
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let code = Code::from_file("math.wasm")?;
//! let scale = code.closure("scale", &Scale { factor: 2.5 })?;
//!
//! let pool = Pool::new(PoolConfig::new().workers(4))?;
//! let results = pool.map(&scale, (0..1000).map(|i| (f64::from(i),)));
//! let ys: Vec<f64> = results
//!     .iter()
//!     .map(|r| r.as_ref().map_err(Clone::clone)?.decode())
//!     .collect::<Result<_, _>>()?;
//! assert_eq!(ys[4], 10.0);
//!
//! for w in pool.workers() {
//!     println!("worker {}: {} calls, {} code bytes", w.index, w.calls, w.code_bytes_sent);
//! }
//! # Ok(()) }
//! ```
//!
//! From async code the same calls return futures that never block the executor and need no
//! particular runtime:
//!
//! ```no_run
//! # async fn f(pool: &wasmpickle_pool::Pool, call: &wasmpickle::Call) -> Result<(), wasmpickle_pool::Error> {
//! let outcome = pool.run_async(call).await?;
//! # Ok(()) }
//! ```
//!
//! # Core concepts
//!
//! * [`Pool`] and [`PoolConfig`]: the workers, their supervision and the queue. Blocking
//!   [`Pool::run`], [`Pool::run_all`], [`Pool::map`] and [`Pool::batch`] (results as they
//!   finish); [`Pool::run_async`], [`Pool::run_all_async`], [`Pool::map_async`].
//! * [`Outcome`]: a returned value, byte for byte what a local [`wasmpickle::Runtime`]
//!   returns for the same call, with the same fuel.
//! * [`Error`] / [`ErrorKind`]: a call that failed on its worker is [`ErrorKind::Call`] with
//!   the worker's wasmpickle kind in [`Error::remote_kind`]; a call whose workers kept dying
//!   is [`ErrorKind::WorkerLost`]; broken connections and bad frames have kinds of their own.
//! * [`WorkerStats`]: per worker, calls answered, code bytes sent, restarts, process id.
//! * [`worker`]: the other end — [`worker::serve`] makes any program a worker; the
//!   `wasmpickle worker` command is a thin wrapper around it.
//! * [`Client`]: one connection to one worker, for programs that drive a worker themselves.
//! * [`frame`]: length-prefixed frames with a cap checked before allocating.
//! * [`Address`]: `stdio`, `unix:PATH` or `tcp:HOST:PORT`. TCP requires the shared-key
//!   handshake (a [`wasmpickle::SigningKey`] held by both ends).
//!
//! # Which worker program
//!
//! The pool spawns `PROGRAM worker --listen stdio [flags]`. PROGRAM is, in order: what
//! [`PoolConfig::worker_program`] says; the environment variable `WASMPICKLE_WORKER`; a
//! `wasmpickle` executable next to the current one; `wasmpickle` on the `PATH`.
//!
//! # Platform
//!
//! Unix only: Unix sockets, and process signals in supervision.

#![cfg(unix)]

mod address;
mod auth;
mod client;
mod error;
pub mod frame;
mod message;
mod pool;
mod twin;
pub mod worker;

pub use address::Address;
pub use client::{Client, Outcome, TwinInfo, WorkerInfo};
pub use error::{Error, ErrorKind, Result};
pub use message::PROTOCOL_VERSION;
pub use pool::{Batch, Pending, PendingAll, Pool, PoolConfig, WorkerStats};
pub use twin::Twin;

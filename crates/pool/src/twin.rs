//! Twins: live guest objects in a worker process, driven from the host by a handle.

use std::fmt;
use std::process::Child;

use serde::Serialize;
use wasmpickle::format::codec;
use wasmpickle::{Call, Code};

use crate::client::{Client, Outcome, TwinInfo};
use crate::error::{Error, ErrorKind, Result};

/// A handle on a live guest object (a *twin*) in a worker: its method calls run there, one
/// after another, and its state stays there between calls, as with cpy2py's `TwinObject` or
/// a Ray actor.
///
/// Made by [`Pool::spawn_twin`](crate::Pool::spawn_twin) (a worker process of its own),
/// [`Pool::restore_twin`](crate::Pool::restore_twin), or on a connection of your own with
/// [`Twin::spawn_on`] and [`Twin::restore_on`] (a worker reached by address). The object
/// lives as long as the handle: dropping it ends the object, and the worker process if the
/// twin started one.
///
/// [`Twin::snapshot`] captures the object's whole state as a module (linear memory and every
/// mutable global; see [`wasmpickle::Object::snapshot`]) that resumes it in any other worker
/// or process, or in any WebAssembly engine.
///
/// A twin is not retried or moved when its worker dies: its state died with it. Calls then
/// fail with a connection error ([`ErrorKind::Io`], [`ErrorKind::UnexpectedEof`]); restore
/// the last snapshot to go on. After a trap in a method the object refuses further calls
/// (`object-poisoned`), for the same reason.
///
/// ```no_run
/// use wasmpickle::Code;
/// use wasmpickle_pool::{Pool, PoolConfig};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let pool = Pool::new(&PoolConfig::new())?;
/// let code = Code::from_file("twins.wasm")?;
/// let start = code.closure("Counter.new", &(0i64, 1i64))?.call(&())?;
/// let mut counter = pool.spawn_twin(&start)?;
/// counter.call("incr", &())?;
/// let snapshot = counter.snapshot()?;          // a module: store it, send it, keep it
/// let mut copy = pool.restore_twin(&snapshot)?; // another process, same state
/// assert_eq!(counter.call("get", &())?, copy.call("get", &())?);
/// # Ok(()) }
/// ```
pub struct Twin {
    // Declared first, so the session ends (and the worker sees end of input) before the
    // process is reaped.
    client: Client,
    info: TwinInfo,
    child: Option<Child>,
}

impl fmt::Debug for Twin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Twin")
            .field("object", &self.info.object)
            .field("twin", &self.info.twin)
            .field("worker", self.client.worker_info())
            .finish()
    }
}

impl Twin {
    /// Makes the object on the worker `client` is connected to, by running the constructor
    /// call `call` (`<Name>.new`). The twin owns the connection.
    ///
    /// # Errors
    ///
    /// As [`Client::spawn`].
    pub fn spawn_on(client: Client, call: &Call) -> Result<Twin> {
        Twin::spawn_in(client, None, call)
    }

    /// Resumes an object from `snapshot` on the worker `client` is connected to.
    ///
    /// # Errors
    ///
    /// As [`Client::restore`].
    pub fn restore_on(client: Client, snapshot: &Code) -> Result<Twin> {
        Twin::restore_in(client, None, snapshot)
    }

    pub(crate) fn spawn_in(mut client: Client, child: Option<Child>, call: &Call) -> Result<Twin> {
        let made = client.spawn(call);
        Twin::adopt(client, child, made)
    }

    pub(crate) fn restore_in(
        mut client: Client,
        child: Option<Child>,
        snapshot: &Code,
    ) -> Result<Twin> {
        let made = client.restore(snapshot);
        Twin::adopt(client, child, made)
    }

    fn adopt(client: Client, child: Option<Child>, made: Result<TwinInfo>) -> Result<Twin> {
        // On failure the handle still owns the process, so dropping it reaps the worker.
        let mut twin = Twin {
            client,
            info: TwinInfo {
                twin: 0,
                object: String::new(),
                methods: Vec::new(),
            },
            child,
        };
        twin.info = made?;
        Ok(twin)
    }

    /// The object type's name.
    pub fn name(&self) -> &str {
        &self.info.object
    }

    /// The object's methods, sorted.
    pub fn methods(&self) -> &[String] {
        &self.info.methods
    }

    /// The worker's process id, as it reported it.
    pub fn worker_pid(&self) -> u32 {
        self.client.worker_info().pid
    }

    /// Module bytes sent to the worker for this twin (its code, or its snapshot).
    pub fn code_bytes_sent(&self) -> u64 {
        self.client.code_bytes_sent()
    }

    /// Calls `method` with `args` (a tuple, encoded as the method's parameters are decoded).
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Encode`] when `args` cannot be encoded; then as [`Twin::call_bytes`].
    pub fn call<A: Serialize + ?Sized>(&mut self, method: &str, args: &A) -> Result<Outcome> {
        let args = codec::to_msgpack(args).map_err(|e| {
            Error::new(ErrorKind::Encode, "cannot encode a twin's arguments").with_source(e)
        })?;
        self.call_bytes(method, &args)
    }

    /// Calls `method` with MessagePack-encoded arguments.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Call`] with the worker's error kind (`guest-error`, `missing-export`,
    /// `object-poisoned`, ...); connection errors when the worker is gone.
    pub fn call_bytes(&mut self, method: &str, args: &[u8]) -> Result<Outcome> {
        self.client.invoke(self.info.twin, method, args)
    }

    /// The object's whole state, as a module that [`Pool::restore_twin`], [`Twin::restore_on`]
    /// or [`wasmpickle::Runtime::restore`] resumes anywhere. The same state gives the same
    /// bytes and hash.
    ///
    /// [`Pool::restore_twin`]: crate::Pool::restore_twin
    ///
    /// # Errors
    ///
    /// As [`Client::snapshot`].
    pub fn snapshot(&mut self) -> Result<Code> {
        self.client.snapshot(self.info.twin)
    }
}

impl Drop for Twin {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            // The object's state is being thrown away, so nothing is lost by not waiting for
            // the worker to notice the end of its input.
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

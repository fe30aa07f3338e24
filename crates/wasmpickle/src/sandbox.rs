//! One call in one fresh instance: limits, the calling sequence of `docs/abi.md` §3, and the
//! translation of everything that can go wrong into an [`ErrorKind`].

use std::fmt;
use std::ops::Range;

use wasmpickle_format::Call;
use wasmpickle_format::abi::{self, GuestFailure, Reply, Status};
use wasmtime::{
    Caller, Engine, Extern, FuncType, Instance, Linker, Memory, ModuleExport, ResourceLimiter,
    Store, Trap, TypedFunc, ValType, WasmBacktrace,
};

use crate::error::{Error, ErrorKind, Result};
use crate::limits::{Grant, Limits};
use crate::runtime::{Compiled, Outcome};

/// What a store carries: the limiter that enforces memory and table caps and remembers
/// whether it refused anything, so that a trap after a refused allocation is reported as a
/// memory limit rather than as the trap it turned into.
pub(crate) struct Sandbox {
    limiter: Limiter,
}

struct Limiter {
    max_memory: usize,
    max_table_elements: usize,
    refused: Option<String>,
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.max_memory {
            self.refused = Some(format!(
                "linear memory to grow from {current} to {desired} bytes (limit {})",
                self.max_memory
            ));
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.max_table_elements {
            self.refused = Some(format!(
                "a table to grow from {current} to {desired} elements (limit {})",
                self.max_table_elements
            ));
            return Ok(false);
        }
        Ok(true)
    }

    fn instances(&self) -> usize {
        1
    }

    fn tables(&self) -> usize {
        1
    }

    fn memories(&self) -> usize {
        1
    }
}

/// A host function found the guest's pointer or length outside its memory.
#[derive(Debug)]
struct GuestAbiViolation(String);

impl fmt::Display for GuestAbiViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for GuestAbiViolation {}

pub(crate) fn is_pickled(f: &FuncType) -> bool {
    f.params().len() == abi::EXPORT_PARAMS
        && f.params().all(|p| matches!(p, ValType::I32))
        && f.results().len() == 1
        && f.results().all(|r| matches!(r, ValType::I64))
}

pub(crate) fn is_alloc(f: &FuncType) -> bool {
    f.params().len() == 1
        && f.params().all(|p| matches!(p, ValType::I32))
        && f.results().len() == 1
        && f.results().all(|r| matches!(r, ValType::I32))
}

/// Defines a granted host function in the linker.
pub(crate) fn define_grant(linker: &mut Linker<Sandbox>, grant: Grant) -> wasmtime::Result<()> {
    match grant {
        Grant::Log => {
            linker.func_wrap(
                abi::IMPORT_MODULE,
                grant.import_name(),
                |mut caller: Caller<'_, Sandbox>, ptr: i32, len: i32| -> wasmtime::Result<()> {
                    let memory = caller
                        .get_export(abi::MEMORY_EXPORT)
                        .and_then(Extern::into_memory)
                        .ok_or_else(|| {
                            wasmtime::Error::new(GuestAbiViolation(
                                "wasmpickle.log called by a module without `memory`".into(),
                            ))
                        })?;
                    let data = memory.data(&caller);
                    let text = region(ptr as u32, len as u32, data.len())
                        .map(|r| String::from_utf8_lossy(&data[r]))
                        .ok_or_else(|| {
                            wasmtime::Error::new(GuestAbiViolation(format!(
                                "wasmpickle.log({}, {}) reads outside the {}-byte memory",
                                ptr as u32,
                                len as u32,
                                data.len()
                            )))
                        })?;
                    tracing::info!(target: "wasmpickle::guest", "{text}");
                    Ok(())
                },
            )?;
        }
        Grant::Clock => {
            linker.func_wrap(abi::IMPORT_MODULE, grant.import_name(), || -> i64 {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            })?;
        }
    }
    Ok(())
}

/// `ptr..ptr + len` if it lies inside a memory of `size` bytes.
fn region(ptr: u32, len: u32, size: usize) -> Option<Range<usize>> {
    let start = ptr as usize;
    let end = start.checked_add(len as usize)?;
    (end <= size).then_some(start..end)
}

/// Runs `call` in a fresh instance of `compiled`.
pub(crate) fn invoke(
    engine: &Engine,
    compiled: &Compiled,
    func: &ModuleExport,
    call: &Call,
    limits: &Limits,
    ticks: u64,
) -> Result<Outcome> {
    let mut store = new_store(engine, limits);
    store
        .set_fuel(limits.get_fuel())
        .expect("the engine is configured with fuel");
    store.set_epoch_deadline(ticks);
    let live = instantiate(&mut store, compiled, call.export(), limits)?;
    live.call(
        &mut store,
        compiled,
        func,
        call.export(),
        call.env(),
        call.args(),
        limits,
    )
}

/// A store for one instance, its memory and table caps enforced by a [`Limiter`].
pub(crate) fn new_store(engine: &Engine, limits: &Limits) -> Store<Sandbox> {
    let mut store = Store::new(
        engine,
        Sandbox {
            limiter: Limiter {
                max_memory: usize::try_from(limits.get_max_memory()).unwrap_or(usize::MAX),
                max_table_elements: usize::try_from(limits.get_max_table_elements())
                    .unwrap_or(usize::MAX),
                refused: None,
            },
        },
    );
    store.limiter(|s| &mut s.limiter);
    store
}

/// An instance and the parts of the guest contract every call uses.
pub(crate) struct Live {
    pub(crate) instance: Instance,
    pub(crate) memory: Memory,
    alloc: TypedFunc<i32, i32>,
    /// `wasmpickle_free`, for instances that outlive a call (objects): their inputs and
    /// replies are given back after each call, or memory would grow with every call.
    free: Option<TypedFunc<(i32, i32), ()>>,
}

/// Instantiates `compiled` in `store`. `export` names what the instance is for, in errors.
pub(crate) fn instantiate(
    store: &mut Store<Sandbox>,
    compiled: &Compiled,
    export: &str,
    limits: &Limits,
) -> Result<Live> {
    let fail = |kind: ErrorKind, message: String| {
        Error::new(kind, message)
            .with_code(compiled.hash)
            .with_export(export)
    };
    if let Some(msg) = compiled.exceeds(limits) {
        return Err(fail(ErrorKind::MemoryLimit, msg));
    }
    let instance = compiled.pre.instantiate(&mut *store).map_err(|e| {
        let kind = if store.data().limiter.refused.is_some() {
            ErrorKind::MemoryLimit
        } else {
            ErrorKind::Runtime
        };
        fail(kind, format!("cannot instantiate {}", compiled.hash))
            .with_source(e.into_boxed_dyn_error())
    })?;
    let memory = instance
        .get_module_export(&mut *store, &compiled.memory)
        .and_then(Extern::into_memory)
        .expect("`memory` was checked when the module was linked");
    let alloc = instance
        .get_module_export(&mut *store, &compiled.alloc)
        .and_then(Extern::into_func)
        .expect("the allocator was checked when the module was linked")
        .typed::<i32, i32>(&*store)
        .expect("the allocator's type was checked when the module was linked");
    Ok(Live {
        instance,
        memory,
        alloc,
        free: None,
    })
}

impl Live {
    /// Makes [`Live::call`] give inputs and replies back with `wasmpickle_free` when the
    /// module exports it (`docs/abi.md` §11).
    pub(crate) fn free_after_calls(&mut self, store: &mut Store<Sandbox>) {
        self.free = self
            .instance
            .get_typed_func::<(i32, i32), ()>(&mut *store, abi::FREE_EXPORT)
            .ok();
    }

    /// The calling sequence of `docs/abi.md` §3 on this instance: copies `env` and `args`
    /// in, calls `func` (exported as `export`) and reads its reply. Fuel and the deadline are
    /// whatever the store was given.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn call(
        &self,
        store: &mut Store<Sandbox>,
        compiled: &Compiled,
        func: &ModuleExport,
        export: &str,
        env: &[u8],
        args: &[u8],
        limits: &Limits,
    ) -> Result<Outcome> {
        let fail = |kind: ErrorKind, message: String| {
            Error::new(kind, message)
                .with_code(compiled.hash)
                .with_export(export)
        };
        let (instance, memory) = (&self.instance, self.memory);
        let func = instance
            .get_module_export(&mut *store, func)
            .and_then(Extern::into_func)
            .expect("the export was checked when the module was linked")
            .typed::<(i32, i32, i32, i32), i64>(&*store)
            .expect("the export's type was checked when the module was linked");
        let fuel_at_start = store.get_fuel().unwrap_or(0);
        let used = |store: &Store<Sandbox>| fuel_at_start - store.get_fuel().unwrap_or(0);

        let total = env.len() + args.len();
        // Both are bounded by the format (64 MiB each), so the sum fits an i32.
        let total_i32 = i32::try_from(total).expect("env and args are bounded by the format");
        let ptr = self.alloc.call(&mut *store, total_i32).map_err(|e| {
            let fuel = used(store);
            trapped(store, instance, memory, compiled, export, limits, fuel, e)
        })? as u32;
        let input = region(ptr, total as u32, memory.data_size(&*store)).ok_or_else(|| {
            fail(
                ErrorKind::AbiViolation,
                format!(
                    "{} returned {ptr} for {total} bytes, outside the {}-byte memory",
                    abi::ALLOC_EXPORT,
                    memory.data_size(&*store)
                ),
            )
        })?;
        let data = memory.data_mut(&mut *store);
        let (env_dst, args_dst) = data[input].split_at_mut(env.len());
        env_dst.copy_from_slice(env);
        args_dst.copy_from_slice(args);

        let params = (
            ptr as i32,
            env.len() as i32,
            ptr.wrapping_add(env.len() as u32) as i32,
            args.len() as i32,
        );
        let packed = func.call(&mut *store, params).map_err(|e| {
            let fuel = used(store);
            trapped(store, instance, memory, compiled, export, limits, fuel, e)
        })?;
        let fuel_used = used(store);

        let (rptr, rlen) = abi::unpack(packed);
        let size = memory.data_size(&*store);
        let reply = region(rptr, rlen, size)
            .map(|r| memory.data(&*store)[r].to_vec())
            .ok_or_else(|| {
                fail(
                    ErrorKind::AbiViolation,
                    format!("`{export}` returned a reply at {rptr} of {rlen} bytes, outside the {size}-byte memory"),
                )
                .with_fuel_used(fuel_used)
            })?;
        if let Some(free) = &self.free {
            for (p, len) in [(ptr, total as u32), (rptr, rlen)] {
                if len > 0 {
                    free.call(&mut *store, (p as i32, len as i32))
                        .map_err(|e| {
                            let fuel = used(store);
                            trapped(store, instance, memory, compiled, export, limits, fuel, e)
                        })?;
                }
            }
        }
        match abi::decode_reply(&reply) {
            Ok(Reply::Ok(_)) => Ok(Outcome::new(reply, fuel_used)),
            Ok(Reply::Failed(status, failure)) => {
                let (kind, what) = match status {
                    Status::Error => (ErrorKind::GuestError, "failed"),
                    Status::BadInput => (ErrorKind::BadInput, "rejected its input"),
                    Status::Panic => (ErrorKind::GuestPanic, "panicked"),
                    _ => (ErrorKind::AbiViolation, "returned an unknown status"),
                };
                Err(
                    fail(kind, format!("`{export}` {what}: {}", describe(&failure)))
                        .with_guest(failure)
                        .with_fuel_used(fuel_used),
                )
            }
            Err(e) => Err(fail(
                ErrorKind::AbiViolation,
                format!("`{export}` returned a malformed reply"),
            )
            .with_source(e)
            .with_fuel_used(fuel_used)),
        }
    }
}

fn describe(f: &GuestFailure) -> String {
    match (&f.file, f.line, f.column) {
        (Some(file), Some(line), Some(col)) => format!("{} at {file}:{line}:{col}", f.message),
        (Some(file), Some(line), None) => format!("{} at {file}:{line}", f.message),
        _ => f.message.clone(),
    }
}

/// Classifies an error raised while guest code ran.
#[allow(clippy::too_many_arguments)]
fn trapped(
    store: &mut Store<Sandbox>,
    instance: &Instance,
    memory: Memory,
    compiled: &Compiled,
    export: &str,
    limits: &Limits,
    fuel: u64,
    err: wasmtime::Error,
) -> Error {
    // wasmtime's rendering starts with a header line; keep only the frames.
    let backtrace = err.downcast_ref::<WasmBacktrace>().map(|bt| {
        let text = bt.to_string();
        match text.split_once('\n') {
            Some((_, frames)) => frames.to_owned(),
            None => text,
        }
    });
    let (kind, message, guest) = if let Some(v) = err.downcast_ref::<GuestAbiViolation>() {
        (
            ErrorKind::AbiViolation,
            format!("`{export}` broke the guest contract: {v}"),
            None,
        )
    } else {
        match err.downcast_ref::<Trap>() {
            Some(Trap::OutOfFuel) => (
                ErrorKind::OutOfFuel,
                format!("`{export}` ran out of fuel after {fuel} units"),
                None,
            ),
            Some(Trap::Interrupt) => (
                ErrorKind::Deadline,
                format!(
                    "`{export}` passed its deadline of {} ms",
                    limits.get_deadline().as_millis()
                ),
                None,
            ),
            trap => {
                let panic = (trap == Some(&Trap::UnreachableCodeReached))
                    .then(|| read_panic_slot(store, instance, memory, compiled))
                    .flatten();
                if let Some(failure) = panic {
                    (
                        ErrorKind::GuestPanic,
                        format!("`{export}` panicked: {}", describe(&failure)),
                        Some(failure),
                    )
                } else if let Some(refused) = store.data().limiter.refused.clone() {
                    (
                        ErrorKind::MemoryLimit,
                        format!("`{export}` hit its memory limit: it asked for {refused}"),
                        None,
                    )
                } else {
                    let what = match trap {
                        Some(t) => t.to_string().trim_start_matches("wasm trap: ").to_owned(),
                        None => err.root_cause().to_string(),
                    };
                    (ErrorKind::Trap, format!("`{export}` trapped: {what}"), None)
                }
            }
        }
    };
    let mut error = Error::new(kind, message)
        .with_code(compiled.hash)
        .with_export(export)
        .with_backtrace(backtrace)
        .with_fuel_used(fuel);
    // The source is the trap itself: the message already says what it means, the backtrace
    // has its own accessor, and a caller can still downcast to `wasmtime::Trap`.
    if let Some(trap) = err.downcast_ref::<Trap>() {
        error = error.with_source(*trap);
    } else if err.downcast_ref::<GuestAbiViolation>().is_none() {
        error = error.with_source(err.into_boxed_dyn_error());
    }
    if let Some(g) = guest {
        error = error.with_guest(g);
    }
    error
}

/// Reads the reply a guest left in its panic slot before trapping (`docs/abi.md` §6). Runs no
/// guest code: it reads a global and memory.
fn read_panic_slot(
    store: &mut Store<Sandbox>,
    instance: &Instance,
    memory: Memory,
    compiled: &Compiled,
) -> Option<GuestFailure> {
    let slot = compiled.panic_slot.as_ref()?;
    let addr = instance
        .get_module_export(&mut *store, slot)?
        .into_global()?
        .get(&mut *store)
        .i32()? as u32;
    let data = memory.data(&*store);
    let slot = &data[region(addr, 8, data.len())?];
    let ptr = u32::from_le_bytes(slot[0..4].try_into().ok()?);
    let len = u32::from_le_bytes(slot[4..8].try_into().ok()?);
    if len == 0 {
        return None;
    }
    match abi::decode_reply(&data[region(ptr, len, data.len())?]) {
        Ok(Reply::Failed(Status::Panic, failure)) => Some(failure),
        _ => None,
    }
}

impl Compiled {
    /// Why the module cannot start under `limits`, if its initial memory or tables are
    /// already larger than they allow.
    pub(crate) fn exceeds(&self, limits: &Limits) -> Option<String> {
        let mem = self.min_memory_bytes;
        if mem > limits.get_max_memory() {
            return Some(format!(
                "module {} starts with {mem} bytes of memory, more than the limit of {}",
                self.hash,
                limits.get_max_memory()
            ));
        }
        let table = self.min_table_elements;
        if table > limits.get_max_table_elements() {
            return Some(format!(
                "module {} starts with a table of {table} elements, more than the limit of {}",
                self.hash,
                limits.get_max_table_elements()
            ));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regions_are_bounds_checked() {
        assert_eq!(region(0, 0, 0), Some(0..0));
        assert_eq!(region(10, 5, 15), Some(10..15));
        assert_eq!(region(10, 6, 15), None);
        assert_eq!(
            region(u32::MAX, u32::MAX, usize::MAX / 2),
            Some(u32::MAX as usize..2 * u32::MAX as usize)
        );
        assert_eq!(region(u32::MAX, 1, 1 << 20), None);
    }
}

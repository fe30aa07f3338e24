//! Live objects ("twins"): a guest value kept in one instance between calls, and its
//! snapshot as a standalone module.
//!
//! # Why a snapshot is a module
//!
//! A function call gets a fresh instance and leaves nothing behind. An *object* is the
//! opposite: a guest type exported with `#[wasmpickle_guest::object]` (`docs/abi.md`,
//! "Objects") keeps its state in one instance, and its methods run there one after another.
//! The whole state of such an instance is its linear memory and its mutable globals (tables
//! too, which is why modules that change tables at run time are refused). So a snapshot is
//! the same module with:
//!
//! * the memory's initial size set to its current size, and its contents as active data
//!   segments (the runs of non-zero bytes);
//! * every mutable global's initializer set to its current value, including globals the
//!   module does not export, such as the stack pointer of a Rust guest;
//! * the start function removed (it ran already; its effects are in the image);
//! * the module's own active data segments turned into empty passive ones, which is exactly
//!   what a segment is after instantiation (dropped), and keeps every segment's index;
//! * a custom section [`OBJECT_SECTION`] naming the object type and the module it was first
//!   made from.
//!
//! Instantiating that module *is* the object, resumed: any engine does it with no wasmpickle
//! code. A wasmpickle runtime ([`Runtime::restore`]) does the same without compiling every
//! snapshot anew: it splits the snapshot into its *shell* (the module with no state: memory
//! starting empty, mutable globals zero, no image segments), which is the same for every
//! snapshot of the object and so compiles once, and the state, which it writes into the
//! shell's fresh instance. The snapshot travels,
//! is stored and is addressed like any other code, by its [`CodeHash`]. The same state gives
//! the same bytes and the same hash.
//!
//! To read globals the module does not export, the runtime instantiates objects from a
//! rewritten copy of the module that also exports every mutable global as
//! `wasmpickle.global.<index>`. That copy is internal: it is compiled (and cached) under a key
//! derived from the code hash and never stored or hashed as the object's code.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use wasm_encoder::reencode::{Reencode, RoundtripReencoder};
use wasm_encoder::{ConstExpr, Ieee32, Ieee64};
use wasmparser::{DataKind, Operator, Parser, Payload, TypeRef, ValType as PValType};
use wasmpickle_format::{
    Call, CallLimits, CodeHash, DecodeLimits, Header, PickleKind, SignedCall, codec,
};
use wasmtime::{Global, Store, Val};

use crate::code::Code;
use crate::error::{Error, ErrorKind, Result};
use crate::limits::Limits;
use crate::runtime::{Compiled, Entry, Outcome, Runtime, ticks_for};
use crate::sandbox::{self, Live, Sandbox};

/// The custom section that marks a module as an object's snapshot (see the module docs).
/// A MessagePack map: `format` (1), `object` (the type's name), `origin` (the code hash of the
/// module the object was first made from, `sha256:<hex>`), `data_base` (how many data
/// segments belong to the module itself; the rest are the memory image).
pub const OBJECT_SECTION: &str = "wasmpickle.object";

/// The prefix of the exports the runtime adds to reach an object's mutable globals.
const GLOBAL_EXPORT: &str = "wasmpickle.global.";

/// The suffix of an object's constructor export: `<Name>.new`.
pub const CONSTRUCTOR: &str = "new";

/// Zero bytes between two non-zero runs of memory below which the runs share one segment.
const SEGMENT_GAP: usize = 64;

/// Segments a memory image may use before runs are merged page by page instead.
const MAX_IMAGE_SEGMENTS: usize = 20_000;

/// What [`OBJECT_SECTION`] says.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct ObjectInfo {
    pub(crate) format: u32,
    pub(crate) object: String,
    pub(crate) origin: String,
    pub(crate) data_base: u32,
}

fn not_an_object(hash: CodeHash, why: impl fmt::Display) -> Error {
    Error::new(
        ErrorKind::NotAnObject,
        format!("module {hash} cannot hold an object: {why}"),
    )
    .with_code(hash)
}

/// The key under which a module's object variant is compiled and cached.
pub(crate) fn object_key(hash: CodeHash) -> CodeHash {
    let mut h = Sha256::new();
    h.update(b"wasmpickle object variant v1\0");
    h.update(hash.as_bytes());
    CodeHash::from_bytes(h.finalize().into())
}

/// Reads [`OBJECT_SECTION`], if the module has one.
pub(crate) fn object_info(code: &Code) -> Result<Option<ObjectInfo>> {
    for payload in Parser::new(0).parse_all(code.wasm()) {
        let payload = payload.map_err(|e| not_an_object(code.hash(), e))?;
        if let Payload::CustomSection(c) = &payload
            && c.name() == OBJECT_SECTION
        {
            let info: ObjectInfo = codec::from_msgpack(c.data()).map_err(|e| {
                not_an_object(
                    code.hash(),
                    format_args!("its {OBJECT_SECTION} section: {e}"),
                )
            })?;
            if info.format != 1 {
                return Err(Error::new(
                    ErrorKind::Version,
                    format!(
                        "module {} is a snapshot of format {}, this build reads format 1",
                        code.hash(),
                        info.format
                    ),
                )
                .with_code(code.hash()));
            }
            return Ok(Some(info));
        }
    }
    Ok(None)
}

/// The module with every mutable global exported as `wasmpickle.global.<index>`, after
/// checking that an instance of it can be snapshotted: one memory of its own, no table
/// changes at run time, and mutable globals of number or vector types only.
pub(crate) fn expose(code: &Code) -> Result<Vec<u8>> {
    let wasm: &[u8] = code.wasm();
    let hash = code.hash();
    let bug = |e: &dyn fmt::Display| not_an_object(hash, e);
    let mut imported_globals = 0u32;
    let mut mutable = Vec::new();
    let mut memories = 0u32;
    let mut module = wasm_encoder::Module::new();
    let mut rt = RoundtripReencoder;
    let mut exported = false;
    for payload in Parser::new(0).parse_all(wasm) {
        let payload = payload.map_err(|e| bug(&e))?;
        match &payload {
            Payload::ImportSection(s) => {
                for import in s.clone().into_imports() {
                    match import.map_err(|e| bug(&e))?.ty {
                        TypeRef::Global(_) => imported_globals += 1,
                        TypeRef::Memory(_) => {
                            return Err(bug(
                                &"it imports its memory; an object's memory must be its own",
                            ));
                        }
                        _ => {}
                    }
                }
            }
            Payload::MemorySection(s) => memories += s.count(),
            Payload::GlobalSection(s) => {
                for (i, global) in s.clone().into_iter().enumerate() {
                    let global = global.map_err(|e| bug(&e))?;
                    if !global.ty.mutable {
                        continue;
                    }
                    match global.ty.content_type {
                        PValType::I32
                        | PValType::I64
                        | PValType::F32
                        | PValType::F64
                        | PValType::V128 => {
                            mutable.push(imported_globals + i as u32);
                        }
                        PValType::Ref(_) => {
                            return Err(bug(&format_args!(
                                "global {} is a mutable reference, which a snapshot cannot hold",
                                imported_globals + i as u32
                            )));
                        }
                    }
                }
            }
            Payload::CodeSectionEntry(body) => {
                let mut ops = body.get_operators_reader().map_err(|e| bug(&e))?;
                while !ops.eof() {
                    let what = match ops.read().map_err(|e| bug(&e))? {
                        Operator::TableSet { .. } => "table.set",
                        Operator::TableGrow { .. } => "table.grow",
                        Operator::TableFill { .. } => "table.fill",
                        Operator::TableCopy { .. } => "table.copy",
                        Operator::TableInit { .. } => "table.init",
                        Operator::ElemDrop { .. } => "elem.drop",
                        _ => continue,
                    };
                    return Err(bug(&format_args!(
                        "it uses {what}, and tables are not part of a snapshot (docs/abi.md, Objects)"
                    )));
                }
                continue;
            }
            _ => {}
        }
        match &payload {
            Payload::ExportSection(s) => {
                let mut exports = wasm_encoder::ExportSection::new();
                rt.parse_export_section(&mut exports, s.clone())
                    .map_err(|e| bug(&e))?;
                for &g in &mutable {
                    exports.export(
                        &format!("{GLOBAL_EXPORT}{g}"),
                        wasm_encoder::ExportKind::Global,
                        g,
                    );
                }
                module.section(&exports);
                exported = true;
            }
            other => {
                if let Some((id, range)) = other.as_section() {
                    module.section(&wasm_encoder::RawSection {
                        id,
                        data: &wasm[range],
                    });
                }
            }
        }
    }
    if memories != 1 {
        return Err(bug(&format_args!(
            "it defines {memories} memories, not one"
        )));
    }
    if !exported {
        return Err(bug(&"it exports nothing"));
    }
    Ok(module.finish())
}

/// The state of an instance, as read between two calls.
struct State<'a> {
    memory: &'a [u8],
    globals: Vec<(u32, Val)>,
}

/// A snapshot module: `code` with `state` as its initial memory and globals (see the module
/// docs). `info.data_base` is how many data segments of `code` are its own.
fn snapshot_module(code: &Code, info: &ObjectInfo, state: &State<'_>) -> Result<Vec<u8>> {
    let base = info.data_base;
    let wasm: &[u8] = code.wasm();
    let bug = |e: &dyn fmt::Display| {
        Error::new(
            ErrorKind::Runtime,
            format!(
                "cannot snapshot an object of {} (a bug in wasmpickle): {e}",
                code.hash()
            ),
        )
        .with_code(code.hash())
    };
    let pages = (state.memory.len() as u64) / 65_536;
    let image = image_segments(state.memory);
    let mut rt = RoundtripReencoder;
    let mut module = wasm_encoder::Module::new();
    let mut data_done = false;
    let mut global_index = 0u32;
    let data_section =
        |reader: Option<wasmparser::DataSectionReader<'_>>| -> Result<wasm_encoder::DataSection> {
            let mut data = wasm_encoder::DataSection::new();
            if let Some(reader) = reader {
                for (i, segment) in reader.into_iter().enumerate() {
                    let segment = segment.map_err(|e| bug(&e))?;
                    if i as u32 >= base {
                        break;
                    }
                    match segment.kind {
                        // After instantiation an active segment is dropped: empty.
                        DataKind::Active { .. } => data.passive(std::iter::empty::<u8>()),
                        DataKind::Passive => data.passive(segment.data.iter().copied()),
                    };
                }
            }
            for (offset, bytes) in &image {
                data.active(
                    0,
                    &ConstExpr::i32_const(*offset as u32 as i32),
                    bytes.iter().copied(),
                );
            }
            Ok(data)
        };
    for payload in Parser::new(0).parse_all(wasm) {
        let payload = payload.map_err(|e| bug(&e))?;
        match &payload {
            Payload::Version { .. } | Payload::End(_) | Payload::CodeSectionEntry(_) => {}
            Payload::ImportSection(s) => {
                for import in s.clone().into_imports() {
                    if let TypeRef::Global(_) = import.map_err(|e| bug(&e))?.ty {
                        global_index += 1;
                    }
                }
                copy(&mut module, &payload, wasm);
            }
            Payload::MemorySection(s) => {
                let mut memories = wasm_encoder::MemorySection::new();
                for memory in s.clone() {
                    let mut ty = rt
                        .memory_type(memory.map_err(|e| bug(&e))?)
                        .map_err(|e| bug(&e))?;
                    ty.minimum = ty.minimum.max(pages);
                    memories.memory(ty);
                }
                module.section(&memories);
            }
            Payload::GlobalSection(s) => {
                let mut globals = wasm_encoder::GlobalSection::new();
                for global in s.clone() {
                    let global = global.map_err(|e| bug(&e))?;
                    let ty = rt.global_type(global.ty).map_err(|e| bug(&e))?;
                    let init = match state.globals.iter().find(|(i, _)| *i == global_index) {
                        Some((_, value)) => const_of(value).ok_or_else(|| {
                            bug(&format_args!("global {global_index} holds {value:?}"))
                        })?,
                        None => rt.const_expr(global.init_expr).map_err(|e| bug(&e))?,
                    };
                    globals.global(ty, &init);
                    global_index += 1;
                }
                module.section(&globals);
            }
            // It ran when the object was made; its effects are in the image.
            Payload::StartSection { .. } => {}
            Payload::DataCountSection { .. } => {
                module.section(&wasm_encoder::DataCountSection {
                    count: base + image.len() as u32,
                });
            }
            Payload::DataSection(s) => {
                module.section(&data_section(Some(s.clone()))?);
                data_done = true;
            }
            Payload::CustomSection(c) if c.name() == OBJECT_SECTION => {}
            _ => copy(&mut module, &payload, wasm),
        }
    }
    if !data_done && !image.is_empty() {
        // Custom sections may come anywhere, so the data section may follow them.
        module.section(&data_section(None)?);
    }
    let mut section = Vec::new();
    codec::write_msgpack(&mut section, info).map_err(|e| bug(&e))?;
    module.section(&wasm_encoder::CustomSection {
        name: Cow::Borrowed(OBJECT_SECTION),
        data: Cow::Owned(section),
    });
    Ok(module.finish())
}

fn copy(module: &mut wasm_encoder::Module, payload: &Payload<'_>, wasm: &[u8]) {
    if let Some((id, range)) = payload.as_section() {
        module.section(&wasm_encoder::RawSection {
            id,
            data: &wasm[range],
        });
    }
}

fn const_of(value: &Val) -> Option<ConstExpr> {
    Some(match value {
        Val::I32(v) => ConstExpr::i32_const(*v),
        Val::I64(v) => ConstExpr::i64_const(*v),
        Val::F32(bits) => ConstExpr::f32_const(Ieee32::new(*bits)),
        Val::F64(bits) => ConstExpr::f64_const(Ieee64::new(*bits)),
        Val::V128(v) => ConstExpr::v128_const(v.as_u128() as i128),
        _ => return None,
    })
}

/// The non-zero runs of `memory` as `(offset, bytes)`, runs closer than [`SEGMENT_GAP`]
/// merged; coarser when that would make too many segments.
fn image_segments(memory: &[u8]) -> Vec<(usize, &[u8])> {
    let runs = |gap: usize| {
        let mut out: Vec<(usize, usize)> = Vec::new();
        let mut i = 0;
        while i < memory.len() {
            if memory[i] == 0 {
                i += 1;
                continue;
            }
            let start = i;
            while i < memory.len() && memory[i] != 0 {
                i += 1;
            }
            match out.last_mut() {
                Some((_, end)) if start - *end < gap => *end = i,
                _ => out.push((start, i)),
            }
        }
        out
    };
    let mut spans = runs(SEGMENT_GAP);
    if spans.len() > MAX_IMAGE_SEGMENTS {
        spans = runs(64 << 10);
    }
    spans
        .into_iter()
        .map(|(start, end)| (start, &memory[start..end]))
        .collect()
}

/// A guest object living in one instance of its module: its methods run there, one after
/// another, and its state stays between calls.
///
/// Made by [`Runtime::spawn`] (running the constructor export `<Name>.new`) or
/// [`Runtime::restore`] (from a [snapshot](Object::snapshot)). Each method call gets the
/// object's fuel and deadline afresh; the memory cap holds for the object's life. An object
/// whose instance trapped (a panic, running out of fuel, a deadline) is *poisoned*: its state
/// may be half-updated, so it refuses further calls and snapshots with
/// [`ErrorKind::ObjectPoisoned`]. Restore the last snapshot to go on. A guest error returned
/// by a method (`Err(..)`, or arguments that do not decode) does not poison it.
///
/// Not `Sync`: calls take `&mut self`. Dropping the object frees its instance.
pub struct Object {
    runtime: Runtime,
    compiled: Arc<Compiled>,
    code: Code,
    /// What a snapshot's [`OBJECT_SECTION`] says: the type, the origin, and how many data
    /// segments of `code` are the module's own.
    info: ObjectInfo,
    limits: Limits,
    // Declared before `_ticket`, so the instance is freed before the slot is given back.
    store: Store<Sandbox>,
    live: Live,
    globals: Vec<(u32, Global)>,
    poisoned: Option<String>,
    calls: u64,
    _ticket: Ticket,
}

/// One of the runtime's object slots ([`RuntimeConfig::max_objects`]), given back on drop.
///
/// [`RuntimeConfig::max_objects`]: crate::RuntimeConfig::max_objects
pub(crate) struct Ticket(Runtime);

impl Drop for Ticket {
    fn drop(&mut self) {
        self.0.inner.objects.fetch_sub(1, Ordering::AcqRel);
    }
}

impl fmt::Debug for Object {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Object")
            .field("name", &self.info.object)
            .field("code", &self.code.hash())
            .field("calls", &self.calls)
            .field("poisoned", &self.poisoned.is_some())
            .finish()
    }
}

impl Runtime {
    /// Makes a live object: runs the constructor call `call` (a call of the export
    /// `<Name>.new`, environment and arguments as the constructor takes them) in a new
    /// instance that the returned [`Object`] keeps. The object's limits are the runtime's,
    /// restricted by what the call requests.
    ///
    /// The module must travel inline in the call or be in the runtime's code store, because
    /// a snapshot is made from its bytes.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Signature`] when the runtime requires signed calls (use
    /// [`Runtime::spawn_bytes`]); [`ErrorKind::NotAnObject`] when the export is not named `<Name>.new` or the module
    /// cannot be snapshotted (it changes tables at run time, imports its memory, has a
    /// mutable reference global); [`ErrorKind::ObjectLimit`] when the runtime already holds
    /// [`max_objects`](crate::RuntimeConfig::max_objects) objects; [`ErrorKind::CodeNotFound`]
    /// when the code is neither inline nor stored; and whatever the constructor's call fails
    /// with, as for [`Runtime::run`].
    pub fn spawn(&self, call: &Call) -> Result<Object> {
        if self.inner.config.keyring.is_some() {
            return Err(Error::new(
                ErrorKind::Signature,
                "this runtime only runs signed calls; use spawn_bytes with a signed pickle",
            ));
        }
        self.spawn_verified(call)
    }

    /// Decodes a constructor call pickle, signed or not, checks its signature when the
    /// runtime requires signatures (before anything else is decoded), and spawns the object;
    /// see [`Runtime::spawn`].
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Decode`], [`ErrorKind::Version`] and [`ErrorKind::Signature`] as for
    /// [`Runtime::run_bytes`], then as [`Runtime::spawn`].
    pub fn spawn_bytes(&self, pickle: &[u8]) -> Result<Object> {
        match Header::read(pickle)?.kind {
            PickleKind::SignedCall => {
                let signed = SignedCall::from_bytes(pickle)?;
                let limits = DecodeLimits::default();
                let call = match &self.inner.config.keyring {
                    Some(keys) => signed.verify(keys, &limits)?,
                    None => Call::from_bytes_with(signed.call_bytes(), &limits)?,
                };
                self.spawn_verified(&call)
            }
            _ => self.spawn(&Call::from_bytes(pickle)?),
        }
    }

    fn spawn_verified(&self, call: &Call) -> Result<Object> {
        let export = call.export();
        let Some(name) = export
            .strip_suffix(CONSTRUCTOR)
            .and_then(|n| n.strip_suffix('.'))
            .filter(|n| !n.is_empty())
        else {
            return Err(Error::new(
                ErrorKind::NotAnObject,
                format!("`{export}` is not a constructor: an object is made by calling `<Name>.{CONSTRUCTOR}`"),
            )
            .with_code(call.code().hash())
            .with_export(export));
        };
        let code = self.object_code(call.code())?;
        let info = ObjectInfo {
            format: 1,
            object: name.to_owned(),
            origin: code.hash().to_string(),
            data_base: data_segments(&code)?,
        };
        let limits = self.limits().restrict(call.limits());
        let mut object = self.instantiate_object(code.clone(), &code, info, limits)?;
        object.call_export(export, call.env(), call.args(), &CallLimits::new())?;
        // `calls` counts method calls.
        object.calls = 0;
        Ok(object)
    }

    /// Resumes an object from its [snapshot](Object::snapshot), without running its
    /// constructor: the snapshot's memory and globals are the object's state.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Signature`] when the runtime requires signed calls (a snapshot is code
    /// and state from elsewhere, and carries no signature);
    /// [`ErrorKind::NotAnObject`] when `snapshot` has no [`OBJECT_SECTION`];
    /// [`ErrorKind::ObjectLimit`] as for [`Runtime::spawn`]; and the errors of compiling
    /// and instantiating a module ([`ErrorKind::InvalidModule`],
    /// [`ErrorKind::ForbiddenImport`], [`ErrorKind::MemoryLimit`], ...).
    pub fn restore(&self, snapshot: &Code) -> Result<Object> {
        if self.inner.config.keyring.is_some() {
            return Err(Error::new(
                ErrorKind::Signature,
                "this runtime only runs signed calls, and a snapshot carries no signature",
            )
            .with_code(snapshot.hash()));
        }
        let Some(info) = object_info(snapshot)? else {
            return Err(not_an_object(
                snapshot.hash(),
                format_args!("it is not a snapshot (it has no {OBJECT_SECTION} section)"),
            ));
        };
        self.put_code(snapshot);
        let (shell, image) = split_snapshot(snapshot, &info)?;
        let mut object = self.instantiate_object(snapshot.clone(), &shell, info, *self.limits())?;
        object.load_image(&image)?;
        Ok(object)
    }

    /// How many objects are alive in this runtime.
    pub fn objects(&self) -> usize {
        self.inner.objects.load(Ordering::Acquire)
    }

    /// An object of `code`, instantiated from `from` (`code` itself, or a snapshot's shell).
    fn instantiate_object(
        &self,
        code: Code,
        from: &Code,
        info: ObjectInfo,
        limits: Limits,
    ) -> Result<Object> {
        let max = self.inner.config.max_objects;
        let taken = self
            .inner
            .objects
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            });
        if taken.is_err() {
            return Err(Error::new(
                ErrorKind::ObjectLimit,
                format!("this runtime already holds its maximum of {max} objects"),
            )
            .with_code(code.hash()));
        }
        let ticket = Ticket(self.clone());
        let compiled = self.object_compiled(from)?;
        let mut store = sandbox::new_store(&self.inner.engine, &limits);
        store
            .set_fuel(limits.get_fuel())
            .expect("the engine is configured with fuel");
        store.set_epoch_deadline(ticks_for(
            limits.get_deadline(),
            self.inner.config.epoch_tick,
        ));
        let mut live = sandbox::instantiate(&mut store, &compiled, &info.object, &limits)?;
        live.free_after_calls(&mut store);
        let mut globals = Vec::new();
        for name in compiled.exports.keys() {
            let Some(index) = name
                .strip_prefix(GLOBAL_EXPORT)
                .and_then(|i| i.parse().ok())
            else {
                continue;
            };
            let global = live
                .instance
                .get_global(&mut store, name)
                .expect("the exposed module exports this global");
            globals.push((index, global));
        }
        globals.sort_by_key(|(i, _)| *i);
        Ok(Object {
            runtime: self.clone(),
            compiled,
            info,
            code,
            limits,
            store,
            live,
            globals,
            poisoned: None,
            calls: 0,
            _ticket: ticket,
        })
    }
}

/// The object type a snapshot holds, or `None` when `code` is not a snapshot (has no valid
/// [`OBJECT_SECTION`]). Reads only section headers and that section.
pub fn snapshot_object(code: &Code) -> Option<String> {
    object_info(code).ok().flatten().map(|i| i.object)
}

/// A snapshot's state, taken out of its module: what [`Object::load_image`] puts back.
struct Image {
    pages: u64,
    segments: Vec<(u32, Vec<u8>)>,
    globals: Vec<(u32, Val)>,
}

/// Splits a snapshot into its *shell* (the module with no state in it: memory starting
/// empty, mutable globals zero, no image segments, no object section) and its [`Image`].
///
/// Every snapshot of one object type and origin has the same shell, so restoring compiles
/// the shell once per process (or never, with a compiled cache) and then only instantiates
/// it and writes the state in; compiling each snapshot, a new module every time, would cost
/// as much as compiling the original module on every move.
fn split_snapshot(snapshot: &Code, info: &ObjectInfo) -> Result<(Code, Image)> {
    let wasm: &[u8] = snapshot.wasm();
    let bad = |e: &dyn fmt::Display| not_an_object(snapshot.hash(), e);
    let mut rt = RoundtripReencoder;
    let mut module = wasm_encoder::Module::new();
    let mut image = Image {
        pages: 0,
        segments: Vec::new(),
        globals: Vec::new(),
    };
    let mut global_index = 0u32;
    for payload in Parser::new(0).parse_all(wasm) {
        let payload = payload.map_err(|e| bad(&e))?;
        match &payload {
            Payload::Version { .. } | Payload::End(_) | Payload::CodeSectionEntry(_) => {}
            Payload::ImportSection(s) => {
                for import in s.clone().into_imports() {
                    if let TypeRef::Global(_) = import.map_err(|e| bad(&e))?.ty {
                        global_index += 1;
                    }
                }
                copy(&mut module, &payload, wasm);
            }
            Payload::MemorySection(s) => {
                let mut memories = wasm_encoder::MemorySection::new();
                for memory in s.clone() {
                    let mut ty = rt
                        .memory_type(memory.map_err(|e| bad(&e))?)
                        .map_err(|e| bad(&e))?;
                    image.pages = ty.minimum;
                    ty.minimum = 0;
                    memories.memory(ty);
                }
                module.section(&memories);
            }
            Payload::GlobalSection(s) => {
                let mut globals = wasm_encoder::GlobalSection::new();
                for global in s.clone() {
                    let global = global.map_err(|e| bad(&e))?;
                    let ty = rt.global_type(global.ty).map_err(|e| bad(&e))?;
                    let init = if global.ty.mutable {
                        let value = const_value(&global.init_expr).ok_or_else(|| {
                            bad(&format_args!("global {global_index} is not a constant"))
                        })?;
                        let zero = zero_of(&value);
                        image.globals.push((global_index, value));
                        const_of(&zero).expect("a number or vector")
                    } else {
                        rt.const_expr(global.init_expr).map_err(|e| bad(&e))?
                    };
                    globals.global(ty, &init);
                    global_index += 1;
                }
                module.section(&globals);
            }
            Payload::DataCountSection { .. } => {
                module.section(&wasm_encoder::DataCountSection {
                    count: info.data_base,
                });
            }
            Payload::DataSection(s) => {
                let mut data = wasm_encoder::DataSection::new();
                for (i, segment) in s.clone().into_iter().enumerate() {
                    let segment = segment.map_err(|e| bad(&e))?;
                    if (i as u32) < info.data_base {
                        match segment.kind {
                            DataKind::Passive => data.passive(segment.data.iter().copied()),
                            DataKind::Active { .. } => {
                                return Err(bad(&format_args!(
                                    "data segment {i} of the module's own is active"
                                )));
                            }
                        };
                        continue;
                    }
                    let offset = match segment.kind {
                        DataKind::Active {
                            memory_index: 0,
                            offset_expr,
                        } => match const_value(&offset_expr) {
                            Some(Val::I32(o)) => o as u32,
                            _ => {
                                return Err(bad(&format_args!(
                                    "image segment {i} has no i32 offset"
                                )));
                            }
                        },
                        _ => return Err(bad(&format_args!("image segment {i} is not active"))),
                    };
                    image.segments.push((offset, segment.data.to_vec()));
                }
                module.section(&data);
            }
            Payload::StartSection { .. } => {
                return Err(bad(&"a snapshot has no start function"));
            }
            Payload::CustomSection(c) if c.name() == OBJECT_SECTION => {}
            _ => copy(&mut module, &payload, wasm),
        }
    }
    let shell = Code::new(module.finish()).map_err(|e| {
        not_an_object(
            snapshot.hash(),
            "its code does not validate without its state",
        )
        .with_source(e)
    })?;
    Ok((shell, image))
}

/// The value of a constant expression of one `*.const` instruction.
fn const_value(expr: &wasmparser::ConstExpr<'_>) -> Option<Val> {
    let mut ops = expr.get_operators_reader();
    let value = match ops.read().ok()? {
        Operator::I32Const { value } => Val::I32(value),
        Operator::I64Const { value } => Val::I64(value),
        Operator::F32Const { value } => Val::F32(value.bits()),
        Operator::F64Const { value } => Val::F64(value.bits()),
        Operator::V128Const { value } => Val::V128(u128::from_le_bytes(*value.bytes()).into()),
        _ => return None,
    };
    matches!(ops.read().ok()?, Operator::End).then_some(value)
}

fn zero_of(value: &Val) -> Val {
    match value {
        Val::I64(_) => Val::I64(0),
        Val::F32(_) => Val::F32(0),
        Val::F64(_) => Val::F64(0),
        Val::V128(_) => Val::V128(0u128.into()),
        _ => Val::I32(0),
    }
}

/// How many data segments `code` has.
fn data_segments(code: &Code) -> Result<u32> {
    for payload in Parser::new(0).parse_all(code.wasm()) {
        if let Payload::DataSection(s) = payload.map_err(|e| not_an_object(code.hash(), e))? {
            return Ok(s.count());
        }
    }
    Ok(0)
}

impl Object {
    /// Puts a snapshot's state into the fresh instance of its shell.
    fn load_image(&mut self, image: &Image) -> Result<()> {
        let hash = self.code.hash();
        let bad = |what: String| not_an_object(hash, what);
        let have = self.live.memory.size(&self.store);
        if image.pages > have {
            self.live
                .memory
                .grow(&mut self.store, image.pages - have)
                .map_err(|e| {
                    Error::new(
                        ErrorKind::MemoryLimit,
                        format!(
                            "snapshot {hash} needs {} bytes of memory, more than its limit",
                            image.pages * 65_536
                        ),
                    )
                    .with_code(hash)
                    .with_source(e.into_boxed_dyn_error())
                })?;
        }
        for (offset, bytes) in &image.segments {
            self.live
                .memory
                .write(&mut self.store, *offset as usize, bytes)
                .map_err(|_| bad(format!("an image segment at {offset} lies outside memory")))?;
        }
        for (index, value) in &image.globals {
            let Some((_, global)) = self.globals.iter().find(|(i, _)| i == index) else {
                return Err(bad(format!("global {index} is not a mutable global")));
            };
            global
                .set(&mut self.store, *value)
                .map_err(|e| bad(format!("global {index} does not take {value:?}: {e}")))?;
        }
        Ok(())
    }

    /// The object type's name (`Counter` for exports `Counter.new`, `Counter.incr`, ...).
    pub fn name(&self) -> &str {
        &self.info.object
    }

    /// The module this instance was made from: the original module, or the snapshot it was
    /// restored from.
    pub fn code(&self) -> &Code {
        &self.code
    }

    /// The code hash of the module the object was first constructed from, carried through
    /// every snapshot.
    pub fn origin(&self) -> &str {
        &self.info.origin
    }

    /// The limits the object runs under: fuel and deadline per call, memory for its life.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The methods the object's module exports (`incr` for `Counter.incr`), sorted.
    pub fn methods(&self) -> Vec<String> {
        let prefix = format!("{}.", self.info.object);
        let mut methods: Vec<String> = self
            .compiled
            .exports
            .iter()
            .filter(|(_, e)| matches!(e, Entry::Pickled(_)))
            .filter_map(|(n, _)| n.strip_prefix(&prefix))
            .filter(|m| *m != CONSTRUCTOR)
            .map(str::to_owned)
            .collect();
        methods.sort();
        methods
    }

    /// Method calls that returned (successfully or with a guest error).
    pub fn calls(&self) -> u64 {
        self.calls
    }

    /// True once a call trapped; see [`Object`].
    pub fn is_poisoned(&self) -> bool {
        self.poisoned.is_some()
    }

    /// The size of the object's linear memory, in bytes.
    pub fn memory_size(&self) -> usize {
        self.live.memory.data_size(&self.store)
    }

    /// Calls `method` with `args` (a tuple, encoded as the method's parameters are decoded).
    ///
    /// # Errors
    ///
    /// As [`Object::call_bytes`], and [`ErrorKind::Encode`] when `args` cannot be encoded.
    pub fn call<A: Serialize + ?Sized>(&mut self, method: &str, args: &A) -> Result<Outcome> {
        let args = codec::to_msgpack(args)?;
        self.call_bytes(method, &args, &CallLimits::new())
    }

    /// Calls `method` with MessagePack-encoded arguments, under the object's limits further
    /// restricted by `limits`.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::ObjectPoisoned`] after a trap; [`ErrorKind::MissingExport`] for a method
    /// the object does not have (naming those it has); then the kinds of [`Runtime::run`]:
    /// [`ErrorKind::GuestError`], [`ErrorKind::BadInput`], [`ErrorKind::GuestPanic`],
    /// [`ErrorKind::OutOfFuel`], [`ErrorKind::Deadline`], [`ErrorKind::MemoryLimit`], ...
    pub fn call_bytes(
        &mut self,
        method: &str,
        args: &[u8],
        limits: &CallLimits,
    ) -> Result<Outcome> {
        let export = format!("{}.{method}", self.info.object);
        if method == CONSTRUCTOR || method.is_empty() {
            return Err(self.missing(&export));
        }
        self.call_export(&export, &[0xc0], args, limits)
    }

    fn missing(&self, export: &str) -> Error {
        Error::new(
            ErrorKind::MissingExport,
            format!(
                "object {} has no method `{}`; its methods: {}",
                self.info.object,
                export
                    .strip_prefix(&format!("{}.", self.info.object))
                    .unwrap_or(export),
                self.methods().join(", ")
            ),
        )
        .with_code(self.code.hash())
        .with_export(export)
    }

    fn call_export(
        &mut self,
        export: &str,
        env: &[u8],
        args: &[u8],
        limits: &CallLimits,
    ) -> Result<Outcome> {
        if let Some(why) = &self.poisoned {
            return Err(Error::new(
                ErrorKind::ObjectPoisoned,
                format!(
                    "object {} is poisoned: {why}; restore a snapshot to go on",
                    self.info.object
                ),
            )
            .with_code(self.code.hash())
            .with_export(export));
        }
        let func = match self.compiled.exports.get(export) {
            Some(Entry::Pickled(func)) => *func,
            Some(Entry::Other(what)) => {
                return Err(Error::new(
                    ErrorKind::WrongSignature,
                    format!("export `{export}` of {} is {what}, not a function (i32, i32, i32, i32) -> i64", self.code.hash()),
                )
                .with_code(self.code.hash())
                .with_export(export));
            }
            None => return Err(self.missing(export)),
        };
        let limits = self.limits.restrict(limits);
        self.store
            .set_fuel(limits.get_fuel())
            .expect("the engine is configured with fuel");
        self.store.set_epoch_deadline(ticks_for(
            limits.get_deadline(),
            self.runtime.inner.config.epoch_tick,
        ));
        let result = self.live.call(
            &mut self.store,
            &self.compiled,
            &func,
            export,
            env,
            args,
            &limits,
        );
        match &result {
            Ok(_) => self.calls += 1,
            Err(e) if matches!(e.kind(), ErrorKind::GuestError | ErrorKind::BadInput) => {
                self.calls += 1
            }
            Err(e) => self.poisoned = Some(format!("{} ({})", e, e.kind())),
        }
        result
    }

    /// The object's whole state as a standalone module: its memory as data segments, its
    /// mutable globals as initializers, no start function, and an [`OBJECT_SECTION`]
    /// (`docs/abi.md`, "Objects"). Restore it with [`Runtime::restore`] in this process or
    /// any other, or instantiate it with any WebAssembly engine. The same state gives the same
    /// bytes and hash.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::ObjectPoisoned`] after a trap, when the state is not one a call left.
    pub fn snapshot(&mut self) -> Result<Code> {
        if let Some(why) = &self.poisoned {
            return Err(Error::new(
                ErrorKind::ObjectPoisoned,
                format!(
                    "object {} is poisoned ({why}), so it has no state to snapshot",
                    self.info.object
                ),
            )
            .with_code(self.code.hash()));
        }
        let mut values = Vec::with_capacity(self.globals.len());
        for (index, global) in &self.globals {
            values.push((*index, global.get(&mut self.store)));
        }
        let state = State {
            memory: self.live.memory.data(&self.store),
            globals: values,
        };
        let wasm = snapshot_module(&self.code, &self.info, &state)?;
        Code::new(wasm).map_err(|e| {
            Error::new(
                ErrorKind::Runtime,
                format!(
                    "the snapshot of object {} does not validate (a bug in wasmpickle)",
                    self.info.object
                ),
            )
            .with_source(e)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::RuntimeConfig;

    /// A hand-written object `Counter`: its value in memory at 0x20, a count of `incr` calls
    /// in a global nothing exports, and a bump allocator whose pointer is another unexported
    /// global. Replies are two bytes: status 0 and a positive fixint (or nil).
    const COUNTER: &str = r#"
    (module
      (memory (export "memory") 1 4)
      (global $next (mut i32) (i32.const 0x100))
      (global $calls (mut i32) (i32.const 0))
      (global (export "wasmpickle_panic") (mut i32) (i32.const 0))
      (data (i32.const 0x20) "\05")
      (func $alloc (export "wasmpickle_alloc") (param $len i32) (result i32)
        (local $p i32)
        (local.set $p (global.get $next))
        (global.set $next (i32.add (local.get $p) (local.get $len)))
        (local.get $p))
      (func $reply (param $byte i32) (result i64)
        (local $p i32)
        (local.set $p (call $alloc (i32.const 2)))
        (i32.store8 (local.get $p) (i32.const 0))
        (i32.store8 offset=1 (local.get $p) (local.get $byte))
        (i64.or (i64.shl (i64.extend_i32_u (local.get $p)) (i64.const 32)) (i64.const 2)))
      (func (export "Counter.new") (param i32 i32 i32 i32) (result i64)
        (i32.store8 (i32.const 0x20) (i32.load8_u (local.get 0)))
        (call $reply (i32.const 0xc0)))
      (func (export "Counter.incr") (param i32 i32 i32 i32) (result i64)
        (global.set $calls (i32.add (global.get $calls) (i32.const 1)))
        (i32.store8 (i32.const 0x20) (i32.add (i32.load8_u (i32.const 0x20)) (i32.const 1)))
        (call $reply (i32.load8_u (i32.const 0x20))))
      (func (export "Counter.calls") (param i32 i32 i32 i32) (result i64)
        (call $reply (global.get $calls)))
      (func (export "Counter.spin") (param i32 i32 i32 i32) (result i64)
        (loop $l (br $l))
        (unreachable)))
    "#;

    fn counter() -> Code {
        Code::new(wat::parse_str(COUNTER).unwrap()).unwrap()
    }

    fn spawn(rt: &Runtime, start: u8) -> Object {
        let call = counter()
            .closure("Counter.new", &start)
            .unwrap()
            .call(&())
            .unwrap();
        rt.spawn(&call).unwrap()
    }

    #[test]
    fn state_lives_between_calls_and_survives_a_snapshot() {
        let rt = Runtime::new(&RuntimeConfig::default()).unwrap();
        let mut a = spawn(&rt, 10);
        assert_eq!(a.name(), "Counter");
        assert_eq!(a.methods(), ["calls", "incr", "spin"]);
        assert_eq!(a.call("incr", &()).unwrap().decode::<u8>().unwrap(), 11);
        assert_eq!(a.call("incr", &()).unwrap().decode::<u8>().unwrap(), 12);
        let snap = a.snapshot().unwrap();
        assert_eq!(object_info(&snap).unwrap().unwrap().object, "Counter");
        // The same state gives the same bytes.
        assert_eq!(a.snapshot().unwrap().wasm(), snap.wasm());

        let mut b = rt.restore(&snap).unwrap();
        for _ in 0..3 {
            let x = a.call("incr", &()).unwrap();
            let y = b.call("incr", &()).unwrap();
            assert_eq!(x, y, "same value and fuel");
        }
        // The unexported global came along.
        assert_eq!(b.call("calls", &()).unwrap().decode::<u8>().unwrap(), 5);
        // A snapshot of a restored object restores too, and does not grow.
        let again = b.snapshot().unwrap();
        assert_eq!(
            data_segments(&again).unwrap(),
            data_segments(&snap).unwrap()
        );
        let mut c = rt.restore(&again).unwrap();
        assert_eq!(c.call("incr", &()).unwrap().decode::<u8>().unwrap(), 16);
        assert_eq!(rt.objects(), 3);
        drop((a, b, c));
        assert_eq!(rt.objects(), 0);
    }

    #[test]
    fn a_trap_poisons_and_errors_have_kinds() {
        let mut limits = Limits::default();
        limits.fuel(100_000);
        let rt = Runtime::new(RuntimeConfig::default().limits(limits).max_objects(2)).unwrap();
        let mut a = spawn(&rt, 1);
        let e = a.call("nope", &()).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::MissingExport);
        assert!(e.to_string().contains("calls, incr, spin"), "{e}");
        assert!(!a.is_poisoned());
        assert_eq!(
            a.call("spin", &()).unwrap_err().kind(),
            ErrorKind::OutOfFuel
        );
        assert!(a.is_poisoned());
        assert_eq!(
            a.call("incr", &()).unwrap_err().kind(),
            ErrorKind::ObjectPoisoned
        );
        assert_eq!(a.snapshot().unwrap_err().kind(), ErrorKind::ObjectPoisoned);

        let _b = spawn(&rt, 1);
        let call = counter()
            .closure("Counter.new", &1u8)
            .unwrap()
            .call(&())
            .unwrap();
        assert_eq!(rt.spawn(&call).unwrap_err().kind(), ErrorKind::ObjectLimit);
        drop(a);
        rt.spawn(&call).unwrap();

        let not_ctor = counter()
            .closure("Counter.incr", &())
            .unwrap()
            .call(&())
            .unwrap();
        assert_eq!(
            rt.spawn(&not_ctor).unwrap_err().kind(),
            ErrorKind::NotAnObject
        );
        assert_eq!(
            rt.restore(&counter()).unwrap_err().kind(),
            ErrorKind::NotAnObject
        );
    }

    #[test]
    fn modules_that_change_tables_are_refused() {
        let wat = COUNTER.replace(
            "(func (export \"Counter.calls\")",
            "(table 1 funcref) (func (export \"grow\") (drop (table.grow (ref.null func) (i32.const 1)))) (func (export \"Counter.calls\")",
        );
        let code = Code::new(wat::parse_str(&wat).unwrap()).unwrap();
        let rt = Runtime::new(&RuntimeConfig::default()).unwrap();
        let call = code
            .closure("Counter.new", &1u8)
            .unwrap()
            .call(&())
            .unwrap();
        let e = rt.spawn(&call).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotAnObject);
        assert!(e.to_string().contains("table.grow"), "{e}");
    }

    #[test]
    fn images_merge_close_runs() {
        let mut m = vec![0u8; 1000];
        m[10] = 1;
        m[20] = 2;
        m[500] = 3;
        let segs = image_segments(&m);
        assert_eq!(segs.len(), 2);
        assert_eq!(segs[0].0, 10);
        assert_eq!(segs[0].1.len(), 11);
        assert_eq!(segs[1], (500, &[3u8][..]));
        assert!(image_segments(&[0; 100]).is_empty());
    }
}

//! Sealed modules: a closure or a whole call as one standalone WebAssembly module.
//!
//! # Why
//!
//! A pickle needs wasmpickle (or another implementation of `docs/format.md`) on the receiving
//! side to decode it and copy its environment and arguments into a fresh instance. A *sealed*
//! module needs nothing but a WebAssembly engine: the environment (and, for a call, the
//! arguments) are baked into the module as data, and one exported entry point, with no
//! parameters for a call, does what a wasmpickle host would do before calling the export. The
//! plain `wasmtime` command line, a browser, or any embedder can run it:
//!
//! ```text
//! $ wasmpickle seal call.wpk -o sealed.wasm      # or seal_call(&code, &call)
//! $ wasmtime run --invoke wasmpickle_sealed sealed.wasm
//! (one number: the i64 the entry returns, reply pointer << 32 | reply length)
//! ```
//!
//! The reply, in linear memory at that pointer and length, is exactly the reply of
//! `docs/abi.md` §5 (a status byte, then MessagePack), so a host reads a sealed call's result
//! the way it reads a pickled call's. And because the module is the closure, its
//! [`CodeHash`] identifies the closure: the same call sealed twice gives the same bytes and
//! the same hash, and any change to the code the export can reach, to the environment or to
//! the arguments gives another.
//!
//! # Layout
//!
//! [`seal_call`] and [`seal_closure`] start from the module [shaken](crate::shake) to the
//! export and the guest contract's exports it has (`memory`, `wasmpickle_alloc`,
//! `wasmpickle_free`, `wasmpickle_panic`), which is the module whose hash is the export's
//! [version](crate::Code::export_version). Everything in it keeps its index and its place;
//! sealing only appends:
//!
//! * a function type for the entry, unless the module already has that type;
//! * the entry function, last in the function index space, exported as [`SEALED_ENTRY`]
//!   (`wasmpickle_sealed`) after the module's own exports;
//! * a passive data segment, last: the environment bytes, followed for a call by the argument
//!   bytes, exactly as the pickle carries them;
//! * a data count section (needed by `memory.init`), counting that segment too;
//! * a custom section [`SEALED_SECTION`] (`wasmpickle.sealed`), last, saying what was sealed.
//!
//! The pickled export itself stays exported with its pickled signature, so a sealed module is
//! also an ordinary guest: a wasmpickle [`Runtime`](crate::Runtime) can run a call of the
//! export on it, and the sealed module's memory, allocator and panic slot are the original's.
//!
//! # The entry
//!
//! For a sealed **call**, `wasmpickle_sealed: () -> i64` does the host's calling sequence
//! (`docs/abi.md` §3, steps 2 and 3) inside the module:
//!
//! ```text
//! p = wasmpickle_alloc(env_len + args_len)
//! memory.init $sealed (dst p, src 0, len env_len + args_len); data.drop $sealed
//! return export(p, env_len, p + env_len, args_len)
//! ```
//!
//! For a sealed **closure**, `wasmpickle_sealed: (args_ptr: i32, args_len: i32) -> i64` takes
//! the arguments from the embedder, who writes them (MessagePack, `docs/abi.md` §4) into a
//! region it got from `wasmpickle_alloc(args_len)`, as a host would:
//!
//! ```text
//! p = wasmpickle_alloc(env_len)
//! memory.init $sealed (dst p, src 0, len env_len); data.drop $sealed
//! return export(p, env_len, args_ptr, args_len)
//! ```
//!
//! The entry uses a plain `call`, not a tail call, and bulk memory only for `memory.init` and
//! `data.drop`, so engines without the tail-call proposal run it too. Like any export, it is
//! meant to be called once per fresh instance: the segment is dropped after the copy, so a
//! second call on the same instance traps (`memory.init` of a dropped segment is out of
//! bounds), which is the contract's one-call-per-instance rule made explicit.
//!
//! A panicking guest traps out of the entry as it would out of the export; the panic slot
//! (`wasmpickle_panic`, when the module has one) then holds the panic reply, as in
//! `docs/abi.md` §6.
//!
//! # The `wasmpickle.sealed` section
//!
//! One MessagePack map with string keys, in this order (keys marked *call* only for calls):
//!
//! | key | type | content |
//! |---|---|---|
//! | `kind` | str | `"call"` or `"closure"` |
//! | `export` | str | the export the entry calls |
//! | `code` | bin, 32 bytes | the [`CodeHash`] of the module sealed from |
//! | `version` | bin, 32 bytes | the export's [version](crate::Code::export_version) |
//! | `call` | bin, 32 bytes | *call*: the pickled call's [`CallId`](crate::CallId) |
//! | `env_len` | uint | bytes of environment at the start of the segment |
//! | `args_len` | uint | *call*: bytes of arguments after them |
//!
//! It is descriptive only, and, like the export descriptions, left out of the canonical hash
//! (it is one of [`UNHASHED_SECTIONS`](crate::UNHASHED_SECTIONS)): the sealed module's hash
//! depends on the code and the data, not on which module they were shaken from or on the
//! limits a call requested (which the call id covers, and which a sealed module cannot carry:
//! fuel, deadlines and memory caps are the embedder's to set).
//!
//! # Determinism
//!
//! Shaking is deterministic, and sealing appends items computed only from the shaken module
//! and the pickle's bytes, so the same call (or closure) and the same code give the same
//! sealed bytes on every run and machine. The output is validated with the sandbox's feature
//! set before it is returned.

use std::borrow::Cow;
use std::fmt;

use wasm_encoder::reencode::{Reencode, RoundtripReencoder};
use wasm_encoder::{Instruction, ValType};
use wasmparser::{
    CustomSectionReader, DataSectionReader, ExportSectionReader, ExternalKind, FunctionBody,
    FunctionSectionReader, Parser, Payload, TypeRef, TypeSectionReader, Validator,
};
use wasmpickle_format::{Call, Closure, CodeHash, abi};

use crate::code::{Code, canonical_hash, features};
use crate::error::{Error, ErrorKind, Result};

/// The export name of a sealed module's entry point.
pub const SEALED_ENTRY: &str = "wasmpickle_sealed";

/// The custom section describing what a module seals (see the module docs). Not hashed.
pub const SEALED_SECTION: &str = "wasmpickle.sealed";

/// Seals a call: one standalone module whose entry `wasmpickle_sealed: () -> i64` runs the
/// call's export over its environment and arguments, baked in as data, and returns the
/// packed reply pointer and length of `docs/abi.md`.
///
/// `code` must be the module the call names (the call may carry it inline or by hash). The
/// call's limits are not part of the sealed module: the embedder sets its own.
///
/// # Errors
///
/// [`ErrorKind::HashMismatch`] when `code` is not the call's module;
/// [`ErrorKind::MissingExport`] or [`ErrorKind::WrongSignature`] when the export is not a
/// pickled function; [`ErrorKind::AbiViolation`] when the module lacks the exported `memory`
/// or the allocator `wasmpickle_alloc(i32) -> i32` the entry needs;
/// [`ErrorKind::InvalidModule`] when the module already exports `wasmpickle_sealed`.
///
/// # Examples
///
/// ```no_run
/// use wasmpickle::{Code, canonical_hash, seal_call};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let code = Code::from_file("math.wasm")?;
/// let call = code.closure("scale", &2.5)?.call(&(4.0,))?;
/// let sealed = seal_call(&code, &call)?;
/// println!("{}", canonical_hash(&sealed)?); // the same for every seal of this call
/// std::fs::write("scale.wasm", sealed)?;    // wasmtime run --invoke wasmpickle_sealed scale.wasm
/// # Ok(()) }
/// ```
pub fn seal_call(code: &Code, call: &Call) -> Result<Vec<u8>> {
    check_code(code, call.code().hash(), call.export())?;
    let mut data = Vec::with_capacity(call.env().len() + call.args().len());
    data.extend_from_slice(call.env());
    data.extend_from_slice(call.args());
    seal(
        code,
        Sealing {
            export: call.export(),
            env_len: call.env().len(),
            args_len: Some(call.args().len()),
            call: Some(*call.id().as_bytes()),
            data,
        },
    )
}

/// Seals a closure: one standalone module whose entry
/// `wasmpickle_sealed: (args_ptr: i32, args_len: i32) -> i64` runs the closure's export over
/// its environment, baked in as data, and arguments the embedder wrote into memory it got
/// from `wasmpickle_alloc(args_len)`; it returns the packed reply pointer and length of
/// `docs/abi.md`.
///
/// # Errors
///
/// As [`seal_call`].
pub fn seal_closure(code: &Code, closure: &Closure) -> Result<Vec<u8>> {
    check_code(code, closure.code().hash(), closure.export())?;
    seal(
        code,
        Sealing {
            export: closure.export(),
            env_len: closure.env().len(),
            args_len: None,
            call: None,
            data: closure.env().to_vec(),
        },
    )
}

fn check_code(code: &Code, named: CodeHash, export: &str) -> Result<()> {
    if code.hash() != named {
        return Err(Error::new(
            ErrorKind::HashMismatch,
            format!(
                "cannot seal: the pickle names code {named}, and the module given is {}",
                code.hash()
            ),
        )
        .with_code(named));
    }
    code.check_export(export)
}

/// What is being sealed.
struct Sealing<'a> {
    export: &'a str,
    env_len: usize,
    /// The arguments' length for a call; `None` for a closure.
    args_len: Option<usize>,
    /// The call id, for a call.
    call: Option<[u8; 32]>,
    /// The passive segment's bytes: environment, then arguments for a call.
    data: Vec<u8>,
}

fn seal(code: &Code, s: Sealing<'_>) -> Result<Vec<u8>> {
    let wasm = code.wasm();
    let mut keep = vec![s.export];
    keep.extend(
        [
            abi::MEMORY_EXPORT,
            abi::ALLOC_EXPORT,
            abi::FREE_EXPORT,
            abi::PANIC_SLOT_EXPORT,
        ]
        .into_iter()
        .filter(|name| *name != s.export && code.exports().iter().any(|e| e.name == *name)),
    );
    let contract = |e: Error| e.with_code(code.hash()).with_export(s.export);
    for (required, kind) in [(abi::MEMORY_EXPORT, "memory"), (abi::ALLOC_EXPORT, "func")] {
        if !code
            .exports()
            .iter()
            .any(|e| e.name == required && e.kind == kind)
        {
            return Err(contract(Error::new(
                ErrorKind::AbiViolation,
                format!(
                    "cannot seal module {}: it does not export the {kind} `{required}` \
                     the sealed entry needs (docs/abi.md §2)",
                    code.hash()
                ),
            )));
        }
    }
    let shaken = crate::shake::shake(wasm, &keep).map_err(contract)?;
    let version = canonical_hash(&shaken)?;
    let section = describe(&s, code.hash(), version);
    let sealed = append_entry(&shaken, &s, &section).map_err(contract)?;
    Validator::new_with_features(features())
        .validate_all(&sealed)
        .map_err(|e| {
            contract(Error::new(
                ErrorKind::InvalidModule,
                format!("sealing made an invalid module (a bug in wasmpickle): {e}"),
            ))
        })?;
    Ok(sealed)
}

/// The sections of a shaken module that sealing extends or copies.
#[derive(Default)]
struct Parts<'a> {
    types: Option<TypeSectionReader<'a>>,
    functions: Option<FunctionSectionReader<'a>>,
    exports: Option<ExportSectionReader<'a>>,
    bodies: Vec<FunctionBody<'a>>,
    data: Option<DataSectionReader<'a>>,
    /// Sections copied as they are, by id: imports, tables, memories, globals, start,
    /// elements.
    raw: Vec<(u8, &'a [u8])>,
    customs: Vec<CustomSectionReader<'a>>,
    /// Every function type, by type index, as (parameters, results).
    signatures: Vec<(Vec<wasmparser::ValType>, Vec<wasmparser::ValType>)>,
    /// The type index of every function, imports first.
    func_types: Vec<u32>,
    data_count: u32,
}

fn bug(e: impl fmt::Display) -> Error {
    Error::new(
        ErrorKind::InvalidModule,
        format!("cannot seal the shaken module (a bug in wasmpickle): {e}"),
    )
}

impl<'a> Parts<'a> {
    /// Reads a module [`shake`](crate::shake) wrote: valid, with its sections in the
    /// standard order and no tags or components.
    fn read(wasm: &'a [u8]) -> Result<Parts<'a>> {
        let mut p = Parts::default();
        for payload in Parser::new(0).parse_all(wasm) {
            let payload = payload.map_err(bug)?;
            match &payload {
                Payload::Version { .. } | Payload::End(_) | Payload::DataCountSection { .. } => {}
                Payload::TypeSection(s) => {
                    for ty in s.clone().into_iter_err_on_gc_types() {
                        let ty = ty.map_err(bug)?;
                        p.signatures
                            .push((ty.params().to_vec(), ty.results().to_vec()));
                    }
                    p.types = Some(s.clone());
                }
                Payload::ImportSection(s) => {
                    for import in s.clone().into_imports() {
                        if let TypeRef::Func(t) | TypeRef::FuncExact(t) = import.map_err(bug)?.ty {
                            p.func_types.push(t);
                        }
                    }
                    p.raw.push(raw(&payload, wasm));
                }
                Payload::FunctionSection(s) => {
                    for t in s.clone() {
                        p.func_types.push(t.map_err(bug)?);
                    }
                    p.functions = Some(s.clone());
                }
                Payload::ExportSection(s) => p.exports = Some(s.clone()),
                Payload::CodeSectionStart { .. } => {}
                Payload::CodeSectionEntry(body) => p.bodies.push(body.clone()),
                Payload::DataSection(s) => {
                    p.data_count = s.count();
                    p.data = Some(s.clone());
                }
                Payload::CustomSection(c) => p.customs.push(c.clone()),
                Payload::TableSection(_)
                | Payload::MemorySection(_)
                | Payload::GlobalSection(_)
                | Payload::StartSection { .. }
                | Payload::ElementSection(_) => p.raw.push(raw(&payload, wasm)),
                other => {
                    return Err(bug(format!(
                        "unexpected section {:?}",
                        other.as_section().map(|(id, _)| id)
                    )));
                }
            }
        }
        Ok(p)
    }

    /// The index of the function exported as `name`.
    fn exported_func(&self, name: &str) -> Result<Option<u32>> {
        let Some(exports) = &self.exports else {
            return Ok(None);
        };
        for export in exports.clone() {
            let export = export.map_err(bug)?;
            if export.name == name {
                return Ok(match export.kind {
                    ExternalKind::Func | ExternalKind::FuncExact => Some(export.index),
                    _ => None,
                });
            }
        }
        Ok(None)
    }

    fn signature_of(
        &self,
        func: u32,
    ) -> Option<&(Vec<wasmparser::ValType>, Vec<wasmparser::ValType>)> {
        self.signatures
            .get(*self.func_types.get(func as usize)? as usize)
    }
}

/// A copied section's id and contents.
fn raw<'a>(payload: &Payload<'a>, wasm: &'a [u8]) -> (u8, &'a [u8]) {
    let (id, range) = payload
        .as_section()
        .expect("only called for payloads that are sections");
    (id, &wasm[range])
}

/// The shaken module with the entry, its type, the sealed segment, the data count and the
/// description appended.
fn append_entry(shaken: &[u8], s: &Sealing<'_>, description: &[u8]) -> Result<Vec<u8>> {
    use wasmparser::ValType as P;

    let p = Parts::read(shaken)?;
    let reserved = p.exports.as_ref().is_some_and(|exports| {
        exports
            .clone()
            .into_iter()
            .any(|e| e.is_ok_and(|e| e.name == SEALED_ENTRY))
    });
    if reserved {
        return Err(Error::new(
            ErrorKind::InvalidModule,
            format!("cannot seal: the module already exports `{SEALED_ENTRY}`"),
        ));
    }
    let target = p
        .exported_func(s.export)?
        .ok_or_else(|| bug(format!("the shaken module lost `{}`", s.export)))?;
    let alloc = p
        .exported_func(abi::ALLOC_EXPORT)?
        .filter(|&f| p.signature_of(f) == Some(&(vec![P::I32], vec![P::I32])))
        .ok_or_else(|| {
            Error::new(
                ErrorKind::AbiViolation,
                format!(
                    "cannot seal: `{}` is not a function (i32) -> i32 (docs/abi.md §2)",
                    abi::ALLOC_EXPORT
                ),
            )
        })?;
    let total = i32::try_from(s.data.len()).map_err(|_| {
        bug(format!(
            "{} bytes of data do not fit in memory",
            s.data.len()
        ))
    })?;
    let env_len = s.env_len as i32;

    // The entry's type: reused when the module has it, else appended.
    let (params, entry_params): (Vec<P>, Vec<ValType>) = match s.args_len {
        Some(_) => (vec![], vec![]),
        None => (vec![P::I32, P::I32], vec![ValType::I32, ValType::I32]),
    };
    let wanted = (params, vec![P::I64]);
    let existing = p.signatures.iter().position(|sig| *sig == wanted);
    let entry_type = existing.unwrap_or(p.signatures.len()) as u32;
    let entry_index = p.func_types.len() as u32;
    let segment = p.data_count;

    let mut rt = RoundtripReencoder;
    let mut module = wasm_encoder::Module::new();

    let mut types = wasm_encoder::TypeSection::new();
    if let Some(reader) = p.types.clone() {
        rt.parse_type_section(&mut types, reader).map_err(bug)?;
    }
    if existing.is_none() {
        types.ty().function(entry_params.clone(), [ValType::I64]);
    }
    module.section(&types);

    let copy = |module: &mut wasm_encoder::Module, ids: &[u8]| {
        for (id, data) in p.raw.iter().filter(|(id, _)| ids.contains(id)) {
            module.section(&wasm_encoder::RawSection { id: *id, data });
        }
    };
    use wasm_encoder::SectionId as Id;
    copy(&mut module, &[Id::Import as u8]);

    let mut functions = wasm_encoder::FunctionSection::new();
    if let Some(reader) = p.functions.clone() {
        rt.parse_function_section(&mut functions, reader)
            .map_err(bug)?;
    }
    functions.function(entry_type);
    module.section(&functions);

    copy(
        &mut module,
        &[Id::Table as u8, Id::Memory as u8, Id::Global as u8],
    );

    let mut exports = wasm_encoder::ExportSection::new();
    if let Some(reader) = p.exports.clone() {
        rt.parse_export_section(&mut exports, reader).map_err(bug)?;
    }
    exports.export(SEALED_ENTRY, wasm_encoder::ExportKind::Func, entry_index);
    module.section(&exports);

    copy(&mut module, &[Id::Start as u8, Id::Element as u8]);

    module.section(&wasm_encoder::DataCountSection {
        count: p.data_count + 1,
    });

    let mut code = wasm_encoder::CodeSection::new();
    for body in &p.bodies {
        code.raw(body.as_bytes());
    }
    code.function(&entry(s, alloc, target, segment, total, env_len));
    module.section(&code);

    let mut data = wasm_encoder::DataSection::new();
    if let Some(reader) = p.data.clone() {
        rt.parse_data_section(&mut data, reader).map_err(bug)?;
    }
    data.passive(s.data.iter().copied());
    module.section(&data);

    for custom in &p.customs {
        module.section(&wasm_encoder::CustomSection {
            name: Cow::Borrowed(custom.name()),
            data: Cow::Borrowed(custom.data()),
        });
    }
    module.section(&wasm_encoder::CustomSection {
        name: Cow::Borrowed(SEALED_SECTION),
        data: Cow::Borrowed(description),
    });
    Ok(module.finish())
}

/// The entry function's body (see the module docs).
fn entry(
    s: &Sealing<'_>,
    alloc: u32,
    target: u32,
    segment: u32,
    total: i32,
    env_len: i32,
) -> wasm_encoder::Function {
    // A closure's entry has the parameters (args_ptr, args_len); the one local, after the
    // parameters, holds the region `wasmpickle_alloc` returned.
    let ptr = match s.args_len {
        Some(_) => 0,
        None => 2,
    };
    let mut f = wasm_encoder::Function::new([(1, ValType::I32)]);
    f.instruction(&Instruction::I32Const(total))
        .instruction(&Instruction::Call(alloc))
        .instruction(&Instruction::LocalTee(ptr))
        .instruction(&Instruction::I32Const(0))
        .instruction(&Instruction::I32Const(total))
        .instruction(&Instruction::MemoryInit {
            mem: 0,
            data_index: segment,
        })
        .instruction(&Instruction::DataDrop(segment))
        .instruction(&Instruction::LocalGet(ptr))
        .instruction(&Instruction::I32Const(env_len));
    match s.args_len {
        // The arguments follow the environment in the region, as a host places them.
        Some(args_len) => f
            .instruction(&Instruction::LocalGet(ptr))
            .instruction(&Instruction::I32Const(env_len))
            .instruction(&Instruction::I32Add)
            .instruction(&Instruction::I32Const(args_len as i32)),
        None => f
            .instruction(&Instruction::LocalGet(0))
            .instruction(&Instruction::LocalGet(1)),
    };
    f.instruction(&Instruction::Call(target))
        .instruction(&Instruction::End);
    f
}

/// The `wasmpickle.sealed` section's contents (see the module docs), written by hand: it is a
/// small fixed map, and the keys' order is part of what makes the output deterministic.
fn describe(s: &Sealing<'_>, code: CodeHash, version: CodeHash) -> Vec<u8> {
    let mut out = Vec::new();
    let entries = if s.call.is_some() { 7 } else { 5 };
    out.push(0x80 | entries);
    msgpack_str(&mut out, "kind");
    msgpack_str(&mut out, if s.call.is_some() { "call" } else { "closure" });
    msgpack_str(&mut out, "export");
    msgpack_str(&mut out, s.export);
    msgpack_str(&mut out, "code");
    msgpack_bin32(&mut out, code.as_bytes());
    msgpack_str(&mut out, "version");
    msgpack_bin32(&mut out, version.as_bytes());
    if let Some(id) = &s.call {
        msgpack_str(&mut out, "call");
        msgpack_bin32(&mut out, id);
    }
    msgpack_str(&mut out, "env_len");
    msgpack_uint(&mut out, s.env_len as u64);
    if let Some(len) = s.args_len {
        msgpack_str(&mut out, "args_len");
        msgpack_uint(&mut out, len as u64);
    }
    out
}

fn msgpack_str(out: &mut Vec<u8>, s: &str) {
    // Export names are at most 256 bytes (the format's limit), keys are short.
    match s.len() {
        n @ 0..=31 => out.push(0xa0 | n as u8),
        n @ 32..=255 => out.extend([0xd9, n as u8]),
        n => {
            out.push(0xda);
            out.extend((n as u16).to_be_bytes());
        }
    }
    out.extend_from_slice(s.as_bytes());
}

fn msgpack_bin32(out: &mut Vec<u8>, b: &[u8; 32]) {
    out.extend([0xc4, 32]);
    out.extend_from_slice(b);
}

fn msgpack_uint(out: &mut Vec<u8>, v: u64) {
    match v {
        0..=0x7f => out.push(v as u8),
        0x80..=0xff => out.extend([0xcc, v as u8]),
        0x100..=0xffff => {
            out.push(0xcd);
            out.extend((v as u16).to_be_bytes());
        }
        0x1_0000..=0xffff_ffff => {
            out.push(0xce);
            out.extend((v as u32).to_be_bytes());
        }
        _ => {
            out.push(0xcf);
            out.extend(v.to_be_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GUEST: &str = r#"
    (module
      (memory (export "memory") 1)
      (global $next (mut i32) (i32.const 1024))
      (func $alloc (export "wasmpickle_alloc") (param $len i32) (result i32)
        (local $p i32)
        global.get $next
        local.set $p
        global.get $next
        local.get $len
        i32.add
        global.set $next
        local.get $p)
      ;; Replies with status 0 and the argument bytes, copied after the input.
      (func (export "echo") (param i32 i32 i32 i32) (result i64)
        (local $out i32)
        local.get 3
        i32.const 1
        i32.add
        call $alloc
        local.tee $out
        i32.const 0
        i32.store8
        local.get $out
        i32.const 1
        i32.add
        local.get 2
        local.get 3
        memory.copy
        local.get $out
        i64.extend_i32_u
        i64.const 32
        i64.shl
        local.get 3
        i32.const 1
        i32.add
        i64.extend_i32_u
        i64.or)
      (func (export "unused") (param i32 i32 i32 i32) (result i64) i64.const 0)
      (data (i32.const 16) "static"))
    "#;

    fn code() -> Code {
        Code::new(wat::parse_str(GUEST).unwrap()).unwrap()
    }

    fn exports(wasm: &[u8]) -> Vec<String> {
        let mut names = Vec::new();
        for payload in Parser::new(0).parse_all(wasm) {
            if let Payload::ExportSection(s) = payload.unwrap() {
                names.extend(s.into_iter().map(|e| e.unwrap().name.to_owned()));
            }
        }
        names
    }

    #[test]
    fn a_sealed_call_keeps_the_contract_and_adds_the_entry() {
        let code = code();
        let call = code.closure("echo", &7u8).unwrap().call(&(1u8,)).unwrap();
        let sealed = seal_call(&code, &call).unwrap();
        assert_eq!(
            exports(&sealed),
            ["memory", "wasmpickle_alloc", "echo", SEALED_ENTRY]
        );
        assert_eq!(sealed, seal_call(&code, &call).unwrap(), "deterministic");
        // The description (which names the call id, covering the limits) is not hashed.
        let limited = call
            .clone()
            .with_limits(wasmpickle_format::CallLimits::new().with_fuel(5));
        let other = seal_call(&code, &limited).unwrap();
        assert_ne!(other, sealed);
        assert_eq!(
            canonical_hash(&other).unwrap(),
            canonical_hash(&sealed).unwrap()
        );
        let different = code.closure("echo", &8u8).unwrap().call(&(1u8,)).unwrap();
        assert_ne!(
            canonical_hash(&seal_call(&code, &different).unwrap()).unwrap(),
            canonical_hash(&sealed).unwrap()
        );
    }

    #[test]
    fn a_closure_entry_takes_the_arguments() {
        let code = code();
        let closure = code.closure("echo", &7u8).unwrap();
        let sealed = seal_closure(&code, &closure).unwrap();
        let module = Code::new(sealed).unwrap();
        let entry = module
            .exports()
            .iter()
            .find(|e| e.name == SEALED_ENTRY)
            .unwrap();
        assert_eq!(entry.signature.as_deref(), Some("(i32, i32) -> i64"));
    }

    #[test]
    fn refusals() {
        let code = code();
        let other = Code::new(wat::parse_str("(module)").unwrap()).unwrap();
        let call = code.closure("echo", &()).unwrap().call(&()).unwrap();
        assert_eq!(
            seal_call(&other, &call).unwrap_err().kind(),
            ErrorKind::HashMismatch
        );
        let no_alloc = Code::new(
            wat::parse_str(
                r#"(module (memory (export "memory") 1)
                     (func (export "f") (param i32 i32 i32 i32) (result i64) i64.const 0))"#,
            )
            .unwrap(),
        )
        .unwrap();
        let call = no_alloc.function("f").unwrap().call(&()).unwrap();
        assert_eq!(
            seal_call(&no_alloc, &call).unwrap_err().kind(),
            ErrorKind::AbiViolation
        );
    }
}

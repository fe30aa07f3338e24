//! Per-export code versions: a module shaken down to what one export can reach.
//!
//! # Why
//!
//! A memo of results is keyed by *what code ran*. The module's [`CodeHash`] is too coarse a
//! key: a guest with ten exports would lose every memoized result whenever any one of them
//! changed. The name of the export alone is too fine a key — and is what joblib-style caches
//! and Python's autocache effectively use, by hashing only the top-level function's source:
//! edit a helper it calls and the cache keeps serving results of the old helper. The *export
//! version* sits in between: the hash of the module reduced ("shaken", as in tree shaking) to
//! the one export and everything it can reach. Editing a function the export cannot reach
//! leaves its version unchanged; editing anything it can reach changes it.
//!
//! # What is kept
//!
//! [`shake`] starts from its roots — the named exports, and the start function, which runs
//! at instantiation — and keeps, until nothing more is found:
//!
//! * functions reached by direct calls (`call`, `return_call`) and named by `ref.func` in
//!   kept code or in kept globals' initializers;
//! * through tables: `call_indirect` / `return_call_indirect` with type *T* on table *X*
//!   reaches the functions in *X*'s element segments whose type equals *T* (structurally: two
//!   type indices with the same parameters and results are the same type, as for the engine's
//!   check). Any other access that can read a table (`table.get`, `table.copy`, `table.init`,
//!   ...) or an exported table reaches every function in it. Anything not modelled precisely
//!   is treated this conservatively;
//! * the globals, tables, memories and passive or declarative element segments that kept code
//!   or kept initializers name, and every import that is kept (imported functions only when
//!   reached);
//! * every active element segment of a kept table, at the same offset and with the same
//!   length. An entry whose function is not reached is replaced by a *stub*: a function of the
//!   same type whose body is `unreachable`, one per type. The table's layout, its
//!   `call_indirect` type checks and their traps are therefore those of the original — a call
//!   through a slot with the wrong signature still traps with a signature mismatch — while
//!   the unreached function's code no longer counts. A stub can never run: a call through its
//!   slot with a matching type would have reached the original function;
//! * every data segment, whenever a memory is kept. Data cannot be attributed to functions:
//!   compilers pool constants, strings and panic locations into shared segments and address
//!   them by computed pointers. So an edit that moves data changes the versions of every
//!   export that keeps the memory, which for a guest following `docs/abi.md` is every export.
//!   That is conservative, never wrong;
//! * active segments that might not fit their table or memory: instantiating the original
//!   traps on them, so the shaken module keeps them (and their table or memory) to trap the
//!   same way. A segment whose offset is a constant and which fits the declared minimum size
//!   cannot trap and is dropped with its unused table or memory;
//! * custom sections, except those [`canonical_hash`](crate::canonical_hash) leaves out
//!   ([`UNHASHED_SECTIONS`](crate::UNHASHED_SECTIONS), `.debug_*`): like data, an unknown
//!   custom section cannot be attributed to any export, and it is hashed into the module's
//!   identity because some embedder might give it meaning, so it is kept, after every other
//!   section.
//!
//! # What the output looks like, and why it is stable
//!
//! Kept items keep their original relative order and are renumbered densely, so adding or
//! removing unreached functions, globals or segments does not disturb the rest. Types are the
//! exception: only the function types in use are kept, deduplicated structurally and sorted by
//! their encoding rather than by their original position, because linkers number types in
//! order of first use across the *whole* module, so a signature added to or changed in an
//! unreached function could otherwise reorder the types of reached ones. Stubs come after the
//! kept functions, one per type, in type order. `ref.func` targets of kept code are declared
//! by one declarative element segment placed last. Empty sections are left out. Function
//! bodies are re-encoded through `wasm-encoder`, so the output does not depend on how the
//! original encoded its LEB128 integers. The version is the [`canonical_hash`] of the shaken
//! module, so that a module sealed to one export has its version as its [`CodeHash`]. No
//! hash map order, address or time reaches the output: the same input gives the same bytes on
//! every run and machine.
//!
//! # What is not covered
//!
//! The version covers the code and data the export can reach, not its environment or
//! arguments (the memo key adds those), not the host (the runtime's version, its grants) and
//! not what a granted import does. It is conservative in the directions above: it may change
//! when nothing the export does has changed (moved data, a function that shares a table type
//! with an indirect call the export makes), but an edit to anything the export can execute
//! always changes it. Resource limits are not modelled: a memory or table the export does not
//! need is dropped even if the original's initial size would exceed a runtime's limits.
//!
//! A rebuild can move code without an edit: rustc orders generic instantiations by symbol
//! name, and Rust symbol hashes come from cargo's `-C metadata`, which covers the crate's
//! features, its dependencies' versions and the location of path dependencies outside the
//! workspace. Changing those reorders functions and the function table (whose indices are
//! stored in data), so every version changes. Editing source does not.
//!
//! Precision depends on how the guest calls: an indirect call reaches every function of its
//! type in the table. A guest SDK that dispatched every export through one shared function
//! pointer would make each export reach all the others; the Rust SDK's `run` is generic over
//! the export's body for that reason.
//!
//! Fuel: the shaken module executes the same instructions, so a call takes the same fuel, and
//! the tests hold it to that exactly. Instantiating may take less. wasmtime evaluates
//! initializers that are not a single constant (a global initialized by `global.get`,
//! `ref.func` or extended-constant arithmetic, a passive element segment, a table initializer)
//! in a compiled startup function that is charged fuel, and shaking drops the ones nothing
//! reaches; and a start function that overflows the stack does so at a depth that depends on
//! the native frames below it, that startup function's among them. Guests built with the Rust
//! SDK have none of these, and instantiate for the same fuel.
//!
//! The original module is never modified: [`Code`](crate::Code) keeps and ships its bytes,
//! descriptions included. Shaking only computes versions (and may later seal modules).

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;
use std::fmt;

use wasm_encoder::reencode::{self, Reencode};
use wasm_encoder::{Encode, Instruction};
use wasmparser::{
    ConstExpr, CustomSectionReader, Data, DataKind, Element, ElementItems, ElementKind, Export,
    ExternalKind, FunctionBody, GlobalType, Import, MemoryType, Operator, Parser, Payload,
    TableType, TypeRef, ValType, Validator,
};
use wasmpickle_format::{CodeHash, abi};

use crate::code::{canonical_hash, features, is_unhashed};
use crate::error::{Error, ErrorKind, Result};

/// The exports of the guest contract (`docs/abi.md`) that the host uses to run any pickled
/// export, and so belong to every export's version when present.
const CONTRACT_EXPORTS: &[&str] = &[
    abi::MEMORY_EXPORT,
    abi::ALLOC_EXPORT,
    abi::FREE_EXPORT,
    abi::PANIC_SLOT_EXPORT,
];

/// `wasm` reduced to the exports named in `keep` and everything they can reach. The result is
/// a valid module that behaves like `wasm` for those exports: the same results, traps and
/// fuel for every call.
///
/// Kept: the named exports; the start function; functions reached by direct calls, by
/// `ref.func`, and through tables (an indirect call of type *T* reaches the table's functions
/// of type *T*, any other read of a table all of them); the globals, tables, memories and
/// segments those name; every data segment when a memory is kept (data cannot be attributed
/// to functions); custom sections other than the build-only ones
/// [`canonical_hash`] leaves out. Table layouts are preserved: an unreached function in a kept
/// table is replaced by an `unreachable` stub of its type, so signature checks trap as
/// before. Only the function types in use are kept, sorted by structure, so that unrelated
/// signatures and the order a linker numbered types in do not matter.
///
/// # Errors
///
/// [`ErrorKind::InvalidModule`] when `wasm` is not a valid module under the sandbox's feature
/// set, [`ErrorKind::MissingExport`] when `keep` names an export the module does not have.
pub fn shake(wasm: &[u8], keep: &[&str]) -> Result<Vec<u8>> {
    Validator::new_with_features(features())
        .validate_all(wasm)
        .map_err(invalid)?;
    shake_valid(wasm, keep)
}

/// The version of one export: the [`canonical_hash`] of the module [shaken](shake) to that
/// export plus the exports of the guest contract the module has (`memory`,
/// `wasmpickle_alloc`, `wasmpickle_free`, `wasmpickle_panic`), that is, of all the host needs
/// to run it.
///
/// What a memo of the export's results keys on (with the environment and arguments): unlike a
/// hash of the exported function alone, it changes when anything the export can execute
/// changes, however deep in its callees; unlike the module's hash, it stays when only code the
/// export cannot reach changes. It is conservative — moved data, or a new function of a type
/// the export calls indirectly, changes it too — and the same on every run and machine.
///
/// # Errors
///
/// [`ErrorKind::InvalidModule`] when `wasm` is not a valid module under the sandbox's feature
/// set, [`ErrorKind::MissingExport`] when it has no export named `export`.
pub fn export_version(wasm: &[u8], export: &str) -> Result<CodeHash> {
    Validator::new_with_features(features())
        .validate_all(wasm)
        .map_err(invalid)?;
    export_version_valid(wasm, export)
}

/// [`export_version`] of a module already known to be valid.
pub(crate) fn export_version_valid(wasm: &[u8], export: &str) -> Result<CodeHash> {
    let module = Module::parse(wasm)?;
    let mut keep = vec![export];
    keep.extend(
        CONTRACT_EXPORTS
            .iter()
            .filter(|name| **name != export && module.exports.iter().any(|e| e.name == **name)),
    );
    let shaken = shake_parsed(wasm, &module, &keep)?;
    canonical_hash(&shaken)
}

fn shake_valid(wasm: &[u8], keep: &[&str]) -> Result<Vec<u8>> {
    let module = Module::parse(wasm)?;
    shake_parsed(wasm, &module, keep)
}

fn shake_parsed(wasm: &[u8], module: &Module<'_>, keep: &[&str]) -> Result<Vec<u8>> {
    if let Some(missing) = keep
        .iter()
        .find(|name| !module.exports.iter().any(|e| e.name == **name))
    {
        let hash = canonical_hash(wasm)?;
        return Err(Error::new(
            ErrorKind::MissingExport,
            format!("module {hash} has no export `{missing}`"),
        )
        .with_code(hash)
        .with_export(missing));
    }
    let reach = Reach::compute(module, keep)?;
    let shaken = emit(module, &reach, keep)?;
    // The output is ours: if it does not validate, the analysis missed something, and a
    // version computed from it would be meaningless.
    Validator::new_with_features(features())
        .validate_all(&shaken)
        .map_err(|e| {
            Error::new(
                ErrorKind::InvalidModule,
                format!(
                    "shaking the module to {keep:?} made an invalid module \
                     (a bug in wasmpickle): {e}"
                ),
            )
        })?;
    Ok(shaken)
}

fn invalid(e: impl fmt::Display) -> Error {
    Error::new(
        ErrorKind::InvalidModule,
        format!("not a valid WebAssembly module: {e}"),
    )
}

fn unsupported(what: &str) -> Error {
    Error::new(
        ErrorKind::InvalidModule,
        format!("cannot shake a module with {what}: not supported by the sandbox"),
    )
}

/// What [`shake`] needs of a parsed module. Index spaces hold imports first, as in wasm.
struct Module<'a> {
    /// Each function type's encoding (parameters, then results), which is also its
    /// structural identity.
    type_keys: Vec<Vec<u8>>,
    /// Each function type's parameters and results.
    signatures: Vec<Signature>,
    /// For each type index, the first index with the same structure.
    canon: Vec<u32>,
    /// Every import with its index in its own index space.
    imports: Vec<(Import<'a>, u32)>,
    /// The type of every function.
    func_types: Vec<u32>,
    imported_funcs: u32,
    tables: Vec<TableType>,
    /// Initializers of defined tables, by table index (`None` for imports and `ref.null`).
    table_inits: Vec<Option<ConstExpr<'a>>>,
    imported_tables: u32,
    memories: Vec<MemoryType>,
    imported_memories: u32,
    globals: Vec<GlobalType>,
    /// Initializers of defined globals, by global index (`None` for imports).
    global_inits: Vec<Option<ConstExpr<'a>>>,
    imported_globals: u32,
    exports: Vec<Export<'a>>,
    start: Option<u32>,
    elements: Vec<Element<'a>>,
    data: Vec<Data<'a>>,
    data_count: bool,
    bodies: Vec<FunctionBody<'a>>,
    customs: Vec<CustomSectionReader<'a>>,
}

impl<'a> Module<'a> {
    /// Reads a module that is known to be valid.
    fn parse(wasm: &'a [u8]) -> Result<Module<'a>> {
        let mut m = Module {
            type_keys: Vec::new(),
            signatures: Vec::new(),
            canon: Vec::new(),
            imports: Vec::new(),
            func_types: Vec::new(),
            imported_funcs: 0,
            tables: Vec::new(),
            table_inits: Vec::new(),
            imported_tables: 0,
            memories: Vec::new(),
            imported_memories: 0,
            globals: Vec::new(),
            global_inits: Vec::new(),
            imported_globals: 0,
            exports: Vec::new(),
            start: None,
            elements: Vec::new(),
            data: Vec::new(),
            data_count: false,
            bodies: Vec::new(),
            customs: Vec::new(),
        };
        let mut first: BTreeMap<Vec<u8>, u32> = BTreeMap::new();
        for payload in Parser::new(0).parse_all(wasm) {
            match payload.map_err(invalid)? {
                Payload::Version { .. } | Payload::CodeSectionStart { .. } | Payload::End(_) => {}
                Payload::TypeSection(s) => {
                    for group in s {
                        let group = group.map_err(invalid)?;
                        if group.is_explicit_rec_group() {
                            return Err(unsupported("recursion groups"));
                        }
                        for ty in group.into_types() {
                            let wasmparser::CompositeInnerType::Func(f) = &ty.composite_type.inner
                            else {
                                return Err(unsupported("GC types"));
                            };
                            let (key, signature) = signature(f.params(), f.results())?;
                            let index = m.type_keys.len() as u32;
                            m.canon.push(*first.entry(key.clone()).or_insert(index));
                            m.type_keys.push(key);
                            m.signatures.push(signature);
                        }
                    }
                }
                Payload::ImportSection(s) => {
                    for import in s.into_imports() {
                        let import = import.map_err(invalid)?;
                        let index = match import.ty {
                            TypeRef::Func(t) | TypeRef::FuncExact(t) => {
                                m.func_types.push(t);
                                m.imported_funcs += 1;
                                m.func_types.len() - 1
                            }
                            TypeRef::Table(t) => {
                                m.tables.push(t);
                                m.table_inits.push(None);
                                m.imported_tables += 1;
                                m.tables.len() - 1
                            }
                            TypeRef::Memory(t) => {
                                m.memories.push(t);
                                m.imported_memories += 1;
                                m.memories.len() - 1
                            }
                            TypeRef::Global(t) => {
                                m.globals.push(t);
                                m.global_inits.push(None);
                                m.imported_globals += 1;
                                m.globals.len() - 1
                            }
                            TypeRef::Tag(_) => return Err(unsupported("tags")),
                        };
                        m.imports.push((import, index as u32));
                    }
                }
                Payload::FunctionSection(s) => {
                    for t in s {
                        m.func_types.push(t.map_err(invalid)?);
                    }
                }
                Payload::TableSection(s) => {
                    for table in s {
                        let table = table.map_err(invalid)?;
                        m.tables.push(table.ty);
                        m.table_inits.push(match table.init {
                            wasmparser::TableInit::RefNull => None,
                            wasmparser::TableInit::Expr(e) => Some(e),
                        });
                    }
                }
                Payload::MemorySection(s) => {
                    for memory in s {
                        m.memories.push(memory.map_err(invalid)?);
                    }
                }
                Payload::GlobalSection(s) => {
                    for global in s {
                        let global = global.map_err(invalid)?;
                        m.globals.push(global.ty);
                        m.global_inits.push(Some(global.init_expr));
                    }
                }
                Payload::ExportSection(s) => {
                    for export in s {
                        m.exports.push(export.map_err(invalid)?);
                    }
                }
                Payload::StartSection { func, .. } => m.start = Some(func),
                Payload::ElementSection(s) => {
                    for element in s {
                        m.elements.push(element.map_err(invalid)?);
                    }
                }
                Payload::DataCountSection { .. } => m.data_count = true,
                Payload::DataSection(s) => {
                    for data in s {
                        m.data.push(data.map_err(invalid)?);
                    }
                }
                Payload::CodeSectionEntry(body) => m.bodies.push(body),
                Payload::CustomSection(c) => m.customs.push(c),
                Payload::TagSection(_) => return Err(unsupported("tags")),
                _ => return Err(unsupported("sections of a component")),
            }
        }
        Ok(m)
    }

    fn func_canon(&self, func: u32) -> u32 {
        self.canon[self.func_types[func as usize] as usize]
    }

    /// The table an active element segment initializes.
    fn active_table(element: &Element<'_>) -> Option<u32> {
        match &element.kind {
            ElementKind::Active { table_index, .. } => Some(table_index.unwrap_or(0)),
            _ => None,
        }
    }

    /// Evaluates a constant offset expression, if it depends on nothing outside the module.
    fn eval(&self, expr: &ConstExpr<'_>, depth: u32) -> Option<u64> {
        // Values are kept as u64: i32 results zero-extended, as offsets are unsigned.
        let mut stack: Vec<u64> = Vec::new();
        let mut ops = expr.get_operators_reader();
        while !ops.eof() {
            let op = ops.read().ok()?;
            let binary = |stack: &mut Vec<u64>, f: fn(u64, u64) -> u64| -> Option<()> {
                let b = stack.pop()?;
                let a = stack.pop()?;
                stack.push(f(a, b));
                Some(())
            };
            match op {
                Operator::I32Const { value } => stack.push(u64::from(value as u32)),
                Operator::I64Const { value } => stack.push(value as u64),
                Operator::GlobalGet { global_index } if depth < 64 => {
                    let init = self.global_inits.get(global_index as usize)?.as_ref()?;
                    stack.push(self.eval(init, depth + 1)?);
                }
                Operator::I32Add => binary(&mut stack, |a, b| {
                    u64::from((a as u32).wrapping_add(b as u32))
                })?,
                Operator::I32Sub => binary(&mut stack, |a, b| {
                    u64::from((a as u32).wrapping_sub(b as u32))
                })?,
                Operator::I32Mul => binary(&mut stack, |a, b| {
                    u64::from((a as u32).wrapping_mul(b as u32))
                })?,
                Operator::I64Add => binary(&mut stack, u64::wrapping_add)?,
                Operator::I64Sub => binary(&mut stack, u64::wrapping_sub)?,
                Operator::I64Mul => binary(&mut stack, u64::wrapping_mul)?,
                Operator::End => break,
                _ => return None,
            }
        }
        match stack.as_slice() {
            [value] => Some(*value),
            _ => None,
        }
    }

    /// Whether an active element segment certainly fits its table at instantiation.
    fn element_fits(&self, element: &Element<'_>) -> bool {
        let ElementKind::Active {
            table_index,
            offset_expr,
        } = &element.kind
        else {
            return true;
        };
        let len = match &element.items {
            ElementItems::Functions(r) => r.count(),
            ElementItems::Expressions(_, r) => r.count(),
        };
        let size = self.tables[table_index.unwrap_or(0) as usize].initial;
        self.eval(offset_expr, 0)
            .is_some_and(|offset| u128::from(offset) + u128::from(len) <= u128::from(size))
    }

    /// Whether an active data segment certainly fits its memory at instantiation.
    fn data_fits(&self, data: &Data<'_>) -> bool {
        let DataKind::Active {
            memory_index,
            offset_expr,
        } = &data.kind
        else {
            return true;
        };
        let memory = &self.memories[*memory_index as usize];
        let size = u128::from(memory.initial) << memory.page_size_log2.unwrap_or(16);
        self.eval(offset_expr, 0)
            .is_some_and(|offset| u128::from(offset) + data.data.len() as u128 <= size)
    }
}

/// A function type's parameters and results.
type Signature = [Vec<wasm_encoder::ValType>; 2];

/// A function type's identity (its parameters and results, encoded) and its signature.
fn signature(params: &[ValType], results: &[ValType]) -> Result<(Vec<u8>, Signature)> {
    let mut key = Vec::new();
    let mut signature: Signature = Default::default();
    for (list, out) in [params, results].into_iter().zip(&mut signature) {
        (list.len() as u32).encode(&mut key);
        for ty in list {
            let ty = wasm_encoder::ValType::try_from(*ty)
                .map_err(|_| unsupported("typed function references"))?;
            ty.encode(&mut key);
            out.push(ty);
        }
    }
    Ok((key, signature))
}

/// The functions an element segment names, in order; `None` for entries that are not a
/// lone `ref.func` (`ref.null`, `global.get`).
fn element_funcs(element: &Element<'_>) -> Result<Vec<Option<u32>>> {
    match &element.items {
        ElementItems::Functions(list) => list
            .clone()
            .into_iter()
            .map(|f| f.map(Some).map_err(invalid))
            .collect(),
        ElementItems::Expressions(_, list) => list
            .clone()
            .into_iter()
            .map(|e| lone_ref_func(&e.map_err(invalid)?))
            .collect(),
    }
}

/// The one `ref.func` a constant expression consists of, if that is what it is.
fn lone_ref_func(expr: &ConstExpr<'_>) -> Result<Option<u32>> {
    let mut ops = expr.get_operators_reader();
    let first = ops.read().map_err(invalid)?;
    let second = ops.read().map_err(invalid)?;
    Ok(match (first, second) {
        (Operator::RefFunc { function_index }, Operator::End) if ops.eof() => Some(function_index),
        _ => None,
    })
}

/// What the kept exports can reach; computed to a fixed point by [`Reach::compute`].
struct Reach {
    funcs: Vec<bool>,
    /// Reached functions whose bodies are still to be scanned.
    work: Vec<u32>,
    tables: Vec<bool>,
    /// Tables read by something other than `call_indirect`: every function in them is reached.
    general: Vec<bool>,
    /// For each table, the (canonical) types kept code calls through it.
    indirect: Vec<BTreeSet<u32>>,
    memories: Vec<bool>,
    globals: Vec<bool>,
    elements: Vec<bool>,
    data: Vec<bool>,
    /// Canonical types named by kept code (`call_indirect`, block types).
    types: BTreeSet<u32>,
    /// Functions named by `ref.func` in kept bodies, which the output must declare.
    declared: BTreeSet<u32>,
    changed: bool,
}

impl Reach {
    fn compute(m: &Module<'_>, keep: &[&str]) -> Result<Reach> {
        let mut r = Reach {
            funcs: vec![false; m.func_types.len()],
            work: Vec::new(),
            tables: vec![false; m.tables.len()],
            general: vec![false; m.tables.len()],
            indirect: vec![BTreeSet::new(); m.tables.len()],
            memories: vec![false; m.memories.len()],
            globals: vec![false; m.globals.len()],
            elements: vec![false; m.elements.len()],
            data: vec![false; m.data.len()],
            types: BTreeSet::new(),
            declared: BTreeSet::new(),
            changed: false,
        };

        for export in m.exports.iter().filter(|e| keep.contains(&e.name)) {
            match export.kind {
                ExternalKind::Func | ExternalKind::FuncExact => r.func(export.index),
                // The host can read an exported table, so all of it is reachable.
                ExternalKind::Table => r.table(export.index, true),
                ExternalKind::Memory => r.memory(export.index),
                ExternalKind::Global => r.global(export.index),
                ExternalKind::Tag => return Err(unsupported("tags")),
            }
        }
        if let Some(start) = m.start {
            r.func(start);
        }
        // Segments that might trap at instantiation stay, so that the shaken module fails to
        // instantiate exactly when the original does.
        for (i, element) in m.elements.iter().enumerate() {
            if !m.element_fits(element) {
                r.element(i as u32);
            }
        }
        for data in &m.data {
            if let DataKind::Active { memory_index, .. } = data.kind
                && !m.data_fits(data)
            {
                r.memory(memory_index);
            }
        }

        loop {
            r.changed = false;
            while let Some(f) = r.work.pop() {
                if f >= m.imported_funcs {
                    r.scan_body(m, &m.bodies[(f - m.imported_funcs) as usize])?;
                }
            }
            for g in 0..m.globals.len() {
                if let (true, Some(init)) = (r.globals[g], &m.global_inits[g]) {
                    r.scan_const(init)?;
                }
            }
            for t in 0..m.tables.len() {
                if let (true, Some(init)) = (r.tables[t], &m.table_inits[t]) {
                    r.scan_const(init)?;
                }
            }
            for (i, element) in m.elements.iter().enumerate() {
                r.scan_element(m, i as u32, element)?;
            }
            if r.memories.iter().any(|&kept| kept) {
                for d in 0..m.data.len() {
                    r.data(d as u32);
                }
            }
            for (d, data) in m.data.iter().enumerate() {
                if let (
                    true,
                    DataKind::Active {
                        memory_index,
                        offset_expr,
                    },
                ) = (r.data[d], &data.kind)
                {
                    r.memory(*memory_index);
                    r.scan_const(offset_expr)?;
                }
            }
            if !r.changed && r.work.is_empty() {
                return Ok(r);
            }
        }
    }

    fn func(&mut self, f: u32) {
        if !self.funcs[f as usize] {
            self.funcs[f as usize] = true;
            self.work.push(f);
            self.changed = true;
        }
    }

    fn table(&mut self, t: u32, general: bool) {
        let t = t as usize;
        if !self.tables[t] || (general && !self.general[t]) {
            self.tables[t] = true;
            self.general[t] |= general;
            self.changed = true;
        }
    }

    fn memory(&mut self, m: u32) {
        set(&mut self.memories, m, &mut self.changed);
    }

    fn global(&mut self, g: u32) {
        set(&mut self.globals, g, &mut self.changed);
    }

    fn element(&mut self, e: u32) {
        set(&mut self.elements, e, &mut self.changed);
    }

    fn data(&mut self, d: u32) {
        set(&mut self.data, d, &mut self.changed);
    }

    fn scan_body(&mut self, m: &Module<'_>, body: &FunctionBody<'_>) -> Result<()> {
        // Locals have value types only: without typed function references they name nothing.
        let mut ops = body.get_operators_reader().map_err(invalid)?;
        while !ops.eof() {
            match ops.read().map_err(invalid)? {
                Operator::CallIndirect {
                    type_index,
                    table_index,
                }
                | Operator::ReturnCallIndirect {
                    type_index,
                    table_index,
                } => {
                    let ty = m.canon[type_index as usize];
                    self.types.insert(ty);
                    self.table(table_index, false);
                    if self.indirect[table_index as usize].insert(ty) {
                        self.changed = true;
                    }
                }
                // The size of a table says nothing about what is in it.
                Operator::TableSize { table } => self.table(table, false),
                Operator::RefFunc { function_index } => {
                    self.func(function_index);
                    self.declared.insert(function_index);
                }
                // Everything else is scanned through the re-encoder's index hooks, so an
                // index of any kind in any instruction is recorded: a call reaches its
                // function, any other table access makes the table general, and so on.
                op => {
                    Recorder {
                        reach: self,
                        canon: &m.canon,
                    }
                    .instruction(op)
                    .map_err(invalid)?;
                }
            }
        }
        Ok(())
    }

    fn scan_const(&mut self, expr: &ConstExpr<'_>) -> Result<()> {
        Recorder {
            reach: self,
            canon: &[],
        }
        .const_expr(expr.clone())
        .map_err(invalid)?;
        Ok(())
    }

    fn scan_element(&mut self, m: &Module<'_>, index: u32, element: &Element<'_>) -> Result<()> {
        let table = Module::active_table(element);
        if let Some(t) = table
            && self.tables[t as usize]
        {
            self.element(index);
        }
        if !self.elements[index as usize] {
            return Ok(());
        }
        if let ElementKind::Active {
            table_index,
            offset_expr,
        } = &element.kind
        {
            self.table(table_index.unwrap_or(0), false);
            self.scan_const(offset_expr)?;
        }
        // Entries of an active segment are reached only through their table; those of a kept
        // passive or declarative segment (named by `table.init` or `elem.drop`) all are.
        let wanted = |r: &Reach, f: u32| match table {
            Some(t) => r.general[t as usize] || r.indirect[t as usize].contains(&m.func_canon(f)),
            None => true,
        };
        match &element.items {
            ElementItems::Functions(funcs) => {
                for f in funcs.clone() {
                    let f = f.map_err(invalid)?;
                    if wanted(self, f) {
                        self.func(f);
                    }
                }
            }
            ElementItems::Expressions(_, exprs) => {
                for expr in exprs.clone() {
                    let expr = expr.map_err(invalid)?;
                    match lone_ref_func(&expr)? {
                        Some(f) => {
                            if wanted(self, f) {
                                self.func(f);
                            }
                        }
                        None => self.scan_const(&expr)?,
                    }
                }
            }
        }
        Ok(())
    }
}

fn set(kept: &mut [bool], index: u32, changed: &mut bool) {
    if !kept[index as usize] {
        kept[index as usize] = true;
        *changed = true;
    }
}

/// Records every index an instruction or constant expression names into a [`Reach`].
struct Recorder<'r> {
    reach: &'r mut Reach,
    canon: &'r [u32],
}

impl Reencode for Recorder<'_> {
    type Error = Infallible;

    fn function_index(&mut self, f: u32) -> Result<u32, reencode::Error<Infallible>> {
        self.reach.func(f);
        Ok(f)
    }

    fn table_index(&mut self, t: u32) -> Result<u32, reencode::Error<Infallible>> {
        self.reach.table(t, true);
        Ok(t)
    }

    fn memory_index(&mut self, m: u32) -> Result<u32, reencode::Error<Infallible>> {
        self.reach.memory(m);
        Ok(m)
    }

    fn global_index(&mut self, g: u32) -> Result<u32, reencode::Error<Infallible>> {
        self.reach.global(g);
        Ok(g)
    }

    fn element_index(&mut self, e: u32) -> Result<u32, reencode::Error<Infallible>> {
        self.reach.element(e);
        Ok(e)
    }

    fn data_index(&mut self, d: u32) -> Result<u32, reencode::Error<Infallible>> {
        self.reach.data(d);
        Ok(d)
    }

    fn type_index(&mut self, t: u32) -> Result<u32, reencode::Error<Infallible>> {
        // Constant expressions name no types without GC; only bodies get here.
        if let Some(&c) = self.canon.get(t as usize) {
            self.reach.types.insert(c);
        }
        Ok(t)
    }
}

/// An index the analysis did not keep: a bug in [`Reach`], reported rather than encoded.
#[derive(Debug)]
struct Unkept {
    space: &'static str,
    index: u32,
}

impl fmt::Display for Unkept {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} was not kept", self.space, self.index)
    }
}

/// Renumbers every index into the kept items' new index spaces.
struct Renumber {
    funcs: Vec<Option<u32>>,
    types: Vec<Option<u32>>,
    tables: Vec<Option<u32>>,
    memories: Vec<Option<u32>>,
    globals: Vec<Option<u32>>,
    elements: Vec<Option<u32>>,
    data: Vec<Option<u32>>,
}

fn lookup(
    map: &[Option<u32>],
    space: &'static str,
    index: u32,
) -> Result<u32, reencode::Error<Unkept>> {
    map.get(index as usize)
        .copied()
        .flatten()
        .ok_or(reencode::Error::UserError(Unkept { space, index }))
}

impl Reencode for Renumber {
    type Error = Unkept;

    fn function_index(&mut self, f: u32) -> Result<u32, reencode::Error<Unkept>> {
        lookup(&self.funcs, "function", f)
    }

    fn type_index(&mut self, t: u32) -> Result<u32, reencode::Error<Unkept>> {
        lookup(&self.types, "type", t)
    }

    fn table_index(&mut self, t: u32) -> Result<u32, reencode::Error<Unkept>> {
        lookup(&self.tables, "table", t)
    }

    fn memory_index(&mut self, m: u32) -> Result<u32, reencode::Error<Unkept>> {
        lookup(&self.memories, "memory", m)
    }

    fn global_index(&mut self, g: u32) -> Result<u32, reencode::Error<Unkept>> {
        lookup(&self.globals, "global", g)
    }

    fn element_index(&mut self, e: u32) -> Result<u32, reencode::Error<Unkept>> {
        lookup(&self.elements, "element segment", e)
    }

    fn data_index(&mut self, d: u32) -> Result<u32, reencode::Error<Unkept>> {
        lookup(&self.data, "data segment", d)
    }
}

/// Dense new indices for the kept items of one index space, in their original order.
fn renumber(kept: &[bool]) -> (Vec<Option<u32>>, u32) {
    let mut next = 0;
    let map = kept
        .iter()
        .map(|&k| {
            k.then(|| {
                next += 1;
                next - 1
            })
        })
        .collect();
    (map, next)
}

fn bug(e: reencode::Error<Unkept>) -> Error {
    Error::new(
        ErrorKind::InvalidModule,
        format!("cannot shake the module (a bug in wasmpickle): {e}"),
    )
}

/// Writes the shaken module.
fn emit(m: &Module<'_>, r: &Reach, keep: &[&str]) -> Result<Vec<u8>> {
    let (funcs, kept_funcs) = renumber(&r.funcs);
    let (tables, _) = renumber(&r.tables);
    let (memories, _) = renumber(&r.memories);
    let (globals, _) = renumber(&r.globals);
    let (mut elements, kept_elements) = renumber(&r.elements);
    let (data, kept_data) = renumber(&r.data);

    // Stubs for the entries of kept active segments whose functions are not reached.
    let mut stub_types: BTreeSet<u32> = BTreeSet::new();
    for (i, element) in m.elements.iter().enumerate() {
        if !r.elements[i] || Module::active_table(element).is_none() {
            continue;
        }
        for f in element_funcs(element)?.into_iter().flatten() {
            if !r.funcs[f as usize] {
                stub_types.insert(m.func_canon(f));
            }
        }
    }

    // Types: those in use, one per structure, sorted by their encoding.
    let mut used: BTreeSet<u32> = r.types.clone();
    used.extend(stub_types.iter().copied());
    used.extend(
        (0..m.func_types.len() as u32)
            .filter(|&f| r.funcs[f as usize])
            .map(|f| m.func_canon(f)),
    );
    let mut by_key: Vec<u32> = used.into_iter().collect();
    by_key.sort_by(|a, b| m.type_keys[*a as usize].cmp(&m.type_keys[*b as usize]));
    let new_type: BTreeMap<u32, u32> = by_key
        .iter()
        .enumerate()
        .map(|(i, &c)| (c, i as u32))
        .collect();
    let types: Vec<Option<u32>> = m.canon.iter().map(|c| new_type.get(c).copied()).collect();

    // Stubs follow the kept functions, in type order.
    let mut stubs: Vec<u32> = stub_types.iter().map(|c| new_type[c]).collect();
    stubs.sort_unstable();
    let stub_index: BTreeMap<u32, u32> = stubs
        .iter()
        .enumerate()
        .map(|(i, &t)| (t, kept_funcs + i as u32))
        .collect();
    let stub_for = |f: u32| stub_index[&new_type[&m.func_canon(f)]];

    // `ref.func` in kept bodies needs its function declared; one declarative segment, last.
    let mut declare = Vec::new();
    for &f in &r.declared {
        declare.push(lookup(&funcs, "function", f).map_err(bug)?);
    }
    if !declare.is_empty() {
        elements.push(Some(kept_elements));
    }

    let mut rn = Renumber {
        funcs,
        types,
        tables,
        memories,
        globals,
        elements,
        data,
    };
    let mut module = wasm_encoder::Module::new();

    let mut section = wasm_encoder::TypeSection::new();
    for &c in &by_key {
        let [params, results] = &m.signatures[c as usize];
        section
            .ty()
            .function(params.iter().copied(), results.iter().copied());
    }
    push(&mut module, &section, section.is_empty());

    let mut section = wasm_encoder::ImportSection::new();
    for (import, index) in &m.imports {
        let kept = match import.ty {
            TypeRef::Func(_) | TypeRef::FuncExact(_) => r.funcs[*index as usize],
            TypeRef::Table(_) => r.tables[*index as usize],
            TypeRef::Memory(_) => r.memories[*index as usize],
            TypeRef::Global(_) => r.globals[*index as usize],
            TypeRef::Tag(_) => false,
        };
        if kept {
            section.import(
                import.module,
                import.name,
                rn.entity_type(import.ty).map_err(bug)?,
            );
        }
    }
    push(&mut module, &section, section.is_empty());

    let mut section = wasm_encoder::FunctionSection::new();
    for f in m.imported_funcs..m.func_types.len() as u32 {
        if r.funcs[f as usize] {
            section.function(rn.type_index(m.func_types[f as usize]).map_err(bug)?);
        }
    }
    for &t in &stubs {
        section.function(t);
    }
    push(&mut module, &section, section.is_empty());

    let mut section = wasm_encoder::TableSection::new();
    for t in m.imported_tables as usize..m.tables.len() {
        if r.tables[t] {
            let ty = rn.table_type(m.tables[t]).map_err(bug)?;
            match &m.table_inits[t] {
                None => section.table(ty),
                Some(init) => {
                    section.table_with_init(ty, &rn.const_expr(init.clone()).map_err(bug)?)
                }
            };
        }
    }
    push(&mut module, &section, section.is_empty());

    let mut section = wasm_encoder::MemorySection::new();
    for i in m.imported_memories as usize..m.memories.len() {
        if r.memories[i] {
            section.memory(rn.memory_type(m.memories[i]).map_err(bug)?);
        }
    }
    push(&mut module, &section, section.is_empty());

    let mut section = wasm_encoder::GlobalSection::new();
    for g in m.imported_globals as usize..m.globals.len() {
        if let (true, Some(init)) = (r.globals[g], &m.global_inits[g]) {
            section.global(
                rn.global_type(m.globals[g]).map_err(bug)?,
                &rn.const_expr(init.clone()).map_err(bug)?,
            );
        }
    }
    push(&mut module, &section, section.is_empty());

    let mut section = wasm_encoder::ExportSection::new();
    for export in m.exports.iter().filter(|e| keep.contains(&e.name)) {
        section.export(
            export.name,
            rn.export_kind(export.kind).map_err(bug)?,
            rn.external_index(export.kind, export.index).map_err(bug)?,
        );
    }
    push(&mut module, &section, section.is_empty());

    if let Some(start) = m.start {
        module.section(&wasm_encoder::StartSection {
            function_index: rn.function_index(start).map_err(bug)?,
        });
    }

    let mut section = wasm_encoder::ElementSection::new();
    for (i, element) in m.elements.iter().enumerate() {
        if !r.elements[i] {
            continue;
        }
        let active = Module::active_table(element).is_some();
        // An unreached entry of an active segment becomes its type's stub; in other kept
        // segments every entry was reached.
        let entry = |funcs: &[Option<u32>], f: u32| -> Result<u32> {
            match (funcs[f as usize], active) {
                (Some(new), _) => Ok(new),
                (None, true) => Ok(stub_for(f)),
                (None, false) => lookup(funcs, "function", f).map_err(bug),
            }
        };
        let items = match &element.items {
            ElementItems::Functions(list) => {
                let mut out = Vec::new();
                for f in list.clone() {
                    out.push(entry(&rn.funcs, f.map_err(invalid)?)?);
                }
                wasm_encoder::Elements::Functions(Cow::Owned(out))
            }
            ElementItems::Expressions(ty, list) => {
                let mut out = Vec::new();
                for expr in list.clone() {
                    let expr = expr.map_err(invalid)?;
                    out.push(match lone_ref_func(&expr)? {
                        Some(f) => wasm_encoder::ConstExpr::ref_func(entry(&rn.funcs, f)?),
                        None => rn.const_expr(expr).map_err(bug)?,
                    });
                }
                wasm_encoder::Elements::Expressions(rn.ref_type(*ty).map_err(bug)?, Cow::Owned(out))
            }
        };
        match &element.kind {
            ElementKind::Active {
                table_index,
                offset_expr,
            } => {
                // The encoding without a table index stays so when the table is still 0.
                let table = match (
                    table_index,
                    rn.table_index(table_index.unwrap_or(0)).map_err(bug)?,
                ) {
                    (None, 0) => None,
                    (_, n) => Some(n),
                };
                section.active(
                    table,
                    &rn.const_expr(offset_expr.clone()).map_err(bug)?,
                    items,
                )
            }
            ElementKind::Passive => section.passive(items),
            ElementKind::Declared => section.declared(items),
        };
    }
    if !declare.is_empty() {
        section.declared(wasm_encoder::Elements::Functions(Cow::Owned(declare)));
    }
    push(&mut module, &section, section.is_empty());

    if m.data_count && kept_data > 0 {
        module.section(&wasm_encoder::DataCountSection { count: kept_data });
    }

    let mut section = wasm_encoder::CodeSection::new();
    for (i, body) in m.bodies.iter().enumerate() {
        if r.funcs[m.imported_funcs as usize + i] {
            rn.parse_function_body(&mut section, body.clone())
                .map_err(bug)?;
        }
    }
    for _ in &stubs {
        let mut stub = wasm_encoder::Function::new([]);
        stub.instruction(&Instruction::Unreachable)
            .instruction(&Instruction::End);
        section.function(&stub);
    }
    push(&mut module, &section, section.is_empty());

    let mut section = wasm_encoder::DataSection::new();
    for (i, data) in m.data.iter().enumerate() {
        if r.data[i] {
            rn.parse_data(&mut section, data.clone()).map_err(bug)?;
        }
    }
    push(&mut module, &section, section.is_empty());

    for custom in m.customs.iter().filter(|c| !is_unhashed(c.name())) {
        module.section(&wasm_encoder::CustomSection {
            name: Cow::Borrowed(custom.name()),
            data: Cow::Borrowed(custom.data()),
        });
    }
    Ok(module.finish())
}

fn push(module: &mut wasm_encoder::Module, section: &impl wasm_encoder::Section, empty: bool) {
    if !empty {
        module.section(section);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wat(src: &str) -> Vec<u8> {
        wat::parse_str(src).unwrap()
    }

    /// What a shaken module holds, for assertions.
    #[derive(Debug, Default)]
    struct Summary {
        types: usize,
        imports: Vec<String>,
        /// Defined functions, each as its body's operators (without the final `end`).
        bodies: Vec<String>,
        globals: usize,
        tables: usize,
        memories: usize,
        exports: Vec<String>,
        start: bool,
        /// Active segments as their function indices; passive and declarative ones too.
        elements: Vec<Vec<u32>>,
        data: usize,
        customs: Vec<String>,
    }

    fn summary(wasm: &[u8]) -> Summary {
        Validator::new_with_features(features())
            .validate_all(wasm)
            .expect("shaken modules validate");
        let mut s = Summary::default();
        for payload in Parser::new(0).parse_all(wasm) {
            match payload.unwrap() {
                Payload::TypeSection(r) => s.types = r.count() as usize,
                Payload::ImportSection(r) => {
                    for i in r.into_imports() {
                        let i = i.unwrap();
                        s.imports.push(format!("{}.{}", i.module, i.name));
                    }
                }
                Payload::GlobalSection(r) => s.globals = r.count() as usize,
                Payload::TableSection(r) => s.tables = r.count() as usize,
                Payload::MemorySection(r) => s.memories = r.count() as usize,
                Payload::ExportSection(r) => {
                    for e in r {
                        s.exports.push(e.unwrap().name.to_owned());
                    }
                }
                Payload::StartSection { .. } => s.start = true,
                Payload::ElementSection(r) => {
                    for e in r {
                        let funcs = element_funcs(&e.unwrap()).unwrap();
                        s.elements
                            .push(funcs.into_iter().map(|f| f.unwrap_or(u32::MAX)).collect());
                    }
                }
                Payload::DataSection(r) => s.data = r.count() as usize,
                Payload::CodeSectionEntry(body) => {
                    let mut ops = body.get_operators_reader().unwrap();
                    let mut text = Vec::new();
                    while !ops.eof() {
                        text.push(format!("{:?}", ops.read().unwrap()));
                    }
                    text.pop();
                    s.bodies.push(text.join(" "));
                }
                Payload::CustomSection(c) => s.customs.push(c.name().to_owned()),
                _ => {}
            }
        }
        s
    }

    fn version(src: &str, export: &str) -> CodeHash {
        export_version(&wat(src), export).unwrap()
    }

    #[test]
    fn direct_calls_are_followed_and_nothing_else_is_kept() {
        let m = wat(r#"(module
            (func $f (result i32) i32.const 1)
            (func $g (result i32) i32.const 2)
            (func $h (result i32) call $f)
            (func (export "a") (result i32) call $h)
            (func (export "b") (result i32) call $g))"#);
        let s = summary(&shake(&m, &["a"]).unwrap());
        assert_eq!(s.exports, ["a"]);
        assert_eq!(s.types, 1);
        // f, h, a, renumbered densely in their original order.
        assert_eq!(
            s.bodies,
            [
                "I32Const { value: 1 }",
                "Call { function_index: 0 }",
                "Call { function_index: 1 }"
            ]
        );
        let s = summary(&shake(&m, &["a", "b"]).unwrap());
        assert_eq!(s.bodies.len(), 5);
    }

    #[test]
    fn tail_calls_are_followed() {
        let m = wat(r#"(module
            (func $f (result i32) i32.const 1)
            (func (export "a") (result i32) return_call $f))"#);
        assert_eq!(summary(&shake(&m, &["a"]).unwrap()).bodies.len(), 2);
    }

    const TABLE: &str = r#"(module
        (type $unary (func (param i32) (result i32)))
        (type $unary2 (func (param i32) (result i32)))
        (type $nullary (func (result i32)))
        (table 8 funcref)
        (elem (i32.const 2) $inc $zero $dec $zero2)
        (func $inc (type $unary) local.get 0 i32.const 1 i32.add)
        (func $zero (type $nullary) i32.const 0)
        (func $dec (type $unary2) local.get 0 i32.const 1 i32.sub)
        (func $zero2 (type $nullary) i32.const 0)
        (func (export "call") (param i32 i32) (result i32)
            local.get 0
            local.get 1
            call_indirect (type $unary))
        (func (export "size") (result i32) table.size 0)
        (func (export "get") (param i32) (result funcref) local.get 0 table.get 0))"#;

    #[test]
    fn call_indirect_reaches_only_functions_of_its_type_and_stubs_the_rest() {
        let s = summary(&shake(&wat(TABLE), &["call"]).unwrap());
        // $inc and $dec (structurally the same type as $unary), `call`, and one stub for
        // $nullary standing in for both $zero and $zero2.
        assert_eq!(s.types, 3, "unary, nullary and (i32, i32) -> i32");
        assert_eq!(s.bodies.len(), 4);
        assert_eq!(s.bodies[3], "Unreachable");
        assert_eq!(s.tables, 1);
        // Same offset and length; the stub (function 3) in both nullary slots.
        assert_eq!(s.elements, [vec![0, 3, 1, 3]]);
    }

    #[test]
    fn table_size_keeps_the_table_but_reaches_nothing() {
        let s = summary(&shake(&wat(TABLE), &["size"]).unwrap());
        assert_eq!(s.tables, 1);
        // `size` and the two stubs, in type order: () -> i32 sorts before (i32) -> i32.
        assert_eq!(s.bodies.len(), 3);
        assert_eq!(s.elements, [vec![2, 1, 2, 1]]);
    }

    #[test]
    fn reading_a_table_reaches_everything_in_it() {
        let s = summary(&shake(&wat(TABLE), &["get"]).unwrap());
        assert_eq!(s.bodies.len(), 5, "all four functions and `get`, no stub");
        assert_eq!(s.elements, [vec![0, 1, 2, 3]]);
    }

    #[test]
    fn functions_used_only_elsewhere_and_an_unused_table_are_dropped() {
        let m = wat(r#"(module
            (table 4 funcref)
            (elem (i32.const 0) $f)
            (func $f)
            (func (export "a") (result i32) i32.const 7))"#);
        let s = summary(&shake(&m, &["a"]).unwrap());
        assert_eq!((s.tables, s.bodies.len()), (0, 1));
        assert!(s.elements.is_empty());
    }

    #[test]
    fn a_segment_that_might_not_fit_stays_to_trap_the_same_way() {
        for offset in ["(i32.const 3)", "(global.get $imported)"] {
            let m = wat(&format!(
                r#"(module
                    (global $imported (import "env" "g") i32)
                    (table 4 funcref)
                    (elem {offset} $f $f)
                    (func $f)
                    (func (export "a")))"#
            ));
            let s = summary(&shake(&m, &["a"]).unwrap());
            assert_eq!(s.tables, 1, "{offset}");
            assert_eq!(s.elements.len(), 1, "{offset}");
        }
        let m = wat(r#"(module
            (memory 1)
            (data (i32.const 65535) "ab")
            (func (export "a")))"#);
        let s = summary(&shake(&m, &["a"]).unwrap());
        assert_eq!((s.memories, s.data), (1, 1));
        // Within bounds, it cannot trap, and goes with its unused memory.
        let m = wat(r#"(module
            (memory 1)
            (data (offset (i32.add (i32.const 65000) (i32.const 500))) "ab")
            (func (export "a")))"#);
        let s = summary(&shake(&m, &["a"]).unwrap());
        assert_eq!((s.memories, s.data), (0, 0));
    }

    #[test]
    fn every_data_segment_stays_with_the_memory() {
        let m = wat(r#"(module
            (global $base (import "env" "base") i32)
            (memory (export "memory") 1)
            (data (global.get $base) "used by nobody in particular")
            (data "passive")
            (func (export "a") (result i32) i32.const 0 i32.load))"#);
        let s = summary(&shake(&m, &["a"]).unwrap());
        assert_eq!((s.memories, s.data, s.imports.len()), (1, 2, 1));
        assert_eq!(
            s.exports,
            ["a"],
            "the memory's export is not kept unless asked for"
        );
    }

    #[test]
    fn segments_named_by_code_are_kept_whole() {
        let m = wat(r#"(module
            (table 4 funcref)
            (elem $passive func $f $g)
            (elem $unused func $h)
            (data $bytes "abc")
            (func $f)
            (func $g)
            (func $h)
            (func (export "init") (table.init $passive (i32.const 0) (i32.const 0) (i32.const 2)))
            (func (export "drop") (data.drop $bytes)))"#);
        let s = summary(&shake(&m, &["init"]).unwrap());
        // $f and $g (every entry of a segment code copies from) and `init`; no stub.
        assert_eq!((s.tables, s.bodies.len()), (1, 3));
        assert_eq!(s.elements, [vec![0, 1]]);
        // A passive data segment needs no memory.
        let s = summary(&shake(&m, &["drop"]).unwrap());
        assert_eq!((s.memories, s.data, s.bodies.len()), (0, 1, 1));
    }

    #[test]
    fn an_unreached_import_in_a_table_becomes_a_stub() {
        let m = wat(r#"(module
            (import "env" "f" (func $imported (param i64)))
            (table 1 funcref)
            (elem (i32.const 0) $imported)
            (func (export "a") (call_indirect (i32.const 0))))"#);
        let s = summary(&shake(&m, &["a"]).unwrap());
        assert!(s.imports.is_empty());
        assert_eq!(
            s.bodies,
            [
                "I32Const { value: 0 } CallIndirect { type_index: 0, table_index: 0 }",
                "Unreachable"
            ]
        );
        assert_eq!(s.elements, [vec![1]]);
    }

    #[test]
    fn globals_are_kept_when_used_and_renumbered() {
        let m = wat(r#"(module
            (global $base (import "env" "base") i32)
            (global $other (import "env" "other") i32)
            (global $unused (mut i32) (i32.const 1))
            (global $used (mut i32) (i32.add (global.get $base) (i32.const 2)))
            (global $exported (export "g") i32 (i32.const 5))
            (func (export "a") (result i32) global.get $used))"#);
        let s = summary(&shake(&m, &["a"]).unwrap());
        assert_eq!(
            s.imports,
            ["env.base"],
            "the global $used's initializer reads"
        );
        assert_eq!(s.globals, 1);
        assert_eq!(s.bodies, ["GlobalGet { global_index: 1 }"]);
        let s = summary(&shake(&m, &["g"]).unwrap());
        assert_eq!((s.imports.len(), s.globals, s.bodies.len()), (0, 1, 0));
    }

    #[test]
    fn the_start_function_is_a_root() {
        let m = wat(r#"(module
            (global $g (mut i32) (i32.const 0))
            (func $init i32.const 1 global.set $g)
            (start $init)
            (func (export "a") (result i32) i32.const 2))"#);
        let s = summary(&shake(&m, &["a"]).unwrap());
        assert!(s.start);
        assert_eq!((s.bodies.len(), s.globals), (2, 1));
    }

    #[test]
    fn unreached_imports_are_dropped() {
        let m = wat(r#"(module
            (import "env" "used" (func $used (result i32)))
            (import "env" "unused" (func $unused))
            (import "env" "mem" (memory 1))
            (func (export "a") (result i32) call $used))"#);
        let s = summary(&shake(&m, &["a"]).unwrap());
        assert_eq!(s.imports, ["env.used"]);
        assert_eq!(s.bodies, ["Call { function_index: 0 }"]);
    }

    #[test]
    fn ref_func_reaches_and_declares_its_function() {
        let m = wat(r#"(module
            (func $f (result i32) i32.const 3)
            (func $g)
            (elem declare func $f $g)
            (func (export "a") (result funcref) ref.func $f))"#);
        let s = summary(&shake(&m, &["a"]).unwrap());
        assert_eq!(s.bodies.len(), 2);
        assert_eq!(
            s.elements,
            [vec![0]],
            "one declarative segment, for $f only"
        );
    }

    #[test]
    fn build_only_custom_sections_go_and_unknown_ones_stay() {
        let m = wat(r#"(module
            (func (export "a"))
            (@custom "producers" "x")
            (@custom "wasmpickle.exports" "\c0")
            (@custom "mine" "y"))"#);
        assert_eq!(summary(&shake(&m, &["a"]).unwrap()).customs, ["mine"]);
    }

    #[test]
    fn versions_move_with_what_the_export_can_reach() {
        let base = r#"(module
            (type (func (result i32)))
            (func $helper (result i32) i32.const 1)
            (func $lonely (result i32) i32.const 2)
            (func (export "uses_helper") (result i32) call $helper)
            (func (export "uses_lonely") (result i32) call $lonely))"#;
        let helper_edited = base.replace("i32.const 1)", "i32.const 10)");
        let lonely_edited = base.replace("i32.const 2)", "i32.const 20)");
        // A new function with a new signature, reached by neither export, placed first so
        // that every function and type index after it moves.
        let new_signature = base.replace(
            "(type (func (result i32)))",
            "(type (func (param f64 f64) (result f64)))
             (func $extra (param f64 f64) (result f64) local.get 0)
             (type (func (result i32)))",
        );
        let v = |src: &str, export| version(src, export);
        assert_eq!(v(base, "uses_helper"), v(&lonely_edited, "uses_helper"));
        assert_ne!(v(base, "uses_helper"), v(&helper_edited, "uses_helper"));
        assert_eq!(v(base, "uses_lonely"), v(&helper_edited, "uses_lonely"));
        assert_ne!(v(base, "uses_lonely"), v(&lonely_edited, "uses_lonely"));
        assert_eq!(v(base, "uses_helper"), v(&new_signature, "uses_helper"));
        assert_eq!(v(base, "uses_lonely"), v(&new_signature, "uses_lonely"));
        // The whole module's hash moves with every edit.
        for edited in [&helper_edited, &lonely_edited, &new_signature] {
            assert_ne!(
                canonical_hash(&wat(base)).unwrap(),
                canonical_hash(&wat(edited)).unwrap()
            );
        }
    }

    #[test]
    fn a_version_covers_the_guest_contract_exports() {
        let src = r#"(module
            (memory (export "memory") 1)
            (global (export "wasmpickle_panic") i32 (i32.const 8))
            (func (export "wasmpickle_alloc") (param i32) (result i32) i32.const 1024)
            (func (export "f") (param i32 i32 i32 i32) (result i64) i64.const 0))"#;
        let alloc_edited = src.replace("i32.const 1024", "i32.const 2048");
        assert_ne!(version(src, "f"), version(&alloc_edited, "f"));
        // The version is the hash of a module that holds all of them.
        let shaken = shake(
            &wat(src),
            &["f", "memory", "wasmpickle_alloc", "wasmpickle_panic"],
        )
        .unwrap();
        assert_eq!(canonical_hash(&shaken).unwrap(), version(src, "f"));
        assert_eq!(summary(&shaken).exports.len(), 4);
    }

    #[test]
    fn shaking_is_deterministic_and_idempotent() {
        let m = wat(TABLE);
        let once = shake(&m, &["call", "size"]).unwrap();
        assert_eq!(once, shake(&m, &["call", "size"]).unwrap());
        let twice = shake(&once, &["call", "size"]).unwrap();
        assert_eq!(
            canonical_hash(&once).unwrap(),
            canonical_hash(&twice).unwrap()
        );
    }

    #[test]
    fn bad_input_and_missing_exports_are_errors() {
        assert_eq!(
            shake(b"\0asm\x01\0\0\0\x01", &[]).unwrap_err().kind(),
            ErrorKind::InvalidModule
        );
        assert_eq!(
            export_version(b"not wasm", "f").unwrap_err().kind(),
            ErrorKind::InvalidModule
        );
        let m = wat(r#"(module (func (export "a")))"#);
        let err = export_version(&m, "b").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::MissingExport);
        assert_eq!(err.export(), Some("b"));
        assert!(err.to_string().contains("`b`"), "{err}");
    }
}

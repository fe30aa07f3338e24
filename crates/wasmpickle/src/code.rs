//! Module bytes and their identity.
//!
//! # Why the hash is taken over a canonical form
//!
//! A module's address must depend on what it *does*, not on where or by whom it was built.
//! Compilers write custom sections that change with the build directory, the compiler
//! version or debug settings (`name`, `producers`, `.debug_*`, `target_features`), yet cannot
//! change what the module computes. So the [`CodeHash`] is the SHA-256 of the module
//! re-encoded with wasm-encoder's `Reencode` (function bodies copied verbatim), with those
//! sections and our own `wasmpickle.exports` descriptions dropped. The bytes that travel are
//! the original module, descriptions included. `docs/format.md` lists exactly which custom
//! sections are left out; any other custom section is kept and hashed, because some embedder
//! might give it meaning.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::fmt;
use std::path::Path;
use std::sync::{Arc, Mutex};

use serde::Serialize;
use wasm_encoder::reencode::{self, Reencode};
use wasmparser::{ExternalKind, Parser, Payload, TypeRef, ValType, Validator, WasmFeatures};
use wasmpickle_format::abi::{self, ExportDescription};
use wasmpickle_format::{Closure, CodeHash, CodeRef};

use crate::error::{Error, ErrorKind, Result, encode_error};

/// Custom sections left out of the canonical form, besides every `.debug_*` section.
pub const UNHASHED_SECTIONS: &[&str] = &[
    "name",
    "producers",
    "target_features",
    "sourceMappingURL",
    "external_debug_info",
    "build_id",
    abi::EXPORTS_SECTION,
    crate::seal::SEALED_SECTION,
];

pub(crate) fn is_unhashed(name: &str) -> bool {
    name.starts_with(".debug_") || UNHASHED_SECTIONS.contains(&name)
}

/// A WebAssembly module with its [`CodeHash`] and what it exports and imports.
///
/// Cheap to clone (the bytes are shared). Making one parses and validates the module, so a
/// `Code` is known to be well-formed WebAssembly; whether the sandbox accepts it (imports,
/// limits) is decided by the [`Runtime`](crate::Runtime).
#[derive(Clone)]
pub struct Code {
    inner: Arc<Inner>,
}

struct Inner {
    hash: CodeHash,
    wasm: Arc<[u8]>,
    exports: Vec<Export>,
    imports: Vec<Import>,
    descriptions: Vec<ExportDescription>,
    /// Export versions computed so far (see [`Code::export_version`]).
    versions: Mutex<BTreeMap<String, CodeHash>>,
}

/// One export of a module.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Export {
    /// The export's name.
    pub name: String,
    /// What it exports: `func`, `memory`, `global`, `table` or `tag`.
    pub kind: &'static str,
    /// For functions, the core wasm signature, e.g. `(i32, i32, i32, i32) -> i64`.
    pub signature: Option<String>,
    /// True for functions of the pickled signature (see `docs/abi.md`).
    pub pickled: bool,
}

/// One import of a module.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Import {
    /// The import's module name.
    pub module: String,
    /// The import's field name.
    pub name: String,
    /// What it imports: `func`, `memory`, `global`, `table` or `tag`.
    pub kind: &'static str,
    /// For functions, the core wasm signature.
    pub signature: Option<String>,
}

impl fmt::Display for Import {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{} ({})", self.module, self.name, self.kind)
    }
}

impl Code {
    /// Parses, validates and hashes a module.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidModule`] when the bytes are not a valid WebAssembly module under
    /// the feature set the sandbox enables.
    pub fn new(wasm: impl Into<Arc<[u8]>>) -> Result<Code> {
        let wasm = wasm.into();
        let (exports, imports, descriptions) = inspect(&wasm)?;
        let hash = canonical_hash(&wasm)?;
        Ok(Code {
            inner: Arc::new(Inner {
                hash,
                wasm,
                exports,
                imports,
                descriptions,
                versions: Mutex::default(),
            }),
        })
    }

    /// Reads a module from a file; see [`Code::new`].
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Io`] when the file cannot be read, otherwise as [`Code::new`].
    pub fn from_file(path: impl AsRef<Path>) -> Result<Code> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|e| {
            Error::new(ErrorKind::Io, format!("cannot read {}", path.display())).with_source(e)
        })?;
        Code::new(bytes)
            .map_err(|e| Error::new(e.kind(), format!("module {}", path.display())).with_source(e))
    }

    /// The module's address.
    pub fn hash(&self) -> CodeHash {
        self.inner.hash
    }

    /// The module's bytes, exactly as given.
    pub fn wasm(&self) -> &Arc<[u8]> {
        &self.inner.wasm
    }

    /// Every export, in module order.
    pub fn exports(&self) -> &[Export] {
        &self.inner.exports
    }

    /// Every import, in module order. A module for the default sandbox has none.
    pub fn imports(&self) -> &[Import] {
        &self.inner.imports
    }

    /// The descriptions the module carries for its exports (`docs/abi.md` §8).
    pub fn descriptions(&self) -> &[ExportDescription] {
        &self.inner.descriptions
    }

    /// The description of one export, if the module carries one.
    pub fn description(&self, export: &str) -> Option<&ExportDescription> {
        self.inner.descriptions.iter().find(|d| d.name == export)
    }

    /// The module's code as it travels inline in a pickle.
    pub fn code_ref(&self) -> CodeRef {
        CodeRef::inline(self.inner.hash, self.inner.wasm.clone())
            .expect("Code::new bounds the module size below the format's maximum")
    }

    /// A closure over `env` calling `export`, with the code inline.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::MissingExport`] or [`ErrorKind::WrongSignature`] when the module has no
    /// pickled export of that name, [`ErrorKind::Encode`] when `env` cannot be encoded.
    pub fn closure<E: Serialize + ?Sized>(&self, export: &str, env: &E) -> Result<Closure> {
        self.check_export(export)?;
        Closure::new(self.code_ref(), export, env).map_err(encode_error)
    }

    /// A closure calling an export that takes no environment (the environment is `nil`).
    ///
    /// # Errors
    ///
    /// As [`Code::closure`].
    pub fn function(&self, export: &str) -> Result<Closure> {
        self.closure(export, &())
    }

    /// Checks that `export` is a function of the pickled signature.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::MissingExport`] or [`ErrorKind::WrongSignature`].
    pub fn check_export(&self, export: &str) -> Result<()> {
        match self.inner.exports.iter().find(|e| e.name == export) {
            Some(e) if e.pickled => Ok(()),
            Some(e) => Err(Error::new(
                ErrorKind::WrongSignature,
                format!(
                    "export `{export}` of {} is {} {}, not a function (i32, i32, i32, i32) -> i64",
                    self.inner.hash,
                    e.kind,
                    e.signature.as_deref().unwrap_or("")
                ),
            )
            .with_code(self.inner.hash)
            .with_export(export)),
            None => Err(missing_export(
                self.inner.hash,
                export,
                self.pickled_exports(),
            )),
        }
    }

    /// The version of one export: the hash of this module shaken down to that export and
    /// everything it can reach (plus the guest contract's `memory` and allocator), so that it
    /// changes when any code the export can run changes and stays when only unreachable code
    /// does. What a memo of the export's results keys on; see [`export_version`] for what is
    /// and is not covered. Computed on first use and remembered.
    ///
    /// [`export_version`]: crate::export_version
    ///
    /// # Errors
    ///
    /// [`ErrorKind::MissingExport`] when the module has no export of that name (of any kind).
    pub fn export_version(&self, export: &str) -> Result<CodeHash> {
        let versions = || self.inner.versions.lock().expect("version cache poisoned");
        if let Some(version) = versions().get(export) {
            return Ok(*version);
        }
        if !self.inner.exports.iter().any(|e| e.name == export) {
            return Err(missing_export(
                self.inner.hash,
                export,
                self.pickled_exports(),
            ));
        }
        // Computed outside the lock: two threads may both compute it, with the same result.
        let version = crate::shake::export_version_valid(&self.inner.wasm, export)
            .map_err(|e| e.with_code(self.inner.hash).with_export(export))?;
        versions().insert(export.to_owned(), version);
        Ok(version)
    }

    /// The [version](Code::export_version) of every pickled export, in module order.
    ///
    /// # Errors
    ///
    /// As [`Code::export_version`]; not expected for a module `Code::new` accepted.
    pub fn export_versions(&self) -> Result<Vec<(String, CodeHash)>> {
        self.pickled_exports()
            .map(|name| Ok((name.to_owned(), self.export_version(name)?)))
            .collect()
    }

    fn pickled_exports(&self) -> impl Iterator<Item = &str> {
        self.inner
            .exports
            .iter()
            .filter(|e| e.pickled)
            .map(|e| e.name.as_str())
    }
}

impl fmt::Debug for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Code")
            .field("hash", &self.inner.hash)
            .field("len", &self.inner.wasm.len())
            .field("exports", &self.inner.exports.len())
            .field("imports", &self.inner.imports.len())
            .finish()
    }
}

pub(crate) fn missing_export<'a>(
    hash: CodeHash,
    export: &str,
    available: impl Iterator<Item = &'a str>,
) -> Error {
    let available: Vec<&str> = available.collect();
    Error::new(
        ErrorKind::MissingExport,
        format!(
            "module {hash} has no export `{export}` (pickled exports: {})",
            if available.is_empty() {
                "none".to_owned()
            } else {
                available.join(", ")
            }
        ),
    )
    .with_code(hash)
    .with_export(export)
}

/// The WebAssembly features a module may use: what wasmtime enables in this sandbox. Threads
/// and relaxed SIMD are left out because they make results machine-dependent; several
/// memories because the guest contract has exactly one.
pub(crate) fn features() -> WasmFeatures {
    // The WebAssembly 2.0 set plus what wasmtime 48 enables by default (extended constants,
    // tail calls), minus GC types (wasmtime is built without `gc`, so `externref` is refused)
    // and several memories. Memory64 and wide arithmetic are off in wasmtime by default.
    (WasmFeatures::WASM2 | WasmFeatures::EXTENDED_CONST | WasmFeatures::TAIL_CALL)
        - WasmFeatures::MULTI_MEMORY
        - WasmFeatures::GC_TYPES
}

fn invalid(e: impl fmt::Display) -> Error {
    // The parser's errors are not `Send + Sync + 'static` in every variant, so the text is
    // kept rather than the value.
    Error::new(
        ErrorKind::InvalidModule,
        format!("not a valid WebAssembly module: {e}"),
    )
}

/// The canonical hash of `wasm` (see the module docs). Does not validate.
///
/// # Errors
///
/// [`ErrorKind::InvalidModule`] when the bytes do not parse as a module.
pub fn canonical_hash(wasm: &[u8]) -> Result<CodeHash> {
    Ok(CodeHash::digest(&canonical_bytes(wasm)?))
}

/// The canonical form of `wasm` that [`canonical_hash`] hashes.
///
/// # Errors
///
/// [`ErrorKind::InvalidModule`] when the bytes do not parse as a module.
pub fn canonical_bytes(wasm: &[u8]) -> Result<Vec<u8>> {
    struct Canonical;
    impl Reencode for Canonical {
        type Error = Infallible;

        fn parse_custom_section(
            &mut self,
            module: &mut wasm_encoder::Module,
            section: wasmparser::CustomSectionReader<'_>,
        ) -> Result<(), reencode::Error<Infallible>> {
            if is_unhashed(section.name()) {
                return Ok(());
            }
            // Kept verbatim: its meaning is not ours to interpret.
            module.section(&wasm_encoder::CustomSection {
                name: Cow::Borrowed(section.name()),
                data: Cow::Borrowed(section.data()),
            });
            Ok(())
        }

        fn parse_function_body(
            &mut self,
            code: &mut wasm_encoder::CodeSection,
            func: wasmparser::FunctionBody<'_>,
        ) -> Result<(), reencode::Error<Infallible>> {
            // Bodies are most of a module; copying them verbatim keeps hashing cheap and
            // independent of how wasm-encoder would re-encode each instruction.
            code.raw(func.as_bytes());
            Ok(())
        }
    }
    let mut module = wasm_encoder::Module::new();
    Canonical
        .parse_core_module(&mut module, Parser::new(0), wasm)
        .map_err(invalid)?;
    Ok(module.finish())
}

type Inspected = (Vec<Export>, Vec<Import>, Vec<ExportDescription>);

/// Validates `wasm` and lists its exports, imports and export descriptions.
fn inspect(wasm: &[u8]) -> Result<Inspected> {
    let mut validator = Validator::new_with_features(features());
    let mut types: Vec<Option<(Vec<ValType>, Vec<ValType>)>> = Vec::new();
    let mut func_types: Vec<u32> = Vec::new();
    let mut exports = Vec::new();
    let mut imports = Vec::new();
    let mut descriptions = Vec::new();
    let mut raw_exports: Vec<(String, ExternalKind, u32)> = Vec::new();

    for payload in Parser::new(0).parse_all(wasm) {
        let payload = payload.map_err(invalid)?;
        // Validate first, so that what is read below is known to be well-formed.
        let end = match validator.payload(&payload).map_err(invalid)? {
            wasmparser::ValidPayload::Func(func, body) => {
                func.into_validator(Default::default())
                    .validate(&body)
                    .map_err(invalid)?;
                false
            }
            wasmparser::ValidPayload::End(_) => true,
            _ => false,
        };
        match &payload {
            Payload::TypeSection(s) => {
                for rec in s.clone() {
                    for ty in rec.map_err(invalid)?.types() {
                        types.push(match &ty.composite_type.inner {
                            wasmparser::CompositeInnerType::Func(f) => {
                                Some((f.params().to_vec(), f.results().to_vec()))
                            }
                            _ => None,
                        });
                    }
                }
            }
            Payload::ImportSection(s) => {
                for import in s.clone().into_imports() {
                    let import = import.map_err(invalid)?;
                    let (kind, signature) = match import.ty {
                        TypeRef::Func(t) | TypeRef::FuncExact(t) => {
                            func_types.push(t);
                            ("func", Some(signature_of(&types, t)))
                        }
                        TypeRef::Memory(_) => ("memory", None),
                        TypeRef::Global(_) => ("global", None),
                        TypeRef::Table(_) => ("table", None),
                        TypeRef::Tag(_) => ("tag", None),
                    };
                    imports.push(Import {
                        module: import.module.to_owned(),
                        name: import.name.to_owned(),
                        kind,
                        signature,
                    });
                }
            }
            Payload::FunctionSection(s) => {
                for t in s.clone() {
                    func_types.push(t.map_err(invalid)?);
                }
            }
            Payload::ExportSection(s) => {
                for e in s.clone() {
                    let e = e.map_err(invalid)?;
                    raw_exports.push((e.name.to_owned(), e.kind, e.index));
                }
            }
            Payload::CustomSection(c) if c.name() == abi::EXPORTS_SECTION => {
                // A description that does not decode is ignored rather than fatal: it cannot
                // change what the module does, only what tools show.
                if let Ok(mut d) = ExportDescription::parse_section(c.data()) {
                    descriptions.append(&mut d);
                }
            }
            _ => {}
        }
        if end {
            break;
        }
    }

    for (name, kind, index) in raw_exports {
        let (kind, signature, pickled) = match kind {
            ExternalKind::Func | ExternalKind::FuncExact => {
                let ty = func_types.get(index as usize).copied();
                let pickled = ty
                    .and_then(|t| types.get(t as usize).cloned().flatten())
                    .is_some_and(|(p, r)| p == [ValType::I32; 4] && r == [ValType::I64]);
                ("func", ty.map(|t| signature_of(&types, t)), pickled)
            }
            ExternalKind::Memory => ("memory", None, false),
            ExternalKind::Global => ("global", None, false),
            ExternalKind::Table => ("table", None, false),
            ExternalKind::Tag => ("tag", None, false),
        };
        exports.push(Export {
            name,
            kind,
            signature,
            pickled,
        });
    }
    Ok((exports, imports, descriptions))
}

fn signature_of(types: &[Option<(Vec<ValType>, Vec<ValType>)>], index: u32) -> String {
    match types.get(index as usize) {
        Some(Some((params, results))) => {
            let list = |v: &[ValType]| {
                v.iter()
                    .map(|t| t.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            match results.as_slice() {
                [one] => format!("({}) -> {one}", list(params)),
                more => format!("({}) -> ({})", list(params), list(more)),
            }
        }
        _ => format!("type {index}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wat(src: &str) -> Vec<u8> {
        wat::parse_str(src).unwrap()
    }

    #[test]
    fn hash_ignores_names_and_descriptions_but_not_code() {
        let a = wat(r#"(module $a (func $f (export "f") (result i32) i32.const 1))"#);
        let b = wat(
            r#"(module $b (func $g (export "f") (result i32) i32.const 1)
                        (@custom "producers" "x") (@custom "wasmpickle.exports" "\c0"))"#,
        );
        let c = wat(r#"(module (func (export "f") (result i32) i32.const 2))"#);
        assert_ne!(a, b, "the raw bytes differ");
        assert_eq!(canonical_hash(&a).unwrap(), canonical_hash(&b).unwrap());
        assert_ne!(canonical_hash(&a).unwrap(), canonical_hash(&c).unwrap());
    }

    #[test]
    fn unknown_custom_sections_are_hashed() {
        let a = wat(r#"(module (@custom "mine" "1"))"#);
        let b = wat(r#"(module (@custom "mine" "2"))"#);
        assert_ne!(canonical_hash(&a).unwrap(), canonical_hash(&b).unwrap());
    }

    #[test]
    fn exports_and_imports_are_listed() {
        let code = Code::new(wat(r#"(module
                 (import "env" "secret" (func (param i32) (result i32)))
                 (memory (export "memory") 1)
                 (func (export "ok") (param i32 i32 i32 i32) (result i64) i64.const 0)
                 (func (export "bad") (param i32) (result i32) local.get 0))"#))
        .unwrap();
        assert_eq!(code.imports().len(), 1);
        assert_eq!(code.imports()[0].to_string(), "env.secret (func)");
        let ok = code.exports().iter().find(|e| e.name == "ok").unwrap();
        assert!(ok.pickled);
        assert_eq!(code.check_export("ok").ok(), Some(()));
        assert_eq!(
            code.check_export("bad").unwrap_err().kind(),
            ErrorKind::WrongSignature
        );
        assert_eq!(
            code.check_export("memory").unwrap_err().kind(),
            ErrorKind::WrongSignature
        );
        assert_eq!(
            code.check_export("nope").unwrap_err().kind(),
            ErrorKind::MissingExport
        );
    }

    #[test]
    fn invalid_modules_are_refused() {
        for bytes in [
            &b""[..],
            b"\0asm",
            b"\0asm\x02\0\0\0",
            b"not wasm at all",
            // a function whose body does not validate: i32.add on an empty stack
            &wat(r#"(module (func))"#)[..0],
        ] {
            assert_eq!(
                Code::new(bytes.to_vec()).unwrap_err().kind(),
                ErrorKind::InvalidModule,
                "{bytes:?}"
            );
        }
        let bad_body = wat(r#"(module (func (result i32) i32.const 1 i32.const 2))"#);
        // The text parser accepts it; the validator must not.
        assert_eq!(
            Code::new(bad_body).unwrap_err().kind(),
            ErrorKind::InvalidModule
        );
    }

    #[test]
    fn features_wasmtime_refuses_are_refused_early() {
        for src in [
            r#"(module (func (param externref)))"#,
            r#"(module (memory i64 1))"#,
        ] {
            assert_eq!(
                Code::new(wat(src)).unwrap_err().kind(),
                ErrorKind::InvalidModule,
                "{src}"
            );
        }
    }

    #[test]
    fn threads_are_refused() {
        let shared = wat(r#"(module (memory 1 1 shared))"#);
        assert_eq!(
            Code::new(shared).unwrap_err().kind(),
            ErrorKind::InvalidModule
        );
    }
}

//! Closures, calls, and the envelope they travel in.

use std::fmt;
use std::sync::Arc;

use serde::Serialize;

use crate::codec;
use crate::error::{Error, ErrorKind, Result};
use crate::hash::{CallId, CodeHash};
use crate::wire::{self, Reader, write};

/// The first four bytes of every pickle. `0xC1` is the one byte MessagePack never uses, so a
/// pickle cannot be mistaken for a bare MessagePack value, and `WPK` makes it recognizable in
/// a hex dump.
pub const MAGIC: [u8; 4] = [0xC1, b'W', b'P', b'K'];

/// The format version this build writes, and the newest it reads.
pub const FORMAT_VERSION: u16 = 1;

/// Bytes before the MessagePack body: magic, big-endian `u16` version, kind byte.
pub const HEADER_LEN: usize = 7;

/// The longest export name the format allows, in bytes.
pub const MAX_EXPORT_NAME: usize = 256;
/// The largest environment the format allows, in bytes.
pub const MAX_ENV_BYTES: usize = 64 << 20;
/// The largest argument payload the format allows, in bytes.
pub const MAX_ARGS_BYTES: usize = 64 << 20;
/// The largest inline module the format allows, in bytes.
pub const MAX_CODE_BYTES: usize = 256 << 20;

/// What a pickle holds; the byte after the version.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
#[non_exhaustive]
pub enum PickleKind {
    /// A [`Closure`]: code, export and environment.
    Closure = 1,
    /// A [`Call`]: a closure plus arguments and optional limits.
    Call = 2,
    /// A [`SignedCall`](crate::SignedCall): a call pickle and an HMAC over its bytes.
    SignedCall = 3,
}

impl PickleKind {
    fn from_u8(b: u8) -> Option<PickleKind> {
        match b {
            1 => Some(PickleKind::Closure),
            2 => Some(PickleKind::Call),
            3 => Some(PickleKind::SignedCall),
            _ => None,
        }
    }

    /// `"closure"` or `"call"`.
    pub fn as_str(self) -> &'static str {
        match self {
            PickleKind::Closure => "closure",
            PickleKind::Call => "call",
            PickleKind::SignedCall => "signed call",
        }
    }
}

impl fmt::Display for PickleKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The fixed-size start of a pickle, readable without decoding the rest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// The format version the pickle was written with.
    pub version: u16,
    /// What the pickle holds.
    pub kind: PickleKind,
}

impl Header {
    /// Reads and checks the header at the start of `bytes`.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::BadMagic`], [`ErrorKind::Truncated`],
    /// [`ErrorKind::UnsupportedVersion`] or [`ErrorKind::WrongKind`] (an unknown kind byte).
    pub fn read(bytes: &[u8]) -> Result<Header> {
        let n = bytes.len().min(MAGIC.len());
        if bytes[..n] != MAGIC[..n] {
            return Err(Error::new(
                ErrorKind::BadMagic,
                format!(
                    "not a wasmpickle pickle: starts with {:02x?}, expected {:02x?}",
                    &bytes[..n],
                    MAGIC
                ),
            ));
        }
        if bytes.len() < HEADER_LEN {
            return Err(Error::new(
                ErrorKind::Truncated,
                format!(
                    "pickle is {} bytes, shorter than its {HEADER_LEN}-byte header",
                    bytes.len()
                ),
            ));
        }
        let version = u16::from_be_bytes([bytes[4], bytes[5]]);
        if version == 0 || version > FORMAT_VERSION {
            return Err(Error::new(
                ErrorKind::UnsupportedVersion,
                format!(
                    "pickle format version {version} is not supported by this build \
                     (it reads versions 1 to {FORMAT_VERSION})"
                ),
            ));
        }
        let kind = PickleKind::from_u8(bytes[6]).ok_or_else(|| {
            Error::new(
                ErrorKind::WrongKind,
                format!("unknown pickle kind 0x{:02x}", bytes[6]),
            )
        })?;
        Ok(Header { version, kind })
    }

    pub(crate) fn write(kind: PickleKind, out: &mut Vec<u8>) {
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&FORMAT_VERSION.to_be_bytes());
        out.push(kind as u8);
    }
}

/// Tighter bounds for decoding input from an untrusted source. Every bound is checked before
/// anything is allocated for the field it bounds. The defaults are the format's own maxima.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecodeLimits {
    max_code: usize,
    max_env: usize,
    max_args: usize,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        DecodeLimits {
            max_code: MAX_CODE_BYTES,
            max_env: MAX_ENV_BYTES,
            max_args: MAX_ARGS_BYTES,
        }
    }
}

impl DecodeLimits {
    /// The format's own maxima.
    pub fn new() -> Self {
        Self::default()
    }

    /// Largest inline module accepted, in bytes (default and cap [`MAX_CODE_BYTES`]).
    pub fn max_code(&mut self, bytes: usize) -> &mut Self {
        self.max_code = bytes.min(MAX_CODE_BYTES);
        self
    }

    /// Largest environment accepted, in bytes (default and cap [`MAX_ENV_BYTES`]).
    pub fn max_env(&mut self, bytes: usize) -> &mut Self {
        self.max_env = bytes.min(MAX_ENV_BYTES);
        self
    }

    /// Largest argument payload accepted, in bytes (default and cap [`MAX_ARGS_BYTES`]).
    pub fn max_args(&mut self, bytes: usize) -> &mut Self {
        self.max_args = bytes.min(MAX_ARGS_BYTES);
        self
    }
}

/// Which module a closure runs: always its hash, and the module's bytes when the code travels
/// inline. A pickle that carries only the hash is resolved by the receiver (a code store, or a
/// module it already has).
#[derive(Clone, PartialEq, Eq)]
pub struct CodeRef {
    hash: CodeHash,
    wasm: Option<Arc<[u8]>>,
}

impl CodeRef {
    /// Code by hash alone.
    pub fn by_hash(hash: CodeHash) -> CodeRef {
        CodeRef { hash, wasm: None }
    }

    /// Code that travels with the pickle. The caller vouches that `hash` names `wasm`; the
    /// runtime checks it before compiling.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Oversize`] when the module exceeds [`MAX_CODE_BYTES`].
    pub fn inline(hash: CodeHash, wasm: Arc<[u8]>) -> Result<CodeRef> {
        check_len("module", wasm.len(), MAX_CODE_BYTES)?;
        Ok(CodeRef {
            hash,
            wasm: Some(wasm),
        })
    }

    /// The module's hash.
    pub fn hash(&self) -> CodeHash {
        self.hash
    }

    /// The module's bytes, if they travel inline.
    pub fn wasm(&self) -> Option<&Arc<[u8]>> {
        self.wasm.as_ref()
    }

    /// True when the module's bytes travel inline.
    pub fn is_inline(&self) -> bool {
        self.wasm.is_some()
    }

    fn encoded_len(&self, with_wasm: bool) -> usize {
        // map header + "sha256" + bin8(32) [+ "wasm" + bin(n)]
        let mut n = 1 + 7 + 2 + 32;
        if let (true, Some(w)) = (with_wasm, &self.wasm) {
            n += 5 + wire::header_len(w.len(), false) + w.len();
        }
        n
    }

    fn write(&self, out: &mut Vec<u8>, with_wasm: bool) {
        let wasm = self.wasm.as_ref().filter(|_| with_wasm);
        write::map_len(out, if wasm.is_some() { 2 } else { 1 });
        write::str(out, "sha256");
        write::bin(out, self.hash.as_bytes());
        if let Some(wasm) = wasm {
            write::str(out, "wasm");
            write::bin(out, wasm);
        }
    }

    fn read(r: &mut Reader<'_>, limits: &DecodeLimits) -> Result<CodeRef> {
        let at = r.position();
        let n = r.map_len("code")?;
        if !(1..=2).contains(&n) {
            return Err(Error::new(
                ErrorKind::Malformed,
                format!("code at offset {at} has {n} entries, expected 1 or 2"),
            ));
        }
        r.key("sha256", "code")?;
        let digest = r.bin("code.sha256", 32)?;
        let hash = CodeHash::from_bytes(digest.try_into().map_err(|_| {
            Error::new(
                ErrorKind::Malformed,
                format!("code.sha256 is {} bytes, expected 32", digest.len()),
            )
        })?);
        let wasm = if n == 2 {
            r.key("wasm", "code")?;
            Some(Arc::from(r.bin("code.wasm", limits.max_code)?))
        } else {
            None
        };
        Ok(CodeRef { hash, wasm })
    }
}

impl fmt::Debug for CodeRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.wasm {
            Some(w) => write!(f, "{} ({} bytes inline)", self.hash, w.len()),
            None => write!(f, "{} (by reference)", self.hash),
        }
    }
}

/// Limits a call asks for. Each is optional; a runtime honours a request only up to its own
/// caps, so a pickle can lower its budget but never raise it.
///
/// Limits are part of a call's identity: the fuel budget decides whether a call finishes,
/// so the same call with another budget is another call.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct CallLimits {
    fuel: Option<u64>,
    deadline_ms: Option<u64>,
    max_memory: Option<u64>,
    max_table_elements: Option<u64>,
}

impl CallLimits {
    /// No requests: the runtime's defaults apply.
    pub fn new() -> Self {
        Self::default()
    }

    /// Requests a fuel budget (WebAssembly instructions, roughly).
    pub fn with_fuel(mut self, fuel: u64) -> Self {
        self.fuel = Some(fuel);
        self
    }

    /// Requests a wall-clock deadline in milliseconds.
    pub fn with_deadline_ms(mut self, ms: u64) -> Self {
        self.deadline_ms = Some(ms);
        self
    }

    /// Requests a cap on linear memory, in bytes.
    pub fn with_max_memory(mut self, bytes: u64) -> Self {
        self.max_memory = Some(bytes);
        self
    }

    /// Requests a cap on table elements.
    pub fn with_max_table_elements(mut self, n: u64) -> Self {
        self.max_table_elements = Some(n);
        self
    }

    /// The requested fuel budget.
    pub fn fuel(&self) -> Option<u64> {
        self.fuel
    }

    /// The requested deadline in milliseconds.
    pub fn deadline_ms(&self) -> Option<u64> {
        self.deadline_ms
    }

    /// The requested memory cap in bytes.
    pub fn max_memory(&self) -> Option<u64> {
        self.max_memory
    }

    /// The requested table-element cap.
    pub fn max_table_elements(&self) -> Option<u64> {
        self.max_table_elements
    }

    /// True when nothing is requested.
    pub fn is_empty(&self) -> bool {
        self.fields().iter().all(|(_, v)| v.is_none())
    }

    fn fields(&self) -> [(&'static str, Option<u64>); 4] {
        [
            ("fuel", self.fuel),
            ("deadline_ms", self.deadline_ms),
            ("max_memory", self.max_memory),
            ("max_table_elements", self.max_table_elements),
        ]
    }

    fn write(&self, out: &mut Vec<u8>) {
        let present = self.fields().into_iter().filter(|(_, v)| v.is_some());
        write::map_len(out, present.clone().count() as u32);
        for (k, v) in present {
            write::str(out, k);
            write::uint(out, v.expect("filtered to present values"));
        }
    }

    fn read(r: &mut Reader<'_>) -> Result<CallLimits> {
        let at = r.position();
        let n = r.map_len("limits")?;
        if n == 0 {
            return Err(Error::new(
                ErrorKind::NonCanonical,
                format!("limits at offset {at} is an empty map; it must be left out instead"),
            ));
        }
        let mut out = CallLimits::default();
        let mut next_slot = 0usize;
        for _ in 0..n {
            let (key_at, key) = r.any_key("limits")?;
            let slot = match key {
                "fuel" => 0,
                "deadline_ms" => 1,
                "max_memory" => 2,
                "max_table_elements" => 3,
                other => {
                    return Err(Error::new(
                        ErrorKind::Malformed,
                        format!("limits has unknown key {other:?} at offset {key_at}"),
                    ));
                }
            };
            if slot < next_slot {
                return Err(Error::new(
                    ErrorKind::NonCanonical,
                    format!("limits key {key:?} at offset {key_at} is repeated or out of order"),
                ));
            }
            next_slot = slot + 1;
            let value = Some(r.uint(key)?);
            match slot {
                0 => out.fuel = value,
                1 => out.deadline_ms = value,
                2 => out.max_memory = value,
                _ => out.max_table_elements = value,
            }
        }
        Ok(out)
    }

    fn encoded_len(&self) -> usize {
        let mut buf = Vec::new();
        self.write(&mut buf);
        buf.len()
    }
}

impl fmt::Debug for CallLimits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("CallLimits");
        for (k, v) in self.fields() {
            if let Some(v) = v {
                d.field(k, &v);
            }
        }
        d.finish()
    }
}

/// A pickled function: which module, which export, and the captured environment (the
/// MessagePack bytes of whatever the function closes over).
#[derive(Clone, PartialEq, Eq)]
pub struct Closure {
    code: CodeRef,
    export: Box<str>,
    env: Vec<u8>,
}

impl Closure {
    /// A closure over an environment that is already MessagePack.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Malformed`] for an empty export name, [`ErrorKind::Oversize`] for an export
    /// name longer than [`MAX_EXPORT_NAME`] or an environment larger than [`MAX_ENV_BYTES`].
    pub fn from_parts(code: CodeRef, export: &str, env: Vec<u8>) -> Result<Closure> {
        check_export(export)?;
        check_len("environment", env.len(), MAX_ENV_BYTES)?;
        Ok(Closure {
            code,
            export: export.into(),
            env,
        })
    }

    /// A closure capturing `env`, encoded canonically (see [`codec::to_canonical_msgpack`]).
    ///
    /// # Errors
    ///
    /// As [`Closure::from_parts`], plus [`ErrorKind::Value`] when `env` cannot be encoded.
    pub fn new<E: Serialize + ?Sized>(code: CodeRef, export: &str, env: &E) -> Result<Closure> {
        Closure::from_parts(code, export, codec::to_canonical_msgpack(env)?)
    }

    /// The module this closure runs.
    pub fn code(&self) -> &CodeRef {
        &self.code
    }

    /// The export it calls.
    pub fn export(&self) -> &str {
        &self.export
    }

    /// The MessagePack bytes of the captured environment.
    pub fn env(&self) -> &[u8] {
        &self.env
    }

    /// The same closure with its code carried by hash only.
    pub fn by_reference(&self) -> Closure {
        Closure {
            code: CodeRef::by_hash(self.code.hash),
            ..self.clone()
        }
    }

    /// A call of this closure with `args`, a tuple of the export's parameters after the
    /// environment (`&(4.0,)`, or `&()` when there are none), encoded canonically.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Value`] when `args` cannot be encoded, [`ErrorKind::Oversize`] when the
    /// encoding exceeds [`MAX_ARGS_BYTES`].
    pub fn call<A: Serialize + ?Sized>(&self, args: &A) -> Result<Call> {
        self.call_raw(codec::to_canonical_msgpack(args)?)
    }

    /// A call with arguments that are already MessagePack.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Oversize`] when `args` exceeds [`MAX_ARGS_BYTES`].
    pub fn call_raw(&self, args: Vec<u8>) -> Result<Call> {
        check_len("arguments", args.len(), MAX_ARGS_BYTES)?;
        Ok(Call {
            closure: self.clone(),
            args,
            limits: CallLimits::default(),
        })
    }

    /// The canonical encoding of this closure as a standalone pickle.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN + self.body_len(true));
        Header::write(PickleKind::Closure, &mut out);
        write::map_len(&mut out, 3);
        self.write_fields(&mut out, true);
        out
    }

    /// Decodes a closure pickle.
    ///
    /// # Errors
    ///
    /// A typed [`Error`] for anything that is not exactly the canonical encoding of a closure
    /// this version can read.
    pub fn from_bytes(bytes: &[u8]) -> Result<Closure> {
        Closure::from_bytes_with(bytes, &DecodeLimits::default())
    }

    /// Decodes a closure pickle under tighter [`DecodeLimits`].
    ///
    /// # Errors
    ///
    /// As [`Closure::from_bytes`].
    pub fn from_bytes_with(bytes: &[u8], limits: &DecodeLimits) -> Result<Closure> {
        let mut r = body(bytes, PickleKind::Closure)?;
        let at = r.position();
        let n = r.map_len("closure")?;
        if n != 3 {
            return Err(Error::new(
                ErrorKind::Malformed,
                format!("closure at offset {at} has {n} entries, expected 3"),
            ));
        }
        let closure = Closure::read_fields(&mut r, limits)?;
        finish(&r, bytes)?;
        Ok(closure)
    }

    fn body_len(&self, with_wasm: bool) -> usize {
        1 + 5
            + self.code.encoded_len(with_wasm)
            + 7
            + wire::header_len(self.export.len(), true)
            + self.export.len()
            + 4
            + wire::header_len(self.env.len(), false)
            + self.env.len()
    }

    fn write_fields(&self, out: &mut Vec<u8>, with_wasm: bool) {
        write::str(out, "code");
        self.code.write(out, with_wasm);
        write::str(out, "export");
        write::str(out, &self.export);
        write::str(out, "env");
        write::bin(out, &self.env);
    }

    fn read_fields(r: &mut Reader<'_>, limits: &DecodeLimits) -> Result<Closure> {
        r.key("code", "pickle")?;
        let code = CodeRef::read(r, limits)?;
        r.key("export", "pickle")?;
        let export = r.str("export", MAX_EXPORT_NAME)?;
        if export.is_empty() {
            return Err(Error::new(ErrorKind::Malformed, "export name is empty"));
        }
        r.key("env", "pickle")?;
        let env = r.bin("env", limits.max_env)?.to_vec();
        Ok(Closure {
            code,
            export: export.into(),
            env,
        })
    }
}

impl fmt::Debug for Closure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Closure")
            .field("code", &self.code)
            .field("export", &self.export)
            .field("env_len", &self.env.len())
            .finish()
    }
}

/// A closure plus its arguments and optional limits: one unit of work, as bytes you can
/// store, log, queue or send.
#[derive(Clone, PartialEq, Eq)]
pub struct Call {
    closure: Closure,
    args: Vec<u8>,
    limits: CallLimits,
}

impl Call {
    /// The closure called.
    pub fn closure(&self) -> &Closure {
        &self.closure
    }

    /// The module called.
    pub fn code(&self) -> &CodeRef {
        &self.closure.code
    }

    /// The export called.
    pub fn export(&self) -> &str {
        &self.closure.export
    }

    /// The MessagePack bytes of the environment.
    pub fn env(&self) -> &[u8] {
        &self.closure.env
    }

    /// The MessagePack bytes of the arguments.
    pub fn args(&self) -> &[u8] {
        &self.args
    }

    /// The limits this call requests.
    pub fn limits(&self) -> &CallLimits {
        &self.limits
    }

    /// The same call, requesting `limits`.
    pub fn with_limits(mut self, limits: CallLimits) -> Call {
        self.limits = limits;
        self
    }

    /// The same call with its code carried by hash only.
    pub fn by_reference(&self) -> Call {
        Call {
            closure: self.closure.by_reference(),
            ..self.clone()
        }
    }

    /// The call's identity: the SHA-256 of its canonical encoding with the code by hash. The
    /// same for the inline and the by-reference form, and the same on every machine.
    pub fn id(&self) -> CallId {
        let mut buf = Vec::with_capacity(HEADER_LEN + self.body_len(false));
        self.encode(&mut buf, false);
        CallId::digest(&buf)
    }

    /// The canonical encoding of this call.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN + self.body_len(true));
        self.encode(&mut out, true);
        out
    }

    /// Appends the canonical encoding of this call to `out`.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        out.reserve(HEADER_LEN + self.body_len(true));
        self.encode(out, true);
    }

    /// Decodes a call pickle.
    ///
    /// # Errors
    ///
    /// A typed [`Error`] for anything that is not exactly the canonical encoding of a call
    /// this version can read; never panics, whatever the input.
    pub fn from_bytes(bytes: &[u8]) -> Result<Call> {
        Call::from_bytes_with(bytes, &DecodeLimits::default())
    }

    /// Decodes a call pickle under tighter [`DecodeLimits`].
    ///
    /// # Errors
    ///
    /// As [`Call::from_bytes`].
    pub fn from_bytes_with(bytes: &[u8], limits: &DecodeLimits) -> Result<Call> {
        let mut r = body(bytes, PickleKind::Call)?;
        let at = r.position();
        let n = r.map_len("call")?;
        if !(4..=5).contains(&n) {
            return Err(Error::new(
                ErrorKind::Malformed,
                format!("call at offset {at} has {n} entries, expected 4 or 5"),
            ));
        }
        let closure = Closure::read_fields(&mut r, limits)?;
        r.key("args", "call")?;
        let args = r.bin("args", limits.max_args)?.to_vec();
        let limits = if n == 5 {
            r.key("limits", "call")?;
            CallLimits::read(&mut r)?
        } else {
            CallLimits::default()
        };
        finish(&r, bytes)?;
        Ok(Call {
            closure,
            args,
            limits,
        })
    }

    fn body_len(&self, with_wasm: bool) -> usize {
        let limits = if self.limits.is_empty() {
            0
        } else {
            7 + self.limits.encoded_len()
        };
        self.closure.body_len(with_wasm)
            + 5
            + wire::header_len(self.args.len(), false)
            + self.args.len()
            + limits
    }

    fn encode(&self, out: &mut Vec<u8>, with_wasm: bool) {
        Header::write(PickleKind::Call, out);
        let has_limits = !self.limits.is_empty();
        write::map_len(out, if has_limits { 5 } else { 4 });
        self.closure.write_fields(out, with_wasm);
        write::str(out, "args");
        write::bin(out, &self.args);
        if has_limits {
            write::str(out, "limits");
            self.limits.write(out);
        }
    }
}

impl fmt::Debug for Call {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Call")
            .field("code", &self.closure.code)
            .field("export", &self.closure.export)
            .field("env_len", &self.closure.env.len())
            .field("args_len", &self.args.len())
            .field("limits", &self.limits)
            .finish()
    }
}

fn body(bytes: &[u8], expected: PickleKind) -> Result<Reader<'_>> {
    let header = Header::read(bytes)?;
    if header.kind != expected {
        return Err(Error::new(
            ErrorKind::WrongKind,
            format!(
                "expected a {} pickle, found a {}",
                expected.as_str(),
                header.kind.as_str()
            ),
        ));
    }
    Ok(Reader::new(&bytes[HEADER_LEN..]))
}

fn finish(r: &Reader<'_>, bytes: &[u8]) -> Result<()> {
    if !r.is_empty() {
        let end = HEADER_LEN + r.position();
        return Err(Error::new(
            ErrorKind::TrailingBytes,
            format!(
                "{} bytes follow the end of the pickle at offset {end}",
                bytes.len() - end
            ),
        ));
    }
    Ok(())
}

fn check_export(export: &str) -> Result<()> {
    if export.is_empty() {
        return Err(Error::new(ErrorKind::Malformed, "export name is empty"));
    }
    check_len("export name", export.len(), MAX_EXPORT_NAME)
}

fn check_len(what: &str, len: usize, max: usize) -> Result<()> {
    if len > max {
        return Err(Error::new(
            ErrorKind::Oversize,
            format!("{what} is {len} bytes, more than the limit of {max}"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(inline: bool) -> Call {
        let hash = CodeHash::digest(b"\0asm\x01\0\0\0");
        let code = if inline {
            CodeRef::inline(hash, Arc::from(&b"\0asm\x01\0\0\0"[..])).unwrap()
        } else {
            CodeRef::by_hash(hash)
        };
        Closure::new(code, "scale", &[("factor", 2.5)])
            .unwrap()
            .call(&(4.0,))
            .unwrap()
    }

    #[test]
    fn round_trip_inline_and_by_reference() {
        for inline in [true, false] {
            let call = sample(inline);
            let bytes = call.to_bytes();
            assert_eq!(
                bytes.len(),
                HEADER_LEN + call.body_len(true),
                "body_len is exact"
            );
            let back = Call::from_bytes(&bytes).unwrap();
            assert_eq!(back, call);
            assert_eq!(back.to_bytes(), bytes);
        }
    }

    #[test]
    fn id_ignores_where_the_code_travels_but_not_limits() {
        let a = sample(true);
        let b = sample(false);
        assert_ne!(a.to_bytes(), b.to_bytes());
        assert_eq!(a.id(), b.id());
        let c = a.clone().with_limits(CallLimits::new().with_fuel(1000));
        assert_ne!(c.id(), a.id());
        assert_eq!(
            Call::from_bytes(&c.to_bytes()).unwrap().limits().fuel(),
            Some(1000)
        );
    }

    #[test]
    fn a_call_of_a_small_closure_is_about_100_bytes() {
        let len = sample(false).to_bytes().len();
        assert!((80..=120).contains(&len), "{len}");
    }

    #[test]
    fn header_errors() {
        assert_eq!(
            Call::from_bytes(b"").unwrap_err().kind(),
            ErrorKind::Truncated
        );
        assert_eq!(
            Call::from_bytes(b"\xc1WP").unwrap_err().kind(),
            ErrorKind::Truncated
        );
        assert_eq!(
            Call::from_bytes(b"PK\x03\x04").unwrap_err().kind(),
            ErrorKind::BadMagic
        );
        let mut bytes = sample(false).to_bytes();
        bytes[5] = 2;
        assert_eq!(
            Call::from_bytes(&bytes).unwrap_err().kind(),
            ErrorKind::UnsupportedVersion
        );
        bytes[5] = 1;
        bytes[6] = 1;
        assert_eq!(
            Call::from_bytes(&bytes).unwrap_err().kind(),
            ErrorKind::WrongKind
        );
        bytes[6] = 0x7f;
        assert_eq!(
            Call::from_bytes(&bytes).unwrap_err().kind(),
            ErrorKind::WrongKind
        );
    }

    #[test]
    fn trailing_bytes_are_refused() {
        let mut bytes = sample(false).to_bytes();
        bytes.push(0);
        assert_eq!(
            Call::from_bytes(&bytes).unwrap_err().kind(),
            ErrorKind::TrailingBytes
        );
    }

    #[test]
    fn limits_must_be_canonical() {
        let call = sample(false).with_limits(CallLimits::new().with_fuel(5).with_max_memory(7));
        let bytes = call.to_bytes();
        // Swap the two limit entries: {"max_memory": 7, "fuel": 5} is the same request
        // written another way, so it must be refused.
        let tail = bytes.iter().rposition(|&b| b == 0x82).unwrap();
        let mut swapped = bytes[..tail].to_vec();
        swapped.push(0x82);
        rmp::encode::write_str(&mut swapped, "max_memory").unwrap();
        swapped.push(7);
        rmp::encode::write_str(&mut swapped, "fuel").unwrap();
        swapped.push(5);
        assert_eq!(
            Call::from_bytes(&swapped).unwrap_err().kind(),
            ErrorKind::NonCanonical
        );
    }

    #[test]
    fn decode_limits_are_enforced() {
        let bytes = sample(true).to_bytes();
        let err = Call::from_bytes_with(&bytes, DecodeLimits::new().max_code(4)).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Oversize);
        let err = Call::from_bytes_with(&bytes, DecodeLimits::new().max_args(1)).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Oversize);
    }

    #[test]
    fn closure_pickles() {
        let closure = sample(true).closure().clone();
        let bytes = closure.to_bytes();
        assert_eq!(bytes.len(), HEADER_LEN + closure.body_len(true));
        assert_eq!(Closure::from_bytes(&bytes).unwrap(), closure);
        assert_eq!(
            Call::from_bytes(&bytes).unwrap_err().kind(),
            ErrorKind::WrongKind
        );
    }

    #[test]
    fn constructor_checks() {
        let code = CodeRef::by_hash(CodeHash::digest(b""));
        assert_eq!(
            Closure::from_parts(code.clone(), "", vec![])
                .unwrap_err()
                .kind(),
            ErrorKind::Malformed
        );
        assert_eq!(
            Closure::from_parts(code, &"x".repeat(MAX_EXPORT_NAME + 1), vec![])
                .unwrap_err()
                .kind(),
            ErrorKind::Oversize
        );
    }
}

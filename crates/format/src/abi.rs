//! The guest contract, as data: export names, the reply a guest returns, and the export
//! descriptions a module may carry. `docs/abi.md` is the language-neutral statement of the
//! same contract; this module is its Rust encoding, shared by the host and the guest SDK so
//! that the two cannot drift apart.
//!
//! In short: a module exports `memory`, an allocator `wasmpickle_alloc(len) -> ptr`, and one
//! function `name(env_ptr, env_len, args_ptr, args_len) -> i64` per pickled export. The host
//! copies the environment and the arguments (MessagePack) into memory the allocator gave it,
//! calls the export, and reads back a [reply](decode_reply): one status byte followed by
//! MessagePack, at the pointer and length packed into the returned `i64`.

use serde::{Deserialize, Serialize};

use crate::codec;
use crate::error::{Error, ErrorKind, Result};

/// The version of the guest contract described here. A future, incompatible contract will use
/// different export names, so a module's exports say which contract it follows.
pub const ABI_VERSION: u32 = 1;

/// The guest's linear memory. Required.
pub const MEMORY_EXPORT: &str = "memory";

/// `wasmpickle_alloc(len: i32) -> i32`: returns the address of `len` writable bytes that stay
/// valid until the export called next returns. Required.
pub const ALLOC_EXPORT: &str = "wasmpickle_alloc";

/// `wasmpickle_free(ptr: i32, len: i32)`: optional. A host that keeps an instance alive
/// across calls (a stateful object) calls it to give back the input buffer and the reply.
pub const FREE_EXPORT: &str = "wasmpickle_free";

/// An optional exported `i32` global holding the address of an 8-byte *panic slot*: the
/// little-endian `u32` pointer and `u32` length of a reply the guest wrote just before it
/// trapped. A zero length means "no reply". It is read after a trap without running any more
/// guest code, which is how a panic message survives `panic = "abort"`.
pub const PANIC_SLOT_EXPORT: &str = "wasmpickle_panic";

/// The custom section holding export descriptions: a concatenation of MessagePack maps, one
/// [`ExportDescription`] each. Linkers concatenate same-named sections, so each export can
/// contribute its own entry.
pub const EXPORTS_SECTION: &str = "wasmpickle.exports";

/// The import module under which a host grants functions (`(import "wasmpickle" "log" ...)`).
pub const IMPORT_MODULE: &str = "wasmpickle";

/// The core wasm signature of every pickled export: `(i32, i32, i32, i32) -> i64`.
pub const EXPORT_PARAMS: usize = 4;

/// The first byte of a reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
#[non_exhaustive]
pub enum Status {
    /// The export returned; MessagePack of the result follows.
    Ok = 0,
    /// The export returned an error of its own (a Rust `Err`); a [`GuestFailure`] follows.
    Error = 1,
    /// The export panicked; a [`GuestFailure`] with a location follows. Usually found in the
    /// panic slot after a trap rather than returned.
    Panic = 2,
    /// The environment or the arguments did not decode into the export's parameter types; a
    /// [`GuestFailure`] saying why follows.
    BadInput = 3,
}

impl Status {
    /// The status for a status byte, if it is one this contract defines.
    pub fn from_u8(byte: u8) -> Option<Status> {
        Some(match byte {
            0 => Status::Ok,
            1 => Status::Error,
            2 => Status::Panic,
            3 => Status::BadInput,
            _ => return None,
        })
    }
}

/// Why a guest call failed, as the guest tells it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestFailure {
    /// The error's or panic's message.
    pub message: String,
    /// Source file of a panic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// Line of a panic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<u32>,
    /// Column of a panic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub column: Option<u32>,
}

impl GuestFailure {
    /// A failure with a message and no location.
    pub fn new(message: impl Into<String>) -> GuestFailure {
        GuestFailure {
            message: message.into(),
            file: None,
            line: None,
            column: None,
        }
    }
}

/// A decoded reply.
#[derive(Clone, Debug, PartialEq)]
pub enum Reply<'a> {
    /// The MessagePack bytes of the result.
    Ok(&'a [u8]),
    /// The guest reported a failure.
    Failed(Status, GuestFailure),
}

/// Writes an `Ok` reply: the status byte, then the MessagePack of `value`.
///
/// # Errors
///
/// [`ErrorKind::Value`] when serde refuses the value.
pub fn write_ok<T: Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) -> Result<()> {
    out.push(Status::Ok as u8);
    codec::write_msgpack(out, value)
}

/// Encodes a failure reply.
pub fn failure_reply(status: Status, failure: &GuestFailure) -> Vec<u8> {
    let mut out = vec![status as u8];
    codec::write_msgpack(&mut out, failure).expect("a GuestFailure always encodes");
    out
}

/// Decodes a reply. An `Ok` reply's payload must be exactly one MessagePack value.
///
/// # Errors
///
/// [`ErrorKind::Truncated`] for an empty reply or a short payload, [`ErrorKind::Malformed`]
/// for an unknown status, [`ErrorKind::TrailingBytes`] or [`ErrorKind::Value`] for a payload
/// that is not exactly one value of the expected shape.
pub fn decode_reply(bytes: &[u8]) -> Result<Reply<'_>> {
    let (&status, payload) = bytes
        .split_first()
        .ok_or_else(|| Error::new(ErrorKind::Truncated, "reply is empty"))?;
    let status = Status::from_u8(status).ok_or_else(|| {
        Error::new(
            ErrorKind::Malformed,
            format!("reply has unknown status byte {status}"),
        )
    })?;
    match status {
        Status::Ok => {
            let len = codec::value_len(payload)?;
            if len != payload.len() {
                return Err(Error::new(
                    ErrorKind::TrailingBytes,
                    format!("{} bytes follow the reply's value", payload.len() - len),
                ));
            }
            Ok(Reply::Ok(payload))
        }
        other => Ok(Reply::Failed(other, codec::from_msgpack(payload)?)),
    }
}

/// Packs a pointer and a length into the `i64` an export returns: pointer in the high 32
/// bits, length in the low 32 bits.
pub const fn pack(ptr: u32, len: u32) -> i64 {
    ((ptr as u64) << 32 | len as u64) as i64
}

/// Splits an export's `i64` result into pointer and length; see [`pack`].
pub const fn unpack(packed: i64) -> (u32, u32) {
    let v = packed as u64;
    ((v >> 32) as u32, v as u32)
}

/// What a module says about one of its exports, so tools can show a signature without
/// running code. Written by the guest SDK's `#[export]` attribute; any toolchain may write it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportDescription {
    /// The export's name.
    pub name: String,
    /// Its documentation, possibly empty.
    #[serde(default)]
    pub doc: String,
    /// The type of the captured environment, if the export takes one.
    #[serde(default)]
    pub env: Option<String>,
    /// The parameters after the environment, in order.
    #[serde(default)]
    pub params: Vec<Param>,
    /// The result type as written in the source (`()` when nothing is returned).
    pub returns: String,
}

/// One parameter of an [`ExportDescription`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Param {
    /// The parameter's name.
    pub name: String,
    /// Its type as written in the source.
    #[serde(rename = "type")]
    pub ty: String,
}

impl ExportDescription {
    /// The MessagePack bytes of this description, as stored in [`EXPORTS_SECTION`].
    pub fn to_bytes(&self) -> Vec<u8> {
        codec::to_msgpack(self).expect("an ExportDescription always encodes")
    }

    /// Parses the contents of an [`EXPORTS_SECTION`]: zero or more descriptions back to back.
    ///
    /// # Errors
    ///
    /// The error of the first entry that does not decode.
    pub fn parse_section(mut bytes: &[u8]) -> Result<Vec<ExportDescription>> {
        let mut out = Vec::new();
        while !bytes.is_empty() {
            let len = codec::value_len(bytes)?;
            out.push(codec::from_msgpack(&bytes[..len])?);
            bytes = &bytes[len..];
        }
        Ok(out)
    }

    /// The signature in Rust-like notation, e.g. `scale(env: Scale, x: f64) -> f64`.
    pub fn signature(&self) -> String {
        let mut parts = Vec::new();
        if let Some(env) = &self.env {
            parts.push(format!("env: {env}"));
        }
        parts.extend(self.params.iter().map(|p| format!("{}: {}", p.name, p.ty)));
        format!("{}({}) -> {}", self.name, parts.join(", "), self.returns)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pack_unpack() {
        assert_eq!(unpack(pack(0xdead_beef, 7)), (0xdead_beef, 7));
        assert_eq!(unpack(pack(u32::MAX, u32::MAX)), (u32::MAX, u32::MAX));
    }

    #[test]
    fn replies_round_trip() {
        let mut ok = Vec::new();
        write_ok(&mut ok, &(1u8, "two")).unwrap();
        assert_eq!(decode_reply(&ok).unwrap(), Reply::Ok(&ok[1..]));

        let f = GuestFailure {
            message: "boom".into(),
            file: Some("src/lib.rs".into()),
            line: Some(3),
            column: Some(9),
        };
        let bytes = failure_reply(Status::Panic, &f);
        assert_eq!(
            decode_reply(&bytes).unwrap(),
            Reply::Failed(Status::Panic, f)
        );
    }

    #[test]
    fn bad_replies_are_typed_errors() {
        assert_eq!(decode_reply(&[]).unwrap_err().kind(), ErrorKind::Truncated);
        assert_eq!(
            decode_reply(&[9, 0xc0]).unwrap_err().kind(),
            ErrorKind::Malformed
        );
        assert_eq!(
            decode_reply(&[0, 0xc0, 0xc0]).unwrap_err().kind(),
            ErrorKind::TrailingBytes
        );
        assert_eq!(
            decode_reply(&[0, 0xa5]).unwrap_err().kind(),
            ErrorKind::Truncated
        );
        assert_eq!(
            decode_reply(&[1, 0x05]).unwrap_err().kind(),
            ErrorKind::Value
        );
    }

    #[test]
    fn section_of_several_descriptions() {
        let a = ExportDescription {
            name: "scale".into(),
            doc: "Multiplies.".into(),
            env: Some("Scale".into()),
            params: vec![Param {
                name: "x".into(),
                ty: "f64".into(),
            }],
            returns: "f64".into(),
        };
        let b = ExportDescription {
            name: "hello".into(),
            doc: String::new(),
            env: None,
            params: vec![],
            returns: "String".into(),
        };
        let mut section = a.to_bytes();
        section.extend(b.to_bytes());
        assert_eq!(
            ExportDescription::parse_section(&section).unwrap(),
            vec![a.clone(), b]
        );
        assert_eq!(a.signature(), "scale(env: Scale, x: f64) -> f64");
    }
}

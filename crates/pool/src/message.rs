//! The protocol's messages: a type byte, then one MessagePack map (`docs/protocol.md` §3).
//!
//! Every message is one frame. Its first payload byte says what it is; the rest is exactly one
//! MessagePack value, a map keyed by field name (structs through
//! [`wasmpickle_format::codec`], the one place the MessagePack encoding is chosen). Decoders
//! ignore keys they do not know, so a later version can add optional fields without a new
//! type; anything else new gets a new type byte. Requests carry an `id` the reply echoes, so
//! a request type a worker does not know can still be answered with a `Failed` naming it.

use serde::{Deserialize, Serialize};
use wasmpickle::{CodeHash, GuestFailure, Limits};
use wasmpickle_format::codec;

use crate::error::{Error, ErrorKind, Result};
use crate::frame::HEADER_LEN;

/// The protocol version this build speaks.
pub const PROTOCOL_VERSION: u32 = 1;

/// Message type bytes. `docs/protocol.md` §3 is the table; 0x50–0x6f are reserved for the twin
/// operations, 0x70–0x7e for later requests.
pub(crate) mod ty {
    pub(crate) const AUTH_HELLO: u8 = 0x01;
    pub(crate) const AUTH_CHALLENGE: u8 = 0x02;
    pub(crate) const AUTH_PROOF: u8 = 0x03;
    pub(crate) const HELLO: u8 = 0x10;
    pub(crate) const WELCOME: u8 = 0x11;
    pub(crate) const HAS: u8 = 0x20;
    pub(crate) const HAVE: u8 = 0x21;
    pub(crate) const PUT: u8 = 0x22;
    pub(crate) const STORED: u8 = 0x23;
    pub(crate) const CALL: u8 = 0x30;
    pub(crate) const DONE: u8 = 0x31;
    pub(crate) const FAILED: u8 = 0x32;
    pub(crate) const PING: u8 = 0x40;
    pub(crate) const PONG: u8 = 0x41;
    pub(crate) const SPAWN: u8 = 0x50;
    pub(crate) const SPAWNED: u8 = 0x51;
    pub(crate) const INVOKE: u8 = 0x52;
    pub(crate) const SNAPSHOT: u8 = 0x54;
    pub(crate) const SNAPSHOTTED: u8 = 0x55;
    pub(crate) const RESTORE: u8 = 0x56;
    pub(crate) const DROP: u8 = 0x58;
    pub(crate) const DROPPED: u8 = 0x59;
    pub(crate) const BYE: u8 = 0x7f;
}

/// The `kind` of a `Failed` reply to a request type the worker does not know.
pub(crate) const UNSUPPORTED: &str = "unsupported";

/// Appends one frame holding message `ty` with `body` to `out`.
pub(crate) fn encode<T: Serialize>(out: &mut Vec<u8>, ty: u8, body: &T) -> Result<()> {
    let start = out.len();
    out.extend_from_slice(&[0; HEADER_LEN]);
    out.push(ty);
    codec::write_msgpack(out, body).map_err(|e| {
        out.truncate(start);
        Error::new(ErrorKind::Encode, "cannot encode a message").with_source(e)
    })?;
    let len = out.len() - start - HEADER_LEN;
    let len = u32::try_from(len).map_err(|_| {
        out.truncate(start);
        Error::new(
            ErrorKind::FrameTooLarge,
            format!("a message of {len} bytes does not fit a frame"),
        )
    })?;
    out[start..start + HEADER_LEN].copy_from_slice(&len.to_be_bytes());
    Ok(())
}

/// Splits a frame's payload into its type byte and body.
pub(crate) fn split(payload: &[u8]) -> Result<(u8, &[u8])> {
    payload
        .split_first()
        .map(|(t, body)| (*t, body))
        .ok_or_else(|| Error::new(ErrorKind::Protocol, "an empty frame is not a message"))
}

/// Decodes a message body.
pub(crate) fn decode<'a, T: Deserialize<'a>>(ty: u8, body: &'a [u8]) -> Result<T> {
    codec::from_msgpack(body).map_err(|e| {
        Error::new(
            ErrorKind::Protocol,
            format!("message type 0x{ty:02x} has a malformed body"),
        )
        .with_source(e)
    })
}

/// The `id` of a request of a type this side does not know, so it can still be answered.
pub(crate) fn request_id(body: &[u8]) -> Option<u64> {
    #[derive(Deserialize)]
    struct IdOnly {
        id: u64,
    }
    codec::from_msgpack::<IdOnly>(body).ok().map(|m| m.id)
}

/// `AuthHello` (client → worker): the key the client claims and its nonce.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct AuthHello {
    pub(crate) key: String,
    #[serde(with = "serde_bytes")]
    pub(crate) nonce: Vec<u8>,
}

/// `AuthChallenge` (worker → client): the worker's nonce and its proof of the key.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct AuthChallenge {
    #[serde(with = "serde_bytes")]
    pub(crate) nonce: Vec<u8>,
    #[serde(with = "serde_bytes")]
    pub(crate) proof: Vec<u8>,
}

/// `AuthProof` (client → worker): the client's proof of the key.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct AuthProof {
    #[serde(with = "serde_bytes")]
    pub(crate) proof: Vec<u8>,
}

/// `Hello` (client → worker): the first message of a session.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Hello {
    pub(crate) protocol: u32,
    pub(crate) client: String,
}

/// A worker's caps, as `Welcome` reports them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct WireLimits {
    pub(crate) fuel: u64,
    pub(crate) deadline_ms: u64,
    pub(crate) max_memory: u64,
    pub(crate) max_table_elements: u64,
}

impl From<&Limits> for WireLimits {
    fn from(l: &Limits) -> WireLimits {
        WireLimits {
            fuel: l.get_fuel(),
            deadline_ms: u64::try_from(l.get_deadline().as_millis()).unwrap_or(u64::MAX),
            max_memory: l.get_max_memory(),
            max_table_elements: l.get_max_table_elements(),
        }
    }
}

/// `Welcome` (worker → client): the answer to `Hello`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Welcome {
    pub(crate) protocol: u32,
    pub(crate) worker: String,
    pub(crate) pid: u32,
    pub(crate) limits: WireLimits,
    pub(crate) max_frame: u64,
    #[serde(default)]
    pub(crate) features: Vec<String>,
}

/// `Has` (client → worker): which of these modules do you have?
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Has {
    pub(crate) id: u64,
    pub(crate) hashes: Vec<CodeHash>,
}

/// `Have` (worker → client): one flag per hash asked about.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Have {
    pub(crate) id: u64,
    pub(crate) present: Vec<bool>,
}

/// `Put` (client → worker): a module's bytes and the hash they must have.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Put<'a> {
    pub(crate) id: u64,
    pub(crate) sha256: CodeHash,
    #[serde(with = "serde_bytes", borrow)]
    pub(crate) wasm: &'a [u8],
}

/// `Stored` (worker → client): the module is verified, compiled and kept.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Stored {
    pub(crate) id: u64,
    pub(crate) sha256: CodeHash,
}

/// `Call` (client → worker): a call pickle to run.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct CallMsg<'a> {
    pub(crate) id: u64,
    #[serde(with = "serde_bytes", borrow)]
    pub(crate) call: &'a [u8],
}

/// `Done` (worker → client): the call returned.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Done<'a> {
    pub(crate) id: u64,
    #[serde(with = "serde_bytes", borrow)]
    pub(crate) value: &'a [u8],
    pub(crate) fuel_used: u64,
    pub(crate) micros: u64,
}

/// `Failed` (worker → client): a request failed; for a call, the wasmpickle error as data.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct Failed {
    pub(crate) id: u64,
    pub(crate) kind: String,
    pub(crate) message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) code: Option<CodeHash>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) export: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) guest: Option<GuestFailure>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) backtrace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) fuel_used: Option<u64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) imports: Vec<String>,
}

impl Failed {
    /// The reply for a wasmpickle error: its kind, its whole chain as the message, and the
    /// details a caller may want.
    pub(crate) fn from_error(id: u64, e: &wasmpickle::Error) -> Failed {
        let mut message = e.to_string();
        let mut source = std::error::Error::source(e);
        while let Some(s) = source {
            message.push_str(": ");
            message.push_str(&s.to_string());
            source = s.source();
        }
        Failed {
            id,
            kind: e.kind().as_str().to_owned(),
            message,
            code: e.code_hash(),
            export: e.export().map(str::to_owned),
            guest: e.guest_failure().cloned(),
            backtrace: e.wasm_backtrace().map(str::to_owned),
            fuel_used: e.fuel_used(),
            imports: e.imports().to_vec(),
        }
    }
}

/// `Ping` (client → worker) and `Pong` (worker → client).
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Ping {
    pub(crate) id: u64,
}

/// `Spawn` (client → worker): make a live object by running a constructor call
/// (`<Name>.new`, its code by hash, already on the worker).
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Spawn<'a> {
    pub(crate) id: u64,
    #[serde(with = "serde_bytes", borrow)]
    pub(crate) call: &'a [u8],
}

/// `Spawned` (worker → client): the object lives in this session under `twin`.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Spawned {
    pub(crate) id: u64,
    pub(crate) twin: u64,
    pub(crate) object: String,
    pub(crate) methods: Vec<String>,
}

/// `Invoke` (client → worker): call a method of a live object; answered by `Done` or
/// `Failed` like a call.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Invoke<'a> {
    pub(crate) id: u64,
    pub(crate) twin: u64,
    pub(crate) method: &'a str,
    #[serde(with = "serde_bytes", borrow)]
    pub(crate) args: &'a [u8],
}

/// `Snapshot` and `Drop` (client → worker): which object.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct TwinRef {
    pub(crate) id: u64,
    pub(crate) twin: u64,
}

/// `Snapshotted` (worker → client): the object's state as a module, also kept in the
/// worker's code store.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Snapshotted<'a> {
    pub(crate) id: u64,
    pub(crate) sha256: CodeHash,
    #[serde(with = "serde_bytes", borrow)]
    pub(crate) wasm: &'a [u8],
}

/// `Restore` (client → worker): resume an object from a snapshot already on the worker;
/// answered by `Spawned`.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Restore {
    pub(crate) id: u64,
    pub(crate) sha256: CodeHash,
}

/// `Bye` (worker → client): why the worker is closing the connection.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Bye {
    pub(crate) kind: String,
    pub(crate) message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_length_type_body() {
        let mut out = Vec::new();
        encode(&mut out, ty::PING, &Ping { id: 7 }).unwrap();
        // 00 00 00 06 | 40 | 81 a2 "id" 07
        assert_eq!(out, b"\0\0\0\x06\x40\x81\xa2id\x07");
        let (t, body) = split(&out[4..]).unwrap();
        assert_eq!(t, ty::PING);
        assert_eq!(decode::<Ping>(t, body).unwrap().id, 7);
        assert_eq!(request_id(body), Some(7));
    }

    #[test]
    fn unknown_keys_are_ignored() {
        #[derive(Serialize)]
        struct Newer {
            id: u64,
            priority: u8,
        }
        let body = codec::to_msgpack(&Newer { id: 3, priority: 9 }).unwrap();
        assert_eq!(decode::<Ping>(ty::PING, &body).unwrap().id, 3);
    }

    #[test]
    fn garbage_bodies_are_protocol_errors() {
        for body in [
            &b""[..],
            b"\xc1",
            b"\x92\x01",
            b"\x81\xa2id\xa1x",
            b"\x81\xa2id",
        ] {
            let err = decode::<Ping>(ty::PING, body).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Protocol, "{body:?}");
        }
        assert_eq!(split(&[]).unwrap_err().kind(), ErrorKind::Protocol);
    }
}

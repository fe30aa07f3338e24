//! Typed values to and from MessagePack: the one place where rmp-serde is configured.
//!
//! Host and guest must agree on how a Rust value becomes bytes, or an environment encoded by
//! one cannot be decoded by the other. Both sides go through these functions:
//!
//! * structs are written as **maps keyed by field name** (`rmp_serde::to_vec_named`), so a
//!   pickle stays readable by other languages and by `wasmpickle inspect`, and fields can be
//!   reordered without breaking old pickles; decoding accepts maps and arrays;
//! * enums use serde's externally tagged form; `()` and `None` are `nil`; byte buffers should
//!   use `serde_bytes` so they become msgpack `bin`, not an array of integers;
//! * [`to_canonical_msgpack`] additionally sorts every map by the encoded bytes of its keys,
//!   the rule of RFC 8949 §4.2.1 (deterministic CBOR). A `HashMap` in an environment then
//!   encodes to the same bytes in every process, so a call has one id everywhere. The host
//!   uses it for environments and arguments; guests use the cheaper [`to_msgpack`] for
//!   results, because a guest's iteration order is already deterministic.

use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorKind, Result};

/// How deep values may nest when decoded: 128, serde_json's limit. Deeper input is refused
/// with [`ErrorKind::Value`] instead of exhausting the decoding thread's stack.
pub const MAX_DEPTH: usize = 128;

/// Encodes `value` as MessagePack, structs as maps keyed by field name.
///
/// # Errors
///
/// [`ErrorKind::Value`] when serde refuses the value (a map with a key serde cannot write,
/// say).
pub fn to_msgpack<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    write_msgpack(&mut out, value)?;
    Ok(out)
}

/// Appends the MessagePack encoding of `value` to `out`; see [`to_msgpack`].
///
/// # Errors
///
/// [`ErrorKind::Value`] when serde refuses the value.
pub fn write_msgpack<T: Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) -> Result<()> {
    rmp_serde::encode::write_named(out, value)
        .map_err(|e| Error::new(ErrorKind::Value, format!("cannot encode value: {e}")))
}

/// Encodes `value` like [`to_msgpack`], then sorts every map by the encoded bytes of its keys
/// so that the output does not depend on iteration order.
///
/// # Errors
///
/// [`ErrorKind::Value`] when serde refuses the value or a map has two equal keys.
///
/// ```
/// use std::collections::HashMap;
/// use wasmpickle_format::codec::to_canonical_msgpack;
///
/// let a: HashMap<&str, i32> = [("x", 1), ("y", 2), ("z", 3)].into();
/// let b: HashMap<&str, i32> = [("z", 3), ("x", 1), ("y", 2)].into();
/// assert_eq!(to_canonical_msgpack(&a).unwrap(), to_canonical_msgpack(&b).unwrap());
/// ```
pub fn to_canonical_msgpack<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>> {
    canonicalize(&to_msgpack(value)?)
}

/// Rewrites one MessagePack value into canonical form: every map sorted by the encoded bytes
/// of its keys, every integer and length in its smallest encoding.
///
/// # Errors
///
/// [`ErrorKind::Truncated`], [`ErrorKind::TrailingBytes`] or [`ErrorKind::Value`] when `bytes`
/// is not exactly one well-formed value, or a map repeats a key.
pub fn canonicalize(bytes: &[u8]) -> Result<Vec<u8>> {
    value_len(bytes).and_then(|len| exact(len, bytes.len()))?;
    let mut rd = bytes;
    let mut value = rmpv::decode::read_value_with_max_depth(&mut rd, MAX_DEPTH)
        .map_err(|e| Error::new(ErrorKind::Value, format!("cannot decode value: {e}")))?;
    sort_maps(&mut value)?;
    let mut out = Vec::with_capacity(bytes.len());
    rmpv::encode::write_value(&mut out, &value).expect("writing to a Vec cannot fail");
    Ok(out)
}

fn sort_maps(value: &mut rmpv::Value) -> Result<()> {
    match value {
        rmpv::Value::Array(items) => items.iter_mut().try_for_each(sort_maps),
        rmpv::Value::Map(entries) => {
            let mut keyed = Vec::with_capacity(entries.len());
            for (mut k, mut v) in entries.drain(..) {
                sort_maps(&mut k)?;
                sort_maps(&mut v)?;
                let mut key_bytes = Vec::new();
                rmpv::encode::write_value(&mut key_bytes, &k).expect("writing to a Vec");
                keyed.push((key_bytes, k, v));
            }
            keyed.sort_by(|a, b| a.0.cmp(&b.0));
            if let Some(w) = keyed.windows(2).find(|w| w[0].0 == w[1].0) {
                return Err(Error::new(
                    ErrorKind::Value,
                    format!("map has the key {} twice", w[0].1),
                ));
            }
            entries.extend(keyed.into_iter().map(|(_, k, v)| (k, v)));
            Ok(())
        }
        _ => Ok(()),
    }
}

/// Decodes a `T` from exactly one MessagePack value.
///
/// # Errors
///
/// [`ErrorKind::Truncated`] or [`ErrorKind::TrailingBytes`] when `bytes` is not exactly one
/// value; [`ErrorKind::Value`] when the value does not fit `T`.
pub fn from_msgpack<'de, T: Deserialize<'de>>(bytes: &'de [u8]) -> Result<T> {
    value_len(bytes).and_then(|len| exact(len, bytes.len()))?;
    let mut de = rmp_serde::Deserializer::from_read_ref(bytes);
    de.set_max_depth(MAX_DEPTH);
    T::deserialize(&mut de)
        .map_err(|e| Error::new(ErrorKind::Value, format!("cannot decode value: {e}")))
}

fn exact(len: usize, total: usize) -> Result<()> {
    if len != total {
        return Err(Error::new(
            ErrorKind::TrailingBytes,
            format!(
                "{} bytes follow a {len}-byte MessagePack value",
                total - len
            ),
        ));
    }
    Ok(())
}

/// The length in bytes of the first MessagePack value in `bytes`.
///
/// Walks the value without recursion or allocation, so hostile nesting or lengths cost at
/// most one step per input byte.
///
/// # Errors
///
/// [`ErrorKind::Truncated`] when the value runs past the end of `bytes`;
/// [`ErrorKind::Malformed`] on the reserved marker `0xc1`.
pub fn value_len(bytes: &[u8]) -> Result<usize> {
    use rmp::Marker as M;
    let truncated = |pos: usize| {
        Error::new(
            ErrorKind::Truncated,
            format!("MessagePack value ends early: needs more than the {pos} bytes given"),
        )
    };
    let mut pos = 0usize;
    // Values still to walk. Every value takes at least one byte, so this never has to exceed
    // the input length; saturating keeps hostile 2^32-element headers harmless.
    let mut pending: u64 = 1;
    let be = |pos: usize, n: usize| -> Result<u64> {
        let end = pos
            .checked_add(n)
            .filter(|&e| e <= bytes.len())
            .ok_or_else(|| truncated(bytes.len()))?;
        Ok(bytes[pos..end]
            .iter()
            .fold(0u64, |a, &b| a << 8 | u64::from(b)))
    };
    while pending > 0 {
        pending -= 1;
        let &byte = bytes.get(pos).ok_or_else(|| truncated(bytes.len()))?;
        pos += 1;
        let (skip, children): (u64, u64) = match M::from_u8(byte) {
            M::FixPos(_) | M::FixNeg(_) | M::Null | M::True | M::False => (0, 0),
            M::U8 | M::I8 => (1, 0),
            M::U16 | M::I16 => (2, 0),
            M::U32 | M::I32 | M::F32 => (4, 0),
            M::U64 | M::I64 | M::F64 => (8, 0),
            M::FixStr(n) => (u64::from(n), 0),
            M::Str8 | M::Bin8 => (1 + be(pos, 1)?, 0),
            M::Str16 | M::Bin16 => (2 + be(pos, 2)?, 0),
            M::Str32 | M::Bin32 => (4 + be(pos, 4)?, 0),
            M::FixExt1 => (2, 0),
            M::FixExt2 => (3, 0),
            M::FixExt4 => (5, 0),
            M::FixExt8 => (9, 0),
            M::FixExt16 => (17, 0),
            M::Ext8 => (2 + be(pos, 1)?, 0),
            M::Ext16 => (3 + be(pos, 2)?, 0),
            M::Ext32 => (5 + be(pos, 4)?, 0),
            M::FixArray(n) => (0, u64::from(n)),
            M::Array16 => (2, be(pos, 2)?),
            M::Array32 => (4, be(pos, 4)?),
            M::FixMap(n) => (0, 2 * u64::from(n)),
            M::Map16 => (2, 2 * be(pos, 2)?),
            M::Map32 => (4, 2 * be(pos, 4)?),
            M::Reserved => {
                return Err(Error::new(
                    ErrorKind::Malformed,
                    format!("reserved MessagePack marker 0xc1 at offset {}", pos - 1),
                ));
            }
        };
        pos = usize::try_from(skip)
            .ok()
            .and_then(|s| pos.checked_add(s))
            .filter(|&p| p <= bytes.len())
            .ok_or_else(|| truncated(bytes.len()))?;
        pending = pending.saturating_add(children);
        if pending > (bytes.len() - pos) as u64 {
            return Err(truncated(bytes.len()));
        }
    }
    Ok(pos)
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashMap};

    use serde::{Deserialize, Serialize};

    use super::*;

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct Scale {
        factor: f64,
        label: String,
    }

    #[test]
    fn structs_are_named_maps() {
        let bytes = to_msgpack(&Scale {
            factor: 2.5,
            label: "x".into(),
        })
        .unwrap();
        assert_eq!(bytes[0], 0x82, "a fixmap of two entries");
        assert_eq!(&bytes[1..8], b"\xa6factor");
        let back: Scale = from_msgpack(&bytes).unwrap();
        assert_eq!(back.factor, 2.5);
    }

    #[test]
    fn canonical_sorts_maps_and_is_idempotent() {
        let mut m = HashMap::new();
        for i in 0..50 {
            m.insert(format!("k{i}"), i);
        }
        let a = to_canonical_msgpack(&m).unwrap();
        let sorted: BTreeMap<_, _> = m.iter().collect();
        // BTreeMap order is by string, canonical order is by encoded bytes (length first for
        // short strings); both are deterministic, and canonicalizing is idempotent.
        let b = to_canonical_msgpack(&sorted).unwrap();
        assert_eq!(a, b);
        assert_eq!(canonicalize(&a).unwrap(), a);
    }

    #[test]
    fn canonical_rejects_duplicate_keys() {
        // {"a": 1, "a": 2}
        let err = canonicalize(&[0x82, 0xa1, b'a', 1, 0xa1, b'a', 2]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Value);
    }

    #[test]
    fn from_msgpack_demands_exactly_one_value() {
        assert_eq!(
            from_msgpack::<u8>(&[1, 2]).unwrap_err().kind(),
            ErrorKind::TrailingBytes
        );
        assert_eq!(
            from_msgpack::<String>(&[0xa3, b'a']).unwrap_err().kind(),
            ErrorKind::Truncated
        );
        assert_eq!(
            from_msgpack::<u8>(&[0xa1, b'a']).unwrap_err().kind(),
            ErrorKind::Value
        );
    }

    #[test]
    fn value_len_survives_hostile_headers() {
        // array32 announcing 2^32-1 elements, then nothing
        assert_eq!(
            value_len(&[0xdd, 0xff, 0xff, 0xff, 0xff, 1])
                .unwrap_err()
                .kind(),
            ErrorKind::Truncated
        );
        // 100,000 nested one-element arrays and a nil
        let mut deep = vec![0x91; 100_000];
        deep.push(0xc0);
        assert_eq!(value_len(&deep).unwrap(), deep.len());
        assert_eq!(value_len(&[0xc1]).unwrap_err().kind(), ErrorKind::Malformed);
    }

    #[test]
    fn depth_bombs_are_refused_not_overflowed() {
        let mut deep = vec![0x91; 100_000];
        deep.push(0xc0);
        assert_eq!(canonicalize(&deep).unwrap_err().kind(), ErrorKind::Value);
        assert_eq!(
            from_msgpack::<serde::de::IgnoredAny>(&deep)
                .unwrap_err()
                .kind(),
            ErrorKind::Value
        );
    }
}

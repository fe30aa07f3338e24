//! JSON to canonical MessagePack and back: how the CLI turns what a shell can type into what a
//! pickle carries, and what a pickle or a result carries into something a shell can read.
//!
//! Going in, a [`serde_json::Value`] is serialized through
//! [`codec::to_canonical_msgpack`], the very function the Rust API uses for environments and
//! arguments, so JSON `{"factor": 2.5}` and a Rust `struct Scale { factor: f64 }` become the
//! same bytes (structs are maps keyed by field name; maps are sorted canonically). Numbers
//! keep their JSON spelling: `4` is an integer, `4.0` a float.
//!
//! Going out, MessagePack has more types than JSON, so some are mapped:
//!
//! | MessagePack | JSON |
//! |---|---|
//! | nil, bool, integer, string | null, bool, number, string (invalid UTF-8 replaced) |
//! | float | number; NaN and infinities become `null` |
//! | bin | array of byte values |
//! | array | array |
//! | map with only string keys | object |
//! | any other map | array of `[key, value]` pairs |
//! | ext | `{"ext": type, "data": [bytes]}` |

use anyhow::{Context, bail};
use serde_json::{Map, Number, Value};
use wasmpickle::format::codec;

/// Parses JSON given on the command line or read from a file; `what` names the source in
/// the error.
///
/// # Errors
///
/// When `text` is not one JSON value.
pub(crate) fn parse(text: &str, what: &str) -> anyhow::Result<Value> {
    serde_json::from_str(text).with_context(|| format!("{what} is not valid JSON"))
}

/// The canonical MessagePack of a JSON value.
///
/// # Errors
///
/// When the value cannot be encoded (it always can; the codec's contract says it may fail).
pub(crate) fn to_msgpack(value: &Value) -> anyhow::Result<Vec<u8>> {
    Ok(codec::to_canonical_msgpack(value)?)
}

/// The canonical MessagePack of a call's arguments given as a JSON array: one element per
/// parameter after the environment. An empty array encodes as `nil`, exactly as the Rust
/// API's `call(&())` does, because a function without parameters receives `nil`
/// (`docs/abi.md` §4).
///
/// # Errors
///
/// When `args` is not an array.
pub(crate) fn args_to_msgpack(args: &Value, what: &str) -> anyhow::Result<Vec<u8>> {
    match args {
        Value::Array(items) if items.is_empty() => to_msgpack(&Value::Null),
        Value::Array(_) => to_msgpack(args),
        other => bail!(
            "{what} must be a JSON array with one element per parameter after the \
             environment, not {}",
            kind_of(other)
        ),
    }
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Decodes exactly one MessagePack value into JSON (see the table in the module docs).
///
/// Lengths are checked against the input before anything is allocated, and nesting deeper
/// than [`codec::MAX_DEPTH`] is refused, so hostile bytes cost an error, not the process.
///
/// # Errors
///
/// When `bytes` is not exactly one well-formed MessagePack value.
pub(crate) fn from_msgpack(bytes: &[u8]) -> anyhow::Result<Value> {
    let len = codec::value_len(bytes)?;
    if len != bytes.len() {
        bail!(
            "{} bytes follow a {len}-byte MessagePack value",
            bytes.len() - len
        );
    }
    let mut rd = bytes;
    let value = rmpv::decode::read_value_with_max_depth(&mut rd, codec::MAX_DEPTH)
        .context("cannot decode MessagePack")?;
    Ok(to_json(value))
}

fn to_json(value: rmpv::Value) -> Value {
    use rmpv::Value as M;
    match value {
        M::Nil => Value::Null,
        M::Boolean(b) => Value::Bool(b),
        M::Integer(i) => i
            .as_u64()
            .map(Value::from)
            .or_else(|| i.as_i64().map(Value::from))
            .unwrap_or(Value::Null),
        M::F32(f) => float(f64::from(f)),
        M::F64(f) => float(f),
        M::String(s) => Value::String(string(s)),
        M::Binary(bytes) => bytes_json(bytes),
        M::Array(items) => Value::Array(items.into_iter().map(to_json).collect()),
        M::Map(entries) if entries.iter().all(|(k, _)| k.is_str()) => Value::Object(
            entries
                .into_iter()
                .map(|(k, v)| match k {
                    M::String(s) => (string(s), to_json(v)),
                    _ => unreachable!("every key was just checked to be a string"),
                })
                .collect::<Map<_, _>>(),
        ),
        M::Map(entries) => Value::Array(
            entries
                .into_iter()
                .map(|(k, v)| Value::Array(vec![to_json(k), to_json(v)]))
                .collect(),
        ),
        M::Ext(ty, data) => {
            let mut map = Map::new();
            map.insert("ext".into(), Value::from(ty));
            map.insert("data".into(), bytes_json(data));
            Value::Object(map)
        }
    }
}

fn float(f: f64) -> Value {
    Number::from_f64(f).map_or(Value::Null, Value::Number)
}

fn string(s: rmpv::Utf8String) -> String {
    match String::from_utf8(s.into_bytes()) {
        Ok(s) => s,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    }
}

fn bytes_json(bytes: Vec<u8>) -> Value {
    Value::Array(bytes.into_iter().map(Value::from).collect())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn json_and_rust_values_encode_alike() {
        #[derive(serde::Serialize)]
        struct Scale {
            label: &'static str,
            factor: f64,
        }
        let rust = codec::to_canonical_msgpack(&Scale {
            label: "x",
            factor: 2.5,
        })
        .unwrap();
        let json = to_msgpack(&json!({"factor": 2.5, "label": "x"})).unwrap();
        assert_eq!(json, rust);
        assert_eq!(
            args_to_msgpack(&json!([4.0, 1, "s"]), "--args").unwrap(),
            codec::to_canonical_msgpack(&(4.0, 1u8, "s")).unwrap()
        );
        assert_eq!(
            args_to_msgpack(&json!([]), "--args").unwrap(),
            codec::to_canonical_msgpack(&()).unwrap()
        );
        assert!(args_to_msgpack(&json!({"x": 1}), "--args").is_err());
    }

    #[test]
    fn msgpack_to_json_covers_every_type() {
        let mut bytes = Vec::new();
        let value = rmpv::Value::Array(vec![
            rmpv::Value::Nil,
            rmpv::Value::Boolean(true),
            rmpv::Value::from(-3),
            rmpv::Value::from(u64::MAX),
            rmpv::Value::F64(f64::NAN),
            rmpv::Value::F32(0.5),
            rmpv::Value::String(rmpv::Utf8String::from("é")),
            rmpv::Value::Binary(vec![1, 2]),
            rmpv::Value::Map(vec![(rmpv::Value::from("k"), rmpv::Value::from(1))]),
            rmpv::Value::Map(vec![(rmpv::Value::from(1), rmpv::Value::from("v"))]),
            rmpv::Value::Ext(5, vec![9]),
        ]);
        rmpv::encode::write_value(&mut bytes, &value).unwrap();
        assert_eq!(
            from_msgpack(&bytes).unwrap(),
            json!([
                null, true, -3, u64::MAX, null, 0.5, "é", [1, 2], {"k": 1}, [[1, "v"]],
                {"ext": 5, "data": [9]}
            ])
        );
    }

    #[test]
    fn invalid_utf8_is_replaced() {
        // fixstr of two bytes: 'a' and a lone continuation byte
        let json = from_msgpack(&[0xa2, b'a', 0x80]).unwrap();
        assert_eq!(json, json!("a\u{fffd}"));
    }

    #[test]
    fn hostile_input_is_an_error() {
        assert!(from_msgpack(&[0xdd, 0xff, 0xff, 0xff, 0xff]).is_err());
        assert!(from_msgpack(&[1, 2]).is_err());
        let mut deep = vec![0x91; 100_000];
        deep.push(0xc0);
        assert!(from_msgpack(&deep).is_err());
    }
}

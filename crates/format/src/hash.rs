//! SHA-256 identities: [`CodeHash`] names a module, [`CallId`] names a call.

use std::fmt;
use std::str::FromStr;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use sha2::{Digest, Sha256};

use crate::error::{Error, ErrorKind};

const PREFIX: &str = "sha256:";

macro_rules! sha256_newtype {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name([u8; 32]);

        impl $name {
            /// Wraps a raw 32-byte SHA-256 digest.
            pub const fn from_bytes(bytes: [u8; 32]) -> Self {
                $name(bytes)
            }

            /// The raw 32-byte digest.
            pub const fn as_bytes(&self) -> &[u8; 32] {
                &self.0
            }

            /// The digest as 64 lowercase hex digits, without the `sha256:` prefix.
            pub fn to_hex(&self) -> String {
                let mut s = String::with_capacity(64);
                for b in self.0 {
                    s.push(char::from(HEX[usize::from(b >> 4)]));
                    s.push(char::from(HEX[usize::from(b & 0xf)]));
                }
                s
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(PREFIX)?;
                f.write_str(&self.to_hex())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(self, f)
            }
        }

        impl FromStr for $name {
            type Err = Error;

            /// Parses `sha256:<64 hex digits>` (the prefix is required; hex digits of either case).
            fn from_str(s: &str) -> Result<Self, Error> {
                parse_prefixed(s, $what).map($name)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                if serializer.is_human_readable() {
                    serializer.collect_str(self)
                } else {
                    serializer.serialize_bytes(&self.0)
                }
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                deserializer.deserialize_any(DigestVisitor($what)).map($name)
            }
        }
    };
}

sha256_newtype!(
    /// The address of a WebAssembly module: the SHA-256 of its code.
    ///
    /// Shown and parsed as `sha256:<64 lowercase hex digits>`. Which bytes are hashed is the
    /// host's business (the `wasmpickle` crate hashes a canonical form of the module, see
    /// `docs/format.md`); this type only carries the digest.
    ///
    /// ```
    /// use wasmpickle_format::CodeHash;
    /// let h = CodeHash::digest(b"");
    /// assert_eq!(
    ///     h.to_string(),
    ///     "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    /// );
    /// assert_eq!(h.to_string().parse::<CodeHash>().unwrap(), h);
    /// ```
    CodeHash,
    "code hash"
);

sha256_newtype!(
    /// The identity of a call: the SHA-256 of its canonical encoding with the code carried by
    /// hash, so a call has the same id whether or not its code travels inline.
    CallId,
    "call id"
);

impl CodeHash {
    /// The SHA-256 of `data`.
    pub fn digest(data: &[u8]) -> CodeHash {
        CodeHash(Sha256::digest(data).into())
    }
}

impl CallId {
    pub(crate) fn digest(data: &[u8]) -> CallId {
        CallId(Sha256::digest(data).into())
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn parse_prefixed(s: &str, what: &str) -> Result<[u8; 32], Error> {
    let hex = s.strip_prefix(PREFIX).ok_or_else(|| {
        Error::new(
            ErrorKind::Malformed,
            format!("{what} {s:?} does not start with \"{PREFIX}\""),
        )
    })?;
    parse_hex(hex).ok_or_else(|| {
        Error::new(
            ErrorKind::Malformed,
            format!("{what} {s:?} is not \"{PREFIX}\" followed by 64 hex digits"),
        )
    })
}

fn parse_hex(hex: &str) -> Option<[u8; 32]> {
    let bytes = hex.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in bytes.chunks_exact(2).enumerate() {
        let hi = char::from(pair[0]).to_digit(16)?;
        let lo = char::from(pair[1]).to_digit(16)?;
        out[i] = u8::try_from(hi << 4 | lo).ok()?;
    }
    Some(out)
}

struct DigestVisitor(&'static str);

impl<'de> Visitor<'de> for DigestVisitor {
    type Value = [u8; 32];

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a {} (32 bytes or \"sha256:<hex>\")", self.0)
    }

    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Self::Value, E> {
        v.try_into()
            .map_err(|_| E::invalid_length(v.len(), &"32 bytes"))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        parse_prefixed(v, self.0).map_err(E::custom)
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut out = [0u8; 32];
        for (i, slot) in out.iter_mut().enumerate() {
            *slot = seq
                .next_element()?
                .ok_or_else(|| de::Error::invalid_length(i, &"32 bytes"))?;
        }
        if seq.next_element::<u8>()?.is_some() {
            return Err(de::Error::invalid_length(33, &"32 bytes"));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_and_parse_round_trip() {
        let h = CodeHash::digest(b"abc");
        let s = h.to_string();
        assert_eq!(
            s,
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(s.parse::<CodeHash>().unwrap(), h);
        assert_eq!(
            s.to_uppercase()
                .replace("SHA256:", "sha256:")
                .parse::<CodeHash>()
                .unwrap(),
            h
        );
    }

    #[test]
    fn parse_rejects_bad_strings() {
        for bad in [
            "",
            "sha256:",
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015a",
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015adx",
            "sha256:zz7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
            "sha256:é7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015a",
        ] {
            let err = bad.parse::<CodeHash>().unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Malformed, "{bad:?}");
        }
    }

    #[test]
    fn serde_binary_and_text() {
        let h = CodeHash::digest(b"x");
        let bin = rmp_serde::to_vec(&h).unwrap();
        assert_eq!(bin[0], 0xc4, "binary formats carry the hash as msgpack bin");
        assert_eq!(bin.len(), 34);
        assert_eq!(rmp_serde::from_slice::<CodeHash>(&bin).unwrap(), h);
    }
}

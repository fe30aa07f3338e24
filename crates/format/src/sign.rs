//! Signed calls: an HMAC-SHA256 over a call pickle's exact bytes, with a shared key.
//!
//! A receiver that only runs calls from senders it trusts configures a [`Keyring`] and refuses
//! everything else — unsigned pickles, pickles signed with a key it does not hold, and any
//! byte changed after signing — before decoding the call or touching a compiler. The MAC
//! covers the call's bytes as they travel, inline module included, so a flipped bit anywhere
//! is a signature failure, not a later hash or decode error.
//!
//! This is origin authentication with a *shared* secret (like Python's advice to sign pickles
//! with `hmac`): whoever can verify can also sign. It does not hide the call's contents.
//!
//! # Wire form (pickle kind 3)
//!
//! The body is a map with exactly these keys, in this order:
//!
//! | key | type | content |
//! |---|---|---|
//! | `key` | str | the key id, 1 to 64 bytes of UTF-8 |
//! | `hmac` | bin, 32 bytes | HMAC-SHA256(secret, `"wasmpickle signed call\0"` ‖ key id ‖ `"\0"` ‖ call) |
//! | `call` | bin | a complete call pickle (kind 2), header included |

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::error::{Error, ErrorKind, Result};
use crate::pickle::{
    Call, DecodeLimits, HEADER_LEN, Header, MAX_ARGS_BYTES, MAX_CODE_BYTES, MAX_ENV_BYTES,
    PickleKind,
};
use crate::wire::{Reader, write};

type HmacSha256 = Hmac<Sha256>;

const DOMAIN: &[u8] = b"wasmpickle signed call\0";

/// The shortest secret a [`SigningKey`] accepts, in bytes.
pub const MIN_SECRET_BYTES: usize = 16;

/// The longest key id, in bytes.
pub const MAX_KEY_ID: usize = 64;

/// A named shared secret. Its `Debug` and `Display` never show the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct SigningKey {
    id: String,
    secret: Vec<u8>,
}

impl SigningKey {
    /// A key named `id` with `secret`.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Malformed`] for an empty or over-long id, or a secret shorter than
    /// [`MIN_SECRET_BYTES`].
    pub fn new(id: &str, secret: &[u8]) -> Result<SigningKey> {
        if id.is_empty() || id.len() > MAX_KEY_ID || id.contains([':', '\n', '\r']) {
            return Err(Error::new(
                ErrorKind::Malformed,
                format!("key id {id:?} must be 1 to {MAX_KEY_ID} bytes without ':' or newlines"),
            ));
        }
        if secret.len() < MIN_SECRET_BYTES {
            return Err(Error::new(
                ErrorKind::Malformed,
                format!(
                    "the secret of key `{id}` is {} bytes; at least {MIN_SECRET_BYTES} are needed",
                    secret.len()
                ),
            ));
        }
        Ok(SigningKey {
            id: id.to_owned(),
            secret: secret.to_vec(),
        })
    }

    /// The key's id, which signed pickles carry in the clear.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The text form `<id>:<hex secret>`, as stored in a key file. Keep it secret.
    pub fn to_text(&self) -> String {
        let mut s = String::with_capacity(self.id.len() + 1 + 2 * self.secret.len());
        s.push_str(&self.id);
        s.push(':');
        for b in &self.secret {
            s.push_str(&format!("{b:02x}"));
        }
        s
    }

    fn mac(&self, call: &[u8]) -> HmacSha256 {
        let mut mac =
            HmacSha256::new_from_slice(&self.secret).expect("HMAC accepts keys of any length");
        mac.update(DOMAIN);
        mac.update(self.id.as_bytes());
        mac.update(&[0]);
        mac.update(call);
        mac
    }
}

impl FromStr for SigningKey {
    type Err = Error;

    /// Parses the text form `<id>:<hex secret>` (surrounding whitespace ignored).
    fn from_str(s: &str) -> Result<SigningKey> {
        let s = s.trim();
        let bad = || {
            Error::new(
                ErrorKind::Malformed,
                "a key is written `<id>:<hex secret>`".to_owned(),
            )
        };
        let (id, hex) = s.split_once(':').ok_or_else(bad)?;
        if hex.len() % 2 != 0 {
            return Err(bad());
        }
        let secret = hex
            .as_bytes()
            .chunks_exact(2)
            .map(|p| {
                std::str::from_utf8(p)
                    .ok()
                    .and_then(|p| u8::from_str_radix(p, 16).ok())
            })
            .collect::<Option<Vec<u8>>>()
            .ok_or_else(bad)?;
        SigningKey::new(id, &secret)
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("id", &self.id)
            .field("secret", &"<hidden>")
            .finish()
    }
}

/// The keys a receiver accepts signatures from, by id.
#[derive(Clone, Debug, Default)]
pub struct Keyring {
    keys: BTreeMap<String, SigningKey>,
}

impl Keyring {
    /// An empty keyring.
    pub fn new() -> Keyring {
        Keyring::default()
    }

    /// Adds a key, replacing one with the same id.
    pub fn add(&mut self, key: SigningKey) -> &mut Self {
        self.keys.insert(key.id.clone(), key);
        self
    }

    /// True when the keyring holds no key.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The ids of the keys held.
    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.keys.keys().map(String::as_str)
    }

    /// Checks a signed call pickle and returns the call it vouches for.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Signature`] for an unsigned pickle, an unknown key or a signature that
    /// does not match; the decoding errors of [`SignedCall::from_bytes`] and
    /// [`Call::from_bytes_with`] otherwise.
    pub fn verify_bytes(&self, bytes: &[u8], limits: &DecodeLimits) -> Result<Call> {
        if Header::read(bytes)?.kind == PickleKind::Call {
            return Err(Error::new(
                ErrorKind::Signature,
                "the call is not signed, and this receiver only accepts signed calls",
            ));
        }
        SignedCall::from_bytes(bytes)?.verify(self, limits)
    }
}

/// A call pickle with a signature over its exact bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct SignedCall {
    key_id: String,
    mac: [u8; 32],
    call: Vec<u8>,
}

impl Call {
    /// Signs this call's canonical bytes (code inline or by hash, as the call carries it).
    pub fn sign(&self, key: &SigningKey) -> SignedCall {
        let call = self.to_bytes();
        let mac = key.mac(&call).finalize().into_bytes().into();
        SignedCall {
            key_id: key.id.clone(),
            mac,
            call,
        }
    }
}

impl SignedCall {
    /// The id of the key that signed.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// The signed call's pickle bytes, not yet verified.
    pub fn call_bytes(&self) -> &[u8] {
        &self.call
    }

    /// Checks the signature against `keys` (in constant time) and decodes the call.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Signature`] when the key is unknown or the signature does not match;
    /// decoding errors of the call otherwise.
    pub fn verify(&self, keys: &Keyring, limits: &DecodeLimits) -> Result<Call> {
        let key = keys.keys.get(&self.key_id).ok_or_else(|| {
            Error::new(
                ErrorKind::Signature,
                format!(
                    "the call is signed with key `{}`, which this receiver does not hold",
                    self.key_id
                ),
            )
        })?;
        key.mac(&self.call).verify_slice(&self.mac).map_err(|_| {
            Error::new(
                ErrorKind::Signature,
                format!(
                    "the signature by key `{}` does not match the call",
                    self.key_id
                ),
            )
        })?;
        Call::from_bytes_with(&self.call, limits)
    }

    /// The signed pickle's bytes (kind 3).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN + 64 + self.key_id.len() + self.call.len());
        Header::write(PickleKind::SignedCall, &mut out);
        write::map_len(&mut out, 3);
        write::str(&mut out, "key");
        write::str(&mut out, &self.key_id);
        write::str(&mut out, "hmac");
        write::bin(&mut out, &self.mac);
        write::str(&mut out, "call");
        write::bin(&mut out, &self.call);
        out
    }

    /// Decodes a signed pickle's envelope. The signature is not checked here: see
    /// [`SignedCall::verify`].
    ///
    /// # Errors
    ///
    /// A typed [`Error`] for anything that is not the canonical encoding of a signed call.
    pub fn from_bytes(bytes: &[u8]) -> Result<SignedCall> {
        let header = Header::read(bytes)?;
        if header.kind != PickleKind::SignedCall {
            return Err(Error::new(
                ErrorKind::WrongKind,
                format!("expected a signed call pickle, found a {}", header.kind),
            ));
        }
        let mut r = Reader::new(&bytes[HEADER_LEN..]);
        let at = r.position();
        let n = r.map_len("signed call")?;
        if n != 3 {
            return Err(Error::new(
                ErrorKind::Malformed,
                format!("signed call at offset {at} has {n} entries, expected 3"),
            ));
        }
        r.key("key", "signed call")?;
        let key_id = r.str("key", MAX_KEY_ID)?;
        if key_id.is_empty() {
            return Err(Error::new(
                ErrorKind::Malformed,
                "signed call has an empty key id",
            ));
        }
        r.key("hmac", "signed call")?;
        let mac = r.bin("hmac", 32)?;
        let mac: [u8; 32] = mac.try_into().map_err(|_| {
            Error::new(
                ErrorKind::Malformed,
                format!("hmac is {} bytes, expected 32", mac.len()),
            )
        })?;
        r.key("call", "signed call")?;
        let max_call = HEADER_LEN + MAX_CODE_BYTES + MAX_ENV_BYTES + MAX_ARGS_BYTES + 4096;
        let call = r.bin("call", max_call)?.to_vec();
        if !r.is_empty() {
            return Err(Error::new(
                ErrorKind::TrailingBytes,
                "bytes follow the end of the signed call",
            ));
        }
        Ok(SignedCall {
            key_id: key_id.to_owned(),
            mac,
            call,
        })
    }
}

impl fmt::Debug for SignedCall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignedCall")
            .field("key_id", &self.key_id)
            .field("call_len", &self.call.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Closure, CodeHash, CodeRef};

    fn call() -> Call {
        Closure::new(CodeRef::by_hash(CodeHash::digest(b"m")), "scale", &2.5)
            .unwrap()
            .call(&(4.0,))
            .unwrap()
    }

    fn key(id: &str, byte: u8) -> SigningKey {
        SigningKey::new(id, &[byte; 32]).unwrap()
    }

    #[test]
    fn sign_and_verify() {
        let mut ring = Keyring::new();
        ring.add(key("prod", 7));
        let signed = call().sign(&key("prod", 7));
        let bytes = signed.to_bytes();
        assert_eq!(SignedCall::from_bytes(&bytes).unwrap(), signed);
        let back = ring.verify_bytes(&bytes, &DecodeLimits::default()).unwrap();
        assert_eq!(back, call());
    }

    #[test]
    fn refusals_have_the_signature_kind() {
        let mut ring = Keyring::new();
        ring.add(key("prod", 7));
        let limits = DecodeLimits::default();
        let unsigned = ring.verify_bytes(&call().to_bytes(), &limits).unwrap_err();
        assert_eq!(unsigned.kind(), ErrorKind::Signature);
        let stranger = call().sign(&key("dev", 7)).to_bytes();
        assert_eq!(
            ring.verify_bytes(&stranger, &limits).unwrap_err().kind(),
            ErrorKind::Signature
        );
        let forged = call().sign(&key("prod", 8)).to_bytes();
        assert_eq!(
            ring.verify_bytes(&forged, &limits).unwrap_err().kind(),
            ErrorKind::Signature
        );
    }

    #[test]
    fn every_bit_flip_is_refused() {
        let mut ring = Keyring::new();
        ring.add(key("prod", 7));
        let bytes = call().sign(&key("prod", 7)).to_bytes();
        for i in 0..bytes.len() * 8 {
            let mut b = bytes.clone();
            b[i / 8] ^= 1 << (i % 8);
            assert!(
                ring.verify_bytes(&b, &DecodeLimits::default()).is_err(),
                "flip {i}"
            );
        }
    }

    #[test]
    fn key_text_round_trips_and_hides_the_secret() {
        let k = key("prod", 0xab);
        let text = k.to_text();
        assert_eq!(text.parse::<SigningKey>().unwrap(), k);
        assert!(!format!("{k:?}").contains("abab"));
        for bad in ["", "prod", "prod:zz", ":abcd", "prod:abc", "prod:00"] {
            assert_eq!(
                bad.parse::<SigningKey>().unwrap_err().kind(),
                ErrorKind::Malformed,
                "{bad}"
            );
        }
    }
}

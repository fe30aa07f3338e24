//! The shared-key handshake: mutual HMAC-SHA256 challenge–response over fresh nonces.
//!
//! A worker that listens on TCP runs whatever it is sent, so it first makes the client prove
//! it holds a shared key, and proves the same to the client, so that a client never ships its
//! code and data to an impostor. Both sides contribute 32 random bytes; each proof is an
//! HMAC-SHA256 with the key's secret over a domain string, the prover's role, the key id and
//! both nonces (`docs/protocol.md` §4):
//!
//! ```text
//! proof(role) = HMAC-SHA256(secret, "wasmpickle worker handshake v1\0" ‖ role ‖ "\0"
//!                                   ‖ key id ‖ "\0" ‖ client nonce ‖ worker nonce)
//! ```
//!
//! The role (`worker` or `client`) keeps one side's proof from being replayed as the other's;
//! the fresh nonces keep a recorded handshake from being replayed at all. Proofs are compared
//! in constant time. The handshake authenticates; it does not encrypt — run it over a network
//! you trust or a tunnel, as with any plain TCP service.
//!
//! The keys are [`SigningKey`]s, the same `<id>:<hex secret>` keys that sign calls.

use std::io::{BufRead, Write};

use hmac::{Hmac, Mac};
use sha2::Sha256;
use wasmpickle::SigningKey;

use crate::error::{Error, ErrorKind, Result};
use crate::frame::{GREETING_MAX_FRAME, read_frame};
use crate::message::{self, AuthChallenge, AuthHello, AuthProof, Bye, ty};

type HmacSha256 = Hmac<Sha256>;

const DOMAIN: &[u8] = b"wasmpickle worker handshake v1\0";

/// Bytes of each side's nonce.
pub(crate) const NONCE_LEN: usize = 32;

/// The secret of a key. `SigningKey` keeps its secret private and offers no MAC over
/// arbitrary bytes, so it is read back from the key's text form `<id>:<hex secret>`.
fn secret(key: &SigningKey) -> Vec<u8> {
    let text = key.to_text();
    let hex = text.rsplit_once(':').map_or("", |(_, h)| h);
    hex.as_bytes()
        .chunks_exact(2)
        .filter_map(|p| {
            std::str::from_utf8(p)
                .ok()
                .and_then(|p| u8::from_str_radix(p, 16).ok())
        })
        .collect()
}

fn mac(key: &SigningKey, role: &str, client_nonce: &[u8], worker_nonce: &[u8]) -> HmacSha256 {
    let mut mac = HmacSha256::new_from_slice(&secret(key)).expect("HMAC takes keys of any length");
    mac.update(DOMAIN);
    mac.update(role.as_bytes());
    mac.update(&[0]);
    mac.update(key.id().as_bytes());
    mac.update(&[0]);
    mac.update(client_nonce);
    mac.update(worker_nonce);
    mac
}

fn proof(key: &SigningKey, role: &str, client_nonce: &[u8], worker_nonce: &[u8]) -> Vec<u8> {
    mac(key, role, client_nonce, worker_nonce)
        .finalize()
        .into_bytes()
        .to_vec()
}

fn check(
    key: &SigningKey,
    role: &str,
    client_nonce: &[u8],
    worker_nonce: &[u8],
    proof: &[u8],
) -> bool {
    mac(key, role, client_nonce, worker_nonce)
        .verify_slice(proof)
        .is_ok()
}

fn nonce() -> Result<Vec<u8>> {
    let mut n = vec![0; NONCE_LEN];
    getrandom::fill(&mut n)
        .map_err(|e| Error::new(ErrorKind::Io, format!("cannot draw a random nonce: {e}")))?;
    Ok(n)
}

fn handshake_error(message: impl Into<String>) -> Error {
    Error::new(ErrorKind::Handshake, message)
}

/// Reads the next handshake message of type `want`.
fn expect<R: BufRead + ?Sized, T: for<'a> serde::Deserialize<'a>>(
    reader: &mut R,
    buf: &mut Vec<u8>,
    want: u8,
    what: &str,
) -> Result<T> {
    if !read_frame(reader, GREETING_MAX_FRAME, buf)? {
        return Err(handshake_error(format!(
            "the peer closed the connection instead of sending {what}"
        )));
    }
    let (t, body) = message::split(buf)?;
    if t == ty::BYE {
        let bye: Bye = message::decode(t, body)?;
        return Err(handshake_error(format!(
            "the worker refused the handshake: {}",
            bye.message
        )));
    }
    if t != want {
        return Err(handshake_error(format!(
            "expected {what} (type 0x{want:02x}), got message type 0x{t:02x}"
        )));
    }
    message::decode(t, body)
}

/// The client's side: claims `key`, checks the worker's proof, sends its own.
///
/// # Errors
///
/// [`ErrorKind::Handshake`] when the worker does not know the key or its proof is wrong;
/// I/O and framing errors of the connection.
pub(crate) fn client<R: BufRead + ?Sized, W: Write + ?Sized>(
    reader: &mut R,
    writer: &mut W,
    key: &SigningKey,
) -> Result<()> {
    let client_nonce = nonce()?;
    let mut out = Vec::new();
    message::encode(
        &mut out,
        ty::AUTH_HELLO,
        &AuthHello {
            key: key.id().to_owned(),
            nonce: client_nonce.clone(),
        },
    )?;
    write_flush(writer, &out)?;
    let mut buf = Vec::new();
    let challenge: AuthChallenge = expect(reader, &mut buf, ty::AUTH_CHALLENGE, "AuthChallenge")?;
    if challenge.nonce.len() != NONCE_LEN
        || !check(
            key,
            "worker",
            &client_nonce,
            &challenge.nonce,
            &challenge.proof,
        )
    {
        return Err(handshake_error(format!(
            "the worker could not prove it holds key `{}`",
            key.id()
        )));
    }
    out.clear();
    message::encode(
        &mut out,
        ty::AUTH_PROOF,
        &AuthProof {
            proof: proof(key, "client", &client_nonce, &challenge.nonce),
        },
    )?;
    write_flush(writer, &out)
}

/// The worker's side: finds the key the client claims among `keys`, proves it, and checks the
/// client's proof. Returns the id of the key the client proved.
///
/// # Errors
///
/// [`ErrorKind::Handshake`] when the client claims an unknown key or its proof is wrong (the
/// worker has then sent a `Bye` saying so); I/O and framing errors of the connection.
pub(crate) fn worker<R: BufRead + ?Sized, W: Write + ?Sized>(
    reader: &mut R,
    writer: &mut W,
    keys: &[SigningKey],
) -> Result<String> {
    let mut buf = Vec::new();
    let hello: AuthHello = expect(reader, &mut buf, ty::AUTH_HELLO, "AuthHello")?;
    let refuse = |writer: &mut W, message: String| {
        let mut out = Vec::new();
        let _ = message::encode(
            &mut out,
            ty::BYE,
            &Bye {
                kind: ErrorKind::Handshake.as_str().to_owned(),
                message: message.clone(),
            },
        );
        let _ = write_flush(writer, &out);
        handshake_error(message)
    };
    let Some(key) = keys.iter().find(|k| k.id() == hello.key) else {
        return Err(refuse(writer, format!("unknown key `{}`", hello.key)));
    };
    if hello.nonce.len() != NONCE_LEN {
        return Err(refuse(
            writer,
            format!(
                "a nonce must be {NONCE_LEN} bytes, not {}",
                hello.nonce.len()
            ),
        ));
    }
    let worker_nonce = nonce()?;
    let mut out = Vec::new();
    message::encode(
        &mut out,
        ty::AUTH_CHALLENGE,
        &AuthChallenge {
            nonce: worker_nonce.clone(),
            proof: proof(key, "worker", &hello.nonce, &worker_nonce),
        },
    )?;
    write_flush(writer, &out)?;
    let answer: AuthProof = expect(reader, &mut buf, ty::AUTH_PROOF, "AuthProof")?;
    if !check(key, "client", &hello.nonce, &worker_nonce, &answer.proof) {
        return Err(refuse(
            writer,
            format!("the client could not prove it holds key `{}`", key.id()),
        ));
    }
    Ok(key.id().to_owned())
}

fn write_flush<W: Write + ?Sized>(writer: &mut W, bytes: &[u8]) -> Result<()> {
    writer
        .write_all(bytes)
        .and_then(|()| writer.flush())
        .map_err(|e| Error::io("cannot write a handshake message", e))
}

#[cfg(test)]
mod tests {
    use std::io::BufReader;
    use std::os::unix::net::UnixStream;
    use std::thread;

    use super::*;

    fn key(id: &str, fill: u8) -> SigningKey {
        SigningKey::new(id, &[fill; 32]).unwrap()
    }

    fn run(client_key: SigningKey, worker_keys: Vec<SigningKey>) -> (Result<()>, Result<String>) {
        let (a, b) = UnixStream::pair().unwrap();
        let worker = thread::spawn(move || {
            let mut reader = BufReader::new(b.try_clone().unwrap());
            let mut writer = b;
            worker(&mut reader, &mut writer, &worker_keys)
        });
        let mut reader = BufReader::new(a.try_clone().unwrap());
        let mut writer = a;
        let c = client(&mut reader, &mut writer, &client_key);
        // A client that gave up closes its end, so the worker's read ends too.
        drop(writer);
        drop(reader);
        (c, worker.join().unwrap())
    }

    #[test]
    fn the_secret_is_read_back_exactly() {
        let k = SigningKey::new("k", &(0..40).collect::<Vec<u8>>()).unwrap();
        assert_eq!(secret(&k), (0..40).collect::<Vec<u8>>());
    }

    #[test]
    fn both_sides_holding_the_key_pass() {
        let (c, w) = run(key("k1", 1), vec![key("k0", 0), key("k1", 1)]);
        c.unwrap();
        assert_eq!(w.unwrap(), "k1");
    }

    #[test]
    fn a_wrong_secret_fails_on_both_sides() {
        let (c, w) = run(key("k1", 1), vec![key("k1", 2)]);
        assert_eq!(c.unwrap_err().kind(), ErrorKind::Handshake);
        assert_eq!(w.unwrap_err().kind(), ErrorKind::Handshake);
    }

    #[test]
    fn an_unknown_key_is_refused_by_name() {
        let (c, w) = run(key("stranger", 1), vec![key("k1", 1)]);
        let c = c.unwrap_err();
        assert_eq!(c.kind(), ErrorKind::Handshake);
        assert!(c.to_string().contains("unknown key `stranger`"), "{c}");
        assert_eq!(w.unwrap_err().kind(), ErrorKind::Handshake);
    }

    #[test]
    fn proofs_depend_on_role_and_nonces() {
        let k = key("k", 3);
        let (n1, n2) = ([1u8; 32], [2u8; 32]);
        let p = proof(&k, "worker", &n1, &n2);
        assert!(check(&k, "worker", &n1, &n2, &p));
        assert!(!check(&k, "client", &n1, &n2, &p));
        assert!(!check(&k, "worker", &n2, &n1, &p));
        assert!(!check(&key("k", 4), "worker", &n1, &n2, &p));
    }
}

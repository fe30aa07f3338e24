//! `wasmpickle key`: shared signing keys, and reading them for `--key`.
//!
//! A key file holds one line, `<id>:<hex secret>` (the text form of
//! [`SigningKey`](wasmpickle::SigningKey)). The secret signs and verifies alike (HMAC-SHA256),
//! so a key file is as sensitive as a password: `key new -o FILE` creates it readable by its
//! owner only, and reading a key file that others can read logs a warning.

use std::fs::{self, OpenOptions};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow};
use clap::{Args, Subcommand};
use wasmpickle::{Keyring, SigningKey};

use crate::stdio;

/// The length of a generated secret, in bytes.
const SECRET_BYTES: usize = 32;

/// Make and manage signing keys for signed pickles.
///
/// A signed pickle carries an HMAC-SHA256 of the call, made with a shared secret, and the
/// key's id in the clear. `pack --key FILE` signs; `run --key FILE` runs only calls signed
/// with one of its keys; `inspect --key FILE` says whether a signature verifies.
#[derive(Args, Debug)]
pub(crate) struct Key {
    #[command(subcommand)]
    command: KeyCommand,
}

#[derive(Debug, Subcommand)]
enum KeyCommand {
    New(New),
}

/// Generate a new signing key: a 32-byte secret from the operating system's random source.
///
/// The key is written as one line, `<id>:<hex secret>`, to OUT (created readable and writable
/// by its owner only; an existing file is left alone unless --force), or to stdout without
/// -o. Give the file to every process that signs or verifies with the key.
#[derive(Args, Debug)]
struct New {
    /// The key's id, carried in the clear by the pickles it signs: 1 to 64 bytes, no `:`
    #[arg(long, value_name = "NAME")]
    id: String,

    /// Write the key here (mode 0600) instead of to stdout
    #[arg(short, long, value_name = "OUT")]
    output: Option<PathBuf>,

    /// Overwrite OUT if it exists
    #[arg(long)]
    force: bool,
}

impl Key {
    /// Runs the `key` subcommand.
    ///
    /// # Errors
    ///
    /// When the id is not a valid key id, the system has no randomness to give, or the key
    /// cannot be written (including to an existing file without --force).
    pub(crate) fn run(&self) -> anyhow::Result<()> {
        match &self.command {
            KeyCommand::New(new) => new.run(),
        }
    }
}

impl New {
    fn run(&self) -> anyhow::Result<()> {
        let mut secret = [0u8; SECRET_BYTES];
        getrandom::fill(&mut secret)
            .map_err(|e| anyhow!("cannot get random bytes from the operating system: {e}"))?;
        let key = SigningKey::new(&self.id, &secret).context("cannot make the key")?;
        let text = format!("{}\n", key.to_text());
        match self.output.as_deref().filter(|p| p.as_os_str() != "-") {
            Some(path) => {
                write_secret(path, text.as_bytes(), self.force)?;
                tracing::info!(id = key.id(), file = %path.display(), "wrote a new key");
                Ok(())
            }
            None => stdio::write_stdout(text.as_bytes()).context("cannot write to stdout"),
        }
    }
}

/// Writes `bytes` to a file only its owner can read, refusing to replace an existing file
/// unless `force`.
fn write_secret(path: &Path, bytes: &[u8], force: bool) -> anyhow::Result<()> {
    let mut options = OpenOptions::new();
    options.write(true);
    if force {
        options.create(true).truncate(true);
    } else {
        options.create_new(true);
    }
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).map_err(|e| match e.kind() {
        io::ErrorKind::AlreadyExists => anyhow!(
            "{} already exists; pass --force to overwrite it",
            path.display()
        ),
        _ => anyhow::Error::new(e).context(format!("cannot create {}", path.display())),
    })?;
    // The mode given at creation does not apply to a file that already existed (--force), so
    // it is set again before the secret goes in.
    #[cfg(unix)]
    file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .with_context(|| format!("cannot make {} private", path.display()))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Why a key file could not be used.
#[derive(Debug)]
pub(crate) enum KeyFileError {
    /// The file could not be read.
    Io(io::Error),
    /// The file does not hold a key.
    Malformed(String),
}

impl std::fmt::Display for KeyFileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeyFileError::Io(e) => e.fmt(f),
            KeyFileError::Malformed(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for KeyFileError {}

/// Reads the key in `path` (`<id>:<hex secret>`), warning when others may read the file.
///
/// # Errors
///
/// When the file cannot be read or does not hold a key.
pub(crate) fn load(path: &Path) -> Result<SigningKey, KeyFileError> {
    let text = fs::read_to_string(path).map_err(|e| {
        KeyFileError::Io(io::Error::new(
            e.kind(),
            format!("cannot read key file {}: {e}", path.display()),
        ))
    })?;
    #[cfg(unix)]
    if let Ok(meta) = fs::metadata(path) {
        let mode = std::os::unix::fs::PermissionsExt::mode(&meta.permissions());
        if mode & 0o077 != 0 {
            tracing::warn!(
                "key file {} can be read by others (mode {:o}); `chmod 600` it",
                path.display(),
                mode & 0o777
            );
        }
    }
    text.parse::<SigningKey>()
        .map_err(|e| KeyFileError::Malformed(format!("key file {}: {e}", path.display())))
}

/// The keyring of every `--key` file.
///
/// # Errors
///
/// As [`load`]; also when two files hold keys with the same id and different secrets.
pub(crate) fn keyring(paths: &[PathBuf]) -> Result<Keyring, KeyFileError> {
    let mut keys: Vec<SigningKey> = Vec::new();
    for path in paths {
        let key = load(path)?;
        if let Some(other) = keys.iter().find(|k| k.id() == key.id())
            && *other != key
        {
            return Err(KeyFileError::Malformed(format!(
                "key file {} holds another secret for key id `{}`, which an earlier --key \
                 already has",
                path.display(),
                key.id()
            )));
        }
        keys.push(key);
    }
    let mut ring = Keyring::new();
    for key in keys {
        ring.add(key);
    }
    Ok(ring)
}

/// [`load`] for the subcommands that report errors through `anyhow`.
///
/// # Errors
///
/// As [`load`].
pub(crate) fn load_any(path: &Path) -> anyhow::Result<SigningKey> {
    Ok(load(path)?)
}

/// [`keyring`] for the subcommands that report errors through `anyhow`; `None` without keys.
///
/// # Errors
///
/// As [`keyring`].
pub(crate) fn keyring_any(paths: &[PathBuf]) -> anyhow::Result<Option<Keyring>> {
    if paths.is_empty() {
        return Ok(None);
    }
    Ok(Some(keyring(paths)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_keys_read_back_and_stay_private() {
        let dir = std::env::temp_dir().join(format!("wasmpickle-key-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("ci.key");
        let key = SigningKey::new("ci", &[5; 32]).unwrap();
        write_secret(&path, key.to_text().as_bytes(), false).unwrap();
        assert_eq!(load(&path).unwrap(), key);
        let err = write_secret(&path, b"x", false).unwrap_err();
        assert!(err.to_string().contains("--force"), "{err}");
        assert_eq!(load(&path).unwrap(), key, "left alone");
        write_secret(&path, b"ci:00", true).unwrap();
        assert!(matches!(load(&path), Err(KeyFileError::Malformed(_))));
        #[cfg(unix)]
        {
            let meta = fs::metadata(&path).unwrap();
            let mode = std::os::unix::fs::PermissionsExt::mode(&meta.permissions());
            assert_eq!(mode & 0o777, 0o600);
        }
        assert!(matches!(
            load(&dir.join("missing")),
            Err(KeyFileError::Io(_))
        ));
        fs::remove_dir_all(&dir).unwrap();
    }
}

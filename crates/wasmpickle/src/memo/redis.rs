//! The shared memo backend: a Redis server (feature `redis`).

use std::fmt;
use std::io;
use std::sync::Mutex;
use std::time::Duration;

use ::redis::{Client, Connection, RedisError};

use super::entry::{self, Opened};
use super::{BackendStats, Fetched, MemoBackend, MemoKey, unix_ms_now};
use crate::error::{Error, ErrorKind, Result};

/// How long connecting, and each command, may take before the backend gives up (and the memo
/// counts a miss).
const TIMEOUT: Duration = Duration::from_secs(5);

/// Keys scanned per `SCAN` round trip by `clear` and `stats`.
const SCAN_BATCH: usize = 512;

/// A memo backend on a Redis server, shared by any number of processes and machines
/// (feature `redis`).
///
/// Each entry is one Redis string under `<prefix><64 hex digits of the key>` (default prefix
/// `wasmpickle:memo:1:`), framed with the same checksum as [`RedbBackend`](crate::RedbBackend)'s
/// entries (`docs/memo.md`), so a value damaged or overwritten by another client is a miss.
/// A time to live is Redis's own (`SET ... PX`), and also written into the frame.
/// [`clear`](MemoBackend::clear) and [`stats`](MemoBackend::stats) walk the prefix with
/// `SCAN`, never `FLUSHDB`, so a server shared with other data keeps it.
///
/// It uses redis-rs's synchronous API over one connection (commands from several threads take
/// turns); a connection that fails is dropped and opened again on the next command. Whether
/// entries survive a server restart is the server's configuration (`appendonly`, `save`).
pub struct RedisBackend {
    client: Client,
    url: String,
    prefix: String,
    connection: Mutex<Option<Connection>>,
}

impl RedisBackend {
    /// Connects to the server at `url` (`redis://[user:password@]host[:port][/db]`,
    /// `rediss://` for TLS where redis-rs is built with it, `redis+unix:///path`), and checks
    /// it answers `PING`.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Io`] when the URL is malformed or the server cannot be reached.
    pub fn open(url: &str) -> Result<RedisBackend> {
        RedisBackend::with_prefix(url, "wasmpickle:memo:1:")
    }

    /// Like [`RedisBackend::open`], with keys under `prefix` instead of the default, to keep
    /// several memos apart on one server.
    ///
    /// # Errors
    ///
    /// As [`RedisBackend::open`].
    pub fn with_prefix(url: &str, prefix: &str) -> Result<RedisBackend> {
        let shown = redact(url);
        let client = Client::open(url).map_err(|e| {
            Error::new(ErrorKind::Io, format!("bad Redis URL {shown}")).with_source(e)
        })?;
        let backend = RedisBackend {
            client,
            url: shown,
            prefix: prefix.to_owned(),
            connection: Mutex::new(None),
        };
        backend
            .with_connection(|c| ::redis::cmd("PING").query::<String>(c))
            .map_err(|e| {
                Error::new(
                    ErrorKind::Io,
                    format!("cannot reach the Redis server at {}", backend.url),
                )
                .with_source(e)
            })?;
        Ok(backend)
    }

    fn name(&self, key: &MemoKey) -> String {
        format!("{}{}", self.prefix, key.to_hex())
    }

    /// Runs `f` on the connection, connecting first if needed. A failed connection is
    /// dropped, and a command that failed because the connection broke is tried once more on
    /// a new one.
    fn with_connection<T>(
        &self,
        mut f: impl FnMut(&mut Connection) -> std::result::Result<T, RedisError>,
    ) -> io::Result<T> {
        let mut slot = self.connection.lock().unwrap_or_else(|e| e.into_inner());
        for attempt in 0..2 {
            if slot.is_none() {
                let c = self
                    .client
                    .get_connection_with_timeout(TIMEOUT)
                    .map_err(to_io)?;
                c.set_read_timeout(Some(TIMEOUT)).map_err(to_io)?;
                c.set_write_timeout(Some(TIMEOUT)).map_err(to_io)?;
                *slot = Some(c);
            }
            let c = slot.as_mut().expect("connected above");
            match f(c) {
                Ok(v) => return Ok(v),
                Err(e) => {
                    let broken = e.is_io_error() || e.is_connection_dropped();
                    *slot = None;
                    if !broken || attempt == 1 {
                        return Err(to_io(e));
                    }
                }
            }
        }
        unreachable!("the loop returns on its second attempt")
    }

    /// Every key under the prefix, a batch at a time.
    fn scan(
        &self,
        mut each: impl FnMut(&mut Connection, Vec<String>) -> io::Result<()>,
    ) -> io::Result<()> {
        let pattern = format!("{}*", glob_escape(&self.prefix));
        let mut cursor: u64 = 0;
        loop {
            let (next, keys): (u64, Vec<String>) = self.with_connection(|c| {
                ::redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(&pattern)
                    .arg("COUNT")
                    .arg(SCAN_BATCH)
                    .query(c)
            })?;
            if !keys.is_empty() {
                let mut slot = self.connection.lock().unwrap_or_else(|e| e.into_inner());
                match slot.as_mut() {
                    Some(c) => each(c, keys)?,
                    None => return Err(io::Error::other("the Redis connection was lost")),
                }
            }
            if next == 0 {
                return Ok(());
            }
            cursor = next;
        }
    }
}

impl fmt::Debug for RedisBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisBackend")
            .field("url", &self.url)
            .field("prefix", &self.prefix)
            .finish()
    }
}

fn to_io(e: RedisError) -> io::Error {
    io::Error::other(e)
}

/// The URL without its password, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let auth = &url[scheme + 3..at];
            let user = auth.split(':').next().unwrap_or("");
            format!("{}://{user}:***@{}", &url[..scheme], &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

/// `s` with Redis glob metacharacters escaped.
fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        if matches!(ch, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(ch);
    }
    out
}

impl MemoBackend for RedisBackend {
    fn get(&self, key: &MemoKey) -> io::Result<Fetched> {
        let name = self.name(key);
        let stored: Option<Vec<u8>> =
            self.with_connection(|c| ::redis::cmd("GET").arg(&name).query(c))?;
        let Some(stored) = stored else {
            return Ok(Fetched::Absent);
        };
        Ok(match entry::open(key, &stored, unix_ms_now()) {
            Ok(Opened::Live(value)) => Fetched::Value(value.to_vec()),
            Ok(Opened::Expired) => Fetched::Absent,
            Err(reason) => Fetched::Corrupt(reason),
        })
    }

    fn set(&self, key: &MemoKey, value: &[u8], ttl: Option<Duration>) -> io::Result<()> {
        self.set_many(&[(*key, value.to_vec())], ttl)
    }

    fn set_many(&self, entries: &[(MemoKey, Vec<u8>)], ttl: Option<Duration>) -> io::Result<()> {
        let expires = entry::expiry(unix_ms_now(), ttl);
        let mut pipe = ::redis::pipe();
        for (key, value) in entries {
            let cmd = pipe
                .cmd("SET")
                .arg(self.name(key))
                .arg(entry::seal(key, value, expires));
            if let Some(ttl) = ttl {
                cmd.arg("PX")
                    .arg(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1));
            }
            cmd.ignore();
        }
        self.with_connection(|c| pipe.query::<()>(c))
    }

    fn remove(&self, key: &MemoKey) -> io::Result<bool> {
        let name = self.name(key);
        let n: u64 = self.with_connection(|c| ::redis::cmd("DEL").arg(&name).query(c))?;
        Ok(n > 0)
    }

    fn clear(&self) -> io::Result<u64> {
        let mut removed = 0;
        self.scan(|c, keys| {
            let n: u64 = ::redis::cmd("UNLINK").arg(&keys).query(c).map_err(to_io)?;
            removed += n;
            Ok(())
        })?;
        Ok(removed)
    }

    fn stats(&self) -> io::Result<BackendStats> {
        let mut stats = BackendStats::default();
        self.scan(|c, keys| {
            let mut pipe = ::redis::pipe();
            for k in &keys {
                pipe.cmd("STRLEN").arg(k);
            }
            let lens: Vec<u64> = pipe.query(c).map_err(to_io)?;
            for (k, len) in keys.iter().zip(lens) {
                // A key removed between the scan and STRLEN has length 0.
                if len > 0 {
                    stats.entries += 1;
                    stats.bytes += k.len() as u64 + len;
                }
            }
            Ok(())
        })?;
        Ok(stats)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_redacted_and_globs_escaped() {
        assert_eq!(
            redact("redis://me:secret@host:6379/0"),
            "redis://me:***@host:6379/0"
        );
        assert_eq!(redact("redis://host:6379"), "redis://host:6379");
        assert_eq!(glob_escape("a*b?[c]\\"), "a\\*b\\?\\[c\\]\\\\");
    }
}

//! The embedded memo backend: one redb file.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use ::redb::{
    Database, DatabaseError, ReadableDatabase, ReadableTable, ReadableTableMetadata,
    TableDefinition, TableError,
};

use super::entry::{self, Opened};
use super::{BackendStats, Fetched, MemoBackend, MemoKey, unix_ms_now};
use crate::error::{Error, ErrorKind, Result};

/// The one table: 32-byte keys, framed entries (`docs/memo.md`).
const TABLE: TableDefinition<'static, &[u8], &[u8]> = TableDefinition::new("wasmpickle-memo-1");

/// A memo backend in one [redb](https://www.redb.org) file: the embedded default.
///
/// redb is a crash-safe, copy-on-write B-tree in a single file: a process killed in the
/// middle of a store leaves the file as it was before that store's transaction, and every
/// store is durable (`fsync`ed) when it returns. Each entry is framed with a checksum over
/// its key and value (`docs/memo.md`, "Entries"), so damage that slips past redb — a flipped
/// bit inside a value — is a miss, never a wrong result.
///
/// **One process at a time.** The file is opened in redb's default `ExclusiveWriter` mode:
/// it is locked for as long as the backend lives, and another process opening it fails with
/// [`ErrorKind::Io`] ("open in another process") after a second, or waits longer with
/// [`RedbBackend::open_waiting`]. Any number of threads of the owning process share it.
/// Processes that must share one memo concurrently should share a Redis server instead, or
/// hold the file only around each lookup and store, as `wasmpickle run --memo` does. (redb
/// 4.5 added multi-process modes; this backend does not rely on them yet.)
///
/// Expired entries are misses when read and are replaced by the next store under their key;
/// [`clear`](MemoBackend::clear) removes everything.
pub struct RedbBackend {
    db: Database,
    path: PathBuf,
}

impl RedbBackend {
    /// Opens the memo file at `path`, creating it (not its directory) if missing. Waits up
    /// to a second while another process has it open: the lock is an advisory file lock,
    /// which a child process shares between being forked and starting its program, so a
    /// program that spawns processes can see its own file locked for an instant.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Io`] when the file cannot be created or opened, is open in another
    /// process, or is not a redb database.
    pub fn open(path: impl AsRef<Path>) -> Result<RedbBackend> {
        RedbBackend::open_waiting(path, Duration::from_secs(1))
    }

    fn with_database(path: &Path, db: Database) -> Result<RedbBackend> {
        // Create the table, so that readers never meet a missing one.
        let txn = db.begin_write().map_err(|e| io_error(path, e))?;
        txn.open_table(TABLE).map_err(|e| io_error(path, e))?;
        txn.commit().map_err(|e| io_error(path, e))?;
        Ok(RedbBackend {
            db,
            path: path.to_owned(),
        })
    }

    /// Like [`RedbBackend::open`], waiting up to `timeout` while another process has the file
    /// open.
    ///
    /// # Errors
    ///
    /// As [`RedbBackend::open`]; the "open in another process" error once `timeout` passed.
    pub fn open_waiting(path: impl AsRef<Path>, timeout: Duration) -> Result<RedbBackend> {
        let path = path.as_ref();
        let deadline = Instant::now() + timeout;
        let mut pause = Duration::from_millis(1);
        loop {
            match Database::create(path) {
                Ok(db) => return RedbBackend::with_database(path, db),
                Err(DatabaseError::DatabaseAlreadyOpen) if Instant::now() < deadline => {
                    thread::sleep(pause.min(deadline.saturating_duration_since(Instant::now())));
                    pause = (pause * 2).min(Duration::from_millis(50));
                }
                Err(e) => return Err(open_error(path, e)),
            }
        }
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl fmt::Debug for RedbBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedbBackend")
            .field("path", &self.path)
            .finish()
    }
}

fn open_error(path: &Path, e: DatabaseError) -> Error {
    match e {
        DatabaseError::DatabaseAlreadyOpen => Error::new(
            ErrorKind::Io,
            format!(
                "memo file {} is open in another process (one process at a time)",
                path.display()
            ),
        ),
        e => Error::new(
            ErrorKind::Io,
            format!("cannot open memo file {}", path.display()),
        )
        .with_source(e),
    }
}

fn io_error(path: &Path, e: impl Into<::redb::Error>) -> Error {
    Error::new(
        ErrorKind::Io,
        format!("cannot use memo file {}", path.display()),
    )
    .with_source(e.into())
}

fn to_io(e: impl Into<::redb::Error>) -> io::Error {
    match e.into() {
        ::redb::Error::Io(e) => e,
        e => io::Error::other(e),
    }
}

impl MemoBackend for RedbBackend {
    fn get(&self, key: &MemoKey) -> io::Result<Fetched> {
        let txn = self.db.begin_read().map_err(to_io)?;
        let table = match txn.open_table(TABLE) {
            Ok(table) => table,
            Err(TableError::TableDoesNotExist(_)) => return Ok(Fetched::Absent),
            Err(e) => return Err(to_io(e)),
        };
        let Some(stored) = table.get(key.as_bytes().as_slice()).map_err(to_io)? else {
            return Ok(Fetched::Absent);
        };
        Ok(match entry::open(key, stored.value(), unix_ms_now()) {
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
        let txn = self.db.begin_write().map_err(to_io)?;
        {
            let mut table = txn.open_table(TABLE).map_err(to_io)?;
            for (key, value) in entries {
                let sealed = entry::seal(key, value, expires);
                table
                    .insert(key.as_bytes().as_slice(), sealed.as_slice())
                    .map_err(to_io)?;
            }
        }
        txn.commit().map_err(to_io)
    }

    fn remove(&self, key: &MemoKey) -> io::Result<bool> {
        let txn = self.db.begin_write().map_err(to_io)?;
        let removed = {
            let mut table = txn.open_table(TABLE).map_err(to_io)?;
            table
                .remove(key.as_bytes().as_slice())
                .map_err(to_io)?
                .is_some()
        };
        txn.commit().map_err(to_io)?;
        Ok(removed)
    }

    fn clear(&self) -> io::Result<u64> {
        let txn = self.db.begin_write().map_err(to_io)?;
        let n = txn.open_table(TABLE).map_err(to_io)?.len().map_err(to_io)?;
        txn.delete_table(TABLE).map_err(to_io)?;
        txn.open_table(TABLE).map_err(to_io)?;
        txn.commit().map_err(to_io)?;
        Ok(n)
    }

    fn stats(&self) -> io::Result<BackendStats> {
        let txn = self.db.begin_read().map_err(to_io)?;
        let table = match txn.open_table(TABLE) {
            Ok(table) => table,
            Err(TableError::TableDoesNotExist(_)) => return Ok(BackendStats::default()),
            Err(e) => return Err(to_io(e)),
        };
        let mut stats = BackendStats::default();
        for item in table.iter().map_err(to_io)? {
            let (key, value) = item.map_err(to_io)?;
            stats.entries += 1;
            stats.bytes += (key.value().len() + value.value().len()) as u64;
        }
        Ok(stats)
    }
}

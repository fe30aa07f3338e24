//! Reading inputs from files or stdin, writing machine output to stdout, and the error chain
//! as the CLI prints it.

use std::error::Error as StdError;
use std::fs;
use std::io::{self, IsTerminal, Read, Write};
use std::path::Path;

use wasmpickle::Code;

/// True when `path` is absent or `-`, the spellings of "read standard input".
pub(crate) fn is_stdin(path: Option<&Path>) -> bool {
    path.is_none_or(|p| p.as_os_str() == "-")
}

/// True when standard input is a terminal, where waiting for a pickle would only hang.
pub(crate) fn stdin_is_terminal() -> bool {
    io::stdin().is_terminal()
}

/// True when standard output is a terminal, where binary output does not belong.
pub(crate) fn stdout_is_terminal() -> bool {
    io::stdout().is_terminal()
}

/// Reads all of `path`, or of standard input for `-` or no path.
///
/// # Errors
///
/// The I/O error, with a message naming the file.
pub(crate) fn read_input(path: Option<&Path>) -> io::Result<Vec<u8>> {
    match path {
        Some(p) if !is_stdin(Some(p)) => fs::read(p)
            .map_err(|e| io::Error::new(e.kind(), format!("cannot read {}: {e}", p.display()))),
        _ => {
            let mut bytes = Vec::new();
            io::stdin()
                .lock()
                .read_to_end(&mut bytes)
                .map_err(|e| io::Error::new(e.kind(), format!("cannot read stdin: {e}")))?;
            Ok(bytes)
        }
    }
}

/// Writes `bytes` to standard output and flushes, so that a closed pipe shows up here as an
/// error rather than as a panic in `println!` or a lost write at exit.
///
/// # Errors
///
/// The I/O error; [`io::ErrorKind::BrokenPipe`] when the reader went away.
pub(crate) fn write_stdout(bytes: &[u8]) -> io::Result<()> {
    let mut out = io::stdout().lock();
    out.write_all(bytes)?;
    out.flush()
}

/// True when an error comes from writing to a pipe whose reader has gone (`| head`), which
/// the CLI treats as a normal end.
pub(crate) fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<io::Error>()
            .is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe)
    })
}

/// The messages of an error and its causes, outermost first. Each level of the library's
/// errors says only what failed at that level, so the chain reads without repetition.
pub(crate) fn chain(err: &(dyn StdError + 'static)) -> Vec<String> {
    std::iter::successors(Some(err), |e| (*e).source())
        .map(|e| e.to_string())
        .collect()
}

/// Loads a module with [`Code::from_file`], whose errors name the file.
///
/// # Errors
///
/// When the file cannot be read or is not a valid module.
pub(crate) fn load_module(path: &Path) -> anyhow::Result<Code> {
    Ok(Code::from_file(path)?)
}

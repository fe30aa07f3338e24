//! Where a worker listens: standard input and output, a Unix socket, or TCP.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use crate::error::{Error, ErrorKind, Result};

/// A worker's address, written `stdio`, `unix:PATH` or `tcp:HOST:PORT`.
///
/// ```
/// use wasmpickle_pool::Address;
///
/// let a: Address = "tcp:127.0.0.1:7070".parse()?;
/// assert_eq!(a, Address::Tcp("127.0.0.1:7070".into()));
/// assert_eq!(a.to_string(), "tcp:127.0.0.1:7070");
/// assert_eq!("unix:/run/w.sock".parse::<Address>()?, Address::Unix("/run/w.sock".into()));
/// assert_eq!("stdio".parse::<Address>()?, Address::Stdio);
/// # Ok::<(), wasmpickle_pool::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Address {
    /// The process's standard input and output: one connection, the one the pool uses for
    /// the workers it spawns. Trusted as local; no handshake unless a key is configured.
    Stdio,
    /// A Unix domain socket at this path. Trusted as local (the file's permissions decide who
    /// may connect); no handshake unless a key is configured.
    Unix(PathBuf),
    /// A TCP socket, `HOST:PORT`. Always requires the shared-key handshake.
    Tcp(String),
}

impl Address {
    /// True for addresses whose connections must authenticate whatever the configuration.
    pub fn requires_key(&self) -> bool {
        matches!(self, Address::Tcp(_))
    }
}

impl FromStr for Address {
    type Err = Error;

    fn from_str(s: &str) -> Result<Address> {
        let bad = |why: &str| {
            Error::new(
                ErrorKind::Config,
                format!("address {s:?} {why}; write stdio, unix:PATH or tcp:HOST:PORT"),
            )
        };
        if s == "stdio" || s == "-" {
            return Ok(Address::Stdio);
        }
        if let Some(path) = s.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(bad("has no path"));
            }
            return Ok(Address::Unix(PathBuf::from(path)));
        }
        if let Some(hostport) = s.strip_prefix("tcp:") {
            match hostport.rsplit_once(':') {
                Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {
                    return Ok(Address::Tcp(hostport.to_owned()));
                }
                _ => return Err(bad("needs a host and a port")),
            }
        }
        Err(bad("has no known scheme"))
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Stdio => f.write_str("stdio"),
            Address::Unix(path) => write!(f, "unix:{}", path.display()),
            Address::Tcp(hostport) => write!(f, "tcp:{hostport}"),
        }
    }
}

/// A connected socket of either family.
#[derive(Debug)]
pub(crate) enum Socket {
    Unix(UnixStream),
    Tcp(TcpStream),
}

impl Socket {
    pub(crate) fn connect(address: &Address, timeout: Duration) -> Result<Socket> {
        let failed = |e: io::Error| Error::io(format!("cannot connect to {address}"), e);
        match address {
            Address::Stdio => Err(Error::new(
                ErrorKind::Config,
                "stdio is where a worker listens, not an address to connect to",
            )),
            Address::Unix(path) => UnixStream::connect(path).map(Socket::Unix).map_err(failed),
            Address::Tcp(hostport) => {
                let mut last = None;
                for addr in hostport.to_socket_addrs().map_err(failed)? {
                    match TcpStream::connect_timeout(&addr, timeout) {
                        Ok(s) => {
                            // Frames are written whole and small replies must not wait for
                            // Nagle's algorithm.
                            s.set_nodelay(true).map_err(failed)?;
                            return Ok(Socket::Tcp(s));
                        }
                        Err(e) => last = Some(e),
                    }
                }
                Err(failed(last.unwrap_or_else(|| {
                    io::Error::new(io::ErrorKind::NotFound, "the host resolves to no address")
                })))
            }
        }
    }

    pub(crate) fn try_clone(&self) -> io::Result<Socket> {
        Ok(match self {
            Socket::Unix(s) => Socket::Unix(s.try_clone()?),
            Socket::Tcp(s) => Socket::Tcp(s.try_clone()?),
        })
    }

    pub(crate) fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        match self {
            Socket::Unix(s) => s.set_read_timeout(timeout),
            Socket::Tcp(s) => s.set_read_timeout(timeout),
        }
    }

    /// Ends the connection in both directions, waking any thread blocked reading it.
    pub(crate) fn shutdown(&self) {
        let _ = match self {
            Socket::Unix(s) => s.shutdown(Shutdown::Both),
            Socket::Tcp(s) => s.shutdown(Shutdown::Both),
        };
    }
}

impl Read for Socket {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Socket::Unix(s) => s.read(buf),
            Socket::Tcp(s) => s.read(buf),
        }
    }
}

impl Write for Socket {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Socket::Unix(s) => s.write(buf),
            Socket::Tcp(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_parse_and_print_back() {
        for s in [
            "stdio",
            "unix:/tmp/w.sock",
            "tcp:localhost:9",
            "tcp:[::1]:7070",
        ] {
            let a: Address = s.parse().unwrap();
            assert_eq!(a.to_string(), s);
        }
        assert_eq!("-".parse::<Address>().unwrap(), Address::Stdio);
        for bad in [
            "",
            "unix:",
            "tcp:host",
            "tcp::80",
            "tcp:host:http",
            "udp:x:1",
            "/tmp/s",
        ] {
            let err = bad.parse::<Address>().unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Config, "{bad}");
        }
        assert!(Address::Tcp("h:1".into()).requires_key());
        assert!(!Address::Unix("p".into()).requires_key());
    }
}

//! stdin and stdout as the MCP transport, without tokio's thread-backed stdio.
//!
//! `tokio::io::stdin()`/`stdout()` run every read and write on the blocking
//! thread pool, so each request and each answer crosses threads twice; that
//! was most of a `get_job_status` round trip. MCP clients start the server
//! with pipes (the Rust and Python SDKs) or socketpairs (libuv, so Node
//! clients such as Claude Code and the Inspector); both kinds are registered
//! with the reactor directly. Anything else (a terminal, a file) keeps tokio's
//! portable stdio.
//!
//! Registering sets `O_NONBLOCK` on the client's pipe or socket. Nothing else
//! in this process writes to stdout, and children never inherit it, so no
//! blocking writer is surprised by `EAGAIN`.

use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::FileTypeExt;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::UnixStream;
use tokio::net::unix::pipe;

/// The reading half of the transport.
pub type Reader = Box<dyn AsyncRead + Send + Unpin>;
/// The writing half of the transport.
pub type Writer = Box<dyn AsyncWrite + Send + Unpin>;

/// stdin and stdout, registered with the reactor where they allow it.
/// Call from inside the runtime.
pub fn streams() -> (Reader, Writer) {
    let reader = match open(std::io::stdin().as_fd()) {
        Some(Stream::Pipe(fd)) => pipe::Receiver::from_owned_fd(fd)
            .ok()
            .map(|r| Box::new(r) as Reader),
        Some(Stream::Socket(fd)) => socket(fd).map(|s| Box::new(s) as Reader),
        None => None,
    };
    let writer = match open(std::io::stdout().as_fd()) {
        Some(Stream::Pipe(fd)) => pipe::Sender::from_owned_fd(fd)
            .ok()
            .map(|w| Box::new(w) as Writer),
        Some(Stream::Socket(fd)) => socket(fd).map(|s| Box::new(s) as Writer),
        None => None,
    };
    tracing::debug!(
        reactor_stdin = reader.is_some(),
        reactor_stdout = writer.is_some(),
        "MCP stdio transport"
    );
    (
        reader.unwrap_or_else(|| Box::new(tokio::io::stdin())),
        writer.unwrap_or_else(|| Box::new(tokio::io::stdout())),
    )
}

/// A duplicate of a standard stream that the reactor can take.
enum Stream {
    Pipe(OwnedFd),
    Socket(OwnedFd),
}

fn open(fd: BorrowedFd<'_>) -> Option<Stream> {
    let file = File::from(fd.try_clone_to_owned().ok()?);
    let kind = file.metadata().ok()?.file_type();
    let fd = OwnedFd::from(file);
    if kind.is_fifo() {
        Some(Stream::Pipe(fd))
    } else if kind.is_socket() {
        Some(Stream::Socket(fd))
    } else {
        None
    }
}

/// One direction of a socketpair end. `read`/`write` are all we use, which
/// any stream socket supports.
fn socket(fd: OwnedFd) -> Option<UnixStream> {
    let std = std::os::unix::net::UnixStream::from(fd);
    std.set_nonblocking(true).ok()?;
    UnixStream::from_std(std).ok()
}

//! What the connection-rule tests do to a server over raw sockets: send a
//! head one byte a second, keep idle sockets open, and see whether the
//! server closed a socket. The host's own tests include this file by path
//! (that crate cannot depend on this one).

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// Longer than any test: a timeout set to this never fires in one.
pub const NEVER: Duration = Duration::from_secs(3600);

/// A generous bound on every wait for the server to close a socket.
pub const CLOSE_WITHIN: Duration = Duration::from_secs(30);

/// Reads until the server closes the socket (end of file or an error);
/// whether it did within `limit`.
pub async fn closed_by_server(s: &mut TcpStream, limit: Duration) -> bool {
    let mut buf = [0u8; 4096];
    tokio::time::timeout(limit, async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok()
}

/// Sends `head` one byte a second until it is sent, the server closes the
/// socket, or [`CLOSE_WITHIN`] passed: the bytes sent, and whether the
/// server cut the socket.
pub async fn send_slowly(s: &mut TcpStream, head: &[u8]) -> (usize, bool) {
    let (mut sent, mut cut) = (0, false);
    let until = Instant::now() + CLOSE_WITHIN;
    let mut buf = [0u8; 256];
    while Instant::now() < until && sent < head.len() {
        tokio::select! {
            r = s.read(&mut buf) => {
                if matches!(r, Ok(0) | Err(_)) {
                    cut = true;
                    break;
                }
            }
            _ = tokio::time::sleep(Duration::from_secs(1)) => {
                if s.write_all(&head[sent..sent + 1]).await.is_err() {
                    cut = true;
                    break;
                }
                sent += 1;
            }
        }
    }
    (sent, cut)
}

/// `n` connections to `port` on 127.0.0.1 that send nothing.
pub async fn silent(port: u16, n: usize) -> Vec<TcpStream> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(TcpStream::connect(("127.0.0.1", port)).await.unwrap());
    }
    out
}

//! `delegate-guest relay HOST:PORT`: joins its stdin and stdout to a TCP
//! connection. Not used inside a VM: the `qemu` provider gives it to QEMU
//! as the `guestfwd` command, started once per connection the VM opens to
//! its callback address, so the VM reaches the callback API and nothing
//! else. It lives in this binary because the provider already ships it (a
//! static executable) and needs no other tool on the machine.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};

/// Copies until both directions are done; returns the exit status.
pub fn main(target: &str) -> u8 {
    // stderr is the VM's connection too (QEMU gives the socket as fds
    // 0, 1 and 2): nothing may be written there.
    let Ok(stream) = TcpStream::connect(target) else {
        return 1;
    };
    let Ok(mut upstream) = stream.try_clone() else {
        return 1;
    };
    let to_host = std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        let _ = std::io::copy(&mut stdin, &mut upstream);
        let _ = upstream.shutdown(Shutdown::Write);
    });
    let mut downstream = stream;
    let mut stdout = std::io::stdout().lock();
    let mut buf = [0u8; 16 * 1024];
    loop {
        match downstream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if stdout
                    .write_all(&buf[..n])
                    .and_then(|_| stdout.flush())
                    .is_err()
                {
                    break;
                }
            }
        }
    }
    // The host closed: the VM's side ends with this process.
    drop(to_host);
    0
}

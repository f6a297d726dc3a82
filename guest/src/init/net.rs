//! The VM's network: loopback, and `eth0` at QEMU user networking's fixed
//! guest address. No default route: the only address the VM is meant to
//! reach (the callback forward) is on the link, and anything else fails
//! at once instead of timing out.

use std::net::Ipv4Addr;

/// The guest's address in QEMU's user network (slirp's default).
pub const GUEST_ADDR: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 15);
/// Its netmask (10.0.2.0/24).
pub const NETMASK: Ipv4Addr = Ipv4Addr::new(255, 255, 255, 0);

/// A datagram socket for interface ioctls.
struct Socket(libc::c_int);

impl Socket {
    fn new() -> Result<Socket, String> {
        // SAFETY: plain socket(2); the descriptor is closed in Drop.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(format!("socket: {}", std::io::Error::last_os_error()));
        }
        Ok(Socket(fd))
    }

    fn ioctl(&self, what: &str, req: libc::c_ulong, ifr: &mut libc::ifreq) -> Result<(), String> {
        // glibc takes the request as an unsigned long, musl as an int.
        #[allow(clippy::useless_conversion, clippy::unnecessary_cast)]
        let req = req as libc::Ioctl;
        // SAFETY: every request used here reads or writes one `ifreq`.
        let rc = unsafe { libc::ioctl(self.0, req, ifr as *mut libc::ifreq) };
        if rc < 0 {
            let name = ifr_name(ifr);
            return Err(format!(
                "{what} {name}: {}",
                std::io::Error::last_os_error()
            ));
        }
        Ok(())
    }
}

impl Drop for Socket {
    fn drop(&mut self) {
        // SAFETY: the descriptor is ours and closed once.
        unsafe { libc::close(self.0) };
    }
}

fn ifreq(name: &str) -> libc::ifreq {
    // SAFETY: ifreq is plain data; all-zero is a valid value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in ifr
        .ifr_name
        .iter_mut()
        .zip(name.bytes().take(libc::IFNAMSIZ - 1))
    {
        *dst = src as libc::c_char;
    }
    ifr
}

fn ifr_name(ifr: &libc::ifreq) -> String {
    ifr.ifr_name
        .iter()
        .take_while(|c| **c != 0)
        .map(|c| *c as u8 as char)
        .collect()
}

fn sockaddr(addr: Ipv4Addr) -> libc::sockaddr {
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(addr.octets()),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: sockaddr_in and sockaddr have the same size; the kernel reads
    // the family to interpret it.
    unsafe { std::mem::transmute::<libc::sockaddr_in, libc::sockaddr>(sin) }
}

fn up(sock: &Socket, name: &str) -> Result<(), String> {
    let mut ifr = ifreq(name);
    sock.ioctl("SIOCGIFFLAGS", libc::SIOCGIFFLAGS, &mut ifr)?;
    // SAFETY: SIOCGIFFLAGS filled the flags member of the union.
    unsafe {
        ifr.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
    }
    sock.ioctl("SIOCSIFFLAGS", libc::SIOCSIFFLAGS, &mut ifr)
}

/// Brings up `lo`, and `eth0` with [`GUEST_ADDR`]/24.
pub fn configure() -> Result<(), String> {
    let sock = Socket::new()?;
    up(&sock, "lo")?;
    let mut ifr = ifreq("eth0");
    ifr.ifr_ifru.ifru_addr = sockaddr(GUEST_ADDR);
    sock.ioctl("SIOCSIFADDR", libc::SIOCSIFADDR, &mut ifr)?;
    let mut ifr = ifreq("eth0");
    ifr.ifr_ifru.ifru_netmask = sockaddr(NETMASK);
    sock.ioctl("SIOCSIFNETMASK", libc::SIOCSIFNETMASK, &mut ifr)?;
    up(&sock, "eth0")
}

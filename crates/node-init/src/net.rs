//! Bringing up the network the test node serves on: loopback, and the first other interface with
//! a static IPv4 address (QEMU's user networking gives the guest 10.0.2.15/24 and reaches it from
//! 10.0.2.2; a forwarded host port lands on the guest's address). No DHCP client, no routes
//! beyond the subnet's own: the node only answers connections that come to it.

use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// The address QEMU's user networking expects the guest at.
pub const ADDRESS: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 15);
pub const PREFIX_LEN: u8 = 24;

/// Waits up to `timeout` for a network interface other than `lo` (the NIC's driver binds
/// asynchronously after its module loads) and returns the first by name.
pub fn wait_for_interface(timeout: Duration) -> Result<String> {
    let deadline = Instant::now() + timeout;
    loop {
        let mut names: Vec<String> = std::fs::read_dir("/sys/class/net")
            .context("list /sys/class/net")?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n != "lo")
            .collect();
        names.sort();
        if let Some(first) = names.into_iter().next() {
            return Ok(first);
        }
        if Instant::now() >= deadline {
            bail!(
                "no network interface after {} s (is a NIC attached, and its driver in the initramfs?)",
                timeout.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Brings `lo` up (the kernel gives it 127.0.0.1/8 then), and `interface` up with
/// `address/prefix_len`; the kernel adds the subnet's route itself.
pub fn configure(interface: &str, address: Ipv4Addr, prefix_len: u8) -> Result<()> {
    let sock = socket()?;
    set_up(&sock, "lo").context("bring lo up")?;
    set_addr(&sock, interface, libc::SIOCSIFADDR, address)
        .with_context(|| format!("set {interface}'s address to {address}"))?;
    let mask = Ipv4Addr::from(
        u32::MAX
            .checked_shl(32 - u32::from(prefix_len))
            .unwrap_or(0),
    );
    set_addr(&sock, interface, libc::SIOCSIFNETMASK, mask)
        .with_context(|| format!("set {interface}'s netmask to {mask}"))?;
    set_up(&sock, interface).with_context(|| format!("bring {interface} up"))?;
    Ok(())
}

fn socket() -> Result<OwnedFd> {
    rustix::net::socket(
        rustix::net::AddressFamily::INET,
        rustix::net::SocketType::DGRAM,
        None,
    )
    .context("open a socket to configure interfaces")
}

/// An `ifreq` naming `interface`, the rest zeroed.
fn ifreq(interface: &str) -> Result<libc::ifreq> {
    // SAFETY: ifreq is a plain C struct (a name array and a union of plain data); all-zero bytes
    // are a valid value of every field.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    let name = interface.as_bytes();
    if name.is_empty() || name.len() >= req.ifr_name.len() || name.contains(&0) {
        bail!("{interface:?}: not an interface name");
    }
    for (dst, &src) in req.ifr_name.iter_mut().zip(name) {
        *dst = src as libc::c_char;
    }
    Ok(req)
}

fn set_addr(
    sock: &OwnedFd,
    interface: &str,
    request: libc::c_ulong,
    address: Ipv4Addr,
) -> Result<()> {
    let mut req = ifreq(interface)?;
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from(address).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: sockaddr_in (16 bytes) fits in the union's sockaddr member (16 bytes), which is
    // what SIOCSIFADDR/SIOCSIFNETMASK read; both are plain data, so the byte copy is a valid
    // value.
    unsafe {
        std::ptr::copy_nonoverlapping(
            (&raw const sin).cast::<u8>(),
            (&raw mut req.ifr_ifru.ifru_addr).cast::<u8>(),
            std::mem::size_of::<libc::sockaddr_in>(),
        );
    }
    ioctl(sock, request, &mut req)
}

fn set_up(sock: &OwnedFd, interface: &str) -> Result<()> {
    let mut req = ifreq(interface)?;
    ioctl(sock, libc::SIOCGIFFLAGS, &mut req)?;
    // SAFETY: SIOCGIFFLAGS has just filled the union's flags member.
    let flags = unsafe { req.ifr_ifru.ifru_flags };
    req.ifr_ifru.ifru_flags = flags | (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
    ioctl(sock, libc::SIOCSIFFLAGS, &mut req)
}

fn ioctl(sock: &OwnedFd, request: libc::c_ulong, req: &mut libc::ifreq) -> Result<()> {
    // The request's C type is `unsigned long` in glibc and `int` in musl (`libc::Ioctl`); the
    // SIOC* numbers fit both.
    #[allow(clippy::cast_possible_truncation, clippy::unnecessary_cast)]
    let request = request as libc::Ioctl;
    // SAFETY: every request used here (SIOC[GS]IFFLAGS, SIOCSIFADDR, SIOCSIFNETMASK) takes a
    // pointer to one `struct ifreq`, which `req` is, valid and exclusively borrowed for the call.
    let rc = unsafe { libc::ioctl(sock.as_raw_fd(), request, std::ptr::from_mut(req)) };
    if rc < 0 {
        return Err(std::io::Error::last_os_error()).context("ioctl");
    }
    Ok(())
}

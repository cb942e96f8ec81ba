//! The mounts node-init makes: the kernel's API filesystems, then the cache volume.

use anyhow::{Context, Result};
use rustix::fs::Mode;
use rustix::io::Errno;
use rustix::mount::MountFlags;

use crate::probe::FsType;

/// Mounts /proc, /sys and /dev (devtmpfs: the kernel creates device nodes there as devices
/// appear, so no udev is needed). Already-mounted filesystems are fine.
pub fn api_filesystems() -> Result<()> {
    let nosuid_nodev_noexec = MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC;
    mount_dir("proc", "/proc", "proc", nosuid_nodev_noexec, None)?;
    mount_dir("sysfs", "/sys", "sysfs", nosuid_nodev_noexec, None)?;
    mount_dir(
        "devtmpfs",
        "/dev",
        "devtmpfs",
        MountFlags::NOSUID,
        Some(c"mode=0755"),
    )?;
    Ok(())
}

/// Mounts a medium read-only at `target`. ISO 9660 picks up Rock Ridge names (the deep,
/// long-named cache tree) by itself.
pub fn volume(device: &str, fs: FsType, target: &str) -> Result<()> {
    ensure_dir(target)?;
    rustix::mount::mount(device, target, fs.as_str(), MountFlags::RDONLY, None)
        .with_context(|| format!("mount {device} ({fs}) on {target}"))
}

/// Unmounts what is mounted of `targets`, before power-off; failures are reported, not fatal
/// (power-off syncs anyway, and a read-only mount is clean).
pub fn unmount_all(targets: &[&str]) {
    for target in targets {
        match rustix::mount::unmount(*target, rustix::mount::UnmountFlags::empty()) {
            Ok(()) | Err(Errno::INVAL | Errno::NOENT) => {}
            Err(e) => crate::console::say!("unmount {target} failed: {e}"),
        }
    }
}

fn mount_dir(
    source: &str,
    target: &str,
    fstype: &str,
    flags: MountFlags,
    data: Option<&std::ffi::CStr>,
) -> Result<()> {
    ensure_dir(target)?;
    match rustix::mount::mount(source, target, fstype, flags, data) {
        Ok(()) | Err(Errno::BUSY) => Ok(()),
        Err(e) => Err(e).with_context(|| format!("mount {fstype} on {target}")),
    }
}

pub fn ensure_dir(path: &str) -> Result<()> {
    if let Some(parent) = std::path::Path::new(path).parent().and_then(|p| p.to_str())
        && parent.len() > 1
    {
        ensure_dir(parent)?;
    }
    match rustix::fs::mkdir(path, Mode::from_raw_mode(0o755)) {
        Ok(()) | Err(Errno::EXIST) => Ok(()),
        Err(e) => Err(e).with_context(|| format!("mkdir {path}")),
    }
}

//! Loading the kernel modules the initramfs carries, in the order the build resolved.

use std::ffi::CStr;
use std::path::Path;

use anyhow::{Context, Result};
use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;

use crate::console::say;

/// One module path per line, relative to `/lib/modules/<release>/`, dependencies first. Written
/// by `xtask` from `modules.dep`.
pub const MODULE_LIST: &str = "/etc/imager/modules";

/// `MODULE_INIT_COMPRESSED_FILE`: lets the kernel decompress `.ko.xz`/`.ko.zst` itself.
const MODULE_INIT_COMPRESSED_FILE: i32 = 4;

/// Loads every listed module. A module that fails is reported and skipped, never fatal: it may
/// be built into this kernel, and the volume search that follows reports what is really missing.
/// A missing list means nothing to load (a kernel with the drivers built in).
pub fn load_listed() -> Result<()> {
    let list = match std::fs::read_to_string(MODULE_LIST) {
        Ok(list) => list,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("read {MODULE_LIST}")),
    };
    let uname = rustix::system::uname();
    let release = uname.release().to_string_lossy();
    let dir = Path::new("/lib/modules").join(release.as_ref());
    for rel in list.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if let Err(e) = load(&dir.join(rel)) {
            say!("module {} failed: {e:#}", module_name(rel));
        }
    }
    Ok(())
}

fn load(path: &Path) -> Result<()> {
    let fd = rustix::fs::open(path, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())
        .with_context(|| format!("open {}", path.display()))?;
    let name = path.to_string_lossy();
    let flags = if name.ends_with(".ko") {
        0
    } else {
        MODULE_INIT_COMPRESSED_FILE
    };
    match rustix::system::finit_module(&fd, c"" as &CStr, flags) {
        // Already loaded, e.g. pulled in by an earlier module's request.
        Ok(()) | Err(Errno::EXIST) => Ok(()),
        Err(e) => Err(e).context("finit_module"),
    }
}

/// `kernel/fs/isofs/isofs.ko` -> `isofs`.
fn module_name(rel: &str) -> &str {
    let base = rel.rsplit('/').next().unwrap_or(rel);
    base.split_once(".ko").map_or(base, |(stem, _)| stem)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(module_name("kernel/fs/isofs/isofs.ko"), "isofs");
        assert_eq!(
            module_name("kernel/drivers/usb/storage/usb-storage.ko.xz"),
            "usb-storage"
        );
        assert_eq!(module_name("odd"), "odd");
    }
}

//! Finding the cache volume among the block devices, which appear asynchronously.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::probe::{self, Candidate, PROBE_LEN, Volumes};

/// Every block device the kernel knows, whole disks and partitions alike: a hybrid ISO may be
/// visible only on the whole disk (`sda`), an xorriso one also on `sda1`, a CD as `sr0`.
const SYS_BLOCK: &str = "/sys/class/block";

/// What one pass over the devices saw, kept for the error message if nothing fits.
#[derive(Debug, Default)]
pub struct Pass {
    pub devices: Vec<String>,
    pub candidates: Vec<Candidate>,
    /// `name: error` for devices that could not be read.
    pub unreadable: Vec<String>,
    /// Devices whose GPT partition name is `IMAGECACHE`, whatever they hold.
    pub imagecache: Vec<String>,
}

/// Polls every `interval` until the volumes are found ([`Volumes::complete`]): the medium and the
/// disk partition, or either usable one once `settle` has passed since it appeared (USB storage
/// under QEMU's emulation can take seconds to enumerate after its driver loads, after the virtio
/// disks). Fails after `timeout` with nothing usable, naming everything seen.
pub fn wait_for_volumes(
    timeout: Duration,
    settle: Duration,
    interval: Duration,
) -> Result<Volumes> {
    let start = Instant::now();
    let mut usable_since: Option<Instant> = None;
    loop {
        let pass = scan_once()?;
        let volumes = Volumes::select(&pass.candidates, &pass.imagecache);
        if volumes.usable() {
            let since = *usable_since.get_or_insert_with(Instant::now);
            if volumes.complete(since.elapsed() >= settle) {
                return Ok(volumes);
            }
        }
        if start.elapsed() >= timeout {
            if volumes.usable() {
                return Ok(volumes);
            }
            let seen: Vec<String> = pass
                .candidates
                .iter()
                .map(|c| {
                    let part = c.partname.as_deref().unwrap_or("-");
                    format!(
                        "{}[{part}]={:?} ({})",
                        c.device, c.volume.label, c.volume.fs
                    )
                })
                .collect();
            bail!(
                "no ext4 partition named {} and no iso9660/vfat volume labelled {}* after {} s (block devices: [{}]; volumes: [{}]; {} partitions: [{}]; unreadable: [{}])",
                probe::IMAGECACHE_PARTITION,
                probe::TALOS_PREFIX,
                timeout.as_secs(),
                pass.devices.join(" "),
                seen.join(" "),
                probe::IMAGECACHE_PARTITION,
                pass.imagecache.join(" "),
                pass.unreadable.join("; ")
            );
        }
        sleep(interval);
    }
}

/// One look at every block device, in name order.
fn scan_once() -> Result<Pass> {
    let mut devices = Vec::new();
    for entry in std::fs::read_dir(SYS_BLOCK).with_context(|| format!("list {SYS_BLOCK}"))? {
        let entry = entry.with_context(|| format!("list {SYS_BLOCK}"))?;
        devices.push(entry.file_name().to_string_lossy().into_owned());
    }
    devices.sort();
    let mut pass = Pass::default();
    let mut head = vec![0u8; PROBE_LEN];
    for device in &devices {
        // A device that cannot be read (no medium in a CD drive, node not created yet, a
        // driver still starting) is simply not the one we want on this pass.
        let name = partname(device);
        if name.as_deref() == Some(probe::IMAGECACHE_PARTITION) {
            pass.imagecache.push(device.clone());
        }
        let len = match read_head(&dev_path(device), &mut head) {
            Ok(len) => len,
            Err(e) => {
                pass.unreadable.push(format!("{device}: {e}"));
                continue;
            }
        };
        if let Some(volume) = probe::identify(&head[..len]) {
            pass.candidates.push(Candidate {
                device: device.clone(),
                partname: name,
                volume,
            });
        }
    }
    pass.devices = devices;
    Ok(pass)
}

/// The GPT partition name the kernel found for `device`, from its uevent (`PARTNAME=`); none for
/// whole disks, MBR partitions and unnamed GPT partitions.
fn partname(device: &str) -> Option<String> {
    let uevent = std::fs::read_to_string(format!("{SYS_BLOCK}/{device}/uevent")).ok()?;
    partname_of(&uevent)
}

fn partname_of(uevent: &str) -> Option<String> {
    uevent
        .lines()
        .find_map(|l| l.strip_prefix("PARTNAME="))
        .filter(|n| !n.is_empty())
        .map(str::to_owned)
}

/// `/dev` path of a sysfs block device name; sysfs writes `/` in names as `!` (`cciss!c0d0`).
pub fn dev_path(name: &str) -> String {
    format!("/dev/{}", name.replace('!', "/"))
}

/// Reads up to `buf.len()` bytes from the start of the device; fewer only at its end.
fn read_head(path: &str, buf: &mut [u8]) -> std::io::Result<usize> {
    let dev = File::open(path)?;
    let mut filled = 0;
    while filled < buf.len() {
        match dev.read_at(&mut buf[filled..], filled as u64) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dev_paths() {
        assert_eq!(dev_path("sr0"), "/dev/sr0");
        assert_eq!(dev_path("cciss!c0d0p1"), "/dev/cciss/c0d0p1");
    }

    #[test]
    fn partition_names_from_uevent() {
        let uevent = "MAJOR=254\nMINOR=5\nDEVNAME=vda5\nDEVTYPE=partition\nDISKSEQ=9\nPARTN=5\nPARTNAME=IMAGECACHE\n";
        assert_eq!(partname_of(uevent).as_deref(), Some("IMAGECACHE"));
        assert_eq!(partname_of("MAJOR=254\nDEVTYPE=disk\n"), None);
        assert_eq!(partname_of("PARTN=1\nPARTNAME=\n"), None);
    }
}

//! PID 1 of the test node: finds the cache volume (an `IMAGECACHE` partition or a `TALOS_` medium)
//! and reports its image cache on the serial console.
//!
//! The lines it prints are the protocol in `docs/architecture.md`; the boot tests read them. Every
//! path ends in a power-off, so a test either sees `done` or an `error` line, never a hang.

mod console;
mod disk;
mod kmod;
mod mount;
mod net;
mod power;
mod probe;
mod report;
mod scan;
mod serve;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use console::say;

/// How long to wait for the cache volume, and how often to look.
const VOLUME_TIMEOUT: Duration = Duration::from_secs(60);
const VOLUME_POLL: Duration = Duration::from_millis(250);
/// Once one volume is usable, how long the other gets to appear (see [`scan::wait_for_volumes`]).
const VOLUME_SETTLE: Duration = Duration::from_secs(3);
/// How long the NIC's driver gets to bind.
const NIC_TIMEOUT: Duration = Duration::from_secs(30);

/// The kernel argument that keeps the node serving until it is powered off.
const SERVE_ARG: &str = "imager.serve";

/// Where the volumes are mounted: upstream's paths, so registryd's roots read as on a node.
const DISK_MOUNT: &str = "/system/imagecache/disk";
const MEDIUM_MOUNT: &str = "/system/imagecache/iso";

fn main() -> ! {
    // Mounting, loading modules and powering off are things to do only as the init of a
    // (virtual) machine; anywhere else they would act on the host.
    if rustix::process::getpid() != rustix::process::Pid::INIT {
        eprintln!("node-init: refusing to run: this is the test node's init and must be PID 1");
        std::process::exit(2);
    }
    power::install_panic_hook();
    match run() {
        Ok(()) => say!("done"),
        Err(e) => say!("error {}", console::one_line(&format!("{e:#}"))),
    }
    power::off()
}

fn run() -> Result<()> {
    // Before anything can be printed reliably: /dev holds the console.
    let mounted = mount::api_filesystems();
    // Output still works through the kernel-provided console if /dev failed to mount.
    let _ = console::attach();
    say!("start");
    mounted?;

    let cmdline = std::fs::read_to_string("/proc/cmdline").context("read /proc/cmdline")?;
    let cmdline = cmdline.trim();
    say!("cmdline {cmdline}");
    console::quiet_kernel(cmdline);
    let serving = cmdline.split_whitespace().any(|a| a == SERVE_ARG);

    kmod::load_listed()?;

    let volumes = scan::wait_for_volumes(VOLUME_TIMEOUT, VOLUME_SETTLE, VOLUME_POLL)?;
    // The roots registryd serves, in its order: the disk copy first, then the medium.
    let mut roots: Vec<(PathBuf, report::Root)> = Vec::new();
    let medium = match &volumes.medium {
        Some(found) => {
            let device = scan::dev_path(&found.device);
            say!(
                "volume {} on {device} ({})",
                found.volume.label,
                found.volume.fs
            );
            mount::volume(&device, found.volume.fs, MEDIUM_MOUNT)?;
            Some(Path::new(MEDIUM_MOUNT).join(report::CACHE_DIR))
        }
        None => None,
    };
    if let Some(part) = &volumes.disk {
        let device = scan::dev_path(&part.device);
        if !part.is_ext4() {
            if medium.is_none() {
                bail!(
                    "{device}: the {} partition holds no ext4 and there is no medium to fill it from",
                    probe::IMAGECACHE_PARTITION
                );
            }
            let size = disk::size_of(&part.device)?;
            let started = Instant::now();
            let made = disk::format(&device, size)?;
            say!(
                "format {device} ext4 bytes={made} in {:.1} s",
                started.elapsed().as_secs_f64()
            );
        }
        let label = part
            .volume
            .as_ref()
            .map_or(disk::LABEL, |v| v.label.as_str());
        say!("volume {label} on {device} (ext4)");
        disk::mount_rw(&device, DISK_MOUNT)?;
        if let Some(medium) = &medium {
            let started = Instant::now();
            let totals = disk::copy_tree(medium, Path::new(DISK_MOUNT), &mut |event| match event {
                disk::CopyEvent::Copying(path, size) => say!("copy file {path} {size}"),
            })
            .with_context(|| format!("copy {} to {DISK_MOUNT}", medium.display()))?;
            say!(
                "copy copied={} copied_bytes={} skipped={} skipped_bytes={} seconds={:.1}",
                totals.copied,
                totals.copied_bytes,
                totals.skipped,
                totals.skipped_bytes,
                started.elapsed().as_secs_f64()
            );
        }
        disk::remount_ro(DISK_MOUNT)?;
        roots.push((PathBuf::from(DISK_MOUNT), report::Root::Partition));
    }
    if let Some(medium) = medium {
        roots.push((medium, report::Root::Medium));
    }

    if serving {
        let interface = net::wait_for_interface(NIC_TIMEOUT)?;
        net::configure(&interface, net::ADDRESS, net::PREFIX_LEN)?;
        say!("net {interface} {}/{}", net::ADDRESS, net::PREFIX_LEN);
        let paths: Vec<PathBuf> = roots.iter().map(|(p, _)| p.clone()).collect();
        let listed: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
        serve::until_power_button(paths, |addr| {
            say!("serving {addr} roots={}", listed.join(","));
        })?;
        say!("power button");
        mount::unmount_all(&[DISK_MOUNT, MEDIUM_MOUNT]);
        return Ok(());
    }

    // Reporting: every file of the first root (the disk copy when there is one, which shows
    // the copy) with its sha256.
    // Never empty: a usable set of volumes has a medium or an ext4 partition, and a blank
    // partition without a medium failed above.
    let (first, kind) = roots.first().context("no cache volume to report")?;
    let volume_root = match kind {
        report::Root::Medium => Path::new(MEDIUM_MOUNT),
        report::Root::Partition => first.as_path(),
    };
    let totals = report::walk_cache(volume_root, *kind, |f| {
        say!("{}", report::file_line(f));
    })?;
    say!("{}", report::cache_line(&totals));
    Ok(())
}

//! PID 1 of the test node: finds the cache volume (an `IMAGECACHE` partition or a `TALOS_` medium)
//! and reports its image cache on the serial console.
//!
//! The lines it prints are the protocol in `docs/architecture.md`; the boot tests read them. Every
//! path ends in a power-off, so a test either sees `done` or an `error` line, never a hang.

mod console;
mod kmod;
mod mount;
mod power;
mod probe;
mod report;
mod scan;

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};

use console::say;

/// How long to wait for the cache volume, and how often to look.
const VOLUME_TIMEOUT: Duration = Duration::from_secs(60);
const VOLUME_POLL: Duration = Duration::from_millis(250);

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

    kmod::load_listed()?;

    let found = scan::wait_for_volume(VOLUME_TIMEOUT, VOLUME_POLL)?;
    let device = scan::dev_path(&found.device);
    say!(
        "volume {} on {device} ({})",
        found.volume.label,
        found.volume.fs
    );
    mount::volume(&device, found.volume.fs)?;

    let root = match found.cache_root() {
        Some(probe::CacheRoot::Partition) => report::Root::Partition,
        _ => report::Root::Medium,
    };
    let totals = report::walk_cache(Path::new(mount::MEDIA), root, |f| {
        say!("{}", report::file_line(f));
    })?;
    say!("{}", report::cache_line(&totals));
    Ok(())
}

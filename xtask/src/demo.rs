//! `cargo xtask demo`: builds an ISO from the built-in example cache (`testdata/demo-cache`),
//! boots it in QEMU and shows what the booted node found on it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use imager_boot_test::{
    Attach, BootConfig, BootError, Firmware, ListingDiff, MARKER, boot_with, expected_listing,
    total_bytes,
};

use crate::{assets, util};

const USAGE: &str = "\
usage: cargo xtask demo [--firmware seabios|ovmf|aavmf] [--attach cdrom|usb]

Prepares the boot assets, builds `imager`, runs
    imager iso --image-cache testdata/demo-cache --output _out/demo ...
boots _out/demo/metal-amd64.iso in QEMU (default: SeaBIOS, as a CD-ROM), prints what the test
node reports on its serial console, and checks it against the cache on this machine. With
`--firmware aavmf` the ISO is built with `--arch arm64` and boots in qemu-system-aarch64.
";

/// A kernel argument that shows the command line travels from `imager iso` to the node.
const DEMO_ARG: &str = "imager.demo=hello";

#[derive(Debug)]
struct Options {
    firmware: Firmware,
    attach: Attach,
}

pub fn run(args: &[String]) -> Result<()> {
    let Some(opts) = parse_args(args)? else {
        print!("{USAGE}");
        return Ok(());
    };
    let root = util::workspace_root();
    let assets = assets::prepare(&assets::default_dir()).context("preparing the boot assets")?;

    let imager = build_imager()?;
    let cache = root.join("testdata/demo-cache");
    let out_dir = root.join("_out/demo");
    let arch = if opts.firmware.is_arm64() {
        "arm64"
    } else {
        "amd64"
    };
    let mut iso_cmd = Command::new(&imager);
    iso_cmd
        .arg("iso")
        .args(["--arch", arch])
        .arg("--assets")
        .arg(&assets)
        .arg("--image-cache")
        .arg(&cache)
        .arg("--output")
        .arg(&out_dir)
        .args(["--extra-kernel-arg", DEMO_ARG])
        // A kernel panic then reboots, which ends QEMU, instead of hanging until the timeout.
        .args(["--extra-kernel-arg", "panic=-1"]);
    eprintln!("demo: {}", util::command_line(&iso_cmd));
    let built = Instant::now();
    let status = iso_cmd.status().context("cannot run imager")?;
    if !status.success() {
        bail!("imager iso failed ({status})");
    }
    let iso = out_dir.join(format!("metal-{arch}.iso"));
    let iso_size = std::fs::metadata(&iso)
        .with_context(|| format!("imager reported success but {} is missing", iso.display()))?
        .len();
    let build_time = built.elapsed();

    let cfg = BootConfig::image(&iso, opts.firmware, opts.attach)
        .with_name(format!("demo-{}-{}", opts.firmware, opts.attach))
        .with_timeout(Duration::from_secs(240));
    eprintln!(
        "demo: booting {} under {} as {} (QEMU, TCG; about 15 s) ...",
        iso.display(),
        firmware_name(opts.firmware),
        attach_name(opts.attach)
    );
    let started = Instant::now();
    let mut show = |line: &str| {
        // Only the node's own lines: firmware and kernel chatter would bury them.
        if let Some(at) = line.find(MARKER) {
            println!(
                "  [{:5.1} s] {}",
                started.elapsed().as_secs_f64(),
                &line[at + MARKER.len()..]
            );
        }
    };
    let outcome = match boot_with(&cfg, &mut show) {
        Ok(outcome) => outcome,
        Err(BootError::Failed(failed)) => {
            bail!("{failed}\n(rerun with IMAGER_BOOT_ECHO=1 to watch the whole console)")
        }
        Err(e) => return Err(e.into()),
    };

    let want = expected_listing(&cache)
        .with_context(|| format!("listing {} on this machine", cache.display()))?;
    let seen = outcome.report.listing()?;
    let diff = ListingDiff::new(&want, &seen);
    let volume = outcome
        .report
        .volumes
        .first()
        .map(|v| format!("{} on {} ({})", v.label, v.device, v.fs_type))
        .unwrap_or_else(|| "none reported".into());
    let cmdline_ok = outcome.report.cmdline_args().contains(&DEMO_ARG);

    println!();
    println!(
        "ISO:     {} ({}, built in {:.1} s)",
        iso.display(),
        util::human_size(iso_size),
        build_time.as_secs_f64()
    );
    println!(
        "boot:    {} as {}: node done and powered off after {:.1} s",
        firmware_name(opts.firmware),
        attach_name(opts.attach),
        outcome.elapsed.as_secs_f64()
    );
    println!("volume:  {volume}");
    println!(
        "cmdline: {DEMO_ARG} {}",
        if cmdline_ok { "arrived" } else { "MISSING" }
    );
    if diff.is_empty() {
        println!(
            "cache:   {} files, {} bytes: every size and sha256 matches {}",
            want.len(),
            total_bytes(&want),
            relative(&cache, &root).display()
        );
    } else {
        println!("cache:   DIFFERS from {}:\n{diff}", cache.display());
    }
    if !diff.is_empty() || !cmdline_ok {
        bail!("the booted node did not see what was put on the ISO");
    }
    Ok(())
}

fn parse_args(args: &[String]) -> Result<Option<Options>> {
    let mut opts = Options {
        firmware: Firmware::SeaBios,
        attach: Attach::Cdrom,
    };
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((flag, value)) => (flag, Some(value.to_string())),
            None => (arg.as_str(), None),
        };
        let mut value = || -> Result<String> {
            match &inline {
                Some(v) => Ok(v.clone()),
                None => args
                    .next()
                    .cloned()
                    .with_context(|| format!("{flag} needs a value")),
            }
        };
        match flag {
            "-h" | "--help" => return Ok(None),
            "--firmware" => {
                opts.firmware = match value()?.as_str() {
                    "seabios" | "bios" => Firmware::SeaBios,
                    "ovmf" | "uefi" => Firmware::Ovmf,
                    "aavmf" | "arm64" => Firmware::Aavmf,
                    other => bail!("--firmware {other:?}: expected seabios, ovmf or aavmf"),
                }
            }
            "--attach" => {
                opts.attach = match value()?.as_str() {
                    "cdrom" | "cd" => Attach::Cdrom,
                    "usb" => Attach::UsbDisk,
                    other => bail!("--attach {other:?}: expected cdrom or usb"),
                }
            }
            other => bail!("unknown argument {other:?} for `cargo xtask demo`\n{USAGE}"),
        }
    }
    Ok(Some(opts))
}

/// Builds the `imager` binary with the workspace's cargo and returns its path.
fn build_imager() -> Result<PathBuf> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(util::workspace_root()).args([
        "build",
        "--quiet",
        "--package",
        "imager",
        "--bin",
        "imager",
    ]);
    eprintln!("demo: {}", util::command_line(&cmd));
    let status = cmd.status().context("cannot run cargo")?;
    if !status.success() {
        bail!("building imager failed ({status})");
    }
    let bin = util::target_dir().join("debug/imager");
    if !bin.is_file() {
        bail!("cargo built imager but {} is not there", bin.display());
    }
    Ok(bin)
}

fn firmware_name(f: Firmware) -> &'static str {
    match f {
        Firmware::SeaBios => "BIOS (SeaBIOS)",
        Firmware::Ovmf => "UEFI (OVMF)",
        Firmware::Aavmf => "UEFI on arm64 (AAVMF)",
    }
}

fn attach_name(a: Attach) -> &'static str {
    match a {
        Attach::Cdrom => "a CD-ROM",
        Attach::UsbDisk => "a USB disk",
        Attach::VirtioDisk => "a virtio disk",
        Attach::SataDisk => "a SATA disk",
    }
}

fn relative<'a>(path: &'a Path, base: &Path) -> &'a Path {
    path.strip_prefix(base).unwrap_or(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Option<Options>> {
        parse_args(&args.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn defaults_to_seabios_cdrom() {
        let o = parse(&[]).unwrap().unwrap();
        assert_eq!((o.firmware, o.attach), (Firmware::SeaBios, Attach::Cdrom));
    }

    #[test]
    fn firmware_and_attachment_can_be_chosen() {
        let o = parse(&["--firmware", "ovmf", "--attach=usb"])
            .unwrap()
            .unwrap();
        assert_eq!((o.firmware, o.attach), (Firmware::Ovmf, Attach::UsbDisk));
        let o = parse(&["--firmware", "aavmf"]).unwrap().unwrap();
        assert_eq!(o.firmware, Firmware::Aavmf);
        assert!(parse(&["--help"]).unwrap().is_none());
    }

    #[test]
    fn mistakes_are_named() {
        let err = parse(&["--firmware", "coreboot"]).unwrap_err().to_string();
        assert!(err.contains("coreboot"), "{err}");
        let err = parse(&["--attach"]).unwrap_err().to_string();
        assert!(err.contains("--attach needs a value"), "{err}");
        let err = parse(&["--fast"]).unwrap_err().to_string();
        assert!(err.contains("--fast"), "{err}");
    }
}

//! `cargo xtask bench metal`: `imager metal` writing a raw GPT disk image, side by side with the
//! physical floor (`cp -r` of the cache to the same file system) and upstream's recipe made with
//! the standard tools, in one run, on the `bench iso` payload (the flat tree).
//!
//! Upstream's recipe, as its imager runs it in a privileged container: a sparse file, `sgdisk` for
//! the partition table, `mkfs.vfat` + `mcopy` for the EFI and boot file systems, `mke2fs -d` for
//! the cache's ext4, each file system made as its own image file and `dd`'d into place. (Upstream
//! formats BOOT as xfs; the recipe uses FAT there, as imager does, so both write the same bytes.)

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};
use imager_disk::metal;

use super::{Flags, Step, Tool, markdown_table, peak_temp, run_rotated, summarize};
use crate::util::{human_size, workspace_root};

pub(super) const USAGE: &str = "usage: cargo xtask bench metal [--runs N] [--gib G] [--dir DIR]";

const MIB: u64 = 1 << 20;

/// Upstream's partition sizes (`imager_disk::metal`, read from upstream), in MiB: EFI, BIOS,
/// BOOT, META; the cache partition follows.
const EFI_MIB: u64 = metal::EFI_SIZE / MIB;
const BIOS_MIB: u64 = metal::BIOS_SIZE / MIB;
const BOOT_MIB: u64 = metal::BOOT_SIZE / MIB;
const META_MIB: u64 = metal::META_SIZE / MIB;

#[derive(Debug)]
struct MetalBench {
    runs: usize,
    gib: f64,
    dir: PathBuf,
}

fn parse(args: &[String]) -> Result<MetalBench> {
    let f = Flags::parse(args, USAGE, &["--runs", "--gib", "--dir"])?;
    Ok(MetalBench {
        runs: f.count("--runs", 3)?,
        gib: f.positive("--gib", 3.0)?,
        // The same payload as `bench iso` by default, so it is made once for both.
        dir: f.path("--dir", workspace_root().join("_bench/iso")),
    })
}

pub(super) fn run(args: &[String]) -> Result<()> {
    let bench = parse(args)?;
    crate::assets::run(&[])?;
    let assets = workspace_root().join("_assets");
    let imager = super::build_imager()?;

    std::fs::create_dir_all(&bench.dir)
        .with_context(|| format!("creating {}", bench.dir.display()))?;
    let cache = bench.dir.join("cache");
    let cache_bytes = super::iso::make_cache(&cache, bench.gib)?;
    eprintln!("cache: {} in {}", human_size(cache_bytes), cache.display());
    let staging = bench.dir.join("metal-staging");
    prepare_peer_inputs(&assets, &staging)?;
    let out = bench.dir.join("out");

    let tools = [
        Tool {
            name: "cp -r (floor)".into(),
            out: out.join("floor"),
            steps: {
                let (cache, out) = (cache.clone(), out.join("floor"));
                Box::new(move || {
                    let mut c = Command::new("cp");
                    c.arg("-r").arg(&cache).arg(out.join("copy"));
                    vec![Step::new(c)]
                })
            },
        },
        Tool {
            name: "sgdisk + mkfs.vfat/mcopy + mke2fs -d + dd (upstream's recipe)".into(),
            out: out.join("peer"),
            steps: {
                let (cache, out, staging) = (cache.clone(), out.join("peer"), staging.clone());
                Box::new(move || recipe(&staging, &cache, cache_bytes, &out))
            },
        },
        Tool {
            name: "imager metal, raw".into(),
            out: out.join("imager"),
            steps: {
                let (cache, out, assets, imager) = (
                    cache.clone(),
                    out.join("imager"),
                    assets.clone(),
                    imager.clone(),
                );
                Box::new(move || {
                    let mut c = Command::new(&imager);
                    c.arg("metal")
                        .arg("--assets")
                        .arg(&assets)
                        .arg("--image-cache")
                        .arg(&cache)
                        .arg("--out-format")
                        .arg("raw")
                        .arg("--output")
                        .arg(&out)
                        .env("SOURCE_DATE_EPOCH", "0");
                    vec![Step::new(c)]
                })
            },
        },
    ];

    let samples = run_rotated(&tools, bench.runs)?;
    super::reset_dir(&out)?;

    let medians: Vec<_> = samples.iter().map(|s| summarize(s)).collect();
    let floor = medians[0].0.as_secs_f64();
    println!(
        "\n`cargo xtask bench metal --runs {} --gib {}`: {} of cache files, median of {} runs, each until `sync` returns\n",
        bench.runs,
        bench.gib,
        human_size(cache_bytes),
        bench.runs
    );
    let rows: Vec<Vec<String>> = tools
        .iter()
        .zip(&medians)
        .zip(&samples)
        .map(|((tool, (time, rss)), samples)| {
            let secs = time.as_secs_f64();
            vec![
                tool.name.clone(),
                format!("{secs:.2} s"),
                format!("{:.0} MB/s", cache_bytes as f64 / secs / 1e6),
                format!("{:.2}x", floor / secs),
                human_size(rss * 1024),
                human_size(peak_temp(samples)),
            ]
        })
        .collect();
    print!(
        "{}",
        markdown_table(
            &[
                "tool",
                "median time",
                "throughput",
                "vs cp -r",
                "peak RSS",
                "temp disk (peak)"
            ],
            &rows
        )
    );
    let ratio = |a: usize, b: usize| medians[b].0.as_secs_f64() / medians[a].0.as_secs_f64();
    println!(
        "\nimager metal vs upstream's recipe: {:.2}x; vs cp -r: {:.2}x",
        ratio(2, 1),
        ratio(2, 0)
    );
    Ok(())
}

/// The boot files both images get: systemd-boot and its loader entry, the kernel and initramfs,
/// GRUB's configuration for BIOS machines.
fn prepare_peer_inputs(assets: &Path, staging: &Path) -> Result<()> {
    if staging.exists() {
        std::fs::remove_dir_all(staging)?;
    }
    let efi = staging.join("efi");
    let boot = staging.join("boot");
    for dir in [
        efi.join("EFI/BOOT"),
        efi.join("loader/entries"),
        efi.join("A"),
        boot.join("grub"),
        boot.join("A"),
    ] {
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let copy = |from: PathBuf, to: PathBuf| {
        std::fs::copy(&from, &to)
            .with_context(|| format!("copying {} to {}", from.display(), to.display()))
    };
    copy(
        assets.join("efi/systemd-bootx64.efi"),
        efi.join("EFI/BOOT/BOOTX64.EFI"),
    )?;
    for root in [&efi, &boot] {
        copy(assets.join("vmlinuz"), root.join("A/vmlinuz"))?;
        copy(assets.join("initramfs.xz"), root.join("A/initramfs.xz"))?;
    }
    std::fs::write(
        efi.join("loader/entries/talos.conf"),
        "title Talos\nlinux /A/vmlinuz\ninitrd /A/initramfs.xz\noptions console=ttyS0\n",
    )?;
    std::fs::write(
        boot.join("grub/grub.cfg"),
        "menuentry Talos {\n  linux /A/vmlinuz console=ttyS0\n  initrd /A/initramfs.xz\n}\n",
    )?;
    Ok(())
}

/// The size upstream gives the cache partition: the files' bytes plus 20 %, rounded up to 1 MiB.
fn cache_partition_mib(cache_bytes: u64) -> u64 {
    metal::imagecache_size(cache_bytes) / MIB
}

/// Upstream's recipe for one image, as commands: the disk file and its table, each file system
/// made as an image of its own, `dd`'d into its partition, then removed.
fn recipe(staging: &Path, cache: &Path, cache_bytes: u64, out: &Path) -> Vec<Step> {
    let disk = out.join("metal-amd64.raw");
    let cache_mib = cache_partition_mib(cache_bytes);
    // 1 MiB before the first partition, 1 MiB after the last for the backup GPT.
    let total_mib = 1 + EFI_MIB + BIOS_MIB + BOOT_MIB + META_MIB + cache_mib + 1;
    let efi_at = 1;
    let boot_at = efi_at + EFI_MIB + BIOS_MIB;
    let cache_at = boot_at + BOOT_MIB + META_MIB;

    let mut truncate = Command::new("truncate");
    truncate
        .arg("-s")
        .arg(format!("{}", total_mib * MIB))
        .arg(&disk);
    let mut sgdisk = Command::new("sgdisk");
    sgdisk
        .arg("--clear")
        .args([
            "-n",
            &format!("1:0:+{EFI_MIB}M"),
            "-t",
            "1:EF00",
            "-c",
            "1:EFI",
        ])
        .args([
            "-n",
            &format!("2:0:+{BIOS_MIB}M"),
            "-t",
            "2:EF02",
            "-c",
            "2:BIOS",
        ])
        .args(["-A", "2:set:2"])
        .args([
            "-n",
            &format!("3:0:+{BOOT_MIB}M"),
            "-t",
            "3:8300",
            "-c",
            "3:BOOT",
        ])
        .args([
            "-n",
            &format!("4:0:+{META_MIB}M"),
            "-t",
            "4:8300",
            "-c",
            "4:META",
        ])
        .args(["-n", "5:0:0", "-t", "5:8300", "-c", "5:IMAGECACHE"])
        .arg(&disk);

    let mut steps = vec![Step::new(truncate), Step::new(sgdisk)];
    let fat = |name: &str, mib: u64, tree: PathBuf, at: u64, steps: &mut Vec<Step>| {
        let image = out.join(format!("{name}.img"));
        let mut mkfs = Command::new("mkfs.vfat");
        mkfs.args(["-F", "32", "-n", name, "-C"])
            .arg(&image)
            .arg(format!("{}", mib * 1024));
        let mut mcopy = Command::new("mcopy");
        mcopy.arg("-s").arg("-i").arg(&image);
        for entry in std::fs::read_dir(&tree).into_iter().flatten().flatten() {
            mcopy.arg(entry.path());
        }
        mcopy.arg("::/");
        steps.push(Step::new(mkfs));
        steps.push(Step::new(mcopy));
        steps.push(Step::new(dd(&image, &disk, at)));
        steps.push(Step::new(rm(&image)));
    };
    fat("EFI", EFI_MIB, staging.join("efi"), efi_at, &mut steps);
    fat("BOOT", BOOT_MIB, staging.join("boot"), boot_at, &mut steps);

    let ext4 = out.join("imagecache.img");
    let mut mke2fs = Command::new("mke2fs");
    mke2fs
        .args([
            "-q",
            "-t",
            "ext4",
            "-L",
            "IMAGECACHE",
            "-E",
            "root_owner=0:0",
            "-d",
        ])
        .arg(cache)
        .arg(&ext4)
        .arg(format!("{cache_mib}M"))
        .env("E2FSPROGS_FAKE_TIME", "0");
    steps.push(Step::new(mke2fs));
    steps.push(Step::new(dd(&ext4, &disk, cache_at)));
    steps.push(Step::new(rm(&ext4)));
    steps
}

/// `dd` of a file system image into the disk at `at_mib`, keeping holes.
fn dd(image: &Path, disk: &Path, at_mib: u64) -> Command {
    let mut c = Command::new("dd");
    c.arg(format!("if={}", image.display()))
        .arg(format!("of={}", disk.display()))
        .args(["bs=1M", "conv=notrunc,sparse", "status=none"])
        .arg(format!("seek={at_mib}"));
    c
}

fn rm(path: &Path) -> Command {
    let mut c = Command::new("rm");
    c.arg("-f").arg(path);
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_partition_is_bytes_plus_a_fifth_in_whole_mib() {
        assert_eq!(cache_partition_mib(0), 0);
        assert_eq!(cache_partition_mib(1), 1);
        assert_eq!(cache_partition_mib(10 * MIB), 12);
        assert_eq!(cache_partition_mib(10 * MIB + 1), 13);
    }
}

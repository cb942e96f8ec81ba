//! `cargo xtask bench iso`: `imager iso` side by side with the physical floor (`cp -r` of the
//! same files to the same file system) and the peer (`xorriso -as mkisofs` with the equivalent
//! hybrid recipe), in one run, on a generated cache of mixed file sizes.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};

use super::{Flags, Step, Tool, markdown_table, noise_file, run_rotated, summarize};
use crate::util::{self, human_size, workspace_root};

pub(super) const USAGE: &str = "usage: cargo xtask bench iso [--runs N] [--gib G] [--dir DIR]";

#[derive(Debug)]
struct IsoBench {
    runs: usize,
    gib: f64,
    dir: PathBuf,
}

fn parse(args: &[String]) -> Result<IsoBench> {
    let f = Flags::parse(args, USAGE, &["--runs", "--gib", "--dir"])?;
    Ok(IsoBench {
        runs: f.count("--runs", 3)?,
        gib: f.positive("--gib", 3.0)?,
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
    let cache_bytes = make_cache(&cache, bench.gib)?;
    eprintln!("cache: {} in {}", human_size(cache_bytes), cache.display());

    // The peer's ESP: the same FAT image imager puts into its ISO, made once, outside the timing.
    let staging = bench.dir.join("peer-staging");
    let esp = prepare_peer_inputs(&assets, &staging)?;
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
            name: "xorriso -as mkisofs (peer)".into(),
            out: out.join("peer"),
            steps: {
                let (cache, out, staging, esp) = (
                    cache.clone(),
                    out.join("peer"),
                    staging.clone(),
                    esp.clone(),
                );
                Box::new(move || {
                    vec![Step::new(xorriso_command(
                        &staging,
                        &esp,
                        &cache,
                        &out.join("peer.iso"),
                    ))]
                })
            },
        },
        Tool {
            name: "imager iso".into(),
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
                    c.arg("iso")
                        .arg("--assets")
                        .arg(&assets)
                        .arg("--image-cache")
                        .arg(&cache)
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
    let peer = medians[1].0.as_secs_f64();
    println!(
        "\n`cargo xtask bench iso --runs {} --gib {}`: {} of cache files, median of {} runs, each until `sync` returns\n",
        bench.runs,
        bench.gib,
        human_size(cache_bytes),
        bench.runs
    );
    let rows: Vec<Vec<String>> = tools
        .iter()
        .zip(&medians)
        .map(|(tool, (time, rss))| {
            let secs = time.as_secs_f64();
            vec![
                tool.name.clone(),
                format!("{secs:.2} s"),
                format!("{:.0} MB/s", cache_bytes as f64 / secs / 1e6),
                format!("{:.2}x", floor / secs),
                format!("{:.2}x", peer / secs),
                human_size(rss * 1024),
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
                "vs xorriso",
                "peak RSS"
            ],
            &rows
        )
    );
    Ok(())
}

/// A cache-shaped tree of about `gib` GiB: a few large layers, many medium and small ones, and
/// thousands of manifest-sized files, filled with pseudo-random bytes (incompressible, never
/// sparse). Reused when a previous run made the same one.
fn make_cache(dir: &Path, gib: f64) -> Result<u64> {
    const MIB: u64 = 1 << 20;
    let scale = gib / 3.0;
    let count = |n: f64| ((n * scale).round() as u64).max(1);
    let plan: Vec<(u64, u64, &str)> = vec![
        (count(1.0), 1024 * MIB, "blob"),
        (count(6.0), 192 * MIB, "blob"),
        (count(40.0), 16 * MIB, "blob"),
        (count(200.0), MIB, "blob"),
        (
            count(2000.0),
            2048,
            "manifests/registry.example.com/team/project/app/digest",
        ),
    ];
    let stamp = dir.join(".bench-stamp");
    // v2: digest-like names (v1 used zero-padded counters, which no real cache has).
    let want = format!("v2 {plan:?}");
    let total: u64 = plan.iter().map(|(n, size, _)| n * size).sum();
    if std::fs::read_to_string(&stamp).is_ok_and(|s| s == want) {
        return Ok(total);
    }
    if dir.exists() {
        std::fs::remove_dir_all(dir)?;
    }
    let mut rng = 0x9e37_79b9_7f4a_7c15_u64;
    let mut index = 0u64;
    for (n, size, sub) in &plan {
        let sub_dir = dir.join(sub);
        std::fs::create_dir_all(&sub_dir)?;
        for _ in 0..*n {
            index += 1;
            noise_file(
                &sub_dir.join(format!("sha256-{}", fake_digest(index))),
                *size,
                &mut rng,
            )?;
        }
    }
    std::fs::write(&stamp, want)?;
    util::run_quiet(&mut Command::new("sync"))?;
    Ok(total)
}

/// The boot files the peer's ISO gets (the same as imager's) and its ESP image.
fn prepare_peer_inputs(assets: &Path, staging: &Path) -> Result<PathBuf> {
    if staging.exists() {
        std::fs::remove_dir_all(staging)?;
    }
    std::fs::create_dir_all(staging.join("isolinux"))?;
    std::fs::write(
        staging.join("isolinux/isolinux.cfg"),
        "DEFAULT talos\nLABEL talos\n  KERNEL /boot/vmlinuz\n  INITRD /boot/initramfs.xz\n",
    )?;
    let mut esp = imager_esp::EspSpec::new("EFIBOOT", 0)?;
    esp.add_file(
        "EFI/BOOT/BOOTX64.EFI",
        &assets.join("efi/systemd-bootx64.efi"),
    )?
    .add_file("talos/vmlinuz", &assets.join("vmlinuz"))?
    .add_file("talos/initramfs.xz", &assets.join("initramfs.xz"))?;
    let path = staging.join("esp.img");
    esp.write(&path)?;
    Ok(path)
}

/// The hybrid recipe xorriso users write for the same medium: ISOLINUX El Torito with a boot info
/// table and isohybrid MBR, the ESP appended as partition 2 and booted by a 0xEF entry, GPT,
/// level 3, Rock Ridge.
fn xorriso_command(staging: &Path, esp: &Path, cache: &Path, out: &Path) -> Command {
    let assets = workspace_root().join("_assets");
    let graft = |inside: &str, host: &Path| format!("{inside}={}", host.display());
    let mut c = Command::new("xorriso");
    c.args([
        "-as",
        "mkisofs",
        "-quiet",
        "-iso-level",
        "3",
        "-R",
        "-V",
        "TALOS_V1_9_0",
        "-graft-points",
    ])
    .args([
        "-b",
        "isolinux/isolinux.bin",
        "-c",
        "isolinux/boot.cat",
        "-no-emul-boot",
        "-boot-load-size",
        "4",
        "-boot-info-table",
    ])
    .arg("-isohybrid-mbr")
    .arg(assets.join("isolinux/isohdpfx.bin"))
    .arg("-append_partition")
    .arg("2")
    .arg("0xef")
    .arg(esp)
    .args([
        "-eltorito-alt-boot",
        "-e",
        "--interval:appended_partition_2:all::",
        "-no-emul-boot",
        "-isohybrid-gpt-basdat",
    ])
    .arg("-o")
    .arg(out)
    .arg(graft(
        "/isolinux/isolinux.bin",
        &assets.join("isolinux/isolinux.bin"),
    ))
    .arg(graft(
        "/isolinux/ldlinux.c32",
        &assets.join("isolinux/ldlinux.c32"),
    ))
    .arg(graft(
        "/isolinux/isolinux.cfg",
        &staging.join("isolinux/isolinux.cfg"),
    ))
    .arg(graft("/boot/vmlinuz", &assets.join("vmlinuz")))
    .arg(graft("/boot/initramfs.xz", &assets.join("initramfs.xz")))
    .arg(graft("/imagecache", cache));
    c
}

/// A digest-like file name part: 64 hex digits that differ from the first character on, as real
/// blob digests do. (Zero-padded counters share their first 50 characters, which turns ISO 9660
/// short-name de-duplication quadratic — a cost no real cache pays.)
fn fake_digest(index: u64) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(index.to_le_bytes()))
}

//! `cargo xtask bench iso`: `imager iso` side by side with the physical floor (`cp -r` of the
//! same files to the same file system) and the peer (`xorriso -as mkisofs` with the equivalent
//! hybrid recipe), in one run, on a generated cache of mixed file sizes.
//!
//! Every tool is timed until its output is on disk (the command, then `sync`), since `imager`
//! syncs its output before the rename that publishes it. Runs rotate the order of the tools so
//! that none always goes first. Peak RSS is each process's `VmHWM`, sampled while it runs.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::util::{self, human_size, workspace_root};

const USAGE: &str = "usage: cargo xtask bench iso [--runs N] [--gib G] [--dir DIR]";

pub fn run(args: &[String]) -> Result<()> {
    match args.first().map(String::as_str) {
        Some("iso") => iso(&args[1..]),
        _ => bail!("{USAGE}"),
    }
}

struct IsoBench {
    runs: usize,
    gib: f64,
    dir: PathBuf,
}

fn parse(args: &[String]) -> Result<IsoBench> {
    let mut bench = IsoBench {
        runs: 3,
        gib: 3.0,
        dir: workspace_root().join("_bench/iso"),
    };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = || {
            it.next()
                .with_context(|| format!("{arg} needs a value\n{USAGE}"))
        };
        match arg.as_str() {
            "--runs" => bench.runs = value()?.parse().context("--runs")?,
            "--gib" => bench.gib = value()?.parse().context("--gib")?,
            "--dir" => bench.dir = PathBuf::from(value()?),
            other => bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    if bench.runs == 0 {
        bail!("--runs must be at least 1");
    }
    Ok(bench)
}

fn iso(args: &[String]) -> Result<()> {
    let bench = parse(args)?;
    crate::assets::run(&[])?;
    let assets = workspace_root().join("_assets");
    let root = workspace_root();
    util::run_quiet(Command::new(env!("CARGO")).current_dir(&root).args([
        "build",
        "--release",
        "--quiet",
        "-p",
        "imager",
    ]))?;
    let imager = util::target_dir().join("release/imager");

    std::fs::create_dir_all(&bench.dir)
        .with_context(|| format!("creating {}", bench.dir.display()))?;
    let cache = bench.dir.join("cache");
    let cache_bytes = make_cache(&cache, bench.gib)?;
    eprintln!("cache: {} in {}", human_size(cache_bytes), cache.display());

    // The peer's ESP: the same FAT image imager puts into its ISO, made once, outside the timing.
    let staging = bench.dir.join("peer-staging");
    let esp = prepare_peer_inputs(&assets, &staging)?;
    let out = bench.dir.join("out");

    let tools: [(&str, CommandFactory); 3] = [
        ("cp -r (floor)", {
            let (cache, out) = (cache.clone(), out.clone());
            Box::new(move || {
                let mut c = Command::new("cp");
                c.arg("-r").arg(&cache).arg(out.join("copy"));
                c
            })
        }),
        ("xorriso -as mkisofs (peer)", {
            let (cache, out, staging, esp) =
                (cache.clone(), out.clone(), staging.clone(), esp.clone());
            Box::new(move || xorriso_command(&staging, &esp, &cache, &out.join("peer.iso")))
        }),
        ("imager iso", {
            let (cache, out, assets, imager) =
                (cache.clone(), out.clone(), assets.clone(), imager.clone());
            Box::new(move || {
                let mut c = Command::new(&imager);
                c.arg("iso")
                    .arg("--assets")
                    .arg(&assets)
                    .arg("--image-cache")
                    .arg(&cache)
                    .arg("--output")
                    .arg(out.join("imager"))
                    .env("SOURCE_DATE_EPOCH", "0");
                c
            })
        }),
    ];

    let mut samples: Vec<Vec<Sample>> = tools.iter().map(|_| Vec::new()).collect();
    for run in 0..bench.runs {
        for k in 0..tools.len() {
            let i = (run + k) % tools.len();
            reset_dir(&out)?;
            let (name, make) = &tools[i];
            let sample = measure(&mut make()).with_context(|| format!("running {name}"))?;
            eprintln!(
                "run {}: {name}: {:.2} s, {} peak RSS",
                run + 1,
                sample.time.as_secs_f64(),
                human_size(sample.rss_kib * 1024)
            );
            samples[i].push(sample);
        }
    }
    reset_dir(&out)?;

    let medians: Vec<(Duration, u64)> = samples
        .iter()
        .map(|s| {
            let mut times: Vec<Duration> = s.iter().map(|x| x.time).collect();
            times.sort();
            (
                times[times.len() / 2],
                s.iter().map(|x| x.rss_kib).max().unwrap_or(0),
            )
        })
        .collect();
    let floor = medians[0].0.as_secs_f64();
    let peer = medians[1].0.as_secs_f64();
    println!(
        "\n`cargo xtask bench iso --runs {} --gib {}`: {} of cache files, median of {} runs, each until `sync` returns\n",
        bench.runs,
        bench.gib,
        human_size(cache_bytes),
        bench.runs
    );
    println!("| tool | median time | throughput | vs cp -r | vs xorriso | peak RSS |");
    println!("|---|---|---|---|---|---|");
    for ((name, _), (time, rss)) in tools.iter().zip(&medians) {
        let secs = time.as_secs_f64();
        println!(
            "| {name} | {secs:.2} s | {:.0} MB/s | {:.2}x | {:.2}x | {} |",
            cache_bytes as f64 / secs / 1e6,
            floor / secs,
            peer / secs,
            human_size(rss * 1024),
        );
    }
    Ok(())
}

/// Makes a fresh command for each run of one tool.
type CommandFactory = Box<dyn Fn() -> Command>;

#[derive(Debug, Clone, Copy)]
struct Sample {
    time: Duration,
    rss_kib: u64,
}

/// Runs `cmd` to completion, then `sync`; returns the wall time of both and the command's peak RSS.
fn measure(cmd: &mut Command) -> Result<Sample> {
    cmd.stdout(std::process::Stdio::null());
    let start = Instant::now();
    let mut child = cmd
        .spawn()
        .with_context(|| format!("starting `{}`", util::command_line(cmd)))?;
    // Peak RSS from the kernel's high-water mark, read while the process runs. (wait4's
    // ru_maxrss is useless here: a child spawned with vfork semantics inherits this process's
    // high-water mark at exec, so every tool would report the xtask's own size.) The mark only
    // grows, so the last read before exit misses at most the final few milliseconds.
    let status_path = format!("/proc/{}/status", child.id());
    let mut peak_kib = 0;
    let status = loop {
        if let Some(kib) = std::fs::read_to_string(&status_path)
            .ok()
            .as_deref()
            .and_then(vm_hwm_kib)
        {
            peak_kib = peak_kib.max(kib);
        }
        if let Some(status) = child.try_wait()? {
            break status;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    if !status.success() {
        bail!("`{}` failed ({status})", util::command_line(cmd));
    }
    util::run_quiet(&mut Command::new("sync"))?;
    Ok(Sample {
        time: start.elapsed(),
        rss_kib: peak_kib,
    })
}

/// `VmHWM:   1234 kB` from /proc/PID/status.
fn vm_hwm_kib(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
}

fn reset_dir(dir: &Path) -> Result<()> {
    if dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    util::run_quiet(&mut Command::new("sync"))
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
    let want = format!("{plan:?}");
    let total: u64 = plan.iter().map(|(n, size, _)| n * size).sum();
    if std::fs::read_to_string(&stamp).is_ok_and(|s| s == want) {
        return Ok(total);
    }
    if dir.exists() {
        std::fs::remove_dir_all(dir)?;
    }
    let mut rng = 0x9e37_79b9_7f4a_7c15_u64;
    let mut buf = vec![0u8; MIB as usize];
    let mut index = 0u64;
    for (n, size, sub) in &plan {
        let sub_dir = dir.join(sub);
        std::fs::create_dir_all(&sub_dir)?;
        for _ in 0..*n {
            index += 1;
            let path = sub_dir.join(format!("sha256-{index:064x}"));
            let mut f = BufWriter::new(
                File::create(&path).with_context(|| format!("creating {}", path.display()))?,
            );
            let mut left = *size;
            while left > 0 {
                for chunk in buf.chunks_exact_mut(8) {
                    // xorshift64: fast and good enough to defeat compression and sparse files.
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    chunk.copy_from_slice(&rng.to_le_bytes());
                }
                let take = left.min(MIB) as usize;
                f.write_all(&buf[..take])?;
                left -= take as u64;
            }
            f.flush()?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_high_water_mark() {
        let status = "Name:\tcp\nVmPeak:\t  9000 kB\nVmHWM:\t    1234 kB\nVmRSS:\t  1000 kB\n";
        assert_eq!(vm_hwm_kib(status), Some(1234));
        assert_eq!(vm_hwm_kib("Name:\tx\n"), None);
    }
}

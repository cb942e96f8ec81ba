//! `cargo xtask bench iso`: `imager iso` side by side with the physical floor (`cp -r` of the
//! same files to the same file system) and the peers, in one run, on a generated cache of mixed
//! file sizes given in the three forms `imager iso --image-cache` reads in place:
//!
//! - the flat tree: against `xorriso -as mkisofs` with the equivalent hybrid recipe;
//! - our OCI form (an OCI layout whose one layer is the flat tree as an uncompressed tar): the
//!   files are copied out of the layer blob by the kernel, so the floor is `cp -r`;
//! - upstream's OCI form (the same, gzip'd): against upstream's way, `tar -xzf` of the layer into
//!   a directory, then xorriso.
//!
//! Besides time and peak RSS it reports the temporary disk space each took beyond its output.
//! Two more rows give the cost of `imager iso --verify` (every blob hashed while it is copied,
//! through a buffer instead of the kernel's copy) on the flat tree and on our OCI form.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};
use imager_oci::media;

use super::{Flags, Step, Tool, markdown_table, peak_temp, run_rotated, summarize, write_noise};
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
    let (oci_tar, oci_gzip) = make_oci_forms(&cache, &bench.dir)?;
    let gzip_layer = layer_blob(&oci_gzip)?;

    // The peer's ESP: the same FAT image imager puts into its ISO, made once, outside the timing.
    let staging = bench.dir.join("peer-staging");
    let esp = prepare_peer_inputs(&assets, &staging)?;
    let out = bench.dir.join("out");

    let imager_from = |name: &str, input: &Path, dir: &str, extra: &[&str]| Tool {
        name: name.into(),
        out: out.join(dir),
        steps: {
            let (input, out, assets, imager) = (
                input.to_owned(),
                out.join(dir),
                assets.clone(),
                imager.clone(),
            );
            let extra: Vec<String> = extra.iter().map(|s| (*s).to_owned()).collect();
            Box::new(move || {
                let mut c = Command::new(&imager);
                c.arg("iso")
                    .arg("--assets")
                    .arg(&assets)
                    .arg("--image-cache")
                    .arg(&input)
                    .arg("--output")
                    .arg(&out)
                    .args(&extra)
                    .env("SOURCE_DATE_EPOCH", "0");
                vec![Step::new(c)]
            })
        },
    };
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
            name: "xorriso -as mkisofs, flat tree (peer)".into(),
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
            name: "tar -xzf + xorriso, gzip OCI form (upstream's way)".into(),
            out: out.join("peer-gzip"),
            steps: {
                let (layer, out, staging, esp) = (
                    gzip_layer.clone(),
                    out.join("peer-gzip"),
                    staging.clone(),
                    esp.clone(),
                );
                Box::new(move || {
                    let tree = out.join("imagecache");
                    let mut mkdir = Command::new("mkdir");
                    mkdir.arg(&tree);
                    let mut untar = Command::new("tar");
                    untar.arg("-xzf").arg(&layer).arg("-C").arg(&tree);
                    let mut rm = Command::new("rm");
                    rm.arg("-rf").arg(&tree);
                    vec![
                        Step::new(mkdir),
                        Step::new(untar),
                        Step::new(xorriso_command(
                            &staging,
                            &esp,
                            &tree,
                            &out.join("peer.iso"),
                        )),
                        Step::new(rm),
                    ]
                })
            },
        },
        imager_from("imager iso, flat tree", &cache, "imager-flat", &[]),
        imager_from(
            "imager iso, OCI form (tar layer)",
            &oci_tar,
            "imager-oci",
            &[],
        ),
        imager_from("imager iso, gzip OCI form", &oci_gzip, "imager-gzip", &[]),
        imager_from(
            "imager iso --verify, flat tree",
            &cache,
            "imager-flat-verify",
            &["--verify"],
        ),
        imager_from(
            "imager iso --verify, OCI form (tar layer)",
            &oci_tar,
            "imager-oci-verify",
            &["--verify"],
        ),
    ];

    let samples = run_rotated(&tools, bench.runs)?;
    super::reset_dir(&out)?;

    let medians: Vec<_> = samples.iter().map(|s| summarize(s)).collect();
    let floor = medians[0].0.as_secs_f64();
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
        "\nimager vs its peer: flat tree {:.2}x xorriso; gzip OCI form {:.2}x tar -xzf + xorriso",
        ratio(3, 1),
        ratio(5, 2)
    );
    println!(
        "--verify costs {:+.0}% on the flat tree, {:+.0}% on the OCI form (tar layer)",
        (ratio(6, 3) - 1.0) * 100.0,
        (ratio(7, 4) - 1.0) * 100.0
    );
    Ok(())
}

/// Our OCI form and upstream's of the flat tree at `cache`: OCI layouts whose one image has one
/// layer, the tree as a tar (sorted, owner 0, dated 0; what `imager cache create` writes) and the
/// same tar gzip'd. Made with GNU tar and gzip, so the reader meets layers it did not write.
/// Reused while the cache is the same.
fn make_oci_forms(cache: &Path, dir: &Path) -> Result<(PathBuf, PathBuf)> {
    let tar_form = dir.join("cache-oci-tar");
    let gzip_form = dir.join("cache-oci-gzip");
    let stamp = dir.join(".oci-forms-stamp");
    let want = std::fs::read_to_string(cache_stamp(cache)).unwrap_or_default();
    if std::fs::read_to_string(&stamp).is_ok_and(|s| s == want) {
        return Ok((tar_form, gzip_form));
    }
    for d in [&tar_form, &gzip_form] {
        if d.exists() {
            std::fs::remove_dir_all(d)?;
        }
        std::fs::create_dir_all(d.join("blobs/sha256"))?;
    }
    eprintln!("making the OCI forms of the cache (once)");
    let tar = tar_form.join("layer.tmp");
    util::run_quiet(
        Command::new("tar")
            .args([
                "--sort=name",
                "--owner=0",
                "--group=0",
                "--numeric-owner",
                "--mtime=@0",
                "--format=gnu",
                "-cf",
            ])
            .arg(&tar)
            .arg("-C")
            .arg(cache)
            .args(["blob", "manifests"]),
    )?;
    let gz = gzip_form.join("layer.tmp");
    let gz_file = std::fs::File::create(&gz)?;
    let status = Command::new("gzip")
        .args(["-1", "-c", "-n"])
        .arg(&tar)
        .stdout(gz_file)
        .status()
        .context("running gzip")?;
    anyhow::ensure!(status.success(), "gzip failed: {status}");
    write_layout(&tar_form, &tar, media::OCI_LAYER_TAR)?;
    write_layout(&gzip_form, &gz, media::OCI_LAYER_TAR_GZIP)?;
    std::fs::write(&stamp, want)?;
    util::run_quiet(&mut Command::new("sync"))?;
    Ok((tar_form, gzip_form))
}

/// Moves `layer` into the layout `dir` as its blob and writes the config, manifest, index.json
/// and oci-layout of a one-image layout for linux/amd64.
fn write_layout(dir: &Path, layer: &Path, media_type: &str) -> Result<()> {
    use sha2::Digest as _;
    let blobs = dir.join("blobs/sha256");
    let mut hasher = sha2::Sha256::new();
    let size = std::io::copy(&mut std::fs::File::open(layer)?, &mut hasher)?;
    let layer_hex = hex::encode(hasher.finalize());
    std::fs::rename(layer, blobs.join(&layer_hex))?;
    let put = |bytes: Vec<u8>| -> Result<(String, usize)> {
        let hex = hex::encode(sha2::Sha256::digest(&bytes));
        std::fs::write(blobs.join(&hex), &bytes)?;
        Ok((format!("sha256:{hex}"), bytes.len()))
    };
    let (config, config_len) = put(serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux", "created": "1970-01-01T00:00:00Z",
        "rootfs": {"type": "layers", "diff_ids": []}, "config": {},
    }))?)?;
    let (manifest, manifest_len) = put(serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": media::OCI_MANIFEST,
        "config": {"mediaType": media::OCI_CONFIG, "digest": config, "size": config_len},
        "layers": [{"mediaType": media_type, "digest": format!("sha256:{layer_hex}"), "size": size}],
    }))?)?;
    std::fs::write(
        dir.join("index.json"),
        serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2, "mediaType": media::OCI_INDEX,
            "manifests": [{"mediaType": media::OCI_MANIFEST,
                "digest": manifest, "size": manifest_len,
                "platform": {"architecture": "amd64", "os": "linux"}}],
        }))?,
    )?;
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    Ok(())
}

/// The layer blob of a layout written by [`write_layout`].
fn layer_blob(layout: &Path) -> Result<PathBuf> {
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json"))?)?;
    let manifest_digest = index["manifests"][0]["digest"]
        .as_str()
        .context("index.json without a manifest")?;
    let blob = |d: &str| {
        layout
            .join("blobs/sha256")
            .join(d.trim_start_matches("sha256:"))
    };
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(blob(manifest_digest))?)?;
    let layer = manifest["layers"][0]["digest"]
        .as_str()
        .context("manifest without a layer")?;
    Ok(blob(layer))
}

/// A cache-shaped tree of about `gib` GiB: a few large layers, many medium and small ones, and
/// thousands of manifest-sized files, filled with pseudo-random bytes (incompressible, never
/// sparse). Reused when a previous run made the same one.
pub(super) fn make_cache(dir: &Path, gib: f64) -> Result<u64> {
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
    let stamp = cache_stamp(dir);
    // v3: every file named by the sha256 of its bytes, so `imager iso --verify` accepts the tree
    // (v2 had digest-like names that were not the content's; v1 zero-padded counters).
    let want = format!("v3 {plan:?}");
    let total: u64 = plan.iter().map(|(n, size, _)| n * size).sum();
    if std::fs::read_to_string(&stamp).is_ok_and(|s| s == want) {
        return Ok(total);
    }
    if dir.exists() {
        std::fs::remove_dir_all(dir)?;
    }
    let mut rng = 0x9e37_79b9_7f4a_7c15_u64;
    for (n, size, sub) in &plan {
        let sub_dir = dir.join(sub);
        std::fs::create_dir_all(&sub_dir)?;
        for _ in 0..*n {
            noise_blob(&sub_dir, *size, &mut rng)?;
        }
    }
    std::fs::write(&stamp, want)?;
    util::run_quiet(&mut Command::new("sync"))?;
    Ok(total)
}

/// What the generated cache at `dir` was made from: beside it, since a file inside is no part of
/// the cache (media leave it out, with a warning).
fn cache_stamp(dir: &Path) -> PathBuf {
    dir.with_extension("stamp")
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

/// A file of `size` bytes of noise in `dir`, named `sha256-<hex>` by its content as a cache's
/// files are. (Real digests also differ from the first character on: zero-padded counters,
/// which share their first 50, turn ISO 9660 short-name de-duplication quadratic — a cost no
/// real cache pays.)
fn noise_blob(dir: &Path, size: u64, state: &mut u64) -> Result<()> {
    use sha2::Digest as _;
    use std::io::Write as _;

    /// Hashes what it writes through.
    struct Hashing<W> {
        out: W,
        hasher: sha2::Sha256,
    }
    impl<W: std::io::Write> std::io::Write for Hashing<W> {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let n = self.out.write(buf)?;
            self.hasher.update(&buf[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            self.out.flush()
        }
    }

    let tmp = dir.join(".noise.tmp");
    let file =
        std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    let mut out = Hashing {
        out: std::io::BufWriter::new(file),
        hasher: sha2::Sha256::new(),
    };
    write_noise(&mut out, size, state)?;
    out.flush()?;
    let name = format!("sha256-{}", hex::encode(out.hasher.finalize()));
    std::fs::rename(&tmp, dir.join(name))?;
    Ok(())
}

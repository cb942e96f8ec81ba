//! The whole chain on a booted machine: a cache made by `imager cache create` from a registry
//! (Debian's docker-registry), written to media by `imager iso` / `imager metal`, booted in QEMU
//! with `imager.serve`. The test node formats its blank `IMAGECACHE` partition, copies the cache
//! in, and serves it with our registryd on port 3172, forwarded to a host loopback port. With the
//! upstream registry stopped, skopeo and a private containerd pull every cached image from the
//! guest and get what the registry served; after power-off, e2fsck finds the disk's ext4 clean
//! and debugfs reads the cache back from it.
//!
//! 1. ISO + blank disk: format, copy, serve, pull; e2fsck and the files on the disk.
//! 2. The same disk again: every file skipped; the pulls still work.
//! 3. Power cut in the middle of copying a large blob, then boot again: the copy completes
//!    (a `.tmp` never counts as copied) and the pulls return correct bytes.
//! 4. The metal image alone: served from its own `IMAGECACHE` partition; on amd64 under OVMF,
//!    and on arm64 under AAVMF (`qemu-system-aarch64 -M virt`).
//!
//! Each boot's time from power-on to "serving" is printed (see docs/benchmarks.md).

// Test code: a panic with its message is how a failure is reported, helpers included.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use imager_boot_test::{
    Attach, BootConfig, BootError, BootFailure, BootOutcome, Firmware, Guest, boot_controlled,
};
use imager_registry::testing::containerd::{Containerd, tail};
use imager_registry::testing::{
    Registry, RegistryOptions, push_image, push_index, sha256_hex, skopeo_raw, test_image,
    two_images_sharing_a_layer,
};

/// Per boot, pulls included; a loaded 2-core CI machine included.
const BOOT_TIMEOUT: Duration = Duration::from_secs(420);
/// The blank disk: room for the larger cache (about 100 MiB) and then some.
const DISK_BYTES: u64 = 512 << 20;
/// The large blob of the power-cut test: long enough to copy that a cut lands inside it.
const LARGE_BLOB: usize = 48 << 20;
/// registryd's port on the node.
const GUEST_PORT: u16 = 3172;

/// An image as the upstream registry served it, before it was stopped.
struct Served {
    /// `test/a:v1`.
    name: String,
    /// The top manifest's bytes.
    raw: Vec<u8>,
}

struct World {
    dir: PathBuf,
    /// The upstream registry's `host:port` (stopped once the caches are made).
    upstream: String,
    small: Vec<Served>,
    large: Vec<Served>,
    small_cache: PathBuf,
    large_cache: PathBuf,
    small_iso: PathBuf,
    large_iso: PathBuf,
    small_metal: PathBuf,
    /// The same for arm64 (the small cache holds the multi-arch index's arm64 image too).
    small_metal_arm64: PathBuf,
}

fn world() -> &'static World {
    static WORLD: OnceLock<Result<World, String>> = OnceLock::new();
    match WORLD.get_or_init(make_world) {
        Ok(w) => w,
        Err(e) => panic!("preparing the caches and media failed (see the first failing test): {e}"),
    }
}

fn make_world() -> Result<World, String> {
    let dir = common::fresh_target_dir("node-serve");
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let registry = Registry::start(RegistryOptions::default());
    let host = registry.host();
    let (a, b) = two_images_sharing_a_layer();
    push_image(&dir, &host, "test/a", "v1", &a, None);
    push_image(&dir, &host, "test/b", "v1", &b, None);
    push_index(
        &dir,
        &host,
        "test/multi",
        "v1",
        &[
            test_image("amd64", 256 << 10),
            test_image("arm64", 256 << 10),
        ],
    );
    // One layer of LARGE_BLOB incompressible bytes (stored gzip: as large in the cache).
    let big = test_image("amd64", LARGE_BLOB);
    push_image(&dir, &host, "test/large", "v1", &big, None);

    let small_names = ["test/a:v1", "test/b:v1", "test/multi:v1"];
    let large_names = ["test/a:v1", "test/b:v1", "test/multi:v1", "test/large:v1"];
    let served = |names: &[&str]| -> Vec<Served> {
        names
            .iter()
            .map(|n| Served {
                name: (*n).to_owned(),
                raw: skopeo_raw(&dir, &format!("{host}/{n}"), None),
            })
            .collect()
    };
    let small = served(&small_names);
    let large = served(&large_names);
    let small_cache = create_cache(&dir, "small-cache", &host, &small_names)?;
    let large_cache = create_cache(&dir, "large-cache", &host, &large_names)?;
    // Upstream gone: whatever the guest serves, it serves from the medium or its disk.
    drop(registry);

    let assets = common::real_assets();
    let media = |cmd: &str, arch: &str, cache: &Path, out: &str| -> Result<PathBuf, String> {
        let out_dir = dir.join(out);
        let mut args: Vec<&OsStr> = vec![
            OsStr::new(cmd),
            OsStr::new("--assets"),
            assets.as_os_str(),
            OsStr::new("--image-cache"),
            cache.as_os_str(),
            OsStr::new("--output"),
            out_dir.as_os_str(),
            OsStr::new("--extra-kernel-arg"),
            OsStr::new("imager.serve"),
            OsStr::new("--extra-kernel-arg"),
            OsStr::new("panic=-1"),
            OsStr::new("--arch"),
            OsStr::new(arch),
        ];
        if cmd == "metal" {
            args.extend([OsStr::new("--out-format"), OsStr::new("raw")]);
        }
        let o = common::imager(args);
        if !o.status.success() {
            return Err(format!(
                "imager {cmd} failed ({}): {}",
                o.status,
                String::from_utf8_lossy(&o.stderr)
            ));
        }
        let ext = if cmd == "metal" { "raw" } else { "iso" };
        Ok(out_dir.join(format!("metal-{arch}.{ext}")))
    };
    Ok(World {
        small_iso: media("iso", "amd64", &small_cache, "small-iso")?,
        large_iso: media("iso", "amd64", &large_cache, "large-iso")?,
        small_metal: media("metal", "amd64", &small_cache, "small-metal")?,
        small_metal_arm64: media("metal", "arm64", &small_cache, "small-metal-arm64")?,
        dir,
        upstream: host,
        small,
        large,
        small_cache,
        large_cache,
    })
}

/// `imager cache create --layout flat` of `names` from the registry at `host`, every platform.
fn create_cache(dir: &Path, name: &str, host: &str, names: &[&str]) -> Result<PathBuf, String> {
    let out = dir.join(name);
    let images: Vec<String> = names.iter().map(|n| format!("{host}/{n}")).collect();
    let o = common::imager([
        "cache",
        "create",
        "--image-cache-path",
        out.to_str().unwrap(),
        "--images",
        &images.join(","),
        "--layout",
        "flat",
        "--platform",
        "all",
        "--insecure",
    ]);
    if !o.status.success() {
        return Err(format!(
            "imager cache create failed ({}): {}",
            o.status,
            String::from_utf8_lossy(&o.stderr)
        ));
    }
    Ok(out)
}

/// A blank disk: one GPT partition named IMAGECACHE (Linux filesystem type) over the whole disk,
/// made by sgdisk, nothing on it.
fn blank_disk(path: &Path) {
    common::require_tool("sgdisk", "gdisk");
    let f = std::fs::File::create(path).unwrap();
    f.set_len(DISK_BYTES).unwrap();
    drop(f);
    let (ok, text) = common::run_tool(
        "sgdisk",
        &[
            OsStr::new("-n"),
            OsStr::new("1:0:0"),
            OsStr::new("-c"),
            OsStr::new("1:IMAGECACHE"),
            OsStr::new("-t"),
            OsStr::new("1:8300"),
            path.as_os_str(),
        ],
    );
    assert!(ok, "sgdisk: {text}");
}

/// A free loopback port for QEMU to forward (bound and released: QEMU takes it a moment later).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// What a serving boot measured.
struct Served1 {
    outcome: BootOutcome,
    to_serving: Duration,
}

/// Boots `media` with `data_disk` (if any) and the guest's 3172 forwarded; once the node serves,
/// runs `pulls` against the forwarded port, then presses the power button. Fails the test unless
/// the node powered off cleanly after reporting done.
fn boot_serving(
    name: &str,
    media: &Path,
    firmware: Firmware,
    attach: Attach,
    data_disk: Option<&Path>,
    pulls: &mut dyn FnMut(u16),
) -> Served1 {
    let port = free_port();
    let mut cfg = BootConfig::image(media, firmware, attach)
        .with_timeout(BOOT_TIMEOUT)
        .with_name(name)
        .with_forward(port, GUEST_PORT);
    if let Some(disk) = data_disk {
        cfg = cfg.with_data_disk(disk);
    }
    let mut to_serving = None;
    let result = boot_controlled(&cfg, &mut |line: &str, guest: &Guest| {
        if line.contains("imager-node-init: serving ") && to_serving.is_none() {
            to_serving = Some(guest.since_power_on());
            pulls(port);
            guest.press_power_button().unwrap();
        }
    });
    let outcome = result.unwrap_or_else(|e| panic!("{e}"));
    let to_serving = to_serving.expect("the node never served");
    eprintln!(
        "{name}: power-on to serving {:.1} s, whole boot {:.1} s",
        to_serving.as_secs_f64(),
        outcome.elapsed.as_secs_f64()
    );
    assert!(outcome.report.power_button, "{}", outcome.console.tail(20));
    Served1 {
        outcome,
        to_serving,
    }
}

/// Pulls every image of `images` from the node at `127.0.0.1:port`: skopeo gets each top
/// manifest byte for byte and copies each image whole (checking every blob's digest), and
/// containerd, mirrored to the node for the upstream registry, pulls each one with every
/// platform; the digests must be the upstream registry's.
fn pull_everything(w: &World, images: &[Served], port: u16) {
    let node = format!("127.0.0.1:{port}");
    let work = tempfile::tempdir().unwrap();
    let started = Instant::now();
    for image in images {
        let raw = skopeo_raw(work.path(), &format!("{node}/{}", image.name), None);
        assert_eq!(
            sha256_hex(&raw),
            sha256_hex(&image.raw),
            "{}: the node served another manifest than the upstream registry",
            image.name
        );
        let layout = work.path().join(image.name.replace([':', '/'], "-"));
        imager_registry::testing::skopeo(
            work.path(),
            &[
                "copy",
                "--all",
                "--src-tls-verify=false",
                &format!("docker://{node}/{}", image.name),
                &format!("oci:{}:x", layout.display()),
            ],
        );
    }
    eprintln!(
        "skopeo: {} images from the node in {:.1} s",
        images.len(),
        started.elapsed().as_secs_f64()
    );

    let containerd = Containerd::start();
    let hosts = tempfile::tempdir().unwrap();
    let registries = vec![w.upstream.clone()];
    imager_talos::write::write_mirror_config(
        hosts.path(),
        &registries,
        &format!("http://{node}"),
        imager_talos::MirrorStyle::RegistryMirrorConfig,
    )
    .unwrap();
    let hosts_dir = hosts.path().display().to_string();
    let started = Instant::now();
    for image in images {
        let reference = format!("{}/{}", w.upstream, image.name);
        containerd.ctr_ok(
            &[
                "image",
                "pull",
                "--hosts-dir",
                &hosts_dir,
                "--all-platforms",
                &reference,
            ],
            Duration::from_secs(300),
        );
    }
    let listed = containerd.ctr_ok(&["image", "ls"], Duration::from_secs(20));
    for image in images {
        let reference = format!("{}/{}", w.upstream, image.name);
        let line = listed
            .lines()
            .find(|l| l.split_whitespace().next() == Some(reference.as_str()))
            .unwrap_or_else(|| {
                panic!(
                    "{reference} not in `ctr image ls`:\n{listed}\n{}",
                    tail(&containerd.log(), 20)
                )
            });
        let want = format!("sha256:{}", sha256_hex(&image.raw));
        assert!(line.contains(&want), "{reference}: {line}, want {want}");
    }
    eprintln!(
        "containerd: {} images from the node in {:.1} s",
        images.len(),
        started.elapsed().as_secs_f64()
    );
}

/// The IMAGECACHE partition's byte offset in `disk` (sgdisk's first sector).
fn partition_offset(disk: &Path) -> u64 {
    common::sgdisk_partition(disk, 1).first * 512
}

/// What may lie on the disk besides the cache.
#[derive(PartialEq)]
enum Leftovers {
    None,
    /// `NAME.tmp` files a power cut left: not part of the cache (nothing serves a `.tmp`; the
    /// node overwrites it when it copies that file again).
    TmpAllowed,
}

/// e2fsck finds the disk's ext4 clean, and debugfs reads back exactly the cache's files.
fn check_disk(disk: &Path, cache: &Path, scratch: &Path, leftovers: Leftovers) {
    let ext4 = format!("{}?offset={}", disk.display(), partition_offset(disk));
    let dump = scratch.join("dump");
    common::e2fsck_and_rdump(&ext4, &dump);
    let on_disk: Vec<_> = common::tree_digests(&dump, &["lost+found"])
        .into_iter()
        .filter(|(p, _)| leftovers == Leftovers::None || !p.ends_with(".tmp"))
        .collect();
    assert_eq!(
        on_disk,
        common::tree_digests(cache, &[]),
        "the node's disk holds something other than the cache"
    );
}

fn file_count(cache: &Path) -> u64 {
    common::files_under(cache).len() as u64
}

#[test]
#[ignore = "needs boot assets and QEMU: run `cargo xtask test`"]
fn iso_and_blank_disk_copy_serve_and_pull_then_skip_on_the_next_boot() {
    let w = world();
    let scratch = w.dir.join("scenario-1");
    std::fs::create_dir_all(&scratch).unwrap();
    let disk = scratch.join("node-disk.raw");
    blank_disk(&disk);
    let files = file_count(&w.small_cache);

    // 1. Format, copy everything, serve.
    let first = boot_serving(
        "serve-first",
        &w.small_iso,
        Firmware::Ovmf,
        Attach::Cdrom,
        Some(&disk),
        &mut |port| pull_everything(w, &w.small, port),
    );
    let r = &first.outcome.report;
    assert!(
        r.formatted.is_some(),
        "the blank partition was not formatted"
    );
    let copy = r.copy.expect("no copy line");
    assert_eq!((copy.copied, copy.skipped), (files, 0), "{copy:?}");
    assert_eq!(
        copy.copied_bytes,
        common::files_under(&w.small_cache)
            .iter()
            .map(|p| p.metadata().unwrap().len())
            .sum::<u64>()
    );
    check_disk(&disk, &w.small_cache, &scratch, Leftovers::None);

    // 2. The same disk: nothing copied, everything skipped, the pulls still work.
    let second = boot_serving(
        "serve-again",
        &w.small_iso,
        Firmware::Ovmf,
        Attach::Cdrom,
        Some(&disk),
        &mut |port| pull_everything(w, &w.small, port),
    );
    let r = &second.outcome.report;
    assert!(
        r.formatted.is_none(),
        "an ext4 partition was formatted again"
    );
    let copy = r.copy.expect("no copy line");
    assert_eq!((copy.copied, copy.skipped), (0, files), "{copy:?}");
    assert!(r.copying.is_empty(), "{:?}", r.copying);
    check_disk(&disk, &w.small_cache, &scratch, Leftovers::None);
    eprintln!(
        "power-on to serving: first boot {:.1} s (format + copy), second {:.1} s (all skipped)",
        first.to_serving.as_secs_f64(),
        second.to_serving.as_secs_f64()
    );
}

#[test]
#[ignore = "needs boot assets and QEMU: run `cargo xtask test`"]
fn a_power_cut_while_copying_is_finished_by_the_next_boot() {
    let w = world();
    let scratch = w.dir.join("scenario-3");
    std::fs::create_dir_all(&scratch).unwrap();
    let disk = scratch.join("node-disk.raw");
    blank_disk(&disk);

    // The large blob's name in the cache.
    let large = common::files_under(&w.large_cache.join("blob"))
        .into_iter()
        .find(|p| p.metadata().unwrap().len() >= LARGE_BLOB as u64)
        .expect("the large blob");
    let large_rel = format!("blob/{}", large.file_name().unwrap().to_string_lossy());

    // Cut the power a moment after the node starts copying the large blob.
    let port = free_port();
    let cfg = BootConfig::image(&w.large_iso, Firmware::Ovmf, Attach::Cdrom)
        .with_timeout(BOOT_TIMEOUT)
        .with_name("serve-cut")
        .with_forward(port, GUEST_PORT)
        .with_data_disk(&disk);
    let needle = format!("imager-node-init: copy file {large_rel} ");
    let mut cut_at = None;
    let result = boot_controlled(&cfg, &mut |line: &str, guest: &Guest| {
        if cut_at.is_none() && line.contains(&needle) {
            std::thread::sleep(Duration::from_millis(300));
            cut_at = Some(guest.since_power_on());
            guest.kill();
        }
    });
    match result {
        Err(BootError::Failed(failed)) if failed.failure == BootFailure::Killed => {
            let r = &failed.report;
            assert!(r.copy.is_none(), "the copy had finished before the cut");
            assert!(!r.done);
        }
        Err(e) => panic!("{e}"),
        Ok(o) => panic!(
            "the boot ended before the power cut; console tail:\n{}",
            o.console.tail(20)
        ),
    }
    eprintln!(
        "power cut at {:.1} s, while copying {large_rel}",
        cut_at.unwrap().as_secs_f64()
    );

    // Boot again: the large blob is copied (a torn copy never counts), the pulls are right.
    let again = boot_serving(
        "serve-after-cut",
        &w.large_iso,
        Firmware::Ovmf,
        Attach::Cdrom,
        Some(&disk),
        &mut |port| pull_everything(w, &w.large, port),
    );
    let r = &again.outcome.report;
    assert!(r.formatted.is_none());
    assert!(
        r.copying.iter().any(|(p, _)| *p == large_rel),
        "the large blob was not copied again: {:?}",
        r.copying
    );
    let copy = r.copy.expect("no copy line");
    assert_eq!(
        copy.copied + copy.skipped,
        file_count(&w.large_cache),
        "{copy:?}"
    );
    check_disk(&disk, &w.large_cache, &scratch, Leftovers::TmpAllowed);
}

#[test]
#[ignore = "needs boot assets and QEMU: run `cargo xtask test`"]
fn the_metal_image_alone_serves_from_its_imagecache_partition() {
    let w = world();
    let served = boot_serving(
        "serve-metal",
        &w.small_metal,
        Firmware::Ovmf,
        Attach::VirtioDisk,
        None,
        &mut |port| pull_everything(w, &w.small, port),
    );
    let r = &served.outcome.report;
    assert!(r.copy.is_none() && r.formatted.is_none());
    assert_eq!(r.volumes.len(), 1, "{:?}", r.volumes);
    assert_eq!(r.volumes[0].label, "IMAGECACHE");
}

#[test]
#[ignore = "needs boot assets and QEMU: run `cargo xtask test`"]
fn the_arm64_metal_image_serves_under_aavmf() {
    let w = world();
    let served = boot_serving(
        "serve-metal-arm64",
        &w.small_metal_arm64,
        Firmware::Aavmf,
        Attach::VirtioDisk,
        None,
        &mut |port| pull_everything(w, &w.small, port),
    );
    let r = &served.outcome.report;
    assert_eq!(r.volumes.len(), 1, "{:?}", r.volumes);
    assert_eq!(r.volumes[0].label, "IMAGECACHE");
    assert!(
        r.cmdline_args().contains(&"console=ttyAMA0,115200"),
        "not the arm64 medium: {:?}",
        r.cmdline
    );
}

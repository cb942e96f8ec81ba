//! `cargo xtask bench cache`: `imager cache create` side by side with what skopeo users do to get
//! the same images from a registry onto disk, in one run, against Debian's `docker-registry` on
//! loopback (the fixture of `imager_registry::testing`).
//!
//! The images are made here, offline: noise tar layers (incompressible, not gzip'd) plus a small
//! gzip'd layer each, with base layers shared across images so that fetching each blob once
//! matters, and a few amd64+arm64 indexes. They are written into one OCI layout and pushed with
//! `skopeo copy --all --preserve-digests` once; the registry's storage directory is kept under
//! `--dir` with a stamp, so a re-run with the same image set starts serving at once.
//!
//! The tools, each into an empty directory, timed until `sync` returns:
//! - `skopeo copy --all docker://... oci:OUT:NAME`, one process per image, all into one layout
//!   (how skopeo users script a list; blobs already in the layout are not fetched again);
//! - `skopeo sync --src docker --dest dir`, one process per repository;
//! - `skopeo sync --src yaml --dest dir`, one process for the whole list;
//! - `imager cache create --layout oci` and `--layout flat`, the list on stdin.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, ensure};
use imager_registry::testing;
use serde_json::json;
use sha2::{Digest as _, Sha256};

use super::{Flags, Step, Tool, fill_noise, markdown_table, run_rotated, summarize};
use crate::util::{self, human_size, workspace_root};

pub(super) const USAGE: &str =
    "usage: cargo xtask bench cache [--runs N] [--images N] [--gib G] [--jobs N] [--dir DIR]";

/// Bumped when the generated images change in a way the plan's text does not show.
const FORMAT: &str = "bench-cache-v1";

use imager_oci::media::{OCI_CONFIG, OCI_INDEX, OCI_LAYER_TAR, OCI_MANIFEST};

#[derive(Debug)]
struct CacheBench {
    runs: usize,
    images: usize,
    gib: f64,
    jobs: usize,
    dir: PathBuf,
}

fn parse(args: &[String]) -> Result<CacheBench> {
    let f = Flags::parse(
        args,
        USAGE,
        &["--runs", "--images", "--gib", "--jobs", "--dir"],
    )?;
    Ok(CacheBench {
        runs: f.count("--runs", 3)?,
        images: f.count("--images", 30)?,
        gib: f.positive("--gib", 1.5)?,
        jobs: f.count("--jobs", 4)?,
        dir: f.path("--dir", workspace_root().join("_bench/cache")),
    })
}

/// One layer of a test image.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Layer {
    /// A tar holding one file of `size` bytes of noise from `seed`; the same seed is the same blob.
    Noise { seed: u64, size: u64 },
    /// A small gzip'd tar holding one text file (unique to its image).
    Small { text: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct PlatformImage {
    arch: &'static str,
    layers: Vec<Layer>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ImageSpec {
    /// Repository under the registry, e.g. `bench/app-07`.
    pub repo: String,
    pub tag: String,
    /// One: a plain image manifest; several: an index over them.
    platforms: Vec<PlatformImage>,
}

impl ImageSpec {
    /// An amd64+arm64 index rather than one image manifest.
    pub(super) fn multi_arch(&self) -> bool {
        self.platforms.len() > 1
    }

    /// The name of its entry in the OCI layout the images are pushed from.
    fn layout_name(&self) -> String {
        self.repo
            .rsplit('/')
            .next()
            .unwrap_or(&self.repo)
            .to_owned()
    }
}

/// Sizes in units (the unit is scaled so that the distinct bytes come to `--gib`): base layers
/// shared by many images, and each image's own layer cycling through small to large.
const BASE_UNITS: [u64; 3] = [24, 8, 16];
const APP_UNITS: [u64; 6] = [1, 6, 12, 24, 48, 96];
/// Every sixth image, starting with the fourth, is an amd64+arm64 index.
const MULTI_ARCH_EVERY: usize = 6;
const MULTI_ARCH_FIRST: usize = 3;

/// Which base layers image `i` is built on: a "debian" base (two images of three) or a
/// "distroless" one (the third), and a shared "runtime" layer on every fourth.
fn bases(i: usize) -> Vec<usize> {
    let mut b = vec![if i % 3 == 2 { 1 } else { 0 }];
    if i.is_multiple_of(4) {
        b.push(2);
    }
    b
}

/// The images of a run: `n` images whose distinct blobs total about `gib` GiB.
fn plan(n: usize, gib: f64) -> Vec<ImageSpec> {
    let unit_plan = plan_with_unit(n, 1);
    let units: u64 = distinct_noise(&unit_plan).values().sum();
    // Rounded to 4 KiB, so sizes stay page-sized and readable.
    let unit = ((gib * (1u64 << 30) as f64 / units as f64 / 4096.0).round() as u64).max(1) * 4096;
    plan_with_unit(n, unit)
}

fn plan_with_unit(n: usize, unit: u64) -> Vec<ImageSpec> {
    (0..n)
        .map(|i| {
            let multi = i % MULTI_ARCH_EVERY == MULTI_ARCH_FIRST;
            let archs: &[&'static str] = if multi {
                &["amd64", "arm64"]
            } else {
                &["amd64"]
            };
            let platforms = archs
                .iter()
                .enumerate()
                .map(|(a, &arch)| {
                    let a = a as u64;
                    let mut layers: Vec<Layer> = bases(i)
                        .into_iter()
                        .map(|b| Layer::Noise {
                            seed: 1000 + 2 * b as u64 + a,
                            size: BASE_UNITS[b] * unit,
                        })
                        .collect();
                    layers.push(Layer::Noise {
                        seed: 100_000 + 2 * i as u64 + a,
                        size: APP_UNITS[i % APP_UNITS.len()] * unit,
                    });
                    layers.push(Layer::Small {
                        text: format!("image=app-{i:02}\narch={arch}\n"),
                    });
                    PlatformImage { arch, layers }
                })
                .collect();
            ImageSpec {
                repo: format!("bench/app-{i:02}"),
                tag: format!("v1.{i}.0"),
                platforms,
            }
        })
        .collect()
}

/// Each distinct noise layer (by seed) and its size.
fn distinct_noise(images: &[ImageSpec]) -> BTreeMap<u64, u64> {
    images
        .iter()
        .flat_map(|i| &i.platforms)
        .flat_map(|p| &p.layers)
        .filter_map(|l| match l {
            Layer::Noise { seed, size } => Some((*seed, *size)),
            Layer::Small { .. } => None,
        })
        .collect()
}

/// Noise bytes as the images list them, a shared layer once per image that has it.
fn noise_bytes_per_image(images: &[ImageSpec]) -> u64 {
    images
        .iter()
        .flat_map(|i| &i.platforms)
        .flat_map(|p| &p.layers)
        .map(|l| match l {
            Layer::Noise { size, .. } => *size,
            Layer::Small { .. } => 0,
        })
        .sum()
}

/// The `--images -` list for the registry at `host`.
pub(super) fn image_list(host: &str, images: &[ImageSpec]) -> String {
    images
        .iter()
        .map(|i| format!("{host}/{}:{}\n", i.repo, i.tag))
        .collect()
}

/// `skopeo sync --src yaml` input: every image of the list, from the plain-HTTP registry at `host`.
fn sync_yaml(host: &str, images: &[ImageSpec]) -> String {
    let mut y = format!("{host}:\n  tls-verify: false\n  images:\n");
    for i in images {
        y += &format!("    {}:\n      - {:?}\n", i.repo, i.tag);
    }
    y
}

/// What a stamped registry holds: the plan it was filled from, and the totals of its blobs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Stamp {
    key: String,
    pub blobs: u64,
    pub bytes: u64,
}

impl Stamp {
    fn key(images: &[ImageSpec]) -> String {
        testing::sha256_hex(format!("{FORMAT} {images:?}").as_bytes())
    }

    pub(super) fn to_text(&self) -> String {
        format!("{} {} {}\n", self.key, self.blobs, self.bytes)
    }

    fn parse(text: &str) -> Option<Self> {
        let mut it = text.split_whitespace();
        let stamp = Self {
            key: it.next()?.to_owned(),
            blobs: it.next()?.parse().ok()?,
            bytes: it.next()?.parse().ok()?,
        };
        it.next().is_none().then_some(stamp)
    }
}

/// The test images, pushed to a docker-registry on loopback whose storage lives under `dir` (kept
/// with a stamp, so a later run with the same plan starts serving at once). `bench serve` uses the
/// same fixture.
pub(super) struct Fixture {
    pub registry: testing::Registry,
    pub host: String,
    pub images: Vec<ImageSpec>,
    pub stamp: Stamp,
    /// `dir`, canonical.
    pub dir: PathBuf,
}

pub(super) fn fixture(dir: &Path, n: usize, gib: f64) -> Result<Fixture> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let dir = dir.canonicalize()?;
    let storage = dir.join("registry");
    // The test registry keeps its storage in a temp dir of its own; distribution's environment
    // override puts it here instead, where it survives for the next run.
    // SAFETY: nothing else runs yet: no thread of this process reads the environment.
    unsafe { std::env::set_var("REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY", &storage) };

    let images = plan(n, gib);
    let key = Stamp::key(&images);
    let stamp_path = dir.join("registry.stamp");
    let reuse = std::fs::read_to_string(&stamp_path)
        .ok()
        .and_then(|t| Stamp::parse(&t))
        .filter(|s| s.key == key && storage.join("docker").is_dir());

    let layout = dir.join("layout");
    let built = if reuse.is_none() {
        let _ = std::fs::remove_file(&stamp_path);
        for d in [&storage, &layout] {
            if d.exists() {
                std::fs::remove_dir_all(d).with_context(|| format!("removing {}", d.display()))?;
            }
        }
        eprintln!(
            "building {} test images in {}",
            images.len(),
            layout.display()
        );
        Some(write_layout(&layout, &images)?)
    } else {
        None
    };

    let registry = testing::Registry::start(testing::RegistryOptions::default());
    let host = registry.host();
    let stamp = match (reuse, built) {
        (Some(stamp), _) => {
            eprintln!("registry storage reused from {}", storage.display());
            stamp
        }
        (None, Some((blobs, bytes))) => {
            eprintln!("pushing them to {host}");
            for image in &images {
                util::run_quiet(skopeo(&dir).args([
                    "copy",
                    "--quiet",
                    "--all",
                    "--preserve-digests",
                    "--dest-tls-verify=false",
                    &format!("oci:{}:{}", layout.display(), image.layout_name()),
                    &format!("docker://{host}/{}:{}", image.repo, image.tag),
                ]))
                .with_context(|| format!("pushing {}", image.repo))?;
            }
            std::fs::remove_dir_all(&layout)?;
            let stamp = Stamp { key, blobs, bytes };
            std::fs::write(&stamp_path, stamp.to_text())?;
            stamp
        }
        (None, None) => unreachable!("the layout is built whenever the storage is not reused"),
    };
    Ok(Fixture {
        registry,
        host,
        images,
        stamp,
        dir,
    })
}

pub(super) fn run(args: &[String]) -> Result<()> {
    let bench = parse(args)?;
    let imager = super::build_imager()?;
    let Fixture {
        registry,
        host,
        images,
        stamp,
        dir,
    } = fixture(&bench.dir, bench.images, bench.gib)?;

    let list = image_list(&host, &images);
    let yaml = dir.join("sync.yaml");
    std::fs::write(&yaml, sync_yaml(&host, &images))?;
    let out = dir.join("out");
    let tools = tools(&bench, &dir, &out, &imager, &host, &images, &list, &yaml);

    eprintln!(
        "{} images, {} in {} blobs, from {host}",
        images.len(),
        human_size(stamp.bytes),
        stamp.blobs
    );
    let samples = run_rotated(&tools, bench.runs)?;

    // Each imager output once more, not timed: is what was measured a whole cache?
    for tool in tools.iter().filter(|t| t.name.starts_with("imager")) {
        let cache = tool.out.join("cache");
        let said = util::output(Command::new(&imager).args(["cache", "verify"]).arg(&cache))
            .with_context(|| format!("verifying the output of {}", tool.name))?;
        let listed = util::output(Command::new(&imager).args(["cache", "list"]).arg(&cache))?;
        // A header line, then one line per tag.
        ensure!(
            listed.lines().count() == images.len() + 1,
            "{}: `imager cache list` shows {} lines for {} images",
            tool.name,
            listed.lines().count(),
            images.len()
        );
        eprintln!(
            "{}: {}",
            tool.name,
            said.lines().last().unwrap_or("").trim()
        );
    }
    super::reset_dir(&out)?;
    drop(registry);

    let medians: Vec<_> = samples.iter().map(|s| summarize(s)).collect();
    let copy = medians[0].0.as_secs_f64();
    let fastest_skopeo = medians[..3]
        .iter()
        .map(|m| m.0.as_secs_f64())
        .fold(f64::INFINITY, f64::min);
    let multi = images.iter().filter(|i| i.multi_arch()).count();
    let mib = |kib: u64| format!("{:.0} MiB", kib as f64 / 1024.0);
    println!(
        "\n`cargo xtask bench cache --runs {} --images {} --gib {} --jobs {}`: {} images ({multi} of them \
         amd64+arm64 indexes), {} in {} distinct blobs ({} of layers if shared ones counted once per \
         image), from docker-registry on 127.0.0.1; median of {} runs, each until `sync` returns; {}\n",
        bench.runs,
        bench.images,
        bench.gib,
        bench.jobs,
        images.len(),
        human_size(stamp.bytes),
        stamp.blobs,
        human_size(noise_bytes_per_image(&images)),
        bench.runs,
        super::machine_note(),
    );
    let rows: Vec<Vec<String>> = tools
        .iter()
        .zip(&medians)
        .map(|(tool, (time, rss))| {
            let secs = time.as_secs_f64();
            vec![
                tool.name.clone(),
                format!("{secs:.2} s"),
                format!("{:.0} MB/s", stamp.bytes as f64 / secs / 1e6),
                format!("{:.2}x", copy / secs),
                format!("{:.2}x", fastest_skopeo / secs),
                mib(*rss),
            ]
        })
        .collect();
    print!(
        "{}",
        markdown_table(
            &[
                "tool",
                "median time",
                "data rate",
                "vs skopeo copy",
                "vs fastest skopeo",
                "peak RSS (largest process)",
            ],
            &rows
        )
    );
    println!();
    let verdict = |ok: bool| if ok { "met" } else { "missed" };
    for (tool, (time, rss)) in tools.iter().zip(&medians).skip(3) {
        let secs = time.as_secs_f64();
        let (vs_copy, vs_fastest) = (copy / secs, fastest_skopeo / secs);
        println!(
            "- {}: target >= 1.5x skopeo: {} against skopeo copy ({vs_copy:.2}x), {} against the \
             fastest skopeo ({vs_fastest:.2}x); target peak RSS <= 128 MiB: {} ({})",
            tool.name,
            verdict(vs_copy >= 1.5),
            verdict(vs_fastest >= 1.5),
            verdict(*rss <= 128 * 1024),
            mib(*rss),
        );
    }
    // Issue 8: the OCI layout is written in place, so it should cost little over the flat tree,
    // and the default output should be well ahead of skopeo's fastest way (one sync process).
    let (oci, flat, sync_yaml) = (
        medians[3].0.as_secs_f64(),
        medians[4].0.as_secs_f64(),
        medians[2].0.as_secs_f64(),
    );
    println!(
        "- --layout oci vs --layout flat: {:.2}x the time (target <= 1.25x: {}); vs skopeo sync \
         --src yaml: {:.2}x faster (target >= 3x: {})",
        oci / flat,
        verdict(oci / flat <= 1.25),
        sync_yaml / oci,
        verdict(sync_yaml / oci >= 3.0),
    );
    Ok(())
}

/// The tools, skopeo's ways first (the table's ratios refer to them by position).
#[allow(clippy::too_many_arguments)]
fn tools(
    bench: &CacheBench,
    dir: &Path,
    out: &Path,
    imager: &Path,
    host: &str,
    images: &[ImageSpec],
    list: &str,
    yaml: &Path,
) -> Vec<Tool> {
    let mut tools = Vec::new();
    {
        let (dir, out, host, images) = (
            dir.to_owned(),
            out.join("skopeo-copy"),
            host.to_owned(),
            images.to_vec(),
        );
        tools.push(Tool {
            name: "skopeo copy --all, per image, into one OCI layout".into(),
            out: out.clone(),
            steps: Box::new(move || {
                images
                    .iter()
                    .map(|i| {
                        let mut c = skopeo(&dir);
                        c.args(["copy", "--all", "--src-tls-verify=false"])
                            .arg(format!("docker://{host}/{}:{}", i.repo, i.tag))
                            .arg(format!(
                                "oci:{}:{}-{}",
                                out.join("cache").display(),
                                i.layout_name(),
                                i.tag
                            ));
                        Step::new(c)
                    })
                    .collect()
            }),
        });
    }
    {
        let (dir, out, host, images) = (
            dir.to_owned(),
            out.join("skopeo-sync-docker"),
            host.to_owned(),
            images.to_vec(),
        );
        tools.push(Tool {
            name: "skopeo sync --src docker --dest dir, per repository".into(),
            out: out.clone(),
            steps: Box::new(move || {
                images
                    .iter()
                    .map(|i| {
                        let mut c = skopeo(&dir);
                        c.args([
                            "sync",
                            "--all",
                            "--src",
                            "docker",
                            "--dest",
                            "dir",
                            "--src-tls-verify=false",
                        ])
                        .arg(format!("{host}/{}", i.repo))
                        .arg(&out);
                        Step::new(c)
                    })
                    .collect()
            }),
        });
    }
    {
        let (dir, out, yaml) = (
            dir.to_owned(),
            out.join("skopeo-sync-yaml"),
            yaml.to_owned(),
        );
        tools.push(Tool {
            name: "skopeo sync --src yaml --dest dir, one process".into(),
            out: out.clone(),
            steps: Box::new(move || {
                let mut c = skopeo(&dir);
                c.args(["sync", "--all", "--src", "yaml", "--dest", "dir"])
                    .arg(&yaml)
                    .arg(&out);
                vec![Step::new(c)]
            }),
        });
    }
    for layout in ["oci", "flat"] {
        let (out, imager, list, jobs) = (
            out.join(format!("imager-{layout}")),
            imager.to_owned(),
            list.to_owned(),
            bench.jobs.to_string(),
        );
        tools.push(Tool {
            name: format!("imager cache create --layout {layout}"),
            out: out.clone(),
            steps: Box::new(move || {
                let mut c = Command::new(&imager);
                c.args(["cache", "create", "--insecure", "--image-cache-path"])
                    .arg(out.join("cache"))
                    .args(["--images", "-", "--platform", "all", "--layout", layout])
                    .args(["--jobs", &jobs])
                    .env("SOURCE_DATE_EPOCH", "0")
                    // Anonymous, as skopeo is here: no credential of this machine is looked up.
                    .env("DOCKER_CONFIG", out.join("no-docker-config"));
                vec![Step::with_stdin(c, list.clone().into_bytes())]
            }),
        });
    }
    tools
}

/// skopeo with a signature policy of our own (the system one is not ours to rely on) and no
/// credentials from this machine's auth files.
pub(super) fn skopeo(dir: &Path) -> Command {
    let policy = dir.join("policy.json");
    if !policy.exists() {
        // A failure to write shows up as skopeo's complaint about the missing file.
        let _ = std::fs::write(
            &policy,
            br#"{"default":[{"type":"insecureAcceptAnything"}]}"#,
        );
    }
    let mut c = Command::new("skopeo");
    c.arg("--policy")
        .arg(&policy)
        .env("REGISTRY_AUTH_FILE", dir.join("no-auth.json"));
    c
}

/// Counts and hashes what goes through it.
struct Hashing<W> {
    inner: W,
    hasher: Sha256,
    len: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// `size` bytes of noise from `seed`, as a reader.
struct Noise {
    left: u64,
    state: u64,
}

impl Read for Noise {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        fill_noise(&mut buf[..n], &mut self.state);
        self.left -= n as u64;
        Ok(n)
    }
}

/// A blob written into a layout: its descriptor fields.
#[derive(Debug, Clone)]
struct Desc {
    media_type: &'static str,
    digest: String,
    size: u64,
}

impl Desc {
    fn json(&self) -> serde_json::Value {
        json!({"mediaType": self.media_type, "digest": self.digest, "size": self.size})
    }
}

/// The blobs directory of the layout being written.
struct Blobs {
    dir: PathBuf,
}

impl Blobs {
    fn put(&self, media_type: &'static str, bytes: &[u8]) -> Result<Desc> {
        let hex = testing::sha256_hex(bytes);
        std::fs::write(self.dir.join(&hex), bytes)?;
        Ok(Desc {
            media_type,
            digest: format!("sha256:{hex}"),
            size: bytes.len() as u64,
        })
    }

    /// A tar of one file of noise, streamed to disk and hashed on the way.
    fn put_noise_layer(&self, seed: u64, size: u64) -> Result<Desc> {
        let tmp = self.dir.join(format!(".tmp-{seed}"));
        let file = File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        let mut tar = tar::Builder::new(Hashing {
            inner: BufWriter::with_capacity(1 << 20, file),
            hasher: Sha256::new(),
            len: 0,
        });
        let mut h = tar::Header::new_ustar();
        h.set_size(size);
        h.set_mode(0o644);
        h.set_mtime(0);
        h.set_entry_type(tar::EntryType::Regular);
        let mut noise = Noise {
            left: size,
            state: seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1,
        };
        tar.append_data(&mut h, format!("data/{seed}.bin"), &mut noise)?;
        let mut w = tar.into_inner()?;
        w.flush()?;
        let hex = format!("{:x}", w.hasher.finalize());
        std::fs::rename(&tmp, self.dir.join(&hex))?;
        Ok(Desc {
            media_type: OCI_LAYER_TAR,
            digest: format!("sha256:{hex}"),
            size: w.len,
        })
    }
}

/// Writes every image into one OCI layout at `dir` (each named by [`ImageSpec::layout_name`]);
/// returns the number of distinct blobs and their bytes, manifests included.
fn write_layout(dir: &Path, images: &[ImageSpec]) -> Result<(u64, u64)> {
    let blobs = Blobs {
        dir: dir.join("blobs/sha256"),
    };
    std::fs::create_dir_all(&blobs.dir)?;
    // Each noise layer once (the shared ones are most of the bytes): descriptor and diff ID.
    let mut noise: BTreeMap<u64, Desc> = BTreeMap::new();
    for (seed, size) in distinct_noise(images) {
        noise.insert(seed, blobs.put_noise_layer(seed, size)?);
    }
    let mut entries = Vec::new();
    for image in images {
        let mut children = Vec::new();
        for p in &image.platforms {
            let mut layers = Vec::new();
            let mut diff_ids = Vec::new();
            for layer in &p.layers {
                match layer {
                    Layer::Noise { seed, .. } => {
                        let d = noise[seed].clone();
                        diff_ids.push(d.digest.clone());
                        layers.push(d);
                    }
                    Layer::Small { text } => {
                        let (blob, diff_id) =
                            testing::layer(&[("etc/bench-release", text.clone().into_bytes())]);
                        layers.push(blobs.put(blob.media_type, &blob.bytes)?);
                        diff_ids.push(diff_id);
                    }
                }
            }
            let config = json!({
                "architecture": p.arch,
                "os": "linux",
                "config": {"Cmd": ["/bin/true"]},
                "rootfs": {"type": "layers", "diff_ids": diff_ids},
            });
            let config = blobs.put(OCI_CONFIG, &serde_json::to_vec(&config)?)?;
            let manifest = json!({
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": config.json(),
                "layers": layers.iter().map(Desc::json).collect::<Vec<_>>(),
            });
            let manifest = blobs.put(OCI_MANIFEST, &serde_json::to_vec(&manifest)?)?;
            children.push((p.arch, manifest));
        }
        let top = if children.len() == 1 {
            children.remove(0).1
        } else {
            let index = json!({
                "schemaVersion": 2,
                "mediaType": OCI_INDEX,
                "manifests": children.iter().map(|(arch, m)| {
                    let mut d = m.json();
                    d["platform"] = json!({"os": "linux", "architecture": arch});
                    d
                }).collect::<Vec<_>>(),
            });
            blobs.put(OCI_INDEX, &serde_json::to_vec(&index)?)?
        };
        let mut d = top.json();
        d["annotations"] = json!({"org.opencontainers.image.ref.name": image.layout_name()});
        entries.push(d);
    }
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    std::fs::write(
        dir.join("index.json"),
        serde_json::to_vec(&json!({"schemaVersion": 2, "manifests": entries}))?,
    )?;
    let (mut count, mut bytes) = (0, 0);
    for entry in std::fs::read_dir(&blobs.dir)? {
        count += 1;
        bytes += entry?.metadata()?.len();
    }
    Ok((count, bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plan_has_shared_layers_indexes_and_the_size_asked_for() {
        let images = plan(30, 1.5);
        assert_eq!(images.len(), 30);
        let multi: Vec<usize> = (0..30)
            .filter(|&i| images[i].platforms.len() == 2)
            .collect();
        assert_eq!(multi, [3, 9, 15, 21, 27]);
        for i in &multi {
            let archs: Vec<&str> = images[*i].platforms.iter().map(|p| p.arch).collect();
            assert_eq!(archs, ["amd64", "arm64"]);
        }
        let distinct: u64 = distinct_noise(&images).values().sum();
        let want = 1.5 * (1u64 << 30) as f64;
        assert!(
            (distinct as f64 - want).abs() / want < 0.01,
            "{distinct} bytes for {want}"
        );
        // Shared layers make a third or more of the per-image bytes: dedup matters.
        assert!(noise_bytes_per_image(&images) as f64 > 1.5 * distinct as f64);
        // Sizes are whole pages, and the plan is the same every time (the stamp relies on it).
        assert!(distinct_noise(&images).values().all(|s| s % 4096 == 0));
        assert_eq!(Stamp::key(&images), Stamp::key(&plan(30, 1.5)));
        assert_ne!(Stamp::key(&images), Stamp::key(&plan(30, 0.2)));
    }

    #[test]
    fn every_image_is_its_own_and_small_plans_work() {
        let images = plan(2, 0.01);
        assert_eq!(images[0].repo, "bench/app-00");
        assert_eq!(images[1].tag, "v1.1.0");
        assert_eq!(images[1].layout_name(), "app-01");
        let texts: Vec<&Layer> = images
            .iter()
            .flat_map(|i| &i.platforms)
            .flat_map(|p| &p.layers)
            .filter(|l| matches!(l, Layer::Small { .. }))
            .collect();
        assert_eq!(texts.len(), 2);
        assert_ne!(texts[0], texts[1]);
    }

    #[test]
    fn lists_for_imager_and_skopeo_sync() {
        let images = plan(2, 0.01);
        assert_eq!(
            image_list("127.0.0.1:5000", &images),
            "127.0.0.1:5000/bench/app-00:v1.0.0\n127.0.0.1:5000/bench/app-01:v1.1.0\n"
        );
        assert_eq!(
            sync_yaml("127.0.0.1:5000", &images[..1]),
            "127.0.0.1:5000:\n  tls-verify: false\n  images:\n    bench/app-00:\n      - \"v1.0.0\"\n"
        );
    }

    #[test]
    fn stamps_round_trip() {
        let s = Stamp {
            key: "ab".into(),
            blobs: 3,
            bytes: 7,
        };
        assert_eq!(Stamp::parse(&s.to_text()), Some(s));
        assert_eq!(Stamp::parse("ab 3"), None);
        assert_eq!(Stamp::parse("ab 3 x"), None);
        assert_eq!(Stamp::parse("ab 3 7 9"), None);
    }

    #[test]
    fn noise_layers_are_tars_of_the_size_planned() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = Blobs {
            dir: dir.path().to_owned(),
        };
        let d = blobs.put_noise_layer(5, 3000).unwrap();
        let path = dir.path().join(d.digest.trim_start_matches("sha256:"));
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(bytes.len() as u64, d.size);
        assert_eq!(d.digest, format!("sha256:{}", testing::sha256_hex(&bytes)));
        let mut archive = tar::Archive::new(bytes.as_slice());
        let sizes: Vec<u64> = archive
            .entries()
            .unwrap()
            .map(|e| e.unwrap().header().size().unwrap())
            .collect();
        assert_eq!(sizes, [3000]);
        // The same seed is the same blob.
        assert_eq!(blobs.put_noise_layer(5, 3000).unwrap().digest, d.digest);
    }
}

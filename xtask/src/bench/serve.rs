//! `cargo xtask bench serve`: `imager cache serve` side by side with Debian's `docker-registry`
//! (filesystem storage) serving the same images, in one run, under the same load; and our server
//! over the same cache in three forms: the flat tree, an ISO made by `imager iso` (served in
//! place from the image) and the OCI layout of `imager cache create` (served in place from its
//! uncompressed layer blob).
//!
//! The images are `bench cache`'s (same fixture, same `--dir`, so one built for either is reused
//! by the other). docker-registry serves its own storage; ours serves caches made from it once
//! with `imager cache create --layout flat` and `--layout oci`, and an ISO of the flat one (kept
//! beside the fixture with a stamp). Every manifest and blob path is first read from
//! docker-registry, so every server gets the same requests and each answer's length is checked
//! against what the peer said.
//!
//! Workloads, each at 1 and 16 clients ([`load`]): every manifest (tags and, for indexes, the
//! platform manifests by digest), and every blob of at least 1 MiB. Each server is freshly
//! started for the benchmark; peak RSS is its `VmHWM` after all runs, so it covers the startup
//! and every workload. Targets: the flat tree at 1.5x docker-registry's throughput, the ISO and
//! OCI forms within 10% of the flat tree.

use std::collections::BTreeSet;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use imager_registry::testing;
use serde_json::Value;

use super::cache::{Fixture, fixture, image_list};
use super::load::{self, Outcome, Request};
use super::{Flags, markdown_table, rotation, vm_hwm_kib};
use crate::util::{human_size, workspace_root};

pub(super) const USAGE: &str =
    "usage: cargo xtask bench serve [--runs N] [--seconds S] [--images N] [--gib G] [--dir DIR]";

use imager_oci::media::MANIFEST_ACCEPT;

/// Blobs of at least this size make the blob workload.
const LARGE_BLOB: u64 = 1 << 20;
const CLIENTS: [usize; 2] = [1, 16];
const WARMUP: Duration = Duration::from_millis(500);

#[derive(Debug)]
struct ServeBench {
    runs: usize,
    seconds: f64,
    images: usize,
    gib: f64,
    dir: PathBuf,
}

fn parse(args: &[String]) -> Result<ServeBench> {
    let known = ["--runs", "--seconds", "--images", "--gib", "--dir"];
    let f = Flags::parse(args, USAGE, &known)?;
    Ok(ServeBench {
        runs: f.count("--runs", 3)?,
        seconds: f.positive("--seconds", 4.0)?,
        images: f.count("--images", 30)?,
        gib: f.positive("--gib", 1.5)?,
        dir: f.path("--dir", workspace_root().join("_bench/cache")),
    })
}

/// A server under load: its address and process.
struct Peer {
    name: &'static str,
    addr: SocketAddr,
    pid: u32,
}

/// `imager cache serve`, stopped on drop.
struct ImagerServer {
    child: Child,
    addr: SocketAddr,
}

impl ImagerServer {
    fn start(imager: &Path, flat: &Path, log: &Path) -> Result<Self> {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .context("finding a free port")?
            .port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let child = Command::new(imager)
            .args(["cache", "serve", "--image-cache-path"])
            .arg(flat)
            .arg("--address")
            .arg(addr.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log)?)
            .spawn()
            .context("starting imager cache serve")?;
        let mut server = Self { child, addr };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_err() {
            if server.child.try_wait()?.is_some() || Instant::now() > deadline {
                bail!(
                    "imager cache serve did not listen on {addr}:\n{}",
                    std::fs::read_to_string(log).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(server)
    }
}

impl Drop for ImagerServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
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
    let flat = dir.join("serve-flat");
    let oci = dir.join("serve-oci");
    let iso_dir = dir.join("serve-iso");
    let iso = iso_dir.join("metal-amd64.iso");
    let forms_stamp = dir.join("serve-forms.stamp");
    if std::fs::read_to_string(&forms_stamp).ok().as_deref() != Some(&stamp.to_text()) {
        for old in [&flat, &oci, &iso_dir] {
            if old.exists() {
                std::fs::remove_dir_all(old)?;
            }
        }
        for (layout, out) in [("flat", &flat), ("oci", &oci)] {
            eprintln!("making the {layout} cache {}", out.display());
            let mut c = Command::new(&imager);
            c.args(["cache", "create", "--insecure", "--image-cache-path"])
                .arg(out)
                .args(["--images", "-", "--platform", "all", "--layout", layout])
                .env("DOCKER_CONFIG", dir.join("no-docker-config"));
            super::run_step(
                super::Step::with_stdin(c, list.clone().into_bytes()),
                &mut || {},
            )
            .with_context(|| format!("making the {layout} cache"))?;
        }
        eprintln!("making the ISO {}", iso.display());
        crate::assets::run(&[])?;
        let mut c = Command::new(&imager);
        c.arg("iso")
            .arg("--assets")
            .arg(workspace_root().join("_assets"))
            .arg("--image-cache")
            .arg(&flat)
            .arg("--output")
            .arg(&iso_dir)
            .env("SOURCE_DATE_EPOCH", "0");
        super::run_step(super::Step::new(c), &mut || {}).context("making the ISO")?;
        ensure!(iso.is_file(), "imager iso wrote no {}", iso.display());
        std::fs::write(&forms_stamp, stamp.to_text())?;
    }
    // Every server starts fresh, so its peak RSS is this benchmark's alone (the fixture's
    // registry may have just taken the pushes).
    drop(registry);
    let registry = testing::Registry::start(testing::RegistryOptions::default());
    let ours_flat = ImagerServer::start(&imager, &flat, &dir.join("serve-flat.log"))?;
    let ours_iso = ImagerServer::start(&imager, &iso, &dir.join("serve-iso.log"))?;
    let ours_oci = ImagerServer::start(&imager, &oci, &dir.join("serve-oci.log"))?;
    let peers = [
        Peer {
            name: "docker-registry",
            addr: registry.addr,
            pid: registry.pid(),
        },
        Peer {
            name: "imager (flat tree)",
            addr: ours_flat.addr,
            pid: ours_flat.child.id(),
        },
        Peer {
            name: "imager (ISO)",
            addr: ours_iso.addr,
            pid: ours_iso.child.id(),
        },
        Peer {
            name: "imager (OCI layout)",
            addr: ours_oci.addr,
            pid: ours_oci.child.id(),
        },
    ];

    let (manifests, blobs) = workloads(registry.addr, &images)?;
    let blob_bytes: u64 = blobs.iter().map(|r| r.len).sum();
    eprintln!(
        "{} manifests; {} blobs of at least {} ({})",
        manifests.len(),
        blobs.len(),
        human_size(LARGE_BLOB),
        human_size(blob_bytes)
    );
    let workloads = [
        ("manifests", MANIFEST_ACCEPT, &manifests),
        ("blobs", "*/*", &blobs),
    ];
    let window = Duration::from_secs_f64(bench.seconds);
    // outcomes[workload][clients][peer], merged over runs.
    let mut outcomes: Vec<Vec<Vec<Outcome>>> = workloads
        .iter()
        .map(|_| {
            CLIENTS
                .iter()
                .map(|_| peers.iter().map(|_| Outcome::default()).collect())
                .collect()
        })
        .collect();
    for run in 0..bench.runs {
        for (w, (name, accept, requests)) in workloads.iter().enumerate() {
            for (c, &clients) in CLIENTS.iter().enumerate() {
                for p in rotation(run, peers.len()) {
                    let peer = &peers[p];
                    let o = load::run(peer.addr, accept, requests, clients, WARMUP, window)?;
                    eprintln!(
                        "run {}: {name}, {clients} clients, {}: {:.0} req/s, {}/s, p99 {:.2} ms, {} errors",
                        run + 1,
                        peer.name,
                        o.per_second(),
                        human_size(o.bytes_per_second() as u64),
                        o.quantile(0.99).as_secs_f64() * 1000.0,
                        o.errors
                    );
                    merge(&mut outcomes[w][c][p], o);
                }
            }
        }
    }
    let rss: Vec<u64> = peers
        .iter()
        .map(|p| {
            std::fs::read_to_string(format!("/proc/{}/status", p.pid))
                .ok()
                .as_deref()
                .and_then(vm_hwm_kib)
                .unwrap_or(0)
        })
        .collect();
    drop((ours_flat, ours_iso, ours_oci));
    drop(registry);

    println!(
        "\n`cargo xtask bench serve --runs {} --seconds {} --images {} --gib {}`: {} images from \
         `bench cache`'s fixture; {} manifests, {} blobs of at least 1 MiB ({}); each cell {} runs of \
         {} s (after {} ms unmeasured), closed-loop clients on keep-alive connections, every \
         answer's status and length checked; {}\n",
        bench.runs,
        bench.seconds,
        bench.images,
        bench.gib,
        images.len(),
        manifests.len(),
        blobs.len(),
        human_size(blob_bytes),
        bench.runs,
        bench.seconds,
        WARMUP.as_millis(),
        super::machine_note(),
    );
    let ms = |d: Duration| format!("{:.2} ms", d.as_secs_f64() * 1000.0);
    let rate = |o: &Outcome| {
        format!(
            "{:.0} req/s, {:.0} MB/s",
            o.per_second(),
            o.bytes_per_second() / 1e6
        )
    };
    let mut rows = Vec::new();
    let mut verdicts = Vec::new();
    let mut errors = 0;
    for (w, (name, ..)) in workloads.iter().enumerate() {
        for (c, &clients) in CLIENTS.iter().enumerate() {
            let cell = &outcomes[w][c];
            let [theirs, flat, iso, oci] = [&cell[0], &cell[1], &cell[2], &cell[3]];
            errors += cell.iter().map(|o| o.errors).sum::<u64>();
            let speedup = flat.per_second() / theirs.per_second();
            let (p99_theirs, p99_flat) = (theirs.quantile(0.99), flat.quantile(0.99));
            let p99_ratio = p99_flat.as_secs_f64() / p99_theirs.as_secs_f64();
            let iso_ratio = iso.per_second() / flat.per_second();
            let oci_ratio = oci.per_second() / flat.per_second();
            let mut row = vec![name.to_string(), clients.to_string()];
            row.extend(cell.iter().map(rate));
            row.extend([
                format!("{speedup:.2}x"),
                format!("{iso_ratio:.2} / {oci_ratio:.2}"),
            ]);
            row.extend(cell.iter().map(|o| ms(o.quantile(0.99))));
            row.push(
                cell.iter()
                    .map(|o| o.errors.to_string())
                    .collect::<Vec<_>>()
                    .join(" / "),
            );
            rows.push(row);
            verdicts.push(format!(
                "- {name}, {clients} clients: throughput >= 1.5x: {} ({speedup:.2}x){}",
                verdict(speedup >= 1.5),
                if *name == "manifests" {
                    format!(
                        "; p99 <= half of docker-registry's: {} ({p99_ratio:.2})",
                        verdict(p99_ratio <= 0.5)
                    )
                } else {
                    String::new()
                }
            ));
            verdicts.push(format!(
                "- {name}, {clients} clients: ISO and OCI layout within 10% of the flat tree: {} \
                 (ISO {iso_ratio:.2}, OCI {oci_ratio:.2})",
                verdict(iso_ratio >= 0.9 && oci_ratio >= 0.9)
            ));
        }
    }
    print!(
        "{}",
        markdown_table(
            &[
                "workload",
                "clients",
                "docker-registry",
                "imager flat",
                "imager ISO",
                "imager OCI",
                "flat / docker-registry",
                "ISO / flat, OCI / flat",
                "p99 docker-registry",
                "p99 flat",
                "p99 ISO",
                "p99 OCI",
                "errors (docker-registry / flat / ISO / OCI)",
            ],
            &rows
        )
    );
    println!();
    let mib = |kib: u64| format!("{:.0} MiB", kib as f64 / 1024.0);
    println!(
        "Peak RSS (VmHWM, whole benchmark): {}.\n",
        peers
            .iter()
            .zip(&rss)
            .map(|(p, &kib)| format!("{} {}", p.name, mib(kib)))
            .collect::<Vec<_>>()
            .join(", ")
    );
    for v in verdicts {
        println!("{v}");
    }
    let ours_rss = rss[1..].iter().copied().max().unwrap_or(0);
    println!(
        "- imager peak RSS <= 64 MiB (each form): {} ({})",
        verdict(ours_rss <= 64 * 1024),
        mib(ours_rss)
    );
    for (w, (name, ..)) in workloads.iter().enumerate() {
        for (c, clients) in CLIENTS.iter().enumerate() {
            for (p, peer) in peers.iter().enumerate() {
                if let Some(e) = &outcomes[w][c][p].first_error {
                    eprintln!("{name}, {clients} clients, {}: {e}", peer.name);
                }
            }
        }
    }
    ensure!(errors == 0, "{errors} requests failed (see above)");
    Ok(())
}

fn verdict(ok: bool) -> &'static str {
    if ok { "met" } else { "missed" }
}

/// Runs of one cell add up: their windows too.
fn merge(into: &mut Outcome, o: Outcome) {
    into.window += o.window;
    into.absorb(o);
}

/// Every manifest path (tags, and the platform manifests of indexes by digest) and every large
/// blob path of the images, with their lengths, as docker-registry answers them.
fn workloads(
    registry: SocketAddr,
    images: &[super::cache::ImageSpec],
) -> Result<(Vec<Request>, Vec<Request>)> {
    let mut manifests = Vec::new();
    let mut blobs = Vec::new();
    let mut seen = BTreeSet::new();
    for image in images {
        let mut pending = vec![image.tag.clone()];
        while let Some(reference) = pending.pop() {
            let path = format!("/v2/{}/manifests/{reference}", image.repo);
            let body = load::get(registry, MANIFEST_ACCEPT, &path)?;
            manifests.push(Request {
                path: path.clone(),
                len: body.len() as u64,
            });
            let doc: Value =
                serde_json::from_slice(&body).with_context(|| format!("{path}: not JSON"))?;
            let descriptors = |key: &str| -> Vec<(String, u64)> {
                doc[key]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|d| Some((d["digest"].as_str()?.to_owned(), d["size"].as_u64()?)))
                    .collect()
            };
            pending.extend(descriptors("manifests").into_iter().map(|(d, _)| d));
            for (digest, len) in descriptors("layers") {
                if len >= LARGE_BLOB && seen.insert(digest.clone()) {
                    blobs.push(Request {
                        path: format!("/v2/{}/blobs/{digest}", image.repo),
                        len,
                    });
                }
            }
        }
    }
    ensure!(
        !blobs.is_empty(),
        "the images have no blob of at least 1 MiB"
    );
    Ok((manifests, blobs))
}

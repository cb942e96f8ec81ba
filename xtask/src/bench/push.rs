//! `cargo xtask bench push`: `imager cache push` side by side with what skopeo users do to put the
//! same images into a registry, in one run, into Debian's `docker-registry` on loopback.
//!
//! The images are `bench cache`'s (same fixture, same `--dir`). From its registry the inputs are
//! made once and kept beside the fixture with a stamp: a flat cache (`imager cache create --layout
//! flat`), an OCI layout (`skopeo copy --all`, one entry per image) and a `dir` tree (`skopeo sync
//! --src docker --dest dir`). The tools, each into a registry of its own started empty before each
//! run (not timed), timed until `sync` returns:
//! - `skopeo copy --all --preserve-digests oci:LAYOUT:NAME docker://DEST/...`, one process per image;
//! - `skopeo sync --all --preserve-digests --src dir --dest docker`, one process for every image;
//! - `imager cache push FLAT DEST`.
//!
//! `--preserve-digests` keeps skopeo from recompressing the uncompressed layers, so every tool
//! leaves the same bytes behind; after the runs each tool's last registry is checked to serve
//! every tag with the source's manifest bytes.

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::rc::Rc;

use anyhow::{Context, Result, ensure};
use imager_registry::testing;

use super::cache::{Fixture, ImageSpec, fixture, image_list, skopeo};
use super::{Flags, Step, Tool, markdown_table, run_rotated, summarize};
use crate::util::{self, human_size, workspace_root};

pub(super) const USAGE: &str =
    "usage: cargo xtask bench push [--runs N] [--images N] [--gib G] [--jobs N] [--dir DIR]";

#[derive(Debug)]
struct PushBench {
    runs: usize,
    images: usize,
    gib: f64,
    jobs: usize,
    dir: PathBuf,
}

fn parse(args: &[String]) -> Result<PushBench> {
    let f = Flags::parse(
        args,
        USAGE,
        &["--runs", "--images", "--gib", "--jobs", "--dir"],
    )?;
    Ok(PushBench {
        runs: f.count("--runs", 3)?,
        images: f.count("--images", 30)?,
        gib: f.positive("--gib", 1.5)?,
        jobs: f.count("--jobs", 4)?,
        dir: f.path("--dir", workspace_root().join("_bench/cache")),
    })
}

/// The inputs the tools push from, made from the fixture's registry.
struct Inputs {
    flat: PathBuf,
    oci: PathBuf,
    dir: PathBuf,
}

fn inputs(
    fixture_dir: &Path,
    imager: &Path,
    host: &str,
    images: &[ImageSpec],
    stamp: &str,
) -> Result<Inputs> {
    let inputs = Inputs {
        flat: fixture_dir.join("push-flat"),
        oci: fixture_dir.join("push-oci"),
        dir: fixture_dir.join("push-dir"),
    };
    let stamp_path = fixture_dir.join("push-inputs.stamp");
    if std::fs::read_to_string(&stamp_path).ok().as_deref() == Some(stamp) {
        eprintln!("push inputs reused from {}", fixture_dir.display());
        return Ok(inputs);
    }
    let _ = std::fs::remove_file(&stamp_path);
    for old in [&inputs.flat, &inputs.oci, &inputs.dir] {
        if old.exists() {
            std::fs::remove_dir_all(old).with_context(|| format!("removing {}", old.display()))?;
        }
    }
    eprintln!("making the push inputs (flat cache, OCI layout, dir tree) from {host}");
    let mut create = Command::new(imager);
    create
        .args(["cache", "create", "--insecure", "--image-cache-path"])
        .arg(&inputs.flat)
        .args(["--images", "-", "--platform", "all", "--layout", "flat"])
        .env("DOCKER_CONFIG", fixture_dir.join("no-docker-config"));
    super::run_step(
        Step::with_stdin(create, image_list(host, images).into_bytes()),
        &mut || {},
    )?;
    for i in images {
        util::run_quiet(skopeo(fixture_dir).args([
            "copy",
            "--quiet",
            "--all",
            "--preserve-digests",
            "--src-tls-verify=false",
            &format!("docker://{host}/{}:{}", i.repo, i.tag),
            &format!("oci:{}:{}", inputs.oci.display(), layout_name(i)),
        ]))
        .with_context(|| format!("copying {} into the OCI layout", i.repo))?;
        util::run_quiet(
            skopeo(fixture_dir)
                .args([
                    "sync",
                    "--all",
                    "--preserve-digests",
                    "--src",
                    "docker",
                    "--dest",
                    "dir",
                    "--src-tls-verify=false",
                ])
                .arg(format!("{host}/{}:{}", i.repo, i.tag))
                .arg(&inputs.dir),
        )
        .with_context(|| format!("copying {} into the dir tree", i.repo))?;
    }
    std::fs::write(&stamp_path, stamp)?;
    Ok(inputs)
}

/// The OCI layout's name for an image.
fn layout_name(i: &ImageSpec) -> String {
    format!("{}-{}", i.repo.replace('/', "-"), i.tag)
}

/// Where a tool pushes: an empty registry started afresh before each of its runs. It stays up
/// after the last run, so that what the tool left can be checked.
#[derive(Default)]
struct Dest {
    registry: Option<testing::Registry>,
}

impl Dest {
    fn restart(&mut self) -> String {
        // The old one (and its storage) goes first: one copy of the images on disk at a time.
        self.registry = None;
        let registry = testing::Registry::start(testing::RegistryOptions::default());
        let host = registry.host();
        self.registry = Some(registry);
        host
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
    // The fixture points docker-registry's storage at its kept directory through the
    // environment; the destinations must start empty, in temp dirs of their own.
    // SAFETY: this process runs no other thread yet: nothing reads the environment meanwhile.
    unsafe { std::env::remove_var("REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY") };
    let inputs = inputs(&dir, &imager, &host, &images, &stamp.to_text())?;

    let out = dir.join("push-out");
    let dests: Vec<Rc<RefCell<Dest>>> = (0..3).map(|_| Rc::default()).collect();
    let tools = tools(&bench, &dir, &out, &imager, &images, &inputs, &dests);
    eprintln!(
        "{} images, {} in {} blobs, each tool into an empty docker-registry",
        images.len(),
        human_size(stamp.bytes),
        stamp.blobs
    );
    let samples = run_rotated(&tools, bench.runs)?;

    // What each tool left (its last run), once more, not timed: every tag, byte for byte.
    for (tool, dest) in tools.iter().zip(&dests) {
        let to = dest.borrow().registry.as_ref().map(|r| r.host());
        let to = to.context("no destination registry")?;
        for i in &images {
            let raw = |h: &str| {
                util::output(skopeo(&dir).args([
                    "inspect",
                    "--raw",
                    "--tls-verify=false",
                    &format!("docker://{h}/{}:{}", i.repo, i.tag),
                ]))
            };
            ensure!(
                raw(&to)? == raw(&host)?,
                "{}: {}:{} differs from the source",
                tool.name,
                i.repo,
                i.tag
            );
        }
        eprintln!("{}: every tag as in the source", tool.name);
    }
    super::reset_dir(&out)?;
    drop(tools);
    drop(dests);
    drop(registry);

    let medians: Vec<_> = samples.iter().map(|s| summarize(s)).collect();
    let fastest_skopeo = medians[..2]
        .iter()
        .map(|m| m.0.as_secs_f64())
        .fold(f64::INFINITY, f64::min);
    let multi = images.iter().filter(|i| i.multi_arch()).count();
    let mib = |kib: u64| format!("{:.0} MiB", kib as f64 / 1024.0);
    println!(
        "\n`cargo xtask bench push --runs {} --images {} --gib {} --jobs {}`: {} images ({multi} of \
         them amd64+arm64 indexes), {} in {} distinct blobs, each tool into an empty \
         docker-registry on 127.0.0.1 (a new one per run); median of {} runs, each until `sync` \
         returns; {}\n",
        bench.runs,
        bench.images,
        bench.gib,
        bench.jobs,
        images.len(),
        human_size(stamp.bytes),
        stamp.blobs,
        bench.runs,
        super::machine_note(),
    );
    let rows: Vec<Vec<String>> = tools_names(&bench)
        .into_iter()
        .zip(&medians)
        .map(|(name, (time, rss))| {
            let secs = time.as_secs_f64();
            vec![
                name,
                format!("{secs:.2} s"),
                format!("{:.0} MB/s", stamp.bytes as f64 / secs / 1e6),
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
                "vs fastest skopeo",
                "peak RSS (largest process)",
            ],
            &rows
        )
    );
    println!();
    let verdict = |ok: bool| if ok { "met" } else { "missed" };
    let (time, rss) = medians[2];
    let vs = fastest_skopeo / time.as_secs_f64();
    println!(
        "- imager cache push: target >= 1.5x the fastest skopeo way: {} ({vs:.2}x); target peak \
         RSS <= 64 MiB: {} ({})",
        verdict(vs >= 1.5),
        verdict(rss <= 64 * 1024),
        mib(rss),
    );
    Ok(())
}

fn tools_names(bench: &PushBench) -> Vec<String> {
    vec![
        "skopeo copy --all --preserve-digests, per image, from an OCI layout".into(),
        "skopeo sync --all --preserve-digests --src dir --dest docker, one process".into(),
        format!("imager cache push --jobs {} (flat cache)", bench.jobs),
    ]
}

/// The tools, skopeo's ways first (the ratios refer to them by position); tool `k` pushes into
/// `dests[k]`, restarted empty before each of its runs.
fn tools(
    bench: &PushBench,
    dir: &Path,
    out: &Path,
    imager: &Path,
    images: &[ImageSpec],
    inputs: &Inputs,
    dests: &[Rc<RefCell<Dest>>],
) -> Vec<Tool> {
    let names = tools_names(bench);
    let mut tools = Vec::new();
    {
        let (dir, oci, images, dest) = (
            dir.to_owned(),
            inputs.oci.clone(),
            images.to_vec(),
            dests[0].clone(),
        );
        tools.push(Tool {
            name: names[0].clone(),
            out: out.join("skopeo-copy"),
            steps: Box::new(move || {
                let host = dest.borrow_mut().restart();
                images
                    .iter()
                    .map(|i| {
                        let mut c = skopeo(&dir);
                        c.args([
                            "copy",
                            "--all",
                            "--preserve-digests",
                            "--dest-tls-verify=false",
                        ])
                        .arg(format!("oci:{}:{}", oci.display(), layout_name(i)))
                        .arg(format!("docker://{host}/{}:{}", i.repo, i.tag));
                        Step::new(c)
                    })
                    .collect()
            }),
        });
    }
    {
        let (dir, tree, prefix, dest) = (
            dir.to_owned(),
            inputs.dir.clone(),
            // `--src dir` names each image by its directory (`app-07:v1.7.0`) under DEST.
            images
                .first()
                .and_then(|i| i.repo.rsplit_once('/'))
                .map_or(String::new(), |(p, _)| format!("/{p}")),
            dests[1].clone(),
        );
        tools.push(Tool {
            name: names[1].clone(),
            out: out.join("skopeo-sync"),
            steps: Box::new(move || {
                let host = dest.borrow_mut().restart();
                let mut c = skopeo(&dir);
                c.args([
                    "sync",
                    "--all",
                    "--preserve-digests",
                    "--src",
                    "dir",
                    "--dest",
                    "docker",
                    "--dest-tls-verify=false",
                ])
                .arg(&tree)
                .arg(format!("{host}{prefix}"));
                vec![Step::new(c)]
            }),
        });
    }
    {
        let (out, imager, flat, jobs, dest) = (
            out.join("imager"),
            imager.to_owned(),
            inputs.flat.clone(),
            bench.jobs.to_string(),
            dests[2].clone(),
        );
        tools.push(Tool {
            name: names[2].clone(),
            out: out.clone(),
            steps: Box::new(move || {
                let host = dest.borrow_mut().restart();
                let mut c = Command::new(&imager);
                c.args(["cache", "push"])
                    .arg(&flat)
                    .arg(&host)
                    .args(["--insecure", "--jobs", &jobs])
                    // Anonymous, as skopeo is here: no credential of this machine is looked up.
                    .env("DOCKER_CONFIG", out.join("no-docker-config"));
                vec![Step::new(c)]
            }),
        });
    }
    tools
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_and_defaults() {
        let b = parse(&[]).unwrap();
        assert_eq!((b.runs, b.images, b.jobs), (3, 30, 4));
        let args: Vec<String> = ["--images", "5", "--gib", "0.25"]
            .map(String::from)
            .to_vec();
        let b = parse(&args).unwrap();
        assert_eq!((b.images, b.gib), (5, 0.25));
        assert!(parse(&["--seconds".into(), "1".into()]).is_err());
    }
}

//! SIGINT, SIGTERM and `kill -9` in the middle of writing, on the real binary: an interrupted run
//! removes what it staged and exits 130 or 143, and a run after a killed one removes the stale
//! temps it finds of its own kind (those whose owner is gone), never those of a run still going.
//!
//! The runs are caught mid-write by inputs that are genuinely slow, not by a hook: `imager iso`
//! copies a 2 GiB sparse cache file (seconds of disk writes; the signal comes within milliseconds
//! of the copy starting), and `cache create` downloads a layer through the fault-injecting proxy,
//! which forwards part of it and then stalls (the client's read timeout is a minute).

// Test code: a panic with its message is how a failure is reported.
#![allow(clippy::unwrap_used)]

mod common;

use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use imager_registry::testing::proxy::{Action, FaultProxy};
use imager_registry::testing::{Registry, RegistryOptions, push_image, test_image};
use rustix::process::{Pid, Signal, kill_process};

/// The sparse cache file of the slow `imager iso` run: takes seconds to copy, costs no disk.
const SLOW_CACHE_FILE: u64 = 2 << 30;

/// How long any one run or wait may take before the test fails (a broken handler must not leave
/// a 2 GiB write going).
const PATIENCE: Duration = Duration::from_secs(60);

fn spawn(args: &[&OsStr], env: &[(&str, &OsStr)]) -> Child {
    let mut cmd = Command::new(common::IMAGER);
    cmd.args(args)
        .env_remove("IMAGER_ASSETS")
        .env_remove("SOURCE_DATE_EPOCH")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.spawn().unwrap()
}

fn signal(child: &Child, sig: Signal) {
    kill_process(Pid::from_child(child), sig).unwrap();
}

/// Waits for `child` (killing it if it takes longer than [`PATIENCE`]); its status and stderr.
fn finish(mut child: Child) -> (ExitStatus, String) {
    let deadline = Instant::now() + PATIENCE;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "imager did not end within {PATIENCE:?}:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Polls until `found` gives something (or fails the test, killing `child`, after [`PATIENCE`]).
fn wait_for<T>(child: &mut Child, what: &str, mut found: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(t) = found() {
            return t;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("imager ended ({status}) before {what}");
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("no {what} within {PATIENCE:?}");
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// The names in `dir`, sorted (none for a missing directory).
fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = match fs::read_dir(dir) {
        Ok(entries) => entries
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    };
    names.sort();
    names
}

/// The entry of `dir` whose name starts with `prefix`, if there is one.
fn entry(dir: &Path, prefix: &str) -> Option<PathBuf> {
    entry_but(dir, prefix, &[])
}

/// [`entry`], but none of `known`.
fn entry_but(dir: &Path, prefix: &str, known: &[PathBuf]) -> Option<PathBuf> {
    names(dir)
        .into_iter()
        .filter(|n| n.starts_with(prefix))
        .map(|n| dir.join(n))
        .find(|p| !known.contains(p))
}

// ---------------------------------------------------------------------------------------------
// imager iso

struct IsoWorld {
    dir: tempfile::TempDir,
    assets: PathBuf,
    /// A flat cache with one 2 GiB sparse file.
    slow: PathBuf,
    /// A flat cache with one small file.
    quick: PathBuf,
}

impl IsoWorld {
    fn new() -> Self {
        let dir = common::scratch();
        let assets = common::fake_assets(dir.path());
        let slow = dir.path().join("slow");
        fs::create_dir_all(slow.join("blob")).unwrap();
        fs::File::create(slow.join(format!("blob/sha256-{}", "a".repeat(64))))
            .unwrap()
            .set_len(SLOW_CACHE_FILE)
            .unwrap();
        let quick = dir.path().join("quick");
        fs::create_dir_all(quick.join("blob")).unwrap();
        fs::write(
            quick.join(format!("blob/sha256-{}", "b".repeat(64))),
            b"small",
        )
        .unwrap();
        Self {
            dir,
            assets,
            slow,
            quick,
        }
    }

    fn iso(&self, cache: &Path, out: &Path) -> Child {
        spawn(
            &[
                "iso".as_ref(),
                "--assets".as_ref(),
                self.assets.as_os_str(),
                "--image-cache".as_ref(),
                cache.as_os_str(),
                "--output".as_ref(),
                out.as_os_str(),
            ],
            &[],
        )
    }

    /// Starts the slow run into `out` and waits until the image's data is being copied: its temp
    /// (none of `known`) holds written blocks. The run, its image temp and its ESP temp.
    fn slow_iso_mid_write(&self, out: &Path, known: &[PathBuf]) -> (Child, PathBuf, PathBuf) {
        let mut child = self.iso(&self.slow, out);
        let temp = wait_for(&mut child, "image temp with data in it", || {
            entry_but(out, ".metal-iso-", known)
                .filter(|t| fs::metadata(t).is_ok_and(|m| m.blocks() * 512 >= 1 << 20))
        });
        // Made before the image's temp.
        let esp = entry_but(out, ".imager-esp-", known).expect("the ESP temp beside the image");
        (child, temp, esp)
    }
}

#[test]
fn an_interrupted_iso_removes_its_temps_and_exits_130_or_143() {
    let w = IsoWorld::new();
    for (sig, name, code) in [(Signal::TERM, "SIGTERM", 143), (Signal::INT, "SIGINT", 130)] {
        let out = w.dir.path().join(format!("out-{name}"));
        let (child, temp, esp) = w.slow_iso_mid_write(&out, &[]);
        signal(&child, sig);
        let (status, stderr) = finish(child);
        assert_eq!(status.code(), Some(code), "{name}: {status}\n{stderr}");
        // Nothing under the final name, no temp, nothing else.
        assert_eq!(names(&out), Vec::<String>::new(), "{name}\n{stderr}");
        assert!(
            stderr.contains(&format!("interrupted by {name}"))
                && stderr.contains(&*temp.to_string_lossy())
                && stderr.contains(&*esp.to_string_lossy()),
            "{stderr}"
        );
    }
}

#[test]
fn a_killed_iso_leaves_temps_that_the_next_run_removes_unless_their_owner_lives() {
    let w = IsoWorld::new();
    let out = w.dir.path().join("out");
    let (child, temp, esp) = w.slow_iso_mid_write(&out, &[]);
    signal(&child, Signal::KILL);
    let (status, _) = finish(child);
    assert_eq!(status.code(), None, "killed: {status}");
    // No cleanup after kill -9: the temps are left, stale.
    assert!(temp.exists() && esp.exists());

    // A run still going into the same directory: its temps are locked.
    let (live, live_temp, live_esp) = w.slow_iso_mid_write(&out, &[temp.clone(), esp.clone()]);
    assert!(!temp.exists() && !esp.exists(), "{:?}", names(&out));

    // Another run into the same directory finishes, and leaves the live run's temps alone.
    let (status, stderr) = finish(w.iso(&w.quick, &out));
    assert!(status.success(), "{stderr}");
    assert!(live_temp.exists() && live_esp.exists(), "{:?}", names(&out));

    signal(&live, Signal::TERM);
    let (status, stderr) = finish(live);
    assert_eq!(status.code(), Some(143), "{stderr}");
    assert_eq!(names(&out), vec!["metal-amd64.iso".to_owned()]);
}

// ---------------------------------------------------------------------------------------------
// imager cache create

struct CreateWorld {
    work: tempfile::TempDir,
    _registry: Registry,
    /// Runs the proxy.
    _rt: tokio::runtime::Runtime,
    proxy: FaultProxy,
    image: String,
    /// The digest hex of the image's big layer (what the proxy stalls).
    big: String,
}

impl CreateWorld {
    fn new() -> Self {
        let work = common::scratch();
        let registry = Registry::start(RegistryOptions::default());
        let image = test_image("amd64", 512 << 10);
        push_image(
            work.path(),
            &registry.host(),
            "test/slow",
            "v1",
            &image,
            None,
        );
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let proxy = rt.block_on(FaultProxy::start(registry.addr));
        let big = image.layers[1]
            .digest
            .trim_start_matches("sha256:")
            .to_owned();
        Self {
            image: format!("{}/test/slow:v1", proxy.host()),
            work,
            _registry: registry,
            _rt: rt,
            proxy,
            big,
        }
    }

    fn create(&self, out: &Path, layout: &str, layer_cache: Option<&Path>) -> Child {
        let mut args: Vec<&OsStr> = vec![
            "cache".as_ref(),
            "create".as_ref(),
            "--image-cache-path".as_ref(),
            out.as_os_str(),
            "--images".as_ref(),
            self.image.as_ref(),
            "--layout".as_ref(),
            layout.as_ref(),
            "--insecure".as_ref(),
        ];
        if let Some(dir) = layer_cache {
            args.extend(["--image-layer-cache-path".as_ref(), dir.as_os_str()]);
        }
        // No credentials of the host.
        spawn(&args, &[("DOCKER_CONFIG", self.work.path().as_os_str())])
    }

    /// Starts a run whose big layer stalls after 100 kB and waits until it is stalled there: the
    /// staging directory beside `out` exists and the blob's temp has been made in `blob_dir`.
    fn stalled(
        &self,
        out: &Path,
        layout: &str,
        layer_cache: Option<&Path>,
        blob_dir: &Path,
    ) -> (Child, PathBuf, PathBuf) {
        self.proxy.inject(&self.big, 1, Action::StallAfter(100_000));
        let mut child = self.create(out, layout, layer_cache);
        let parent = out.parent().unwrap();
        let name = format!("{}.tmp-", out.file_name().unwrap().to_string_lossy());
        let (staging, temp) = wait_for(&mut child, "a stalled download", || {
            let staging = entry(parent, &name)?;
            let temp = entry(blob_dir, ".tmp-blob-")?;
            (!self.proxy.seen_for(&self.big).is_empty()).then_some((staging, temp))
        });
        (child, staging, temp)
    }
}

#[test]
fn an_interrupted_cache_create_removes_its_temps_and_exits_130_or_143() {
    let w = CreateWorld::new();
    let parent = w.work.path().join("out");
    fs::create_dir_all(&parent).unwrap();

    // SIGTERM while the layer is being fetched into the layer cache, for the OCI layout.
    let layers = w.work.path().join("layers");
    let out = parent.join("cache.oci");
    let (child, staging, temp) =
        w.stalled(&out, "oci", Some(&layers), &layers.join("blobs/sha256"));
    signal(&child, Signal::TERM);
    let (status, stderr) = finish(child);
    assert_eq!(status.code(), Some(143), "{stderr}");
    assert_eq!(names(&parent), Vec::<String>::new(), "{stderr}");
    assert!(!temp.exists(), "{stderr}");
    assert!(
        stderr.contains("interrupted by SIGTERM")
            && stderr.contains(&*staging.to_string_lossy())
            && stderr.contains(&*temp.to_string_lossy()),
        "{stderr}"
    );
    // Blobs finished before the signal stay in the layer cache; no temp does.
    assert!(
        !names(&layers.join("blobs/sha256"))
            .iter()
            .any(|n| n.starts_with('.')),
        "{:?}",
        names(&layers.join("blobs/sha256"))
    );

    // SIGINT while the layer streams into the staged flat tree.
    let out = parent.join("cache.flat");
    let (child, staging, _) = {
        // The tree is inside the staging directory, whose name is known only once it exists.
        w.proxy.inject(&w.big, 1, Action::StallAfter(100_000));
        let mut child = w.create(&out, "flat", None);
        let (staging, temp) = wait_for(&mut child, "a stalled download", || {
            let staging = entry(&parent, "cache.flat.tmp-")?;
            let temp = entry(&staging.join("tree/blob"), ".tmp-blob-")?;
            (w.proxy.seen_for(&w.big).len() >= 2).then_some((staging, temp))
        });
        (child, staging, temp)
    };
    signal(&child, Signal::INT);
    let (status, stderr) = finish(child);
    assert_eq!(status.code(), Some(130), "{stderr}");
    assert_eq!(names(&parent), Vec::<String>::new(), "{stderr}");
    assert!(
        stderr.contains("interrupted by SIGINT") && stderr.contains(&*staging.to_string_lossy()),
        "{stderr}"
    );
}

#[test]
fn a_killed_cache_create_leaves_temps_that_the_next_run_removes() {
    let w = CreateWorld::new();
    let parent = w.work.path().join("out");
    fs::create_dir_all(&parent).unwrap();
    let layers = w.work.path().join("layers");
    let blobs = layers.join("blobs/sha256");
    let out = parent.join("cache.oci");
    let (child, staging, temp) = w.stalled(&out, "oci", Some(&layers), &blobs);
    signal(&child, Signal::KILL);
    let (status, _) = finish(child);
    assert_eq!(status.code(), None, "killed: {status}");
    assert!(staging.exists() && temp.exists());

    // The same command again, with nothing in the way: done, and nothing stale left.
    let (status, stderr) = finish(w.create(&out, "oci", Some(&layers)));
    assert!(status.success(), "{stderr}");
    assert_eq!(names(&parent), vec!["cache.oci".to_owned()]);
    assert!(
        !names(&blobs).iter().any(|n| n.starts_with('.')),
        "{:?}",
        names(&blobs)
    );
}

//! The on-node path, with the real client: a private containerd (own root, state and socket)
//! whose hosts directory (written by `imager_talos::write::write_mirror_config`) sends every registry to the server
//! and whose upstream is a closed loopback port, so anything not served by us fails the pull.
//! `ctr image pull` pulls every cached image, from two roots; then `ctr run` runs a busybox
//! image built in the test from Debian's static busybox, which prints `ok`. Parametrized by the
//! form the caches are served in; the tests are in containerd.rs and forms.rs.

use std::io::Write as _;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::forms::Form;
use super::{Cached, Fixture, TestServer, demo_cache, require, sha256_hex, write_cache};
use imager_registry::testing::{Blob, TestImage};
use imager_registryd::Config;
use imager_talos::MirrorStyle;
use imager_talos::mirror;
use imager_talos::write::write_mirror_config;

const NAMESPACE: &str = "imager-test";

/// A containerd of our own; killed (with the shims it started) on drop.
struct Containerd {
    dir: tempfile::TempDir,
    child: Child,
}

impl Containerd {
    fn start() -> Self {
        require("containerd", "containerd");
        require("ctr", "containerd");
        require("runc", "runc");
        // Short: the socket path must fit in sockaddr_un.
        let dir = tempfile::Builder::new()
            .prefix("ctrd")
            .tempdir_in("/tmp")
            .unwrap();
        let d = dir.path();
        let config = format!(
            "version = 2\nroot = \"{root}\"\nstate = \"{state}\"\n\
             disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
             [grpc]\n  address = \"{sock}\"\n",
            root = d.join("root").display(),
            state = d.join("state").display(),
            sock = d.join("c.sock").display(),
        );
        std::fs::write(d.join("config.toml"), config).unwrap();
        let log = std::fs::File::create(d.join("containerd.log")).unwrap();
        let child = Command::new("containerd")
            .arg("--config")
            .arg(d.join("config.toml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let c = Self { dir, child };
        let deadline = Instant::now() + Duration::from_secs(20);
        while UnixStream::connect(c.sock()).is_err() {
            assert!(
                Instant::now() < deadline,
                "containerd did not start:\n{}",
                c.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        c
    }

    fn sock(&self) -> PathBuf {
        self.dir.path().join("c.sock")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default()
    }

    /// Runs `ctr -a SOCK -n imager-test ARGS`, killed after `limit`.
    fn ctr(&self, args: &[&str], limit: Duration) -> Output {
        let mut child = Command::new("ctr")
            .arg("-a")
            .arg(self.sock())
            .args(["-n", NAMESPACE])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + limit;
        while child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                let out = child.wait_with_output().unwrap();
                panic!(
                    "ctr {args:?} took more than {limit:?}: {}\ncontainerd log:\n{}",
                    String::from_utf8_lossy(&out.stderr),
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        child.wait_with_output().unwrap()
    }

    fn ctr_ok(&self, args: &[&str], limit: Duration) -> String {
        let out = self.ctr(args, limit);
        assert!(
            out.status.success(),
            "ctr {args:?}: {}\n{}\ncontainerd log (tail):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            tail(&self.log(), 30)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        // Shims started by this containerd name its socket on their command line.
        let sock = self.sock().display().to_string();
        if let Ok(procs) = std::fs::read_dir("/proc") {
            for p in procs.flatten() {
                let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
                    continue;
                };
                let cmdline = std::fs::read(p.path().join("cmdline")).unwrap_or_default();
                if String::from_utf8_lossy(&cmdline).contains(&sock)
                    && let Some(pid) = rustix::process::Pid::from_raw(pid)
                {
                    let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
                }
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Mounts containerd left under its root (snapshots being unpacked when it died).
        let root = self.dir.path().display().to_string();
        let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
        let mut ours: Vec<&str> = mounts
            .lines()
            .filter_map(|l| l.split(' ').nth(1))
            .filter(|m| m.starts_with(&root))
            .collect();
        ours.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in ours {
            let _ = rustix::mount::unmount(m, rustix::mount::UnmountFlags::DETACH);
        }
    }
}

fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A runnable image: Debian's static busybox as `/bin/busybox`, with `/bin/echo` and `/bin/sh`
/// linking to it; its command is `echo ok`.
fn busybox_image() -> TestImage {
    let path = Path::new("/bin/busybox");
    assert!(
        path.is_file(),
        "/bin/busybox is not installed: `apt-get install busybox-static` (scripts/setup.sh installs it)"
    );
    let bin = std::fs::read(path).unwrap();
    let mut tar = tar::Builder::new(Vec::new());
    let mut dir = tar::Header::new_ustar();
    dir.set_entry_type(tar::EntryType::Directory);
    dir.set_mode(0o755);
    dir.set_size(0);
    dir.set_mtime(0);
    tar.append_data(&mut dir, "bin/", std::io::empty()).unwrap();
    let mut file = tar::Header::new_ustar();
    file.set_mode(0o755);
    file.set_size(bin.len() as u64);
    file.set_mtime(0);
    tar.append_data(&mut file, "bin/busybox", bin.as_slice())
        .unwrap();
    for link in ["bin/echo", "bin/sh"] {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_mode(0o777);
        h.set_size(0);
        h.set_mtime(0);
        tar.append_link(&mut h, link, "busybox").unwrap();
    }
    let tar = tar.into_inner().unwrap();
    let diff_id = format!("sha256:{}", sha256_hex(&tar));
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar).unwrap();
    let layer = Blob::new(
        gz.finish().unwrap(),
        "application/vnd.oci.image.layer.v1.tar+gzip",
    );
    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {"Cmd": ["/bin/echo", "ok"], "Env": ["PATH=/bin"]},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
    });
    let config = Blob::new(
        serde_json::to_vec(&config).unwrap(),
        "application/vnd.oci.image.config.v1+json",
    );
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": config.descriptor(),
        "layers": [layer.descriptor()],
    });
    let manifest = Blob::new(
        serde_json::to_vec(&manifest).unwrap(),
        "application/vnd.oci.image.manifest.v1+json",
    );
    TestImage {
        arch: "amd64",
        config,
        layers: vec![layer],
        manifest,
    }
}

/// containerd pulls every image of two roots served in `form` (the test images with a runnable
/// busybox, and the demo cache) through the mirror configuration, then runs the busybox.
pub fn containerd_pulls_every_cached_image_and_runs_one(form: Form) {
    let containerd = Containerd::start();
    // Root 1: the test images and a runnable busybox; root 2: the repository's demo cache.
    let f = Fixture::new();
    let busybox = Cached::single(
        "docker.io",
        "library/busybox",
        "imager-test",
        &busybox_image(),
    );
    write_cache(f.root(), std::slice::from_ref(&busybox));
    let demo = demo_cache();
    let work = tempfile::tempdir().unwrap();
    let mut config = Config::new(vec![
        form.root(f.root(), &work.path().join("forms")),
        form.root(&demo, &work.path().join("forms")),
    ]);
    config.access_log = true;
    let s = TestServer::start_with(config);

    // The hosts directory as `imager cache serve --mirror ... --write-config` writes it, with
    // the upstream replaced by a port nothing listens on.
    let hosts = tempfile::tempdir().unwrap();
    let registries = mirror::parse_registries(&["docker.io,ghcr.io,registry.example.com"]).unwrap();
    write_mirror_config(
        hosts.path(),
        &registries,
        &format!("http://{}", s.host()),
        MirrorStyle::RegistryMirrorConfig,
    )
    .unwrap();
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    for r in &registries {
        let path = hosts.path().join(r).join("hosts.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        let upstream = text.lines().find(|l| l.starts_with("server = ")).unwrap();
        let text = text.replace(upstream, &format!("server = \"http://{closed}\""));
        std::fs::write(&path, text).unwrap();
    }
    let hosts_dir = hosts.path().display().to_string();

    let demo_busybox =
        std::fs::read(demo.join("manifests/docker.io/library/busybox/reference/latest")).unwrap();
    let csi = "ghcr.io/canonical/k8s-snap/sig-storage/csi-node-driver-registrar";
    let demo_csi = std::fs::read(demo.join(format!("manifests/{csi}/reference/v2.13.0"))).unwrap();
    let mut pulls: Vec<(String, String, &str)> = f
        .images()
        .into_iter()
        .chain([&busybox])
        .map(|c| {
            (
                format!("{}:{}", c.name, c.tag),
                c.top.digest.clone(),
                "--all-platforms",
            )
        })
        .collect();
    // The demo busybox index names an arm64 child the cache leaves out (as real caches do).
    pulls.push((
        "docker.io/library/busybox:latest".into(),
        format!("sha256:{}", sha256_hex(&demo_busybox)),
        "--platform=linux/amd64",
    ));
    pulls.push((
        format!("{csi}:v2.13.0"),
        format!("sha256:{}", sha256_hex(&demo_csi)),
        "--all-platforms",
    ));

    let started = Instant::now();
    for (reference, _, platforms) in &pulls {
        containerd.ctr_ok(
            &[
                "image",
                "pull",
                "--hosts-dir",
                &hosts_dir,
                platforms,
                reference,
            ],
            Duration::from_secs(60),
        );
    }
    eprintln!(
        "containerd: pulled {} images in {:.1} s",
        pulls.len(),
        started.elapsed().as_secs_f64()
    );
    let listed = containerd.ctr_ok(&["image", "ls"], Duration::from_secs(20));
    for (reference, digest, _) in &pulls {
        let line = listed
            .lines()
            .find(|l| l.split_whitespace().next() == Some(reference.as_str()))
            .unwrap_or_else(|| panic!("{reference} not in `ctr image ls`:\n{listed}"));
        assert!(line.contains(digest.as_str()), "{reference}: {line}");
    }
    // containerd asked the mirror, naming each registry with ?ns=.
    let logs = s.logs();
    for ns in ["ns=docker.io", "ns=ghcr.io", "ns=registry.example.com"] {
        assert!(logs.contains(ns), "no request with {ns}:\n{logs}");
    }
    assert!(!logs.contains("not served from this root"), "{logs}");

    // runc keeps container state by namespace and id under one directory whichever containerd
    // runs it: tests running at once need ids of their own.
    let id = format!("imager-registryd-test-{form:?}-{}", std::process::id()).to_lowercase();
    let out = containerd.ctr(
        &["run", "--rm", "docker.io/library/busybox:imager-test", &id],
        Duration::from_secs(60),
    );
    assert!(
        out.status.success(),
        "ctr run: {}\n{}\ncontainerd log (tail):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        tail(&containerd.log(), 30)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "ok\n");
}

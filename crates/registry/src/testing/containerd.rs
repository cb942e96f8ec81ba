//! A private containerd (own root, state and socket in a temp dir) driven with `ctr`, and a
//! runnable busybox image built from Debian's static busybox: the real on-node client for the
//! tests of the server (`registryd`) and of the side-loading path (`imager cache export`).

use std::io::Write as _;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::{Blob, TestImage, sha256_hex};

/// Fails the test (never skips it) when a tool is missing, naming the Debian package.
fn require(tool: &str, package: &str) {
    let found = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).any(|dir| dir.join(tool).is_file()))
        .unwrap_or(false);
    assert!(
        found,
        "`{tool}` is not installed: `apt-get install {package}` (scripts/setup.sh installs it)"
    );
}

pub const NAMESPACE: &str = "imager-test";

/// A containerd of our own; killed (with the shims it started) on drop.
pub struct Containerd {
    dir: tempfile::TempDir,
    child: Child,
}

impl Containerd {
    pub fn start() -> Self {
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

    pub fn sock(&self) -> PathBuf {
        self.dir.path().join("c.sock")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default()
    }

    /// Runs `ctr -a SOCK -n imager-test ARGS`, killed after `limit`.
    pub fn ctr(&self, args: &[&str], limit: Duration) -> Output {
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

    pub fn ctr_ok(&self, args: &[&str], limit: Duration) -> String {
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

pub fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A runnable image: Debian's static busybox as `/bin/busybox`, with `/bin/echo` and `/bin/sh`
/// linking to it; its command is `echo ok`.
pub fn busybox_image() -> TestImage {
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

//! Test fixtures (feature `testing`): Debian's `docker-registry` (the distribution v2 server) on
//! loopback, test images built offline as OCI layouts and pushed with `skopeo`, a fault-injecting
//! proxy, a throwaway CA, a private containerd with a runnable busybox image, and helpers to build
//! clients.
//!
//! Shared by this crate's integration tests and by those of the crates that drive the client
//! (`imager cache create`), so that both test against the same registry the same way. Not part of
//! the client: nothing outside tests enables the feature. A missing tool fails the test that
//! needs it, with a pointer to `scripts/setup.sh`; nothing is skipped.
// Fixtures: a panic with a message is how a broken fixture fails its test.
#![allow(clippy::unwrap_used, missing_debug_implementations)]

pub mod containerd;
pub mod proxy;
pub mod tls;

use std::io::Write as _;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{
    Client, ClientConfig, Digest, DockerConfigSource, ImageName, Reference, RetryPolicy, media,
};
use sha2::{Digest as _, Sha256};

/// Fails the test (never skips it) when a tool the tests depend on is missing.
pub fn require_tool(tool: &str) {
    let found = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).any(|dir| dir.join(tool).is_file()))
        .unwrap_or(false);
    assert!(
        found,
        "`{tool}` is not installed: run scripts/setup.sh (it installs the Debian packages \
         docker-registry and skopeo that these tests run)"
    );
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// How a test registry is set up.
#[derive(Default)]
pub struct RegistryOptions {
    /// PEM certificate and key files: serve HTTPS.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// An htpasswd file: require basic authentication.
    pub htpasswd: Option<PathBuf>,
    /// Token authentication: (realm URL, service, issuer, root certificate bundle file).
    pub token: Option<(String, String, String, PathBuf)>,
}

/// A `docker-registry serve` process on 127.0.0.1, killed on drop.
pub struct Registry {
    child: Child,
    pub addr: SocketAddr,
    dir: tempfile::TempDir,
}

impl Registry {
    pub fn start(options: RegistryOptions) -> Self {
        require_tool("docker-registry");
        let mut last_log = String::new();
        // A free port is picked by binding :0 and releasing it; another process can take it in
        // between, so a registry that fails to start is retried on a new port.
        for _ in 0..3 {
            let dir = tempfile::tempdir().expect("temp dir");
            let port = TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("a free port")
                .port();
            let addr: SocketAddr = ([127, 0, 0, 1], port).into();
            let config = registry_config(dir.path(), addr, &options);
            let config_path = dir.path().join("config.yml");
            std::fs::write(&config_path, config).expect("write registry config");
            let log_path = dir.path().join("registry.log");
            let log = std::fs::File::create(&log_path).expect("registry log");
            let mut child = Command::new("docker-registry")
                .arg("serve")
                .arg(&config_path)
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("log handle"))
                .stderr(log)
                .spawn()
                .expect("start docker-registry");
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                if let Ok(Some(_)) = child.try_wait() {
                    last_log = std::fs::read_to_string(&log_path).unwrap_or_default();
                    break;
                }
                if TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok() {
                    return Self { child, addr, dir };
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "docker-registry did not listen on {addr} within 10 s:\n{}",
                        std::fs::read_to_string(&log_path).unwrap_or_default()
                    );
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        panic!("docker-registry failed to start three times; last log:\n{last_log}");
    }

    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// The `docker-registry` process, for reading its memory use.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn registry_config(dir: &Path, addr: SocketAddr, o: &RegistryOptions) -> String {
    // Written from the package's example (/etc/docker/registry/config.yml), minus what a
    // short-lived test server does not want: health checks, upload purging, access logs.
    let mut c = format!(
        "version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: {storage}
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: {addr}
  secret: imager-registry-tests
",
        storage = dir.join("storage").display()
    );
    if let Some((cert, key)) = &o.tls {
        c += &format!(
            "  tls:\n    certificate: {}\n    key: {}\n",
            cert.display(),
            key.display()
        );
    }
    if let Some(htpasswd) = &o.htpasswd {
        c += &format!(
            "auth:\n  htpasswd:\n    realm: imager-test\n    path: {}\n",
            htpasswd.display()
        );
    }
    if let Some((realm, service, issuer, roots)) = &o.token {
        c += &format!(
            "auth:\n  token:\n    realm: {realm}\n    service: {service}\n    issuer: {issuer}\n    rootcertbundle: {}\n",
            roots.display()
        );
    }
    c
}

/// A blob of a test image, with its digest.
#[derive(Clone)]
pub struct Blob {
    pub bytes: Vec<u8>,
    pub digest: String,
    pub media_type: &'static str,
}

impl Blob {
    pub fn new(bytes: Vec<u8>, media_type: &'static str) -> Self {
        Self {
            digest: format!("sha256:{}", sha256_hex(&bytes)),
            bytes,
            media_type,
        }
    }

    pub fn descriptor(&self) -> serde_json::Value {
        serde_json::json!({
            "mediaType": self.media_type,
            "digest": self.digest,
            "size": self.bytes.len(),
        })
    }

    pub fn digest(&self) -> Digest {
        Digest::parse(&self.digest).expect("test digest")
    }
}

/// One single-platform test image: a config and two gzip tar layers.
#[derive(Clone)]
pub struct TestImage {
    pub arch: &'static str,
    pub config: Blob,
    pub layers: Vec<Blob>,
    pub manifest: Blob,
}

impl TestImage {
    pub fn blobs(&self) -> impl Iterator<Item = &Blob> {
        std::iter::once(&self.config).chain(&self.layers)
    }
}

/// Deterministic incompressible bytes (xorshift), so the big layer stays big after gzip.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// A gzip tar layer holding `files`, and its diff ID (the sha256 of the tar). Stored (level 0)
/// deflate keeps it fast in debug builds and is still real gzip, so skopeo copies it as a
/// compressed layer without recompressing it.
pub fn layer(files: &[(&str, Vec<u8>)]) -> (Blob, String) {
    let mut tar = tar::Builder::new(Vec::new());
    for (path, data) in files {
        let mut h = tar::Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(0);
        h.set_entry_type(tar::EntryType::Regular);
        tar.append_data(&mut h, path, data.as_slice())
            .expect("tar entry");
    }
    let tar = tar.into_inner().expect("tar");
    let diff_id = format!("sha256:{}", sha256_hex(&tar));
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::none());
    gz.write_all(&tar).expect("gzip");
    let gz = gz.finish().expect("gzip");
    (Blob::new(gz, crate::media::OCI_LAYER_TAR_GZIP), diff_id)
}

/// A small image for `arch` whose second layer carries `big` bytes of noise (for mid-blob faults).
pub fn test_image(arch: &'static str, big: usize) -> TestImage {
    let seed = arch
        .bytes()
        .fold(7u64, |a, b| a.wrapping_mul(31).wrapping_add(b as u64));
    let l1 = layer(&[("etc/hello", format!("hello from {arch}\n").into_bytes())]);
    let l2 = layer(&[("data/noise.bin", noise(big, seed))]);
    image(arch, vec![l1, l2])
}

/// Two amd64 images sharing their base layer (48 KiB) under a layer of their own (96 and 80 KiB):
/// what makes a client fetch a shared blob once, and a cache hold it once.
pub fn two_images_sharing_a_layer() -> (TestImage, TestImage) {
    let shared = layer(&[("etc/shared", noise(48 << 10, 1))]);
    let a = image(
        "amd64",
        vec![shared.clone(), layer(&[("bin/a", noise(96 << 10, 2))])],
    );
    let b = image(
        "amd64",
        vec![shared, layer(&[("bin/b", noise(80 << 10, 3))])],
    );
    (a, b)
}

/// An image for `arch` made of these layers (each with its diff ID, as [`layer`] returns them):
/// images built from a shared layer share that blob in the registry.
pub fn image(arch: &'static str, layers: Vec<(Blob, String)>) -> TestImage {
    let diff_ids: Vec<&String> = layers.iter().map(|(_, d)| d).collect();
    let config = serde_json::json!({
        "architecture": arch,
        "os": "linux",
        "config": {"Cmd": ["/bin/true"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    });
    let config = Blob::new(
        serde_json::to_vec(&config).expect("json"),
        crate::media::OCI_CONFIG,
    );
    let layers: Vec<Blob> = layers.into_iter().map(|(b, _)| b).collect();
    let descriptors: Vec<serde_json::Value> = layers.iter().map(Blob::descriptor).collect();
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": media::OCI_MANIFEST,
        "config": config.descriptor(),
        "layers": descriptors,
    });
    let manifest = Blob::new(
        serde_json::to_vec(&manifest).expect("json"),
        media::OCI_MANIFEST,
    );
    TestImage {
        arch,
        config,
        layers,
        manifest,
    }
}

/// An OCI image index over `images`.
pub fn test_index(images: &[TestImage]) -> Blob {
    let manifests: Vec<_> = images
        .iter()
        .map(|i| {
            let mut d = i.manifest.descriptor();
            d["platform"] = serde_json::json!({"os": "linux", "architecture": i.arch});
            d
        })
        .collect();
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": media::OCI_INDEX,
        "manifests": manifests,
    });
    Blob::new(serde_json::to_vec(&index).expect("json"), media::OCI_INDEX)
}

/// Writes an OCI image layout holding `blobs`, with `top` named `tag` in index.json.
pub fn write_layout(dir: &Path, tag: &str, top: &Blob, blobs: &[&Blob]) {
    let blob_dir = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blob_dir).expect("layout dir");
    for b in blobs.iter().copied().chain([top]) {
        let hex = b.digest.trim_start_matches("sha256:");
        std::fs::write(blob_dir.join(hex), &b.bytes).expect("write blob");
    }
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)
        .expect("oci-layout");
    let mut d = top.descriptor();
    d["annotations"] = serde_json::json!({"org.opencontainers.image.ref.name": tag});
    let index = serde_json::json!({"schemaVersion": 2, "manifests": [d]});
    std::fs::write(
        dir.join("index.json"),
        serde_json::to_vec(&index).expect("json"),
    )
    .expect("index.json");
}

/// Runs skopeo with a permissive signature policy of its own (the system one is not ours).
pub fn skopeo(work: &Path, args: &[&str]) -> Vec<u8> {
    require_tool("skopeo");
    let policy = work.join("policy.json");
    if !policy.exists() {
        std::fs::write(
            &policy,
            br#"{"default":[{"type":"insecureAcceptAnything"}]}"#,
        )
        .expect("policy");
    }
    let out = Command::new("skopeo")
        .arg("--policy")
        .arg(&policy)
        .args(args)
        // No stray credentials from the host's auth files.
        .env("REGISTRY_AUTH_FILE", work.join("no-auth.json"))
        .output()
        .expect("run skopeo");
    assert!(
        out.status.success(),
        "skopeo {args:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Pushes a single image as `host/repo:tag` (byte-exact: `--preserve-digests`).
pub fn push_image(
    work: &Path,
    host: &str,
    repo: &str,
    tag: &str,
    image: &TestImage,
    creds: Option<&str>,
) {
    let layout = work.join(format!("layout-{repo}-{tag}").replace('/', "_"));
    let blobs: Vec<&Blob> = image.blobs().collect();
    write_layout(&layout, tag, &image.manifest, &blobs);
    push_layout(work, &layout, tag, host, repo, false, creds);
}

/// Pushes a multi-arch index and all its images (`skopeo copy --all`).
pub fn push_index(work: &Path, host: &str, repo: &str, tag: &str, images: &[TestImage]) -> Blob {
    let index = test_index(images);
    let layout = work.join(format!("layout-{repo}-{tag}").replace('/', "_"));
    let blobs: Vec<&Blob> = images
        .iter()
        .flat_map(|i| i.blobs().chain([&i.manifest]))
        .collect();
    write_layout(&layout, tag, &index, &blobs);
    push_layout(work, &layout, tag, host, repo, true, None);
    index
}

fn push_layout(
    work: &Path,
    layout: &Path,
    tag: &str,
    host: &str,
    repo: &str,
    all: bool,
    creds: Option<&str>,
) {
    let src = format!("oci:{}:{tag}", layout.display());
    let dest = format!("docker://{host}/{repo}:{tag}");
    let mut args = vec![
        "copy",
        "--quiet",
        "--preserve-digests",
        "--dest-tls-verify=false",
    ];
    if all {
        args.push("--all");
    }
    if let Some(c) = creds {
        args.extend(["--dest-creds", c]);
    }
    args.extend([src.as_str(), dest.as_str()]);
    skopeo(work, &args);
}

/// `skopeo inspect --raw`: the manifest bytes as the registry serves them, read by another client.
pub fn skopeo_raw(work: &Path, image: &str, creds: Option<&str>) -> Vec<u8> {
    let dest = format!("docker://{image}");
    let mut args = vec!["inspect", "--raw", "--tls-verify=false"];
    if let Some(c) = creds {
        args.extend(["--creds", c]);
    }
    args.push(&dest);
    skopeo(work, &args)
}

/// Fast retries, so fault tests take milliseconds, not the production backoff.
pub fn fast_retry() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 4,
        initial_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(200),
        max_elapsed: Duration::from_secs(10),
    }
}

/// A config for plain-HTTP test registries: insecure, anonymous, fast retries.
pub fn insecure_config() -> ClientConfig {
    ClientConfig {
        insecure: true,
        docker_config: DockerConfigSource::None,
        retry: fast_retry(),
        ..ClientConfig::default()
    }
}

pub fn client(config: ClientConfig) -> Client {
    Client::new(config).expect("client")
}

pub fn repo(host: &str, name: &str) -> ImageName {
    ImageName::new(host, name).expect("repository")
}

pub fn tagged(host: &str, name: &str, tag: &str) -> Reference {
    Reference::with_tag(repo(host, name), tag).expect("reference")
}

/// Every file under `dir`, relative, sorted (to prove nothing stray was left behind).
pub fn files_under(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p.strip_prefix(dir).unwrap_or(&p).display().to_string());
            }
        }
    }
    out.sort();
    out
}

/// The full error chain, as the CLI prints it.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cause = c.source();
    }
    s
}

//! Shared by the integration tests: a server on 127.0.0.1:0 in its own thread (stopped on
//! drop), flat caches built with imager-cache's `FlatWriter` from the registry crate's test
//! images, and a raw HTTP/1.1 client (reqwest normalizes `..` and `%2E` out of URLs, so the
//! security tests write their request lines by hand).

#![allow(dead_code, unused_imports, clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use imager_cache::{Digest, FlatWriter, ImageName};
use imager_registry::testing::{Blob, TestImage, image, layer, noise, test_image, test_index};
use imager_registryd::{Config, Log, Root, Server};

pub mod containerd_checks;
pub mod forms;
pub mod skopeo_checks;

pub use imager_registry::testing::sha256_hex;

/// A server running on its own runtime thread; stopped (and joined) on drop.
pub struct TestServer {
    pub addr: SocketAddr,
    logs: Arc<Mutex<Vec<String>>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TestServer {
    pub fn start(roots: &[&Path]) -> Self {
        Self::start_with(Config::new(roots.iter().map(|r| r.to_path_buf())))
    }

    /// Serves roots of any kind (see [`forms::Form`]).
    pub fn start_roots(roots: Vec<Root>) -> Self {
        Self::start_with(Config::new(roots))
    }

    pub fn start_with(mut config: Config) -> Self {
        let logs = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&logs);
        config.address = "127.0.0.1:0".parse().unwrap();
        config.log = Log::new(move |line| {
            eprintln!("{line}");
            sink.lock().unwrap().push(line.to_owned());
        });
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                match Server::bind(config).await {
                    Ok(server) => {
                        addr_tx.send(Ok(server.local_addr())).unwrap();
                        server
                            .serve(async {
                                let _ = stop_rx.await;
                            })
                            .await
                            .unwrap();
                    }
                    Err(e) => addr_tx.send(Err(e.to_string())).unwrap(),
                }
            });
        });
        let addr = addr_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("server started")
            .unwrap_or_else(|e| panic!("server failed to start: {e}"));
        Self {
            addr,
            logs,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// `127.0.0.1:PORT`, as image references name the server.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    pub fn logs(&self) -> String {
        self.logs.lock().unwrap().join("\n")
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// An image as cached: its name, tag, top-level manifest, every manifest and blob it brings.
#[derive(Clone)]
pub struct Cached {
    pub name: ImageName,
    pub tag: String,
    pub top: Blob,
    /// The top-level manifest and, for an index, its children.
    pub manifests: Vec<Blob>,
    pub blobs: Vec<Blob>,
}

impl Cached {
    pub fn single(registry: &str, repo: &str, tag: &str, image: &TestImage) -> Self {
        Self {
            name: ImageName::new(registry, repo).unwrap(),
            tag: tag.to_owned(),
            top: image.manifest.clone(),
            manifests: vec![image.manifest.clone()],
            blobs: image.blobs().cloned().collect(),
        }
    }

    pub fn index(registry: &str, repo: &str, tag: &str, images: &[TestImage]) -> Self {
        let index = test_index(images);
        let mut manifests = vec![index.clone()];
        manifests.extend(images.iter().map(|i| i.manifest.clone()));
        Self {
            name: ImageName::new(registry, repo).unwrap(),
            tag: tag.to_owned(),
            top: index,
            manifests,
            blobs: images.iter().flat_map(|i| i.blobs().cloned()).collect(),
        }
    }

    /// `repository:tag` as a path under the server, and the `?ns=` that selects the registry.
    pub fn repo(&self) -> &str {
        self.name.repository()
    }

    pub fn ns(&self) -> String {
        format!("ns={}", self.name.registry())
    }
}

pub fn digest(b: &Blob) -> Digest {
    Digest::parse(&b.digest).unwrap()
}

/// Writes images into a flat tree at `root` through imager-cache's writer.
pub fn write_cache(root: &Path, images: &[Cached]) {
    let w = FlatWriter::create(root).unwrap();
    for img in images {
        for b in &img.blobs {
            w.write_blob(&digest(b), Some(b.bytes.len() as u64), &b.bytes[..])
                .unwrap();
        }
        for m in &img.manifests {
            w.write_manifest(&img.name, &digest(m), &m.bytes).unwrap();
        }
        w.write_tag(&img.name, &img.tag, &img.top.bytes).unwrap();
    }
}

/// The test cache:
///
/// ```text
/// docker.io/library/small:1.0          amd64 image, small layers
/// registry.example.com/team/app:v1     amd64 image with a 4 MiB layer
/// ghcr.io/team/app:v1                  another image under the same repository path
/// ghcr.io/org/multi:v2                 OCI index, amd64 + arm64, both children cached
/// ```
pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub small: Cached,
    pub app: Cached,
    pub ghcr_app: Cached,
    pub multi: Cached,
}

impl Fixture {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let small = Cached::single(
            "docker.io",
            "library/small",
            "1.0",
            &test_image("amd64", 8 << 10),
        );
        let big = image(
            "amd64",
            vec![
                layer(&[("etc/app", b"app\n".to_vec())]),
                layer(&[("data/big.bin", noise(4 << 20, 42))]),
            ],
        );
        let app = Cached::single("registry.example.com", "team/app", "v1", &big);
        let ghcr_app = Cached::single("ghcr.io", "team/app", "v1", &test_image("arm64", 16 << 10));
        let multi = Cached::index(
            "ghcr.io",
            "org/multi",
            "v2",
            &[test_image("amd64", 32 << 10), test_image("arm64", 24 << 10)],
        );
        write_cache(
            dir.path(),
            &[small.clone(), app.clone(), ghcr_app.clone(), multi.clone()],
        );
        Self {
            dir,
            small,
            app,
            ghcr_app,
            multi,
        }
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    pub fn images(&self) -> Vec<&Cached> {
        vec![&self.small, &self.app, &self.ghcr_app, &self.multi]
    }

    /// The big layer of `app` (4 MiB).
    pub fn big_blob(&self) -> &Blob {
        self.app.blobs.iter().max_by_key(|b| b.bytes.len()).unwrap()
    }
}

/// Copies a tree (test caches are small).
pub fn copy_tree(from: &Path, to: &Path) {
    for rel in imager_registry::testing::files_under(from) {
        let dest = to.join(&rel);
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        std::fs::copy(from.join(&rel), dest).unwrap();
    }
}

/// The repository's `demo-cache` (testdata/).
pub fn demo_cache() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/demo-cache")
}

/// A response read off the wire.
#[derive(Debug)]
pub struct Raw {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Raw {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The `code` of the first OCI error in the body.
    pub fn error_code(&self) -> String {
        let v: serde_json::Value = serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("error body is not JSON ({e}): {:?}", self.body_text()));
        v["errors"][0]["code"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends `METHOD target HTTP/1.1` exactly as given (no normalization), reads the whole answer.
pub fn raw(addr: SocketAddr, method: &str, target: &[u8], headers: &[(&str, &str)]) -> Raw {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut req = Vec::new();
    req.extend_from_slice(method.as_bytes());
    req.push(b' ');
    req.extend_from_slice(target);
    req.extend_from_slice(b" HTTP/1.1\r\nHost: test\r\nConnection: close\r\n");
    for (n, v) in headers {
        req.extend_from_slice(format!("{n}: {v}\r\n").as_bytes());
    }
    req.extend_from_slice(b"\r\n");
    s.write_all(&req).unwrap();
    let mut all = Vec::new();
    s.read_to_end(&mut all).unwrap();
    let split = all
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no header end in {:?}", String::from_utf8_lossy(&all)));
    let head = String::from_utf8_lossy(&all[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect();
    Raw {
        status,
        headers,
        body: all[split + 4..].to_vec(),
    }
}

pub fn get(addr: SocketAddr, target: &str) -> Raw {
    raw(addr, "GET", target.as_bytes(), &[])
}

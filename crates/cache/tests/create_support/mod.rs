//! A real registry for `cache create`: Debian's docker-registry on loopback (the registry crate's
//! harness), test images pushed with skopeo, and a fault-injecting proxy in front of it that also
//! records every request (to prove what was fetched, and how often).
//!
//! ```text
//! test/a:v1       amd64 image: config, shared layer, own layer
//! test/b:v1       amd64 image: config, the same shared layer, own layer
//! test/multi:v1   OCI index: amd64 + arm64 images (two layers each)
//! ```

#![allow(dead_code, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use imager_cache::{CreateOptions, OutputLayout, Reference};
use imager_registry::testing::proxy::{FaultProxy, Seen};
use imager_registry::testing::{
    Blob, Registry, RegistryOptions, TestImage, fast_retry, push_image, push_index, skopeo_raw,
    test_image, two_images_sharing_a_layer,
};
use imager_registry::{ClientConfig, DockerConfigSource, PlatformSelection};

pub use imager_registry::testing::chain;

/// `imager_cache::create` on a runtime of its own, as the CLI runs it (its error type is the
/// library's, large or not).
#[allow(clippy::result_large_err)]
pub fn create(opts: &CreateOptions) -> Result<imager_cache::Created, imager_cache::CreateError> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(imager_cache::create(opts))
}

#[path = "../common/read.rs"]
mod read;
#[allow(unused_imports)]
pub use read::cache_files;

pub struct World {
    pub work: tempfile::TempDir,
    pub registry: Registry,
    /// Runs the proxy; `create` runs its own runtime, so this one only serves the proxy.
    pub rt: tokio::runtime::Runtime,
    pub proxy: FaultProxy,
    pub a: TestImage,
    pub b: TestImage,
    pub amd64: TestImage,
    pub arm64: TestImage,
    pub index: Blob,
    /// How many of the proxy's requests were already taken.
    seen_mark: std::cell::Cell<usize>,
}

impl World {
    pub fn start() -> Self {
        let work = tempfile::tempdir().unwrap();
        let registry = Registry::start(RegistryOptions::default());
        let host = registry.host();
        let (a, b) = two_images_sharing_a_layer();
        push_image(work.path(), &host, "test/a", "v1", &a, None);
        push_image(work.path(), &host, "test/b", "v1", &b, None);
        let amd64 = test_image("amd64", 64 << 10);
        let arm64 = test_image("arm64", 64 << 10);
        let index = push_index(
            work.path(),
            &host,
            "test/multi",
            "v1",
            &[amd64.clone(), arm64.clone()],
        );
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let proxy = rt.block_on(FaultProxy::start(registry.addr));
        Self {
            work,
            registry,
            rt,
            proxy,
            a,
            b,
            amd64,
            arm64,
            index,
            seen_mark: std::cell::Cell::new(0),
        }
    }

    /// The registry as `create` sees it: through the proxy.
    pub fn host(&self) -> String {
        self.proxy.host()
    }

    /// The host's directory name in the flat tree (`127.0.0.1_PORT_`).
    pub fn host_dir(&self) -> String {
        self.host().replace(':', "_") + "_"
    }

    pub fn reference(&self, repo_tag: &str) -> Reference {
        Reference::parse(&format!("{}/{repo_tag}", self.host())).unwrap()
    }

    /// Options for `images` (e.g. `test/a:v1`) on this registry: insecure (plain HTTP),
    /// anonymous, fast retries.
    pub fn options(&self, out: &Path, images: &[&str], platforms: &str) -> CreateOptions {
        let mut o = CreateOptions::new(
            out.to_owned(),
            images.iter().map(|i| self.reference(i)).collect(),
        );
        o.platforms = PlatformSelection::parse([platforms]).unwrap();
        o.client = ClientConfig {
            insecure: true,
            docker_config: DockerConfigSource::None,
            retry: fast_retry(),
            ..ClientConfig::default()
        };
        o.layout = OutputLayout::Flat;
        o
    }

    /// Every request the proxy forwarded or answered since the last call.
    pub fn take_requests(&self) -> Vec<Seen> {
        let all = self.proxy.seen();
        let start = self.seen_mark.replace(all.len());
        all[start.min(all.len())..].to_vec()
    }

    /// The blob digests requested since the last [`World::take_requests`], sorted.
    pub fn take_blob_gets(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .take_requests()
            .into_iter()
            .filter_map(|s| {
                s.path
                    .split_once("/blobs/")
                    .map(|(_, d)| d.trim_start_matches("sha256:").to_owned())
            })
            .collect();
        out.sort();
        out
    }

    pub fn skopeo_raw(&self, repo_ref: &str) -> Vec<u8> {
        // Straight from the registry, not through the proxy (whose faults are ours).
        skopeo_raw(
            self.work.path(),
            &format!("{}/{repo_ref}", self.registry.host()),
            None,
        )
    }

    pub fn scratch(&self) -> PathBuf {
        self.work.path().join("scratch")
    }
}

pub fn hex(b: &Blob) -> String {
    b.digest.trim_start_matches("sha256:").to_owned()
}

/// Every file under `dir`, relative path -> content (test caches are small).
pub fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    imager_registry::testing::files_under(dir)
        .into_iter()
        .map(|rel| {
            let bytes = std::fs::read(dir.join(&rel)).unwrap();
            (rel, bytes)
        })
        .collect()
}

/// The names in `dir` (one level), sorted: what a failed run must not have added.
pub fn names(dir: &Path) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    out.sort();
    out
}

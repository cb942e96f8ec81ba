//! A small but real image cache, built in memory and written in each input form. Digests are
//! computed here with sha2 directly (not with the crate under test), manifests are real JSON, and
//! layers are real gzip'd tars.
//!
//! ```text
//! docker.io/library/busybox:1.36                   OCI index: amd64 + arm64/v8 children, both cached
//! ghcr.io/example/app:v1                           Docker manifest list: amd64 cached, arm64 not
//! registry.example.com:5000/team/tool:v2, :latest  one OCI image manifest, two tags
//! ```
//! Layers are shared: `base` by busybox (both platforms) and app; `amd64` by busybox/amd64 and tool.

#![allow(dead_code, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

mod read;
#[allow(unused_imports)]
pub use read::cache_files;

use flate2::Compression;
use flate2::write::GzEncoder;
use serde_json::json;
use sha2::{Digest as _, Sha256};

#[allow(unused_imports)]
pub use imager_oci::media::{
    DOCKER_CONFIG, DOCKER_LAYER, DOCKER_MANIFEST, DOCKER_MANIFEST_LIST as DOCKER_LIST, OCI_CONFIG,
    OCI_INDEX, OCI_LAYER_TAR, OCI_LAYER_TAR_GZIP as OCI_LAYER, OCI_MANIFEST,
};

pub const TOOL_PREFIX: &str = "registry.example.com:5000/team/tool";

pub fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

pub fn digest(bytes: &[u8]) -> String {
    format!("sha256:{}", sha256(bytes))
}

pub fn name(bytes: &[u8]) -> String {
    format!("sha256-{}", sha256(bytes))
}

pub fn desc(media_type: &str, bytes: &[u8]) -> serde_json::Value {
    json!({"mediaType": media_type, "digest": digest(bytes), "size": bytes.len()})
}

/// A gzip'd tar with fixed owners and times.
pub fn targz(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, data) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o755);
        h.set_mtime(0);
        h.set_cksum();
        b.append_data(&mut h, path, *data).unwrap();
    }
    gzip(&b.into_inner().unwrap(), Compression::default())
}

pub fn gzip(data: &[u8], level: Compression) -> Vec<u8> {
    let mut gz = GzEncoder::new(Vec::new(), level);
    gz.write_all(data).unwrap();
    gz.finish().unwrap()
}

fn config(os: &str, arch: &str, variant: Option<&str>, layers: &[&[u8]]) -> Vec<u8> {
    let mut c = json!({
        "architecture": arch,
        "os": os,
        "config": {"Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": layers.iter().map(|l| digest(l)).collect::<Vec<_>>()},
    });
    if let Some(v) = variant {
        c["variant"] = json!(v);
    }
    serde_json::to_vec(&c).unwrap()
}

/// Pretty-printed, as registries often serve manifests; the bytes are what counts.
fn pretty(v: &serde_json::Value) -> Vec<u8> {
    let mut out = serde_json::to_vec_pretty(v).unwrap();
    out.push(b'\n');
    out
}

pub fn image_manifest(
    media_type: &str,
    config_type: &str,
    layer_type: &str,
    config: &[u8],
    layers: &[&[u8]],
) -> Vec<u8> {
    pretty(&json!({
        "schemaVersion": 2,
        "mediaType": media_type,
        "config": desc(config_type, config),
        "layers": layers.iter().map(|l| desc(layer_type, l)).collect::<Vec<_>>(),
    }))
}

/// One image as the layouts name it.
#[derive(Debug, Clone)]
pub struct Image {
    /// The full reference it is cached under.
    pub registry: String,
    pub repository: String,
    pub tags: Vec<String>,
    /// The top-level manifest (index or image).
    pub top: Vec<u8>,
}

/// The cache: blobs and manifests by digest, and the images.
#[derive(Debug, Clone, Default)]
pub struct Fixture {
    /// Config and layer blobs present in the cache.
    pub blobs: BTreeMap<String, Vec<u8>>,
    /// Manifests present, by repository `registry/repo`, then digest.
    pub manifests: BTreeMap<String, BTreeMap<String, Vec<u8>>>,
    pub images: Vec<Image>,
    /// Manifests an index names but the cache does not hold.
    pub absent: Vec<Vec<u8>>,
}

impl Fixture {
    fn blob(&mut self, bytes: &[u8]) {
        self.blobs.insert(digest(bytes), bytes.to_vec());
    }

    fn manifest(&mut self, repo: &str, bytes: &[u8]) {
        self.manifests
            .entry(repo.to_owned())
            .or_default()
            .insert(digest(bytes), bytes.to_vec());
    }

    pub fn new() -> Self {
        let mut f = Self::default();
        let base = targz(&[
            ("bin/sh", b"#!/bin/busybox sh\n"),
            ("etc/os-release", b"ID=test\n"),
        ]);
        let amd64 = targz(&[("bin/busybox", &b"\x7fELF amd64 busybox".repeat(500))]);
        let arm64 = targz(&[("bin/busybox", &b"\x7fELF arm64 busybox".repeat(500))]);
        let app = targz(&[("app/server", &b"app server binary ".repeat(2000))]);

        // busybox: OCI index, both children cached.
        let bb_amd_cfg = config("linux", "amd64", None, &[&base, &amd64]);
        let bb_arm_cfg = config("linux", "arm64", Some("v8"), &[&base, &arm64]);
        let bb_amd = image_manifest(
            OCI_MANIFEST,
            OCI_CONFIG,
            OCI_LAYER,
            &bb_amd_cfg,
            &[&base, &amd64],
        );
        let bb_arm = image_manifest(
            OCI_MANIFEST,
            OCI_CONFIG,
            OCI_LAYER,
            &bb_arm_cfg,
            &[&base, &arm64],
        );
        let mut amd_desc = desc(OCI_MANIFEST, &bb_amd);
        amd_desc["platform"] = json!({"architecture": "amd64", "os": "linux"});
        let mut arm_desc = desc(OCI_MANIFEST, &bb_arm);
        arm_desc["platform"] = json!({"architecture": "arm64", "os": "linux", "variant": "v8"});
        let bb_index = pretty(&json!({
            "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [amd_desc, arm_desc],
        }));
        let repo = "docker.io/library/busybox";
        for b in [&base, &amd64, &arm64, &bb_amd_cfg, &bb_arm_cfg] {
            f.blob(b);
        }
        for m in [&bb_index, &bb_amd, &bb_arm] {
            f.manifest(repo, m);
        }
        f.images.push(Image {
            registry: "docker.io".into(),
            repository: "library/busybox".into(),
            tags: vec!["1.36".into()],
            top: bb_index,
        });

        // app: Docker manifest list (compact JSON), arm64 child not cached.
        let app_cfg = config("linux", "amd64", None, &[&base, &app]);
        let app_amd = image_manifest(
            DOCKER_MANIFEST,
            DOCKER_CONFIG,
            DOCKER_LAYER,
            &app_cfg,
            &[&base, &app],
        );
        let app_arm = image_manifest(DOCKER_MANIFEST, DOCKER_CONFIG, DOCKER_LAYER, b"{}", &[]);
        let mut a = desc(DOCKER_MANIFEST, &app_amd);
        a["platform"] = json!({"architecture": "amd64", "os": "linux"});
        let mut b = desc(DOCKER_MANIFEST, &app_arm);
        b["platform"] = json!({"architecture": "arm64", "os": "linux"});
        let app_list = serde_json::to_vec(&json!({
            "schemaVersion": 2, "mediaType": DOCKER_LIST, "manifests": [a, b],
        }))
        .unwrap();
        f.blob(&app_cfg);
        f.blob(&app);
        f.manifest("ghcr.io/example/app", &app_list);
        f.manifest("ghcr.io/example/app", &app_amd);
        f.absent.push(app_arm);
        f.images.push(Image {
            registry: "ghcr.io".into(),
            repository: "example/app".into(),
            tags: vec!["v1".into()],
            top: app_list,
        });

        // tool: one OCI image manifest sharing busybox's amd64 layer, two tags.
        let tool_cfg = config("linux", "amd64", None, &[&amd64]);
        let tool = image_manifest(OCI_MANIFEST, OCI_CONFIG, OCI_LAYER, &tool_cfg, &[&amd64]);
        f.blob(&tool_cfg);
        f.manifest(TOOL_PREFIX, &tool);
        f.images.push(Image {
            registry: "registry.example.com:5000".into(),
            repository: "team/tool".into(),
            tags: vec!["v2".into(), "latest".into()],
            top: tool,
        });
        f
    }

    /// The flat tree as path -> bytes: what every form must materialize into.
    pub fn flat_files(&self) -> BTreeMap<String, Vec<u8>> {
        let mut out = BTreeMap::new();
        for (d, bytes) in &self.blobs {
            out.insert(format!("blob/{}", d.replace(':', "-")), bytes.clone());
        }
        for (repo, ms) in &self.manifests {
            for (d, bytes) in ms {
                out.insert(
                    format!(
                        "manifests/{}/digest/{}",
                        flat_repo(repo),
                        d.replace(':', "-")
                    ),
                    bytes.clone(),
                );
            }
        }
        for img in &self.images {
            let repo = format!("{}/{}", img.registry, img.repository);
            for tag in &img.tags {
                out.insert(
                    format!("manifests/{}/reference/{tag}", flat_repo(&repo)),
                    img.top.clone(),
                );
            }
        }
        out
    }

    pub fn write_flat(&self, root: &Path) {
        write_files(root, &self.flat_files());
    }

    /// A plain OCI layout: every blob and manifest under blobs/sha256, index.json naming the
    /// images the ways tools do (full reference in ref.name, containerd's annotation, bare tags).
    pub fn write_oci_layout(&self, root: &Path) {
        let mut files = BTreeMap::new();
        for bytes in self
            .blobs
            .values()
            .chain(self.manifests.values().flat_map(|m| m.values()))
        {
            files.insert(format!("blobs/sha256/{}", sha256(bytes)), bytes.clone());
        }
        let mut descs = Vec::new();
        for img in &self.images {
            let media_type = top_media_type(&img.top);
            for tag in &img.tags {
                let mut d = desc(&media_type, &img.top);
                d["annotations"] = match img.repository.as_str() {
                    "library/busybox" => {
                        json!({"org.opencontainers.image.ref.name": format!("docker.io/library/busybox:{tag}")})
                    }
                    "example/app" => json!({
                        "org.opencontainers.image.ref.name": tag,
                        "io.containerd.image.name": format!("ghcr.io/example/app:{tag}"),
                    }),
                    _ => json!({"org.opencontainers.image.ref.name": tag}),
                };
                descs.push(d);
            }
        }
        files.insert(
            "index.json".into(),
            pretty(&json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": descs})),
        );
        files.insert(
            "oci-layout".into(),
            br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec(),
        );
        write_files(root, &files);
    }

    /// The layer upstream's `cache-create --layout oci` makes of the flat tree: sorted entries,
    /// directories included, names relative without `./`.
    pub fn cache_layer(&self) -> Vec<u8> {
        tar_of_tree(&self.flat_files())
    }

    /// An oci-wrapped layout, as upstream writes it: one image with one layer holding the flat
    /// tree, the platform on its index.json descriptor.
    pub fn write_oci_wrapped(&self, root: &Path) {
        write_wrapped(root, &[("linux/amd64", self.cache_layer())]);
    }
}

/// `registry/repo` -> the flat tree's spelling of it.
/// `list` of a cache made from [`Fixture`] (in whatever form): every tag, in order, with its
/// platforms.
pub fn assert_lists_the_fixture(images: &[imager_cache::ImageInfo]) {
    let rows: Vec<(&str, Vec<&str>)> = images
        .iter()
        .map(|i| {
            let platforms = i.platforms.iter().map(String::as_str).collect();
            (i.reference.as_str(), platforms)
        })
        .collect();
    assert_eq!(
        rows,
        [
            (
                "docker.io/library/busybox:1.36",
                vec!["linux/amd64", "linux/arm64/v8"]
            ),
            ("ghcr.io/example/app:v1", vec!["linux/amd64"]),
            (
                "registry.example.com:5000/team/tool:latest",
                vec!["linux/amd64"]
            ),
            (
                "registry.example.com:5000/team/tool:v2",
                vec!["linux/amd64"]
            ),
        ]
    );
}

pub fn flat_repo(repo: &str) -> String {
    let (registry, rest) = repo.split_once('/').unwrap();
    let registry = match registry.rsplit_once(':') {
        Some((host, port)) => format!("{host}_{port}_"),
        None => registry.to_owned(),
    };
    format!("{registry}/{rest}")
}

pub fn top_media_type(bytes: &[u8]) -> String {
    let v: serde_json::Value = serde_json::from_slice(bytes).unwrap();
    v["mediaType"].as_str().unwrap().to_owned()
}

/// The tree as a gzip'd tar layer (upstream's form).
pub fn tar_of_tree(files: &BTreeMap<String, Vec<u8>>) -> Vec<u8> {
    gzip(&plain_tar_of_tree(files), Compression::default())
}

/// The tree as an uncompressed tar: sorted entries, directories included.
pub fn plain_tar_of_tree(files: &BTreeMap<String, Vec<u8>>) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut dirs = std::collections::BTreeSet::new();
    for path in files.keys() {
        let mut p = Path::new(path).parent();
        while let Some(d) = p.filter(|d| !d.as_os_str().is_empty()) {
            dirs.insert(d.to_owned());
            p = d.parent();
        }
    }
    let mut entries: Vec<(PathBuf, Option<&Vec<u8>>)> =
        dirs.into_iter().map(|d| (d, None)).collect();
    entries.extend(files.iter().map(|(p, b)| (PathBuf::from(p), Some(b))));
    entries.sort();
    for (path, data) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_mtime(0);
        match data {
            None => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(0o755);
                h.set_size(0);
                h.set_cksum();
                b.append_data(&mut h, &path, &[][..]).unwrap();
            }
            Some(data) => {
                h.set_mode(0o644);
                h.set_size(data.len() as u64);
                h.set_cksum();
                b.append_data(&mut h, &path, &data[..]).unwrap();
            }
        }
    }
    b.into_inner().unwrap()
}

/// An OCI layout with one wrapped-cache image per (platform, layer).
pub fn write_wrapped(root: &Path, images: &[(&str, Vec<u8>)]) {
    let mut files = BTreeMap::new();
    let mut descs = Vec::new();
    for (platform, layer) in images {
        // Upstream's config: an empty image's, with the layer's diff id.
        let gzipped = layer.starts_with(&[0x1f, 0x8b]);
        let diff_id = if gzipped {
            digest(&gunzip(layer))
        } else {
            digest(layer)
        };
        let layer_type = if gzipped { DOCKER_LAYER } else { OCI_LAYER_TAR };
        let config = serde_json::to_vec(&json!({
            "architecture": "", "os": "", "created": "2026-01-01T00:00:00Z",
            "rootfs": {"type": "layers", "diff_ids": [diff_id]}, "config": {},
        }))
        .unwrap();
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": desc(OCI_CONFIG, &config),
            "layers": [desc(layer_type, layer)],
        }))
        .unwrap();
        let (os, arch) = platform.split_once('/').unwrap();
        let mut d = desc(OCI_MANIFEST, &manifest);
        d["platform"] = json!({"os": os, "architecture": arch});
        descs.push(d);
        for b in [&config, &manifest, layer] {
            files.insert(format!("blobs/sha256/{}", sha256(b)), b.clone());
        }
    }
    files.insert(
        "index.json".into(),
        serde_json::to_vec(
            &json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": descs}),
        )
        .unwrap(),
    );
    files.insert(
        "oci-layout".into(),
        br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec(),
    );
    write_files(root, &files);
}

pub fn gunzip(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(data), &mut out).unwrap();
    out
}

pub fn write_files(root: &Path, files: &BTreeMap<String, Vec<u8>>) {
    for (path, bytes) in files {
        let p = root.join(path);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, bytes).unwrap();
    }
}

/// Every regular file under `root`, path -> bytes; panics on anything else (a symlink, a device).
pub fn read_tree(root: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(&dir).unwrap() {
            let e = e.unwrap();
            let ft = e.file_type().unwrap();
            if ft.is_dir() {
                stack.push(e.path());
            } else {
                assert!(ft.is_file(), "{} is not a regular file", e.path().display());
                let rel = e
                    .path()
                    .strip_prefix(root)
                    .unwrap()
                    .to_str()
                    .unwrap()
                    .to_owned();
                out.insert(rel, fs::read(e.path()).unwrap());
            }
        }
    }
    out
}

/// An ISO 9660 image (our writer) with the tree under `imagecache/`.
pub fn write_iso(path: &Path, files: &BTreeMap<String, Vec<u8>>) {
    let mut spec = imager_iso::IsoSpec::new("TALOS_TEST", 0).unwrap();
    for (p, bytes) in files {
        spec.add_bytes(&format!("imagecache/{p}"), bytes.clone())
            .unwrap();
    }
    let out = fs::File::create(path).unwrap();
    spec.write(&out, path, &mut |_| {}).unwrap();
}

/// A GPT disk image made by `sgdisk` whose `IMAGECACHE` partition holds the tree as ext4 made by
/// `mke2fs -d` (e2fsprogs): the metal form, written by tools that are not ours.
pub fn write_metal(path: &Path, files: &BTreeMap<String, Vec<u8>>) {
    let tree = path.with_extension("tree");
    write_files(&tree, files);
    fs::File::create(path).unwrap().set_len(40 << 20).unwrap();
    let run = |cmd: &mut std::process::Command| {
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "{cmd:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(std::process::Command::new("sgdisk")
        .args(["-n", "1:0:+4M", "-t", "1:EF00", "-c", "1:EFI"])
        .args(["-n", "2:0:+32M", "-t", "2:8300", "-c", "2:IMAGECACHE"])
        .arg(path));
    // Partition 2 starts at 5 MiB (sgdisk aligns to 1 MiB; partition 1 is 1..5 MiB).
    run(std::process::Command::new("mke2fs")
        .args(["-q", "-F", "-t", "ext4", "-L", "IMAGECACHE", "-E"])
        .arg(format!("offset={},root_owner=0:0", 5 << 20))
        .arg("-d")
        .arg(&tree)
        .arg(path)
        .arg("32M"));
    fs::remove_dir_all(&tree).unwrap();
}

/// Asserts two trees hold the same files, naming the first difference.
pub fn assert_same_tree(got: &BTreeMap<String, Vec<u8>>, want: &BTreeMap<String, Vec<u8>>) {
    let got_names: Vec<&String> = got.keys().collect();
    let want_names: Vec<&String> = want.keys().collect();
    assert_eq!(got_names, want_names, "file lists differ");
    for (path, bytes) in want {
        assert!(got[path] == *bytes, "{path}: content differs");
    }
}

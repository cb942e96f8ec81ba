//! `cache create --layout oci` without a flat tree: the layer is an uncompressed tar laid out
//! from the manifests' sizes and filled in place. Against a real registry (through the
//! fault-injecting proxy): the layer holds exactly the files `--layout flat` writes, GNU tar (an
//! independent reader) lists and extracts it, a download cut mid-way is resumed into the right
//! place of its slot, no tree is ever written beside the output, two runs are byte-identical, and
//! the layer cache gives the same layout.

#![allow(clippy::unwrap_used)]

mod create_support;

use std::collections::BTreeMap;
use std::fs;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

use create_support::*;
use imager_cache::{CreateProgress, InputForm, OutputLayout, Platform, ReadOptions};
use imager_registry::testing::proxy::Action;
use imager_registry::{Digest, Progress};

const EPOCH: u64 = 1_700_000_000;
const IMAGES: [&str; 3] = ["test/a:v1", "test/b:v1", "test/multi:v1"];
const BOTH: &str = "linux/amd64,linux/arm64";

/// Records, at every blob finished and every step of the hashing pass, every path (directories
/// too) under the output's parent.
struct Watcher {
    root: PathBuf,
    snapshots: Mutex<Vec<Vec<String>>>,
}

impl Watcher {
    fn snapshot(&self) {
        let mut out = Vec::new();
        walk(&self.root, &self.root, &mut out);
        out.sort();
        self.snapshots.lock().unwrap().push(out);
    }
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        out.push(p.strip_prefix(root).unwrap().display().to_string());
        if e.file_type().unwrap().is_dir() {
            walk(root, &p, out);
        }
    }
}

impl Progress for Watcher {
    fn blob_finished(&self, _digest: &Digest, _downloaded: bool) {
        self.snapshot();
    }
}

impl CreateProgress for Watcher {
    fn layout_advanced(&self, _done: u64) {
        self.snapshot();
    }
}

fn oci_options(w: &World, out: &Path) -> imager_cache::CreateOptions {
    let mut o = w.options(out, &IMAGES, BOTH);
    o.layout = OutputLayout::Oci;
    o.source_date_epoch = EPOCH;
    o
}

/// The layer blob of a layout made by `create` (every platform's image shares it).
fn layer_of(layout: &Path) -> PathBuf {
    let json = |p: PathBuf| -> serde_json::Value {
        serde_json::from_slice(&fs::read(p).unwrap()).unwrap()
    };
    let blob = |d: &serde_json::Value| {
        layout
            .join("blobs/sha256")
            .join(d.as_str().unwrap().trim_start_matches("sha256:"))
    };
    let index = json(layout.join("index.json"));
    let manifest = json(blob(&index["manifests"][0]["digest"]));
    assert_eq!(
        manifest["layers"][0]["mediaType"],
        "application/vnd.oci.image.layer.v1.tar"
    );
    blob(&manifest["layers"][0]["digest"])
}

#[test]
fn the_layer_is_the_flat_tree_uncompressed_resumed_in_place_and_never_a_tree() {
    let w = World::start();
    let flat = w.work.path().join("flat");
    create(&w.options(&flat, &IMAGES, BOTH)).unwrap();
    let tree = files(&flat);
    assert!(
        tree.keys().any(|k| k.len() > 100),
        "the fixture has names only PAX can hold"
    );

    // The biggest layer's connection is cut after 10000 bytes, twice: the client resumes with
    // Range, and the bytes must land at the right offset of the blob's slot.
    let big = &w.amd64.layers[1];
    assert!(big.bytes.len() > 20_000);
    w.proxy.inject(&hex(big), 2, Action::DropAfter(10_000));
    w.take_requests();
    let parent = w.work.path().join("out");
    let out = parent.join("oci");
    let watcher = Arc::new(Watcher {
        root: parent.clone(),
        snapshots: Mutex::new(Vec::new()),
    });
    let mut o = oci_options(&w, &out);
    o.progress = Some(watcher.clone());
    let created = create(&o).unwrap();
    let big_gets: Vec<_> = w
        .take_requests()
        .into_iter()
        .filter(|s| s.path.contains(&hex(big)))
        .collect();
    assert_eq!(big_gets.len(), 3, "{big_gets:?}");
    let ranges: Vec<Option<&str>> = big_gets.iter().map(|s| s.range.as_deref()).collect();
    assert_eq!(
        ranges,
        [None, Some("bytes=10000-"), Some("bytes=20000-")],
        "{big_gets:?}"
    );
    assert_eq!(created.downloaded, created.blobs);

    // No tree at any time: beside the output only its temp dir, holding the layout's blob
    // directory and, while blobs stream, the one layer file being filled.
    let snapshots = watcher.snapshots.lock().unwrap().clone();
    assert!(snapshots.len() >= created.blobs, "{}", snapshots.len());
    for snapshot in &snapshots {
        let layer_files: Vec<&String> = snapshot
            .iter()
            .filter(|p| p.contains("/layout/blobs/sha256/"))
            .collect();
        assert_eq!(layer_files.len(), 1, "{snapshot:?}");
        assert!(layer_files[0].contains("/.tmp-layer-"), "{snapshot:?}");
        for p in snapshot {
            let (top, rest) = p.split_once('/').unwrap_or((p, ""));
            assert!(top.starts_with("oci.tmp-"), "{p}");
            assert!(
                ["", "layout", "layout/blobs", "layout/blobs/sha256"].contains(&rest)
                    || rest.starts_with("layout/blobs/sha256/"),
                "{p}"
            );
        }
    }
    assert_eq!(names(&parent), ["oci"], "nothing beside the output");

    // The layer's files are exactly the flat run's, path for path, byte for byte.
    let layer = layer_of(&out);
    let mut from_layer = BTreeMap::new();
    let mut archive = tar::Archive::new(fs::File::open(&layer).unwrap());
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        if entry.header().entry_type().is_file() {
            let path = String::from_utf8(entry.path_bytes().into_owned()).unwrap();
            let mut bytes = Vec::new();
            entry.read_to_end(&mut bytes).unwrap();
            from_layer.insert(path, bytes);
        }
    }
    assert!(
        from_layer == tree,
        "the layer's files differ from the flat tree"
    );

    // GNU tar, an independent reader: lists every entry (owner 0/0, long names whole) and
    // extracts the same tree.
    let listing = Command::new("tar")
        .arg("-tvf")
        .arg(&layer)
        .output()
        .unwrap();
    assert!(listing.status.success(), "{listing:?}");
    let listing = String::from_utf8(listing.stdout).unwrap();
    for name in tree.keys() {
        assert!(
            listing
                .lines()
                .any(|l| l.ends_with(&format!(" {name}")) && l.contains(" 0/0 ")),
            "{name} not listed:\n{listing}"
        );
    }
    assert!(listing.lines().any(|l| l.starts_with("drwxr-xr-x 0/0")));
    assert!(
        listing.lines().all(|l| l.contains("2023-11-14")),
        "{listing}"
    );
    let extracted = w.work.path().join("extracted");
    fs::create_dir(&extracted).unwrap();
    let status = Command::new("tar")
        .arg("-xf")
        .arg(&layer)
        .arg("-C")
        .arg(&extracted)
        .status()
        .unwrap();
    assert!(status.success());
    assert!(files(&extracted) == tree, "GNU tar extracts another tree");

    // The cache reader (what `imager iso` uses) reads it back into the same tree.
    for platform in ["linux/amd64", "linux/arm64"] {
        let opts = ReadOptions {
            platform: Platform::parse(platform).unwrap(),
            ref_prefix: None,
        };
        let cache = imager_cache::Cache::open(&out, &opts).unwrap();
        assert_eq!(cache.form(), InputForm::OciWrapped);
        assert!(!cache.is_streamed(), "our layer is read in place");
        assert!(cache_files(&cache) == tree, "{platform}: tree differs");
    }

    // Reproducible: the faults changed nothing; another run (jobs 1) is byte-identical.
    let again = parent.join("oci-again");
    let mut o = oci_options(&w, &again);
    o.jobs = 1;
    create(&o).unwrap();
    assert!(files(&again) == files(&out), "two runs differ");
}

#[test]
fn the_layer_cache_fills_the_slots_and_gives_the_same_layout() {
    let w = World::start();
    // A run that fails (a corrupt blob: a wrong digest is not retried) leaves nothing at or beside the output,
    // though the other blobs were streaming into the layer.
    let parent = w.work.path().join("failed");
    let big = &w.arm64.layers[1];
    w.proxy.inject(&hex(big), 1, Action::Corrupt(1000));
    let err = create(&oci_options(&w, &parent.join("cache"))).unwrap_err();
    assert!(
        matches!(err, imager_cache::CreateError::Blob { .. }),
        "{}",
        chain(&err)
    );
    assert!(chain(&err).contains(&big.digest), "{}", chain(&err));
    assert!(!parent.exists(), "{:?}", names(&parent));

    let direct = w.work.path().join("direct");
    create(&oci_options(&w, &direct)).unwrap();
    let expected = files(&direct);

    let layers = w.work.path().join("layers");
    let out = w.work.path().join("cache");
    let with_cache = |force: bool| {
        let mut o = oci_options(&w, &out);
        o.layer_cache = Some(layers.clone());
        o.force = force;
        o
    };
    w.take_requests();
    let first = create(&with_cache(false)).unwrap();
    assert_eq!(first.downloaded, first.blobs);
    assert!(files(&out) == expected);
    assert_eq!(w.take_blob_gets().len(), first.blobs);

    // A re-run copies every blob from the layer cache into its slot: nothing downloaded.
    let again = create(&with_cache(true)).unwrap();
    assert_eq!(again.downloaded, 0);
    assert!(w.take_blob_gets().is_empty());
    assert!(files(&out) == expected);
    assert_eq!(
        names(w.work.path())
            .iter()
            .filter(|n| n.contains(".tmp"))
            .count(),
        0
    );
}

//! `cache create` against a real registry (Debian's docker-registry, images pushed by skopeo):
//! manifests byte-identical to what skopeo reads, only the requested platforms fetched, every blob
//! once and verified, the OCI layout read back into the same tree, reproducible output, `--force`
//! and the layer cache resuming a failed run without downloading again.

#![allow(clippy::unwrap_used)]

mod create_support;

use std::collections::BTreeSet;
use std::fs;

use create_support::*;
use imager_cache::{
    Cache, CreateError, InputForm, OutputLayout, Platform, ProblemKind, ReadOptions, verify_flat,
};
use imager_registry::testing::proxy::Action;

#[test]
fn flat_cache_is_what_the_registry_serves_and_only_what_was_asked() {
    let w = World::start();
    let out = w.work.path().join("out/flat");
    w.take_requests();
    let created = create(&w.options(
        &out,
        &["test/a:v1", "test/b:v1", "test/multi:v1"],
        "linux/amd64",
    ))
    .unwrap();

    // Manifests: the bytes skopeo reads from the registry, under reference/ and digest/.
    let repo = |r: &str| out.join("manifests").join(w.host_dir()).join(r);
    for (r, tag) in [("test/a", "v1"), ("test/b", "v1"), ("test/multi", "v1")] {
        let raw = w.skopeo_raw(&format!("{r}:{tag}"));
        assert_eq!(fs::read(repo(r).join("reference").join(tag)).unwrap(), raw);
        let digest_file = repo(r).join("digest").join(format!(
            "sha256-{}",
            imager_registry::testing::sha256_hex(&raw)
        ));
        assert_eq!(fs::read(digest_file).unwrap(), raw, "{r}");
    }
    assert_eq!(
        fs::read(repo("test/multi/reference/v1")).unwrap(),
        w.index.bytes,
        "the index is kept whole"
    );
    let child = |img: &imager_registry::testing::TestImage| {
        repo("test/multi/digest").join(format!("sha256-{}", hex(&img.manifest)))
    };
    assert_eq!(
        fs::read(child(&w.amd64)).unwrap(),
        w.skopeo_raw(&format!("test/multi@{}", w.amd64.manifest.digest))
    );
    assert!(!child(&w.arm64).exists(), "arm64 was not asked for");

    // Blobs: exactly the configs and layers of a, b and multi/amd64, each with its bytes.
    let expected: BTreeSet<String> =
        w.a.blobs()
            .chain(w.b.blobs())
            .chain(w.amd64.blobs())
            .map(hex)
            .collect();
    assert_eq!(expected.len(), 8, "a and b share a layer");
    let stored: BTreeSet<String> = names(&out.join("blob"))
        .into_iter()
        .map(|n| n.trim_start_matches("sha256-").to_owned())
        .collect();
    assert_eq!(stored, expected);
    for b in w.a.blobs().chain(w.b.blobs()).chain(w.amd64.blobs()) {
        assert!(
            fs::read(out.join("blob").join(format!("sha256-{}", hex(b)))).unwrap() == b.bytes,
            "blob {} differs",
            b.digest
        );
    }

    // What went over the wire: each blob once, never the arm64 child or its blobs.
    let requests = w.take_requests();
    let mut blob_gets: Vec<String> = requests
        .iter()
        .filter_map(|s| {
            s.path
                .split_once("/blobs/sha256:")
                .map(|(_, d)| d.to_owned())
        })
        .collect();
    blob_gets.sort();
    assert_eq!(blob_gets, expected.iter().cloned().collect::<Vec<_>>());
    assert!(
        requests
            .iter()
            .all(|s| !s.path.contains(&hex(&w.arm64.manifest))),
        "{requests:?}"
    );

    // The tree verifies; the only remark is the arm64 child not being cached.
    let report = verify_flat(&out).unwrap();
    assert!(report.is_ok(), "{:?}", report.problems);
    assert!(
        report
            .problems
            .iter()
            .all(|p| p.kind == ProblemKind::MissingChildManifest),
        "{:?}",
        report.problems
    );
    assert_eq!(report.tags, 3);
    assert_eq!((created.blobs, created.downloaded), (8, 8));
    assert_eq!(created.images[2].platforms, ["linux/amd64"]);
    assert!(created.layout_platforms.is_empty());
    // Nothing beside the output.
    assert_eq!(names(&w.work.path().join("out")), ["flat"]);
}

#[test]
fn oci_layout_wraps_the_flat_tree_one_image_per_platform_reproducibly() {
    let w = World::start();
    let images = ["test/a:v1", "test/multi:v1"];
    let both = "linux/amd64,linux/arm64";
    let flat = w.work.path().join("flat");
    create(&w.options(&flat, &images, both)).unwrap();
    let tree = files(&flat);
    assert!(tree.keys().any(|k| k.contains(&hex(&w.arm64.manifest))));

    let epoch = 1_700_000_000;
    let oci = |name: &str, platforms: &str| {
        let out = w.work.path().join(name);
        let mut o = w.options(&out, &images, platforms);
        o.layout = OutputLayout::Oci;
        o.source_date_epoch = epoch;
        let created = create(&o).unwrap();
        (out, created)
    };
    let (one, created) = oci("oci-1", both);
    assert_eq!(
        created.layout_platforms,
        [
            Some("linux/amd64".to_owned()),
            Some("linux/arm64".to_owned())
        ]
    );
    let (two, _) = oci("oci-2", both);
    let layout = files(&one);
    assert!(layout == files(&two), "two runs differ");
    assert_eq!(
        layout.keys().filter(|k| k.starts_with("blobs/")).count(),
        5,
        "one shared layer, a config and a manifest per platform: {:?}",
        layout.keys()
    );

    // index.json: one manifest per platform, each named.
    let index: serde_json::Value = serde_json::from_slice(&layout["index.json"]).unwrap();
    let entries = index["manifests"].as_array().unwrap();
    let described: Vec<(String, String)> = entries
        .iter()
        .map(|e| {
            (
                format!(
                    "{}/{}",
                    e["platform"]["os"].as_str().unwrap(),
                    e["platform"]["architecture"].as_str().unwrap()
                ),
                e["annotations"]["org.opencontainers.image.ref.name"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
            )
        })
        .collect();
    assert_eq!(
        described,
        [
            ("linux/amd64".to_owned(), "linux-amd64".to_owned()),
            ("linux/arm64".to_owned(), "linux-arm64".to_owned())
        ]
    );
    assert_eq!(layout["oci-layout"], br#"{"imageLayoutVersion":"1.0.0"}"#);

    // Read back by the cache reader, for each platform: the same tree as the flat run.
    for platform in ["linux/amd64", "linux/arm64"] {
        let opts = ReadOptions {
            platform: Platform::parse(platform).unwrap(),
            ref_prefix: None,
        };
        let cache = Cache::open(&one, &opts).unwrap();
        assert_eq!(cache.form(), InputForm::OciWrapped);
        assert!(cache_files(&cache) == tree, "{platform}: tree differs");
    }
    let report =
        imager_cache::verify(&Cache::open(&one, &ReadOptions::default()).unwrap()).unwrap();
    assert!(report.is_ok(), "{:?}", report.problems);

    // The layer: every entry owned by 0, dated by the epoch, 0644/0755; the config dated too.
    let manifest: serde_json::Value = serde_json::from_slice(
        &layout[&format!(
            "blobs/sha256/{}",
            entries[0]["digest"]
                .as_str()
                .unwrap()
                .trim_start_matches("sha256:")
        )],
    )
    .unwrap();
    let blob = |d: &serde_json::Value| {
        layout[&format!(
            "blobs/sha256/{}",
            d["digest"].as_str().unwrap().trim_start_matches("sha256:")
        )]
            .clone()
    };
    let config: serde_json::Value = serde_json::from_slice(&blob(&manifest["config"])).unwrap();
    assert_eq!(config["created"], "2023-11-14T22:13:20Z");
    assert_eq!(config["architecture"], "amd64");
    assert_eq!(
        manifest["layers"][0]["mediaType"],
        "application/vnd.oci.image.layer.v1.tar"
    );
    // Not compressed: the layer is the tar, and its digest is the config's diff ID.
    let tar_bytes = blob(&manifest["layers"][0]);
    assert_eq!(
        config["rootfs"]["diff_ids"][0],
        manifest["layers"][0]["digest"]
    );
    let mut archive = tar::Archive::new(&tar_bytes[..]);
    let mut paths = Vec::new();
    for entry in archive.entries().unwrap() {
        let entry = entry.unwrap();
        let h = entry.header();
        let path = entry.path().unwrap().display().to_string();
        assert_eq!((h.uid().unwrap(), h.gid().unwrap()), (0, 0), "{path}");
        assert_eq!(h.mtime().unwrap(), epoch, "{path}");
        let mode = h.mode().unwrap();
        assert!(
            (h.entry_type().is_dir() && mode == 0o755)
                || (h.entry_type().is_file() && mode == 0o644),
            "{path}: {mode:o}"
        );
        paths.push(path);
    }
    let mut sorted = paths.clone();
    sorted.sort();
    assert_eq!(paths, sorted, "entries in sorted order");

    // The default (one platform): one image.
    let (single, _) = oci("oci-amd64", "linux/amd64");
    let index: serde_json::Value =
        serde_json::from_slice(&fs::read(single.join("index.json")).unwrap()).unwrap();
    assert_eq!(index["manifests"].as_array().unwrap().len(), 1);
    // Another epoch, another layout; nothing else differs between runs.
    let mut o = w.options(&w.work.path().join("oci-3"), &images, both);
    o.layout = OutputLayout::Oci;
    o.source_date_epoch = epoch + 1;
    create(&o).unwrap();
    assert!(files(&w.work.path().join("oci-3")) != layout);
}

#[test]
fn force_replaces_and_the_layer_cache_resumes_without_downloading_again() {
    let w = World::start();
    let out = w.work.path().join("cache");
    let layers = w.work.path().join("layers");
    let ab = ["test/a:v1", "test/b:v1"];
    let with_cache = |images: &[&str], force: bool| {
        let mut o = w.options(&out, images, "linux/amd64");
        o.layer_cache = Some(layers.clone());
        o.force = force;
        o.jobs = 2;
        o
    };
    let ab_blobs: BTreeSet<String> = w.a.blobs().chain(w.b.blobs()).map(hex).collect();

    // A first run fills the layer cache.
    w.take_requests();
    create(&with_cache(&ab, false)).unwrap();
    assert_eq!(
        w.take_blob_gets(),
        ab_blobs.iter().cloned().collect::<Vec<_>>()
    );
    let first = files(&out);

    // The output exists: refused without --force, before any request, nothing changed.
    let err = create(&with_cache(&ab, false)).unwrap_err();
    assert!(matches!(err, CreateError::Exists { .. }), "{err}");
    assert!(err.to_string().contains("--force"), "{err}");
    assert!(w.take_requests().is_empty());
    assert!(files(&out) == first);

    // With --force: replaced, and every blob comes from the layer cache (re-hashed, not fetched).
    let again = create(&with_cache(&ab, true)).unwrap();
    assert_eq!(again.downloaded, 0);
    assert!(w.take_blob_gets().is_empty());
    assert!(files(&out) == first);

    // A run that fails on multi's big layer: the error names the image, the layer and the digest;
    // the previous cache is untouched, the layer cache holds no partial file.
    let big = &w.amd64.layers[1];
    w.proxy.inject(&hex(big), 1, Action::Corrupt(1000));
    let all = ["test/a:v1", "test/b:v1", "test/multi:v1"];
    let err = create(&with_cache(&all, true)).unwrap_err();
    let msg = chain(&err);
    assert!(
        msg.starts_with(&format!(
            "{}/test/multi:v1: layer 2 of the linux/amd64 image {}",
            w.host(),
            big.digest
        )),
        "{msg}"
    );
    assert!(matches!(err, CreateError::Blob { .. }), "{msg}");
    assert!(files(&out) == first, "the old cache is intact");
    assert_eq!(
        names(w.work.path())
            .iter()
            .filter(|n| n.contains(".tmp"))
            .count(),
        0
    );
    let cached = names(&layers.join("blobs/sha256"));
    assert!(cached.iter().all(|n| !n.contains("tmp")), "{cached:?}");
    assert!(!cached.contains(&hex(big)));
    w.take_requests();

    // The re-run fetches only what the failed run did not finish: never a's or b's blobs.
    let resumed = create(&with_cache(&all, true)).unwrap();
    let gets = w.take_blob_gets();
    let multi: BTreeSet<String> = w.amd64.blobs().map(hex).collect();
    assert!(gets.contains(&hex(big)), "{gets:?}");
    assert!(gets.iter().all(|g| multi.contains(g)), "{gets:?}");
    assert_eq!(resumed.downloaded, gets.len());
    assert!(verify_flat(&out).unwrap().is_ok());

    // A blob damaged in the layer cache is noticed (re-hashed) and fetched again.
    let victim = layers.join("blobs/sha256").join(hex(&w.b.layers[1]));
    let mut bytes = fs::read(&victim).unwrap();
    bytes[10] ^= 0xff;
    fs::write(&victim, bytes).unwrap();
    create(&with_cache(&all, true)).unwrap();
    assert_eq!(w.take_blob_gets(), [hex(&w.b.layers[1])]);
    assert!(fs::read(&victim).unwrap() == w.b.layers[1].bytes);

    // A cache made through the layer cache is the cache made without one.
    let direct = w.work.path().join("direct");
    create(&w.options(&direct, &all, "linux/amd64")).unwrap();
    assert!(files(&direct) == files(&out));
}

//! Every input form of the same cache opens, in place, into the same entries (path, size, bytes)
//! as the flat tree it came from, verifies clean and lists the same images.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use common::*;
use imager_cache::{
    Cache, InputForm, LayoutError, Location, Platform, ProblemKind, ReadOptions, list, list_flat,
    verify, verify_flat,
};

fn opts_with_prefix() -> ReadOptions {
    ReadOptions {
        ref_prefix: Some(TOOL_PREFIX.to_owned()),
        ..ReadOptions::default()
    }
}

fn open(path: &Path, opts: &ReadOptions) -> Result<Cache, LayoutError> {
    Cache::open(path, opts)
}

/// Each form of the fixture, written under `dir`: (name, path, form it opens as).
fn every_form(fx: &Fixture, dir: &Path) -> Vec<(&'static str, std::path::PathBuf, InputForm)> {
    let flat = dir.join("flat");
    fx.write_flat(&flat);
    let wrapped_gzip = dir.join("wrapped-gzip");
    fx.write_oci_wrapped(&wrapped_gzip);
    let wrapped_tar = dir.join("wrapped-tar");
    write_wrapped(
        &wrapped_tar,
        &[("linux/amd64", plain_tar_of_tree(&fx.flat_files()))],
    );
    let layout = dir.join("layout");
    fx.write_oci_layout(&layout);
    let iso = dir.join("cache.iso");
    write_iso(&iso, &fx.flat_files());
    let metal = dir.join("metal.raw");
    write_metal(&metal, &fx.flat_files());
    vec![
        ("flat", flat, InputForm::Flat),
        ("wrapped-gzip", wrapped_gzip, InputForm::OciWrapped),
        ("wrapped-tar", wrapped_tar, InputForm::OciWrapped),
        ("layout", layout, InputForm::OciLayout),
        ("iso", iso, InputForm::Iso),
        ("metal", metal, InputForm::Metal),
    ]
}

#[test]
fn every_form_gives_the_same_entries() {
    let fx = Fixture::new();
    let want = fx.flat_files();
    let tmp = tempfile::tempdir().unwrap();
    for (name, path, form) in every_form(&fx, tmp.path()) {
        let c = open(&path, &opts_with_prefix()).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(c.form(), form, "{name}");
        assert_eq!(c.input(), path, "{name}");
        let sizes: BTreeMap<&str, u64> = c
            .entries()
            .iter()
            .map(|e| (e.path.as_str(), e.size))
            .collect();
        let want_sizes: BTreeMap<&str, u64> = want
            .iter()
            .map(|(p, b)| (p.as_str(), b.len() as u64))
            .collect();
        assert_eq!(sizes, want_sizes, "{name}");
        assert_same_tree(&cache_files(&c), &want);
        // Where the bytes lie: only the gzip layer is a stream; everything else is read in place.
        assert_eq!(c.is_streamed(), name == "wrapped-gzip", "{name}");
        for e in c.entries() {
            let in_place = !matches!(e.location, Location::Stream { .. });
            assert_eq!(in_place, name != "wrapped-gzip", "{name}: {}", e.path);
        }
    }
    // Nothing was written next to the inputs.
    let names: Vec<_> = fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names.len(), 6, "{names:?}");
}

#[test]
fn uncompressed_layer_entries_lie_in_the_layer_blob() {
    let fx = Fixture::new();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("w");
    let layer = plain_tar_of_tree(&fx.flat_files());
    write_wrapped(&dir, &[("linux/amd64", layer.clone())]);
    let c = open(&dir, &ReadOptions::default()).unwrap();
    let blob = dir.join("blobs/sha256").join(sha256(&layer));
    for e in c.entries() {
        let (src, runs) = c.pieces(e).unwrap();
        assert_eq!(src, blob, "{}", e.path);
        let [(offset, len)] = runs[..] else {
            panic!("{}: {runs:?}", e.path)
        };
        assert_eq!(len, e.size);
        assert_eq!(
            &layer[offset as usize..(offset + len) as usize],
            &fx.flat_files()[&e.path][..]
        );
    }
}

#[test]
fn verify_passes_on_every_form_with_only_the_expected_warning() {
    let fx = Fixture::new();
    let tmp = tempfile::tempdir().unwrap();
    let forms = [
        (
            "flat",
            Fixture::write_flat as fn(&Fixture, &std::path::Path),
        ),
        ("wrapped", Fixture::write_oci_wrapped),
        ("layout", Fixture::write_oci_layout),
    ];
    for (name, write) in forms {
        let dir = tmp.path().join(name);
        write(&fx, &dir);
        let report = verify(&open(&dir, &opts_with_prefix()).unwrap()).unwrap();
        assert!(report.is_ok(), "{name}: {:#?}", report.problems);
        // The app's arm64 child is not cached: a warning, not an error.
        let warnings: Vec<_> = report.warnings().collect();
        assert_eq!(warnings.len(), 1, "{name}: {warnings:#?}");
        assert_eq!(warnings[0].kind, ProblemKind::MissingChildManifest);
        assert!(
            warnings[0].detail.contains("linux/arm64"),
            "{}",
            warnings[0].detail
        );
        assert!(
            warnings[0]
                .path
                .to_str()
                .unwrap()
                .starts_with("manifests/ghcr.io/example/app/digest/")
        );
        assert_eq!(report.repositories, 3);
        assert_eq!(report.tags, 4);
        assert_eq!(report.manifests, 6);
        assert_eq!(report.blobs as usize, fx.blobs.len());
        assert_eq!(
            report.blob_bytes as usize,
            fx.blobs.values().map(Vec::len).sum::<usize>()
        );
    }
}

#[test]
fn list_reports_images_platforms_and_sizes() {
    let fx = Fixture::new();
    let tmp = tempfile::tempdir().unwrap();
    fx.write_flat(tmp.path());
    let images = list_flat(tmp.path()).unwrap();
    assert_lists_the_fixture(&images);

    // busybox: its index, both children, each distinct blob once (base is shared by both).
    let bb = &images[0];
    assert_eq!(bb.digest.to_string(), digest(&fx.images[0].top));
    assert_eq!(bb.media_type, OCI_INDEX);
    let bb_manifests: usize = fx.manifests["docker.io/library/busybox"]
        .values()
        .map(Vec::len)
        .sum();
    let children: Vec<serde_json::Value> = fx.manifests["docker.io/library/busybox"]
        .values()
        .map(|m| serde_json::from_slice::<serde_json::Value>(m).unwrap())
        .filter(|v| v.get("config").is_some())
        .collect();
    let mut blob_digests = std::collections::BTreeSet::new();
    for c in &children {
        blob_digests.insert(c["config"]["digest"].as_str().unwrap().to_owned());
        for l in c["layers"].as_array().unwrap() {
            blob_digests.insert(l["digest"].as_str().unwrap().to_owned());
        }
    }
    assert_eq!(blob_digests.len(), 5, "2 configs, base, amd64, arm64");
    let blob_bytes: usize = blob_digests.iter().map(|d| fx.blobs[d].len()).sum();
    assert_eq!(bb.size as usize, bb_manifests + blob_bytes);

    let tool = &images[3];
    assert_eq!(tool.tag.as_deref(), Some("v2"));
    assert_eq!(tool.registry, "registry.example.com:5000");
    assert_eq!(tool.repository, "team/tool");

    // Serializable for --json.
    let json = serde_json::to_value(&images).unwrap();
    assert_eq!(json[1]["reference"], "ghcr.io/example/app:v1");
    assert_eq!(json[1]["media_type"], DOCKER_LIST);
    assert_eq!(json[1]["digest"], digest(&fx.images[1].top));
}

#[test]
fn digest_only_manifests_are_listed_by_digest() {
    let fx = Fixture::new();
    let tmp = tempfile::tempdir().unwrap();
    let mut files = fx.flat_files();
    // Drop the tool's tags: its manifest is now cached by digest only.
    files.retain(|p, _| !p.contains("team/tool/reference/"));
    write_files(tmp.path(), &files);
    let images = list_flat(tmp.path()).unwrap();
    let tool: Vec<_> = images
        .iter()
        .filter(|i| i.repository == "team/tool")
        .collect();
    assert_eq!(tool.len(), 1);
    assert_eq!(tool[0].tag, None);
    assert_eq!(
        tool[0].reference,
        format!(
            "registry.example.com:5000/team/tool@{}",
            digest(&fx.images[2].top)
        )
    );
    // Index children are not listed as images of their own.
    assert_eq!(images.len(), 3);
    assert!(verify_flat(tmp.path()).unwrap().is_ok());
}

#[test]
fn list_works_on_layouts_too() {
    let fx = Fixture::new();
    let tmp = tempfile::tempdir().unwrap();
    let layout = tmp.path().join("layout");
    fx.write_oci_layout(&layout);
    let flat = tmp.path().join("flat");
    fx.write_flat(&flat);
    let want = list_flat(&flat).unwrap();
    for (name, path, _) in every_form(&fx, &tmp.path().join("forms")) {
        let got = list(&open(&path, &opts_with_prefix()).unwrap()).unwrap();
        assert_eq!(got, want, "{name}");
    }
}

#[test]
fn wrapped_layout_with_one_image_per_platform() {
    let fx = Fixture::new();
    // An arm64 cache: only the busybox image, a different tree.
    let mut arm_files: BTreeMap<String, Vec<u8>> = fx.flat_files();
    arm_files.retain(|p, _| p.contains("busybox") || p.starts_with("blob/"));
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wrapped");
    write_wrapped(
        &dir,
        &[
            ("linux/amd64", fx.cache_layer()),
            ("linux/arm64", tar_of_tree(&arm_files)),
        ],
    );
    let amd = open(&dir, &ReadOptions::default()).unwrap();
    assert_same_tree(&cache_files(&amd), &fx.flat_files());
    let arm_opts = ReadOptions {
        platform: Platform::parse("linux/arm64").unwrap(),
        ..ReadOptions::default()
    };
    let arm = open(&dir, &arm_opts).unwrap();
    assert_same_tree(&cache_files(&arm), &arm_files);

    let s390x = ReadOptions {
        platform: Platform::parse("linux/s390x").unwrap(),
        ..ReadOptions::default()
    };
    let err = open(&dir, &s390x).unwrap_err();
    assert!(matches!(err, LayoutError::NoPlatform { .. }), "{err}");
    assert!(
        err.to_string().contains("linux/amd64, linux/arm64"),
        "{err}"
    );
}

/// A layout with one image feeds media of any architecture: the flat tree inside does not
/// depend on the platform the image was labelled with (upstream fails here).
#[test]
fn single_image_wrapped_layout_serves_any_platform() {
    let fx = Fixture::new();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wrapped");
    write_wrapped(&dir, &[("linux/arm64", fx.cache_layer())]);
    let c = open(&dir, &ReadOptions::default()).unwrap();
    assert_same_tree(&cache_files(&c), &fx.flat_files());
}

#[test]
fn bare_tags_need_a_prefix() {
    let fx = Fixture::new();
    let tmp = tempfile::tempdir().unwrap();
    let layout = tmp.path().join("layout");
    fx.write_oci_layout(&layout);
    let err = open(&layout, &ReadOptions::default()).unwrap_err();
    assert!(
        matches!(&err, LayoutError::BareTag { tag, .. } if tag == "v2"),
        "{err}"
    );
    let bad = ReadOptions {
        ref_prefix: Some("registry.example.com/Team".to_owned()),
        ..ReadOptions::default()
    };
    let err = open(&layout, &bad).unwrap_err();
    assert!(matches!(err, LayoutError::Prefix { .. }), "{err}");
}

#[test]
fn not_a_cache() {
    let tmp = tempfile::tempdir().unwrap();
    let err = open(tmp.path(), &ReadOptions::default()).unwrap_err();
    assert!(matches!(err, LayoutError::NotACache { .. }), "{err}");
    let missing = tmp.path().join("missing");
    let err = open(&missing, &ReadOptions::default()).unwrap_err();
    assert!(matches!(err, LayoutError::Open { .. }), "{err}");
    assert!(err.to_string().contains("missing"), "{err}");
    // A file that is no ISO 9660 image.
    let file = tmp.path().join("file");
    fs::write(&file, vec![0u8; 40_000]).unwrap();
    let err = open(&file, &ReadOptions::default()).unwrap_err();
    assert!(matches!(err, LayoutError::NotACache { .. }), "{err}");
    // An ISO without imagecache/.
    let iso = tmp.path().join("empty.iso");
    let mut spec = imager_iso::IsoSpec::new("EMPTY", 0).unwrap();
    spec.add_bytes("other/file", b"x".to_vec()).unwrap();
    spec.write(&fs::File::create(&iso).unwrap(), &iso, &mut |_| {})
        .unwrap();
    let err = open(&iso, &ReadOptions::default()).unwrap_err();
    assert!(matches!(err, LayoutError::NoCacheDir { .. }), "{err}");
}

/// An ISO cut short (a failed download, a full disk) is refused when opened, naming the image,
/// rather than read as a smaller cache.
#[test]
fn a_truncated_iso_is_refused() {
    let fx = Fixture::new();
    let tmp = tempfile::tempdir().unwrap();
    let iso = tmp.path().join("cache.iso");
    write_iso(&iso, &fx.flat_files());
    // Cut inside the last file's data (the image may end in padding past it).
    let whole = open(&iso, &ReadOptions::default()).unwrap();
    let data_end = whole
        .entries()
        .iter()
        .filter_map(|e| whole.pieces(e))
        .flat_map(|(_, runs)| runs)
        .map(|(offset, len)| offset + len)
        .max()
        .unwrap();
    fs::OpenOptions::new()
        .write(true)
        .open(&iso)
        .unwrap()
        .set_len(data_end - 1)
        .unwrap();
    let err = open(&iso, &ReadOptions::default()).unwrap_err();
    assert!(matches!(err, LayoutError::Iso { .. }), "{err}");
    assert!(err.to_string().contains("cache.iso"), "{err}");
}

#[test]
fn a_disk_image_without_imagecache_or_with_a_damaged_one_is_refused_by_name() {
    let fx = Fixture::new();
    let tmp = tempfile::tempdir().unwrap();
    let disk = tmp.path().join("other.raw");
    fs::File::create(&disk).unwrap().set_len(8 << 20).unwrap();
    let out = std::process::Command::new("sgdisk")
        .args(["-n", "1:0:0", "-t", "1:8300", "-c", "1:STATE"])
        .arg(&disk)
        .output()
        .unwrap();
    assert!(out.status.success());
    let err = open(&disk, &ReadOptions::default()).unwrap_err();
    assert!(matches!(err, LayoutError::NoCachePartition { .. }), "{err}");
    assert!(err.to_string().contains("\"STATE\""), "{err}");

    // The IMAGECACHE partition with its superblock wiped: named as not ext4.
    let metal = tmp.path().join("metal.raw");
    write_metal(&metal, &fx.flat_files());
    let f = fs::OpenOptions::new().write(true).open(&metal).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, &[0u8; 1024], (5 << 20) + 1024).unwrap();
    let err = open(&metal, &ReadOptions::default()).unwrap_err();
    assert!(matches!(err, LayoutError::Ext4 { .. }), "{err}");
    let chain = format!("{:?}", anyhow_chain(&err));
    assert!(chain.contains("not an ext2/3/4 file system"), "{chain}");
}

/// The error and its sources, as the CLI prints them.
fn anyhow_chain(err: &dyn std::error::Error) -> Vec<String> {
    let mut out = vec![err.to_string()];
    let mut source = err.source();
    while let Some(s) = source {
        out.push(s.to_string());
        source = s.source();
    }
    out
}

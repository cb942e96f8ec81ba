//! verify catches each kind of damage to a flat tree, and reading an OCI layout refuses damaged
//! content instead of copying it.

#![allow(clippy::unwrap_used)]

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::*;
use imager_cache::{
    Cache, FlatError, LayoutError, ProblemKind, ReadOptions, Severity, VerifyReport, verify,
    verify_flat,
};

fn flat() -> (tempfile::TempDir, Fixture) {
    let fx = Fixture::new();
    let tmp = tempfile::tempdir().unwrap();
    fx.write_flat(tmp.path());
    (tmp, fx)
}

fn blob_path(root: &Path, bytes: &[u8]) -> PathBuf {
    root.join("blob").join(name(bytes))
}

/// The tool image's single layer (shared with busybox/amd64).
fn tool_layer(fx: &Fixture) -> Vec<u8> {
    let m: serde_json::Value = serde_json::from_slice(&fx.images[2].top).unwrap();
    fx.blobs[m["layers"][0]["digest"].as_str().unwrap()].clone()
}

fn errors(report: &VerifyReport) -> Vec<(ProblemKind, String)> {
    report
        .errors()
        .map(|p| (p.kind, p.path.display().to_string()))
        .collect()
}

#[test]
fn flipped_blob_byte() {
    let (tmp, fx) = flat();
    let layer = tool_layer(&fx);
    let path = blob_path(tmp.path(), &layer);
    let mut bytes = fs::read(&path).unwrap();
    bytes[100] ^= 0x01;
    fs::write(&path, bytes).unwrap();
    let report = verify_flat(tmp.path()).unwrap();
    assert!(!report.is_ok());
    assert_eq!(
        errors(&report),
        [(
            ProblemKind::BlobDigestMismatch,
            format!("blob/{}", name(&layer))
        )]
    );
    let p = report.errors().next().unwrap();
    assert_eq!(p.severity, Severity::Error);
    assert!(p.detail.contains("hashes to sha256:"), "{}", p.detail);
}

#[test]
fn missing_layer() {
    let (tmp, fx) = flat();
    let layer = tool_layer(&fx);
    fs::remove_file(blob_path(tmp.path(), &layer)).unwrap();
    let report = verify_flat(tmp.path()).unwrap();
    // Both images that use the layer (busybox/amd64 and tool) are reported, at their manifests.
    let errs = errors(&report);
    assert_eq!(errs.len(), 2, "{errs:#?}");
    for (kind, path) in &errs {
        assert_eq!(*kind, ProblemKind::MissingBlob);
        assert!(path.contains("/digest/sha256-"), "{path}");
    }
    let tool_manifest = format!(
        "manifests/registry.example.com_5000_/team/tool/digest/{}",
        name(&fx.images[2].top)
    );
    assert!(errs.iter().any(|(_, p)| *p == tool_manifest), "{errs:#?}");
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.detail.contains(&digest(&layer)))
    );
}

#[test]
fn reference_to_an_unknown_digest() {
    let (tmp, _fx) = flat();
    let tag = tmp
        .path()
        .join("manifests/ghcr.io/example/app/reference/v1");
    let other = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}"#;
    fs::write(&tag, other).unwrap();
    let report = verify_flat(tmp.path()).unwrap();
    assert_eq!(
        errors(&report),
        [(
            ProblemKind::UnknownReferenceDigest,
            "manifests/ghcr.io/example/app/reference/v1".to_owned()
        )]
    );
    assert!(report.problems[0].detail.contains(&digest(other)));
}

#[test]
fn wrong_size_in_a_descriptor() {
    let (tmp, fx) = flat();
    // A manifest (correctly named by its own digest) whose layer descriptor is one byte short.
    let m = &fx.images[2].top;
    let mut v: serde_json::Value = serde_json::from_slice(m).unwrap();
    let size = v["layers"][0]["size"].as_u64().unwrap();
    v["layers"][0]["size"] = (size - 1).into();
    let bad = serde_json::to_vec(&v).unwrap();
    let repo = tmp
        .path()
        .join("manifests/registry.example.com_5000_/team/tool");
    fs::remove_file(repo.join("digest").join(name(m))).unwrap();
    fs::write(repo.join("digest").join(name(&bad)), &bad).unwrap();
    fs::write(repo.join("reference/v2"), &bad).unwrap();
    fs::write(repo.join("reference/latest"), &bad).unwrap();
    let report = verify_flat(tmp.path()).unwrap();
    let errs = errors(&report);
    assert_eq!(errs.len(), 1, "{errs:#?}");
    assert_eq!(errs[0].0, ProblemKind::SizeMismatch);
    assert!(
        report.problems[0]
            .detail
            .contains(&format!("{size} bytes, the manifest says {}", size - 1))
    );
}

#[test]
fn truncated_blob() {
    let (tmp, fx) = flat();
    let layer = tool_layer(&fx);
    let path = blob_path(tmp.path(), &layer);
    fs::write(&path, &layer[..layer.len() / 2]).unwrap();
    let report = verify_flat(tmp.path()).unwrap();
    assert!(report.has(ProblemKind::BlobDigestMismatch));
    assert!(report.has(ProblemKind::SizeMismatch));
}

#[test]
fn corrupt_and_invalid_manifests() {
    let (tmp, fx) = flat();
    let repo = tmp.path().join("manifests/docker.io/library/busybox");
    // The index's bytes change: its digest file no longer hashes to its name, and the tag no
    // longer resolves.
    let index = &fx.images[0].top;
    let path = repo.join("digest").join(name(index));
    let mut bytes = index.clone();
    bytes[10] = b' ';
    fs::write(&path, &bytes).unwrap();
    fs::write(repo.join("reference/1.36"), &bytes).unwrap();
    // A digest file that is not a manifest at all.
    let junk = b"not json";
    fs::write(repo.join("digest").join(name(junk)), junk).unwrap();
    let report = verify_flat(tmp.path()).unwrap();
    assert!(report.has(ProblemKind::ManifestDigestMismatch));
    assert!(report.has(ProblemKind::UnknownReferenceDigest));
    assert!(report.has(ProblemKind::ManifestInvalid));
}

#[test]
fn oversized_manifest_is_refused_not_read() {
    let (tmp, _fx) = flat();
    let big = vec![b' '; 5 << 20];
    let path = tmp
        .path()
        .join("manifests/ghcr.io/example/app/digest")
        .join(name(&big));
    fs::write(&path, &big).unwrap();
    let report = verify_flat(tmp.path()).unwrap();
    assert_eq!(
        errors(&report).iter().map(|e| e.0).collect::<Vec<_>>(),
        [ProblemKind::ManifestTooLarge]
    );
}

#[test]
fn strays_symlinks_and_bad_names() {
    let (tmp, fx) = flat();
    let root = tmp.path();
    std::os::unix::fs::symlink("/etc/passwd", root.join("blob/sha256-0000")).unwrap();
    fs::write(root.join("notes.txt"), b"").unwrap();
    let upper = root.join("manifests/docker.io/Library/x/reference");
    fs::create_dir_all(&upper).unwrap();
    fs::write(upper.join("latest"), &fx.images[0].top).unwrap();
    let unused = b"unreferenced";
    fs::write(root.join("blob").join(name(unused)), unused).unwrap();
    let report = verify_flat(root).unwrap();
    assert!(report.has(ProblemKind::NotARegularFile));
    assert!(report.has(ProblemKind::BadName));
    assert!(report.has(ProblemKind::UnexpectedEntry));
    assert!(report.has(ProblemKind::UnreferencedBlob));
    // Errors sort before warnings.
    let first_warning = report
        .problems
        .iter()
        .position(|p| p.severity == Severity::Warning)
        .unwrap();
    assert!(
        report.problems[..first_warning]
            .iter()
            .all(|p| p.severity == Severity::Error)
    );
}

#[test]
fn empty_cache_is_a_warning() {
    let tmp = tempfile::tempdir().unwrap();
    fs::create_dir_all(tmp.path().join("blob")).unwrap();
    fs::create_dir_all(tmp.path().join("manifests")).unwrap();
    let report = verify_flat(tmp.path()).unwrap();
    assert!(report.is_ok());
    assert!(report.has(ProblemKind::Empty));
}

fn layout() -> (tempfile::TempDir, Fixture, PathBuf) {
    let fx = Fixture::new();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("layout");
    fx.write_oci_layout(&dir);
    (tmp, fx, dir)
}

fn opts() -> ReadOptions {
    ReadOptions {
        ref_prefix: Some(TOOL_PREFIX.to_owned()),
        ..ReadOptions::default()
    }
}

#[test]
fn layout_with_a_flipped_blob_byte_is_refused() {
    let (_tmp, fx, dir) = layout();
    let layer = tool_layer(&fx);
    let path = dir.join("blobs/sha256").join(sha256(&layer));
    let mut bytes = fs::read(&path).unwrap();
    bytes[7] ^= 0x80;
    fs::write(&path, bytes).unwrap();
    // Opening reads blobs in place without hashing them; verify hashes every one.
    let cache = Cache::open(&dir, &opts()).unwrap();
    let report = verify(&cache).unwrap();
    let bad: Vec<_> = report.errors().collect();
    assert_eq!(bad.len(), 1, "{bad:#?}");
    assert_eq!(bad[0].kind, ProblemKind::BlobDigestMismatch);
    assert_eq!(bad[0].path, Path::new("blob").join(name(&layer)));
}

#[test]
fn layout_missing_a_layer_names_the_image() {
    let (_tmp, fx, dir) = layout();
    let m: serde_json::Value = fx.manifests["ghcr.io/example/app"]
        .values()
        .map(|m| serde_json::from_slice::<serde_json::Value>(m).unwrap())
        .find(|v| v.get("config").is_some())
        .unwrap();
    let app_layer = m["layers"][1]["digest"].as_str().unwrap();
    fs::remove_file(dir.join("blobs/sha256").join(&app_layer["sha256:".len()..])).unwrap();
    let err = Cache::open(&dir, &opts()).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, LayoutError::MissingBlob { .. }), "{msg}");
    assert!(
        msg.contains("layer 2 of ghcr.io/example/app:v1 (linux/amd64)"),
        "{msg}"
    );
    assert!(msg.contains(app_layer), "{msg}");
}

#[test]
fn layout_descriptor_with_a_wrong_size_is_refused() {
    let (_tmp, _fx, dir) = layout();
    let index_path = dir.join("index.json");
    let mut index: serde_json::Value =
        serde_json::from_slice(&fs::read(&index_path).unwrap()).unwrap();
    let size = index["manifests"][0]["size"].as_u64().unwrap();
    index["manifests"][0]["size"] = (size + 1).into();
    fs::write(&index_path, serde_json::to_vec(&index).unwrap()).unwrap();
    let err = Cache::open(&dir, &opts()).unwrap_err();
    assert!(
        matches!(err, LayoutError::Flat(FlatError::SizeMismatch { expected, actual, .. }) if expected == size + 1 && actual == size),
        "{err}"
    );
}

#[test]
fn wrapped_layer_with_other_bytes_is_refused() {
    // The same tree, compressed differently: valid gzip, valid tar, but not the layer the
    // manifest names. Unpacking alone would not notice; the digest check does.
    let fx = Fixture::new();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wrapped");
    fx.write_oci_wrapped(&dir);
    let layer = fx.cache_layer();
    let path = dir.join("blobs/sha256").join(sha256(&layer));
    let other = gzip(&gunzip(&layer), flate2::Compression::best());
    assert_ne!(other, layer);
    // Padded to the same length, so the size check does not catch it first (the padding is
    // past the end of the tar, so the unpacking does not either).
    assert!(other.len() <= layer.len());
    let mut other = other;
    other.resize(layer.len(), 0);
    fs::write(&path, &other).unwrap();
    let err = Cache::open(&dir, &ReadOptions::default()).unwrap_err();
    assert!(
        matches!(&err, LayoutError::Flat(FlatError::DigestMismatch { path: p, .. }) if *p == path),
        "{err}"
    );
}

#[test]
fn registry_port_spelled_with_a_colon_is_flagged() {
    // What talosctl wrote before it learned the FAT-safe spelling: nodes no longer find it.
    let (tmp, _fx) = flat();
    let m = tmp.path().join("manifests");
    fs::rename(
        m.join("registry.example.com_5000_"),
        m.join("registry.example.com:5000"),
    )
    .unwrap();
    let report = verify_flat(tmp.path()).unwrap();
    let errs = errors(&report);
    assert_eq!(
        errs,
        [(
            ProblemKind::BadName,
            "manifests/registry.example.com:5000/team/tool".to_owned()
        )]
    );
    assert!(
        report.problems[0]
            .detail
            .contains("registry.example.com_5000_")
    );
}

#[test]
fn an_index_with_no_cached_image_is_an_error() {
    // ghcr.io/example/app:v1 is a manifest list whose arm64 child is not cached (a warning, as
    // upstream caches are); without its amd64 child no node can pull it (an error).
    let (tmp, fx) = flat();
    let report = verify_flat(tmp.path()).unwrap();
    assert!(report.is_ok(), "{:#?}", report.problems);
    assert!(report.has(ProblemKind::MissingChildManifest));

    let app = &fx.images[1];
    let app_amd = fx.manifests["ghcr.io/example/app"]
        .iter()
        .find(|(_, m)| **m != app.top)
        .map(|(d, _)| d.replace(':', "-"))
        .unwrap();
    fs::remove_file(
        tmp.path()
            .join("manifests/ghcr.io/example/app/digest")
            .join(app_amd),
    )
    .unwrap();
    let report = verify_flat(tmp.path()).unwrap();
    let index = format!("manifests/ghcr.io/example/app/digest/{}", name(&app.top));
    assert_eq!(
        errors(&report),
        [(ProblemKind::NoCachedImage, index.clone())]
    );
    let p = report.errors().next().unwrap();
    assert!(
        p.detail.starts_with("ghcr.io/example/app:v1: none of the 2 images its index lists (linux/amd64, linux/arm64) is cached"),
        "{}",
        p.detail
    );
    // Said once, not as a warning per missing child.
    assert!(
        !report
            .problems
            .iter()
            .any(|p| p.kind == ProblemKind::MissingChildManifest && p.path == Path::new(&index)),
        "{:#?}",
        report.problems
    );
}

#[test]
fn an_upper_case_registry_directory_is_a_bad_name() {
    let (tmp, _fx) = flat();
    let m = tmp.path().join("manifests");
    fs::rename(m.join("ghcr.io"), m.join("GHCR.io")).unwrap();
    let report = verify_flat(tmp.path()).unwrap();
    let errs = errors(&report);
    assert!(
        errs.contains(&(
            ProblemKind::BadName,
            "manifests/GHCR.io/example/app".to_owned()
        )),
        "{errs:?}"
    );
    let p = report
        .errors()
        .find(|p| p.kind == ProblemKind::BadName)
        .unwrap();
    assert!(p.detail.contains("lower case (ghcr.io)"), "{}", p.detail);
}

/// A gzip'd wrapped layer whose blob entry's bytes are not its name: the layer's own digest is
/// right (it was made that way), so only hashing each entry as it streams finds it.
fn wrapped_with_a_misnamed_blob() -> (tempfile::TempDir, PathBuf, String) {
    let fx = Fixture::new();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wrapped");
    let mut files = fx.flat_files();
    let layer = tool_layer(&fx);
    let path = format!("blob/{}", name(&layer));
    let mut bytes = files[&path].clone();
    bytes[50] ^= 0x01;
    files.insert(path.clone(), bytes);
    write_wrapped(&dir, &[("linux/amd64", tar_of_tree(&files))]);
    (tmp, dir, path)
}

#[test]
fn a_streamed_entry_that_is_not_its_name_fails_the_stream_naming_it() {
    let (_tmp, dir, path) = wrapped_with_a_misnamed_blob();
    let cache = Cache::open(&dir, &ReadOptions::default()).unwrap();
    assert!(cache.is_streamed());
    let mut seen = 0;
    let err = cache
        .read_stream(&mut |_, r| {
            seen += 1;
            std::io::copy(r, &mut std::io::sink()).map(|_| ())
        })
        .unwrap_err();
    assert!(
        matches!(&err, LayoutError::EntryDigest { path: p, .. } if *p == path),
        "{err}"
    );
    assert!(err.to_string().contains(&path), "{err}");
    assert!(seen > 0);
    // verify hashes the same bytes and reports rather than fails.
    let report = verify(&cache).unwrap();
    assert_eq!(errors(&report), [(ProblemKind::BlobDigestMismatch, path)]);
}

#[test]
fn a_streamed_cache_answers_manifest_reads_from_its_listing() {
    // Listing and verifying a gzip'd layer give what the flat tree gives.
    let fx = Fixture::new();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wrapped");
    fx.write_oci_wrapped(&dir);
    let cache = Cache::open(&dir, &ReadOptions::default()).unwrap();
    assert!(cache.is_streamed());
    // The manifests were kept when the layer was listed: no second pass reads them (the layer
    // is gone from under the cache, and the check still has them).
    let layer = dir.join("blobs/sha256").join(sha256(&fx.cache_layer()));
    let saved = fs::read(&layer).unwrap();
    fs::write(&layer, vec![0u8; saved.len()]).unwrap();
    let structure = imager_cache::check::structure(&cache).unwrap();
    assert!(structure.problems.is_empty(), "{:#?}", structure.problems);
    assert!(structure.unusable.is_empty());
    assert!(cache.read_stream(&mut |_, _| Ok(())).is_err());
    fs::write(&layer, saved).unwrap();
    assert_lists_the_fixture(&imager_cache::list(&cache).unwrap());
}

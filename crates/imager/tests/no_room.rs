//! A medium that cannot fit is refused before a byte of it is written (issue 9): the planned image
//! against the room of the output's file system, and a compressed cache layer against it while it
//! is listed, before the files it declares are expanded. The error names `--output`, what is
//! needed and what is free, and nothing is left in the output directory. These use stand-in assets
//! and sparse or highly compressed inputs: they write nothing big.

// Test code: a panic with its message is how a failure is reported, helpers included.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::Write as _;
use std::path::Path;

use sha2::{Digest as _, Sha256};

fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// `imager iso` of `cache` into `dir/out`; asserts it was refused for want of room.
fn assert_no_room(dir: &Path, cache: &Path, needs: &str) {
    let assets = common::fake_assets(dir);
    let out = dir.join("out");
    let result = common::imager([
        "iso".as_ref(),
        "--assets".as_ref(),
        assets.as_os_str(),
        "--image-cache".as_ref(),
        cache.as_os_str(),
        "--output".as_ref(),
        out.as_os_str(),
    ]);
    let err = String::from_utf8_lossy(&result.stderr);
    assert!(!result.status.success(), "accepted:\n{err}");
    for needle in ["--output", needs, "and its file system has", "free"] {
        assert!(
            err.contains(needle),
            "the error does not say {needle:?}:\n{err}"
        );
    }
    let left = common::files_under(&out);
    assert!(left.is_empty(), "left behind: {left:?}");
}

/// A flat tree whose one blob (sparse: it takes no disk) is larger than the free space: the planned
/// image cannot fit. Before, the write went ahead until the file system was full.
#[test]
fn an_image_larger_than_the_free_space_is_refused_before_writing() {
    let dir = common::scratch();
    let free = common::free_bytes(dir.path());
    let cache = dir.path().join("cache");
    std::fs::create_dir_all(cache.join("blob")).unwrap();
    let blob = cache.join(format!("blob/sha256-{}", sha256(b"sparse")));
    std::fs::File::create(&blob)
        .unwrap()
        .set_len(free + (1 << 30))
        .unwrap();
    assert_no_room(dir.path(), &cache, "the image needs ");
}

/// One GNU tar header for `name` of `size` bytes (base-256 size: no octal limit).
fn gnu_header(name: &str, size: u64) -> [u8; 512] {
    let mut h = [0u8; 512];
    h[..name.len()].copy_from_slice(name.as_bytes());
    h[100..108].copy_from_slice(b"0000644\0");
    h[108..116].copy_from_slice(b"0000000\0");
    h[116..124].copy_from_slice(b"0000000\0");
    h[124] = 0x80;
    h[128..136].copy_from_slice(&size.to_be_bytes());
    h[136..148].copy_from_slice(b"00000000000\0");
    h[156] = b'0';
    h[257..265].copy_from_slice(b"ustar  \0");
    h[148..156].fill(b' ');
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    h
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// An oci-wrapped layout (upstream's form) whose gzip layer holds one file of zeros larger than the
/// free space: a few MiB on disk per 4 GiB declared, made of one gzip member per MiB. Listing it
/// used to expand all of it, and the write then filled the file system.
#[test]
fn a_compressed_layer_declaring_more_than_the_free_space_is_refused_unexpanded() {
    let dir = common::scratch();
    let free = common::free_bytes(dir.path());
    let mib: u64 = 1 << 20;
    let size = (free + (1 << 30)).div_ceil(mib) * mib;
    let name = format!("blob/sha256-{}", sha256(b"zeros"));
    let layer = {
        let mut layer = gzip(&gnu_header(&name, size));
        let zeros = gzip(&vec![0u8; mib as usize]);
        for _ in 0..size / mib {
            layer.extend_from_slice(&zeros);
        }
        // The end-of-archive blocks.
        layer.extend_from_slice(&gzip(&[0u8; 1024]));
        layer
    };
    let config = br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]},"config":{}}"#;
    let desc = |media_type: &str, bytes: &[u8]| {
        serde_json::json!({
            "mediaType": media_type,
            "digest": format!("sha256:{}", sha256(bytes)),
            "size": bytes.len(),
        })
    };
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": desc("application/vnd.oci.image.config.v1+json", config),
        "layers": [desc("application/vnd.docker.image.rootfs.diff.tar.gzip", &layer)],
    }))
    .unwrap();
    let mut top = desc("application/vnd.oci.image.manifest.v1+json", &manifest);
    top["platform"] = serde_json::json!({"os": "linux", "architecture": "amd64"});
    let cache = dir.path().join("wrapped");
    let blobs = cache.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    for bytes in [&config[..], &manifest, &layer] {
        std::fs::write(blobs.join(sha256(bytes)), bytes).unwrap();
    }
    std::fs::write(
        cache.join("index.json"),
        serde_json::to_vec(&serde_json::json!({"schemaVersion": 2, "manifests": [top]})).unwrap(),
    )
    .unwrap();
    std::fs::write(
        cache.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    assert_no_room(
        dir.path(),
        &cache,
        &format!("the image needs at least {size} bytes"),
    );
}

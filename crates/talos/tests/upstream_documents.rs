//! The documents imager writes, parsed by a YAML parser and compared with upstream's own test
//! patches (copied as facts into tests/fixtures/): the same documents, keys (in upstream's order)
//! and values, but for the volume's size, which comes from the cache.

#![allow(clippy::unwrap_used)]

use imager_talos::mirror::{self, MirrorStyle};
use imager_talos::{Version, image_cache_patch};
use yaml_rust2::{Yaml, YamlLoader};

const GIB: u64 = 1 << 30;

fn parse(text: &str) -> Vec<Yaml> {
    YamlLoader::load_from_str(text).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

fn fixture(name: &str) -> Vec<Yaml> {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    parse(&std::fs::read_to_string(&path).unwrap())
}

fn patch(version: &str, cache_bytes: u64) -> Vec<Yaml> {
    parse(&image_cache_patch(&Version::parse(version).unwrap(), cache_bytes).unwrap())
}

fn max_size(docs: &[Yaml]) -> &str {
    docs[1]["provisioning"]["maxSize"].as_str().unwrap()
}

#[test]
fn a_cache_of_2_5_gib_gives_upstream_s_own_patch() {
    // 1.2 x 2.5 GiB = 3 GiB, the size upstream's test patch declares: the documents must then
    // be upstream's exactly.
    let bytes = 5 * GIB / 2;
    assert_eq!(
        patch("v1.13.9", bytes),
        fixture("upstream-image-cache-v1.13.9.yaml")
    );
    assert_eq!(
        patch("v1.14.0-rc.1", bytes),
        fixture("upstream-image-cache-v1.14.0-rc.1.yaml")
    );
}

#[test]
fn the_volume_is_sized_from_the_cache() {
    for (bytes, size) in [
        (0, "1GiB"),
        (100 << 20, "1GiB"),
        (5 * GIB / 2 + 1, "4GiB"),
        (10 * GIB, "12GiB"),
        (40 * GIB + 7, "49GiB"),
    ] {
        assert_eq!(max_size(&patch("v1.9.0", bytes)), size, "{bytes}");
        assert_eq!(max_size(&patch("v1.14.0", bytes)), size, "{bytes}");
    }
}

#[test]
fn the_document_kind_changes_at_v1_14_0_alpha_1() {
    // The last release without ImageCacheConfig, and the first with it (upstream's tags).
    let before = patch("v1.14.0-alpha.0", GIB);
    assert_eq!(
        before[0]["machine"]["features"]["imageCache"]["localEnabled"].as_bool(),
        Some(true)
    );
    assert!(before[0]["kind"].is_badvalue());
    let after = patch("v1.14.0-alpha.1", GIB);
    assert_eq!(after[0]["kind"].as_str(), Some("ImageCacheConfig"));
    assert_eq!(after[0]["local"]["enabled"].as_bool(), Some(true));
    assert!(after[0]["machine"].is_badvalue());
    // The volume is the same document on both sides.
    assert_eq!(before[1], after[1]);
    assert_eq!(after[1]["kind"].as_str(), Some("VolumeConfig"));
}

#[test]
fn the_image_cache_starts_at_v1_9_0_alpha_3() {
    assert_eq!(patch("v1.9.0-alpha.3", GIB).len(), 2);
    let err = image_cache_patch(&Version::parse("v1.9.0-alpha.2").unwrap(), GIB).unwrap_err();
    assert!(err.to_string().contains("has no image cache"), "{err}");
}

#[test]
fn mirror_patches_have_upstream_s_shape() {
    let upstream = fixture("upstream-registry-mirrors.yaml");
    let registries = ["ghcr.io".to_owned()];
    let url = "http://127.0.0.1:3172";
    assert_eq!(
        parse(&mirror::talos_patch(
            MirrorStyle::RegistryMirrorConfig,
            &registries,
            url
        )),
        upstream[..1]
    );
    assert_eq!(
        parse(&mirror::talos_patch(
            MirrorStyle::MachineRegistries,
            &registries,
            url
        )),
        upstream[1..]
    );
}

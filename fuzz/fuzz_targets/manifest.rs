//! Manifest, index and config bytes, as a registry, an OCI layout or a cache hands them over,
//! read every way the tool reads them. The first input byte picks the media type the bytes are
//! served as (none, the four manifest types, or a generic one).
#![no_main]

use imager_oci::manifest;
use imager_oci::media::{DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, OCI_INDEX, OCI_MANIFEST};
use imager_oci::{ImageManifest, ManifestKind, Platform, PlatformSelection, select_platforms};
use libfuzzer_sys::fuzz_target;

const SERVED: [Option<&str>; 7] = [
    None,
    Some(OCI_INDEX),
    Some(OCI_MANIFEST),
    Some(DOCKER_MANIFEST_LIST),
    Some(DOCKER_MANIFEST),
    Some("application/json"),
    Some("application/vnd.oci.image.index.v1+json; charset=utf-8"),
];

fuzz_target!(|data: &[u8]| {
    let Some((&pick, bytes)) = data.split_first() else {
        return;
    };
    let served = SERVED[usize::from(pick) % SERVED.len()];
    let plain = manifest::parse(bytes);
    if let Ok(media_type) = manifest::resolve_media_type(served, bytes) {
        assert!(ManifestKind::of(&media_type).is_some());
        if let Ok(m) = manifest::parse_as(&media_type, bytes) {
            assert_eq!(m.media_type(), media_type);
            if let Ok(p) = &plain
                && p.media_type() == media_type
            {
                assert_eq!(p, &m);
            }
        }
        let _ = manifest::index_children(&media_type, bytes);
        let _ = ImageManifest::parse(&media_type, bytes);
        for selection in [
            PlatformSelection::All,
            PlatformSelection::Only(vec![Platform::linux_amd64()]),
        ] {
            if let Ok(children) = select_platforms(&media_type, bytes, &selection) {
                assert!(
                    children.len()
                        <= manifest::index_children(&media_type, bytes).map_or(0, |c| c.len())
                );
            }
        }
    }
    let _ = manifest::config_platform(bytes);
});

//! The machine-config patch that makes a Talos node use the image cache on its install medium:
//! the image cache turned on, and the `IMAGECACHE` volume declared big enough for the cache.
//! Pure text; [`crate::write`] puts it in a file.
//!
//! Without the volume the node waits for it and installs without a cache; with the default
//! volume (at most 1 GiB) a larger cache does not fit. The field names and the release each
//! document appeared in are upstream's (docs/talos-config.md cites where each was read).

use crate::version::Version;
use crate::yaml::{self, Node};

/// The file `--write-config DIR` writes the patch to.
pub const IMAGE_CACHE_PATCH_FILE: &str = "talos-image-cache.yaml";

/// The volume (and GPT partition) name Talos gives the disk copy of the cache.
pub const IMAGE_CACHE_VOLUME: &str = "IMAGECACHE";

/// The `VolumeConfig` room: at least this many fifths of the cache (1.2x), for the ext4
/// volume's own metadata and block rounding around the copied files.
const VOLUME_FIFTHS: u128 = 6;

const GIB: u128 = 1 << 30;

/// How a Talos release turns the image cache on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageCacheSwitch {
    /// Before v1.9.0-alpha.3 there is no image cache.
    Unsupported,
    /// v1.9.0-alpha.3 up to v1.14.0-alpha.0: `machine.features.imageCache.localEnabled`, in the
    /// v1alpha1 document.
    MachineFeature,
    /// From v1.14.0-alpha.1: the `ImageCacheConfig` document with `local.enabled`.
    ImageCacheConfig,
}

/// The first release with the image cache (`machine.features.imageCache`, and `IMAGECACHE`
/// accepted by `VolumeConfig`).
pub fn image_cache_since() -> Version {
    Version::release(1, 9, 0).with_pre(&["alpha", "3"])
}

/// The first release with the `ImageCacheConfig` document.
pub fn image_cache_config_since() -> Version {
    Version::release(1, 14, 0).with_pre(&["alpha", "1"])
}

/// How Talos `version` turns the image cache on.
pub fn image_cache_switch(version: &Version) -> ImageCacheSwitch {
    if version.at_least(&image_cache_config_since()) {
        ImageCacheSwitch::ImageCacheConfig
    } else if version.at_least(&image_cache_since()) {
        ImageCacheSwitch::MachineFeature
    } else {
        ImageCacheSwitch::Unsupported
    }
}

/// The `maxSize` of the `IMAGECACHE` volume for a cache of `cache_bytes`, in GiB: 1.2x the
/// cache rounded up to a whole GiB, and at least 1 GiB (the default volume's maximum: a smaller
/// value would shrink it).
pub fn volume_max_size_gib(cache_bytes: u64) -> u64 {
    let room = u128::from(cache_bytes) * VOLUME_FIFTHS;
    // ceil(room / 5 / GiB), in integers: 1.2x of any u64 fits a u128.
    let gib = room.div_ceil(5 * GIB);
    u64::try_from(gib.max(1)).unwrap_or(u64::MAX)
}

/// Why no patch can be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "Talos {version} has no image cache (it appeared in v1.9.0); make the medium for \
         v1.9.0 or later"
    )]
    NoImageCache { version: String },
}

/// The multi-document machine-config patch that turns the image cache on for Talos `version`
/// and declares the `IMAGECACHE` volume on the system disk, sized for `cache_bytes`.
pub fn image_cache_patch(version: &Version, cache_bytes: u64) -> Result<String, ConfigError> {
    let switch = match image_cache_switch(version) {
        ImageCacheSwitch::Unsupported => {
            return Err(ConfigError::NoImageCache {
                version: format!("v{version}"),
            });
        }
        ImageCacheSwitch::MachineFeature => Node::map([(
            "machine",
            Node::map([(
                "features",
                Node::map([(
                    "imageCache",
                    Node::map([("localEnabled", Node::Bool(true))]),
                )]),
            )]),
        )]),
        ImageCacheSwitch::ImageCacheConfig => Node::map([
            ("apiVersion", Node::str("v1alpha1")),
            ("kind", Node::str("ImageCacheConfig")),
            ("local", Node::map([("enabled", Node::Bool(true))])),
        ]),
    };
    let volume = Node::map([
        ("apiVersion", Node::str("v1alpha1")),
        ("kind", Node::str("VolumeConfig")),
        ("name", Node::str(IMAGE_CACHE_VOLUME)),
        (
            "provisioning",
            Node::map([
                (
                    "diskSelector",
                    Node::map([("match", Node::str("system_disk"))]),
                ),
                (
                    "maxSize",
                    Node::str(format!("{}GiB", volume_max_size_gib(cache_bytes))),
                ),
                ("grow", Node::Bool(true)),
            ]),
        ),
    ]);
    let header = format!(
        "# Talos v{version}: use the image cache of the install medium ({cache_bytes} bytes),\n\
         # copied to the IMAGECACHE volume on the system disk. Written by imager.\n"
    );
    Ok(header + &yaml::documents(&[switch, volume]))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn v(s: &str) -> Version {
        Version::parse(s).unwrap()
    }

    #[test]
    fn sizes_are_one_point_two_times_in_whole_gib() {
        const G: u64 = 1 << 30;
        for (bytes, gib) in [
            (0, 1),
            (1, 1),
            (G / 2, 1),
            // 1.2x of 5/6 GiB is just under 1 GiB.
            (5 * G / 6, 1),
            (5 * G / 6 + 1, 2),
            (G, 2),
            (5 * G / 2, 3),
            (5 * G / 2 + 1, 4),
            (10 * G, 12),
            (10 * G + 1, 13),
            (
                u64::MAX,
                (u128::from(u64::MAX) * 6).div_ceil(5 << 30) as u64,
            ),
        ] {
            assert_eq!(volume_max_size_gib(bytes), gib, "{bytes} bytes");
            assert!(u128::from(gib) * (5 << 30) >= u128::from(bytes) * 6);
        }
    }

    #[test]
    fn the_switch_follows_the_release() {
        use ImageCacheSwitch::*;
        for (version, switch) in [
            ("v1.8.4", Unsupported),
            ("v1.9.0-alpha.2", Unsupported),
            ("v1.9.0-alpha.3", MachineFeature),
            ("v1.9.0", MachineFeature),
            ("v1.13.9", MachineFeature),
            ("v1.14.0-alpha.0", MachineFeature),
            ("v1.14.0-alpha.1", ImageCacheConfig),
            ("v1.14.0", ImageCacheConfig),
            ("v2.0.0", ImageCacheConfig),
        ] {
            assert_eq!(image_cache_switch(&v(version)), switch, "{version}");
        }
    }

    #[test]
    fn no_patch_before_the_image_cache() {
        assert_eq!(
            image_cache_patch(&v("v1.8.4"), 1).unwrap_err().to_string(),
            "Talos v1.8.4 has no image cache (it appeared in v1.9.0); make the medium for v1.9.0 \
             or later"
        );
    }
}

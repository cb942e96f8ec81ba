//! What a Talos node is told, and what it pulls: the machine-config documents that turn on the
//! image cache and declare its volume ([`config`]), the registry mirror configuration for a
//! server over a cache ([`mirror`]), and the image lists of a Talos release ([`images`]), each
//! by the rules of the Talos version given ([`version`]). One module writes every document
//! ([`yaml`]); pure, except [`write`], which puts them in files.
//!
//! The field names, and the release each document appeared in, are upstream's; docs/talos-config.md
//! says where each was read.

pub mod config;
pub mod images;
pub mod mirror;
pub mod version;
pub mod write;
pub mod yaml;

pub use config::{ImageCacheSwitch, image_cache_patch, volume_max_size_gib};
pub use mirror::MirrorStyle;
pub use version::{Version, VersionError};

//! What of an image cache goes onto a medium, for every medium (`imager iso`, the coming
//! `metal`): the cache's structure is checked before a byte is written ([`select`]), with the
//! cache crate's checks that `cache verify` reports too ([`imager_cache::check`]).
//!
//! - A file whose name or place breaks the format (a `blob/` name that is not `sha256-<64 hex>`,
//!   an upper-case registry directory, a symlink) is refused: a node would never find it, or it
//!   is not the cache's. A file the format has no place for at all (a `README` beside `blob/`, a
//!   leftover `.tmp-*`: `verify`'s `unexpected-entry` warning) is left out of the medium, and
//!   [`CacheSelection::left_out_files`] says so.
//! - A `digest/` manifest whose bytes are not its name is refused (the manifests are read for
//!   the check anyway).
//! - An image no node can pull (an index none of whose images is cached) is refused, naming it,
//!   unless the caller asks to skip such images: then its files (tags, index, attestations and
//!   the blobs only they use) are left out, and [`CacheSelection::skipped`] says which.
//!
//! Blob contents are not hashed here (that is a full read of the cache): a compressed layer's
//! entries are hashed as they stream ([`imager_cache::Cache::read_stream`]), the others when the
//! caller asks for it while they are copied (`imager iso --verify`).

use std::collections::HashSet;
use std::path::PathBuf;

use imager_cache::check::{self, UnusableImage};
use imager_cache::{Cache, Entry, Problem, ProblemKind};

/// Why a cache cannot go onto a medium as it is.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error(
        "image cache {path}: {}: {}{}",
        problems[0].path.display(),
        problems[0].detail,
        more(problems.len(), "problems")
    )]
    Structure {
        path: PathBuf,
        problems: Vec<Problem>,
    },
    #[error("image cache {path}: {}{}", images[0], more(images.len(), "images"))]
    Unusable {
        path: PathBuf,
        images: Vec<UnusableImage>,
    },
    #[error("reading the image cache {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: Box<imager_cache::LayoutError>,
    },
}

fn more(n: usize, what: &str) -> String {
    match n {
        0 | 1 => String::new(),
        n => format!(
            " (and {} more {what}: `imager cache verify` lists them)",
            n - 1
        ),
    }
}

/// The entries of a cache that go onto a medium.
#[derive(Debug, Clone, Default)]
pub struct CacheSelection {
    left_out: HashSet<String>,
    /// Images left out because no node could pull them.
    pub skipped: Vec<UnusableImage>,
    /// Files left out because the format has no place for them.
    pub left_out_files: Vec<Problem>,
}

impl CacheSelection {
    /// Whether `entry` goes onto the medium.
    pub fn includes(&self, entry: &Entry) -> bool {
        !self.left_out.contains(&entry.path)
    }
}

/// Checks `cache` for a medium (see the module documentation) and says what goes onto it.
pub fn select(cache: &Cache, skip_unusable: bool) -> Result<CacheSelection, CacheError> {
    let path = cache.input().to_owned();
    let structure = check::structure(cache).map_err(|source| CacheError::Read {
        path: path.clone(),
        source: Box::new(source),
    })?;
    let (strays, errors): (Vec<Problem>, Vec<Problem>) = structure
        .problems
        .into_iter()
        .partition(|p| p.kind == ProblemKind::UnexpectedEntry);
    if !errors.is_empty() {
        return Err(CacheError::Structure {
            path,
            problems: errors,
        });
    }
    if !structure.unusable.is_empty() && !skip_unusable {
        return Err(CacheError::Unusable {
            path,
            images: structure.unusable,
        });
    }
    let left_out = structure
        .unusable
        .iter()
        .flat_map(|u| &u.files)
        .chain(strays.iter().map(|p| &p.path))
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    Ok(CacheSelection {
        left_out,
        skipped: structure.unusable,
        left_out_files: strays,
    })
}

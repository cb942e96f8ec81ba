//! Reading a directory back out of an image, for `imager cache verify metal-amd64.iso`. The reader is
//! hadris's (Rock Ridge names, relocated deep directories followed); its tree streams each file from
//! the image into the destination when written.

use std::path::{Path, PathBuf};

use hadris_fs::MountOptions;
use hadris_fs::sync::{Volume, read_tree};
use hadris_iso::sync::IsoFs;
use hadris_storage::host::FileDevice;

use crate::error::IsoError;

/// Copies `dir` (e.g. `/imagecache`) of the image `iso` into the new directory `dest`.
pub fn extract_dir(iso: &Path, dir: &str, dest: &Path) -> Result<(), IsoError> {
    let read_err = |reason: String| IsoError::Read {
        path: iso.to_owned(),
        reason,
    };
    let dev = FileDevice::open(iso).map_err(|source| IsoError::Input {
        path: iso.to_owned(),
        source,
    })?;
    let fs = IsoFs::mount(dev, MountOptions::new())
        .map_err(|err| read_err(format!("not a readable ISO 9660 image: {err}")))?;
    let vol = Volume::new(fs);
    let tree = read_tree(&vol, dir).map_err(|err| read_err(format!("reading {dir}: {err}")))?;
    hadris_fs::host::write_tree(dest, &tree).map_err(|err| IsoError::Output {
        path: PathBuf::from(dest),
        source: std::io::Error::other(err.to_string()),
    })?;
    Ok(())
}

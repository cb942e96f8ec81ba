use std::path::PathBuf;

/// Why an ISO could not be planned or written.
#[derive(Debug, thiserror::Error)]
pub enum IsoError {
    /// An existing image could not be read.
    #[error("{path}: {reason}")]
    Read { path: PathBuf, reason: String },
    /// An image holds something the reader refuses, or is damaged; `entry` is the path in the
    /// image (or the part of it) where that was found.
    #[error("{path}: {entry}")]
    Image {
        path: PathBuf,
        entry: String,
        #[source]
        source: crate::read::ReadError,
    },
    /// A host file or directory given as input could not be read.
    #[error("cannot read {path}")]
    Input {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// An input tree holds something an image must not carry as-is.
    #[error("{path}: {reason}")]
    Unsupported { path: PathBuf, reason: &'static str },
    /// A path inside the image is not acceptable.
    #[error("invalid path in the image {path:?}: {reason}")]
    ImagePath { path: String, reason: &'static str },
    /// Two inputs claim the same path in the image.
    #[error("{path:?} is added to the image twice")]
    Duplicate { path: String },
    /// A volume identifier that ISO 9660 cannot store.
    #[error("invalid volume identifier {id:?}: {reason}")]
    VolumeId { id: String, reason: &'static str },
    /// The boot setup refers to something that is not in the image.
    #[error("boot setup: {0}")]
    Boot(String),
    /// The layout engine refused the tree or the options.
    #[error("laying out the image")]
    Layout(#[source] Box<hadris_fs::PathError>),
    /// Writing the image failed (disk full, I/O error, a source file that changed meanwhile).
    #[error("writing {path}: {}", innermost(cause))]
    Write {
        path: PathBuf,
        /// Not a `#[source]`: hadris repeats its message at each level of the chain, so the
        /// message above shows only the innermost cause (e.g. "No space left on device").
        cause: Box<hadris_fs::PathError>,
    },
    /// A file added with an expected digest had other bytes when it was copied.
    #[error("{path}: its bytes (in {host}) hash to {actual}, not the expected {expected}")]
    Content {
        /// The path in the image.
        path: String,
        host: PathBuf,
        expected: imager_oci::Digest,
        actual: imager_oci::Digest,
    },
    /// Writing or syncing the output file failed.
    #[error("writing {path}")]
    Output {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The last error in `err`'s source chain, as text.
fn innermost(err: &hadris_fs::PathError) -> String {
    let mut cur: &(dyn std::error::Error + 'static) = err;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

use std::io;

/// Why a file system could not be planned or written.
#[derive(Debug, thiserror::Error)]
pub enum Ext4Error {
    /// A volume label ext4 cannot store (1 to 16 bytes, no NUL).
    #[error("invalid ext4 label {label:?}: {reason}")]
    Label { label: String, reason: &'static str },
    /// A time the superblock cannot hold (it stores 32-bit unsigned seconds).
    #[error("time {0} is out of range for ext4 (0 to 4294967295)")]
    Time(i64),
    /// A path inside the file system is not acceptable.
    #[error("invalid path in the file system {path:?}: {reason}")]
    Path { path: String, reason: &'static str },
    /// Two files claim the same path.
    #[error("{path:?} is added to the file system twice")]
    Duplicate { path: String },
    /// A path is both a file and the directory of another file.
    #[error("{path:?} is both a file and a directory")]
    FileAndDir { path: String },
    /// A file system size the layout cannot take.
    #[error("invalid ext4 size {size}: {reason}")]
    Size { size: u64, reason: &'static str },
    /// The files do not fit.
    #[error(
        "an ext4 file system of {size} bytes is too small for these files: {needed} bytes needed"
    )]
    TooSmall { size: u64, needed: u64 },
    /// The layout engine refused the tree.
    #[error("laying out the ext4 file system")]
    Layout(#[source] mkext4::Error),
    /// Writing the metadata into the output failed.
    #[error("writing the ext4 file system")]
    Output(#[source] io::Error),
    /// Copying a file's bytes failed (reading its source or writing the output).
    #[error("copying {path:?} into the ext4 file system")]
    Data {
        path: String,
        #[source]
        source: io::Error,
    },
}

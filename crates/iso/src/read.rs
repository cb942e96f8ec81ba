//! STUB (replaced by the iso-read branch).
#[derive(Debug)]
pub struct IsoFile {
    pub path: String,
    pub size: u64,
    pub extents: Vec<Extent>,
}
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Extent {
    pub offset: u64,
    pub len: u64,
}
#[derive(Debug)]
pub struct IsoListing {
    pub volume_id: String,
    pub files: Vec<IsoFile>,
    pub dirs: Vec<String>,
}
pub fn is_iso9660(_file: &std::fs::File) -> std::io::Result<bool> {
    Ok(false)
}
pub fn list_dir(
    _image: &std::fs::File,
    _image_path: &std::path::Path,
    _dir: &str,
) -> Result<Option<IsoListing>, crate::IsoError> {
    Ok(None)
}

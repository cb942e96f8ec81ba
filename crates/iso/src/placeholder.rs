//! Stand-ins for host files while hadris lays the image out (see `copy.rs`).
//!
//! hadris takes a file's length from its content and streams the content through its own 64 KiB
//! read loop; the output device then drops those bytes, because the copy thread puts the real ones
//! there. So the stand-in only has to have the right length and be free to read. It is a file of
//! [`PlaceholderFs`], a read-only in-memory file system whose `read` reports the bytes as read
//! without touching the buffer. Whatever the buffer held (hadris 3.0.0-rc.2 clears it at the
//! start of each file, so in practice zeros) stays there and is written to the device, which drops
//! it: every byte of a placeholder's extents, up to the end of its last sector, lies in the
//! device's skip ranges (`copy::skip_ranges`), and hadris writes a file's data only there. A sparse
//! host file did the same job, but reading its holes cost a kernel memset and copy per 64 KiB: for
//! a 1.5 GiB cache, 25,000 reads and about 0.7 s of CPU, on two cores a tenth of the run time.
//!
//! The `FileSystem` contract says a read returns zeros for unwritten ranges. That rule is about
//! files whose contents someone wrote or meant to be zero; a placeholder has no contents at all,
//! and its only reader is the layout writer whose output of those bytes is discarded. Filling the
//! buffer with zeros instead would cost a memset per 64 KiB for nothing. The test
//! `placeholder_bytes_never_reach_the_image` (spec.rs) proves the bytes are dropped.

use std::collections::BTreeMap;
use std::convert::Infallible;

use hadris_fs::sync::{FileSystem, Volume};
use hadris_fs::{
    Capabilities, CaseRule, Charset, Content, DirCursor, DirEntry, ErrorKind, FileType, FsResult,
    FsStats, Metadata, Name, NodeId, OpenMode, PathError, Permissions,
};

/// The root directory's node id.
const ROOT: u64 = 1;
/// The one file's node id.
const FILE: u64 = 2;
/// The one file's name in the root.
const NAME: &[u8] = b"placeholder";

fn node(raw: u64) -> NodeId {
    NodeId::new(raw).expect("node ids are not 0")
}

/// A root directory holding one file, [`NAME`], of `len` bytes whose reads leave the buffer as it
/// is. Node ids are fixed, so pins need no bookkeeping.
#[derive(Debug)]
pub(crate) struct PlaceholderFs {
    len: u64,
}

impl PlaceholderFs {
    pub(crate) fn new(len: u64) -> Self {
        Self { len }
    }

    fn meta(&self, node: NodeId) -> FsResult<Metadata, Infallible> {
        match node.get() {
            ROOT => Ok(Metadata::new(FileType::Dir, Permissions::new(0o555))),
            FILE => Ok(Metadata::new(FileType::File, Permissions::new(0o444)).with_len(self.len)),
            _ => Err(ErrorKind::NotFound.into()),
        }
    }

    /// Checks that `node` is the root.
    fn dir(&self, node: NodeId) -> FsResult<(), Infallible> {
        match node.get() {
            ROOT => Ok(()),
            FILE => Err(ErrorKind::NotADirectory.into()),
            _ => Err(ErrorKind::NotFound.into()),
        }
    }

    /// Checks that `node` is the file.
    fn file(&self, node: NodeId) -> FsResult<(), Infallible> {
        match node.get() {
            FILE => Ok(()),
            ROOT => Err(ErrorKind::IsADirectory.into()),
            _ => Err(ErrorKind::NotFound.into()),
        }
    }
}

impl FileSystem for PlaceholderFs {
    type DeviceError = Infallible;

    fn capabilities(&self) -> Capabilities {
        Capabilities::new(CaseRule::Sensitive, Charset::Bytes, 255)
    }

    fn root(&self) -> NodeId {
        node(ROOT)
    }

    fn statfs(&mut self) -> FsResult<FsStats, Infallible> {
        Ok(FsStats::new(self.len.div_ceil(2048), 0, 2048).with_file_count(1))
    }

    fn label<'b>(&mut self, _buf: &'b mut [u8]) -> FsResult<Option<&'b str>, Infallible> {
        Ok(None)
    }

    fn lookup(&mut self, dir: NodeId, name: &Name) -> FsResult<NodeId, Infallible> {
        name.check()?;
        self.dir(dir)?;
        if name.as_bytes() == NAME {
            Ok(node(FILE))
        } else {
            Err(ErrorKind::NotFound.into())
        }
    }

    fn forget(&mut self, _node: NodeId, _count: u64) {}

    fn parent(&mut self, dir: NodeId) -> FsResult<NodeId, Infallible> {
        self.dir(dir)?;
        Ok(node(ROOT))
    }

    fn stat(&mut self, node: NodeId) -> FsResult<Metadata, Infallible> {
        self.meta(node)
    }

    fn readdir(&mut self, dir: NodeId, from: DirCursor) -> FsResult<Option<DirEntry>, Infallible> {
        self.dir(dir)?;
        if !from.is_start() {
            return Ok(None);
        }
        let entry = DirEntry::new(
            Name::from_bytes(NAME),
            node(FILE),
            self.meta(node(FILE))?,
            DirCursor::from_raw(1),
        )?;
        Ok(Some(entry))
    }

    fn readlink<'b>(&mut self, node: NodeId, _buf: &'b mut [u8]) -> FsResult<&'b [u8], Infallible> {
        self.meta(node)?;
        Err(ErrorKind::InvalidInput.into())
    }

    fn open(&mut self, node: NodeId, mode: OpenMode) -> FsResult<(), Infallible> {
        self.file(node)?;
        // Any mode but reading would write.
        if mode == OpenMode::Read {
            Ok(())
        } else {
            Err(ErrorKind::ReadOnly.into())
        }
    }

    fn close(&mut self, node: NodeId) -> FsResult<(), Infallible> {
        self.meta(node).map(drop)
    }

    /// Reports `buf` filled up to the end of the file and leaves it untouched (see the module
    /// doc): this is the read that makes laying out a placeholder free.
    fn read(&mut self, node: NodeId, offset: u64, buf: &mut [u8]) -> FsResult<usize, Infallible> {
        self.file(node)?;
        let left = self.len.saturating_sub(offset);
        Ok(usize::try_from(left).map_or(buf.len(), |left| left.min(buf.len())))
    }
}

/// Placeholder contents, one per distinct length: hadris needs only the length, and one mounted
/// [`PlaceholderFs`] serves every file of that length (a `Content` clone shares it).
#[derive(Debug, Default)]
pub(crate) struct Placeholders {
    by_len: BTreeMap<u64, Content>,
}

impl Placeholders {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// The placeholder content of `len` bytes.
    pub(crate) fn for_len(&mut self, len: u64) -> Result<Content, PathError> {
        if let Some(content) = self.by_len.get(&len) {
            return Ok(content.clone());
        }
        let vol = Volume::new(PlaceholderFs::new(len));
        let tree = hadris_fs::sync::read_tree(&vol, "/")?;
        let content = tree
            .get(NAME)
            .and_then(hadris_fs::Node::content)
            .filter(|content| content.len() == len)
            .cloned()
            .ok_or_else(|| PathError::new(ErrorKind::Corrupt, "the placeholder is missing"))?;
        self.by_len.insert(len, content.clone());
        Ok(content)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_count_bytes_and_leave_the_buffer_alone() {
        let mut fs = PlaceholderFs::new(100_000);
        let file = fs.lookup(fs.root(), Name::new("placeholder")).unwrap();
        fs.open(file, OpenMode::Read).unwrap();
        let mut buf = vec![0x5a_u8; 65_536];
        assert_eq!(fs.read(file, 0, &mut buf).unwrap(), 65_536);
        assert_eq!(fs.read(file, 65_536, &mut buf).unwrap(), 100_000 - 65_536);
        assert_eq!(fs.read(file, 99_999, &mut buf).unwrap(), 1);
        assert_eq!(fs.read(file, 100_000, &mut buf).unwrap(), 0);
        assert_eq!(fs.read(file, u64::MAX, &mut buf).unwrap(), 0);
        assert_eq!(fs.read(file, 0, &mut []).unwrap(), 0);
        assert!(buf.iter().all(|&b| b == 0x5a), "read wrote into the buffer");
        fs.close(file).unwrap();
        assert_eq!(
            fs.read(fs.root(), 0, &mut buf).unwrap_err().kind(),
            ErrorKind::IsADirectory
        );
    }

    #[test]
    fn follows_the_read_only_contract() {
        for len in [0, 1, 4096, 5 << 30] {
            hadris_fs::sync::contract::check_read_only(&mut PlaceholderFs::new(len))
                .unwrap_or_else(|violation| panic!("len {len}: {violation}"));
        }
    }

    #[test]
    fn contents_have_the_length_and_are_shared_per_length() {
        let mut placeholders = Placeholders::new();
        let a = placeholders.for_len(4097).unwrap();
        let b = placeholders.for_len(4097).unwrap();
        let c = placeholders.for_len(0).unwrap();
        assert_eq!((a.len(), b.len(), c.len()), (4097, 4097, 0));
        assert_eq!(placeholders.by_len.len(), 2);
        // Read through the volume as hadris's writer does: counts, and the buffer untouched.
        let mut reader = hadris_fs::sync::ContentReader::open(&a).unwrap();
        let mut buf = [7u8; 4096];
        assert_eq!(reader.read_at(0, &mut buf).unwrap(), 4096);
        assert_eq!(reader.read_at(4096, &mut buf).unwrap(), 1);
        assert_eq!(reader.read_at(4097, &mut buf).unwrap(), 0);
        assert!(buf.iter().all(|&b| b == 7));
    }
}

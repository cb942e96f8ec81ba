//! What goes into an image, and writing it.

use std::fs::File;
use std::path::{Path, PathBuf};

use hadris_fs::{Content, DateTime, Node, Tree};
use hadris_iso::{
    AppendedPartition, BootEntry, BootInfo, ElTorito, Hybrid, IsoId, IsoLevel, IsoOptions, NameCase,
};

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::copy::{self, Data, HostFile, Piece};
use crate::device::{ImageDevice, Progress};
use crate::error::IsoError;
use crate::placeholder::Placeholders;

/// A 2048-byte ISO sector counts as four 512-byte El Torito "virtual sectors".
const VIRTUAL_SECTOR: u64 = 512;

/// BIOS boot through El Torito no-emulation and, from a USB stick, through the MBR boot code.
#[derive(Debug, Clone)]
pub struct BiosBoot {
    /// The boot image's path in the image (e.g. `isolinux/isolinux.bin`); it gets a boot info
    /// table, as ISOLINUX expects.
    pub image: String,
    /// Where the El Torito boot catalog goes in the image (e.g. `isolinux/boot.cat`).
    pub catalog: String,
    /// MBR boot code (at most 432 bytes, e.g. the start of syslinux `isohdpfx.bin`). The writer
    /// stores the boot image's address at bytes 432..440, where isohybrid boot code reads it.
    pub mbr_code: Vec<u8>,
}

/// Everything an image holds. Build it with the `add_*` methods, then [`IsoSpec::write`].
#[derive(Debug)]
pub struct IsoSpec {
    volume_id: String,
    volume_set_id: Option<String>,
    application_id: Option<String>,
    unix_time: i64,
    tree: Tree,
    bios: Option<BiosBoot>,
    esp: Option<PathBuf>,
    /// Host files by image path; their data is copied after the layout (see `copy.rs`).
    host_files: BTreeMap<String, HostFile>,
    placeholders: Placeholders,
    /// The layout of the spec as it is; emptied by every change.
    plan: std::cell::OnceCell<hadris_fs::Report>,
}

/// Delivers the bytes of the files added with [`IsoSpec::add_streamed`], each once, in any order.
pub trait Stream {
    /// What is read (named in errors), e.g. a layer blob's path.
    fn describe(&self) -> String;
    /// Calls `put` with each streamed file's key and a reader of exactly its bytes.
    fn run(
        &mut self,
        put: &mut dyn FnMut(u64, &mut dyn std::io::Read) -> std::io::Result<()>,
    ) -> std::io::Result<()>;
}

/// What [`IsoSpec::write`] produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteReport {
    /// Bytes in the image.
    pub size: u64,
}

impl IsoSpec {
    /// An empty image with `volume_id` (1 to 32 of `A-Z 0-9 _`, the ISO 9660 d-characters that
    /// every reader shows as written), dated `unix_time` (all volume and file dates).
    pub fn new(volume_id: &str, unix_time: i64) -> Result<Self, IsoError> {
        check_volume_id(volume_id)?;
        Ok(Self {
            volume_id: volume_id.to_owned(),
            volume_set_id: None,
            application_id: None,
            unix_time,
            tree: Tree::new(),
            bios: None,
            esp: None,
            host_files: BTreeMap::new(),
            placeholders: Placeholders::new(),
            plan: std::cell::OnceCell::new(),
        })
    }

    /// Sets the volume set identifier (up to 128 bytes).
    pub fn volume_set_id(&mut self, id: &str) -> &mut Self {
        self.plan.take();
        self.volume_set_id = Some(id.to_owned());
        self
    }

    /// Sets the application identifier (up to 128 bytes).
    pub fn application_id(&mut self, id: &str) -> &mut Self {
        self.plan.take();
        self.application_id = Some(id.to_owned());
        self
    }

    /// Adds, at `path` in the image, a file of `len` bytes that lie in the host file `host` as
    /// the `(offset, len)` runs `runs`, in order (an entry inside a layer blob or another image).
    /// They are copied by the kernel when the image is written, so they must still be there.
    pub fn add_file_runs(
        &mut self,
        path: &str,
        host: &Path,
        runs: Vec<(u64, u64)>,
        len: u64,
    ) -> Result<&mut Self, IsoError> {
        if runs.iter().map(|r| r.1).sum::<u64>() != len {
            return Err(IsoError::Unsupported {
                path: host.to_owned(),
                reason: "the runs of a file do not add up to its length",
            });
        }
        let data = Data::Runs {
            host: host.to_owned(),
            runs,
        };
        self.add_copied(path, data, len, None)
    }

    /// [`IsoSpec::add_file_runs`], for bytes whose sha256 must be `expected`: they are hashed as
    /// they are copied (each chunk read back from the output after the kernel copied it), and
    /// other bytes fail the write with [`IsoError::Content`] naming `path`. The output file given
    /// to [`IsoSpec::write`] must then be open for reading too.
    pub fn add_file_runs_checked(
        &mut self,
        path: &str,
        host: &Path,
        runs: Vec<(u64, u64)>,
        len: u64,
        expected: imager_oci::Digest,
    ) -> Result<&mut Self, IsoError> {
        self.add_file_runs(path, host, runs, len)?;
        let key = check_image_path(path)?;
        if let Some(file) = self.host_files.get_mut(&key) {
            file.check = Some(expected);
        }
        Ok(self)
    }

    /// Adds, at `path`, a file of `len` bytes that arrive through the [`Stream`] given to
    /// [`IsoSpec::write_with`] under `key` (one stream read once, e.g. a compressed layer).
    pub fn add_streamed(&mut self, path: &str, len: u64, key: u64) -> Result<&mut Self, IsoError> {
        self.add_copied(path, Data::Streamed { key }, len, None)
    }

    /// Adds the host file `host` at `path` in the image. The file is read when the image is
    /// written, so it must keep its size until then.
    pub fn add_file(&mut self, path: &str, host: &Path) -> Result<&mut Self, IsoError> {
        let meta = std::fs::symlink_metadata(host).map_err(|source| IsoError::Input {
            path: host.to_owned(),
            source,
        })?;
        if !meta.is_file() {
            return Err(IsoError::Unsupported {
                path: host.to_owned(),
                reason: "not a regular file",
            });
        }
        let data = Data::Runs {
            host: host.to_owned(),
            runs: vec![(0, meta.len())],
        };
        self.add_copied(path, data, meta.len(), None)
    }

    /// Adds a file whose bytes `write` copies in after the layout: hadris sees a placeholder of
    /// the same length.
    fn add_copied(
        &mut self,
        path: &str,
        data: Data,
        len: u64,
        check: Option<imager_oci::Digest>,
    ) -> Result<&mut Self, IsoError> {
        let content = self
            .placeholders
            .for_len(len)
            .map_err(|e| IsoError::Layout(Box::new(e)))?;
        let key = self.insert(path, Node::file(content))?;
        self.host_files.insert(key, HostFile { data, len, check });
        Ok(self)
    }

    /// Adds `bytes` as a file at `path` in the image.
    pub fn add_bytes(
        &mut self,
        path: &str,
        bytes: impl Into<Vec<u8>>,
    ) -> Result<&mut Self, IsoError> {
        self.insert(path, Node::file(Content::bytes(bytes)))?;
        Ok(self)
    }

    /// Adds an empty directory at `path` (parents of files are added implicitly).
    pub fn add_dir(&mut self, path: &str) -> Result<&mut Self, IsoError> {
        self.insert(path, Node::dir())?;
        Ok(self)
    }

    /// Adds the host directory `host` and everything below it at `path`. Only directories and
    /// regular files are accepted: a symlink or a device in an image cache is a mistake, not
    /// something to copy silently.
    pub fn add_dir_tree(&mut self, path: &str, host: &Path) -> Result<&mut Self, IsoError> {
        let meta = std::fs::metadata(host).map_err(|source| IsoError::Input {
            path: host.to_owned(),
            source,
        })?;
        if !meta.is_dir() {
            return Err(IsoError::Unsupported {
                path: host.to_owned(),
                reason: "not a directory",
            });
        }
        self.add_dir(path)?;
        for entry in walkdir::WalkDir::new(host)
            .min_depth(1)
            .follow_links(false)
            .sort_by_file_name()
        {
            let entry = entry.map_err(|err| {
                let at = err.path().unwrap_or(host).to_owned();
                IsoError::Input {
                    path: at,
                    source: err
                        .into_io_error()
                        .unwrap_or_else(|| std::io::Error::other("directory walk failed")),
                }
            })?;
            let rel = entry
                .path()
                .strip_prefix(host)
                .ok()
                .and_then(Path::to_str)
                .ok_or_else(|| IsoError::Unsupported {
                    path: entry.path().to_owned(),
                    reason: "the name is not UTF-8",
                })?;
            let inner = format!("{}/{}", path.trim_end_matches('/'), rel);
            let kind = entry.file_type();
            if kind.is_dir() {
                self.add_dir(&inner)?;
            } else if kind.is_file() {
                self.add_file(&inner, entry.path())?;
            } else {
                return Err(IsoError::Unsupported {
                    path: entry.path().to_owned(),
                    reason: "only regular files and directories can go into the image (this is a symlink or a special file)",
                });
            }
        }
        Ok(self)
    }

    /// Boots BIOS machines: El Torito no-emulation from a CD, the MBR from a disk. The boot image
    /// must already be in the image; the writer patches a boot info table into it.
    pub fn bios_boot(&mut self, boot: BiosBoot) -> Result<&mut Self, IsoError> {
        // hadris writes the boot info table into the boot image's data as it passes through, so
        // that file must not take the placeholder-and-copy path: its real bytes go into the tree.
        if let Some(file) = self.host_files.remove(&boot.image) {
            let Data::Runs { host, runs } = &file.data else {
                return Err(IsoError::Boot(format!(
                    "the BIOS boot image {} cannot come from a stream",
                    boot.image
                )));
            };
            let bytes = std::fs::read(host).map_err(|source| IsoError::Input {
                path: host.clone(),
                source,
            })?;
            if bytes.len() as u64 != file.len || runs[..] != [(0, file.len)] {
                return Err(IsoError::Unsupported {
                    path: host.clone(),
                    reason: "the file changed size while the image was being planned",
                });
            }
            self.tree
                .replace(boot.image.as_bytes(), Node::file(Content::bytes(bytes)))
                .map_err(|e| IsoError::Layout(Box::new(e)))?;
        }
        self.bios = Some(boot);
        self.plan.take();
        Ok(self)
    }

    /// Boots UEFI machines from the FAT image `esp`: appended after the files as the EFI system
    /// partition of the GPT (for disks) and named by an El Torito 0xEF entry (for CDs).
    pub fn uefi_boot(&mut self, esp: &Path) -> &mut Self {
        self.plan.take();
        self.esp = Some(esp.to_owned());
        self
    }

    /// Adds `node` and returns its normalized path.
    fn insert(&mut self, path: &str, node: Node) -> Result<String, IsoError> {
        self.plan.take();
        let path = check_image_path(path)?;
        if let Some(existing) = self.tree.get(path.as_bytes()) {
            // Directories are merged (a directory added before its files, or twice), files not.
            if existing.file_type() == hadris_fs::FileType::Dir
                && node.file_type() == hadris_fs::FileType::Dir
            {
                return Ok(path);
            }
            return Err(IsoError::Duplicate { path });
        }
        self.tree
            .insert(path.as_bytes(), node)
            .map_err(|e| IsoError::Layout(Box::new(e)))?;
        Ok(path)
    }

    fn options(&self) -> Result<IsoOptions, IsoError> {
        let time = DateTime::new(self.unix_time, 0)
            .map_err(|_| IsoError::Boot(format!("time {} is out of range", self.unix_time)))?;
        let mut opts = IsoOptions::new()
            .with_id(IsoId::Volume, &self.volume_id)
            // Level 3: files of 4 GiB and more are stored as several extents (upstream broke on
            // exactly that). Rock Ridge carries the long, deep, case-sensitive cache names; it
            // relocates directories deeper than ISO 9660's eight levels, as RRIP describes.
            .with_level(IsoLevel::L3)
            .with_name_case(NameCase::Upper)
            .with_rock_ridge()
            .with_time(time);
        if let Some(id) = &self.volume_set_id {
            opts = opts.with_id(IsoId::VolumeSet, id);
        }
        if let Some(id) = &self.application_id {
            opts = opts.with_id(IsoId::Application, id);
        }

        let mut el_torito = ElTorito::new();
        let mut hybrid = None;
        if let Some(bios) = &self.bios {
            if self.tree.get(bios.image.as_bytes()).is_none() {
                return Err(IsoError::Boot(format!(
                    "the BIOS boot image {} is not in the image",
                    bios.image
                )));
            }
            if bios.mbr_code.len() > 432 {
                return Err(IsoError::Boot(format!(
                    "MBR boot code is {} bytes; at most 432 fit before the boot image address",
                    bios.mbr_code.len()
                )));
            }
            el_torito = el_torito
                .with_entry(
                    BootEntry::bios(&bios.image)
                        // ISOLINUX loads the rest of itself; the BIOS needs only the first 2 KiB.
                        .with_load_size(4)
                        .with_boot_info(BootInfo::Table),
                )
                .with_catalog_path(&bios.catalog);
            hybrid = Some(Hybrid::gpt_hybrid_mbr().with_bootstrap(&bios.mbr_code));
        }
        if let Some(esp) = &self.esp {
            let len = std::fs::metadata(esp)
                .map_err(|source| IsoError::Input {
                    path: esp.clone(),
                    source,
                })?
                .len();
            let content = hadris_fs::host::file(esp).map_err(|err| IsoError::Input {
                path: esp.clone(),
                source: std::io::Error::other(err.to_string()),
            })?;
            el_torito = el_torito
                .with_entry(BootEntry::uefi_appended(0).with_load_size(efi_load_size(len)));
            hybrid = Some(
                hybrid
                    .unwrap_or_else(Hybrid::gpt)
                    .with_appended(AppendedPartition::esp(content)),
            );
        }
        if !el_torito.entries().is_empty() {
            opts = opts.with_el_torito(el_torito);
        }
        if let Some(hybrid) = hybrid {
            opts = opts.with_hybrid(hybrid);
        }
        Ok(opts)
    }

    /// The size of the image in bytes, without writing anything.
    pub fn planned_size(&self) -> Result<u64, IsoError> {
        Ok(self.plan()?.size())
    }

    /// The layout, computed once: planning walks every name of the tree (hadris de-duplicates
    /// ISO 9660 short names per directory), which is the dominant CPU cost for large caches.
    fn plan(&self) -> Result<&hadris_fs::Report, IsoError> {
        if let Some(report) = self.plan.get() {
            return Ok(report);
        }
        let opts = self.options()?;
        let report =
            hadris_iso::plan(&self.tree, &opts).map_err(|e| IsoError::Layout(Box::new(e)))?;
        Ok(self.plan.get_or_init(|| report))
    }

    /// Writes the image into `out` (an empty file opened for writing, and reading if files are checked), then syncs it, reporting
    /// bytes written to `progress`. `out_path` is only used in error messages.
    pub fn write(
        &self,
        out: &File,
        out_path: &Path,
        progress: &mut dyn Progress,
    ) -> Result<WriteReport, IsoError> {
        self.write_with(out, out_path, progress, None)
    }

    /// [`IsoSpec::write`], with the stream that delivers the files added by
    /// [`IsoSpec::add_streamed`]: read once, after the other files are copied, each file's bytes
    /// written straight into its extents.
    pub fn write_with(
        &self,
        out: &File,
        out_path: &Path,
        progress: &mut dyn Progress,
        stream: Option<&mut (dyn Stream + Send)>,
    ) -> Result<WriteReport, IsoError> {
        let streamed = self
            .host_files
            .values()
            .filter(|f| matches!(f.data, Data::Streamed { .. }))
            .count();
        if streamed > 0 && stream.is_none() {
            return Err(IsoError::Boot(format!(
                "{streamed} files are to come from a stream, and none was given"
            )));
        }
        let opts = self.options()?;
        let planned = self.plan()?;
        let mut jobs: Vec<(&str, &HostFile, Vec<Piece>)> =
            Vec::with_capacity(self.host_files.len());
        for (path, file) in &self.host_files {
            jobs.push((path, file, pieces_of(planned, path, file.len)?));
        }
        let all: Vec<Piece> = jobs
            .iter()
            .flat_map(|(_, _, p)| p.iter().copied())
            .collect();
        let skip = copy::skip_ranges(&all, SECTOR);

        // In image order, so the output is written front to back.
        jobs.sort_by_key(|(_, _, pieces)| pieces.first().map(|p| p.image_offset));

        // The kernel copies file data on one thread while hadris writes the metadata (and streams
        // the placeholders, whose bytes the device drops) on this one: the two touch disjoint
        // byte ranges of the output.
        let copied = AtomicU64::new(0);
        let stop = AtomicBool::new(false);
        // Hangs up when the copy thread ends, however it ends, so the wait below ends at once
        // instead of at its next progress tick.
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let report = std::thread::scope(|scope| {
            let copier = scope.spawn(|| -> Result<(), IsoError> {
                let _done = done_tx;
                let mut writeback = imager_copy::Writeback::new(out);
                let mut streamed_jobs: HashMap<u64, (&HostFile, &[Piece])> = HashMap::new();
                for (path, file, pieces) in &jobs {
                    if stop.load(Ordering::Relaxed) {
                        return Ok(());
                    }
                    if let Data::Streamed { key } = file.data {
                        streamed_jobs.insert(key, (file, pieces));
                        continue;
                    }
                    copy::copy_pieces(path, file, pieces, out, out_path, &mut |end, n| {
                        copied.fetch_add(n, Ordering::Relaxed);
                        writeback.wrote_to(end);
                    })?;
                }
                if let Some(stream) = stream {
                    let what = stream.describe();
                    let mut buf = vec![0u8; 1 << 20];
                    let mut output_err = None;
                    let mut delivered = 0usize;
                    stream
                        .run(&mut |key, data| {
                            if stop.load(Ordering::Relaxed) {
                                return Err(std::io::Error::other("the image write failed"));
                            }
                            let Some((file, pieces)) = streamed_jobs.get(&key) else {
                                return Err(std::io::Error::other(format!(
                                    "the stream delivered a file (key {key}) the image does not hold"
                                )));
                            };
                            delivered += 1;
                            copy::write_streamed(
                                data,
                                file.len,
                                pieces,
                                out,
                                &mut buf,
                                &mut |end, n| {
                                    copied.fetch_add(n, Ordering::Relaxed);
                                    writeback.wrote_to(end);
                                },
                            )
                            .map_err(|e| match e {
                                copy::CopyError::Read(e) => e,
                                copy::CopyError::Write(e) => {
                                    let kind = e.kind();
                                    output_err = Some(e);
                                    std::io::Error::new(kind, "writing the image failed")
                                }
                            })
                        })
                        .map_err(|source| match output_err.take() {
                            Some(source) => IsoError::Output {
                                path: out_path.to_owned(),
                                source,
                            },
                            None => IsoError::Input {
                                path: PathBuf::from(&what),
                                source,
                            },
                        })?;
                    if delivered != streamed_jobs.len() {
                        return Err(IsoError::Input {
                            path: PathBuf::from(&what),
                            source: std::io::Error::other(format!(
                                "the stream delivered {delivered} of {} files",
                                streamed_jobs.len()
                            )),
                        });
                    }
                }
                Ok(())
            });
            let mut dev = ImageDevice::new(out, &skip, &copied, progress);
            let written = hadris_iso::sync::write(&mut dev, &self.tree, &opts).map_err(|cause| {
                IsoError::Write {
                    path: out_path.to_owned(),
                    cause: Box::new(cause),
                }
            });
            if written.is_err() {
                stop.store(true, Ordering::Relaxed);
            }
            while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                done_rx.recv_timeout(std::time::Duration::from_millis(50))
            {
                dev.advance(0);
            }
            let copy_result = copier
                .join()
                .unwrap_or_else(|_| Err(IsoError::Boot("the copy thread panicked".to_owned())));
            dev.advance(0);
            let report = written?;
            copy_result?;
            Ok::<_, IsoError>(report)
        })?;
        if report.size() != planned.size() {
            return Err(IsoError::Boot(format!(
                "the layout changed between planning ({}) and writing ({})",
                planned.size(),
                report.size()
            )));
        }
        out.set_len(report.size())
            .and_then(|()| out.sync_all())
            .map_err(|source| IsoError::Output {
                path: out_path.to_owned(),
                source,
            })?;
        Ok(WriteReport {
            size: report.size(),
        })
    }
}

const SECTOR: u64 = 2048;

/// Where the layout put the file at `path` (image path without a leading `/`).
fn pieces_of(report: &hadris_fs::Report, path: &str, len: u64) -> Result<Vec<Piece>, IsoError> {
    let extents = report
        .extents(format!("/{path}"))
        .or_else(|| report.extents(path))
        .unwrap_or(&[]);
    // hadris reports a multi-extent file's extents in file order, each with file offset 0: the
    // offsets are the running sum.
    let mut file_offset = 0;
    let pieces: Vec<Piece> = extents
        .iter()
        .map(|e| {
            let piece = Piece {
                image_offset: e.offset(),
                file_offset,
                len: e.len(),
            };
            file_offset += e.len();
            piece
        })
        .collect();
    let total: u64 = pieces.iter().map(|p| p.len).sum();
    if total != len {
        return Err(IsoError::Boot(format!(
            "the layout placed {total} of the {len} bytes of {path}"
        )));
    }
    Ok(pieces)
}

/// The El Torito load size for the UEFI entry, in 512-byte virtual sectors.
///
/// The field is 16 bits. OVMF reads it as a count of 2 KiB blocks when it locates the ESP on a CD,
/// so a capped value (what hadris stores for a large ESP) hides the end of the ESP and OVMF fails
/// to find `BOOTX64.EFI` once the ESP exceeds 128 MiB. A value under 2 makes OVMF take the rest of
/// the medium instead, which is what xorriso achieves with 0 (hadris refuses 0).
fn efi_load_size(esp_bytes: u64) -> u16 {
    u16::try_from(esp_bytes.div_ceil(VIRTUAL_SECTOR)).unwrap_or(1)
}

/// Volume identifiers are restricted to d-characters so that every reader (blkid, the kernel,
/// Windows, the node's label probe) sees exactly the same string.
fn check_volume_id(id: &str) -> Result<(), IsoError> {
    let err = |reason| IsoError::VolumeId {
        id: id.to_owned(),
        reason,
    };
    if id.is_empty() {
        return Err(err("it is empty"));
    }
    if id.len() > 32 {
        return Err(err("it is longer than 32 characters"));
    }
    if !id
        .bytes()
        .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
    {
        return Err(err("only A-Z, 0-9 and _ are allowed"));
    }
    Ok(())
}

/// Image paths are relative, `/`-separated, without empty, `.` or `..` components or NUL bytes.
fn check_image_path(path: &str) -> Result<String, IsoError> {
    let err = |reason| IsoError::ImagePath {
        path: path.to_owned(),
        reason,
    };
    let trimmed = path.trim_start_matches('/').trim_end_matches('/');
    if trimmed.is_empty() {
        return Err(err("it names the root"));
    }
    if trimmed.contains('\0') {
        return Err(err("it contains a NUL byte"));
    }
    for part in trimmed.split('/') {
        match part {
            "" => return Err(err("it has an empty component")),
            "." | ".." => return Err(err("it has a . or .. component")),
            _ if part.len() > 255 => return Err(err("a component is longer than 255 bytes")),
            _ => {}
        }
    }
    Ok(trimmed.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volume_ids() {
        assert!(check_volume_id("TALOS_V1_9_0").is_ok());
        assert!(check_volume_id(&"A".repeat(32)).is_ok());
        assert!(check_volume_id(&"A".repeat(33)).is_err());
        assert!(check_volume_id("").is_err());
        assert!(check_volume_id("talos").is_err());
        assert!(check_volume_id("TALOS-1").is_err());
    }

    #[test]
    fn image_paths() {
        assert_eq!(check_image_path("/a/b/").unwrap(), "a/b");
        assert!(check_image_path("a/../b").is_err());
        assert!(check_image_path("a//b").is_err());
        assert!(check_image_path("/").is_err());
        assert!(check_image_path("a/\0").is_err());
    }

    #[test]
    fn efi_load_sizes() {
        assert_eq!(efi_load_size(2048), 4);
        assert_eq!(efi_load_size(32 * 1024 * 1024 - 512), 65535);
        // Past what 16 bits of 512-byte sectors can say: let OVMF use the rest of the medium.
        assert_eq!(efi_load_size(32 * 1024 * 1024), 1);
        assert_eq!(efi_load_size(200 * 1024 * 1024), 1);
    }

    #[test]
    fn duplicate_files_are_refused_and_dirs_merge() {
        let mut spec = IsoSpec::new("TEST", 0).unwrap();
        spec.add_bytes("a/b", b"x".to_vec()).unwrap();
        spec.add_dir("a").unwrap();
        assert!(matches!(
            spec.add_bytes("a/b", b"y".to_vec()),
            Err(IsoError::Duplicate { .. })
        ));
    }

    #[test]
    fn writes_a_readable_image_deterministically() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str| {
            let mut spec = IsoSpec::new("TEST", 1_700_000_000).unwrap();
            spec.add_bytes("imagecache/blob/sha256-aa", b"hello".to_vec())
                .unwrap();
            let path = dir.path().join(name);
            let file = File::create(&path).unwrap();
            let planned = spec.planned_size().unwrap();
            let mut last = 0;
            let report = spec.write(&file, &path, &mut |n| last = n).unwrap();
            assert_eq!(report.size, planned);
            assert_eq!(std::fs::metadata(&path).unwrap().len(), planned);
            assert!(last > 0);
            std::fs::read(&path).unwrap()
        };
        let a = write("a.iso");
        let b = write("b.iso");
        assert_eq!(a, b);
        // The primary volume descriptor carries the volume id.
        assert_eq!(&a[32768 + 1..32768 + 6], b"CD001");
        assert_eq!(&a[32768 + 40..32768 + 44], b"TEST");
    }

    /// Host file data goes in through the copy path; xorriso (an independent reader) must read
    /// back every byte, including unaligned tails and files that share no sector.
    #[test]
    fn host_files_read_back_through_xorriso() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        std::fs::create_dir_all(src.join("deep/er/and/deeper/than/eight/levels/go")).unwrap();
        let mut expected = Vec::new();
        for (i, len) in [0usize, 1, 2047, 2048, 2049, 300_001]
            .into_iter()
            .enumerate()
        {
            let data: Vec<u8> = (0..len).map(|j| (j * 31 + i * 7) as u8).collect();
            let rel = if i == 5 {
                format!("deep/er/and/deeper/than/eight/levels/go/file-{i}-with-a-long-name")
            } else {
                format!("f{i}")
            };
            std::fs::write(src.join(&rel), &data).unwrap();
            expected.push((rel, data));
        }
        let mut spec = IsoSpec::new("TEST", 0).unwrap();
        spec.add_dir_tree("imagecache", &src).unwrap();
        let iso = dir.path().join("t.iso");
        let file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&iso)
            .unwrap();
        spec.write(&file, &iso, &mut |_| {}).unwrap();

        let out = dir.path().join("x");
        let status = std::process::Command::new("xorriso")
            .args(["-osirrox", "on", "-indev"])
            .arg(&iso)
            .arg("-extract")
            .arg("/imagecache")
            .arg(&out)
            .output()
            .expect("xorriso is needed for this test (scripts/setup.sh installs it)");
        assert!(
            status.status.success(),
            "{}",
            String::from_utf8_lossy(&status.stderr)
        );
        for (rel, data) in expected {
            assert_eq!(std::fs::read(out.join(&rel)).unwrap(), data, "{rel}");
        }
    }

    /// A placeholder's read leaves hadris's buffer as it was, and hadris pads each file's last
    /// sector with zeros: the device must drop every byte written into a placeholder's extents,
    /// padding included, or it could land on the bytes the copy thread wrote.
    #[test]
    fn placeholder_bytes_never_reach_the_image() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        std::fs::create_dir(&src).unwrap();
        for (name, len) in [
            ("a", 1),
            ("b", 2047),
            ("c", 2049),
            ("d", 70_000),
            ("e", 131_072),
        ] {
            std::fs::write(src.join(name), vec![1u8; len]).unwrap();
        }
        let mut spec = IsoSpec::new("TEST", 0).unwrap();
        // Real bytes just before the placeholders, through the same buffer.
        spec.add_bytes("0-real", vec![0xab; 200_000]).unwrap();
        spec.add_dir_tree("files", &src).unwrap();
        let opts = spec.options().unwrap();
        let planned = hadris_iso::plan(&spec.tree, &opts).unwrap();
        let mut pieces = Vec::new();
        for (path, file) in &spec.host_files {
            pieces.extend(pieces_of(&planned, path, file.len).unwrap());
        }
        let skip = copy::skip_ranges(&pieces, SECTOR);
        // Each file's whole sectors, padding included (adjacent files merge into one range).
        assert_eq!(
            skip.iter().map(|(start, end)| end - start).sum::<u64>(),
            pieces
                .iter()
                .map(|p| p.len.next_multiple_of(SECTOR))
                .sum::<u64>()
        );
        // The layout alone, without the copy, over an output that holds a marker: a skipped byte
        // that no longer holds it was written.
        const MARK: u8 = 0xcd;
        let lay_out = |skip: &[(u64, u64)], name: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, vec![MARK; planned.size() as usize]).unwrap();
            let out = File::options().write(true).open(&path).unwrap();
            let copied = AtomicU64::new(0);
            let mut progress = |_: u64| {};
            let mut dev = ImageDevice::new(&out, skip, &copied, &mut progress);
            hadris_iso::sync::write(&mut dev, &spec.tree, &opts).unwrap();
            std::fs::read(&path).unwrap()
        };
        let image = lay_out(&skip, "skip.iso");
        for &(start, end) in &skip {
            assert!(
                image[start as usize..end as usize]
                    .iter()
                    .all(|&b| b == MARK),
                "bytes written into the skipped range {start}..{end}"
            );
        }
        // Without the skip ranges every one of those bytes is written: the check above can fail.
        let unskipped = lay_out(&[], "noskip.iso");
        for &(start, end) in &skip {
            assert!(!unskipped[start as usize..end as usize].contains(&MARK));
        }
        // Everything else is the same either way.
        let outside = |image: &[u8]| {
            copy::uncovered(&skip, 0, image.len() as u64)
                .into_iter()
                .flat_map(|(start, end)| image[start as usize..end as usize].to_vec())
                .collect::<Vec<u8>>()
        };
        assert_eq!(outside(&image), outside(&unskipped));
    }

    #[test]
    fn multi_extent_pieces_get_running_file_offsets() {
        let mut report = hadris_fs::Report::new();
        report.push_extent("/big", hadris_fs::Extent::new(1 << 20, 4_294_965_248));
        report.push_extent(
            "/big",
            hadris_fs::Extent::new((1 << 20) + 4_294_965_248, 4097),
        );
        let pieces = pieces_of(&report, "big", 4_294_965_248 + 4097).unwrap();
        assert_eq!(pieces[1].file_offset, 4_294_965_248);
        assert_eq!(pieces[0].file_offset, 0);
        assert!(pieces_of(&report, "big", 1).is_err());
    }
}

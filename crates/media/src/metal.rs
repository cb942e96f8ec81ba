//! `imager metal`: a GPT raw disk image, upstream's layout (`imager_disk::metal`), booted by
//! systemd-boot on UEFI and GRUB on BIOS, the cache on an ext4 `IMAGECACHE` partition.
//!
//! ```text
//! LBA 0      protective MBR, GRUB's boot.img code (patched with the core image's sector)
//! EFI        FAT: EFI/BOOT/BOOTX64.EFI (systemd-boot), loader/, A/vmlinuz, A/initramfs.xz
//! BIOS       GRUB's core image (its blocklist patched), legacy-BIOS-bootable
//! BOOT       FAT: grub/grub.cfg, A/vmlinuz, A/initramfs.xz (what GRUB reads on BIOS machines)
//! META       zeroed (a hole)
//! IMAGECACHE ext4 labelled IMAGECACHE: the cache's flat tree at its root
//! ```
//!
//! The image is a sparse file: the frame (tables, boot code) first, then each file system into
//! its partition's range; nothing is written where the partitions leave zeros. The two FAT file
//! systems are made as staged files the size of their contents (a few MB past the kernel and
//! initramfs) and moved into place by the kernel; the cache's bytes go straight from where they lie
//! into their ext4 extents. With `--out-format zst` (upstream's default) the raw image is
//! compressed into the final file and removed, as upstream does.
//!
//! arm64 (no BIOS) gets upstream's sd-boot layout instead: EFI (2101 MiB, holding
//! `EFI/BOOT/BOOTAA64.EFI`, `loader/` and `A/`), META, IMAGECACHE; no GRUB, no BIOS and BOOT
//! partitions, and a disk of `metal::SDBOOT_DISK_SIZE` before the cache.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use imager_cache::check::{Finding, UnusableImage};
use imager_cache::{Cache, Entry, InputForm, Location, Platform, ReadOptions};
use imager_disk::{DiskPlan, DiskSize, GrubBios, metal};
use imager_esp::EspSpec;
use imager_iso::Progress;
use imager_oci::Hasher;
use imager_staging::StagedFile;

use crate::assets::Assets;
use crate::bootcfg::{self, BootCfgError, BootFiles};
use crate::cache::{self, CacheError, CacheSelection};
use crate::iso::Arch;
use crate::version::{self, VersionError};

/// Staged-file prefixes, one per kind (a later run's sweep removes a killed run's).
const OUT_PREFIX: &str = ".metal-raw-";
const ZST_PREFIX: &str = ".metal-zst-";
const FAT_PREFIX: &str = ".imager-fat-";

/// Where the kernel and initramfs lie on both FAT file systems (upstream's BOOT layout).
const BOOT_FILES: BootFiles<'static> = BootFiles {
    kernel: "/A/vmlinuz",
    initramfs: "/A/initramfs.xz",
};

/// The output file's format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutFormat {
    /// A sparse raw disk image, `metal-<arch>.raw`.
    Raw,
    /// zstd-compressed, `metal-<arch>.raw.zst` (upstream's `metal` profile).
    Zstd,
}

impl OutFormat {
    /// Upstream's names (`raw`, `.zst`), with or without the dot.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "raw" => Some(Self::Raw),
            "zst" | ".zst" | "zstd" => Some(Self::Zstd),
            _ => None,
        }
    }

    fn suffix(self) -> &'static str {
        match self {
            Self::Raw => "raw",
            Self::Zstd => "raw.zst",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MetalError {
    #[error(transparent)]
    Version(#[from] VersionError),
    #[error(transparent)]
    BootCfg(#[from] BootCfgError),
    #[error("image cache {path}: {reason}")]
    Cache { path: PathBuf, reason: String },
    #[error(transparent)]
    CacheContent(#[from] CacheError),
    #[error("reading the image cache")]
    CacheRead {
        path: PathBuf,
        #[source]
        source: Box<imager_cache::LayoutError>,
    },
    #[error("{path} is not a directory (the image is written into it as metal-<arch>.raw[.zst])")]
    OutputNotDir { path: PathBuf },
    #[error("output directory {path}")]
    OutputDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "the disk of {size} bytes is too small for its partitions (--disk-size counts the disk without the IMAGECACHE partition)"
    )]
    DiskTooSmall {
        size: u64,
        #[source]
        source: imager_disk::DiskError,
    },
    #[error(transparent)]
    Disk(#[from] imager_disk::DiskError),
    #[error(transparent)]
    Esp(#[from] imager_esp::EspError),
    #[error("the {partition} file system is {needed} bytes; its partition has {room}")]
    FatTooBig {
        partition: &'static str,
        needed: u64,
        room: u64,
    },
    #[error("the cache's ext4 file system")]
    Ext4(#[from] imager_ext4::Ext4Error),
    #[error("writing {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("reading the cache's layer stream {path}")]
    Stream {
        path: PathBuf,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("moving the finished image to {path}")]
    Persist {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// What `imager metal` was asked for.
#[derive(Debug, Clone)]
pub struct MetalRequest {
    pub assets: Assets,
    pub image_cache: Option<PathBuf>,
    pub image_cache_ref_prefix: Option<String>,
    pub version: String,
    pub extra_kernel_args: Vec<String>,
    pub output_dir: PathBuf,
    pub arch: Arch,
    pub unix_time: i64,
    pub out_format: OutFormat,
    /// The disk without the cache partition ([`metal::DISK_SIZE`] when not given); the
    /// `IMAGECACHE` partition adds its own size, as upstream's does.
    pub disk_size: Option<u64>,
    /// Leave out images no node can pull instead of refusing the cache ([`cache::select`]).
    pub skip_unusable_images: bool,
    /// Hash every file named by a digest as it is copied; refuse one whose bytes are not its name.
    pub verify: bool,
    /// Refuse the cache when a node of [`Self::version`] would miss something in it (the
    /// installer, a Kubernetes image, a blob: [`cache::select`]) instead of warning.
    pub strict: bool,
}

/// The cache as it goes onto the disk: the entries selected, in the order given to the ext4
/// tree (`order[i]` is the cache entry of ext4 file `i`), and their layout.
#[derive(Debug)]
struct CacheOnDisk {
    cache: Cache,
    selection: CacheSelection,
    order: Vec<usize>,
    ext4: imager_ext4::Plan,
}

/// A planned metal image: inputs checked, both FAT file systems written to staged files, the
/// partitions and the ext4 layout known. Dropping it removes every staged file.
#[derive(Debug)]
pub struct MetalJob {
    plan: DiskPlan,
    /// GRUB for BIOS machines, and the BOOT file system it reads: amd64 only.
    grub: Option<GrubBios>,
    efi: (StagedFile, u64),
    boot: Option<(StagedFile, u64)>,
    cache: Option<CacheOnDisk>,
    verify: bool,
    out_tmp: StagedFile,
    output_dir: PathBuf,
    output: PathBuf,
    out_format: OutFormat,
}

impl MetalJob {
    pub fn prepare(req: &MetalRequest) -> Result<Self, MetalError> {
        version::check_version(&req.version)?;
        let cmdline = bootcfg::kernel_cmdline_for(req.arch, &req.extra_kernel_args)?;
        let grub_cfg = match req.assets.bios {
            Some(_) => Some(bootcfg::grub_cfg(
                &format!("Talos {} (imager)", req.version),
                BOOT_FILES,
                &req.extra_kernel_args,
            )?),
            None => None,
        };
        if req.output_dir.exists() && !req.output_dir.is_dir() {
            return Err(MetalError::OutputNotDir {
                path: req.output_dir.clone(),
            });
        }
        let out_dir_err = |source| MetalError::OutputDir {
            path: req.output_dir.clone(),
            source,
        };
        imager_staging::create_dir_all(&req.output_dir).map_err(out_dir_err)?;
        let output = req.output_dir.join(format!(
            "metal-{}.{}",
            req.arch.name(),
            req.out_format.suffix()
        ));

        // The cache first: the step most likely to fail on bad input.
        let cache = match &req.image_cache {
            Some(input) => Some(open_cache(input, req)?),
            None => None,
        };
        let grub = match &req.assets.bios {
            Some(bios) => Some(GrubBios::from_files(
                &bios.grub_boot_img,
                &bios.grub_core_img,
            )?),
            None => None,
        };

        let cache = match cache {
            Some(cache) => {
                let selection = cache::select(
                    &cache,
                    req.skip_unusable_images,
                    &media_check(req, cache.input())?,
                )?;
                let order: Vec<usize> = (0..cache.entries().len())
                    .filter(|&i| selection.includes(&cache.entries()[i]))
                    .collect();
                let files: Vec<(&str, u64)> = order
                    .iter()
                    .map(|&i| (cache.entries()[i].path.as_str(), cache.entries()[i].size))
                    .collect();
                let bytes: u64 = files.iter().map(|(_, size)| size).sum();
                let tree = imager_ext4::Tree::new(&files)?;
                // Upstream's size (the bytes + 20 %, whole MiB), or what the tree needs when a
                // cache of many small files needs more.
                let size = metal::imagecache_size(bytes).max(
                    imager_ext4::min_size(&tree).div_ceil(imager_disk::MIB) * imager_disk::MIB,
                );
                let ext4 = imager_ext4::Plan::new(
                    tree,
                    &imager_ext4::Options {
                        label: metal::IMAGECACHE.to_owned(),
                        unix_time: req.unix_time,
                        size,
                    },
                )?;
                Some(CacheOnDisk {
                    cache,
                    selection,
                    order,
                    ext4,
                })
            }
            None => None,
        };
        let cache_size = cache.as_ref().map(|c| c.ext4.size());
        let (mut sizes, default_disk) = match grub {
            Some(_) => (metal::MetalSizes::upstream(cache_size), metal::DISK_SIZE),
            None => (
                metal::MetalSizes::upstream_sdboot(cache_size),
                metal::SDBOOT_DISK_SIZE,
            ),
        };
        let disk_size = req.disk_size.unwrap_or(default_disk) + cache_size.unwrap_or(0);
        sizes.disk = DiskSize::Exact(disk_size);
        let plan = sizes
            .disk_spec()
            .plan()
            .map_err(|source| match req.disk_size {
                Some(_) => MetalError::DiskTooSmall {
                    size: disk_size,
                    source,
                },
                None => MetalError::Disk(source),
            })?;

        let fat = |label: &str, files: &mut dyn FnMut(&mut EspSpec) -> Result<(), MetalError>| {
            let mut spec = EspSpec::new(label, req.unix_time)?;
            files(&mut spec)?;
            let staged =
                StagedFile::create(&req.output_dir, FAT_PREFIX, 0o600).map_err(out_dir_err)?;
            let len = spec.write_to(staged.file(), staged.path())?;
            Ok::<_, MetalError>((staged, len))
        };
        let entry = bootcfg::systemd_boot_entry(
            &format!("Talos {} (imager)", req.version),
            BOOT_FILES,
            &cmdline,
        )?;
        let efi = fat("EFI", &mut |spec| {
            spec.add_file(req.arch.efi_boot_path(), &req.assets.systemd_boot)?
                .add_bytes("loader/loader.conf", bootcfg::systemd_boot_loader_conf())?
                .add_bytes("loader/entries/talos.conf", entry.clone())?
                .add_file("A/vmlinuz", &req.assets.kernel)?
                .add_file("A/initramfs.xz", &req.assets.initramfs)?;
            Ok(())
        })?;
        let boot = match &grub_cfg {
            Some(grub_cfg) => Some(fat("BOOT", &mut |spec| {
                spec.add_bytes("grub/grub.cfg", grub_cfg.clone())?
                    .add_file("A/vmlinuz", &req.assets.kernel)?
                    .add_file("A/initramfs.xz", &req.assets.initramfs)?;
                Ok(())
            })?),
            None => None,
        };
        let fats = [(metal::EFI, Some(&efi)), (metal::BOOT, boot.as_ref())];
        for (name, (_, len)) in fats.iter().filter_map(|(n, f)| Some((*n, (*f)?))) {
            let room = plan.partition(name).map_or(0, |p| p.len());
            if *len > room {
                return Err(MetalError::FatTooBig {
                    partition: name,
                    needed: *len,
                    room,
                });
            }
        }
        let out_tmp =
            StagedFile::create(&req.output_dir, OUT_PREFIX, 0o644).map_err(out_dir_err)?;
        Ok(Self {
            plan,
            grub,
            efi,
            boot,
            cache,
            verify: req.verify,
            out_tmp,
            output_dir: req.output_dir.clone(),
            output,
            out_format: req.out_format,
        })
    }

    /// Bytes of data the write moves (the two FAT file systems and the cache's files); what
    /// progress counts up to.
    pub fn data_bytes(&self) -> u64 {
        self.efi.1
            + self.boot.as_ref().map_or(0, |b| b.1)
            + self.cache.as_ref().map_or(0, |c| {
                c.order.iter().map(|&i| c.cache.entries()[i].size).sum()
            })
    }

    /// The raw image's size (its apparent size; it is sparse).
    pub fn disk_size(&self) -> u64 {
        self.plan.size()
    }

    /// Where the image appears when it is done.
    pub fn output(&self) -> &Path {
        &self.output
    }

    /// The cache, opened in place, if one was given.
    pub fn cache(&self) -> Option<&Cache> {
        self.cache.as_ref().map(|c| &c.cache)
    }

    /// Images left out because no node could pull them ([`MetalRequest::skip_unusable_images`]).
    pub fn skipped_images(&self) -> &[UnusableImage] {
        self.cache.as_ref().map_or(&[], |c| &c.selection.skipped)
    }

    /// What a node of the image would miss in its cache ([`cache::select`]; empty when the
    /// request was strict, which refuses such a cache).
    pub fn cache_findings(&self) -> &[Finding] {
        self.cache.as_ref().map_or(&[], |c| &c.selection.findings)
    }

    /// What of the cache was not checked against the version, and why.
    pub fn cache_notes(&self) -> &[String] {
        self.cache.as_ref().map_or(&[], |c| &c.selection.notes)
    }

    /// Files left out because the format has no place for them.
    pub fn left_out_files(&self) -> &[imager_cache::Problem] {
        self.cache
            .as_ref()
            .map_or(&[], |c| &c.selection.left_out_files)
    }

    /// The form the image cache was given in, if one was.
    pub fn cache_form(&self) -> Option<InputForm> {
        self.cache().map(Cache::form)
    }

    /// Writes the image, syncs it and renames it into place (compressed first with `zst`).
    pub fn write(self, progress: &mut dyn Progress) -> Result<PathBuf, MetalError> {
        let out = self.out_tmp.file();
        let write_err = |source| MetalError::Write {
            path: self.out_tmp.path().to_owned(),
            source,
        };
        self.plan.write_frame(out, self.grub.as_ref())?;
        let mut done = 0u64;
        let fats = [
            (metal::EFI, Some(&self.efi)),
            (metal::BOOT, self.boot.as_ref()),
        ];
        for (name, (staged, len)) in fats.iter().filter_map(|(n, f)| Some((*n, (*f)?))) {
            let at = self.plan.partition(name).map_or(0, |p| p.offset());
            imager_copy::copy_range(staged.file(), 0, out, at, *len).map_err(write_err)?;
            done += len;
            progress.written(done);
        }
        if let Some(c) = &self.cache {
            let at = self
                .plan
                .partition(metal::IMAGECACHE)
                .map_or(0, |p| p.offset());
            if c.cache.is_streamed() {
                c.ext4.write_metadata(out, at)?;
                stream_into(c, out, at, &mut |n| {
                    done += n;
                    progress.written(done);
                })?;
            } else {
                let mut data = CacheData {
                    disk: c,
                    open: Vec::new(),
                    writeback: imager_copy::Writeback::new(out),
                    verify: self.verify.then(|| (usize::MAX, Hasher::default(), 0)),
                    done: &mut done,
                    progress,
                };
                c.ext4.write(out, at, &mut data)?;
            }
        }
        out.sync_all().map_err(write_err)?;
        match self.out_format {
            OutFormat::Raw => {
                self.out_tmp
                    .persist(&self.output)
                    .map_err(|source| MetalError::Persist {
                        path: self.output.clone(),
                        source,
                    })?
            }
            OutFormat::Zstd => {
                let zst =
                    StagedFile::create(&self.output_dir, ZST_PREFIX, 0o644).map_err(|source| {
                        MetalError::OutputDir {
                            path: self.output_dir.clone(),
                            source,
                        }
                    })?;
                compress(out, zst.file()).map_err(|source| MetalError::Write {
                    path: zst.path().to_owned(),
                    source,
                })?;
                zst.persist(&self.output)
                    .map_err(|source| MetalError::Persist {
                        path: self.output.clone(),
                        source,
                    })?;
                // The raw temp is removed when it drops.
            }
        }
        Ok(self.output)
    }
}

/// Opens the cache for the medium's platform (what goes onto the disk is [`cache::select`]'s).
fn open_cache(input: &Path, req: &MetalRequest) -> Result<Cache, MetalError> {
    let opts = ReadOptions {
        platform: Platform::parse(&format!("linux/{}", req.arch.name())).map_err(|err| {
            MetalError::Cache {
                path: input.to_owned(),
                reason: err.to_string(),
            }
        })?,
        ref_prefix: req.image_cache_ref_prefix.clone(),
    };
    Cache::open(input, &opts).map_err(|source| MetalError::CacheRead {
        path: input.to_owned(),
        source: Box::new(source),
    })
}

/// The cache's files as the ext4 writer asks for them: each range moved by the kernel from where
/// the cache model says it lies. With `verify`, each file named by a digest is hashed from the
/// output as its pieces land (in the page cache still), and a mismatch fails the write.
struct CacheData<'a> {
    disk: &'a CacheOnDisk,
    /// Source files opened so far (a cache has one or a few).
    open: Vec<(PathBuf, File)>,
    /// The file being hashed, its hasher and the bytes hashed so far.
    verify: Option<(usize, Hasher, u64)>,
    /// Files are written in extent order, so the disk can write back behind the copy.
    writeback: imager_copy::Writeback<'a>,
    done: &'a mut u64,
    progress: &'a mut dyn Progress,
}

impl imager_ext4::FileData for CacheData<'_> {
    fn copy(
        &mut self,
        index: usize,
        file_offset: u64,
        out: &File,
        out_offset: u64,
        len: u64,
    ) -> io::Result<()> {
        let cache = &self.disk.cache;
        let entry: &Entry = self
            .disk
            .order
            .get(index)
            .and_then(|&i| cache.entries().get(i))
            .ok_or_else(|| {
                io::Error::new(io::ErrorKind::NotFound, format!("no cache entry {index}"))
            })?;
        let (host, runs) = cache
            .pieces(entry)
            .ok_or_else(|| io::Error::other(format!("{}: not readable in place", entry.path)))?;
        let src = match self.open.iter().position(|(p, _)| p == host) {
            Some(i) => &self.open[i].1,
            None => {
                let file = File::open(host)
                    .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", host.display())))?;
                self.open.push((host.to_owned(), file));
                &self.open[self.open.len() - 1].1
            }
        };
        let mut at = out_offset;
        for (src_offset, piece) in imager_copy::map_runs(&runs, file_offset, len) {
            imager_copy::copy_range(src, src_offset, out, at, piece)?;
            at += piece;
        }
        if at - out_offset != len {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("{}: shorter than its listed size", entry.path),
            ));
        }
        if let Some(state) = &mut self.verify
            && let Some(want) = imager_cache::flat::named_digest(&entry.path)
        {
            if state.0 != index {
                *state = (index, Hasher::default(), 0);
            }
            hash_from(out, out_offset, len, &mut state.1)?;
            state.2 += len;
            if state.2 == entry.size {
                let (got, _) = std::mem::take(&mut state.1).finish();
                if got != want {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("{}: its bytes hash to {got}, not its name", entry.path),
                    ));
                }
            }
        }
        self.writeback.wrote_to(out_offset + len);
        *self.done += len;
        self.progress.written(*self.done);
        Ok(())
    }
}

/// Feeds `len` bytes of `file` at `offset` to `hasher`.
fn hash_from(file: &File, mut offset: u64, len: u64, hasher: &mut Hasher) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    let mut buf = vec![0u8; (1 << 20).min(len as usize)];
    let mut left = len;
    while left > 0 {
        let take = left.min(buf.len() as u64) as usize;
        file.read_exact_at(&mut buf[..take], offset)?;
        hasher.update(&buf[..take]);
        offset += take as u64;
        left -= take as u64;
    }
    Ok(())
}

/// A compressed cache: its one stream read in order, each file's bytes written into the extents
/// the ext4 plan gave it.
fn stream_into(
    disk: &CacheOnDisk,
    out: &File,
    at: u64,
    progress: &mut dyn FnMut(u64),
) -> Result<(), MetalError> {
    use std::os::unix::fs::FileExt;
    let cache = &disk.cache;
    let mut buf = vec![0u8; 1 << 20];
    cache
        .read_stream(&mut |entry, data| {
            let in_cache = cache
                .entries()
                .binary_search_by(|e| e.path.as_str().cmp(&entry.path))
                .map_err(|_| io::Error::other(format!("{}: not in the listing", entry.path)))?;
            // Left out of the disk: read past (the stream still hashes it).
            let Ok(index) = disk.order.binary_search(&in_cache) else {
                return io::copy(data, &mut io::sink()).map(|_| ());
            };
            if !matches!(entry.location, Location::Stream { .. }) {
                return Ok(());
            }
            for piece in disk.ext4.pieces(index) {
                let mut left = piece.len;
                let mut dst = at + piece.fs_offset;
                while left > 0 {
                    let take = left.min(buf.len() as u64) as usize;
                    data.read_exact(&mut buf[..take])?;
                    out.write_all_at(&buf[..take], dst)?;
                    dst += take as u64;
                    left -= take as u64;
                    progress(take as u64);
                }
            }
            Ok(())
        })
        .map_err(|source| MetalError::Stream {
            path: cache.input().to_owned(),
            source: Box::new(source),
        })
}

/// zstd of the raw image, on every core, as upstream's output. Holes read as zeros; they
/// compress to almost nothing.
fn compress(raw: &File, out: &File) -> io::Result<()> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
    let mut encoder = zstd::stream::write::Encoder::new(out, 3)?;
    encoder.multithread(threads)?;
    let mut reader = io::BufReader::with_capacity(1 << 20, FromStart { file: raw, at: 0 });
    io::copy(&mut reader, &mut encoder)?;
    encoder.finish()?.sync_all()
}

/// Reads a file from its start by position, whatever its file offset is.
struct FromStart<'a> {
    file: &'a File,
    at: u64,
}

impl Read for FromStart<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        use std::os::unix::fs::FileExt;
        let n = self.file.read_at(buf, self.at)?;
        self.at += n as u64;
        Ok(n)
    }
}

/// What the cache is checked against for `req`'s medium ([`cache::select`]).
fn media_check(req: &MetalRequest, input: &Path) -> Result<cache::MediaCheck, MetalError> {
    Ok(cache::MediaCheck {
        version: req.version.clone(),
        platform: Platform::parse(&format!("linux/{}", req.arch.name())).map_err(|err| {
            MetalError::Cache {
                path: input.to_owned(),
                reason: err.to_string(),
            }
        })?,
        strict: req.strict,
    })
}

//! `imager iso`: the hybrid ISO layout.
//!
//! ```text
//! ISO 9660 (Rock Ridge, level 3)          FAT ESP (appended GPT partition, El Torito 0xEF)
//!   isolinux/isolinux.bin  (El Torito)      EFI/BOOT/BOOTX64.EFI   systemd-boot
//!   isolinux/ldlinux.c32                    loader/loader.conf
//!   isolinux/isolinux.cfg                   loader/entries/talos.conf
//!   isolinux/boot.cat                       talos/vmlinuz
//!   boot/vmlinuz                            talos/initramfs.xz
//!   boot/initramfs.xz
//!   imagecache/...         the image cache as a flat tree (copied from wherever its bytes lie)
//! ```
//!
//! The kernel and initramfs are stored twice: UEFI firmware reads only FAT, and ISOLINUX only
//! ISO 9660. Both boot loaders get the same command line from [`crate::bootcfg`].
//!
//! arm64 media boot on UEFI only: no ISOLINUX, no `boot/` copy of the kernel, no MBR boot code;
//! the El Torito catalog has the one 0xEF entry, the ESP holds `EFI/BOOT/BOOTAA64.EFI`, and the
//! system area a GPT naming the appended ESP (for the dd path).

use std::path::{Path, PathBuf};

use imager_cache::{Cache, Finding, InputForm, Location, Platform, ReadOptions, UnusableImage};
use imager_esp::EspSpec;
use imager_iso::{BiosBoot, IsoSpec, Progress};
use imager_staging::StagedFile;

use crate::assets::Assets;
use crate::bootcfg::{self, BootCfgError, BootFiles};
use crate::cache::{self, CacheError, CacheSelection};
use crate::label::{self, LabelError};
use crate::version::{self, VersionError};

/// The staged names in the output directory: the image being written, and its ESP.
pub const ISO_TEMP_PREFIX: &str = ".metal-iso-";
pub const ESP_TEMP_PREFIX: &str = ".imager-esp-";

/// Only the MBR boot code fits before the boot-image address at byte 432.
const MBR_CODE_LEN: usize = 432;

/// The architectures media can be made for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    /// BIOS and UEFI.
    Amd64,
    /// UEFI only: there is no BIOS on arm64.
    Arm64,
}

impl Arch {
    pub fn parse(s: &str) -> Result<Self, IsoError> {
        match s {
            "amd64" | "x86_64" => Ok(Self::Amd64),
            "arm64" | "aarch64" => Ok(Self::Arm64),
            other => Err(IsoError::Arch(other.to_owned())),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Amd64 => "amd64",
            Self::Arm64 => "arm64",
        }
    }

    /// The removable-media boot path UEFI firmware of this architecture starts (UEFI spec,
    /// "Removable Media Boot Behavior").
    pub fn efi_boot_path(self) -> &'static str {
        match self {
            Self::Amd64 => "EFI/BOOT/BOOTX64.EFI",
            Self::Arm64 => "EFI/BOOT/BOOTAA64.EFI",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum IsoError {
    #[error("architecture {0:?} is not supported: amd64 (x86_64) and arm64 (aarch64) are")]
    Arch(String),
    #[error(transparent)]
    Version(#[from] VersionError),
    #[error(transparent)]
    Label(#[from] LabelError),
    #[error(transparent)]
    BootCfg(#[from] BootCfgError),
    #[error("image cache {path}: {reason}")]
    Cache { path: PathBuf, reason: String },
    /// What of the cache can go onto the medium ([`crate::cache`]).
    #[error(transparent)]
    CacheContent(#[from] CacheError),
    /// The cache reader's errors name the input themselves.
    #[error("reading the image cache")]
    CacheRead {
        path: PathBuf,
        #[source]
        source: Box<imager_cache::LayoutError>,
    },
    #[error("{path} is not a directory (the image is written into it as metal-<arch>.iso)")]
    OutputNotDir { path: PathBuf },
    /// The file system of the output directory has less room than the image takes.
    #[error(
        "{path}: the image needs {}{}, and its file system has {} free",
        if *.at_least { "at least " } else { "" },
        size_text(*.needed),
        size_text(*.available)
    )]
    NoRoom {
        path: PathBuf,
        needed: u64,
        available: u64,
        /// `needed` is what a compressed cache layer declared before its listing stopped.
        at_least: bool,
    },
    #[error("output directory {path}")]
    OutputDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("reading {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Esp(#[from] imager_esp::EspError),
    #[error(transparent)]
    Iso(#[from] imager_iso::IsoError),
    #[error("moving the finished image to {path}")]
    Persist {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// What `imager iso` was asked for.
#[derive(Debug, Clone)]
pub struct IsoRequest {
    pub assets: Assets,
    /// An image cache in any form `imager-cache` reads (flat tree, oci-wrapped, OCI layout); its
    /// flat tree goes under `imagecache/`.
    pub image_cache: Option<PathBuf>,
    /// Registry and repository for images an OCI layout names by a bare tag.
    pub image_cache_ref_prefix: Option<String>,
    /// Talos version, e.g. `v1.9.0` (see [`crate::version`]): names the volume.
    pub version: String,
    /// Overrides the label derived from the version.
    pub label: Option<String>,
    pub extra_kernel_args: Vec<String>,
    pub output_dir: PathBuf,
    pub arch: Arch,
    /// Every date in the image (from `SOURCE_DATE_EPOCH` for reproducible builds).
    pub unix_time: i64,
    /// Leave out of the medium the cache's images no node can pull (an index none of whose
    /// images is cached) instead of refusing the cache; [`IsoJob::skipped_images`] names them.
    pub skip_unusable_images: bool,
    /// Hash every cache file named by a digest while it is copied (the kernel's copy is given
    /// up for a buffered one) and refuse one whose bytes are not its name. Files of a
    /// compressed layer are hashed whatever this says: their bytes pass through the process.
    pub verify: bool,
    /// Refuse the cache when a node of [`Self::version`] would miss something in it (the
    /// installer, a Kubernetes image, a blob: [`cache::select`]) instead of warning.
    pub strict: bool,
}

/// A planned ISO: inputs checked, the ESP written to a temp file, the layout known. Dropping it
/// removes every temporary file; nothing is under the final name until [`IsoJob::write`] succeeds.
/// Both temps are staged (`imager-staging`): locked while they live, swept by a later run if the
/// process was killed, removed on SIGINT/SIGTERM.
#[derive(Debug)]
pub struct IsoJob {
    spec: IsoSpec,
    size: u64,
    output: PathBuf,
    label: String,
    out_tmp: StagedFile,
    _esp_tmp: StagedFile,
    /// The cache, opened in place: its bytes are read when the image is written.
    cache: Option<Cache>,
    /// What of it goes onto the medium.
    selection: CacheSelection,
}

impl IsoJob {
    pub fn prepare(req: &IsoRequest) -> Result<Self, IsoError> {
        version::check_version(&req.version)?;
        let label = match &req.label {
            Some(label) => label.clone(),
            None => label::label_for_version(&req.version),
        };
        label::check_label(&label)?;
        let cmdline = bootcfg::kernel_cmdline_for(req.arch, &req.extra_kernel_args)?;

        if req.output_dir.exists() && !req.output_dir.is_dir() {
            return Err(IsoError::OutputNotDir {
                path: req.output_dir.clone(),
            });
        }
        std::fs::create_dir_all(&req.output_dir).map_err(|source| IsoError::OutputDir {
            path: req.output_dir.clone(),
            source,
        })?;
        let output = req
            .output_dir
            .join(format!("metal-{}.iso", req.arch.name()));
        let tmp_in = |prefix: &str| {
            // What any new file gets (0666 less the umask), not a private 0600: the ISO is read
            // by libvirt, web servers and other users.
            StagedFile::create(&req.output_dir, prefix, 0o666).map_err(|source| {
                IsoError::OutputDir {
                    path: req.output_dir.clone(),
                    source,
                }
            })
        };

        // What the image may take: a compressed cache layer is not expanded past it, and the
        // planned image is checked against it before a byte of the image is written.
        let room = free_bytes(&req.output_dir).map_err(|source| IsoError::OutputDir {
            path: req.output_dir.clone(),
            source,
        })?;

        // Open the cache first: it is the step most likely to fail on bad input. Nothing is
        // copied: entries are read from wherever they lie when the image is written.
        let cache = match &req.image_cache {
            Some(input) => {
                let opts = ReadOptions {
                    platform: Platform::parse(&format!("linux/{}", req.arch.name())).map_err(
                        |err| IsoError::Cache {
                            path: input.clone(),
                            reason: err.to_string(),
                        },
                    )?,
                    ref_prefix: req.image_cache_ref_prefix.clone(),
                };
                Some(Cache::open_within(input, &opts, room).map_err(
                    |source| match source.no_room() {
                        Some((declared, room)) => IsoError::NoRoom {
                            path: req.output_dir.clone(),
                            needed: declared,
                            available: room,
                            at_least: true,
                        },
                        None => IsoError::CacheRead {
                            path: input.clone(),
                            source: Box::new(source),
                        },
                    },
                )?)
            }
            None => None,
        };

        let esp_tmp = tmp_in(ESP_TEMP_PREFIX)?;
        let mut esp = EspSpec::new("EFIBOOT", req.unix_time)?;
        let uefi_files = BootFiles {
            kernel: "/talos/vmlinuz",
            initramfs: "/talos/initramfs.xz",
        };
        esp.add_file(req.arch.efi_boot_path(), &req.assets.systemd_boot)?
            .add_bytes("loader/loader.conf", bootcfg::systemd_boot_loader_conf())?
            .add_bytes(
                "loader/entries/talos.conf",
                bootcfg::systemd_boot_entry(
                    &format!("Talos {} (imager)", req.version),
                    uefi_files,
                    &cmdline,
                )?,
            )?
            .add_file("talos/vmlinuz", &req.assets.kernel)?
            .add_file("talos/initramfs.xz", &req.assets.initramfs)?;
        esp.write_to(esp_tmp.file(), esp_tmp.path())?;

        let mut spec = IsoSpec::new(&label, req.unix_time)?;
        spec.volume_set_id(&label::volume_set_id(&req.version))
            .application_id("IMAGER");
        // BIOS machines (amd64 only) boot ISOLINUX, which reads the ISO 9660 side; UEFI-only
        // media (arm64) carry the kernel on the ESP alone, as upstream's arm64 ISO does.
        let bios = match &req.assets.bios {
            Some(bios) => {
                let mbr = std::fs::read(&bios.isohybrid_mbr).map_err(|source| IsoError::Read {
                    path: bios.isohybrid_mbr.clone(),
                    source,
                })?;
                let bios_files = BootFiles {
                    kernel: "/boot/vmlinuz",
                    initramfs: "/boot/initramfs.xz",
                };
                spec.add_file("boot/vmlinuz", &req.assets.kernel)?
                    .add_file("boot/initramfs.xz", &req.assets.initramfs)?
                    .add_file("isolinux/isolinux.bin", &bios.isolinux_bin)?
                    .add_file("isolinux/ldlinux.c32", &bios.ldlinux)?
                    .add_bytes(
                        "isolinux/isolinux.cfg",
                        bootcfg::isolinux_cfg(bios_files, &cmdline)?,
                    )?;
                Some(BiosBoot {
                    image: "isolinux/isolinux.bin".to_owned(),
                    catalog: "isolinux/boot.cat".to_owned(),
                    mbr_code: mbr[..mbr.len().min(MBR_CODE_LEN)].to_vec(),
                })
            }
            None => None,
        };
        let selection = match &cache {
            Some(cache) => {
                let selection = cache::select(
                    cache,
                    req.skip_unusable_images,
                    &media_check(req, cache.input())?,
                )?;
                add_cache(&mut spec, cache, &selection, req.verify)?;
                selection
            }
            None => CacheSelection::default(),
        };
        if let Some(bios) = bios {
            spec.bios_boot(bios)?;
        }
        spec.uefi_boot(esp_tmp.path());
        let size = spec.planned_size()?;
        // Measured again: the ESP now takes its room, and the disk may be shared.
        let available = free_bytes(&req.output_dir).map_err(|source| IsoError::OutputDir {
            path: req.output_dir.clone(),
            source,
        })?;
        check_room(&req.output_dir, size, available)?;

        Ok(Self {
            spec,
            size,
            output,
            label,
            out_tmp: tmp_in(ISO_TEMP_PREFIX)?,
            _esp_tmp: esp_tmp,
            cache,
            selection,
        })
    }

    /// The cache's images left out of the medium because no node could pull them (with
    /// [`IsoRequest::skip_unusable_images`]).
    pub fn skipped_images(&self) -> &[UnusableImage] {
        &self.selection.skipped
    }

    /// What a node of the medium would miss in its cache ([`cache::select`]; empty when the
    /// request was strict, which refuses such a cache).
    pub fn cache_findings(&self) -> &[Finding] {
        &self.selection.findings
    }

    /// What of the cache was not checked against the version, and why.
    pub fn cache_notes(&self) -> &[String] {
        &self.selection.notes
    }

    /// The cache's files left out of the medium because the format has no place for them.
    pub fn left_out_files(&self) -> &[imager_cache::Problem] {
        &self.selection.left_out_files
    }

    /// Bytes the image will have.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Where the image appears when it is done.
    pub fn output(&self) -> &Path {
        &self.output
    }

    /// The form the image cache was given in, if one was.
    pub fn cache_form(&self) -> Option<InputForm> {
        self.cache.as_ref().map(Cache::form)
    }

    /// The image cache going on the medium, as opened, if one was given.
    pub fn cache(&self) -> Option<&Cache> {
        self.cache.as_ref()
    }

    /// The volume label.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// Writes the image to its temp file, syncs it and renames it into place.
    pub fn write(self, progress: &mut dyn Progress) -> Result<PathBuf, IsoError> {
        let mut stream = self
            .cache
            .as_ref()
            .filter(|c| c.is_streamed())
            .map(|cache| CacheStream {
                cache,
                selection: &self.selection,
            });
        self.spec.write_with(
            self.out_tmp.file(),
            self.out_tmp.path(),
            progress,
            stream
                .as_mut()
                .map(|s| s as &mut (dyn imager_iso::Stream + Send)),
        )?;
        self.out_tmp
            .persist(&self.output)
            .map_err(|source| IsoError::Persist {
                path: self.output.clone(),
                source,
            })?;
        Ok(self.output)
    }
}

/// Bytes an unprivileged writer may still take on the file system holding `dir` (the blocks kept
/// for root are not counted on: a build must not depend on them).
fn free_bytes(dir: &Path) -> std::io::Result<u64> {
    let st = rustix::fs::statvfs(dir)?;
    Ok(st.f_bavail.saturating_mul(st.f_frsize))
}

/// Refuses an image of `needed` bytes for an output directory with `available` bytes free.
fn check_room(dir: &Path, needed: u64, available: u64) -> Result<(), IsoError> {
    if needed > available {
        return Err(IsoError::NoRoom {
            path: dir.to_owned(),
            needed,
            available,
            at_least: false,
        });
    }
    Ok(())
}

/// `N bytes (X.Y GiB)`: exact, and readable.
fn size_text(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut value = bytes as f64;
    let mut unit = "";
    for u in UNITS {
        if value < 1024.0 {
            break;
        }
        value /= 1024.0;
        unit = u;
    }
    if unit.is_empty() {
        format!("{bytes} bytes")
    } else {
        format!("{bytes} bytes ({value:.1} {unit})")
    }
}

/// The directory of the image that holds the cache (what nodes look for).
const CACHE_DIR: &str = "imagecache";

/// Adds the selected entries of the cache under `imagecache/`, each from where its bytes lie
/// (the cache was checked by [`cache::select`]: symlinks, special files and names outside the
/// format were refused there). With `verify`, every file named by a digest is hashed as it is
/// copied.
fn add_cache(
    spec: &mut IsoSpec,
    cache: &Cache,
    selection: &CacheSelection,
    verify: bool,
) -> Result<(), IsoError> {
    spec.add_dir(CACHE_DIR)?;
    for entry in cache.entries().iter().filter(|e| selection.includes(e)) {
        let path = format!("{CACHE_DIR}/{}", entry.path);
        if let Location::Stream { ordinal } = entry.location {
            spec.add_streamed(&path, entry.size, ordinal as u64)?;
        } else if let Some((host, runs)) = cache.pieces(entry) {
            match imager_cache::flat::named_digest(&entry.path).filter(|_| verify) {
                Some(digest) => {
                    spec.add_file_runs_checked(&path, host, runs, entry.size, digest)?
                }
                None => spec.add_file_runs(&path, host, runs, entry.size)?,
            };
        }
    }
    Ok(())
}

/// A cache's compressed layer, read once while the image is written; every entry named by a
/// digest is hashed on the way ([`Cache::read_stream`]), whether it goes onto the medium or not.
struct CacheStream<'a> {
    cache: &'a Cache,
    selection: &'a CacheSelection,
}

impl imager_iso::Stream for CacheStream<'_> {
    fn describe(&self) -> String {
        self.cache.input().display().to_string()
    }

    fn run(
        &mut self,
        put: &mut dyn FnMut(u64, &mut dyn std::io::Read) -> std::io::Result<()>,
    ) -> std::io::Result<()> {
        self.cache
            .read_stream(&mut |entry, data| match entry.location {
                Location::Stream { ordinal } if self.selection.includes(entry) => {
                    put(ordinal as u64, data)
                }
                _ => Ok(()),
            })
            .map_err(std::io::Error::other)
    }
}

/// What the cache is checked against for `req`'s medium ([`cache::select`]).
fn media_check(req: &IsoRequest, input: &Path) -> Result<cache::MediaCheck, IsoError> {
    Ok(cache::MediaCheck {
        version: req.version.clone(),
        platform: Platform::parse(&format!("linux/{}", req.arch.name())).map_err(|err| {
            IsoError::Cache {
                path: input.to_owned(),
                reason: err.to_string(),
            }
        })?,
        strict: req.strict,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_is_checked_and_reported_in_bytes() {
        let dir = Path::new("/out");
        assert!(check_room(dir, 10, 10).is_ok());
        let err = check_room(dir, 3 << 30, 1 << 20).unwrap_err().to_string();
        assert_eq!(
            err,
            "/out: the image needs 3221225472 bytes (3.0 GiB), and its file system has \
             1048576 bytes (1.0 MiB) free"
        );
        assert_eq!(size_text(1023), "1023 bytes");
    }
}

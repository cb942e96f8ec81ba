//! The assets directory: the kernel, the initramfs and the boot-loader files that `cargo xtask
//! assets` unpacks from Debian packages (layout in docs/architecture.md, sources in docs/assets.md).

use std::io::Read as _;
use std::path::{Path, PathBuf};

use crate::formats::{self, InitramfsFormatError, KernelFormatError};
use crate::iso::Arch;

/// The container image's assets (see the Dockerfile).
pub const SYSTEM_ASSETS: &str = "/usr/share/imager/assets";

/// Files inside an assets directory.
pub const KERNEL: &str = "vmlinuz";
pub const INITRAMFS: &str = "initramfs.xz";
pub const ISOLINUX_BIN: &str = "isolinux/isolinux.bin";
pub const ISOLINUX_LDLINUX: &str = "isolinux/ldlinux.c32";
pub const ISOLINUX_MBR: &str = "isolinux/isohdpfx.bin";
pub const SYSTEMD_BOOT: &str = "efi/systemd-bootx64.efi";
/// GRUB for BIOS (`cargo xtask assets`): `boot.img` for the MBR and the i386-pc core image for
/// the BIOS boot partition. Only `imager metal` needs them; they are checked when it loads them.
pub const GRUB_BOOT_IMG: &str = "grub/boot.img";
pub const GRUB_CORE_IMG: &str = "grub/core.img";
/// arm64's files, beside amd64's (`cargo xtask assets` prepares both): the kernel, the initramfs
/// and systemd-boot for AArch64. arm64 has no BIOS, so nothing else.
pub const ARM64_KERNEL: &str = "arm64/vmlinuz";
pub const ARM64_INITRAMFS: &str = "arm64/initramfs.xz";
pub const ARM64_SYSTEMD_BOOT: &str = "arm64/efi/systemd-bootaa64.efi";

#[derive(Debug, thiserror::Error)]
pub enum AssetsError {
    #[error(
        "no assets directory: pass --assets DIR or set IMAGER_ASSETS (looked in {looked}); \
         `cargo xtask assets` prepares one"
    )]
    NotFound { looked: String },
    #[error("{what} {path} is missing or unreadable")]
    Missing {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{what} {path} is not a regular file")]
    NotAFile { what: &'static str, path: PathBuf },
    #[error("kernel {path} is not a Linux kernel an {arch} machine boots")]
    BadKernel {
        path: PathBuf,
        arch: &'static str,
        #[source]
        source: KernelFormatError,
    },
    #[error("initramfs {path} is not one the kernel unpacks")]
    BadInitramfs {
        path: PathBuf,
        #[source]
        source: InitramfsFormatError,
    },
}

/// The files one medium is made from. Each path has been checked to be a readable regular file;
/// the kernel to be one the architecture boots and the initramfs to be in a format the kernel
/// unpacks ([`crate::formats`]).
#[derive(Debug, Clone)]
pub struct Assets {
    pub kernel: PathBuf,
    pub initramfs: PathBuf,
    /// systemd-boot for the architecture's UEFI.
    pub systemd_boot: PathBuf,
    /// The BIOS boot loaders: amd64 only (`None` for arm64, which has no BIOS).
    pub bios: Option<BiosAssets>,
}

/// What BIOS machines boot: ISOLINUX for the ISO, GRUB for the metal image.
#[derive(Debug, Clone)]
pub struct BiosAssets {
    pub isolinux_bin: PathBuf,
    pub ldlinux: PathBuf,
    pub isohybrid_mbr: PathBuf,
    /// GRUB's `boot.img` and core image; not checked here (the ISO does not use them).
    pub grub_boot_img: PathBuf,
    pub grub_core_img: PathBuf,
}

/// Which assets directory to use: `explicit` (`--assets`), else `env` (`$IMAGER_ASSETS`), else
/// the container image's, else the one `cargo xtask assets` makes in this source tree.
pub fn locate(explicit: Option<&Path>, env: Option<&Path>) -> Result<PathBuf, AssetsError> {
    if let Some(dir) = explicit.or(env) {
        return Ok(dir.to_owned());
    }
    let candidates = [PathBuf::from(SYSTEM_ASSETS), source_tree_assets()];
    candidates
        .iter()
        .find(|dir| dir.is_dir())
        .cloned()
        .ok_or_else(|| AssetsError::NotFound {
            looked: candidates
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
        })
}

/// `_assets/` at the root of the source tree this binary was built from.
fn source_tree_assets() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../_assets");
    // Canonical for messages; the unresolved path when it does not exist (it is then reported as
    // one of the places looked in).
    std::fs::canonicalize(&dir).unwrap_or(dir)
}

impl Assets {
    /// The assets in `dir` for `arch`, with the kernel and initramfs replaced by `kernel` and
    /// `initramfs` when given.
    pub fn load(
        dir: &Path,
        kernel: Option<&Path>,
        initramfs: Option<&Path>,
        arch: Arch,
    ) -> Result<Self, AssetsError> {
        let pick =
            |given: Option<&Path>, name: &str| given.map_or_else(|| dir.join(name), Path::to_owned);
        let assets = match arch {
            Arch::Amd64 => Self {
                kernel: pick(kernel, KERNEL),
                initramfs: pick(initramfs, INITRAMFS),
                systemd_boot: dir.join(SYSTEMD_BOOT),
                bios: Some(BiosAssets {
                    isolinux_bin: dir.join(ISOLINUX_BIN),
                    ldlinux: dir.join(ISOLINUX_LDLINUX),
                    isohybrid_mbr: dir.join(ISOLINUX_MBR),
                    grub_boot_img: dir.join(GRUB_BOOT_IMG),
                    grub_core_img: dir.join(GRUB_CORE_IMG),
                }),
            },
            Arch::Arm64 => Self {
                kernel: pick(kernel, ARM64_KERNEL),
                initramfs: pick(initramfs, ARM64_INITRAMFS),
                systemd_boot: dir.join(ARM64_SYSTEMD_BOOT),
                bios: None,
            },
        };
        let mut files = vec![
            ("kernel", &assets.kernel),
            ("initramfs", &assets.initramfs),
            ("systemd-boot EFI binary", &assets.systemd_boot),
        ];
        if let Some(bios) = &assets.bios {
            files.extend([
                ("ISOLINUX boot image", &bios.isolinux_bin),
                ("ISOLINUX core module", &bios.ldlinux),
                ("isohybrid MBR boot code", &bios.isohybrid_mbr),
            ]);
        }
        for (what, path) in files {
            check_file(what, path)?;
        }
        let kernel_head = read_head("kernel", &assets.kernel)?;
        let kernel_ok = match arch {
            Arch::Amd64 => formats::check_amd64_kernel(&kernel_head),
            Arch::Arm64 => formats::check_arm64_kernel(&kernel_head),
        };
        kernel_ok.map_err(|source| AssetsError::BadKernel {
            path: assets.kernel.clone(),
            arch: arch.name(),
            source,
        })?;
        formats::initramfs_format(&read_head("initramfs", &assets.initramfs)?).map_err(
            |source| AssetsError::BadInitramfs {
                path: assets.initramfs.clone(),
                source,
            },
        )?;
        Ok(assets)
    }
}

/// The first [`formats::HEAD_LEN`] bytes of `path` (fewer if it is shorter).
fn read_head(what: &'static str, path: &Path) -> Result<Vec<u8>, AssetsError> {
    let missing = |source| AssetsError::Missing {
        what,
        path: path.to_owned(),
        source,
    };
    let mut head = Vec::with_capacity(formats::HEAD_LEN);
    std::fs::File::open(path)
        .map_err(missing)?
        .take(formats::HEAD_LEN as u64)
        .read_to_end(&mut head)
        .map_err(missing)?;
    Ok(head)
}

fn check_file(what: &'static str, path: &Path) -> Result<(), AssetsError> {
    let meta = std::fs::metadata(path).map_err(|source| AssetsError::Missing {
        what,
        path: path.to_owned(),
        source,
    })?;
    if !meta.is_file() {
        return Err(AssetsError::NotAFile {
            what,
            path: path.to_owned(),
        });
    }
    // Opening now turns a permission problem into an error that names the file, before any output.
    std::fs::File::open(path).map_err(|source| AssetsError::Missing {
        what,
        path: path.to_owned(),
        source,
    })?;
    Ok(())
}

//! Where the boot assets (`cargo xtask assets`) are, and whether they are all there.

use std::path::{Path, PathBuf};

/// Environment variable naming the assets directory (set by `cargo xtask test`).
pub const ASSETS_ENV: &str = "IMAGER_ASSETS";

/// The files of the assets directory contract in `docs/architecture.md`.
pub const ASSET_FILES: &[&str] = &[
    "vmlinuz",
    "initramfs.xz",
    "isolinux/isolinux.bin",
    "isolinux/isohdpfx.bin",
    "isolinux/ldlinux.c32",
    "efi/systemd-bootx64.efi",
    "grub/boot.img",
    "grub/core.img",
    "arm64/vmlinuz",
    "arm64/initramfs.xz",
    "arm64/efi/systemd-bootaa64.efi",
];

/// The repository root (this crate lives at `crates/boot-test`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}

/// `$IMAGER_ASSETS`, else `<repo>/_assets`.
pub fn assets_dir() -> PathBuf {
    std::env::var_os(ASSETS_ENV)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("_assets"))
}

/// Some boot assets are missing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "boot assets missing in {}: {}; run `cargo xtask assets` (or `cargo xtask test`, which does it), \
     or point {ASSETS_ENV} at an assets directory",
    dir.display(),
    missing.join(", ")
)]
pub struct MissingAssets {
    /// The directory looked in.
    pub dir: PathBuf,
    /// The files not found, relative to it.
    pub missing: Vec<String>,
}

/// Checks that `dir` holds every file of [`ASSET_FILES`].
pub fn check_assets(dir: &Path) -> Result<(), MissingAssets> {
    let missing: Vec<String> = ASSET_FILES
        .iter()
        .filter(|f| !dir.join(f).is_file())
        .map(|f| f.to_string())
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(MissingAssets {
            dir: dir.to_path_buf(),
            missing,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_every_missing_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("vmlinuz"), b"k").unwrap();
        std::fs::create_dir(dir.path().join("isolinux")).unwrap();
        std::fs::write(dir.path().join("isolinux/isolinux.bin"), b"i").unwrap();
        let err = check_assets(dir.path()).unwrap_err();
        assert_eq!(
            err.missing,
            [
                "initramfs.xz",
                "isolinux/isohdpfx.bin",
                "isolinux/ldlinux.c32",
                "efi/systemd-bootx64.efi",
                "grub/boot.img",
                "grub/core.img",
                "arm64/vmlinuz",
                "arm64/initramfs.xz",
                "arm64/efi/systemd-bootaa64.efi"
            ]
        );
        assert!(err.to_string().contains("cargo xtask assets"));
        for f in ASSET_FILES {
            let path = dir.path().join(f);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, b"x").unwrap();
        }
        assert_eq!(check_assets(dir.path()), Ok(()));
    }

    #[test]
    fn repo_root_holds_the_workspace_manifest() {
        assert!(repo_root().join("Cargo.toml").is_file());
        assert!(repo_root().join("crates/boot-test").is_dir());
    }
}

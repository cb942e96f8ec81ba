//! EFI system partition images: a FAT file system holding the EFI boot loader, its configuration
//! and what it loads, sized to its contents.
//!
//! `hadris-fat` does the formatting; it was chosen over `fatfs` 0.3.6 because the latter's
//! directories fail `fsck.fat -n` (see docs/decisions.md). The tests here and the oracle tests run
//! `fsck.fat -n` on what we write.

use std::fs::File;
use std::path::{Path, PathBuf};

use hadris_fat::{FatOptions, VolumeLabel};
use hadris_fs::{Content, DateTime, Node, Tree};

/// Why an ESP image could not be made.
#[derive(Debug, thiserror::Error)]
pub enum EspError {
    #[error("cannot read {path}")]
    Input {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid ESP label {label:?}: 1 to 11 of A-Z 0-9 _ -")]
    Label { label: String },
    #[error("invalid path in the ESP {path:?}")]
    Path { path: String },
    #[error("{path:?} is added to the ESP twice")]
    Duplicate { path: String },
    #[error("time {0} is out of range")]
    Time(i64),
    #[error("writing the FAT file system")]
    Fat(#[source] Box<hadris_fs::PathError>),
    #[error("writing {path}")]
    Output {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The files of an ESP. Paths are `/`-separated, e.g. `EFI/BOOT/BOOTX64.EFI`.
#[derive(Debug)]
pub struct EspSpec {
    label: String,
    unix_time: i64,
    tree: Tree,
    sizes: Vec<u64>,
}

impl EspSpec {
    /// An empty ESP with volume `label`, every date set to `unix_time`.
    pub fn new(label: &str, unix_time: i64) -> Result<Self, EspError> {
        let valid = !label.is_empty()
            && label.len() <= 11
            && label
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
        if !valid {
            return Err(EspError::Label {
                label: label.to_owned(),
            });
        }
        Ok(Self {
            label: label.to_owned(),
            unix_time,
            tree: Tree::new(),
            sizes: Vec::new(),
        })
    }

    /// Adds the host file `host` at `path`; it is read when the ESP is written.
    pub fn add_file(&mut self, path: &str, host: &Path) -> Result<&mut Self, EspError> {
        let len = std::fs::metadata(host)
            .map_err(|source| EspError::Input {
                path: host.to_owned(),
                source,
            })?
            .len();
        let content = hadris_fs::host::file(host).map_err(|err| EspError::Input {
            path: host.to_owned(),
            source: std::io::Error::other(err.to_string()),
        })?;
        self.insert(path, Node::file(content), len)
    }

    /// Adds `bytes` as a file at `path`.
    pub fn add_bytes(
        &mut self,
        path: &str,
        bytes: impl Into<Vec<u8>>,
    ) -> Result<&mut Self, EspError> {
        let bytes = bytes.into();
        let len = bytes.len() as u64;
        self.insert(path, Node::file(Content::bytes(bytes)), len)
    }

    fn insert(&mut self, path: &str, node: Node, len: u64) -> Result<&mut Self, EspError> {
        let bad = path.is_empty()
            || path.starts_with('/')
            || path
                .split('/')
                .any(|p| p.is_empty() || p == "." || p == "..");
        if bad {
            return Err(EspError::Path {
                path: path.to_owned(),
            });
        }
        if self.tree.get(path.as_bytes()).is_some() {
            return Err(EspError::Duplicate {
                path: path.to_owned(),
            });
        }
        self.tree
            .insert(path.as_bytes(), node)
            .map_err(|e| EspError::Fat(Box::new(e)))?;
        self.sizes.push(len);
        Ok(self)
    }

    /// The size the ESP image will have.
    pub fn size(&self) -> u64 {
        esp_size(&self.sizes)
    }

    /// Writes the FAT image to `out` (created or truncated) and returns its size. The caller
    /// renames it into place; a failed write leaves a file the caller deletes.
    pub fn write(&self, out: &Path) -> Result<u64, EspError> {
        // Read and write: formatting reads back what it wrote.
        let file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(out)
            .map_err(|source| EspError::Output {
                path: out.to_owned(),
                source,
            })?;
        self.write_to(&file, out)
    }

    /// Writes the FAT image into `file` (opened for reading and writing; `path` names it in
    /// errors), sized to the image, and returns its size: for a file the caller already holds,
    /// such as a staged temp.
    pub fn write_to(&self, file: &File, path: &Path) -> Result<u64, EspError> {
        let out_err = |source| EspError::Output {
            path: path.to_owned(),
            source,
        };
        let size = self.size();
        let time = DateTime::new(self.unix_time, 0).map_err(|_| EspError::Time(self.unix_time))?;
        let label = VolumeLabel::new(&self.label).map_err(|_| EspError::Label {
            label: self.label.clone(),
        })?;
        // Emptied first: formatting relies on the zeros of a new file where it writes nothing.
        file.set_len(0).map_err(out_err)?;
        file.set_len(size).map_err(out_err)?;
        let dev = hadris_storage::host::FileDevice::new(file.try_clone().map_err(out_err)?)
            .map_err(out_err)?;
        // The time fixes every date and, with no seed, the serial: reproducible by construction.
        let opts = FatOptions::new()
            .with_size(size)
            .with_label(label)
            .with_time(time);
        hadris_fat::sync::write(dev, &self.tree, &opts).map_err(|e| EspError::Fat(Box::new(e)))?;
        file.sync_all().map_err(out_err)?;
        Ok(size)
    }
}

/// Room for `files` (byte sizes) on FAT, rounded up to whole MiB.
///
/// Pure arithmetic, generous on purpose: each file is counted in 32 KiB clusters (the largest FAT
/// cluster hadris picks at these sizes), plus 1 MiB for FATs, directories and the boot sector, plus
/// 2 % slack. The floor of 8 MiB keeps the file system FAT16, which every UEFI firmware reads.
pub fn esp_size(files: &[u64]) -> u64 {
    const CLUSTER: u64 = 32 * 1024;
    const MIB: u64 = 1024 * 1024;
    let data: u64 = files
        .iter()
        .map(|len| len.div_ceil(CLUSTER) * CLUSTER)
        .sum();
    let total = data + MIB + data / 50;
    total.div_ceil(MIB).max(8) * MIB
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(esp_size(&[]), 8 << 20);
        assert_eq!(esp_size(&[1]), 8 << 20);
        let big = esp_size(&[40 << 20, 10 << 20]);
        assert!(big >= 51 << 20 && big.is_multiple_of(1 << 20), "{big}");
    }

    #[test]
    fn labels_and_paths() {
        assert!(EspSpec::new("EFIBOOT", 0).is_ok());
        assert!(EspSpec::new("efiboot", 0).is_err());
        assert!(EspSpec::new("TOO_LONG_LABEL", 0).is_err());
        let mut spec = EspSpec::new("EFI", 0).unwrap();
        assert!(spec.add_bytes("/abs", vec![]).is_err());
        assert!(spec.add_bytes("a/../b", vec![]).is_err());
        spec.add_bytes("a/b", vec![1]).unwrap();
        assert!(matches!(
            spec.add_bytes("a/b", vec![2]),
            Err(EspError::Duplicate { .. })
        ));
    }

    #[test]
    fn writes_a_clean_reproducible_fat() {
        let dir = tempfile::tempdir().unwrap();
        let make = |name: &str| {
            let mut spec = EspSpec::new("EFIBOOT", 1_700_000_000).unwrap();
            spec.add_bytes("EFI/BOOT/BOOTX64.EFI", vec![0x4d; 100_000])
                .unwrap();
            spec.add_bytes("loader/entries/talos.conf", b"title x\n".to_vec())
                .unwrap();
            let path = dir.path().join(name);
            let size = spec.write(&path).unwrap();
            assert_eq!(std::fs::metadata(&path).unwrap().len(), size);
            path
        };
        let a = make("a.img");
        let b = make("b.img");
        assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
        // An independent reader: dosfstools' checker, when it is installed (scripts/setup.sh).
        if let Ok(out) = std::process::Command::new("fsck.fat")
            .arg("-n")
            .arg(&a)
            .output()
        {
            assert!(
                out.status.success(),
                "fsck.fat -n: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

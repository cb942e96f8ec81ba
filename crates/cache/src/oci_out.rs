//! Writing a flat tree as an OCI image layout (the oci-wrapped form `talosctl images
//! cache-create --layout oci` writes): one image per platform, each with a single gzip'd tar layer
//! holding the whole flat tree.
//!
//! ```text
//! oci-layout                         {"imageLayoutVersion":"1.0.0"}
//! index.json                         one manifest per platform, `platform` and `ref.name` set
//! blobs/sha256/<layer>               the flat tree as a tar.gz, shared by every platform's image
//! blobs/sha256/<config>, <manifest>  per platform
//! ```
//!
//! Every platform's image carries the same layer (so the layout costs one copy of the tree): the
//! platform only tells a reader which image to take, and a node of any architecture is served
//! from the same tree. Upstream writes only the first requested platform, which is why arm64
//! media could not be built from its caches.
//!
//! Reproducible: entries in sorted order, owner 0, modes 0644/0755, times and the config's
//! `created` from one given epoch, no host names or user names, a fixed gzip level, JSON with
//! sorted keys. The tar goes through gzip and sha256 straight into its blob file, so memory does
//! not grow with the tree.

use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use flate2::Compression;
use flate2::write::GzEncoder;
use serde_json::json;

use crate::Platform;
use crate::digest::{BUF_SIZE, Digest, Hasher};
use crate::layout::REF_NAME;
use crate::manifest::{OCI_INDEX, OCI_MANIFEST};

pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// Stored (level 0) deflate. The tree is almost entirely compressed layers: measured on
/// incompressible data with zlib-rs, level 0 runs at ~680 MB/s and adds 0.02 %, level 1 at
/// ~50 MB/s adds 5 % (its static Huffman codes expand random bytes), levels 2-6 at 30-40 MB/s
/// gain nothing. Fixed, because the level is part of the layer's bytes (reproducibility).
const GZIP_LEVEL: u32 = 0;

#[derive(Debug, thiserror::Error)]
pub enum OciOutError {
    #[error("reading the cache tree at {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path}: {what} cannot be archived; a cache tree holds only files and directories")]
    NotArchivable { path: PathBuf, what: &'static str },
    #[error("{path}: the name is not UTF-8")]
    NotUtf8 { path: PathBuf },
    #[error("writing {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// One entry of the tree, in archive order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeEntry {
    /// Relative, `/`-separated; directories end with `/`.
    pub name: String,
    pub size: u64,
    pub is_dir: bool,
}

/// What was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrappedLayout {
    pub layer: Digest,
    pub layer_size: u64,
    /// The sha256 of the uncompressed tar (the config's `rootfs.diff_ids`).
    pub diff_id: Digest,
    /// Per platform, in `index.json` order: the platform and its image manifest.
    pub images: Vec<(Option<Platform>, Digest)>,
}

/// Lists `root` for the archive: depth first, each directory's entries sorted by name (bytes), a
/// directory before its contents. Symbolic links and special files are refused rather than
/// followed or archived.
pub fn tree_entries(root: &Path) -> Result<Vec<TreeEntry>, OciOutError> {
    let mut out = Vec::new();
    walk(root, "", &mut out)?;
    Ok(out)
}

fn walk(root: &Path, prefix: &str, out: &mut Vec<TreeEntry>) -> Result<(), OciOutError> {
    let dir = root.join(prefix);
    let read_err = |source| OciOutError::Read {
        path: dir.clone(),
        source,
    };
    let mut children = Vec::new();
    for entry in fs::read_dir(&dir).map_err(read_err)? {
        let entry = entry.map_err(read_err)?;
        let path = entry.path();
        let name = entry
            .file_name()
            .into_string()
            .map_err(|_| OciOutError::NotUtf8 { path: path.clone() })?;
        // DirEntry::metadata does not follow symlinks.
        let meta = entry.metadata().map_err(|source| OciOutError::Read {
            path: path.clone(),
            source,
        })?;
        let ft = meta.file_type();
        if ft.is_symlink() {
            return Err(OciOutError::NotArchivable {
                path,
                what: "a symbolic link",
            });
        }
        if !ft.is_dir() && !ft.is_file() {
            return Err(OciOutError::NotArchivable {
                path,
                what: "a special file",
            });
        }
        children.push((name, ft.is_dir(), meta.len()));
    }
    children.sort();
    for (name, is_dir, size) in children {
        let rel = format!("{prefix}{name}");
        if is_dir {
            let dir_name = format!("{rel}/");
            out.push(TreeEntry {
                name: dir_name.clone(),
                size: 0,
                is_dir: true,
            });
            walk(root, &dir_name, out)?;
        } else {
            out.push(TreeEntry {
                name: rel,
                size,
                is_dir: false,
            });
        }
    }
    Ok(())
}

/// Writes the OCI layout for the flat tree at `tree` into `out` (created if missing, expected
/// empty): the layer, then per platform a config and a manifest, then `index.json` and
/// `oci-layout`. `epoch` dates the tar entries and the configs. `progress` is told the bytes of
/// file data archived so far.
pub fn write_wrapped_layout(
    tree: &Path,
    out: &Path,
    platforms: &[Option<Platform>],
    epoch: u64,
    progress: &mut dyn FnMut(u64),
) -> Result<WrappedLayout, OciOutError> {
    let entries = tree_entries(tree)?;
    let blobs = out.join("blobs/sha256");
    fs::create_dir_all(&blobs).map_err(|source| OciOutError::Write {
        path: blobs.clone(),
        source,
    })?;
    let (layer, layer_size, diff_id) = write_layer(tree, &entries, &blobs, epoch, progress)?;
    let created = rfc3339(epoch);
    let mut images = Vec::new();
    let mut index_entries = Vec::new();
    for platform in platforms {
        let config = config_json(platform.as_ref(), &diff_id, &created);
        let config_digest = write_blob(&blobs, &config)?;
        let manifest = manifest_json((&config_digest, config.len() as u64), (&layer, layer_size));
        let manifest_digest = write_blob(&blobs, &manifest)?;
        index_entries.push((
            platform.clone(),
            manifest_digest,
            manifest.len() as u64,
            ref_name(platform.as_ref()),
        ));
        images.push((platform.clone(), manifest_digest));
    }
    write_file(&out.join("index.json"), &index_json(&index_entries))?;
    write_file(
        &out.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )?;
    Ok(WrappedLayout {
        layer,
        layer_size,
        diff_id,
        images,
    })
}

/// A writer that hashes and counts what passes through it.
struct HashingWriter<W> {
    inner: W,
    hasher: Hasher,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Streams the tar of `entries` through gzip into a temp file in `blobs`, hashing the tar (the
/// diff ID) and the gzip stream (the digest) on the way, then names the file by its digest.
fn write_layer(
    tree: &Path,
    entries: &[TreeEntry],
    blobs: &Path,
    epoch: u64,
    progress: &mut dyn FnMut(u64),
) -> Result<(Digest, u64, Digest), OciOutError> {
    let tmp = tempfile::Builder::new()
        .prefix(".tmp-layer-")
        .tempfile_in(blobs)
        .map_err(|source| OciOutError::Write {
            path: blobs.to_owned(),
            source,
        })?;
    let tmp_path = tmp.path().to_owned();
    let write_err = |source| OciOutError::Write {
        path: tmp_path.clone(),
        source,
    };
    let file = tmp.as_file().try_clone().map_err(write_err)?;
    let compressed = HashingWriter {
        inner: BufWriter::with_capacity(BUF_SIZE, file),
        hasher: Hasher::default(),
    };
    let gz = GzEncoder::new(compressed, Compression::new(GZIP_LEVEL));
    let mut builder = tar::Builder::new(HashingWriter {
        inner: gz,
        hasher: Hasher::default(),
    });
    let mut archived = 0u64;
    for entry in entries {
        let mut header = tar::Header::new_gnu();
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(epoch);
        if entry.is_dir {
            header.set_entry_type(tar::EntryType::Directory);
            header.set_mode(0o755);
            header.set_size(0);
            builder
                .append_data(&mut header, &entry.name, io::empty())
                .map_err(write_err)?;
            continue;
        }
        let path = tree.join(&entry.name);
        let file = File::open(&path).map_err(|source| OciOutError::Read {
            path: path.clone(),
            source,
        })?;
        header.set_entry_type(tar::EntryType::Regular);
        header.set_mode(0o644);
        header.set_size(entry.size);
        // Exactly the listed size: a file that changed since it was listed makes the archive
        // fail (tar refuses a short read) rather than carry a header that lies.
        let reader = Progressing {
            inner: file.take(entry.size),
            done: archived,
            progress: &mut *progress,
        };
        builder
            .append_data(&mut header, &entry.name, reader)
            .map_err(|source| OciOutError::Read {
                path: path.clone(),
                source,
            })?;
        archived += entry.size;
    }
    let tar_stream = builder.into_inner().map_err(write_err)?;
    let (diff_id, _) = tar_stream.hasher.finish();
    let compressed = tar_stream.inner.finish().map_err(write_err)?;
    let (digest, size) = compressed.hasher.finish();
    compressed
        .inner
        .into_inner()
        .map_err(|e| write_err(e.into_error()))?;
    tmp.as_file()
        .set_permissions(fs::Permissions::from_mode(0o644))
        .map_err(write_err)?;
    let dest = blobs.join(digest.hex());
    tmp.persist(&dest).map_err(|e| OciOutError::Write {
        path: dest.clone(),
        source: e.error,
    })?;
    Ok((digest, size, diff_id))
}

/// A reader that reports the running total of file bytes archived.
struct Progressing<'a, R> {
    inner: R,
    done: u64,
    progress: &'a mut dyn FnMut(u64),
}

impl<R: Read> Read for Progressing<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.done += n as u64;
        (self.progress)(self.done);
        Ok(n)
    }
}

fn write_blob(blobs: &Path, bytes: &[u8]) -> Result<Digest, OciOutError> {
    let digest = Digest::of(bytes);
    write_file(&blobs.join(digest.hex()), bytes)?;
    Ok(digest)
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), OciOutError> {
    fs::write(path, bytes).map_err(|source| OciOutError::Write {
        path: path.to_owned(),
        source,
    })
}

/// The image config: the platform (none for an image without one, as upstream's wrapper has it),
/// the layer's diff ID, the fixed creation time. Keys come out sorted (serde_json's map).
pub fn config_json(platform: Option<&Platform>, diff_id: &Digest, created: &str) -> Vec<u8> {
    let mut config = json!({
        "created": created,
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": [diff_id.to_string()]},
    });
    if let Some(p) = platform {
        config["os"] = json!(p.os);
        config["architecture"] = json!(p.architecture);
        if let Some(v) = &p.variant {
            config["variant"] = json!(v);
        }
    }
    json_bytes(&config)
}

/// An OCI image manifest with one gzip'd tar layer.
pub fn manifest_json(config: (&Digest, u64), layer: (&Digest, u64)) -> Vec<u8> {
    json_bytes(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": config.0.to_string(), "size": config.1},
        "layers": [{"mediaType": OCI_LAYER_GZIP, "digest": layer.0.to_string(), "size": layer.1}],
    }))
}

/// `index.json`: per image its platform and `org.opencontainers.image.ref.name`.
pub fn index_json(images: &[(Option<Platform>, Digest, u64, String)]) -> Vec<u8> {
    let manifests: Vec<serde_json::Value> = images
        .iter()
        .map(|(platform, digest, size, name)| {
            let mut d = json!({
                "mediaType": OCI_MANIFEST,
                "digest": digest.to_string(),
                "size": size,
                "annotations": {REF_NAME: name},
            });
            if let Some(p) = platform {
                d["platform"] = json!(p);
            }
            d
        })
        .collect();
    json_bytes(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": manifests,
    }))
}

/// The name of a platform's image: a valid tag (`linux-amd64`, `linux-arm64-v8`), so that
/// `skopeo ... oci:PATH:linux-arm64` finds it; `latest` for an image without a platform.
pub fn ref_name(platform: Option<&Platform>) -> String {
    match platform {
        Some(p) => p.to_string().replace('/', "-"),
        None => "latest".to_owned(),
    }
}

fn json_bytes(value: &serde_json::Value) -> Vec<u8> {
    // A Value always serializes (its keys are strings).
    serde_json::to_vec(value).unwrap_or_default()
}

/// `YYYY-MM-DDTHH:MM:SSZ` for seconds since the epoch (UTC), as OCI configs write `created`.
pub fn rfc3339(epoch: u64) -> String {
    let days = epoch / 86_400;
    let secs = epoch % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's `civil_from_days`,
/// restricted to non-negative days).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(4_107_542_399), "2100-02-28T23:59:59Z");
        assert_eq!(rfc3339(4_107_542_400), "2100-03-01T00:00:00Z");
    }

    #[test]
    fn names_and_json_are_canonical() {
        let arm = Platform::parse("linux/arm64/v8").unwrap();
        assert_eq!(ref_name(Some(&arm)), "linux-arm64-v8");
        assert_eq!(ref_name(Some(&Platform::linux_amd64())), "linux-amd64");
        assert_eq!(ref_name(None), "latest");
        assert!(crate::reference::is_tag(&ref_name(Some(&arm))));

        let d = Digest::of(b"tar");
        let config = config_json(Some(&arm), &d, "1970-01-01T00:00:00Z");
        assert_eq!(
            String::from_utf8(config.clone()).unwrap(),
            format!(
                r#"{{"architecture":"arm64","config":{{}},"created":"1970-01-01T00:00:00Z","os":"linux","rootfs":{{"diff_ids":["{d}"],"type":"layers"}},"variant":"v8"}}"#
            )
        );
        assert_eq!(crate::manifest::config_platform(&config), Some(arm.clone()));
        let bare = config_json(None, &d, "x");
        assert_eq!(crate::manifest::config_platform(&bare), None);

        let m = manifest_json((&Digest::of(b"c"), 1), (&d, 3));
        let crate::manifest::Manifest::Image(parsed) = crate::manifest::parse(&m).unwrap() else {
            panic!("not an image manifest");
        };
        assert_eq!(parsed.layers.len(), 1);
        assert_eq!(parsed.layers[0].digest, d);
        assert_eq!(parsed.config.size, 1);

        let index = index_json(&[
            (
                Some(Platform::linux_amd64()),
                Digest::of(b"1"),
                10,
                "linux-amd64".into(),
            ),
            (None, Digest::of(b"2"), 11, "latest".into()),
        ]);
        let crate::manifest::Manifest::Index(parsed) = crate::manifest::parse(&index).unwrap()
        else {
            panic!("not an index");
        };
        assert_eq!(parsed.manifests[0].platform, Some(Platform::linux_amd64()));
        assert_eq!(parsed.manifests[0].annotations[REF_NAME], "linux-amd64");
        assert_eq!(parsed.manifests[1].platform, None);
    }

    #[test]
    fn tree_order_and_refusals() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for (path, data) in [
            ("manifests/b/x", &b"12"[..]),
            ("manifests/a.b/y", b"3"),
            ("blob/sha256-2", b""),
            ("blob/sha256-1", b"abcd"),
        ] {
            let p = root.join(path);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, data).unwrap();
        }
        let names: Vec<(String, u64)> = tree_entries(root)
            .unwrap()
            .into_iter()
            .map(|e| (e.name, e.size))
            .collect();
        assert_eq!(
            names,
            [
                ("blob/".to_owned(), 0),
                ("blob/sha256-1".to_owned(), 4),
                ("blob/sha256-2".to_owned(), 0),
                ("manifests/".to_owned(), 0),
                ("manifests/a.b/".to_owned(), 0),
                ("manifests/a.b/y".to_owned(), 1),
                ("manifests/b/".to_owned(), 0),
                ("manifests/b/x".to_owned(), 2),
            ]
        );
        std::os::unix::fs::symlink("/etc/passwd", root.join("blob/evil")).unwrap();
        assert!(matches!(
            tree_entries(root).unwrap_err(),
            OciOutError::NotArchivable { .. }
        ));
    }

    #[test]
    fn layout_is_reproducible_and_unpacks_to_the_tree() {
        let dir = tempfile::tempdir().unwrap();
        let tree = dir.path().join("tree");
        let long = format!(
            "manifests/ghcr.io/{}/digest/sha256-{}",
            "a/".repeat(60),
            "f".repeat(64)
        );
        for (path, data) in [
            ("blob/sha256-1".to_owned(), b"layer".to_vec()),
            (long.clone(), b"{}".to_vec()),
        ] {
            let p = tree.join(path);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, data).unwrap();
        }
        let platforms = [
            Some(Platform::linux_amd64()),
            Some(Platform::parse("linux/arm64").unwrap()),
        ];
        let mut seen = 0;
        let a = write_wrapped_layout(&tree, &dir.path().join("a"), &platforms, 7, &mut |n| {
            seen = n
        })
        .unwrap();
        assert_eq!(seen, 7, "progress reaches the file bytes");
        let b =
            write_wrapped_layout(&tree, &dir.path().join("b"), &platforms, 7, &mut |_| {}).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.images.len(), 2);
        for f in ["index.json", "oci-layout"] {
            assert_eq!(
                fs::read(dir.path().join("a").join(f)).unwrap(),
                fs::read(dir.path().join("b").join(f)).unwrap()
            );
        }
        // Another epoch: other bytes.
        let c =
            write_wrapped_layout(&tree, &dir.path().join("c"), &platforms, 8, &mut |_| {}).unwrap();
        assert_ne!(a.layer, c.layer);

        // The layer is what the reader's unpacker accepts, and holds the tree.
        let layer = dir.path().join("a/blobs/sha256").join(a.layer.hex());
        assert_eq!(fs::metadata(&layer).unwrap().len(), a.layer_size);
        assert!(crate::unpack::looks_like_cache_layer(
            File::open(&layer).unwrap()
        ));
        let back = dir.path().join("back");
        fs::create_dir(&back).unwrap();
        crate::unpack::unpack_layer(File::open(&layer).unwrap(), &back).unwrap();
        assert_eq!(fs::read(back.join(&long)).unwrap(), b"{}");
        assert_eq!(fs::read(back.join("blob/sha256-1")).unwrap(), b"layer");
        let mut files: Vec<String> = fs::read_dir(dir.path().join("a/blobs/sha256"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        files.sort();
        // One layer, two configs, two manifests; no temp file left.
        assert_eq!(files.len(), 5, "{files:?}");
        assert!(
            files
                .iter()
                .all(|f| Digest::parse(&format!("sha256:{f}")).is_ok())
        );
    }
}

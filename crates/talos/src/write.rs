//! Putting the documents in files: each written under a temporary name beside its final one
//! and renamed, so no file is ever half-written under its final name.

use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

use crate::config::IMAGE_CACHE_PATCH_FILE;
use crate::mirror::{self, MirrorStyle, TALOS_PATCH_FILE};

#[derive(Debug, thiserror::Error)]
#[error("writing {path}")]
pub struct WriteError {
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

/// Writes `text` to `path` (its directory created if missing) through a temporary file in the
/// same directory, renamed over `path` once complete.
pub fn write_file(path: &Path, text: &str) -> Result<(), WriteError> {
    let err = |path: &Path| {
        let path = path.to_owned();
        move |source| WriteError { path, source }
    };
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir).map_err(err(dir))?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".imager-")
        .tempfile_in(dir)
        .map_err(err(path))?;
    tmp.write_all(text.as_bytes()).map_err(err(path))?;
    tmp.as_file().sync_all().map_err(err(path))?;
    tmp.persist(path).map_err(|e| WriteError {
        path: path.to_owned(),
        source: e.error,
    })?;
    Ok(())
}

/// Writes `<dir>/talos-image-cache.yaml`; returns its path.
pub fn write_image_cache_patch(dir: &Path, patch: &str) -> Result<PathBuf, WriteError> {
    let path = dir.join(IMAGE_CACHE_PATCH_FILE);
    write_file(&path, patch)?;
    Ok(path)
}

/// Writes `<dir>/<registry>/hosts.toml` for each registry (so `dir` is containerd's
/// `config_path`, or `ctr --hosts-dir`) and `<dir>/talos-registry-mirrors.yaml`. Returns the
/// files written.
pub fn write_mirror_config(
    dir: &Path,
    registries: &[String],
    server_url: &str,
    style: MirrorStyle,
) -> Result<Vec<PathBuf>, WriteError> {
    let mut written = Vec::new();
    for registry in registries {
        // containerd looks for `host:port` (and, since 1.7, `host_port_`) directories; the
        // `host:port` spelling works with every version on Linux.
        let path = dir.join(registry).join("hosts.toml");
        write_file(&path, &mirror::hosts_toml(registry, server_url))?;
        written.push(path);
    }
    let path = dir.join(TALOS_PATCH_FILE);
    write_file(&path, &mirror::talos_patch(style, registries, server_url))?;
    written.push(path);
    Ok(written)
}

/// [`write_mirror_config`] for mirrors with an endpoint each (a registry fed by `imager cache
/// push`): the same files, in the same places.
pub fn write_mirror_config_for(
    dir: &Path,
    mirrors: &[(String, mirror::Endpoint)],
    what: &str,
    style: MirrorStyle,
) -> Result<Vec<PathBuf>, WriteError> {
    let mut written = Vec::new();
    for (registry, endpoint) in mirrors {
        let path = dir.join(registry).join("hosts.toml");
        write_file(&path, &mirror::hosts_toml_for(registry, endpoint, what))?;
        written.push(path);
    }
    let path = dir.join(TALOS_PATCH_FILE);
    write_file(&path, &mirror::talos_patch_for(style, mirrors))?;
    written.push(path);
    Ok(written)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn files_land_complete_and_nothing_else_is_left() {
        let dir = tempfile::tempdir().unwrap();
        let files = write_mirror_config(
            dir.path(),
            &["host:5000".to_owned()],
            "http://x:1",
            MirrorStyle::RegistryMirrorConfig,
        )
        .unwrap();
        assert_eq!(
            files,
            [
                dir.path().join("host:5000/hosts.toml"),
                dir.path().join(TALOS_PATCH_FILE)
            ]
        );
        assert_eq!(
            std::fs::read_to_string(&files[0]).unwrap(),
            mirror::hosts_toml("host:5000", "http://x:1")
        );
        // Written again over the old files: still one of each, no temporary left behind.
        write_mirror_config(
            dir.path(),
            &["host:5000".to_owned()],
            "http://x:1",
            MirrorStyle::MachineRegistries,
        )
        .unwrap();
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["host:5000", TALOS_PATCH_FILE]);
        assert!(
            std::fs::read_to_string(&files[1])
                .unwrap()
                .starts_with("machine:\n")
        );
    }

    #[test]
    fn a_file_in_the_way_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("file");
        std::fs::write(&blocker, "x").unwrap();
        let err = write_image_cache_patch(&blocker, "a: b\n").unwrap_err();
        assert_eq!(err.path, blocker);
    }
}

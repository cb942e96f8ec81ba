//! Pointing clients at the server: containerd's `hosts.toml` per mirrored registry, and the Talos
//! `RegistryMirrorConfig` documents that make a node's containerd use it. Pure text generation;
//! [`write_config`] puts it in a directory.
//!
//! containerd sends a mirror `/v2/<repository>/...?ns=<registry>`, which is how the server knows
//! which registry of the cache to look in.

use std::io;
use std::path::{Path, PathBuf};

use imager_oci::ImageName;

use crate::route::normalize_registry;

/// The name of the Talos patch [`write_config`] writes beside the registry directories.
pub const TALOS_PATCH_FILE: &str = "talos-registry-mirrors.yaml";

#[derive(Debug, thiserror::Error)]
pub enum MirrorError {
    #[error("--mirror {0:?}: not a registry host name with an optional :port")]
    Registry(String),
    #[error("--mirror: no registry given")]
    Empty,
    #[error("writing {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Parses registries (`docker.io,ghcr.io` or repeated), normalized (`index.docker.io` is
/// `docker.io`), sorted, without duplicates.
pub fn parse_registries<S: AsRef<str>>(values: &[S]) -> Result<Vec<String>, MirrorError> {
    let mut out = Vec::new();
    for value in values {
        for r in value
            .as_ref()
            .split(',')
            .map(str::trim)
            .filter(|r| !r.is_empty())
        {
            let registry = normalize_registry(r);
            // Checked through a name with a placeholder repository: the registry grammar is
            // the one a cache's directory names follow.
            ImageName::new(registry, "x").map_err(|_| MirrorError::Registry(r.to_owned()))?;
            out.push(registry.to_owned());
        }
    }
    if out.is_empty() {
        return Err(MirrorError::Empty);
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// Where a registry really is: Docker Hub's API host is not `docker.io`.
fn upstream(registry: &str) -> String {
    match registry {
        "docker.io" => "https://registry-1.docker.io".to_owned(),
        other => format!("https://{other}"),
    }
}

/// containerd's `hosts.toml` for `registry`: pull and resolve from the server, falling back to
/// the real registry (unreachable in an air gap, so the cache decides there).
pub fn hosts_toml(registry: &str, server_url: &str) -> String {
    format!(
        "# {registry}: served from the image cache at {server_url} (imager cache serve)\n\
         server = \"{}\"\n\
         \n\
         [host.\"{server_url}\"]\n  capabilities = [\"pull\", \"resolve\"]\n",
        upstream(registry)
    )
}

/// Talos `RegistryMirrorConfig` documents (one per registry; a multi-document machine-config
/// patch) with the server as each registry's mirror endpoint.
pub fn talos_patch(registries: &[String], server_url: &str) -> String {
    registries
        .iter()
        .map(|r| {
            format!(
                "apiVersion: v1alpha1\nkind: RegistryMirrorConfig\nname: {r}\nendpoints:\n  - url: {server_url}\n"
            )
        })
        .collect::<Vec<_>>()
        .join("---\n")
}

/// Writes `<dir>/<registry>/hosts.toml` for each registry (so `dir` is containerd's
/// `config_path`, or `ctr --hosts-dir`) and `<dir>/talos-registry-mirrors.yaml`. Returns the
/// files written.
pub fn write_config(
    dir: &Path,
    registries: &[String],
    server_url: &str,
) -> Result<Vec<PathBuf>, MirrorError> {
    let mut written = Vec::new();
    let write = |path: PathBuf, text: String, written: &mut Vec<PathBuf>| {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|source| MirrorError::Write {
                path: parent.to_owned(),
                source,
            })?;
        }
        std::fs::write(&path, text).map_err(|source| MirrorError::Write {
            path: path.clone(),
            source,
        })?;
        written.push(path);
        Ok::<_, MirrorError>(())
    };
    for registry in registries {
        // containerd looks for `host:port` (and, since 1.7, `host_port_`) directories; the
        // `host:port` spelling works with every version on Linux.
        write(
            dir.join(registry).join("hosts.toml"),
            hosts_toml(registry, server_url),
            &mut written,
        )?;
    }
    write(
        dir.join(TALOS_PATCH_FILE),
        talos_patch(registries, server_url),
        &mut written,
    )?;
    Ok(written)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn registries_are_checked_and_normalized() {
        assert_eq!(
            parse_registries(&["ghcr.io,docker.io", "index.docker.io", " registry.k8s.io "])
                .unwrap(),
            ["docker.io", "ghcr.io", "registry.k8s.io"]
        );
        assert_eq!(parse_registries(&["host:5000"]).unwrap(), ["host:5000"]);
        for bad in ["../x", "a/b", "http://x", "bad_host", "[::1]:5000"] {
            assert!(
                matches!(parse_registries(&[bad]), Err(MirrorError::Registry(_))),
                "{bad}"
            );
        }
        assert!(matches!(
            parse_registries::<&str>(&[]),
            Err(MirrorError::Empty)
        ));
    }

    #[test]
    fn config_text() {
        let toml = hosts_toml("docker.io", "http://127.0.0.1:3172");
        assert!(
            toml.contains("server = \"https://registry-1.docker.io\""),
            "{toml}"
        );
        assert!(toml.contains(
            "[host.\"http://127.0.0.1:3172\"]\n  capabilities = [\"pull\", \"resolve\"]"
        ));
        let patch = talos_patch(
            &["docker.io".to_owned(), "ghcr.io".to_owned()],
            "http://127.0.0.1:3172",
        );
        assert_eq!(
            patch,
            "apiVersion: v1alpha1\nkind: RegistryMirrorConfig\nname: docker.io\nendpoints:\n  - url: http://127.0.0.1:3172\n\
             ---\n\
             apiVersion: v1alpha1\nkind: RegistryMirrorConfig\nname: ghcr.io\nendpoints:\n  - url: http://127.0.0.1:3172\n"
        );
        let dir = tempfile::tempdir().unwrap();
        let files = write_config(dir.path(), &["host:5000".to_owned()], "http://x:1").unwrap();
        assert_eq!(files.len(), 2);
        assert!(dir.path().join("host:5000/hosts.toml").is_file());
        assert!(dir.path().join(TALOS_PATCH_FILE).is_file());
    }
}

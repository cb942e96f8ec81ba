//! Pointing clients at a registry server over a cache (`imager cache serve --mirror`):
//! containerd's `hosts.toml` per mirrored registry, and the Talos machine-config patch that
//! makes a node's containerd use it. Pure text; [`crate::write::write_mirror_config`] puts it in
//! a directory.
//!
//! containerd sends a mirror `/v2/<repository>/...?ns=<registry>`, which is how the server knows
//! which registry of the cache to look in.

use imager_oci::ImageName;
use imager_oci::reference::normalize_registry;

use crate::version::Version;
use crate::yaml::{self, Node};

/// The name of the Talos patch written beside the registry directories.
pub const TALOS_PATCH_FILE: &str = "talos-registry-mirrors.yaml";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MirrorError {
    #[error("--mirror {0:?}: not a registry host name with an optional :port")]
    Registry(String),
    #[error("--mirror: no registry given")]
    Empty,
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

/// A mirror's endpoint: its URL, and whether that URL already holds the API path (`/v2/<prefix>`,
/// containerd's `override_path`, Talos's `overridePath`), for a registry that keeps mirrored
/// repositories under a path prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub url: String,
    pub override_path: bool,
}

impl Endpoint {
    /// `scheme://host`, repositories straight under it; or, under `path`,
    /// `scheme://host/v2/<path>` with the path overridden.
    pub fn at(scheme: &str, host: &str, path: &str) -> Self {
        if path.is_empty() {
            Self {
                url: format!("{scheme}://{host}"),
                override_path: false,
            }
        } else {
            Self {
                url: format!("{scheme}://{host}/v2/{path}"),
                override_path: true,
            }
        }
    }
}

/// [`hosts_toml`] for a mirror at `endpoint` (a registry fed by `imager cache push`).
pub fn hosts_toml_for(registry: &str, endpoint: &Endpoint, what: &str) -> String {
    let mut s = format!(
        "# {registry}: {what} {}\n\
         server = {}\n\
         \n\
         [host.{}]\n  capabilities = [\"pull\", \"resolve\"]\n",
        endpoint.url,
        toml_string(&upstream(registry)),
        toml_string(&endpoint.url),
    );
    if endpoint.override_path {
        s.push_str("  override_path = true\n");
    }
    s
}

/// [`talos_patch`] with an endpoint per registry.
pub fn talos_patch_for(style: MirrorStyle, mirrors: &[(String, Endpoint)]) -> String {
    let endpoint_map = |e: &Endpoint| {
        let mut pairs = vec![("url", Node::str(e.url.as_str()))];
        if e.override_path {
            pairs.push(("overridePath", Node::Bool(true)));
        }
        Node::map(pairs)
    };
    match style {
        MirrorStyle::RegistryMirrorConfig => {
            let docs: Vec<Node> = mirrors
                .iter()
                .map(|(r, e)| {
                    Node::map([
                        ("apiVersion", Node::str("v1alpha1")),
                        ("kind", Node::str("RegistryMirrorConfig")),
                        ("name", Node::str(r.as_str())),
                        ("endpoints", Node::List(vec![endpoint_map(e)])),
                    ])
                })
                .collect();
            yaml::documents(&docs)
        }
        MirrorStyle::MachineRegistries => {
            let entries = Node::Map(
                mirrors
                    .iter()
                    .map(|(r, e)| {
                        let mut pairs = vec![(
                            "endpoints".to_owned(),
                            Node::List(vec![Node::str(e.url.as_str())]),
                        )];
                        if e.override_path {
                            pairs.push(("overridePath".to_owned(), Node::Bool(true)));
                        }
                        (r.clone(), Node::Map(pairs))
                    })
                    .collect(),
            );
            yaml::document(&Node::map([(
                "machine",
                Node::map([("registries", Node::map([("mirrors", entries)]))]),
            )]))
        }
    }
}

/// containerd's `hosts.toml` for `registry`: pull and resolve from the server, falling back to
/// the real registry (unreachable in an air gap, so the cache decides there). `server_url` is
/// the server's own URL (`http://host:port`), written as a TOML basic string.
pub fn hosts_toml(registry: &str, server_url: &str) -> String {
    format!(
        "# {registry}: served from the image cache at {server_url} (imager cache serve)\n\
         server = {}\n\
         \n\
         [host.{}]\n  capabilities = [\"pull\", \"resolve\"]\n",
        toml_string(&upstream(registry)),
        toml_string(server_url),
    )
}

/// A TOML basic string: `"` and `\` escaped, control characters as `\uXXXX`.
fn toml_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// How a Talos release declares registry mirrors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MirrorStyle {
    /// Before v1.12.0-beta.0: `machine.registries.mirrors.<registry>.endpoints` (a list of URLs)
    /// in the v1alpha1 document.
    MachineRegistries,
    /// From v1.12.0-beta.0: one `RegistryMirrorConfig` document per registry (`name`,
    /// `endpoints: [{url}]`).
    RegistryMirrorConfig,
}

/// The first release with the `RegistryMirrorConfig` document.
pub fn registry_mirror_config_since() -> Version {
    Version::release(1, 12, 0).with_pre(&["beta", "0"])
}

impl MirrorStyle {
    /// The style Talos `version` reads; without a version, the current one.
    pub fn for_version(version: Option<&Version>) -> Self {
        match version {
            Some(v) if !v.at_least(&registry_mirror_config_since()) => {
                MirrorStyle::MachineRegistries
            }
            _ => MirrorStyle::RegistryMirrorConfig,
        }
    }
}

/// The Talos machine-config patch that makes `server_url` each registry's mirror.
pub fn talos_patch(style: MirrorStyle, registries: &[String], server_url: &str) -> String {
    match style {
        MirrorStyle::RegistryMirrorConfig => {
            let docs: Vec<Node> = registries
                .iter()
                .map(|r| {
                    Node::map([
                        ("apiVersion", Node::str("v1alpha1")),
                        ("kind", Node::str("RegistryMirrorConfig")),
                        ("name", Node::str(r.as_str())),
                        (
                            "endpoints",
                            Node::List(vec![Node::map([("url", Node::str(server_url))])]),
                        ),
                    ])
                })
                .collect();
            yaml::documents(&docs)
        }
        MirrorStyle::MachineRegistries => {
            let mirrors = Node::Map(
                registries
                    .iter()
                    .map(|r| {
                        (
                            r.clone(),
                            Node::map([("endpoints", Node::List(vec![Node::str(server_url)]))]),
                        )
                    })
                    .collect(),
            );
            yaml::document(&Node::map([(
                "machine",
                Node::map([("registries", Node::map([("mirrors", mirrors)]))]),
            )]))
        }
    }
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
    fn hosts_toml_text() {
        let toml = hosts_toml("docker.io", "http://127.0.0.1:3172");
        assert!(
            toml.contains("server = \"https://registry-1.docker.io\""),
            "{toml}"
        );
        assert!(toml.contains(
            "[host.\"http://127.0.0.1:3172\"]\n  capabilities = [\"pull\", \"resolve\"]"
        ));
        assert!(hosts_toml("x", "http://[::1]:1").contains("[host.\"http://[::1]:1\"]"));
    }

    #[test]
    fn patch_text_per_style() {
        let registries = ["docker.io".to_owned(), "host:5000".to_owned()];
        assert_eq!(
            talos_patch(
                MirrorStyle::RegistryMirrorConfig,
                &registries,
                "http://127.0.0.1:3172"
            ),
            "apiVersion: v1alpha1\nkind: RegistryMirrorConfig\nname: docker.io\nendpoints:\n  - url: http://127.0.0.1:3172\n\
             ---\n\
             apiVersion: v1alpha1\nkind: RegistryMirrorConfig\nname: host:5000\nendpoints:\n  - url: http://127.0.0.1:3172\n"
        );
        assert_eq!(
            talos_patch(
                MirrorStyle::MachineRegistries,
                &registries,
                "http://127.0.0.1:3172"
            ),
            "machine:\n  registries:\n    mirrors:\n      docker.io:\n        endpoints:\n          - http://127.0.0.1:3172\n      \
             \"host:5000\":\n        endpoints:\n          - http://127.0.0.1:3172\n"
        );
    }

    #[test]
    fn endpoints_under_a_path_override_it() {
        let plain = Endpoint::at("http", "reg:5000", "");
        assert_eq!(plain.url, "http://reg:5000");
        assert!(!hosts_toml_for("docker.io", &plain, "pushed to").contains("override_path"));
        let under = Endpoint::at("https", "reg", "m/docker.io");
        assert_eq!(under.url, "https://reg/v2/m/docker.io");
        let toml = hosts_toml_for("docker.io", &under, "pushed to");
        assert!(
            toml.ends_with("[host.\"https://reg/v2/m/docker.io\"]\n  capabilities = [\"pull\", \"resolve\"]\n  override_path = true\n"),
            "{toml}"
        );
        let mirrors = [("docker.io".to_owned(), under)];
        assert_eq!(
            talos_patch_for(MirrorStyle::RegistryMirrorConfig, &mirrors),
            "apiVersion: v1alpha1\nkind: RegistryMirrorConfig\nname: docker.io\nendpoints:\n  - url: https://reg/v2/m/docker.io\n    overridePath: true\n"
        );
        assert_eq!(
            talos_patch_for(MirrorStyle::MachineRegistries, &mirrors),
            "machine:\n  registries:\n    mirrors:\n      docker.io:\n        endpoints:\n          - https://reg/v2/m/docker.io\n        overridePath: true\n"
        );
    }

    #[test]
    fn style_boundary() {
        let style = |s: &str| MirrorStyle::for_version(Some(&Version::parse(s).unwrap()));
        assert_eq!(style("v1.11.6"), MirrorStyle::MachineRegistries);
        assert_eq!(style("v1.12.0-alpha.2"), MirrorStyle::MachineRegistries);
        assert_eq!(style("v1.12.0-beta.0"), MirrorStyle::RegistryMirrorConfig);
        assert_eq!(style("v1.13.9"), MirrorStyle::RegistryMirrorConfig);
        assert_eq!(
            MirrorStyle::for_version(None),
            MirrorStyle::RegistryMirrorConfig
        );
    }
}

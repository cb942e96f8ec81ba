//! Platforms (`linux/amd64`, `linux/arm/v7`) and choosing an index's children by them.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::manifest::{Descriptor, ManifestError};

/// An OS, an architecture and an optional variant, normalized the way containerd compares them.
/// As JSON it is the OCI `platform` object (read normalized; extra fields such as `os.features`
/// are ignored).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(from = "RawPlatform")]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

/// The OCI `platform` object as written, before normalization.
#[derive(Deserialize)]
struct RawPlatform {
    architecture: String,
    os: String,
    #[serde(default)]
    variant: Option<String>,
}

/// Why a platform could not be parsed or selected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlatformError {
    #[error(
        "invalid platform {0:?}: expected os/arch or os/arch/variant, e.g. linux/amd64 or linux/arm/v7"
    )]
    Syntax(String),
    #[error("unknown operating system {os:?} in platform {platform:?}")]
    UnknownOs { platform: String, os: String },
    #[error("unknown architecture {arch:?} in platform {platform:?}")]
    UnknownArchitecture { platform: String, arch: String },
    #[error("the index has no {wanted} image; it has: {}", if available.is_empty() { "no platforms".to_owned() } else { available.join(", ") })]
    NotInIndex {
        wanted: Platform,
        available: Vec<String>,
    },
}

// GOOS/GOARCH values, which is what image platforms are written in. A typo such as `linux/amd46`
// is refused when parsed rather than reported later as "not in the index".
const KNOWN_OS: &[&str] = &[
    "linux",
    "windows",
    "darwin",
    "freebsd",
    "netbsd",
    "openbsd",
    "solaris",
    "illumos",
    "aix",
    "android",
    "ios",
    "plan9",
    "js",
    "wasip1",
    "dragonfly",
];
const KNOWN_ARCH: &[&str] = &[
    "amd64", "arm64", "arm", "386", "ppc64le", "ppc64", "s390x", "riscv64", "mips64le", "mips64",
    "mipsle", "mips", "loong64", "wasm",
];

impl Platform {
    /// `linux/amd64`: upstream's default platform, and ours.
    pub fn linux_amd64() -> Self {
        Self {
            os: "linux".to_owned(),
            architecture: "amd64".to_owned(),
            variant: None,
        }
    }

    /// Parses `os/arch[/variant]`, accepting the common aliases (`x86_64`, `aarch64`, `i386`).
    pub fn parse(s: &str) -> Result<Self, PlatformError> {
        let parts: Vec<&str> = s.trim().split('/').collect();
        let (os, arch, variant) = match parts.as_slice() {
            [os, arch] if !os.is_empty() && !arch.is_empty() => (*os, *arch, None),
            [os, arch, variant] if !os.is_empty() && !arch.is_empty() && !variant.is_empty() => {
                (*os, *arch, Some(*variant))
            }
            _ => return Err(PlatformError::Syntax(s.to_owned())),
        };
        let os = os.to_ascii_lowercase();
        if !KNOWN_OS.contains(&os.as_str()) {
            return Err(PlatformError::UnknownOs {
                platform: s.to_owned(),
                os,
            });
        }
        let platform = Self::normalized(
            os,
            arch.to_ascii_lowercase(),
            variant.map(str::to_ascii_lowercase),
        );
        if !KNOWN_ARCH.contains(&platform.architecture.as_str()) {
            return Err(PlatformError::UnknownArchitecture {
                platform: s.to_owned(),
                arch: arch.to_owned(),
            });
        }
        Ok(platform)
    }

    fn from_raw(raw: RawPlatform) -> Self {
        Self::normalized(
            raw.os,
            raw.architecture,
            raw.variant.filter(|v| !v.is_empty()),
        )
    }

    /// Architecture aliases become GOARCH names (`x86_64` -> `amd64`, `armhf` -> `arm/v7`), as
    /// containerd does; the variant stays as written (shown in messages) and defaults are applied
    /// when comparing.
    fn normalized(os: String, arch: String, variant: Option<String>) -> Self {
        let (architecture, implied) = match arch.as_str() {
            "x86_64" | "x86-64" => ("amd64", None),
            "aarch64" => ("arm64", None),
            "i386" | "i686" => ("386", None),
            "armhf" => ("arm", Some("v7")),
            "armel" => ("arm", Some("v6")),
            other => (other, None),
        };
        Self {
            os,
            architecture: architecture.to_owned(),
            variant: variant.or(implied.map(str::to_owned)),
        }
    }

    /// The variant with the architecture's default made explicit, so that `linux/arm64` and
    /// `linux/arm64/v8` are the same platform, and `linux/arm` means `linux/arm/v7`.
    fn effective_variant(&self) -> Option<String> {
        let v = self.variant.as_deref();
        let numbered = |v: &str| {
            if v.starts_with('v') {
                v.to_owned()
            } else {
                format!("v{v}")
            }
        };
        match (self.architecture.as_str(), v) {
            ("arm64", None) => Some("v8".to_owned()),
            ("arm", None) => Some("v7".to_owned()),
            ("amd64", None) => Some("v1".to_owned()),
            ("arm64" | "arm" | "amd64", Some(v)) => Some(numbered(v)),
            (_, v) => v.map(str::to_owned),
        }
    }

    /// Whether an image built for `self` is what `wanted` asks for.
    pub fn matches(&self, wanted: &Platform) -> bool {
        self.os == wanted.os
            && self.architecture == wanted.architecture
            && self.effective_variant() == wanted.effective_variant()
    }
}

impl Default for Platform {
    fn default() -> Self {
        Self::linux_amd64()
    }
}

impl From<RawPlatform> for Platform {
    fn from(raw: RawPlatform) -> Self {
        Self::from_raw(raw)
    }
}

impl FromStr for Platform {
    type Err = PlatformError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// Which platforms of a multi-platform image to keep.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlatformSelection {
    /// Every runnable child (attestation manifests and `unknown/unknown` entries are left out: they
    /// are build metadata, not images a node can run).
    All,
    /// These platforms, each of which must be present.
    Only(Vec<Platform>),
}

impl PlatformSelection {
    /// Parses `all`, or platforms separated by commas (and/or given as several items), as the
    /// `--platform` flag takes them.
    pub fn parse<'a>(items: impl IntoIterator<Item = &'a str>) -> Result<Self, PlatformError> {
        let mut platforms = Vec::new();
        for item in items.into_iter().flat_map(|i| i.split(',')) {
            let item = item.trim();
            if item.eq_ignore_ascii_case("all") {
                return Ok(Self::All);
            }
            let p = Platform::parse(item)?;
            if !platforms.contains(&p) {
                platforms.push(p);
            }
        }
        if platforms.is_empty() {
            return Err(PlatformError::Syntax(String::new()));
        }
        Ok(Self::Only(platforms))
    }
}

/// The children of an index to fetch for `selection`, in index order.
///
/// Each requested platform takes the first child that matches it (as containerd resolves a pull);
/// a requested platform the index does not have is an error naming what it does have, since a cache
/// silently missing an architecture is only discovered on an air-gapped node.
pub fn select_platforms(
    media_type: &str,
    index_bytes: &[u8],
    selection: &PlatformSelection,
) -> Result<Vec<Descriptor>, SelectError> {
    let children =
        crate::manifest::index_children(media_type, index_bytes).map_err(SelectError::Manifest)?;
    let runnable = Descriptor::is_runnable;
    match selection {
        PlatformSelection::All => Ok(children.into_iter().filter(runnable).collect()),
        PlatformSelection::Only(wanted) => {
            let mut chosen = vec![false; children.len()];
            for w in wanted {
                let hit = children
                    .iter()
                    .position(|c| runnable(c) && c.platform.as_ref().is_some_and(|p| p.matches(w)));
                match hit {
                    Some(i) => chosen[i] = true,
                    None => {
                        let available = children
                            .iter()
                            .filter(|c| runnable(c))
                            .filter_map(|c| c.platform.as_ref().map(Platform::to_string))
                            .collect();
                        return Err(SelectError::Platform(PlatformError::NotInIndex {
                            wanted: w.clone(),
                            available,
                        }));
                    }
                }
            }
            Ok(children
                .into_iter()
                .zip(chosen)
                .filter_map(|(c, keep)| keep.then_some(c))
                .collect())
        }
    }
}

/// Why [`select_platforms`] failed.
#[derive(Debug, thiserror::Error)]
pub enum SelectError {
    #[error(transparent)]
    Manifest(ManifestError),
    #[error(transparent)]
    Platform(PlatformError),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::{DOCKER_MANIFEST_LIST, OCI_INDEX, OCI_MANIFEST};

    #[test]
    fn json_is_the_oci_platform_object_normalized() {
        let p: Platform = serde_json::from_str(
            r#"{"os":"linux","architecture":"aarch64","variant":"","os.features":["x"]}"#,
        )
        .unwrap();
        assert_eq!(p, Platform::parse("linux/arm64").unwrap());
        assert_eq!(
            serde_json::to_string(&Platform::linux_amd64()).unwrap(),
            r#"{"os":"linux","architecture":"amd64"}"#
        );
        let v8 = Platform::parse("linux/arm64/v8").unwrap();
        let back: Platform = serde_json::from_str(&serde_json::to_string(&v8).unwrap()).unwrap();
        assert_eq!(back, v8);
        assert!(v8.matches(&p) && p.matches(&v8));
    }

    fn p(s: &str) -> Platform {
        Platform::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn parsing_and_matching() {
        assert_eq!(p("linux/amd64").to_string(), "linux/amd64");
        assert_eq!(p("linux/x86_64"), p("linux/amd64"));
        assert_eq!(p("Linux/AArch64").architecture, "arm64");
        assert_eq!(p("linux/armhf").to_string(), "linux/arm/v7");
        assert!(p("linux/arm64").matches(&p("linux/arm64/v8")));
        assert!(p("linux/arm64/v8").matches(&p("linux/arm64")));
        assert!(p("linux/arm/7").matches(&p("linux/arm")));
        assert!(!p("linux/arm/v6").matches(&p("linux/arm")));
        assert!(p("linux/arm/v6").matches(&p("linux/arm/v6")));
        assert!(p("linux/amd64/v1").matches(&p("linux/amd64")));
        assert!(!p("linux/amd64/v3").matches(&p("linux/amd64")));
        assert!(!p("linux/amd64").matches(&p("linux/arm64")));
        assert!(!p("windows/amd64").matches(&p("linux/amd64")));
        for bad in ["", "linux", "linux/", "/amd64", "linux/amd64/", "a/b/c/d"] {
            assert!(
                matches!(Platform::parse(bad), Err(PlatformError::Syntax(_))),
                "{bad:?}"
            );
        }
        assert!(matches!(
            Platform::parse("linux/amd46"),
            Err(PlatformError::UnknownArchitecture { .. })
        ));
        assert!(matches!(
            Platform::parse("linx/amd64"),
            Err(PlatformError::UnknownOs { .. })
        ));
    }

    #[test]
    fn selection_parsing() {
        assert_eq!(
            PlatformSelection::parse(["all"]).expect("ok"),
            PlatformSelection::All
        );
        assert_eq!(
            PlatformSelection::parse(["linux/amd64,all"]).expect("ok"),
            PlatformSelection::All
        );
        assert_eq!(
            PlatformSelection::parse(["linux/amd64, linux/arm64", "linux/amd64"]).expect("ok"),
            PlatformSelection::Only(vec![p("linux/amd64"), p("linux/arm64")])
        );
        assert!(PlatformSelection::parse([]).is_err());
        assert!(PlatformSelection::parse(["linux/amd64,"]).is_err());
    }

    fn index() -> String {
        let child = |c: char, platform: &str, annotations: &str| {
            format!(
                r#"{{"mediaType":"{OCI_MANIFEST}","digest":"sha256:{}","size":100,"platform":{platform}{annotations}}}"#,
                c.to_string().repeat(64)
            )
        };
        format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[{},{},{},{},{}]}}"#,
            child('a', r#"{"os":"linux","architecture":"amd64"}"#, ""),
            child(
                'b',
                r#"{"os":"linux","architecture":"arm64","variant":"v8"}"#,
                ""
            ),
            child(
                'c',
                r#"{"os":"linux","architecture":"arm","variant":"v7"}"#,
                ""
            ),
            child(
                'd',
                r#"{"os":"unknown","architecture":"unknown"}"#,
                r#","annotations":{"vnd.docker.reference.type":"attestation-manifest"}"#
            ),
            child('e', r#"{"os":"linux","architecture":"amd64"}"#, ""),
        )
    }

    fn digests(ds: &[Descriptor]) -> String {
        ds.iter().map(|d| d.digest.hex()[..1].to_owned()).collect()
    }

    #[test]
    fn selecting_children() {
        let idx = index();
        let sel = |s: &str| {
            select_platforms(
                OCI_INDEX,
                idx.as_bytes(),
                &PlatformSelection::parse([s]).expect("ok"),
            )
        };
        assert_eq!(digests(&sel("linux/amd64").expect("ok")), "a");
        assert_eq!(digests(&sel("linux/arm64").expect("ok")), "b");
        // Index order, whatever the order asked in.
        assert_eq!(digests(&sel("linux/arm/v7,linux/amd64").expect("ok")), "ac");
        assert_eq!(digests(&sel("all").expect("ok")), "abce");
        let err = sel("linux/s390x").expect_err("not there");
        assert_eq!(
            err.to_string(),
            "the index has no linux/s390x image; it has: linux/amd64, linux/arm64/v8, linux/arm/v7, linux/amd64"
        );
        // A Docker manifest list is an index too; an image manifest is not, and a body that says
        // it is another kind than it was served as is refused.
        let list = idx.replacen(OCI_INDEX, DOCKER_MANIFEST_LIST, 1);
        assert!(
            select_platforms(
                DOCKER_MANIFEST_LIST,
                list.as_bytes(),
                &PlatformSelection::All
            )
            .is_ok()
        );
        assert!(matches!(
            select_platforms(
                DOCKER_MANIFEST_LIST,
                idx.as_bytes(),
                &PlatformSelection::All
            ),
            Err(SelectError::Manifest(
                ManifestError::MediaTypeConflict { .. }
            ))
        ));
        assert!(matches!(
            select_platforms(OCI_MANIFEST, idx.as_bytes(), &PlatformSelection::All),
            Err(SelectError::Manifest(ManifestError::NotAnIndex(_)))
        ));
    }
}

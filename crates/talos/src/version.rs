//! Versions as Talos and its components write them, and their order.
//!
//! A Talos version (`--version`) names the volume and titles the boot entry, so only what
//! upstream's version strings look like is accepted: `v` followed by a semantic version,
//! `vMAJOR.MINOR.PATCH[-PRERELEASE][+BUILD]` (semver 2.0.0 after the `v`), e.g. `v1.9.0`,
//! `v1.7.6-beta.0`, `v1.10.0-alpha.0-45-g1234567` ([`Version::parse`]). Component versions
//! (`--k8s-version`, `--etcd-version`, ...) are read as upstream's `talosctl` reads them, by
//! blang/semver's `ParseTolerant` rules ([`Version::parse_tolerant`]).
//!
//! Versions are compared by semver precedence ([`Version::precedence`]): which documents a node
//! understands depends on the release it runs, down to pre-releases (`v1.14.0-alpha.0` has no
//! `ImageCacheConfig`, `v1.14.0-alpha.1` has).

use std::cmp::Ordering;
use std::fmt;

/// "Talos-" + the version must fit the 128-byte ISO 9660 volume set identifier.
pub const MAX_VERSION_LEN: usize = 128 - "Talos-".len();

/// Why a version is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid Talos version {version:?}: {reason} (expected vMAJOR.MINOR.PATCH with an optional \
     -PRERELEASE and +BUILD, as upstream's versions: v1.9.0, v1.7.6-beta.0)"
)]
pub struct VersionError {
    pub version: String,
    pub reason: String,
}

/// Why a component version is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid semantic version {version:?}: {reason}")]
pub struct ComponentVersionError {
    pub version: String,
    pub reason: String,
}

/// A semantic version. Equality is of the parsed parts, build metadata included; order is
/// semver precedence, which ignores build metadata ([`Version::precedence`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    pub major: u64,
    pub minor: u64,
    pub patch: u64,
    /// Pre-release identifiers (`["alpha", "1"]` for `-alpha.1`); empty for a release.
    pub pre: Vec<String>,
    /// Build metadata identifiers, joined by `.`; empty when absent.
    pub build: String,
}

impl Version {
    /// A release `MAJOR.MINOR.PATCH`.
    pub fn release(major: u64, minor: u64, patch: u64) -> Self {
        Version {
            major,
            minor,
            patch,
            pre: Vec::new(),
            build: String::new(),
        }
    }

    /// The same version with pre-release identifiers `pre` (`&["alpha", "1"]`).
    pub fn with_pre(mut self, pre: &[&str]) -> Self {
        self.pre = pre.iter().map(|s| (*s).to_owned()).collect();
        self
    }

    /// Parses a Talos version: exactly `v` + a semantic version 2.0.0: three numeric parts
    /// without leading zeros, then optionally `-` and dot-separated pre-release identifiers
    /// (`0-9 A-Z a-z -`, numeric ones without leading zeros), then optionally `+` and
    /// dot-separated build identifiers (same characters), in all at most [`MAX_VERSION_LEN`]
    /// bytes.
    pub fn parse(version: &str) -> Result<Self, VersionError> {
        strict(version).map_err(|reason| VersionError {
            version: version.to_owned(),
            reason,
        })
    }

    /// Parses a component version as upstream's `talosctl` does (blang/semver `ParseTolerant`):
    /// surrounding spaces and one leading `v` are dropped, a missing minor or patch is `0`
    /// (`1.33` is `1.33.0`; not with a pre-release or build part), leading zeros of the
    /// numbers are dropped; the rest must be a semantic version.
    pub fn parse_tolerant(version: &str) -> Result<Self, ComponentVersionError> {
        tolerant(version).map_err(|reason| ComponentVersionError {
            version: version.to_owned(),
            reason,
        })
    }

    /// Semver precedence: the numbers, then a release above its pre-releases, then the
    /// pre-release identifiers left to right (numeric ones numerically and below alphanumeric
    /// ones, alphanumeric ones in ASCII order, a longer list above its prefix). Build
    /// metadata does not count.
    pub fn precedence(&self, other: &Version) -> Ordering {
        (self.major, self.minor, self.patch)
            .cmp(&(other.major, other.minor, other.patch))
            .then_with(|| match (self.pre.is_empty(), other.pre.is_empty()) {
                (true, true) => Ordering::Equal,
                (true, false) => Ordering::Greater,
                (false, true) => Ordering::Less,
                (false, false) => {
                    for (a, b) in self.pre.iter().zip(&other.pre) {
                        let order = identifier_order(a, b);
                        if order != Ordering::Equal {
                            return order;
                        }
                    }
                    self.pre.len().cmp(&other.pre.len())
                }
            })
    }

    /// Whether this version is `other` or a later one.
    pub fn at_least(&self, other: &Version) -> bool {
        self.precedence(other) != Ordering::Less
    }
}

/// The canonical form, without a `v`: `1.33.0-rc.1+build.5`.
impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)?;
        if !self.pre.is_empty() {
            write!(f, "-{}", self.pre.join("."))?;
        }
        if !self.build.is_empty() {
            write!(f, "+{}", self.build)?;
        }
        Ok(())
    }
}

fn is_numeric(id: &str) -> bool {
    !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit())
}

fn identifier_order(a: &str, b: &str) -> Ordering {
    match (is_numeric(a), is_numeric(b)) {
        // No leading zeros (checked when parsing): the longer number is the larger, and equal
        // lengths compare as text, so numbers of any length compare without overflow.
        (true, true) => a.len().cmp(&b.len()).then_with(|| a.cmp(b)),
        (true, false) => Ordering::Less,
        (false, true) => Ordering::Greater,
        (false, false) => a.cmp(b),
    }
}

fn strict(version: &str) -> Result<Version, String> {
    if version.len() > MAX_VERSION_LEN {
        return Err(format!(
            "it is {} bytes long; at most {MAX_VERSION_LEN} fit the volume set identifier",
            version.len()
        ));
    }
    if let Some(bad) = version
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '+')))
    {
        return Err(format!(
            "{:?} is not allowed (only A-Z a-z 0-9 . - +)",
            bad.to_string()
        ));
    }
    let Some(semver) = version.strip_prefix('v') else {
        return Err("it must start with v".to_owned());
    };
    semver_parts(semver)
}

fn tolerant(version: &str) -> Result<Version, String> {
    let s = version.trim();
    let s = s.strip_prefix('v').unwrap_or(s);
    if let Some(bad) = s
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '+')))
    {
        return Err(format!(
            "{:?} is not allowed (only A-Z a-z 0-9 . - +)",
            bad.to_string()
        ));
    }
    let mut parts: Vec<String> = s.splitn(3, '.').map(str::to_owned).collect();
    for part in &mut parts {
        // Leading zeros go (`01` is `1`), as ParseTolerant drops them.
        if part.len() > 1 {
            let trimmed = part.trim_start_matches('0');
            *part = if trimmed.starts_with(|c: char| c.is_ascii_digit()) {
                trimmed.to_owned()
            } else {
                format!("0{trimmed}")
            };
        }
    }
    if parts.len() < 3 {
        if parts.last().is_some_and(|p| p.contains(['+', '-'])) {
            return Err("a short version cannot have a pre-release or build part".to_owned());
        }
        parts.resize(3, "0".to_owned());
    }
    semver_parts(&parts.join("."))
}

/// `MAJOR.MINOR.PATCH[-PRERELEASE][+BUILD]`, semver 2.0.0; the characters are already checked.
fn semver_parts(semver: &str) -> Result<Version, String> {
    let (rest, build) = match semver.split_once('+') {
        Some((rest, build)) => (rest, Some(build)),
        None => (semver, None),
    };
    let (core, pre) = match rest.split_once('-') {
        Some((core, pre)) => (core, Some(pre)),
        None => (rest, None),
    };
    let parts: Vec<&str> = core.split('.').collect();
    let [major, minor, patch] = parts[..] else {
        return Err("MAJOR.MINOR.PATCH must be three numbers separated by dots".to_owned());
    };
    let number = |part: &str| -> Result<u64, String> {
        if !is_numeric(part) {
            return Err(format!("{part:?} in MAJOR.MINOR.PATCH is not a number"));
        }
        if part.len() > 1 && part.starts_with('0') {
            return Err(format!("{part:?} has a leading zero"));
        }
        part.parse()
            .map_err(|_| format!("{part:?} in MAJOR.MINOR.PATCH is too large"))
    };
    let mut version = Version::release(number(major)?, number(minor)?, number(patch)?);
    if let Some(pre) = pre {
        identifiers("pre-release", pre, true)?;
        version.pre = pre.split('.').map(str::to_owned).collect();
    }
    if let Some(build) = build {
        identifiers("build", build, false)?;
        version.build = build.to_owned();
    }
    Ok(version)
}

/// Dot-separated, non-empty identifiers of `0-9 A-Z a-z -` (the caller has checked the
/// characters, so only `+` can still be out of place).
fn identifiers(what: &str, part: &str, numeric_no_leading_zero: bool) -> Result<(), String> {
    for id in part.split('.') {
        if id.is_empty() {
            return Err(format!("the {what} part has an empty identifier"));
        }
        if id.contains('+') {
            return Err(format!("the {what} part cannot contain +"));
        }
        if numeric_no_leading_zero && id.len() > 1 && id.starts_with('0') && is_numeric(id) {
            return Err(format!("the {what} identifier {id:?} has a leading zero"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn upstream_versions_are_accepted() {
        for v in [
            "v1.9.0",
            "v0.0.0",
            "v1.7.6-beta.0",
            "v1.10.0-alpha.0",
            "v1.10.0-alpha.0-45-g1234567",
            "v1.10.0-alpha.0-45-g1234567-dirty",
            "v1.8.0-rc.1+build.5",
            "v1.9.0+20241127.0012",
            "v10.20.30-0A.is.legal",
        ] {
            let parsed = Version::parse(v).unwrap_or_else(|e| panic!("{v:?}: {e}"));
            assert_eq!(format!("v{parsed}"), v, "round trip");
        }
        Version::parse(&format!("v1.9.0-{}", "a".repeat(MAX_VERSION_LEN - 7))).unwrap();
        let v = Version::parse("v1.8.0-rc.1+build.5").unwrap();
        assert_eq!((v.major, v.minor, v.patch), (1, 8, 0));
        assert_eq!(v.pre, ["rc", "1"]);
        assert_eq!(v.build, "build.5");
    }

    #[test]
    fn anything_else_is_refused() {
        let long = format!("v1.9.0-{}", "a".repeat(MAX_VERSION_LEN - 6));
        for v in [
            "",
            "v",
            "1.9.0",
            "V1.9.0",
            "v1.9",
            "v1.9.0.1",
            "v01.9.0",
            "v1.09.0",
            "v1.9.0-",
            "v1.9.0-beta..1",
            "v1.9.0-beta.01",
            "v1.9.0+",
            "v1.9.0+a+b",
            "v1.9.0-rc.1+",
            "v1.9.0\nlinux /EFI/evil.efi\noptions init=/bin/sh",
            "v1.9.0\r",
            "v1.9.0 ",
            "../x",
            "v1/2",
            "v1.9.0/../x",
            "v1.9.0-é",
            "v1.9.0_1",
            "v1.9.0\0",
            "v99999999999999999999.0.0",
            &long,
            &"x".repeat(200),
        ] {
            let err = Version::parse(v).expect_err(v);
            // The message shows the value escaped: a newline cannot split it.
            assert!(!err.to_string().contains('\n'), "{err}");
        }
    }

    #[test]
    fn precedence_is_semver_s() {
        // semver.org's own example chain, each lower than the next.
        let chain = [
            "v1.0.0-alpha",
            "v1.0.0-alpha.1",
            "v1.0.0-alpha.beta",
            "v1.0.0-beta",
            "v1.0.0-beta.2",
            "v1.0.0-beta.11",
            "v1.0.0-rc.1",
            "v1.0.0",
            "v1.0.1",
            "v1.1.0",
            "v2.0.0",
        ];
        for pair in chain.windows(2) {
            let (a, b) = (
                Version::parse(pair[0]).unwrap(),
                Version::parse(pair[1]).unwrap(),
            );
            assert_eq!(
                a.precedence(&b),
                Ordering::Less,
                "{} < {}",
                pair[0],
                pair[1]
            );
            assert_eq!(b.precedence(&a), Ordering::Greater);
            assert!(b.at_least(&a) && !a.at_least(&b));
        }
        let a = Version::parse("v1.9.0+a").unwrap();
        let b = Version::parse("v1.9.0+b").unwrap();
        assert_eq!(
            a.precedence(&b),
            Ordering::Equal,
            "build metadata does not count"
        );
        assert!(a.at_least(&b) && b.at_least(&a));
        assert_eq!(
            Version::parse("v1.14.0-alpha.1").unwrap(),
            Version::release(1, 14, 0).with_pre(&["alpha", "1"])
        );
    }

    #[test]
    fn tolerant_parsing_is_parse_tolerant_s() {
        for (input, canonical) in [
            ("v1.33.1", "1.33.1"),
            ("1.33.1", "1.33.1"),
            (" v1.33.1 ", "1.33.1"),
            ("1.33", "1.33.0"),
            ("v3", "3.0.0"),
            ("v1.033.01", "1.33.1"),
            ("0.28.8", "0.28.8"),
            ("1.37.0-rc.1", "1.37.0-rc.1"),
            ("v3.6.5+meta", "3.6.5+meta"),
        ] {
            assert_eq!(
                Version::parse_tolerant(input).unwrap().to_string(),
                canonical,
                "{input:?}"
            );
        }
        for bad in [
            "",
            "v",
            "x",
            "1.33-rc.1",
            "1.33.x",
            "1.2.3.4",
            "1.2.3-",
            "1.2.3/x",
        ] {
            assert!(Version::parse_tolerant(bad).is_err(), "{bad:?}");
        }
    }
}

//! The Talos version a medium is made for (`--version`). It names the volume (label and volume set
//! identifier) and titles the UEFI boot entry, so only what upstream's version strings look like
//! is accepted: `v` followed by a semantic version, `vMAJOR.MINOR.PATCH[-PRERELEASE][+BUILD]`
//! (semver 2.0.0 after the `v`), e.g. `v1.9.0`, `v1.7.6-beta.0`, `v1.10.0-alpha.0-45-g1234567`.

/// "Talos-" + the version must fit the 128-byte ISO 9660 volume set identifier.
pub const MAX_VERSION_LEN: usize = 128 - "Talos-".len();

/// Why a version is refused.
#[derive(Debug, thiserror::Error)]
#[error(
    "invalid Talos version {version:?}: {reason} (expected vMAJOR.MINOR.PATCH with an optional \
     -PRERELEASE and +BUILD, as upstream's versions: v1.9.0, v1.7.6-beta.0)"
)]
pub struct VersionError {
    pub version: String,
    pub reason: String,
}

/// Accepts exactly `v` + a semantic version 2.0.0: three numeric parts without leading zeros,
/// then optionally `-` and dot-separated pre-release identifiers (`0-9 A-Z a-z -`, numeric ones
/// without leading zeros), then optionally `+` and dot-separated build identifiers (same
/// characters), in all at most [`MAX_VERSION_LEN`] bytes.
pub fn check_version(version: &str) -> Result<(), VersionError> {
    check(version).map_err(|reason| VersionError {
        version: version.to_owned(),
        reason,
    })
}

fn check(version: &str) -> Result<(), String> {
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
    let (rest, build) = match semver.split_once('+') {
        Some((rest, build)) => (rest, Some(build)),
        None => (semver, None),
    };
    let (core, pre) = match rest.split_once('-') {
        Some((core, pre)) => (core, Some(pre)),
        None => (rest, None),
    };
    let parts: Vec<&str> = core.split('.').collect();
    if parts.len() != 3 {
        return Err("MAJOR.MINOR.PATCH must be three numbers separated by dots".to_owned());
    }
    for part in parts {
        if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("{part:?} in MAJOR.MINOR.PATCH is not a number"));
        }
        if part.len() > 1 && part.starts_with('0') {
            return Err(format!("{part:?} has a leading zero"));
        }
    }
    if let Some(pre) = pre {
        identifiers("pre-release", pre, true)?;
    }
    if let Some(build) = build {
        identifiers("build", build, false)?;
    }
    Ok(())
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
        if numeric_no_leading_zero
            && id.len() > 1
            && id.starts_with('0')
            && id.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(format!("the {what} identifier {id:?} has a leading zero"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
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
            check_version(v).unwrap_or_else(|e| panic!("{v:?}: {e}"));
        }
        check_version(&format!("v1.9.0-{}", "a".repeat(MAX_VERSION_LEN - 7))).unwrap();
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
            &long,
            &"x".repeat(200),
        ] {
            let err = check_version(v).expect_err(v);
            // The message shows the value escaped: a newline cannot split it.
            assert!(!err.to_string().contains('\n'), "{err}");
        }
    }
}

//! The upstream volume label rule (see `talos-image-cache-format.md` in the shared notes): real
//! nodes look for a volume whose label starts with `TALOS_`.

/// The prefix every label must have for a node to find the volume.
pub const LABEL_PREFIX: &str = "TALOS_";

/// The longest volume identifier ISO 9660 stores.
pub const MAX_LABEL_LEN: usize = 32;

/// `"Talos-" + version`, upper-cased, `-`, `.`, `_` mapped to `_`, other characters dropped,
/// truncated to 32 as upstream does (the `TALOS_` prefix nodes look for survives):
/// `v1.9.0` -> `TALOS_V1_9_0`. [`label_is_cut`] tells when the cut drops something.
pub fn label_for_version(version: &str) -> String {
    let mut label = mapped(version);
    label.truncate(MAX_LABEL_LEN);
    label
}

/// Whether [`label_for_version`] had to cut the label to 32 characters.
pub fn label_is_cut(version: &str) -> bool {
    mapped(version).len() > MAX_LABEL_LEN
}

/// The upstream mapping before the cut (ASCII only, so bytes are characters).
fn mapped(version: &str) -> String {
    format!("Talos-{version}")
        .chars()
        .filter_map(|c| match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' => Some(c.to_ascii_uppercase()),
            '-' | '.' | '_' => Some('_'),
            _ => None,
        })
        .collect()
}

/// The volume set identifier upstream writes: the unmapped form.
pub fn volume_set_id(version: &str) -> String {
    format!("Talos-{version}")
}

/// Why a label given with `--label` is refused.
#[derive(Debug, thiserror::Error)]
#[error("invalid volume label {label:?}: {reason}")]
pub struct LabelError {
    pub label: String,
    pub reason: &'static str,
}

/// A label must be what ISO 9660 stores verbatim (1-32 of `A-Z 0-9 _`) and must start with
/// `TALOS_`, or the node would never find the cache on the medium.
pub fn check_label(label: &str) -> Result<(), LabelError> {
    let err = |reason| LabelError {
        label: label.to_owned(),
        reason,
    };
    if label.len() > MAX_LABEL_LEN {
        return Err(err("longer than 32 characters"));
    }
    if !label
        .bytes()
        .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
    {
        return Err(err("only A-Z, 0-9 and _ are allowed"));
    }
    if !label.starts_with(LABEL_PREFIX) || label.len() == LABEL_PREFIX.len() {
        return Err(err(
            "it must start with TALOS_ and name something after it: nodes look for the cache on a volume labelled TALOS_*",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_examples() {
        assert_eq!(label_for_version("v1.9.0"), "TALOS_V1_9_0");
        assert_eq!(label_for_version("v1.7.6-beta.0"), "TALOS_V1_7_6_BETA_0");
        assert_eq!(volume_set_id("v1.9.0"), "Talos-v1.9.0");
    }

    #[test]
    fn odd_versions() {
        assert_eq!(label_for_version("v1.9.0+dirty!"), "TALOS_V1_9_0DIRTY");
        let long = label_for_version("v1.10.0-alpha.0-123-gabcdef0123456789");
        assert_eq!(long.len(), 32);
        assert!(long.starts_with("TALOS_V1_10_0_ALPHA_0_123_GABCDE"));
        assert!(label_is_cut("v1.10.0-alpha.0-123-gabcdef0123456789"));
        assert!(!label_is_cut("v1.9.0"));
        // Exactly 32: nothing dropped.
        assert!(!label_is_cut("v1.10.0-alpha.0-123-gabcde"));
        assert_eq!(label_for_version("v1.10.0-alpha.0-123-gabcde").len(), 32);
    }

    #[test]
    fn every_derived_label_is_valid() {
        for v in [
            "v1.9.0",
            "v1.7.6-beta.0",
            "1",
            "v1.10.0-alpha.0-123-gabcdef0123456789",
        ] {
            check_label(&label_for_version(v)).unwrap();
        }
    }

    #[test]
    fn bad_labels() {
        for bad in [
            "",
            "TALOS_",
            "talos_v1",
            "TALOS-V1",
            "OTHER_V1",
            "bad label!",
            &"TALOS_X".repeat(6),
        ] {
            assert!(check_label(bad).is_err(), "{bad:?} accepted");
        }
    }
}

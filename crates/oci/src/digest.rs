//! sha256 content digests, the identity of every blob and manifest in a cache.

use std::fmt;
use std::str::FromStr;

use sha2::{Digest as _, Sha256};

/// A sha256 digest: `sha256:<64 hex>` in references and descriptors, `sha256-<64 hex>` as a file
/// name in the flat tree (FAT has no `:`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest([u8; 32]);

/// Why a digest was refused. Only sha256 is supported: it is what every registry serves for
/// manifests and blobs, and what the cache formats name their files by.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DigestError {
    #[error("digest {input:?} uses the algorithm {algorithm:?}; only sha256 is supported")]
    Algorithm { input: String, algorithm: String },
    #[error("digest {input:?} is not sha256:<64 lower-case hex digits>")]
    Malformed { input: String },
}

impl Digest {
    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Self(Sha256::digest(bytes).into())
    }

    /// Wraps a finished sha256.
    pub fn from_sha256(hash: [u8; 32]) -> Self {
        Self(hash)
    }

    /// Parses `sha256:<hex>`.
    pub fn parse(input: &str) -> Result<Self, DigestError> {
        let Some((algorithm, hex)) = input.split_once(':') else {
            return Err(DigestError::Malformed {
                input: input.to_owned(),
            });
        };
        if algorithm != "sha256" {
            // The distribution grammar allows other algorithms; the cache format names files by
            // sha256 only, so anything else could never be stored.
            let well_formed = !algorithm.is_empty()
                && algorithm
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+._-".contains(&b));
            return Err(if well_formed {
                DigestError::Algorithm {
                    input: input.to_owned(),
                    algorithm: algorithm.to_owned(),
                }
            } else {
                DigestError::Malformed {
                    input: input.to_owned(),
                }
            });
        }
        Self::from_hex(hex).ok_or_else(|| DigestError::Malformed {
            input: input.to_owned(),
        })
    }

    /// Parses a flat-tree file name, `sha256-<hex>`; `None` for any other name.
    pub fn from_file_name(name: &str) -> Option<Self> {
        Self::from_hex(name.strip_prefix("sha256-")?)
    }

    /// Exactly 64 lower-case hex digits: upper case is refused because the file name of a blob
    /// must be the one spelling nodes look up.
    fn from_hex(hex: &str) -> Option<Self> {
        if hex.len() != 64 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return None;
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(hex, &mut out).ok()?;
        Some(Self(out))
    }

    /// The 64 hex digits, without the algorithm.
    pub fn hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The 32 bytes of the hash.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// `sha256-<hex>`, the name under `blob/` and `digest/`.
    pub fn file_name(&self) -> String {
        format!("sha256-{}", self.hex())
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for Digest {
    type Err = DigestError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// Incremental sha256 over a stream, counting bytes.
#[derive(Clone, Default)]
pub struct Hasher {
    inner: Sha256,
    len: u64,
}

impl fmt::Debug for Hasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hasher").field("len", &self.len).finish()
    }
}

impl Hasher {
    pub fn update(&mut self, bytes: &[u8]) {
        self.inner.update(bytes);
        self.len += bytes.len() as u64;
    }

    /// The number of bytes hashed so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The digest and the number of bytes hashed.
    pub fn finish(self) -> (Digest, u64) {
        (Digest(self.inner.finalize().into()), self.len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn parses_and_prints_both_spellings() {
        let d = Digest::parse(&format!("sha256:{EMPTY}")).unwrap();
        assert_eq!(d, Digest::of(b""));
        assert_eq!(d.to_string(), format!("sha256:{EMPTY}"));
        assert_eq!(d.file_name(), format!("sha256-{EMPTY}"));
        assert_eq!(Digest::from_file_name(&d.file_name()), Some(d));
    }

    #[test]
    fn refuses_malformed_and_other_algorithms() {
        for bad in [
            "",
            "sha256",
            "sha256:",
            &format!("sha256:{}", &EMPTY[..63]),
            &format!("sha256:{EMPTY}0"),
            &format!("sha256:{}", EMPTY.to_uppercase()),
            &format!("SHA256:{EMPTY}"),
            &format!("sha256-{EMPTY}"),
        ] {
            assert!(
                matches!(Digest::parse(bad), Err(DigestError::Malformed { .. })),
                "{bad:?}"
            );
        }
        assert!(matches!(
            Digest::parse(&format!("sha512:{EMPTY}{EMPTY}")),
            Err(DigestError::Algorithm { algorithm, .. }) if algorithm == "sha512"
        ));
        assert_eq!(Digest::from_file_name(&format!("sha256:{EMPTY}")), None);
        assert_eq!(Digest::from_file_name(&format!("sha256-{EMPTY}.tmp")), None);
    }

    #[test]
    fn hasher_matches_one_shot() {
        let data = b"hello, world".repeat(1000);
        let mut h = Hasher::default();
        for chunk in data.chunks(7) {
            h.update(chunk);
        }
        assert_eq!(h.len(), data.len() as u64);
        assert_eq!(h.finish(), (Digest::of(&data), data.len() as u64));
        assert_eq!(
            Digest::from_sha256(*Digest::of(b"x").as_bytes()),
            Digest::of(b"x")
        );
    }
}

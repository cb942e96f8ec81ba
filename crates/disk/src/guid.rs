//! GUIDs as GPT stores them, and the label-derived GUIDs that make images reproducible.

use std::fmt;

use sha2::{Digest, Sha256};

/// A GUID, held in the byte order of its text form (RFC 9562: `00112233-4455-6677-8899-aabbccddeeff`
/// is `[0x00, 0x11, ...]`). GPT stores the first three fields little-endian: see [`Guid::to_gpt_bytes`].
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Guid([u8; 16]);

impl Guid {
    /// The GUID whose bytes, in text order, are `bytes`.
    pub const fn from_bytes(bytes: [u8; 16]) -> Self {
        Self(bytes)
    }

    /// The bytes in text order.
    pub const fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }

    /// The GUID upstream Talos derives from a label (`makefs.GUIDFromLabel`): a version-8 UUID
    /// made of the first 16 bytes of sha256(16 zero bytes ‖ label), with the version nibble set to
    /// 8 and the variant bits to RFC 4122's `10`. It is Go's `uuid.NewHash(sha256, uuid.Nil,
    /// label, 8)`; reimplemented here and checked against upstream's own test vectors.
    pub fn from_label(label: &str) -> Self {
        let mut hash = Sha256::new();
        hash.update([0u8; 16]);
        hash.update(label.as_bytes());
        let digest = hash.finalize();
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(&digest[..16]);
        bytes[6] = (bytes[6] & 0x0f) | 0x80;
        bytes[8] = (bytes[8] & 0x3f) | 0x80;
        Self(bytes)
    }

    /// Parses the text form (`C12A7328-F81F-11D2-BA4B-00A0C93EC93B`, either case). Usable in
    /// constants, where a malformed literal fails the build.
    pub const fn parse(text: &str) -> Option<Self> {
        let text = text.as_bytes();
        if text.len() != 36 {
            return None;
        }
        let mut bytes = [0u8; 16];
        let (mut i, mut out) = (0, 0);
        while i < 36 {
            if i == 8 || i == 13 || i == 18 || i == 23 {
                if text[i] != b'-' {
                    return None;
                }
                i += 1;
                continue;
            }
            let (Some(hi), Some(lo)) = (hex_digit(text[i]), hex_digit(text[i + 1])) else {
                return None;
            };
            bytes[out] = hi << 4 | lo;
            out += 1;
            i += 2;
        }
        Some(Self(bytes))
    }

    /// The 16 bytes as a GPT header or entry stores them: the first three fields (4, 2 and 2
    /// bytes) little-endian, the last 8 bytes as they are (UEFI spec, appendix A).
    pub const fn to_gpt_bytes(&self) -> [u8; 16] {
        let b = self.0;
        [
            b[3], b[2], b[1], b[0], b[5], b[4], b[7], b[6], b[8], b[9], b[10], b[11], b[12], b[13],
            b[14], b[15],
        ]
    }

    /// The inverse of [`Guid::to_gpt_bytes`].
    pub const fn from_gpt_bytes(b: [u8; 16]) -> Self {
        Self([
            b[3], b[2], b[1], b[0], b[5], b[4], b[7], b[6], b[8], b[9], b[10], b[11], b[12], b[13],
            b[14], b[15],
        ])
    }
}

const fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Lower case, as upstream and `blkid` print them (`sgdisk` prints upper case).
impl fmt::Display for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, byte) in self.0.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                f.write_str("-")?;
            }
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Guid({self})")
    }
}

/// A constant GUID from its text form; a malformed literal is a compile error.
macro_rules! guid {
    ($text:literal) => {{
        const G: $crate::Guid = match $crate::Guid::parse($text) {
            Some(guid) => guid,
            None => panic!(concat!("malformed GUID literal ", $text)),
        };
        G
    }};
}
pub(crate) use guid;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_guids_match_upstream_test_vectors() {
        // siderolabs/talos pkg/makefs/makefs_test.go, TestPartitionGUIDFromLabel.
        for (label, want) in [
            ("EFI", "bca5174b-0118-8a6a-af0b-2c6e1585acae"),
            ("BOOT", "24c73076-4092-85dd-9d98-686a2dbf6d81"),
            ("META", "cf04f137-101e-8ec6-9627-fa3f51cdabb8"),
            ("IMAGECACHE", "3b5449bc-c21f-8009-8b51-18945967f8df"),
        ] {
            assert_eq!(Guid::from_label(label).to_string(), want, "{label}");
        }
        assert_ne!(Guid::from_label("BIOS"), Guid::from_label("BOOT"));
    }

    #[test]
    fn parses_and_prints_the_text_form() {
        let esp = Guid::parse("C12A7328-F81F-11D2-BA4B-00A0C93EC93B").unwrap();
        assert_eq!(esp.to_string(), "c12a7328-f81f-11d2-ba4b-00a0c93ec93b");
        assert_eq!(Guid::parse(&esp.to_string()), Some(esp));
        for bad in [
            "",
            "C12A7328-F81F-11D2-BA4B-00A0C93EC93",
            "C12A7328F-81F-11D2-BA4B-00A0C93EC93B",
            "G12A7328-F81F-11D2-BA4B-00A0C93EC93B",
            "C12A7328-F81F-11D2-BA4B-00A0C93EC93B0",
        ] {
            assert_eq!(Guid::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn gpt_byte_order_is_mixed_endian() {
        // The EFI System type as it appears on disk (UEFI spec; `xxd` of any ESP entry).
        let esp = guid!("C12A7328-F81F-11D2-BA4B-00A0C93EC93B");
        assert_eq!(
            esp.to_gpt_bytes(),
            [
                0x28, 0x73, 0x2a, 0xc1, 0x1f, 0xf8, 0xd2, 0x11, 0xba, 0x4b, 0x00, 0xa0, 0xc9, 0x3e,
                0xc9, 0x3b
            ]
        );
        assert_eq!(Guid::from_gpt_bytes(esp.to_gpt_bytes()), esp);
    }
}

//! What a kernel and an initramfs must look like for a medium to boot them: pure checks over a
//! file's first bytes ([`HEAD_LEN`] of them, or the whole file when it is shorter).

/// Bytes of a kernel or initramfs the checks look at.
pub const HEAD_LEN: usize = 4096;

/// Why a file is not a kernel the machine boots.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KernelFormatError {
    #[error("the file is empty")]
    Empty,
    #[error(
        "it has no x86 boot-protocol header (boot flag 0xAA55 at offset 0x1FE and \"HdrS\" at \
         0x202), so it is not a bzImage that ISOLINUX can boot"
    )]
    NoX86Header,
    #[error(
        "it has no arm64 Image header (magic \"ARM\\x64\" at offset 0x38) and no arm64 EFI stub"
    )]
    NoArm64Header,
    #[error(
        "it has no EFI stub (an \"MZ\" header at offset 0 pointing at a \"PE\\0\\0\" header), so \
         systemd-boot cannot start it on UEFI"
    )]
    NoEfiStub,
    #[error("its EFI stub is for PE machine 0x{found:04x}, not {expected} (0x{wanted:04x})")]
    EfiMachine {
        found: u16,
        wanted: u16,
        expected: &'static str,
    },
}

/// PE machine types (PE format, "Machine Types").
pub const PE_MACHINE_AMD64: u16 = 0x8664;
pub const PE_MACHINE_ARM64: u16 = 0xaa64;

/// An x86-64 kernel that both boot paths of a medium can start: a bzImage (the x86 boot
/// protocol header, for ISOLINUX) with an x86-64 EFI stub (a PE image, for systemd-boot).
pub fn check_amd64_kernel(head: &[u8]) -> Result<(), KernelFormatError> {
    if head.is_empty() {
        return Err(KernelFormatError::Empty);
    }
    if !has_at(head, 0x1FE, &[0x55, 0xAA]) || !has_at(head, 0x202, b"HdrS") {
        return Err(KernelFormatError::NoX86Header);
    }
    check_efi_stub(head, PE_MACHINE_AMD64, "x86-64")
}

/// An arm64 kernel: the arm64 `Image` header (what a boot loader that loads `Image` checks), or
/// an arm64 EFI stub (a compressed `vmlinuz.efi`, which only UEFI starts). Debian's arm64
/// `vmlinuz` is an uncompressed `Image` with both.
pub fn check_arm64_kernel(head: &[u8]) -> Result<(), KernelFormatError> {
    if head.is_empty() {
        return Err(KernelFormatError::Empty);
    }
    if has_at(head, 0x38, b"ARM\x64") {
        return Ok(());
    }
    match check_efi_stub(head, PE_MACHINE_ARM64, "arm64") {
        Err(KernelFormatError::NoEfiStub) => Err(KernelFormatError::NoArm64Header),
        other => other,
    }
}

/// Whether `head` holds `magic` at `offset`.
fn has_at(head: &[u8], offset: usize, magic: &[u8]) -> bool {
    head.get(offset..offset + magic.len()) == Some(magic)
}

/// "MZ" at 0, the PE header offset at 0x3C, "PE\0\0" there and the machine type after it.
fn check_efi_stub(
    head: &[u8],
    wanted: u16,
    expected: &'static str,
) -> Result<(), KernelFormatError> {
    if !has_at(head, 0, b"MZ") {
        return Err(KernelFormatError::NoEfiStub);
    }
    let pe = head
        .get(0x3C..0x40)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
        .ok_or(KernelFormatError::NoEfiStub)?;
    let header = pe
        .checked_add(6)
        .and_then(|end| head.get(pe..end))
        .ok_or(KernelFormatError::NoEfiStub)?;
    if !has_at(header, 0, b"PE\0\0") {
        return Err(KernelFormatError::NoEfiStub);
    }
    let found = u16::from_le_bytes([header[4], header[5]]);
    if found != wanted {
        return Err(KernelFormatError::EfiMachine {
            found,
            wanted,
            expected,
        });
    }
    Ok(())
}

/// What an initramfs is, as far as the kernel's unpacker is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InitramfsFormat {
    /// An uncompressed newc cpio archive ("070701", or "070702" with checksums).
    Cpio,
    Gzip,
    Xz,
    Zstd,
    Lz4,
    Bzip2,
    Lzma,
}

/// Why a file is not an initramfs the kernel unpacks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InitramfsFormatError {
    #[error("the file is empty")]
    Empty,
    #[error(
        "it starts with {head}: expected a newc cpio archive (\"070701\" or \"070702\") or one \
         compressed with gzip, xz, zstd, lz4 (legacy format), bzip2 or lzma"
    )]
    Unknown { head: String },
    #[error(
        "it is xz with integrity check {check}; the kernel's xz decoder takes only CRC32 or none \
         (xz --check=crc32)"
    )]
    XzCheck { check: &'static str },
}

/// The format of an initramfs from its first bytes: a newc cpio archive, or one of the
/// compressions the kernel decodes (each behind its own config option: the common ones).
pub fn initramfs_format(head: &[u8]) -> Result<InitramfsFormat, InitramfsFormatError> {
    const MAGICS: &[(&[u8], InitramfsFormat)] = &[
        (b"070701", InitramfsFormat::Cpio),
        (b"070702", InitramfsFormat::Cpio),
        (&[0x1f, 0x8b], InitramfsFormat::Gzip),
        (&[0xfd, b'7', b'z', b'X', b'Z', 0x00], InitramfsFormat::Xz),
        (&[0x28, 0xb5, 0x2f, 0xfd], InitramfsFormat::Zstd),
        (&[0x02, 0x21, 0x4c, 0x18], InitramfsFormat::Lz4),
        (b"BZh", InitramfsFormat::Bzip2),
        (&[0x5d, 0x00, 0x00], InitramfsFormat::Lzma),
    ];
    if head.is_empty() {
        return Err(InitramfsFormatError::Empty);
    }
    let Some(&(_, format)) = MAGICS.iter().find(|(magic, _)| head.starts_with(magic)) else {
        return Err(InitramfsFormatError::Unknown {
            head: describe_head(head),
        });
    };
    if format == InitramfsFormat::Xz {
        // Stream flags: a zero byte, then the check type (xz file format 2.1.1.2).
        let check = match head.get(7).copied() {
            Some(0x00 | 0x01) | None => None,
            Some(0x04) => Some("CRC64"),
            Some(0x0A) => Some("SHA-256"),
            Some(_) => Some("of an unknown type"),
        };
        if let Some(check) = check {
            return Err(InitramfsFormatError::XzCheck { check });
        }
    }
    Ok(format)
}

/// The first bytes, in hex, for an error message.
fn describe_head(head: &[u8]) -> String {
    let hex: Vec<String> = head.iter().take(8).map(|b| format!("{b:02x}")).collect();
    format!("bytes {}", hex.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal bzImage head with an EFI stub for `machine` at PE offset 0x80.
    fn bzimage(machine: u16) -> Vec<u8> {
        let mut k = vec![0u8; 0x400];
        k[..2].copy_from_slice(b"MZ");
        k[0x3C..0x40].copy_from_slice(&0x80u32.to_le_bytes());
        k[0x80..0x84].copy_from_slice(b"PE\0\0");
        k[0x84..0x86].copy_from_slice(&machine.to_le_bytes());
        k[0x1FE..0x200].copy_from_slice(&[0x55, 0xAA]);
        k[0x202..0x206].copy_from_slice(b"HdrS");
        k
    }

    #[test]
    fn amd64_kernel() {
        check_amd64_kernel(&bzimage(PE_MACHINE_AMD64)).unwrap();
        assert_eq!(check_amd64_kernel(b""), Err(KernelFormatError::Empty));
        assert_eq!(
            check_amd64_kernel(b"#!/bin/sh\necho not a kernel\n"),
            Err(KernelFormatError::NoX86Header)
        );
        // A head cut before the header, a wrong boot flag, a wrong magic.
        let k = bzimage(PE_MACHINE_AMD64);
        assert_eq!(
            check_amd64_kernel(&k[..0x204]),
            Err(KernelFormatError::NoX86Header)
        );
        for (at, byte) in [(0x1FE, 0u8), (0x1FF, 0), (0x202, b'h'), (0x205, b's')] {
            let mut bad = k.clone();
            bad[at] = byte;
            assert_eq!(
                check_amd64_kernel(&bad),
                Err(KernelFormatError::NoX86Header),
                "{at:#x}"
            );
        }
        // A bzImage without an EFI stub (BIOS only), or with one for another machine.
        let mut no_stub = k.clone();
        no_stub[..2].copy_from_slice(b"\0\0");
        assert_eq!(
            check_amd64_kernel(&no_stub),
            Err(KernelFormatError::NoEfiStub)
        );
        let mut bad_pe = k.clone();
        bad_pe[0x80] = b'X';
        assert_eq!(
            check_amd64_kernel(&bad_pe),
            Err(KernelFormatError::NoEfiStub)
        );
        let mut far_pe = k.clone();
        far_pe[0x3C..0x40].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(
            check_amd64_kernel(&far_pe),
            Err(KernelFormatError::NoEfiStub)
        );
        assert!(matches!(
            check_amd64_kernel(&bzimage(PE_MACHINE_ARM64)),
            Err(KernelFormatError::EfiMachine { found: 0xaa64, .. })
        ));
    }

    #[test]
    fn arm64_kernel() {
        let mut image = vec![0u8; 0x40];
        image[0x38..0x3C].copy_from_slice(b"ARM\x64");
        check_arm64_kernel(&image).unwrap();
        check_arm64_kernel(&bzimage(PE_MACHINE_ARM64)).unwrap();
        assert_eq!(check_arm64_kernel(b""), Err(KernelFormatError::Empty));
        assert_eq!(
            check_arm64_kernel(&[0u8; 0x40]),
            Err(KernelFormatError::NoArm64Header)
        );
        assert!(matches!(
            check_arm64_kernel(&bzimage(PE_MACHINE_AMD64)),
            Err(KernelFormatError::EfiMachine { found: 0x8664, .. })
        ));
    }

    #[test]
    fn initramfs_formats() {
        let xz_crc32 = [0xfd, b'7', b'z', b'X', b'Z', 0, 0, 0x01, 0x69, 0x22];
        let cases: [(&[u8], InitramfsFormat); 9] = [
            (b"070701000000010000", InitramfsFormat::Cpio),
            (b"070702", InitramfsFormat::Cpio),
            (&[0x1f, 0x8b, 0x08, 0x00], InitramfsFormat::Gzip),
            (&xz_crc32, InitramfsFormat::Xz),
            (
                &[0xfd, b'7', b'z', b'X', b'Z', 0, 0, 0x00],
                InitramfsFormat::Xz,
            ),
            (&[0x28, 0xb5, 0x2f, 0xfd, 0x04], InitramfsFormat::Zstd),
            (&[0x02, 0x21, 0x4c, 0x18, 0x00], InitramfsFormat::Lz4),
            (b"BZh91AY&SY", InitramfsFormat::Bzip2),
            (&[0x5d, 0x00, 0x00, 0x80, 0x00], InitramfsFormat::Lzma),
        ];
        for (head, format) in cases {
            assert_eq!(initramfs_format(head), Ok(format), "{head:02x?}");
        }
    }

    #[test]
    fn initramfs_refusals() {
        assert_eq!(initramfs_format(b""), Err(InitramfsFormatError::Empty));
        let bads: [&[u8]; 6] = [
            b"hello, I am a text file\n",
            b"070707",
            b"07070",
            &[0x1f],
            &[0x00; 16],
            &[0xfd, b'7', b'z', b'X', b'Z'],
        ];
        for bad in bads {
            assert!(
                matches!(
                    initramfs_format(bad),
                    Err(InitramfsFormatError::Unknown { .. })
                ),
                "{bad:02x?}"
            );
        }
        let err = initramfs_format(b"hello").unwrap_err().to_string();
        assert!(err.contains("68 65 6c 6c 6f"), "{err}");
        assert_eq!(
            initramfs_format(&[0xfd, b'7', b'z', b'X', b'Z', 0, 0, 0x04]),
            Err(InitramfsFormatError::XzCheck { check: "CRC64" })
        );
        assert_eq!(
            initramfs_format(&[0xfd, b'7', b'z', b'X', b'Z', 0, 0, 0x0A]),
            Err(InitramfsFormatError::XzCheck { check: "SHA-256" })
        );
    }
}

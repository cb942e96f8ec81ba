//! Property tests of what `imager iso` reads from the user: the kernel and initramfs (their
//! first bytes, to tell their formats), `--version`, `--label` and `--extra-kernel-arg`. Whatever
//! the input, an answer or a refusal, never a panic; what is accepted cannot add a line to a
//! boot-loader file, and a version's derived label is one the node finds.

#![allow(clippy::unwrap_used)]

use imager_media::bootcfg::{self, BootFiles};
use imager_media::formats::{self, PE_MACHINE_AMD64, PE_MACHINE_ARM64};
use imager_media::{label, version};
use proptest::prelude::*;

/// 512 cases per property, or `PROPTEST_CASES` when set (for a longer run by hand).
fn config() -> ProptestConfig {
    ProptestConfig {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(512),
        ..ProptestConfig::default()
    }
}

/// The first bytes of a kernel: random, or with the magics where the checks look and the PE
/// header offset pointing anywhere (past the end, near `u32::MAX`).
fn kernel_head() -> impl Strategy<Value = Vec<u8>> {
    let structured = (
        prop::collection::vec(any::<u8>(), 0..0x600),
        any::<bool>(),
        any::<bool>(),
        prop_oneof![
            0u32..0x600,
            Just(u32::MAX),
            Just(u32::MAX - 3),
            any::<u32>()
        ],
        prop::sample::select(vec![PE_MACHINE_AMD64, PE_MACHINE_ARM64, 0x14c, 0]),
    )
        .prop_map(|(mut head, x86, arm, pe, machine)| {
            let mut put = |at: usize, bytes: &[u8]| {
                if head.len() < at + bytes.len() {
                    head.resize(at + bytes.len(), 0);
                }
                head[at..at + bytes.len()].copy_from_slice(bytes);
            };
            put(0, b"MZ");
            put(0x3c, &pe.to_le_bytes());
            if x86 {
                put(0x1fe, &[0x55, 0xaa]);
                put(0x202, b"HdrS");
            }
            if arm {
                put(0x38, b"ARM\x64");
            }
            if let Ok(pe) = usize::try_from(pe)
                && pe < 0x600
            {
                put(pe, b"PE\0\0");
                put(pe + 4, &machine.to_le_bytes());
            }
            head
        });
    prop_oneof![prop::collection::vec(any::<u8>(), 0..0x600), structured]
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn any_kernel_head_is_told_apart(head in kernel_head()) {
        if formats::check_amd64_kernel(&head).is_ok() {
            prop_assert!(head.get(0x1fe..0x200) == Some(&[0x55, 0xaa][..]));
            prop_assert!(head.get(0x202..0x206) == Some(&b"HdrS"[..]));
            prop_assert!(head.starts_with(b"MZ"));
        }
        let _ = formats::check_arm64_kernel(&head);
    }

    #[test]
    fn any_initramfs_head_is_told_apart(head in prop_oneof![
        prop::collection::vec(any::<u8>(), 0..64),
        (prop::sample::select(vec![&b"070701"[..], b"\x1f\x8b", b"\xfd7zXZ\0", b"\x28\xb5\x2f\xfd", b"\x02\x21\x4c\x18", b"BZh", b"\x5d\0\0"]),
         prop::collection::vec(any::<u8>(), 0..12))
            .prop_map(|(magic, rest)| [magic, &rest].concat()),
    ]) {
        let _ = formats::initramfs_format(&head);
    }

    /// An accepted version goes into loader files and the volume descriptor as it is: it holds
    /// no line break or control character, its label is a valid one nodes look for, and its
    /// volume set identifier fits.
    #[test]
    fn accepted_versions_are_safe_everywhere_they_go(v in prop_oneof![
        "v(0|[1-9][0-9]{0,3})\\.(0|[1-9][0-9]{0,3})\\.(0|[1-9][0-9]{0,3})(-[0-9A-Za-z-]{1,8}(\\.[0-9A-Za-z-]{1,8}){0,3})?(\\+[0-9A-Za-z-]{1,8}(\\.[0-9A-Za-z-]{1,8}){0,2})?",
        "v[0-9.+a-z\\n/-]{0,20}",
        "\\PC{0,30}",
        ".{0,30}",
    ]) {
        if version::check_version(&v).is_ok() {
            prop_assert!(bootcfg::loader_text("version", &v).is_ok());
            let l = label::label_for_version(&v);
            prop_assert!(label::check_label(&l).is_ok(), "{:?} -> {:?}", v, l);
            prop_assert!(label::volume_set_id(&v).len() <= 128);
            let entry = bootcfg::systemd_boot_entry(
                &format!("Talos {v}"),
                BootFiles { kernel: "/k", initramfs: "/i" },
                "console=tty0",
            )
            .unwrap();
            prop_assert_eq!(entry.lines().count(), 5);
        }
    }

    /// Whatever extra kernel arguments are accepted, each loader file keeps its lines.
    #[test]
    fn accepted_kernel_args_add_no_lines(args in prop::collection::vec(prop_oneof![
        "[a-z_.]{1,8}(=[a-zA-Z0-9,/ ]{0,8})?",
        "\\PC{0,8}",
        ".{0,8}",
        "[\\x00-\\x20\\x7f\\u{85}\\u{2028}a]{0,4}",
    ], 0..5)) {
        if let Ok(line) = bootcfg::kernel_cmdline(&args) {
            let files = BootFiles { kernel: "/boot/vmlinuz", initramfs: "/boot/initramfs.xz" };
            let isolinux = bootcfg::isolinux_cfg(files, &line).unwrap();
            prop_assert_eq!(isolinux.lines().count(), 9);
            let entry = bootcfg::systemd_boot_entry("Talos", files, &line).unwrap();
            prop_assert_eq!(entry.lines().count(), 5);
            prop_assert!(!line.chars().any(|c| c.is_control()));
        }
    }

    #[test]
    fn accepted_labels_are_iso_volume_identifiers(l in prop_oneof!["TALOS_[A-Z0-9_]{0,30}", "\\PC{0,40}"]) {
        if label::check_label(&l).is_ok() {
            prop_assert!(l.len() <= 32 && l.starts_with("TALOS_"));
            prop_assert!(l.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_'));
        }
    }
}

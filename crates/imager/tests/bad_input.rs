//! Hostile and broken input on the command line (issue 9): each is refused with an error that
//! names the flag or file and the cause, and nothing is left under the output directory. These
//! use small stand-in assets (`common::fake_assets`): no QEMU, no boot assets.

// Test code: a panic with its message is how a failure is reported, helpers included.
#![allow(clippy::unwrap_used)]

mod common;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Output;

/// `imager iso` with stand-in assets from `dir` into `dir/out`, plus `args`.
fn iso(dir: &Path, args: &[&OsStr]) -> (Output, PathBuf) {
    let assets = common::fake_assets(dir);
    let out = dir.join("out");
    let mut all: Vec<&OsStr> = vec![
        "iso".as_ref(),
        "--assets".as_ref(),
        assets.as_os_str(),
        "--output".as_ref(),
        out.as_os_str(),
    ];
    all.extend_from_slice(args);
    (common::imager(all), out)
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Asserts that the run failed, its error contains every one of `needles`, and no file was left
/// in `outdir`.
fn assert_refused(out: &Output, outdir: &Path, what: &str, needles: &[&str]) {
    let err = stderr(out);
    assert!(!out.status.success(), "{what} was accepted:\n{err}");
    for needle in needles {
        assert!(
            err.contains(needle),
            "the error for {what} does not say {needle:?}:\n{err}"
        );
    }
    let left = common::files_under(outdir);
    assert!(left.is_empty(), "{what} left files behind: {left:?}");
}

// ---- --version ----------------------------------------------------------------------------------

#[test]
fn a_version_with_a_newline_cannot_add_loader_lines() {
    let evil = "v1.9.0\nlinux /EFI/evil.efi\noptions init=/bin/sh";
    let dir = common::scratch();
    let (out, outdir) = iso(dir.path(), &["--version".as_ref(), evil.as_ref()]);
    assert_refused(
        &out,
        &outdir,
        "a --version with line breaks",
        &["--version", "invalid Talos version", r"v1.9.0\nlinux"],
    );
}

#[test]
fn versions_that_are_not_talos_versions_are_refused_naming_the_flag() {
    let long = format!("v1.9.0-{}", "a".repeat(200));
    for bad in [
        "../x",
        "v1/2",
        "v1.9.0-é",
        "1.9.0",
        "v1.9",
        "v1.9.0\r",
        "",
        long.as_str(),
    ] {
        let dir = common::scratch();
        let (out, outdir) = iso(dir.path(), &["--version".as_ref(), bad.as_ref()]);
        assert_refused(
            &out,
            &outdir,
            &format!("--version {bad:?}"),
            &["--version", "invalid Talos version"],
        );
        assert!(
            !stderr(&out).contains("volume identifier"),
            "{}",
            stderr(&out)
        );
    }
}

#[test]
fn upstream_style_versions_are_accepted() {
    let dir = common::scratch();
    let (out, outdir) = iso(
        dir.path(),
        &["--version".as_ref(), "v1.8.0-rc.1+build.5".as_ref()],
    );
    common::assert_success(&out, "imager iso --version v1.8.0-rc.1+build.5");
    assert!(outdir.join("metal-amd64.iso").is_file());
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("label TALOS_V1_8_0_RC_1BUILD_5"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// A label derived from a long version is cut to 32 characters as upstream does, and the user
/// is told so.
#[test]
fn a_long_derived_label_is_cut_and_said_so() {
    let dir = common::scratch();
    let version = "v1.10.0-alpha.0-123-gabcdef0123456789";
    let (out, _) = iso(dir.path(), &["--version".as_ref(), version.as_ref()]);
    common::assert_success(&out, "imager iso with a long --version");
    let label = "TALOS_V1_10_0_ALPHA_0_123_GABCDE";
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&format!("label {label})")),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let err = stderr(&out);
    assert!(
        err.contains("--version") && err.contains("cut to 32") && err.contains(label),
        "the cut is not reported:\n{err}"
    );
}

#[test]
fn a_bad_extra_kernel_arg_names_the_flag() {
    let dir = common::scratch();
    let (out, outdir) = iso(
        dir.path(),
        &["--extra-kernel-arg".as_ref(), "a\nDEFAULT evil".as_ref()],
    );
    assert_refused(
        &out,
        &outdir,
        "an --extra-kernel-arg with a line break",
        &["--extra-kernel-arg", r"a\nDEFAULT evil"],
    );
}

// ---- --kernel and --initramfs -----------------------------------------------------------------

/// A file in `dir` with `bytes`, as a path argument.
fn input(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

#[test]
fn a_kernel_that_cannot_boot_is_refused_naming_it() {
    let mut bios_only = common::filler("bios-only", 4096);
    common::stand_in_kernel_head(&mut bios_only);
    bios_only[..2].copy_from_slice(b"\0\0");
    let cases: [(&str, &[u8], &str); 3] = [
        ("empty-kernel", b"", "empty"),
        (
            "text-kernel",
            b"#!/bin/sh\necho I am not a kernel\n",
            "no x86 boot-protocol header",
        ),
        ("bios-only-kernel", &bios_only, "no EFI stub"),
    ];
    for (name, bytes, cause) in cases {
        let dir = common::scratch();
        let kernel = input(dir.path(), name, bytes);
        let (out, outdir) = iso(dir.path(), &["--kernel".as_ref(), kernel.as_os_str()]);
        assert_refused(
            &out,
            &outdir,
            &format!("--kernel {name}"),
            &[kernel.to_str().unwrap(), "amd64", cause],
        );
    }
}

#[test]
fn an_initramfs_the_kernel_cannot_unpack_is_refused_naming_it() {
    let mut xz_crc64 = common::filler("crc64", 1024);
    xz_crc64[..8].copy_from_slice(b"\xfd7zXZ\0\0\x04");
    let cases: [(&str, &[u8], &str); 3] = [
        ("empty-initramfs", b"", "empty"),
        (
            "text-initramfs",
            b"this is not an initramfs\n",
            "expected a newc cpio archive",
        ),
        ("crc64-initramfs", &xz_crc64, "CRC64"),
    ];
    for (name, bytes, cause) in cases {
        let dir = common::scratch();
        let initramfs = input(dir.path(), name, bytes);
        let (out, outdir) = iso(dir.path(), &["--initramfs".as_ref(), initramfs.as_os_str()]);
        assert_refused(
            &out,
            &outdir,
            &format!("--initramfs {name}"),
            &[initramfs.to_str().unwrap(), cause],
        );
    }
}

#[test]
fn an_uncompressed_cpio_initramfs_is_taken() {
    let dir = common::scratch();
    let mut cpio = b"070701".to_vec();
    cpio.extend(common::filler("cpio", 2048));
    let initramfs = input(dir.path(), "initramfs.cpio", &cpio);
    let (out, outdir) = iso(dir.path(), &["--initramfs".as_ref(), initramfs.as_os_str()]);
    common::assert_success(&out, "imager iso --initramfs initramfs.cpio");
    assert!(outdir.join("metal-amd64.iso").is_file());
}

// ---- cache list, --output -----------------------------------------------------------------------

/// Copies the demo cache into `dest` (a flat tree).
fn copy_demo_cache(dest: &Path) {
    let src = common::demo_cache();
    for entry in walkdir::WalkDir::new(&src) {
        let entry = entry.unwrap();
        let target = dest.join(entry.path().strip_prefix(&src).unwrap());
        if entry.file_type().is_dir() {
            std::fs::create_dir_all(&target).unwrap();
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

#[test]
fn cache_list_escapes_names_that_would_split_a_row() {
    let dir = common::scratch();
    let cache = dir.path().join("cache");
    copy_demo_cache(&cache);
    let tags = cache.join("manifests/docker.io/library/busybox/reference");
    std::fs::copy(tags.join("latest"), tags.join("evil\nfake:row")).unwrap();
    std::fs::copy(tags.join("latest"), tags.join("red\u{1b}[31m")).unwrap();

    let out = common::imager(["cache".as_ref(), "list".as_ref(), cache.as_os_str()]);
    common::assert_success(&out, "imager cache list");
    let text = String::from_utf8(out.stdout).unwrap();
    let rows: Vec<&str> = text.lines().collect();
    // The header, the demo cache's two tags and the two added ones: one line each.
    assert_eq!(rows.len(), 5, "{text}");
    assert!(
        rows.iter()
            .any(|r| r.starts_with(r"docker.io/library/busybox:evil\nfake:row ")),
        "{text}"
    );
    assert!(
        rows.iter()
            .any(|r| r.starts_with(r"docker.io/library/busybox:red\u{1b}[31m ")),
        "{text}"
    );
    assert!(!text.contains('\u{1b}'), "{text}");
    // Plain names are shown as they are.
    assert!(
        rows.iter()
            .any(|r| r.starts_with("docker.io/library/busybox:latest ")),
        "{text}"
    );
}

#[test]
fn an_output_that_is_a_file_is_named_with_the_flag() {
    let dir = common::scratch();
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, b"a regular file").unwrap();
    let assets = common::fake_assets(dir.path());
    let out = common::imager([
        "iso".as_ref(),
        "--assets".as_ref(),
        assets.as_os_str(),
        "--output".as_ref(),
        file.as_os_str(),
    ]);
    let err = stderr(&out);
    assert!(!out.status.success(), "a file as --output was accepted");
    for needle in ["--output", file.to_str().unwrap(), "is not a directory"] {
        assert!(
            err.contains(needle),
            "the error does not say {needle:?}:\n{err}"
        );
    }
    assert!(!err.contains("os error 17"), "{err}");
    assert_eq!(std::fs::read(&file).unwrap(), b"a regular file");
}

// ---- the cache's own files -------------------------------------------------------------------

/// A symbolic link or a FIFO in a flat cache would put bytes from outside the cache on the
/// medium (or block the build): refused, naming the file, before anything is written.
#[test]
fn a_cache_holding_a_link_or_a_fifo_is_refused_naming_it() {
    let name = format!("sha256-{}", "a".repeat(64));
    for kind in ["symlink", "fifo"] {
        let dir = common::scratch();
        let cache = dir.path().join("cache");
        copy_demo_cache(&cache);
        let odd = cache.join("blob").join(&name);
        match kind {
            "symlink" => std::os::unix::fs::symlink("/etc/passwd", &odd).unwrap(),
            _ => {
                let made = std::process::Command::new("mkfifo").arg(&odd).status();
                assert!(made.unwrap().success(), "mkfifo {}", odd.display());
            }
        }
        let (out, outdir) = iso(dir.path(), &["--image-cache".as_ref(), cache.as_os_str()]);
        assert_refused(
            &out,
            &outdir,
            &format!("a cache holding a {kind}"),
            &[
                odd.to_str().unwrap(),
                "only regular files and directories can go into the image",
            ],
        );
    }
}

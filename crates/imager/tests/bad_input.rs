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

// ---- cache contents on media (items 4 and 5) ----------------------------------------------------

const BUSYBOX: &str = "manifests/docker.io/library/busybox";

/// The demo cache without busybox's amd64 child: its index lists amd64 and arm64, and neither
/// is cached.
fn cache_without_busybox_images(dest: &Path) {
    copy_demo_cache(dest);
    let digests = dest.join(BUSYBOX).join("digest");
    let index = std::fs::read(dest.join(BUSYBOX).join("reference/latest")).unwrap();
    let index_name = format!("sha256-{}", hex::encode(sha2::Sha256::digest(&index)));
    for entry in std::fs::read_dir(&digests).unwrap() {
        let path = entry.unwrap().path();
        if path.file_name().unwrap() != index_name.as_str() {
            std::fs::remove_file(path).unwrap();
        }
    }
}

fn cache_verify(path: &Path) -> Output {
    common::imager(["cache".as_ref(), "verify".as_ref(), path.as_os_str()])
}

use sha2::Digest as _;

#[test]
fn an_index_with_no_cached_image_fails_verify_and_the_medium() {
    let dir = common::scratch();
    let cache = dir.path().join("cache");
    cache_without_busybox_images(&cache);

    let out = cache_verify(&cache);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "verify passed:\n{text}");
    assert!(
        text.contains("docker.io/library/busybox:latest: none of the 2 images its index lists (linux/amd64, linux/arm64/v8) is cached"),
        "{text}"
    );
    assert!(text.contains("1 errors"), "{text}");

    let (out, outdir) = iso(dir.path(), &["--image-cache".as_ref(), cache.as_os_str()]);
    assert_refused(
        &out,
        &outdir,
        "a cache with an image no node can pull",
        &[
            "--image-cache",
            "--skip-unusable-images",
            "docker.io/library/busybox:latest",
            "none of the 2 images",
        ],
    );

    // Told to skip it: the medium holds the rest, and says what it left out.
    let (out, outdir) = iso(
        dir.path(),
        &[
            "--image-cache".as_ref(),
            cache.as_os_str(),
            "--skip-unusable-images".as_ref(),
        ],
    );
    common::assert_success(&out, "imager iso --skip-unusable-images");
    assert!(
        stderr(&out).contains("warning: left out of the medium (--skip-unusable-images): docker.io/library/busybox:latest"),
        "{}",
        stderr(&out)
    );
    let medium = outdir.join("metal-amd64.iso");
    let out = cache_verify(&medium);
    common::assert_success(
        &out,
        "verify of the medium made with --skip-unusable-images",
    );
    let text = String::from_utf8_lossy(&out.stdout);
    // The csi-node-driver-registrar image is there, busybox's tag and index are gone (the
    // blobs its missing child named were no image's before, and stay: they are not its).
    assert!(
        text.contains("1 repositories, 1 tags, 1 manifests, 4 blobs"),
        "{text}"
    );
    assert!(text.contains("0 errors"), "{text}");
    assert!(!text.contains("busybox"), "{text}");
}

#[test]
fn verify_refuses_a_truncated_iso() {
    let dir = common::scratch();
    let (out, outdir) = iso(
        dir.path(),
        &["--image-cache".as_ref(), common::demo_cache().as_os_str()],
    );
    common::assert_success(&out, "imager iso with the demo cache");
    let medium = outdir.join("metal-amd64.iso");
    common::assert_success(&cache_verify(&medium), "verify of a whole medium");
    let len = std::fs::metadata(&medium).unwrap().len();
    std::fs::File::options()
        .write(true)
        .open(&medium)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    let out = cache_verify(&medium);
    let err = stderr(&out);
    assert!(!out.status.success(), "a truncated ISO verified");
    for needle in [medium.to_str().unwrap(), "truncated", &len.to_string()] {
        assert!(
            err.contains(needle),
            "the error does not say {needle:?}:\n{err}"
        );
    }
}

#[test]
fn media_take_only_the_cache_formats_names() {
    let blob_of = |name: &str| format!("blob/{name}");
    type Damage = Box<dyn Fn(&Path)>;
    let cases: [(&str, Damage, &[&str]); 3] = [
        (
            "a blob named notes.txt",
            Box::new(move |c: &Path| std::fs::write(c.join(blob_of("notes.txt")), b"x").unwrap()),
            &["blob/notes.txt", "name is not sha256-<64 hex>"],
        ),
        (
            "a short digest name",
            Box::new(|c: &Path| std::fs::write(c.join("blob/sha256-abc"), b"x").unwrap()),
            &["blob/sha256-abc", "name is not sha256-<64 hex>"],
        ),
        (
            "an upper-case registry directory",
            Box::new(|c: &Path| {
                let m = c.join("manifests");
                std::fs::create_dir_all(m.join("LOCALHOST_5055_")).unwrap();
                std::fs::rename(
                    m.join("docker.io/library"),
                    m.join("LOCALHOST_5055_/library"),
                )
                .unwrap();
            }),
            &[
                "manifests/LOCALHOST_5055_/library/busybox",
                "lower case (localhost:5055)",
            ],
        ),
    ];
    for (what, damage, needles) in cases {
        let dir = common::scratch();
        let cache = dir.path().join("cache");
        copy_demo_cache(&cache);
        damage(&cache);
        let (out, outdir) = iso(dir.path(), &["--image-cache".as_ref(), cache.as_os_str()]);
        let mut all = vec!["--image-cache"];
        all.extend_from_slice(needles);
        assert_refused(&out, &outdir, what, &all);
        if what.contains("upper-case") {
            let out = cache_verify(&cache);
            assert!(!out.status.success(), "verify passed {what}");
            assert!(
                String::from_utf8_lossy(&out.stdout).contains("lower case (localhost:5055)"),
                "{}",
                String::from_utf8_lossy(&out.stdout)
            );
        }
    }
}

/// A file the format has no place for is no part of the cache: left out, and said so.
#[test]
fn files_outside_the_format_are_left_out_of_the_medium() {
    let dir = common::scratch();
    let cache = dir.path().join("cache");
    copy_demo_cache(&cache);
    std::fs::write(cache.join("README"), b"notes").unwrap();
    std::fs::write(cache.join("blob/.tmp-123"), b"leftover").unwrap();
    let (out, outdir) = iso(dir.path(), &["--image-cache".as_ref(), cache.as_os_str()]);
    common::assert_success(&out, "imager iso with stray files");
    for needle in [
        "warning: left out of the medium: README: not part of the cache format",
        "warning: left out of the medium: blob/.tmp-123",
    ] {
        assert!(
            stderr(&out).contains(needle),
            "{needle:?}:\n{}",
            stderr(&out)
        );
    }
    let out = cache_verify(&outdir.join("metal-amd64.iso"));
    common::assert_success(&out, "verify of the medium");
    let text = String::from_utf8_lossy(&out.stdout);
    // The demo cache's one warning (its arm64 child is not cached), and no stray.
    assert!(text.contains("0 errors, 1 warnings"), "{text}");
    assert!(!text.contains("not part of the cache format"), "{text}");
}

#[test]
fn cache_create_refuses_an_upper_case_registry_host_before_any_request() {
    let dir = common::scratch();
    let out = common::imager([
        "cache".as_ref(),
        "create".as_ref(),
        "--images".as_ref(),
        "LOCALHOST:5055/team/app:v1".as_ref(),
        "--image-cache-path".as_ref(),
        dir.path().join("c").as_os_str(),
    ]);
    let err = stderr(&out);
    assert!(!out.status.success(), "accepted:\n{err}");
    for needle in ["--images", "LOCALHOST:5055", "lower case (localhost:5055)"] {
        assert!(
            err.contains(needle),
            "the error does not say {needle:?}:\n{err}"
        );
    }
    assert!(!dir.path().join("c").exists());
}

/// The demo cache with one blob's bytes changed (its name unchanged): the path of that blob.
fn damage_a_blob(cache: &Path) -> String {
    let blob = std::fs::read_dir(cache.join("blob"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .unwrap();
    let mut bytes = std::fs::read(&blob).unwrap();
    bytes[10] ^= 1;
    std::fs::write(&blob, bytes).unwrap();
    format!("blob/{}", blob.file_name().unwrap().to_str().unwrap())
}

#[test]
fn iso_verify_refuses_a_blob_that_is_not_its_name() {
    let dir = common::scratch();
    let cache = dir.path().join("cache");
    copy_demo_cache(&cache);
    let bad = damage_a_blob(&cache);
    let (out, outdir) = iso(
        dir.path(),
        &[
            "--image-cache".as_ref(),
            cache.as_os_str(),
            "--verify".as_ref(),
        ],
    );
    assert_refused(
        &out,
        &outdir,
        "--verify with a damaged blob",
        &[
            &format!("imagecache/{bad}"),
            "hash to sha256:",
            "not the expected",
        ],
    );
    // Without --verify the kernel copies it unread (what `cache verify` is for).
    let (out, _) = iso(dir.path(), &["--image-cache".as_ref(), cache.as_os_str()]);
    common::assert_success(&out, "imager iso without --verify");
}

/// An OCI layout whose one image's one layer is `tar` gzip'd: upstream's form of the cache.
fn gzip_wrapped(tree: &Path, dest: &Path) {
    let layer_tmp = dest.join("layer.tar.gz");
    std::fs::create_dir_all(dest.join("blobs/sha256")).unwrap();
    let status = std::process::Command::new("tar")
        .arg("-czf")
        .arg(&layer_tmp)
        .arg("-C")
        .arg(tree)
        .args(["blob", "manifests"])
        .status()
        .unwrap();
    assert!(status.success());
    let layer = std::fs::read(&layer_tmp).unwrap();
    std::fs::remove_file(&layer_tmp).unwrap();
    let put = |bytes: &[u8]| {
        let hex = hex::encode(sha2::Sha256::digest(bytes));
        std::fs::write(dest.join("blobs/sha256").join(&hex), bytes).unwrap();
        (format!("sha256:{hex}"), bytes.len())
    };
    let (layer_digest, layer_len) = put(&layer);
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": []}, "config": {},
    }))
    .unwrap();
    let (config_digest, config_len) = put(&config);
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config_len},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer_digest, "size": layer_len}],
    }))
    .unwrap();
    let (manifest_digest, manifest_len) = put(&manifest);
    std::fs::write(
        dest.join("index.json"),
        serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": manifest_digest, "size": manifest_len,
                "platform": {"architecture": "amd64", "os": "linux"}}],
        }))
        .unwrap(),
    )
    .unwrap();
    std::fs::write(
        dest.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
}

#[test]
fn a_gzip_layer_entry_that_is_not_its_name_is_refused_without_verify() {
    let dir = common::scratch();
    let tree = dir.path().join("tree");
    copy_demo_cache(&tree);
    let bad = damage_a_blob(&tree);
    let layout = dir.path().join("layout");
    gzip_wrapped(&tree, &layout);
    let (out, outdir) = iso(dir.path(), &["--image-cache".as_ref(), layout.as_os_str()]);
    assert_refused(
        &out,
        &outdir,
        "a gzip'd layer with a damaged blob",
        &[
            &bad,
            "its content hashes to sha256:",
            "not the digest its name says",
        ],
    );
    // The same layer, undamaged, is taken.
    let tree = dir.path().join("tree2");
    copy_demo_cache(&tree);
    let layout = dir.path().join("layout2");
    gzip_wrapped(&tree, &layout);
    let (out, _) = iso(dir.path(), &["--image-cache".as_ref(), layout.as_os_str()]);
    common::assert_success(&out, "imager iso from a gzip'd layer");
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
                cache.to_str().unwrap(),
                &format!("blob/{name}"),
                if kind == "symlink" {
                    "symbolic link (never followed)"
                } else {
                    "not a regular file"
                },
            ],
        );
    }
}

//! The reader against volumes made by e2fsprogs' `mke2fs -d`, which nobody here wrote.

// Test code: a panic with its message is how a failure is reported, helpers included.
#![allow(clippy::unwrap_used)]

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Command;

use imager_ext4::read::{ReadError, list_files};
use imager_ext4::{HostFiles, Options, Plan, Tree};

fn mke2fs(tree: &Path, image: &Path, size: &str, extra: &[&str]) {
    let out = Command::new("mke2fs")
        .args([
            "-q",
            "-t",
            "ext4",
            "-L",
            "IMAGECACHE",
            "-E",
            "root_owner=0:0",
        ])
        .args(extra)
        .arg("-d")
        .arg(tree)
        .arg(image)
        .arg(size)
        .output()
        .expect("mke2fs runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn read_runs(file: &File, runs: &[(u64, u64)]) -> Vec<u8> {
    let mut out = Vec::new();
    for &(offset, len) in runs {
        let mut buf = vec![0u8; len as usize];
        file.read_exact_at(&mut buf, offset).unwrap();
        out.extend(buf);
    }
    out
}

#[test]
fn every_file_of_a_mke2fs_volume_is_read_back_at_an_offset() {
    for block_size in ["4096", "1024"] {
        let tmp = tempfile::tempdir().unwrap();
        let tree = tmp.path().join("tree");
        let blobs = tree.join("blob");
        std::fs::create_dir_all(&blobs).unwrap();
        let deep = tree.join("manifests/registry.example.com/team/app/reference");
        std::fs::create_dir_all(&deep).unwrap();
        let mut expected = std::collections::BTreeMap::new();
        // Enough names that the directory is hashed (htree) and spans many blocks.
        for i in 0..3000u64 {
            let name = format!("sha256-{i:064x}");
            let data = noise((i % 5000) as usize, i + 1);
            std::fs::write(blobs.join(&name), &data).unwrap();
            expected.insert(format!("blob/{name}"), data);
        }
        let big = noise(9 << 20, 99);
        std::fs::write(blobs.join("big"), &big).unwrap();
        expected.insert("blob/big".into(), big);
        std::fs::write(deep.join("v1.0"), b"{}").unwrap();
        expected.insert(
            "manifests/registry.example.com/team/app/reference/v1.0".into(),
            b"{}".to_vec(),
        );
        std::fs::write(tree.join("empty"), b"").unwrap();
        expected.insert("empty".into(), Vec::new());

        let fs_image = tmp.path().join("fs.img");
        mke2fs(&tree, &fs_image, "64M", &["-b", block_size]);
        // The volume at 1 MiB into a bigger image, as a partition is.
        let image = tmp.path().join("disk.img");
        let mut disk = File::create(&image).unwrap();
        disk.write_all_at(&std::fs::read(&fs_image).unwrap(), 1 << 20)
            .unwrap();
        disk.flush().unwrap();
        let disk = File::open(&image).unwrap();
        let len = 64 << 20;

        let listing = list_files(&disk, &image, 1 << 20, len, &["lost+found"]).unwrap();
        assert_eq!(listing.label, "IMAGECACHE");
        let got: Vec<&str> = listing.files.iter().map(|f| f.path.as_str()).collect();
        let want: Vec<&str> = expected.keys().map(String::as_str).collect();
        assert_eq!(got, want, "block size {block_size}");
        for f in &listing.files {
            let data = &expected[&f.path];
            assert_eq!(f.size, data.len() as u64, "{}", f.path);
            assert_eq!(&read_runs(&disk, &f.extents), data, "{}", f.path);
        }
        // Without skipping lost+found, the empty directory adds nothing but is walked.
        let all = list_files(&disk, &image, 1 << 20, len, &[]).unwrap();
        assert_eq!(all.files.len(), listing.files.len());
        // The volume does not fit in less than its size.
        let err = list_files(&disk, &image, 1 << 20, len / 2, &[]).unwrap_err();
        assert!(matches!(err, ReadError::Corrupt { .. }), "{err}");
        // Not at that offset: no superblock.
        let err = list_files(&disk, &image, 0, len, &[]).unwrap_err();
        assert!(matches!(err, ReadError::NotExt4 { .. }), "{err}");
    }
}

#[test]
fn symlinks_holes_and_inline_data_are_refused_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    let tree = tmp.path().join("tree");
    std::fs::create_dir_all(tree.join("blob")).unwrap();
    std::fs::write(tree.join("blob/a"), b"a").unwrap();
    std::os::unix::fs::symlink("a", tree.join("blob/link")).unwrap();
    let image = tmp.path().join("fs.img");
    mke2fs(&tree, &image, "16M", &[]);
    let f = File::open(&image).unwrap();
    let err = list_files(&f, &image, 0, 16 << 20, &[]).unwrap_err();
    assert!(err.to_string().contains("/blob/link: a symlink"), "{err}");

    std::fs::remove_file(tree.join("blob/link")).unwrap();
    let sparse = File::create(tree.join("blob/sparse")).unwrap();
    sparse.write_all_at(b"tail", 4 << 20).unwrap();
    mke2fs(&tree, &image, "16M", &[]);
    let f = File::open(&image).unwrap();
    let err = list_files(&f, &image, 0, 16 << 20, &[]).unwrap_err();
    assert!(err.to_string().contains("hole"), "{err}");

    std::fs::remove_file(tree.join("blob/sparse")).unwrap();
    mke2fs(&tree, &image, "16M", &["-O", "inline_data"]);
    let f = File::open(&image).unwrap();
    let err = list_files(&f, &image, 0, 16 << 20, &[]).unwrap_err();
    assert!(err.to_string().contains("inline_data"), "{err}");
}

#[test]
fn our_writer_reads_back() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    let mut files = Vec::new();
    let mut contents = Vec::new();
    for i in 0..500u64 {
        let path = format!("blob/sha256-{i:064x}");
        let data = noise((i * 37 % 9000) as usize, i + 7);
        let host = src.join(format!("{i}"));
        std::fs::write(&host, &data).unwrap();
        files.push((path.clone(), data.len() as u64));
        contents.push((path, host, data));
    }
    let tree = Tree::new(&files).unwrap();
    let plan = Plan::new(
        tree,
        &Options {
            label: "IMAGECACHE".into(),
            unix_time: 0,
            size: 64 << 20,
        },
    )
    .unwrap();
    let image = tmp.path().join("disk.img");
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&image)
        .unwrap();
    f.set_len((64 << 20) + (2 << 20)).unwrap();
    let hosts: Vec<_> = contents.iter().map(|(_, h, _)| h.clone()).collect();
    plan.write(&f, 2 << 20, &mut HostFiles::new(hosts)).unwrap();
    let listing = list_files(&f, &image, 2 << 20, 64 << 20, &["lost+found"]).unwrap();
    assert_eq!(listing.label, "IMAGECACHE");
    assert_eq!(listing.files.len(), contents.len());
    for (file, (path, _, data)) in listing.files.iter().zip(&contents) {
        assert_eq!(&file.path, path);
        assert_eq!(&read_runs(&f, &file.extents), data, "{path}");
    }
}

//! Unpacking a cache layer never writes outside its target: each kind of hostile tar entry is
//! refused, by crafted archives whose headers are written byte by byte (tar writers refuse to make
//! most of them).

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use common::*;
use imager_cache::unpack::{Refusal, UnpackError, unpack_layer};
use imager_cache::{Cache, LayoutError, ReadOptions};
use tar::{EntryType, Header};

/// An entry with raw name and link name bytes, bypassing the tar crate's path checks.
fn raw(b: &mut tar::Builder<Vec<u8>>, name: &[u8], kind: EntryType, link: &[u8], data: &[u8]) {
    let mut h = Header::new_ustar();
    let u = h.as_ustar_mut().unwrap();
    u.name = [0; 100];
    u.name[..name.len()].copy_from_slice(name);
    u.linkname = [0; 100];
    u.linkname[..link.len()].copy_from_slice(link);
    h.set_entry_type(kind);
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_mtime(0);
    h.set_cksum();
    b.append(&h, data).unwrap();
}

fn file(b: &mut tar::Builder<Vec<u8>>, name: &str, data: &[u8]) {
    raw(b, name.as_bytes(), EntryType::Regular, b"", data);
}

fn dir(b: &mut tar::Builder<Vec<u8>>, name: &str) {
    raw(b, name.as_bytes(), EntryType::Directory, b"", b"");
}

/// Unpacks into `<tmp>/target` and returns the error, after checking nothing appeared beside
/// the target (the only place a traversal could reach in these tests besides absolute paths).
fn refused(build: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Refusal {
    let mut b = tar::Builder::new(Vec::new());
    build(&mut b);
    let archive = b.into_inner().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let target = tmp.path().join("a/b/target");
    fs::create_dir_all(&target).unwrap();
    // Both plain and gzip'd: the decompression must not change what is checked.
    let mut refusals = Vec::new();
    for data in [archive.clone(), gzip(&archive, flate2::Compression::fast())] {
        let t = target.join(format!("{}", refusals.len()));
        fs::create_dir(&t).unwrap();
        match unpack_layer(&data[..], &t).unwrap_err() {
            UnpackError::Refused { refusal, .. } => refusals.push(refusal),
            other => panic!("not a refusal: {other}"),
        }
    }
    let outside: Vec<_> = walk(tmp.path())
        .into_iter()
        .filter(|p| !p.starts_with("a/b/target"))
        .filter(|p| !["a", "a/b"].contains(&p.as_str()))
        .collect();
    assert!(
        outside.is_empty(),
        "written outside the target: {outside:?}"
    );
    assert!(!Path::new("/tmp/imager-cache-evil").exists());
    assert_eq!(refusals[0], refusals[1]);
    refusals.remove(0)
}

fn walk(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_owned()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            out.push(
                e.path()
                    .strip_prefix(root)
                    .unwrap()
                    .to_str()
                    .unwrap()
                    .to_owned(),
            );
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            }
        }
    }
    out
}

#[test]
fn parent_dir_components() {
    let r = refused(|b| {
        dir(b, "blob/");
        file(b, "blob/../../../evil", b"x");
    });
    assert_eq!(r, Refusal::ParentDir);
    let r = refused(|b| file(b, "../evil", b"x"));
    assert_eq!(r, Refusal::ParentDir);
}

#[test]
fn absolute_paths() {
    let r = refused(|b| file(b, "/tmp/imager-cache-evil", b"x"));
    assert_eq!(r, Refusal::Absolute);
}

#[test]
fn symlinks_even_to_inside() {
    let r = refused(|b| {
        dir(b, "blob/");
        raw(b, b"blob/link", EntryType::Symlink, b"/etc", b"");
        file(b, "blob/link/passwd", b"x");
    });
    assert_eq!(r, Refusal::Symlink);
    let r = refused(|b| raw(b, b"blob/link", EntryType::Symlink, b"sha256-x", b""));
    assert_eq!(r, Refusal::Symlink);
}

#[test]
fn hard_links() {
    let r = refused(|b| raw(b, b"blob/hl", EntryType::Link, b"/etc/passwd", b""));
    assert_eq!(r, Refusal::HardLink);
}

#[test]
fn devices_and_fifos() {
    assert_eq!(
        refused(|b| raw(b, b"blob/c", EntryType::Char, b"", b"")),
        Refusal::Device
    );
    assert_eq!(
        refused(|b| raw(b, b"blob/b", EntryType::Block, b"", b"")),
        Refusal::Device
    );
    assert_eq!(
        refused(|b| raw(b, b"blob/f", EntryType::Fifo, b"", b"")),
        Refusal::Fifo
    );
    assert_eq!(
        refused(|b| raw(b, b"blob/x", EntryType::new(b'X'), b"", b"")),
        Refusal::EntryType(b'X')
    );
    // A sparse entry: the tar reader itself rejects this one (no sparse map); either way it is
    // not written.
    let mut b = tar::Builder::new(Vec::new());
    raw(&mut b, b"blob/s", EntryType::GNUSparse, b"", b"");
    let tmp = tempfile::tempdir().unwrap();
    assert!(unpack_layer(&b.into_inner().unwrap()[..], tmp.path()).is_err());
    assert!(walk(tmp.path()).is_empty());
}

#[test]
fn entries_outside_the_cache_tree() {
    assert_eq!(
        refused(|b| file(b, "etc/passwd", b"x")),
        Refusal::OutsideCache
    );
    assert_eq!(refused(|b| file(b, "evil", b"x")), Refusal::OutsideCache);
}

#[test]
fn duplicates() {
    let r = refused(|b| {
        file(b, "blob/x", b"first");
        file(b, "blob/x", b"second");
    });
    assert_eq!(r, Refusal::Duplicate);
    let r = refused(|b| {
        file(b, "blob/x", b"a file");
        dir(b, "blob/x/");
    });
    assert_eq!(r, Refusal::Duplicate);
}

#[test]
fn long_names_are_checked_after_extension_headers() {
    // PAX: the header says blob/ok, the extended header says otherwise; the PAX path wins.
    let r = refused(|b| {
        b.append_pax_extensions([("path", b"../../../evil".as_slice())])
            .unwrap();
        file(b, "blob/ok", b"x");
    });
    assert_eq!(r, Refusal::ParentDir);
    // GNU long name ('L' entry before the real one).
    let r = refused(|b| {
        let long = b"manifests/../../../../tmp/imager-cache-evil\0";
        raw(b, b"././@LongLink", EntryType::GNULongName, b"", long);
        file(b, "blob/ok", b"x");
    });
    assert_eq!(r, Refusal::ParentDir);
}

#[test]
fn a_valid_layer_unpacks_with_long_names_both_ways() {
    let long_repo = format!(
        "manifests/ghcr.io/canonical/k8s-snap/sig-storage/csi-node-driver-registrar/digest/{}",
        name(b"m")
    );
    let mut b = tar::Builder::new(Vec::new());
    dir(&mut b, "./");
    dir(&mut b, "blob");
    file(&mut b, "blob/sha256-a", b"blob bytes");
    b.append_pax_extensions([("path", long_repo.as_bytes())])
        .unwrap();
    file(&mut b, "manifests/placeholder", b"m");
    // A PAX global header (as `git archive` writes): metadata, not a file.
    raw(
        &mut b,
        b"pax_global_header",
        EntryType::XGlobalHeader,
        b"",
        b"18 comment=global\n",
    );
    let mut files = BTreeMap::new();
    files.insert(
        long_repo
            .replace("/digest/", "/reference/")
            .replace(&name(b"m"), "v1"),
        b"m".to_vec(),
    );
    let tmp = tempfile::tempdir().unwrap();
    let mut archive = b.into_inner().unwrap();
    // Append the GNU-long-name tree of the fixture writer after our entries' end: strip our
    // end-of-archive blocks first.
    archive.truncate(archive.len() - 1024);
    archive.extend(gunzip(&tar_of_tree(&files)));
    let stats = unpack_layer(&gzip(&archive, flate2::Compression::fast())[..], tmp.path()).unwrap();
    let mut want: BTreeMap<String, Vec<u8>> = files;
    want.insert("blob/sha256-a".into(), b"blob bytes".to_vec());
    want.insert(long_repo, b"m".to_vec());
    assert_same_tree(&read_tree(tmp.path()), &want);
    assert_eq!(stats.files, 3);
    assert_eq!(stats.bytes, 12);
}

#[test]
fn a_hostile_wrapped_layout_leaves_nothing_behind() {
    let mut b = tar::Builder::new(Vec::new());
    dir(&mut b, "blob/");
    file(&mut b, "blob/sha256-a", b"fine");
    raw(&mut b, b"blob/escape", EntryType::Symlink, b"../../..", b"");
    let layer = gzip(&b.into_inner().unwrap(), flate2::Compression::fast());
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wrapped");
    write_wrapped(&dir, &[("linux/amd64", layer)]);
    let err = Cache::open(&dir, &ReadOptions::default()).unwrap_err();
    assert!(matches!(&err, LayoutError::Layer { .. }), "{err}");
    let mut chain = err.to_string();
    let mut source = std::error::Error::source(&err);
    while let Some(s) = source {
        chain = format!("{chain}: {s}");
        source = s.source();
    }
    assert!(
        chain.contains("\"blob/escape\"") && chain.contains("symbolic links"),
        "{chain}"
    );
}

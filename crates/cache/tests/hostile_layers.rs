//! An oci-wrapped cache whose layer holds something no cache holds is refused when it is opened,
//! uncompressed or gzip'd, the error naming the layer's digest and the entry. Headers are written
//! byte by byte: tar writers refuse to make most of these.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
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

/// A layer that starts like a cache (so the layout is taken for an oci-wrapped one), then `bad`.
fn layer(bad: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    raw(&mut b, b"blob/", EntryType::Directory, b"", b"");
    raw(&mut b, b"blob/sha256-a", EntryType::Regular, b"", b"fine");
    bad(&mut b);
    b.into_inner().unwrap()
}

/// The error and its causes on one line.
fn chain(err: &LayoutError) -> String {
    let mut out = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(s) = source {
        out = format!("{out}: {s}");
        source = s.source();
    }
    out
}

/// Opens `layer` as an oci-wrapped cache, plain and gzip'd: both refused, naming the layer's
/// digest, then `entry` and `why` in the causes.
fn assert_refused(layer: &[u8], entry: &str, why: &str) {
    for (form, bytes) in [
        ("tar", layer.to_vec()),
        ("gzip", gzip(layer, flate2::Compression::fast())),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("wrapped");
        write_wrapped(&dir, &[("linux/amd64", bytes.clone())]);
        let err = Cache::open(&dir, &ReadOptions::default()).unwrap_err();
        assert!(matches!(&err, LayoutError::Layer { .. }), "{form}: {err}");
        let msg = chain(&err);
        assert!(
            msg.starts_with(&format!("cache layer {}", digest(&bytes))),
            "{form}: {msg}"
        );
        assert!(msg.contains(entry), "{form}: {msg}");
        assert!(msg.contains(why), "{form}: {msg}");
    }
}

#[test]
fn links_devices_and_escapes_are_refused() {
    let cases: [(&[u8], EntryType, &[u8], &str); 6] = [
        (
            b"blob/escape",
            EntryType::Symlink,
            b"../../..",
            "symbolic links",
        ),
        (
            b"blob/hard",
            EntryType::Link,
            b"blob/sha256-a",
            "hard links",
        ),
        (b"blob/dev", EntryType::Char, b"", "device"),
        (b"blob/fifo", EntryType::Fifo, b"", "FIFO"),
        (b"blob/../../etc/passwd", EntryType::Regular, b"", ".."),
        (b"/etc/passwd", EntryType::Regular, b"", "absolute"),
    ];
    for (name, kind, link, why) in cases {
        let l = layer(|b| raw(b, name, kind, link, b"x"));
        assert_refused(&l, &String::from_utf8_lossy(name), why);
    }
}

#[test]
fn sizes_past_the_end_and_truncated_headers_are_refused() {
    // A file whose header says more bytes than the layer holds.
    let mut l = layer(|b| raw(b, b"blob/sha256-b", EntryType::Regular, b"", &[7u8; 4096]));
    let end = l.len() - 1024 - 4096 + 100;
    l.truncate(end);
    assert_refused(&l, "blob/sha256-b", "");
    // A layer cut inside a header.
    let l = layer(|b| raw(b, b"blob/sha256-c", EntryType::Regular, b"", b"c"));
    let cut = &l[..512 * 3 + 100];
    assert_refused(cut, "", "");
}

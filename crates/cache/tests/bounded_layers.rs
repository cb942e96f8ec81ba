//! What reading a cache layer may expand is bounded by what its tar headers declare (issue 9): file
//! data by the files' sizes, and nothing else beyond a small allowance — metadata per entry,
//! padding after the end. A compressed layer cannot make us expand bytes no header accounts for,
//! nor, read again, more than it held when it was listed; and a consumer with limited room stops
//! the listing as soon as the declared files pass it.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use imager_cache::tar_layer::{MAX_META_SIZE, MAX_TRAILING};
use imager_cache::{Cache, LayoutError, ReadOptions};
use tar::{EntryType, Header};

fn entry(b: &mut tar::Builder<Vec<u8>>, name: &[u8], kind: EntryType, data: &[u8]) {
    let mut h = Header::new_ustar();
    let u = h.as_ustar_mut().unwrap();
    u.name = [0; 100];
    u.name[..name.len()].copy_from_slice(name);
    h.set_entry_type(kind);
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_mtime(0);
    h.set_cksum();
    b.append(&h, data).unwrap();
}

/// A cache layer: `blob/`, one small file, `middle`, one more file, the end-of-archive blocks.
fn layer(middle: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    entry(&mut b, b"blob/", EntryType::Directory, b"");
    entry(&mut b, b"blob/sha256-a", EntryType::Regular, b"fine");
    middle(&mut b);
    entry(&mut b, b"blob/sha256-z", EntryType::Regular, b"last");
    b.into_inner().unwrap()
}

fn chain(err: &LayoutError) -> String {
    let mut out = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(s) = source {
        out = format!("{out}: {s}");
        source = s.source();
    }
    out
}

fn open(layer: &[u8]) -> (tempfile::TempDir, Result<Cache, LayoutError>) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wrapped");
    write_wrapped(&dir, &[("linux/amd64", layer.to_vec())]);
    let opened = Cache::open(&dir, &ReadOptions::default());
    (tmp, opened)
}

/// Refused uncompressed and gzip'd alike, naming `why`.
fn assert_refused(layer: &[u8], why: &str) {
    for (form, bytes) in [
        ("tar", layer.to_vec()),
        ("gzip", gzip(layer, flate2::Compression::fast())),
    ] {
        let (_tmp, opened) = open(&bytes);
        let err = opened.err().unwrap_or_else(|| panic!("{form}: accepted"));
        let msg = chain(&err);
        assert!(
            msg.starts_with(&format!("cache layer {}", digest(&bytes))),
            "{form}: {msg}"
        );
        assert!(msg.contains(why), "{form}: {msg}");
    }
}

#[test]
fn data_after_the_end_of_archive_is_bounded() {
    let plain = layer(|_| {});
    // Record padding, as GNU tar writes (10 KiB records) and up to the allowance: taken.
    for pad in [10240 - plain.len() % 10240, MAX_TRAILING as usize] {
        let mut padded = plain.clone();
        padded.resize(plain.len() + pad, 0);
        let (_tmp, opened) = open(&gzip(&padded, flate2::Compression::fast()));
        assert_eq!(opened.unwrap().entries().len(), 2, "{pad} bytes of padding");
    }
    // A gzip bomb after the end: 64 MiB of zeros compress to 64 KiB and must not be expanded.
    let mut bomb = plain.clone();
    bomb.resize(plain.len() + (64 << 20), 0);
    assert_refused(
        &bomb,
        &format!("more than {MAX_TRAILING} bytes follow the end-of-archive block"),
    );
}

#[test]
fn metadata_is_bounded_per_entry_whatever_its_kind() {
    let big = vec![b'x'; MAX_META_SIZE as usize + 1];
    // Global PAX headers and long link names were skipped whatever their size.
    let global = layer(|b| entry(b, b"pax_global_header", EntryType::XGlobalHeader, &big));
    assert_refused(&global, "long names and PAX headers for one entry");
    let link = layer(|b| entry(b, b"././@LongLink", EntryType::GNULongLink, &big));
    assert_refused(&link, "long names and PAX headers for one entry");
    // Each header under the cap, together over it.
    let third = vec![b'x'; MAX_META_SIZE as usize / 3 + 512];
    let run = layer(|b| {
        for _ in 0..3 {
            entry(b, b"pax_global_header", EntryType::XGlobalHeader, &third);
        }
    });
    assert_refused(&run, "long names and PAX headers for one entry");
    // The same headers spread over entries are fine: the cap is per entry.
    let spread = layer(|b| {
        for i in 0..3 {
            entry(b, b"pax_global_header", EntryType::XGlobalHeader, &third);
            entry(
                b,
                format!("blob/sha256-{i}").as_bytes(),
                EntryType::Regular,
                b"x",
            );
        }
    });
    let (_tmp, opened) = open(&gzip(&spread, flate2::Compression::fast()));
    assert_eq!(opened.unwrap().entries().len(), 5);
}

#[test]
fn a_directory_with_data_is_refused() {
    let l = layer(|b| entry(b, b"manifests/", EntryType::Directory, &[0u8; 4096]));
    assert_refused(&l, "a directory entry with 4096 bytes of data");
}

/// Three files of 1 MiB each; a consumer with room for two and a half stops the listing at the
/// third, before expanding it.
#[test]
fn listing_stops_where_the_declared_files_pass_the_room() {
    let mib = vec![7u8; 1 << 20];
    let l = layer(|b| {
        for name in ["blob/sha256-1", "blob/sha256-2", "blob/sha256-3"] {
            entry(b, name.as_bytes(), EntryType::Regular, &mib);
        }
    });
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wrapped");
    write_wrapped(
        &dir,
        &[("linux/amd64", gzip(&l, flate2::Compression::fast()))],
    );
    let room = (5 << 20) / 2;
    let err = Cache::open_within(&dir, &ReadOptions::default(), room).unwrap_err();
    assert_eq!(
        err.no_room(),
        Some(((3 << 20) + 4, room)),
        "{}",
        chain(&err)
    );
    let msg = chain(&err);
    assert!(msg.contains("\"blob/sha256-3\""), "{msg}");
    assert!(
        msg.contains(&format!("more than the {room} bytes there is room for")),
        "{msg}"
    );
    // Room for all of it: opened.
    let cache = Cache::open_within(&dir, &ReadOptions::default(), (3 << 20) + 8).unwrap();
    assert_eq!(cache.entries().len(), 5);
}

/// Read again, a layer may not expand past what it held when it was listed: a layer swapped for
/// one that expands further is refused by the bound, not only by its digest at the end.
#[test]
fn a_second_read_takes_no_more_than_the_listing_saw() {
    let plain = layer(|_| {});
    let first = gzip(&plain, flate2::Compression::fast());
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wrapped");
    write_wrapped(&dir, &[("linux/amd64", first.clone())]);
    let cache = Cache::open(&dir, &ReadOptions::default()).unwrap();
    assert!(cache.is_streamed());
    // The same files, with padding after the end (within the format's allowance).
    let mut grown = plain.clone();
    grown.resize(plain.len() + (512 << 10), 0);
    let blob = dir.join(format!("blobs/sha256/{}", sha256(&first)));
    std::fs::write(&blob, gzip(&grown, flate2::Compression::fast())).unwrap();
    let err = cache
        .read_stream(&mut |_, r| std::io::copy(r, &mut std::io::sink()).map(drop))
        .unwrap_err();
    let msg = chain(&err);
    assert!(
        msg.contains(&format!(
            "the layer expands past the {} bytes it held when it was listed",
            plain.len()
        )),
        "{msg}"
    );
}

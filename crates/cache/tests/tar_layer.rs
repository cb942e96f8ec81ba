//! Reading cache layers in place: an uncompressed layer indexed header by header, a gzip'd one
//! walked as a stream, both agreeing with what was written, and every hostile or broken entry
//! refused by both, naming the entry. Hostile headers are written byte by byte (tar writers refuse
//! to make most of them).

#![allow(clippy::unwrap_used)]

use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;
use std::time::Instant;

use imager_cache::tar_layer::{
    At, Malformed, Refusal, TarFile, TarLayerError, WalkError, index, walk,
};
use tar::{EntryType, Header};

const BLOCK: usize = 512;

// ---------------------------------------------------------------------------------------------
// Building layers.

fn builder() -> tar::Builder<Vec<u8>> {
    tar::Builder::new(Vec::new())
}

fn finish(b: tar::Builder<Vec<u8>>) -> Vec<u8> {
    b.into_inner().unwrap()
}

/// An entry with a raw name (no path checks by the tar crate) and any type.
fn raw(b: &mut tar::Builder<Vec<u8>>, name: &[u8], kind: EntryType, data: &[u8]) {
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

fn file(b: &mut tar::Builder<Vec<u8>>, name: &str, data: &[u8]) {
    raw(b, name.as_bytes(), EntryType::Regular, data);
}

fn dir(b: &mut tar::Builder<Vec<u8>>, name: &str) {
    raw(b, name.as_bytes(), EntryType::Directory, b"");
}

/// A PAX record, its length counting its own digits.
fn pax_record(key: &str, value: &[u8]) -> Vec<u8> {
    let body_len = key.len() + value.len() + 3;
    let mut n = body_len + 1;
    while n != body_len + n.to_string().len() {
        n = body_len + n.to_string().len();
    }
    [format!("{n} {key}=").as_bytes(), value, b"\n"].concat()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn gunzip_reader(data: &[u8]) -> impl Read + '_ {
    flate2::read::MultiGzDecoder::new(data)
}

/// The layer as a blob on disk, the way `index` gets it.
fn blob(data: &[u8]) -> std::fs::File {
    let mut f = tempfile::tempfile().unwrap();
    f.write_all(data).unwrap();
    f
}

fn index_bytes(data: &[u8]) -> Result<imager_cache::tar_layer::TarIndex, TarLayerError> {
    index(&blob(data), data.len() as u64)
}

fn walk_all<R: Read>(stream: R) -> Result<Vec<(TarFile, Vec<u8>)>, TarLayerError> {
    let mut out = Vec::new();
    walk(stream, |f, r| {
        let mut data = Vec::new();
        r.read_to_end(&mut data)?;
        out.push((f.clone(), data));
        Ok::<_, io::Error>(())
    })
    .map_err(|e| match e {
        WalkError::Layer(e) => e,
        WalkError::Visit(e) => panic!("the visitor failed: {e}"),
    })?;
    Ok(out)
}

/// Indexes `archive`, walks it plain and gzip'd, checks all three see `want` (path, bytes) in
/// order, and returns the directories.
fn read_all_ways(archive: &[u8], want: &[(&str, &[u8])]) -> Vec<String> {
    let f = blob(archive);
    let idx = index(&f, archive.len() as u64).unwrap();
    let from_index: Vec<(String, Vec<u8>)> = idx
        .files
        .iter()
        .map(|t| {
            let mut data = vec![0; t.size as usize];
            f.read_exact_at(&mut data, t.data_offset).unwrap();
            (t.path.clone(), data)
        })
        .collect();
    let want: Vec<(String, Vec<u8>)> = want
        .iter()
        .map(|(p, d)| (p.to_string(), d.to_vec()))
        .collect();
    assert_eq!(from_index, want);
    for walked in [
        walk_all(archive).unwrap(),
        walk_all(gunzip_reader(&gzip(archive))).unwrap(),
    ] {
        // The same offsets as the index, too: they are offsets in the decompressed stream.
        let files: Vec<TarFile> = walked.iter().map(|(t, _)| t.clone()).collect();
        assert_eq!(files, idx.files);
        let got: Vec<(String, Vec<u8>)> = walked.into_iter().map(|(t, d)| (t.path, d)).collect();
        assert_eq!(got, want);
    }
    idx.dirs
}

fn content(seed: usize, len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 + seed) as u8).collect()
}

// ---------------------------------------------------------------------------------------------
// Reading.

#[test]
fn names_of_every_kind_and_sizes_around_a_block() {
    let long_dir = format!("manifests/registry.example.com/{}", "deep/".repeat(20));
    let gnu_long = format!("{long_dir}reference/v1.2.3");
    let pax_long = format!("{long_dir}digest/sha256-{}", "a".repeat(64));
    let prefixed = format!("manifests/{}/reference/latest", "p".repeat(100));
    assert!(gnu_long.len() > 100 && pax_long.len() > 100 && prefixed.len() > 100);
    let sizes = [0usize, 1, 511, 512, 513, 100_000];
    let blobs: Vec<(String, Vec<u8>)> = sizes
        .iter()
        .enumerate()
        .map(|(i, &n)| (format!("blob/sha256-{i:064}"), content(i, n)))
        .collect();
    let (gnu_data, pax_data, pre_data) = (content(7, 700), content(8, 10), content(9, 3));

    let mut b = builder();
    dir(&mut b, "./");
    dir(&mut b, "./blob/");
    for (name, data) in &blobs {
        file(&mut b, &format!("./{name}"), data);
    }
    // A global PAX header is about the archive, not an entry; its path must not rename one.
    let global = pax_record("path", b"blob/renamed");
    raw(
        &mut b,
        b"pax_global_header",
        EntryType::XGlobalHeader,
        &global,
    );
    // GNU long name: the tar crate writes an 'L' entry for a name a GNU header cannot hold.
    let mut h = Header::new_gnu();
    h.set_size(gnu_data.len() as u64);
    h.set_entry_type(EntryType::Regular);
    b.append_data(&mut h, &gnu_long, &gnu_data[..]).unwrap();
    // PAX path and size: the header's own fields say otherwise and must lose.
    let pax = [
        pax_record("path", pax_long.as_bytes()),
        pax_record("size", pax_data.len().to_string().as_bytes()),
        pax_record("mtime", b"1.5"),
    ]
    .concat();
    raw(&mut b, b"./PaxHeaders/x", EntryType::XHeader, &pax);
    let mut h = Header::new_ustar();
    h.as_ustar_mut().unwrap().name[..7].copy_from_slice(b"blob/no");
    h.set_size(0);
    h.set_mode(0o644);
    h.set_cksum();
    b.append(&h, &pax_data[..]).unwrap();
    // ustar prefix: the tar crate splits a long path into prefix and name.
    let mut h = Header::new_ustar();
    h.set_size(pre_data.len() as u64);
    h.set_entry_type(EntryType::Regular);
    b.append_data(&mut h, &prefixed, &pre_data[..]).unwrap();
    let archive = finish(b);
    // The test means what it says: one 'L' entry, and a prefix field in use.
    let long_links = archive
        .windows(13)
        .filter(|w| w == b"././@LongLink")
        .count();
    assert_eq!(long_links, 1);
    let prefix_used = archive
        .chunks(BLOCK)
        .any(|h| h.len() == BLOCK && h[345..355] == prefixed.as_bytes()[..10]);
    assert!(prefix_used);

    let mut want: Vec<(&str, &[u8])> = blobs
        .iter()
        .map(|(n, d)| (n.as_str(), d.as_slice()))
        .collect();
    want.push((&gnu_long, &gnu_data));
    want.push((&pax_long, &pax_data));
    want.push((&prefixed, &pre_data));
    // Directories with an entry of their own; `./` is the root, not a directory of the cache.
    assert_eq!(read_all_ways(&archive, &want), ["blob"]);
}

#[test]
fn an_upstream_like_layer() {
    // What `talosctl images cache-create --layout oci` writes: entries at the root, directories
    // included, gzip'd; and what we write: the same, uncompressed.
    let manifest = br#"{"schemaVersion":2}"#;
    let blob_data = content(1, 4000);
    let mut b = builder();
    let mut h = Header::new_gnu();
    for d in [
        "blob",
        "manifests",
        "manifests/docker.io",
        "manifests/docker.io/library",
    ] {
        h.set_entry_type(EntryType::Directory);
        h.set_size(0);
        h.set_mode(0o755);
        b.append_data(&mut h, d, io::empty()).unwrap();
    }
    h.set_entry_type(EntryType::Regular);
    h.set_mode(0o644);
    for (path, data) in [
        ("blob/sha256-1", blob_data.as_slice()),
        (
            "manifests/docker.io/library/x/reference/v1",
            manifest.as_slice(),
        ),
        (
            "manifests/docker.io/library/x/digest/sha256-2",
            manifest.as_slice(),
        ),
    ] {
        h.set_size(data.len() as u64);
        b.append_data(&mut h, path, data).unwrap();
    }
    let archive = finish(b);
    let dirs = read_all_ways(
        &archive,
        &[
            ("blob/sha256-1", &blob_data),
            ("manifests/docker.io/library/x/reference/v1", manifest),
            ("manifests/docker.io/library/x/digest/sha256-2", manifest),
        ],
    );
    assert_eq!(
        dirs,
        [
            "blob",
            "manifests",
            "manifests/docker.io",
            "manifests/docker.io/library"
        ]
    );
}

#[test]
fn lenient_only_about_the_second_zero_block() {
    let mut b = builder();
    file(&mut b, "blob/x", b"hello");
    let archive = finish(b);
    let end = archive.len() - 2 * BLOCK; // The builder writes both zero blocks.
    for keep in [end + 2 * BLOCK, end + BLOCK, end + BLOCK + 100] {
        read_all_ways(&archive[..keep], &[("blob/x", b"hello")]);
    }
    // Records padded with zeros after the end are fine.
    let mut padded = archive.clone();
    padded.resize(10240, 0);
    read_all_ways(&padded, &[("blob/x", b"hello")]);
}

#[test]
fn the_visitor_reads_what_it_likes_and_its_errors_pass_through() {
    let mut b = builder();
    file(&mut b, "blob/a", &content(1, 3000));
    file(&mut b, "blob/b", b"second");
    file(&mut b, "blob/c", b"third");
    let archive = finish(b);
    // Reading only part of a file leaves the stream at the next header all the same.
    let mut seen = Vec::new();
    let r = walk(&archive[..], |f, r| {
        let mut first = [0u8; 3];
        r.read_exact(&mut first)?;
        seen.push((f.path.clone(), first));
        Ok::<_, io::Error>(())
    });
    assert!(r.is_ok());
    assert_eq!(
        seen,
        [
            ("blob/a".to_owned(), [1, 32, 63]),
            ("blob/b".to_owned(), *b"sec"),
            ("blob/c".to_owned(), *b"thi"),
        ]
    );
    // A visitor's error stops the walk and comes back as its own.
    let mut count = 0;
    let r = walk(&archive[..], |f, _| {
        count += 1;
        if f.path == "blob/b" {
            Err("stop here")
        } else {
            Ok(())
        }
    });
    assert!(matches!(r, Err(WalkError::Visit("stop here"))));
    assert_eq!(count, 2);
}

// ---------------------------------------------------------------------------------------------
// Refusals.

/// Checks the index and both walks refuse `archive` alike, naming `entry`.
fn refused(archive: &[u8], entry: &str) -> Refusal {
    let mut refusals = Vec::new();
    let errors = [
        index_bytes(archive).unwrap_err(),
        walk_all(archive).unwrap_err(),
        walk_all(gunzip_reader(&gzip(archive))).unwrap_err(),
    ];
    for e in errors {
        let msg = e.to_string();
        assert!(
            msg.contains(&format!("{entry:?}")),
            "{entry:?} not named in: {msg}"
        );
        match e {
            TarLayerError::Refused { refusal, .. } => refusals.push(refusal),
            other => panic!("not a refusal: {other}"),
        }
    }
    assert!(refusals.windows(2).all(|w| w[0] == w[1]), "{refusals:?}");
    refusals.remove(0)
}

fn one(name: &[u8], kind: EntryType, data: &[u8]) -> Vec<u8> {
    let mut b = builder();
    dir(&mut b, "blob/");
    raw(&mut b, name, kind, data);
    finish(b)
}

#[test]
fn parent_dirs_and_absolute_paths() {
    let a = one(b"blob/../../evil", EntryType::Regular, b"x");
    assert_eq!(refused(&a, "blob/../../evil"), Refusal::ParentDir);
    let a = one(b"../evil", EntryType::Directory, b"");
    assert_eq!(refused(&a, "../evil"), Refusal::ParentDir);
    let a = one(b"/blob/x", EntryType::Regular, b"x");
    assert_eq!(refused(&a, "/blob/x"), Refusal::Absolute);
    // Behind a PAX path and a GNU long name, which are what count.
    let mut b = builder();
    b.append_pax_extensions([("path", b"blob/../../../evil".as_slice())])
        .unwrap();
    file(&mut b, "blob/ok", b"x");
    assert_eq!(
        refused(&finish(b), "blob/../../../evil"),
        Refusal::ParentDir
    );
    let mut b = builder();
    raw(
        &mut b,
        b"././@LongLink",
        EntryType::GNULongName,
        b"/etc/passwd\0",
    );
    file(&mut b, "blob/ok", b"x");
    assert_eq!(refused(&finish(b), "/etc/passwd"), Refusal::Absolute);
}

#[test]
fn names_outside_the_cache_tree() {
    let a = one(b"blob/\xff", EntryType::Regular, b"x");
    assert_eq!(refused(&a, "blob/\u{fffd}"), Refusal::NotUtf8);
    let a = one(b"etc/passwd", EntryType::Regular, b"x");
    assert_eq!(refused(&a, "etc/passwd"), Refusal::OutsideCache);
    let a = one(b"./blobs/x", EntryType::Regular, b"x");
    assert_eq!(refused(&a, "./blobs/x"), Refusal::OutsideCache);
    let a = one(b"other/", EntryType::Directory, b"");
    assert_eq!(refused(&a, "other/"), Refusal::OutsideCache);
    let a = one(b"manifests", EntryType::Regular, b"x");
    assert_eq!(refused(&a, "manifests"), Refusal::OutsideCache);
}

#[test]
fn links_devices_fifos_sparse_and_unknown_types() {
    let cases = [
        (EntryType::Symlink, Refusal::Symlink),
        (EntryType::Link, Refusal::HardLink),
        (EntryType::Char, Refusal::Device),
        (EntryType::Block, Refusal::Device),
        (EntryType::Fifo, Refusal::Fifo),
        (EntryType::GNUSparse, Refusal::Sparse),
        (EntryType::new(b'X'), Refusal::EntryType(b'X')),
        (EntryType::new(b'D'), Refusal::EntryType(b'D')),
        (EntryType::new(b'V'), Refusal::EntryType(b'V')),
    ];
    for (kind, want) in cases {
        let a = one(b"blob/thing", kind, b"");
        assert_eq!(refused(&a, "blob/thing"), want, "{kind:?}");
    }
    // A symlink with a long target: the 'K' entry is passed over, the link itself refused.
    let mut b = builder();
    raw(
        &mut b,
        b"././@LongLink",
        EntryType::GNULongLink,
        &[b'a'; 200],
    );
    raw(&mut b, b"blob/l", EntryType::Symlink, b"");
    assert_eq!(refused(&finish(b), "blob/l"), Refusal::Symlink);
    // PAX's sparse formats hide behind a regular type.
    let mut b = builder();
    b.append_pax_extensions([("GNU.sparse.major", b"1".as_slice())])
        .unwrap();
    file(&mut b, "blob/s", b"x");
    assert_eq!(refused(&finish(b), "blob/s"), Refusal::Sparse);
}

#[test]
fn duplicate_paths() {
    let mut b = builder();
    file(&mut b, "blob/x", b"first");
    file(&mut b, "./blob/x", b"second");
    assert_eq!(refused(&finish(b), "./blob/x"), Refusal::Duplicate);
    let mut b = builder();
    file(&mut b, "blob/x", b"a file");
    dir(&mut b, "blob/x/");
    assert_eq!(refused(&finish(b), "blob/x/"), Refusal::Duplicate);
    let mut b = builder();
    file(&mut b, "blob/x", b"a file");
    file(&mut b, "blob/x/y", b"under it");
    assert_eq!(refused(&finish(b), "blob/x/y"), Refusal::Duplicate);
    let mut b = builder();
    dir(&mut b, "blob/d/");
    file(&mut b, "blob/d", b"where a directory was");
    assert_eq!(refused(&finish(b), "blob/d"), Refusal::Duplicate);
    // A directory twice is not a conflict (tar writers repeat them).
    let mut b = builder();
    dir(&mut b, "blob/");
    dir(&mut b, "./blob");
    file(&mut b, "blob/x", b"1");
    read_all_ways(&finish(b), &[("blob/x", b"1")]);
}

// ---------------------------------------------------------------------------------------------
// Broken archives.

/// The index's and the plain walk's errors (the gzip'd walk's, if it is the same stream, too).
fn broken(archive: &[u8]) -> [TarLayerError; 3] {
    [
        index_bytes(archive).unwrap_err(),
        walk_all(archive).unwrap_err(),
        walk_all(gunzip_reader(&gzip(archive))).unwrap_err(),
    ]
}

fn problem(e: &TarLayerError) -> (&Malformed, &At) {
    match e {
        TarLayerError::Malformed { problem, at } => (problem, at),
        other => panic!("not malformed: {other}"),
    }
}

/// Sets the checksum of the header at `offset`, after changing it.
fn fix_cksum(archive: &mut [u8], offset: usize) {
    let h = &mut archive[offset..offset + BLOCK];
    h[148..156].fill(b' ');
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
}

#[test]
fn data_past_the_end_of_the_blob() {
    let mut b = builder();
    file(&mut b, "blob/a", b"fine");
    file(&mut b, "blob/big", b"short");
    let mut a = finish(b);
    // Claim 1 MiB of data where 5 bytes (and the end blocks) are.
    a[2 * BLOCK + 124..2 * BLOCK + 136].copy_from_slice(b"00004000000\0");
    fix_cksum(&mut a, 2 * BLOCK);
    let [i, w, g] = broken(&a);
    assert!(i.to_string().contains("\"blob/big\""), "{i}");
    assert_eq!(
        problem(&i),
        (
            &Malformed::DataPastEnd {
                end: (3 * BLOCK + (1 << 20)) as u64,
                len: a.len() as u64
            },
            &At {
                offset: 2 * BLOCK as u64,
                entry: Some("blob/big".into()),
                previous: Some("blob/a".into())
            }
        )
    );
    // A stream only learns of it at its end; and a visitor reading the data sees an error,
    // never a short file.
    for e in [w, g] {
        assert!(e.to_string().contains("\"blob/big\""), "{e}");
        assert_eq!(problem(&e).0, &Malformed::TruncatedData);
    }
    // A size octal cannot write: base-256 (GNU), 2^62 bytes.
    let mut a2 = a.clone();
    let f = &mut a2[2 * BLOCK + 124..2 * BLOCK + 136];
    f.fill(0);
    f[0] = 0x80;
    f[4] = 0x40;
    fix_cksum(&mut a2, 2 * BLOCK);
    let e = index_bytes(&a2).unwrap_err();
    assert!(
        matches!(problem(&e).0, Malformed::DataPastEnd { .. }),
        "{e}"
    );
}

#[test]
fn the_walk_reports_a_cut_stream_whatever_the_visitor_says() {
    let mut b = builder();
    file(&mut b, "blob/big", &content(0, 5000));
    let a = finish(b);
    let cut = &a[..BLOCK + 1000];
    let r = walk(cut, |_, r| {
        // A visitor that swallows its read error.
        let _ = io::copy(r, &mut io::sink());
        Ok::<_, io::Error>(())
    });
    let e = match r {
        Err(WalkError::Layer(e)) => e,
        other => panic!("{other:?}"),
    };
    assert_eq!(problem(&e).0, &Malformed::TruncatedData);
    let r = walk(cut, |_, r| io::copy(r, &mut io::sink()).map(drop));
    assert!(matches!(
        r,
        Err(WalkError::Layer(TarLayerError::Malformed { .. }))
    ));
}

#[test]
fn truncated_headers_and_missing_end() {
    let mut b = builder();
    file(&mut b, "blob/a", b"aaa");
    file(&mut b, "blob/b", b"bbb");
    let a = finish(b);
    // Inside the second header.
    for e in broken(&a[..2 * BLOCK + 100]) {
        assert!(e.to_string().contains("after entry \"blob/a\""), "{e}");
        assert_eq!(problem(&e).0, &Malformed::TruncatedHeader);
        assert_eq!(problem(&e).1.offset, 2 * BLOCK as u64);
    }
    // Right after the last file, before any end-of-archive block.
    for e in broken(&a[..4 * BLOCK]) {
        assert!(e.to_string().contains("after entry \"blob/b\""), "{e}");
        assert_eq!(problem(&e).0, &Malformed::MissingEnd);
    }
    // An empty blob is not an empty archive.
    assert_eq!(
        problem(&index_bytes(b"").unwrap_err()).0,
        &Malformed::MissingEnd
    );
    // A lone zero block followed by an entry: another reader could see that entry.
    let mut lone = a[..4 * BLOCK].to_vec();
    lone.extend_from_slice(&[0; BLOCK]);
    lone.extend_from_slice(&a[..2 * BLOCK]);
    lone.extend_from_slice(&[0; 2 * BLOCK]);
    for e in broken(&lone) {
        assert_eq!(problem(&e).0, &Malformed::LoneZeroBlock, "{e}");
    }
    // A long name with no entry after it.
    let mut b = builder();
    raw(
        &mut b,
        b"././@LongLink",
        EntryType::GNULongName,
        b"blob/x\0",
    );
    for e in broken(&finish(b)) {
        assert_eq!(problem(&e).0, &Malformed::OrphanMeta, "{e}");
    }
}

#[test]
fn bad_checksums_and_sizes() {
    let mut b = builder();
    file(&mut b, "blob/a", b"aaa");
    file(&mut b, "blob/b", b"bbb");
    let a = finish(b);
    let mut bad = a.clone();
    bad[2 * BLOCK + 100] ^= 1; // The mode field: nothing else notices.
    for e in broken(&bad) {
        assert!(e.to_string().contains("\"blob/b\""), "{e}");
        assert!(matches!(problem(&e).0, Malformed::Checksum { .. }), "{e}");
    }
    for field in [
        &b"0000000001x\0"[..],
        b"\0\0\0\0\0\0\0\0\0\0\0\0",
        b"-0000000001\0",
    ] {
        let mut bad = a.clone();
        bad[2 * BLOCK + 124..2 * BLOCK + 136].copy_from_slice(field);
        fix_cksum(&mut bad, 2 * BLOCK);
        for e in broken(&bad) {
            assert!(e.to_string().contains("\"blob/b\""), "{e}");
            assert_eq!(problem(&e).0, &Malformed::Size, "{e}");
        }
    }
    let mut b = builder();
    raw(
        &mut b,
        b"./PaxHeaders/b",
        EntryType::XHeader,
        &pax_record("size", b"12x"),
    );
    file(&mut b, "blob/b", b"bbb");
    for e in broken(&finish(b)) {
        assert_eq!(problem(&e).0, &Malformed::Size, "{e}");
    }
    // A long name claiming more than is ever read.
    let mut b = builder();
    let huge = vec![b'a'; 2 << 20];
    raw(&mut b, b"././@LongLink", EntryType::GNULongName, &huge);
    file(&mut b, "blob/b", b"bbb");
    let e = index_bytes(&finish(b)).unwrap_err();
    assert!(
        matches!(problem(&e).0, Malformed::MetaTooLarge { .. }),
        "{e}"
    );
}

// ---------------------------------------------------------------------------------------------
// Scale.

/// 100 000 entries (a quarter of them directories): the index is linear and quick. The time is
/// printed, not asserted (run with `--nocapture` to see it); machines here are shared.
#[test]
fn a_hundred_thousand_entries() {
    let mut b = builder();
    let mut want = Vec::new();
    dir(&mut b, "blob/");
    let mut n = 1;
    while n < 100_000 {
        if n % 4 == 0 {
            dir(&mut b, &format!("manifests/r/repo{n}/reference/"));
        } else {
            let path = format!("manifests/r/repo{}/reference/t{n}", n - n % 4);
            let data = content(n, n % 64);
            file(&mut b, &path, &data);
            want.push((path, data));
        }
        n += 1;
    }
    let archive = finish(b);
    let f = blob(&archive);
    let start = Instant::now();
    let idx = index(&f, archive.len() as u64).unwrap();
    let took = start.elapsed();
    eprintln!(
        "index of 100000 entries ({} files, {} dirs, {} MiB): {took:?}",
        idx.files.len(),
        idx.dirs.len(),
        archive.len() >> 20
    );
    assert_eq!(idx.files.len(), want.len());
    for (t, (path, data)) in idx.files.iter().zip(&want).step_by(997) {
        assert_eq!(&t.path, path);
        let mut got = vec![0; t.size as usize];
        f.read_exact_at(&mut got, t.data_offset).unwrap();
        assert_eq!(&got, data);
    }
    let start = Instant::now();
    let mut walked = 0usize;
    walk(&archive[..], |_, _| {
        walked += 1;
        Ok::<_, io::Error>(())
    })
    .unwrap();
    eprintln!("walk of the same, from memory: {:?}", start.elapsed());
    assert_eq!(walked, want.len());
}

/// Deep hostile names (100 PAX paths of 5000 components, each entry under a new directory): the
/// bookkeeping of taken paths must stay linear in the names' length, where a set of every parent's
/// full path would copy gigabytes.
#[test]
fn deep_names_cost_in_proportion() {
    let mut b = builder();
    let deep = "/a".repeat(5000);
    for i in 0..100 {
        let path = format!("blob/k{i}{deep}");
        b.append_pax_extensions([("path", path.as_bytes())])
            .unwrap();
        file(&mut b, "blob/placeholder", b"x");
    }
    let archive = finish(b);
    let start = Instant::now();
    let idx = index_bytes(&archive).unwrap();
    eprintln!(
        "index of 100 names of 5000 components: {:?}",
        start.elapsed()
    );
    assert_eq!(idx.files.len(), 100);
    assert!(idx.files[99].path.ends_with("/a/a"));
}

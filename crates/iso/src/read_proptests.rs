//! Property tests of the ISO 9660 reader, which reads images made by others (`--image-cache` an
//! ISO, `cache verify`, `cache serve`). Whatever the bytes:
//! - the pure parsers (directory records, SUSP and Rock Ridge entries, multi-extent groups,
//!   names) answer or refuse, never panic, and only hand out pieces of what they were given;
//! - records and entries written from their fields read back as those fields;
//! - [`list_dir`] over an image whose directories are anything lists only files that lie inside
//!   the image, under valid names, or refuses it;
//! - what our writer makes lists back as the tree it was made from, bytes included.
//!
//! The fuzz targets (`fuzz/`, `cargo xtask fuzz`) run the same reader for longer.

use super::*;
use crate::IsoSpec;
use proptest::prelude::*;

/// `cases` per property, or `PROPTEST_CASES` when set (for a longer run by hand).
fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(cases),
        ..ProptestConfig::default()
    }
}

/// A directory record as ECMA-119 lays it out.
fn record(location: u32, len: u32, flags: u8, xattr: u8, ident: &[u8], su: &[u8]) -> Vec<u8> {
    let mut r = vec![0u8; 33];
    r[1] = xattr;
    r[2..6].copy_from_slice(&location.to_le_bytes());
    r[6..10].copy_from_slice(&location.to_be_bytes());
    r[10..14].copy_from_slice(&len.to_le_bytes());
    r[14..18].copy_from_slice(&len.to_be_bytes());
    r[25] = flags;
    r[28..32].copy_from_slice(&[1, 0, 0, 1]);
    r[32] = ident.len() as u8;
    r.extend_from_slice(ident);
    if ident.len().is_multiple_of(2) {
        r.push(0);
    }
    r.extend_from_slice(su);
    if r.len() % 2 == 1 {
        r.push(0);
    }
    r[0] = r.len() as u8;
    r
}

fn susp(sig: &[u8; 2], data: &[u8]) -> Vec<u8> {
    let mut e = vec![sig[0], sig[1], (4 + data.len()) as u8, 1];
    e.extend_from_slice(data);
    e
}

fn both32(v: u32) -> Vec<u8> {
    [v.to_le_bytes(), v.to_be_bytes()].concat()
}

/// A SUSP / Rock Ridge entry of the kinds the reader looks at, with fields a hostile image could
/// hold.
fn rr_entry(blocks: u32) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => (prop_oneof![6 => Just(0u8), 1 => 0u8..8], prop_oneof![6 => "[a-zA-Z0-9_-][a-zA-Z0-9._-]{0,11}", 1 => "\\.|\\.\\.|a/b|\\PC{1,3}"])
            .prop_map(|(flags, name)| susp(b"NM", &[&[flags][..], name.as_bytes()].concat())),
        1 => (0..blocks, 0u32..2100, 0u32..300).prop_map(|(b, off, len)| {
            susp(b"CE", &[both32(b), both32(off), both32(len)].concat())
        }),
        1 => (0..blocks).prop_map(|b| susp(b"CL", &both32(b))),
        1 => Just(susp(b"RE", &[])),
        1 => Just(susp(b"SL", &[0, 1, 2, b'a', b'b'])),
        1 => Just(susp(b"PN", &[0; 16])),
        1 => Just(susp(b"ZF", &[0; 12])),
        1 => prop::sample::select(vec![0o100_644u32, 0o040_755, 0o120_777, 0o010_644, 0o020_644, 0])
            .prop_map(|mode| susp(b"PX", &[both32(mode), both32(1), both32(0), both32(0)].concat())),
        1 => Just(susp(b"ST", &[])),
        1 => (prop::array::uniform2(any::<u8>()), prop::collection::vec(any::<u8>(), 0..6))
            .prop_map(|(sig, data)| susp(&sig, &data)),
    ]
}

/// A directory record that points anywhere in an image of `blocks` blocks.
fn any_record(blocks: u32) -> impl Strategy<Value = Vec<u8>> {
    let flags = prop_oneof![
        30 => Just(0u8),
        12 => Just(FLAG_DIR),
        1 => Just(FLAG_MULTI_EXTENT),
        1 => Just(FLAG_ASSOCIATED),
        1 => any::<u8>(),
    ];
    let ident = prop_oneof![
        12 => "[A-Z0-9_]{1,8}(\\.[A-Z0-9]{0,3})?;1".prop_map(String::into_bytes),
        1 => Just(vec![0u8]),
        1 => Just(vec![1u8]),
        1 => prop::collection::vec(any::<u8>(), 1..12),
    ];
    let su = prop::collection::vec(rr_entry(blocks), 0..4).prop_map(|e| e.concat());
    let len = prop_oneof![8 => 0u32..5000, 2 => Just(2048u32), 1 => any::<u32>()];
    let xattr = prop_oneof![8 => Just(0u8), 1 => any::<u8>()];
    (0..blocks + 2, len, flags, xattr, ident, su).prop_map(|(loc, len, flags, xattr, ident, su)| {
        let su = &su[..su.len().min(255 - 36 - ident.len())];
        record(loc, len, flags, xattr, &ident, su)
    })
}

/// Records packed into sectors as writers do: a record never crosses a sector boundary.
fn pack(records: &[Vec<u8>]) -> Vec<u8> {
    let mut d = Vec::new();
    for r in records {
        if d.len() % 2048 + r.len() > 2048 {
            d.resize(d.len().next_multiple_of(2048), 0);
        }
        d.extend_from_slice(r);
    }
    d.resize(d.len().next_multiple_of(2048).max(2048), 0);
    d
}

/// An image whose system area and volume descriptors are right, and whose blocks from 18 on are
/// `content`; the root directory is `root_len` bytes at block 18.
fn image_with(content: &[u8], root_len: u32) -> Vec<u8> {
    let mut img = vec![0u8; 18 * 2048];
    let pvd = &mut img[16 * 2048..17 * 2048];
    pvd[0] = 1;
    pvd[1..6].copy_from_slice(b"CD001");
    pvd[6] = 1;
    pvd[40..72].copy_from_slice(&[b' '; 32]);
    pvd[128..130].copy_from_slice(&2048u16.to_le_bytes());
    pvd[130..132].copy_from_slice(&2048u16.to_be_bytes());
    pvd[156..190].copy_from_slice(&record(18, root_len, FLAG_DIR, 0, &[0], &[]));
    let term = &mut img[17 * 2048..18 * 2048];
    term[0] = 255;
    term[1..6].copy_from_slice(b"CD001");
    img.extend_from_slice(content);
    img
}

/// Lists `bytes` as an image file; checks what any listing must hold.
fn list_image(bytes: &[u8]) -> Result<Vec<Option<IsoListing>>, TestCaseError> {
    let mut f = tempfile::tempfile().unwrap();
    std::io::Write::write_all(&mut f, bytes).unwrap();
    let mut out = Vec::new();
    for dir in ["", "imagecache", "a/b"] {
        match list_dir(&f, Path::new("t.iso"), dir) {
            Ok(listing) => {
                if let Some(l) = &listing {
                    check_listing(l, bytes.len() as u64)?;
                }
                out.push(listing);
            }
            Err(e) => {
                prop_assert!(!e.to_string().is_empty());
                out.push(None);
            }
        }
    }
    Ok(out)
}

fn check_listing(l: &IsoListing, image_len: u64) -> Result<(), TestCaseError> {
    for f in &l.files {
        prop_assert_eq!(f.size, f.extents.iter().map(|e| e.len).sum::<u64>());
        for e in &f.extents {
            prop_assert!(e.len > 0);
            prop_assert!(
                e.offset
                    .checked_add(e.len)
                    .is_some_and(|end| end <= image_len),
                "{:?}",
                e
            );
        }
    }
    let paths = l
        .files
        .iter()
        .map(|f| f.path.as_str())
        .chain(l.dirs.iter().map(String::as_str));
    for p in paths {
        prop_assert!(
            p.split('/').all(|c| check_name(c.as_bytes()).is_ok()),
            "{:?}",
            p
        );
    }
    prop_assert!(l.files.windows(2).all(|w| w[0].path < w[1].path));
    prop_assert!(l.dirs.windows(2).all(|w| w[0] < w[1]));
    Ok(())
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn any_record_bytes_are_read_or_refused(rec in prop::collection::vec(any::<u8>(), 0..300)) {
        if let Ok(r) = parse_record(&rec) {
            prop_assert!(!r.ident.is_empty() && 33 + r.ident.len() <= rec.len());
            prop_assert!(r.system_use.len() + 33 + r.ident.len() <= rec.len());
        }
    }

    /// A record written from its fields reads back as them.
    #[test]
    fn records_read_back(
        location in any::<u32>(),
        len in any::<u32>(),
        flags in any::<u8>(),
        xattr in any::<u8>(),
        ident in prop::collection::vec(any::<u8>(), 1..40),
        su in prop::collection::vec(any::<u8>(), 0..180),
    ) {
        let bytes = record(location, len, flags, xattr, &ident, &su);
        let r = parse_record(&bytes).unwrap();
        prop_assert_eq!(r.location, location);
        prop_assert_eq!(r.data_len, len);
        prop_assert_eq!(r.flags, flags);
        prop_assert_eq!(r.xattr_blocks, xattr);
        prop_assert_eq!(r.ident, &ident[..]);
        // The system use area may carry the one pad byte that evens the record out.
        prop_assert!(r.system_use.starts_with(&su) && r.system_use.len() - su.len() <= 1);
        prop_assert!(!r.interleaved);
    }

    /// Any extent splits into records that each lie in one sector, and the walk ends.
    #[test]
    fn any_extent_splits_into_records(extent in prop_oneof![
        prop::collection::vec(any::<u8>(), 0..4200),
        prop::collection::vec(any_record(40), 0..30).prop_map(|r| pack(&r)),
    ]) {
        let mut n = 0;
        for r in dir_records(&extent) {
            n += 1;
            // Each record, even a refused one, takes at least a byte.
            prop_assert!(n <= extent.len());
            if let Ok(r) = r {
                prop_assert!(33 + r.ident.len() + r.system_use.len() <= 255);
            }
        }
        if let Ok(groups) = group_records(dir_records(&extent)) {
            for g in groups {
                prop_assert_eq!(g.size, if g.first.is_dir() { u64::from(g.first.data_len) } else { g.extents.iter().map(|e| e.len).sum() });
                prop_assert!(g.extents.iter().all(|e| e.len > 0));
            }
        }
    }

    /// Records packed by the writer's rule come back in order, each as written.
    #[test]
    fn packed_records_read_back(records in prop::collection::vec(any_record(40), 0..24)) {
        let extent = pack(&records);
        let read: Vec<Record<'_>> = dir_records(&extent).collect::<Result<_, _>>().unwrap();
        prop_assert_eq!(read.len(), records.len());
        for (bytes, r) in records.iter().zip(&read) {
            prop_assert_eq!(r, &parse_record(bytes).unwrap());
        }
    }

    #[test]
    fn any_system_use_area_is_read_or_refused(area in prop_oneof![
        prop::collection::vec(any::<u8>(), 0..300),
        prop::collection::vec(rr_entry(50), 0..8).prop_map(|e| e.concat()),
    ]) {
        let mut total = 0;
        for e in susp_entries(&area).flatten() {
            prop_assert!(e.bytes.len() >= 4 && e.bytes[..2] == e.sig);
            total += e.bytes.len();
        }
        prop_assert!(total <= area.len());
        let _ = sp_skip(&area);
        let mut rr = RockRidge::default();
        if let Ok(Some(ce)) = rr.parse_area(&area) {
            prop_assert!(u64::from(ce.offset) + u64::from(ce.len) <= BLOCK);
        }
    }

    /// Rock Ridge names split over several `NM` entries (CONTINUE flag) read back whole.
    #[test]
    fn continued_names_read_back(pieces in prop::collection::vec("[a-zA-Z0-9._ -]{1,40}", 1..6)) {
        let mut area = Vec::new();
        for (i, p) in pieces.iter().enumerate() {
            let flags = u8::from(i + 1 < pieces.len());
            area.extend(susp(b"NM", &[&[flags][..], p.as_bytes()].concat()));
        }
        let mut rr = RockRidge::default();
        prop_assert_eq!(rr.parse_area(&area).unwrap(), None);
        prop_assert_eq!(rr.name, Some(pieces.concat().into_bytes()));
        prop_assert!(!rr.name_is_dot);
    }

    #[test]
    fn checked_names_are_path_components(name in prop_oneof![
        prop::collection::vec(any::<u8>(), 0..12),
        "\\.|\\.\\.|a/b|[a-z]{0,3}\0?".prop_map(String::into_bytes),
    ]) {
        if let Ok(n) = check_name(&name) {
            prop_assert!(!n.is_empty() && n != "." && n != ".." && !n.contains(['/', '\0']));
        }
        let _ = iso_name(&name);
    }
}

proptest! {
    #![proptest_config(config(128))]

    /// Images whose directories hold any records (pointing anywhere, with any Rock Ridge
    /// entries), or any bytes: a listing of files inside the image under valid names, or an
    /// error; never a panic, a hang, or a read past the end.
    #[test]
    fn any_directories_are_listed_or_refused(
        root in prop::collection::vec(any_record(24), 0..12),
        others in prop::collection::vec(prop::collection::vec(any_record(24), 0..8), 0..4),
        sp in any::<bool>(),
        noise in prop_oneof![3 => Just(Vec::new()), 1 => prop::collection::vec(any::<u8>(), 1..64)],
        noise_at in any::<prop::sample::Index>(),
    ) {
        // The root's own records first, so that the walk can get going; `SP` announces Rock Ridge.
        let su = if sp { susp(b"SP", &[0xbe, 0xef, 0]) } else { Vec::new() };
        let mut first = vec![record(18, 2048, FLAG_DIR, 0, &[0], &su), record(18, 2048, FLAG_DIR, 0, &[1], &[])];
        first.extend(root);
        let mut content = pack(&first);
        let root_len = content.len() as u32;
        for d in &others {
            content.extend(pack(d));
        }
        // Room for the files the records point to.
        content.resize(content.len().max(26 * 2048 + 5000), 0);
        if !noise.is_empty() {
            let at = noise_at.index(content.len());
            let end = (at + noise.len()).min(content.len());
            content[at..end].copy_from_slice(&noise[..end - at]);
        }
        list_image(&image_with(&content, root_len))?;
    }

    #[test]
    fn any_bytes_after_the_descriptors_are_listed_or_refused(
        content in prop::collection::vec(any::<u8>(), 0..8192),
        root_len in prop_oneof![Just(2048u32), 0u32..9000, any::<u32>()],
    ) {
        list_image(&image_with(&content, root_len))?;
    }
}

proptest! {
    #![proptest_config(config(48))]

    /// An image our writer makes lists back as the tree it was given, each file's bytes where
    /// the listing says.
    #[test]
    fn our_images_list_back(files in prop::collection::btree_map(
        prop::collection::vec("[a-zA-Z0-9][a-zA-Z0-9._ -]{0,20}|[a-z]{60,120}", 1..4).prop_map(|p| p.join("/")),
        0usize..5000,
        0..10,
    )) {
        // Files only where no other file needs a directory.
        let names: Vec<&String> = files.keys().collect();
        prop_assume!(names.iter().all(|a| names.iter().all(|b| !b.starts_with(&format!("{a}/")))));
        let mut spec = IsoSpec::new("PROPTEST", 0).unwrap();
        spec.add_dir("imagecache").unwrap();
        let content = |name: &str, len: usize| -> Vec<u8> {
            (0..len).map(|i| (i as u8) ^ (name.len() as u8)).collect()
        };
        for (name, &len) in &files {
            spec.add_bytes(&format!("imagecache/{name}"), content(name, len)).unwrap();
        }
        let tmp = tempfile::NamedTempFile::new().unwrap();
        spec.write(tmp.as_file(), tmp.path(), &mut |_| {}).unwrap();
        let image = std::fs::read(tmp.path()).unwrap();
        let listing = list_dir(tmp.as_file(), tmp.path(), "imagecache").unwrap().unwrap();
        check_listing(&listing, image.len() as u64)?;
        prop_assert_eq!(&listing.volume_id, "PROPTEST");
        let listed: Vec<(&str, u64)> = listing.files.iter().map(|f| (f.path.as_str(), f.size)).collect();
        let want: Vec<(&str, u64)> = files.iter().map(|(n, &l)| (n.as_str(), l as u64)).collect();
        prop_assert_eq!(listed, want);
        for f in &listing.files {
            let bytes: Vec<u8> = f.extents.iter().flat_map(|e| image[e.offset as usize..(e.offset + e.len) as usize].iter().copied()).collect();
            prop_assert!(bytes == content(&f.path, f.size as usize), "{}", f.path);
        }
    }
}

//! Property tests of the tar layer reader ([`imager_cache::tar_layer`]), which reads layers from
//! registries, OCI layouts and caches made by others. Whatever the bytes:
//! - nothing panics, and nothing is read outside the layer (every file found lies inside it);
//! - the layer means the same read in place ([`index`]) and as a stream ([`walk`], and
//!   [`read_layer`] through gzip): both accept or both refuse, and both find the same files with
//!   the same bytes;
//! - what our own writer lays out ([`plan_layer`]) reads back as the tree it was made from, and
//!   header fields and PAX records read back as they were written.
//!
//! The fuzz targets (`fuzz/`, `cargo xtask fuzz`) run the same reader for longer.

#![allow(clippy::unwrap_used)]

use std::io::{self, Read, Write};

use imager_cache::oci_out::{layer_entries, plan_layer};
use imager_cache::tar_layer::{
    self, BLOCK, Bounds, Compression, Pax, index, looks_like_cache_layer, normalize, parse_header,
    parse_numeric, parse_pax, read_layer, walk,
};
use imager_oci::Digest;
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

// ---------------------------------------------------------------------------------------------
// Writing tar bytes by hand: any name, size and type, checksums right (or not).

const CHKSUM: std::ops::Range<usize> = 148..156;

fn set_checksum(b: &mut [u8]) {
    b[CHKSUM].fill(b' ');
    let sum: u64 = b[..BLOCK].iter().map(|&x| u64::from(x)).sum();
    b[CHKSUM].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
}

/// A size field: octal when it fits 11 digits, else GNU base-256.
fn size_field(size: u64) -> [u8; 12] {
    let mut f = [0u8; 12];
    if size < 1 << 33 {
        f[..11].copy_from_slice(format!("{size:011o}").as_bytes());
    } else {
        f[0] = 0x80;
        f[4..].copy_from_slice(&size.to_be_bytes());
    }
    f
}

fn header(name: &[u8], size: u64, kind: u8, prefix: &[u8]) -> [u8; BLOCK] {
    let mut b = [0u8; BLOCK];
    let n = name.len().min(100);
    b[..n].copy_from_slice(&name[..n]);
    b[100..108].copy_from_slice(b"0000644\0");
    b[124..136].copy_from_slice(&size_field(size));
    b[156] = kind;
    b[257..265].copy_from_slice(b"ustar\x0000");
    let p = prefix.len().min(155);
    b[345..345 + p].copy_from_slice(&prefix[..p]);
    set_checksum(&mut b);
    b
}

fn pax_record(key: &[u8], value: &[u8]) -> Vec<u8> {
    let body = key.len() + value.len() + 3;
    let mut n = body + 1;
    while n != body + n.to_string().len() {
        n = body + n.to_string().len();
    }
    [format!("{n} ").as_bytes(), key, b"=", value, b"\n"].concat()
}

fn pad(out: &mut Vec<u8>) {
    out.resize(out.len().next_multiple_of(BLOCK), 0);
}

/// One entry of a generated layer.
#[derive(Debug, Clone)]
enum Gen {
    /// A header with this type flag and name; `data` bytes follow, `size` is what the header says.
    Entry {
        kind: u8,
        name: Vec<u8>,
        prefix: Vec<u8>,
        size: u64,
        data: usize,
    },
    /// A GNU long name for the next entry.
    LongName(Vec<u8>),
    /// A PAX extended header.
    Pax(Vec<(Vec<u8>, Vec<u8>)>),
}

fn name_bytes() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        4 => Just(b"blob".to_vec()),
        3 => Just(b"manifests".to_vec()),
        4 => "[a-z0-9_.-]{1,8}".prop_map(String::into_bytes),
        1 => Just(b"..".to_vec()),
        1 => Just(b".".to_vec()),
        1 => Just(Vec::new()),
        1 => Just(b"\xff".to_vec()),
        1 => Just("é".as_bytes().to_vec()),
        1 => "[a-z]{90,110}".prop_map(String::into_bytes),
    ];
    prop::collection::vec(piece, 1..5).prop_map(|p| p.join(&b'/'))
}

fn any_size() -> impl Strategy<Value = u64> {
    prop_oneof![
        8 => 0u64..1200,
        1 => Just(1u64 << 33),
        1 => u64::MAX - 1024..=u64::MAX,
        1 => any::<u64>(),
    ]
}

fn gen_entry() -> impl Strategy<Value = Gen> {
    let kind = prop_oneof![
        8 => Just(b'0'),
        4 => Just(b'5'),
        1 => Just(0u8),
        1 => Just(b'7'),
        1 => Just(b'g'),
        1 => Just(b'K'),
        1 => Just(b'x'),
        1 => Just(b'L'),
        1 => prop::sample::select(b"123469SADMNVX\xff".to_vec()),
    ];
    let entry = (
        kind,
        name_bytes(),
        prop_oneof![3 => Just(Vec::new()), 1 => name_bytes()],
        any_size(),
        any::<bool>(),
    )
        .prop_map(|(kind, name, prefix, size, honest)| {
            // Mostly the data the header announces; sometimes less (then the layer lies).
            let data = if honest {
                size.min(1200) as usize
            } else {
                (size % 700) as usize
            };
            Gen::Entry {
                kind,
                name,
                prefix,
                size,
                data,
            }
        });
    let record = prop_oneof![
        (Just(b"path".to_vec()), name_bytes()),
        (
            Just(b"size".to_vec()),
            prop_oneof!["[0-9]{1,4}", "[0-9]{18,22}", "[0-9a-z -]{0,4}"]
                .prop_map(String::into_bytes)
        ),
        (Just(b"GNU.sparse.major".to_vec()), Just(b"1".to_vec())),
        (Just(b"mtime".to_vec()), Just(b"1.5".to_vec())),
        (
            "[a-z.]{0,6}".prop_map(String::into_bytes),
            prop::collection::vec(any::<u8>(), 0..8)
        ),
    ];
    prop_oneof![
        8 => entry,
        1 => name_bytes().prop_map(Gen::LongName),
        1 => prop::collection::vec(record, 0..3).prop_map(Gen::Pax),
    ]
}

/// The bytes of a generated layer: entries, then `ends` zero blocks, then `tail`; and where each
/// header block is.
fn build(entries: &[Gen], ends: usize, tail: &[u8]) -> (Vec<u8>, Vec<usize>) {
    let mut out = Vec::new();
    let mut headers = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        headers.push(out.len());
        match e {
            Gen::Entry {
                kind,
                name,
                prefix,
                size,
                data,
            } => {
                out.extend_from_slice(&header(name, *size, *kind, prefix));
                out.extend((0..*data).map(|j| (i * 31 + j) as u8));
                pad(&mut out);
            }
            Gen::LongName(name) => {
                out.extend_from_slice(&header(b"././@LongLink", name.len() as u64 + 1, b'L', b""));
                out.extend_from_slice(name);
                out.push(0);
                pad(&mut out);
            }
            Gen::Pax(records) => {
                let data: Vec<u8> = records.iter().flat_map(|(k, v)| pax_record(k, v)).collect();
                out.extend_from_slice(&header(b"PaxHeaders/x", data.len() as u64, b'x', b""));
                out.extend_from_slice(&data);
                pad(&mut out);
            }
        }
    }
    out.resize(out.len() + ends * BLOCK, 0);
    out.extend_from_slice(tail);
    (out, headers)
}

// ---------------------------------------------------------------------------------------------
// Reading every way and comparing.

/// A file as a reader found it: path, size, where its data starts, its bytes.
type Found = (String, u64, u64, Vec<u8>);

/// What reading a layer in place gives: its files and directories, or the error's message.
type Indexed = Result<(Vec<Found>, Vec<String>), String>;

fn by_index(bytes: &[u8]) -> Indexed {
    let mut f = tempfile::tempfile().unwrap();
    f.write_all(bytes).unwrap();
    // A file longer than the layer: what lies past the layer's length is not the layer.
    f.write_all(&[0xa5; 700]).unwrap();
    let idx = index(&f, bytes.len() as u64).map_err(|e| e.to_string())?;
    let files = idx
        .files
        .into_iter()
        .map(|t| {
            let end = t.data_offset.checked_add(t.size).unwrap();
            assert!(
                end <= bytes.len() as u64,
                "{t:?} lies past the layer's {} bytes",
                bytes.len()
            );
            let data = bytes[t.data_offset as usize..end as usize].to_vec();
            (t.path, t.size, t.data_offset, data)
        })
        .collect();
    Ok((files, idx.dirs))
}

fn by_walk(stream: impl Read) -> Result<Vec<Found>, String> {
    let mut files = Vec::new();
    walk(stream, |t, r| {
        let mut data = Vec::new();
        r.read_to_end(&mut data)?;
        files.push((t.path.clone(), t.size, t.data_offset, data));
        Ok::<_, io::Error>(())
    })
    .map_err(|e| e.to_string())?;
    Ok(files)
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// Reads `bytes` as a layer every way the tool does, checks that the readings agree, and returns
/// the in-place one.
fn read_every_way(bytes: &[u8]) -> Result<Indexed, TestCaseError> {
    let indexed = by_index(bytes);
    let walked = by_walk(bytes);
    // Read a few bytes at a time: a stream that trickles in means the same.
    let trickled = by_walk(io::BufReader::with_capacity(7, Trickle(bytes)));
    prop_assert_eq!(
        indexed.is_ok(),
        walked.is_ok(),
        "index: {:?}\nwalk: {:?}",
        indexed.as_ref().err(),
        walked.as_ref().err()
    );
    if let (Ok((files, _)), Ok(streamed)) = (&indexed, &walked) {
        prop_assert_eq!(files, streamed);
    }
    prop_assert_eq!(&walked, &trickled);
    if bytes.len() < 64 << 10 {
        let gz = gzip(bytes);
        let mut through_gzip = Vec::new();
        let read = read_layer(&gz[..], Compression::Gzip, Bounds::FORMAT, |t, r| {
            let mut data = Vec::new();
            r.read_to_end(&mut data)?;
            through_gzip.push((t.path.clone(), t.size, t.data_offset, data));
            Ok(())
        });
        match (&walked, read) {
            (Ok(files), Ok(read)) => {
                prop_assert_eq!(files, &through_gzip);
                prop_assert_eq!(read.digest, Digest::of(&gz));
                prop_assert_eq!(read.size, gz.len() as u64);
            }
            (Err(_), Err(_)) => {}
            (w, r) => prop_assert!(
                false,
                "walk: {:?}\nread_layer: {:?}",
                w.as_ref().err(),
                r.err()
            ),
        }
        let _ = looks_like_cache_layer(&gz[..]);
    }
    let _ = looks_like_cache_layer(bytes);
    Ok(indexed)
}

/// A reader that hands out at most 5 bytes a call.
struct Trickle<'a>(&'a [u8]);

impl Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = buf.len().min(5).min(self.0.len());
        buf[..n].copy_from_slice(&self.0[..n]);
        self.0 = &self.0[n..];
        Ok(n)
    }
}

// ---------------------------------------------------------------------------------------------
// The properties.

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn any_header_block_is_read_or_refused(
        block in prop::collection::vec(any::<u8>(), BLOCK..=BLOCK),
        fix_checksum in any::<bool>(),
    ) {
        let mut block: [u8; BLOCK] = block.try_into().unwrap();
        if fix_checksum {
            set_checksum(&mut block);
        }
        if let Ok(Some(h)) = parse_header(&block) {
            prop_assert!(h.name.len() <= 100 + 1 + 155);
            prop_assert_eq!(h.kind, block[156]);
        }
        let _ = normalize(&block[..100]);
        let _ = parse_pax(&block);
        let _ = parse_numeric(&block[124..136]);
    }

    /// Header fields read back as written: name (with the ustar prefix), size (octal or
    /// base-256), type.
    #[test]
    fn header_fields_read_back(
        name in "[a-z0-9/._-]{1,100}",
        prefix in "([a-z0-9/._-]{1,155})?",
        size in any::<u64>(),
        kind in any::<u8>(),
    ) {
        let h = parse_header(&header(name.as_bytes(), size, kind, prefix.as_bytes())).unwrap().unwrap();
        let want = if prefix.is_empty() { name.clone() } else { format!("{prefix}/{name}") };
        prop_assert_eq!(h.name, want.into_bytes());
        prop_assert_eq!(h.size, size);
        prop_assert_eq!(h.kind, kind);
    }

    /// Numbers in every spelling writers use: zero-padded or space-led octal, ended by NUL or
    /// space, and base-256.
    #[test]
    fn numeric_fields_read_back(value in any::<u64>(), width in 1usize..=12, lead in 0usize..4, end in "[ \0]{0,2}") {
        let octal = format!("{value:o}");
        let mut field = " ".repeat(lead).into_bytes();
        field.extend_from_slice(octal.as_bytes());
        field.extend_from_slice(end.as_bytes());
        prop_assert_eq!(parse_numeric(&field), Some(value));
        let mut padded = format!("{value:0width$o}").into_bytes();
        padded.push(0);
        prop_assert_eq!(parse_numeric(&padded), Some(value));
        let mut b256 = vec![0u8; 12];
        b256[0] = 0x80;
        b256[4..].copy_from_slice(&value.to_be_bytes());
        prop_assert_eq!(parse_numeric(&b256), Some(value));
    }

    #[test]
    fn any_numeric_field_is_read_or_refused(field in prop::collection::vec(any::<u8>(), 0..16)) {
        if let Some(v) = parse_numeric(&field) {
            // A value read as octal is written back the same way, after the leading spaces.
            if field.first().is_some_and(|&b| b & 0x80 == 0) {
                let text = String::from_utf8_lossy(&field);
                let digits = text.trim_start_matches(' ').trim_end_matches([' ', '\0']);
                prop_assert_eq!(u64::from_str_radix(digits, 8).ok(), Some(v));
            }
        }
    }

    /// PAX records read back as written; the last `path` and `size` win, an empty value cancels.
    #[test]
    fn pax_records_read_back(records in prop::collection::vec(prop_oneof![
        (Just("path".to_owned()), "[a-z/é.]{0,30}"),
        (Just("size".to_owned()), prop_oneof!["[0-9]{1,19}", Just(String::new())]),
        (Just("mtime".to_owned()), "[0-9.]{1,12}"),
        (Just("GNU.sparse.size".to_owned()), "[0-9]{1,4}"),
        ("[a-zA-Z.]{1,12}", "\\PC{0,12}"),
    ], 0..6)) {
        let data: Vec<u8> = records.iter().flat_map(|(k, v)| pax_record(k.as_bytes(), v.as_bytes())).collect();
        let mut want = Pax::default();
        for (k, v) in &records {
            match k.as_str() {
                "path" => want.path = (!v.is_empty()).then(|| v.clone().into_bytes()),
                "size" => want.size = if v.is_empty() { None } else { v.parse().ok() },
                k if k.starts_with("GNU.sparse.") => want.sparse = true,
                _ => {}
            }
        }
        let too_big = records.iter().any(|(k, v)| k == "size" && !v.is_empty() && v.parse::<u64>().is_err());
        match parse_pax(&data) {
            Ok(p) => prop_assert_eq!(p, want),
            Err(e) => prop_assert!(too_big, "{}", e),
        }
    }

    #[test]
    fn any_pax_data_is_read_or_refused(data in prop_oneof![
        prop::collection::vec(any::<u8>(), 0..64),
        "([0-9]{1,3} [a-z]{0,4}=[a-z]{0,4}\n?){0,4}".prop_map(String::into_bytes),
    ]) {
        let _ = parse_pax(&data);
    }

    /// A normalized path is one the cache can hold: relative, under `blob/` or `manifests/`,
    /// without `.`, `..` or empty components; normalizing it again changes nothing.
    #[test]
    fn normalized_paths_stay_in_the_cache(raw in prop_oneof![name_bytes(), prop::collection::vec(any::<u8>(), 0..40)]) {
        if let Ok(Some(p)) = normalize(&raw) {
            prop_assert!(p.starts_with("blob/") || p.starts_with("manifests/") || p == "blob" || p == "manifests");
            prop_assert!(p.split('/').all(|c| !c.is_empty() && c != "." && c != ".."));
            prop_assert_eq!(normalize(p.as_bytes()), Ok(Some(p.clone())));
        }
    }
}

proptest! {
    #![proptest_config(config(256))]

    /// What our writer lays out reads back, every way, as the files it was given, at the
    /// offsets it planned.
    #[test]
    fn our_layers_read_back(
        files in prop::collection::btree_map(
            (prop_oneof![Just("blob"), Just("manifests/r/x/reference"), Just("manifests/r/x/digest")],
             prop_oneof![3 => "[a-z0-9][a-z0-9._-]{0,11}", 1 => "[a-z]{100,160}"])
                .prop_map(|(d, n)| format!("{d}/{n}")),
            0u64..1500,
            0..8,
        ),
        epoch in prop_oneof![Just(0u64), any::<u64>()],
    ) {
        let entries = layer_entries(files.iter().map(|(n, s)| (n.as_str(), *s))).unwrap();
        let plan = plan_layer(&entries, epoch).unwrap();
        let mut bytes = vec![0u8; plan.len as usize];
        for slot in &plan.slots {
            let h = slot.header_offset as usize;
            bytes[h..h + slot.header.len()].copy_from_slice(&slot.header);
            let d = slot.data_offset as usize;
            for j in 0..slot.size as usize {
                bytes[d + j] = (j % 251) as u8 ^ slot.name.len() as u8;
            }
        }
        let (found, dirs) = read_every_way(&bytes)?.map_err(TestCaseError::fail)?;
        let want: Vec<Found> = plan
            .files()
            .map(|s| {
                let d = s.data_offset as usize;
                (s.name.clone(), s.size, s.data_offset, bytes[d..d + s.size as usize].to_vec())
            })
            .collect();
        prop_assert_eq!(found, want);
        let want_dirs: Vec<String> = entries
            .iter()
            .filter(|e| e.is_dir)
            .map(|e| e.name.trim_end_matches('/').to_owned())
            .collect();
        prop_assert_eq!(dirs, want_dirs);
        if !files.is_empty() {
            prop_assert!(looks_like_cache_layer(&bytes[..]));
        }
    }

    /// Layers of any entries, names, types, sizes and extensions, lying or not: read alike
    /// every way, never past their end.
    #[test]
    fn generated_layers_read_alike(
        entries in prop::collection::vec(gen_entry(), 0..8),
        ends in 0usize..3,
        tail in prop_oneof![3 => Just(Vec::new()), 1 => prop::collection::vec(any::<u8>(), 0..600)],
    ) {
        read_every_way(&build(&entries, ends, &tail).0)?.ok();
    }

    /// A valid layer damaged anywhere (header checksums fixed or left wrong), or cut anywhere:
    /// read alike every way, never past its end.
    #[test]
    fn damaged_layers_read_alike(
        changes in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        fix in any::<bool>(),
        cut in proptest::option::of(any::<prop::sample::Index>()),
    ) {
        let (mut bytes, headers) = build(&sample(), 2, &[]);
        for (at, value) in changes {
            let at = at.index(bytes.len());
            bytes[at] = value;
        }
        if fix {
            for &h in &headers {
                set_checksum(&mut bytes[h..h + BLOCK]);
            }
        }
        if let Some(cut) = cut {
            bytes.truncate(cut.index(bytes.len()));
        }
        read_every_way(&bytes)?.ok();
    }
}

/// A small valid layer with a directory, a long name, a PAX path and a ustar prefix.
fn sample() -> Vec<Gen> {
    let file = |name: &[u8], prefix: &[u8], size: u64| Gen::Entry {
        kind: b'0',
        name: name.to_vec(),
        prefix: prefix.to_vec(),
        size,
        data: size as usize,
    };
    vec![
        Gen::Entry {
            kind: b'5',
            name: b"blob/".to_vec(),
            prefix: vec![],
            size: 0,
            data: 0,
        },
        Gen::LongName(format!("blob/{}", "l".repeat(120)).into_bytes()),
        file(b"x", b"", 700),
        Gen::Pax(vec![(
            b"path".to_vec(),
            b"manifests/r/x/reference/t".to_vec(),
        )]),
        file(b"y", b"", 3),
        file(b"z", b"blob", 0),
    ]
}

/// The sample that `damaged_layers_read_alike` damages reads as meant before the damage.
#[test]
fn the_sample_layer_reads_as_meant() {
    let (bytes, headers) = build(&sample(), 2, &[]);
    for h in headers {
        assert!(
            matches!(
                parse_header(bytes[h..h + BLOCK].try_into().unwrap()),
                Ok(Some(_))
            ),
            "{h}"
        );
    }
    let (files, dirs) = by_index(&bytes).unwrap();
    let files: Vec<(&str, u64)> = files.iter().map(|f| (f.0.as_str(), f.1)).collect();
    let long = format!("blob/{}", "l".repeat(120));
    assert_eq!(
        files,
        [
            (long.as_str(), 700),
            ("manifests/r/x/reference/t", 3),
            ("blob/z", 0)
        ]
    );
    assert_eq!(dirs, ["blob"]);
    assert_eq!(by_walk(&bytes[..]).unwrap().len(), 3);
}

/// Found by `generated_layers_read_alike`: a PAX or long-name header whose size is near
/// `u64::MAX` made `looks_like_cache_layer` overflow rounding the size up to whole blocks (a
/// panic in debug builds, a wrong skip in release ones). Such a header is simply not a cache layer.
#[test]
fn a_meta_header_of_absurd_size_is_not_a_cache_layer() {
    for kind in [b'x', b'g', b'L', b'K'] {
        for size in [u64::MAX, u64::MAX - 510, tar_layer::MAX_META_SIZE + 1] {
            let (bytes, _) = build(
                &[Gen::Entry {
                    kind,
                    name: b"blob".to_vec(),
                    prefix: vec![],
                    size,
                    data: 0,
                }],
                2,
                &[],
            );
            assert!(!looks_like_cache_layer(&bytes[..]), "{kind} {size}");
            assert!(!looks_like_cache_layer(&gzip(&bytes)[..]), "{kind} {size}");
        }
    }
}

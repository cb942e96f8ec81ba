//! A cache layer (tar) read every way the tool reads one: in place (`index`), as a stream
//! (`walk`), through gzip (`read_layer`), and sniffed (`looks_like_cache_layer`). Beyond "no
//! panic": the readings agree, and every file found lies inside the layer.
//!
//! The first input byte is a mode: bit 0 clear means the header checksums along the chain of
//! headers are fixed before reading (or nearly every mutation would stop at the checksum), bit 1
//! set adds the gzip reading.
#![no_main]

use std::cell::RefCell;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;

use imager_cache::tar_layer::{self, BLOCK, Compression};
use libfuzzer_sys::fuzz_target;

thread_local! {
    static BLOB: RefCell<File> = RefCell::new(tempfile::tempfile().expect("a temp file"));
}

type Found = (String, u64, u64, Vec<u8>);

fn fix_checksums(bytes: &mut [u8]) {
    let mut at = 0usize;
    while at + BLOCK <= bytes.len() {
        let block = &mut bytes[at..at + BLOCK];
        if block.iter().all(|&b| b == 0) {
            break;
        }
        block[148..156].fill(b' ');
        let sum: u64 = block.iter().map(|&b| u64::from(b)).sum();
        block[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        let Some(size) = tar_layer::parse_numeric(&block[124..136]) else {
            break;
        };
        let Some(next) = size
            .checked_next_multiple_of(BLOCK as u64)
            .and_then(|s| usize::try_from(s).ok())
            .and_then(|s| (at + BLOCK).checked_add(s))
        else {
            break;
        };
        at = next;
    }
}

fn by_index(bytes: &[u8]) -> Result<Vec<Found>, String> {
    BLOB.with(|blob| {
        let blob = blob.borrow();
        blob.set_len(0).unwrap();
        blob.write_all_at(bytes, 0).unwrap();
        // Bytes past the layer's length are not the layer.
        blob.write_all_at(&[0xa5; 600], bytes.len() as u64).unwrap();
        let index = tar_layer::index(&blob, bytes.len() as u64).map_err(|e| e.to_string())?;
        Ok(index
            .files
            .into_iter()
            .map(|f| {
                let end = f
                    .data_offset
                    .checked_add(f.size)
                    .expect("file end overflows");
                assert!(end <= bytes.len() as u64, "{f:?} lies past the layer");
                let data = bytes[f.data_offset as usize..end as usize].to_vec();
                (f.path, f.size, f.data_offset, data)
            })
            .collect())
    })
}

fn by_walk(stream: impl Read) -> Result<Vec<Found>, String> {
    let mut files = Vec::new();
    tar_layer::walk(stream, |f, r| {
        let mut data = Vec::new();
        r.read_to_end(&mut data)?;
        assert_eq!(data.len() as u64, f.size);
        files.push((f.path.clone(), f.size, f.data_offset, data));
        Ok::<_, io::Error>(())
    })
    .map_err(|e| e.to_string())?;
    Ok(files)
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mut bytes = rest.to_vec();
    if mode & 1 == 0 {
        fix_checksums(&mut bytes);
    }
    let indexed = by_index(&bytes);
    let walked = by_walk(&bytes[..]);
    match (&indexed, &walked) {
        (Ok(a), Ok(b)) => assert_eq!(a, b, "index and walk found different files"),
        (Err(_), Err(_)) => {}
        (a, b) => panic!("index: {a:?}\nwalk: {b:?}"),
    }
    let _ = tar_layer::looks_like_cache_layer(&bytes[..]);
    if mode & 2 != 0 {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&bytes).unwrap();
        let gz = gz.finish().unwrap();
        let mut files = Vec::new();
        let read = tar_layer::read_layer(
            &gz[..],
            Compression::Gzip,
            tar_layer::Bounds::FORMAT,
            |f, r| {
                let mut data = Vec::new();
                r.read_to_end(&mut data)?;
                files.push((f.path.clone(), f.size, f.data_offset, data));
                Ok(())
            },
        );
        match (&walked, read) {
            (Ok(w), Ok(read)) => {
                assert_eq!(w, &files);
                assert_eq!(read.digest, imager_oci::Digest::of(&gz));
                assert_eq!(read.size, gz.len() as u64);
            }
            (Err(_), Err(_)) => {}
            (w, r) => panic!("walk: {w:?}\nread_layer: {:?}", r.err()),
        }
        let _ = tar_layer::looks_like_cache_layer(&gz[..]);
    }
});

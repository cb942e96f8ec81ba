//! An ISO 9660 image listed as `--image-cache`, `cache verify` and `cache serve` list one. The
//! input is the image from its volume descriptors (sector 16) on: the system area before them is
//! zeros, and the image is zero-extended by 256 KiB so that files may lie past the input. Beyond
//! "no panic": every listed file lies inside the image, its size is its extents' sum, and every
//! name is a valid path component.
#![no_main]

use std::cell::RefCell;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use imager_iso::read::list_dir;
use libfuzzer_sys::fuzz_target;

thread_local! {
    static IMAGE: RefCell<File> = RefCell::new(tempfile::tempfile().expect("a temp file"));
}

const SYSTEM_AREA: u64 = 16 * 2048;
const TAIL: u64 = 256 << 10;

fuzz_target!(|data: &[u8]| {
    IMAGE.with(|image| {
        let image = image.borrow();
        image.set_len(0).unwrap();
        image.write_all_at(data, SYSTEM_AREA).unwrap();
        let len = SYSTEM_AREA + data.len() as u64 + TAIL;
        image.set_len(len).unwrap();
        for dir in ["", "imagecache", "imagecache/manifests"] {
            let Ok(Some(listing)) = list_dir(&image, Path::new("fuzz.iso"), dir) else {
                continue;
            };
            for f in &listing.files {
                assert_eq!(f.size, f.extents.iter().map(|e| e.len).sum::<u64>());
                for e in &f.extents {
                    assert!(e.offset.checked_add(e.len).is_some_and(|end| end <= len));
                }
            }
            for p in listing.files.iter().map(|f| &f.path).chain(&listing.dirs) {
                for c in p.split('/') {
                    assert!(
                        !c.is_empty() && c != "." && c != ".." && !c.contains('\0'),
                        "{p:?}"
                    );
                }
            }
        }
    });
});

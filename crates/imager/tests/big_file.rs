//! A cache file over 4 GiB: ISO 9660 stores at most 4 GiB - 1 per extent, so the writer must use
//! level 3 multi-extent files, and a reader must get the whole file back.

// Test code: a panic with its message is how a failure is reported, helpers included.
#![allow(clippy::unwrap_used)]

mod common;

use std::fs::File;
use std::io::{Seek, SeekFrom, Write};

/// 4 GiB + 4097: past the 32-bit size limit and not a multiple of the 2 KiB sector.
const BIG: u64 = (4 << 30) + 4097;

#[test]
#[ignore = "writes ~9 GB to disk for a minute: run `cargo xtask test`"]
fn a_file_over_4_gib_reads_back_whole() {
    common::require_tool("xorriso", "xorriso");
    let dir = common::scratch();
    // The ISO (~4.3 GB, written) and the extracted copy (4.3 GB); the source is sparse.
    let need = 2 * BIG + (512 << 20);
    let free = common::free_bytes(dir.path());
    assert!(
        free > need,
        "this test needs {} GB free under {}, there are {} GB",
        need >> 30,
        dir.path().display(),
        free >> 30
    );

    let cache = dir.path().join("cache");
    std::fs::create_dir_all(cache.join("blob")).unwrap();
    // Names of the digest form (a medium takes no other under blob/), not the content's: the
    // medium is written without --verify, and hashing 4 GiB would only slow the test down.
    let big_name = format!("blob/sha256-{}", "a".repeat(64));
    let big = cache.join(&big_name);
    {
        let mut f = File::create(&big).unwrap();
        f.set_len(BIG).unwrap();
        // Known bytes at the very end (in the second extent) and just below 4 GiB (where a
        // 32-bit size or offset would wrap), so a truncated or shifted copy hashes differently.
        f.seek(SeekFrom::Start((4 << 30) - 5)).unwrap();
        f.write_all(b"below-4GiB").unwrap();
        f.seek(SeekFrom::Start(BIG - 13)).unwrap();
        f.write_all(b"the last 13B!").unwrap();
    }
    std::fs::write(
        cache.join(format!("blob/sha256-{}", "b".repeat(64))),
        b"small file after the big one",
    )
    .unwrap();
    let want = imager_boot_test::expected_listing(&cache).unwrap();

    let assets = common::fake_assets(dir.path());
    let out = dir.path().join("out");
    let result = common::imager([
        "iso".as_ref(),
        "--assets".as_ref(),
        assets.as_os_str(),
        "--image-cache".as_ref(),
        cache.as_os_str(),
        "--output".as_ref(),
        out.as_os_str(),
    ]);
    common::assert_success(&result, "imager iso with a 4 GiB file");
    let iso = out.join("metal-amd64.iso");
    // The source is gone before the copy is made: the disk holds the ISO and one copy at most.
    std::fs::remove_dir_all(&cache).unwrap();
    assert!(std::fs::metadata(&iso).unwrap().len() > BIG);

    let extracted = dir.path().join("extracted");
    common::xorriso_extract(&iso, "/imagecache", &extracted);
    std::fs::remove_file(&iso).unwrap();
    let got = imager_boot_test::expected_listing(&extracted).unwrap();
    let diff = imager_boot_test::ListingDiff::new(&want, &got);
    assert!(diff.is_empty(), "{diff}");
    assert_eq!(got[&big_name].size, BIG);
}

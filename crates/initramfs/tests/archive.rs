//! Archives written by the builder, read back by a small newc reader and by the system's `cpio`
//! and `xz`.

// Helpers outside `#[test]` functions are test code too; clippy's allow-unwrap-in-tests misses them.
#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::process::{Command, Stdio};

use imager_initramfs::{Builder, Compression, Error};

#[derive(Debug, PartialEq, Eq)]
struct Entry {
    name: String,
    ino: u32,
    mode: u32,
    uid: u32,
    gid: u32,
    nlink: u32,
    mtime: u32,
    rdev: (u32, u32),
    data: Vec<u8>,
}

/// A strict newc reader: checks magic, alignment and the trailer.
fn read_newc(mut bytes: &[u8]) -> Vec<Entry> {
    let total = bytes.len();
    let mut entries = Vec::new();
    loop {
        assert_eq!((total - bytes.len()) % 4, 0, "header not 4-aligned");
        assert!(bytes.len() >= 110, "truncated header");
        assert_eq!(&bytes[..6], b"070701");
        let field = |i: usize| {
            let s = std::str::from_utf8(&bytes[6 + 8 * i..14 + 8 * i]).unwrap();
            u32::from_str_radix(s, 16).unwrap()
        };
        let (ino, mode, uid, gid, nlink, mtime, filesize) = (
            field(0),
            field(1),
            field(2),
            field(3),
            field(4),
            field(5),
            field(6),
        );
        let rdev = (field(9), field(10));
        let namesize = field(11) as usize;
        let name_end = 110 + namesize;
        assert_eq!(bytes[name_end - 1], 0, "name not NUL-terminated");
        let name = std::str::from_utf8(&bytes[110..name_end - 1])
            .unwrap()
            .to_owned();
        let data_start = name_end.next_multiple_of(4);
        let data_end = data_start + filesize as usize;
        let data = bytes[data_start..data_end].to_vec();
        assert!(
            bytes[name_end..data_start].iter().all(|&b| b == 0),
            "name padding not zero"
        );
        let next = data_end.next_multiple_of(4);
        bytes = &bytes[next.min(bytes.len())..];
        if name == "TRAILER!!!" {
            assert!(bytes.is_empty(), "data after the trailer");
            return entries;
        }
        entries.push(Entry {
            name,
            ino,
            mode,
            uid,
            gid,
            nlink,
            mtime,
            rdev,
            data,
        });
    }
}

fn sample(dir: &std::path::Path) -> Builder {
    let host = dir.join("init");
    std::fs::write(&host, b"#!/bin/sh\necho hi\n").unwrap();
    let big = dir.join("big");
    // Larger than the copy buffer and not a multiple of 4.
    let big_data: Vec<u8> = (0..200_003u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&big, &big_data).unwrap();

    let mut b = Builder::new();
    b.file("init", &host, 0o755)
        .unwrap()
        .file("lib/modules/6.1.0/kernel/fs/isofs/isofs.ko", &big, 0o644)
        .unwrap()
        .char_device("dev/console", 5, 1, 0o600)
        .unwrap()
        .dir("proc", 0o555)
        .unwrap()
        .dir("sys", 0o555)
        .unwrap()
        .dir("media", 0o755)
        .unwrap()
        .file_bytes("etc/imager/modules", "kernel/fs/isofs/isofs.ko\n", 0o644)
        .unwrap()
        .symlink("bin", "usr/bin")
        .unwrap()
        .dir("dev", 0o755)
        .unwrap();
    b
}

#[test]
fn round_trip_uncompressed() {
    let dir = tempfile::tempdir().unwrap();
    let mut b = sample(dir.path());
    b.set_mtime(1_700_000_000);
    let out = b.write(Vec::new(), Compression::None).unwrap();
    let entries = read_newc(&out);

    let names: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "bin",
            "dev",
            "dev/console",
            "etc",
            "etc/imager",
            "etc/imager/modules",
            "init",
            "lib",
            "lib/modules",
            "lib/modules/6.1.0",
            "lib/modules/6.1.0/kernel",
            "lib/modules/6.1.0/kernel/fs",
            "lib/modules/6.1.0/kernel/fs/isofs",
            "lib/modules/6.1.0/kernel/fs/isofs/isofs.ko",
            "media",
            "proc",
            "sys",
        ]
    );
    // Parents precede children.
    for (i, e) in entries.iter().enumerate() {
        if let Some((parent, _)) = e.name.rsplit_once('/') {
            let p = names.iter().position(|n| *n == parent).unwrap();
            assert!(p < i, "{parent} after {}", e.name);
            assert_eq!(entries[p].mode & 0o170000, 0o040000, "{parent} not a dir");
        }
    }
    // Inodes are sequential, owners root, one mtime.
    for (i, e) in entries.iter().enumerate() {
        assert_eq!(e.ino, i as u32 + 1);
        assert_eq!((e.uid, e.gid), (0, 0));
        assert_eq!(e.mtime, 1_700_000_000);
    }
    let get = |n: &str| entries.iter().find(|e| e.name == n).unwrap();
    assert_eq!(get("init").mode, 0o100755);
    assert_eq!(get("init").data, b"#!/bin/sh\necho hi\n");
    assert_eq!(get("dev/console").mode, 0o020600);
    assert_eq!(get("dev/console").rdev, (5, 1));
    assert_eq!(get("bin").mode, 0o120777);
    assert_eq!(get("bin").data, b"usr/bin");
    assert_eq!(get("proc").mode, 0o040555);
    assert_eq!(get("etc").mode, 0o040755);
    assert_eq!(
        get("etc/imager/modules").data,
        b"kernel/fs/isofs/isofs.ko\n"
    );
    let big = &get("lib/modules/6.1.0/kernel/fs/isofs/isofs.ko").data;
    assert_eq!(big.len(), 200_003);
    assert!(big.iter().enumerate().all(|(i, &b)| b == (i % 251) as u8));
    // nlink: 2 + subdirectories.
    assert_eq!(get("lib").nlink, 3);
    assert_eq!(get("lib/modules/6.1.0/kernel/fs/isofs").nlink, 2);
    assert_eq!(get("etc").nlink, 3);
    assert_eq!(get("init").nlink, 1);
}

#[test]
fn writes_are_deterministic() {
    let dir = tempfile::tempdir().unwrap();
    for compression in [
        Compression::None,
        Compression::XZ,
        Compression::Zstd { level: 3 },
    ] {
        let a = sample(dir.path()).write(Vec::new(), compression).unwrap();
        let b = sample(dir.path()).write(Vec::new(), compression).unwrap();
        assert_eq!(a, b, "{compression:?}");
    }
}

#[test]
fn xz_is_one_stream_with_crc32() {
    let dir = tempfile::tempdir().unwrap();
    let xz = sample(dir.path())
        .write(Vec::new(), Compression::XZ)
        .unwrap();
    let plain = sample(dir.path())
        .write(Vec::new(), Compression::None)
        .unwrap();

    // The stream flags in the header and footer name the check: 0x01 is CRC32.
    assert_eq!(&xz[..6], b"\xfd7zXZ\0");
    assert_eq!(xz[7], 0x01);
    assert_eq!(&xz[xz.len() - 2..], b"YZ");

    let mut decoded = Vec::new();
    liblzma::read::XzDecoder::new(&xz[..])
        .read_to_end(&mut decoded)
        .unwrap();
    assert_eq!(decoded, plain);

    let file = dir.path().join("a.cpio.xz");
    std::fs::write(&file, &xz).unwrap();
    let Some(list) = tool("xz", &["--robot", "--list", file.to_str().unwrap()], None) else {
        return;
    };
    let line = |kind: &str| {
        list.lines()
            .find(|l| l.starts_with(kind))
            .unwrap_or_else(|| panic!("no {kind} line in {list}"))
            .split('\t')
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    // `file` line: name, streams, blocks, ...; checks name in column 7.
    let f = line("file");
    assert_eq!(f[1], "1", "streams: {list}");
    assert_eq!(f[2], "1", "blocks (one per flush would be many): {list}");
    assert_eq!(f[6], "CRC32", "{list}");
    tool("xz", &["-t", file.to_str().unwrap()], None).unwrap();
}

#[test]
fn zstd_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let zst = sample(dir.path())
        .write(Vec::new(), Compression::ZSTD)
        .unwrap();
    let plain = sample(dir.path())
        .write(Vec::new(), Compression::None)
        .unwrap();
    assert_eq!(zstd::decode_all(&zst[..]).unwrap(), plain);
}

#[test]
fn system_cpio_lists_the_archive() {
    let dir = tempfile::tempdir().unwrap();
    let plain = sample(dir.path())
        .write(Vec::new(), Compression::None)
        .unwrap();
    let Some(listing) = tool("cpio", &["-it", "--quiet"], Some(&plain)) else {
        return;
    };
    let names: Vec<&str> = listing.lines().collect();
    let ours: Vec<String> = read_newc(&plain).into_iter().map(|e| e.name).collect();
    assert_eq!(names, ours);

    let verbose = tool("cpio", &["-itv", "--quiet"], Some(&plain)).unwrap();
    let console = verbose
        .lines()
        .find(|l| l.ends_with("dev/console"))
        .unwrap();
    assert!(console.starts_with("crw-------"), "{console}");
    assert!(console.contains("5,"), "{console}");
}

#[test]
fn bad_paths_and_conflicts_are_refused() {
    let mut b = Builder::new();
    for bad in ["/init", "a/../b", "a//b", "", "./x", "a/"] {
        assert!(
            matches!(
                b.file_bytes(bad, "x", 0o644),
                Err(Error::InvalidPath { .. })
            ),
            "{bad:?}"
        );
    }
    assert!(
        b.is_empty(),
        "a refused entry must not leave parents behind"
    );

    b.file_bytes("etc/hostname", "node", 0o644).unwrap();
    assert!(matches!(
        b.file_bytes("etc/hostname", "again", 0o644),
        Err(Error::Duplicate { .. })
    ));
    assert!(matches!(
        b.file_bytes("etc/hostname/x", "x", 0o644),
        Err(Error::ParentNotDirectory { .. })
    ));
    assert!(matches!(
        b.char_device("etc", 1, 3, 0o666),
        Err(Error::Duplicate { .. })
    ));
    // Making an implicit parent explicit is fine, once.
    b.dir("etc", 0o700).unwrap();
    assert!(matches!(b.dir("etc", 0o700), Err(Error::Duplicate { .. })));
    assert!(matches!(
        b.symlink("link", ""),
        Err(Error::InvalidSymlinkTarget { .. })
    ));
    assert!(matches!(
        b.file("x", "/nonexistent/file", 0o644),
        Err(Error::Stat { .. })
    ));
    assert!(matches!(
        b.file("x", "/", 0o644),
        Err(Error::NotRegularFile { .. })
    ));
    assert_eq!(b.paths().collect::<Vec<_>>(), ["etc", "etc/hostname"]);
}

#[test]
fn a_file_that_changed_size_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let host = dir.path().join("f");
    std::fs::write(&host, b"12345678").unwrap();
    let mut b = Builder::new();
    b.file("f", &host, 0o644).unwrap();

    std::fs::write(&host, b"1234").unwrap();
    let err = b.write(Vec::new(), Compression::None).unwrap_err();
    assert!(
        matches!(
            err,
            Error::SizeChanged {
                planned: 8,
                now: Some(4),
                ..
            }
        ),
        "{err}"
    );

    std::fs::write(&host, b"123456789").unwrap();
    let err = b.write(Vec::new(), Compression::None).unwrap_err();
    assert!(
        matches!(
            err,
            Error::SizeChanged {
                planned: 8,
                now: Some(9),
                ..
            }
        ),
        "{err}"
    );
}

/// A writer that accepts at most 3 bytes per call: every write must be completed, never dropped.
#[derive(Debug)]
struct Trickle(Vec<u8>);

impl Write for Trickle {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = buf.len().min(3);
        self.0.extend_from_slice(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A writer that fails after a few bytes.
#[derive(Debug)]
struct Full(usize);

impl Write for Full {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.0 == 0 {
            return Ok(0);
        }
        let n = buf.len().min(self.0);
        self.0 -= n;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn short_writes_are_completed_or_reported() {
    let dir = tempfile::tempdir().unwrap();
    let plain = sample(dir.path())
        .write(Vec::new(), Compression::None)
        .unwrap();
    let trickled = sample(dir.path())
        .write(Trickle(Vec::new()), Compression::None)
        .unwrap();
    assert_eq!(trickled.0, plain);

    let err = sample(dir.path())
        .write(Full(1000), Compression::None)
        .unwrap_err();
    assert!(matches!(err, Error::Write(_)), "{err}");
}

/// Runs a system tool; `None` (with a note) if it is not installed.
fn tool(name: &str, args: &[&str], stdin: Option<&[u8]>) -> Option<String> {
    let mut child = match Command::new(name)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!("note: `{name}` not installed, skipping its check");
            return None;
        }
        Err(e) => panic!("spawn {name}: {e}"),
    };
    let input = stdin.map(<[u8]>::to_vec);
    let mut pipe = child.stdin.take().unwrap();
    let feeder = std::thread::spawn(move || {
        if let Some(input) = input {
            pipe.write_all(&input).unwrap();
        }
    });
    let out = child.wait_with_output().unwrap();
    feeder.join().unwrap();
    assert!(
        out.status.success(),
        "{name} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(String::from_utf8(out.stdout).unwrap())
}

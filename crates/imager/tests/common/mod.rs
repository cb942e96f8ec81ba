//! Shared by the CLI tests: running the real `imager` binary, stand-in assets, the demo cache and
//! the external tools used as oracles. Each test binary uses a different subset.
#![allow(dead_code)]

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use sha2::{Digest, Sha256};

/// The `imager` binary cargo built for these tests.
pub const IMAGER: &str = env!("CARGO_BIN_EXE_imager");

/// The repository root.
pub fn repo_root() -> PathBuf {
    imager_boot_test::repo_root()
}

/// `testdata/demo-cache`.
pub fn demo_cache() -> PathBuf {
    repo_root().join("testdata/demo-cache")
}

/// A scratch directory under cargo's per-target temporary directory (same disk as `target/`,
/// cleaned when dropped).
pub fn scratch() -> tempfile::TempDir {
    let base = Path::new(env!("CARGO_TARGET_TMPDIR"));
    std::fs::create_dir_all(base).expect("create CARGO_TARGET_TMPDIR");
    tempfile::Builder::new()
        .prefix("imager-test-")
        .tempdir_in(base)
        .expect("create a scratch directory")
}

/// Free space under `dir` in bytes, from `df` (POSIX output).
pub fn free_bytes(dir: &std::path::Path) -> u64 {
    let out = std::process::Command::new("df")
        .arg("-Pk")
        .arg(dir)
        .output()
        .expect("run df");
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .nth(1)
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|kb| kb.parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .unwrap_or_else(|| panic!("cannot read free space from df:\n{text}"))
}

/// Runs `imager` with `args`, with no `IMAGER_ASSETS` or `SOURCE_DATE_EPOCH` from the caller's
/// environment leaking in (each test says what it wants).
pub fn imager<I, S>(args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    imager_with_env(args, &[])
}

/// [`imager`] with extra environment variables.
pub fn imager_with_env<I, S>(args: I, env: &[(&str, &str)]) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut cmd = Command::new(IMAGER);
    cmd.args(args)
        .env_remove("IMAGER_ASSETS")
        .env_remove("SOURCE_DATE_EPOCH");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run the imager binary")
}

/// Panics with the command's output unless it succeeded.
pub fn assert_success(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Deterministic filler bytes (sha256 in counter mode), so stand-in files are not all zeros and
/// every run makes the same ones.
pub fn filler(seed: &str, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 32);
    let mut counter = 0u64;
    while out.len() < len {
        let mut h = Sha256::new();
        h.update(seed.as_bytes());
        h.update(counter.to_le_bytes());
        out.extend_from_slice(&h.finalize());
        counter += 1;
    }
    out.truncate(len);
    out
}

/// A complete assets directory of small stand-in files: enough for `imager iso` to lay out a
/// medium that the oracle tools can inspect, not to boot. The boot tests use the real assets.
pub fn fake_assets(dir: &Path) -> PathBuf {
    let assets = dir.join("assets");
    let files: [(&str, usize); 6] = [
        ("vmlinuz", 300 * 1024),
        ("initramfs.xz", 120 * 1024),
        // Real isolinux.bin is 38 KiB; what matters here is room for the boot-info table
        // (bytes 8..64) and a length that is a multiple of 4 like the real one.
        ("isolinux/isolinux.bin", 6 * 1024),
        // The hybrid MBR boot code: exactly the 432 bytes that fit before the boot address.
        ("isolinux/isohdpfx.bin", 432),
        ("isolinux/ldlinux.c32", 2 * 1024),
        ("efi/systemd-bootx64.efi", 20 * 1024),
    ];
    for (name, len) in files {
        let path = assets.join(name);
        std::fs::create_dir_all(path.parent().expect("asset path has a parent"))
            .expect("create the assets directory");
        let mut bytes = filler(name, len);
        match name {
            "vmlinuz" => stand_in_kernel_head(&mut bytes),
            // An xz stream header with a CRC32 check, what the kernel's decoder takes.
            "initramfs.xz" => bytes[..8].copy_from_slice(b"\xfd7zXZ\0\0\x01"),
            _ => {}
        }
        std::fs::write(&path, bytes).expect("write a stand-in asset");
    }
    assets
}

/// Makes `kernel` start like an x86-64 bzImage with an EFI stub: what `imager iso` checks before
/// it takes a kernel ("MZ" pointing at a PE header for machine 0x8664, boot flag 0xAA55 at 0x1FE,
/// "HdrS" at 0x202).
pub fn stand_in_kernel_head(kernel: &mut [u8]) {
    kernel[..2].copy_from_slice(b"MZ");
    kernel[0x3C..0x40].copy_from_slice(&0x40u32.to_le_bytes());
    kernel[0x40..0x44].copy_from_slice(b"PE\0\0");
    kernel[0x44..0x46].copy_from_slice(&0x8664u16.to_le_bytes());
    kernel[0x1FE..0x200].copy_from_slice(&[0x55, 0xAA]);
    kernel[0x202..0x206].copy_from_slice(b"HdrS");
}

/// The real assets directory (`$IMAGER_ASSETS`, else `<repo>/_assets`); panics, with what to do,
/// when it is incomplete, so that an ignored test run on purpose never passes by doing nothing.
pub fn real_assets() -> PathBuf {
    let dir = imager_boot_test::assets_dir();
    if let Err(e) = imager_boot_test::check_assets(&dir) {
        panic!("{e}");
    }
    dir
}

/// Panics with the Debian package to install when `tool` is not on PATH.
pub fn require_tool(tool: &str, package: &str) {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        found,
        "`{tool}` is needed as an independent oracle: install the Debian package {package}"
    );
}

/// Runs an external tool and returns stdout + stderr as text (xorriso reports on stderr, and
/// some reports go to both); panics if it cannot be started.
pub fn run_tool(program: &str, args: &[&OsStr]) -> (bool, String) {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// `sha256` of a file, streamed.
pub fn sha256_file(path: &Path) -> String {
    imager_boot_test::file_digest(path)
        .unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
        .sha256
}

/// The regular files directly or indirectly under `dir` (empty when `dir` does not exist).
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    if !dir.exists() {
        return Vec::new();
    }
    walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| !e.file_type().is_dir())
        .map(|e| e.path().to_path_buf())
        .collect()
}

/// An empty directory `name` under Cargo's per-test scratch space, for outputs built once per
/// test binary (in a `static`): a static is never dropped, so a `TempDir` there would leak one
/// per run; this place is emptied on the next run instead.
pub fn fresh_target_dir(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// `imager.test=<pid>-<nanos>`: a kernel argument unique to this build, so a boot proves its
/// command line came from the medium built in this very run.
pub fn token_arg() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("imager.test={}-{nanos}", std::process::id())
}

/// The booted node reported exactly the demo cache: every file with its size and sha256, and
/// the totals line. Prints the boot's time.
pub fn assert_reported_demo_cache(outcome: &imager_boot_test::BootOutcome) {
    use imager_boot_test::{ListingDiff, expected_listing, total_bytes};
    let report = &outcome.report;
    let expected = expected_listing(&demo_cache()).expect("list the demo cache");
    let seen = report.listing().unwrap_or_else(|e| panic!("{e}"));
    let diff = ListingDiff::new(&expected, &seen);
    assert!(
        diff.is_empty(),
        "the node's cache differs from testdata/demo-cache:\n{diff}"
    );
    let summary = report.summary.expect("no cache summary line");
    assert_eq!(summary.files, expected.len() as u64);
    assert_eq!(summary.bytes, total_bytes(&expected));
    eprintln!(
        "{}: booted, reported and powered off in {:.1} s",
        outcome.name,
        outcome.elapsed.as_secs_f64()
    );
}

/// One GPT partition as `sgdisk -i N` reports it.
#[derive(Debug, Clone)]
pub struct GptPartition {
    pub name: String,
    /// The type GUID, upper case.
    pub type_guid: String,
    /// The attribute flags, 16 hex digits.
    pub attributes: String,
    /// First and last 512-byte sector.
    pub first: u64,
    pub last: u64,
}

/// `sgdisk -i N` of `disk`, parsed.
pub fn sgdisk_partition(disk: &Path, n: u32) -> GptPartition {
    require_tool("sgdisk", "gdisk");
    let (ok, text) = run_tool(
        "sgdisk",
        &[
            OsStr::new("-i"),
            OsStr::new(&n.to_string()),
            disk.as_os_str(),
        ],
    );
    assert!(ok, "{text}");
    let field = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .unwrap_or_else(|| panic!("no {key} in {text}"))
            .trim()
            .to_owned()
    };
    let first_word = |key: &str| field(key).split_whitespace().next().unwrap().to_owned();
    GptPartition {
        name: field("Partition name:").trim_matches('\'').to_owned(),
        type_guid: first_word("Partition GUID code:"),
        attributes: field("Attribute flags:"),
        first: first_word("First sector:").parse().unwrap(),
        last: first_word("Last sector:").parse().unwrap(),
    }
}

/// A partition's sectors copied out to a file of its own (what fsck.fat needs).
pub fn extract_partition(disk: &Path, part: &GptPartition, to: &Path) {
    use std::os::unix::fs::FileExt;
    let src = std::fs::File::open(disk).unwrap();
    let out = std::fs::File::create(to).unwrap();
    let len = (part.last - part.first + 1) * 512;
    let mut buf = vec![0u8; 1 << 20];
    let mut at = 0;
    while at < len {
        let n = (len - at).min(buf.len() as u64) as usize;
        src.read_exact_at(&mut buf[..n], part.first * 512 + at)
            .unwrap();
        out.write_all_at(&buf[..n], at).unwrap();
        at += n as u64;
    }
}

/// Every regular file under `root` with its sha256, by relative path, sorted; files under the
/// top-level directories `skip` left out.
pub fn tree_digests(root: &Path, skip: &[&str]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = files_under(root)
        .into_iter()
        .map(|p| {
            let rel = p.strip_prefix(root).unwrap().to_str().unwrap().to_owned();
            (rel, sha256_file(&p))
        })
        .filter(|(rel, _)| !skip.iter().any(|s| rel.starts_with(&format!("{s}/"))))
        .collect();
    out.sort();
    out
}

/// `e2fsck -fn` finds the ext4 at `ext4` (a path, or `image?offset=N` for a partition) clean,
/// then `debugfs` copies its whole tree out into `dump` (emptied first).
pub fn e2fsck_and_rdump(ext4: &str, dump: &Path) {
    require_tool("e2fsck", "e2fsprogs");
    require_tool("debugfs", "e2fsprogs");
    let (ok, text) = run_tool("e2fsck", &[OsStr::new("-fn"), OsStr::new(ext4)]);
    assert!(ok, "e2fsck -fn {ext4}: {text}");
    let _ = std::fs::remove_dir_all(dump);
    std::fs::create_dir_all(dump).unwrap();
    let (ok, text) = run_tool(
        "debugfs",
        &[
            OsStr::new("-R"),
            OsStr::new(&format!("rdump / {}", dump.display())),
            OsStr::new(ext4),
        ],
    );
    assert!(ok, "debugfs rdump {ext4}: {text}");
}

/// The kernel command-line words a boot loader adds itself (`BOOT_IMAGE=` from ISOLINUX,
/// `initrd=` from both): dropped to compare what the medium asked for.
pub fn without_loader_words(cmdline: &str) -> Vec<String> {
    cmdline
        .split_whitespace()
        .filter(|w| !w.starts_with("BOOT_IMAGE=") && !w.starts_with("initrd="))
        .map(str::to_string)
        .collect()
}

/// Extracts one file from an ISO with xorriso (Rock Ridge names) into `dest`.
pub fn xorriso_extract(iso: &Path, iso_path: &str, dest: &Path) {
    let (ok, text) = run_tool(
        "xorriso",
        &[
            "-osirrox".as_ref(),
            "on".as_ref(),
            "-indev".as_ref(),
            iso.as_os_str(),
            "-extract".as_ref(),
            iso_path.as_ref(),
            dest.as_os_str(),
        ],
    );
    assert!(
        ok,
        "xorriso could not extract {iso_path} from {}:\n{text}",
        iso.display()
    );
}

/// The APPEND line of an ISOLINUX config, split into words.
pub fn isolinux_append(cfg: &str) -> Vec<String> {
    let lines: Vec<&str> = cfg
        .lines()
        .map(str::trim)
        .filter(|l| l.to_ascii_uppercase().starts_with("APPEND "))
        .collect();
    assert_eq!(lines.len(), 1, "expected one APPEND line in:\n{cfg}");
    lines[0]["APPEND ".len()..]
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

//! What the test node said on its console, per the protocol in `docs/architecture.md`:
//!
//! ```text
//! imager-node-init: start
//! imager-node-init: cmdline <the whole /proc/cmdline>
//! imager-node-init: volume <LABEL> on <device> (<iso9660|vfat|ext4>)
//! imager-node-init: file <path under imagecache/> <size in bytes> <sha256 hex>
//! imager-node-init: cache files=<N> bytes=<total>
//! imager-node-init: format <device> ext4 bytes=<N> in <S> s      (a blank IMAGECACHE partition)
//! imager-node-init: copy file <path> <size>                       (before copying each file)
//! imager-node-init: copy copied=<N> copied_bytes=<B> skipped=<M> skipped_bytes=<C> seconds=<S>
//! imager-node-init: net <interface> <address>/<prefix>             (with imager.serve)
//! imager-node-init: serving <address:port> roots=<root>,<root>     (with imager.serve)
//! imager-node-init: registryd <a line of the server's log>
//! imager-node-init: power button                                   (serving ends)
//! imager-node-init: done
//! imager-node-init: error <what failed and why>
//! ```

use std::collections::BTreeMap;

use crate::listing::{FileDigest, Listing};

/// The prefix of every line the node init writes.
pub const MARKER: &str = "imager-node-init: ";

/// The volume the node found and read the cache from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Volume {
    /// The filesystem label, e.g. `TALOS_V1_9_0`.
    pub label: String,
    /// The block device it was on, e.g. `/dev/sr0` or `/dev/sda`.
    pub device: String,
    /// `iso9660`, `vfat`, or `ext4` (the `IMAGECACHE` partition).
    pub fs_type: String,
}

/// One cache file as the node read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportedFile {
    /// The path under `imagecache/`, `/`-separated.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// Lower-case hex sha256 of the content.
    pub sha256: String,
}

/// The node's own totals line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheSummary {
    /// Number of files.
    pub files: u64,
    /// Sum of their sizes.
    pub bytes: u64,
}

/// The node's copy of the medium's cache into its disk volume.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CopySummary {
    /// Files copied, and their bytes.
    pub copied: u64,
    pub copied_bytes: u64,
    /// Files skipped (already there with their size), and their bytes.
    pub skipped: u64,
    pub skipped_bytes: u64,
}

/// Everything the node reported during one boot.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeReport {
    /// `imager-node-init: start` was seen.
    pub started: bool,
    /// The kernel command line as the node read it from `/proc/cmdline`.
    pub cmdline: Option<String>,
    /// Every `volume` line (the node should report exactly one).
    pub volumes: Vec<Volume>,
    /// Every `file` line, in console order.
    pub files: Vec<ReportedFile>,
    /// The `cache files=N bytes=M` line.
    pub summary: Option<CacheSummary>,
    /// The device a `format` line named (a blank `IMAGECACHE` partition was formatted).
    pub formatted: Option<String>,
    /// Every `copy file` line: the files the node started to copy, in order.
    pub copying: Vec<(String, u64)>,
    /// The `copy copied=...` line.
    pub copy: Option<CopySummary>,
    /// The address of the `serving` line.
    pub serving: Option<String>,
    /// Lines of registryd's log.
    pub registryd: Vec<String>,
    /// The `power button` line was seen.
    pub power_button: bool,
    /// `imager-node-init: done` was seen.
    pub done: bool,
    /// The text of every `error` line.
    pub errors: Vec<String>,
    /// Lines that carry the marker but do not follow the protocol, whole, for diagnosis (e.g. a
    /// node line that a kernel message cut in two).
    pub unrecognized: Vec<String>,
}

impl NodeReport {
    /// Reads the node's lines out of a whole console capture.
    ///
    /// The console also carries firmware output and kernel messages, possibly on the same line as
    /// a node line (a kernel message can land in front of it), so the marker is looked for
    /// anywhere in a line, and `\r` is ignored.
    pub fn parse(console: &str) -> Self {
        let mut report = Self::default();
        for line in console.lines() {
            let line = line.trim_end_matches('\r');
            let Some(at) = line.find(MARKER) else {
                continue;
            };
            let body = line[at + MARKER.len()..].trim_end();
            if !report.parse_body(body) {
                report.unrecognized.push(line.to_string());
            }
        }
        report
    }

    /// Parses the text after the marker; false when it is not a protocol line.
    fn parse_body(&mut self, body: &str) -> bool {
        let (word, rest) = body.split_once(' ').unwrap_or((body, ""));
        match word {
            "start" if rest.is_empty() => self.started = true,
            "done" if rest.is_empty() => self.done = true,
            // An empty /proc/cmdline is possible in principle; keep it as "".
            "cmdline" => self.cmdline = Some(rest.to_string()),
            "error" => self.errors.push(rest.to_string()),
            "volume" => match parse_volume(rest) {
                Some(v) => self.volumes.push(v),
                None => return false,
            },
            "file" => match parse_file(rest) {
                Some(f) => self.files.push(f),
                None => return false,
            },
            "cache" => match parse_summary(rest) {
                Some(s) => self.summary = Some(s),
                None => return false,
            },
            "format" => match rest.split_once(' ') {
                Some((device, _)) => self.formatted = Some(device.to_string()),
                None => return false,
            },
            "copy" => match rest.strip_prefix("file ") {
                Some(file) => match file.rsplit_once(' ').map(|(p, n)| (p, n.parse::<u64>())) {
                    Some((path, Ok(size))) if !path.is_empty() => {
                        self.copying.push((path.to_string(), size));
                    }
                    _ => return false,
                },
                None => match parse_copy(rest) {
                    Some(c) => self.copy = Some(c),
                    None => return false,
                },
            },
            "net" => {}
            "serving" => match rest.split_whitespace().next() {
                Some(addr) => self.serving = Some(addr.to_string()),
                None => return false,
            },
            "registryd" => self.registryd.push(rest.to_string()),
            "power" if rest == "button" => self.power_button = true,
            _ => return false,
        }
        true
    }

    /// The kernel command line split into its words.
    pub fn cmdline_args(&self) -> Vec<&str> {
        self.cmdline
            .as_deref()
            .map(|c| c.split_whitespace().collect())
            .unwrap_or_default()
    }

    /// The reported files as a listing keyed by path.
    ///
    /// Errors with the path when the node reported the same file twice: a listing cannot represent
    /// that, and it means the node (or the medium's directory tree) is wrong.
    pub fn listing(&self) -> Result<Listing, DuplicateFile> {
        let mut listing = BTreeMap::new();
        for f in &self.files {
            let digest = FileDigest {
                size: f.size,
                sha256: f.sha256.clone(),
            };
            if listing.insert(f.path.clone(), digest).is_some() {
                return Err(DuplicateFile(f.path.clone()));
            }
        }
        Ok(listing)
    }
}

/// The node reported the same cache file twice.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the node reported the cache file {0} more than once")]
pub struct DuplicateFile(pub String);

/// `copied=N copied_bytes=B skipped=M skipped_bytes=C seconds=S`
fn parse_copy(rest: &str) -> Option<CopySummary> {
    let mut fields = BTreeMap::new();
    for kv in rest.split_whitespace() {
        let (k, v) = kv.split_once('=')?;
        fields.insert(k, v);
    }
    let num = |k: &str| fields.get(k)?.parse::<u64>().ok();
    Some(CopySummary {
        copied: num("copied")?,
        copied_bytes: num("copied_bytes")?,
        skipped: num("skipped")?,
        skipped_bytes: num("skipped_bytes")?,
    })
}

/// `<LABEL> on <device> (<fs type>)`
fn parse_volume(rest: &str) -> Option<Volume> {
    let (head, fs) = rest.strip_suffix(')')?.rsplit_once(" (")?;
    let (label, device) = head.split_once(" on ")?;
    if label.is_empty() || device.is_empty() || fs.is_empty() {
        return None;
    }
    Some(Volume {
        label: label.to_string(),
        device: device.to_string(),
        fs_type: fs.to_string(),
    })
}

/// `<path> <size> <sha256>`, split from the right so that a path with spaces survives.
fn parse_file(rest: &str) -> Option<ReportedFile> {
    let mut parts = rest.rsplitn(3, ' ');
    let sha256 = parts.next()?;
    let size = parts.next()?.parse().ok()?;
    let path = parts.next()?;
    let is_sha256 = sha256.len() == 64
        && sha256
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    if path.is_empty() || !is_sha256 {
        return None;
    }
    Some(ReportedFile {
        path: path.to_string(),
        size,
        sha256: sha256.to_string(),
    })
}

/// `files=<N> bytes=<total>`
fn parse_summary(rest: &str) -> Option<CacheSummary> {
    let (files, bytes) = rest.split_once(' ')?;
    Some(CacheSummary {
        files: files.strip_prefix("files=")?.parse().ok()?,
        bytes: bytes.strip_prefix("bytes=")?.parse().ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA_A: &str = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
    const SHA_EMPTY: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    /// A console as QEMU delivers it: firmware noise, `\r\n`, kernel messages in between.
    const CONSOLE: &str = "\
SeaBIOS (version 1.16.2-debian-1.16.2-1)\r
Booting from DVD/CD...\r
[    0.000000] Linux version 6.1.0-56-amd64\r
[    3.037804] Run /init as init process\r
imager-node-init: start\r
imager-node-init: cmdline BOOT_IMAGE=/boot/vmlinuz console=ttyS0,115200 imager.test=abc panic=-1\r
[    3.512000] sr 1:0:0:0: [sr0] scsi3-mmc drive: 4x/4x cd/rw xa/form2 tray\r
imager-node-init: volume TALOS_V1_9_0 on /dev/sr0 (iso9660)\r
imager-node-init: file blob/sha256-ba78 3 ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad\r
[    3.600000] random: crng init done\r
imager-node-init: file manifests/a b/empty 0 e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\r
imager-node-init: cache files=2 bytes=3\r
imager-node-init: done\r
[    3.700000] reboot: Power down\r
";

    #[test]
    fn parses_a_whole_boot() {
        let report = NodeReport::parse(CONSOLE);
        assert!(report.started);
        assert!(report.done);
        assert_eq!(
            report.cmdline.as_deref(),
            Some("BOOT_IMAGE=/boot/vmlinuz console=ttyS0,115200 imager.test=abc panic=-1")
        );
        assert!(report.cmdline_args().contains(&"imager.test=abc"));
        assert_eq!(
            report.volumes,
            vec![Volume {
                label: "TALOS_V1_9_0".into(),
                device: "/dev/sr0".into(),
                fs_type: "iso9660".into(),
            }]
        );
        assert_eq!(
            report.files,
            vec![
                ReportedFile {
                    path: "blob/sha256-ba78".into(),
                    size: 3,
                    sha256: SHA_A.into(),
                },
                ReportedFile {
                    path: "manifests/a b/empty".into(),
                    size: 0,
                    sha256: SHA_EMPTY.into(),
                },
            ]
        );
        assert_eq!(report.summary, Some(CacheSummary { files: 2, bytes: 3 }));
        assert!(report.errors.is_empty());
        assert!(report.unrecognized.is_empty(), "{:?}", report.unrecognized);
        let listing = report.listing().unwrap();
        assert_eq!(listing["blob/sha256-ba78"].size, 3);
        assert_eq!(listing["manifests/a b/empty"].sha256, SHA_EMPTY);
    }

    #[test]
    fn errors_are_collected_and_nothing_is_invented() {
        let report = NodeReport::parse(
            "imager-node-init: start\nimager-node-init: error no volume labelled TALOS_* found after 30 s\n",
        );
        assert!(report.started);
        assert!(!report.done);
        assert_eq!(
            report.errors,
            vec!["no volume labelled TALOS_* found after 30 s".to_string()]
        );
        assert_eq!(report.cmdline, None);
        assert!(report.volumes.is_empty());
        assert_eq!(report.summary, None);
    }

    #[test]
    fn parses_a_serving_boot() {
        let report = NodeReport::parse(
            "imager-node-init: start\n\
             imager-node-init: volume TALOS_V1_9_0 on /dev/sr0 (iso9660)\n\
             imager-node-init: format /dev/vda1 ext4 bytes=268435456 in 0.4 s\n\
             imager-node-init: volume IMAGECACHE on /dev/vda1 (ext4)\n\
             imager-node-init: copy file blob/sha256-aa bb 1048576\n\
             imager-node-init: copy copied=1 copied_bytes=1048576 skipped=2 skipped_bytes=10 seconds=0.3\n\
             imager-node-init: net eth0 10.0.2.15/24\n\
             imager-node-init: serving 0.0.0.0:3172 roots=/system/imagecache/disk,/system/imagecache/iso/imagecache\n\
             imager-node-init: registryd accepting: too many open files\n\
             imager-node-init: power button\n\
             imager-node-init: done\n",
        );
        assert!(report.unrecognized.is_empty(), "{:?}", report.unrecognized);
        assert_eq!(report.volumes.len(), 2);
        assert_eq!(report.formatted.as_deref(), Some("/dev/vda1"));
        assert_eq!(
            report.copying,
            vec![("blob/sha256-aa bb".to_string(), 1 << 20)]
        );
        assert_eq!(
            report.copy,
            Some(CopySummary {
                copied: 1,
                copied_bytes: 1 << 20,
                skipped: 2,
                skipped_bytes: 10
            })
        );
        assert_eq!(report.serving.as_deref(), Some("0.0.0.0:3172"));
        assert_eq!(report.registryd, vec!["accepting: too many open files"]);
        assert!(report.power_button && report.done);
        // A copy line short of a field is not a protocol line.
        let bad = NodeReport::parse("imager-node-init: copy copied=1 skipped=2\n");
        assert_eq!((bad.copy, bad.unrecognized.len()), (None, 1));
    }

    #[test]
    fn a_marker_after_other_text_is_still_found() {
        // A kernel message printed without a newline before the node's own line.
        let report = NodeReport::parse("[    1.0] usb 1-1: new device imager-node-init: done\n");
        assert!(report.done);
    }

    #[test]
    fn malformed_lines_are_kept_as_unrecognized() {
        let console = format!(
            "imager-node-init: file blob/x 12[    3.1] kernel says hi\n\
             imager-node-init: file blob/x notanumber {SHA_A}\n\
             imager-node-init: file blob/x 3 NOTHEX\n\
             imager-node-init: volume TALOS_X /dev/sr0 iso9660\n\
             imager-node-init: cache files=1\n\
             imager-node-init: starting\n\
             imager-node-init: done now\n"
        );
        let report = NodeReport::parse(&console);
        assert!(report.files.is_empty());
        assert!(report.volumes.is_empty());
        assert_eq!(report.summary, None);
        assert!(!report.started);
        assert!(!report.done);
        assert_eq!(report.unrecognized.len(), 7);
    }

    #[test]
    fn a_file_reported_twice_is_an_error() {
        let console = format!(
            "imager-node-init: file blob/x 3 {SHA_A}\nimager-node-init: file blob/x 3 {SHA_A}\n"
        );
        let report = NodeReport::parse(&console);
        assert_eq!(report.listing(), Err(DuplicateFile("blob/x".into())));
    }

    #[test]
    fn an_empty_console_reports_nothing() {
        assert_eq!(NodeReport::parse(""), NodeReport::default());
    }
}

//! Recognizing a volume and its label from the first bytes of a block device, and choosing the one
//! that holds the cache. Pure: the caller reads the bytes and the partition name (see `scan`).

use std::fmt;

/// Bytes to read from the start of a device: up to the end of the ISO 9660 primary volume
/// descriptor (sector 16 of 2 KiB). The FAT boot sector is the first 512 of them, the ext4
/// superblock bytes 1024..2048.
pub const PROBE_LEN: usize = ISO_PVD_OFFSET + ISO_SECTOR;

const ISO_PVD_OFFSET: usize = 16 * ISO_SECTOR;
const ISO_SECTOR: usize = 2048;

/// The label prefix of a Talos image-cache volume.
pub const TALOS_PREFIX: &str = "TALOS_";

/// The GPT partition name of the disk volume holding the cache at its root (`imager metal`'s
/// last partition, and where a Talos node keeps its copy).
pub const IMAGECACHE_PARTITION: &str = "IMAGECACHE";

/// The ext4 superblock: 1024 bytes into the volume; magic 0xEF53 at byte 56 of it, the volume
/// name (16 bytes, NUL-padded) at byte 120.
const EXT4_SUPERBLOCK: usize = 1024;
const EXT4_MAGIC: [u8; 2] = [0x53, 0xEF];

/// A filesystem the node can take the cache from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum FsType {
    // Declaration order is preference order: a hybrid ISO written to a stick also carries a FAT
    // ESP, and the ISO is the volume holding the cache.
    Iso9660,
    Vfat,
    Ext4,
}

impl FsType {
    /// The name `mount(2)` knows the filesystem by (and the protocol prints).
    pub fn as_str(self) -> &'static str {
        match self {
            FsType::Iso9660 => "iso9660",
            FsType::Vfat => "vfat",
            FsType::Ext4 => "ext4",
        }
    }
}

impl fmt::Display for FsType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A recognized filesystem and its label (trailing padding removed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Volume {
    pub fs: FsType,
    pub label: String,
}

impl Volume {
    pub fn is_talos(&self) -> bool {
        self.label.starts_with(TALOS_PREFIX)
    }
}

/// Identifies an ISO 9660, ext4 or FAT filesystem from the device's first bytes (`head`, up to
/// [`PROBE_LEN`]; shorter for tiny devices). ISO 9660 is tried first: a hybrid image starts with an
/// MBR whose 0x55AA could otherwise pass for a FAT boot sector.
pub fn identify(head: &[u8]) -> Option<Volume> {
    if let Some(label) = iso9660_label(head) {
        return Some(Volume {
            fs: FsType::Iso9660,
            label,
        });
    }
    if let Some(label) = ext4_label(head) {
        return Some(Volume {
            fs: FsType::Ext4,
            label,
        });
    }
    fat_label(head).map(|label| Volume {
        fs: FsType::Vfat,
        label,
    })
}

/// The volume identifier of an ISO 9660 primary volume descriptor: type 1, `CD001`, version 1,
/// identifier at bytes 40..72 padded with spaces.
fn iso9660_label(head: &[u8]) -> Option<String> {
    let pvd = head.get(ISO_PVD_OFFSET..ISO_PVD_OFFSET + ISO_SECTOR)?;
    if pvd[0] != 1 || &pvd[1..6] != b"CD001" || pvd[6] != 1 {
        return None;
    }
    Some(label_text(&pvd[40..72]))
}

/// The volume name of an ext2/3/4 superblock (the magic is shared; the kernel's ext4 driver
/// mounts all three).
fn ext4_label(head: &[u8]) -> Option<String> {
    let sb = head.get(EXT4_SUPERBLOCK..EXT4_SUPERBLOCK + 1024)?;
    if sb[56..58] != EXT4_MAGIC {
        return None;
    }
    Some(label_text(&sb[120..136]))
}

/// The label of a FAT12/16/32 boot sector.
///
/// The boot sector must end in 0x55AA and carry a plausible BPB (sector size a power of two in
/// 512..=4096, sectors per cluster a power of two), so an arbitrary MBR is not mistaken for FAT.
/// The label lives in the extended BPB, only present when its signature is 0x29 (0x28 marks the
/// short form without label and type fields, where those bytes are boot code, so libblkid ignores
/// them too). "NO NAME" is what formatters write for "no label".
fn fat_label(head: &[u8]) -> Option<String> {
    let bs = head.get(..512)?;
    if bs[510..512] != [0x55, 0xAA] {
        return None;
    }
    let bytes_per_sector = u16::from_le_bytes([bs[11], bs[12]]);
    let sectors_per_cluster = bs[13];
    if !matches!(bytes_per_sector, 512 | 1024 | 2048 | 4096)
        || !sectors_per_cluster.is_power_of_two()
    {
        return None;
    }
    let sectors_per_fat16 = u16::from_le_bytes([bs[22], bs[23]]);
    // FAT32 has 0 in the FAT12/16 field and its extended BPB 28 bytes further on.
    let (sig_at, label_at) = if sectors_per_fat16 == 0 {
        (66, 71)
    } else {
        (38, 43)
    };
    if bs[sig_at] != 0x29 {
        return None;
    }
    let label = label_text(&bs[label_at..label_at + 11]);
    (!label.is_empty() && label != "NO NAME").then_some(label)
}

/// Label bytes without their space (or NUL) padding. Both formats restrict labels to a subset
/// of ASCII, so anything else is shown, not trusted.
fn label_text(raw: &[u8]) -> String {
    let end = raw
        .iter()
        .rposition(|&b| b != b' ' && b != 0)
        .map_or(0, |i| i + 1);
    String::from_utf8_lossy(&raw[..end]).into_owned()
}

/// A device and what was found on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// The name under `/dev` (and `/sys/class/block`), e.g. `sr0`, `sda`, `sda1`.
    pub device: String,
    /// The GPT partition name the kernel read (`PARTNAME` in the device's uevent), if any.
    pub partname: Option<String>,
    pub volume: Volume,
}

/// Where on a volume the cache tree starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum CacheRoot {
    /// The `IMAGECACHE` partition: the tree is the filesystem's root.
    Partition,
    /// A `TALOS_` medium: the tree is under `imagecache/`.
    Medium,
}

impl Candidate {
    /// Whether this volume holds a cache, and where. A `TALOS_` label on iso9660 or vfat (the
    /// medium), or an ext4 partition named `IMAGECACHE` — Talos' two rules; a `TALOS_` ext4
    /// volume or an `IMAGECACHE` partition holding FAT is neither.
    pub fn cache_root(&self) -> Option<CacheRoot> {
        match self.volume.fs {
            FsType::Ext4 => (self.partname.as_deref() == Some(IMAGECACHE_PARTITION))
                .then_some(CacheRoot::Partition),
            FsType::Iso9660 | FsType::Vfat => self.volume.is_talos().then_some(CacheRoot::Medium),
        }
    }
}

/// The cache volume among `candidates`: the `IMAGECACHE` partition first (a Talos node serves the
/// disk copy before the medium), then `TALOS_` media with ISO 9660 before FAT, then by device
/// name, so the same set of devices always gives the same answer.
pub fn choose(candidates: &[Candidate]) -> Option<&Candidate> {
    candidates
        .iter()
        .filter_map(|c| c.cache_root().map(|root| (root, c)))
        .min_by(|(ra, a), (rb, b)| {
            (ra, a.volume.fs, &a.device, &a.volume.label).cmp(&(
                rb,
                b.volume.fs,
                &b.device,
                &b.volume.label,
            ))
        })
        .map(|(_, c)| c)
}

/// A GPT partition named [`IMAGECACHE_PARTITION`]: the node's disk volume for the cache, whatever
/// it holds (an empty partition is formatted, see `disk`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskPartition {
    /// The name under `/dev`, e.g. `vdb1`.
    pub device: String,
    /// What is on it: none for a blank (or unrecognized) partition.
    pub volume: Option<Volume>,
}

impl DiskPartition {
    /// Whether it holds ext4 (and so possibly a cache: `imager metal`'s, or an earlier copy).
    pub fn is_ext4(&self) -> bool {
        self.volume.as_ref().is_some_and(|v| v.fs == FsType::Ext4)
    }
}

/// The volumes a node uses: the medium's cache and the disk volume it copies it to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Volumes {
    /// The `TALOS_` medium ([`choose`]'s pick among media).
    pub medium: Option<Candidate>,
    /// The first `IMAGECACHE` partition by device name.
    pub disk: Option<DiskPartition>,
}

impl Volumes {
    /// Picks the medium and the disk volume out of one look at the devices: `candidates` are the
    /// recognized volumes, `imagecache` the devices whose GPT partition name is `IMAGECACHE`.
    pub fn select(candidates: &[Candidate], imagecache: &[String]) -> Self {
        let media: Vec<Candidate> = candidates
            .iter()
            .filter(|c| c.cache_root() == Some(CacheRoot::Medium))
            .cloned()
            .collect();
        let disk = imagecache.iter().min().map(|device| DiskPartition {
            device: device.clone(),
            volume: candidates
                .iter()
                .find(|c| &c.device == device)
                .map(|c| c.volume.clone()),
        });
        Self {
            medium: choose(&media).cloned(),
            disk,
        }
    }

    /// Whether a cache can be served: from the medium, or from an ext4 `IMAGECACHE` partition
    /// alone (a metal image). A blank partition alone has nothing to serve.
    pub fn usable(&self) -> bool {
        self.medium.is_some() || self.disk.as_ref().is_some_and(DiskPartition::is_ext4)
    }

    /// Whether to stop looking: both found, or something usable found and `settled` (the other
    /// had time to appear: USB sticks enumerate seconds after virtio disks).
    pub fn complete(&self, settled: bool) -> bool {
        (self.medium.is_some() && self.disk.is_some()) || (self.usable() && settled)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iso(label: &str) -> Vec<u8> {
        let mut head = vec![0u8; PROBE_LEN];
        let pvd = &mut head[ISO_PVD_OFFSET..];
        pvd[0] = 1;
        pvd[1..6].copy_from_slice(b"CD001");
        pvd[6] = 1;
        pvd[40..72].fill(b' ');
        pvd[40..40 + label.len()].copy_from_slice(label.as_bytes());
        head
    }

    fn fat(label: &[u8; 11], fat32: bool) -> Vec<u8> {
        let mut head = vec![0u8; 512];
        head[11..13].copy_from_slice(&512u16.to_le_bytes());
        head[13] = 4;
        let (sig, at) = if fat32 {
            (66, 71)
        } else {
            head[22..24].copy_from_slice(&200u16.to_le_bytes());
            (38, 43)
        };
        head[sig] = 0x29;
        head[at..at + 11].copy_from_slice(label);
        head[510] = 0x55;
        head[511] = 0xAA;
        head
    }

    #[test]
    fn iso9660_label_is_read() {
        let v = identify(&iso("TALOS_V1_9_0")).unwrap();
        assert_eq!(v.fs, FsType::Iso9660);
        assert_eq!(v.label, "TALOS_V1_9_0");
        assert!(v.is_talos());
    }

    #[test]
    fn iso9660_needs_the_whole_descriptor() {
        let head = iso("TALOS_X");
        assert_eq!(identify(&head[..PROBE_LEN - 1]), None);
        let mut bad = head.clone();
        bad[ISO_PVD_OFFSET + 1] = b'X';
        assert_eq!(identify(&bad), None);
        let mut supplementary = head;
        supplementary[ISO_PVD_OFFSET] = 2;
        assert_eq!(identify(&supplementary), None);
    }

    #[test]
    fn fat16_and_fat32_labels() {
        let v = identify(&fat(b"TALOS_TEST ", false)).unwrap();
        assert_eq!((v.fs, v.label.as_str()), (FsType::Vfat, "TALOS_TEST"));
        let v = identify(&fat(b"TALOS_V1_9_", true)).unwrap();
        assert_eq!((v.fs, v.label.as_str()), (FsType::Vfat, "TALOS_V1_9_"));
    }

    #[test]
    fn fat_without_label_or_signature() {
        assert_eq!(identify(&fat(b"NO NAME    ", false)), None);
        assert_eq!(identify(&fat(b"           ", true)), None);
        let mut short = fat(b"TALOS_TEST ", false);
        short[38] = 0x28;
        assert_eq!(identify(&short), None);
        let mut no_magic = fat(b"TALOS_TEST ", false);
        no_magic[511] = 0;
        assert_eq!(identify(&no_magic), None);
        let mut not_bpb = fat(b"TALOS_TEST ", false);
        not_bpb[11..13].copy_from_slice(&1000u16.to_le_bytes());
        assert_eq!(identify(&not_bpb), None);
    }

    #[test]
    fn iso_wins_over_a_fat_looking_mbr() {
        let mut head = iso("TALOS_V1_9_0");
        head[..512].copy_from_slice(&fat(b"OTHER      ", false));
        assert_eq!(identify(&head).unwrap().fs, FsType::Iso9660);
    }

    #[test]
    fn short_or_empty_devices() {
        assert_eq!(identify(&[]), None);
        assert_eq!(identify(&[0u8; 100]), None);
    }

    fn ext4(label: &str) -> Vec<u8> {
        let mut head = vec![0u8; PROBE_LEN];
        let sb = &mut head[EXT4_SUPERBLOCK..];
        sb[56..58].copy_from_slice(&EXT4_MAGIC);
        sb[120..120 + label.len()].copy_from_slice(label.as_bytes());
        head
    }

    #[test]
    fn ext4_label_is_read() {
        let v = identify(&ext4("IMAGECACHE")).unwrap();
        assert_eq!((v.fs, v.label.as_str()), (FsType::Ext4, "IMAGECACHE"));
        let mut bad = ext4("IMAGECACHE");
        bad[EXT4_SUPERBLOCK + 56] = 0;
        assert_eq!(identify(&bad), None);
        assert_eq!(
            identify(&ext4("IMAGECACHE")[..EXT4_SUPERBLOCK + 1023]),
            None
        );
    }

    #[test]
    fn imagecache_partition_needs_its_name_and_ext4() {
        let c = |partname: Option<&str>, fs, label: &str| Candidate {
            device: "vda5".into(),
            partname: partname.map(Into::into),
            volume: Volume {
                fs,
                label: label.into(),
            },
        };
        let root = |p, fs, l| c(p, fs, l).cache_root();
        assert_eq!(
            root(Some("IMAGECACHE"), FsType::Ext4, "IMAGECACHE"),
            Some(CacheRoot::Partition)
        );
        // The partition name decides, not the filesystem label.
        assert_eq!(
            root(Some("IMAGECACHE"), FsType::Ext4, "OTHER"),
            Some(CacheRoot::Partition)
        );
        assert_eq!(root(Some("BOOT"), FsType::Ext4, "IMAGECACHE"), None);
        assert_eq!(root(None, FsType::Ext4, "TALOS_V1_9_0"), None);
        assert_eq!(root(Some("IMAGECACHE"), FsType::Vfat, "IMAGECACHE"), None);
        assert_eq!(
            root(Some("EFI"), FsType::Vfat, "TALOS_V1_9_0"),
            Some(CacheRoot::Medium)
        );
    }

    #[test]
    fn choice_prefers_the_partition_then_iso_then_device_name() {
        let c = |device: &str, fs, label: &str| Candidate {
            device: device.into(),
            partname: None,
            volume: Volume {
                fs,
                label: label.into(),
            },
        };
        let all = [
            c("sda1", FsType::Vfat, "TALOS_A"),
            c("vda", FsType::Iso9660, "OTHER"),
            c("sr0", FsType::Iso9660, "TALOS_V1_9_0"),
            c("sda", FsType::Iso9660, "TALOS_V1_9_0"),
        ];
        assert_eq!(choose(&all).unwrap().device, "sda");
        assert_eq!(choose(&all[..2]).unwrap().device, "sda1");
        assert_eq!(choose(&all[1..2]), None);

        let mut disk = c("vdb5", FsType::Ext4, "IMAGECACHE");
        disk.partname = Some(IMAGECACHE_PARTITION.into());
        let with_disk = [all[3].clone(), disk.clone()];
        assert_eq!(choose(&with_disk).unwrap().device, "vdb5");
    }

    #[test]
    fn volumes_pair_the_medium_with_the_disk_partition() {
        let c = |device: &str, fs, label: &str, part: Option<&str>| Candidate {
            device: device.into(),
            partname: part.map(str::to_owned),
            volume: Volume {
                fs,
                label: label.into(),
            },
        };
        let iso = c("sr0", FsType::Iso9660, "TALOS_V1_9_0", None);
        let metal = c(
            "vda6",
            FsType::Ext4,
            "IMAGECACHE",
            Some(IMAGECACHE_PARTITION),
        );

        // A blank partition (nothing recognized on it) and the medium: both, complete at once.
        let v = Volumes::select(std::slice::from_ref(&iso), &["vdb1".into()]);
        assert_eq!(v.medium.as_ref().unwrap().device, "sr0");
        let disk = v.disk.clone().unwrap();
        assert_eq!((disk.device.as_str(), disk.is_ext4()), ("vdb1", false));
        assert!(v.complete(false));

        // A blank partition alone is not usable, however long it has settled.
        let v = Volumes::select(&[], &["vdb1".into()]);
        assert!(!v.usable() && !v.complete(true));

        // The medium alone, or a metal image's partition alone: usable once settled.
        let v = Volumes::select(std::slice::from_ref(&iso), &[]);
        assert!(v.usable() && !v.complete(false) && v.complete(true));
        let v = Volumes::select(std::slice::from_ref(&metal), &["vda6".into()]);
        assert!(v.medium.is_none() && v.disk.as_ref().unwrap().is_ext4());
        assert!(v.complete(true));

        // The first IMAGECACHE partition by name; an ext4 IMAGECACHE is never the medium.
        let v = Volumes::select(
            &[metal.clone(), iso.clone()],
            &["vdb1".into(), "vda6".into()],
        );
        assert_eq!(v.disk.unwrap().device, "vda6");
        assert_eq!(v.medium.unwrap().device, "sr0");
    }
}

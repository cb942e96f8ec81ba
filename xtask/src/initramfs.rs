//! Builds the test node's initramfs (node-init + kernel modules).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fs;
use std::io::{BufWriter, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail, ensure};
use imager_initramfs::modules::{self, ModuleDeps};
use imager_initramfs::{Builder, Compression};

/// The architecture a test node runs on: which Rust target node-init is built for, and which
/// drivers its initramfs carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeArch {
    /// `qemu-system-x86_64 -machine pc/q35`.
    Amd64,
    /// `qemu-system-aarch64 -M virt`.
    Arm64,
}

impl NodeArch {
    /// amd64 links statically against glibc (libc6-dev's libc.a, with gcc). arm64 is built for
    /// musl: Rust ships musl's C runtime and libc inside the target's rust-std, and rust-lld links
    /// it, so no aarch64 C toolchain is needed on the build machine (Debian's cross gcc would
    /// be the only other way).
    pub fn target(self) -> &'static str {
        match self {
            Self::Amd64 => "x86_64-unknown-linux-gnu",
            Self::Arm64 => "aarch64-unknown-linux-musl",
        }
    }

    fn modules(self) -> &'static [&'static str] {
        match self {
            Self::Amd64 => MODULES,
            Self::Arm64 => ARM64_MODULES,
        }
    }
}

/// The drivers the test node needs to find its volume on every attachment the boot tests use:
/// CD (IDE/AHCI + sr), disk (IDE/AHCI/virtio + sd), USB stick (xHCI/EHCI + usb-storage/uas), and
/// the filesystems (ISO 9660, FAT with the code pages it mounts with by default, ext4 for the
/// disk copy of the cache), the NIC and the power button. ext4 finds its crc32c through the crypto API at mount time,
/// not as a symbol dependency, and with no modprobe in the initramfs nothing would load it: without
/// it, filesystems with metadata checksums (mkfs.ext4's default) do not mount.
const MODULES: &[&str] = &[
    "isofs",
    "cdrom",
    "sr_mod",
    "ata_piix",
    "ahci",
    "sd_mod",
    "usb-storage",
    "uas",
    "xhci_pci",
    "ehci_pci",
    "virtio_pci",
    "virtio_blk",
    "virtio_scsi",
    "vfat",
    "nls_cp437",
    "nls_iso8859_1",
    "nls_ascii",
    "ext4",
    "crc32c_generic",
    // Serving (`imager.serve`): the NIC, and the ACPI power button (QEMU's `system_powerdown`)
    // read through evdev, which is how the node knows to stop.
    "virtio_net",
    "button",
    "evdev",
];

/// The same for an arm64 `virt` machine: no IDE/AHCI (the boot tests attach a CD through
/// virtio-scsi, disks through virtio-blk or usb-storage on xHCI), and virtio over MMIO as well as
/// PCI. The PCI host bridge (`pci-host-generic`), the PL011 serial port and the EFI framebuffer
/// are built into Debian's arm64 kernel; what of this list is built in too is skipped by
/// `select_modules` (it checks `modules.builtin`).
const ARM64_MODULES: &[&str] = &[
    "isofs",
    "cdrom",
    "sr_mod",
    "sd_mod",
    "usb-storage",
    "uas",
    "xhci_pci",
    "xhci_plat_hcd",
    "virtio_mmio",
    "virtio_pci",
    "virtio_blk",
    "virtio_scsi",
    "vfat",
    "nls_cp437",
    "nls_iso8859_1",
    "nls_ascii",
    "ext4",
    "crc32c_generic",
    // Serving (`imager.serve`): the NIC, and the power button — ACPI's (built into Debian's arm64
    // kernel) or `gpio-keys` when the kernel runs on the device tree — read through evdev.
    "virtio_net",
    "button",
    "gpio_keys",
    "evdev",
];

/// Builds `node-init` as a static executable for `arch` and returns its path.
///
/// `+crt-static` comes in through RUSTFLAGS, which with an explicit `--target` applies to the
/// target only, not to build scripts and proc macros (those must stay dynamic). The separate
/// target directory keeps these flags from invalidating the normal build's artifacts. The whole
/// package is built, whatever it depends on: that works as long as node-init stays pure Rust (a
/// C dependency would need a C cross compiler for arm64).
pub fn build_node_init(workspace_root: &Path, arch: NodeArch) -> Result<PathBuf> {
    let target = arch.target();
    let target_dir = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => workspace_root.join(dir),
        _ => workspace_root.join("target"),
    }
    .join("node-init");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(&cargo)
        .current_dir(workspace_root)
        .args([
            "build",
            "--package",
            "imager-node-init",
            "--profile",
            "node-init",
        ])
        .args(["--target", target, "--target-dir"])
        .arg(&target_dir)
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        // Rust's own lld (it comes with the toolchain) links the musl target; the host's `cc`
        // is an x86-64 linker. Only this target's linker is set, so amd64 and the build scripts
        // keep theirs.
        .env("CARGO_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_LINKER", "rust-lld")
        // Cargo prefers this over RUSTFLAGS; an outer cargo may have left it set.
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .status()
        .with_context(|| format!("cannot run {}", cargo.to_string_lossy()))?;
    ensure!(
        status.success(),
        "building the static node-init for {target} failed ({status}); see cargo's output \
         above (for arm64, `rustup target add {target}`: scripts/setup.sh does)"
    );
    let exe = target_dir.join(target).join("node-init").join("node-init");
    ensure!(
        exe.is_file(),
        "cargo reported success but {} does not exist",
        exe.display()
    );
    Ok(exe)
}

/// Writes the test node's initramfs to `out`: `/init` (node-init), the device nodes and mount
/// points it needs, and the kernel modules of [`MODULES`] with their dependencies, listed in load
/// order in `/etc/imager/modules`.
///
/// `modules_root` is an unpacked `/lib/modules/<kver>`. Its `modules.dep` gives the dependencies;
/// a kernel package unpacked without running depmod has none, and then each module's own
/// `.modinfo` is read instead. Compression is xz with a CRC32 check (the only check the kernel
/// accepts), or zstd if `out` ends in `.zst`. The archive is deterministic (mtime 0, root-owned)
/// and written to a temporary file beside `out`, renamed into place only when complete.
pub fn build_test_initramfs(
    node_init: &Path,
    modules_root: &Path,
    arch: NodeArch,
    out: &Path,
) -> Result<()> {
    let kver = modules_root
        .file_name()
        .and_then(|n| n.to_str())
        .with_context(|| format!("{}: no kernel version in the path", modules_root.display()))?;
    let builtin = read_builtin(modules_root)?;
    let graph = load_graph(modules_root, arch.modules())?;
    let (wanted, skipped) = select_modules(arch.modules(), &graph, &builtin, kver)?;
    for name in &skipped {
        eprintln!("initramfs: {name} is built into {kver}, not packing it");
    }
    let order = graph.resolve(&wanted)?;

    let builder = plan(node_init, modules_root, kver, &order)?;
    let dir = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let tmp = tempfile::Builder::new()
        .prefix(".initramfs-")
        .tempfile_in(dir)
        .with_context(|| format!("cannot create a temporary file in {}", dir.display()))?;
    let writer = builder
        .write(BufWriter::new(tmp.as_file()), compression_for(out))
        .with_context(|| format!("cannot write {}", tmp.path().display()))?;
    drop(writer);
    // tempfile creates its files 0600; an asset is for everyone to read.
    tmp.as_file()
        .set_permissions(fs::Permissions::from_mode(0o644))
        .with_context(|| format!("cannot chmod {}", tmp.path().display()))?;
    tmp.as_file()
        .sync_all()
        .with_context(|| format!("cannot sync {}", tmp.path().display()))?;
    tmp.persist(out)
        .with_context(|| format!("cannot rename the new initramfs to {}", out.display()))?;
    eprintln!(
        "initramfs: {} ({} modules for {kver})",
        out.display(),
        order.len()
    );
    Ok(())
}

/// The archive's contents. `/dev/null` is there because Rust's runtime reopens any of fds 0-2
/// that is closed onto `/dev/null` before `main`, and aborts if it cannot: without the node, a
/// kernel that failed to open the console would kill init before it could say anything.
fn plan(node_init: &Path, modules_root: &Path, kver: &str, order: &[&str]) -> Result<Builder> {
    let mut b = Builder::new();
    b.file("init", node_init, 0o755)?
        .dir("dev", 0o755)?
        .char_device("dev/console", 5, 1, 0o600)?
        .char_device("dev/null", 1, 3, 0o666)?
        .dir("proc", 0o555)?
        .dir("sys", 0o555)?
        .dir("media", 0o755)?;
    let mut list = String::new();
    for rel in order {
        b.file(
            &format!("lib/modules/{kver}/{rel}"),
            modules_root.join(rel),
            0o644,
        )?;
        list.push_str(rel);
        list.push('\n');
    }
    b.file_bytes("etc/imager/modules", list, 0o644)?;
    Ok(b)
}

/// The wanted names the graph knows, and those it does not but the kernel has built in.
/// Anything else is an error: the node would silently miss a driver.
fn select_modules<'a>(
    wanted: &[&'a str],
    graph: &ModuleDeps,
    builtin: &BTreeSet<String>,
    kver: &str,
) -> Result<(Vec<&'a str>, Vec<&'a str>)> {
    let mut load = Vec::new();
    let mut skipped = Vec::new();
    for &name in wanted {
        if graph.contains(name) {
            load.push(name);
        } else if builtin.contains(&modules::normalize(name)) {
            skipped.push(name);
        } else {
            bail!("kernel {kver} has no module {name} and does not have it built in");
        }
    }
    Ok((load, skipped))
}

fn compression_for(out: &Path) -> Compression {
    match out.extension().and_then(|e| e.to_str()) {
        Some("zst") => Compression::ZSTD,
        _ => Compression::XZ,
    }
}

fn read_builtin(modules_root: &Path) -> Result<BTreeSet<String>> {
    let path = modules_root.join("modules.builtin");
    let text =
        fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(modules::builtin_names(&text))
}

/// The dependency graph from `modules.dep`, or from the modules themselves without it.
fn load_graph(modules_root: &Path, wanted: &[&str]) -> Result<ModuleDeps> {
    let dep = modules_root.join("modules.dep");
    match fs::read_to_string(&dep) {
        Ok(text) => {
            ModuleDeps::parse(&text).with_context(|| format!("cannot parse {}", dep.display()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            graph_from_modinfo(modules_root, wanted)
        }
        Err(e) => Err(e).with_context(|| format!("cannot read {}", dep.display())),
    }
}

/// Reads `depends=` from the `.modinfo` of the wanted modules and, transitively, of what they
/// depend on; only those few files are opened, not the thousands in the tree.
fn graph_from_modinfo(modules_root: &Path, wanted: &[&str]) -> Result<ModuleDeps> {
    // depmod searches `updates/` and the like before `kernel/`, but Debian's packages ship only
    // `kernel/`; walking it sorted gives a stable choice if a name were ever there twice.
    let kernel = modules_root.join("kernel");
    let mut by_name: BTreeMap<String, String> = BTreeMap::new();
    for entry in walkdir::WalkDir::new(&kernel).sort_by_file_name() {
        let entry = entry.with_context(|| format!("cannot list {}", kernel.display()))?;
        if !entry.file_type().is_file() {
            continue;
        }
        let rel = entry
            .path()
            .strip_prefix(modules_root)
            .ok()
            .and_then(Path::to_str)
            .with_context(|| format!("{}: not a UTF-8 path", entry.path().display()))?;
        if let Some(name) = modules::module_name(rel) {
            by_name.entry(name).or_insert_with(|| rel.to_owned());
        }
    }

    let mut queue: VecDeque<String> = wanted.iter().map(|n| modules::normalize(n)).collect();
    let mut seen = BTreeSet::new();
    let mut records = Vec::new();
    while let Some(name) = queue.pop_front() {
        // Names that are not in the tree are left to `select_modules` (built in) and
        // `ModuleDeps::from_depends` (a dependency that is missing) to judge.
        let Some(rel) = by_name.get(&name) else {
            continue;
        };
        if !seen.insert(name.clone()) {
            continue;
        }
        let elf = read_module(&modules_root.join(rel))?;
        let deps = modules::modinfo_depends(rel, &elf)?;
        queue.extend(deps.iter().cloned());
        records.push((rel.clone(), deps));
    }
    Ok(ModuleDeps::from_depends(records)?)
}

/// A module file's ELF image, decompressed if the kernel packages compress them.
fn read_module(path: &Path) -> Result<Vec<u8>> {
    let mut file =
        fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let name = path.to_string_lossy();
    let mut elf = Vec::new();
    let read = if name.ends_with(".ko.xz") {
        liblzma::read::XzDecoder::new(file).read_to_end(&mut elf)
    } else if name.ends_with(".ko.zst") {
        zstd::stream::read::Decoder::new(file).and_then(|mut d| d.read_to_end(&mut elf))
    } else if name.ends_with(".ko") {
        file.read_to_end(&mut elf)
    } else {
        bail!(
            "{}: cannot read this module compression without modules.dep (run depmod)",
            path.display()
        );
    };
    read.with_context(|| format!("cannot read {}", path.display()))?;
    Ok(elf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_modules_are_skipped_missing_ones_refused() {
        let graph = ModuleDeps::parse("kernel/fs/isofs/isofs.ko:\n").unwrap();
        let builtin = modules::builtin_names("kernel/drivers/usb/host/ehci-pci.ko\n");
        let (load, skipped) =
            select_modules(&["isofs", "ehci_pci"], &graph, &builtin, "6.1").unwrap();
        assert_eq!(load, ["isofs"]);
        assert_eq!(skipped, ["ehci_pci"]);
        let err = select_modules(&["isofs", "nope"], &graph, &builtin, "6.1").unwrap_err();
        assert!(err.to_string().contains("nope"), "{err}");
    }

    #[test]
    fn compression_follows_the_name() {
        assert_eq!(
            compression_for(Path::new("a/initramfs.xz")),
            Compression::XZ
        );
        assert_eq!(
            compression_for(Path::new("initramfs.zst")),
            Compression::ZSTD
        );
        assert_eq!(compression_for(Path::new("initramfs")), Compression::XZ);
    }
}

//! `cargo xtask assets [--out DIR]`: prepares the assets directory (layout: docs/architecture.md,
//! "The assets directory"; which package each file comes from, and why those boot loaders:
//! docs/assets.md).
//!
//! The files come from Debian packages fetched with `apt-get download` and unpacked with
//! `dpkg-deb -x`, never installed: the result must not depend on (or change) what the build machine
//! has installed, and `SOURCES` can then name exactly which package version each file came from.
//!
//! Work files live under `<target>/assets-cache/`, which this command owns:
//! - `debs/`: the downloaded packages, reused while apt resolves the same versions (reruns stay
//!   offline);
//! - `unpacked/<package>_<version>_<arch>/`: each package unpacked; the test initramfs is built
//!   from the kernel's `lib/modules/<kver>` there;
//! - `lock`: one `assets` run at a time per checkout (parallel `cargo xtask test` runs all come
//!   here).

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::fs::{self, File, TryLockError};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Instant, SystemTime};

use anyhow::{Context, Result, bail, ensure};

use crate::initramfs::{self, NodeArch};
use crate::util::{self, human_size};

const USAGE: &str = "\
usage: cargo xtask assets [--out DIR]

Downloads (without installing) the Debian kernel and boot loader packages, unpacks them, builds
the test initramfs and fills DIR (default: <workspace>/_assets) with the layout `imager` expects.
Prints DIR.
";

/// The metapackage that names the release's current kernel package.
const KERNEL_META: &str = "linux-image-amd64";

/// arm64 assets come from the same release's arm64 packages: apt must know the architecture
/// (`dpkg --add-architecture arm64` and `apt-get update`, which scripts/setup.sh does). apt then
/// downloads them like any other package, by name, version and architecture, without installing
/// anything (an arm64 package could not be installed here anyway).
const ARM64: &str = "arm64";
const ARM64_KERNEL_META: &str = "linux-image-arm64";
/// Beside amd64's files, under `arm64/`: the kernel, the test initramfs (node-init built for
/// aarch64 and the arm64 kernel's modules), and systemd-boot for AArch64 UEFI.
const ARM64_VMLINUZ: &str = "arm64/vmlinuz";
const ARM64_INITRAMFS: &str = "arm64/initramfs.xz";
const ARM64_LOADER_FILES: [(&str, &str, &str); 1] = [(
    "systemd-boot-efi",
    "usr/lib/systemd/boot/efi/systemd-bootaa64.efi",
    "arm64/efi/systemd-bootaa64.efi",
)];

/// Boot loader files: (package, path inside the package, path in the assets directory).
const LOADER_FILES: [(&str, &str, &str); 5] = [
    (
        "isolinux",
        "usr/lib/ISOLINUX/isolinux.bin",
        "isolinux/isolinux.bin",
    ),
    (
        "isolinux",
        "usr/lib/ISOLINUX/isohdpfx.bin",
        "isolinux/isohdpfx.bin",
    ),
    (
        "syslinux-common",
        "usr/lib/syslinux/modules/bios/ldlinux.c32",
        "isolinux/ldlinux.c32",
    ),
    (
        "systemd-boot-efi",
        "usr/lib/systemd/boot/efi/systemd-bootx64.efi",
        "efi/systemd-bootx64.efi",
    ),
    (
        GRUB_MODULES_PACKAGE,
        "usr/lib/grub/i386-pc/boot.img",
        "grub/boot.img",
    ),
];

/// GRUB for BIOS on the metal disk image: `boot.img` is copied (above); the core image is made
/// here, once, by `grub-mkimage` from `grub-common` (run from its unpacked package) out of the
/// i386-pc modules of `grub-pc-bin`. The two packages come from one `grub2` source build, and
/// grub-mkimage refuses modules of another version, so the plan checks that they match.
const GRUB_MODULES_PACKAGE: &str = "grub-pc-bin";
const GRUB_TOOLS_PACKAGE: &str = "grub-common";
const GRUB_MODULES_DIR: &str = "usr/lib/grub/i386-pc";
const GRUB_MKIMAGE: &str = "usr/bin/grub-mkimage";
const GRUB_CORE: &str = "grub/core.img";

/// What the core image holds. Nothing is loaded from disk later (the BOOT partition carries no
/// module files), so this is every module the metal image's grub.cfg may use: upstream Talos's
/// list (`bootloader/grub/install.go`) minus `xfs` (our BOOT is FAT, see docs/assets.md), plus
/// `serial` and `terminal` for a serial console. `biosdisk` reads disks through the BIOS,
/// `part_gpt` finds the prefix partition, `fat`/`ext2` read FAT and ext2/3/4.
const GRUB_MODULES: &[&str] = &[
    "biosdisk",
    "part_gpt",
    "part_msdos",
    "fat",
    "ext2",
    "normal",
    "configfile",
    "linux",
    "boot",
    "search",
    "search_fs_uuid",
    "search_fs_file",
    "search_label",
    "ls",
    "cat",
    "echo",
    "test",
    "help",
    "reboot",
    "halt",
    "all_video",
    "serial",
    "terminal",
];

/// GRUB's prefix: `grub/` on the BOOT partition of the disk the BIOS booted from. The empty
/// drive (`(,gpt3)`, not upstream's `(hd0,gpt3)`) makes GRUB fill in the drive it was loaded
/// from, so the image also boots when it is not the BIOS's first disk.
fn grub_prefix() -> String {
    format!("(,gpt{})/grub", imager_disk::metal::BOOT_PARTITION_NUMBER)
}

const VMLINUZ: &str = "vmlinuz";
const INITRAMFS: &str = "initramfs.xz";
const SOURCES: &str = "SOURCES";

pub fn run(args: &[String]) -> Result<()> {
    let Some(out) = parse_args(args)? else {
        print!("{USAGE}");
        return Ok(());
    };
    let dir = prepare(&out)?;
    // The path alone on stdout (the summary went to stderr), so scripts can take it.
    println!("{}", dir.display());
    Ok(())
}

/// The output directory, or `None` when help was asked for.
fn parse_args(args: &[String]) -> Result<Option<PathBuf>> {
    let mut out = None;
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let dir = match arg.as_str() {
            "-h" | "--help" => return Ok(None),
            "--out" => args.next().context("--out needs a directory")?.as_str(),
            other => match other.strip_prefix("--out=") {
                Some(dir) => dir,
                None => bail!("unknown argument {other:?} for `cargo xtask assets`\n{USAGE}"),
            },
        };
        ensure!(
            !dir.is_empty(),
            "--out needs a directory, got an empty string"
        );
        out = Some(PathBuf::from(dir));
    }
    let out = out.unwrap_or_else(default_dir);
    let out = std::path::absolute(&out)
        .with_context(|| format!("cannot resolve --out {}", out.display()))?;
    Ok(Some(out))
}

/// `<workspace>/_assets`.
pub fn default_dir() -> PathBuf {
    util::workspace_root().join("_assets")
}

/// Makes `out` a complete assets directory for the package versions apt resolves now, doing only
/// the work that is missing, and returns its path. A directory that is already complete for those
/// versions costs a few `apt-cache`/`cargo` calls: nothing is downloaded or unpacked again.
pub fn prepare(out: &Path) -> Result<PathBuf> {
    let started = Instant::now();
    let cache = Cache::open()?;
    let plan = Plan::resolve(&kernel_hints(out))?;
    let sources = plan.sources_text();

    if is_complete(out, &sources)? {
        let rebuilt = refresh_initramfs(out, &plan, &cache)?;
        eprintln!(
            "assets: up to date, kernels {} and {}{} ({:.1} s)",
            plan.kver,
            plan.arm64_kver,
            if rebuilt { ", initramfs rebuilt" } else { "" },
            started.elapsed().as_secs_f64()
        );
        return Ok(out.to_path_buf());
    }

    build(out, &plan, &cache, &sources)?;
    cache.prune(&plan);
    eprintln!(
        "assets: built, kernels {} from {} and {} from {} ({:.1} s)",
        plan.kver,
        plan.kernel.label(),
        plan.arm64_kver,
        plan.arm64_kernel.label(),
        started.elapsed().as_secs_f64()
    );
    Ok(out.to_path_buf())
}

/// A Debian package at the version apt resolves for it (its candidate).
#[derive(Debug, Clone)]
struct Deb {
    name: String,
    version: String,
    arch: String,
    /// The size of the .deb, from the package lists: a cached file of another size is not this one.
    size: u64,
}

impl Deb {
    fn from_stanza(stanza: &Stanza) -> Result<Deb> {
        let field = |key: &str| {
            stanza.get(key).map(str::to_owned).with_context(|| {
                format!(
                    "`apt-cache show` stanza for {} has no {key} field",
                    stanza.get("Package").unwrap_or("?")
                )
            })
        };
        let name = field("Package")?;
        let size = field("Size")?;
        let size = size
            .parse()
            .with_context(|| format!("package {name}: Size {size:?} is not a number"))?;
        Ok(Deb {
            version: field("Version")?,
            arch: field("Architecture")?,
            size,
            name,
        })
    }

    /// The name `apt-get download` gives the file (it writes the epoch's `:` as `%3a`); reused as
    /// the cache's name so that a .deb fetched by hand can be dropped in.
    fn file_name(&self) -> String {
        format!(
            "{}_{}_{}.deb",
            self.name,
            self.version.replace(':', "%3a"),
            self.arch
        )
    }

    fn label(&self) -> String {
        format!("{} {}", self.qualified_name(), self.version)
    }

    /// `name:arm64` for a foreign-architecture package (as apt spells it), the bare name
    /// otherwise: `systemd-boot-efi` exists for both.
    fn qualified_name(&self) -> String {
        if self.arch == ARM64 {
            format!("{}:{ARM64}", self.name)
        } else {
            self.name.clone()
        }
    }
}

/// One file of the assets directory copied out of a package.
#[derive(Debug)]
struct Extract {
    deb: Deb,
    /// The path inside the package.
    from: String,
    /// The path in the assets directory.
    to: String,
}

/// What the assets directory is made of, as apt resolves it now.
#[derive(Debug)]
struct Plan {
    /// The kernel release, e.g. `6.1.0-56-amd64` (`uname -r` of the test node).
    kver: String,
    kernel: Deb,
    /// The same for arm64 (`6.1.0-56-arm64`).
    arm64_kver: String,
    arm64_kernel: Deb,
    copies: Vec<Extract>,
    /// `grub-pc-bin`: `boot.img` (one of `copies`) and the modules of the core image.
    grub: Deb,
    /// `grub-common`: `grub-mkimage`.
    grub_tools: Deb,
}

impl Plan {
    /// `kernel_hints` are the kernel packages the existing assets came from. Asked for along with the
    /// rest, it saves a second `apt-cache` run whenever the kernel is unchanged: each run reloads
    /// the package lists, ~1 s where apt's binary cache is disabled (as in Debian's container
    /// images).
    fn resolve(kernel_hints: &[String]) -> Result<Plan> {
        let arm64 = |name: &str| format!("{name}:{ARM64}");
        let mut names: Vec<String> = vec![
            KERNEL_META.into(),
            GRUB_TOOLS_PACKAGE.into(),
            arm64(ARM64_KERNEL_META),
        ];
        names.extend(kernel_hints.iter().cloned());
        for (package, _, _) in LOADER_FILES {
            if !names.iter().any(|name| name == package) {
                names.push(package.into());
            }
        }
        for (package, _, _) in ARM64_LOADER_FILES {
            names.push(arm64(package));
        }
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let mut stanzas = apt_show(&names)?;
        let mut kernels = Vec::new();
        for (meta_name, suffix) in [(KERNEL_META, "-amd64"), (ARM64_KERNEL_META, "-arm64")] {
            let meta = stanzas
                .iter()
                .find(|stanza| stanza.get("Package") == Some(meta_name))
                .with_context(|| {
                    format!(
                        "`apt-cache show` printed nothing for {meta_name}{}",
                        if suffix == "-arm64" {
                            " (arm64): apt needs the architecture; run `dpkg --add-architecture \
                             arm64 && apt-get update` as root (scripts/setup.sh does)"
                        } else {
                            ""
                        }
                    )
                })?;
            let kernel_name = kernel_package(meta, meta_name, suffix)?;
            let kver = kernel_name
                .strip_prefix("linux-image-")
                .with_context(|| {
                    format!("kernel package {kernel_name} does not start with linux-image-")
                })?
                .to_owned();
            if !stanzas
                .iter()
                .any(|stanza| stanza.get("Package") == Some(kernel_name.as_str()))
            {
                let query = if suffix == "-arm64" {
                    arm64(&kernel_name)
                } else {
                    kernel_name.clone()
                };
                stanzas.extend(apt_show(&[&query])?);
            }
            kernels.push((kernel_name, kver));
        }

        let debs = stanzas
            .iter()
            .map(Deb::from_stanza)
            .collect::<Result<Vec<_>>>()?;
        // A name with `:arm64` is that package's arm64 build; a bare name the native (or `all`)
        // one: `systemd-boot-efi` is asked for in both.
        let find = |name: &str| {
            let (name, want_arm64) = match name.strip_suffix(":arm64") {
                Some(name) => (name, true),
                None => (name, false),
            };
            debs.iter()
                .find(|deb| deb.name == name && (deb.arch == ARM64) == want_arm64)
                .cloned()
                .with_context(|| format!("`apt-cache show` printed nothing for package {name}"))
        };

        // isolinux.bin refuses an ldlinux.c32 from another syslinux build ("Failed to load
        // ldlinux.c32"); both packages come from the `syslinux` source, so a mismatch means the
        // mirror is mid-update. Better said here than found at boot.
        let (isolinux, ldlinux) = (find("isolinux")?, find("syslinux-common")?);
        ensure!(
            isolinux.version == ldlinux.version,
            "apt resolves {} but {}: isolinux.bin and ldlinux.c32 must come from the same \
             syslinux build; run `apt-get update` (or let the mirror finish syncing) and retry",
            isolinux.label(),
            ldlinux.label()
        );

        let (grub, grub_tools) = (find(GRUB_MODULES_PACKAGE)?, find(GRUB_TOOLS_PACKAGE)?);
        ensure!(
            grub.version == grub_tools.version,
            "apt resolves {} but {}: grub-mkimage must come from the same GRUB build as the \
             modules it packs; run `apt-get update` (or let the mirror finish syncing) and retry",
            grub.label(),
            grub_tools.label()
        );

        let [(kernel_name, kver), (arm64_kernel_name, arm64_kver)] =
            <[(String, String); 2]>::try_from(kernels)
                .map_err(|_| anyhow::anyhow!("expected one amd64 and one arm64 kernel"))?;
        let kernel = find(&kernel_name)?;
        let arm64_kernel = find(&arm64(&arm64_kernel_name))?;
        let mut copies = vec![Extract {
            deb: kernel.clone(),
            from: format!("boot/vmlinuz-{kver}"),
            to: VMLINUZ.into(),
        }];
        for (package, from, to) in LOADER_FILES {
            copies.push(Extract {
                deb: find(package)?,
                from: from.into(),
                to: to.into(),
            });
        }
        copies.push(Extract {
            deb: arm64_kernel.clone(),
            from: format!("boot/vmlinuz-{arm64_kver}"),
            to: ARM64_VMLINUZ.into(),
        });
        for (package, from, to) in ARM64_LOADER_FILES {
            copies.push(Extract {
                deb: find(&arm64(package))?,
                from: from.into(),
                to: to.into(),
            });
        }
        Ok(Plan {
            kver,
            kernel,
            arm64_kver,
            arm64_kernel,
            copies,
            grub,
            grub_tools,
        })
    }

    /// Every package needed, once each.
    fn debs(&self) -> Vec<&Deb> {
        let mut seen = BTreeSet::new();
        self.copies
            .iter()
            .map(|copy| &copy.deb)
            .chain([&self.grub_tools])
            .filter(|deb| seen.insert(deb.file_name()))
            .collect()
    }

    /// The grub-mkimage arguments after the tool and its `-d DIR`; `out` is the core image.
    fn grub_mkimage_args(out: &Path) -> Vec<std::ffi::OsString> {
        let mut args: Vec<std::ffi::OsString> =
            vec!["-O".into(), "i386-pc".into(), "-o".into(), out.into()];
        args.extend(["-p".into(), grub_prefix().into()]);
        args.extend(GRUB_MODULES.iter().map(Into::into));
        args
    }

    /// The `SOURCES` file: comparing it with the one on disk tells whether the assets are current.
    fn sources_text(&self) -> String {
        let mut text = String::from(
            "# Made by `cargo xtask assets`: each file, the Debian package it came from, \
             that package's version.\n\
             # initramfs.xz holds kernel modules from the package named, \
             and node-init built from this checkout.\n",
        );
        // The recipe is part of the text, so changing it makes the assets out of date.
        let _ = writeln!(
            text,
            "# {GRUB_CORE}: grub-mkimage ({GRUB_TOOLS_PACKAGE}, same version) -O i386-pc -p {} {}",
            grub_prefix(),
            GRUB_MODULES.join(" ")
        );
        let initramfs = (INITRAMFS, &self.kernel);
        let arm64_initramfs = (ARM64_INITRAMFS, &self.arm64_kernel);
        let rows = self
            .copies
            .iter()
            .map(|copy| (copy.to.as_str(), &copy.deb))
            .chain([initramfs, (GRUB_CORE, &self.grub), arm64_initramfs]);
        for (file, deb) in rows {
            // Infallible: writing to a String.
            let _ = writeln!(
                text,
                "{file:<32} {:<34} {}",
                deb.qualified_name(),
                deb.version
            );
        }
        text
    }

    /// Each test initramfs: its architecture, kernel package, kernel release and file.
    fn initramfs_jobs(&self) -> [(NodeArch, &Deb, &str, &'static str); 2] {
        [
            (NodeArch::Amd64, &self.kernel, &self.kver, INITRAMFS),
            (
                NodeArch::Arm64,
                &self.arm64_kernel,
                &self.arm64_kver,
                ARM64_INITRAMFS,
            ),
        ]
    }
}

fn modules_root(kernel: &Deb, kver: &str, kernel_dir: &Path) -> Result<PathBuf> {
    let root = kernel_dir.join("lib/modules").join(kver);
    ensure!(
        root.is_dir(),
        "package {} has no lib/modules/{} ({})",
        kernel.label(),
        kver,
        root.display()
    );
    Ok(root)
}

/// The fields of one `apt-cache show` / `dpkg-deb -f` stanza (continuation lines dropped: no field
/// used here has any).
#[derive(Debug)]
struct Stanza(Vec<(String, String)>);

impl Stanza {
    fn parse_all(text: &str) -> Vec<Stanza> {
        text.split("\n\n")
            .map(|block| {
                Stanza(
                    block
                        .lines()
                        .filter(|line| !line.starts_with([' ', '\t']))
                        .filter_map(|line| line.split_once(':'))
                        .map(|(key, value)| (key.trim().to_owned(), value.trim().to_owned()))
                        .collect(),
                )
            })
            .filter(|stanza| !stanza.0.is_empty())
            .collect()
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// `apt-cache show` of the candidate version of each package: reads only the local package lists,
/// so it works offline.
fn apt_show(names: &[&str]) -> Result<Vec<Stanza>> {
    let mut cmd = Command::new("apt-cache");
    cmd.args(["show", "--no-all-versions"]).args(names);
    let text = util::output(&mut cmd).with_context(|| {
        format!(
            "apt cannot resolve {}: the package lists are probably missing; run `apt-get update` \
             as root (scripts/setup.sh does)",
            names.join(", ")
        )
    })?;
    Ok(Stanza::parse_all(&text))
}

/// The exact kernel package the metapackage depends on, e.g. `linux-image-6.1.0-56-amd64`.
fn kernel_package(meta: &Stanza, meta_name: &str, suffix: &str) -> Result<String> {
    let depends = meta
        .get("Depends")
        .with_context(|| format!("{meta_name} has no Depends field"))?;
    depends
        .split([',', '|'])
        .filter_map(|dep| dep.split_whitespace().next())
        // A dependency may be written `name:any`; the architecture is the metapackage's.
        .map(|name| name.split(':').next().unwrap_or(name))
        .find(|name| {
            name.starts_with("linux-image-") && name.ends_with(suffix) && *name != meta_name
        })
        .map(str::to_owned)
        .with_context(|| {
            format!("no linux-image-<version>{suffix} package in {meta_name}'s Depends: {depends}")
        })
}

/// The kernel packages named in `out/SOURCES` (apt's spelling, `name:arm64` for arm64's), those
/// that look like package names (apt would read some other strings as patterns).
fn kernel_hints(out: &Path) -> Vec<String> {
    let Ok(sources) = fs::read_to_string(out.join(SOURCES)) else {
        return Vec::new();
    };
    sources
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let file = fields.next()?;
            let name = fields.next()?;
            let (bare, arch) = match name.strip_suffix(":arm64") {
                Some(bare) => (bare, Some(ARM64)),
                None => (name, None),
            };
            let expected = if arch.is_some() {
                ARM64_VMLINUZ
            } else {
                VMLINUZ
            };
            let plain = bare
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
            (file == expected && plain && bare.starts_with("linux-image-")).then(|| name.to_owned())
        })
        .collect()
}

/// Whether `out` holds a complete assets directory made for exactly these package versions. Files
/// are written into a temporary directory that is renamed into place last, so a directory whose
/// `SOURCES` matches was completed; the files are still checked, in case someone deleted one by
/// hand.
fn is_complete(out: &Path, sources: &str) -> Result<bool> {
    let found = match fs::read_to_string(out.join(SOURCES)) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(err) => {
            return Err(err)
                .with_context(|| format!("cannot read {}", out.join(SOURCES).display()));
        }
    };
    if found != sources {
        return Ok(false);
    }
    let files = sources
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| line.split_whitespace().next());
    for file in files {
        let path = out.join(file);
        if !fs::metadata(&path).is_ok_and(|meta| meta.is_file() && meta.len() > 0) {
            eprintln!("assets: {} is missing, rebuilding", path.display());
            return Ok(false);
        }
    }
    Ok(true)
}

/// Rebuilds `out/initramfs.xz` when node-init or this xtask (which holds the initramfs recipe)
/// changed after it was made; returns whether it did.
fn refresh_initramfs(out: &Path, plan: &Plan, cache: &Cache) -> Result<bool> {
    // Temporary files of a build that was killed (no other run is writing: we hold the lock).
    remove_matching(out, &[".initramfs-"]);
    remove_matching(&out.join(ARM64), &[".initramfs-"]);
    let exe = std::env::current_exe().context("cannot find the running xtask executable")?;
    let mut rebuilt = false;
    for (arch, kernel, kver, file) in plan.initramfs_jobs() {
        let node_init = initramfs::build_node_init(&util::workspace_root(), arch)?;
        let target = out.join(file);
        let made = modified(&target)?;
        if modified(&node_init)? <= made && modified(&exe)? <= made {
            continue;
        }
        let modules_root = modules_root(kernel, kver, &cache.unpacked(kernel)?)?;
        // Replaces the file atomically (temporary file beside it, then rename).
        initramfs::build_test_initramfs(&node_init, &modules_root, arch, &target)
            .with_context(|| format!("cannot build the test initramfs {}", target.display()))?;
        rebuilt = true;
    }
    Ok(rebuilt)
}

fn modified(path: &Path) -> Result<SystemTime> {
    fs::metadata(path)
        .and_then(|meta| meta.modified())
        .with_context(|| format!("cannot stat {}", path.display()))
}

/// Builds the whole directory next to `out` and renames it into place, so that an interrupted run
/// never leaves a directory that looks complete.
fn build(out: &Path, plan: &Plan, cache: &Cache, sources: &str) -> Result<()> {
    let parent = out
        .parent()
        .with_context(|| format!("{} has no parent directory", out.display()))?;
    let name = out
        .file_name()
        .with_context(|| format!("{} has no file name", out.display()))?
        .to_string_lossy();
    check_replaceable(out)?;
    fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
    // Leftovers of interrupted runs (we hold the lock, so no other run is using them).
    remove_matching(
        parent,
        &[&format!(".{name}.tmp-"), &format!(".{name}.old-")],
    );

    cache.fetch(&plan.debs())?;
    let tmp = parent.join(format!(".{name}.tmp-{}", std::process::id()));
    for dir in [
        tmp.clone(),
        tmp.join("isolinux"),
        tmp.join("efi"),
        tmp.join("grub"),
        tmp.join(ARM64).join("efi"),
    ] {
        fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }

    for copy in &plan.copies {
        let from = cache.unpacked(&copy.deb)?.join(&copy.from);
        ensure!(
            from.is_file(),
            "package {} has no /{} (looked in {})",
            copy.deb.label(),
            copy.from,
            from.display()
        );
        let to = tmp.join(&copy.to);
        fs::copy(&from, &to)
            .with_context(|| format!("cannot copy {} to {}", from.display(), to.display()))?;
    }

    make_grub_core(plan, cache, &tmp.join(GRUB_CORE))?;

    for (arch, kernel, kver, file) in plan.initramfs_jobs() {
        let node_init = initramfs::build_node_init(&util::workspace_root(), arch)?;
        let modules_root = modules_root(kernel, kver, &cache.unpacked(kernel)?)?;
        let initramfs = tmp.join(file);
        initramfs::build_test_initramfs(&node_init, &modules_root, arch, &initramfs)
            .with_context(|| format!("cannot build the test initramfs {}", initramfs.display()))?;
    }

    // Written last: a directory with a SOURCES file is a complete one.
    let sources_path = tmp.join(SOURCES);
    fs::write(&sources_path, sources)
        .with_context(|| format!("cannot write {}", sources_path.display()))?;

    if out.exists() {
        // Moved aside rather than deleted first: if the second rename fails, the old one goes back.
        let old = parent.join(format!(".{name}.old-{}", std::process::id()));
        fs::rename(out, &old)
            .with_context(|| format!("cannot move the old {} aside", out.display()))?;
        if let Err(err) = fs::rename(&tmp, out) {
            let _ = fs::rename(&old, out);
            return Err(err)
                .with_context(|| format!("cannot rename {} to {}", tmp.display(), out.display()));
        }
        fs::remove_dir_all(&old)
            .with_context(|| format!("cannot remove the old assets {}", old.display()))?;
    } else {
        fs::rename(&tmp, out)
            .with_context(|| format!("cannot rename {} to {}", tmp.display(), out.display()))?;
    }
    Ok(())
}

/// Makes GRUB's i386-pc core image with `grub-mkimage` run from its unpacked package: the
/// result is the same bytes on every run for the same packages (no time or path goes in).
fn make_grub_core(plan: &Plan, cache: &Cache, out: &Path) -> Result<()> {
    let modules = cache.unpacked(&plan.grub)?.join(GRUB_MODULES_DIR);
    let mkimage = cache.unpacked(&plan.grub_tools)?.join(GRUB_MKIMAGE);
    ensure!(
        modules.join("moddep.lst").is_file() && mkimage.is_file(),
        "{} or {} lacks /{GRUB_MODULES_DIR} or /{GRUB_MKIMAGE}",
        plan.grub.label(),
        plan.grub_tools.label()
    );
    let mut cmd = Command::new(&mkimage);
    cmd.arg("-d")
        .arg(&modules)
        .args(Plan::grub_mkimage_args(out));
    util::run_quiet(&mut cmd).with_context(|| {
        format!(
            "cannot make GRUB's core image with {}; it runs from the unpacked package and needs \
             the shared libraries of {GRUB_TOOLS_PACKAGE} (libdevmapper1.02.1, liblzma5) \
             installed: scripts/setup.sh installs them",
            mkimage.display()
        )
    })
}

/// Refuses to replace an existing `out` that is not an assets directory: `--out ~` must not cost
/// anyone their home directory.
fn check_replaceable(out: &Path) -> Result<()> {
    let entries = match fs::read_dir(out) {
        Ok(entries) => entries,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(err) => {
            return Err(err)
                .with_context(|| format!("cannot read the directory --out {}", out.display()));
        }
    };
    let known = [
        VMLINUZ, INITRAMFS, SOURCES, "isolinux", "efi", "grub", ARM64,
    ];
    for entry in entries {
        let entry =
            entry.with_context(|| format!("cannot read the directory --out {}", out.display()))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if !known.contains(&name.as_ref()) && !name.starts_with('.') {
            bail!(
                "refusing to replace {}: it holds {name:?}, so it is not an assets directory; \
                 remove it or choose another --out",
                out.display()
            );
        }
    }
    Ok(())
}

/// Best-effort removal of the entries of `dir` whose names start with one of `prefixes`.
fn remove_matching(dir: &Path, prefixes: &[&str]) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if prefixes
            .iter()
            .any(|prefix| entry.file_name().to_string_lossy().starts_with(prefix))
        {
            remove_path(&entry.path());
        }
    }
}

/// Best-effort: a leftover that cannot be removed costs disk space, not correctness.
fn remove_path(path: &Path) {
    let result = if path.is_dir() {
        fs::remove_dir_all(path)
    } else {
        fs::remove_file(path)
    };
    if let Err(err) = result {
        eprintln!("assets: warning: cannot remove {}: {err}", path.display());
    }
}

/// `<target>/assets-cache/`, held locked while this run uses it.
#[derive(Debug)]
struct Cache {
    debs: PathBuf,
    unpacked: PathBuf,
    _lock: File,
}

impl Cache {
    fn open() -> Result<Cache> {
        let root = util::target_dir().join("assets-cache");
        let (debs, unpacked) = (root.join("debs"), root.join("unpacked"));
        for dir in [&debs, &unpacked] {
            fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        }
        let lock_path = root.join("lock");
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .with_context(|| format!("cannot open {}", lock_path.display()))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                eprintln!(
                    "assets: waiting for another `cargo xtask assets` (it holds {})",
                    lock_path.display()
                );
                lock.lock()
                    .with_context(|| format!("cannot lock {}", lock_path.display()))?;
            }
            Err(TryLockError::Error(err)) => {
                return Err(err).with_context(|| format!("cannot lock {}", lock_path.display()));
            }
        }
        Ok(Cache {
            debs,
            unpacked,
            _lock: lock,
        })
    }

    fn deb_path(&self, deb: &Deb) -> PathBuf {
        self.debs.join(deb.file_name())
    }

    /// Makes sure the cache holds each package at its exact version, downloading the missing ones.
    fn fetch(&self, debs: &[&Deb]) -> Result<()> {
        let mut missing = Vec::new();
        for &deb in debs {
            let path = self.deb_path(deb);
            if path.exists() {
                if verify_deb(&path, deb).is_ok() {
                    continue;
                }
                eprintln!(
                    "assets: {} is not a complete {}, downloading it again",
                    path.display(),
                    deb.label()
                );
            }
            missing.push(deb);
        }
        if missing.is_empty() {
            return Ok(());
        }

        remove_matching(&self.debs, &[".partial-"]);
        // apt-get download writes into the current directory under the final name even while the
        // transfer is incomplete: download into a scratch directory and move each file once
        // verified.
        let partial = self.debs.join(format!(".partial-{}", std::process::id()));
        fs::create_dir_all(&partial)
            .with_context(|| format!("cannot create {}", partial.display()))?;
        let total: u64 = missing.iter().map(|deb| deb.size).sum();
        for deb in &missing {
            eprintln!(
                "assets: downloading {} ({})",
                deb.label(),
                human_size(deb.size)
            );
        }
        let started = Instant::now();
        let mut cmd = Command::new("apt-get");
        // As root, apt drops to the `_apt` user to download, which cannot write into a root-owned
        // directory under target/; it then downloads as root anyway after a warning. Say so up
        // front to keep the output quiet (the setting is ignored when not root).
        cmd.current_dir(&partial)
            .args(["download", "-qq", "-o", "APT::Sandbox::User=root"])
            .args(
                missing
                    .iter()
                    .map(|deb| format!("{}={}", deb.qualified_name(), deb.version)),
            );
        util::run_quiet(&mut cmd).with_context(|| {
            format!(
                "cannot download {}; if apt cannot find these versions, the package lists are \
                 stale: run `apt-get update` as root (scripts/setup.sh does)",
                missing
                    .iter()
                    .map(|deb| deb.label())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })?;
        for deb in &missing {
            let got = partial.join(deb.file_name());
            verify_deb(&got, deb).with_context(|| {
                format!("apt-get download of {} gave no usable file", deb.label())
            })?;
            let path = self.deb_path(deb);
            fs::rename(&got, &path)
                .with_context(|| format!("cannot move {} to {}", got.display(), path.display()))?;
        }
        remove_path(&partial);
        eprintln!(
            "assets: downloaded {} in {:.1} s",
            human_size(total),
            started.elapsed().as_secs_f64()
        );
        Ok(())
    }

    /// The package unpacked (`dpkg-deb -x`, no maintainer scripts, nothing installed); fetched
    /// first if the cache lacks it.
    fn unpacked(&self, deb: &Deb) -> Result<PathBuf> {
        let stem = deb.file_name();
        let stem = stem.trim_end_matches(".deb");
        let dir = self.unpacked.join(stem);
        // Only complete trees are ever renamed to this name.
        if dir.is_dir() {
            return Ok(dir);
        }
        self.fetch(&[deb])?;
        let tmp = self
            .unpacked
            .join(format!(".tmp-{}-{stem}", std::process::id()));
        if tmp.exists() {
            remove_path(&tmp);
        }
        let deb_path = self.deb_path(deb);
        util::run_quiet(Command::new("dpkg-deb").arg("-x").arg(&deb_path).arg(&tmp))
            .with_context(|| format!("cannot unpack {}", deb_path.display()))?;
        fs::rename(&tmp, &dir)
            .with_context(|| format!("cannot rename {} to {}", tmp.display(), dir.display()))?;
        Ok(dir)
    }

    /// Drops packages (and their unpacked trees) that the plan no longer uses, e.g. the previous
    /// kernel: each kernel costs ~70 MB packed and ~400 MB unpacked.
    fn prune(&self, plan: &Plan) {
        let keep: BTreeSet<String> = plan.debs().iter().map(|deb| deb.file_name()).collect();
        let keep_dirs: BTreeSet<String> = keep
            .iter()
            .map(|name| name.trim_end_matches(".deb").to_owned())
            .collect();
        for (dir, keep) in [(&self.debs, &keep), (&self.unpacked, &keep_dirs)] {
            let Ok(entries) = fs::read_dir(dir) else {
                continue;
            };
            for entry in entries.flatten() {
                if !keep.contains(entry.file_name().to_string_lossy().as_ref()) {
                    remove_path(&entry.path());
                }
            }
        }
    }
}

/// Checks that `path` is the package `deb` at its exact version, and complete (its size is the one
/// the package lists give).
fn verify_deb(path: &Path, deb: &Deb) -> Result<()> {
    let len = fs::metadata(path)
        .with_context(|| format!("cannot stat {}", path.display()))?
        .len();
    ensure!(
        len == deb.size,
        "{} has {len} bytes, the package lists say {}",
        path.display(),
        deb.size
    );
    let fields = util::output(
        Command::new("dpkg-deb")
            .arg("-f")
            .arg(path)
            .args(["Package", "Version"]),
    )?;
    let stanza = Stanza::parse_all(&fields);
    let stanza = stanza
        .first()
        .with_context(|| format!("`dpkg-deb -f {}` printed nothing", path.display()))?;
    let (name, version) = (stanza.get("Package"), stanza.get("Version"));
    ensure!(
        name == Some(deb.name.as_str()) && version == Some(deb.version.as_str()),
        "{} holds {} {}, expected {}",
        path.display(),
        name.unwrap_or("?"),
        version.unwrap_or("?"),
        deb.label()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const META: &str = "Package: linux-image-amd64\nSource: linux-signed-amd64 (6.1.192+2)\n\
        Version: 6.1.192-2\nArchitecture: amd64\n\
        Depends: linux-image-6.1.0-56-amd64 (= 6.1.192-2)\nSize: 1480\n\
        Description-en: Linux for 64-bit PCs (meta-package)\n This package depends on the latest\n\n";

    #[test]
    fn the_metapackage_names_one_kernel() {
        let stanzas = Stanza::parse_all(META);
        assert_eq!(stanzas.len(), 1);
        assert_eq!(
            kernel_package(&stanzas[0], KERNEL_META, "-amd64").unwrap(),
            "linux-image-6.1.0-56-amd64"
        );
        let none = Stanza::parse_all("Package: linux-image-amd64\nDepends: libc6\n");
        assert!(kernel_package(&none[0], KERNEL_META, "-amd64").is_err());
        let arm64 = Stanza::parse_all(
            "Package: linux-image-arm64\nArchitecture: arm64\n\
             Depends: linux-image-6.1.0-56-arm64 (= 6.1.192-2)\n",
        );
        assert_eq!(
            kernel_package(&arm64[0], ARM64_KERNEL_META, "-arm64").unwrap(),
            "linux-image-6.1.0-56-arm64"
        );
    }

    #[test]
    fn cache_names_follow_apt_get_download() {
        let deb = Deb::from_stanza(
            &Stanza::parse_all(
                "Package: isolinux\nVersion: 3:6.04-3\nArchitecture: all\nSize: 108396\n",
            )[0],
        )
        .unwrap();
        assert_eq!(deb.file_name(), "isolinux_3%3a6.04-3_all.deb");
        assert!(Deb::from_stanza(&Stanza::parse_all("Package: x\nVersion: 1\n")[0]).is_err());
    }

    #[test]
    fn grub_core_reads_grub_cfg_from_boot_on_the_booted_disk() {
        let args: Vec<String> = Plan::grub_mkimage_args(Path::new("/x/core.img"))
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            args[..6],
            ["-O", "i386-pc", "-o", "/x/core.img", "-p", "(,gpt3)/grub"]
        );
        // BIOS disk access, the GPT, and both file systems GRUB may find on BOOT.
        for module in [
            "biosdisk", "part_gpt", "fat", "ext2", "normal", "linux", "serial",
        ] {
            assert!(args[6..].contains(&module.to_owned()), "{module}");
        }
    }

    #[test]
    fn kernel_hint_takes_package_names_only() {
        let dir = tempfile::tempdir().unwrap();
        let write = |vmlinuz_package: &str| {
            let text = format!("# comment\nvmlinuz  {vmlinuz_package}  1\n");
            fs::write(dir.path().join(SOURCES), text).unwrap();
        };
        write("linux-image-6.1.0-56-amd64");
        assert_eq!(kernel_hints(dir.path()), ["linux-image-6.1.0-56-amd64"]);
        write("linux-image-.*");
        assert!(kernel_hints(dir.path()).is_empty());
        let text = "vmlinuz  linux-image-6.1.0-56-amd64  1\n\
                    arm64/vmlinuz  linux-image-6.1.0-56-arm64:arm64  1\n\
                    arm64/initramfs.xz  linux-image-6.1.0-56-arm64:arm64  1\n";
        fs::write(dir.path().join(SOURCES), text).unwrap();
        assert_eq!(
            kernel_hints(dir.path()),
            [
                "linux-image-6.1.0-56-amd64",
                "linux-image-6.1.0-56-arm64:arm64"
            ]
        );
    }
}

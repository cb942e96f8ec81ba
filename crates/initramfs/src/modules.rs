//! Kernel module dependencies: which `.ko` files to load, in which order, for a list of names.
//!
//! The usual source is `modules.dep`, written by `depmod`. A kernel package unpacked without
//! running its maintainer scripts has no `modules.dep`, so the same graph can also be built from
//! each module's own `.modinfo` section (`depends=`), which is where depmod's information comes
//! from for in-tree modules. Everything here is pure: callers do the reading.

use std::collections::{BTreeMap, BTreeSet};

/// Errors from parsing module metadata or resolving names.
#[derive(Debug, thiserror::Error)]
pub enum ModulesError {
    #[error("modules.dep line {line}: {reason}: {text:?}")]
    Syntax {
        line: usize,
        reason: &'static str,
        text: String,
    },
    #[error("kernel module {name:?} is not in the module dependency list")]
    UnknownModule { name: String },
    #[error("kernel module {module} depends on {dependency}, which is not in the dependency list")]
    MissingDependency { module: String, dependency: String },
    #[error("kernel module dependency cycle through {module}")]
    Cycle { module: String },
    #[error("{path}: not a 64-bit little-endian ELF module: {reason}")]
    BadElf { path: String, reason: &'static str },
}

/// The module name of a module file: its base name without `.ko`/`.ko.xz`/`.ko.zst`/`.ko.gz`,
/// normalized with [`normalize`]. `None` if the path is not a module file.
pub fn module_name(path: &str) -> Option<String> {
    let base = path.rsplit('/').next().unwrap_or(path);
    let stem = [".ko", ".ko.xz", ".ko.zst", ".ko.gz"]
        .iter()
        .find_map(|ext| base.strip_suffix(ext))?;
    (!stem.is_empty()).then(|| normalize(stem))
}

/// The kernel treats `-` and `_` in module names as the same character; compare in `_` form.
pub fn normalize(name: &str) -> String {
    name.replace('-', "_")
}

/// Names of the modules built into the kernel, from `modules.builtin` (one module path per line).
pub fn builtin_names(modules_builtin: &str) -> BTreeSet<String> {
    modules_builtin
        .lines()
        .filter_map(|l| module_name(l.trim()))
        .collect()
}

/// A module dependency graph keyed by module file path (relative to `/lib/modules/<kver>/`).
#[derive(Debug, Clone, Default)]
pub struct ModuleDeps {
    /// Module path -> the paths it depends on, in the order they were listed.
    deps: BTreeMap<String, Vec<String>>,
    /// Normalized module name -> module path.
    names: BTreeMap<String, String>,
}

impl ModuleDeps {
    /// Parses `modules.dep`: `path: dep-path dep-path ...` per line. Blank lines and `#` comments
    /// are skipped. If two paths carry the same module name, the first listed wins, matching
    /// depmod, which lists modules in its search-priority order.
    pub fn parse(text: &str) -> Result<Self, ModulesError> {
        let mut graph = Self::default();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let syntax = |reason| ModulesError::Syntax {
                line: i + 1,
                reason,
                text: raw.to_owned(),
            };
            let (path, deps) = line.split_once(':').ok_or_else(|| syntax("no `:`"))?;
            let path = path.trim();
            let name = module_name(path).ok_or_else(|| syntax("not a .ko path"))?;
            let deps: Vec<String> = deps.split_whitespace().map(str::to_owned).collect();
            if deps.iter().any(|d| module_name(d).is_none()) {
                return Err(syntax("dependency is not a .ko path"));
            }
            graph.names.entry(name).or_insert_with(|| path.to_owned());
            graph.deps.entry(path.to_owned()).or_insert(deps);
        }
        Ok(graph)
    }

    /// Builds the graph from each module's path and the module *names* it depends on (the
    /// `depends=` of its `.modinfo`, see [`modinfo_depends`]). Paths are given in priority order:
    /// the first path for a name wins.
    pub fn from_depends<I, P, D, N>(modules: I) -> Result<Self, ModulesError>
    where
        I: IntoIterator<Item = (P, D)>,
        P: Into<String>,
        D: IntoIterator<Item = N>,
        N: AsRef<str>,
    {
        let mut by_name: Vec<(String, Vec<String>)> = Vec::new();
        let mut graph = Self::default();
        for (path, deps) in modules {
            let path = path.into();
            let name = module_name(&path).ok_or_else(|| ModulesError::Syntax {
                line: 0,
                reason: "not a .ko path",
                text: path.clone(),
            })?;
            graph.names.entry(name).or_insert_with(|| path.clone());
            by_name.push((
                path,
                deps.into_iter().map(|d| normalize(d.as_ref())).collect(),
            ));
        }
        for (path, dep_names) in by_name {
            let mut dep_paths = Vec::with_capacity(dep_names.len());
            for dep in dep_names {
                let dep_path =
                    graph
                        .names
                        .get(&dep)
                        .ok_or_else(|| ModulesError::MissingDependency {
                            module: path.clone(),
                            dependency: dep.clone(),
                        })?;
                dep_paths.push(dep_path.clone());
            }
            graph.deps.entry(path).or_insert(dep_paths);
        }
        Ok(graph)
    }

    /// The module file path for a name (`-` and `_` are interchangeable).
    pub fn path_of(&self, name: &str) -> Option<&str> {
        self.names.get(&normalize(name)).map(String::as_str)
    }

    /// True if the graph knows a module by this name.
    pub fn contains(&self, name: &str) -> bool {
        self.path_of(name).is_some()
    }

    /// The module files to load for `wanted`, each once, every dependency before the modules that
    /// need it. The order is deterministic: the wanted names in the order given, each preceded by
    /// whatever of its dependencies is not loaded yet.
    pub fn resolve<I, S>(&self, wanted: I) -> Result<Vec<&str>, ModulesError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut state = BTreeMap::new();
        let mut order = Vec::new();
        for name in wanted {
            let name = name.as_ref();
            let path = self
                .names
                .get_key_value(&normalize(name))
                .map(|(_, p)| p.as_str())
                .ok_or_else(|| ModulesError::UnknownModule {
                    name: name.to_owned(),
                })?;
            self.visit(path, path, &mut state, &mut order)?;
        }
        Ok(order)
    }

    /// Depth-first, emitting a module after everything it depends on. `dependent` is the module
    /// that led here (the module itself for a wanted name), for the error if `path` is unknown.
    fn visit<'a>(
        &'a self,
        dependent: &str,
        path: &str,
        state: &mut BTreeMap<&'a str, Visit>,
        order: &mut Vec<&'a str>,
    ) -> Result<(), ModulesError> {
        let Some((path, deps)) = self.deps.get_key_value(path) else {
            return Err(ModulesError::MissingDependency {
                module: dependent.to_owned(),
                dependency: path.to_owned(),
            });
        };
        match state.get(path.as_str()) {
            Some(Visit::Done) => return Ok(()),
            Some(Visit::InProgress) => {
                return Err(ModulesError::Cycle {
                    module: path.clone(),
                });
            }
            None => {}
        }
        state.insert(path, Visit::InProgress);
        // depmod lists dependencies in reverse load order (modprobe loads the last one first);
        // visiting them that way reproduces modprobe's order where the list is complete.
        for dep in deps.iter().rev() {
            self.visit(path, dep, state, order)?;
        }
        state.insert(path, Visit::Done);
        order.push(path);
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Visit {
    InProgress,
    Done,
}

/// The module names listed in `depends=` of a module's `.modinfo` section. `elf` is the whole
/// (uncompressed) module file; `path` only names it in errors.
pub fn modinfo_depends(path: &str, elf: &[u8]) -> Result<Vec<String>, ModulesError> {
    let modinfo = elf_section(elf, b".modinfo").map_err(|reason| ModulesError::BadElf {
        path: path.to_owned(),
        reason,
    })?;
    let Some(modinfo) = modinfo else {
        return Ok(Vec::new());
    };
    Ok(modinfo
        .split(|&b| b == 0)
        .filter_map(|entry| entry.strip_prefix(b"depends="))
        .flat_map(|list| list.split(|&b| b == b','))
        .filter(|name| !name.is_empty())
        .map(|name| normalize(&String::from_utf8_lossy(name)))
        .collect())
}

/// The contents of the named section of a 64-bit little-endian ELF file, or `None` if absent.
fn elf_section<'a>(elf: &'a [u8], wanted: &[u8]) -> Result<Option<&'a [u8]>, &'static str> {
    if elf.len() < 64 || &elf[..4] != b"\x7fELF" {
        return Err("no ELF header");
    }
    if elf[4] != 2 || elf[5] != 1 {
        return Err("not ELFCLASS64/ELFDATA2LSB");
    }
    let shoff = read_u64(elf, 0x28).ok_or("truncated header")?;
    let shentsize = u64::from(read_u16(elf, 0x3a).ok_or("truncated header")?);
    let shnum = u64::from(read_u16(elf, 0x3c).ok_or("truncated header")?);
    let shstrndx = u64::from(read_u16(elf, 0x3e).ok_or("truncated header")?);
    if shentsize < 64 {
        return Err("section header entries too small");
    }
    let section = |index: u64| -> Result<(u32, &'a [u8]), &'static str> {
        let at = index
            .checked_mul(shentsize)
            .and_then(|o| o.checked_add(shoff))
            .and_then(|o| usize::try_from(o).ok())
            .ok_or("section header offset overflows")?;
        let name = read_u32(elf, at).ok_or("section header out of bounds")?;
        let offset = read_u64(elf, at + 0x18).ok_or("section header out of bounds")?;
        let size = read_u64(elf, at + 0x20).ok_or("section header out of bounds")?;
        let sh_type = read_u32(elf, at + 4).ok_or("section header out of bounds")?;
        // SHT_NOBITS occupies no bytes in the file.
        if sh_type == 8 {
            return Ok((name, &[]));
        }
        let data = usize::try_from(offset)
            .ok()
            .zip(usize::try_from(size).ok())
            .and_then(|(o, s)| elf.get(o..o.checked_add(s)?))
            .ok_or("section data out of bounds")?;
        Ok((name, data))
    };
    if shstrndx >= shnum {
        return Err("no section name table");
    }
    let (_, names) = section(shstrndx)?;
    for index in 0..shnum {
        let (name_off, data) = section(index)?;
        let name = usize::try_from(name_off)
            .ok()
            .and_then(|o| names.get(o..))
            .and_then(|rest| rest.split(|&b| b == 0).next())
            .ok_or("section name out of bounds")?;
        if name == wanted {
            return Ok(Some(data));
        }
    }
    Ok(None)
}

fn read_u16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(
        b.get(at..at.checked_add(2)?)?.try_into().ok()?,
    ))
}

fn read_u32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(
        b.get(at..at.checked_add(4)?)?.try_into().ok()?,
    ))
}

fn read_u64(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(
        b.get(at..at.checked_add(8)?)?.try_into().ok()?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEP: &str = "\
kernel/drivers/ata/ata_piix.ko: kernel/drivers/ata/libata.ko kernel/drivers/scsi/scsi_mod.ko kernel/drivers/scsi/scsi_common.ko
kernel/drivers/ata/libata.ko: kernel/drivers/scsi/scsi_mod.ko kernel/drivers/scsi/scsi_common.ko
kernel/drivers/scsi/scsi_mod.ko: kernel/drivers/scsi/scsi_common.ko
kernel/drivers/scsi/scsi_common.ko:
kernel/drivers/usb/storage/usb-storage.ko.xz: kernel/drivers/scsi/scsi_mod.ko kernel/drivers/usb/core/usbcore.ko kernel/drivers/usb/common/usb-common.ko kernel/drivers/scsi/scsi_common.ko

kernel/drivers/usb/core/usbcore.ko: kernel/drivers/usb/common/usb-common.ko
kernel/drivers/usb/common/usb-common.ko:
kernel/fs/isofs/isofs.ko.zst:
";

    #[test]
    fn names_from_paths() {
        assert_eq!(
            module_name("kernel/fs/isofs/isofs.ko").as_deref(),
            Some("isofs")
        );
        assert_eq!(
            module_name("kernel/drivers/usb/storage/usb-storage.ko.xz").as_deref(),
            Some("usb_storage")
        );
        assert_eq!(module_name("a/b.ko.zst").as_deref(), Some("b"));
        assert_eq!(module_name("modules.dep"), None);
        assert_eq!(module_name("kernel/.ko"), None);
    }

    #[test]
    fn resolves_dependencies_first_each_once() {
        let deps = ModuleDeps::parse(DEP).unwrap();
        let order = deps
            .resolve(["ata_piix", "usb-storage", "isofs", "ata-piix"])
            .unwrap();
        assert_eq!(
            order,
            [
                "kernel/drivers/scsi/scsi_common.ko",
                "kernel/drivers/scsi/scsi_mod.ko",
                "kernel/drivers/ata/libata.ko",
                "kernel/drivers/ata/ata_piix.ko",
                "kernel/drivers/usb/common/usb-common.ko",
                "kernel/drivers/usb/core/usbcore.ko",
                "kernel/drivers/usb/storage/usb-storage.ko.xz",
                "kernel/fs/isofs/isofs.ko.zst",
            ]
        );
    }

    #[test]
    fn every_dependency_precedes_its_dependents() {
        let deps = ModuleDeps::parse(DEP).unwrap();
        let order = deps.resolve(["usb_storage", "ata_piix"]).unwrap();
        for (i, path) in order.iter().enumerate() {
            for dep in &deps.deps[*path] {
                let j = order.iter().position(|p| p == dep).unwrap();
                assert!(j < i, "{dep} after {path}");
            }
        }
    }

    #[test]
    fn unknown_module_is_named() {
        let deps = ModuleDeps::parse(DEP).unwrap();
        let err = deps.resolve(["isofs", "no-such-mod"]).unwrap_err();
        assert!(matches!(err, ModulesError::UnknownModule { ref name } if name == "no-such-mod"));
        assert!(err.to_string().contains("no-such-mod"));
    }

    #[test]
    fn dangling_dependency_and_cycles_are_errors() {
        let deps = ModuleDeps::parse("a.ko: b.ko\n").unwrap();
        assert!(matches!(
            deps.resolve(["a"]),
            Err(ModulesError::MissingDependency { .. })
        ));
        let deps = ModuleDeps::parse("a.ko: b.ko\nb.ko: a.ko\n").unwrap();
        assert!(matches!(
            deps.resolve(["a"]),
            Err(ModulesError::Cycle { .. })
        ));
    }

    #[test]
    fn syntax_errors_carry_the_line() {
        let err = ModuleDeps::parse("a.ko:\nbogus line\n").unwrap_err();
        assert!(matches!(err, ModulesError::Syntax { line: 2, .. }), "{err}");
        let err = ModuleDeps::parse("a.ko: b.txt\n").unwrap_err();
        assert!(matches!(err, ModulesError::Syntax { line: 1, .. }), "{err}");
    }

    #[test]
    fn first_path_for_a_name_wins() {
        let deps = ModuleDeps::parse("updates/x.ko:\nkernel/x.ko:\n").unwrap();
        assert_eq!(deps.resolve(["x"]).unwrap(), ["updates/x.ko"]);
    }

    #[test]
    fn builtin_list() {
        let names =
            builtin_names("kernel/fs/nls/nls_base.ko\nkernel/drivers/usb/host/ehci-hcd.ko\n");
        assert!(names.contains("nls_base"));
        assert!(names.contains("ehci_hcd"));
    }

    #[test]
    fn graph_from_modinfo_depends() {
        let deps = ModuleDeps::from_depends([
            ("kernel/b.ko", vec![]),
            ("kernel/a-x.ko", vec!["b"]),
            ("kernel/c.ko", vec!["a_x", "b"]),
        ])
        .unwrap();
        assert_eq!(
            deps.resolve(["c"]).unwrap(),
            ["kernel/b.ko", "kernel/a-x.ko", "kernel/c.ko"]
        );
        let err = ModuleDeps::from_depends([("kernel/c.ko", vec!["zz"])]).unwrap_err();
        assert!(
            matches!(err, ModulesError::MissingDependency { ref dependency, .. } if dependency == "zz")
        );
    }

    /// A minimal ELF64 LE image with a `.shstrtab` and a `.modinfo` section.
    fn tiny_elf(modinfo: &[u8]) -> Vec<u8> {
        let shstrtab = b"\0.shstrtab\0.modinfo\0";
        let mut elf = vec![0u8; 64];
        elf[..4].copy_from_slice(b"\x7fELF");
        elf[4] = 2;
        elf[5] = 1;
        let shstr_off = elf.len() as u64;
        elf.extend_from_slice(shstrtab);
        let modinfo_off = elf.len() as u64;
        elf.extend_from_slice(modinfo);
        let shoff = elf.len() as u64;
        let mut sh = |name: u32, sh_type: u32, off: u64, size: u64| {
            let mut h = [0u8; 64];
            h[..4].copy_from_slice(&name.to_le_bytes());
            h[4..8].copy_from_slice(&sh_type.to_le_bytes());
            h[0x18..0x20].copy_from_slice(&off.to_le_bytes());
            h[0x20..0x28].copy_from_slice(&size.to_le_bytes());
            elf.extend_from_slice(&h);
        };
        sh(0, 0, 0, 0);
        sh(1, 3, shstr_off, shstrtab.len() as u64);
        sh(11, 1, modinfo_off, modinfo.len() as u64);
        elf[0x28..0x30].copy_from_slice(&shoff.to_le_bytes());
        elf[0x3a..0x3c].copy_from_slice(&64u16.to_le_bytes());
        elf[0x3c..0x3e].copy_from_slice(&3u16.to_le_bytes());
        elf[0x3e..0x40].copy_from_slice(&1u16.to_le_bytes());
        elf
    }

    #[test]
    fn reads_depends_from_modinfo() {
        let elf = tiny_elf(b"license=GPL\0depends=scsi_mod,usb-common\0name=usb_storage\0");
        assert_eq!(
            modinfo_depends("x.ko", &elf).unwrap(),
            ["scsi_mod", "usb_common"]
        );
        let elf = tiny_elf(b"depends=\0name=isofs\0");
        assert!(modinfo_depends("x.ko", &elf).unwrap().is_empty());
    }

    #[test]
    fn bad_elf_is_refused() {
        assert!(matches!(
            modinfo_depends("x.ko", b"not an elf"),
            Err(ModulesError::BadElf { .. })
        ));
        let mut elf = tiny_elf(b"depends=a\0");
        // Point the section headers past the end of the file.
        elf[0x28..0x30].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(matches!(
            modinfo_depends("x.ko", &elf),
            Err(ModulesError::BadElf { .. })
        ));
    }
}

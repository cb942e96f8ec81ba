//! The namespace: files given as `(path, size)`, checked, sorted by path, and the directories their
//! paths imply, in the order the layout declares them. Pure.

use std::collections::HashMap;

use crate::error::Ext4Error;

/// The longest name ext4 stores in a directory entry (`name_len` is one byte).
pub(crate) const MAX_NAME: usize = 255;

/// The files of a file system and the directories their paths imply.
///
/// Paths are relative and `/`-separated (`blob/sha256-<hex>`). They are sorted by their bytes (as
/// upstream's `tar --sort=name` does before `mke2fs -d`), so the image does not depend on the
/// order the caller lists them in. Directories are made `0755`, files `0644`, all owned by root.
#[derive(Debug)]
pub struct Tree {
    /// What the layout declares, in order: a directory always before what it holds.
    pub(crate) ops: Vec<Op>,
    /// Directory id 0 is the root; the rest in the order of `Op::Dir`.
    pub(crate) dirs: Vec<DirInfo>,
    pub(crate) files: usize,
    pub(crate) bytes: u64,
}

#[derive(Debug)]
pub(crate) enum Op {
    Dir {
        parent: u32,
        name: Box<str>,
    },
    File {
        parent: u32,
        /// The whole path, for messages; the entry's name is `path[name_at..]`.
        path: Box<str>,
        name_at: usize,
        size: u64,
        /// The file's position in the caller's list.
        index: usize,
    },
}

#[derive(Debug, Default)]
pub(crate) struct DirInfo {
    /// The bytes of this directory's entries (without `.` and `..`), as ext4 packs them.
    pub(crate) entry_bytes: u64,
    pub(crate) entries: u64,
}

/// The size of a directory entry holding a name of `len` bytes: 8 bytes of header, the name,
/// padded to 4 bytes.
pub(crate) fn rec_len(len: usize) -> u64 {
    ((8 + len + 3) & !3) as u64
}

impl Tree {
    /// Checks and sorts `files`, `(path, size)`; a file's index in later calls
    /// ([`crate::FileData::copy`], [`crate::Plan::pieces`]) is its position in `files`.
    pub fn new<P: AsRef<str>>(files: &[(P, u64)]) -> Result<Self, Ext4Error> {
        let mut sorted: Vec<(&str, u64, usize)> = Vec::with_capacity(files.len());
        for (index, (path, size)) in files.iter().enumerate() {
            let path = path.as_ref();
            check_path(path).map_err(|reason| Ext4Error::Path {
                path: path.to_owned(),
                reason,
            })?;
            sorted.push((path, *size, index));
        }
        sorted.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()).then(a.2.cmp(&b.2)));
        if let Some(w) = sorted.windows(2).find(|w| w[0].0 == w[1].0) {
            return Err(Ext4Error::Duplicate {
                path: w[0].0.to_owned(),
            });
        }

        let mut tree = Tree {
            ops: Vec::with_capacity(sorted.len()),
            dirs: vec![DirInfo::default()],
            files: sorted.len(),
            bytes: 0,
        };
        let mut dir_ids: HashMap<&str, u32> = HashMap::new();
        for &(path, size, index) in &sorted {
            let mut parent = 0u32;
            let mut at = 0usize;
            while let Some(slash) = path[at..].find('/') {
                let dir_path = &path[..at + slash];
                parent = match dir_ids.get(dir_path) {
                    Some(&id) => id,
                    None => {
                        // A file at this directory's path (the list is sorted: search it).
                        if sorted
                            .binary_search_by(|f| f.0.as_bytes().cmp(dir_path.as_bytes()))
                            .is_ok()
                        {
                            return Err(Ext4Error::FileAndDir {
                                path: dir_path.to_owned(),
                            });
                        }
                        let name = &path[at..at + slash];
                        let id = tree.dirs.len() as u32;
                        tree.add_entry(parent, name.len());
                        tree.dirs.push(DirInfo::default());
                        tree.ops.push(Op::Dir {
                            parent,
                            name: name.into(),
                        });
                        dir_ids.insert(dir_path, id);
                        id
                    }
                };
                at += slash + 1;
            }
            tree.add_entry(parent, path.len() - at);
            tree.bytes += size;
            tree.ops.push(Op::File {
                parent,
                path: path.into(),
                name_at: at,
                size,
                index,
            });
        }
        Ok(tree)
    }

    fn add_entry(&mut self, dir: u32, name_len: usize) {
        let info = &mut self.dirs[dir as usize];
        info.entry_bytes += rec_len(name_len);
        info.entries += 1;
    }

    /// The number of files.
    pub fn files(&self) -> usize {
        self.files
    }

    /// The number of directories, the root included.
    pub fn dirs(&self) -> usize {
        self.dirs.len()
    }

    /// The files' bytes.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The smallest file system size, in bytes (a multiple of 4096), that [`crate::Plan::new`]
    /// accepts for these files: see [`crate::min_size`].
    pub fn min_size(&self) -> u64 {
        crate::size::min_size(self)
    }
}

/// A path inside the file system: relative, `/`-separated, no empty, `.` or `..` component, no
/// NUL, each name at most 255 bytes.
fn check_path(path: &str) -> Result<(), &'static str> {
    if path.is_empty() {
        return Err("empty");
    }
    if path.starts_with('/') {
        return Err("absolute (paths are relative to the file system's root)");
    }
    if path.contains('\0') {
        return Err("holds a NUL byte");
    }
    for name in path.split('/') {
        match name {
            "" => return Err("has an empty component"),
            "." | ".." => return Err("has a . or .. component"),
            _ if name.len() > MAX_NAME => return Err("has a name over 255 bytes"),
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn declared(tree: &Tree) -> Vec<String> {
        tree.ops
            .iter()
            .map(|op| match op {
                Op::Dir { parent, name } => format!("d{parent}:{name}"),
                Op::File {
                    parent,
                    path,
                    name_at,
                    index,
                    ..
                } => format!("f{parent}:{}#{index}", &path[*name_at..]),
            })
            .collect()
    }

    #[test]
    fn sorted_with_implied_directories_before_their_contents() {
        let tree = Tree::new(&[
            ("manifests/docker.io/library/alpine/reference/3.20", 7),
            ("blob/sha256-b", 5),
            ("blob/sha256-a", 3),
            ("top", 0),
            ("manifests/docker.io/library/alpine/digest/sha256-a", 9),
        ])
        .unwrap();
        assert_eq!(
            declared(&tree),
            [
                "d0:blob",
                "f1:sha256-a#2",
                "f1:sha256-b#1",
                "d0:manifests",
                "d2:docker.io",
                "d3:library",
                "d4:alpine",
                "d5:digest",
                "f6:sha256-a#4",
                "d5:reference",
                "f7:3.20#0",
                "f0:top#3",
            ]
        );
        assert_eq!(tree.files(), 5);
        assert_eq!(tree.dirs(), 8);
        assert_eq!(tree.bytes(), 24);
        // blob/ holds two 8-byte names: 16 + 16.
        assert_eq!(tree.dirs[1].entry_bytes, 32);
        assert_eq!(tree.dirs[1].entries, 2);
    }

    #[test]
    fn order_of_the_input_does_not_matter() {
        let a = Tree::new(&[("x/b", 1), ("x/a", 2), ("y", 3)]).unwrap();
        let b = Tree::new(&[("y", 3), ("x/a", 2), ("x/b", 1)]).unwrap();
        let names = |t: &Tree| {
            declared(t)
                .into_iter()
                .map(|s| s.split('#').next().unwrap().to_owned())
                .collect::<Vec<_>>()
        };
        assert_eq!(names(&a), names(&b));
    }

    #[test]
    fn bad_paths_are_refused_by_name() {
        for (path, why) in [
            ("", "empty"),
            ("/abs", "absolute"),
            ("a//b", "empty component"),
            ("a/", "empty component"),
            ("a/./b", ". or .."),
            ("../b", ". or .."),
            ("a\0b", "NUL"),
        ] {
            let err = Tree::new(&[(path, 1)]).unwrap_err();
            assert!(
                matches!(&err, Ext4Error::Path { path: p, reason } if p == path && reason.contains(why)),
                "{path:?}: {err}"
            );
        }
        let long = "n".repeat(256);
        assert!(matches!(
            Tree::new(&[(format!("a/{long}"), 1)]),
            Err(Ext4Error::Path { .. })
        ));
        assert!(Tree::new(&[("n".repeat(255), 1)]).is_ok());
    }

    #[test]
    fn duplicates_and_file_directory_clashes_are_refused() {
        assert!(matches!(
            Tree::new(&[("a/b", 1), ("c", 1), ("a/b", 2)]),
            Err(Ext4Error::Duplicate { path }) if path == "a/b"
        ));
        assert!(matches!(
            Tree::new(&[("a/b/c", 1), ("a/b", 2)]),
            Err(Ext4Error::FileAndDir { path }) if path == "a/b"
        ));
        // A name that only starts like a directory is not a clash.
        assert!(Tree::new(&[("a/b.c", 1), ("a/b/c", 2), ("a/b-", 3)]).is_ok());
    }
}

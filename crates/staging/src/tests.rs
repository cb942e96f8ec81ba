// Test code: a panic with its message is how a failure is reported.
#![allow(clippy::unwrap_used)]

use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;

use super::*;

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn listed(path: &Path) -> bool {
    live().entries.values().any(|e| e.path == path)
}

/// A temp of the kind as a killed run leaves it: the name, no lock.
fn stale_file(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    fs::write(&path, b"left by a killed run").unwrap();
    path
}

/// A lock held by someone else (another open file description: what another process has).
fn hold_lock(path: &Path) -> File {
    let fd = File::open(path).unwrap();
    rustix::fs::flock(&fd, FlockOperation::NonBlockingLockExclusive).unwrap();
    fd
}

#[test]
fn kinds_are_the_prefix_then_random_characters() {
    assert!(is_of_kind(OsStr::new(".metal-iso-a1B2c3"), ".metal-iso-"));
    assert!(is_of_kind(OsStr::new("cache.tmp-ABCDEFGH"), "cache.tmp-"));
    for other in [
        ".metal-iso-abc",
        ".metal-iso-abcdef.x",
        ".metal-iso-",
        "metal-amd64.iso",
        "x.metal-iso-abcdef",
    ] {
        assert!(!is_of_kind(OsStr::new(other), ".metal-iso-"), "{other}");
    }
    // The staging dir of an output named `cache.tmp-x` is not of `cache`'s kind.
    assert!(!is_of_kind(
        OsStr::new("cache.tmp-x.tmp-ABCDEF"),
        "cache.tmp-"
    ));
    // Another kind that shares the start of the prefix.
    assert!(!is_of_kind(OsStr::new(".tmp-blob-ABCDEF"), ".tmp-"));
}

#[test]
fn prefixes_that_could_match_other_names_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    for bad in ["", "metal", "a/b-"] {
        let err = StagedFile::create(dir.path(), bad, 0o644).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{bad:?}");
        assert!(sweep(dir.path(), bad, Form::File).is_err());
    }
    assert!(names(dir.path()).is_empty());
}

#[test]
fn a_file_is_removed_on_drop_and_kept_once_persisted() {
    let dir = tempfile::tempdir().unwrap();
    let mut f = StagedFile::create(&dir.path().join("new/sub"), ".t-", 0o644).unwrap();
    let path = f.path().to_owned();
    assert!(is_of_kind(path.file_name().unwrap(), ".t-"));
    assert!(listed(&path));
    f.file_mut().write_all(b"bytes").unwrap();
    drop(f);
    assert!(!path.exists());
    assert!(!listed(&path));

    let mut f = StagedFile::create(dir.path(), ".t-", 0o600).unwrap();
    let path = f.path().to_owned();
    assert_eq!(
        f.file().metadata().unwrap().permissions().mode() & 0o777,
        0o600
    );
    f.file_mut().write_all(b"done").unwrap();
    let dest = dir.path().join("final");
    f.persist(&dest).unwrap();
    assert_eq!(fs::read(&dest).unwrap(), b"done");
    assert!(!path.exists());
    assert!(!listed(&path));
}

#[test]
fn a_failed_persist_removes_the_temp() {
    let dir = tempfile::tempdir().unwrap();
    let f = StagedFile::create(dir.path(), ".t-", 0o644).unwrap();
    let path = f.path().to_owned();
    let err = f.persist(&dir.path().join("missing/final")).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::NotFound);
    assert!(!path.exists());
    assert!(names(dir.path()).is_empty());
}

#[test]
fn a_staged_file_holds_its_lock() {
    let dir = tempfile::tempdir().unwrap();
    let f = StagedFile::create(dir.path(), ".t-", 0o644).unwrap();
    let other = File::open(f.path()).unwrap();
    assert_eq!(
        rustix::fs::flock(&other, FlockOperation::NonBlockingLockExclusive),
        Err(rustix::io::Errno::WOULDBLOCK)
    );
    drop(f);
}

#[test]
fn a_sweep_removes_only_unlocked_temps_of_its_kind() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // A run of this process (another open file description holds the lock); made first, as
    // creating sweeps.
    let ours = StagedFile::create(d, ".k-", 0o644).unwrap();
    let stale = stale_file(d, ".k-AAAAAA");
    let stale_dir = d.join(".k-BBBBBB");
    fs::create_dir_all(stale_dir.join("blob/sub")).unwrap();
    fs::write(stale_dir.join("blob/sub/f"), b"x").unwrap();
    // A run that is still going (its lock is held).
    let busy = stale_file(d, ".k-CCCCCC");
    let _owner = hold_lock(&busy);
    let busy_dir = d.join(".k-DDDDDD");
    fs::create_dir(&busy_dir).unwrap();
    let _dir_owner = hold_lock(&busy_dir);
    // Not of the kind, or not a file or a directory.
    for keep in ["keep", ".k-short", ".k-AAAAAA.old", ".j-AAAAAA"] {
        stale_file(d, keep);
    }
    std::os::unix::fs::symlink(&busy, d.join(".k-LINKED")).unwrap();

    // Files of the kind only, then directories only.
    assert_eq!(sweep(d, ".k-", Form::File).unwrap(), vec![stale]);
    assert!(stale_dir.join("blob/sub/f").exists());
    assert_eq!(sweep(d, ".k-", Form::Dir).unwrap(), vec![stale_dir]);
    let mut want = vec![
        ".j-AAAAAA".to_owned(),
        ".k-AAAAAA.old".to_owned(),
        ".k-CCCCCC".to_owned(),
        ".k-DDDDDD".to_owned(),
        ".k-LINKED".to_owned(),
        ".k-short".to_owned(),
        "keep".to_owned(),
        ours.path()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned(),
    ];
    want.sort();
    assert_eq!(names(d), want);
    // The link's target is untouched.
    assert!(busy.exists());
}

#[test]
fn a_temp_whose_owner_let_go_is_stale() {
    let dir = tempfile::tempdir().unwrap();
    let temp = stale_file(dir.path(), ".k-AAAAAA");
    let owner = hold_lock(&temp);
    assert!(sweep(dir.path(), ".k-", Form::File).unwrap().is_empty());
    assert!(temp.exists());
    // What the kernel does when the owner exits, `kill -9` included.
    drop(owner);
    assert_eq!(
        sweep(dir.path(), ".k-", Form::File).unwrap(),
        vec![temp.clone()]
    );
    assert!(!temp.exists());
}

#[test]
fn creating_sweeps_the_directory_first() {
    let dir = tempfile::tempdir().unwrap();
    let stale = stale_file(dir.path(), ".k-AAAAAA");
    let other_kind = stale_file(dir.path(), ".j-AAAAAA");
    let f = StagedFile::create(dir.path(), ".k-", 0o644).unwrap();
    assert!(!stale.exists());
    assert!(other_kind.exists());
    let stale_dir = dir.path().join("out.tmp-AAAAAA");
    fs::create_dir(&stale_dir).unwrap();
    fs::write(stale_dir.join("partial"), b"x").unwrap();
    let d = StagedDir::create(dir.path(), "out.tmp-").unwrap();
    assert!(!stale_dir.exists());
    assert!(d.path().is_dir());
    drop(f);
}

#[test]
fn a_new_temp_taken_by_a_sweep_before_it_was_locked_is_given_up() {
    let dir = tempfile::tempdir().unwrap();
    // Created, but a sweep elsewhere holds the lock: that sweep removes it.
    let path = stale_file(dir.path(), ".k-AAAAAA");
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    let sweeper = hold_lock(&path);
    assert!(matches!(claim(&file, &path).unwrap(), Claim::Lost));
    drop(sweeper);
    // Locked, but the name no longer leads to it.
    fs::remove_file(&path).unwrap();
    assert!(matches!(claim(&file, &path).unwrap(), Claim::Lost));
    // Locked and still there.
    let path = stale_file(dir.path(), ".k-BBBBBB");
    let file = File::open(&path).unwrap();
    assert!(matches!(claim(&file, &path).unwrap(), Claim::Ours));
}

#[test]
fn a_staged_dir_is_locked_removed_on_drop_and_published_out_of() {
    let parent = tempfile::tempdir().unwrap();
    let staged = StagedDir::create(parent.path(), "cache.tmp-").unwrap();
    let path = staged.path().to_owned();
    assert_eq!(
        fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o700
    );
    assert!(listed(&path));
    let other = File::open(&path).unwrap();
    assert_eq!(
        rustix::fs::flock(&other, FlockOperation::NonBlockingLockExclusive),
        Err(rustix::io::Errno::WOULDBLOCK)
    );
    create_dir_all(&path.join("tree/blob")).unwrap();
    fs::write(path.join("tree/blob/f"), b"x").unwrap();
    let out = parent.path().join("cache");
    publishing(|| fs::rename(path.join("tree"), &out)).unwrap();
    staged.close().unwrap();
    assert!(!path.exists());
    assert!(!listed(&path));
    assert_eq!(names(parent.path()), vec!["cache".to_owned()]);

    let staged = StagedDir::create(parent.path(), "cache.tmp-").unwrap();
    let path = staged.path().to_owned();
    fs::create_dir_all(path.join("a/b")).unwrap();
    drop(staged);
    assert!(!path.exists());
    assert!(!listed(&path));
}

#[test]
fn the_signal_cleanup_removes_every_listed_temp_once() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let staged = d.join("cache.tmp-AAAAAA");
    fs::create_dir_all(staged.join("tree/blob")).unwrap();
    let inside = staged.join("tree/blob/.tmp-BBBBBB");
    fs::write(&inside, b"x").unwrap();
    let iso = stale_file(d, ".metal-iso-CCCCCC");
    let gone = d.join(".imager-esp-DDDDDD");
    let mut live = Live {
        next: 0,
        entries: BTreeMap::new(),
    };
    live.add(staged.clone(), true);
    live.add(inside, false);
    live.add(iso.clone(), false);
    live.add(gone.clone(), false);

    let done = clean_up(&live, signal_hook::consts::SIGTERM);
    assert_eq!(done.name, "SIGTERM");
    assert_eq!(done.exit_code(), 143);
    // The file inside the staged directory went with it; one already gone counts as removed.
    assert_eq!(done.removed, vec![staged, iso, gone]);
    assert!(done.failed.is_empty());
    assert!(names(d).is_empty());
    assert_eq!(
        clean_up(&live, signal_hook::consts::SIGINT).exit_code(),
        130
    );
}

//! Output staged beside its final path, and never left behind.
//!
//! Every command that writes output (an ISO, a cache, a downloaded blob) writes it first under a
//! temporary name in the destination's directory — the same file system, so the final `rename` is
//! atomic — and this crate is the one place that makes those names. Each staged file or directory:
//!
//! - is named `<prefix><6 or more ASCII letters and digits>`; the prefix says what kind of thing it
//!   is (`.metal-iso-`, `cache.tmp-`, ...) and ends in a character that is not a letter or digit,
//!   so no other name of the directory can pass for one of that kind;
//! - holds an exclusive `flock` on itself (on its own descriptor, for a directory too) for as long
//!   as it lives. The kernel drops the lock when the owner is gone, however it went (`kill -9`
//!   included), so any process can tell a live temp from a stale one;
//! - is preceded, the first time its kind is made in a directory by this process, by a sweep of
//!   that directory ([`sweep`]): entries of the kind (and of its [`Form`], file or directory) whose
//!   lock can be taken are stale and removed;
//! - is in a process-wide list that the thread [`exit_on_signals`] starts removes on SIGINT or
//!   SIGTERM, before the process exits with 130 or 143;
//! - is removed when dropped, unless it was renamed to its final name first
//!   ([`StagedFile::persist`], or [`publishing`] for what is renamed out of a staged directory).
//!
//! Creating, persisting and [`publishing`] hold the list's lock, and the signal thread takes that
//! lock and never gives it back (the process exits holding it): so no temp is made after the
//! cleanup has run, and no rename happens while it runs.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt as _, MetadataExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};

use rustix::fs::{FlockOperation, Mode, OFlags};

/// Random letters and digits after the prefix: tempfile's default, so names an earlier version
/// of imager left (made with tempfile) are of the same kind.
const RANDOM_LEN: usize = 6;

/// Names tried before creating gives up (a collision of 6 random characters is rare; running
/// into a sweep that is removing the new name, rarer still).
const ATTEMPTS: usize = 64;

/// Walks made to remove a staged tree that a writer still running may be adding entries to.
const REMOVE_ATTEMPTS: usize = 3;

// ---------------------------------------------------------------------------------------------
// The process-wide list

#[derive(Debug)]
struct Entry {
    path: PathBuf,
    dir: bool,
}

#[derive(Debug)]
struct Live {
    next: u64,
    entries: BTreeMap<u64, Entry>,
}

impl Live {
    fn add(&mut self, path: PathBuf, dir: bool) -> u64 {
        let id = self.next;
        self.next += 1;
        self.entries.insert(id, Entry { path, dir });
        id
    }
}

static LIVE: Mutex<Live> = Mutex::new(Live {
    next: 0,
    entries: BTreeMap::new(),
});

/// The (directory, prefix) pairs this process has swept.
static SWEPT: Mutex<BTreeSet<(PathBuf, String)>> = Mutex::new(BTreeSet::new());

fn live() -> MutexGuard<'static, Live> {
    // The list is a map of paths; a panic elsewhere while it was held leaves it consistent.
    LIVE.lock().unwrap_or_else(PoisonError::into_inner)
}

// ---------------------------------------------------------------------------------------------
// Names and locks

fn check_prefix(prefix: &str) -> io::Result<()> {
    let ok = prefix
        .chars()
        .last()
        .is_some_and(|c| !c.is_ascii_alphanumeric())
        && !prefix.contains('/');
    if ok {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "staging prefix {prefix:?} must end in a character other than a letter or digit \
                 and hold no '/'"
            ),
        ))
    }
}

/// Whether `name` is of the kind `prefix` names: the prefix, then only random characters.
pub fn is_of_kind(name: &OsStr, prefix: &str) -> bool {
    name.to_str()
        .and_then(|n| n.strip_prefix(prefix))
        .is_some_and(|rest| {
            rest.len() >= RANDOM_LEN && rest.bytes().all(|b| b.is_ascii_alphanumeric())
        })
}

fn random_name(prefix: &str) -> String {
    let mut name = String::with_capacity(prefix.len() + RANDOM_LEN);
    name.push_str(prefix);
    name.extend(std::iter::repeat_with(fastrand::alphanumeric).take(RANDOM_LEN));
    name
}

fn same_file(a: &fs::Metadata, b: &fs::Metadata) -> bool {
    a.dev() == b.dev() && a.ino() == b.ino()
}

/// What taking the lock of a new temp found.
enum Claim {
    /// Locked, and the name is still ours.
    Ours,
    /// The file system has no `flock` (some network file systems): ours, unlocked. A sweep in
    /// another process cannot lock it either, so it is left alone there too.
    Unlockable,
    /// A sweep took it between our create and our lock: it is that sweep's to remove.
    Lost,
}

/// Locks a temp just created at `path` and checks that the name still leads to it: a sweep in
/// another process may have locked and removed it in between.
fn claim(fd: &File, path: &Path) -> io::Result<Claim> {
    match rustix::fs::flock(fd, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => {}
        Err(e) if e == rustix::io::Errno::WOULDBLOCK => return Ok(Claim::Lost),
        Err(e) if e == rustix::io::Errno::NOLCK || e == rustix::io::Errno::OPNOTSUPP => {
            return Ok(Claim::Unlockable);
        }
        Err(e) => return Err(e.into()),
    }
    match fs::symlink_metadata(path) {
        Ok(now) if same_file(&now, &fd.metadata()?) => Ok(Claim::Ours),
        Ok(_) => Ok(Claim::Lost),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Claim::Lost),
        Err(e) => Err(e),
    }
}

/// Removes a file or a whole tree; gone already counts as removed.
fn remove(path: &Path, dir: bool) -> io::Result<()> {
    let result = if dir {
        // A writer that is still running (the signal thread does not stop the others) may add an
        // entry between the walk and the last rmdir: walk again.
        let mut result = fs::remove_dir_all(path);
        for _ in 1..REMOVE_ATTEMPTS {
            match &result {
                Err(e) if e.kind() != io::ErrorKind::NotFound => {
                    result = fs::remove_dir_all(path);
                }
                _ => break,
            }
        }
        result
    } else {
        fs::remove_file(path)
    };
    match result {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

// ---------------------------------------------------------------------------------------------
// The sweep

/// What a kind of temp is: a sweep for file temps never removes a directory, nor the reverse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    File,
    Dir,
}

/// Removes every entry of `dir` of the kind `prefix` names, and of the `form` that kind has,
/// whose lock can be taken: its owner is gone (a killed run). Entries whose lock is held (a run
/// still going, in this process or another) are left, and so is anything the sweep cannot open
/// or lock. Returns what it removed; a missing `dir` has nothing to sweep.
pub fn sweep(dir: &Path, prefix: &str, form: Form) -> io::Result<Vec<PathBuf>> {
    check_prefix(prefix)?;
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut removed = Vec::new();
    for entry in entries {
        let entry = entry?;
        if !is_of_kind(&entry.file_name(), prefix) {
            continue;
        }
        let path = entry.path();
        // One that cannot be opened, locked or removed is left: a sweep is housekeeping, and
        // the run that called it has its own work to do.
        if let Ok(true) = remove_if_stale(&path, form) {
            removed.push(path);
        }
    }
    Ok(removed)
}

/// Locks the temp at `path` without waiting and, if that succeeds and the name still leads to
/// what was locked, removes it. Only a regular file (`Form::File`) or a directory (`Form::Dir`).
fn remove_if_stale(path: &Path, form: Form) -> io::Result<bool> {
    let meta = fs::symlink_metadata(path)?;
    let dir = form == Form::Dir;
    if !(if dir { meta.is_dir() } else { meta.is_file() }) {
        return Ok(false);
    }
    // Not following a link, not blocking on something swapped in since (a FIFO).
    let mut flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
    if dir {
        flags |= OFlags::DIRECTORY;
    }
    let fd = File::from(rustix::fs::open(path, flags, Mode::empty())?);
    match rustix::fs::flock(&fd, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => {}
        Err(e) if e == rustix::io::Errno::WOULDBLOCK => return Ok(false),
        Err(e) => return Err(e.into()),
    }
    // Locked: its owner is gone. The name must still lead to what was locked (a rename could
    // have put something else there).
    if !same_file(&fd.metadata()?, &fs::symlink_metadata(path)?) {
        return Ok(false);
    }
    remove(path, dir)?;
    Ok(true)
}

/// Sweeps `dir` for `prefix` once per process: a run makes many temps of one kind in one
/// directory (one per blob), and the first sweep found every stale one.
fn sweep_once(dir: &Path, prefix: &str, form: Form) {
    let first = SWEPT
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert((dir.to_owned(), prefix.to_owned()));
    if first {
        // A failed sweep leaves stale temps for a later run; creating reports what matters.
        let _ = sweep(dir, prefix, form);
    }
}

// ---------------------------------------------------------------------------------------------
// Staged files

/// A file under a temporary name, locked, removed on drop or on SIGINT/SIGTERM unless
/// [`persist`](Self::persist)ed.
#[derive(Debug)]
pub struct StagedFile {
    file: File,
    path: PathBuf,
    id: u64,
    persisted: bool,
}

impl StagedFile {
    /// Creates `dir/<prefix>XXXXXX` (and `dir` if missing), opened for reading and writing with
    /// `mode` (less the umask), after sweeping `dir` for stale temps of the same kind.
    pub fn create(dir: &Path, prefix: &str, mode: u32) -> io::Result<Self> {
        check_prefix(prefix)?;
        sweep_once(dir, prefix, Form::File);
        let mut live = live();
        // Under the lock too: a writer that makes the directory after the signal cleanup removed
        // a staged tree around it would make part of that tree again.
        fs::create_dir_all(dir)?;
        for _ in 0..ATTEMPTS {
            let path = dir.join(random_name(prefix));
            let file = match OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .mode(mode)
                .open(&path)
            {
                Ok(file) => file,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            };
            match claim(&file, &path)? {
                Claim::Ours | Claim::Unlockable => {
                    let id = live.add(path.clone(), false);
                    return Ok(Self {
                        file,
                        path,
                        id,
                        persisted: false,
                    });
                }
                Claim::Lost => continue,
            }
        }
        Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("no free temporary name {prefix}XXXXXX"),
        ))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn file(&self) -> &File {
        &self.file
    }

    pub fn file_mut(&mut self) -> &mut File {
        &mut self.file
    }

    /// Renames the file to `dest` (replacing what is there). On an error the temp is removed.
    pub fn persist(mut self, dest: &Path) -> io::Result<()> {
        let mut live = live();
        fs::rename(&self.path, dest)?;
        live.entries.remove(&self.id);
        self.persisted = true;
        Ok(())
    }
}

impl Drop for StagedFile {
    fn drop(&mut self) {
        if self.persisted {
            return;
        }
        let _ = remove(&self.path, false);
        live().entries.remove(&self.id);
    }
}

// ---------------------------------------------------------------------------------------------
// Staged directories

/// A directory under a temporary name, locked, removed with everything in it on drop or on
/// SIGINT/SIGTERM. What is published is renamed out of it under [`publishing`].
#[derive(Debug)]
pub struct StagedDir {
    /// Holds the lock.
    _fd: File,
    path: PathBuf,
    id: u64,
    removed: bool,
}

impl StagedDir {
    /// Creates `parent/<prefix>XXXXXX` (mode 0700; `parent` must exist), after sweeping `parent`
    /// for stale temps of the same kind.
    pub fn create(parent: &Path, prefix: &str) -> io::Result<Self> {
        check_prefix(prefix)?;
        sweep_once(parent, prefix, Form::Dir);
        let mut live = live();
        for _ in 0..ATTEMPTS {
            let path = parent.join(random_name(prefix));
            match fs::DirBuilder::new().mode(0o700).create(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
            let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
            let fd = match rustix::fs::open(&path, flags, Mode::empty()) {
                Ok(fd) => File::from(fd),
                // Swept already.
                Err(e) if e == rustix::io::Errno::NOENT => continue,
                Err(e) => return Err(e.into()),
            };
            match claim(&fd, &path)? {
                Claim::Ours | Claim::Unlockable => {
                    let id = live.add(path.clone(), true);
                    return Ok(Self {
                        _fd: fd,
                        path,
                        id,
                        removed: false,
                    });
                }
                Claim::Lost => continue,
            }
        }
        Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("no free temporary name {prefix}XXXXXX"),
        ))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Removes the directory and everything in it, reporting an error that drop would ignore.
    pub fn close(mut self) -> io::Result<()> {
        self.removed = true;
        let result = remove(&self.path, true);
        live().entries.remove(&self.id);
        result
    }
}

impl Drop for StagedDir {
    fn drop(&mut self) {
        if self.removed {
            return;
        }
        // Removed while still listed: a signal meanwhile removes what is left, not nothing.
        let _ = remove(&self.path, true);
        live().entries.remove(&self.id);
    }
}

/// Runs `f` — a rename that publishes what was built in a [`StagedDir`] — so that the signal
/// cleanup runs wholly before or wholly after it, never while part of a published tree is still
/// under the staged directory. `f` must not create staged files (the lock is not reentrant).
pub fn publishing<R>(f: impl FnOnce() -> R) -> R {
    let _live = live();
    f()
}

/// `fs::create_dir_all` for directories inside a staged directory: under the list's lock, so a
/// writer cannot make part of a staged tree again after the signal cleanup removed it.
pub fn create_dir_all(path: &Path) -> io::Result<()> {
    let _live = live();
    fs::create_dir_all(path)
}

// ---------------------------------------------------------------------------------------------
// Signals

/// What the signal thread did before exiting, for the caller to tell the user.
#[derive(Debug)]
pub struct Interrupted {
    /// The signal's number.
    pub signal: i32,
    /// `SIGINT` or `SIGTERM`.
    pub name: &'static str,
    /// The staged files and directories removed (those inside a removed directory are not listed
    /// on their own).
    pub removed: Vec<PathBuf>,
    /// Those that could not be removed, and why.
    pub failed: Vec<(PathBuf, io::Error)>,
}

impl Interrupted {
    /// 128 + the signal: what a shell reports for a process the signal ended (130 for SIGINT,
    /// 143 for SIGTERM).
    pub fn exit_code(&self) -> i32 {
        128 + self.signal
    }
}

/// Starts a thread that, on the first SIGINT or SIGTERM, removes every live staged file and
/// directory, calls `report`, and exits the process with 128 + the signal. Once per process;
/// later calls do nothing. A command that serves until interrupted (and shuts down gracefully
/// on those signals itself) does not call it.
pub fn exit_on_signals(report: impl Fn(&Interrupted) + Send + 'static) -> io::Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    static STARTED: Mutex<bool> = Mutex::new(false);
    let mut started = STARTED.lock().unwrap_or_else(PoisonError::into_inner);
    if *started {
        return Ok(());
    }
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])?;
    std::thread::Builder::new()
        .name("staging-signals".to_owned())
        .spawn(move || {
            if let Some(signal) = signals.forever().next() {
                // Held until the process is gone: nothing is staged or published after this.
                let live = live();
                let interrupted = clean_up(&live, signal);
                report(&interrupted);
                std::process::exit(interrupted.exit_code());
            }
        })?;
    *started = true;
    Ok(())
}

fn clean_up(live: &Live, signal: i32) -> Interrupted {
    let name = if signal == signal_hook::consts::SIGINT {
        "SIGINT"
    } else {
        "SIGTERM"
    };
    let mut interrupted = Interrupted {
        signal,
        name,
        removed: Vec::new(),
        failed: Vec::new(),
    };
    let dirs: Vec<&Path> = live
        .entries
        .values()
        .filter(|e| e.dir)
        .map(|e| e.path.as_path())
        .collect();
    for entry in live.entries.values() {
        // Goes with the directory it is in.
        if dirs
            .iter()
            .any(|d| *d != entry.path && entry.path.starts_with(d))
        {
            continue;
        }
        match remove(&entry.path, entry.dir) {
            Ok(()) => interrupted.removed.push(entry.path.clone()),
            Err(e) => interrupted.failed.push((entry.path.clone(), e)),
        }
    }
    interrupted
}

#[cfg(test)]
mod tests;

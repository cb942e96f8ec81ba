//! Small helpers shared by the xtask commands.

use std::ffi::OsStr;
use std::path::PathBuf;
use std::process::{Command, Output};

use anyhow::{Context, Result, bail};

/// The workspace root (xtask lives one level below it).
pub fn workspace_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(PathBuf::from).unwrap_or(manifest)
}

/// Cargo's target directory: `$CARGO_TARGET_DIR` when the user set one (cargo passes it through to
/// `cargo run`), else `<workspace>/target`.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => workspace_root().join(dir),
        _ => workspace_root().join("target"),
    }
}

/// `cmd` as a shell-like line for messages, e.g. `apt-get download isolinux=3:6.04`.
pub fn command_line(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(OsStr::to_string_lossy)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs `cmd` with stdout and stderr captured and returns stdout. Fails, naming the command and
/// quoting its stderr, when it cannot start or exits unsuccessfully: the captured output is shown
/// only then, so commands that succeed stay quiet.
pub fn output(cmd: &mut Command) -> Result<String> {
    let out = captured(cmd)?;
    String::from_utf8(out.stdout)
        .with_context(|| format!("`{}` printed non-UTF-8 output", command_line(cmd)))
}

/// Like [`output`], for commands whose stdout is not needed.
pub fn run_quiet(cmd: &mut Command) -> Result<()> {
    captured(cmd).map(drop)
}

fn captured(cmd: &mut Command) -> Result<Output> {
    let out = cmd.output().map_err(|err| {
        let program = cmd.get_program().to_string_lossy().into_owned();
        if err.kind() == std::io::ErrorKind::NotFound {
            anyhow::anyhow!("cannot run `{program}`: it is not installed or not on PATH")
        } else {
            anyhow::Error::new(err).context(format!("cannot run `{program}`"))
        }
    })?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let stderr = stderr.trim();
        let stdout = String::from_utf8_lossy(&out.stdout);
        // Some tools (apt among them) put the reason on stdout; show whichever says something.
        let said = if stderr.is_empty() {
            stdout.trim()
        } else {
            stderr
        };
        bail!(
            "`{}` failed ({}){}{said}",
            command_line(cmd),
            out.status,
            if said.is_empty() { "" } else { ":\n" }
        );
    }
    Ok(out)
}

/// A byte count for people: `70.6 MB`, `432 B`.
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["kB", "MB", "GB", "TB"];
    if bytes < 1000 {
        return format!("{bytes} B");
    }
    // Lossy on purpose: one decimal is all a summary needs.
    let mut value = bytes as f64 / 1000.0;
    let mut unit = 0;
    while value >= 1000.0 && unit + 1 < UNITS.len() {
        value /= 1000.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_naturally() {
        assert_eq!(human_size(432), "432 B");
        assert_eq!(human_size(108_396), "108.4 kB");
        assert_eq!(human_size(70_550_672), "70.6 MB");
    }

    #[test]
    fn failures_name_the_command_and_its_complaint() {
        let err = run_quiet(Command::new("sh").args(["-c", "echo nope >&2; exit 3"])).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("`sh -c echo nope >&2; exit 3` failed"),
            "{msg}"
        );
        assert!(msg.ends_with("nope"), "{msg}");
        let err = output(&mut Command::new("/nonexistent/tool")).unwrap_err();
        assert!(err.to_string().contains("not installed"), "{err}");
    }
}

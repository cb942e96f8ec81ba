//! `cargo xtask test [CARGO-TEST-ARGS...] [-- TEST-BINARY-ARGS...]`: THE test command (README, CI).
//!
//! Prepares the boot assets, then runs every test of the workspace including the ignored ones
//! (the QEMU boot matrix, the 4 GiB image), with `IMAGER_ASSETS` pointing at the assets so the
//! tests boot exactly what was just prepared.

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};

use crate::{assets, util};

const USAGE: &str = "\
usage: cargo xtask test [CARGO-TEST-ARGS...] [-- TEST-BINARY-ARGS...]

Prepares the boot assets (`cargo xtask assets`, quick when they are current; or uses
$IMAGER_ASSETS as it is when set), then runs
    cargo test --workspace --all-targets --no-fail-fast [CARGO-TEST-ARGS] \
        -- --include-ignored [TEST-BINARY-ARGS]
and the doc tests. Console logs of every QEMU boot go to $IMAGER_BOOT_LOG_DIR
(default <target>/boot-logs).

examples:
    cargo xtask test
    cargo xtask test -p imager --test boot_matrix
    cargo xtask test -- boots_ovmf
";

pub fn run(args: &[String]) -> Result<()> {
    if args.iter().any(|a| a == "-h" || a == "--help") {
        print!("{USAGE}");
        return Ok(());
    }
    let (cargo_args, harness_args) = split_args(args);
    let started = Instant::now();

    let assets = assets_dir()?;
    let logs = match std::env::var_os(imager_boot_test::LOG_DIR_ENV) {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => util::target_dir().join("boot-logs"),
    };
    eprintln!(
        "test: assets {}, boot console logs in {}",
        assets.display(),
        logs.display()
    );

    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut tests = Command::new(&cargo);
    tests
        .current_dir(util::workspace_root())
        // --no-fail-fast: one failing test binary must not hide the others' results.
        .args(["test", "--workspace", "--all-targets", "--no-fail-fast"])
        .args(cargo_args)
        .args(["--", "--include-ignored"])
        .args(harness_args)
        .env(imager_boot_test::ASSETS_ENV, &assets)
        .env(imager_boot_test::LOG_DIR_ENV, &logs);
    let mut failed = Vec::new();
    if let Err(e) = run_inherited(&mut tests) {
        failed.push(e);
    }

    // --all-targets leaves out the doc tests; they are tests too. Filters given for the harness
    // would not mean the same thing there, so the doc tests run only in a full run (and also
    // after a failure above, for the complete picture).
    if cargo_args.is_empty() && harness_args.is_empty() {
        let mut doc = Command::new(&cargo);
        doc.current_dir(util::workspace_root()).args([
            "test",
            "--workspace",
            "--doc",
            "--no-fail-fast",
        ]);
        if let Err(e) = run_inherited(&mut doc) {
            failed.push(e);
        }
    }
    let secs = started.elapsed().as_secs_f64();
    if !failed.is_empty() {
        let list: Vec<String> = failed.iter().map(|e| format!("  {e}")).collect();
        bail!("tests failed after {secs:.0} s:\n{}", list.join("\n"));
    }
    eprintln!("test: all passed in {secs:.0} s");
    Ok(())
}

/// Arguments before `--` go to `cargo test`, those after it to the test binaries.
fn split_args(args: &[String]) -> (&[String], &[String]) {
    match args.iter().position(|a| a == "--") {
        Some(i) => (&args[..i], &args[i + 1..]),
        None => (args, &[]),
    }
}

/// `$IMAGER_ASSETS` when set (used as it is: it may be a read-only system copy), else the
/// checkout's `_assets/`, prepared or refreshed now.
fn assets_dir() -> Result<PathBuf> {
    match std::env::var_os(imager_boot_test::ASSETS_ENV) {
        Some(dir) if !dir.is_empty() => {
            let dir = PathBuf::from(dir);
            imager_boot_test::check_assets(&dir).with_context(|| {
                format!(
                    "{} is set but incomplete; unset it to use the checkout's _assets/",
                    imager_boot_test::ASSETS_ENV
                )
            })?;
            Ok(dir)
        }
        _ => assets::prepare(&assets::default_dir()).context("preparing the boot assets"),
    }
}

/// Runs `cmd` with the terminal, failing with its exit status.
fn run_inherited(cmd: &mut Command) -> Result<()> {
    let line = util::command_line(cmd);
    eprintln!("test: {line}");
    let status = cmd
        .status()
        .with_context(|| format!("cannot run `{line}`"))?;
    if !status.success() {
        bail!("`{line}` failed ({status})");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn double_dash_separates_cargo_and_harness_arguments() {
        let args: Vec<String> = ["-p", "imager", "--", "boots_", "--nocapture"]
            .map(String::from)
            .to_vec();
        let (cargo, harness) = split_args(&args);
        assert_eq!(cargo, ["-p", "imager"]);
        assert_eq!(harness, ["boots_", "--nocapture"]);
        let none: Vec<String> = Vec::new();
        assert_eq!(split_args(&none), (&none[..], &none[..]));
        let only = vec!["--".to_string(), "x".to_string()];
        assert_eq!(split_args(&only).1, ["x"]);
        assert!(split_args(&only).0.is_empty());
    }
}

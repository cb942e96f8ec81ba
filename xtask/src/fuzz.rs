//! `cargo xtask fuzz [TARGET...] [--seconds N]`: coverage-guided fuzzing of the parsers that take
//! outside bytes, on stable Rust (docs/security.md).
//!
//! The targets are the separate project `fuzz/` (outside the workspace). It is built the way
//! `cargo fuzz build -s none` builds it: LLVM's SanitizerCoverage instrumentation, which stable
//! rustc exposes through `-Cpasses`/`-Cllvm-args`, feeding libFuzzer (linked by `libfuzzer-sys`).
//! No sanitizer: the parsers are safe Rust, where an out-of-bounds read is a panic, which
//! libFuzzer reports as a crash; overflow checks and debug assertions are on (fuzz/Cargo.toml).
//! The flags are cargo-fuzz's: `cargo fuzz run -s none TARGET` (and its `tmin`, `cmin` and
//! coverage commands) works on the same project, in the same target directory.
//!
//! Each target runs for a bounded time over its seeds in `fuzz/corpus/<target>/` (in the
//! repository), with the tokens of its format in `fuzz/dict/<target>.dict`, and a working corpus in `fuzz/target/corpus/<target>/` (kept between runs, not
//! committed). A crash fails the command and leaves the input in `fuzz/artifacts/<target>/`.
//! Not part of `cargo xtask test` or CI: the property tests in each crate are what CI runs.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, bail};

use crate::util;

const USAGE: &str = "\
usage: cargo xtask fuzz [TARGET...] [--seconds N]

Builds the fuzz targets of fuzz/ with coverage instrumentation (stable Rust, libFuzzer), then runs
each TARGET (default: all) for N seconds (default 30) over its seeds in fuzz/corpus/TARGET/.
Fails if any input crashes a target; the input is kept in fuzz/artifacts/TARGET/ and the target's
output in fuzz/target/logs/TARGET.log. A crash is replayed with
    fuzz/target/<host>/release/TARGET fuzz/artifacts/TARGET/crash-...

options:
    --seconds N   how long each target runs (default 30)
    --list        print the targets and exit
";

const DEFAULT_SECONDS: u64 = 30;

/// What `cargo fuzz build -s none` (cargo-fuzz 0.13) gives rustc on Linux, in its order.
const RUSTFLAGS: &[&str] = &[
    "-Cpasses=sancov-module",
    "-Cllvm-args=-sanitizer-coverage-level=4",
    "-Cllvm-args=-sanitizer-coverage-inline-8bit-counters",
    "-Cllvm-args=-sanitizer-coverage-pc-table",
    "-Cllvm-args=-sanitizer-coverage-trace-compares",
    "--cfg",
    "fuzzing",
    "-Cllvm-args=-simplifycfg-branch-fold-threshold=0",
    "-Cllvm-args=-sanitizer-coverage-stack-depth",
    "-Cdebug-assertions",
    "-Ccodegen-units=1",
];

/// How long one input may take before libFuzzer reports it as a hang, in seconds.
const INPUT_TIMEOUT: u64 = 10;

pub fn run(args: &[String]) -> Result<()> {
    let mut seconds = DEFAULT_SECONDS;
    let mut wanted = Vec::new();
    let mut list = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "-h" | "--help" => {
                print!("{USAGE}");
                return Ok(());
            }
            "--list" => list = true,
            "--seconds" => {
                let n = it.next().context("--seconds needs a number")?;
                seconds = n
                    .parse()
                    .ok()
                    .filter(|&s| s > 0)
                    .with_context(|| format!("--seconds {n:?}: not a whole number above 0"))?;
            }
            s if s.starts_with('-') => bail!("unknown option {s:?}\n{USAGE}"),
            t => wanted.push(t.to_owned()),
        }
    }

    let fuzz = util::workspace_root().join("fuzz");
    let all = targets(&fuzz)?;
    if list {
        for t in &all {
            println!("{t}");
        }
        return Ok(());
    }
    for t in &wanted {
        if !all.contains(t) {
            bail!("no fuzz target {t:?}; the targets are: {}", all.join(", "));
        }
    }
    let chosen = if wanted.is_empty() { all } else { wanted };

    let triple = host_triple()?;
    let target_dir = fuzz.join("target");
    build(&fuzz, &target_dir, &triple, &chosen)?;

    let mut runs = Vec::new();
    for t in &chosen {
        let binary = target_dir.join(&triple).join("release").join(t);
        runs.push(run_target(&fuzz, &binary, t, seconds)?);
    }

    println!(
        "\n{:<12} {:>8} {:>12} {:>10} {:>6}  result",
        "target", "seconds", "execs", "execs/s", "new"
    );
    for r in &runs {
        println!(
            "{:<12} {:>8.0} {:>12} {:>10.0} {:>6}  {}",
            r.target,
            r.seconds,
            r.execs.map_or("?".to_owned(), |n| n.to_string()),
            r.execs.map_or(0.0, |n| n as f64 / r.seconds.max(0.001)),
            r.new_units.map_or("?".to_owned(), |n| n.to_string()),
            r.outcome
        );
    }
    let failed: Vec<&Run> = runs.iter().filter(|r| !r.ok).collect();
    if !failed.is_empty() {
        let details: Vec<String> = failed
            .iter()
            .map(|r| format!("{}: {} (log {})", r.target, r.outcome, r.log.display()))
            .collect();
        bail!(
            "{} of {} fuzz targets failed:\n{}",
            failed.len(),
            runs.len(),
            details.join("\n")
        );
    }
    Ok(())
}

/// The targets: the files of `fuzz/fuzz_targets/`, sorted.
fn targets(fuzz: &Path) -> Result<Vec<String>> {
    let dir = fuzz.join("fuzz_targets");
    let mut names = Vec::new();
    for entry in std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry
            .with_context(|| format!("reading {}", dir.display()))?
            .path();
        if path.extension().is_some_and(|e| e == "rs")
            && let Some(stem) = path.file_stem().and_then(|s| s.to_str())
        {
            names.push(stem.to_owned());
        }
    }
    names.sort();
    if names.is_empty() {
        bail!("no fuzz targets in {}", dir.display());
    }
    Ok(names)
}

fn host_triple() -> Result<String> {
    let out = util::output(Command::new("rustc").arg("-vV"))?;
    out.lines()
        .find_map(|l| l.strip_prefix("host: "))
        .map(str::to_owned)
        .context("`rustc -vV` names no host triple")
}

/// Builds the targets. `--target` keeps the instrumentation out of build scripts and proc
/// macros, which run on the host without libFuzzer.
fn build(fuzz: &Path, target_dir: &Path, triple: &str, targets: &[String]) -> Result<()> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(fuzz)
        .args(["build", "--release", "--manifest-path"])
        .arg(fuzz.join("Cargo.toml"))
        .args(["--target", triple])
        .env("RUSTFLAGS", RUSTFLAGS.join(" "))
        .env("CARGO_TARGET_DIR", target_dir)
        // The workspace's own rustflags settings are not for this project.
        .env_remove("CARGO_ENCODED_RUSTFLAGS");
    for t in targets {
        cmd.args(["--bin", t]);
    }
    eprintln!(
        "fuzz: building {} (instrumented, release)",
        targets.join(", ")
    );
    let status = cmd
        .status()
        .with_context(|| format!("running `{}`", util::command_line(&cmd)))?;
    if !status.success() {
        bail!("`{}` failed ({status})", util::command_line(&cmd));
    }
    Ok(())
}

#[derive(Debug)]
struct Run {
    target: String,
    seconds: f64,
    execs: Option<u64>,
    new_units: Option<u64>,
    ok: bool,
    outcome: String,
    log: PathBuf,
}

fn run_target(fuzz: &Path, binary: &Path, target: &str, seconds: u64) -> Result<Run> {
    let seeds = fuzz.join("corpus").join(target);
    let work = fuzz.join("target").join("corpus").join(target);
    let artifacts = fuzz.join("artifacts").join(target);
    let logs = fuzz.join("target").join("logs");
    for dir in [&work, &artifacts, &logs] {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let log = logs.join(format!("{target}.log"));
    let log_file =
        std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
    let mut prefix = artifacts.into_os_string();
    prefix.push("/");

    let mut cmd = Command::new(binary);
    // The tokens of the target's format, which random mutation rarely spells out.
    let dict = fuzz.join("dict").join(format!("{target}.dict"));
    if dict.is_file() {
        let mut a = std::ffi::OsString::from("-dict=");
        a.push(&dict);
        cmd.arg(a);
    }
    cmd.arg(format!("-max_total_time={seconds}"))
        .arg(format!("-timeout={INPUT_TIMEOUT}"))
        .arg("-print_final_stats=1")
        .arg({
            let mut a = std::ffi::OsString::from("-artifact_prefix=");
            a.push(&prefix);
            a
        })
        // New inputs go to the first corpus directory: the working one, not the seeds.
        .arg(&work)
        .arg(&seeds)
        .stdin(Stdio::null())
        .stdout(
            log_file
                .try_clone()
                .with_context(|| format!("opening {}", log.display()))?,
        )
        .stderr(log_file);
    eprintln!("fuzz: {target} for {seconds} s (log {})", log.display());
    let started = Instant::now();
    let status = cmd
        .status()
        .with_context(|| format!("running {}", binary.display()))?;
    let elapsed = started.elapsed().as_secs_f64();
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let stat = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse::<u64>().ok())
    };
    let crash = text
        .lines()
        .find_map(|l| l.split_once("Test unit written to ").map(|(_, p)| p.trim()))
        .map(str::to_owned);
    let (ok, outcome) = match (status.success(), crash) {
        (true, _) => (true, "ok".to_owned()),
        (false, Some(path)) => (false, format!("crash, input in {path}")),
        (false, None) => (false, format!("exited with {status}")),
    };
    Ok(Run {
        target: target.to_owned(),
        seconds: elapsed,
        execs: stat("stat::number_of_executed_units:"),
        new_units: stat("stat::new_units_added:"),
        ok,
        outcome,
        log,
    })
}

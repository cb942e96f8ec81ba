//! `cargo xtask bench iso | metal | cache | serve | push`: each of our tools side by side with its peers, in one run, on
//! generated inputs. This module holds what both benchmarks share: running a tool (one or several
//! processes) until its output is on disk, peak RSS from `VmHWM`, rotated order, medians, and the
//! markdown table.
//!
//! Every tool is timed until its output is on disk (its commands, then `sync`), since `imager`
//! syncs its output before the rename that publishes it. Runs rotate the order of the tools so
//! that none always goes first. Peak RSS is each process's `VmHWM`, sampled while it runs; a tool
//! that runs several processes reports the largest.

mod cache;
mod iso;
mod load;
mod metal;
mod push;
mod serve;

use std::io::{Read as _, Seek as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};

use crate::util::{self, human_size};

pub fn run(args: &[String]) -> Result<()> {
    match args.first().map(String::as_str) {
        Some("iso") => iso::run(&args[1..]),
        Some("cache") => cache::run(&args[1..]),
        Some("serve") => serve::run(&args[1..]),
        Some("metal") => metal::run(&args[1..]),
        Some("push") => push::run(&args[1..]),
        _ => bail!(
            "{}\n{}\n{}\n{}\n{}",
            iso::USAGE,
            metal::USAGE,
            cache::USAGE,
            serve::USAGE,
            push::USAGE
        ),
    }
}

/// A benchmark's `--flag value` arguments (every flag of the benchmarks takes a value), read with
/// defaults; a flag the benchmark does not know is refused, with its usage.
struct Flags<'a> {
    pairs: Vec<(&'a str, &'a str)>,
    usage: &'a str,
}

impl<'a> Flags<'a> {
    fn parse(args: &'a [String], usage: &'a str, known: &[&str]) -> Result<Self> {
        let mut pairs = Vec::new();
        let mut it = args.iter();
        while let Some(flag) = it.next() {
            if !flag.starts_with("--") {
                bail!("unexpected argument {flag:?}\n{usage}");
            }
            if !known.contains(&flag.as_str()) {
                bail!("unknown argument {flag:?}\n{usage}");
            }
            let value = it
                .next()
                .with_context(|| format!("{flag} needs a value\n{usage}"))?;
            pairs.push((flag.as_str(), value.as_str()));
        }
        Ok(Self { pairs, usage })
    }

    /// The last value given for `flag`.
    fn value(&self, flag: &str) -> Option<&'a str> {
        self.pairs
            .iter()
            .rev()
            .find(|(f, _)| *f == flag)
            .map(|(_, v)| *v)
    }

    /// A count of at least 1.
    fn count(&self, flag: &str, default: usize) -> Result<usize> {
        let n = match self.value(flag) {
            Some(v) => v
                .parse()
                .with_context(|| format!("{flag}\n{}", self.usage))?,
            None => default,
        };
        ensure!(n >= 1, "{flag} must be at least 1");
        Ok(n)
    }

    /// A positive, finite number.
    fn positive(&self, flag: &str, default: f64) -> Result<f64> {
        let x: f64 = match self.value(flag) {
            Some(v) => v
                .parse()
                .with_context(|| format!("{flag}\n{}", self.usage))?,
            None => default,
        };
        ensure!(x > 0.0 && x.is_finite(), "{flag} must be positive");
        Ok(x)
    }

    fn path(&self, flag: &str, default: PathBuf) -> PathBuf {
        self.value(flag).map_or(default, PathBuf::from)
    }
}

/// One process of a tool's run, with what it reads on stdin.
#[derive(Debug)]
struct Step {
    cmd: Command,
    stdin: Option<Vec<u8>>,
}

impl Step {
    fn new(cmd: Command) -> Self {
        Self { cmd, stdin: None }
    }

    fn with_stdin(cmd: Command, stdin: Vec<u8>) -> Self {
        Self {
            cmd,
            stdin: Some(stdin),
        }
    }
}

/// A tool under test: its processes for one run (made afresh each run), and the directory its
/// output goes to, emptied before each of its runs.
struct Tool {
    name: String,
    out: PathBuf,
    steps: Box<dyn Fn() -> Vec<Step>>,
}

impl std::fmt::Debug for Tool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tool")
            .field("name", &self.name)
            .field("out", &self.out)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Copy)]
struct Sample {
    time: Duration,
    rss_kib: u64,
    /// Disk space the run used at its peak beyond what it left behind (its output): temporary
    /// files and copies. Sampled every few milliseconds on the output's file system, so it also
    /// counts what anything else on that file system wrote meanwhile.
    temp_bytes: u64,
}

/// Runs `runs` rounds of every tool, rotating the order each round; returns the samples per tool.
fn run_rotated(tools: &[Tool], runs: usize) -> Result<Vec<Vec<Sample>>> {
    let mut samples: Vec<Vec<Sample>> = tools.iter().map(|_| Vec::new()).collect();
    for run in 0..runs {
        for i in rotation(run, tools.len()) {
            let tool = &tools[i];
            reset_dir(&tool.out)?;
            let sample = measure((tool.steps)(), &tool.out)
                .with_context(|| format!("running {}", tool.name))?;
            // Outputs are as large as the input: keep one at a time on the disk.
            reset_dir(&tool.out)?;
            eprintln!(
                "run {}: {}: {:.2} s, {} peak RSS",
                run + 1,
                tool.name,
                sample.time.as_secs_f64(),
                human_size(sample.rss_kib * 1024)
            );
            samples[i].push(sample);
        }
    }
    Ok(samples)
}

/// The order of `n` tools in round `run`: each round starts one later.
fn rotation(run: usize, n: usize) -> impl Iterator<Item = usize> {
    (0..n).map(move |k| (run + k) % n)
}

/// Median time (the upper one of an even count) and the largest peak RSS of a tool's samples.
fn summarize(samples: &[Sample]) -> (Duration, u64) {
    let mut times: Vec<Duration> = samples.iter().map(|s| s.time).collect();
    times.sort();
    (
        times.get(times.len() / 2).copied().unwrap_or_default(),
        samples.iter().map(|s| s.rss_kib).max().unwrap_or(0),
    )
}

/// A markdown table.
fn markdown_table(header: &[&str], rows: &[Vec<String>]) -> String {
    let line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut s = String::from("|");
        for cell in cells {
            s.push(' ');
            s.push_str(cell);
            s.push_str(" |");
        }
        s.push('\n');
        s
    };
    let mut out = line(&mut header.iter().copied());
    out += &line(&mut header.iter().map(|_| "---"));
    for row in rows {
        out += &line(&mut row.iter().map(String::as_str));
    }
    out
}

/// Runs the steps one after another, then `sync`; returns the wall time of all of it, the
/// largest peak RSS of the processes and the peak of temporary disk space on the file system of
/// `out`. A failing step fails the run, quoting the end of its stderr.
fn measure(steps: Vec<Step>, out: &Path) -> Result<Sample> {
    let used =
        || -> u64 { rustix::fs::statvfs(out).map_or(0, |s| (s.f_blocks - s.f_bfree) * s.f_frsize) };
    let mut peak_used = used();
    let mut sample_disk = || peak_used = peak_used.max(used());
    let start = Instant::now();
    let mut peak_kib = 0;
    for step in steps {
        peak_kib = peak_kib.max(run_step(step, &mut sample_disk)?);
    }
    util::run_quiet(&mut Command::new("sync"))?;
    let time = start.elapsed();
    let end_used = used();
    Ok(Sample {
        time,
        rss_kib: peak_kib,
        temp_bytes: peak_used.saturating_sub(end_used),
    })
}

/// The largest temporary disk space of a tool's samples.
fn peak_temp(samples: &[Sample]) -> u64 {
    samples.iter().map(|s| s.temp_bytes).max().unwrap_or(0)
}

/// Runs one process to completion, calling `poll` while it runs; returns its peak RSS in KiB.
fn run_step(mut step: Step, poll: &mut dyn FnMut()) -> Result<u64> {
    let cmd = &mut step.cmd;
    let mut stderr = tempfile::tempfile().context("a temp file for stderr")?;
    cmd.stdout(Stdio::null())
        .stderr(stderr.try_clone()?)
        .stdin(if step.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
    let mut child = cmd
        .spawn()
        .with_context(|| format!("starting `{}`", util::command_line(cmd)))?;
    let feeder = match (step.stdin.take(), child.stdin.take()) {
        (Some(bytes), Some(mut pipe)) => Some(std::thread::spawn(move || pipe.write_all(&bytes))),
        _ => None,
    };
    // Peak RSS from the kernel's high-water mark, read while the process runs. (wait4's
    // ru_maxrss is useless here: a child spawned with vfork semantics inherits this process's
    // high-water mark at exec, so every tool would report the xtask's own size.) The mark only
    // grows, so the last read before exit misses at most the final few milliseconds.
    let status_path = format!("/proc/{}/status", child.id());
    let mut peak_kib = 0;
    let status = loop {
        if let Some(kib) = std::fs::read_to_string(&status_path)
            .ok()
            .as_deref()
            .and_then(vm_hwm_kib)
        {
            peak_kib = peak_kib.max(kib);
        }
        poll();
        if let Some(status) = child.try_wait()? {
            break status;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    if let Some(feeder) = feeder {
        // A process that exits without reading all of its stdin is judged by its exit status.
        let _ = feeder.join();
    }
    if !status.success() {
        let mut said = String::new();
        stderr.rewind()?;
        stderr.read_to_string(&mut said)?;
        bail!(
            "`{}` failed ({status}):\n{}",
            util::command_line(cmd),
            tail(&said, 4000)
        );
    }
    Ok(peak_kib)
}

/// The last `max` bytes of `s` (at a character boundary).
fn tail(s: &str, max: usize) -> &str {
    let s = s.trim_end();
    let mut start = s.len().saturating_sub(max);
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}

/// `VmHWM:   1234 kB` from /proc/PID/status.
fn vm_hwm_kib(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
}

fn reset_dir(dir: &Path) -> Result<()> {
    if dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    util::run_quiet(&mut Command::new("sync"))
}

/// Builds `target/release/imager`.
fn build_imager() -> Result<PathBuf> {
    util::run_quiet(
        Command::new(env!("CARGO"))
            .current_dir(util::workspace_root())
            .args(["build", "--release", "--quiet", "-p", "imager"]),
    )?;
    Ok(util::target_dir().join("release/imager"))
}

/// xorshift64: fast and good enough to defeat compression and sparse files.
fn fill_noise(buf: &mut [u8], state: &mut u64) {
    for chunk in buf.chunks_mut(8) {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        chunk.copy_from_slice(&state.to_le_bytes()[..chunk.len()]);
    }
}

/// Writes `size` bytes of noise from `state` to `out`, a MiB at a time.
fn write_noise(out: &mut impl std::io::Write, mut size: u64, state: &mut u64) -> Result<()> {
    let mut buf = vec![0u8; 1 << 20];
    while size > 0 {
        let take = size.min(buf.len() as u64) as usize;
        fill_noise(&mut buf[..take], state);
        out.write_all(&buf[..take])?;
        size -= take as u64;
    }
    Ok(())
}

/// `date -u` and the CPU, for the note under a table.
fn machine_note() -> String {
    let date = util::output(Command::new("date").args(["-u", "+%Y-%m-%d"]))
        .map(|d| d.trim().to_owned())
        .unwrap_or_default();
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("{date}, {cores} cores ({cpu})")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_high_water_mark() {
        let status = "Name:\tcp\nVmPeak:\t  9000 kB\nVmHWM:\t    1234 kB\nVmRSS:\t  1000 kB\n";
        assert_eq!(vm_hwm_kib(status), Some(1234));
        assert_eq!(vm_hwm_kib("Name:\tx\n"), None);
    }

    #[test]
    fn flags_come_in_pairs_with_defaults() {
        let args: Vec<String> = ["--runs", "3", "--dir", "x", "--runs", "4"]
            .map(String::from)
            .to_vec();
        let known = ["--runs", "--dir", "--gib"];
        let f = Flags::parse(&args, "u", &known).unwrap();
        assert_eq!(f.count("--runs", 1).unwrap(), 4);
        assert_eq!(f.path("--dir", "d".into()), PathBuf::from("x"));
        assert_eq!(f.positive("--gib", 1.5).unwrap(), 1.5);
        for bad in [
            &["--runs"][..],
            &["runs", "3"],
            &["--jobs", "3"],
            &["--runs", "0"],
            &["--runs", "x"],
            &["--gib", "-1"],
            &["--gib", "inf"],
        ] {
            let args: Vec<String> = bad.iter().map(|s| s.to_string()).collect();
            let checked = Flags::parse(&args, "u", &known).and_then(|f| {
                f.count("--runs", 1)?;
                f.positive("--gib", 1.0)
            });
            assert!(checked.is_err(), "{bad:?}");
        }
    }

    #[test]
    fn rounds_rotate() {
        assert_eq!(rotation(0, 3).collect::<Vec<_>>(), [0, 1, 2]);
        assert_eq!(rotation(1, 3).collect::<Vec<_>>(), [1, 2, 0]);
        assert_eq!(rotation(5, 3).collect::<Vec<_>>(), [2, 0, 1]);
    }

    #[test]
    fn median_and_peak() {
        let s = |secs, rss_kib| Sample {
            temp_bytes: 0,
            time: Duration::from_secs(secs),
            rss_kib,
        };
        assert_eq!(
            summarize(&[s(5, 10), s(1, 30), s(3, 20)]),
            (Duration::from_secs(3), 30)
        );
        assert_eq!(summarize(&[s(4, 1), s(2, 1)]), (Duration::from_secs(4), 1));
        assert_eq!(summarize(&[]), (Duration::ZERO, 0));
    }

    #[test]
    fn tables_are_markdown() {
        let t = markdown_table(&["a", "b"], &[vec!["1".into(), "2".into()]]);
        assert_eq!(t, "| a | b |\n| --- | --- |\n| 1 | 2 |\n");
    }

    #[test]
    fn tails_cut_at_characters() {
        assert_eq!(tail("abc\n", 10), "abc");
        assert_eq!(tail("abcdef", 2), "ef");
        assert_eq!(tail("aé", 1), "");
    }

    #[test]
    fn noise_is_deterministic_and_not_constant() {
        let (mut a, mut b) = (vec![0u8; 20], vec![0u8; 20]);
        let (mut s1, mut s2) = (7, 7);
        fill_noise(&mut a, &mut s1);
        fill_noise(&mut b, &mut s2);
        assert_eq!(a, b);
        assert!(a.windows(2).any(|w| w[0] != w[1]));
    }

    #[test]
    fn a_failing_step_quotes_its_stderr() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "cat >/dev/null; echo broken >&2; exit 2"]);
        let err =
            measure(vec![Step::with_stdin(cmd, b"x\n".to_vec())], Path::new("/")).unwrap_err();
        assert!(format!("{err:#}").ends_with("broken"), "{err:#}");
    }
}

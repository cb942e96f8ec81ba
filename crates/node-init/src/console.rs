//! The serial console: where every line of the protocol in `docs/architecture.md` goes.

use std::fmt;
use std::io::Write;

use rustix::fs::{Mode, OFlags};

/// Every protocol line starts with this, so a test can pick our lines out of kernel noise.
pub const PREFIX: &str = "imager-node-init: ";

/// Prints one protocol line, built first and handed to the tty in one `write`. Kernel messages
/// go to the UART by a separate path and can still split a line, which is why [`quiet_kernel`]
/// exists. Write errors are ignored: the console is the only place to report them.
pub fn line(args: fmt::Arguments<'_>) {
    let text = one_line(&args.to_string());
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(format!("{PREFIX}{text}\n").as_bytes());
    let _ = out.flush();
}

/// Prints a protocol line: `say!("volume {label} on {dev}")`.
macro_rules! say {
    ($($arg:tt)*) => {
        $crate::console::line(format_args!($($arg)*))
    };
}
pub(crate) use say;

/// A message as a single line: embedded newlines (panic messages, multi-line causes) would
/// otherwise start lines without our prefix.
pub fn one_line(text: &str) -> String {
    text.trim_end().replace(['\n', '\r'], " ")
}

/// Points fds 0, 1 and 2 at `/dev/console` unless stdout and stderr already reach a terminal
/// device. The kernel opens the console for init from the initramfs' `/dev/console`; if that
/// failed, Rust's runtime has put `/dev/null` on the closed fds, and output would vanish.
pub fn attach() -> rustix::io::Result<()> {
    if is_console_like(1) && is_console_like(2) {
        return Ok(());
    }
    let console = rustix::fs::open(
        "/dev/console",
        OFlags::RDWR | OFlags::NOCTTY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    rustix::stdio::dup2_stdin(&console)?;
    rustix::stdio::dup2_stdout(&console)?;
    rustix::stdio::dup2_stderr(&console)?;
    Ok(())
}

/// True if `fd` is open on a character device other than `/dev/null` (1:3).
fn is_console_like(fd: libc::c_int) -> bool {
    // SAFETY: `fstat` only writes the `stat` buffer we pass, which is valid and sized for it; an
    // fd that is not open yields EBADF rather than undefined behaviour. rustix's `fstat` needs a
    // `BorrowedFd`, whose contract requires an open fd, which is exactly what is in question.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: see above.
    if unsafe { libc::fstat(fd, &mut st) } != 0 {
        return false;
    }
    let is_chr = st.st_mode & libc::S_IFMT == libc::S_IFCHR;
    is_chr && !(libc::major(st.st_rdev) == 1 && libc::minor(st.st_rdev) == 3)
}

/// Lowers the console log level to warnings and worse, unless the kernel command line chose a
/// level. USB and SCSI discovery log at info level while we print; fewer kernel lines on the
/// serial port means fewer chances of one splitting ours.
pub fn quiet_kernel(cmdline: &str) {
    let chosen = cmdline.split_whitespace().any(|arg| {
        arg.starts_with("loglevel=") || arg == "debug" || arg == "ignore_loglevel" || arg == "quiet"
    });
    if chosen {
        return;
    }
    const SYSLOG_ACTION_CONSOLE_LEVEL: libc::c_int = 8;
    const KERN_WARNING_AND_WORSE: libc::c_int = 5;
    // SAFETY: SYSLOG_ACTION_CONSOLE_LEVEL reads no buffer (NULL is documented as allowed) and
    // only sets the console log level; failure is reported through the return value, ignored
    // because the level is cosmetic.
    unsafe {
        libc::klogctl(
            SYSLOG_ACTION_CONSOLE_LEVEL,
            std::ptr::null_mut(),
            KERN_WARNING_AND_WORSE,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_become_one_line() {
        assert_eq!(
            one_line("panicked at src/main.rs:3:5:\nboom\n"),
            "panicked at src/main.rs:3:5: boom"
        );
    }
}

//! The only way out for PID 1: power off (returning from init would panic the kernel).

use std::time::Duration;

use rustix::system::RebootCommand;

use crate::console::{one_line, say};

/// Syncs and powers off. Never returns: if the kernel refuses, the failure is printed and the
/// process waits forever, which a test harness sees as a timeout with the reason on the console.
pub fn off() -> ! {
    rustix::fs::sync();
    if let Err(e) = rustix::system::reboot(RebootCommand::PowerOff) {
        say!("error power off: {e}");
    }
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// Makes a panic print a protocol error line and power off, instead of aborting PID 1 (which
/// the kernel turns into a panic and, with `panic=-1`, a reboot that hides the message).
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        say!("error panic: {}", one_line(&info.to_string()));
        off()
    }));
}

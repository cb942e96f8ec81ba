//! Serving the cache as a node does: our registryd (the library `imager cache serve` runs) over
//! the roots in priority order, on port 3172 of every interface, until the power button.

use std::fs::File;
use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::mpsc;

use anyhow::{Context, Result};
use imager_registryd::{Config, Log, Server};

use crate::console::say;

/// Upstream registryd's port.
pub const PORT: u16 = 3172;

/// Serves `roots` (flat trees, first good copy wins) until the power button is pressed; `ready`
/// runs once the socket listens.
pub fn until_power_button(roots: Vec<PathBuf>, ready: impl FnOnce(SocketAddr)) -> Result<()> {
    let button = power_button()?;
    let mut config = Config::new(roots);
    config.address = SocketAddr::from((Ipv4Addr::UNSPECIFIED, PORT));
    config.log = Log::new(|line| say!("registryd {line}"));
    // Every request on the console: what a test that fails wants to see.
    config.access_log = true;
    // A test VM has one vCPU and little memory.
    config.io_threads = 2;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("start the async runtime")?;
    runtime.block_on(async move {
        let server = Server::bind(config).await.context("start registryd")?;
        ready(server.local_addr());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        std::thread::spawn(move || {
            // Either a press or the watcher's end (its device vanished) stops serving.
            let _ = button.recv();
            let _ = tx.send(());
        });
        server
            .serve(async {
                let _ = rx.await;
            })
            .await
            .context("registryd")
    })
}

/// `EV_KEY` and `KEY_POWER` from `linux/input-event-codes.h`.
const EV_KEY: u16 = 0x01;
const KEY_POWER: u16 = 116;

/// Watches every input device that can send `KEY_POWER` (the ACPI button driver's "Power
/// Button" on a PC; `gpio-keys` on an arm64 `virt` machine described by a device tree; QEMU's
/// `system_powerdown` and a hypervisor's "shut down" press it) and sends once a press is read.
fn power_button() -> Result<mpsc::Receiver<()>> {
    let mut devices = Vec::new();
    for entry in std::fs::read_dir("/sys/class/input").context("list /sys/class/input")? {
        let entry = entry.context("list /sys/class/input")?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with("event") {
            continue;
        }
        let keys = std::fs::read_to_string(entry.path().join("device/capabilities/key"))
            .unwrap_or_default();
        if has_key(&keys, KEY_POWER) {
            devices.push(format!("/dev/input/{name}"));
        }
    }
    anyhow::ensure!(
        !devices.is_empty(),
        "no input device sends KEY_POWER (are `button`, `gpio_keys` and `evdev` in the initramfs?)"
    );
    let (tx, rx) = mpsc::channel();
    for path in devices {
        let mut dev = File::open(&path).with_context(|| format!("open {path}"))?;
        let tx = tx.clone();
        std::thread::spawn(move || {
            // struct input_event: a struct timeval (two longs), then u16 type, u16 code, s32
            // value — 24 bytes on 64-bit targets.
            const TIMEVAL: usize = 2 * std::mem::size_of::<libc::c_long>();
            let mut event = [0u8; TIMEVAL + 8];
            while dev.read_exact(&mut event).is_ok() {
                let kind = u16::from_ne_bytes([event[TIMEVAL], event[TIMEVAL + 1]]);
                let code = u16::from_ne_bytes([event[TIMEVAL + 2], event[TIMEVAL + 3]]);
                let value = i32::from_ne_bytes([
                    event[TIMEVAL + 4],
                    event[TIMEVAL + 5],
                    event[TIMEVAL + 6],
                    event[TIMEVAL + 7],
                ]);
                if kind == EV_KEY && code == KEY_POWER && value == 1 {
                    let _ = tx.send(());
                    return;
                }
            }
        });
    }
    Ok(rx)
}

/// Whether a sysfs key capability bitmap (`capabilities/key`: hex words of the kernel's `long`
/// width, most significant first, space-separated) has bit `code` set.
fn has_key(bitmap: &str, code: u16) -> bool {
    const BITS: usize = 8 * std::mem::size_of::<libc::c_long>();
    let words: Vec<&str> = bitmap.split_whitespace().collect();
    let index = usize::from(code) / BITS;
    // The last word holds bits 0..BITS.
    let Some(word) = words
        .len()
        .checked_sub(index + 1)
        .and_then(|i| words.get(i))
    else {
        return false;
    };
    u64::from_str_radix(word, 16).is_ok_and(|w| w >> (usize::from(code) % BITS) & 1 == 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_capability_bitmaps() {
        // QEMU's ACPI power button on x86-64: KEY_POWER (116) only.
        assert!(has_key("10000000000000 0", KEY_POWER));
        assert!(!has_key("10000000000000 0", 115));
        // A longer map: words count from the end.
        assert!(has_key("ffff 0 0 fffffffffffffffe", 1));
        assert!(!has_key("ffff 0 0 fffffffffffffffe", 0));
        assert!(!has_key("ffff 0 0 fffffffffffffffe", 116));
        assert!(has_key("ffff 0 0 fffffffffffffffe", 3 * 64));
        assert!(!has_key("", KEY_POWER));
        assert!(!has_key("0", KEY_POWER));
    }
}

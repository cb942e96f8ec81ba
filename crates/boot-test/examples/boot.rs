//! Boots an image once and prints what the node reported.
//!
//! `cargo run -p imager-boot-test --example boot -- IMAGE [seabios|ovmf] [cdrom|usb]`

use std::process::ExitCode;

use imager_boot_test::{Attach, BootConfig, Firmware, boot_with};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(image) = args.first() else {
        eprintln!("usage: boot IMAGE [seabios|ovmf] [cdrom|usb]");
        return ExitCode::from(2);
    };
    let firmware = match args.get(1).map(String::as_str) {
        None | Some("seabios") => Firmware::SeaBios,
        Some("ovmf") => Firmware::Ovmf,
        Some(other) => {
            eprintln!("unknown firmware {other:?}: seabios or ovmf");
            return ExitCode::from(2);
        }
    };
    let attach = match args.get(2).map(String::as_str) {
        None | Some("cdrom") => Attach::Cdrom,
        Some("usb") => Attach::UsbDisk,
        Some(other) => {
            eprintln!("unknown attachment {other:?}: cdrom or usb");
            return ExitCode::from(2);
        }
    };
    let cfg = BootConfig::image(image, firmware, attach);
    match boot_with(&cfg, &mut |line| println!("{line}")) {
        Ok(outcome) => {
            println!(
                "== {}: done in {:.1} s, {} files reported",
                outcome.name,
                outcome.elapsed.as_secs_f64(),
                outcome.report.files.len()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

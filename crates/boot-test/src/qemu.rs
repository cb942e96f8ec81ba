//! Runs one QEMU guest to completion and judges the boot from its serial console.

use std::ffi::OsString;
use std::fmt;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use crate::console::{Console, TAIL_LINES};
use crate::report::NodeReport;
use crate::slots::{self, Slot};

/// Environment variable: a directory where every boot's full console is saved as `<name>.log`.
pub const LOG_DIR_ENV: &str = "IMAGER_BOOT_LOG_DIR";
/// Environment variable: when set (to anything but `0`), console lines are echoed to stderr live.
pub const ECHO_ENV: &str = "IMAGER_BOOT_ECHO";

/// The OVMF build that works with QEMU's default `pc` machine (no secure boot, no SMM).
pub const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
/// The matching variable store template; each boot gets a writable copy.
pub const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";
/// UEFI for arm64 `virt` machines (Debian package qemu-efi-aarch64), without secure boot. Both
/// files are the 64 MiB that QEMU's `virt` pflash banks must be.
pub const AAVMF_CODE: &str = "/usr/share/AAVMF/AAVMF_CODE.fd";
/// The matching variable store template; each boot gets a writable copy.
pub const AAVMF_VARS: &str = "/usr/share/AAVMF/AAVMF_VARS.fd";

/// The firmware the guest starts with; it also decides the machine: an x86-64 PC for SeaBIOS
/// and OVMF, an arm64 `virt` machine for AAVMF.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Firmware {
    /// Legacy BIOS (QEMU's built-in SeaBIOS).
    SeaBios,
    /// UEFI (OVMF).
    Ovmf,
    /// UEFI on arm64 (AAVMF, `qemu-system-aarch64 -M virt`).
    Aavmf,
}

impl Firmware {
    /// Whether the firmware is UEFI, with a code and a variable store in pflash.
    pub fn is_uefi(self) -> bool {
        matches!(self, Firmware::Ovmf | Firmware::Aavmf)
    }

    /// Whether the guest is an arm64 machine.
    pub fn is_arm64(self) -> bool {
        self == Firmware::Aavmf
    }
}

impl fmt::Display for Firmware {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Firmware::SeaBios => "seabios",
            Firmware::Ovmf => "ovmf",
            Firmware::Aavmf => "aavmf",
        })
    }
}

/// How an image is presented to the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Attach {
    /// A CD-ROM drive (IDE on a PC, SCSI on virtio-scsi on arm64 `virt`, which has no IDE): the
    /// firmware boots the El Torito catalog.
    Cdrom,
    /// A raw USB mass-storage disk (as after `dd` to a stick): the firmware boots the MBR
    /// (BIOS) or finds the ESP through the partition table (UEFI).
    UsbDisk,
    /// A virtio block disk (a VM's system disk, as a metal image is uploaded to a hypervisor).
    VirtioDisk,
    /// A SATA disk on an AHCI controller (a bare-metal machine's disk).
    SataDisk,
}

impl fmt::Display for Attach {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Attach::Cdrom => "cdrom",
            Attach::UsbDisk => "usb",
            Attach::VirtioDisk => "virtio",
            Attach::SataDisk => "sata",
        })
    }
}

/// What the guest boots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Media {
    /// A disk image (an ISO), through the firmware's own boot path.
    Image {
        /// The image file; it is never written to.
        path: PathBuf,
        /// CD-ROM or USB disk.
        attach: Attach,
    },
    /// A kernel and initramfs loaded by QEMU directly, skipping boot loaders and media. For
    /// exercising the node and this runner without an image.
    Kernel {
        /// The kernel (bzImage).
        kernel: PathBuf,
        /// The initramfs.
        initrd: PathBuf,
        /// The kernel command line.
        cmdline: String,
    },
}

/// One boot to run.
#[derive(Debug, Clone)]
pub struct BootConfig {
    /// What to boot.
    pub media: Media,
    /// BIOS or UEFI.
    pub firmware: Firmware,
    /// Guest memory.
    pub memory_mib: u32,
    /// How long the guest may run before it is killed; counted from QEMU's start, not from
    /// the wait for a free slot.
    pub timeout: Duration,
    /// Further QEMU arguments, appended last.
    pub extra_args: Vec<OsString>,
    /// Names the boot in messages and the saved log (`<name>.log`).
    pub name: String,
    /// The QEMU binary.
    pub qemu: PathBuf,
    /// OVMF firmware code (read-only pflash).
    pub ovmf_code: PathBuf,
    /// OVMF variable store template (copied per boot, the copy is the writable pflash).
    pub ovmf_vars: PathBuf,
    /// Further disks, attached as virtio block devices after the boot media and written in
    /// place (a node's own disk).
    pub data_disks: Vec<PathBuf>,
    /// Host loopback ports forwarded to guest TCP ports, `(host, guest)`, over QEMU's user
    /// networking on a virtio NIC (the guest is 10.0.2.15). No NIC without forwards.
    pub forwards: Vec<(u16, u16)>,
}

impl BootConfig {
    /// Boots `image` attached as `attach` under `firmware`, with the defaults: 1024 MiB,
    /// 240 s, named `<firmware>-<attach>`.
    pub fn image(image: impl Into<PathBuf>, firmware: Firmware, attach: Attach) -> Self {
        Self::new(
            Media::Image {
                path: image.into(),
                attach,
            },
            firmware,
            format!("{firmware}-{attach}"),
        )
    }

    /// Boots a kernel and initramfs directly (QEMU's `-kernel`), named `<firmware>-kernel`.
    pub fn kernel(
        kernel: impl Into<PathBuf>,
        initrd: impl Into<PathBuf>,
        cmdline: impl Into<String>,
        firmware: Firmware,
    ) -> Self {
        Self::new(
            Media::Kernel {
                kernel: kernel.into(),
                initrd: initrd.into(),
                cmdline: cmdline.into(),
            },
            firmware,
            format!("{firmware}-kernel"),
        )
    }

    fn new(media: Media, firmware: Firmware, name: String) -> Self {
        let (qemu, code, vars) = if firmware.is_arm64() {
            ("qemu-system-aarch64", AAVMF_CODE, AAVMF_VARS)
        } else {
            ("qemu-system-x86_64", OVMF_CODE, OVMF_VARS)
        };
        Self {
            media,
            firmware,
            memory_mib: 1024,
            timeout: Duration::from_secs(240),
            extra_args: Vec::new(),
            name,
            qemu: PathBuf::from(qemu),
            ovmf_code: PathBuf::from(code),
            ovmf_vars: PathBuf::from(vars),
            data_disks: Vec::new(),
            forwards: Vec::new(),
        }
    }

    /// Attaches `path` as a further virtio disk, written in place.
    pub fn with_data_disk(mut self, path: impl Into<PathBuf>) -> Self {
        self.data_disks.push(path.into());
        self
    }

    /// Forwards `127.0.0.1:host` to the guest's `guest` TCP port (adds the NIC).
    pub fn with_forward(mut self, host: u16, guest: u16) -> Self {
        self.forwards.push((host, guest));
        self
    }

    /// Sets the timeout.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sets the name used in messages and for the log file.
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Sets guest memory.
    pub fn with_memory_mib(mut self, mib: u32) -> Self {
        self.memory_mib = mib;
        self
    }

    /// Appends a QEMU argument.
    pub fn with_arg(mut self, arg: impl Into<OsString>) -> Self {
        self.extra_args.push(arg.into());
        self
    }

    /// The QEMU command line for this boot. `vars` is the writable OVMF variable store and
    /// `qmp` the control socket path.
    fn command(&self, vars: &Path, qmp: &Path) -> Command {
        let mut cmd = Command::new(&self.qemu);
        let arm64 = self.firmware.is_arm64();
        // TCG always: KVM exists on these machines but guests spin silently under it (and an
        // arm64 guest on an x86-64 host has no choice). Cortex-A57 rather than `max`: `max`
        // brings pointer authentication, which TCG emulates slowly, and nothing here needs it.
        if arm64 {
            cmd.args(["-accel", "tcg", "-machine", "virt", "-cpu", "cortex-a57"]);
            cmd.args(["-smp", "1"]);
        } else {
            cmd.args(["-accel", "tcg", "-machine", "pc", "-smp", "1"]);
        }
        cmd.arg("-m").arg(self.memory_mib.to_string());
        // No default devices (empty CD drive, floppy, NIC, VGA): the only boot candidate is ours.
        // -nographic (not -display none) makes QEMU ask SeaBIOS to mirror its own and ISOLINUX's
        // screen to the serial port, so BIOS-stage failures show up in the console too.
        cmd.args([
            "-nodefaults",
            "-no-user-config",
            "-nographic",
            "-vga",
            "none",
        ]);
        cmd.args(["-serial", "stdio", "-monitor", "none"]);
        // A reboot (panic=-1, triple fault) ends QEMU instead of looping; QMP tells it apart
        // from a power-off.
        cmd.arg("-no-reboot");
        // wait=on: QEMU does not start the guest before this runner listens, so no event is missed.
        cmd.arg("-chardev")
            .arg(opt_path("socket,id=qmp,server=on,wait=on,path=", qmp));
        cmd.args(["-mon", "chardev=qmp,mode=control"]);
        cmd.args(["-boot", "strict=on,menu=off"]);
        if self.firmware.is_uefi() {
            cmd.arg("-drive").arg(opt_path(
                "if=pflash,format=raw,unit=0,readonly=on,file=",
                &self.ovmf_code,
            ));
            cmd.arg("-drive")
                .arg(opt_path("if=pflash,format=raw,unit=1,file=", vars));
        }
        match &self.media {
            // bootindex (not -boot order=d) because OVMF honours only bootindex.
            Media::Image {
                path,
                attach: Attach::Cdrom,
            } => {
                cmd.arg("-drive").arg(opt_path(
                    "if=none,id=cd,media=cdrom,readonly=on,format=raw,file=",
                    path,
                ));
                if arm64 {
                    cmd.args(["-device", "virtio-scsi-pci,id=scsi"]);
                    cmd.args(["-device", "scsi-cd,drive=cd,bus=scsi.0,bootindex=0"]);
                } else {
                    cmd.args(["-device", "ide-cd,drive=cd,bootindex=0"]);
                }
            }
            // snapshot=on: the guest may write to its "stick", the image file stays untouched.
            Media::Image {
                path,
                attach: Attach::UsbDisk,
            } => {
                cmd.args(["-device", "qemu-xhci,id=xhci"]);
                cmd.arg("-drive").arg(opt_path(
                    "if=none,id=stick,format=raw,snapshot=on,file=",
                    path,
                ));
                cmd.args(["-device", "usb-storage,bus=xhci.0,drive=stick,bootindex=0"]);
            }
            // snapshot=on: the guest may write to the disk, the image file stays untouched.
            Media::Image {
                path,
                attach: attach @ (Attach::VirtioDisk | Attach::SataDisk),
            } => {
                cmd.arg("-drive").arg(opt_path(
                    "if=none,id=disk,format=raw,snapshot=on,file=",
                    path,
                ));
                if *attach == Attach::VirtioDisk {
                    cmd.args(["-device", "virtio-blk-pci,drive=disk,bootindex=0"]);
                } else {
                    cmd.args(["-device", "ahci,id=ahci"]);
                    cmd.args(["-device", "ide-hd,drive=disk,bus=ahci.0,bootindex=0"]);
                }
            }
            Media::Kernel {
                kernel,
                initrd,
                cmdline,
            } => {
                cmd.arg("-kernel").arg(kernel);
                cmd.arg("-initrd").arg(initrd);
                cmd.arg("-append").arg(cmdline);
            }
        }
        for (i, disk) in self.data_disks.iter().enumerate() {
            cmd.arg("-drive").arg(opt_path(
                &format!("if=none,id=data{i},format=raw,file="),
                disk,
            ));
            cmd.args(["-device", &format!("virtio-blk-pci,drive=data{i}")]);
        }
        if !self.forwards.is_empty() {
            // restrict=on: the guest reaches nothing outside; forwarded ports still come in,
            // on the host's loopback only.
            let mut netdev = String::from("user,id=net0,restrict=on");
            for (host, guest) in &self.forwards {
                netdev.push_str(&format!(",hostfwd=tcp:127.0.0.1:{host}-:{guest}"));
            }
            cmd.arg("-netdev").arg(netdev);
            cmd.args(["-device", "virtio-net-pci,netdev=net0"]);
        }
        cmd.args(&self.extra_args);
        cmd
    }

    /// Files that must exist before QEMU is worth starting.
    fn inputs(&self) -> Vec<(&'static str, &Path)> {
        let mut inputs = Vec::new();
        match &self.media {
            Media::Image { path, .. } => inputs.push(("boot image", path.as_path())),
            Media::Kernel { kernel, initrd, .. } => {
                inputs.push(("kernel", kernel.as_path()));
                inputs.push(("initramfs", initrd.as_path()));
            }
        }
        for disk in &self.data_disks {
            inputs.push(("data disk", disk.as_path()));
        }
        match self.firmware {
            Firmware::Ovmf => {
                inputs.push((
                    "OVMF firmware (Debian package ovmf)",
                    self.ovmf_code.as_path(),
                ));
                inputs.push((
                    "OVMF variable store (Debian package ovmf)",
                    self.ovmf_vars.as_path(),
                ));
            }
            Firmware::Aavmf => {
                inputs.push((
                    "AAVMF firmware (Debian package qemu-efi-aarch64)",
                    self.ovmf_code.as_path(),
                ));
                inputs.push((
                    "AAVMF variable store (Debian package qemu-efi-aarch64)",
                    self.ovmf_vars.as_path(),
                ));
            }
            Firmware::SeaBios => {}
        }
        inputs
    }
}

/// `prefix` + `path` for a QEMU `-drive`/`-chardev` option string, where a literal comma must
/// be doubled.
fn opt_path(prefix: &str, path: &Path) -> OsString {
    let mut s = OsString::from(prefix);
    s.push(path.as_os_str().to_string_lossy().replace(',', ",,"));
    s
}

/// A boot that ran to the end: the node reported `done` and the guest powered itself off.
#[derive(Debug, Clone)]
pub struct BootOutcome {
    /// The config's name.
    pub name: String,
    /// What the node reported.
    pub report: NodeReport,
    /// The whole console.
    pub console: Console,
    /// From QEMU's start to its exit.
    pub elapsed: Duration,
    /// Where the console was saved, when [`LOG_DIR_ENV`] is set.
    pub log_path: Option<PathBuf>,
}

/// Why a boot that ran did not end well.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BootFailure {
    /// The guest was still running at the timeout and was killed.
    Timeout {
        /// The timeout.
        after: Duration,
        /// The node had reported `done` but the guest did not power off.
        done_seen: bool,
    },
    /// The node reported `error` lines.
    NodeError(Vec<String>),
    /// QEMU itself failed (bad arguments, missing firmware, crash).
    QemuFailed {
        /// Its exit status.
        status: String,
    },
    /// QEMU exited but the node never reported `done` (kernel panic, reset, no boot device).
    NoDone {
        /// The node had reported `start`.
        started: bool,
        /// QEMU's shutdown reason, e.g. `guest-reset`, when known.
        shutdown: Option<String>,
    },
    /// The console showed that the guest cannot get any further (firmware found nothing to boot,
    /// kernel panic), so the boot was ended early instead of waiting for the timeout.
    Stuck {
        /// The console line that showed it.
        line: String,
    },
    /// The test cut the power ([`Guest::kill`]).
    Killed,
    /// The node reported `done` but the guest reset or stopped instead of powering off.
    NotPoweredOff {
        /// QEMU's shutdown reason, when known.
        shutdown: Option<String>,
    },
}

impl fmt::Display for BootFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let reason = |r: &Option<String>| r.clone().unwrap_or_else(|| "unknown".into());
        match self {
            BootFailure::Timeout { after, done_seen } => {
                write!(f, "timed out after {} s", after.as_secs())?;
                if *done_seen {
                    write!(
                        f,
                        " (the node reported done but the guest did not power off)"
                    )?;
                }
                Ok(())
            }
            BootFailure::NodeError(errors) => {
                write!(f, "the node reported an error: {}", errors.join("; "))
            }
            BootFailure::QemuFailed { status } => write!(f, "QEMU failed ({status})"),
            BootFailure::Killed => write!(f, "the test cut the power (killed QEMU)"),
            BootFailure::Stuck { line } => {
                write!(f, "the guest cannot boot any further: {line:?}")
            }
            BootFailure::NoDone { started, shutdown } => write!(
                f,
                "the guest stopped (QEMU shutdown reason: {}) before the node reported done; \
                 the node {}",
                reason(shutdown),
                if *started {
                    "had started"
                } else {
                    "never started"
                }
            ),
            BootFailure::NotPoweredOff { shutdown } => write!(
                f,
                "the node reported done but the guest did not power off cleanly \
                 (QEMU shutdown reason: {})",
                reason(shutdown)
            ),
        }
    }
}

/// A boot that ran but failed, with what is needed to see why.
#[derive(Debug, Clone)]
pub struct FailedBoot {
    /// The config's name.
    pub name: String,
    /// What went wrong.
    pub failure: BootFailure,
    /// What the node reported before that.
    pub report: NodeReport,
    /// The whole console.
    pub console: Console,
    /// QEMU's own error output.
    pub stderr: String,
    /// From QEMU's start to its end.
    pub elapsed: Duration,
    /// Where the console was saved, when [`LOG_DIR_ENV`] is set.
    pub log_path: Option<PathBuf>,
}

impl fmt::Display for FailedBoot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "boot {} failed after {:.1} s: {}",
            self.name,
            self.elapsed.as_secs_f64(),
            self.failure
        )?;
        writeln!(f, "last {TAIL_LINES} console lines:")?;
        write!(f, "{}", self.console.tail(TAIL_LINES))?;
        let stderr = self.stderr.trim();
        if !stderr.is_empty() {
            write!(f, "\nQEMU stderr:\n{stderr}")?;
        }
        if let Some(log) = &self.log_path {
            write!(f, "\nfull console log: {}", log.display())?;
        }
        Ok(())
    }
}

/// A boot could not be run, or ran and failed.
#[derive(Debug, thiserror::Error)]
pub enum BootError {
    /// An input file is missing.
    #[error("{what} {} does not exist", path.display())]
    MissingInput {
        /// What the file is for.
        what: &'static str,
        /// Where it was expected.
        path: PathBuf,
    },
    /// Preparing the boot (temporary directory, OVMF variable copy) failed.
    #[error("cannot prepare the boot {name}: {what}: {source}")]
    Prepare {
        /// The config's name.
        name: String,
        /// The step that failed.
        what: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// QEMU could not be started.
    #[error(
        "cannot start {} (Debian package qemu-system-x86, or qemu-system-arm for arm64): {source}",
        qemu.display()
    )]
    Spawn {
        /// The binary.
        qemu: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The guest ran but the boot failed; the message carries the console's tail.
    #[error("{0}")]
    Failed(Box<FailedBoot>),
}

/// Boots and waits for the node to report `done` and power off.
///
/// Succeeds only when the node started, reported `done` and no `error`, and the guest powered
/// itself off (QEMU's shutdown reason `guest-shutdown`, exit status 0). Blocks first while
/// [`crate::slots::limit`] other boots run in this process.
pub fn boot(cfg: &BootConfig) -> Result<BootOutcome, BootError> {
    boot_with(cfg, &mut |_| {})
}

/// [`boot`], calling `on_line` with every console line as it arrives.
pub fn boot_with(
    cfg: &BootConfig,
    on_line: &mut dyn FnMut(&str),
) -> Result<BootOutcome, BootError> {
    boot_controlled(cfg, &mut |line, _| on_line(line))
}

/// The running guest, as a console-line callback sees it: what a test does to the machine while
/// it runs. The callback runs on the runner's thread; while it works (say, pulls images from the
/// guest), console output queues up and the timeout keeps counting.
#[derive(Debug)]
pub struct Guest {
    qmp: Option<std::sync::Mutex<UnixStream>>,
    pid: u32,
    started: Instant,
    killed: std::sync::atomic::AtomicBool,
}

impl Guest {
    /// Presses the ACPI power button (QMP `system_powerdown`, what a hypervisor's "shut down"
    /// does). The guest decides what to do about it.
    pub fn press_power_button(&self) -> std::io::Result<()> {
        let Some(qmp) = &self.qmp else {
            return Err(std::io::Error::new(
                std::io::ErrorKind::NotConnected,
                "no QMP connection to QEMU",
            ));
        };
        let mut qmp = qmp
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        qmp.write_all(b"{\"execute\": \"system_powerdown\"}\n")
    }

    /// Cuts the power: SIGKILL to QEMU, so nothing in the guest gets to finish (disk writes the
    /// guest completed are in the image file; what it had not written is lost). The boot then
    /// ends with [`BootFailure::Killed`].
    pub fn kill(&self) {
        self.killed.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(pid) = rustix::process::Pid::from_raw(self.pid as i32) {
            // It may have exited already; then there is nothing to cut.
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
        }
    }

    /// Time since QEMU started (power-on).
    pub fn since_power_on(&self) -> Duration {
        self.started.elapsed()
    }
}

/// [`boot_with`], with the [`Guest`] handed to the callback too.
pub fn boot_controlled(
    cfg: &BootConfig,
    on_line: &mut dyn FnMut(&str, &Guest),
) -> Result<BootOutcome, BootError> {
    for (what, path) in cfg.inputs() {
        if !path.is_file() {
            return Err(BootError::MissingInput {
                what,
                path: path.to_path_buf(),
            });
        }
    }
    let prepare = |what: &str| {
        let name = cfg.name.clone();
        let what = what.to_string();
        move |source| BootError::Prepare { name, what, source }
    };

    let _slot = Slot::acquire(slots::limit());
    let scratch = tempfile::Builder::new()
        .prefix("imager-boot-")
        .tempdir()
        .map_err(prepare("create a temporary directory"))?;
    let vars = scratch.path().join("OVMF_VARS.fd");
    if cfg.firmware.is_uefi() {
        std::fs::copy(&cfg.ovmf_vars, &vars).map_err(prepare(&format!(
            "copy {} to {}",
            cfg.ovmf_vars.display(),
            vars.display()
        )))?;
    }
    let qmp_path = scratch.path().join("qmp.sock");

    let mut cmd = cfg.command(&vars, &qmp_path);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let start = Instant::now();
    let deadline = start + cfg.timeout;
    let child = cmd.spawn().map_err(|source| BootError::Spawn {
        qemu: cfg.qemu.clone(),
        source,
    })?;
    let mut child = KillOnDrop(child);

    let stderr_thread = child.0.stderr.take().map(|mut stderr| {
        thread::spawn(move || {
            let mut text = Vec::new();
            // Best effort: QEMU's stderr only decorates a failure message.
            let _ = stderr.read_to_end(&mut text);
            String::from_utf8_lossy(&text).into_owned()
        })
    });
    let (tx, rx) = mpsc::channel::<Vec<u8>>();
    let stdout_thread = child.0.stdout.take().map(|mut stdout| {
        thread::spawn(move || {
            let mut buf = [0u8; 8192];
            loop {
                match stdout.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        if tx.send(buf[..n].to_vec()).is_err() {
                            break;
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(_) => break,
                }
            }
        })
    });

    let qmp = connect_qmp(&qmp_path, &mut child.0, deadline).and_then(|mut stream| {
        // QMP takes commands only after capabilities negotiation; sent here, before the guest
        // handle can send any.
        stream
            .write_all(b"{\"execute\": \"qmp_capabilities\"}\n")
            .ok()?;
        let writer = stream.try_clone().ok()?;
        Some((stream, writer))
    });
    let (qmp_thread, qmp_writer) = match qmp {
        Some((stream, writer)) => (
            Some(thread::spawn(move || watch_qmp(stream))),
            Some(std::sync::Mutex::new(writer)),
        ),
        None => (None, None),
    };
    let guest = Guest {
        qmp: qmp_writer,
        pid: child.0.id(),
        started: start,
        killed: std::sync::atomic::AtomicBool::new(false),
    };

    let echo = std::env::var_os(ECHO_ENV).is_some_and(|v| v != "0");
    let mut console = Console::new();
    let emit = |line: &str, on_line: &mut dyn FnMut(&str, &Guest)| {
        if echo {
            eprintln!("[{}] {line}", cfg.name);
        }
        on_line(line, &guest);
    };
    let mut timed_out = false;
    let mut stuck: Option<String> = None;
    let mut deadline = deadline;
    loop {
        let now = Instant::now();
        if now >= deadline {
            timed_out = true;
            break;
        }
        match rx.recv_timeout(deadline - now) {
            Ok(bytes) => {
                for line in console.push(&bytes) {
                    emit(&line, on_line);
                    if stuck.is_none() && is_dead_end(&line) {
                        stuck = Some(line);
                        // A little longer, for the panic's backtrace or a last firmware message.
                        deadline = deadline.min(Instant::now() + STUCK_GRACE);
                    }
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                timed_out = true;
                break;
            }
            // QEMU closed its stdout: it is exiting.
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }

    // The console is closed (or time is up); QEMU should be gone in a moment.
    let status = if timed_out {
        None
    } else {
        wait_until(&mut child.0, deadline)
    };
    let status = match status {
        Some(status) => Some(status),
        None => {
            timed_out = true;
            // Killing a process that has just exited fails harmlessly.
            let _ = child.0.kill();
            let _ = child.0.wait();
            None
        }
    };
    let elapsed = start.elapsed();
    // The pipes are closed now that QEMU is gone, so these threads end.
    if let Some(t) = stdout_thread {
        let _ = t.join();
    }
    // Bytes the reader sent after the loop stopped listening.
    while let Ok(bytes) = rx.try_recv() {
        for line in console.push(&bytes) {
            emit(&line, on_line);
        }
    }
    if let Some(line) = console.finish() {
        emit(&line, on_line);
    }
    let stderr = stderr_thread
        .and_then(|t| t.join().ok())
        .map(|text| without_qmp_notice(&text))
        .unwrap_or_default();
    let shutdown = qmp_thread.and_then(|t| t.join().ok()).flatten();

    let log_path = save_log(&cfg.name, &console);
    let report = NodeReport::parse(&console.text());
    let failure = if guest.killed.load(std::sync::atomic::Ordering::SeqCst) {
        Some(BootFailure::Killed)
    } else if !report.errors.is_empty() {
        Some(BootFailure::NodeError(report.errors.clone()))
    } else if let Some(line) = stuck {
        Some(BootFailure::Stuck { line })
    } else if timed_out {
        Some(BootFailure::Timeout {
            after: cfg.timeout,
            done_seen: report.done,
        })
    } else if let Some(status) = status.filter(|s| !s.success()) {
        Some(BootFailure::QemuFailed {
            status: describe_status(status),
        })
    } else if !report.done {
        Some(BootFailure::NoDone {
            started: report.started,
            shutdown,
        })
    } else if shutdown.as_deref() != Some("guest-shutdown") {
        Some(BootFailure::NotPoweredOff { shutdown })
    } else {
        None
    };
    match failure {
        Some(failure) => Err(BootError::Failed(Box::new(FailedBoot {
            name: cfg.name.clone(),
            failure,
            report,
            console,
            stderr,
            elapsed,
            log_path,
        }))),
        None => Ok(BootOutcome {
            name: cfg.name.clone(),
            report,
            console,
            elapsed,
            log_path,
        }),
    }
}

/// How long a boot may go on after the console showed a dead end.
const STUCK_GRACE: Duration = Duration::from_secs(3);

/// Console lines after which a guest never reaches the node: waiting for the timeout would only
/// make the failure slower to see.
fn is_dead_end(line: &str) -> bool {
    // SeaBIOS, when no device (with -boot strict=on: not ours) is bootable.
    line.contains("No bootable device")
        // The hybrid MBR code (isohdpfx) and ISOLINUX give up and halt or wait for a key.
        || line.contains("isolinux.bin missing or corrupt")
        || line.contains("Operating system load error")
        || line.contains("Image checksum error")
        || line.contains("Boot failed: press a key to retry")
        || line.contains("Could not find kernel image")
        // OVMF falls back to its shell when no boot option worked; the shell waits forever.
        || (line.contains("BdsDxe: starting") && line.contains("EFI Internal Shell"))
        // Without panic=-1 a panicking kernel hangs.
        || line.contains("Kernel panic - not syncing")
}

/// QEMU announces on stderr that it waits for the QMP client; that is this runner, not news.
fn without_qmp_notice(stderr: &str) -> String {
    stderr
        .lines()
        .filter(|l| !l.contains("QEMU waiting for connection on"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Kills QEMU if the runner returns early (an error, a panic in a callback).
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Connects to QEMU's QMP socket, which appears once QEMU has parsed its arguments. None when
/// QEMU exits first (bad arguments: its stderr says why) or time runs out.
fn connect_qmp(path: &Path, child: &mut Child, deadline: Instant) -> Option<UnixStream> {
    loop {
        if let Ok(stream) = UnixStream::connect(path) {
            return Some(stream);
        }
        if !matches!(child.try_wait(), Ok(None)) || Instant::now() >= deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Negotiates QMP and returns the reason of the guest's SHUTDOWN event (`guest-shutdown` for a
/// power-off, `guest-reset` for a reboot or panic), once QEMU closes the socket.
fn watch_qmp(stream: UnixStream) -> Option<String> {
    let mut reason = None;
    for line in BufReader::new(stream).lines() {
        let Ok(line) = line else { break };
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        if msg["event"] == "SHUTDOWN" && reason.is_none() {
            reason = msg["data"]["reason"].as_str().map(str::to_string);
        }
    }
    reason
}

/// Waits for QEMU to exit, until `deadline`.
fn wait_until(child: &mut Child, deadline: Instant) -> Option<ExitStatus> {
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(20)),
            _ => return None,
        }
    }
}

fn describe_status(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        _ => status.to_string(),
    }
}

/// Saves the raw console under `$IMAGER_BOOT_LOG_DIR/<name>.log`. A failure to save is reported
/// on stderr but does not fail the boot: the log is a diagnosis aid, not the result.
fn save_log(name: &str, console: &Console) -> Option<PathBuf> {
    let dir = PathBuf::from(std::env::var_os(LOG_DIR_ENV)?);
    let file: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    let path = dir.join(format!("{file}.log"));
    let saved = std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(&path, console.raw()));
    match saved {
        Ok(()) => Some(path),
        Err(e) => {
            eprintln!(
                "imager-boot-test: cannot save the console log {}: {e}",
                path.display()
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(cmd: &Command) -> Vec<String> {
        cmd.get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    fn after<'a>(args: &'a [String], flag: &str) -> Vec<&'a str> {
        args.windows(2)
            .filter(|w| w[0] == flag)
            .map(|w| w[1].as_str())
            .collect()
    }

    #[test]
    fn cdrom_under_ovmf() {
        let cfg = BootConfig::image("/tmp/a,b.iso", Firmware::Ovmf, Attach::Cdrom);
        assert_eq!(cfg.name, "ovmf-cdrom");
        let a = args(&cfg.command(Path::new("/s/vars.fd"), Path::new("/s/qmp.sock")));
        assert_eq!(after(&a, "-accel"), ["tcg"]);
        assert_eq!(after(&a, "-m"), ["1024"]);
        assert!(a.contains(&"-no-reboot".to_string()));
        assert_eq!(
            after(&a, "-drive"),
            [
                "if=pflash,format=raw,unit=0,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd",
                "if=pflash,format=raw,unit=1,file=/s/vars.fd",
                // The comma in the file name is doubled, or QEMU would split the option there.
                "if=none,id=cd,media=cdrom,readonly=on,format=raw,file=/tmp/a,,b.iso",
            ]
        );
        assert_eq!(after(&a, "-device"), ["ide-cd,drive=cd,bootindex=0"]);
    }

    #[test]
    fn cdrom_under_aavmf_is_scsi_on_an_arm64_virt_machine() {
        let cfg = BootConfig::image("/x.iso", Firmware::Aavmf, Attach::Cdrom);
        assert_eq!(cfg.name, "aavmf-cdrom");
        assert_eq!(cfg.qemu, Path::new("qemu-system-aarch64"));
        let a = args(&cfg.command(Path::new("/s/vars.fd"), Path::new("/s/qmp.sock")));
        assert_eq!(after(&a, "-machine"), ["virt"]);
        assert_eq!(after(&a, "-cpu"), ["cortex-a57"]);
        assert_eq!(
            after(&a, "-drive"),
            [
                "if=pflash,format=raw,unit=0,readonly=on,file=/usr/share/AAVMF/AAVMF_CODE.fd",
                "if=pflash,format=raw,unit=1,file=/s/vars.fd",
                "if=none,id=cd,media=cdrom,readonly=on,format=raw,file=/x.iso",
            ]
        );
        assert_eq!(
            after(&a, "-device"),
            [
                "virtio-scsi-pci,id=scsi",
                "scsi-cd,drive=cd,bus=scsi.0,bootindex=0"
            ]
        );
    }

    #[test]
    fn usb_under_seabios_has_no_pflash_and_a_snapshot() {
        let cfg = BootConfig::image("/x.iso", Firmware::SeaBios, Attach::UsbDisk)
            .with_memory_mib(512)
            .with_arg("-S");
        let a = args(&cfg.command(Path::new("/s/vars.fd"), Path::new("/s/qmp.sock")));
        assert_eq!(
            after(&a, "-drive"),
            ["if=none,id=stick,format=raw,snapshot=on,file=/x.iso"]
        );
        assert_eq!(
            after(&a, "-device"),
            [
                "qemu-xhci,id=xhci",
                "usb-storage,bus=xhci.0,drive=stick,bootindex=0"
            ]
        );
        assert_eq!(after(&a, "-m"), ["512"]);
        assert_eq!(a.last().map(String::as_str), Some("-S"));
    }

    #[test]
    fn missing_inputs_fail_before_qemu_starts() {
        let cfg = BootConfig::image(
            "/nonexistent/metal-amd64.iso",
            Firmware::SeaBios,
            Attach::Cdrom,
        )
        .with_arg("this would make QEMU fail");
        match boot(&cfg) {
            Err(BootError::MissingInput { what, path }) => {
                assert_eq!(what, "boot image");
                assert_eq!(path, Path::new("/nonexistent/metal-amd64.iso"));
            }
            other => panic!("expected MissingInput, got {other:?}"),
        }
    }

    #[test]
    fn dead_ends_are_recognised_and_normal_lines_are_not() {
        for line in [
            "No bootable device.  Retrying in 60 seconds.",
            "ISOLINUX 6.04 20200816 EHDDisolinux: Image checksum error, sorry...",
            "BdsDxe: starting Boot0002 \"EFI Internal Shell\" from Fv(7CB8BDC9)",
            "[    2.1] Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000000",
        ] {
            assert!(is_dead_end(line), "{line}");
        }
        for line in [
            "Booting from DVD/CD...",
            "BdsDxe: starting Boot0001 \"UEFI QEMU DVD-ROM QM00003 \" from PciRoot(0x0)",
            "imager-node-init: done",
            "[    3.1] reboot: Power down",
        ] {
            assert!(!is_dead_end(line), "{line}");
        }
    }

    #[test]
    fn the_qmp_notice_is_dropped_from_stderr() {
        let stderr = "qemu-system-x86_64: -chardev socket,id=qmp: info: QEMU waiting for connection on: disconnected:unix:/tmp/q.sock,server=on\nqemu-system-x86_64: real problem\n";
        assert_eq!(
            without_qmp_notice(stderr),
            "qemu-system-x86_64: real problem"
        );
    }

    #[test]
    fn failure_message_shows_the_tail_and_stderr() {
        let mut console = Console::new();
        for i in 0..80 {
            console.push(format!("line {i}\r\n").as_bytes());
        }
        let failed = FailedBoot {
            name: "seabios-cdrom".into(),
            failure: BootFailure::Timeout {
                after: Duration::from_secs(240),
                done_seen: false,
            },
            report: NodeReport::default(),
            console,
            stderr: "qemu: warning\n".into(),
            elapsed: Duration::from_millis(240_100),
            log_path: None,
        };
        let text = BootError::Failed(Box::new(failed)).to_string();
        assert!(
            text.starts_with("boot seabios-cdrom failed after 240.1 s: timed out after 240 s\n"),
            "{text}"
        );
        assert!(text.contains("    | line 30\n"), "{text}");
        assert!(text.contains("    | line 79\n"), "{text}");
        assert!(!text.contains("| line 29\n"), "{text}");
        assert!(text.ends_with("QEMU stderr:\nqemu: warning"), "{text}");
    }
}

//! `xenkvm`: run unmodified Xen guests on Linux KVM hosts.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use std::os::unix::fs::FileTypeExt;

mod balloon;
mod boot;
mod builder;
mod console;
mod control;
mod create;
mod host_profile;
mod hotplug;
mod kvm_regs;
mod layout;
mod loader;
mod logcap;
mod memory;
mod migrate;
mod platform;
mod pvdev;
mod pvh;
mod ring0;
mod ring0_fast;
mod seccomp;
mod smp;
mod vcpu;
mod vm;
mod xs;

#[derive(Parser)]
#[command(
    name = "xenkvm",
    version,
    about = "Run unmodified Xen guests on Linux KVM hosts"
)]
struct Cli {
    /// More monitor logging (-v info, -vv debug, -vvv trace).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    /// Run directory for domain sockets, pid and log files (default:
    /// $XENKVM_RUN_DIR, $XDG_RUNTIME_DIR/xenkvm, /run/xenkvm for root).
    #[arg(long, global = true, value_name = "DIR")]
    run_dir: Option<PathBuf>,
    /// Run the monitor without its seccomp system-call filter (also:
    /// XENKVM_SECCOMP=0); see docs/sandbox.md.
    #[arg(long, global = true)]
    no_seccomp: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a PV guest in the foreground with its console on this terminal.
    Run(RunArgs),
    /// Start a domain from an xl.cfg file (in the background unless -F).
    Create(create::CreateArgs),
    /// List domains in xl's layout (Name, ID, Mem, VCPUs, State, Time(s)).
    List {
        /// Print JSON: `[{"domid": N, "config": {...}, "info": {...}}]`.
        #[arg(short = 'l', long)]
        long: bool,
        /// Only these domains (names or ids).
        domains: Vec<String>,
    },
    /// Attach to a domain's console; Ctrl-] detaches (so does the end of input).
    Console {
        /// Domain name or id.
        domain: String,
    },
    /// Ask the guest to power off (xenstore control/shutdown).
    Shutdown {
        /// Every domain (Domain-0, the host, excepted).
        #[arg(short = 'a', long, conflicts_with = "domain")]
        all: bool,
        /// Wait until the domain has shut down.
        #[arg(short = 'w', long)]
        wait: bool,
        /// With -w: give up after SECS (0: wait for ever), say so and exit 1;
        /// `xenkvm destroy` then stops the domain at once.
        #[arg(short = 't', long, value_name = "SECS", default_value_t = control::verbs::SHUTDOWN_WAIT_S, requires = "wait")]
        timeout: u64,
        /// Domain name or id.
        #[arg(required_unless_present = "all")]
        domain: Option<String>,
    },
    /// Ask the guest to reboot (xenstore control/shutdown).
    Reboot {
        /// Domain name or id.
        domain: String,
    },
    /// Stop a domain at once.
    Destroy {
        /// Domain name or id.
        domain: String,
    },
    /// Pause a domain's vCPUs.
    Pause {
        /// Domain name or id.
        domain: String,
    },
    /// Resume a paused domain.
    Unpause {
        /// Domain name or id.
        domain: String,
    },
    /// Host information as `key : value` lines, like `xl info`.
    Info,
    /// Print a domain's id.
    Domid {
        /// Domain name.
        name: String,
    },
    /// Print a domain's name.
    Domname {
        /// Domain id.
        id: String,
    },
    /// How long domains have been up, as `xl uptime`.
    Uptime {
        /// Short format: ` HH:MM:SS up TIME, NAME (ID)`.
        #[arg(short = 's')]
        short: bool,
        /// Only these domains (names or ids).
        domains: Vec<String>,
    },
    /// The domains' vCPUs: host CPU, state, CPU time, affinity.
    #[command(name = "vcpu-list")]
    VcpuList {
        /// Only these domains (names or ids).
        domains: Vec<String>,
    },
    /// The domain monitors' logs (xenkvm's "hypervisor" log; the guest's
    /// kernel log is on its console).
    Dmesg {
        /// Only these domains (names or ids); all, prefixed by name, if none.
        domains: Vec<String>,
    },
    /// Set how many vCPUs the guest has online (CPU hotplug through xenstore).
    #[command(name = "vcpu-set")]
    VcpuSet {
        /// Domain name or id.
        domain: String,
        /// vCPUs to have online: 1 to the domain's `vcpus`.
        count: u32,
    },
    /// Set the guest's memory target: its balloon driver gives memory back
    /// or takes more, up to its maxmem (xenstore memory/target).
    #[command(name = "mem-set")]
    MemSet {
        /// Domain name or id.
        domain: String,
        /// MiB, or with a unit: 512m, 1g.
        size: String,
    },
    /// Set the domain's maximum memory (at most its maxmem at creation).
    #[command(name = "mem-max")]
    MemMax {
        /// Domain name or id.
        domain: String,
        /// MiB, or with a unit: 512m, 1g.
        size: String,
    },
    /// One screen of `xentop -b -i 1`: CPU, memory, vCPUs and devices per domain.
    Top,
    /// Send a magic SysRq key to the guest (xenstore control/sysrq).
    Sysrq {
        /// Domain name or id.
        domain: String,
        /// The key, e.g. `h` (help), `s` (sync), `b` (reboot now).
        key: String,
    },
    /// Suspend the guest, write it to FILE and destroy the domain (`xl save`).
    Save {
        /// Domain name or id.
        domain: String,
        file: std::path::PathBuf,
    },
    /// Start a domain from a file written by `save` or by Xen's `xl save`
    /// (`xl restore [CONFIG] FILE`): CONFIG, an xl.cfg, replaces the
    /// configuration the file carries (for paths that differ on this host).
    Restore {
        /// Leave the restored domain paused.
        #[arg(short = 'p')]
        paused: bool,
        /// `[CONFIG] FILE`.
        #[arg(num_args = 1..=2, required = true, value_name = "[CONFIG] FILE")]
        files: Vec<std::path::PathBuf>,
    },
    /// Send a running domain live to another xenkvm (`xl migrate`):
    /// through `ssh HOST xenkvm migrate-receive`, or to a receiver
    /// listening on a unix socket (`--socket`).
    Migrate {
        /// The receiver's unix socket (`migrate-receive --socket`).
        #[arg(long)]
        socket: Option<std::path::PathBuf>,
        /// The transport command run before `HOST xenkvm migrate-receive`.
        #[arg(long, default_value = "ssh")]
        ssh: String,
        /// Domain name or id.
        domain: String,
        host: Option<String>,
    },
    /// Take a migrating domain (from stdin, or the first connection to
    /// `--socket PATH`) and run it here.
    MigrateReceive {
        #[arg(long)]
        socket: Option<std::path::PathBuf>,
    },
    #[command(flatten)]
    Dev(control::devverbs::DevCmd),
    /// Serve the control API for one domain, waiting for `POST /v1/domains`
    /// (what `create` starts in the background).
    Monitor {
        /// The API socket to listen on.
        #[arg(long)]
        api_socket: PathBuf,
        /// This process's log file (moved into the domain's directory).
        #[arg(long)]
        log: Option<PathBuf>,
    },
    /// Serve a standalone xenstore on a unix socket (for Xen's tools).
    Xenstored {
        /// Socket path; point XENSTORED_PATH at it.
        #[arg(long)]
        socket: PathBuf,
    },
}

#[derive(clap::Args)]
struct RunArgs {
    /// Kernel: a bzImage (vmlinuz) or an ELF vmlinux with Xen PV notes.
    /// Not needed with --bootloader.
    #[arg(long, required_unless_present = "bootloader")]
    kernel: Option<PathBuf>,
    /// Initial ramdisk, passed as the PV module.
    #[arg(long)]
    initrd: Option<PathBuf>,
    /// Kernel command line.
    #[arg(long, default_value = "console=hvc0")]
    cmdline: String,
    /// Guest memory in MiB.
    #[arg(long, default_value_t = 256)]
    memory: u64,
    /// Most memory the guest may balloon up to, MiB (xl's `maxmem`;
    /// default: `--memory`).
    #[arg(long)]
    maxmem: Option<u64>,
    /// Number of vCPUs.
    #[arg(long, default_value_t = 1)]
    vcpus: u32,
    /// Domain name (as in xenstore and `xenkvm list`).
    #[arg(long, default_value = "guest")]
    name: String,
    /// Unix socket for the domain's xenstore (default: in the run directory).
    #[arg(long)]
    xenstore_socket: Option<PathBuf>,
    /// At the end, print exit and hypercall counts as `xenkvm-stats` lines; and let
    /// the guest read its exit counters (xenkvm's CPUID leaf 0x4000f000 through
    /// forced emulation, for scripts/bench).
    #[arg(long)]
    stats: bool,
    /// What a guest reboot does: start the guest again (xl's default) or exit.
    #[arg(long, value_enum, default_value_t = OnReboot::Restart)]
    on_reboot: OnReboot,
    /// A PV disk, in xl's disk syntax: `target=/img.qcow2,vdev=xvda,access=rw,format=qcow2`
    /// or `file:/img,xvda1,w`. Repeat for more disks.
    #[arg(long = "disk", value_name = "SPEC")]
    disks: Vec<String>,
    /// A PV network interface, in xl's vif syntax: `mac=00:16:3e:..,bridge=br0`
    /// (empty for defaults). Repeat for more interfaces.
    #[arg(long = "net", value_name = "SPEC")]
    nets: Vec<String>,
    /// Boot the kernel found on the first disk, as Xen's pygrub does (`pygrub`).
    #[arg(long)]
    bootloader: Option<String>,
    /// Arguments for the boot loader, e.g. `--entry=1` (repeatable).
    #[arg(
        long = "bootloader-arg",
        value_name = "ARG",
        allow_hyphen_values = true
    )]
    bootloader_args: Vec<String>,
    /// The guest's domain id (in its xenstore, and in tap names `vif<domid>.<n>`);
    /// default: the lowest id free in the run directory (shared with `create`).
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..0x7ff0))]
    domid: Option<u16>,
    /// The guest type: `pv`, or `pvh` (needs KVM's Xen support on the host).
    #[arg(long = "type", value_enum, default_value_t = GuestType::Pv)]
    guest_type: GuestType,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug, clap::ValueEnum)]
enum GuestType {
    Pv,
    Pvh,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum OnReboot {
    Restart,
    Exit,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(dir) = &cli.run_dir {
        // Seen by xs::run_dir() and by the monitors we start.
        std::env::set_var("XENKVM_RUN_DIR", dir);
    }
    if cli.no_seccomp {
        // Seen by seccomp::install() and by the monitors we start.
        std::env::set_var(seccomp::ENV, "0");
    }
    let rd = control::registry::RunDir::from_env();
    let level = match cli.verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let mut logger =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(level));
    let stderr_log = logcap::BoundedLog::stderr();
    if stderr_log.is_file() {
        // A background monitor's log file: bounded (logcap).
        logger.target(env_logger::Target::Pipe(Box::new(stderr_log)));
    }
    logger.init();
    // A run directory someone else controls is never used (nor trusted).
    if !matches!(cli.cmd, Cmd::Xenstored { .. }) {
        if let Err(e) = rd.check() {
            eprintln!("xenkvm: {e}");
            return ExitCode::from(2);
        }
    }
    let res: anyhow::Result<ExitCode> = match cli.cmd {
        Cmd::Run(args) => run(args, &rd),
        Cmd::Create(args) => create::create(&args, &rd, cli.verbose),
        Cmd::List { long, domains } => control::verbs::list(&rd, long, &domains),
        Cmd::Console { domain } => control::verbs::console(&rd, &domain),
        Cmd::Shutdown {
            all: _,
            wait,
            timeout,
            domain,
        } => control::verbs::shutdown(
            &rd,
            domain.as_deref(),
            wait,
            (timeout > 0).then(|| std::time::Duration::from_secs(timeout)),
        ),
        Cmd::Reboot { domain } => control::verbs::reboot(&rd, &domain),
        Cmd::Destroy { domain } => control::verbs::destroy(&rd, &domain),
        Cmd::Pause { domain } => control::verbs::pause(&rd, &domain, true),
        Cmd::Unpause { domain } => control::verbs::pause(&rd, &domain, false),
        Cmd::Info => control::verbs::info(&rd),
        Cmd::Domid { name } => control::inspect::domid(&rd, &name),
        Cmd::Domname { id } => control::inspect::domname(&rd, &id),
        Cmd::Uptime { short, domains } => control::inspect::uptime(&rd, short, &domains),
        Cmd::VcpuList { domains } => control::inspect::vcpu_list(&rd, &domains),
        Cmd::Dmesg { domains } => control::inspect::dmesg(&rd, &domains),
        Cmd::Top => control::top::top(&rd),
        Cmd::VcpuSet { domain, count } => control::inspect::vcpu_set(&rd, &domain, count),
        Cmd::MemSet { domain, size } => control::inspect::memory(&rd, &domain, &size, false),
        Cmd::MemMax { domain, size } => control::inspect::memory(&rd, &domain, &size, true),
        Cmd::Sysrq { domain, key } => control::inspect::sysrq(&rd, &domain, &key),
        Cmd::Save { domain, file } => migrate::cli::save(&rd, &domain, &file),
        Cmd::Restore { paused, files } => {
            // clap takes one or two (num_args = 1..=2).
            let (config, file) = match files.as_slice() {
                [config, file] => (Some(config.as_path()), file.as_path()),
                _ => (None, files[0].as_path()),
            };
            migrate::cli::restore(&rd, config, file, paused, cli.verbose)
        }
        Cmd::Migrate {
            socket,
            ssh,
            domain,
            host,
        } => migrate::cli::migrate(&rd, &domain, host.as_deref(), socket.as_deref(), &ssh),
        Cmd::MigrateReceive { socket } => {
            migrate::cli::receive(&rd, socket.as_deref(), cli.verbose)
        }
        Cmd::Dev(c) => control::devverbs::run(&rd, c),
        Cmd::Monitor { api_socket, log } => {
            Ok(control::monitor::serve_empty(rd.clone(), api_socket, log))
        }
        Cmd::Xenstored { socket } => api::xs_socket::run_standalone(&socket)
            .map(|()| ExitCode::SUCCESS)
            .map_err(Into::into),
    };
    match res {
        Ok(code) => code,
        Err(e) => {
            eprintln!("xenkvm: {}", report(&e));
            ExitCode::from(2)
        }
    }
}

/// An error and its causes on one line, each cause once: our error types
/// already print their source in their own message, so a cause whose text
/// is already there is left out.
pub fn report(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

fn run(mut args: RunArgs, rd: &control::registry::RunDir) -> anyhow::Result<ExitCode> {
    // SIGTERM, SIGINT, SIGHUP: stop the guest and leave through the normal
    // path below, which removes our run directory and frees our id.
    let current = console::Current::default();
    let c = current.clone();
    control::signals::handle_termination(move |_| {
        if let Some((host, _)) = c.get() {
            host.stop_all();
        }
    });
    let claim = rd.claim_run(&args.name, args.domid.map(u32::from))?;
    args.domid = Some(u16::try_from(claim.id).context("domain id")?);
    let own_socket = args.xenstore_socket.is_none();
    let sock = args
        .xenstore_socket
        .clone()
        .unwrap_or_else(|| claim.xenstore_socket());
    let prepared = prepare(&args, &claim.dir)?;
    let cfg = prepared.vm_config(&args, &sock);
    console::raw_mode();
    console::spawn_input(current.clone());
    let code = boot_loop(&args, &cfg, &sock, &current);
    console::restore();
    if !own_socket && std::fs::symlink_metadata(&sock).is_ok_and(|m| m.file_type().is_socket()) {
        let _ = std::fs::remove_file(&sock);
    }
    code
}

/// What every boot of `args` needs, opened once: shared by `run` and the
/// domain monitor (`control::monitor`), so both boot the same way.
pub(crate) struct Prepared {
    disks: Vec<pvdev::OpenDisk>,
    vifs: Vec<api::xlcfg::VifSpec>,
    boot: boot::BootFiles,
}

/// `scratch`: a private directory for files taken from the guest's disk.
pub(crate) fn prepare(args: &RunArgs, scratch: &std::path::Path) -> anyhow::Result<Prepared> {
    if args.guest_type == GuestType::Pvh {
        pvh::check_host(args.kernel.as_deref())?;
    }
    let disks = pvdev::open_disks(&args.disks)?;
    let vifs = pvdev::parse_vifs(&args.nets)?;
    let boot = boot::resolve(args, &disks, scratch)?;
    Ok(Prepared { disks, vifs, boot })
}

impl Prepared {
    pub(crate) fn vm_config<'a>(
        &'a self,
        args: &'a RunArgs,
        sock: &'a std::path::Path,
    ) -> vm::VmConfig<'a> {
        vm::VmConfig {
            name: &args.name,
            xenstore_socket: Some(sock),
            kernel: &self.boot.kernel,
            initrd: self.boot.initrd.as_deref(),
            cmdline: &self.boot.cmdline,
            memory_mib: args.memory,
            maxmem_mib: args.maxmem.unwrap_or(args.memory).max(args.memory),
            vcpus: args.vcpus,
            domid: args.domid.unwrap_or(1),
            disks: &self.disks,
            vifs: &self.vifs,
            restore_rings: None,
        }
    }
}

/// Boot the guest, and boot it again after each reboot unless told not to.
fn boot_loop(
    args: &RunArgs,
    cfg: &vm::VmConfig,
    sock: &std::path::Path,
    current: &console::Current,
) -> anyhow::Result<ExitCode> {
    if args.guest_type == GuestType::Pvh {
        return pvh::run::boot_loop(args, cfg, sock, current);
    }
    loop {
        // A previous boot's server keeps its socket inode; new clients reach the new store.
        let _ = std::fs::remove_file(sock);
        let mut vm = vm::Vm::create(cfg)?;
        vm.print_stats = args.stats;
        vm.dom.exit_stats.set_guest_visible(args.stats);
        log::info!("guest layout: {:x?}", vm.layout);
        eprintln!(
            "xenkvm: domain {} ({}) xenstore: export XENSTORED_PATH={}",
            cfg.domid,
            args.name,
            sock.display()
        );
        let host = vm.host.clone();
        current.set(&host, &vm.dom);
        let stopped_by = |host: &platform::Host| {
            let sig = control::signals::received()?;
            host.stop_all();
            eprintln!("\r\nxenkvm: stopped by {}", control::signals::name(sig));
            Some(ExitCode::from(128 + sig as u8))
        };
        if let Some(code) = stopped_by(&host) {
            return Ok(code);
        }
        let outcome = vm.run();
        if host.escaped.load(std::sync::atomic::Ordering::SeqCst) {
            eprintln!("\r\nxenkvm: stopped by the console escape (Ctrl-])");
            return Ok(ExitCode::from(130));
        }
        if let Some(code) = stopped_by(&host) {
            return Ok(code);
        }
        match outcome {
            vm::Outcome::Poweroff => {
                eprintln!("xenkvm: guest powered off");
                return Ok(ExitCode::SUCCESS);
            }
            vm::Outcome::Reboot if args.on_reboot == OnReboot::Restart => {
                eprintln!("xenkvm: guest rebooted; starting it again");
            }
            vm::Outcome::Reboot => {
                eprintln!("xenkvm: guest rebooted; exiting (--on-reboot exit)");
                return Ok(ExitCode::SUCCESS);
            }
            vm::Outcome::Crash(msg) => {
                eprintln!("\r\nxenkvm: guest crashed: {msg}");
                eprintln!("xenkvm: last console lines:\n{}", host.last_lines(15));
                return Ok(ExitCode::from(1));
            }
            vm::Outcome::Other(r) => {
                eprintln!("xenkvm: guest stopped (shutdown reason {r})");
                return Ok(ExitCode::from(1));
            }
        }
    }
}

#[cfg(test)]
mod report_tests {
    #[derive(Debug, thiserror::Error)]
    #[error("cannot read kernel /k: {0}")]
    struct Inner(#[from] std::io::Error);

    #[derive(Debug, thiserror::Error)]
    #[error("loading the kernel: {0}")]
    struct Outer(#[from] Inner);

    #[test]
    fn each_cause_is_printed_once() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "No such file");
        let e = anyhow::Error::from(Outer::from(Inner::from(io))).context("starting");
        assert_eq!(
            super::report(&e),
            "starting: loading the kernel: cannot read kernel /k: No such file"
        );
    }
}

//! `xenkvm run --type pvh`: boot the PVH guest, again after each reboot
//! unless told not to (as the PV loop in main.rs does).

use std::process::ExitCode;

use crate::vm::{Outcome, VmConfig};
use crate::{console, OnReboot, RunArgs};

use super::vm::PvhVm;

pub fn boot_loop(
    args: &RunArgs,
    cfg: &VmConfig,
    sock: &std::path::Path,
    current: &console::Current,
) -> anyhow::Result<ExitCode> {
    loop {
        let _ = std::fs::remove_file(sock);
        let mut vm = PvhVm::create(cfg)?;
        vm.print_stats = args.stats;
        eprintln!(
            "xenkvm: PVH domain {} ({}) xenstore: export XENSTORED_PATH={}",
            cfg.domid,
            args.name,
            sock.display()
        );
        let host = vm.host.clone();
        current.set(&host, &vm.dom);
        let outcome = vm.run();
        if host.escaped.load(std::sync::atomic::Ordering::SeqCst) {
            eprintln!("\r\nxenkvm: stopped by the console escape (Ctrl-])");
            return Ok(ExitCode::from(130));
        }
        if let Some(sig) = crate::control::signals::received() {
            eprintln!(
                "\r\nxenkvm: stopped by {}",
                crate::control::signals::name(sig)
            );
            return Ok(ExitCode::from(128 + sig as u8));
        }
        match outcome {
            Outcome::Poweroff => {
                eprintln!("xenkvm: guest powered off");
                return Ok(ExitCode::SUCCESS);
            }
            Outcome::Reboot if args.on_reboot == OnReboot::Restart => {
                eprintln!("xenkvm: guest rebooted; starting it again");
            }
            Outcome::Reboot => {
                eprintln!("xenkvm: guest rebooted; exiting (--on-reboot exit)");
                return Ok(ExitCode::SUCCESS);
            }
            Outcome::Crash(msg) => {
                eprintln!("\r\nxenkvm: guest crashed: {msg}");
                eprintln!("xenkvm: last console lines:\n{}", host.last_lines(15));
                return Ok(ExitCode::from(1));
            }
            Outcome::Other(r) => {
                eprintln!("xenkvm: guest stopped (shutdown reason {r})");
                return Ok(ExitCode::from(1));
            }
        }
    }
}

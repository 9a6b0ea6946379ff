//! The device hotplug verbs in xl's syntax and output: `block-attach`,
//! `block-detach`, `block-list`, `network-attach`, `network-detach`,
//! `network-list`.

use std::process::ExitCode;
use std::time::Duration;

use api::control::client::{Client, ClientError};
use api::control::devices::{
    block_list_header, block_list_row, network_list_header, network_list_row,
};
use api::control::DetachRequest;

use super::registry::{Entry, RunDir};

#[derive(Debug, clap::Subcommand)]
pub enum DevCmd {
    /// Add a PV disk to a running domain (an xl disk spec, as in `disk = [...]`).
    #[command(name = "block-attach")]
    BlockAttach {
        /// Domain name or id.
        domain: String,
        /// The disk spec (`file:/srv/d.img,xvdb,w` or `vdev=xvdb,target=...`);
        /// several words are joined with commas, as xl does.
        #[arg(required = true, num_args = 1..)]
        spec: Vec<String>,
    },
    /// Remove a PV disk: the guest is asked to release it first.
    #[command(name = "block-detach")]
    BlockDetach {
        /// Domain name or id.
        domain: String,
        /// The guest's device name (`xvdb`) or its devid (`51728`).
        vdev: String,
        /// Remove it even if the guest does not let it go.
        #[arg(short = 'f', long = "force")]
        force: bool,
        /// Seconds to wait for the guest (default 10; 1 to 300).
        #[arg(short = 't', long = "timeout")]
        timeout: Option<u32>,
    },
    /// The domains' PV disks (xl's table).
    #[command(name = "block-list")]
    BlockList {
        /// Domain names or ids.
        #[arg(required = true)]
        domains: Vec<String>,
    },
    /// Add a PV nic to a running domain (an xl vif spec, as in `vif = [...]`).
    #[command(name = "network-attach")]
    NetworkAttach {
        /// Domain name or id.
        domain: String,
        /// `KEY=VALUE` settings (`mac=`, `bridge=`, `vifname=`, `mtu=`, ...); none for defaults.
        spec: Vec<String>,
    },
    /// Remove a PV nic.
    #[command(name = "network-detach")]
    NetworkDetach {
        /// Domain name or id.
        domain: String,
        /// The nic's devid or the guest's MAC.
        id: String,
        /// Remove it even if the guest does not let it go.
        #[arg(short = 'f', long = "force")]
        force: bool,
        /// Seconds to wait for the guest (default 10; 1 to 300).
        #[arg(short = 't', long = "timeout")]
        timeout: Option<u32>,
    },
    /// The domains' PV nics (xl's table).
    #[command(name = "network-list")]
    NetworkList {
        /// Domain names or ids.
        #[arg(required = true)]
        domains: Vec<String>,
    },
}

fn client(e: &Entry, wait: Duration) -> Client {
    let mut c = Client::new(&e.api_socket());
    c.timeout = wait + Duration::from_secs(15);
    c
}

fn detach_request(force: bool, timeout: Option<u32>) -> DetachRequest {
    DetachRequest {
        force,
        timeout_s: timeout,
    }
}

/// The API's message alone (it already names the device).
fn api_message(e: ClientError) -> anyhow::Error {
    match e {
        ClientError::Api { message, .. } => anyhow::anyhow!(message),
        e => e.into(),
    }
}

/// An xl-style table: the header, then each domain's rows. An unknown
/// domain is reported as xl does and makes the exit status 1.
fn print_table(
    run: &RunDir,
    header: &str,
    domains: &[String],
    rows: impl Fn(&Entry) -> anyhow::Result<Vec<String>>,
) -> anyhow::Result<ExitCode> {
    println!("{header}");
    let mut bad = false;
    for d in domains {
        match run.find(d) {
            Ok(e) => {
                for row in rows(&e)? {
                    println!("{row}");
                }
            }
            Err(_) => {
                eprintln!("{d} is an invalid domain identifier");
                bad = true;
            }
        }
    }
    Ok(if bad {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

pub fn run(run: &RunDir, cmd: DevCmd) -> anyhow::Result<ExitCode> {
    let short = Duration::from_secs(10);
    match cmd {
        DevCmd::BlockAttach { domain, spec } => {
            let e = run.find(&domain)?;
            client(&e, short)
                .disk_attach(&e.name, &spec.join(","))
                .map_err(api_message)?;
        }
        DevCmd::BlockDetach {
            domain,
            vdev,
            force,
            timeout,
        } => {
            let e = run.find(&domain)?;
            let req = detach_request(force, timeout);
            client(&e, req.timeout())
                .disk_detach(&e.name, &vdev, &req)
                .map_err(api_message)?;
        }
        DevCmd::BlockList { domains } => {
            return print_table(run, &block_list_header(), &domains, |e| {
                let disks = client(e, short).disks(&e.name)?;
                Ok(disks.iter().map(block_list_row).collect())
            });
        }
        DevCmd::NetworkAttach { domain, spec } => {
            let e = run.find(&domain)?;
            client(&e, short)
                .nic_attach(&e.name, &spec.join(","))
                .map_err(api_message)?;
        }
        DevCmd::NetworkDetach {
            domain,
            id,
            force,
            timeout,
        } => {
            let e = run.find(&domain)?;
            let req = detach_request(force, timeout);
            client(&e, req.timeout())
                .nic_detach(&e.name, &id, &req)
                .map_err(api_message)?;
        }
        DevCmd::NetworkList { domains } => {
            return print_table(run, &network_list_header(), &domains, |e| {
                let nics = client(e, short).nics(&e.name)?;
                Ok(nics.iter().map(network_list_row).collect())
            });
        }
    }
    Ok(ExitCode::SUCCESS)
}

//! A PV or a PVH domain, for the domain monitor (`xenkvm create`), which
//! boots either the same way: both have a `Host` and a Xen core `Domain`.

use std::sync::Arc;

use xen_shim::domain::Domain;

use crate::hotplug::DeviceOwner;
use crate::platform::Host;
use crate::vm::{Outcome, Vm};

use super::vm::PvhVm;

pub enum AnyVm {
    Pv(Box<Vm>),
    Pvh(Box<PvhVm>),
}

impl AnyVm {
    pub fn host(&self) -> &Arc<Host> {
        match self {
            AnyVm::Pv(v) => &v.host,
            AnyVm::Pvh(v) => &v.host,
        }
    }

    pub fn dom(&self) -> &Arc<Domain> {
        match self {
            AnyVm::Pv(v) => &v.dom,
            AnyVm::Pvh(v) => &v.dom,
        }
    }

    pub fn set_print_stats(&mut self, on: bool) {
        match self {
            AnyVm::Pv(v) => v.print_stats = on,
            AnyVm::Pvh(v) => v.print_stats = on,
        }
    }

    /// Run until the guest shuts down; the device backends are handed back
    /// (see [`Vm::run_keeping_devices`]).
    pub fn run_keeping_devices(self) -> (Outcome, DeviceOwner) {
        match self {
            AnyVm::Pv(v) => (*v).run_keeping_devices(),
            AnyVm::Pvh(v) => (*v).run_keeping_devices(),
        }
    }
}

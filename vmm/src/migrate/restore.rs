//! Loading a save stream into a freshly built domain (Xen's "resumed in a
//! new domain"): memory, page types, the vCPU, then start_info's store and
//! console fields rewritten for the new domain.

use std::io::Read;

use xen_shim::mmu::Mmu;

use super::save::SI_ARCH;
use super::stream::{self, libxl_rec, pfinfo, rec, PAGE_SIZE};
use super::MigrateError;
use crate::vm::Vm;

const PTE_PRESENT: u64 = 1;
const PTE_ADDR: u64 = 0x000f_ffff_ffff_f000;

/// VGCF_in_kernel (public/arch-x86/xen.h).
const VGCF_IN_KERNEL: u64 = 1 << 2;

/// start_info offsets (x86_64, public/xen.h).
mod si {
    pub const SHARED_INFO: u64 = 40;
    pub const STORE_MFN: u64 = 56;
    pub const STORE_EVTCHN: u64 = 64;
    pub const CONSOLE_MFN: u64 = 72;
    pub const CONSOLE_EVTCHN: u64 = 80;
}

/// What a restore loaded.
#[derive(Debug, Default, Clone, Copy)]
pub struct RestoreStats {
    pub pages: u64,
    pub pinned: u64,
}

/// Localise a page table from the stream: every present entry must name
/// a PFN of the domain (the P2M is the identity, so PFN = MFN).
pub fn localise_table(page: &[u8], level: u8, mmu: &Mmu) -> Result<(), MigrateError> {
    for (i, e) in page.chunks_exact(8).enumerate() {
        let v = u64::from_le_bytes(e.try_into().unwrap_or([0; 8]));
        if v & PTE_PRESENT == 0 || (level == 4 && (256..=271).contains(&i)) {
            continue;
        }
        let pfn = (v & PTE_ADDR) >> 12;
        if !mmu.is_ram(pfn) {
            return Err(MigrateError::Mismatch(format!(
                "an L{level} entry names PFN {pfn:#x}, outside the domain's memory"
            )));
        }
    }
    Ok(())
}

/// Read the stream from `r` (positioned after xl's header) into `vm`,
/// which was just built and has not run.
pub fn restore_into(r: &mut dyn Read, vm: &mut Vm) -> Result<RestoreStats, MigrateError> {
    stream::read_libxl_header(r)?;
    let mut stats = RestoreStats::default();
    let mut xc_done = false;
    loop {
        let rr = stream::read_record(r)?;
        match rr.ty {
            libxl_rec::END => break,
            libxl_rec::LIBXC_CONTEXT if !xc_done => {
                stats = restore_xc(r, vm)?;
                xc_done = true;
            }
            libxl_rec::EMULATOR_XENSTORE_DATA | libxl_rec::EMULATOR_CONTEXT => {
                log::info!("restore: emulator record {:#x} ignored (PV domain)", rr.ty);
            }
            libxl_rec::CHECKPOINT_END => {}
            t if t & rec::OPTIONAL != 0 => {}
            t => {
                return Err(MigrateError::Format(format!(
                    "unexpected libxl record {t:#x}"
                )))
            }
        }
    }
    if !xc_done {
        return Err(MigrateError::Format("no LIBXC_CONTEXT record".into()));
    }
    Ok(stats)
}

/// The libxc stream: headers, records up to END, then the domain is
/// completed (tables pinned, vCPU loaded, start_info rewritten).
fn restore_xc(r: &mut dyn Read, vm: &mut Vm) -> Result<RestoreStats, MigrateError> {
    let (major, minor) = stream::read_xc_headers(r)?;
    log::info!("restore: stream saved under Xen {major}.{minor}");
    let dom = vm.dom.clone();
    let mem = &*dom.mem;
    dom.mmu
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clear_types();
    let mut stats = RestoreStats::default();
    // The last type each frame was sent with wins (a live stream sends
    // frames again as they change).
    let mut pins: std::collections::BTreeMap<u64, u8> = Default::default();
    let mut basic: std::collections::BTreeMap<u32, Vec<u8>> = Default::default();
    let mut xsave: std::collections::BTreeMap<u32, Vec<u8>> = Default::default();
    let mut shinfo: Option<Vec<u8>> = None;
    let mut seen_info = false;
    let mut p2m: Option<(u64, Vec<u64>)> = None;
    loop {
        let rr = stream::read_record(r)?;
        match rr.ty {
            rec::END => break,
            rec::X86_PV_INFO => {
                stream::check_pv_info(&rr.body)?;
                seen_info = true;
            }
            rec::PAGE_DATA => {
                if !seen_info {
                    return Err(MigrateError::Format("PAGE_DATA before X86_PV_INFO".into()));
                }
                let entries = stream::parse_page_data(&rr.body)?;
                let mut mmu = dom.mmu.lock().unwrap_or_else(|e| e.into_inner());
                for (pfn, ty, off) in entries {
                    if pfn >= mmu.nr_frames() {
                        return Err(MigrateError::Mismatch(format!(
                            "PFN {pfn:#x} beyond the domain's {} frames",
                            mmu.nr_frames()
                        )));
                    }
                    match ty {
                        pfinfo::XTAB | pfinfo::BROKEN => {
                            pins.remove(&pfn);
                            if mmu.is_ram(pfn) {
                                let _ = mmu.depopulate(pfn);
                            }
                            continue;
                        }
                        _ => {
                            if !mmu.is_ram(pfn) {
                                mmu.populate(pfn, 0).map_err(|e| {
                                    MigrateError::Mismatch(format!("populate {pfn:#x}: {e}"))
                                })?;
                            }
                        }
                    }
                    let Some(off) = off else { continue };
                    let page = &rr.body[off..off + PAGE_SIZE];
                    let level = ty & 0x7;
                    pins.remove(&pfn);
                    if (1..=4).contains(&level) {
                        localise_table(page, level, &mmu)?;
                        if ty & pfinfo::PIN != 0 {
                            pins.insert(pfn, level);
                        }
                    }
                    mem.write(pfn << 12, page)
                        .map_err(|e| MigrateError::Memory(e.to_string()))?;
                    stats.pages += 1;
                }
            }
            rec::X86_PV_VCPU_BASIC | rec::X86_PV_VCPU_XSAVE => {
                let (id, blob) = stream::parse_vcpu_body(&rr.body)?;
                if id as usize >= vm.vcpus.len() {
                    return Err(MigrateError::Mismatch(format!(
                        "state for vCPU {id}: the domain has {} vCPUs",
                        vm.vcpus.len()
                    )));
                }
                if rr.ty == rec::X86_PV_VCPU_BASIC {
                    basic.insert(id, blob.to_vec());
                } else {
                    xsave.insert(id, blob.to_vec());
                }
            }
            rec::SHARED_INFO => {
                if rr.body.len() != PAGE_SIZE {
                    return Err(MigrateError::Format("SHARED_INFO is not one page".into()));
                }
                shinfo = Some(rr.body);
            }
            rec::X86_TSC_INFO => {
                let t = stream::TscInfo::parse(&rr.body)?;
                if t.mode != 0 {
                    log::warn!("restore: TSC mode {} taken as the default mode", t.mode);
                }
            }
            rec::X86_PV_P2M_FRAMES => p2m = Some(parse_p2m_frames(&rr.body)?),
            rec::X86_PV_VCPU_EXTENDED
            | rec::X86_PV_VCPU_MSRS
            | rec::VERIFY
            | rec::STATIC_DATA_END
            | rec::X86_CPUID_POLICY
            | rec::X86_MSR_POLICY => {
                // No counterpart here yet.
                log::debug!("restore: record {:#x} not used", rr.ty);
            }
            t if t & rec::OPTIONAL != 0 => {}
            t => {
                return Err(MigrateError::Format(format!(
                    "unsupported mandatory record {t:#x}"
                )))
            }
        }
    }
    if !basic.contains_key(&0) {
        return Err(MigrateError::Format(
            "no X86_PV_VCPU_BASIC for vCPU 0".into(),
        ));
    }
    // The tables the guest had pinned, typed afresh (their validation
    // fills the hypervisor's L4 slots in again).
    {
        let v0 = vm
            .vcpus
            .first_mut()
            .ok_or_else(|| MigrateError::Mismatch("the domain has no vCPU".into()))?;
        stats.pinned = retype(&dom, &mut v0.pv.pt_log, &pins)?;
    }
    if let Some((end, frames)) = &p2m {
        rewrite_p2m(&dom, *end, frames)?;
    }
    let mut start_info_pfn = 0;
    for (&id, blob) in &basic {
        let v = &mut vm.vcpus[id as usize];
        let ctx = xen_shim::vcpuctx::parse_context(blob);
        if ctx.flags & VGCF_IN_KERNEL == 0 {
            return Err(MigrateError::Mismatch(format!(
                "vCPU {id} was saved in user mode: not supported"
            )));
        }
        v.pv.root_kernel = 0;
        v.pv.root_user = 0;
        v.pv.gdt_frames.clear();
        let mut regs = xen_shim::vcpuctx::apply_context(&mut v.pv, &ctx)
            .map_err(|e| MigrateError::Mismatch(format!("vCPU {id}'s context is refused: {e}")))?;
        if let Some(x) = xsave.get(&id) {
            load_xsave(&vm.kvm, v, x)?;
        }
        if id == 0 {
            // SCHEDOP_shutdown(suspend) returns 0: resumed in a new domain.
            start_info_pfn = regs.rdx;
            regs.rax = 0;
            vm.boot_regs = regs;
        } else {
            // Started with vCPU 0, where it stopped (crate::smp::Starter::up).
            v.down_regs = Some(regs);
            dom.initialised
                .fetch_or(1 << id, std::sync::atomic::Ordering::SeqCst);
        }
    }
    if let Some(s) = shinfo {
        load_shared_info(&dom, &s)?;
    }
    rewrite_start_info(&dom, start_info_pfn)?;
    Ok(stats)
}

/// SHARED_INFO, as libxc's handle_shared_info takes it: the vCPUs'
/// upcall flags and the arch part come over (the P2M frame list cleared:
/// the guest publishes it again), nothing is pending and every event
/// channel starts masked, for the guest to unmask those it binds again
/// (Linux leaves a disabled one, such as its spinlock kicker, masked).
/// This domain's time records are kept.
fn load_shared_info(dom: &xen_shim::domain::Domain, s: &[u8]) -> Result<(), MigrateError> {
    let si = dom.layout.shared_info_gpa;
    let w = |at: u64, b: &[u8]| {
        dom.mem
            .write(si + at, b)
            .map_err(|e| MigrateError::Memory(e.to_string()))
    };
    for i in 0..32u64 {
        let vi = (i * 64) as usize;
        // evtchn_upcall_pending, evtchn_upcall_mask; evtchn_pending_sel 0.
        w(i * 64, &s[vi..vi + 2])?;
        w(i * 64 + 8, &[0; 8])?;
    }
    w(SI_ARCH.start as u64, &s[SI_ARCH])?;
    w(super::save::SI_FLL, &[0; 8])?;
    w(SI_EVTCHN_PENDING, &[0; 512])?;
    w(SI_EVTCHN_MASK, &[0xff; 512])
}

use xen_shim::abi::shinfo::{EVTCHN_MASK as SI_EVTCHN_MASK, EVTCHN_PENDING as SI_EVTCHN_PENDING};

/// X86_PV_P2M_FRAMES: the last PFN the guest's P2M covers and its frames.
/// libxc writes the P2M from PFN 0; so must an image we take.
pub fn parse_p2m_frames(b: &[u8]) -> Result<(u64, Vec<u64>), MigrateError> {
    let bad = |m: &str| MigrateError::Format(format!("X86_PV_P2M_FRAMES: {m}"));
    if b.len() < 8 {
        return Err(bad("short record"));
    }
    let start = u32::from_le_bytes(b[..4].try_into().unwrap_or([0; 4]));
    let end = u32::from_le_bytes(b[4..8].try_into().unwrap_or([0; 4]));
    if start != 0 {
        return Err(bad("the P2M does not start at PFN 0"));
    }
    let n = (end / 512 + 1) as usize;
    if b.len() != 8 + n * 8 {
        return Err(bad("length does not match the PFN range"));
    }
    let frames = b[8..]
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
        .collect();
    Ok((u64::from(end), frames))
}

/// Fill the guest's P2M (its frames named by X86_PV_P2M_FRAMES) with this
/// domain's frames, as libxc's update_guest_p2m does: the P2M is the
/// identity here, and a PFN that is not populated maps to INVALID_MFN.
fn rewrite_p2m(
    dom: &xen_shim::domain::Domain,
    end: u64,
    frames: &[u64],
) -> Result<(), MigrateError> {
    let mmu = dom.mmu.lock().unwrap_or_else(|e| e.into_inner());
    if end >= mmu.nr_frames() {
        return Err(MigrateError::Mismatch(format!(
            "the guest's P2M covers PFN {end:#x}, beyond its {} frames",
            mmu.nr_frames()
        )));
    }
    for &f in frames {
        let plain = matches!(
            mmu.type_of(f),
            xen_shim::mmu::PageType::None | xen_shim::mmu::PageType::Writable
        );
        if !mmu.is_ram(f) || !plain {
            return Err(MigrateError::Mismatch(format!(
                "P2M frame {f:#x} is not a plain page of the guest"
            )));
        }
    }
    let mut page = vec![0u8; PAGE_SIZE];
    for (i, &f) in frames.iter().enumerate() {
        let first = i as u64 * 512;
        for (j, e) in page.chunks_exact_mut(8).enumerate() {
            let pfn = first + j as u64;
            let v = if pfn <= end && mmu.is_ram(pfn) {
                pfn
            } else {
                u64::MAX
            };
            e.copy_from_slice(&v.to_le_bytes());
        }
        // Past `end` the frame keeps what it had (another use of the page).
        let n = ((end + 1).saturating_sub(first)).min(512) as usize;
        dom.mem
            .write(f << 12, &page[..n * 8])
            .map_err(|e| MigrateError::Memory(e.to_string()))?;
    }
    Ok(())
}

/// X86_PV_VCPU_XSAVE: xcr0, xcr0_accum, the XSAVE area.
/// CR4.OSXSAVE.
const CR4_OSXSAVE: u64 = 1 << 18;

/// A guest saved where it had XSAVE (Xen offers it to PV guests; xenkvm's
/// own PV CPUID policy does not) keeps using XSAVE and its XCR0 after the
/// restore: give the vCPU what the host has of it in KVM's CPUID (leaf 1's
/// XSAVE and AVX, leaf 0xD) and CR4.OSXSAVE, before its first run. Refused
/// when the host lacks a component the guest had enabled.
fn enable_xsave(
    kvm: &kvm_ioctls::Kvm,
    v: &mut crate::vcpu::Vcpu,
    xcr0: u64,
) -> Result<(), MigrateError> {
    let host = kvm
        .get_supported_cpuid(kvm_bindings::KVM_MAX_CPUID_ENTRIES)
        .map_err(|e| MigrateError::Kvm(format!("KVM_GET_SUPPORTED_CPUID: {e}")))?;
    let host_d0 = host
        .as_slice()
        .iter()
        .find(|e| e.function == 0xd && e.index == 0)
        .map(|e| u64::from(e.eax) | (u64::from(e.edx) << 32))
        .unwrap_or(0);
    if xcr0 & !host_d0 != 0 {
        return Err(MigrateError::Mismatch(format!(
            "the guest's XCR0 {xcr0:#x} has state this host lacks (it has {host_d0:#x})"
        )));
    }
    let host_1 = host.as_slice().iter().find(|e| e.function == 1);
    let mut cpuid =
        v.fd.get_cpuid2(kvm_bindings::KVM_MAX_CPUID_ENTRIES)
            .map_err(|e| MigrateError::Kvm(format!("KVM_GET_CPUID2: {e}")))?;
    let mut entries: Vec<kvm_bindings::kvm_cpuid_entry2> = cpuid
        .as_slice()
        .iter()
        .filter(|e| e.function != 0xd)
        .copied()
        .collect();
    for e in entries.iter_mut().filter(|e| e.function == 1) {
        // XSAVE (26) and AVX (28) as the host has them.
        let mask = (1 << 26) | (1 << 28);
        e.ecx = (e.ecx & !mask) | (host_1.map_or(0, |h| h.ecx) & mask);
    }
    entries.extend(
        host.as_slice()
            .iter()
            .filter(|e| e.function == 0xd)
            .copied(),
    );
    cpuid = kvm_bindings::CpuId::from_entries(&entries)
        .map_err(|e| MigrateError::Kvm(format!("cpuid: {e:?}")))?;
    v.fd.set_cpuid2(&cpuid)
        .map_err(|e| MigrateError::Kvm(format!("KVM_SET_CPUID2: {e}")))?;
    v.cr4_extra |= CR4_OSXSAVE;
    Ok(())
}

fn load_xsave(
    kvm: &kvm_ioctls::Kvm,
    v: &mut crate::vcpu::Vcpu,
    blob: &[u8],
) -> Result<(), MigrateError> {
    if blob.len() < 16 + 512 {
        return Err(MigrateError::Format("short X86_PV_VCPU_XSAVE".into()));
    }
    let mut x = kvm_bindings::kvm_xsave::default();
    for (i, w) in blob[16..].chunks_exact(4).take(x.region.len()).enumerate() {
        x.region[i] = u32::from_le_bytes(w.try_into().unwrap_or([0; 4]));
    }
    // XCR0 first: the XSAVE area's components must be enabled in it.
    let xcr0 = u64::from_le_bytes(blob[..8].try_into().unwrap_or([0; 8]));
    // x87 and SSE need nothing: xenkvm's own guests save that.
    if xcr0 & !0x3 != 0 {
        enable_xsave(kvm, v, xcr0)?;
    }
    if xcr0 != 0 {
        let mut xcrs = kvm_bindings::kvm_xcrs {
            nr_xcrs: 1,
            ..Default::default()
        };
        xcrs.xcrs[0].xcr = 0;
        xcrs.xcrs[0].value = xcr0;
        v.fd.set_xcrs(&xcrs).map_err(|e| {
            MigrateError::Mismatch(format!("XCR0 {xcr0:#x} is refused by this host's KVM: {e}"))
        })?;
    }
    // SAFETY: `x` is a whole kvm_xsave (KVM_SET_XSAVE reads 4 KiB of it).
    unsafe { v.fd.set_xsave(&x) }.map_err(|e| MigrateError::Kvm(format!("KVM_SET_XSAVE: {e}")))
}

/// Type the image's frames afresh after `Mmu::clear_types`: pin the tables
/// the guest had pinned (their validation fills the hypervisor's L4 slots in
/// again), then take the standing writable references the domain builder
/// takes on the xenstore and console rings, which the monitor writes for the
/// domain's whole life: a guest must never make either of them a page table
/// (the monitor's writes would then be unvalidated page-table entries). A
/// stream that has them as tables is refused. The number of tables pinned.
fn retype(
    dom: &xen_shim::domain::Domain,
    log: &mut xen_shim::mmu::PtLog,
    pins: &std::collections::BTreeMap<u64, u8>,
) -> Result<u64, MigrateError> {
    let mem = &*dom.mem;
    let mut mmu = dom.mmu.lock().unwrap_or_else(|e| e.into_inner());
    let mut pinned = 0;
    for (&pfn, &level) in pins {
        mmu.pin(mem, log, pfn, level).map_err(|e| {
            MigrateError::Mismatch(format!("pinning L{level} table {pfn:#x}: error {e}"))
        })?;
        pinned += 1;
    }
    for (what, pfn) in [
        ("xenstore", dom.layout.store_mfn),
        ("console", dom.layout.console_mfn),
    ] {
        mmu.get_type(mem, log, pfn, xen_shim::mmu::PageType::Writable)
            .map_err(|e| {
                MigrateError::Mismatch(format!(
                    "the {what} ring (frame {pfn:#x}) is a page table in the image: error {e}"
                ))
            })?;
    }
    Ok(pinned)
}

/// Point start_info (frame `pfn`, passed by the guest in %rdx) at this
/// domain's shared_info, xenstore and console pages and ports.
fn rewrite_start_info(dom: &xen_shim::domain::Domain, pfn: u64) -> Result<(), MigrateError> {
    let l = &dom.layout;
    if !dom
        .mmu
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .is_ram(pfn)
    {
        return Err(MigrateError::Mismatch(format!(
            "start_info frame {pfn:#x} (the suspend hypercall's %rdx) is not the guest's RAM"
        )));
    }
    let base = pfn << 12;
    let mem = &*dom.mem;
    let rd = |o: u64| mem.read_u64(base + o).unwrap_or(u64::MAX);
    // The guest made these PFNs before it suspended; this domain's pages
    // must be the same ones (its layout comes from the same kernel and
    // memory size).
    let (store, console) = (rd(si::STORE_MFN), rd(si::CONSOLE_MFN));
    if store != l.store_mfn || console != l.console_mfn {
        return Err(MigrateError::Mismatch(format!(
            "the guest's xenstore/console pages ({store:#x}/{console:#x}) are not this \
             domain's ({:#x}/{:#x}): restore with the saved domain's kernel and memory",
            l.store_mfn, l.console_mfn
        )));
    }
    let w = |o: u64, v: u64| mem.write_u64(base + o, v);
    let w32 = |o: u64, v: u32| mem.write_u32(base + o, v);
    w(si::SHARED_INFO, l.shared_info_gpa)
        .and_then(|()| w(si::STORE_MFN, l.store_mfn))
        .and_then(|()| w32(si::STORE_EVTCHN, l.store_port))
        .and_then(|()| w(si::CONSOLE_MFN, l.console_mfn))
        .and_then(|()| w32(si::CONSOLE_EVTCHN, l.console_port))
        .map_err(|e| MigrateError::Memory(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn p2m_frames_record_is_checked() {
        let b = crate::migrate::stream::p2m_frames_body(1023, &[9, 10]);
        assert_eq!(parse_p2m_frames(&b).unwrap(), (1023, vec![9, 10]));
        // One frame short of the range.
        let b = crate::migrate::stream::p2m_frames_body(1024, &[9, 10]);
        assert!(parse_p2m_frames(&b).is_err());
        let mut b = crate::migrate::stream::p2m_frames_body(511, &[9]);
        b[0] = 1; // not from PFN 0
        assert!(parse_p2m_frames(&b).is_err());
        assert!(parse_p2m_frames(&[0; 4]).is_err());
    }

    #[test]
    fn p2m_is_rewritten_as_the_identity() {
        let (dom, _) = xen_shim::testing::test_domain(1024);
        dom.mmu.lock().unwrap().depopulate(700).unwrap();
        dom.mem.write(9 << 12, &[0xee; PAGE_SIZE]).unwrap();
        dom.mem.write(10 << 12, &[0xee; PAGE_SIZE]).unwrap();
        rewrite_p2m(&dom, 1000, &[9, 10]).unwrap();
        let rd = |f: u64, j: u64| dom.mem.read_u64((f << 12) + j * 8).unwrap();
        assert_eq!((rd(9, 0), rd(9, 511), rd(10, 0)), (0, 511, 512));
        assert_eq!(rd(10, 700 - 512), u64::MAX, "a ballooned PFN");
        assert_eq!(rd(10, 1000 - 512), 1000);
        assert_eq!(rd(10, 1001 - 512), 0xeeee_eeee_eeee_eeee, "past the end");
        // A frame that is a page table, or not the guest's, is refused.
        dom.mmu
            .lock()
            .unwrap()
            .pin(&*dom.mem, &mut Vec::new(), 11, 1)
            .unwrap();
        assert!(rewrite_p2m(&dom, 1000, &[9, 11]).is_err());
        assert!(rewrite_p2m(&dom, 1000, &[9, 5000]).is_err());
        assert!(rewrite_p2m(&dom, 5000, &[9]).is_err());
    }

    #[test]
    fn the_rings_can_never_become_page_tables_after_a_restore() {
        // test_domain's xenstore and console rings are frame 0.
        let (dom, _) = xen_shim::testing::test_domain(64);
        let mut log = Vec::new();
        // An image that has the ring as a pinned L1 is refused.
        let pins = [(0u64, 1u8)].into_iter().collect();
        assert!(retype(&dom, &mut log, &pins).is_err());
        dom.mmu.lock().unwrap().clear_types();
        // Otherwise the ring stays writable: the guest cannot pin it later.
        assert_eq!(retype(&dom, &mut log, &Default::default()).unwrap(), 0);
        let mut mmu = dom.mmu.lock().unwrap();
        assert!(mmu.pin(&*dom.mem, &mut log, 0, 1).is_err());
        assert!(mmu.pin(&*dom.mem, &mut log, 1, 1).is_ok(), "another frame");
    }

    #[test]
    fn localise_refuses_frames_outside_the_domain() {
        let mmu = Mmu::new(16);
        let mut page = vec![0u8; PAGE_SIZE];
        page[..8].copy_from_slice(&((3u64 << 12) | 0x67).to_le_bytes());
        localise_table(&page, 1, &mmu).unwrap();
        page[8..16].copy_from_slice(&((16u64 << 12) | 0x67).to_le_bytes());
        assert!(localise_table(&page, 1, &mmu).is_err());
        // In an L4's hypervisor slots anything goes (they are refilled).
        let mut l4 = vec![0u8; PAGE_SIZE];
        l4[256 * 8..257 * 8].copy_from_slice(&((1u64 << 40) | 0x63).to_le_bytes());
        localise_table(&l4, 4, &mmu).unwrap();
    }
}

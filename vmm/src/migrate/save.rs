//! Writing a suspended domain as xl's save file (see [`super::stream`]).

use std::io::Write;

use xen_shim::domain::Domain;
use xen_shim::mmu::PageType;
use xen_shim::regs::Regs;

use super::stream::{self, pfinfo, rec, PAGE_SIZE};
use super::{MigrateError, SuspendedVcpu};
use crate::vcpu::Vcpu;

/// The Xen version the stream says it was saved under.
pub const XEN_VERSION: (u32, u32) = (4, 17);
/// L4 slots 256..=271 belong to the hypervisor: zeroed in the stream (as
/// libxc's normalise_pagetable does) and filled in again on restore.
const RESERVED_L4: std::ops::RangeInclusive<usize> = 256..=271;
const PTE_PRESENT: u64 = 1;
const PTE_ADDR: u64 = 0x000f_ffff_ffff_f000;

/// Called by the vCPU thread at SCHEDOP_shutdown(suspend): keep its state
/// for the save. `regs` are the registers as the hypercall returns.
pub fn keep_suspended(v: &Vcpu, regs: &Regs) {
    v.host
        .suspended_others
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clear();
    let s = suspended_state(v, regs);
    *v.host.suspended.lock().unwrap_or_else(|e| e.into_inner()) = Some(s);
}

/// Called by the other online vCPUs' threads as they stop after the
/// suspend (the guest has them waiting, in Linux in stop_machine).
pub fn keep_stopped(v: &mut Vcpu) {
    let host = v.host.clone();
    let suspending = host
        .suspended
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .as_ref()
        .map(|s| s.id);
    if suspending.is_none_or(|id| id == v.pv.id) || !v.pv.dom.is_online(v.pv.id) {
        return;
    }
    let r = v
        .guest_regs_now()
        .map(|regs| suspended_state(v, &regs))
        .map_err(|e| format!("vCPU {}: {e}", v.pv.id));
    host.suspended_others
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(r);
}

fn suspended_state(v: &Vcpu, regs: &Regs) -> SuspendedVcpu {
    let ctx = xen_shim::vcpuctx_save::capture_context(&v.pv, regs);
    let xsave = match v.fd.get_xsave() {
        Ok(x) => x.region.iter().flat_map(|w| w.to_le_bytes()).collect(),
        Err(e) => {
            log::warn!("suspend: KVM_GET_XSAVE failed ({e}); FPU state not saved");
            Vec::new()
        }
    };
    let xcr0 =
        v.fd.get_xcrs()
            .ok()
            .and_then(|x| {
                x.xcrs[..x.nr_xcrs.min(16) as usize]
                    .iter()
                    .find(|c| c.xcr == 0)
                    .map(|c| c.value)
            })
            .unwrap_or(1);
    SuspendedVcpu {
        id: v.pv.id,
        ctx,
        xsave,
        xcr0,
        at: std::time::Instant::now(),
    }
}

/// What a save wrote.
#[derive(Debug, Default, Clone, Copy)]
pub struct SaveStats {
    pub pages: u64,
    pub bytes: u64,
}

/// A writer that counts bytes.
struct Counting<'a> {
    w: &'a mut dyn Write,
    n: u64,
}

impl Write for Counting<'_> {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        let n = self.w.write(b)?;
        self.n += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.w.flush()
    }
}

/// The stream type of frame `pfn`.
pub fn pfn_type(mmu: &xen_shim::mmu::Mmu, pfn: u64) -> u8 {
    if !mmu.is_ram(pfn) {
        return pfinfo::XTAB;
    }
    let t = match mmu.type_of(pfn) {
        PageType::L1 => 1,
        PageType::L2 => 2,
        PageType::L3 => 3,
        PageType::L4 => 4,
        _ => return pfinfo::NOTAB,
    };
    if mmu.is_pinned(pfn) {
        t | pfinfo::PIN
    } else {
        t
    }
}

/// Normalise a page table for the stream: frame numbers become PFNs (the
/// P2M is the identity here, so that is a check that each frame is the
/// domain's RAM) and the hypervisor's L4 slots are cleared.
pub fn normalise_table(
    page: &mut [u8],
    level: u8,
    is_ram: &dyn Fn(u64) -> bool,
) -> Result<(), MigrateError> {
    for (i, e) in page.chunks_exact_mut(8).enumerate() {
        if level == 4 && RESERVED_L4.contains(&i) {
            e.copy_from_slice(&[0; 8]);
            continue;
        }
        let v = u64::from_le_bytes(e.try_into().unwrap_or([0; 8]));
        if v & PTE_PRESENT == 0 {
            continue;
        }
        let mfn = (v & PTE_ADDR) >> 12;
        if !is_ram(mfn) {
            return Err(MigrateError::State(format!(
                "an L{level} entry maps frame {mfn:#x}, which is not the guest's RAM \
                 (a mapping of shared_info or a grant frame left in place)"
            )));
        }
    }
    Ok(())
}

/// The P2M's frames, from shared_info's pfn_to_mfn_frame_list_list (a
/// three-level list, as libxc's map_p2m_tree reads it); empty when the
/// guest set none.
fn p2m_frames(dom: &Domain, max_pfn: u64) -> Vec<u64> {
    let mem = &*dom.mem;
    let si = dom.layout.shared_info_gpa;
    let Ok(fll) = mem.read_u64(si + SI_FLL) else {
        return Vec::new();
    };
    let nr = max_pfn.div_ceil(512);
    let mut out = Vec::new();
    let ok = |m: u64| m != 0 && m < dom.layout.nr_pages;
    if !ok(fll) {
        return Vec::new();
    }
    for i in 0..nr.div_ceil(512) {
        let Ok(fl) = mem.read_u64((fll << 12) + i * 8) else {
            return Vec::new();
        };
        if !ok(fl) {
            return Vec::new();
        }
        for j in 0..512.min(nr - i * 512) {
            match mem.read_u64((fl << 12) + j * 8) {
                Ok(f) if ok(f) => out.push(f),
                _ => return Vec::new(),
            }
        }
    }
    out
}

/// X86_PV_P2M_FRAMES, when the guest has published its P2M's frames.
pub fn write_p2m_frames(w: &mut dyn Write, dom: &Domain) -> Result<(), MigrateError> {
    let mem = &*dom.mem;
    let si = dom.layout.shared_info_gpa;
    let max_pfn = mem
        .read_u64(si + SI_MAX_PFN)
        .ok()
        .filter(|&m| m > 0 && m <= dom.layout.nr_pages)
        .unwrap_or(dom.layout.nr_pages);
    let frames = p2m_frames(dom, max_pfn);
    if !frames.is_empty() {
        let body = stream::p2m_frames_body((max_pfn - 1) as u32, &frames);
        stream::write_record(w, rec::X86_PV_P2M_FRAMES, &body)?;
    }
    Ok(())
}

/// shared_info offsets (x86_64): arch.max_pfn and
/// arch.pfn_to_mfn_frame_list_list.
pub const SI_MAX_PFN: u64 = 3088;
pub const SI_FLL: u64 = 3096;
/// The arch part of shared_info a restore takes over (max_pfn .. p2m_generation).
pub const SI_ARCH: std::ops::Range<usize> = 3088..3136;

/// Write the domain as an xl save file: xl's header with `config_json`,
/// libxl's container, libxc's stream.
pub fn write_image(
    w: &mut dyn Write,
    config_json: &str,
    dom: &Domain,
    cpus: &[SuspendedVcpu],
) -> Result<SaveStats, MigrateError> {
    let mut w = Counting { w, n: 0 };
    write_prologue(&mut w, config_json)?;
    write_p2m_frames(&mut w, dom)?;
    let pages = write_pages(
        &mut w,
        dom,
        0..dom.layout.nr_pages,
        false,
        &mut |_, _, _| {},
    )?;
    write_epilogue(&mut w, dom, cpus)?;
    Ok(SaveStats { pages, bytes: w.n })
}

/// The vCPU records: BASIC (vcpu_guest_context) and XSAVE (xcr0,
/// xcr0_accum, the XSAVE area, as XEN_DOMCTL_getvcpuextstate gives them).
pub fn write_vcpu(w: &mut dyn Write, cpu: &SuspendedVcpu) -> Result<(), MigrateError> {
    let fpu: Option<[u8; 512]> = cpu.xsave.get(..512).and_then(|s| s.try_into().ok());
    let basic = xen_shim::vcpuctx_save::encode_context(&cpu.ctx, fpu.as_ref());
    stream::write_record(
        w,
        rec::X86_PV_VCPU_BASIC,
        &stream::vcpu_body(cpu.id, &basic),
    )?;
    if !cpu.xsave.is_empty() {
        let mut x = Vec::with_capacity(16 + cpu.xsave.len());
        x.extend_from_slice(&cpu.xcr0.to_le_bytes());
        x.extend_from_slice(&cpu.xcr0.to_le_bytes());
        x.extend_from_slice(&cpu.xsave);
        stream::write_record(w, rec::X86_PV_VCPU_XSAVE, &stream::vcpu_body(cpu.id, &x))?;
    }
    Ok(())
}

/// The header records of a libxc stream inside xl's and libxl's.
pub fn write_prologue(w: &mut dyn Write, config_json: &str) -> Result<(), MigrateError> {
    stream::write_xl_header(w, config_json)?;
    stream::write_libxl_header(w)?;
    stream::write_record(w, stream::libxl_rec::LIBXC_CONTEXT, &[])?;
    stream::write_xc_headers(w, XEN_VERSION)?;
    stream::write_record(w, rec::X86_PV_INFO, &stream::pv_info_body())
}

/// The records after the memory: TSC, shared_info, the vCPU, the ENDs.
pub fn write_epilogue(
    w: &mut dyn Write,
    dom: &Domain,
    cpus: &[SuspendedVcpu],
) -> Result<(), MigrateError> {
    let tsc = stream::TscInfo {
        mode: 0,
        khz: dom.clock.tsc_khz as u32,
        nsec: dom.clock.now_ns(dom.platform.tsc()),
        incarnation: 0,
    };
    stream::write_record(w, rec::X86_TSC_INFO, &tsc.body())?;
    let mut shinfo = vec![0u8; PAGE_SIZE];
    dom.mem
        .read(dom.layout.shared_info_gpa, &mut shinfo)
        .map_err(|e| MigrateError::Memory(e.to_string()))?;
    stream::write_record(w, rec::SHARED_INFO, &shinfo)?;
    for cpu in cpus {
        write_vcpu(w, cpu)?;
    }
    stream::write_record(w, rec::END, &[])?;
    stream::write_record(w, stream::libxl_rec::END, &[])?;
    w.flush()?;
    Ok(())
}

/// Told of each frame written: its PFN, stream type and contents.
pub type PageSeen<'a> = dyn FnMut(u64, u8, Option<&[u8]>) + 'a;

/// A frame left out of a live round: a page table that maps a frame
/// outside RAM while the guest runs (shared_info, grant frames); it is
/// sent in the final round, once the guest has unmapped them to suspend.
pub const DEFERRED: u8 = 0xff;

/// PAGE_DATA records for `pfns`, in batches; returns the pages written.
/// `seen` is told each frame's type and (normalised) contents as sent.
/// `live`: a table that cannot be normalised is deferred, not an error.
pub fn write_pages(
    w: &mut dyn Write,
    dom: &Domain,
    pfns: impl Iterator<Item = u64>,
    live: bool,
    seen: &mut PageSeen<'_>,
) -> Result<u64, MigrateError> {
    let mem = &*dom.mem;
    let mut entries = Vec::with_capacity(stream::MAX_BATCH);
    let mut data = Vec::with_capacity(stream::MAX_BATCH * PAGE_SIZE);
    let mut written = 0u64;
    let mut flush = |entries: &mut Vec<(u64, u8)>, data: &mut Vec<u8>| {
        if entries.is_empty() {
            return Ok(());
        }
        let body = stream::page_data_body(entries, data);
        entries.clear();
        data.clear();
        stream::write_record(w, rec::PAGE_DATA, &body)
    };
    let mut page = vec![0u8; PAGE_SIZE];
    for pfn in pfns {
        let mmu = dom.mmu.lock().unwrap_or_else(|e| e.into_inner());
        let ty = pfn_type(&mmu, pfn);
        if pfinfo::has_data(ty) {
            mem.read(pfn << 12, &mut page)
                .map_err(|e| MigrateError::Memory(e.to_string()))?;
            let level = ty & 0x7;
            if (1..=4).contains(&level) {
                match normalise_table(&mut page, level, &|m| mmu.is_ram(m)) {
                    Ok(()) => {}
                    Err(_) if live => {
                        drop(mmu);
                        seen(pfn, DEFERRED, None);
                        continue;
                    }
                    Err(e) => return Err(e),
                }
            }
            drop(mmu);
            seen(pfn, ty, Some(&page));
            data.extend_from_slice(&page);
            written += 1;
        } else {
            drop(mmu);
            seen(pfn, ty, None);
        }
        entries.push((pfn, ty));
        if entries.len() == stream::MAX_BATCH {
            flush(&mut entries, &mut data)?;
        }
    }
    flush(&mut entries, &mut data)?;
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::migrate::stream::{libxl_rec, read_record};

    /// A whole image of a small test domain, read back record by record
    /// in the order the libxc and libxl specifications give.
    #[test]
    fn image_follows_the_stream_layout() {
        let (dom, _) = xen_shim::testing::test_domain(64);
        // Frame 5: an L4 (empty but for a user entry to frame 9) pinned.
        dom.mem.write_u64(5 << 12, (9 << 12) | 0x67).unwrap();
        dom.mmu
            .lock()
            .unwrap()
            .pin(&*dom.mem, &mut Vec::new(), 5, 4)
            .unwrap();
        dom.mem.write(7 << 12, &[0x5a; 16]).unwrap();
        let ctx = xen_shim::vcpu::BootContext {
            cr3: 5,
            regs: Regs {
                rdx: 11,
                ..Default::default()
            },
            traps: vec![Default::default(); 256],
            ..Default::default()
        };
        let cpu = SuspendedVcpu {
            id: 0,
            ctx,
            xsave: vec![1; 4096],
            xcr0: 3,
            at: std::time::Instant::now(),
        };
        let mut img = Vec::new();
        let st = write_image(&mut img, "{\"name\":\"t\"}", &dom, &[cpu]).unwrap();
        assert_eq!(st.bytes, img.len() as u64);
        assert_eq!(st.pages, 64);
        let mut r = &img[..];
        assert_eq!(stream::read_xl_header(&mut r).unwrap(), "{\"name\":\"t\"}");
        stream::read_libxl_header(&mut r).unwrap();
        assert_eq!(read_record(&mut r).unwrap().ty, libxl_rec::LIBXC_CONTEXT);
        stream::read_xc_headers(&mut r).unwrap();
        let info = read_record(&mut r).unwrap();
        assert_eq!(info.ty, rec::X86_PV_INFO);
        stream::check_pv_info(&info.body).unwrap();
        let mut types = std::collections::BTreeMap::new();
        let mut seen = Vec::new();
        loop {
            let rr = read_record(&mut r).unwrap();
            seen.push(rr.ty);
            match rr.ty {
                rec::PAGE_DATA => {
                    for (pfn, ty, off) in stream::parse_page_data(&rr.body).unwrap() {
                        types.insert(pfn, ty);
                        if pfn == 7 {
                            let off = off.unwrap();
                            assert_eq!(&rr.body[off..off + 16], &[0x5a; 16]);
                        }
                    }
                }
                rec::X86_PV_VCPU_BASIC => {
                    let (id, blob) = stream::parse_vcpu_body(&rr.body).unwrap();
                    let c = xen_shim::vcpuctx::parse_context(blob);
                    assert_eq!((id, c.cr3, c.regs.rdx), (0, 5, 11));
                }
                rec::X86_PV_VCPU_XSAVE => {
                    let (_, blob) = stream::parse_vcpu_body(&rr.body).unwrap();
                    assert_eq!(blob.len(), 16 + 4096);
                    assert_eq!(&blob[..8], &3u64.to_le_bytes());
                }
                rec::SHARED_INFO => assert_eq!(rr.body.len(), PAGE_SIZE),
                rec::X86_TSC_INFO => {
                    stream::TscInfo::parse(&rr.body).unwrap();
                }
                rec::END => break,
                t => panic!("unexpected record {t:#x}"),
            }
        }
        assert_eq!(types.len(), 64);
        assert_eq!(types[&5], pfinfo::L4TAB | pfinfo::PIN);
        assert_eq!(types[&9], 3, "frame 9 is an L3 through the pinned L4");
        assert_eq!(types[&7], pfinfo::NOTAB);
        assert_eq!(
            &seen[seen.len() - 5..],
            &[
                rec::X86_TSC_INFO,
                rec::SHARED_INFO,
                rec::X86_PV_VCPU_BASIC,
                rec::X86_PV_VCPU_XSAVE,
                rec::END
            ]
        );
        assert_eq!(read_record(&mut r).unwrap().ty, libxl_rec::END);
        assert!(r.is_empty());
    }

    #[test]
    fn normalise_clears_hypervisor_slots_and_refuses_foreign_frames() {
        let mut page = vec![0u8; PAGE_SIZE];
        let put = |p: &mut Vec<u8>, i: usize, v: u64| {
            p[i * 8..i * 8 + 8].copy_from_slice(&v.to_le_bytes())
        };
        put(&mut page, 0, (5 << 12) | 0x67);
        put(&mut page, 256, (0x9000 << 12) | 0x63);
        put(&mut page, 271, 0x1234_5003);
        put(&mut page, 272, 0); // not present: anything goes
        let ram = |m: u64| m < 100;
        normalise_table(&mut page, 4, &ram).unwrap();
        assert_eq!(&page[256 * 8..272 * 8], &[0u8; 128][..]);
        assert_eq!(page[0], 0x67);
        // The same frame in an L1 is outside RAM: refused.
        let mut l1 = vec![0u8; PAGE_SIZE];
        put(&mut l1, 3, (0x9000 << 12) | 0x63);
        assert!(normalise_table(&mut l1, 1, &ram).is_err());
    }
}

//! Descriptor tables: set_gdt, update_descriptor, set_segment_base, and the
//! descriptors the monitor needs to build its real GDT.

use crate::abi::{errno::*, FIRST_RESERVED_GDT_ENTRY};
use crate::mmu::PageType;
use crate::vcpu::{field, PvVcpu};

/// Xen's checks for a guest descriptor; returns it with DPL raised to 3.
pub fn check_descriptor(d: u64) -> Option<u64> {
    let present = d & (1 << 47) != 0;
    if !present {
        return Some(d);
    }
    let s = d & (1 << 44) != 0; // code/data
    if !s {
        let ty = (d >> 40) & 0xf;
        // Call gates are the only system descriptors Xen allows; refuse them too.
        return if ty == 0 { Some(d) } else { None };
    }
    Some(d | (3 << 45))
}

pub fn set_gdt(v: &mut PvVcpu, frame_list: u64, entries: u64) -> Result<i64, i64> {
    if entries > FIRST_RESERVED_GDT_ENTRY as u64 {
        return Err(-EINVAL);
    }
    let nr_frames = entries.div_ceil(512);
    let mut frames = Vec::with_capacity(nr_frames as usize);
    for i in 0..nr_frames {
        frames.push(v.read_u64(field(frame_list, i * 8)?)?);
    }
    let dom = v.dom.clone();
    let mut copy = Vec::with_capacity(entries as usize);
    for i in 0..entries {
        let f = frames[(i / 512) as usize];
        let d = dom
            .mem
            .read_u64((f << 12) + (i % 512) * 8)
            .map_err(|_| -EFAULT)?;
        copy.push(check_descriptor(d).ok_or(-EINVAL)?);
    }
    {
        let mut mmu = dom.mmu.lock().unwrap_or_else(|e| e.into_inner());
        for (k, &f) in frames.iter().enumerate() {
            if let Err(e) = mmu.get_type(&*dom.mem, &mut v.pt_log, f, PageType::Desc) {
                for &g in &frames[..k] {
                    mmu.put_type(&*dom.mem, g);
                }
                return Err(e);
            }
        }
        for &f in &v.gdt_frames {
            mmu.put_type(&*dom.mem, f);
        }
    }
    v.gdt_frames = frames;
    v.gdt = copy;
    v.gdt_dirty = true;
    Ok(0)
}

pub fn update_descriptor(v: &mut PvVcpu, maddr: u64, desc: u64) -> Result<i64, i64> {
    if maddr & 7 != 0 {
        return Err(-EINVAL);
    }
    let d = check_descriptor(desc).ok_or(-EINVAL)?;
    let dom = v.dom.clone();
    let mfn = maddr >> 12;
    {
        let mmu = dom.mmu.lock().unwrap_or_else(|e| e.into_inner());
        if !mmu.is_ram(mfn)
            || !matches!(
                mmu.type_of(mfn),
                PageType::None | PageType::Writable | PageType::Desc
            )
        {
            return Err(-EINVAL);
        }
    }
    dom.mem.write_u64(maddr, desc).map_err(|_| -EFAULT)?;
    if let Some(k) = v.gdt_frames.iter().position(|&f| f == mfn) {
        let idx = k * 512 + ((maddr & 0xfff) / 8) as usize;
        if let Some(slot) = v.gdt.get_mut(idx) {
            *slot = d;
            v.gdt_dirty = true;
        }
    }
    Ok(0)
}

/// Base address encoded in a descriptor.
pub fn descriptor_base(d: u64) -> u64 {
    ((d >> 16) & 0xff_ffff) | (((d >> 56) & 0xff) << 24)
}

/// The descriptor a selector names in this vCPU's GDT/LDT copy, if any.
pub fn lookup(v: &PvVcpu, sel: u16) -> Option<u64> {
    let idx = usize::from(sel >> 3);
    if sel & 4 != 0 {
        if idx as u32 >= v.ldt_ents {
            return None;
        }
        let mut b = [0u8; 8];
        v.copy_from(v.ldt_base.wrapping_add(idx as u64 * 8), &mut b)
            .ok()?;
        return check_descriptor(u64::from_le_bytes(b));
    }
    reserved_descriptor(sel).or_else(|| v.gdt.get(idx).copied())
}

/// Xen's own flat descriptors at 0xe008..0xe033.
pub fn reserved_descriptor(sel: u16) -> Option<u64> {
    match sel & !3 {
        0xe008 => Some(0x00af_9b00_0000_ffff),
        0xe010 => Some(0x00cf_9300_0000_ffff),
        0xe020 => Some(0x00cf_fb00_0000_ffff),
        0xe028 => Some(0x00cf_f300_0000_ffff),
        0xe030 => Some(0x00af_fb00_0000_ffff),
        _ => None,
    }
}

pub fn set_segment_base(v: &mut PvVcpu, which: u64, base: u64) -> Result<i64, i64> {
    let canonical = (base >> 47) == 0 || (base >> 47) == 0x1ffff;
    match which {
        0 if canonical => v.fs_base = base,
        1 if canonical => v.gs_base_user = base,
        2 if canonical => v.gs_base_kernel = base,
        3 => {
            let sel = base as u16;
            v.gs_sel_user = sel;
            v.gs_base_user = if sel & !3 == 0 {
                0
            } else {
                lookup(v, sel).map(descriptor_base).unwrap_or(0)
            };
        }
        _ => return Err(-EINVAL),
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptors_get_dpl3_and_system_ones_are_refused() {
        // kernel code with DPL 0 becomes DPL 3
        assert_eq!(
            check_descriptor(0x00af_9b00_0000_ffff),
            Some(0x00af_fb00_0000_ffff)
        );
        // a 64-bit TSS descriptor is refused
        assert_eq!(check_descriptor(0x0000_8900_0000_0067), None);
        // non-present passes untouched
        assert_eq!(check_descriptor(0x1234), Some(0x1234));
        assert_eq!(descriptor_base(0xff00_9312_3456_0000), 0xff12_3456);
    }
}

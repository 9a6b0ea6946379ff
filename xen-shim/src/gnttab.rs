//! Grant tables, version 1: the guest's own table (setup_table/query_size)
//! for Linux's grant-table driver, ready for the monitor's backends.

use crate::abi::errno::*;
use crate::vcpu::{field, PvVcpu};

const GNTTABOP_SETUP_TABLE: u64 = 2;
const GNTTABOP_DUMP_TABLE: u64 = 3;
const GNTTABOP_QUERY_SIZE: u64 = 6;
const GNTTABOP_SET_VERSION: u64 = 8;
const GNTTABOP_GET_VERSION: u64 = 10;
const GNTST_OKAY: i16 = 0;
const GNTST_GENERAL_ERROR: i16 = -1;

/// Size of a v1 grant entry: {u16 flags, u16 domid, u32 frame}.
pub const ENTRY_SIZE: u64 = 8;

/// Read grant entry `gref` of the domain's table: (flags, domid, frame).
pub fn read_entry(
    mem: &dyn crate::mem::GuestMem,
    table_gpa: u64,
    frames: u32,
    gref: u32,
) -> Option<(u16, u16, u32)> {
    let off = u64::from(gref) * ENTRY_SIZE;
    if off + ENTRY_SIZE > u64::from(frames) * 4096 {
        return None;
    }
    let w = mem.read_u64(table_gpa + off).ok()?;
    Some((w as u16, (w >> 16) as u16, (w >> 32) as u32))
}

pub fn grant_table_op(v: &mut PvVcpu, cmd: u64, arg: u64, count: u64) -> Result<i64, i64> {
    if count != 1 {
        return Err(-EINVAL);
    }
    let dom = v.dom.clone();
    let max = dom.layout.grant_frames;
    match cmd {
        GNTTABOP_SETUP_TABLE => {
            let mut b = [0u8; 24];
            v.copy_from(arg, &mut b)?;
            let nr = u32::from_le_bytes(b[4..8].try_into().unwrap_or([0; 4]));
            let list = u64::from_le_bytes(b[16..24].try_into().unwrap_or([0; 8]));
            let status = if nr > max || max == 0 {
                GNTST_GENERAL_ERROR
            } else {
                for i in 0..u64::from(nr) {
                    let mfn = (dom.layout.grant_gpa >> 12) + i;
                    v.copy_to(field(list, i * 8)?, &mfn.to_le_bytes())?;
                }
                GNTST_OKAY
            };
            v.copy_to(field(arg, 8)?, &status.to_le_bytes())?;
            Ok(0)
        }
        GNTTABOP_QUERY_SIZE => {
            let mut out = [0u8; 10];
            out[..4].copy_from_slice(&max.to_le_bytes());
            out[4..8].copy_from_slice(&max.to_le_bytes());
            out[8..10].copy_from_slice(&GNTST_OKAY.to_le_bytes());
            v.copy_to(field(arg, 4)?, &out)?;
            Ok(0)
        }
        GNTTABOP_SET_VERSION => {
            let ver = v.read_u32(arg)?;
            if ver != 1 {
                v.copy_to(arg, &1u32.to_le_bytes())?;
                return Err(-EINVAL);
            }
            Ok(0)
        }
        GNTTABOP_GET_VERSION => {
            v.copy_to(field(arg, 4)?, &1u32.to_le_bytes())?;
            Ok(0)
        }
        // A debugging aid (dump the table to Xen's console) that Xen dropped in
        // 2006: it has answered -ENOSYS since. GRUB's PV disk driver still calls
        // it once per disk and ignores the result, so this is no gap to report.
        GNTTABOP_DUMP_TABLE => {
            log::debug!("grant_table_op dump_table -> -ENOSYS (as Xen)");
            Err(-ENOSYS)
        }
        _ => {
            dom.log_once("unimplemented grant_table_op", cmd, || {
                format!("unimplemented grant_table_op {cmd} -> -ENOSYS")
            });
            Err(-ENOSYS)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{map_low_memory, test_domain};

    /// GNTTABOP_dump_table is answered as Xen does (-ENOSYS), without an
    /// "unimplemented" report; the other ops are unaffected.
    #[test]
    fn dump_table_is_enosys_and_not_reported() {
        let (dom, _) = test_domain(64);
        let mut v = PvVcpu::new(0, dom.clone());
        v.root_kernel = map_low_memory(&dom);
        // {domid_t dom = DOMID_SELF, int16 status}
        dom.mem.write(0xa000, &[0xf0, 0x7f, 0x55, 0x55]).unwrap();
        assert_eq!(
            grant_table_op(&mut v, GNTTABOP_DUMP_TABLE, 0xa000, 1),
            Err(-ENOSYS)
        );
        assert_eq!(dom.log_once_remembered(), 0);
        // The guest's structure is left alone, as Xen leaves it.
        let mut b = [0u8; 4];
        dom.mem.read(0xa000, &mut b).unwrap();
        assert_eq!(b, [0xf0, 0x7f, 0x55, 0x55]);
        // A truly unknown op is still reported once.
        assert_eq!(grant_table_op(&mut v, 99, 0xa000, 1), Err(-ENOSYS));
        assert_eq!(dom.log_once_remembered(), 1);
        // set_version 1 still succeeds.
        dom.mem.write(0xa000, &1u32.to_le_bytes()).unwrap();
        assert_eq!(
            grant_table_op(&mut v, GNTTABOP_SET_VERSION, 0xa000, 1),
            Ok(0)
        );
    }
}

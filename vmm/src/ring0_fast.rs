//! The fast paths of Xen's cost model in ring 0, on hardware hosts (VT-x /
//! AMD-V), where SYSCALL from the guest lands in ring 0 natively.
//!
//! Each vCPU's LSTAR points at its own copy of [`CODE`] (a per-vCPU page of
//! the ring-0 area, supervisor, read-only, executable); the page after it
//! is that vCPU's data page, which the code reaches RIP-relative. Two
//! hypercalls a guest kernel makes on every timer tick and interrupt are
//! done there without leaving the guest:
//! - `HYPERVISOR_iret` back to guest kernel mode: the frame is checked and
//!   sanitised exactly as `xen_shim::traps::do_iret` does, the upcall mask
//!   follows the frame's IF, and the hardware IRETQ returns;
//! - `VCPUOP_set_singleshot_timer` on the calling vCPU, flags 0, at or
//!   after the time the timer thread will next look at this vCPU
//!   ([`ARMED`]): the deadline is published in the data page, where the
//!   timer thread and the vCPU thread read it ([`take_deadline`]).
//! Everything else (returns to user mode, pending events, other hypercalls,
//! guest user mode's own SYSCALLs) restores the registers and exits on
//! `PORT_SYSCALL` as before. A fault inside this code (a guest stack that
//! is not mapped or not writable, a selector the CPU refuses) arrives on
//! the IST2 stack and is turned back into that same exit by the monitor
//! ([`saved_entry`]), so the guest sees exactly the slow path's behaviour.
//!
//! The source with its comments is `ring0_fast.S` beside this file; the
//! test `bytes_match_the_assembly_source` re-assembles it.

use xen_shim::mem::{GuestMem, MemError};

use crate::layout::*;

/// The machine code (`ring0_fast.S`), instruction by instruction.
#[rustfmt::skip]
pub const CODE: [u8; 0x121] = [
    0x48, 0x89, 0x0d, 0x19, 0x10, 0x00, 0x00, // 0x000 mov %rcx,save_rcx(%rip)
    0x4c, 0x89, 0x1d, 0x1a, 0x10, 0x00, 0x00, // 0x007 mov %r11,save_r11(%rip)
    0x48, 0x89, 0x25, 0x1b, 0x10, 0x00, 0x00, // 0x00e mov %rsp,save_rsp(%rip)
    0x48, 0x89, 0x05, 0x1c, 0x10, 0x00, 0x00, // 0x015 mov %rax,save_rax(%rip)
    0x80, 0x3d, 0xe5, 0x0f, 0x00, 0x00, 0x00, // 0x01c cmpb $0x0,kmode(%rip)
    0x74, 0x10, // 0x023 je slow
    0x48, 0x83, 0xf8, 0x17, // 0x025 cmp $0x17,%rax
    0x74, 0x2a, // 0x029 je iret
    0x48, 0x83, 0xf8, 0x18, // 0x02b cmp $0x18,%rax
    0x0f, 0x84, 0x96, 0x00, 0x00, 0x00, // 0x02f je vcpu_op
    // slow:
    0x48, 0x8b, 0x0d, 0xe4, 0x0f, 0x00, 0x00, // 0x035 mov save_rcx(%rip),%rcx
    0x4c, 0x8b, 0x1d, 0xe5, 0x0f, 0x00, 0x00, // 0x03c mov save_r11(%rip),%r11
    0x48, 0x8b, 0x25, 0xe6, 0x0f, 0x00, 0x00, // 0x043 mov save_rsp(%rip),%rsp
    0x48, 0x8b, 0x05, 0xe7, 0x0f, 0x00, 0x00, // 0x04a mov save_rax(%rip),%rax
    0xe6, 0xf0, // 0x051 out %al,$0xf0
    0x0f, 0x0b, // 0x053 ud2
    // iret:
    0xf6, 0x44, 0x24, 0x28, 0x03, // 0x055 testb $0x3,0x28(%rsp)
    0x75, 0xd9, // 0x05a jne slow
    0xf7, 0x44, 0x24, 0x18, 0x00, 0x01, 0x00, 0x00, // 0x05c testl $0x100,0x18(%rsp)
    0x75, 0xcf, // 0x064 jne slow
    0x48, 0x8b, 0x0d, 0x93, 0x0f, 0x00, 0x00, // 0x066 mov vcpu_info(%rip),%rcx
    0x48, 0x85, 0xc9, // 0x06d test %rcx,%rcx
    0x74, 0xc3, // 0x070 je slow
    0xf7, 0x44, 0x24, 0x30, 0x00, 0x02, 0x00, 0x00, // 0x072 testl $0x200,0x30(%rsp)
    0x74, 0x0c, // 0x07a je iret+0x33
    0x31, 0xc0, // 0x07c xor %eax,%eax
    0x86, 0x41, 0x01, // 0x07e xchg %al,0x1(%rcx)
    0x80, 0x39, 0x00, // 0x081 cmpb $0x0,(%rcx)
    0x75, 0xaf, // 0x084 jne slow
    0xeb, 0x04, // 0x086 jmp iret+0x37
    0xc6, 0x41, 0x01, 0x01, // 0x088 movb $0x1,0x1(%rcx)
    0x48, 0x83, 0x4c, 0x24, 0x28, 0x03, // 0x08c orq $0x3,0x28(%rsp)
    0x48, 0x83, 0x4c, 0x24, 0x40, 0x03, // 0x092 orq $0x3,0x40(%rsp)
    0x4c, 0x8b, 0x5c, 0x24, 0x30, // 0x098 mov 0x30(%rsp),%r11
    0x49, 0x81, 0xe3, 0xd7, 0x4f, 0x3d, 0x00, // 0x09d and $0x3d4fd7,%r11
    0x49, 0x81, 0xcb, 0x02, 0x02, 0x00, 0x00, // 0x0a4 or $0x202,%r11
    0x4c, 0x89, 0x5c, 0x24, 0x30, // 0x0ab mov %r11,0x30(%rsp)
    0x48, 0xff, 0x05, 0x89, 0x0f, 0x00, 0x00, // 0x0b0 incq n_iret(%rip)
    0x4c, 0x8b, 0x5c, 0x24, 0x08, // 0x0b7 mov 0x8(%rsp),%r11
    0x48, 0x8b, 0x4c, 0x24, 0x10, // 0x0bc mov 0x10(%rsp),%rcx
    0x48, 0x8b, 0x04, 0x24, // 0x0c1 mov (%rsp),%rax
    0x48, 0x83, 0xc4, 0x20, // 0x0c5 add $0x20,%rsp
    0x48, 0xcf, // 0x0c9 iretq
    // vcpu_op:
    0x48, 0x83, 0xff, 0x08, // 0x0cb cmp $0x8,%rdi
    0x0f, 0x85, 0x60, 0xff, 0xff, 0xff, // 0x0cf jne slow
    0x48, 0x3b, 0x35, 0x74, 0x0f, 0x00, 0x00, // 0x0d5 cmp vcpu_id(%rip),%rsi
    0x0f, 0x85, 0x53, 0xff, 0xff, 0xff, // 0x0dc jne slow
    0x8b, 0x4a, 0x08, // 0x0e2 mov 0x8(%rdx),%ecx
    0x85, 0xc9, // 0x0e5 test %ecx,%ecx
    0x0f, 0x85, 0x48, 0xff, 0xff, 0xff, // 0x0e7 jne slow
    0x48, 0x8b, 0x0a, // 0x0ed mov (%rdx),%rcx
    0x48, 0x89, 0xc8, // 0x0f0 mov %rcx,%rax
    0x48, 0x87, 0x05, 0x16, 0x0f, 0x00, 0x00, // 0x0f3 xchg %rax,deadline(%rip)
    0x48, 0x3b, 0x0d, 0x17, 0x0f, 0x00, 0x00, // 0x0fa cmp armed(%rip),%rcx
    0x0f, 0x82, 0x2e, 0xff, 0xff, 0xff, // 0x101 jb slow
    0x48, 0xff, 0x05, 0x3a, 0x0f, 0x00, 0x00, // 0x107 incq n_timer(%rip)
    0x48, 0x8b, 0x0d, 0x0b, 0x0f, 0x00, 0x00, // 0x10e mov save_rcx(%rip),%rcx
    0x4c, 0x8b, 0x1d, 0x0c, 0x0f, 0x00, 0x00, // 0x115 mov save_r11(%rip),%r11
    0x31, 0xc0, // 0x11c xor %eax,%eax
    0x48, 0x0f, 0x07, // 0x11e sysretq
];

/// Offset of the slow path's `out %al, $0xf0` in [`CODE`].
pub const SLOW_OUT_OFF: u64 = 0x51;
/// The first and last byte of the instructions that may fault.
const FAULT_RANGE: std::ops::Range<u64> = 0x55..0x121;

/// Data page fields (byte offsets).
pub const VCPU_INFO: u64 = 0x00;
pub const KMODE: u64 = 0x08;
pub const DEADLINE: u64 = 0x10;
pub const ARMED: u64 = 0x18;
pub const SAVE_RCX: u64 = 0x20;
pub const SAVE_R11: u64 = 0x28;
pub const SAVE_RSP: u64 = 0x30;
pub const SAVE_RAX: u64 = 0x38;
pub const N_IRET: u64 = 0x40;
pub const N_TIMER: u64 = 0x48;
pub const VCPU_ID: u64 = 0x50;

/// "No deadline" / "fast path off" in [`DEADLINE`] and [`ARMED`].
pub const NONE: u64 = u64::MAX;

/// Virtual address of vCPU `v`'s SYSCALL entry (its LSTAR).
pub fn code_va(v: u32) -> u64 {
    MonitorLayout::r0_va(MonitorLayout::vcpu_page(v, R0_FAST_CODE))
}

/// Guest-physical address of vCPU `v`'s data page.
pub fn data_gpa(l: &MonitorLayout, v: u32) -> u64 {
    l.r0_gpa(MonitorLayout::vcpu_page(v, R0_FAST_CODE + 1))
}

/// Whether `rip` is in vCPU `v`'s fast-path code where a fault may happen.
pub fn may_fault_at(v: u32, rip: u64) -> bool {
    rip.checked_sub(code_va(v))
        .is_some_and(|o| FAULT_RANGE.contains(&o))
}

/// Write vCPU `v`'s code and a data page with both fast paths off.
pub fn install(mem: &dyn GuestMem, l: &MonitorLayout, v: u32) -> Result<(), MemError> {
    mem.write(l.r0_gpa(MonitorLayout::vcpu_page(v, R0_FAST_CODE)), &CODE)?;
    let d = data_gpa(l, v);
    mem.write(d, &[0u8; PAGE as usize])?;
    mem.write_u64(d + DEADLINE, NONE)?;
    mem.write_u64(d + ARMED, NONE)?;
    mem.write_u64(d + VCPU_ID, v.into())
}

/// The registers at the SYSCALL, as the code saved them on entry: RAX,
/// RCX, R11, RSP. Everything else the code leaves alone.
pub fn saved_entry(mem: &dyn GuestMem, l: &MonitorLayout, v: u32) -> Result<[u64; 4], MemError> {
    let d = data_gpa(l, v);
    Ok([
        mem.read_u64(d + SAVE_RAX)?,
        mem.read_u64(d + SAVE_RCX)?,
        mem.read_u64(d + SAVE_R11)?,
        mem.read_u64(d + SAVE_RSP)?,
    ])
}

/// Take the singleshot deadline the guest set in ring 0 since the last
/// look (`None` if it set none).
pub fn take_deadline(mem: &dyn GuestMem, l: &MonitorLayout, v: u32) -> Option<u64> {
    swap(mem, data_gpa(l, v) + DEADLINE, NONE).filter(|&d| d != NONE)
}

/// Tell vCPU `v`'s ring-0 code that the timer thread looks at it again at
/// `at` (ns): deadlines set there from then on are seen in time. A locked
/// store, so that with the code's locked publish of a deadline one of the
/// two always sees the other's write.
pub fn set_armed(mem: &dyn GuestMem, l: &MonitorLayout, v: u32, at: u64) {
    swap(mem, data_gpa(l, v) + ARMED, at);
}

/// Peek at the deadline the guest set in ring 0 (for the timer thread).
pub fn peek_deadline(mem: &dyn GuestMem, l: &MonitorLayout, v: u32) -> Option<u64> {
    mem.read_u64(data_gpa(l, v) + DEADLINE)
        .ok()
        .filter(|&d| d != NONE)
}

/// Atomic exchange built on compare-and-exchange (a locked instruction).
fn swap(mem: &dyn GuestMem, gpa: u64, new: u64) -> Option<u64> {
    let mut cur = mem.read_u64(gpa).ok()?;
    loop {
        match mem.compare_exchange_u64(gpa, cur, new).ok()? {
            Ok(old) => return Some(old),
            Err(actual) => cur = actual,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_slow_path_exits_on_the_syscall_port() {
        let o = SLOW_OUT_OFF as usize;
        assert_eq!(CODE[o], 0xe6);
        assert_eq!(u16::from(CODE[o + 1]), PORT_SYSCALL);
        assert_eq!(&CODE[o + 2..o + 4], &[0x0f, 0x0b]);
        // it ends in IRETQ (iret) and SYSRETQ (timer)
        assert_eq!(&CODE[0xc9..0xcb], &[0x48, 0xcf]);
        assert_eq!(&CODE[CODE.len() - 3..], &[0x48, 0x0f, 0x07]);
    }

    #[test]
    fn faults_are_recognised_only_in_the_code_that_can_fault() {
        assert!(may_fault_at(1, code_va(1) + 0x55));
        assert!(may_fault_at(1, code_va(1) + 0x120));
        assert!(!may_fault_at(1, code_va(1)));
        assert!(!may_fault_at(1, code_va(0) + 0x60));
        assert!(!may_fault_at(1, code_va(1) + 0x121));
    }

    #[test]
    fn a_deadline_set_in_ring_0_is_taken_once() {
        let l = MonitorLayout::new(64 << 20);
        let mem = xen_shim::mem::VecMem::new(l.end as usize);
        install(&mem, &l, 2).unwrap();
        let d = data_gpa(&l, 2);
        assert_eq!(mem.read_u64(d + VCPU_ID).unwrap(), 2);
        // both fast paths start off
        assert_eq!(mem.read_u64(d + ARMED).unwrap(), NONE);
        assert_eq!(mem.read_u64(d + VCPU_INFO).unwrap(), 0);
        assert_eq!(take_deadline(&mem, &l, 2), None);
        // what the code does on a SYSCALL: publish
        mem.write_u64(d + DEADLINE, 5_000_000).unwrap();
        assert_eq!(peek_deadline(&mem, &l, 2), Some(5_000_000));
        assert_eq!(take_deadline(&mem, &l, 2), Some(5_000_000));
        assert_eq!(take_deadline(&mem, &l, 2), None);
        assert_eq!(peek_deadline(&mem, &l, 2), None);
        set_armed(&mem, &l, 2, 7);
        assert_eq!(mem.read_u64(d + ARMED).unwrap(), 7);
        // the data page sits right after the code, as the RIP-relative
        // operands assume
        assert_eq!(
            data_gpa(&l, 2),
            l.r0_gpa(MonitorLayout::vcpu_page(2, R0_FAST_CODE)) + PAGE
        );
        assert!(R0_FAST_CODE + 1 < R0_IST2 && R0_IST2 + R0_IST2_PAGES <= R0_VCPU_PAGES);
    }

    /// `ring0_fast.S` assembles to [`CODE`] (needs binutils' `as`, which the
    /// preflight requires with gcc).
    #[test]
    fn bytes_match_the_assembly_source() {
        let dir = std::env::temp_dir().join(format!("xenkvm-fast-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let src = concat!(env!("CARGO_MANIFEST_DIR"), "/src/ring0_fast.S");
        let obj = dir.join("fast.o");
        let bin = dir.join("fast.bin");
        let ok = std::process::Command::new("as")
            .args(["--64", "-o"])
            .arg(&obj)
            .arg(src)
            .status()
            .expect("binutils `as` (apt-get install binutils)")
            .success();
        assert!(ok, "as failed on {src}");
        let ok = std::process::Command::new("objcopy")
            .args(["-O", "binary", "-j", ".text"])
            .arg(&obj)
            .arg(&bin)
            .status()
            .expect("binutils `objcopy`")
            .success();
        assert!(ok);
        let b = std::fs::read(&bin).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(&b[..CODE.len()], &CODE[..]);
    }
}

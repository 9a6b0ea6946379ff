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
//!
//! Everything else (returns to user mode, pending events, other hypercalls,
//! guest user mode's own SYSCALLs) restores the registers and exits on
//! `PORT_SYSCALL` as before. A fault inside this code (a guest stack that
//! is not mapped or not writable, a selector the CPU refuses) arrives on
//! the IST2 stack and is turned back into that same exit by the monitor
//! ([`saved_entry`]), so the guest sees exactly the slow path's behaviour.
//!
//! The source with its comments is `ring0_fast.S` beside this file;
//! `scripts/ring0-fast-bytes` prints [`CODE`] from it, and the test
//! `bytes_match_the_assembly_source` re-assembles it. The code never touches
//! the monitor's own area through a guest-supplied pointer: a frame or
//! argument that reaches into L4 slots 256-271 takes the slow path.

use xen_shim::mem::{GuestMem, MemError};

use crate::layout::*;

/// The machine code (`ring0_fast.S`), instruction by instruction.
#[rustfmt::skip]
pub const CODE: [u8; 0x15d] = [
    0x48, 0x89, 0x0d, 0x19, 0x10, 0x00, 0x00, // 0x000 mov %rcx,save_rcx(%rip)
    0x4c, 0x89, 0x1d, 0x1a, 0x10, 0x00, 0x00, // 0x007 mov %r11,save_r11(%rip)
    0x48, 0x89, 0x25, 0x1b, 0x10, 0x00, 0x00, // 0x00e mov %rsp,save_rsp(%rip)
    0x48, 0x89, 0x05, 0x1c, 0x10, 0x00, 0x00, // 0x015 mov %rax,save_rax(%rip)
    0x80, 0x3d, 0xe5, 0x0f, 0x00, 0x00, 0x00, // 0x01c cmpb $0x0,kmode(%rip)
    0x74, 0x10, // 0x023 je slow
    0x48, 0x83, 0xf8, 0x17, // 0x025 cmp $0x17,%rax
    0x74, 0x2a, // 0x029 je iret
    0x48, 0x83, 0xf8, 0x18, // 0x02b cmp $0x18,%rax
    0x0f, 0x84, 0xb2, 0x00, 0x00, 0x00, // 0x02f je vcpu_op
    // slow:
    0x48, 0x8b, 0x0d, 0xe4, 0x0f, 0x00, 0x00, // 0x035 mov save_rcx(%rip),%rcx
    0x4c, 0x8b, 0x1d, 0xe5, 0x0f, 0x00, 0x00, // 0x03c mov save_r11(%rip),%r11
    0x48, 0x8b, 0x25, 0xe6, 0x0f, 0x00, 0x00, // 0x043 mov save_rsp(%rip),%rsp
    0x48, 0x8b, 0x05, 0xe7, 0x0f, 0x00, 0x00, // 0x04a mov save_rax(%rip),%rax
    0xe6, 0xf0, // 0x051 out %al,$0xf0
    0x0f, 0x0b, // 0x053 ud2
    // iret:
    0x48, 0xb9, 0x47, 0x00, 0x00, 0x00, 0x00, 0x80, 0x00, 0x00, // 0x055 movabs $0x800000000047,%rcx
    0x48, 0x01, 0xe1, // 0x05f add %rsp,%rcx
    0x48, 0xb8, 0x47, 0x00, 0x00, 0x00, 0x00, 0x08, 0x00, 0x00, // 0x062 movabs $0x80000000047,%rax
    0x48, 0x39, 0xc1, // 0x06c cmp %rax,%rcx
    0x72, 0xc4, // 0x06f jb slow
    0xf6, 0x44, 0x24, 0x28, 0x03, // 0x071 testb $0x3,0x28(%rsp)
    0x75, 0xbd, // 0x076 jne slow
    0xf7, 0x44, 0x24, 0x18, 0x00, 0x01, 0x00, 0x00, // 0x078 testl $0x100,0x18(%rsp)
    0x75, 0xb3, // 0x080 jne slow
    0x48, 0x8b, 0x0d, 0x77, 0x0f, 0x00, 0x00, // 0x082 mov vcpu_info(%rip),%rcx
    0x48, 0x85, 0xc9, // 0x089 test %rcx,%rcx
    0x74, 0xa7, // 0x08c je slow
    0xf7, 0x44, 0x24, 0x30, 0x00, 0x02, 0x00, 0x00, // 0x08e testl $0x200,0x30(%rsp)
    0x74, 0x0c, // 0x096 je iret+0x4f
    0x31, 0xc0, // 0x098 xor %eax,%eax
    0x86, 0x41, 0x01, // 0x09a xchg %al,0x1(%rcx)
    0x80, 0x39, 0x00, // 0x09d cmpb $0x0,(%rcx)
    0x75, 0x93, // 0x0a0 jne slow
    0xeb, 0x04, // 0x0a2 jmp iret+0x53
    0xc6, 0x41, 0x01, 0x01, // 0x0a4 movb $0x1,0x1(%rcx)
    0x48, 0x83, 0x4c, 0x24, 0x28, 0x03, // 0x0a8 orq $0x3,0x28(%rsp)
    0x48, 0x83, 0x4c, 0x24, 0x40, 0x03, // 0x0ae orq $0x3,0x40(%rsp)
    0x4c, 0x8b, 0x5c, 0x24, 0x30, // 0x0b4 mov 0x30(%rsp),%r11
    0x49, 0x81, 0xe3, 0xd7, 0x4f, 0x3d, 0x00, // 0x0b9 and $0x3d4fd7,%r11
    0x49, 0x81, 0xcb, 0x02, 0x02, 0x00, 0x00, // 0x0c0 or $0x202,%r11
    0x4c, 0x89, 0x5c, 0x24, 0x30, // 0x0c7 mov %r11,0x30(%rsp)
    0x48, 0xff, 0x05, 0x6d, 0x0f, 0x00, 0x00, // 0x0cc incq n_iret(%rip)
    0x4c, 0x8b, 0x5c, 0x24, 0x08, // 0x0d3 mov 0x8(%rsp),%r11
    0x48, 0x8b, 0x4c, 0x24, 0x10, // 0x0d8 mov 0x10(%rsp),%rcx
    0x48, 0x8b, 0x04, 0x24, // 0x0dd mov (%rsp),%rax
    0x48, 0x83, 0xc4, 0x20, // 0x0e1 add $0x20,%rsp
    0x48, 0xcf, // 0x0e5 iretq
    // vcpu_op:
    0x48, 0x83, 0xff, 0x08, // 0x0e7 cmp $0x8,%rdi
    0x0f, 0x85, 0x44, 0xff, 0xff, 0xff, // 0x0eb jne slow
    0x48, 0x3b, 0x35, 0x58, 0x0f, 0x00, 0x00, // 0x0f1 cmp vcpu_id(%rip),%rsi
    0x0f, 0x85, 0x37, 0xff, 0xff, 0xff, // 0x0f8 jne slow
    0x48, 0xb9, 0x0f, 0x00, 0x00, 0x00, 0x00, 0x80, 0x00, 0x00, // 0x0fe movabs $0x80000000000f,%rcx
    0x48, 0x01, 0xd1, // 0x108 add %rdx,%rcx
    0x48, 0xb8, 0x0f, 0x00, 0x00, 0x00, 0x00, 0x08, 0x00, 0x00, // 0x10b movabs $0x8000000000f,%rax
    0x48, 0x39, 0xc1, // 0x115 cmp %rax,%rcx
    0x0f, 0x82, 0x17, 0xff, 0xff, 0xff, // 0x118 jb slow
    0x8b, 0x4a, 0x08, // 0x11e mov 0x8(%rdx),%ecx
    0x85, 0xc9, // 0x121 test %ecx,%ecx
    0x0f, 0x85, 0x0c, 0xff, 0xff, 0xff, // 0x123 jne slow
    0x48, 0x8b, 0x0a, // 0x129 mov (%rdx),%rcx
    0x48, 0x89, 0xc8, // 0x12c mov %rcx,%rax
    0x48, 0x87, 0x05, 0xda, 0x0e, 0x00, 0x00, // 0x12f xchg %rax,deadline(%rip)
    0x48, 0x3b, 0x0d, 0xdb, 0x0e, 0x00, 0x00, // 0x136 cmp armed(%rip),%rcx
    0x0f, 0x82, 0xf2, 0xfe, 0xff, 0xff, // 0x13d jb slow
    0x48, 0xff, 0x05, 0xfe, 0x0e, 0x00, 0x00, // 0x143 incq n_timer(%rip)
    0x48, 0x8b, 0x0d, 0xcf, 0x0e, 0x00, 0x00, // 0x14a mov save_rcx(%rip),%rcx
    0x4c, 0x8b, 0x1d, 0xd0, 0x0e, 0x00, 0x00, // 0x151 mov save_r11(%rip),%r11
    0x31, 0xc0, // 0x158 xor %eax,%eax
    0x48, 0x0f, 0x07, // 0x15a sysretq
];

/// Offset of the slow path's `out %al, $0xf0` in [`CODE`].
pub const SLOW_OUT_OFF: u64 = 0x51;
/// The first and last byte of the instructions that may fault.
const FAULT_RANGE: std::ops::Range<u64> = 0x55..0x15d;

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

// The code page, its data page and IST2 fit in a vCPU's ring-0 pages.
const _: () = assert!(R0_FAST_CODE + 1 < R0_IST2 && R0_IST2 + R0_IST2_PAGES <= R0_VCPU_PAGES);

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
        assert!(CODE.windows(2).any(|w| w == [0x48, 0xcf]));
        assert_eq!(&CODE[CODE.len() - 3..], &[0x48, 0x0f, 0x07]);
    }

    #[test]
    fn faults_are_recognised_only_in_the_code_that_can_fault() {
        assert!(may_fault_at(1, code_va(1) + 0x55));
        assert!(may_fault_at(1, code_va(1) + 0x15c));
        assert!(!may_fault_at(1, code_va(1)));
        assert!(!may_fault_at(1, code_va(0) + 0x60));
        assert!(!may_fault_at(1, code_va(1) + 0x15d));
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

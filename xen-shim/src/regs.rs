//! The vCPU register view the Xen core works on.

/// General registers plus the interrupted context's RIP/CS/RFLAGS/RSP/SS.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Regs {
    pub rax: u64,
    pub rbx: u64,
    pub rcx: u64,
    pub rdx: u64,
    pub rsi: u64,
    pub rdi: u64,
    pub rbp: u64,
    pub rsp: u64,
    pub r8: u64,
    pub r9: u64,
    pub r10: u64,
    pub r11: u64,
    pub r12: u64,
    pub r13: u64,
    pub r14: u64,
    pub r15: u64,
    pub rip: u64,
    pub rflags: u64,
    pub cs: u16,
    pub ss: u16,
}

impl Regs {
    /// Register by x86 encoding number (0 = rax ... 15 = r15).
    pub fn gpr(&self, n: u8) -> u64 {
        match n {
            0 => self.rax,
            1 => self.rcx,
            2 => self.rdx,
            3 => self.rbx,
            4 => self.rsp,
            5 => self.rbp,
            6 => self.rsi,
            7 => self.rdi,
            8 => self.r8,
            9 => self.r9,
            10 => self.r10,
            11 => self.r11,
            12 => self.r12,
            13 => self.r13,
            14 => self.r14,
            _ => self.r15,
        }
    }

    pub fn set_gpr(&mut self, n: u8, v: u64) {
        match n {
            0 => self.rax = v,
            1 => self.rcx = v,
            2 => self.rdx = v,
            3 => self.rbx = v,
            4 => self.rsp = v,
            5 => self.rbp = v,
            6 => self.rsi = v,
            7 => self.rdi = v,
            8 => self.r8 = v,
            9 => self.r9 = v,
            10 => self.r10 = v,
            11 => self.r11 = v,
            12 => self.r12 = v,
            13 => self.r13 = v,
            14 => self.r14 = v,
            _ => self.r15 = v,
        }
    }
}

/// RFLAGS bits.
pub mod flags {
    pub const CF: u64 = 1 << 0;
    pub const FIXED: u64 = 1 << 1;
    pub const TF: u64 = 1 << 8;
    pub const IF: u64 = 1 << 9;
    pub const DF: u64 = 1 << 10;
    pub const IOPL: u64 = 3 << 12;
    pub const NT: u64 = 1 << 14;
    pub const RF: u64 = 1 << 16;
    pub const VM: u64 = 1 << 17;
    pub const AC: u64 = 1 << 18;
    /// Bits a guest may set through iret.
    pub const ARCH_MASK: u64 = 0x003f_7fd7;
}

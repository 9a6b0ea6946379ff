//! The ioctl requests the monitor may make (any other is blocked): KVM's
//! system, VM and vCPU requests, the tun/tap and interface requests of
//! netback, and the terminal requests of the console.

/// (request, name), as seen with `strace -f -X verbose` over the
/// integration tests.
pub const ALLOWED: &[(u64, &str)] = &[
    // KVM (/dev/kvm, the VM fd, vCPU fds); KVM_RUN first: the filter
    // compares in this order.
    (0xae80, "KVM_RUN"),
    (0xae00, "KVM_GET_API_VERSION"),
    (0xae01, "KVM_CREATE_VM"),
    (0xae03, "KVM_CHECK_EXTENSION"),
    (0xae04, "KVM_GET_VCPU_MMAP_SIZE"),
    (0xc008_ae05, "KVM_GET_SUPPORTED_CPUID"),
    (0xae41, "KVM_CREATE_VCPU"),
    (0x4020_ae46, "KVM_SET_USER_MEMORY_REGION"),
    // Live migration's dirty-page tracking (crate::migrate::dirty).
    (0x4010_ae42, "KVM_GET_DIRTY_LOG"),
    (0x8090_ae81, "KVM_GET_REGS"),
    (0x4090_ae82, "KVM_SET_REGS"),
    (0x8138_ae83, "KVM_GET_SREGS"),
    (0x4138_ae84, "KVM_SET_SREGS"),
    (0x4004_ae86, "KVM_INTERRUPT"),
    (0xc008_ae88, "KVM_GET_MSRS"),
    (0x4008_ae89, "KVM_SET_MSRS"),
    (0x4008_ae90, "KVM_SET_CPUID2"),
    (0x81a0_ae8c, "KVM_GET_FPU"),
    (0x41a0_ae8d, "KVM_SET_FPU"),
    (0x8040_ae9f, "KVM_GET_VCPU_EVENTS"),
    (0x4040_aea0, "KVM_SET_VCPU_EVENTS"),
    (0xaea3, "KVM_GET_TSC_KHZ"),
    (0x9000_aea4, "KVM_GET_XSAVE"),
    (0x5000_aea5, "KVM_SET_XSAVE"),
    (0x8188_aea6, "KVM_GET_XCRS"),
    (0x4188_aea7, "KVM_SET_XCRS"),
    (0x4018_aee1, "KVM_SET_DEVICE_ATTR"),
    (0x4018_aee3, "KVM_HAS_DEVICE_ATTR"),
    // A PVH domain (crate::pvh): its set-up, made again at each reboot,
    // and KVM's Xen support, set by its hypercalls.
    (0xae47, "KVM_SET_TSS_ADDR"),
    (0xae60, "KVM_CREATE_IRQCHIP"),
    (0x4040_ae77, "KVM_CREATE_PIT2"),
    (0x4038_ae7a, "KVM_XEN_HVM_CONFIG"),
    (0x4048_aec9, "KVM_XEN_HVM_SET_ATTR"),
    (0x4048_aecb, "KVM_XEN_VCPU_SET_ATTR"),
    // tun/tap and interface set-up (devices/src/netback/tap.rs).
    (0x4004_54ca, "TUNSETIFF"),
    (0x4004_54d0, "TUNSETOFFLOAD"),
    (0x8913, "SIOCGIFFLAGS"),
    (0x8914, "SIOCSIFFLAGS"),
    (0x8922, "SIOCSIFMTU"),
    (0x8924, "SIOCSIFHWADDR"),
    (0x8933, "SIOCGIFINDEX"),
    (0x89a2, "SIOCBRADDIF"),
    // Terminals (console raw mode, isatty).
    (0x5401, "TCGETS"),
    (0x5402, "TCSETS"),
    (0x5403, "TCSETSW"),
    (0x5404, "TCSETSF"),
    (0x5413, "TIOCGWINSZ"),
    // Non-blocking and close-on-exec toggles on any fd.
    (0x5421, "FIONBIO"),
    (0x5451, "FIOCLEX"),
];

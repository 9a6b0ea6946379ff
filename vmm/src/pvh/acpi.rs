//! The PVH guest's ACPI tables: a FADT whose PM1a event and control
//! blocks and reset register are I/O ports of ours, and a DSDT with
//! `\_S5`, so that Linux powers off and reboots through ACPI (it has no
//! other way on PVH: it halts instead), and a MADT naming each vCPU's local
//! APIC (ACPI processor id = APIC id = Xen vCPU id) and the 8259 PICs, no
//! I/O APIC. Not "hardware-reduced": that would take the PIT and PIC away,
//! which the guest's timer still uses.

/// PM1a event block (status, enable: 4 bytes) and control block (2 bytes:
/// SLP_TYP in bits 12:10, SLP_EN bit 13).
pub const PM1A_EVT_PORT: u16 = 0x3b0;
pub const PM1A_CNT_PORT: u16 = 0x3b4;
/// The SCI line (never raised).
const SCI_IRQ: u16 = 9;
/// The reset register and the value that resets.
pub const RESET_PORT: u16 = 0x3c0;
pub const RESET_VALUE: u8 = 4;
/// SLP_TYP of S5 in our `\_S5`.
const S5_TYPE: u8 = 5;

const RSDP_OFF: u64 = 0;
const XSDT_OFF: u64 = 0x40;
const FADT_OFF: u64 = 0x80;
const DSDT_OFF: u64 = 0x200;
const FACS_OFF: u64 = 0x280;
const MADT_OFF: u64 = 0x300;
/// The most vCPUs the MADT names (the tables fit in one page).
pub const MAX_CPUS: u32 = 64;
pub const SIZE: usize = 0x300 + 44 + 8 * MAX_CPUS as usize;
const _: () = assert!(SIZE <= 4096);

fn checksum(b: &[u8]) -> u8 {
    0u8.wrapping_sub(b.iter().fold(0u8, |a, &x| a.wrapping_add(x)))
}

/// A system description table header of `len` bytes; its checksum is
/// set by [`finish`].
fn header(sig: &[u8; 4], len: usize, rev: u8) -> Vec<u8> {
    let mut t = vec![0u8; len];
    t[..4].copy_from_slice(sig);
    t[4..8].copy_from_slice(&(len as u32).to_le_bytes());
    t[8] = rev;
    t[10..16].copy_from_slice(b"XENKVM");
    t[16..24].copy_from_slice(b"XENKVMPV");
    t[24..28].copy_from_slice(&1u32.to_le_bytes());
    t[28..32].copy_from_slice(b"XKVM");
    t[32..36].copy_from_slice(&1u32.to_le_bytes());
    t
}

fn finish(mut t: Vec<u8>) -> Vec<u8> {
    t[9] = 0;
    t[9] = checksum(&t);
    t
}

/// A generic address structure: an 8-bit I/O port (the reset register).
fn gas_io(port: u16) -> [u8; 12] {
    let mut g = [0u8; 12];
    g[0] = 1; // system I/O
    g[1] = 8; // bit width
    g[3] = 1; // byte access
    g[4..12].copy_from_slice(&u64::from(port).to_le_bytes());
    g
}

/// The MADT of `cpus` vCPUs: local APICs at the standard address, the
/// PC-AT 8259s present.
fn madt(cpus: u32) -> Vec<u8> {
    let cpus = cpus.min(MAX_CPUS);
    let mut m = header(b"APIC", 44 + 8 * cpus as usize, 3);
    m[36..40].copy_from_slice(&0xfee0_0000u32.to_le_bytes());
    m[40..44].copy_from_slice(&1u32.to_le_bytes()); // PCAT_COMPAT
    for i in 0..cpus {
        let at = 44 + 8 * i as usize;
        // Processor local APIC: type 0, length 8, processor id, APIC id, enabled.
        m[at..at + 8].copy_from_slice(&[0, 8, i as u8, i as u8, 1, 0, 0, 0]);
    }
    finish(m)
}

/// The tables as they go at guest-physical `base` (the RSDP first), for
/// `cpus` vCPUs.
pub fn tables(base: u64, cpus: u32) -> Vec<u8> {
    let mut out = vec![0u8; SIZE];
    // DSDT: Name (_S5, Package (4) { 5, 5, 0, 0 })
    let aml: [u8; 14] = [
        0x08, b'_', b'S', b'5', b'_', 0x12, 0x08, 0x04, 0x0a, S5_TYPE, 0x0a, S5_TYPE, 0x00, 0x00,
    ];
    let mut dsdt = header(b"DSDT", 36 + aml.len(), 2);
    dsdt[36..].copy_from_slice(&aml);
    let dsdt = finish(dsdt);
    // FADT, revision 6 (276 bytes).
    let mut f = header(b"FACP", 276, 6);
    f[36..40].copy_from_slice(&((base + FACS_OFF) as u32).to_le_bytes());
    f[40..44].copy_from_slice(&((base + DSDT_OFF) as u32).to_le_bytes());
    f[46..48].copy_from_slice(&SCI_IRQ.to_le_bytes());
    // SMI_CMD 0: always in ACPI mode.
    f[56..60].copy_from_slice(&u32::from(PM1A_EVT_PORT).to_le_bytes());
    f[64..68].copy_from_slice(&u32::from(PM1A_CNT_PORT).to_le_bytes());
    f[88] = 4; // PM1_EVT_LEN
    f[89] = 2; // PM1_CNT_LEN
               // IAPC_BOOT_ARCH: no VGA (bit 2), no CMOS RTC (bit 5).
    f[109..111].copy_from_slice(&((1u16 << 2) | (1 << 5)).to_le_bytes());
    // Flags: RESET_REG_SUP (bit 10).
    f[112..116].copy_from_slice(&(1u32 << 10).to_le_bytes());
    f[116..128].copy_from_slice(&gas_io(RESET_PORT));
    f[128] = RESET_VALUE;
    f[140..148].copy_from_slice(&(base + DSDT_OFF).to_le_bytes());
    f[268..276].copy_from_slice(b"XenVMM\0\0");
    let fadt = finish(f);
    let madt = madt(cpus);
    let mut x = header(b"XSDT", 36 + 16, 1);
    x[36..44].copy_from_slice(&(base + FADT_OFF).to_le_bytes());
    x[44..52].copy_from_slice(&(base + MADT_OFF).to_le_bytes());
    let xsdt = finish(x);
    // RSDP, ACPI 2.0: 36 bytes, checksums over the first 20 and all.
    let mut r = [0u8; 36];
    r[..8].copy_from_slice(b"RSD PTR ");
    r[9..15].copy_from_slice(b"XENKVM");
    r[15] = 2;
    r[20..24].copy_from_slice(&36u32.to_le_bytes());
    r[24..32].copy_from_slice(&(base + XSDT_OFF).to_le_bytes());
    r[8] = checksum(&r[..20]);
    r[32] = checksum(&r);
    // FACS: no checksum; 64 bytes.
    let mut facs = [0u8; 64];
    facs[..4].copy_from_slice(b"FACS");
    facs[4..8].copy_from_slice(&64u32.to_le_bytes());
    for (off, t) in [
        (FACS_OFF, &facs[..]),
        (RSDP_OFF, &r[..]),
        (XSDT_OFF, &xsdt[..]),
        (FADT_OFF, &fadt[..]),
        (DSDT_OFF, &dsdt[..]),
        (MADT_OFF, &madt[..]),
    ] {
        out[off as usize..off as usize + t.len()].copy_from_slice(t);
    }
    out
}

/// What a guest write of `data` to `port` asks: a SCHEDOP_shutdown
/// reason (0 power off, 1 reboot), if any.
pub fn port_write(port: u16, data: &[u8]) -> Option<u32> {
    let value = match *data {
        [a] => u16::from(a),
        [a, b, ..] => u16::from_le_bytes([a, b]),
        [] => return None,
    };
    match port {
        PM1A_CNT_PORT if value & (1 << 13) != 0 && (value >> 10) & 7 == u16::from(S5_TYPE) => {
            Some(0)
        }
        RESET_PORT if value == u16::from(RESET_VALUE) => Some(1),
        _ => None,
    }
}

/// Whether `port` is one of our ACPI registers (which read as 0).
pub fn is_acpi_port(port: u16) -> bool {
    (PM1A_EVT_PORT..PM1A_CNT_PORT + 2).contains(&port) || port == RESET_PORT
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_check_out_and_point_at_each_other() {
        let base = 0x1234_5000;
        let t = tables(base, 3);
        let at = |off: u64, len: usize| &t[off as usize..off as usize + len];
        let rsdp = at(RSDP_OFF, 36);
        assert_eq!(&rsdp[..8], b"RSD PTR ");
        assert_eq!(checksum(&rsdp[..20]), 0);
        assert_eq!(checksum(rsdp), 0);
        let xsdt_addr = u64::from_le_bytes(rsdp[24..32].try_into().unwrap());
        assert_eq!(xsdt_addr, base + XSDT_OFF);
        for (off, sig) in [
            (XSDT_OFF, b"XSDT"),
            (FADT_OFF, b"FACP"),
            (DSDT_OFF, b"DSDT"),
            (MADT_OFF, b"APIC"),
        ] {
            let len = u32::from_le_bytes(at(off, 8)[4..8].try_into().unwrap()) as usize;
            assert_eq!(at(off, 4), sig);
            assert_eq!(checksum(at(off, len)), 0, "{sig:?}");
            assert!(off as usize + len <= SIZE);
        }
        let madt = at(MADT_OFF, 44 + 24);
        assert_eq!(&madt[44 + 16..44 + 24], &[0, 8, 2, 2, 1, 0, 0, 0], "vCPU 2");
        let xsdt = at(XSDT_OFF, 52);
        assert_eq!(
            u64::from_le_bytes(xsdt[44..52].try_into().unwrap()),
            base + MADT_OFF
        );
        let fadt = at(FADT_OFF, 276);
        let x_dsdt = u64::from_le_bytes(fadt[140..148].try_into().unwrap());
        assert_eq!(x_dsdt, base + DSDT_OFF);
        let flags = u32::from_le_bytes(fadt[112..116].try_into().unwrap());
        assert_eq!(flags & (1 << 20), 0, "not hardware-reduced");
        let cnt = u32::from_le_bytes(fadt[64..68].try_into().unwrap());
        assert_eq!(cnt, u32::from(PM1A_CNT_PORT));
        let facs = u32::from_le_bytes(fadt[36..40].try_into().unwrap());
        assert_eq!(&t[(u64::from(facs) - base) as usize..][..4], b"FACS");
    }

    #[test]
    fn s5_powers_off_and_the_reset_value_reboots() {
        // Linux writes SLP_TYP (5) << 10, then with SLP_EN (bit 13).
        let w = |v: u16| port_write(PM1A_CNT_PORT, &v.to_le_bytes());
        assert_eq!(w(5 << 10), None);
        assert_eq!(w((5 << 10) | (1 << 13)), Some(0));
        assert_eq!(w((3 << 10) | (1 << 13)), None);
        assert_eq!(port_write(RESET_PORT, &[4]), Some(1));
        assert_eq!(port_write(RESET_PORT, &[0]), None);
        assert_eq!(port_write(0x80, &[0x34, 0x20]), None);
        assert_eq!(port_write(PM1A_CNT_PORT, &[]), None);
        assert!(is_acpi_port(PM1A_EVT_PORT + 2) && !is_acpi_port(0x80));
    }
}

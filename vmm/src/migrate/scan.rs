//! A first look at a save file before its domain is built: where the guest
//! keeps its xenstore and console rings. Xen's builder puts them elsewhere
//! than xenkvm's, so a domain restored from Xen's `xl save` is built with the
//! guest's own ring frames (start_info, whose frame the suspend hypercall
//! passed in %rdx, holds them as PFNs: Linux converts them before it
//! suspends).

use std::io::{BufReader, Read};
use std::path::Path;

use super::stream::{self, libxl_rec, rec, PAGE_SIZE};
use super::MigrateError;

/// start_info's store_mfn and console.domU.mfn (x86_64, public/xen.h).
const SI_STORE_MFN: usize = 56;
const SI_CONSOLE_MFN: usize = 72;

/// The guest's (xenstore, console) ring frames in the save file at `path`,
/// or None when the file has no vCPU 0 context or its start_info page.
pub fn ring_frames(path: &Path) -> Result<Option<(u64, u64)>, MigrateError> {
    let Some((start_info, _)) = scan(path, None)? else {
        return Ok(None);
    };
    scan(path, Some(start_info))
}

/// Without `page`: vCPU 0's %rdx (start_info's frame). With it: the rings
/// named in that page.
fn scan(path: &Path, page: Option<u64>) -> Result<Option<(u64, u64)>, MigrateError> {
    let f = std::fs::File::open(path).map_err(|e| MigrateError::Format(e.to_string()))?;
    let mut r = BufReader::with_capacity(1 << 20, f);
    stream::read_xl_header(&mut r)?;
    stream::read_libxl_header(&mut r)?;
    loop {
        let rr = stream::read_record(&mut r)?;
        match rr.ty {
            libxl_rec::END => return Ok(None),
            libxl_rec::LIBXC_CONTEXT => return scan_xc(&mut r, page),
            _ => {}
        }
    }
}

fn scan_xc(r: &mut dyn Read, page: Option<u64>) -> Result<Option<(u64, u64)>, MigrateError> {
    stream::read_xc_headers(r)?;
    let mut found = None;
    loop {
        let rr = stream::read_record(r)?;
        match (rr.ty, page) {
            (rec::END, _) => return Ok(found),
            (rec::X86_PV_VCPU_BASIC, None) => {
                let (id, blob) = stream::parse_vcpu_body(&rr.body)?;
                if id == 0 {
                    let ctx = xen_shim::vcpuctx::parse_context(blob);
                    found = Some((ctx.regs.rdx, 0));
                }
            }
            (rec::PAGE_DATA, Some(want)) => {
                for (pfn, _, off) in stream::parse_page_data(&rr.body)? {
                    if let (true, Some(off)) = (pfn == want, off) {
                        let p = &rr.body[off..off + PAGE_SIZE];
                        let rd = |o: usize| {
                            u64::from_le_bytes(p[o..o + 8].try_into().unwrap_or([0xff; 8]))
                        };
                        found = Some((rd(SI_STORE_MFN), rd(SI_CONSOLE_MFN)));
                    }
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::migrate::stream::{
        page_data_body, vcpu_body, write_libxl_header, write_record, write_xc_headers,
        write_xl_header,
    };

    /// cpu_user_regs.rdx in a vcpu_guest_context (x86_64).
    const RDX: usize = 520 + 96;

    fn image(start_info: u64, with_page: bool) -> Vec<u8> {
        let mut v = Vec::new();
        write_xl_header(&mut v, "{}").unwrap();
        write_libxl_header(&mut v).unwrap();
        write_record(&mut v, libxl_rec::LIBXC_CONTEXT, &[]).unwrap();
        write_xc_headers(&mut v, (4, 17)).unwrap();
        let mut page = vec![0u8; PAGE_SIZE];
        page[SI_STORE_MFN..SI_STORE_MFN + 8].copy_from_slice(&0x3e01u64.to_le_bytes());
        page[SI_CONSOLE_MFN..SI_CONSOLE_MFN + 8].copy_from_slice(&0x3e02u64.to_le_bytes());
        let pfn = if with_page { 5 } else { 6 };
        write_record(&mut v, rec::PAGE_DATA, &page_data_body(&[(pfn, 0)], &page)).unwrap();
        let mut ctx = vec![0u8; 5168];
        ctx[RDX..RDX + 8].copy_from_slice(&start_info.to_le_bytes());
        write_record(&mut v, rec::X86_PV_VCPU_BASIC, &vcpu_body(0, &ctx)).unwrap();
        write_record(&mut v, rec::END, &[]).unwrap();
        write_record(&mut v, libxl_rec::END, &[]).unwrap();
        v
    }

    fn scan_bytes(bytes: &[u8]) -> Result<Option<(u64, u64)>, MigrateError> {
        let dir = std::env::temp_dir().join(format!("xenkvm-scan-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join(format!("{}.save", bytes.len()));
        std::fs::write(&f, bytes).unwrap();
        let r = ring_frames(&f);
        let _ = std::fs::remove_dir_all(&dir);
        r
    }

    #[test]
    fn the_rings_are_read_from_start_info() {
        assert_eq!(scan_bytes(&image(5, true)).unwrap(), Some((0x3e01, 0x3e02)));
        // start_info's page is not in the image.
        assert_eq!(scan_bytes(&image(5, false)).unwrap(), None);
        // A truncated image is an error, not a guess.
        let img = image(5, true);
        assert!(scan_bytes(&img[..img.len() - 40]).is_err());
    }
}

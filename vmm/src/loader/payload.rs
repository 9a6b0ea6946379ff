//! Decompression of kernel payloads, detected by magic as in Xen's
//! `xg_dom_bzimageloader.c` (pv-boot.md §1.2).
//!
//! Every decoder's output is capped at [`MAX_DECOMPRESSED`]; corrupt input yields an
//! error, never a panic.

use std::io::Read;

use super::{LoaderError, MAX_DECOMPRESSED};

/// How the kernel ELF was wrapped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// The ELF was given directly.
    None,
    Gzip,
    /// LZ4 legacy frame (`lz4 -l`), as Debian builds its kernels.
    Lz4Legacy,
    /// Legacy `.lzma` ("LZMA alone").
    Lzma,
    Xz,
    Zstd,
}

impl Compression {
    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "uncompressed",
            Compression::Gzip => "gzip",
            Compression::Lz4Legacy => "LZ4",
            Compression::Lzma => "lzma",
            Compression::Xz => "xz",
            Compression::Zstd => "zstd",
        }
    }
}

/// What a payload's magic says it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detected {
    Supported(Compression),
    Unsupported(&'static str),
}

const LZ4_LEGACY_MAGIC: u32 = 0x184c_2102;
/// Output of one LZ4 legacy block is at most 8 MiB.
const LZ4_LEGACY_BLOCK: usize = 8 << 20;

/// Decoder memory limit for xz and lzma (Linux's xz uses a 32 MiB dictionary).
const XZ_MEM_LIMIT_KIB: u32 = 256 * 1024;

/// Identify a payload by its leading magic (Xen's order and magics).
pub fn detect(p: &[u8]) -> Option<Detected> {
    use Compression::{Gzip, Lz4Legacy, Lzma, Xz, Zstd};
    use Detected::*;
    Some(if p.starts_with(&[0x1f, 0x8b]) {
        Supported(Gzip)
    } else if p.starts_with(b"BZh") {
        Unsupported("bzip2")
    } else if p.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        Supported(Xz)
    } else if p.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Supported(Zstd)
    } else if p.starts_with(&[0x5d, 0x00]) {
        Supported(Lzma)
    } else if p.starts_with(&[0x89, b'L', b'Z', b'O', 0]) {
        Unsupported("lzo")
    } else if p.starts_with(&[0x02, 0x21]) {
        Supported(Lz4Legacy)
    } else {
        return None;
    })
}

fn corrupt(format: Compression, msg: impl std::fmt::Display) -> LoaderError {
    LoaderError::Decompress {
        format: format.name(),
        msg: msg.to_string(),
    }
}

/// Decompress `payload`. `from_bzimage` only changes the message for an unknown format.
pub fn decompress(
    payload: &[u8],
    from_bzimage: bool,
) -> Result<(Compression, Vec<u8>), LoaderError> {
    decompress_capped(payload, from_bzimage, MAX_DECOMPRESSED)
}

pub(crate) fn decompress_capped(
    payload: &[u8],
    from_bzimage: bool,
    cap: usize,
) -> Result<(Compression, Vec<u8>), LoaderError> {
    let format = match detect(payload) {
        Some(Detected::Supported(c)) => c,
        Some(Detected::Unsupported(name)) => return Err(LoaderError::UnsupportedCompression(name)),
        None if from_bzimage => {
            let head: Vec<String> = payload.iter().take(8).map(|b| format!("{b:02x}")).collect();
            return Err(LoaderError::UnknownPayload(head.join(" ")));
        }
        None => return Err(LoaderError::NotKernel),
    };
    let out = match format {
        Compression::None => payload.to_vec(),
        Compression::Lz4Legacy => lz4_legacy(payload, cap)?,
        Compression::Gzip => read_capped(format, flate2::read::GzDecoder::new(payload), cap)?,
        Compression::Zstd => {
            let dec =
                ruzstd::decoding::StreamingDecoder::new(payload).map_err(|e| corrupt(format, e))?;
            read_capped(format, dec, cap)?
        }
        Compression::Xz => {
            // lzma-rust2 handles the BCJ x86 filter that Linux's xz_wrap.sh always adds.
            // One stream only: the kernel appends the 4-byte size after it.
            let dec = lzma_rust2::XzReader::new_mem_limit(payload, false, XZ_MEM_LIMIT_KIB);
            read_capped(format, dec, cap)?
        }
        Compression::Lzma => {
            // Legacy `.lzma` (13-byte header). Decoding stops at the end marker (or the
            // size in the header), so the kernel's appended size is simply not read.
            let dec = lzma_rust2::LzmaReader::new_mem_limit(payload, XZ_MEM_LIMIT_KIB, None)
                .map_err(|e| corrupt(format, e))?;
            read_capped(format, dec, cap)?
        }
    };
    log::debug!(
        "{} payload: {} -> {} bytes",
        format.name(),
        payload.len(),
        out.len()
    );
    Ok((format, out))
}

/// Read a decoder to the end, failing if it yields more than `cap` bytes.
fn read_capped(format: Compression, r: impl Read, cap: usize) -> Result<Vec<u8>, LoaderError> {
    let mut out = Vec::new();
    let limit = u64::try_from(cap).unwrap_or(u64::MAX).saturating_add(1);
    r.take(limit)
        .read_to_end(&mut out)
        .map_err(|e| corrupt(format, e))?;
    if out.len() > cap {
        return Err(LoaderError::TooLarge { limit: cap });
    }
    Ok(out)
}

/// Decode an LZ4 legacy frame as Xen/Linux do (`lib/decompress_unlz4.c`): magic, then
/// `[u32 LE length][raw LZ4 block]` repeated (a repeated magic starts a concatenated
/// stream and is skipped); the trailing 4 bytes hold the total decompressed size, which
/// must match.
pub fn lz4_legacy(p: &[u8], cap: usize) -> Result<Vec<u8>, LoaderError> {
    const F: Compression = Compression::Lz4Legacy;
    let word = |at: usize| -> Option<u32> {
        Some(u32::from_le_bytes(
            p.get(at..at.checked_add(4)?)?.try_into().ok()?,
        ))
    };
    if p.len() < 8 {
        return Err(corrupt(
            F,
            format!("{} bytes is too short for a frame", p.len()),
        ));
    }
    if word(0) != Some(LZ4_LEGACY_MAGIC) {
        return Err(corrupt(F, "bad LZ4 legacy magic (want 02 21 4c 18)"));
    }
    let body_end = p.len() - 4;
    let expected = word(body_end).unwrap_or(0) as usize;
    if expected > cap {
        return Err(LoaderError::TooLarge { limit: cap });
    }
    let mut out: Vec<u8> = Vec::new();
    let mut pos = 4usize;
    while pos < body_end {
        let len = match word(pos) {
            Some(l) if pos + 4 <= body_end => l,
            _ => {
                return Err(corrupt(
                    F,
                    format!("truncated block header at offset {pos:#x}"),
                ))
            }
        };
        pos += 4;
        if len == LZ4_LEGACY_MAGIC {
            continue;
        }
        let len = len as usize;
        let block = match pos.checked_add(len) {
            Some(end) if end <= body_end => &p[pos..end],
            _ => {
                return Err(corrupt(
                    F,
                    format!(
                        "block at offset {:#x} claims {len:#x} bytes, past the end",
                        pos - 4
                    ),
                ))
            }
        };
        pos += len;
        let written = out.len();
        if written >= expected {
            return Err(corrupt(
                F,
                format!("more data than the {expected:#x} bytes the trailer announces"),
            ));
        }
        let room = (expected - written).min(LZ4_LEGACY_BLOCK);
        out.resize(written + room, 0);
        let n = lz4_flex::block::decompress_into(block, &mut out[written..])
            .map_err(|e| corrupt(F, format!("block at offset {:#x}: {e}", pos - len - 4)))?;
        out.truncate(written + n);
    }
    if out.len() != expected {
        return Err(corrupt(
            F,
            format!(
                "decompressed {:#x} bytes but the trailer announces {expected:#x}",
                out.len()
            ),
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{lz4_legacy as make_lz4, Rng};
    use super::*;
    use std::io::Write;

    /// Compressible but not trivial test data.
    fn sample(len: usize) -> Vec<u8> {
        let mut rng = Rng(42);
        let mut v = Vec::with_capacity(len);
        while v.len() < len {
            let r = rng.next();
            let run = 1 + (r % 64) as usize;
            let byte = if r & 0x100 != 0 { (r >> 16) as u8 } else { 0 };
            for _ in 0..run.min(len - v.len()) {
                v.push(byte);
            }
        }
        v
    }

    fn with_size(mut c: Vec<u8>, len: usize) -> Vec<u8> {
        c.extend_from_slice(&(len as u32).to_le_bytes());
        c
    }

    #[test]
    fn detects_all_magics() {
        use Compression::{Gzip, Lz4Legacy, Lzma, Xz, Zstd};
        use Detected::*;
        assert_eq!(detect(&[0x1f, 0x8b, 8]), Some(Supported(Gzip)));
        assert_eq!(detect(b"BZh91AY"), Some(Unsupported("bzip2")));
        assert_eq!(detect(b"\xfd7zXZ\0\0"), Some(Supported(Xz)));
        assert_eq!(detect(&[0x28, 0xb5, 0x2f, 0xfd]), Some(Supported(Zstd)));
        assert_eq!(detect(&[0x5d, 0, 0, 0x80]), Some(Supported(Lzma)));
        assert_eq!(detect(b"\x89LZO\0\r\n"), Some(Unsupported("lzo")));
        assert_eq!(
            detect(&[0x02, 0x21, 0x4c, 0x18]),
            Some(Supported(Lz4Legacy))
        );
        assert_eq!(detect(b"\x7fELF"), None);
        assert_eq!(detect(b""), None);
    }

    #[test]
    fn unsupported_formats_have_clear_messages() {
        let err = decompress(b"BZh91AY&SY....", true).unwrap_err();
        assert_eq!(
            err.to_string(),
            "payload compression bzip2 not supported (supported: gzip, LZ4, lzma, xz, zstd)"
        );
        let err = decompress(b"\x89LZO\0\r\n\x1a\n", true).unwrap_err();
        assert!(err.to_string().contains("lzo not supported"), "{err}");
        let err = decompress(b"\x00\x11\x22\x33", true).unwrap_err();
        assert_eq!(
            err.to_string(),
            "bzImage payload format not recognised (first bytes 00 11 22 33)"
        );
    }

    #[test]
    fn lz4_legacy_single_block() {
        let data = sample(100_000);
        let (f, out) = decompress(&make_lz4(&data, LZ4_LEGACY_BLOCK, None), true).unwrap();
        assert_eq!(f, Compression::Lz4Legacy);
        assert_eq!(out, data);
    }

    #[test]
    fn lz4_legacy_multiple_blocks_and_repeated_magic() {
        let data = sample(50_000);
        for repeat in [None, Some(0), Some(1), Some(4)] {
            let frame = make_lz4(&data, 8192, repeat);
            assert_eq!(lz4_legacy(&frame, MAX_DECOMPRESSED).unwrap(), data);
        }
    }

    #[test]
    fn lz4_legacy_full_8mib_blocks() {
        // Blocks of exactly 8 MiB output, as `lz4 -l` writes them, then a short one.
        let data = sample(LZ4_LEGACY_BLOCK * 2 + 1234);
        let frame = make_lz4(&data, LZ4_LEGACY_BLOCK, None);
        assert_eq!(lz4_legacy(&frame, MAX_DECOMPRESSED).unwrap(), data);
    }

    #[test]
    fn lz4_legacy_errors() {
        let data = sample(20_000);
        let frame = make_lz4(&data, 4096, None);
        // Wrong trailing size.
        let mut bad = frame.clone();
        let n = bad.len();
        bad[n - 4..].copy_from_slice(&19_999u32.to_le_bytes());
        assert!(matches!(
            lz4_legacy(&bad, MAX_DECOMPRESSED),
            Err(LoaderError::Decompress { .. })
        ));
        bad[n - 4..].copy_from_slice(&20_001u32.to_le_bytes());
        assert!(matches!(
            lz4_legacy(&bad, MAX_DECOMPRESSED),
            Err(LoaderError::Decompress { .. })
        ));
        // Block length past the end.
        let mut bad = frame.clone();
        bad[4..8].copy_from_slice(&0x7fff_ffffu32.to_le_bytes());
        assert!(lz4_legacy(&bad, MAX_DECOMPRESSED).is_err());
        // Every truncation fails cleanly.
        for cut in 0..frame.len() {
            assert!(
                lz4_legacy(&frame[..cut], MAX_DECOMPRESSED).is_err(),
                "cut {cut}"
            );
        }
        // Size above the cap.
        assert!(matches!(
            lz4_legacy(&frame, 1000),
            Err(LoaderError::TooLarge { .. })
        ));
        // Corrupt block contents.
        let mut bad = frame.clone();
        for b in &mut bad[12..40] {
            *b = 0xff;
        }
        assert!(lz4_legacy(&bad, MAX_DECOMPRESSED).is_err());
    }

    #[test]
    fn gzip_payload() {
        let data = sample(200_000);
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        enc.write_all(&data).unwrap();
        let gz = with_size(enc.finish().unwrap(), data.len());
        let (f, out) = decompress(&gz, true).unwrap();
        assert_eq!(f, Compression::Gzip);
        assert_eq!(out, data);
        assert!(matches!(
            decompress_capped(&gz, true, 1000),
            Err(LoaderError::TooLarge { .. })
        ));
        assert!(decompress(&gz[..gz.len() / 2], true).is_err());
    }

    #[test]
    fn xz_payload_from_lzma_rs() {
        let data = sample(200_000);
        let mut xz = Vec::new();
        lzma_rs::xz_compress(&mut &data[..], &mut xz).unwrap();
        let xz = with_size(xz, data.len());
        let (f, out) = decompress(&xz, true).unwrap();
        assert_eq!(f, Compression::Xz);
        assert_eq!(out, data);
        assert!(decompress(&xz[..xz.len() / 2], true).is_err());
    }

    #[test]
    fn xz_payload_with_bcj_x86_filter() {
        // What Linux's scripts/xz_wrap.sh produces: --x86 --lzma2, CRC32 check.
        use lzma_rust2::{CheckType, FilterType, XzOptions, XzWriter};
        let mut data = sample(100_000);
        // Sprinkle call/jmp opcodes so the BCJ filter has something to convert.
        for i in (0..data.len() - 5).step_by(97) {
            data[i] = 0xe8;
        }
        let mut opts = XzOptions::with_preset(6);
        opts.set_check_sum_type(CheckType::Crc32);
        opts.prepend_pre_filter(FilterType::BcjX86, 0);
        let mut w = XzWriter::new(Vec::new(), opts).unwrap();
        w.write_all(&data).unwrap();
        let xz = with_size(w.finish().unwrap(), data.len());
        let (f, out) = decompress(&xz, true).unwrap();
        assert_eq!(f, Compression::Xz);
        assert_eq!(out, data);
    }

    #[test]
    fn zstd_payload() {
        let data = sample(200_000);
        let z = ruzstd::encoding::compress_to_vec(
            &data[..],
            ruzstd::encoding::CompressionLevel::Fastest,
        );
        let z = with_size(z, data.len());
        let (f, out) = decompress(&z, true).unwrap();
        assert_eq!(f, Compression::Zstd);
        assert_eq!(out, data);
        assert!(matches!(
            decompress_capped(&z, true, 1000),
            Err(LoaderError::TooLarge { .. })
        ));
        assert!(decompress(&z[..z.len() / 2], true).is_err());
    }

    #[test]
    fn lzma_alone_payload() {
        let data = sample(100_000);
        let mut l = Vec::new();
        lzma_rs::lzma_compress(&mut &data[..], &mut l).unwrap();
        assert_eq!(l[0], 0x5d);
        let l = with_size(l, data.len());
        let (f, out) = decompress(&l, true).unwrap();
        assert_eq!(f, Compression::Lzma);
        assert_eq!(out, data);
        assert!(matches!(
            decompress_capped(&l, true, 1000),
            Err(LoaderError::TooLarge { .. })
        ));
    }

    #[test]
    fn random_payloads_never_panic() {
        let mut rng = Rng(7);
        let magics: [&[u8]; 5] = [
            &[0x1f, 0x8b, 8, 0],
            b"\xfd7zXZ\0",
            &[0x28, 0xb5, 0x2f, 0xfd],
            &[0x5d, 0, 0, 0x80, 0],
            &[0x02, 0x21, 0x4c, 0x18],
        ];
        for i in 0..2000 {
            let mut v = magics[i % magics.len()].to_vec();
            let len = rng.below(600);
            v.extend((0..len).map(|_| rng.next() as u8));
            let _ = decompress_capped(&v, true, 1 << 20);
        }
    }
}

//! Test disks: scratch copies of the cache's images and reading files back
//! from their ext4 file systems on the host (tests/blk.rs, tests/nested.rs).

#![allow(dead_code)]

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

/// A scratch directory removed at the end of the test.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(tag: &str) -> Scratch {
        let d = std::env::temp_dir().join(format!("xenkvm-blk-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        Scratch(d)
    }
    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The cache's test disk `name`, copied so that the test may write to it.
pub fn disk_copy(cache: &Path, name: &str, s: &Scratch) -> PathBuf {
    disk_copy_as(cache, name, name, s)
}

/// [`disk_copy`] to the scratch file `to`.
pub fn disk_copy_as(cache: &Path, name: &str, to: &str, s: &Scratch) -> PathBuf {
    let src = cache.join(name);
    assert!(
        src.exists(),
        "{} is missing: run resources/get-assets.sh",
        src.display()
    );
    let dst = s.path(to);
    std::fs::copy(&src, &dst).unwrap();
    dst
}

pub fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("run a host tool");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.code().is_some_and(|c| c < 4),
        "{cmd:?} failed: {text}"
    );
    text
}

/// Read `files` from the ext4 file system of a raw image (first MBR
/// partition, or the whole image), after replaying its journal as a
/// mount would.
pub fn files_in_image(raw: &Path, files: &[String], s: &Scratch) -> Vec<Option<Vec<u8>>> {
    let mut img = std::fs::File::open(raw).unwrap();
    let mut mbr = [0u8; 512];
    img.read_exact(&mut mbr).unwrap();
    let start = if mbr[510..512] == [0x55, 0xaa] && mbr[450] != 0 {
        u64::from(u32::from_le_bytes(mbr[454..458].try_into().unwrap())) * 512
    } else {
        0
    };
    let part = s.path("part.ext4");
    img.seek(SeekFrom::Start(start)).unwrap();
    let mut out = std::fs::File::create(&part).unwrap();
    std::io::copy(&mut img, &mut out).unwrap();
    out.flush().unwrap();
    drop(out);
    run(Command::new("e2fsck").arg("-fy").arg(&part));
    files
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let dump = s.path(&format!("dump-{i}"));
            run(Command::new("debugfs")
                .arg("-R")
                .arg(format!("dump {f} {}", dump.display()))
                .arg(&part));
            let data = std::fs::read(&dump).ok();
            let _ = std::fs::remove_file(&dump);
            data
        })
        .collect()
}

/// `yes WORD | head -c LEN`
pub fn yes(word: &str, len: usize) -> Vec<u8> {
    let line = format!("{word}\n");
    line.as_bytes().iter().copied().cycle().take(len).collect()
}

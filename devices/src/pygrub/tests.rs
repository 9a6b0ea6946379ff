//! End-to-end tests: real ext4 images made with `mkfs.ext4 -d`, read through a raw
//! `DiskImage`.

use super::partition::tests::{gpt_disk, mbr_entry};
use super::*;
use crate::disk::test_util::{have_tool, TempDir};
use crate::disk::{self, Format};
use std::path::Path;
use std::process::Command;

fn args(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}

#[test]
fn options() {
    let o = Options::parse(&args(&[
        "--entry=1",
        "-q",
        "--kernel",
        "/k",
        "--args=a b",
        "--output-format=simple0",
    ]))
    .unwrap();
    assert_eq!(o.entry.as_deref(), Some("1"));
    assert_eq!(o.kernel.as_deref(), Some("/k"));
    assert_eq!(o.args.as_deref(), Some("a b"));
    assert_eq!(o.ramdisk, None);
    let o = Options::parse(&args(&["--entry=Debian GNU/Linux", "--ramdisk=/r=x"])).unwrap();
    assert_eq!(o.entry.as_deref(), Some("Debian GNU/Linux"));
    assert_eq!(o.ramdisk.as_deref(), Some("/r=x"));
    assert!(Options::parse(&args(&["--entyr=1"])).is_err());
    assert!(Options::parse(&args(&["--kernel"])).is_err());
    assert_eq!(Options::parse(&[]).unwrap(), Options::default());
}

#[test]
fn path_candidates() {
    assert_eq!(candidates("/boot/vmlinuz"), ["/boot/vmlinuz", "/vmlinuz"]);
    assert_eq!(candidates("/vmlinuz"), ["/vmlinuz", "/boot/vmlinuz"]);
    assert_eq!(candidates("vmlinuz"), ["/vmlinuz", "/boot/vmlinuz"]);
}

/// Makes an ext4 file system image of `mib` MiB from `files` (path, content).
fn mkfs(dir: &Path, name: &str, mib: u32, files: &[(&str, &[u8])]) -> Vec<u8> {
    let root = dir.join(format!("{name}.d"));
    for (p, data) in files {
        let f = root.join(p.trim_start_matches('/'));
        std::fs::create_dir_all(f.parent().unwrap()).unwrap();
        std::fs::write(f, data).unwrap();
    }
    std::fs::create_dir_all(&root).unwrap();
    let img = dir.join(format!("{name}.ext4"));
    let out = Command::new("mkfs.ext4")
        .args(["-q", "-F", "-d"])
        .arg(&root)
        .arg(&img)
        .arg(format!("{mib}M"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "mkfs.ext4: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read(img).unwrap()
}

/// Writes `data` to a file and opens it as a raw disk image.
fn disk_of(dir: &Path, name: &str, data: &[u8]) -> Box<dyn DiskImage> {
    let p = dir.join(name);
    std::fs::write(&p, data).unwrap();
    disk::open(&p, Format::Auto, true).unwrap()
}

const GRUB_CFG: &str = "\
set default=\"0\"
set timeout=5
menuentry 'Test Linux' --class debian $menuentry_id_option 'test-simple' {
\tinsmod ext2
\tsearch --no-floppy --fs-uuid --set=root 1234
\techo\t'Loading Linux ...'
\tlinux\t/boot/vmlinuz-test root=/dev/xvda1 ro console=hvc0
\tinitrd\t/boot/initrd.img-test
}
submenu 'Advanced options' {
\tmenuentry 'Test Linux (other)' {
\t\tlinux\t/boot/vmlinuz-other root=/dev/xvda1 ro single
\t}
}
";

fn skip(test: &str) -> bool {
    !have_tool("mkfs.ext4", test)
}

#[test]
fn whole_disk_grub2() {
    if skip("pygrub::whole_disk_grub2") {
        return;
    }
    let dir = TempDir::new("pygrub-whole");
    let fs = mkfs(
        dir.path(),
        "fs",
        8,
        &[
            ("boot/grub/grub.cfg", GRUB_CFG.as_bytes()),
            ("boot/vmlinuz-test", b"KERNEL-TEST"),
            ("boot/vmlinuz-other", b"KERNEL-OTHER"),
            ("boot/initrd.img-test", b"INITRD"),
        ],
    );
    let d = disk_of(dir.path(), "disk.raw", &fs);
    let e = load_default(&*d, &[]).unwrap();
    assert_eq!(e.title, "Test Linux");
    assert_eq!(e.kernel, b"KERNEL-TEST");
    assert_eq!(e.initrd.as_deref(), Some(&b"INITRD"[..]));
    assert_eq!(e.cmdline, "root=/dev/xvda1 ro console=hvc0");

    // --entry by flattened index and by title; --args appended.
    let e = load_default(&*d, &args(&["--entry=1", "--args=quiet"])).unwrap();
    assert_eq!(e.title, "Test Linux (other)");
    assert_eq!(e.kernel, b"KERNEL-OTHER");
    assert_eq!(e.initrd, None);
    assert_eq!(e.cmdline, "root=/dev/xvda1 ro single quiet");
    let e = load_default(&*d, &args(&["--entry", "Test Linux (other)"])).unwrap();
    assert_eq!(e.kernel, b"KERNEL-OTHER");
    let e = load_default(&*d, &args(&["--entry=test-simple"])).unwrap();
    assert_eq!(e.kernel, b"KERNEL-TEST");

    // --kernel/--ramdisk bypass the menu.
    let e = load_default(
        &*d,
        &args(&[
            "--kernel=/boot/vmlinuz-other",
            "--ramdisk=/boot/initrd.img-test",
            "--args=x=1",
        ]),
    )
    .unwrap();
    assert_eq!(e.kernel, b"KERNEL-OTHER");
    assert_eq!(e.initrd.as_deref(), Some(&b"INITRD"[..]));
    assert_eq!(e.cmdline, "x=1");

    // Errors name what is missing.
    let err = load_default(&*d, &args(&["--entry=7"])).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, PygrubError::EntryNotFound { .. }), "{msg}");
    assert!(
        msg.contains("1: Advanced options>Test Linux (other)"),
        "{msg}"
    );
    let err = load_default(&*d, &args(&["--kernel=/nope"])).unwrap_err();
    assert!(err.to_string().contains("without /nope"), "{err}");
}

#[test]
fn mbr_partition_with_menu_lst_and_separate_boot() {
    if skip("pygrub::mbr_partition_with_menu_lst_and_separate_boot") {
        return;
    }
    let dir = TempDir::new("pygrub-mbr");
    // Partition 1 is a /boot file system: the config says /boot/..., the files are
    // at the root of the partition. The initrd is missing from the first entry.
    let menu = "default 1\ntimeout 3\n\
                title Broken\nroot (hd0,0)\nkernel /boot/vmlinuz-x root=/dev/xvda2\ninitrd /boot/none\n\
                title Legacy Linux\nroot (hd0,0)\nkernel /boot/vmlinuz-x root=/dev/xvda2 ro\ninitrd /boot/initrd-x\n";
    let boot = mkfs(
        dir.path(),
        "boot",
        4,
        &[
            ("grub/menu.lst", menu.as_bytes()),
            ("vmlinuz-x", b"LEGACY-KERNEL"),
            ("initrd-x", b"LEGACY-INITRD"),
        ],
    );
    let mut img = vec![0u8; (1 << 20) + boot.len() + (1 << 20)];
    mbr_entry(&mut img, 0, false, 0x83, 2048, (boot.len() / 512) as u32);
    img[1 << 20..(1 << 20) + boot.len()].copy_from_slice(&boot);
    let d = disk_of(dir.path(), "mbr.raw", &img);
    let e = load_default(&*d, &[]).unwrap();
    assert_eq!(e.title, "Legacy Linux");
    assert_eq!(e.kernel, b"LEGACY-KERNEL");
    assert_eq!(e.initrd.as_deref(), Some(&b"LEGACY-INITRD"[..]));
    assert_eq!(e.cmdline, "root=/dev/xvda2 ro");

    let err = load_default(&*d, &args(&["--entry=0"])).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, PygrubError::FileMissing { .. }), "{msg}");
    assert!(msg.contains("initrd /boot/none not found"), "{msg}");
    assert!(msg.contains("partition 1"), "{msg}");
}

#[test]
fn gpt_skips_other_filesystems_and_reports_them() {
    if skip("pygrub::gpt_skips_other_filesystems_and_reports_them") {
        return;
    }
    let dir = TempDir::new("pygrub-gpt");
    let root = mkfs(
        dir.path(),
        "root",
        4,
        &[
            (
                "boot/grub2/grub.cfg",
                b"menuentry gpt { linux /vmlinuz a }\n",
            ),
            ("boot/vmlinuz", b"GPT-KERNEL"),
        ],
    );
    let linux = "0FC63DAF-8483-4772-8E79-3D69D8477DE4";
    let sectors = root.len() as u64 / 512;
    let mut img = gpt_disk(
        (4 << 20) + root.len(),
        &[
            (linux, 2048, 4095, "xfs"),
            (linux, 4096, 4096 + sectors - 1, "root"),
        ],
    );
    img[1 << 20..(1 << 20) + 4].copy_from_slice(b"XFSB");
    img[2 << 20..(2 << 20) + root.len()].copy_from_slice(&root);
    let d = disk_of(dir.path(), "gpt.raw", &img);
    let e = load_default(&*d, &[]).unwrap();
    assert_eq!(e.kernel, b"GPT-KERNEL", "/vmlinuz found as /boot/vmlinuz");
    assert_eq!(e.cmdline, "a");

    // Without the ext4 partition: the error lists what each partition holds.
    img[2 << 20..(2 << 20) + root.len()].fill(0);
    let d = disk_of(dir.path(), "gpt2.raw", &img);
    let msg = load_default(&*d, &[]).unwrap_err().to_string();
    assert!(
        msg.contains("partition 1 (GPT Linux filesystem \"xfs\", 1 MiB at 1 MiB): XFS filesystem is not supported (ext2/3/4 only)"),
        "{msg}"
    );
    assert!(msg.contains("partition 2"), "{msg}");
    assert!(msg.contains("empty"), "{msg}");
}

#[test]
fn ext4_without_config_and_entry_without_kernel() {
    if skip("pygrub::ext4_without_config_and_entry_without_kernel") {
        return;
    }
    let dir = TempDir::new("pygrub-noconf");
    let fs = mkfs(dir.path(), "fs", 4, &[("etc/hostname", b"x")]);
    let d = disk_of(dir.path(), "a.raw", &fs);
    let msg = load_default(&*d, &[]).unwrap_err().to_string();
    assert!(
        msg.starts_with("no partition with a grub config: whole disk"),
        "{msg}"
    );
    assert!(msg.contains("without a grub config"), "{msg}");

    let fs = mkfs(
        dir.path(),
        "fw",
        4,
        &[("boot/grub/grub.cfg", b"menuentry 'Firmware' { fwsetup }\n")],
    );
    let d = disk_of(dir.path(), "b.raw", &fs);
    let err = load_default(&*d, &[]).unwrap_err();
    assert!(matches!(err, PygrubError::NotLinux { .. }), "{err}");
}

#[test]
fn saved_default_from_grubenv() {
    if skip("pygrub::saved_default_from_grubenv") {
        return;
    }
    let dir = TempDir::new("pygrub-saved");
    let cfg = "load_env\nset default=\"${saved_entry}\"\n\
               menuentry a { linux /boot/a }\nmenuentry b --id bee { linux /boot/b }\n";
    let mut env = b"# GRUB Environment Block\nsaved_entry=bee\n".to_vec();
    env.resize(1024, b'#');
    let fs = mkfs(
        dir.path(),
        "fs",
        4,
        &[
            ("boot/grub/grub.cfg", cfg.as_bytes()),
            ("boot/grub/grubenv", &env),
            ("boot/a", b"A"),
            ("boot/b", b"B"),
        ],
    );
    let d = disk_of(dir.path(), "s.raw", &fs);
    assert_eq!(load_default(&*d, &[]).unwrap().kernel, b"B");
}

/// The images resources/mkdisk.sh builds, when the asset cache has them.
#[test]
fn cached_test_disks() {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    let cache = std::env::var_os("XENKVM_CACHE")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| here.join("../resources/cache"));
    let Ok(kver) = std::fs::read_to_string(cache.join("kernel-version")) else {
        eprintln!("SKIP pygrub::cached_test_disks: no asset cache (run resources/get-assets.sh)");
        return;
    };
    let kver = kver.trim();
    let images = ["disk-root.raw", "disk-root.qcow2", "disk-menulst.raw"];
    if !images.iter().all(|i| cache.join(i).exists()) {
        if std::env::var_os("CI").is_some() {
            panic!("CI is set but the cached test disks are missing (resources/mkdisk.sh)");
        }
        eprintln!("SKIP pygrub::cached_test_disks: disk images not built (resources/mkdisk.sh)");
        return;
    }
    let kernel = std::fs::read(cache.join("vmlinuz")).unwrap();
    let initrd = std::fs::read(cache.join("initramfs-blk.cpio.gz")).unwrap();
    for img in images {
        let d = disk::open(&cache.join(img), Format::Auto, true).unwrap();
        let e = load_default(&*d, &[]).unwrap_or_else(|e| panic!("{img}: {e}"));
        assert!(
            e.kernel == kernel,
            "{img}: kernel differs from the cached one"
        );
        assert!(
            e.initrd.as_deref() == Some(&initrd[..]),
            "{img}: initrd differs"
        );
        assert!(
            e.cmdline.contains("root=/dev/xvda") && e.cmdline.contains("console=hvc0"),
            "{img}: {}",
            e.cmdline
        );
        assert!(
            e.title.starts_with("Debian GNU/Linux"),
            "{img}: {}",
            e.title
        );
        let second = load_default(&*d, &args(&["--entry=1"])).unwrap();
        assert_ne!(second.title, e.title, "{img}: a second entry");
        assert!(second.title.contains(kver), "{img}: {}", second.title);
        assert!(
            second.cmdline.contains("single"),
            "{img}: {}",
            second.cmdline
        );
    }
}

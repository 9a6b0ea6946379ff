//! Memory ballooning (issue 17: `mem-set`/`mem-max`; issue 13 item 4:
//! `maxmem` above `memory`): a busybox guest created with memory=256,
//! maxmem=512 boots with 256 MiB populated, gives memory back on
//! `xenkvm mem-set 128` (its balloon driver: XENMEM_decrease_reservation)
//! and grows above its boot size on `mem-set 512`
//! (XENMEM_populate_physmap of the frames above its boot allocation), then
//! uses that memory. `xenkvm list` shows the reservation, as `xl list`.

mod common;
#[path = "support/domains.rs"]
mod domains;

use domains::{row, shell_cfg, temp_dir, text, xenkvm, Attached};
use std::path::Path;
use std::time::{Duration, Instant};

const INFO: &str = "/sys/devices/system/xen_memory/xen_memory0/info/current_kb";

/// The Mem column of `list` (the domain's reservation, MiB).
fn list_mem(run: &Path, name: &str) -> u64 {
    let r = row(run, name).expect("listed");
    r[2].parse().expect("Mem column")
}

/// Wait until `list` shows `want` MiB (the balloon driver works in
/// batches); returns how long it took.
fn wait_mem(run: &Path, name: &str, want: u64, c: &Attached) -> Duration {
    let start = Instant::now();
    loop {
        let m = list_mem(run, name);
        if m == want {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < Duration::from_secs(240),
            "Mem is {m}, not {want}:\n{}",
            c.text()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn mem_total_kib(c: &mut Attached) -> u64 {
    c.query("awk '/^MemTotal:/ {print $2}' /proc/meminfo")
        .parse()
        .expect("MemTotal")
}

#[test]
fn mem_set_shrinks_and_grows_the_guest_up_to_maxmem() {
    let Some(cache) = common::assets() else {
        return;
    };
    let run = temp_dir("balloon");
    let name = "balloon";
    let cfg = shell_cfg(&cache, &run, name, "memory = 256\nmaxmem = 512\nvcpus = 1");
    let o = xenkvm(&run, &["create", cfg.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    let mut c = Attached::start(&run, name);
    assert!(
        c.wait_for("XENKVM-SHELL", Duration::from_secs(300)),
        "{}",
        c.text()
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(list_mem(&run, name), 256);
    assert_eq!(c.query(&format!("cat {INFO}")), "262144");
    let boot_total = mem_total_kib(&mut c);
    assert!(boot_total < 256 << 10, "MemTotal {boot_total} kB");

    // Refusals: above maxmem, a maximum below the target, bad sizes.
    for (verb, size, why) in [
        ("mem-set", "600", "above the domain's maximum"),
        ("mem-max", "1g", "cannot grow the region"),
        ("mem-max", "200", "below the domain's memory target"),
        ("mem-set", "12x", "invalid memory size"),
    ] {
        let o = xenkvm(&run, &[verb, name, size]);
        assert!(!o.status.success(), "{verb} {size} accepted");
        assert!(text(&o).contains(why), "{verb} {size}: {}", text(&o));
    }

    // Down to 128 MiB: the guest hands frames back.
    let o = xenkvm(&run, &["mem-set", name, "128m"]);
    assert!(o.status.success(), "{}", text(&o));
    let t = wait_mem(&run, name, 128, &c);
    eprintln!("balloon down 256 -> 128 MiB: {t:?}");
    assert_eq!(c.query(&format!("cat {INFO}")), "131072");
    let small = mem_total_kib(&mut c);
    assert!(small < boot_total - (100 << 10), "MemTotal {small} kB");

    // A maximum below 512 holds the guest there; raised again, it grows.
    let o = xenkvm(&run, &["mem-max", name, "384"]);
    assert!(o.status.success(), "{}", text(&o));
    let o = xenkvm(&run, &["mem-set", name, "512"]);
    assert!(
        text(&o).contains("above the domain's maximum of 384"),
        "{}",
        text(&o)
    );
    let o = xenkvm(&run, &["mem-max", name, "512"]);
    assert!(o.status.success(), "{}", text(&o));
    let o = xenkvm(&run, &["mem-set", name, "512"]);
    assert!(o.status.success(), "{}", text(&o));
    let t = wait_mem(&run, name, 512, &c);
    eprintln!("balloon up 128 -> 512 MiB: {t:?}");
    assert_eq!(c.query(&format!("cat {INFO}")), "524288");
    let big = mem_total_kib(&mut c);
    assert!(
        big > 400 << 10,
        "MemTotal {big} kB, booted with {boot_total}"
    );

    // The guest uses its new memory: 350 MiB in a tmpfs (RAM only, no
    // swap), more than it booted with.
    let r = c.query(
        "mkdir -p /m && mount -t tmpfs -o size=400m tmpfs /m && \
         dd if=/dev/zero of=/m/fill bs=1M count=350 2>/dev/null && echo ok; rm -f /m/fill",
    );
    assert_eq!(r, "ok", "{}", c.text());
    assert_eq!(c.query("echo $((6*7))"), "42");

    c.send(b"\x1d");
    assert_eq!(c.wait_exit(Duration::from_secs(10)), Some(0));
    let o = xenkvm(&run, &["destroy", name]);
    assert!(o.status.success(), "{}", text(&o));
    let _ = std::fs::remove_dir_all(&run);
}

//! The xl-style verbs: `create` in the background, `list`, `console`
//! (attach and detach with Ctrl-]), `pause`/`unpause`, `shutdown -w`,
//! `destroy`, `info`, and `list` cleaning up after dead domains.

mod common;
#[path = "support/domains.rs"]
mod domains;
use common::Netns;
use domains::{temp_dir, text, xenkvm, Attached};

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const HEADER: &str = "Name                                        ID   Mem VCPUs\tState\tTime(s)";

fn list(run: &Path) -> String {
    let o = xenkvm(run, &["list"]);
    assert!(o.status.success(), "{}", text(&o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The `list` row of `name`, split in its columns.
fn row(list: &str, name: &str) -> Option<Vec<String>> {
    list.lines()
        .find(|l| l.starts_with(&format!("{name} ")))
        .map(|l| l.split_whitespace().map(str::to_string).collect())
}

#[test]
fn list_shows_the_host_and_cleans_up_dead_domains() {
    let run = temp_dir("xl-dead");
    // A domain whose monitor died without cleaning up.
    let ghost = run.join("domains/ghost");
    std::fs::create_dir_all(&ghost).unwrap();
    std::fs::write(ghost.join("pid"), "2147483000\n").unwrap();
    std::fs::write(ghost.join("domid"), "1\n").unwrap();
    std::fs::create_dir_all(run.join("ids")).unwrap();
    std::fs::write(run.join("ids/1"), "ghost\n").unwrap();
    let out = list(&run);
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some(HEADER), "{out}");
    let dom0 = lines.next().expect("Domain-0 row");
    assert!(
        dom0.starts_with("Domain-0                                     0 "),
        "{out}"
    );
    assert!(dom0.contains("     r-----  "), "{out}");
    assert_eq!(lines.next(), None, "{out}");
    assert!(!ghost.exists(), "dead domain not cleaned up");
    assert!(!run.join("ids/1").exists());
    // Verbs on unknown domains fail with a clear message.
    for verb in [
        "console", "shutdown", "reboot", "destroy", "pause", "unpause",
    ] {
        let o = xenkvm(&run, &[verb, "ghost"]);
        assert!(!o.status.success(), "{verb}");
        assert!(
            text(&o).contains("domain 'ghost' not found"),
            "{verb}: {}",
            text(&o)
        );
    }
    let o = xenkvm(&run, &["list", "ghost"]);
    assert!(!o.status.success());
    // Domain-0 by name or id, and in `list -l`.
    for dom in ["0", "Domain-0"] {
        let o = xenkvm(&run, &["list", dom]);
        assert!(o.status.success(), "list {dom}: {}", text(&o));
        let out = String::from_utf8_lossy(&o.stdout).into_owned();
        let mut lines = out.lines();
        assert_eq!(lines.next(), Some(HEADER), "{out}");
        assert!(
            lines.next().is_some_and(|l| l.starts_with("Domain-0 ")),
            "{out}"
        );
        assert_eq!(lines.next(), None, "{out}");
    }
    for args in [&["list", "-l"][..], &["list", "-l", "0"]] {
        let o = xenkvm(&run, args);
        assert!(o.status.success(), "{args:?}: {}", text(&o));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("list -l is JSON");
        let doms = v.as_array().expect("an array");
        assert_eq!(doms.len(), 1, "{v}");
        assert_eq!(doms[0]["domid"], 0, "{v}");
        assert_eq!(doms[0]["config"]["name"], "Domain-0", "{v}");
        assert!(doms[0]["info"]["mem_mib"].as_u64().unwrap_or(0) > 0, "{v}");
    }
    let o = xenkvm(&run, &["info"]);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    for key in [
        "host ",
        "nr_cpus",
        "total_memory",
        "xen_major",
        "xen_caps",
        "run_dir",
    ] {
        assert!(t.contains(key), "{key} missing in\n{t}");
    }
    let _ = std::fs::remove_dir_all(&run);
}

#[test]
fn create_list_console_pause_shutdown_destroy() {
    let Some(cache) = common::assets() else {
        return;
    };
    let run = temp_dir("xl-verbs");
    let disk = run.join("data.img");
    std::fs::write(&disk, vec![0u8; 4 << 20]).unwrap();
    let name = "xlweb01";
    // A realistic PV config, with paths relative to the config file.
    std::fs::copy(cache.join("vmlinuz"), run.join("vmlinuz")).unwrap();
    std::fs::copy(
        cache.join("initramfs-wait.cpio.gz"),
        run.join("initrd-wait.img"),
    )
    .unwrap();
    let cfg = run.join("web01.cfg");
    std::fs::write(
        &cfg,
        format!(
            "# /etc/xen/web01.cfg\nname = \"{name}\"\nmemory = 256\nvcpus = 1\n\
             kernel = \"vmlinuz\"\nramdisk = \"initrd-wait.img\"\n\
             extra = \"console=hvc0 quiet\"\n\
             disk = [ 'file:{},xvdb,w' ]\n\
             vif = [ 'mac=00:16:3e:4a:10:01' ]\n\
             on_reboot = 'restart'\non_poweroff = 'destroy'\n",
            disk.display()
        ),
    )
    .unwrap();
    let shell_cfg = run.join("shell.cfg");
    std::fs::write(
        &shell_cfg,
        format!(
            "name = \"xlshell\"\nmemory = 256\nkernel = \"{}\"\nramdisk = \"{}\"\n\
             extra = \"console=hvc0\"\n",
            cache.join("vmlinuz").display(),
            cache.join("initramfs-shell.cpio.gz").display()
        ),
    )
    .unwrap();

    // create returns once the domains are started; the one with a vif runs
    // in a network namespace of its own.
    let ns = Netns::new("verbs");
    let start = Instant::now();
    let o = ns
        .xenkvm()
        .arg("--run-dir")
        .arg(&run)
        .args(["create", cfg.to_str().unwrap()])
        .stdin(Stdio::null())
        .output()
        .expect("start xenkvm in the namespace");
    assert!(o.status.success(), "create failed:\n{}", text(&o));
    assert!(text(&o).contains("Parsing config from"), "{}", text(&o));
    assert!(start.elapsed() < Duration::from_secs(30));
    let o = xenkvm(&run, &["create", shell_cfg.to_str().unwrap()]);
    assert!(o.status.success(), "create failed:\n{}", text(&o));
    // Names are unique.
    let o = xenkvm(&run, &["create", cfg.to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(text(&o).contains("already exists"), "{}", text(&o));

    // list: xl's columns, both domains, Domain-0 first.
    let l = list(&run);
    assert!(l.starts_with(&format!("{HEADER}\nDomain-0 ")), "{l}");
    let r = row(&l, name).unwrap_or_else(|| panic!("{name} not listed:\n{l}"));
    assert_eq!(&r[1..4], ["1", "256", "1"], "{l}");
    assert_eq!(r[4].len(), 6, "{l}");
    let r2 = row(&l, "xlshell").unwrap_or_else(|| panic!("xlshell not listed:\n{l}"));
    assert_eq!(r2[1], "2", "{l}");
    let line = l.lines().find(|x| x.starts_with(name)).unwrap();
    assert_eq!(line.find(" 1 "), Some(44), "id column: {line:?}");

    // console: attach (a banner says how to detach), see the guest, detach
    // with Ctrl-]; the guest lives on.
    let mut c = Attached::start(&run, name);
    assert!(
        c.wait_for(
            &format!("Connected to domain {name} (id 1). Escape character is ^]"),
            Duration::from_secs(10)
        ),
        "{}",
        c.text()
    );
    assert!(
        c.wait_for("XENKVM-WAITING", Duration::from_secs(300)),
        "console:\n{}\nlog:\n{}",
        c.text(),
        std::fs::read_to_string(run.join(format!("domains/{name}/log"))).unwrap_or_default()
    );
    c.send(b"\x1d");
    assert_eq!(
        c.wait_exit(Duration::from_secs(10)),
        Some(0),
        "{}",
        c.text()
    );
    assert!(row(&list(&run), name).is_some(), "detach stopped the guest");

    // Console input reaches the shell guest.
    let mut s = Attached::start(&run, "xlshell");
    assert!(
        s.wait_for("XENKVM-SHELL", Duration::from_secs(300)),
        "{}",
        s.text()
    );
    std::thread::sleep(Duration::from_millis(500));
    s.send(b"echo verbs-$((7*6))\n");
    assert!(
        s.wait_for("verbs-42", Duration::from_secs(60)),
        "{}",
        s.text()
    );
    s.send(b"\x1d");
    assert_eq!(s.wait_exit(Duration::from_secs(10)), Some(0));

    // The end of console input detaches, after what the guest printed in
    // answer: piped commands, and </dev/null.
    let start = Instant::now();
    let mut p = Command::new(env!("CARGO_BIN_EXE_xenkvm"))
        .arg("--run-dir")
        .arg(&run)
        .args(["console", "xlshell"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    p.stdin
        .take()
        .unwrap()
        .write_all(b"echo piped-$((6*7))\n")
        .unwrap();
    let o = p.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        start.elapsed() < Duration::from_secs(15),
        "{:?}",
        start.elapsed()
    );
    let o = xenkvm(&run, &["console", "xlshell"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("Connected to domain xlshell (id 2)"),
        "{}",
        text(&o)
    );
    assert!(
        start.elapsed() < Duration::from_secs(25),
        "{:?}",
        start.elapsed()
    );
    let mut s = Attached::start(&run, "xlshell");
    assert!(
        s.wait_for("piped-42", Duration::from_secs(60)),
        "piped input did not reach the guest:\n{}",
        s.text()
    );
    s.send(b"\x1d");
    assert_eq!(s.wait_exit(Duration::from_secs(10)), Some(0));

    // pause / unpause show in list's state column.
    let o = xenkvm(&run, &["pause", name]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(row(&list(&run), name).unwrap()[4], "--p---");
    let o = xenkvm(&run, &["unpause", "1"]);
    assert!(o.status.success(), "{}", text(&o));
    assert_ne!(row(&list(&run), name).unwrap()[4], "--p---");

    // shutdown -w: the guest powers off through xenstore's control/shutdown.
    let o = xenkvm(&run, &["shutdown", "-w", name]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("has been shut down"), "{}", text(&o));
    let l = list(&run);
    assert!(row(&l, name).is_none(), "still listed:\n{l}");

    // shutdown -w on a guest that cannot act on the request (paused) gives
    // up after its timeout and says what to do.
    let o = xenkvm(&run, &["pause", "xlshell"]);
    assert!(o.status.success(), "{}", text(&o));
    let start = Instant::now();
    let o = xenkvm(&run, &["shutdown", "-w", "-t", "2", "xlshell"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(start.elapsed() < Duration::from_secs(20));
    let t = text(&o);
    assert!(t.contains("did not shut down within 2 s"), "{t}");
    assert!(t.contains("paused"), "{t}");
    assert!(t.contains("`xenkvm destroy xlshell`"), "{t}");

    // destroy pulls the plug.
    let o = xenkvm(&run, &["destroy", "xlshell"]);
    assert!(o.status.success(), "{}", text(&o));
    let l = list(&run);
    assert_eq!(l.lines().count(), 2, "{l}");
    // Nothing left but what the test put there.
    let mine: Vec<String> = [
        "data.img",
        "initrd-wait.img",
        "shell.cfg",
        "vmlinuz",
        "web01.cfg",
    ]
    .iter()
    .map(|f| run.join(f).display().to_string())
    .collect();
    assert_eq!(common::leftovers(&run), mine);
    let _ = std::fs::remove_dir_all(&run);
}

/// The stdout of a verb that must succeed.
fn ok_out(run: &Path, args: &[&str]) -> String {
    let o = xenkvm(run, args);
    assert!(o.status.success(), "{args:?}: {}", text(&o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Issue 17: `create -p -q`, `domid`, `domname`, `vcpu-list`, `uptime`,
/// `sysrq`, `top`, `dmesg`, `shutdown -a -w`, and 409 on a domain's API
/// socket.
#[test]
fn paused_create_inspection_verbs_sysrq_and_shutdown_all() {
    let Some(cache) = common::assets() else {
        return;
    };
    let run = temp_dir("xl-inspect");
    let name = "xlsys";
    let cfg = run.join("sys.cfg");
    std::fs::write(
        &cfg,
        format!(
            "name = \"{name}\"\nmemory = 256M\nvcpus = 2\nkernel = \"{}\"\nramdisk = \"{}\"\n\
             extra = \"console=hvc0 quiet\"\n",
            cache.join("vmlinuz").display(),
            cache.join("initramfs-wait.cpio.gz").display()
        ),
    )
    .unwrap();

    // create -p -q: nothing printed, the domain waits paused.
    let o = xenkvm(&run, &["create", "-p", "-q", cfg.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(text(&o), "", "create -q printed");
    // The monitor answers create before its main thread sets the gate.
    let start = Instant::now();
    while row(&list(&run), name).is_some_and(|r| r[4] != "--p---")
        && start.elapsed() < Duration::from_secs(20)
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    let r = row(&list(&run), name).expect("listed");
    assert_eq!(r[4], "--p---", "not paused");

    // domid / domname, Domain-0 included.
    assert_eq!(ok_out(&run, &["domid", name]), "1\n");
    assert_eq!(ok_out(&run, &["domname", "1"]), format!("{name}\n"));
    assert_eq!(ok_out(&run, &["domid", "Domain-0"]), "0\n");
    assert_eq!(ok_out(&run, &["domname", "0"]), "Domain-0\n");
    let o = xenkvm(&run, &["domname", "7"]);
    assert!(!o.status.success());
    assert!(text(&o).contains("domain id '7'"), "{}", text(&o));
    assert!(!xenkvm(&run, &["domid", "nope"]).status.success());

    // vcpu-list while paused: vCPU 0 online, vCPU 1 not yet brought up.
    let v = ok_out(&run, &["vcpu-list", name]);
    let mut lines = v.lines();
    assert_eq!(
        lines.next(),
        Some("Name                                ID  VCPU   CPU State   Time(s) Affinity (Hard / Soft)"),
        "{v}"
    );
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(rows.len(), 2, "{v}");
    assert_eq!(&rows[0][..3], [name, "1", "0"], "{v}");
    assert_eq!(&rows[1][..5], [name, "1", "1", "-", "--p"], "{v}");
    assert_eq!(rows[1][6..], ["all", "/", "all"], "{v}");

    // A create on the domain's own API socket conflicts, whatever the body.
    let api = api::control::client::Client::new(&run.join(format!("domains/{name}/api.sock")));
    let r = api
        .raw("POST", "/v1/domains", Some(br#"{"config":{"name":"x"}}"#))
        .unwrap();
    assert_eq!(r.status, 409, "{}", String::from_utf8_lossy(&r.body));

    // unpause runs it; both vCPUs come up.
    let o = xenkvm(&run, &["unpause", name]);
    assert!(o.status.success(), "{}", text(&o));
    let mut c = Attached::start(&run, name);
    assert!(
        c.wait_for("XENKVM-WAITING", Duration::from_secs(300)),
        "{}",
        c.text()
    );
    let v = ok_out(&run, &["vcpu-list"]);
    assert!(
        v.lines().nth(1).is_some_and(|l| l.starts_with("Domain-0 ")),
        "{v}"
    );
    let mine: Vec<Vec<&str>> = v
        .lines()
        .filter(|l| l.starts_with(&format!("{name} ")))
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(mine.len(), 2, "{v}");
    for r in &mine {
        assert!(r[3].parse::<u32>().is_ok(), "no host CPU: {v}");
        assert!(["r--", "-b-"].contains(&r[4]), "state: {v}");
        assert!(r[5].parse::<f64>().is_ok(), "time: {v}");
    }

    // uptime, long and short.
    let u = ok_out(&run, &["uptime"]);
    let mut lines = u.lines();
    assert_eq!(
        lines.next(),
        Some(format!("{:<33} {:>4} Uptime", "Name", "ID").as_str())
    );
    assert!(
        lines.next().is_some_and(|l| l.starts_with("Domain-0 ")),
        "{u}"
    );
    let l = lines.next().unwrap_or_default();
    assert!(l.starts_with(&format!("{name:<33}    1  0:")), "{u}");
    let u = ok_out(&run, &["uptime", "-s", name]);
    assert!(
        u.contains(" up  0:") && u.ends_with(&format!(", {name} (1)\n")),
        "{u}"
    );

    // sysrq h: the guest's kernel prints the SysRq help on its console.
    let o = xenkvm(&run, &["sysrq", name, "hh"]);
    assert!(!o.status.success());
    let o = xenkvm(&run, &["sysrq", name, "h"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        c.wait_for("HELP : ", Duration::from_secs(30)),
        "no SysRq help:\n{}",
        c.text()
    );
    c.send(b"\x1d");
    assert_eq!(c.wait_exit(Duration::from_secs(10)), Some(0));

    // top: xentop's columns, one row per domain, Domain-0 first.
    let t = ok_out(&run, &["top"]);
    let mut lines = t
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("NAME"));
    assert_eq!(
        lines.next(),
        Some("      NAME  STATE   CPU(sec) CPU(%)     MEM(k) MEM(%)  MAXMEM(k) MAXMEM(%) VCPUS NETS VBDS"),
        "{t}"
    );
    assert!(
        lines
            .next()
            .is_some_and(|l| l.trim_start().starts_with("Domain-0 ")),
        "{t}"
    );
    let r: Vec<&str> = lines
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(r[0], name, "{t}");
    assert_eq!(
        (r[4], r[6], r[8], r[9], r[10]),
        ("262144", "262144", "2", "0", "0"),
        "{t}"
    );
    assert!(t.contains("2 domains: "), "{t}");

    // dmesg: the monitor's log of the domain.
    let d = ok_out(&run, &["dmesg", name]);
    assert!(d.contains(&format!("domain {name} (id 1) created")), "{d}");
    let d = ok_out(&run, &["dmesg"]);
    assert!(
        d.contains(&format!("({name}) xenkvm: domain {name}")),
        "{d}"
    );

    // shutdown -a -w: every domain, waited for.
    let o = xenkvm(&run, &["shutdown", "-a", "-w"]);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(t.contains("Shutting down domain 1"), "{t}");
    assert!(t.contains("Waiting for 1 domains"), "{t}");
    assert!(t.contains("Domain 1 has been shut down"), "{t}");
    assert!(row(&list(&run), name).is_none());
    let o = xenkvm(&run, &["shutdown"]);
    assert!(!o.status.success(), "shutdown without -a or a domain");
    let _ = std::fs::remove_dir_all(&run);
}

/// Issue 17: `vcpu-set` takes a vCPU offline (the guest's kernel does it
/// when xenstore says so) and makes it available again; the guest brings
/// it online (as udev would) and it resumes where VCPUOP_down left it.
#[test]
fn vcpu_set_takes_a_vcpu_offline_and_back() {
    let Some(cache) = common::assets() else {
        return;
    };
    let run = temp_dir("xl-vcpuset");
    let name = "xlcpu";
    let cfg = run.join("cpu.cfg");
    std::fs::write(
        &cfg,
        format!(
            "name = \"{name}\"\nmemory = 256\nvcpus = 2\nkernel = \"{}\"\nramdisk = \"{}\"\n\
             extra = \"console=hvc0 quiet\"\n",
            cache.join("vmlinuz").display(),
            cache.join("initramfs-shell.cpio.gz").display()
        ),
    )
    .unwrap();
    let o = xenkvm(&run, &["create", cfg.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    let mut c = Attached::start(&run, name);
    assert!(
        c.wait_for("XENKVM-SHELL", Duration::from_secs(300)),
        "{}",
        c.text()
    );
    std::thread::sleep(Duration::from_millis(500));
    let vcpu1_state = || -> String {
        let v = ok_out(&run, &["vcpu-list", name]);
        let r: Vec<String> = v
            .lines()
            .nth(2)
            .unwrap_or_default()
            .split_whitespace()
            .map(str::to_string)
            .collect();
        r.get(4).cloned().unwrap_or_default()
    };
    let wait_state = |want: &[&str], c: &Attached| {
        let start = Instant::now();
        loop {
            let s = vcpu1_state();
            if want.contains(&s.as_str()) {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "vCPU 1 is {s:?}, not {want:?}:\n{}",
                c.text()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    wait_state(&["r--", "-b-"], &c);
    let o = xenkvm(&run, &["vcpu-set", name, "3"]);
    assert!(!o.status.success(), "3 of 2 vCPUs accepted");
    assert!(text(&o).contains("1 to 2"), "{}", text(&o));

    let o = xenkvm(&run, &["vcpu-set", name, "1"]);
    assert!(o.status.success(), "{}", text(&o));
    wait_state(&["--p"], &c);
    assert_eq!(row(&list(&run), name).unwrap()[3], "1");
    c.send(b"echo cpus-$(cat /sys/devices/system/cpu/online)-end\n");
    assert!(
        c.wait_for("cpus-0-end", Duration::from_secs(30)),
        "{}",
        c.text()
    );

    // Available again; the guest onlines it as udev would.
    let o = xenkvm(&run, &["vcpu-set", name, "2"]);
    assert!(o.status.success(), "{}", text(&o));
    std::thread::sleep(Duration::from_millis(500));
    c.send(b"echo 1 > /sys/devices/system/cpu/cpu1/online; echo up-$(cat /sys/devices/system/cpu/online)-end\n");
    assert!(
        c.wait_for("up-0-1-end", Duration::from_secs(30)),
        "{}",
        c.text()
    );
    wait_state(&["r--", "-b-"], &c);
    assert_eq!(row(&list(&run), name).unwrap()[3], "2");
    // The resumed vCPU runs guest code: a task pinned to it finishes.
    c.send(b"taskset -c 1 sh -c 'echo on-cpu1-$((6*7))'\n");
    assert!(
        c.wait_for("on-cpu1-42", Duration::from_secs(30)),
        "{}",
        c.text()
    );
    c.send(b"\x1d");
    assert_eq!(c.wait_exit(Duration::from_secs(10)), Some(0));
    let o = xenkvm(&run, &["destroy", name]);
    assert!(o.status.success(), "{}", text(&o));
    let _ = std::fs::remove_dir_all(&run);
}

/// `on_poweroff = "preserve"`: the domain stays listed as shut down and keeps
/// its devices (its tap) until `destroy`, as on Xen; then everything goes.
#[test]
fn a_preserved_domain_keeps_its_tap_until_destroyed() {
    let Some(cache) = common::assets() else {
        return;
    };
    let run = temp_dir("xl-preserve");
    let cfg = run.join("keep.cfg");
    std::fs::write(
        &cfg,
        format!(
            "name = \"xlkeep\"\nmemory = 256\nkernel = \"{}\"\nramdisk = \"{}\"\n\
             extra = \"console=hvc0 quiet\"\nvif = [ 'vifname=vkeep0' ]\n\
             on_poweroff = \"preserve\"\n",
            cache.join("vmlinuz").display(),
            cache.join("initramfs-smoke.cpio.gz").display()
        ),
    )
    .unwrap();
    let ns = Netns::new("keep");
    let o = ns
        .xenkvm()
        .arg("--run-dir")
        .arg(&run)
        .args(["create", cfg.to_str().unwrap()])
        .stdin(Stdio::null())
        .output()
        .expect("start xenkvm in the namespace");
    assert!(o.status.success(), "create failed:\n{}", text(&o));
    // The smoke init powers the guest off by itself.
    let start = Instant::now();
    let state = loop {
        let l = list(&run);
        let st = row(&l, "xlkeep").map(|r| r[4].clone()).unwrap_or_default();
        if st.contains('s') || start.elapsed() > Duration::from_secs(300) {
            break st;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(
        state,
        "---s--",
        "not shut down and preserved; log:\n{}",
        std::fs::read_to_string(run.join("domains/xlkeep/log")).unwrap_or_default()
    );
    assert!(ns.has_link("vkeep0"), "the preserved domain lost its tap");
    let o = xenkvm(&run, &["destroy", "xlkeep"]);
    assert!(o.status.success(), "{}", text(&o));
    let start = Instant::now();
    while ns.has_link("vkeep0") && start.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(!ns.has_link("vkeep0"), "the tap outlived destroy");
    let _ = std::fs::remove_dir_all(&run);
}

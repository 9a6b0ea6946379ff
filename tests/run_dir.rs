//! The run directory: private to the user (0700 directories, 0600 files and
//! sockets; one someone else controls is refused), `run` and `create` take
//! domain ids from the same registry, and every way out of a guest (an
//! error, poweroff, Ctrl-], SIGTERM, `destroy`) leaves nothing behind; what
//! a SIGKILLed run left is swept by the next `list`.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::{leftovers, Live, Netns};

fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("xenkvm-rd-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create temp dir");
    dir
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn xenkvm(run: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_xenkvm"))
        .arg("--run-dir")
        .arg(run)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("start xenkvm")
}

fn mode(p: &Path) -> u32 {
    std::fs::symlink_metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .mode()
        & 0o777
}

/// `xenkvm --run-dir RUN ARGS` as a live process (stdin a pipe).
fn live(run: &Path, args: &[String]) -> Live {
    let mut a = vec!["--run-dir".to_string(), run.display().to_string()];
    a.extend(args.iter().cloned());
    Live::start(&a)
}

fn sigterm(l: &Live) {
    // SAFETY: kill(2) on our child's pid.
    unsafe {
        libc::kill(l.child.id() as i32, libc::SIGTERM);
    }
}

/// The `runs/<name>-<pid>` directory of a live run.
fn run_entry(run: &Path, l: &Live) -> PathBuf {
    run.join(format!("runs/guest-{}", l.child.id()))
}

#[test]
fn a_run_directory_someone_else_controls_is_refused() {
    let base = temp_dir("refuse");
    // Others may write to it (e.g. a planted /tmp/xenkvm): refused.
    let open = base.join("open");
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
    for args in [&["list"][..], &["run", "--kernel", "/nonexistent"]] {
        let o = xenkvm(&open, args);
        assert!(!o.status.success(), "{args:?}: {}", text(&o));
        assert!(text(&o).contains("other users can write"), "{}", text(&o));
    }
    assert!(!open.join("runs").exists(), "used a world-writable run dir");
    // A symbolic link to somewhere else: refused.
    let elsewhere = base.join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    let link = base.join("link");
    std::os::unix::fs::symlink(&elsewhere, &link).unwrap();
    let o = xenkvm(&link, &["run", "--kernel", "/nonexistent"]);
    assert!(text(&o).contains("symbolic link"), "{}", text(&o));
    assert!(!elsewhere.join("runs").exists());
    // Owned by another user: refused (setting that up needs root).
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        let theirs = base.join("theirs");
        std::fs::create_dir(&theirs).unwrap();
        std::os::unix::fs::chown(&theirs, Some(65534), Some(65534)).unwrap();
        std::fs::set_permissions(&theirs, std::fs::Permissions::from_mode(0o700)).unwrap();
        let o = xenkvm(&theirs, &["list"]);
        assert!(!o.status.success());
        assert!(text(&o).contains("owned by uid 65534"), "{}", text(&o));
    }
    // One of ours that others can read is made private.
    let mine = base.join("mine");
    std::fs::create_dir(&mine).unwrap();
    std::fs::set_permissions(&mine, std::fs::Permissions::from_mode(0o755)).unwrap();
    let o = xenkvm(&mine, &["run", "--kernel", "/nonexistent"]);
    assert!(text(&o).contains("/nonexistent"), "{}", text(&o));
    assert_eq!(mode(&mine), 0o700);
    // The error path leaves nothing behind.
    assert_eq!(leftovers(&mine), Vec::<String>::new());
    let _ = std::fs::remove_dir_all(&base);
}

#[test]
fn every_way_out_leaves_the_run_directory_empty() {
    let Some(cache) = common::assets() else {
        return;
    };
    let run = temp_dir("exits");
    let image = cache.join("disk-root.raw");
    let disk = format!("file:{},xvda,r", image.display());
    let ns = Netns::new("rd");

    // A created domain that boots with pygrub and has a vif: id 1, vif1.0.
    let cfg = run.join("rdweb.cfg");
    std::fs::write(
        &cfg,
        format!(
            "name = 'rdweb'\nmemory = 256\nbootloader = 'pygrub'\n\
             extra = 'console=hvc0 quiet'\ndisk = ['{disk}']\nvif = ['']\n"
        ),
    )
    .unwrap();
    let o = ns
        .xenkvm()
        .arg("--run-dir")
        .arg(&run)
        .arg("create")
        .arg(&cfg)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(o.status.success(), "create: {}", text(&o));
    let dom = run.join("domains/rdweb");
    assert_eq!(std::fs::read_to_string(dom.join("domid")).unwrap(), "1\n");
    // Private: directories 0700, files and sockets 0600.
    assert_eq!(mode(&run), 0o700);
    assert_eq!(mode(&dom), 0o700);
    for f in [
        "pid",
        "domid",
        "config.json",
        "log",
        "api.sock",
        "console.sock",
        "xenstored.sock",
        "pygrub-kernel",
        "pygrub-initrd",
    ] {
        assert_eq!(mode(&dom.join(f)), 0o600, "{f}");
    }
    assert!(ns.has_link("vif1.0"));

    // `run --net` next to it takes id 2 (it took 1, and failed on vif1.0).
    let mut args = vec![
        "run".to_string(),
        "--bootloader".into(),
        "pygrub".into(),
        "--disk".into(),
        disk.clone(),
        "--net".into(),
        String::new(),
        "--cmdline".into(),
        "console=hvc0 quiet".into(),
    ];
    let mut a = vec!["--run-dir".to_string(), run.display().to_string()];
    a.append(&mut args);
    let mut g = {
        let mut c = ns.xenkvm();
        c.args(&a);
        Live::from_command(c)
    };
    assert!(
        g.wait_for("xenkvm: domain 2 (guest)", Duration::from_secs(120)),
        "{}",
        g.text()
    );
    assert!(ns.has_link("vif2.0"), "{}", g.text());
    // `ip netns exec` runs xenkvm in place of itself: same pid.
    let entry = run_entry(&run, &g);
    for f in [
        "pid",
        "domid",
        "xenstored.sock",
        "pygrub-kernel",
        "pygrub-initrd",
    ] {
        assert_eq!(mode(&entry.join(f)), 0o600, "{f}");
    }
    assert_eq!(
        std::fs::read_to_string(run.join("ids/2")).unwrap().trim(),
        { format!("runs/guest-{}", g.child.id()) }
    );
    // SIGTERM: stopped, and its files are gone.
    sigterm(&g);
    assert_eq!(
        g.wait_exit(Duration::from_secs(30)),
        Some(143),
        "{}",
        g.text()
    );
    assert!(g.text().contains("stopped by SIGTERM"), "{}", g.text());
    assert!(!entry.exists());
    assert!(!run.join("ids/2").exists());
    // destroy: the domain's directory (pygrub's files with it) is gone.
    let o = xenkvm(&run, &["destroy", "rdweb"]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(leftovers(&run), [cfg.display().to_string()]);
    std::fs::remove_file(&cfg).unwrap();

    // Ctrl-] as soon as the guest runs.
    let base = common::run_args(&cache, Some("wait"), "256", &[]);
    let mut g = live(&run, &base);
    assert!(
        g.wait_for("xenkvm: domain 1 (guest)", Duration::from_secs(60)),
        "{}",
        g.text()
    );
    assert!(run_entry(&run, &g).join("xenstored.sock").exists());
    std::thread::sleep(Duration::from_secs(2));
    g.send("\x1d");
    assert_eq!(
        g.wait_exit(Duration::from_secs(30)),
        Some(130),
        "{}",
        g.text()
    );
    assert_eq!(leftovers(&run), Vec::<String>::new());

    // SIGKILL leaves its files; the next `list` sweeps them.
    let mut g = live(&run, &base);
    assert!(
        g.wait_for("xenkvm: domain 1 (guest)", Duration::from_secs(60)),
        "{}",
        g.text()
    );
    let entry = run_entry(&run, &g);
    let _ = g.child.kill();
    let _ = g.child.wait();
    assert!(entry.exists());
    let o = xenkvm(&run, &["list"]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(leftovers(&run), Vec::<String>::new());

    // Poweroff.
    let mut a = vec!["--run-dir".to_string(), run.display().to_string()];
    a.extend(common::run_args(&cache, Some("smoke"), "256", &[]));
    let r = common::xenkvm(&a, Duration::from_secs(300));
    assert_eq!(r.status, Some(0), "{}", r.output);
    assert!(r.output.contains("guest powered off"), "{}", r.output);
    assert_eq!(leftovers(&run), Vec::<String>::new());
    let _ = std::fs::remove_dir_all(&run);
}

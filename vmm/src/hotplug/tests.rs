//! The device set against a test domain and a store, without KVM: the
//! frontend's part is played by writing its xenstore state.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use xen_shim::testing::test_domain;
use xen_shim::xenstore::Store;

use super::*;

struct Rig {
    set: SharedDevices,
    store: Arc<Mutex<Store>>,
    dir: PathBuf,
}

fn rig(tag: &str) -> Rig {
    let (dom, _) = test_domain(128);
    let store = Arc::new(Mutex::new(Store::new()));
    let ctx = BackendCtx {
        dom,
        store: store.clone(),
        backends: Default::default(),
        shared_ram: None,
    };
    let dir = std::env::temp_dir().join(format!("xenkvm-hp-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    Rig {
        set: Arc::new(Mutex::new(DeviceSet::new(ctx, 5, "t", 1))),
        store,
        dir,
    }
}

impl Rig {
    fn image(&self, name: &str) -> String {
        let p = self.dir.join(name);
        std::fs::write(&p, vec![0u8; 1 << 20]).unwrap();
        p.display().to_string()
    }
    fn attach(&self, spec: &str) -> Result<DiskInfo, HotplugError> {
        lock(&self.set).attach_disk(spec)
    }
    fn fe_state(&self, devid: u32, state: u32) {
        let p = format!("/local/domain/5/device/vbd/{devid}/state");
        lock(&self.store).write(&p, state.to_string()).unwrap();
    }
    fn read(&self, path: &str) -> Option<String> {
        lock(&self.store).read_string(path).ok()
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        lock(&self.set).stop_all();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

const SHORT: Duration = Duration::from_millis(300);

#[test]
fn a_vhost_user_disk_is_refused_when_the_memory_is_not_shared() {
    let r = rig("vhu");
    let e = r
        .attach("vdev=xvdb, backendtype=vhost-user, target=/nonexistent.sock")
        .unwrap_err();
    assert!(matches!(e, HotplugError::Conflict(_)), "{e}");
    assert!(e.to_string().contains("shared"), "{e}");
    assert!(lock(&r.set).disks().is_empty());
}

#[test]
fn attach_lists_and_detach_removes_everything() {
    let r = rig("basic");
    let img = r.image("a.img");
    let d = r.attach(&format!("file:{img},xvdb,w")).unwrap();
    assert_eq!((d.devid, d.frontend_id, d.backend_id), (51728, 5, 0));
    assert_eq!(d.backend, "/local/domain/0/backend/vbd/5/51728");
    assert_eq!(d.state, 1, "Initialising until the guest acts");
    assert_eq!(d.evtch, -1);
    assert_eq!(
        r.read("/local/domain/5/device/vbd/51728/backend")
            .as_deref(),
        Some("/local/domain/0/backend/vbd/5/51728")
    );
    // A frontend that never connected goes at once.
    detach_disk(&r.set, "xvdb", false, SHORT).unwrap();
    assert!(lock(&r.set).disks().is_empty());
    for gone in ["/local/domain/5/device/vbd", "/local/domain/0/backend/vbd"] {
        assert!(r.read(gone).is_none(), "{gone} is left");
    }
    assert!(r.read("/local/domain/5/device").is_some(), "device/ stays");
}

#[test]
fn a_connected_frontend_is_asked_to_close_and_waited_for() {
    let r = rig("close");
    let img = r.image("a.img");
    r.attach(&format!("{img},raw,xvdc,w")).unwrap();
    r.fe_state(51744, 4);
    let e = detach_disk(&r.set, "51744", false, SHORT).unwrap_err();
    assert!(matches!(e, HotplugError::Timeout(_)), "{e}");
    assert!(e.to_string().contains("did not release"), "{e}");
    let be = "/local/domain/0/backend/vbd/5/51744";
    assert_eq!(r.read(&format!("{be}/state")).as_deref(), Some("5"));
    assert_eq!(r.read(&format!("{be}/online")).as_deref(), Some("0"));
    assert_eq!(lock(&r.set).disks().len(), 1, "still attached");
    // The guest closes: the next detach completes.
    r.fe_state(51744, 6);
    detach_disk(&r.set, "xvdc", false, SHORT).unwrap();
    assert!(r.read(be).is_none());
    // Forced: no wait at all.
    r.attach(&format!("{img},raw,xvdc,w")).unwrap();
    r.fe_state(51744, 4);
    detach_disk(&r.set, "xvdc", true, Duration::from_secs(300)).unwrap();
    assert!(lock(&r.set).disks().is_empty());
}

#[test]
fn used_vdevs_shared_writers_bad_specs_and_the_limit_are_refused() {
    let r = rig("refuse");
    let a = r.image("a.img");
    let b = r.image("b.img");
    r.attach(&format!("{a},raw,xvdb,w")).unwrap();
    let conflict = |spec: String| match r.attach(&spec) {
        Err(HotplugError::Conflict(m)) => m,
        other => panic!("{spec}: {other:?}"),
    };
    assert!(conflict(format!("{b},raw,xvdb,w")).contains("already used"));
    assert!(conflict(format!("{b},raw,51728,w")).contains("already used"));
    assert!(conflict(format!("{a},raw,xvdc,r")).contains("shared with a writer"));
    for bad in [
        "vdev=xvdc,target=/nonexistent/x.img",
        "vdev=zz,target=/x",
        "vdev=xvdc,format=vhd,target=/x",
    ] {
        assert!(r.attach(bad).is_err(), "{bad}");
    }
    assert!(matches!(
        detach_disk(&r.set, "xvdz", false, SHORT),
        Err(HotplugError::NotFound(_))
    ));
    // Read-only sharing is fine, up to MAX_VBDS disks.
    detach_disk(&r.set, "xvdb", true, SHORT).unwrap();
    for i in 0..MAX_VBDS {
        let vdev = format!("xvd{}", (b'b' + i as u8) as char);
        r.attach(&format!("{b},raw,{vdev},r")).unwrap();
    }
    match r.attach(&format!("{b},raw,xvdz,r")) {
        Err(HotplugError::Limit(m)) => assert!(m.contains("16 disks"), "{m}"),
        other => panic!("{other:?}"),
    }
    // Once the boot has ended nothing more is attached.
    lock(&r.set).stop_all();
    assert!(matches!(
        r.attach(&format!("{b},raw,xvdb,r")),
        Err(HotplugError::Conflict(_))
    ));
}

#[test]
fn a_ledger_replays_detaches_and_attaches_on_a_new_boot() {
    let r = rig("ledger");
    let a = r.image("a.img");
    let b = r.image("b.img");
    // The "config" disk of the new boot, detached in the previous one; a
    // disk attached there; one that cannot come back (its image is gone).
    r.attach(&format!("{a},raw,xvda,w")).unwrap();
    let mut l = Ledger::default();
    l.disk_detached(51712);
    l.disk_attached(51728, &format!("{b},raw,xvdb,r"));
    l.disk_attached(51744, "/nonexistent/c.img,raw,xvdc,r");
    l.replay(&r.set);
    let vdevs: Vec<String> = lock(&r.set).disks().into_iter().map(|d| d.vdev).collect();
    assert_eq!(vdevs, ["xvdb"]);
    assert!(r.read("/local/domain/5/device/vbd/51712").is_none());
    assert!(r.read("/local/domain/5/device/vbd/51728/state").is_some());
}

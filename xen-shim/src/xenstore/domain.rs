//! Populating the store the way a Xen toolstack (libxl) does.
//!
//! `~` below is `/local/domain/<domid>`. Read-only for the guest means
//! `[n0, r<domid>]`; guest-writable means owned by the guest, `[n<domid>]`.

use super::store::{domain_path, Access, Perm, Store};
use super::wire::XsError;

fn ro(domid: u32) -> [Perm; 2] {
    [Perm::new(Access::None, 0), Perm::new(Access::Read, domid)]
}

fn rw(domid: u32) -> [Perm; 1] {
    [Perm::new(Access::None, domid)]
}

/// What [`populate_domain_full`] writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainSpec {
    pub domid: u32,
    pub name: String,
    /// `/vm/<uuid>` is written when given.
    pub uuid: Option<String>,
    /// `memory/target` and `memory/static-max`, KiB.
    pub mem_kib: u64,
    /// Maximum VCPUs (`cpu/<n>` for each).
    pub vcpus: u32,
    /// How many of them are online at boot (the rest `offline`).
    pub online_vcpus: u32,
}

/// Dom0's own entries: `/local/domain/0/{name,domid}` ("Domain-0"), plus
/// `/local/domain/0/backend` for the monitor's backends.
pub fn populate_dom0(store: &mut Store) -> Result<(), XsError> {
    store.write("/local/domain/0/name", "Domain-0")?;
    store.write("/local/domain/0/domid", "0")?;
    store.mkdir("/local/domain/0/backend")?;
    store.mkdir("/tool/xenstored")?;
    Ok(())
}

/// The libxl entries of a new domain with `vcpus` online VCPUs.
pub fn populate_domain(
    store: &mut Store,
    domid: u32,
    name: &str,
    mem_kib: u64,
    vcpus: u32,
) -> Result<(), XsError> {
    populate_domain_full(
        store,
        &DomainSpec {
            domid,
            name: name.to_owned(),
            uuid: None,
            mem_kib,
            vcpus,
            online_vcpus: vcpus,
        },
    )
}

/// The libxl entries of a new domain (`libxl__domain_make` and
/// `libxl__build_post`), without the store ring and console entries.
pub fn populate_domain_full(store: &mut Store, spec: &DomainSpec) -> Result<(), XsError> {
    let d = spec.domid;
    let home = domain_path(d);
    let at = |rel: &str| format!("{home}/{rel}");
    store.mkdir_with_perms(&home, &ro(d))?;
    if let Some(uuid) = &spec.uuid {
        let vm = format!("/vm/{uuid}");
        store.write(&format!("{vm}/uuid"), uuid)?;
        store.write(&format!("{vm}/name"), &spec.name)?;
        store.write_with_perms(&at("vm"), &vm, &ro(d))?;
    }
    store.write_with_perms(&at("name"), &spec.name, &ro(d))?;
    store.write_with_perms(&at("domid"), d.to_string(), &ro(d))?;

    store.mkdir_with_perms(&at("cpu"), &ro(d))?;
    for n in 0..spec.vcpus {
        let state = if n < spec.online_vcpus {
            "online"
        } else {
            "offline"
        };
        store.mkdir_with_perms(&at(&format!("cpu/{n}")), &ro(d))?;
        store.write_with_perms(&at(&format!("cpu/{n}/availability")), state, &ro(d))?;
    }

    store.mkdir_with_perms(&at("memory"), &ro(d))?;
    store.write_with_perms(&at("memory/static-max"), spec.mem_kib.to_string(), &ro(d))?;
    store.write_with_perms(&at("memory/target"), spec.mem_kib.to_string(), &ro(d))?;

    store.mkdir_with_perms(&at("device"), &ro(d))?;
    store.mkdir_with_perms(&at("device/suspend"), &ro(d))?;
    store.write_with_perms(&at("device/suspend/event-channel"), "", &rw(d))?;

    store.mkdir_with_perms(&at("control"), &ro(d))?;
    for key in [
        "shutdown",
        "feature-poweroff",
        "feature-reboot",
        "feature-suspend",
        "sysrq",
    ] {
        store.write_with_perms(&at(&format!("control/{key}")), "", &rw(d))?;
    }
    for key in [
        "platform-feature-multiprocessor-suspend",
        "platform-feature-xs_reset_watches",
    ] {
        store.write_with_perms(&at(&format!("control/{key}")), "1", &ro(d))?;
    }
    for dir in ["data", "drivers", "feature", "attr", "error"] {
        store.mkdir_with_perms(&at(dir), &rw(d))?;
    }
    Ok(())
}

/// Record the store ring (`store/ring-ref` = guest frame, `store/port`).
pub fn set_store_ring(store: &mut Store, domid: u32, gfn: u64, port: u32) -> Result<(), XsError> {
    let home = domain_path(domid);
    store.mkdir_with_perms(&format!("{home}/store"), &ro(domid))?;
    store.write_with_perms(
        &format!("{home}/store/ring-ref"),
        gfn.to_string(),
        &ro(domid),
    )?;
    store.write_with_perms(&format!("{home}/store/port"), port.to_string(), &ro(domid))?;
    Ok(())
}

/// The console 0 entries: `~/console/*` (read-only to the guest) and its
/// backend under `/local/domain/<backend>/backend/console/<domid>/0`.
/// `tty` stays empty until the console backend fills it in.
pub fn add_console(
    store: &mut Store,
    domid: u32,
    backend: u32,
    gfn: u64,
    port: u32,
) -> Result<(), XsError> {
    let fe = format!("{}/console", domain_path(domid));
    let be = format!("{}/backend/console/{domid}/0", domain_path(backend));
    let fe_perms = [Perm::new(Access::None, 0), Perm::new(Access::Read, domid)];
    let be_perms = [
        Perm::new(Access::None, backend),
        Perm::new(Access::Read, domid),
    ];
    store.mkdir_with_perms(&fe, &fe_perms)?;
    for (k, v) in [
        ("backend", be.clone()),
        ("backend-id", backend.to_string()),
        ("limit", "1048576".to_owned()),
        ("type", "xenconsoled".to_owned()),
        ("output", "pty".to_owned()),
        ("tty", String::new()),
        ("port", port.to_string()),
        ("ring-ref", gfn.to_string()),
    ] {
        store.write_with_perms(&format!("{fe}/{k}"), v, &fe_perms)?;
    }
    store.mkdir_with_perms(&be, &be_perms)?;
    for (k, v) in [
        ("frontend", fe.clone()),
        ("frontend-id", domid.to_string()),
        ("online", "1".to_owned()),
        ("state", "1".to_owned()),
        ("protocol", "vt100".to_owned()),
    ] {
        store.write_with_perms(&format!("{be}/{k}"), v, &be_perms)?;
    }
    Ok(())
}

/// Paths of a device pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DevicePaths {
    /// `~/device/<kind>/<devid>`
    pub frontend: String,
    /// `/local/domain/<backend>/backend/<kind>/<domid>/<devid>`
    pub backend: String,
}

/// A split device as `libxl__device_generic_add` writes it: the frontend
/// dir owned by the guest and readable by the backend domain, with
/// `backend`, `backend-id`, `state = 1` and `front` keys; the backend dir
/// owned by the backend domain and readable by the guest, with `frontend`,
/// `frontend-id`, `online = 1`, `state = 1` and `back` keys. All in one
/// transaction.
pub fn add_device(
    store: &mut Store,
    domid: u32,
    backend: u32,
    kind: &str,
    devid: u32,
    front: &[(&str, &str)],
    back: &[(&str, &str)],
) -> Result<DevicePaths, XsError> {
    let frontend = format!("{}/device/{kind}/{devid}", domain_path(domid));
    let backend_path = format!("{}/backend/{kind}/{domid}/{devid}", domain_path(backend));
    let fe_perms = [
        Perm::new(Access::None, domid),
        Perm::new(Access::Read, backend),
    ];
    let be_perms = [
        Perm::new(Access::None, backend),
        Perm::new(Access::Read, domid),
    ];
    let be_id = backend.to_string();
    let fe_id = domid.to_string();
    let mut fe_keys: Vec<(&str, &str)> = vec![
        ("backend", &backend_path),
        ("backend-id", &be_id),
        ("state", "1"),
    ];
    fe_keys.extend_from_slice(front);
    let mut be_keys: Vec<(&str, &str)> = vec![
        ("frontend", &frontend),
        ("frontend-id", &fe_id),
        ("online", "1"),
        ("state", "1"),
    ];
    be_keys.extend_from_slice(back);

    // The dirs above the device keep their creator's (dom0's) permissions,
    // except that the guest needs read access to its device/<kind> list.
    let kind_dir = format!("{}/device/{kind}", domain_path(domid));
    let be_kind_dir = format!("{}/backend/{kind}", domain_path(backend));
    loop {
        let tx = store.transaction_start()?;
        let r = (|| {
            store.tx_mkdir(tx, &kind_dir)?;
            store.tx_set_perms(tx, &kind_dir, &ro(domid))?;
            store.tx_mkdir(tx, &be_kind_dir)?;
            store.tx_mkdir(tx, &frontend)?;
            store.tx_set_perms(tx, &frontend, &fe_perms)?;
            for (k, v) in &fe_keys {
                let p = format!("{frontend}/{k}");
                store.tx_write(tx, &p, v)?;
                store.tx_set_perms(tx, &p, &fe_perms)?;
            }
            store.tx_mkdir(tx, &backend_path)?;
            store.tx_set_perms(tx, &backend_path, &be_perms)?;
            for (k, v) in &be_keys {
                let p = format!("{backend_path}/{k}");
                store.tx_write(tx, &p, v)?;
                store.tx_set_perms(tx, &p, &be_perms)?;
            }
            Ok(())
        })();
        if let Err(e) = r {
            let _ = store.transaction_end(tx, false);
            return Err(e);
        }
        match store.transaction_end(tx, true) {
            Ok(()) => break,
            Err(XsError::Again) => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(DevicePaths {
        frontend,
        backend: backend_path,
    })
}

/// Remove a device pair (frontend and backend dirs).
pub fn remove_device(store: &mut Store, paths: &DevicePaths) -> Result<(), XsError> {
    store.rm(&paths.frontend)?;
    store.rm(&paths.backend)
}

/// What a toolstack does when a domain is gone: release it (firing
/// `@releaseDomain`) if it was introduced, and remove its home, its
/// backends' entries for it and `/vm` data.
pub fn destroy_domain(store: &mut Store, domid: u32) -> Result<(), XsError> {
    if store.is_domain_introduced(domid) && domid != 0 {
        store.release_domain(domid)?;
    }
    let home = domain_path(domid);
    if let Ok(vm) = store.read_string(&format!("{home}/vm")) {
        if vm.starts_with("/vm/") {
            store.rm(&vm)?;
        }
    }
    store.rm(&home)?;
    // Backend entries for this domain under every backend domain.
    let backends: Vec<String> = store.directory("/local/domain").unwrap_or_default();
    for b in backends {
        let dir = format!("/local/domain/{b}/backend");
        for kind in store.directory(&dir).unwrap_or_default() {
            store.rm(&format!("{dir}/{kind}/{domid}"))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn populate_like_libxl() {
        let mut s = Store::new();
        populate_dom0(&mut s).unwrap();
        populate_domain_full(
            &mut s,
            &DomainSpec {
                domid: 3,
                name: "web".into(),
                uuid: Some("00000000-0000-0000-0000-000000000003".into()),
                mem_kib: 524288,
                vcpus: 2,
                online_vcpus: 1,
            },
        )
        .unwrap();
        assert_eq!(s.read_string("/local/domain/0/name").unwrap(), "Domain-0");
        assert_eq!(s.read_string("/local/domain/3/name").unwrap(), "web");
        assert_eq!(s.read_string("/local/domain/3/domid").unwrap(), "3");
        assert_eq!(
            s.read_string("/local/domain/3/memory/target").unwrap(),
            "524288"
        );
        assert_eq!(
            s.read_string("/local/domain/3/cpu/0/availability").unwrap(),
            "online"
        );
        assert_eq!(
            s.read_string("/local/domain/3/cpu/1/availability").unwrap(),
            "offline"
        );
        assert_eq!(
            s.read_string("/local/domain/3/control/platform-feature-xs_reset_watches")
                .unwrap(),
            "1"
        );
        assert_eq!(
            s.read_string("/local/domain/3/vm").unwrap(),
            "/vm/00000000-0000-0000-0000-000000000003"
        );
        assert_eq!(s.get_perms("/local/domain/3").unwrap(), ro(3).to_vec());
        assert_eq!(
            s.get_perms("/local/domain/3/control/shutdown").unwrap(),
            rw(3).to_vec()
        );
        assert_eq!(s.get_perms("/local/domain/3/data").unwrap(), rw(3).to_vec());

        let dev = add_device(
            &mut s,
            3,
            0,
            "vbd",
            51712,
            &[("virtual-device", "51712"), ("device-type", "disk")],
            &[("params", "/img"), ("mode", "w")],
        )
        .unwrap();
        assert_eq!(dev.frontend, "/local/domain/3/device/vbd/51712");
        assert_eq!(dev.backend, "/local/domain/0/backend/vbd/3/51712");
        assert_eq!(
            s.read_string(&format!("{}/backend", dev.frontend)).unwrap(),
            dev.backend
        );
        assert_eq!(
            s.read_string(&format!("{}/frontend-id", dev.backend))
                .unwrap(),
            "3"
        );
        assert_eq!(
            s.read_string(&format!("{}/state", dev.backend)).unwrap(),
            "1"
        );
        assert_eq!(
            s.read_string(&format!("{}/params", dev.backend)).unwrap(),
            "/img"
        );
        assert_eq!(
            s.get_perms(&format!("{}/state", dev.frontend)).unwrap(),
            vec![Perm::new(Access::None, 3), Perm::new(Access::Read, 0)]
        );
        set_store_ring(&mut s, 3, 0xfeffc, 1).unwrap();
        add_console(&mut s, 3, 0, 0xfeffd, 2).unwrap();
        assert_eq!(s.read_string("/local/domain/3/console/tty").unwrap(), "");
        assert_eq!(s.read_string("/local/domain/3/store/port").unwrap(), "1");

        s.introduce_domain(3, 0xfeffc, 1).unwrap();
        destroy_domain(&mut s, 3).unwrap();
        assert!(!s.exists("/local/domain/3"));
        assert!(!s.exists("/local/domain/0/backend/vbd/3"));
        assert!(!s.exists("/local/domain/0/backend/console/3"));
        assert!(!s.exists("/vm/00000000-0000-0000-0000-000000000003"));
        assert_eq!(s.domain_usage(3).nodes, 0);
    }
}

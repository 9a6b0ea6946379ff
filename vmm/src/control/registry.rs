//! The run directory: which domains exist, their names, ids and files.
//!
//! ```text
//! <run>/domains/<name>/pid              the monitor's pid
//! <run>/domains/<name>/domid            the domain id
//! <run>/domains/<name>/api.sock         control API (HTTP/1.1 + JSON)
//! <run>/domains/<name>/console.sock     guest console stream
//! <run>/domains/<name>/xenstored.sock   the domain's xenstore (XENSTORED_PATH)
//! <run>/domains/<name>/log              the monitor's log (stdout/stderr)
//! <run>/domains/<name>/config.json      the domain config
//! <run>/ids/<id>                        the name holding id <id>
//! <run>/new/<token>.{sock,log}          monitors still waiting for a create
//! <run>/dumps/<name>-<time>.core        guest memory for coredump-* actions
//! <run>/runs/<name>-<pid>/               a foreground `xenkvm run`: pid, domid,
//!                                        xenstored.sock, pygrub's kernel/initrd
//! ```
//!
//! A name is claimed by renaming a private directory that already holds the
//! pid file onto `domains/<name>` (atomic; fails if the name exists), an
//! id by creating `ids/<id>` with `O_EXCL` (lowest free id >= 1); `run`
//! takes its id the same way (the id file then names `runs/<name>-<pid>`).
//! Entries whose process is dead are removed by whoever notices first.
//!
//! Everything here is private to the user: directories are 0700 and owned
//! by the user (an existing one owned by someone else, a symbolic link or
//! one others can write to is refused), files are created 0600 with
//! `O_EXCL|O_NOFOLLOW`, sockets are 0600.

use std::fs::{DirBuilder, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// Highest domain id handed out (Xen's DOMID_FIRST_RESERVED - 1).
pub const MAX_DOMID: u32 = 0x7fef;

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("invalid domain name '{0}': {1}")]
    BadName(String, &'static str),
    #[error("domain '{0}' already exists")]
    Exists(String),
    #[error("domain '{0}' not found")]
    NotFound(String),
    #[error("no free domain id")]
    NoIds,
    #[error("domain id {0} is in use (by {1})")]
    IdInUse(u32, String),
    #[error("{path}: {why}; refusing to use it as xenkvm's run directory")]
    NotPrivate { path: String, why: String },
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> RegistryError + '_ {
    move |e| RegistryError::Io {
        path: path.display().to_string(),
        source: e,
    }
}

/// The effective user id.
fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() }
}

/// Check that `path` is a directory only this user can use: not a symbolic
/// link, owned by us, writable by nobody else. One that others can only
/// read or enter is tightened to 0700.
pub fn check_private_dir(path: &Path) -> Result<(), RegistryError> {
    let refuse = |why: String| RegistryError::NotPrivate {
        path: path.display().to_string(),
        why,
    };
    let m = std::fs::symlink_metadata(path).map_err(io(path))?;
    if m.file_type().is_symlink() {
        return Err(refuse("a symbolic link".into()));
    }
    if !m.is_dir() {
        return Err(refuse("not a directory".into()));
    }
    if m.uid() != euid() {
        return Err(refuse(format!(
            "owned by uid {}, not by you (uid {})",
            m.uid(),
            euid()
        )));
    }
    let mode = m.mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(refuse(format!(
            "mode {mode:04o}: other users can write to it (chmod 700 it)"
        )));
    }
    if mode & 0o077 != 0 {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700)).map_err(io(path))?;
    }
    Ok(())
}

/// Create `path` (and missing parents) as a 0700 directory, or check the
/// one that is there with [`check_private_dir`].
pub fn private_dir(path: &Path) -> Result<(), RegistryError> {
    match DirBuilder::new().recursive(true).mode(0o700).create(path) {
        Ok(()) => check_private_dir(path),
        Err(e) => {
            if std::fs::symlink_metadata(path).is_ok() {
                check_private_dir(path)
            } else {
                Err(io(path)(e))
            }
        }
    }
}

/// Create a new 0600 file: never through a symbolic link, never over an
/// existing file.
pub fn create_private(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
}

/// [`create_private`] and write `data`.
pub fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    create_private(path)?.write_all(data)
}

/// Make the socket just bound at `path` 0600 (its directory is private
/// already; this keeps it so whatever the umask).
pub fn private_socket(path: &Path) -> std::io::Result<()> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
}

/// Is process `pid` alive (and not a zombie)?
pub fn pid_alive(pid: u32) -> bool {
    if pid == 0 || pid > i32::MAX as u32 {
        return false;
    }
    // SAFETY: signal 0 only checks for existence and permission.
    let r = unsafe { libc::kill(pid as i32, 0) };
    let alive = r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
    if !alive {
        return false;
    }
    // A zombie (exited, not yet reaped) is dead for our purposes.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => s
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_none_or(|st| st != "Z" && st != "X"),
        Err(_) => true,
    }
}

/// xl's rules, plus what a directory name needs.
pub fn validate_name(name: &str) -> Result<(), RegistryError> {
    let bad = |why| Err(RegistryError::BadName(name.to_string(), why));
    if name.is_empty() {
        return bad("empty");
    }
    if name.len() > 64 {
        return bad("longer than 64 bytes");
    }
    if name.starts_with('.') || name.starts_with('-') {
        return bad("starts with '.' or '-'");
    }
    if name.bytes().all(|b| b.is_ascii_digit()) {
        return bad("all digits (it would look like a domain id)");
    }
    if name == "Domain-0" {
        return bad("reserved for the host");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-_.+:@".contains(&b))
    {
        return bad("use letters, digits and - _ . + : @");
    }
    Ok(())
}

fn read_u32(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// One domain directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    pub dir: PathBuf,
    pub id: Option<u32>,
    pub pid: Option<u32>,
}

impl Entry {
    fn load(dir: PathBuf) -> Option<Entry> {
        let name = dir.file_name()?.to_str()?.to_string();
        Some(Entry {
            id: read_u32(&dir.join("domid")),
            pid: read_u32(&dir.join("pid")),
            name,
            dir,
        })
    }

    pub fn alive(&self) -> bool {
        self.pid.is_some_and(pid_alive)
    }

    pub fn api_socket(&self) -> PathBuf {
        self.dir.join("api.sock")
    }
}

/// A claimed name and id, released by [`Claim::release`].
#[derive(Debug)]
pub struct Claim {
    pub name: String,
    pub id: u32,
    pub dir: PathBuf,
    ids: PathBuf,
}

impl Claim {
    pub fn api_socket(&self) -> PathBuf {
        self.dir.join("api.sock")
    }
    pub fn console_socket(&self) -> PathBuf {
        self.dir.join("console.sock")
    }
    pub fn xenstore_socket(&self) -> PathBuf {
        self.dir.join("xenstored.sock")
    }
    pub fn log(&self) -> PathBuf {
        self.dir.join("log")
    }

    /// Remove the domain's directory and id (the monitor is going away).
    pub fn release(&self) {
        let _ = std::fs::remove_file(self.ids.join(self.id.to_string()));
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The run directory.
#[derive(Debug, Clone)]
pub struct RunDir {
    pub root: PathBuf,
}

impl RunDir {
    pub fn new(root: PathBuf) -> RunDir {
        RunDir { root }
    }

    /// `--run-dir`, else `XENKVM_RUN_DIR`, `$XDG_RUNTIME_DIR/xenkvm`,
    /// `/run/xenkvm` for root, the temp directory otherwise.
    pub fn from_env() -> RunDir {
        RunDir::new(crate::xs::run_dir())
    }

    pub fn domains(&self) -> PathBuf {
        self.root.join("domains")
    }
    fn ids(&self) -> PathBuf {
        self.root.join("ids")
    }
    pub fn staging(&self) -> PathBuf {
        self.root.join("new")
    }
    pub fn dumps(&self) -> PathBuf {
        self.root.join("dumps")
    }

    pub fn runs(&self) -> PathBuf {
        self.root.join("runs")
    }

    /// Refuse a run directory that is not private to this user (when it
    /// exists: verbs that only read create nothing).
    pub fn check(&self) -> Result<(), RegistryError> {
        if std::fs::symlink_metadata(&self.root).is_err() {
            return Ok(());
        }
        check_private_dir(&self.root)
    }

    /// Create the run directory (0700) or check it, and `sub` in it.
    pub fn ensure(&self, sub: &Path) -> Result<(), RegistryError> {
        private_dir(&self.root)?;
        private_dir(sub)
    }

    fn mkdirs(&self) -> Result<(), RegistryError> {
        for d in [self.domains(), self.ids(), self.staging()] {
            self.ensure(&d)?;
        }
        Ok(())
    }

    /// Claim `name` and the lowest free id for process `pid`.
    pub fn claim(&self, name: &str, pid: u32) -> Result<Claim, RegistryError> {
        validate_name(name)?;
        self.mkdirs()?;
        let dir = self.domains().join(name);
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let tmp = self.domains().join(format!(".claim-{pid}-{nanos}"));
        DirBuilder::new()
            .mode(0o700)
            .create(&tmp)
            .map_err(io(&tmp))?;
        write_private(&tmp.join("pid"), format!("{pid}\n").as_bytes()).map_err(io(&tmp))?;
        let mut tries = 0;
        loop {
            match std::fs::rename(&tmp, &dir) {
                Ok(()) => break,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Err(io(&tmp)(e));
                }
                Err(_) => {
                    tries += 1;
                    let stale = Entry::load(dir.clone()).is_some_and(|e| self.is_stale(&e));
                    if !stale || tries > 3 {
                        let _ = std::fs::remove_dir_all(&tmp);
                        return Err(RegistryError::Exists(name.to_string()));
                    }
                    log::info!("removing the stale entry of domain {name}");
                    self.remove_entry(&Entry::load(dir.clone()).expect("loaded above"));
                }
            }
        }
        match self.claim_id(name, None) {
            Ok(id) => {
                let _ = write_private(&dir.join("domid"), format!("{id}\n").as_bytes());
                Ok(Claim {
                    name: name.to_string(),
                    id,
                    dir,
                    ids: self.ids(),
                })
            }
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                Err(e)
            }
        }
    }

    /// Take the lowest free id (or `want`) for `holder`: a domain name, or
    /// `runs/<name>-<pid>` for a foreground `run`.
    fn claim_id(&self, holder: &str, want: Option<u32>) -> Result<u32, RegistryError> {
        let ids = self.ids();
        let mut id = want.unwrap_or(1);
        while id <= MAX_DOMID {
            let p = ids.join(id.to_string());
            match create_private(&p) {
                Ok(mut f) => {
                    let _ = writeln!(f, "{holder}");
                    return Ok(id);
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    if self.id_is_stale(id) {
                        let _ = std::fs::remove_file(&p);
                        continue;
                    }
                    if want.is_some() {
                        let by = std::fs::read_to_string(&p).unwrap_or_default();
                        return Err(RegistryError::IdInUse(id, by.trim().to_string()));
                    }
                    id += 1;
                }
                Err(e) => return Err(io(&p)(e)),
            }
        }
        Err(RegistryError::NoIds)
    }

    /// The directory an id file's holder names.
    fn holder_dir(&self, holder: &str) -> PathBuf {
        match holder.strip_prefix("runs/") {
            Some(d) if !d.contains('/') && !d.starts_with('.') => self.runs().join(d),
            _ => self.domains().join(holder),
        }
    }

    /// An id file whose holder no longer has a live entry with that id.
    fn id_is_stale(&self, id: u32) -> bool {
        let p = self.ids().join(id.to_string());
        let Ok(holder) = std::fs::read_to_string(&p) else {
            return false;
        };
        let holder = holder.trim();
        if holder.is_empty() {
            // Being written right now, or left by a crash: give it a moment.
            return file_age(&p) > Duration::from_secs(10);
        }
        let Some(e) = Entry::load(self.holder_dir(holder)) else {
            return true;
        };
        if !e.dir.exists() {
            return true;
        }
        match e.id {
            Some(i) if i != id => true,
            None => !e.alive() && file_age(&p) > Duration::from_secs(10),
            Some(_) => !e.alive(),
        }
    }

    fn is_stale(&self, e: &Entry) -> bool {
        match e.pid {
            Some(pid) => !pid_alive(pid),
            None => file_age(&e.dir) > Duration::from_secs(10),
        }
    }

    fn remove_entry(&self, e: &Entry) {
        if let Some(id) = e.id {
            let p = self.ids().join(id.to_string());
            if std::fs::read_to_string(&p).is_ok_and(|h| h.trim() == e.name) {
                let _ = std::fs::remove_file(&p);
            }
        }
        let _ = std::fs::remove_dir_all(&e.dir);
    }

    /// Live domains, sorted by id; entries of dead monitors are removed.
    pub fn entries(&self) -> Vec<Entry> {
        let mut out = Vec::new();
        let Ok(rd) = std::fs::read_dir(self.domains()) else {
            return out;
        };
        for d in rd.flatten() {
            let Some(fname) = d.file_name().to_str().map(str::to_string) else {
                continue;
            };
            let Some(e) = Entry::load(d.path()) else {
                continue;
            };
            if fname.starts_with('.') {
                // An interrupted claim.
                if self.is_stale(&e) && file_age(&e.dir) > Duration::from_secs(10) {
                    let _ = std::fs::remove_dir_all(&e.dir);
                }
                continue;
            }
            if self.is_stale(&e) {
                log::info!("domain {} is gone; removing its entry", e.name);
                self.remove_entry(&e);
                continue;
            }
            out.push(e);
        }
        self.clean_staging();
        self.sweep_runs();
        out.sort_by_key(|e| (e.id.unwrap_or(u32::MAX), e.name.clone()));
        out
    }

    /// Remove files of waiting monitors that died (`new/<pid>-<n>.*`).
    fn clean_staging(&self) {
        let Ok(rd) = std::fs::read_dir(self.staging()) else {
            return;
        };
        for f in rd.flatten() {
            let name = f.file_name().to_string_lossy().into_owned();
            let pid = name.split(['-', '.']).next().and_then(|p| p.parse().ok());
            if pid.is_some_and(|p| !pid_alive(p)) && file_age(&f.path()) > Duration::from_secs(5) {
                let _ = std::fs::remove_file(f.path());
            }
        }
    }

    /// Claim an id (the lowest free one, or `want`) and a private directory
    /// `runs/<name>-<pid>` for a foreground `xenkvm run` of this process.
    /// Both go when the claim is dropped; a dead process's are swept.
    pub fn claim_run(&self, name: &str, want: Option<u32>) -> Result<RunClaim, RegistryError> {
        validate_name(name)?;
        self.sweep_runs();
        self.mkdirs()?;
        self.ensure(&self.runs())?;
        let pid = std::process::id();
        let base = format!("{name}-{pid}");
        let dir = self.runs().join(&base);
        // Ours if it is there (an earlier claim of this process).
        let _ = std::fs::remove_dir_all(&dir);
        DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(io(&dir))?;
        let mut claim = RunClaim {
            dir,
            id: 0,
            ids: self.ids(),
            holder: format!("runs/{base}"),
        };
        write_private(&claim.dir.join("pid"), format!("{pid}\n").as_bytes())
            .map_err(io(&claim.dir))?;
        claim.id = self.claim_id(&claim.holder, want)?;
        write_private(
            &claim.dir.join("domid"),
            format!("{}\n", claim.id).as_bytes(),
        )
        .map_err(io(&claim.dir))?;
        Ok(claim)
    }

    /// Remove what foreground runs whose process died left behind: their
    /// `runs/` directories and ids, and the `<name>-<pid>` directories of
    /// older versions (holding only a xenstore socket and pygrub's files).
    pub fn sweep_runs(&self) {
        if let Ok(rd) = std::fs::read_dir(self.runs()) {
            for d in rd.flatten() {
                let Some(e) = Entry::load(d.path()) else {
                    continue;
                };
                if !self.is_stale(&e) {
                    continue;
                }
                log::info!("removing {} (its process is gone)", e.dir.display());
                if let Some(id) = e.id {
                    let p = self.ids().join(id.to_string());
                    let holder = format!("runs/{}", e.name);
                    if std::fs::read_to_string(&p).is_ok_and(|h| h.trim() == holder) {
                        let _ = std::fs::remove_file(&p);
                    }
                }
                let _ = std::fs::remove_dir_all(&e.dir);
            }
        }
        let Ok(rd) = std::fs::read_dir(&self.root) else {
            return;
        };
        for d in rd.flatten() {
            let name = d.file_name().to_string_lossy().into_owned();
            let Some(pid) = name
                .rsplit_once('-')
                .and_then(|(_, p)| p.parse::<u32>().ok())
            else {
                continue;
            };
            let legacy = |p: &Path| {
                std::fs::read_dir(p).is_ok_and(|rd| {
                    rd.flatten().all(|f| {
                        matches!(
                            f.file_name().to_str(),
                            Some("xenstored.sock" | "pygrub-kernel" | "pygrub-initrd")
                        )
                    })
                })
            };
            let is_dir = d.file_type().is_ok_and(|t| t.is_dir());
            if is_dir && !pid_alive(pid) && legacy(&d.path()) {
                log::info!("removing {} (its process is gone)", d.path().display());
                let _ = std::fs::remove_dir_all(d.path());
            }
        }
    }

    /// The live domain named `dom`, or with id `dom`.
    pub fn find(&self, dom: &str) -> Result<Entry, RegistryError> {
        let id = dom.parse::<u32>().ok();
        self.entries()
            .into_iter()
            .find(|e| e.name == dom || (id.is_some() && e.id == id))
            .ok_or_else(|| RegistryError::NotFound(dom.to_string()))
    }

    /// Forget a domain whose monitor was killed.
    pub fn forget(&self, e: &Entry) {
        self.remove_entry(e);
    }
}

/// A foreground run's id and directory, released when dropped.
#[derive(Debug)]
pub struct RunClaim {
    pub dir: PathBuf,
    pub id: u32,
    ids: PathBuf,
    holder: String,
}

impl RunClaim {
    pub fn xenstore_socket(&self) -> PathBuf {
        self.dir.join("xenstored.sock")
    }
}

impl Drop for RunClaim {
    fn drop(&mut self) {
        let p = self.ids.join(self.id.to_string());
        if std::fs::read_to_string(&p).is_ok_and(|h| h.trim() == self.holder) {
            let _ = std::fs::remove_file(&p);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn file_age(p: &Path) -> Duration {
    std::fs::metadata(p)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| SystemTime::now().duration_since(t).ok())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(tag: &str) -> RunDir {
        let d = std::env::temp_dir().join(format!("xenkvm-reg-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        RunDir::new(d)
    }

    #[test]
    fn names_are_validated() {
        assert!(validate_name("web01").is_ok());
        assert!(validate_name("a.b-c_d").is_ok());
        for bad in [
            "", "12", "../x", "a/b", ".hidden", "Domain-0", "sp ace", "-x",
        ] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn claims_are_unique_and_ids_lowest_free() {
        let r = temp("claim");
        let me = std::process::id();
        let a = r.claim("a", me).unwrap();
        let b = r.claim("b", me).unwrap();
        assert_eq!((a.id, b.id), (1, 2));
        assert!(matches!(r.claim("a", me), Err(RegistryError::Exists(_))));
        a.release();
        let c = r.claim("c", me).unwrap();
        assert_eq!(c.id, 1);
        assert_eq!(r.find("c").unwrap().id, Some(1));
        assert_eq!(r.find("2").unwrap().name, "b");
        assert!(r.find("a").is_err());
        let names: Vec<String> = r.entries().into_iter().map(|e| e.name).collect();
        assert_eq!(names, ["c", "b"]);
        let _ = std::fs::remove_dir_all(&r.root);
    }

    #[test]
    fn dead_entries_are_removed() {
        let r = temp("dead");
        // A pid that cannot be alive.
        let dead = 0x7fff_fff0;
        let d = r.claim("ghost", dead).unwrap();
        assert_eq!(d.id, 1);
        assert!(r.entries().is_empty());
        assert!(!d.dir.exists());
        // Its name and id are free again.
        let n = r.claim("ghost", std::process::id()).unwrap();
        assert_eq!(n.id, 1);
        // A stale holder of a name is replaced by a new claim.
        std::fs::write(n.dir.join("pid"), format!("{dead}\n")).unwrap();
        let m = r.claim("ghost", std::process::id()).unwrap();
        assert_eq!(m.id, 1);
        let _ = std::fs::remove_dir_all(&r.root);
    }

    #[test]
    fn run_claims_share_ids_with_domains_and_go_when_dropped() {
        let r = temp("runclaim");
        let me = std::process::id();
        let a = r.claim("a", me).unwrap();
        assert_eq!(a.id, 1);
        let g = r.claim_run("guest", None).unwrap();
        assert_eq!(g.id, 2, "run must not take a created domain's id");
        assert!(g.dir.ends_with(format!("runs/guest-{me}")));
        assert_eq!(std::fs::read_to_string(g.dir.join("domid")).unwrap(), "2\n");
        // A created domain does not take the run's id either.
        let b = r.claim("b", me).unwrap();
        assert_eq!(b.id, 3);
        // An id asked for explicitly is refused when taken.
        let e = r.claim_run("other", Some(1)).unwrap_err();
        assert!(
            matches!(e, RegistryError::IdInUse(1, ref h) if h == "a"),
            "{e}"
        );
        let dir = g.dir.clone();
        drop(g);
        assert!(!dir.exists());
        assert!(!r.root.join("ids/2").exists());
        assert_eq!(r.claim("c", me).unwrap().id, 2);
        let _ = std::fs::remove_dir_all(&r.root);
    }

    #[test]
    fn stale_run_directories_are_swept() {
        let r = temp("sweep");
        let g = r.claim_run("guest", None).unwrap();
        let dir = g.dir.clone();
        // Its process died without cleaning up.
        std::mem::forget(g);
        std::fs::remove_file(dir.join("pid")).unwrap();
        std::fs::write(dir.join("pid"), "2147483000\n").unwrap();
        std::fs::write(dir.join("pygrub-kernel"), b"k").unwrap();
        // And an older version's directory, left empty by `create` with pygrub.
        let legacy = r.root.join("web-2147483001");
        std::fs::create_dir(&legacy).unwrap();
        // Something else is not ours to remove.
        let other = r.root.join("notes-2147483002");
        std::fs::create_dir(&other).unwrap();
        std::fs::write(other.join("todo"), b"x").unwrap();
        assert!(r.entries().is_empty());
        assert!(!dir.exists());
        assert!(!legacy.exists());
        assert!(other.exists());
        assert!(!r.root.join("ids/1").exists());
        assert_eq!(r.claim_run("guest", None).unwrap().id, 1);
        let _ = std::fs::remove_dir_all(&r.root);
    }

    #[test]
    fn run_directory_must_be_private() {
        use std::os::unix::fs::symlink;
        let r = temp("private");
        // Created 0700.
        r.ensure(&r.domains()).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().mode() & 0o777;
        assert_eq!(mode(&r.root), 0o700);
        assert_eq!(mode(&r.domains()), 0o700);
        // Readable by others: tightened.
        std::fs::set_permissions(&r.root, std::fs::Permissions::from_mode(0o755)).unwrap();
        r.check().unwrap();
        assert_eq!(mode(&r.root), 0o700);
        // Writable by others: refused.
        std::fs::set_permissions(&r.root, std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = r.check().unwrap_err();
        assert!(e.to_string().contains("other users can write"), "{e}");
        assert!(r.claim("x", std::process::id()).is_err());
        std::fs::set_permissions(&r.root, std::fs::Permissions::from_mode(0o700)).unwrap();
        // A symbolic link (e.g. planted in /tmp): refused.
        let link = RunDir::new(r.root.with_extension("link"));
        let _ = std::fs::remove_file(&link.root);
        symlink(&r.root, &link.root).unwrap();
        let e = link.ensure(&link.domains()).unwrap_err();
        assert!(e.to_string().contains("symbolic link"), "{e}");
        std::fs::remove_file(&link.root).unwrap();
        // Owned by someone else: refused (only root can set that up).
        if euid() == 0 {
            let theirs = RunDir::new(r.root.with_extension("theirs"));
            let _ = std::fs::remove_dir_all(&theirs.root);
            DirBuilder::new().mode(0o700).create(&theirs.root).unwrap();
            std::os::unix::fs::chown(&theirs.root, Some(65534), Some(65534)).unwrap();
            let e = theirs.check().unwrap_err();
            assert!(e.to_string().contains("owned by uid 65534"), "{e}");
            assert!(theirs.claim("x", std::process::id()).is_err());
            let _ = std::fs::remove_dir_all(&theirs.root);
        }
        let _ = std::fs::remove_dir_all(&r.root);
    }

    #[test]
    fn private_files_are_0600_new_and_never_through_a_link() {
        use std::os::unix::fs::symlink;
        let r = temp("files");
        r.ensure(&r.root).unwrap();
        let f = r.root.join("pid");
        write_private(&f, b"1\n").unwrap();
        assert_eq!(std::fs::metadata(&f).unwrap().mode() & 0o777, 0o600);
        // Never over an existing file.
        assert!(write_private(&f, b"2\n").is_err());
        // Never through a symbolic link (to a file that exists or not).
        let target = r.root.join("target");
        let link = r.root.join("link");
        symlink(&target, &link).unwrap();
        assert!(write_private(&link, b"x").is_err());
        assert!(!target.exists());
        std::fs::write(&target, b"keep").unwrap();
        assert!(write_private(&link, b"x").is_err());
        assert_eq!(std::fs::read(&target).unwrap(), b"keep");
        let _ = std::fs::remove_dir_all(&r.root);
    }
}

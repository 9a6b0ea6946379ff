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
//! ```
//!
//! A name is claimed by renaming a private directory that already holds the
//! pid file onto `domains/<name>` (atomic; fails if the name exists), an
//! id by creating `ids/<id>` with `O_EXCL` (lowest free id >= 1). Entries
//! whose monitor is dead are removed by whoever notices first.

use std::io::Write;
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

    fn mkdirs(&self) -> Result<(), RegistryError> {
        for d in [self.domains(), self.ids(), self.staging()] {
            std::fs::create_dir_all(&d).map_err(io(&d))?;
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
        std::fs::create_dir(&tmp).map_err(io(&tmp))?;
        std::fs::write(tmp.join("pid"), format!("{pid}\n")).map_err(io(&tmp))?;
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
        match self.claim_id(name) {
            Ok(id) => {
                let _ = std::fs::write(dir.join("domid"), format!("{id}\n"));
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

    fn claim_id(&self, name: &str) -> Result<u32, RegistryError> {
        let ids = self.ids();
        let mut id = 1;
        while id <= MAX_DOMID {
            let p = ids.join(id.to_string());
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&p)
            {
                Ok(mut f) => {
                    let _ = writeln!(f, "{name}");
                    return Ok(id);
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    if self.id_is_stale(id) {
                        let _ = std::fs::remove_file(&p);
                        continue;
                    }
                    id += 1;
                }
                Err(e) => return Err(io(&p)(e)),
            }
        }
        Err(RegistryError::NoIds)
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
        let Some(e) = Entry::load(self.domains().join(holder)) else {
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
}

//! What the host and the monitor can run, checked against a parsed config
//! so that the error names the file, line and key the user wrote.

use super::{DomainConfig, RawConfig, XlCfgError};

/// The limits a config is checked against ([`DomainConfig::check_limits`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// vCPUs per domain the monitor supports.
    pub max_vcpus: u32,
    /// The least memory a guest can boot with, MiB.
    pub min_memory_mib: u64,
    /// The host's memory (MemTotal), MiB.
    pub host_memory_mib: u64,
}

impl DomainConfig {
    /// Refuse what `limits` cannot run; the error points at the setting
    /// (or, for a default, at the end of the file).
    pub fn check_limits(&self, raw: &RawConfig, limits: &Limits) -> Result<(), XlCfgError> {
        let err = |keys: &[&str], msg: String| match keys.iter().find_map(|k| raw.get(k)) {
            Some(s) => XlCfgError::BadValue {
                file: s.file.clone(),
                line: s.line,
                key: s.key.clone(),
                msg,
            },
            None => XlCfgError::Missing {
                file: raw.file.clone(),
                line: raw.end_line,
                key: keys[0].to_string(),
                msg,
            },
        };
        let host = limits.host_memory_mib;
        if self.memory_mib < limits.min_memory_mib {
            let set = if raw.get("memory").or(raw.get("maxmem")).is_some() {
                ""
            } else {
                " (the default; set `memory`)"
            };
            return Err(err(
                &["memory", "maxmem"],
                format!(
                    "{} MiB{set} is too little for a PV guest (at least {} MiB)",
                    self.memory_mib, limits.min_memory_mib
                ),
            ));
        }
        if self.memory_mib > host {
            return Err(err(
                &["memory", "maxmem"],
                format!(
                    "{} MiB is more than this host's memory ({host} MiB)",
                    self.memory_mib
                ),
            ));
        }
        if self.maxmem_mib > host {
            return Err(err(
                &["maxmem", "memory"],
                format!(
                    "{} MiB is more than this host's memory ({host} MiB)",
                    self.maxmem_mib
                ),
            ));
        }
        if self.vcpus > limits.max_vcpus {
            return Err(err(
                &["vcpus"],
                format!(
                    "{} vCPUs: xenkvm runs at most {} vCPUs per domain",
                    self.vcpus, limits.max_vcpus
                ),
            ));
        }
        Ok(())
    }
}

/// Parses `text`, applies `overrides`, builds the domain config and checks
/// it against `limits`.
pub fn load_checked(
    text: &str,
    file: &str,
    overrides: &[String],
    limits: &Limits,
) -> Result<(DomainConfig, Vec<super::Warning>), XlCfgError> {
    let mut raw = super::parse_str(text, file)?;
    super::apply_overrides(&mut raw, overrides)?;
    let (cfg, warnings) = DomainConfig::from_raw(&raw)?;
    cfg.check_limits(&raw, limits)?;
    Ok((cfg, warnings))
}

#[cfg(test)]
mod tests {
    use super::*;

    const L: Limits = Limits {
        max_vcpus: 15,
        min_memory_mib: 64,
        host_memory_mib: 24 * 1024,
    };

    fn check(text: &str, overrides: &[&str]) -> Result<DomainConfig, String> {
        let ov: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
        load_checked(text, "web02.cfg", &ov, &L)
            .map(|(c, _)| c)
            .map_err(|e| e.to_string())
    }

    const BASE: &str = "name = 'web02'\nkernel = '/k'\n";

    #[test]
    fn memory_is_checked_against_the_host() {
        assert_eq!(
            check(&format!("{BASE}memory = 100000\n"), &[]).unwrap_err(),
            "web02.cfg:3: memory: 100000 MiB is more than this host's memory (24576 MiB)"
        );
        assert_eq!(
            check(&format!("{BASE}memory = 1\n"), &[]).unwrap_err(),
            "web02.cfg:3: memory: 1 MiB is too little for a PV guest (at least 64 MiB)"
        );
        assert_eq!(
            check(&format!("{BASE}memory = 1G\nmaxmem = 32G\n"), &[]).unwrap_err(),
            "web02.cfg:4: maxmem: 32768 MiB is more than this host's memory (24576 MiB)"
        );
        assert_eq!(
            check(BASE, &[]).unwrap_err(),
            "web02.cfg:2: memory: 32 MiB (the default; set `memory`) is too little for a PV guest (at least 64 MiB)"
        );
        // An override is named as such.
        assert_eq!(
            check(&format!("{BASE}memory = 512\n"), &["memory=30G"]).unwrap_err(),
            "command line:1: memory: 30720 MiB is more than this host's memory (24576 MiB)"
        );
        let c = check(&format!("{BASE}memory = 24G\n"), &[]).unwrap();
        assert_eq!(c.memory_mib, 24576);
        let c = check(&format!("{BASE}memory = 64\n"), &[]).unwrap();
        assert_eq!(c.memory_mib, 64);
    }

    #[test]
    fn vcpus_name_the_limit() {
        assert_eq!(
            check(&format!("{BASE}memory = 512\nvcpus = 64\n"), &[]).unwrap_err(),
            "web02.cfg:4: vcpus: 64 vCPUs: xenkvm runs at most 15 vCPUs per domain"
        );
        assert_eq!(
            check(&format!("{BASE}memory = 512\nvcpus = 15\n"), &[])
                .unwrap()
                .vcpus,
            15
        );
    }
}

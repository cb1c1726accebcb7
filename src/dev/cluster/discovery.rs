//! What the machine offers a throwaway cluster: the directory of the PostgreSQL server
//! programs, and the OS user to run them as when we are root.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::OS_USER;
use super::error::{ClusterError, io_error};

const SERVER_PROGRAMS: [&str; 3] = ["initdb", "pg_ctl", "postgres"];

/// Finds the directory holding `initdb`, `pg_ctl` and `postgres`: `PG_BIN` if set (and
/// then only there), else the real directory of the `pg_ctl` on `PATH`, else the highest
/// version under `/usr/lib/postgresql/*/bin`. `dev`, the tests and CI share this search.
pub fn find_bin_dir() -> Result<PathBuf, ClusterError> {
    search_bin_dir(
        std::env::var_os("PG_BIN").map(PathBuf::from),
        std::env::var_os("PATH"),
        Path::new("/usr/lib/postgresql"),
    )
}

fn search_bin_dir(
    pg_bin: Option<PathBuf>,
    path: Option<std::ffi::OsString>,
    lib_root: &Path,
) -> Result<PathBuf, ClusterError> {
    // An explicit PG_BIN that is wrong must be reported, not silently replaced.
    if let Some(dir) = pg_bin {
        return match has_server_programs(&dir) {
            true => Ok(dir),
            false => Err(ClusterError::BinariesNotFound {
                searched: format!("PG_BIN={}", dir.display()),
            }),
        };
    }
    for dir in std::env::split_paths(&path.unwrap_or_default()) {
        // Debian puts symlinks (or pg_wrapper) on PATH; the real directory also holds
        // pgbench and psql of the same version.
        if let Ok(real) = fs::canonicalize(dir.join("pg_ctl")) {
            match real.parent() {
                Some(parent) if has_server_programs(parent) => return Ok(parent.to_path_buf()),
                _ if has_server_programs(&dir) => return Ok(dir),
                _ => {}
            }
        }
    }
    let mut versions: Vec<(Vec<u32>, PathBuf)> = fs::read_dir(lib_root)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let key = version_key(&entry.file_name().to_string_lossy())?;
            Some((key, entry.path().join("bin")))
        })
        .filter(|(_, bin)| has_server_programs(bin))
        .collect();
    versions.sort();
    versions
        .pop()
        .map(|(_, bin)| bin)
        .ok_or_else(|| ClusterError::BinariesNotFound {
            searched: format!("PG_BIN (unset), PATH, {}/*/bin", lib_root.display()),
        })
}

fn has_server_programs(dir: &Path) -> bool {
    SERVER_PROGRAMS.iter().all(|p| dir.join(p).is_file())
}

/// "15" → [15], "9.6" → [9, 6]; anything else is not a version directory.
pub(super) fn version_key(name: &str) -> Option<Vec<u32>> {
    name.split('.').map(|part| part.parse().ok()).collect()
}

/// The OS identity PostgreSQL programs run as when we are root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct RunAs {
    pub(super) uid: u32,
    pub(super) gid: u32,
}

pub(super) fn run_as() -> Result<Option<RunAs>, ClusterError> {
    // /proc/self belongs to our effective uid: root detection without libc or unsafe.
    let root = match fs::metadata("/proc/self") {
        Ok(meta) => meta.uid() == 0,
        Err(_) => Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|out| out.stdout.trim_ascii() == b"0"),
    };
    if !root {
        return Ok(None);
    }
    let passwd = fs::read_to_string("/etc/passwd").map_err(io_error("read /etc/passwd"))?;
    lookup_user(&passwd, OS_USER)
        .map(Some)
        .ok_or(ClusterError::NoPostgresUser)
}

fn lookup_user(passwd: &str, name: &str) -> Option<RunAs> {
    passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        if fields.next()? != name {
            return None;
        }
        let uid = fields.nth(1)?.parse().ok()?;
        let gid = fields.next()?.parse().ok()?;
        Some(RunAs { uid, gid })
    })
}

#[cfg(test)]
mod tests {
    use rand::distr::{Alphanumeric, SampleString};

    use super::*;
    use crate::dev::cluster::INSTALL_HINT;

    /// A scratch directory under the temp dir, unique per test.
    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "pglease-cluster-test-{name}-{}-{}",
            std::process::id(),
            Alphanumeric.sample_string(&mut rand::rng(), 6)
        ));
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn fake_bin(dir: &Path, programs: &[&str]) {
        fs::create_dir_all(dir).unwrap();
        for program in programs {
            fs::write(dir.join(program), "").unwrap();
        }
    }

    #[test]
    fn pg_bin_wins_and_a_wrong_one_is_reported_with_the_install_hint() {
        let root = scratch("pgbin");
        fake_bin(&root.join("good"), &SERVER_PROGRAMS);
        fake_bin(&root.join("bad"), &["initdb", "pg_ctl"]);
        let found = search_bin_dir(Some(root.join("good")), None, &root).unwrap();
        assert_eq!(found, root.join("good"));
        // A wrong PG_BIN is an error even though PATH or lib_root might have worked.
        fake_bin(&root.join("15/bin"), &SERVER_PROGRAMS);
        let err = search_bin_dir(Some(root.join("bad")), None, &root).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("PG_BIN="), "{text}");
        assert!(text.contains("apt-get install postgresql"), "{text}");
        fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn path_symlink_resolves_to_the_real_bin_dir() {
        let root = scratch("path");
        let real = root.join("lib/16/bin");
        fake_bin(&real, &SERVER_PROGRAMS);
        let links = root.join("links");
        fs::create_dir_all(&links).unwrap();
        std::os::unix::fs::symlink(real.join("pg_ctl"), links.join("pg_ctl")).unwrap();
        let path = std::env::join_paths([root.join("empty"), links]).unwrap();
        let found = search_bin_dir(None, Some(path), &root.join("nowhere")).unwrap();
        assert_eq!(found, fs::canonicalize(&real).unwrap());
        fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn highest_complete_version_is_chosen() {
        let root = scratch("versions");
        fake_bin(&root.join("9.6/bin"), &SERVER_PROGRAMS);
        fake_bin(&root.join("10/bin"), &SERVER_PROGRAMS);
        fake_bin(&root.join("17/bin"), &["pg_ctl"]);
        fake_bin(&root.join("notes/bin"), &SERVER_PROGRAMS);
        let found = search_bin_dir(None, None, &root).unwrap();
        assert_eq!(found, root.join("10/bin"));
        fs::remove_dir_all(&root).unwrap();
        let err = search_bin_dir(None, None, &root).unwrap_err();
        assert!(err.to_string().contains(INSTALL_HINT), "{err}");
    }

    #[test]
    fn passwd_lookup_reads_uid_and_gid() {
        let passwd = "root:x:0:0:root:/root:/bin/bash\n\
                      postgresql:x:7:7::/:/bin/false\n\
                      postgres:x:101:104:PostgreSQL administrator:/var/lib/postgresql:/bin/bash\n";
        let user = lookup_user(passwd, "postgres");
        assert_eq!(user, Some(RunAs { uid: 101, gid: 104 }));
        assert_eq!(
            lookup_user("postgres:x:bad:1::/:/bin/sh\n", "postgres"),
            None
        );
        assert_eq!(lookup_user(passwd, "nobody"), None);
    }
}

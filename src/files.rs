//! Files that hold secrets (the database with its SCRAM keys, private keys, the admin socket)
//! are created private whatever the umask: directories 0700, files 0600. `starling check`
//! and `serve` warn about existing ones that other users can read.

use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::config::Config;

/// Create `dir` (and missing parents) with mode 0700. An existing directory is left as it
/// is: the administrator may have chosen its mode.
pub fn private_dir(dir: &Path) -> io::Result<()> {
    if dir.as_os_str().is_empty() || dir.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    // The umask may have taken bits from the owner as well: set the mode exactly.
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

/// Create an empty file with mode 0600 unless it exists. Returns whether it was created.
pub fn private_file(path: &Path) -> io::Result<bool> {
    match std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path) {
        Ok(_) => {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
            Ok(true)
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(e),
    }
}

/// The permission bits of a path, if it exists.
fn mode(path: &Path) -> Option<u32> {
    std::fs::metadata(path).ok().map(|m| m.permissions().mode() & 0o7777)
}

/// One warning per existing file or directory holding secrets that other users may read
/// (or, for configured certificate keys, that everyone may read: a group such as ssl-cert
/// is a common, deliberate setup).
pub fn loose_permissions(config: &Config) -> Vec<String> {
    let mut warnings = Vec::new();
    let mut check = |path: PathBuf, what: &str, mask: u32, fix: u32| {
        if let Some(m) = mode(&path)
            && m & mask != 0
        {
            warnings.push(format!(
                "{what} {} has mode {m:04o}: other users can read it (chmod {fix:o} {})",
                path.display(),
                path.display()
            ));
        }
    };
    check(config.data_dir.clone(), "data_dir", 0o077, 0o700);
    if let Some(db) = config.sqlite_path() {
        if let Some(dir) = db.parent().filter(|d| !d.as_os_str().is_empty() && *d != config.data_dir) {
            check(dir.to_path_buf(), "the database directory", 0o077, 0o700);
        }
        for suffix in ["", "-wal", "-shm"] {
            let mut name = db.clone().into_os_string();
            name.push(suffix);
            check(PathBuf::from(name), "the database file", 0o077, 0o600);
        }
    }
    let certs = config.data_dir.join("certs");
    check(certs.clone(), "the certificate directory", 0o077, 0o700);
    if let Ok(entries) = std::fs::read_dir(&certs) {
        let mut keys: Vec<PathBuf> =
            entries.filter_map(|e| e.ok()).map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "key")).collect();
        keys.sort();
        for key in keys {
            check(key, "the private key", 0o077, 0o600);
        }
    }
    let configured = config.tls.key.iter().chain(config.tls.domains.values().map(|p| &p.key));
    for key in configured {
        check(key.clone(), "the private key", 0o007, 0o640);
    }
    warnings
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Created private under the usual umask 022, which would give 0755 and 0644.
    #[test]
    fn created_private_and_loose_modes_reported() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("a/data");
        private_dir(&data).unwrap();
        assert_eq!(mode(&data), Some(0o700));
        let file = data.join("f");
        assert!(private_file(&file).unwrap());
        assert!(!private_file(&file).unwrap());
        assert_eq!(mode(&file), Some(0o600));

        let mut config = Config::defaults_here();
        config.data_dir = data.clone();
        assert!(loose_permissions(&config).is_empty());
        std::fs::write(data.join("starling.db"), "").unwrap();
        std::fs::set_permissions(data.join("starling.db"), std::fs::Permissions::from_mode(0o644)).unwrap();
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
        let warnings = loose_permissions(&config);
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(warnings[0].starts_with("data_dir ") && warnings[0].contains("mode 0755"), "{warnings:?}");
        assert!(warnings[1].contains("starling.db has mode 0644") && warnings[1].contains("chmod 600"), "{warnings:?}");
    }
}

//! The data directory is private to its owner: it holds every policy key, every device key and
//! the CA's private key (in `hub.json`, `ca-key.pem`, and in `hub.db` and its write-ahead log).
//!
//! On Unix the directory is made `0700` and every file in it `0600`; a directory or file found
//! with wider permissions is tightened, with a warning. SQLite creates its `-wal` and `-shm`
//! files with the permissions of their database file, so the databases are created here,
//! empty and `0600`, before SQLite opens them: the files it makes later are private too.

use std::path::Path;

use crate::dps::DPS_DB_FILE;
use crate::store::DB_FILE;
use crate::telemetry::TELEMETRY_DB_FILE;

/// Creates `dir` if needed and makes it and everything in it private to the owner; with
/// `databases`, creates the (empty) database files too.
pub(crate) fn prepare(dir: &Path, databases: bool) -> std::io::Result<()> {
    #[cfg(not(unix))]
    std::fs::create_dir_all(dir)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
        // Created private (parents too), so a new directory is never reported as widened.
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
        tighten(dir, 0o700)?;
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            if entry.file_type()?.is_file() {
                tighten(&entry.path(), 0o600)?;
            }
        }
        for name in [DB_FILE, TELEMETRY_DB_FILE, DPS_DB_FILE]
            .into_iter()
            .filter(|_| databases)
        {
            let path = dir.join(name);
            if !path.exists() {
                std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&path)?;
            }
        }
        fn tighten(path: &Path, mode: u32) -> std::io::Result<()> {
            let current = std::fs::metadata(path)?.permissions().mode() & 0o777;
            if current & !mode != 0 {
                tracing::warn!(
                    path = %path.display(),
                    "was readable by others ({current:o}); now {mode:o}: it holds keys"
                );
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
            }
            Ok(())
        }
    }
    Ok(())
}

#[cfg(test)]
#[cfg(unix)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn a_wide_directory_and_its_files_are_tightened_and_databases_precreated() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("data");
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(dir.join("old.txt"), "x").unwrap();
        std::fs::set_permissions(dir.join("old.txt"), std::fs::Permissions::from_mode(0o644))
            .unwrap();
        prepare(&dir, true).unwrap();
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join("old.txt")), 0o600);
        assert_eq!(mode(&dir.join(DB_FILE)), 0o600);
        assert_eq!(mode(&dir.join(TELEMETRY_DB_FILE)), 0o600);
        assert_eq!(mode(&dir.join(DPS_DB_FILE)), 0o600);
    }
}

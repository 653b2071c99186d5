//! The pipeline's state dir: pseudonymous, private to the user running logveil (0700), and
//! used by one run at a time. Spill, visit logs, the privacy ledger, the input manifest and
//! publications to an object store that are still under way live here; none of it is ever
//! published.

use std::fs::File;
use std::io;
use std::path::Path;

/// Creates `dir` and any missing parents, mode 0700, and makes an existing `dir` 0700 too.
pub fn private_dir(dir: &Path) -> io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// Held for a whole run: two runs never share a state dir (its visit logs, ledger and
/// manifest are read, then rewritten). The operating system releases it when the process
/// ends, however it ends, so a killed run never blocks the next one.
pub struct StateLock {
    _file: File,
}

#[derive(Debug, thiserror::Error)]
pub enum StateLockError {
    #[error(
        "another logveil run is using the state dir {0}; runs of one pipeline never interleave: wait for it to end"
    )]
    Busy(String),
    #[error("cannot use the state dir {path}: {source}")]
    Io { path: String, source: io::Error },
}

pub fn lock(state_dir: &Path) -> Result<StateLock, StateLockError> {
    let io_err = |source| StateLockError::Io {
        path: state_dir.display().to_string(),
        source,
    };
    private_dir(state_dir).map_err(io_err)?;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(state_dir.join("run.lock"))
        .map_err(io_err)?;
    match file.try_lock() {
        Ok(()) => Ok(StateLock { _file: file }),
        Err(std::fs::TryLockError::WouldBlock) => {
            Err(StateLockError::Busy(state_dir.display().to_string()))
        }
        Err(std::fs::TryLockError::Error(e)) => Err(io_err(e)),
    }
}

/// Names this state dir in an object store's run lock: a random id kept in the state dir
/// (`holder`, 0600), made on first use. Random, not derived from the host name and path, so
/// two machines (or containers) that look alike never take each other's live lock.
pub fn holder(state_dir: &Path) -> io::Result<String> {
    let path = state_dir.join("holder");
    if let Ok(id) = std::fs::read_to_string(&path)
        && id.trim().len() == 32
    {
        return Ok(id.trim().to_string());
    }
    private_dir(state_dir)?;
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|e| io::Error::other(e.to_string()))?;
    let id: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    std::io::Write::write_all(&mut options.open(&path)?, id.as_bytes())?;
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_one_state_dir_is_refused_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let first = lock(&state).unwrap();
        assert!(matches!(lock(&state), Err(StateLockError::Busy(_))));
        drop(first);
        assert!(lock(&state).is_ok());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&state).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o700);
        }
        let id = holder(&state).unwrap();
        assert_eq!(id.len(), 32);
        assert_eq!(holder(&state).unwrap(), id, "kept in the state dir");
        assert_ne!(holder(&dir.path().join("other")).unwrap(), id);
    }
}

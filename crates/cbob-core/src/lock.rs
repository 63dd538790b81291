//! Run locks: OS advisory locks (`flock`) on files under `$CBOB_BASE_PATH/locks/`, one per command
//! kind and destination. The kernel releases a lock when its holder dies, so a crashed run never
//! leaves a stale lock; the file keeps the holder's PID so a second run can name it.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

/// Why a lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "another cbob {kind} run (PID {pid}) holds the lock {path}; wait for it to finish or use --no-lock if you are sure"
    )]
    Held {
        kind: String,
        pid: String,
        path: PathBuf,
    },
    #[error("cannot create or open the lock file {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A held lock; released when dropped (or when the process dies).
#[derive(Debug)]
pub struct RunLock {
    file: File,
    path: PathBuf,
}

impl RunLock {
    /// Takes the lock for `kind` (e.g. `sync`) and `destination` (any stable description) under
    /// `base/locks/`, without waiting.
    pub fn acquire(base: &Path, kind: &str, destination: &str) -> Result<Self, LockError> {
        let dir = base.join("locks");
        std::fs::create_dir_all(&dir).map_err(|source| LockError::Io {
            path: dir.clone(),
            source,
        })?;
        let path = dir.join(format!("{kind}-{}.lock", short_hash(destination)));
        let io = |source| LockError::Io {
            path: path.clone(),
            source,
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        // SAFETY: flock on a valid, owned descriptor.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
                let mut pid = String::new();
                let _ = file.read_to_string(&mut pid);
                let pid = pid.lines().next().unwrap_or("").trim().to_string();
                return Err(LockError::Held {
                    kind: kind.to_string(),
                    pid: if pid.is_empty() {
                        "unknown".into()
                    } else {
                        pid
                    },
                    path,
                });
            }
            return Err(io(e));
        }
        file.set_len(0).map_err(io)?;
        file.seek(SeekFrom::Start(0)).map_err(io)?;
        writeln!(file, "{}\n{kind} {destination}", std::process::id()).map_err(io)?;
        Ok(Self { file, path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for RunLock {
    fn drop(&mut self) {
        // Closing the descriptor releases the lock; unlock explicitly for clarity.
        unsafe { libc::flock(self.file.as_raw_fd(), libc::LOCK_UN) };
    }
}

/// A stable, short, file-name-safe digest of a destination description.
fn short_hash(s: &str) -> String {
    use sha1::{Digest, Sha1};
    hex::encode(&Sha1::digest(s.as_bytes())[..6])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_holder_is_refused_with_the_pid_and_released_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let a = RunLock::acquire(dir.path(), "sync", "local:/x").unwrap();
        match RunLock::acquire(dir.path(), "sync", "local:/x") {
            Err(LockError::Held { pid, .. }) => assert_eq!(pid, std::process::id().to_string()),
            other => panic!("expected Held, got {other:?}"),
        }
        // Another destination or another command is independent.
        let _b = RunLock::acquire(dir.path(), "sync", "local:/y").unwrap();
        let _c = RunLock::acquire(dir.path(), "restore-check", "local:/x").unwrap();
        drop(a);
        RunLock::acquire(dir.path(), "sync", "local:/x").unwrap();
    }
}

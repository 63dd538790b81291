//! Finished copies are deleted at the end of the bench, not between samples.
//!
//! Deleting a 21,000-file copy right before the next sample made that sample pay for it: on an
//! ext4 filesystem without a journal (this VM's root), inode allocation skips inodes freed in
//! the last 30 s to 3 min (`recently_deleted` in the kernel), and each skipped candidate costs a
//! read of the inode table. Measured here: rclone's cold copy of the small repository took
//! 6.4–7.1 s of system time right after a deletion and 1.9–2.3 s without one; cbob's 7.8 s against
//! 2.9 s. Whichever tool ran after a deletion lost, so the bench keeps every copy until it ends,
//! unless the disk runs short.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::Result;

/// Space left free on the disk after the next sample's copy, beyond the copy itself.
const MARGIN_BYTES: u64 = 2 << 30;

#[derive(Default)]
pub struct Spent {
    dirs: Vec<PathBuf>,
}

impl Spent {
    /// Keeps `dir` (a finished sample) until the bench ends.
    pub fn keep(&mut self, dir: &Path) {
        self.dirs.push(dir.to_path_buf());
    }

    /// Before a sample that writes about `bytes` under `base`: deletes the kept copies when the
    /// disk could not hold one more (and says so: the next sample then runs after a deletion).
    pub fn make_room(&mut self, base: &Path, bytes: u64) -> Result<()> {
        if self.dirs.is_empty() || free_bytes(base)? >= bytes.saturating_add(MARGIN_BYTES) {
            return Ok(());
        }
        eprintln!(
            "bench: disk nearly full: deleting {} finished copies now (the next sample runs right after a deletion, see bench/spent.rs)",
            self.dirs.len()
        );
        self.clear()
    }

    /// Deletes every kept copy.
    pub fn clear(&mut self) -> Result<()> {
        for d in self.dirs.drain(..) {
            fs::remove_dir_all(&d)?;
        }
        Ok(())
    }
}

/// Bytes available to an unprivileged writer on the filesystem holding `path`.
fn free_bytes(path: &Path) -> Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())?;
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid C string and `s` a writable statvfs.
    if unsafe { libc::statvfs(c.as_ptr(), &mut s) } != 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    Ok(s.f_bavail as u64 * s.f_frsize as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_are_kept_until_the_disk_runs_short() {
        let tmp = tempfile::tempdir().unwrap();
        let a = tmp.path().join("a");
        fs::create_dir_all(a.join("x")).unwrap();
        let mut spent = Spent::default();
        spent.keep(&a);
        spent.make_room(tmp.path(), 1).unwrap();
        assert!(a.exists(), "kept while there is room");
        spent.make_room(tmp.path(), u64::MAX / 2).unwrap();
        assert!(!a.exists(), "deleted when the next copy would not fit");
        assert!(spent.dirs.is_empty());
    }
}

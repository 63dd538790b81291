//! The OS user PostgreSQL programs run as, and whether it can reach the directories it needs.
//!
//! As root, programs run as `postgres` (PostgreSQL refuses root; Debian's `postgresql-<v>`
//! package creates that user). As any other user they run as that user, so nothing here applies.
//! `Command::uid/gid` also drops supplementary groups, so only the primary group counts when
//! deciding whether the user can reach a path.

use std::ffi::{CStr, CString};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use super::error::PgError;

/// The user PostgreSQL programs run as when cbob runs as root.
pub const PG_OS_USER: &str = "postgres";

/// An OS user: name, uid and primary gid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OsUser {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

/// Whether this process runs as root.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Looks a user up in the password database.
pub fn lookup_user(name: &str) -> Option<OsUser> {
    let cname = CString::new(name).ok()?;
    let mut buf = vec![0u8; 16 * 1024];
    // SAFETY: passwd is plain data; getpwnam_r fills it and points into `buf`, which outlives
    // every read below.
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    let rc = unsafe {
        libc::getpwnam_r(
            cname.as_ptr(),
            &mut pwd,
            buf.as_mut_ptr().cast(),
            buf.len(),
            &mut result,
        )
    };
    if rc != 0 || result.is_null() {
        return None;
    }
    // SAFETY: pw_name is a NUL-terminated string inside `buf`.
    let name = unsafe { CStr::from_ptr(pwd.pw_name) }
        .to_string_lossy()
        .into_owned();
    Some(OsUser {
        name,
        uid: pwd.pw_uid,
        gid: pwd.pw_gid,
    })
}

/// The user PostgreSQL programs run as: `None` (ourselves) unless we are root, then `postgres`.
/// `version` (when known) names the package that creates the user in the error.
pub fn pg_os_user(version: Option<&str>) -> Result<Option<OsUser>, PgError> {
    if !is_root() {
        return Ok(None);
    }
    lookup_user(PG_OS_USER)
        .map(Some)
        .ok_or_else(|| PgError::MissingProgram {
            program: format!("the `{PG_OS_USER}` OS user"),
            looked: "cbob runs as root and PostgreSQL refuses to run as root".into(),
            fix: format!(
                "install {} (it creates the user), or create a system user `{PG_OS_USER}`",
                super::programs::debian_package(version.unwrap_or("<version>"))
            ),
        })
}

/// Gives `path` to `user` (no-op for `None`).
pub fn chown(path: &Path, user: Option<&OsUser>) -> Result<(), PgError> {
    if let Some(u) = user {
        std::os::unix::fs::lchown(path, Some(u.uid), Some(u.gid))
            .map_err(|e| PgError::io("cannot give to the postgres user", path, e))?;
    }
    Ok(())
}

/// Gives `root` and everything below it to `user` (no-op for `None`).
pub fn chown_tree(root: &Path, user: Option<&OsUser>) -> Result<(), PgError> {
    if user.is_none() {
        return Ok(());
    }
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        chown(&p, user)?;
        let md = p
            .symlink_metadata()
            .map_err(|e| PgError::io("cannot stat", &p, e))?;
        if md.is_dir() {
            for e in std::fs::read_dir(&p).map_err(|e| PgError::io("cannot read", &p, e))? {
                stack.push(e.map_err(|e| PgError::io("cannot read", &p, e))?.path());
            }
        }
    }
    Ok(())
}

/// Which permission bits of `md` apply to `user`: owner, group or other (shifted to `rwx`).
fn bits_for(md: &std::fs::Metadata, user: &OsUser) -> u32 {
    let mode = md.mode();
    if md.uid() == user.uid {
        (mode >> 6) & 7
    } else if md.gid() == user.gid {
        (mode >> 3) & 7
    } else {
        mode & 7
    }
}

/// Whether `user` may read the file described by `md`.
pub fn can_read(md: &std::fs::Metadata, user: &OsUser) -> bool {
    bits_for(md, user) & 4 != 0
}

/// Whether `user` may search (traverse) and list the directory described by `md`.
pub fn can_enter(md: &std::fs::Metadata, user: &OsUser) -> bool {
    bits_for(md, user) & 5 == 5
}

/// Checks that `user` can traverse every directory from `/` down to `dir` (inclusive).
pub fn check_reachable(dir: &Path, user: Option<&OsUser>) -> Result<(), PgError> {
    let Some(user) = user else { return Ok(()) };
    let mut path = std::path::PathBuf::new();
    for comp in dir.components() {
        path.push(comp);
        let md = path
            .metadata()
            .map_err(|e| PgError::io("cannot stat", &path, e))?;
        if md.is_dir() && bits_for(&md, user) & 1 == 0 {
            return Err(PgError::Permission(format!(
                "the `{}` user (which runs PostgreSQL) cannot reach {}: directory {} (mode {:o}, owner uid {}) is not searchable by it; \
                 fix: `chmod o+x {}`, or set CBOB_BASE_PATH to a directory it can reach",
                user.name,
                dir.display(),
                path.display(),
                md.mode() & 0o7777,
                md.uid(),
                path.display()
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_user_exists() {
        let root = lookup_user("root").expect("root in /etc/passwd");
        assert_eq!((root.uid, root.gid), (0, 0));
        assert!(lookup_user("no-such-user-cbob").is_none());
    }

    #[test]
    fn reachability_names_the_blocking_directory() {
        let nobody = OsUser {
            name: "nobody-test".into(),
            uid: 65534,
            gid: 65534,
        };
        let dir = std::env::temp_dir().join(format!("cbob-reach-{}", std::process::id()));
        let inner = dir.join("inner");
        std::fs::create_dir_all(&inner).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        let err = check_reachable(&inner, Some(&nobody))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&format!("chmod o+x {}", dir.display())),
            "{err}"
        );
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o711)).unwrap();
        check_reachable(&inner, Some(&nobody)).unwrap();
        check_reachable(&inner, None).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

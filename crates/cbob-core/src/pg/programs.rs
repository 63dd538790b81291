//! Finding pgBackRest and the PostgreSQL binaries of the major version a stanza needs.
//!
//! A restore needs the PostgreSQL major version the backup was taken with (`db-version` in
//! `backup.info`); binaries of another major cannot start the cluster. Search order:
//! `CBOB_PG_BIN_DIR` when set (its version is checked), then the Debian layout
//! `/usr/lib/postgresql/<v>/bin`, the PGDG RPM layout `/usr/pgsql-<v>/bin`, then `postgres` on
//! `PATH` if it is that version. A miss is [`PgError::MissingProgram`] naming the package.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::error::PgError;

/// The PostgreSQL programs restore-check runs.
pub const CHECK_PROGRAMS: &[&str] = &[
    "postgres",
    "psql",
    "pg_dump",
    "pg_dumpall",
    "pg_controldata",
    "pg_checksums",
];

/// The programs `cbob postgres` runs.
pub const INSTANCE_PROGRAMS: &[&str] = &["initdb", "pg_ctl", "postgres", "psql"];

/// A directory of PostgreSQL binaries of one major version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgBinaries {
    pub dir: PathBuf,
    /// Major version, as pgBackRest writes it (`"15"`, `"9.6"`).
    pub version: String,
}

impl PgBinaries {
    pub fn program(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// The major version as a number for comparisons (`9.6` → 9, `15` → 15).
    pub fn major(&self) -> u32 {
        major_number(&self.version)
    }
}

/// `15` → 15, `9.6` → 9.
pub fn major_number(version: &str) -> u32 {
    version
        .split('.')
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// The Debian package that holds the binaries of a major version.
pub fn debian_package(version: &str) -> String {
    format!("postgresql-{version}")
}

fn is_executable(p: &Path) -> bool {
    p.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// The first executable `name` on `PATH`.
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| is_executable(p))
}

/// The major version a `postgres` binary reports (`postgres (PostgreSQL) 15.18 (Debian ...)`).
pub fn binary_major_version(postgres: &Path) -> Option<String> {
    let out = Command::new(postgres).arg("--version").output().ok()?;
    parse_version_output(&String::from_utf8_lossy(&out.stdout))
}

fn parse_version_output(text: &str) -> Option<String> {
    let rest = text.split("(PostgreSQL) ").nth(1)?;
    let ver: String = rest
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    let mut parts = ver.split('.').filter(|s| !s.is_empty());
    let first: u32 = parts.next()?.parse().ok()?;
    if first >= 10 {
        Some(first.to_string())
    } else {
        Some(format!("{first}.{}", parts.next()?))
    }
}

fn programs_for(version: &str, needed: &[&str]) -> Vec<String> {
    needed
        .iter()
        // pg_checksums exists from PostgreSQL 12 on.
        .filter(|p| **p != "pg_checksums" || major_number(version) >= 12)
        .map(|p| p.to_string())
        .collect()
}

fn install_fix(version: &str) -> String {
    format!(
        "install PostgreSQL {version}: `apt-get install {}` on Debian/Ubuntu (from the PGDG apt repository \
         when the distribution lacks that version), or set CBOB_PG_BIN_DIR to its bin directory",
        debian_package(version)
    )
}

/// Finds the binaries of PostgreSQL `version` holding every program in `needed`.
pub fn find_pg_binaries(
    version: &str,
    configured: Option<&Path>,
    needed: &[&str],
) -> Result<PgBinaries, PgError> {
    let needed = programs_for(version, needed);
    let check_dir = |dir: &Path, origin: &str| -> Result<PgBinaries, PgError> {
        if let Some(missing) = needed.iter().find(|p| !is_executable(&dir.join(p))) {
            return Err(PgError::MissingProgram {
                program: format!("{missing} of PostgreSQL {version}"),
                looked: format!("{origin} {}", dir.display()),
                fix: install_fix(version),
            });
        }
        Ok(PgBinaries {
            dir: dir.to_path_buf(),
            version: version.to_string(),
        })
    };
    if let Some(dir) = configured {
        let found = binary_major_version(&dir.join("postgres"));
        if found.as_deref() != Some(version) {
            return Err(PgError::MissingProgram {
                program: format!("PostgreSQL {version}"),
                looked: match found {
                    Some(v) => format!("CBOB_PG_BIN_DIR={} holds PostgreSQL {v}", dir.display()),
                    None => format!("CBOB_PG_BIN_DIR={} has no working postgres", dir.display()),
                },
                fix: format!(
                    "install PostgreSQL {version} (`apt-get install {}` on Debian/Ubuntu) and point CBOB_PG_BIN_DIR at its bin \
                     directory (Debian: /usr/lib/postgresql/{version}/bin), or unset CBOB_PG_BIN_DIR to let cbob pick the \
                     version each stanza needs",
                    debian_package(version)
                ),
            });
        }
        return check_dir(dir, "CBOB_PG_BIN_DIR");
    }
    let standard = [
        PathBuf::from(format!("/usr/lib/postgresql/{version}/bin")),
        PathBuf::from(format!("/usr/pgsql-{version}/bin")),
    ];
    for dir in &standard {
        if is_executable(&dir.join("postgres")) {
            return check_dir(dir, "in");
        }
    }
    if let Some(dir) = which("postgres").and_then(|p| p.parent().map(Path::to_path_buf))
        && binary_major_version(&dir.join("postgres")).as_deref() == Some(version)
    {
        return check_dir(&dir, "on PATH in");
    }
    Err(PgError::MissingProgram {
        program: format!("PostgreSQL {version} binaries"),
        looked: format!(
            "looked in {}, {} and PATH",
            standard[0].display(),
            standard[1].display()
        ),
        fix: install_fix(version),
    })
}

/// The pgBackRest program: `CBOB_PGBACKREST_BIN` (a path, or a name looked up on `PATH`), else
/// `pgbackrest` on `PATH`.
pub fn find_pgbackrest(configured: Option<&Path>) -> Result<PathBuf, PgError> {
    let fix = "install pgBackRest (`apt-get install pgbackrest` on Debian/Ubuntu), or set CBOB_PGBACKREST_BIN to the program";
    match configured {
        Some(p) if p.components().count() > 1 => {
            if is_executable(p) {
                Ok(p.to_path_buf())
            } else {
                Err(PgError::MissingProgram {
                    program: "pgbackrest".into(),
                    looked: format!(
                        "CBOB_PGBACKREST_BIN={} is not an executable file",
                        p.display()
                    ),
                    fix: fix.into(),
                })
            }
        }
        other => {
            let name = other.map_or("pgbackrest".to_string(), |p| p.display().to_string());
            which(&name).ok_or_else(|| PgError::MissingProgram {
                program: name.clone(),
                looked: "not on PATH".into(),
                fix: fix.into(),
            })
        }
    }
}

/// `pgbackrest version` → `2.45`, for reports.
pub fn pgbackrest_version(pgbackrest: &Path) -> Option<String> {
    let out = Command::new(pgbackrest).arg("version").output().ok()?;
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .strip_prefix("pgBackRest ")
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_output() {
        assert_eq!(
            parse_version_output("postgres (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)\n")
                .as_deref(),
            Some("15")
        );
        assert_eq!(
            parse_version_output("postgres (PostgreSQL) 9.6.24\n").as_deref(),
            Some("9.6")
        );
        assert_eq!(
            parse_version_output("postgres (PostgreSQL) 17beta1\n").as_deref(),
            Some("17")
        );
        assert_eq!(parse_version_output("garbage"), None);
    }

    #[test]
    fn checksums_only_from_12() {
        assert!(programs_for("15", CHECK_PROGRAMS).contains(&"pg_checksums".to_string()));
        assert!(!programs_for("11", CHECK_PROGRAMS).contains(&"pg_checksums".to_string()));
    }

    #[test]
    fn missing_version_names_the_package() {
        let err = find_pg_binaries("7", None, CHECK_PROGRAMS).unwrap_err();
        assert!(err.is_missing_program());
        let msg = err.to_string();
        assert!(msg.contains("apt-get install postgresql-7"), "{msg}");
        assert!(msg.contains("/usr/lib/postgresql/7/bin"), "{msg}");
    }

    #[test]
    fn configured_dir_of_the_wrong_version_is_refused() {
        let dir = tempfile_dir();
        let err = find_pg_binaries("15", Some(&dir), CHECK_PROGRAMS).unwrap_err();
        assert!(err.is_missing_program());
        assert!(err.to_string().contains("CBOB_PG_BIN_DIR"), "{err}");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn missing_pgbackrest() {
        let err = find_pgbackrest(Some(Path::new("/nonexistent/pgbackrest"))).unwrap_err();
        assert!(err.is_missing_program());
        assert!(
            err.to_string().contains("apt-get install pgbackrest"),
            "{err}"
        );
        let err = find_pgbackrest(Some(Path::new("no-such-pgbackrest-program"))).unwrap_err();
        assert!(err.to_string().contains("not on PATH"), "{err}");
    }

    fn tempfile_dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!("cbob-pgbin-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}

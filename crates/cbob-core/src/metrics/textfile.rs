//! The Prometheus textfile: written to a temporary name in the same directory and renamed, so
//! node_exporter never reads half a file (the bash tool's metrics went through `/tmp` and `mv`,
//! not atomic across filesystems).

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::render::prometheus;
use super::snapshot::Snapshot;
use crate::state::{StateDb, StateError};

#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error("writing {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// `<base>/metrics/cbob.prom`.
pub fn textfile_path(base: &Path) -> PathBuf {
    base.join("metrics").join("cbob.prom")
}

/// Reads the state database under `base` and writes the textfile; returns its path.
pub fn write_textfile(base: &Path) -> Result<PathBuf, MetricsError> {
    let db = StateDb::open_in(base)?;
    write_textfile_from(base, &db)
}

/// Writes the textfile from an already open state database.
pub fn write_textfile_from(base: &Path, db: &StateDb) -> Result<PathBuf, MetricsError> {
    let text = prometheus(&Snapshot::collect(db)?);
    let path = textfile_path(base);
    let io = |source| MetricsError::Io {
        path: path.clone(),
        source,
    };
    let dir = path.parent().expect("metrics dir");
    fs::create_dir_all(dir).map_err(io)?;
    let tmp = dir.join(format!(".cbob.prom.{}.tmp", std::process::id()));
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o644)
            .open(&tmp)?;
        // node_exporter runs as another user: readable by all whatever the umask.
        f.set_permissions(fs::Permissions::from_mode(0o644))?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        fs::rename(&tmp, &path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(io)?;
    Ok(path)
}

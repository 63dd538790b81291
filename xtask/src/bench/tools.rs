//! The three clients, run the same way: a clean environment (no stray CBOB_*/AWS_*/RCLONE_*
//! settings, a throwaway HOME), output to a log file, wall time from spawn to exit and peak RSS
//! from `wait4`'s rusage (which also covers any children the client waited for).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use cbob_test_support::locate::which;
use cbob_test_support::s3s::{ACCESS_KEY, SECRET_KEY};

use super::repos::{Repo, walk};
use super::server::BUCKET;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum Tool {
    Cbob,
    Rclone,
    Aws,
}

impl Tool {
    pub fn name(self) -> &'static str {
        match self {
            Tool::Cbob => "cbob",
            Tool::Rclone => "rclone",
            Tool::Aws => "aws",
        }
    }
}

/// Programs found once per invocation.
pub struct Programs {
    pub cbob: PathBuf,
    pub rclone: PathBuf,
    pub aws: PathBuf,
}

impl Programs {
    /// Builds the release cbob and finds rclone and aws.
    pub fn prepare(tools: &[Tool]) -> Result<Programs> {
        let root = crate::root();
        let target_dir = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join("target"));
        // Other builds in the shared target dir (e.g. `cargo xtask dist`, which builds
        // single-cloud variants) replace target/release/cbob; the benchmark runs its own copy.
        let cbob = super::server::bench_dir().join("bin/cbob");
        if tools.contains(&Tool::Cbob) {
            eprintln!("bench: cargo build --release -p cbob-cli --features s3");
            crate::run(
                crate::cargo().current_dir(&root).args([
                    "build",
                    "--release",
                    "-p",
                    "cbob-cli",
                    "--features",
                    "s3",
                ]),
                "cargo build --release -p cbob-cli",
            )?;
            fs::create_dir_all(cbob.parent().expect("bin dir"))?;
            let _ = fs::remove_file(&cbob);
            fs::copy(target_dir.join("release/cbob"), &cbob).context("copy the cbob binary")?;
        }
        let find = |name: &str, hint: &str| {
            which(name).with_context(|| format!("{name} is not on PATH: {hint}"))
        };
        let rclone = if tools.contains(&Tool::Rclone) {
            find("rclone", "apt-get install -y rclone")?
        } else {
            PathBuf::new()
        };
        let aws = if tools.contains(&Tool::Aws) {
            resolve_shim(find("aws", "pip install awscli")?)
        } else {
            PathBuf::new()
        };
        Ok(Programs { cbob, rclone, aws })
    }
}

/// A pyenv shim costs a bash + `pyenv exec` per call; time the real script instead.
fn resolve_shim(p: PathBuf) -> PathBuf {
    if !p.to_string_lossy().contains("/shims/") {
        return p;
    }
    Command::new("pyenv")
        .args(["which", "aws"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()))
        .filter(|p| p.is_file())
        .unwrap_or(p)
}

/// Where one tool's copy of one repository goes, and its private HOME (cbob's state lives
/// there too, so the no-op resync sees the cold copy's state).
pub struct Slot {
    pub dir: PathBuf,
    pub target: PathBuf,
    home: PathBuf,
}

impl Slot {
    pub fn new(dir: &Path) -> Result<Slot> {
        let _ = fs::remove_dir_all(dir);
        let s = Slot {
            dir: dir.to_path_buf(),
            target: dir.join("copy"),
            home: dir.join("home"),
        };
        fs::create_dir_all(&s.target)?;
        fs::create_dir_all(&s.home)?;
        Ok(s)
    }
}

/// One measured run.
#[derive(Debug, Clone)]
pub struct Measured {
    pub seconds: f64,
    /// CPU time of the client (and any child it waited for), from the same rusage: on a machine
    /// whose cores the server shares, CPU seconds decide the wall time.
    pub user_seconds: f64,
    pub sys_seconds: f64,
    pub peak_rss_kib: u64,
    pub exit_code: i32,
    pub log: PathBuf,
}

/// The command that copies `s3://BUCKET/prefix/` into `slot.target`.
pub fn command(tool: Tool, p: &Programs, endpoint: &str, prefix: &str, slot: &Slot) -> Command {
    match tool {
        Tool::Cbob => {
            let mut c = cbob_command(p, endpoint, prefix, slot);
            c.arg("--target").arg(&slot.target);
            c
        }
        Tool::Rclone => {
            let mut c = Command::new(&p.rclone);
            // The trailing slash matters: without it rclone probes the key `prefix` first.
            c.args(["sync", &format!("X:{BUCKET}/{prefix}/")])
                .arg(&slot.target)
                .args(["--transfers", "16", "--checkers", "16"]);
            clean_env(&mut c, slot);
            // The remote from environment variables (reference/s3-lab.md §6); AWS_CA_BUNDLE is
            // not passed (rclone 1.60 fails with it set).
            c.env("RCLONE_CONFIG", "/dev/null");
            for (k, v) in [
                ("TYPE", "s3"),
                ("PROVIDER", "Other"),
                ("ENV_AUTH", "false"),
                ("ENDPOINT", endpoint),
                ("REGION", "us-east-1"),
                ("ACCESS_KEY_ID", ACCESS_KEY),
                ("SECRET_ACCESS_KEY", SECRET_KEY),
                ("FORCE_PATH_STYLE", "true"),
            ] {
                c.env(format!("RCLONE_CONFIG_X_{k}"), v);
            }
            c
        }
        Tool::Aws => {
            let mut c = Command::new(&p.aws);
            c.args(["s3", "sync", &format!("s3://{BUCKET}/{prefix}")])
                .arg(&slot.target)
                .args(["--endpoint-url", endpoint, "--only-show-errors"]);
            clean_env(&mut c, slot);
            c.env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
                .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
                .env("AWS_DEFAULT_REGION", "us-east-1")
                .env("AWS_CONFIG_FILE", slot.home.join("aws-config"))
                .env(
                    "AWS_SHARED_CREDENTIALS_FILE",
                    slot.home.join("aws-credentials"),
                );
            c
        }
    }
}

/// `cbob sync` from `s3://BUCKET/prefix` with 16 transfers, the source's endpoint and keys, and
/// its state in the slot's HOME; the caller adds the destination (`--target` or `CBOB_DEST_*`).
pub fn cbob_command(p: &Programs, endpoint: &str, prefix: &str, slot: &Slot) -> Command {
    let mut c = Command::new(&p.cbob);
    c.args(["sync", "--source", &format!("s3://{BUCKET}/{prefix}")])
        .args(["--transfers", "16"]);
    clean_env(&mut c, slot);
    c.env("CBOB_BASE_PATH", slot.home.join("cbob"))
        .env("CBOB_SOURCE_ENDPOINT", endpoint)
        .env("CBOB_SOURCE_ACCESS_KEY", ACCESS_KEY)
        .env("CBOB_SOURCE_SECRET_KEY", SECRET_KEY)
        .env("CBOB_SOURCE_REGION", "us-east-1");
    c
}

/// Nothing inherited but `PATH`: no stray CBOB_*/AWS_*/RCLONE_* settings, a throwaway HOME.
fn clean_env(c: &mut Command, slot: &Slot) {
    c.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("LANG", "C.UTF-8")
        .env("HOME", &slot.home)
        .stdin(Stdio::null());
}

/// Runs `cmd` to completion with output to `log`; wall time and peak RSS.
pub fn measure(mut cmd: Command, log: PathBuf) -> Result<Measured> {
    let out = fs::File::create(&log)?;
    cmd.stdout(out.try_clone()?).stderr(out);
    // Dirty pages of the previous run must not be written back on this run's clock.
    unsafe { libc::sync() };
    let t = Instant::now();
    let child = cmd
        .spawn()
        .with_context(|| format!("start {:?}", cmd.get_program()))?;
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: rusage is plain data; wait4 reaps our own child (the Child is never waited on).
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        let r = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
        if r == pid {
            break;
        }
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINTR) {
            bail!("wait4: {e}");
        }
    }
    let seconds = t.elapsed().as_secs_f64();
    let exit_code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        -libc::WTERMSIG(status)
    };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Ok(Measured {
        seconds,
        user_seconds: tv(ru.ru_utime),
        sys_seconds: tv(ru.ru_stime),
        peak_rss_kib: ru.ru_maxrss as u64,
        exit_code,
        log,
    })
}

/// Compares the copy in `target` with the source repository: same files, same sizes. `Err`
/// describes the first differences.
pub fn verify(repo: &Repo, target: &Path) -> Result<()> {
    let mut got = Vec::new();
    walk(target, target, &mut got)?;
    let got: BTreeMap<String, u64> = got
        .into_iter()
        .map(|rel| {
            let len = fs::metadata(target.join(&rel))
                .map(|m| m.len())
                .unwrap_or(0);
            (rel, len)
        })
        .collect();
    compare(repo, &got)
}

/// Compares a copy's keys and sizes (relative to the repository root) with the source
/// repository. `Err` describes the first differences.
pub fn compare(repo: &Repo, got: &BTreeMap<String, u64>) -> Result<()> {
    let mut problems = Vec::new();
    let mut bytes = 0;
    for (rel, _) in &repo.etags {
        let want = fs::metadata(repo.root.join(rel))?.len();
        match got.get(rel) {
            None => problems.push(format!("missing {rel}")),
            Some(&n) if n != want => problems.push(format!("{rel}: {n} bytes, source {want}")),
            Some(&n) => bytes += n,
        }
    }
    let known: BTreeSet<&str> = repo.etags.iter().map(|(r, _)| r.as_str()).collect();
    for rel in got.keys().filter(|k| !known.contains(k.as_str())) {
        problems.push(format!("extra {rel}"));
    }
    if !problems.is_empty() {
        let n = problems.len();
        problems.truncate(5);
        bail!(
            "copy differs from the source ({} files / {bytes} bytes matched of {} / {}); {n} problems, first: {}",
            got.len(),
            repo.files,
            repo.bytes,
            problems.join("; ")
        );
    }
    Ok(())
}

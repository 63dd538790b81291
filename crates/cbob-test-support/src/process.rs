//! Starting server processes that die with the test process.
//!
//! Each server is started once per test binary and lives in a `static`, and statics are never
//! dropped, so nothing in Rust can stop them at exit. Instead every server gets
//! `PR_SET_PDEATHSIG(SIGKILL)`: the kernel kills it when its parent goes away. PDEATHSIG fires
//! when the *thread* that forked the child exits, and libtest runs each test on a thread that
//! exits when the test ends, so children are forked from one dedicated thread that never
//! returns ([`spawn_owned`]). A second guard closes the remaining window: if the test process
//! died between `fork` and `prctl`, the child sees a different parent and exits at once.
//!
//! At a normal exit an `atexit` handler kills and reaps the servers first (no zombies) and
//! removes the process's scratch root (`$TMPDIR/cbob-test-<pid>`: logs, s3s-fs data); roots
//! left by killed processes are removed the next time a test binary starts a server.

use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How long a server may take to answer its readiness probe. Generous: CI shares 2 cores with
/// the compiler, and moto imports a lot of Python on start.
pub const READY_TIMEOUT: Duration = Duration::from_secs(60);

type Job = Box<dyn FnOnce() + Send>;

/// Runs `f` on the process-lifetime spawner thread and returns its result.
fn on_spawner_thread<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<Job>>> = OnceLock::new();
    let sender = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("cbob-test-server-spawner".into())
            // The sender lives in a static, so `recv` never fails and this thread never exits:
            // exactly what PDEATHSIG needs.
            .spawn(move || {
                while let Ok(job) = rx.recv() {
                    job();
                }
            })
            .expect("start the test-server spawner thread");
        Mutex::new(tx)
    });
    let (tx, rx) = mpsc::channel();
    sender
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .send(Box::new(move || {
            let _ = tx.send(f());
        }))
        .expect("spawner thread is alive");
    rx.recv().expect("spawner thread answered")
}

/// Spawns `cmd` so that the kernel kills it (`signal`) when this process exits.
pub fn spawn_owned(mut cmd: Command, signal: libc::c_int) -> io::Result<Child> {
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: only async-signal-safe calls (prctl, getppid, _exit) between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, signal as libc::c_ulong, 0, 0, 0) != 0 {
                return Err(io::Error::last_os_error());
            }
            if libc::getppid() != parent {
                libc::_exit(1);
            }
            Ok(())
        });
    }
    let child = on_spawner_thread(move || cmd.spawn())?;
    register_for_exit_cleanup(child.id() as libc::pid_t);
    Ok(child)
}

/// Servers to kill and reap at normal process exit, before the kernel's PDEATHSIG would: this
/// leaves no zombies behind and lets the scratch root be removed. PDEATHSIG stays the backstop
/// for a test process that is killed or aborts.
static EXIT_PIDS: Mutex<Vec<libc::pid_t>> = Mutex::new(Vec::new());

fn register_for_exit_cleanup(pid: libc::pid_t) {
    static REGISTERED: OnceLock<()> = OnceLock::new();
    REGISTERED.get_or_init(|| {
        // SAFETY: registering a plain extern "C" fn; it runs from libc's exit().
        unsafe { libc::atexit(cleanup_at_exit) };
    });
    EXIT_PIDS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(pid);
}

extern "C" fn cleanup_at_exit() {
    let pids = std::mem::take(&mut *EXIT_PIDS.lock().unwrap_or_else(|e| e.into_inner()));
    for &pid in &pids {
        // SAFETY: signalling and reaping our own children.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    for &pid in &pids {
        unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
    }
    // CBOB_TEST_KEEP_SCRATCH=1 keeps logs and server data for a post-mortem.
    if let Some(root) = ROOT
        .get()
        .filter(|_| std::env::var_os("CBOB_TEST_KEEP_SCRATCH").is_none())
    {
        let _ = fs::remove_dir_all(root);
    }
}

/// Like [`spawn_owned`], but ties the child to the *calling thread*: for helpers such as a
/// restored PostgreSQL that must not outlive the test that started it even if the test's own
/// cleanup never runs.
pub fn spawn_thread_owned(cmd: &mut Command, signal: libc::c_int) -> io::Result<Child> {
    // SAFETY: as above.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, signal as libc::c_ulong, 0, 0, 0) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.spawn()
}

static ROOT: OnceLock<PathBuf> = OnceLock::new();

/// This process's scratch root: logs and server data directories. Created 0755 so the
/// `postgres` user can traverse it.
pub fn scratch_root() -> &'static Path {
    ROOT.get_or_init(|| {
        let tmp = std::env::temp_dir();
        remove_stale_roots(&tmp);
        let root = tmp.join(format!("cbob-test-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(&root)
            .unwrap_or_else(|e| panic!("create scratch dir {}: {e}", root.display()));
        set_mode(&root, 0o755);
        root
    })
}

/// Removes `cbob-test-<pid>` roots whose process is gone (statics never clean up after themselves).
fn remove_stale_roots(tmp: &Path) {
    let Ok(entries) = fs::read_dir(tmp) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("cbob-test-"))
            .and_then(|p| p.parse::<i32>().ok())
        else {
            continue;
        };
        // kill(pid, 0) fails with ESRCH when no such process exists.
        let alive = unsafe { libc::kill(pid, 0) } == 0
            || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
        if !alive {
            let _ = fs::remove_dir_all(e.path());
        }
    }
}

/// A fresh directory under the scratch root.
pub fn scratch_dir(prefix: &str) -> PathBuf {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = scratch_root().join(format!("{prefix}-{n}"));
    fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
    set_mode(&dir, 0o755);
    dir
}

pub(crate) fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {mode:o} {}: {e}", path.display()));
}

/// A free TCP port on 127.0.0.1 (bound and released; the server binds it a moment later).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("find a free port on 127.0.0.1")
}

/// Whether something accepts TCP connections on 127.0.0.1:`port`.
pub fn port_open(port: u16) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
}

/// Last `max` bytes of a log file, for failure messages.
pub fn log_tail(path: &Path, max: u64) -> String {
    let Ok(mut f) = File::open(path) else {
        return format!("(no log at {})", path.display());
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(max)));
    let mut s = String::new();
    let _ = f.read_to_string(&mut s);
    s
}

/// A started server process, owned by the test process.
#[derive(Debug)]
pub struct ServerProcess {
    /// Short name used in messages (`moto`, `azurite`, ...).
    pub name: &'static str,
    /// Port on 127.0.0.1.
    pub port: u16,
    /// Where the server's stdout and stderr go.
    pub log: PathBuf,
    child: Mutex<Child>,
}

impl ServerProcess {
    /// OS process id.
    pub fn pid(&self) -> u32 {
        self.child.lock().unwrap_or_else(|e| e.into_inner()).id()
    }

    /// `Some(status)` if the server has exited.
    pub fn exited(&self) -> Option<std::process::ExitStatus> {
        self.child
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .try_wait()
            .ok()
            .flatten()
    }

    /// Panics if the server died (a test that sees odd errors can call this to say why).
    pub fn assert_alive(&self) {
        if let Some(st) = self.exited() {
            panic!(
                "{} server (port {}) exited with {st}; log {}:\n{}",
                self.name,
                self.port,
                self.log.display(),
                log_tail(&self.log, 4000)
            );
        }
    }
}

/// Starts a server with [`spawn_owned`] and waits until `ready(port)` holds.
///
/// `build(port)` makes the command for a given port. A server that exits before it is ready is
/// retried on another port twice (the free-port check races with other processes), then the
/// test fails with the tail of its log.
pub fn start_server(
    name: &'static str,
    build: impl Fn(u16) -> Command,
    ready: impl Fn(u16) -> bool,
) -> ServerProcess {
    let logs = scratch_root().join("logs");
    fs::create_dir_all(&logs).expect("create log dir");
    let mut last_err = String::new();
    for attempt in 1..=3 {
        let port = free_port();
        let log = logs.join(format!("{name}-{port}.log"));
        let out = File::create(&log).unwrap_or_else(|e| panic!("create {}: {e}", log.display()));
        let err = out.try_clone().expect("clone log handle");
        let mut cmd = build(port);
        cmd.stdin(Stdio::null()).stdout(out).stderr(err);
        let program = format!("{:?}", cmd.get_program());
        let child = spawn_owned(cmd, libc::SIGKILL)
            .unwrap_or_else(|e| panic!("start {name} server ({program}): {e}"));
        let server = ServerProcess {
            name,
            port,
            log,
            child: Mutex::new(child),
        };
        let started = Instant::now();
        loop {
            if let Some(status) = server.exited() {
                last_err = format!(
                    "{name} server exited with {status} before it was ready (attempt {attempt}, port {port}); log {}:\n{}",
                    server.log.display(),
                    log_tail(&server.log, 4000)
                );
                break;
            }
            if ready(port) {
                return server;
            }
            if started.elapsed() > READY_TIMEOUT {
                panic!(
                    "{name} server (pid {}, port {port}) not ready after {READY_TIMEOUT:?}; log {}:\n{}",
                    server.pid(),
                    server.log.display(),
                    log_tail(&server.log, 4000)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    panic!("{last_err}");
}

/// A process-wide unique suffix for bucket and container names: tests in one binary share a
/// server, so names must never collide.
pub fn unique_suffix() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Turns `base` into a valid, unique S3/GCS bucket or Azure container name:
/// lowercase letters, digits and `-`, 3..=63 characters, starting and ending alphanumeric.
pub fn unique_bucket_name(base: &str) -> String {
    let mut clean: String = base
        .chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_alphanumeric() { c } else { '-' }
        })
        .collect();
    while clean.contains("--") {
        clean = clean.replace("--", "-");
    }
    let clean = clean.trim_matches('-');
    let suffix = unique_suffix();
    let keep = 63 - suffix.len() - 1;
    let mut head: String = clean.chars().take(keep).collect();
    if head.is_empty() {
        head.push('b');
    }
    let head = head.trim_end_matches('-');
    let name = format!("{head}-{suffix}");
    if name.len() < 3 {
        format!("bkt{name}")
    } else {
        name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_names_are_valid_and_unique() {
        let a = unique_bucket_name("My_Test Bucket!!");
        let b = unique_bucket_name("My_Test Bucket!!");
        assert_ne!(a, b);
        for n in [
            a,
            b,
            unique_bucket_name(""),
            unique_bucket_name(&"x".repeat(200)),
        ] {
            assert!(n.len() >= 3 && n.len() <= 63, "{n}");
            assert!(
                n.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
                "{n}"
            );
            assert!(
                !n.starts_with('-') && !n.ends_with('-') && !n.contains("--"),
                "{n}"
            );
        }
    }
}

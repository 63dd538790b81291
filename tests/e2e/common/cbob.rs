//! Running the real `cbob` binary in an isolated environment: a cleared environment with its
//! own HOME, `CBOB_BASE_PATH` and an empty configuration file, so neither the machine's home
//! nor `/etc` is ever read, and whatever a test sets on top.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{scratch_tempdir, wait_until};

/// How long any single `cbob` run may take before the test fails (and the run is killed).
pub const RUN_TIMEOUT: Duration = Duration::from_secs(240);

/// The `cbob` under test: `$CBOB_E2E_BIN` when set (a release build, or a private copy while
/// others rebuild the shared target dir), else `<target>/debug/cbob`.
pub fn binary() -> PathBuf {
    match std::env::var_os("CBOB_E2E_BIN") {
        Some(p) => {
            let p = PathBuf::from(p);
            assert!(p.is_file(), "CBOB_E2E_BIN={} is not a file", p.display());
            p
        }
        None => cbob_test_support::cbob_bin(),
    }
}

/// An isolated place to run `cbob`: temp HOME, base path and config file, plus environment.
pub struct Cbob {
    dir: tempfile::TempDir,
    envs: BTreeMap<String, String>,
    runs: std::cell::Cell<u32>,
}

impl Cbob {
    /// A fresh environment: `HOME=<tmp>/home`, `CBOB_BASE_PATH=<tmp>/base`,
    /// `CBOB_CONFIG_FILE=<tmp>/cbob.toml` (empty), `PATH` from the test process.
    pub fn new() -> Self {
        let dir = scratch_tempdir("cbob-env");
        fs::create_dir(dir.path().join("home")).expect("create HOME");
        let config = dir.path().join("cbob.toml");
        fs::write(
            &config,
            "# empty: the tests configure cbob through the environment\n",
        )
        .expect("write cbob.toml");
        let mut c = Self {
            envs: BTreeMap::new(),
            runs: std::cell::Cell::new(0),
            dir,
        };
        let home = c.dir.path().join("home");
        let base = c.base();
        c.env("HOME", home.to_str().expect("utf-8 path"))
            .env("CBOB_BASE_PATH", base.to_str().expect("utf-8 path"))
            .env("CBOB_CONFIG_FILE", config.to_str().expect("utf-8 path"))
            .env(
                "PATH",
                &std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".into()),
            )
            // Never ask an EC2 metadata service for credentials: every test gives its own.
            .env("AWS_EC2_METADATA_DISABLED", "true");
        c
    }

    /// Sets an environment variable for every later run.
    pub fn env(&mut self, key: &str, value: &str) -> &mut Self {
        self.envs.insert(key.to_string(), value.to_string());
        self
    }

    /// `CBOB_BASE_PATH` (created by cbob when it first needs it).
    pub fn base(&self) -> PathBuf {
        self.dir.path().join("base")
    }

    /// A directory for the test's own files next to this environment (created).
    pub fn path(&self, name: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        fs::create_dir_all(&p).unwrap_or_else(|e| panic!("create {}: {e}", p.display()));
        p
    }

    /// Starts `cbob <args>` with stdout and stderr going to files; see [`Running`].
    pub fn spawn(&self, args: &[&str]) -> Running {
        let n = self.runs.get() + 1;
        self.runs.set(n);
        let out_path = self.dir.path().join(format!("run-{n}.stdout"));
        let err_path = self.dir.path().join(format!("run-{n}.stderr"));
        let mut cmd = Command::new(binary());
        cmd.args(args)
            .env_clear()
            .envs(&self.envs)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(fs::File::create(&out_path).expect("create stdout file"))
            .stderr(fs::File::create(&err_path).expect("create stderr file"));
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("start cbob {args:?}: {e}"));
        Running {
            child,
            args: args.iter().map(|s| s.to_string()).collect(),
            started: Instant::now(),
            out_path,
            err_path,
        }
    }

    /// Runs `cbob <args>` to completion (at most [`RUN_TIMEOUT`]).
    pub fn run(&self, args: &[&str]) -> Run {
        self.spawn(args).wait()
    }
}

/// A `cbob` process started by [`Cbob::spawn`].
pub struct Running {
    child: Child,
    args: Vec<String>,
    started: Instant,
    out_path: PathBuf,
    err_path: PathBuf,
}

impl Running {
    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether it has exited (reaping it if so).
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().expect("wait for cbob")
    }

    /// Sends `signal` unless the process already exited; returns whether it was still running.
    pub fn signal(&mut self, signal: libc::c_int) -> bool {
        if self.try_status().is_some() {
            return false;
        }
        // SAFETY: kill(2) on our own unreaped child: the pid cannot have been recycled.
        unsafe { libc::kill(self.child.id() as libc::pid_t, signal) };
        true
    }

    /// Waits for the exit (killing it after [`RUN_TIMEOUT`]) and collects the output.
    pub fn wait(mut self) -> Run {
        let exited = wait_until(RUN_TIMEOUT, Duration::from_millis(20), || {
            self.try_status().is_some()
        });
        if !exited {
            let _ = self.child.kill();
            let _ = self.child.wait();
            panic!(
                "cbob {:?} did not finish within {RUN_TIMEOUT:?}\nstdout:\n{}\nstderr:\n{}",
                self.args,
                read_lossy(&self.out_path),
                tail(&read_lossy(&self.err_path), 6000)
            );
        }
        let status = self.child.wait().expect("reap cbob");
        eprintln!(
            "cbob {:?}: {status} after {:.1}s",
            self.args,
            self.started.elapsed().as_secs_f64()
        );
        Run {
            args: self.args,
            status,
            stdout: read_lossy(&self.out_path),
            stderr: read_lossy(&self.err_path),
            elapsed: self.started.elapsed(),
        }
    }
}

fn read_lossy(p: &Path) -> String {
    String::from_utf8_lossy(&fs::read(p).unwrap_or_default()).into_owned()
}

/// The last `max` bytes of `s` (on a char boundary).
pub fn tail(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut start = s.len() - max;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}

/// A finished `cbob` run.
#[derive(Debug)]
pub struct Run {
    pub args: Vec<String>,
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl Run {
    /// The exit code (`None` when killed by a signal).
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    /// Everything the run printed, for failure messages.
    pub fn describe(&self) -> String {
        format!(
            "cbob {:?} exited with {} after {:.1}s\nstdout:\n{}\nstderr (tail):\n{}",
            self.args,
            self.status,
            self.elapsed.as_secs_f64(),
            tail(&self.stdout, 8000),
            tail(&self.stderr, 8000)
        )
    }

    /// Panics unless the exit code is `code`.
    pub fn expect_code(&self, code: i32, what: &str) -> &Self {
        assert_eq!(
            self.code(),
            Some(code),
            "{what}: expected exit code {code}\n{}",
            self.describe()
        );
        self
    }

    /// Panics unless the run succeeded.
    pub fn expect_ok(&self, what: &str) -> &Self {
        self.expect_code(0, what)
    }

    /// stdout parsed as the JSON summary (`--format json`).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout of cbob {:?} is not JSON ({e})\n{}",
                self.args,
                self.describe()
            )
        })
    }

    /// The entry of `clusters` named `name` in the JSON summary.
    pub fn cluster(&self, name: &str) -> Value {
        let doc = self.json();
        doc["clusters"]
            .as_array()
            .and_then(|a| a.iter().find(|c| c["name"] == name).cloned())
            .unwrap_or_else(|| {
                panic!(
                    "the JSON summary has no cluster {name:?}\n{}",
                    self.describe()
                )
            })
    }

    /// Names of the clusters in the JSON summary.
    pub fn cluster_names(&self) -> Vec<String> {
        self.json()["clusters"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|c| c["name"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }
}

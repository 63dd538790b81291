//! `cargo xtask bench`: cbob against `rclone sync` and `aws s3 sync` on the same s3s-fs server in
//! one run, on two real pgBackRest repositories (tens of thousands of small objects; 1 GiB
//! objects): cold copy and no-op resync, wall time, throughput, peak memory, ratios.
//! Not a test: nothing here runs under `cargo xtask test`. See docs/benchmarks.md.
//!
//! - `server`: the patched s3s-fs (built once, cached), fresh data dir, loading repositories
//! - `repos`: generating and caching the two repositories
//! - `tools`: running and measuring the clients, checking their copies
//! - `dest`: `--dest`, cbob alone into each kind of destination (S3, MinIO, Azure, GCS, local)
//! - `report`: tables and JSON
//! - `spent`: finished copies are deleted at the end, not between samples

mod dest;
mod report;
mod repos;
mod server;
mod spent;
mod tools;

use std::fs;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, ensure};
use serde_json::json;

use dest::{Dest, Target};
use report::Sample;
use repos::{Kind, Repo};
use server::{BUCKET, Server};
use spent::Spent;
use tools::{Programs, Slot, Tool};

#[derive(Debug, clap::Args)]
pub struct Opts {
    /// Interleaved rounds (each round runs every tool on every repository, cold then no-op).
    #[arg(long, default_value_t = 3)]
    rounds: u32,
    /// Only this repository (repeatable; default: small and large).
    #[arg(long = "repo", value_enum)]
    repos: Vec<Kind>,
    /// Only this tool (repeatable; default: cbob, rclone, aws).
    #[arg(long = "tool", value_enum)]
    tools: Vec<Tool>,
    /// Measure cbob alone into this kind of destination instead of comparing tools on a local
    /// directory (repeatable; each served by its own fresh local server per run).
    #[arg(long = "dest", value_enum, conflicts_with = "serve")]
    dests: Vec<Dest>,
    /// Regenerate the cached repositories (a few minutes).
    #[arg(long)]
    regenerate: bool,
    /// Build the server and cbob and generate the repositories, then stop.
    #[arg(long)]
    prepare_only: bool,
    /// Start the loaded server, print how to point the tools at it, and wait (for profiling by
    /// hand; Ctrl-C stops it).
    #[arg(long, conflicts_with = "prepare_only")]
    serve: bool,
}

pub fn run(o: Opts) -> Result<()> {
    let kinds = if o.repos.is_empty() {
        vec![Kind::Small, Kind::Large]
    } else {
        o.repos.clone()
    };
    let dest_mode = !o.dests.is_empty();
    let tools = if dest_mode {
        ensure!(
            o.tools.iter().all(|&t| t == Tool::Cbob),
            "--dest measures cbob alone; rclone and aws are compared on a local directory \
             without --dest: drop --tool or --dest"
        );
        vec![Tool::Cbob]
    } else if o.tools.is_empty() {
        vec![Tool::Cbob, Tool::Rclone, Tool::Aws]
    } else {
        o.tools.clone()
    };
    let mut dests: Vec<Dest> = Vec::new();
    for d in &o.dests {
        if !dests.contains(d) {
            dests.push(*d);
        }
    }
    ensure!(o.rounds >= 1, "--rounds must be at least 1");
    for d in &dests {
        d.check_installed()?;
    }

    let bin = server::ensure_built()?;
    let repos: Vec<Repo> = kinds
        .iter()
        .map(|&k| repos::ensure(k, o.regenerate))
        .collect::<Result<_>>()?;
    for r in &repos {
        eprintln!(
            "bench: repository {}: {} objects, {} bytes ({:.1} MB), largest object {} bytes, at {}",
            r.name,
            r.files,
            r.bytes,
            r.bytes as f64 / 1e6,
            r.largest,
            r.root.display()
        );
    }
    let programs = Programs::prepare(&tools)?;
    if o.prepare_only {
        return Ok(());
    }

    let out_dir = crate::root().join("target/bench");
    // Separate log directories, so one mode's run keeps the other's logs.
    let logs = out_dir.join(if dest_mode { "logs-dest" } else { "logs" });
    let _ = fs::remove_dir_all(&logs);
    fs::create_dir_all(&logs)?;
    // Same filesystem as the repository cache, so loading is hard links.
    let run_dir = RunDir::create()?;
    let server = Server::start(&bin, run_dir.path(), BUCKET)?;
    let endpoint = server.endpoint();
    eprintln!(
        "bench: patched s3s-fs at {endpoint}, data {}",
        server.data.display()
    );
    for r in &repos {
        server.load(r, r.name)?;
        check_listing(&programs, &endpoint, r)?;
    }
    if o.serve {
        return serve(&endpoint, &repos);
    }
    if tools.contains(&Tool::Cbob) {
        check_cbob(&programs, &endpoint, &repos[0], run_dir.path())?;
    }
    if dest_mode {
        let ctx = DestRun {
            programs: &programs,
            endpoint: &endpoint,
            s3s_bin: &bin,
            run_dir: run_dir.path(),
            logs: &logs,
        };
        let loadavg_start = loadavg();
        let t = Instant::now();
        let samples = ctx.rounds(&repos, &dests, o.rounds, t)?;
        drop(server);
        let summaries: Vec<_> = repos
            .iter()
            .map(|r| report::dest_table(r, &samples, &dests))
            .collect();
        report::failures(&samples);
        let meta = json!({
            "mode": "destinations",
            "rounds": o.rounds,
            "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
            "loadavg_start": loadavg_start,
            "loadavg_end": loadavg(),
            "cbob_commit": git_commit(),
            "source_server": "s3s-fs 0.14.1 + cbob bench patches (TCP_NODELAY, listing walk)",
            "command": format!("cbob sync --source s3://{BUCKET}/<repo> --transfers 16"),
            "destinations": dests.iter().map(|d| json!({
                "dest": d.name(),
                "server": d.server(),
                "settings": d.settings(),
            })).collect::<Vec<_>>(),
            "versions": {
                "cbob": version(&programs.cbob, &["--version"]),
                "azurite": azurite_version(),
            },
            "wall_seconds": t.elapsed().as_secs_f64(),
        });
        let path = report::write_json(&out_dir, "dest", meta, summaries, &samples)?;
        println!("\nresults: {} (logs in {})", path.display(), logs.display());
        let failed = samples.iter().filter(|s| s.problem.is_some()).count();
        ensure!(failed == 0, "{failed} runs failed (see above)");
        return Ok(());
    }

    let loadavg_start = loadavg();
    let t = Instant::now();
    let mut samples = Vec::new();
    let mut spent = Spent::default();
    for round in 1..=o.rounds {
        for r in &repos {
            // Rotate the order each round so no tool always runs first (warm caches, CPU boost).
            let mut order = tools.clone();
            let n = order.len();
            order.rotate_left((round as usize - 1) % n);
            for &tool in &order {
                let name = format!("{}-{}-r{round}", r.name, tool.name());
                spent.make_room(run_dir.path(), r.bytes)?;
                let slot = Slot::new(&run_dir.path().join(&name))?;
                let load = loadavg();
                let mut sample = one(tool, &programs, &endpoint, r, &slot, round, &logs, &name)?;
                sample.loadavg = load;
                eprintln!(
                    "bench: [{:>5.0} s] round {round} {:<5} {:<6} cold {:>7.2} s {:>6.0} MiB | no-op {} {}",
                    t.elapsed().as_secs_f64(),
                    r.name,
                    tool.name(),
                    sample.cold.seconds,
                    sample.cold.peak_rss_kib as f64 / 1024.0,
                    sample
                        .noop
                        .as_ref()
                        .map(|m| format!(
                            "{:.2} s {:.0} MiB",
                            m.seconds,
                            m.peak_rss_kib as f64 / 1024.0
                        ))
                        .unwrap_or_else(|| "-".into()),
                    sample
                        .problem
                        .as_deref()
                        .map(|p| format!("FAILED: {p}"))
                        .unwrap_or_default()
                );
                samples.push(sample);
                spent.keep(&slot.dir);
            }
        }
    }
    spent.clear()?;
    drop(server);

    let summaries: Vec<_> = repos
        .iter()
        .map(|r| report::table(r, &samples, &tools))
        .collect();
    report::failures(&samples);
    let meta = json!({
        "rounds": o.rounds,
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "loadavg_start": loadavg_start,
        "loadavg_end": loadavg(),
        "cbob_commit": git_commit(),
        "server": "s3s-fs 0.14.1 + cbob bench patches (TCP_NODELAY, listing walk)",
        "commands": {
            "cbob": format!("cbob sync --source s3://{BUCKET}/<repo> --target DIR --transfers 16"),
            "rclone": format!("rclone sync X:{BUCKET}/<repo>/ DIR --transfers 16 --checkers 16"),
            "aws": format!("aws s3 sync s3://{BUCKET}/<repo> DIR --endpoint-url URL --only-show-errors"),
        },
        "versions": {
            "rclone": version(&programs.rclone, &["version"]),
            "aws": version(&programs.aws, &["--version"]),
            "cbob": version(&programs.cbob, &["--version"]),
        },
        "wall_seconds": t.elapsed().as_secs_f64(),
    });
    let path = report::write_json(&out_dir, "bench", meta, summaries, &samples)?;
    println!("\nresults: {} (logs in {})", path.display(), logs.display());
    let failed = samples.iter().filter(|s| s.problem.is_some()).count();
    ensure!(failed == 0, "{failed} runs failed (see above)");
    Ok(())
}

/// Cold copy into an empty directory, verify, no-op resync into the same directory, verify.
#[allow(clippy::too_many_arguments)]
fn one(
    tool: Tool,
    p: &Programs,
    endpoint: &str,
    repo: &Repo,
    slot: &Slot,
    round: u32,
    logs: &std::path::Path,
    name: &str,
) -> Result<Sample> {
    let run = |phase: &str| {
        tools::measure(
            tools::command(tool, p, endpoint, repo.name, slot),
            logs.join(format!("{name}-{phase}.log")),
        )
    };
    let check = |m: &tools::Measured| -> Option<String> {
        if m.exit_code != 0 {
            return Some(format!("exit code {}", m.exit_code));
        }
        tools::verify(repo, &slot.target)
            .err()
            .map(|e| e.to_string())
    };
    let cold = run("cold")?;
    let mut problem = check(&cold);
    let mut noop = None;
    if problem.is_none() {
        let m = run("noop")?;
        problem = check(&m).map(|p| format!("no-op resync: {p}"));
        noop = Some(m);
    }
    Ok(Sample {
        repo: repo.name,
        tool,
        dest: Dest::Local,
        round,
        cold,
        noop,
        problem,
        loadavg: String::new(),
    })
}

/// What `--dest` rounds need from the set-up.
struct DestRun<'a> {
    programs: &'a Programs,
    /// The source server.
    endpoint: &'a str,
    /// The patched s3s-fs, also used for the `s3` and `minio` destinations.
    s3s_bin: &'a std::path::Path,
    run_dir: &'a std::path::Path,
    logs: &'a std::path::Path,
}

impl DestRun<'_> {
    /// Interleaved rounds: each round runs every destination on every repository, in an order
    /// that rotates from round to round.
    fn rounds(
        &self,
        repos: &[Repo],
        dests: &[Dest],
        rounds: u32,
        t: Instant,
    ) -> Result<Vec<Sample>> {
        let mut samples = Vec::new();
        let mut spent = Spent::default();
        for round in 1..=rounds {
            for r in repos {
                let mut order = dests.to_vec();
                let n = order.len();
                order.rotate_left((round as usize - 1) % n);
                for &d in &order {
                    let name = format!("{}-cbob-{}-r{round}", r.name, d.name());
                    spent.make_room(self.run_dir, r.bytes)?;
                    let slot = Slot::new(&self.run_dir.join(&name))?;
                    let load = loadavg();
                    let mut sample = self.one(d, r, &slot, round, &name)?;
                    sample.loadavg = load;
                    eprintln!(
                        "bench: [{:>5.0} s] round {round} {:<5} cbob -> {:<5} cold {:>7.2} s {:>6.0} MiB | no-op {} | load {} {}",
                        t.elapsed().as_secs_f64(),
                        r.name,
                        d.name(),
                        sample.cold.seconds,
                        sample.cold.peak_rss_kib as f64 / 1024.0,
                        sample
                            .noop
                            .as_ref()
                            .map(|m| format!(
                                "{:.2} s {:.0} MiB",
                                m.seconds,
                                m.peak_rss_kib as f64 / 1024.0
                            ))
                            .unwrap_or_else(|| "-".into()),
                        sample.loadavg,
                        sample
                            .problem
                            .as_deref()
                            .map(|p| format!("FAILED: {p}"))
                            .unwrap_or_default()
                    );
                    samples.push(sample);
                    spent.keep(&slot.dir);
                }
            }
        }
        spent.clear()?;
        Ok(samples)
    }

    /// A fresh destination; cold copy, verify by listing it, no-op resync, verify again.
    fn one(&self, d: Dest, repo: &Repo, slot: &Slot, round: u32, name: &str) -> Result<Sample> {
        let target = Target::start(d, self.s3s_bin, slot)?;
        let run = |phase: &str| {
            tools::measure(
                target.command(self.programs, self.endpoint, repo, slot),
                self.logs.join(format!("{name}-{phase}.log")),
            )
        };
        let check = |m: &tools::Measured| -> Option<String> {
            if m.exit_code != 0 {
                let server = target.log_tail();
                return Some(if server.trim().is_empty() {
                    format!("exit code {}", m.exit_code)
                } else {
                    format!(
                        "exit code {}; destination server log: {server}",
                        m.exit_code
                    )
                });
            }
            let t = Instant::now();
            let problem = target.verify(repo).err().map(|e| format!("{e:#}"));
            eprintln!(
                "bench:   {} copy checked against the source by listing it in {:.1} s{}",
                d.name(),
                t.elapsed().as_secs_f64(),
                if problem.is_some() {
                    ": DIFFERENT"
                } else {
                    ": same keys and sizes"
                }
            );
            problem
        };
        let cold = run("cold")?;
        let mut problem = check(&cold);
        let mut noop = None;
        if problem.is_none() {
            let m = run("noop")?;
            problem = check(&m).map(|p| format!("no-op resync: {p}"));
            noop = Some(m);
        }
        Ok(Sample {
            repo: repo.name,
            tool: Tool::Cbob,
            dest: d,
            round,
            cold,
            noop,
            problem,
            loadavg: String::new(),
        })
    }
}

/// Azurite's version from its package.json (empty if not found).
fn azurite_version() -> String {
    cbob_test_support::locate::Tool::AzuriteMainJs
        .locate()
        .ok()
        .and_then(|main_js| {
            // .../node_modules/azurite/dist/src/blob/main.js
            let pkg = main_js.ancestors().nth(4)?.join("package.json");
            let v: serde_json::Value = serde_json::from_str(&fs::read_to_string(pkg).ok()?).ok()?;
            v["version"].as_str().map(str::to_string)
        })
        .unwrap_or_default()
}

/// The copied cbob can read the source (`--estimate-only`), so a wrong binary fails here and
/// not as a failed round.
fn check_cbob(p: &Programs, endpoint: &str, repo: &Repo, run_dir: &std::path::Path) -> Result<()> {
    let slot = Slot::new(&run_dir.join("cbob-check"))?;
    let mut cmd = tools::command(Tool::Cbob, p, endpoint, repo.name, &slot);
    cmd.arg("--estimate-only");
    let out = cmd.output().context("run cbob")?;
    ensure!(
        out.status.success(),
        "cbob cannot read s3://{BUCKET}/{}/: {}{}",
        repo.name,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    fs::remove_dir_all(&slot.dir)?;
    Ok(())
}

/// An independent client (awscli) must list exactly the loaded objects.
fn check_listing(p: &Programs, endpoint: &str, repo: &Repo) -> Result<()> {
    let Some(aws) = (!p.aws.as_os_str().is_empty())
        .then(|| p.aws.clone())
        .or_else(|| cbob_test_support::locate::which("aws"))
    else {
        eprintln!("bench: aws not found; skipping the listing check");
        return Ok(());
    };
    let home = tempfile::tempdir()?;
    let out = Command::new(aws)
        .args(["s3", "ls", "--recursive", "--summarize"])
        .arg(format!("s3://{BUCKET}/{}/", repo.name))
        .args(["--endpoint-url", endpoint])
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home.path())
        .env("AWS_ACCESS_KEY_ID", cbob_test_support::s3s::ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", cbob_test_support::s3s::SECRET_KEY)
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .output()
        .context("aws s3 ls")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let total = |label: &str| -> Option<u64> {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(label))
            .and_then(|v| v.trim().parse().ok())
    };
    let (objects, bytes) = (total("Total Objects:"), total("Total Size:"));
    ensure!(
        out.status.success() && objects == Some(repo.files) && bytes == Some(repo.bytes),
        "listing s3://{BUCKET}/{}/ found {objects:?} objects / {bytes:?} bytes, expected {} / {}:\n{}",
        repo.name,
        repo.files,
        repo.bytes,
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!(
        "bench: listing check ok: {} objects, {} bytes",
        repo.files, repo.bytes
    );
    Ok(())
}

/// `<bench dir>/run-<pid>`: server data and the copies. Removed on drop; directories left by
/// runs that were killed (Ctrl-C on `--serve`) are removed by the next run.
struct RunDir(std::path::PathBuf);

impl RunDir {
    fn create() -> Result<RunDir> {
        let base = server::bench_dir();
        for e in fs::read_dir(&base)?.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(pid) = name
                .strip_prefix("run-")
                .and_then(|p| p.parse::<i32>().ok())
            else {
                continue;
            };
            if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
                let _ = fs::remove_dir_all(e.path());
            }
        }
        let dir = base.join(format!("run-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir)?;
        Ok(RunDir(dir))
    }

    fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for RunDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn serve(endpoint: &str, repos: &[Repo]) -> Result<()> {
    use cbob_test_support::s3s::{ACCESS_KEY, SECRET_KEY};
    println!(
        "export CBOB_SOURCE_ENDPOINT={endpoint} CBOB_SOURCE_ACCESS_KEY={ACCESS_KEY} CBOB_SOURCE_SECRET_KEY={SECRET_KEY}"
    );
    println!(
        "export AWS_ACCESS_KEY_ID={ACCESS_KEY} AWS_SECRET_ACCESS_KEY={SECRET_KEY} AWS_DEFAULT_REGION=us-east-1"
    );
    println!(
        "export RCLONE_CONFIG=/dev/null RCLONE_CONFIG_X_TYPE=s3 RCLONE_CONFIG_X_PROVIDER=Other \
         RCLONE_CONFIG_X_ENV_AUTH=false RCLONE_CONFIG_X_ENDPOINT={endpoint} RCLONE_CONFIG_X_REGION=us-east-1 \
         RCLONE_CONFIG_X_ACCESS_KEY_ID={ACCESS_KEY} RCLONE_CONFIG_X_SECRET_ACCESS_KEY={SECRET_KEY} \
         RCLONE_CONFIG_X_FORCE_PATH_STYLE=true; unset AWS_CA_BUNDLE"
    );
    for r in repos {
        println!(
            "# {}: cbob sync --source s3://{BUCKET}/{n} --target DIR --transfers 16 | rclone sync X:{BUCKET}/{n}/ DIR --transfers 16 --checkers 16 | aws s3 sync s3://{BUCKET}/{n} DIR --endpoint-url {endpoint}",
            r.name,
            n = r.name
        );
    }
    println!("serving; Ctrl-C stops the server");
    loop {
        std::thread::park();
    }
}

fn loadavg() -> String {
    fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// `HEAD` plus `-dirty` when the working tree has changes (others may be editing it).
fn git_commit() -> String {
    let git = |args: &[&str]| {
        Command::new("git")
            .current_dir(crate::root())
            .args(args)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default()
    };
    let head = git(&["rev-parse", "--short", "HEAD"]);
    let dirty = !git(&["status", "--porcelain", "--untracked-files=no"]).is_empty();
    format!("{head}{}", if dirty { "-dirty" } else { "" })
}

fn version(program: &std::path::Path, args: &[&str]) -> String {
    if program.as_os_str().is_empty() {
        return String::new();
    }
    Command::new(program)
        .args(args)
        .output()
        .map(|o| {
            let s = if o.stdout.is_empty() {
                o.stderr
            } else {
                o.stdout
            };
            String::from_utf8_lossy(&s)
                .lines()
                .next()
                .unwrap_or("")
                .trim()
                .to_string()
        })
        .unwrap_or_default()
}

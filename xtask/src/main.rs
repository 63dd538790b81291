//! `cargo xtask ...`: project automation that needs more than a one-line cargo command.
//!
//! - `servers install|start|stop|status`: the local test servers (see docs/testing.md)
//! - `test [ARGS]`: install what is missing, then `cargo test --workspace ARGS`
//! - `fixture`: regenerate tests/fixtures/ from a real pgBackRest + PostgreSQL run
//! - `bench`: cbob vs rclone and `aws s3 sync` on s3s-fs (docs/benchmarks.md; not a test)
//! - `dist`: release binaries (full and per cloud), man pages, completions, packaging files

mod bench;
mod dist;
mod fixture;
mod servers;

use std::path::PathBuf;
use std::process::{Command, ExitCode};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "cbob project automation")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Manage the local test servers (moto, s3s-fs, Azurite, fake-gcs-server).
    Servers {
        #[command(subcommand)]
        cmd: ServersCmd,
    },
    /// Install missing test servers, then run `cargo test --workspace` with the given arguments.
    Test {
        /// Passed to `cargo test --workspace` (e.g. `-- --nocapture`); with `-p NAME` only
        /// those packages are tested.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Regenerate tests/fixtures/pgbackrest-repo.tar.zst and expected.json (needs pgbackrest,
    /// PostgreSQL 15, zstd, root or the postgres user), then prove the result restores.
    Fixture,
    /// Benchmark cbob against rclone and `aws s3 sync` on a local s3s-fs (docs/benchmarks.md).
    Bench(bench::Opts),
    /// Release binaries (full and per cloud) with their sizes, man pages, completions and
    /// packaging files, in target/dist/.
    Dist(dist::Opts),
}

#[derive(Subcommand)]
enum ServersCmd {
    /// Install every server into the cache outside the repository (idempotent).
    Install,
    /// Start every server in the background, print the endpoints, record the PIDs.
    Start,
    /// Stop the servers `start` started.
    Stop,
    /// Show installed tools and the servers `start` started.
    Status,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.cmd {
        Cmd::Servers { cmd } => match cmd {
            ServersCmd::Install => servers::install(),
            ServersCmd::Start => servers::start(),
            ServersCmd::Stop => servers::stop(),
            ServersCmd::Status => servers::status(),
        },
        Cmd::Test { args } => test(&args),
        Cmd::Fixture => fixture::generate(),
        Cmd::Bench(opts) => bench::run(opts),
        Cmd::Dist(opts) => dist::run(opts),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The workspace root (xtask lives at `<root>/xtask`).
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask has a parent dir")
        .to_path_buf()
}

/// The cargo that runs us, so `cargo xtask` and the tests use the same toolchain.
pub fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

/// Runs `cmd` with inherited stdio; fails with `what` if it does not exit 0.
pub fn run(cmd: &mut Command, what: &str) -> Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("{what}: cannot run {:?}", cmd.get_program()))?;
    if !status.success() {
        bail!("{what} failed ({status})");
    }
    Ok(())
}

fn test(args: &[String]) -> Result<()> {
    servers::install()?;
    // End-to-end tests run the real binary; cargo builds other packages' binaries for no one.
    eprintln!("xtask: cargo build -p cbob-cli");
    crate::run(
        cargo()
            .current_dir(root())
            .args(["build", "-p", "cbob-cli"]),
        "cargo build -p cbob-cli",
    )?;
    // `-p NAME` narrows the run to packages; otherwise every package is tested.
    let scope: &[&str] = if args.iter().any(|a| a == "-p" || a.starts_with("--package")) {
        &[]
    } else {
        &["--workspace"]
    };
    eprintln!("xtask: cargo test {} {}", scope.join(" "), args.join(" "));
    let status = cargo()
        .current_dir(root())
        .arg("test")
        .args(scope)
        .args(args)
        .status()
        .context("run cargo test")?;
    if !status.success() {
        bail!("cargo test failed ({status})");
    }
    Ok(())
}

//! `cbob postgres initdb|start|stop|restart|status|list [--cluster STANZA]...`: one local
//! PostgreSQL per stanza, for restoring and querying backups by hand (docs/restore-check.md).

use std::time::Duration;

use clap::{Args, ValueEnum};
use serde_json::json;

use cbob_core::config::Config;
use cbob_core::lock::{LockError, RunLock};
use cbob_core::pg::PgError;
use cbob_core::pg::instance::{Instance, InstanceStatus, Instances, instances};
use cbob_core::pg::user::pg_os_user;
use cbob_core::repo::BackupInfo;
use cbob_core::restore::CancellationToken;
use cbob_core::storage::DynProvider;
use cbob_core::sync::{discover_stanzas, read_verified_info, validate_stanza_name};

use crate::cli::GlobalArgs;
use crate::commands::print_out;
use crate::context;
use crate::exit_code::{CliError, ExitCode};
use crate::providers;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Action {
    /// Create the instance: an empty cluster of the stanza's PostgreSQL version, a stable port,
    /// and a pgbackrest.conf pointing at the destination
    Initdb,
    /// Start it in the background (a restored cluster first replays its WAL)
    Start,
    /// Stop it (fast shutdown)
    Stop,
    /// Stop, then start
    Restart,
    /// Show the instances: running or not, PID, port, version, directories
    Status,
    /// Every stanza in the destination and its instance, if any
    List,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Text,
    Json,
}

#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
    cbob postgres initdb --cluster abc123\n  \
    runuser -u postgres -- pgbackrest --config=$CBOB_BASE_PATH/postgres/abc123/pgbackrest.conf \\\n      \
        --stanza=abc123 --delta --archive-mode=off restore      # the latest backup, as the postgres user\n  \
    cbob postgres start --cluster abc123                       # replays the archive, then accepts connections\n  \
    cbob postgres status\n  \
    cbob postgres stop")]
pub struct PostgresArgs {
    #[arg(value_enum)]
    pub action: Action,
    /// The stanza (repeatable); default: initdb every stanza in the destination, start every
    /// instance, stop every running one, show all.
    #[arg(long = "cluster", alias = "stanza", value_name = "STANZA")]
    pub clusters: Vec<String>,
    /// initdb: delete an existing data directory (never a running one) and create it again.
    #[arg(long)]
    pub force: bool,
    /// start/restart: seconds to wait for the server to accept connections.
    #[arg(long, value_name = "SECONDS", default_value_t = 300)]
    pub wait: u64,
    #[arg(long, value_enum, default_value = "text")]
    pub format: OutputFormat,
}

pub fn run(global: &GlobalArgs, args: &PostgresArgs) -> Result<ExitCode, CliError> {
    let config = context::load(global, |_| {})?;
    for s in &args.clusters {
        validate_stanza_name(s).map_err(|e| CliError::usage(format!("--cluster: {e}")))?;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::failure(format!("cannot start the async runtime: {e}")))?;
    runtime.block_on(postgres(args, config))
}

fn pg_error(e: PgError) -> CliError {
    let code = match &e {
        PgError::MissingProgram { .. } => ExitCode::MissingProgram,
        PgError::Permission(_) => ExitCode::Permission,
        _ => ExitCode::Failure,
    };
    CliError::new(code, e.to_string())
}

async fn destination(config: &Config) -> Result<(DynProvider, String), CliError> {
    let spec = config.destination_spec();
    let description = spec.describe();
    let dest = providers::registry().build(&spec).await?;
    Ok((dest, description))
}

async fn postgres(args: &PostgresArgs, config: Config) -> Result<ExitCode, CliError> {
    let manager = Instances {
        base: config.base_path.join("postgres"),
        user: pg_os_user(None).map_err(pg_error)?,
        pg_bin_dir: config.programs.pg_bin_dir.clone(),
    };
    let cancel = CancellationToken::new();
    {
        let c = cancel.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                c.cancel();
            }
        });
    }
    match args.action {
        Action::Status => status(args, &manager),
        Action::List => list(args, &config, &manager).await,
        Action::Initdb => initdb(args, &config, &manager, &cancel).await,
        Action::Start | Action::Stop | Action::Restart => {
            control(args, &config, &manager, &cancel).await
        }
    }
}

/// Runs `f` for each stanza under its lock; prints one line each; exit 1 (or 5) on any failure.
async fn for_each<F, Fut>(
    config: &Config,
    stanzas: &[String],
    mut f: F,
) -> Result<ExitCode, CliError>
where
    F: FnMut(String) -> Fut,
    Fut: std::future::Future<Output = Result<String, PgError>>,
{
    let mut code = ExitCode::Success;
    let mut out = String::new();
    for stanza in stanzas {
        let lock = if config.no_lock {
            None
        } else {
            match RunLock::acquire(&config.base_path, "postgres", stanza) {
                Ok(l) => Some(l),
                Err(e @ LockError::Held { .. }) => {
                    return Err(CliError::new(ExitCode::Locked, e.to_string()));
                }
                Err(e) => return Err(CliError::new(ExitCode::Permission, e.to_string())),
            }
        };
        match f(stanza.clone()).await {
            Ok(line) => out.push_str(&format!("✓ {line}\n")),
            Err(e) => {
                code = match (&e, code) {
                    (_, ExitCode::Failure) => ExitCode::Failure,
                    (PgError::MissingProgram { .. }, _) => ExitCode::MissingProgram,
                    _ => ExitCode::Failure,
                };
                out.push_str(&format!("✗ {stanza}: {e}\n"));
            }
        }
        drop(lock);
    }
    print_out(&out)?;
    Ok(code)
}

async fn initdb(
    args: &PostgresArgs,
    config: &Config,
    manager: &Instances,
    cancel: &CancellationToken,
) -> Result<ExitCode, CliError> {
    let (dest, description) = destination(config).await?;
    if config.destination_spec().kind != "local" {
        return Err(CliError::usage(format!(
            "cbob postgres initdb points pgBackRest at a local destination, and the destination is {description}; \
             fix: use CBOB_DEST_TYPE=local (CBOB_TARGET_PATH), or check object-store backups with `cbob restore-check`, \
             which stages what a restore needs"
        )));
    }
    let stanzas = if args.clusters.is_empty() {
        discover_stanzas(&dest)
            .await
            .map_err(|e| CliError::failure(e.to_string()))?
    } else {
        args.clusters.clone()
    };
    if stanzas.is_empty() {
        return Err(CliError::failure(format!(
            "no stanza found in {description}: sync a cluster first (`cbob sync`), or name one with --cluster"
        )));
    }
    let repo = config.target_path.clone();
    for_each(config, &stanzas, |stanza| {
        let dest = dest.clone();
        let repo = repo.clone();
        let description = description.clone();
        async move {
            let key = format!("backup/{stanza}/backup.info");
            let bytes = read_verified_info(&dest, &key)
                .await
                .map_err(|e| PgError::Failed(e.to_string()))?
                .ok_or_else(|| PgError::Failed(format!("stanza {stanza} not found in {description} (no {key})")))?;
            let info = BackupInfo::parse(&bytes).map_err(|e| PgError::Failed(format!("{key}: {e}")))?;
            let version = info.current.version.clone();
            let st = manager.initdb(&stanza, &version, &repo, args.force, cancel).await?;
            let mut line = format!(
                "{stanza}: created PostgreSQL {version} in {} (port {}); pgBackRest config {}",
                st.data_dir.display(),
                st.port.unwrap_or(0),
                st.pgbackrest_conf.display()
            );
            if let Err(why) = manager.repo_readable(&repo, &stanza) {
                line.push_str(&format!(
                    "\n    warning: {why}: pgbackrest restore runs as that user; make the destination readable to it \
                     (e.g. chgrp -R postgres {} && chmod -R g+rX {})",
                    repo.display(),
                    repo.display()
                ));
            }
            line.push_str(&format!(
                "\n    restore the latest backup into it: {}pgbackrest --config={} --stanza={stanza} --delta --archive-mode=off restore\n    \
                 then: cbob postgres start --cluster {stanza}",
                if manager.user.is_some() { "runuser -u postgres -- " } else { "" },
                st.pgbackrest_conf.display()
            ));
            Ok(line)
        }
    })
    .await
}

async fn control(
    args: &PostgresArgs,
    config: &Config,
    manager: &Instances,
    cancel: &CancellationToken,
) -> Result<ExitCode, CliError> {
    let stanzas: Vec<String> = if args.clusters.is_empty() {
        instances(&manager.base)
            .into_iter()
            .filter(|i| match args.action {
                Action::Stop => i.running_pid().is_some(),
                _ => i.initialised(),
            })
            .map(|i| i.stanza)
            .collect()
    } else {
        args.clusters.clone()
    };
    if stanzas.is_empty() {
        print_out(match args.action {
            Action::Stop => "no local PostgreSQL is running\n",
            _ => {
                "no local PostgreSQL exists yet: create one with `cbob postgres initdb --cluster STANZA`\n"
            }
        })?;
        return Ok(if args.clusters.is_empty() && args.action == Action::Stop {
            ExitCode::Success
        } else {
            ExitCode::Failure
        });
    }
    let wait = Duration::from_secs(args.wait);
    for_each(config, &stanzas, |stanza| async move {
        match args.action {
            Action::Start => manager.start(&stanza, wait, cancel).await,
            Action::Stop => manager.stop(&stanza, cancel).await,
            _ => {
                let stopped = manager.stop(&stanza, cancel).await?;
                let started = manager.start(&stanza, wait, cancel).await?;
                Ok(format!("{stopped}; {started}"))
            }
        }
    })
    .await
}

fn status_lines(statuses: &[(InstanceStatus, Option<bool>)]) -> String {
    let mut out =
        String::from("STANZA           STATE            PID      PORT   VERSION  DATA DIRECTORY\n");
    for (s, in_dest) in statuses {
        let state = if s.running {
            "running"
        } else if s.initialised {
            "stopped"
        } else if s.port.is_some() {
            "no cluster"
        } else {
            "no instance"
        };
        out.push_str(&format!(
            "{:<16} {:<16} {:<8} {:<6} {:<8} {}{}\n",
            s.stanza,
            state,
            s.pid.map_or("-".into(), |p| p.to_string()),
            s.port.map_or("-".into(), |p| p.to_string()),
            s.pg_version.as_deref().unwrap_or("-"),
            if s.port.is_some() {
                s.data_dir.display().to_string()
            } else {
                "-".into()
            },
            match in_dest {
                Some(false) => "  (stanza not in the destination)",
                _ => "",
            }
        ));
    }
    for (s, _) in statuses.iter().filter(|(s, _)| s.running) {
        out.push_str(&format!(
            "connect to {}: psql -h {} -p {} -U postgres (as root or postgres), or -h localhost with a password\n",
            s.stanza,
            s.socket_dir.display(),
            s.port.unwrap_or(0)
        ));
    }
    out
}

fn status(args: &PostgresArgs, manager: &Instances) -> Result<ExitCode, CliError> {
    let list: Vec<Instance> = if args.clusters.is_empty() {
        instances(&manager.base)
    } else {
        args.clusters
            .iter()
            .map(|s| Instance::new(&manager.base, s))
            .collect()
    };
    let statuses: Vec<(InstanceStatus, Option<bool>)> =
        list.iter().map(|i| (i.status(), None)).collect();
    let text = match args.format {
        OutputFormat::Json => {
            let mut s = serde_json::to_string_pretty(&json!({
                "instances": statuses.iter().map(|(s, _)| s).collect::<Vec<_>>()
            }))
            .expect("json");
            s.push('\n');
            s
        }
        OutputFormat::Text if statuses.is_empty() => {
            "no local PostgreSQL exists yet: create one with `cbob postgres initdb --cluster STANZA`\n".into()
        }
        OutputFormat::Text => status_lines(&statuses),
    };
    print_out(&text)?;
    Ok(ExitCode::Success)
}

async fn list(
    args: &PostgresArgs,
    config: &Config,
    manager: &Instances,
) -> Result<ExitCode, CliError> {
    let (dest, description) = destination(config).await?;
    let in_dest = discover_stanzas(&dest)
        .await
        .map_err(|e| CliError::failure(e.to_string()))?;
    let mut names: Vec<String> = in_dest.clone();
    names.extend(instances(&manager.base).into_iter().map(|i| i.stanza));
    names.sort();
    names.dedup();
    if !args.clusters.is_empty() {
        names.retain(|n| args.clusters.contains(n));
    }
    let statuses: Vec<(InstanceStatus, Option<bool>)> = names
        .iter()
        .map(|n| {
            (
                Instance::new(&manager.base, n).status(),
                Some(in_dest.contains(n)),
            )
        })
        .collect();
    let text = match args.format {
        OutputFormat::Json => {
            let mut s = serde_json::to_string_pretty(&json!({
                "destination": description,
                "stanzas": statuses.iter().map(|(s, d)| json!({
                    "stanza": s.stanza,
                    "in_destination": d,
                    "instance": if s.port.is_some() { serde_json::to_value(s).expect("json") } else { serde_json::Value::Null },
                })).collect::<Vec<_>>(),
            }))
            .expect("json");
            s.push('\n');
            s
        }
        OutputFormat::Text if statuses.is_empty() => {
            format!("no stanza in {description} and no local PostgreSQL\n")
        }
        OutputFormat::Text => format!("destination {description}\n{}", status_lines(&statuses)),
    };
    print_out(&text)?;
    Ok(ExitCode::Success)
}

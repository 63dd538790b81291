//! `cbob config init` and `cbob config set`: the two commands that write a configuration file.
//!
//! Both validate before writing (a file that would make the configuration invalid is never
//! written), write atomically, keep a file holding secrets at mode 0600, and record an audit line
//! naming the keys (never their values).

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use clap::{Arg, ArgAction, ArgMatches, Args, Command, FromArgMatches};
use serde_json::json;

use cbob_core::audit::AuditLog;
use cbob_core::config::edit::{self, Setting};
use cbob_core::config::keys::{self, KEYS, KeyDef};
use cbob_core::config::{self, ConfigProblem, ConfigSources, Origin, envfile};

use crate::cli::GlobalArgs;
use crate::commands::print_out;
use crate::context;
use crate::exit_code::{CliError, ExitCode};

/// Flags of `config init` that are not settings.
const OWN_FLAGS: &[&str] = &[
    "file",
    "force",
    "import",
    "from-env",
    "non-interactive",
    "set",
];

/// Global flags a setting's flag would collide with; those settings go through `--set`.
const GLOBAL_FLAGS: &[&str] = &[
    "config",
    "log-level",
    "log-format",
    "dry-run",
    "no-lock",
    "quiet",
];

/// `dest.bucket` → `dest-bucket`.
fn flag_name(key: &KeyDef) -> String {
    key.toml.replace(['.', '_'], "-")
}

fn has_own_flag(key: &KeyDef) -> bool {
    let f = flag_name(key);
    !GLOBAL_FLAGS.contains(&f.as_str()) && !OWN_FLAGS.contains(&f.as_str())
}

/// `cbob config init`: one flag per setting (`--dest-bucket`, `--crunchy-api-key`, ...) besides
/// its own, so it can be scripted without a terminal. Built by hand from the key table, which
/// clap's derive cannot express.
#[derive(Debug, Default)]
pub struct InitArgs {
    pub file: Option<PathBuf>,
    pub force: bool,
    pub import: Option<PathBuf>,
    pub from_env: bool,
    pub non_interactive: bool,
    /// (environment name, value) from the setting flags and `--set`, in command-line order.
    pub values: Vec<(String, String)>,
}

impl FromArgMatches for InitArgs {
    fn from_arg_matches(m: &ArgMatches) -> Result<Self, clap::Error> {
        let mut args = InitArgs {
            file: m.get_one::<PathBuf>("file").cloned(),
            force: m.get_flag("force"),
            import: m.get_one::<PathBuf>("import").cloned(),
            from_env: m.get_flag("from-env"),
            non_interactive: m.get_flag("non-interactive"),
            values: Vec::new(),
        };
        for k in KEYS.iter().filter(|k| has_own_flag(k)) {
            if let Some(v) = m.get_one::<String>(k.env) {
                args.values.push((k.env.to_string(), v.clone()));
            }
        }
        for pair in m.get_many::<String>("set").into_iter().flatten() {
            let (name, value) = pair.split_once('=').ok_or_else(|| {
                clap::Error::raw(
                    clap::error::ErrorKind::ValueValidation,
                    format!("--set {pair:?}: write KEY=VALUE, e.g. --set CBOB_LOG_LEVEL=debug\n"),
                )
            })?;
            args.values
                .push((name.trim().to_string(), value.to_string()));
        }
        Ok(args)
    }

    fn update_from_arg_matches(&mut self, m: &ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(m)?;
        Ok(())
    }
}

impl Args for InitArgs {
    fn augment_args(cmd: Command) -> Command {
        let mut cmd = cmd
            .arg(
                Arg::new("file")
                    .long("file")
                    .value_name("PATH")
                    .value_parser(clap::value_parser!(PathBuf))
                    .help("File to write [default: --config / CBOB_CONFIG_FILE, else /etc/cbob/cbob.toml as root, else ~/.config/cbob/cbob.toml]"),
            )
            .arg(
                Arg::new("force")
                    .long("force")
                    .action(ArgAction::SetTrue)
                    .help("Replace an existing file (the old one is kept as FILE.bak)"),
            )
            .arg(
                Arg::new("import")
                    .long("import")
                    .value_name("ENV_FILE")
                    .value_parser(clap::value_parser!(PathBuf))
                    .help("Start from a bash-era env-file (KEY=VALUE lines, e.g. /usr/local/etc/cb_offsite_backup); keys cbob no longer uses are dropped with the reason"),
            )
            .arg(
                Arg::new("from-env")
                    .long("from-env")
                    .action(ArgAction::SetTrue)
                    .help("Also take every CBOB_* / PGBACKREST_AUTO_* setting from the environment (keeps secrets out of the process list)"),
            )
            .arg(
                Arg::new("non-interactive")
                    .long("non-interactive")
                    .action(ArgAction::SetTrue)
                    .help("Never prompt, even on a terminal (without a terminal init never prompts)"),
            )
            .arg(
                Arg::new("set")
                    .long("set")
                    .value_name("KEY=VALUE")
                    .action(ArgAction::Append)
                    .help("Any setting by environment name or TOML path (repeatable), e.g. --set CBOB_LOG_LEVEL=debug"),
            );
        for k in KEYS.iter().filter(|k| has_own_flag(k)) {
            // clap wants 'static names; the table is 'static, the derived flag names are made
            // once per process.
            let long: &'static str = Box::leak(flag_name(k).into_boxed_str());
            let help = format!(
                "{} [{}]{}",
                k.help,
                k.env,
                if k.secret {
                    " (secret: prefer --from-env, flags show in the process list)"
                } else {
                    ""
                }
            );
            cmd = cmd.arg(
                Arg::new(k.env)
                    .long(long)
                    .value_name("VALUE")
                    .help(help)
                    .help_heading("Settings"),
            );
        }
        cmd
    }

    fn augment_args_for_update(cmd: Command) -> Command {
        Self::augment_args(cmd)
    }
}

/// `cbob config set KEY VALUE`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  cbob config set CBOB_DEST_BUCKET offsite-backups\n  \
    cbob config set dest.prefix crunchy\n  cbob config set transfers ''      # remove the key from the file"
)]
pub struct SetArgs {
    /// The setting, by environment name (CBOB_DEST_BUCKET) or TOML path (dest.bucket)
    pub key: String,
    /// The value; an empty value removes the key from the file (its default applies again)
    pub value: String,
    /// The TOML file to change [default: --config / CBOB_CONFIG_FILE, else the file cbob reads]
    #[arg(long, value_name = "PATH")]
    pub file: Option<PathBuf>,
}

/// The key for a name, or a usage error with "did you mean" / the legacy reason.
fn resolve_key(name: &str) -> Result<&'static KeyDef, CliError> {
    if let Some(k) = keys::lookup(name) {
        return Ok(k);
    }
    if let Some(why) = keys::legacy_reason(&name.to_ascii_uppercase()) {
        return Err(CliError::usage(format!(
            "{name} is a setting of the bash tool that cbob no longer uses: {why}"
        )));
    }
    let hint = keys::suggest(name, KEYS.iter().map(|k| k.env))
        .or_else(|| keys::suggest(name, KEYS.iter().map(|k| k.toml)))
        .map(|s| format!("; did you mean {s}?"))
        .unwrap_or_default();
    Err(CliError::usage(format!(
        "unknown setting {name:?}{hint} (`cbob config show` lists them all)"
    )))
}

fn user_config_file(sources: &ConfigSources) -> Option<PathBuf> {
    if sources.is_root {
        return Some(PathBuf::from("/etc/cbob/cbob.toml"));
    }
    sources.toml_candidates().into_iter().next()
}

/// Where `init` writes: `--file`, `--config`, `$CBOB_CONFIG_FILE`, else the standard path.
fn init_target(
    global: &GlobalArgs,
    args: &InitArgs,
    sources: &ConfigSources,
) -> Result<PathBuf, CliError> {
    args.file
        .clone()
        .or_else(|| global.config.clone())
        .or_else(|| {
            sources
                .env
                .get(keys::CONFIG_FILE_ENV)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        })
        .or_else(|| user_config_file(sources))
        .ok_or_else(|| CliError::usage("no place for the file: HOME is not set; give --file PATH"))
}

/// Loads the configuration with `file` as the TOML file and the real environment and flags on
/// top; returns the error problems (key and message; origins differ between temp and real files).
fn errors_with(global: &GlobalArgs, file: Option<&Path>) -> Vec<(Option<String>, String)> {
    let mut sources = context::sources(global, |_| {});
    sources.config_file = file.map(Path::to_path_buf);
    match config::load(&sources) {
        Ok(_) => Vec::new(),
        Err(e) => e
            .errors()
            .map(|p| (p.key.clone(), p.message.clone()))
            .collect(),
    }
}

/// Writes `text` to a temporary `.toml` file and loads it alone (no environment): the problems
/// a file brings by itself.
fn validate_alone(text: &str, home: &Path) -> Result<Vec<ConfigProblem>, CliError> {
    let dir = tempfile::tempdir().map_err(CliError::from)?;
    let path = dir.path().join("cbob.toml");
    std::fs::write(&path, text)?;
    let mut sources = ConfigSources::isolated(home);
    sources.config_file = Some(path);
    Ok(match config::load(&sources) {
        Ok(cfg) => cfg.warnings,
        Err(e) => e.problems,
    })
}

fn lookup_value(name: &str) -> Result<&'static KeyDef, CliError> {
    resolve_key(name).map_err(|e| CliError::usage(format!("config init: {}", e.message)))
}

pub fn init(global: &GlobalArgs, args: &InitArgs) -> Result<ExitCode, CliError> {
    let sources = context::sources(global, |_| {});
    let target = init_target(global, args, &sources)?;
    if target.exists() && !args.force {
        let hint = match std::fs::read_to_string(&target) {
            Ok(t) if envfile::looks_like_env_file(&t) => format!(
                "; it is a bash-era env-file: convert it with `cbob config init --import {} --file NEW.toml`",
                target.display()
            ),
            _ => "; change single settings with `cbob config set`, or use --force to replace it"
                .into(),
        };
        return Err(CliError::usage(format!(
            "{} exists{hint}",
            target.display()
        )));
    }

    // Lowest to highest: imported env-file < environment (--from-env) < flags.
    let mut values: BTreeMap<&'static str, (&'static KeyDef, String)> = BTreeMap::new();
    let mut notes = Vec::new();
    if let Some(path) = &args.import {
        let import = edit::import_env_file(path).map_err(|e| CliError::usage(e.to_string()))?;
        for (k, v) in import.settings {
            values.insert(k.env, (k, v));
        }
        notes.extend(import.notes);
    }
    if args.from_env {
        for (name, value) in &sources.env {
            if let Some(k) = keys::by_env(name)
                && !value.is_empty()
            {
                values.insert(k.env, (k, value.clone()));
            }
        }
    }
    for (name, value) in &args.values {
        let k = lookup_value(name)?;
        values.insert(k.env, (k, value.clone()));
    }
    let mut bad = Vec::new();
    for (k, v) in values.values() {
        if let Err(e) = edit::check_value(k, v) {
            bad.push(e.to_string());
        }
    }
    if !bad.is_empty() {
        return Err(CliError::usage(format!(
            "config init: nothing written:\n  {}",
            bad.join("\n  ")
        )));
    }

    let interactive =
        !args.non_interactive && std::io::stdin().is_terminal() && std::io::stderr().is_terminal();
    if interactive {
        super::config_prompt::ask(&mut values)?;
    }

    let settings: Vec<Setting> = values.into_values().collect();
    let header = format!(
        "cbob configuration, written by `cbob config init` on {}.\n\
         Every setting is listed with its environment name; uncomment to change a default.\n\
         The environment (CBOB_*) overrides this file. Check with `cbob config validate --check`.\n\
         Mode 0600: this file may hold secrets.",
        chrono::Utc::now().format("%Y-%m-%d")
    );
    let text = edit::render_init(&settings, &header);
    let home = sources.home().unwrap_or_else(std::env::temp_dir);
    let problems = validate_alone(&text, &home)?;
    let errors: Vec<&ConfigProblem> = problems.iter().filter(|p| p.is_error()).collect();
    if !errors.is_empty() {
        let list: Vec<String> = errors
            .iter()
            .map(|p| {
                // The temp file's name means nothing to the operator.
                let mut p = (*p).clone();
                if matches!(p.origin, Origin::TomlFile(_)) {
                    p.origin = Origin::Unset;
                }
                p.to_string()
            })
            .collect();
        return Err(CliError::usage(format!(
            "config init: the configuration would be invalid, nothing written:\n{}",
            list.join("\n")
        )));
    }
    if target.exists() {
        let backup = PathBuf::from(format!("{}.bak", target.display()));
        std::fs::copy(&target, &backup)?;
        std::fs::set_permissions(&backup, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
        notes.push(format!("the previous file is kept as {}", backup.display()));
    }
    edit::write_atomic(&target, &text, true).map_err(|e| match e {
        edit::EditError::Io { source, path } => CliError::new(
            crate::exit_code::for_io(source.kind()),
            format!("writing {}: {source}", path.display()),
        ),
        other => CliError::failure(other.to_string()),
    })?;

    let mut out = format!(
        "wrote {} (mode 0600) with {} setting{}\n",
        target.display(),
        settings.len(),
        if settings.len() == 1 { "" } else { "s" }
    );
    for n in &notes {
        out.push_str(&format!("  note: {n}\n"));
    }
    let overridden: Vec<&str> = settings
        .iter()
        .filter(|(k, _)| !args.from_env && sources.env.contains_key(k.env))
        .map(|(k, _)| k.env)
        .collect();
    if !overridden.is_empty() {
        out.push_str(&format!(
            "  note: the environment also sets {}, which overrides the file\n",
            overridden.join(", ")
        ));
    }
    out.push_str("next: cbob config validate --check\n");
    print_out(&out)?;
    audit(
        global,
        &target,
        "init",
        settings.iter().map(|(k, _)| k.env).collect(),
    );
    Ok(ExitCode::Success)
}

/// The TOML file `set` changes: `--file`, else `--config` / `$CBOB_CONFIG_FILE`, else the first
/// existing file of the search path.
fn set_target(
    global: &GlobalArgs,
    args: &SetArgs,
    sources: &ConfigSources,
) -> Result<PathBuf, CliError> {
    let explicit = args
        .file
        .clone()
        .or_else(|| global.config.clone())
        .or_else(|| {
            sources
                .env
                .get(keys::CONFIG_FILE_ENV)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        });
    let path = match explicit {
        Some(p) => p,
        None => sources
            .toml_candidates()
            .into_iter()
            .find(|p| p.is_file())
            .ok_or_else(|| {
                CliError::usage(format!(
                    "no TOML configuration file to change (looked for {}); create one with `cbob config init`",
                    sources
                        .toml_candidates()
                        .iter()
                        .map(|p| p.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            })?,
    };
    if !path.is_file() {
        return Err(CliError::usage(format!(
            "{} does not exist; create it with `cbob config init --file {}`",
            path.display(),
            path.display()
        )));
    }
    Ok(path)
}

pub fn set(global: &GlobalArgs, args: &SetArgs) -> Result<ExitCode, CliError> {
    let key = resolve_key(&args.key)?;
    let sources = context::sources(global, |_| {});
    let path = set_target(global, args, &sources)?;
    let old = std::fs::read_to_string(&path).map_err(|e| {
        CliError::new(
            crate::exit_code::for_io(e.kind()),
            format!("reading {}: {e}", path.display()),
        )
    })?;
    if path.extension().is_none_or(|e| e != "toml") && envfile::looks_like_env_file(&old) {
        return Err(CliError::usage(format!(
            "{} is a bash-era env-file, which cbob reads but does not edit; convert it with \
             `cbob config init --import {} --file ~/.config/cbob/cbob.toml` (then point CBOB_CONFIG_FILE there)",
            path.display(),
            path.display()
        )));
    }
    let value = (!args.value.trim().is_empty()).then_some(args.value.as_str());
    if let Some(v) = value {
        edit::check_value(key, v).map_err(|e| CliError::usage(e.to_string()))?;
    }
    let new = edit::set_in_toml(&old, key, value)
        .map_err(|e| CliError::usage(format!("{}: {e}", path.display())))?;

    // Refuse a change that adds an error; errors already there are not this change's fault.
    let before = errors_with(global, Some(&path));
    let dir = tempfile::tempdir()?;
    let tmp = dir.path().join("cbob.toml");
    std::fs::write(&tmp, &new)?;
    let after = errors_with(global, Some(&tmp));
    let added: Vec<String> = after
        .iter()
        .filter(|e| !before.contains(e))
        .map(|(k, m)| match k {
            Some(k) => format!("error: {k}: {m}"),
            None => format!("error: {m}"),
        })
        .collect();
    if !added.is_empty() {
        return Err(CliError::usage(format!(
            "not changed: with {} {} the configuration would be invalid:\n{}",
            key.toml,
            if value.is_some() { "set" } else { "removed" },
            added.join("\n")
        )));
    }
    edit::write_atomic(&path, &new, edit::toml_holds_secret(&new)).map_err(|e| match e {
        edit::EditError::Io { source, path } => CliError::new(
            crate::exit_code::for_io(source.kind()),
            format!("writing {}: {source}", path.display()),
        ),
        other => CliError::failure(other.to_string()),
    })?;

    let shown = match value {
        Some(_) if key.secret => cbob_core::secret::MASK.to_string(),
        Some(v) => v.trim().to_string(),
        None => String::new(),
    };
    let mut out = match value {
        Some(_) => format!("{} = {shown} in {}\n", key.toml, path.display()),
        None => format!("{} removed from {}\n", key.toml, path.display()),
    };
    if sources.env.get(key.env).is_some_and(|v| !v.is_empty()) {
        out.push_str(&format!(
            "note: {} is also set in the environment, which takes precedence over the file\n",
            key.env
        ));
    }
    print_out(&out)?;
    audit(
        global,
        &path,
        if value.is_some() { "set" } else { "unset" },
        vec![key.env],
    );
    Ok(ExitCode::Success)
}

/// One audit line under the base path the configuration now gives (nothing when it cannot be
/// loaded: the change was still made, and the file itself is the record).
fn audit(global: &GlobalArgs, file: &Path, action: &str, keys: Vec<&str>) {
    let mut sources = context::sources(global, |_| {});
    sources.config_file = Some(file.to_path_buf());
    if let Ok(cfg) = config::load(&sources) {
        AuditLog::in_base(&cfg.base_path).record(
            "config",
            action,
            json!({"file": file.display().to_string(), "keys": keys}),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_setting_has_a_flag_or_goes_through_set() {
        let cmd = InitArgs::augment_args(Command::new("init"));
        cmd.clone().debug_assert();
        let with_flag = KEYS.iter().filter(|k| has_own_flag(k)).count();
        assert!(with_flag >= KEYS.len() - 4, "{with_flag} of {}", KEYS.len());
        let m = cmd
            .try_get_matches_from([
                "init",
                "--dest-bucket",
                "b",
                "--set",
                "CBOB_LOG_LEVEL=debug",
                "--crunchy-api-key",
                "k",
            ])
            .unwrap();
        let a = InitArgs::from_arg_matches(&m).unwrap();
        assert!(a.values.contains(&("CBOB_DEST_BUCKET".into(), "b".into())));
        assert!(
            a.values
                .contains(&("CBOB_LOG_LEVEL".into(), "debug".into()))
        );
        assert!(
            a.values
                .contains(&("CBOB_CRUNCHY_API_KEY".into(), "k".into()))
        );
    }
}

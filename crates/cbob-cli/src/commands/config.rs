//! `cbob config show|validate|get|init|set`. `init` and `set` live in `config_write.rs`,
//! `validate --check` in `config_check.rs`.

use cbob_core::config::{self, ConfigProblem, Origin, Resolved, Severity, keys};

use crate::cli::{ConfigArgs, ConfigCommand, GlobalArgs, ShowFormat};
use crate::context;
use crate::exit_code::{CliError, ExitCode};
use crate::providers;

use super::print_out;

pub fn run(global: &GlobalArgs, args: &ConfigArgs) -> Result<ExitCode, CliError> {
    match &args.command {
        ConfigCommand::Show { format, unmask } => show(global, *format, *unmask),
        ConfigCommand::Validate(v) => validate(global, v.check),
        ConfigCommand::Init(a) => super::config_write::init(global, a),
        ConfigCommand::Set(a) => super::config_write::set(global, a),
        ConfigCommand::Get { key, unmask } => get(global, key, *unmask),
    }
}

/// Prints the configuration even when it is invalid (that is when it is most useful), then the
/// problems on stderr and exit 2.
fn show(global: &GlobalArgs, format: ShowFormat, unmask: bool) -> Result<ExitCode, CliError> {
    match config::load(&context::sources(global, |_| {})) {
        Ok(cfg) => {
            context::init_logging(&cfg, global.quiet)?;
            print_out(&config::render(&cfg.resolved, format.into(), unmask))?;
            Ok(ExitCode::Success)
        }
        Err(err) => {
            print_out(&config::render(&err.resolved, format.into(), unmask))?;
            eprintln!("{err}");
            Ok(ExitCode::Usage)
        }
    }
}

/// Reports every problem, errors first, on stdout; exit 2 when any is an error. With `check`
/// (and no error), then proves the Bridge API, the destination and the notifiers reachable.
fn validate(global: &GlobalArgs, check: bool) -> Result<ExitCode, CliError> {
    let (mut problems, resolved, loaded) = match config::load(&context::sources(global, |_| {})) {
        Ok(cfg) => (cfg.warnings.clone(), cfg.resolved.clone(), Some(cfg)),
        Err(err) => (err.problems, err.resolved, None),
    };
    problems.extend(provider_problem(&resolved));
    problems.sort_by_key(|p| std::cmp::Reverse(p.severity));

    let mut out = String::new();
    let file = |p: &Option<std::path::PathBuf>| {
        p.as_ref()
            .map_or("none".into(), |p| p.display().to_string())
    };
    out.push_str(&format!(
        "TOML file: {}\nenv-file: {}\n",
        file(&resolved.toml_file),
        file(&resolved.env_file)
    ));
    for p in &problems {
        out.push_str(&format!("{p}\n"));
    }
    let errors = problems.iter().filter(|p| p.is_error()).count();
    let warnings = problems.len() - errors;
    let plural = |n: usize, word: &str| format!("{n} {word}{}", if n == 1 { "" } else { "s" });
    let code = if errors == 0 {
        out.push_str(&format!(
            "configuration is valid ({})\n",
            plural(warnings, "warning")
        ));
        ExitCode::Success
    } else {
        out.push_str(&format!(
            "configuration is invalid: {}, {}\n",
            plural(errors, "error"),
            plural(warnings, "warning")
        ));
        ExitCode::Usage
    };
    print_out(&out)?;
    match loaded {
        Some(cfg) if check && code == ExitCode::Success => super::config_check::run(&cfg),
        _ => Ok(code),
    }
}

/// A destination this binary cannot write to: compiled out (error, names the feature), or
/// compiled in without a registered provider (warning).
fn provider_problem(resolved: &Resolved) -> Option<ConfigProblem> {
    let value = resolved.get("CBOB_DEST_TYPE")?;
    let kind = value.raw.as_deref()?.to_ascii_lowercase();
    if !keys::DEST_TYPES.contains(&kind.as_str()) {
        return None; // already reported as a bad value
    }
    let origin = value.origin.clone();
    if let Some(feature) = providers::missing_feature(&kind) {
        return Some(ConfigProblem::error(
            "CBOB_DEST_TYPE".to_string(),
            origin,
            format!("this cbob binary was built without the {kind} provider"),
            format!(
                "rebuild with `cargo build -p cbob-cli --features {feature}`, or use a full build"
            ),
        ));
    }
    if !providers::registry()
        .enabled_kinds()
        .contains(&kind.as_str())
    {
        return Some(ConfigProblem {
            severity: Severity::Warning,
            key: Some("CBOB_DEST_TYPE".to_string()),
            origin,
            message: format!(
                "this cbob binary has no {kind} provider registered yet; commands writing there will fail"
            ),
            fix: "use a cbob release that includes the provider".to_string(),
        });
    }
    None
}

/// Prints one effective value; unset is exit 1, an unknown name or invalid configuration exit 2.
fn get(global: &GlobalArgs, name: &str, unmask: bool) -> Result<ExitCode, CliError> {
    let Some(key) = keys::lookup(name) else {
        let hint = keys::suggest(name, keys::KEYS.iter().map(|k| k.env))
            .or_else(|| keys::suggest(name, keys::KEYS.iter().map(|k| k.toml)))
            .map(|s| format!("; did you mean {s}?"))
            .unwrap_or_default();
        return Err(CliError::usage(format!(
            "unknown setting {name:?}{hint} (`cbob config show` lists them all)"
        )));
    };
    let cfg = context::load(global, |_| {})?;
    let value = cfg.resolved.get(key.env).expect("every key is resolved");
    match value.display_value(unmask) {
        Some(text) => {
            print_out(&format!("{text}\n"))?;
            Ok(ExitCode::Success)
        }
        None => {
            debug_assert_eq!(value.origin, Origin::Unset);
            Err(CliError::failure(format!("{} is not set", key.env)))
        }
    }
}

//! The questions `cbob config init` asks on a terminal. Every answer is checked like a value
//! from any other source before it is accepted; values given as flags, imported or taken from
//! the environment are the defaults; an empty answer keeps the default (or leaves it unset).
//! Secrets are read without echo.

use std::collections::BTreeMap;

use dialoguer::theme::ColorfulTheme;
use dialoguer::{Input, Password, Select};

use cbob_core::config::edit;
use cbob_core::config::keys::{self, DEST_TYPES, DefaultValue, KeyDef};

use crate::exit_code::CliError;

type Values = BTreeMap<&'static str, (&'static KeyDef, String)>;

fn io_err(e: dialoguer::Error) -> CliError {
    CliError::failure(format!("config init: cannot read the answer: {e}"))
}

/// Asks for one key; stores a non-empty answer.
fn ask_key(values: &mut Values, env: &str) -> Result<(), CliError> {
    let key = keys::by_env(env).expect("prompted keys are in the table");
    let current = values.get(env).map(|(_, v)| v.clone());
    let prompt = format!("{} [{}]", key.help, key.env);
    let answer = if key.secret {
        let hint = if current.is_some() {
            " (empty: keep the value given)"
        } else {
            " (empty: leave unset)"
        };
        let text = Password::with_theme(&ColorfulTheme::default())
            .with_prompt(format!("{prompt}{hint}"))
            .allow_empty_password(true)
            .validate_with(|v: &String| -> Result<(), String> {
                if v.is_empty() {
                    Ok(())
                } else {
                    edit::check_value(key, v).map_err(|e| e.to_string())
                }
            })
            .interact()
            .map_err(io_err)?;
        if text.is_empty() { current } else { Some(text) }
    } else {
        let default = current.clone().or_else(|| match key.default {
            DefaultValue::Static(d) => Some(d.to_string()),
            _ => None,
        });
        let theme = ColorfulTheme::default();
        let mut input = Input::<String>::with_theme(&theme)
            .with_prompt(prompt)
            .allow_empty(true)
            .validate_with(|v: &String| -> Result<(), String> {
                if v.trim().is_empty() {
                    Ok(())
                } else {
                    edit::check_value(key, v).map_err(|e| e.to_string())
                }
            });
        if let Some(d) = &default {
            input = input.default(d.clone());
        }
        let text = input.interact_text().map_err(io_err)?;
        let text = text.trim().to_string();
        match (&key.default, text.is_empty()) {
            (_, true) => current,
            // Writing a default back would pin it; leave the key to its default instead.
            (DefaultValue::Static(d), false) if *d == text && current.is_none() => None,
            _ => Some(text),
        }
    };
    match answer {
        Some(v) => {
            values.insert(key.env, (key, v));
        }
        None => {
            values.remove(key.env);
        }
    }
    Ok(())
}

/// The interview: source, destination (by type), local paths, notifications, schedule.
pub fn ask(values: &mut Values) -> Result<(), CliError> {
    eprintln!("cbob config init: answer each question, or press Enter to keep the value shown.");
    ask_key(values, "CBOB_CRUNCHY_API_KEY")?;

    let current = values
        .get("CBOB_DEST_TYPE")
        .map(|(_, v)| v.to_ascii_lowercase())
        .unwrap_or_else(|| "local".into());
    let idx = DEST_TYPES.iter().position(|t| *t == current).unwrap_or(0);
    let choice = Select::with_theme(&ColorfulTheme::default())
        .with_prompt("Where should the backups be copied? [CBOB_DEST_TYPE]")
        .items(DEST_TYPES)
        .default(idx)
        .interact()
        .map_err(io_err)?;
    let dest = DEST_TYPES[choice];
    let key = keys::by_env("CBOB_DEST_TYPE").expect("in the table");
    if dest == "local" && !values.contains_key("CBOB_DEST_TYPE") {
        values.remove("CBOB_DEST_TYPE");
    } else {
        values.insert(key.env, (key, dest.to_string()));
    }
    let per_type: &[&str] = match dest {
        "local" => &["CBOB_TARGET_PATH"],
        "s3" => &[
            "CBOB_DEST_BUCKET",
            "CBOB_DEST_PREFIX",
            "CBOB_DEST_REGION",
            "CBOB_DEST_ENDPOINT",
            "CBOB_DEST_ACCESS_KEY",
            "CBOB_DEST_SECRET_KEY",
        ],
        "minio" => &[
            "CBOB_DEST_ENDPOINT",
            "CBOB_DEST_BUCKET",
            "CBOB_DEST_PREFIX",
            "CBOB_DEST_ACCESS_KEY",
            "CBOB_DEST_SECRET_KEY",
        ],
        "azure" => &[
            "CBOB_DEST_AZURE_ACCOUNT",
            "CBOB_DEST_CONTAINER",
            "CBOB_DEST_PREFIX",
            "CBOB_DEST_AZURE_KEY",
            "CBOB_DEST_AZURE_SAS",
        ],
        _ => &[
            "CBOB_DEST_BUCKET",
            "CBOB_DEST_PREFIX",
            "CBOB_DEST_GCS_CREDENTIALS",
        ],
    };
    for env in per_type {
        ask_key(values, env)?;
    }
    for env in [
        "CBOB_BASE_PATH",
        "CBOB_SLACK_WEBHOOK_URL",
        "CBOB_SYNC_HEARTBEAT_URL",
        "CBOB_RESTORE_HEARTBEAT_URL",
        "CBOB_SCHEDULE_SYNC",
        "CBOB_SCHEDULE_RESTORE_CHECK",
    ] {
        ask_key(values, env)?;
    }
    Ok(())
}

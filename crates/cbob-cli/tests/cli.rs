//! The `cbob` binary end to end: configuration sources and precedence, validation, secret
//! masking, logging, exit codes. Every run gets an empty environment and a temporary HOME.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

const SYSTEM_FILES: &[&str] = &[
    "/etc/cbob/cbob.toml",
    "/usr/local/etc/cb_offsite_backup",
    "/etc/cb_offsite_backup",
];

struct Sandbox {
    dir: tempfile::TempDir,
}

struct Output {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Sandbox {
    fn new() -> Self {
        // These would be read by every test run; fail loudly rather than test the wrong thing.
        for f in SYSTEM_FILES {
            assert!(
                !Path::new(f).exists(),
                "{f} exists on this machine; the CLI tests need it absent"
            );
        }
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("home")).unwrap();
        Self { dir }
    }

    fn home(&self) -> PathBuf {
        self.dir.path().join("home")
    }

    fn write(&self, rel: &str, text: &str) -> PathBuf {
        let path = self.dir.path().join(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, text).unwrap();
        path
    }

    /// `cbob` with only HOME (and PATH) in its environment, plus `env`.
    fn run(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_cbob"));
        cmd.env_clear()
            .env("HOME", self.home())
            .env("PATH", "/usr/bin:/bin")
            .args(args)
            .current_dir(self.dir.path());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().expect("run cbob");
        Output {
            code: out.status.code().expect("exit code"),
            stdout: String::from_utf8(out.stdout).unwrap(),
            stderr: String::from_utf8(out.stderr).unwrap(),
        }
    }

    fn show_json(&self, args: &[&str], env: &[(&str, &str)]) -> Value {
        let mut all = vec!["config", "show", "--format", "json"];
        all.extend_from_slice(args);
        let out = self.run(&all, env);
        assert_eq!(out.code, 0, "{}", out.stderr);
        serde_json::from_str(&out.stdout).expect("config show --format json is JSON")
    }
}

fn setting<'a>(doc: &'a Value, key: &str) -> &'a Value {
    &doc["settings"][key]
}

#[test]
fn version_and_help() {
    let sb = Sandbox::new();
    let out = sb.run(&["--version"], &[]);
    assert_eq!(out.code, 0);
    assert_eq!(
        out.stdout.trim(),
        format!("cbob {}", env!("CARGO_PKG_VERSION"))
    );

    let out = sb.run(&["--help"], &[]);
    assert_eq!(out.code, 0);
    for needle in [
        "config",
        "completions",
        "--log-level",
        "CBOB_LOG_LEVEL",
        "--dry-run",
        "Exit codes",
        "4  another run",
    ] {
        assert!(
            out.stdout.contains(needle),
            "{needle} missing from --help:\n{}",
            out.stdout
        );
    }
    let out = sb.run(&["config", "get", "--help"], &[]);
    assert_eq!(out.code, 0);
    assert!(out.stdout.contains("CBOB_DEST_BUCKET"), "{}", out.stdout);
}

#[test]
fn usage_errors_exit_2() {
    let sb = Sandbox::new();
    for args in [
        &["bogus"][..],
        &[][..],
        &["config"][..],
        &["config", "show", "--format", "yaml"][..],
        &["--log-level", "loud", "config", "show"][..],
        &["config", "get"][..],
        &["completions", "tcsh-ish"][..],
        &[
            "sync",
            "--source",
            "file:///nonexistent",
            "--cluster",
            "abc",
        ][..],
        &["sync", "--source", "ftp://host/repo", "--target", "/tmp/x"][..],
    ] {
        let out = sb.run(args, &[]);
        assert_eq!(out.code, 2, "{args:?}: {}", out.stderr);
        assert!(!out.stderr.is_empty(), "{args:?} printed no error");
    }
}

#[test]
fn precedence_defaults_toml_envfile_env_flags() {
    let sb = Sandbox::new();
    let toml = sb.write(
        "xdg/cbob/cbob.toml",
        "transfers = 3\nparallel = 3\n[retry]\ncount = 3\n[log]\nlevel = \"error\"\n",
    );
    sb.write(
        "home/.cb_offsite_backup",
        "CBOB_PARALLEL=4\nCBOB_RETRY_COUNT=4\nCBOB_LOG_LEVEL=warn\n",
    );
    let xdg = sb.dir.path().join("xdg");
    let env = [
        ("XDG_CONFIG_HOME", xdg.to_str().unwrap()),
        ("CBOB_RETRY_COUNT", "5"),
        ("CBOB_LOG_LEVEL", "info"),
    ];
    let doc = sb.show_json(&["--log-level", "debug", "--dry-run"], &env);
    let check = |key: &str, value: Value, kind: &str| {
        assert_eq!(setting(&doc, key)["value"], value, "{key}");
        assert_eq!(setting(&doc, key)["origin_kind"], kind, "{key}");
    };
    check("CBOB_RETRY_DELAY", 1.into(), "default");
    check("CBOB_TRANSFERS", 3.into(), "toml");
    check("CBOB_PARALLEL", 4.into(), "env-file");
    check("CBOB_RETRY_COUNT", 5.into(), "environment");
    check("CBOB_LOG_LEVEL", "debug".into(), "flag");
    check("CBOB_DRY_RUN", true.into(), "flag");
    assert_eq!(
        setting(&doc, "CBOB_LOG_LEVEL")["origin"],
        "command line --log-level"
    );
    assert_eq!(doc["files"]["toml"], toml.display().to_string());

    // --config beats CBOB_CONFIG_FILE, which beats the search.
    let named = sb.write("named.toml", "transfers = 9\n");
    let flagged = sb.write("flagged.toml", "transfers = 10\n");
    let mut env2 = env.to_vec();
    env2.push(("CBOB_CONFIG_FILE", named.to_str().unwrap()));
    assert_eq!(
        setting(&sb.show_json(&[], &env2), "CBOB_TRANSFERS")["value"],
        9
    );
    let doc = sb.show_json(&["--config", flagged.to_str().unwrap()], &env2);
    assert_eq!(setting(&doc, "CBOB_TRANSFERS")["value"], 10);
    assert_eq!(
        setting(&doc, "CBOB_TRANSFERS")["origin"],
        format!("TOML file {}", flagged.display())
    );
}

#[test]
fn legacy_env_file_format() {
    let sb = Sandbox::new();
    let path = sb.write(
        "home/.cb_offsite_backup",
        "# written by the bash tool\n\
         CBOB_CRUNCHY_API_KEY=cbkey_abc\n\
         export CBOB_SLACK_CHANNEL='#backup log'\n\
         CBOB_CRUNCHY_CLUSTERS=\"abc123,def456\"   # two clusters\n\
         CBOB_TARGET_PATH=/mnt/crunchy_bridge_backups\n\
         CBOB_PG_VERSION=18\n",
    );
    let get = |key: &str| {
        let out = sb.run(&["config", "get", key], &[]);
        assert_eq!(out.code, 0, "{key}: {}", out.stderr);
        out.stdout.trim_end_matches('\n').to_string()
    };
    assert_eq!(get("CBOB_SLACK_CHANNEL"), "#backup log");
    assert_eq!(get("crunchy.clusters"), "abc123,def456");
    assert_eq!(get("target_path"), "/mnt/crunchy_bridge_backups");

    let out = sb.run(&["config", "show"], &[]);
    assert!(
        out.stdout
            .contains(&format!("# env-file {}:3", path.display())),
        "origin names file and line:\n{}",
        out.stdout
    );
    let out = sb.run(&["config", "validate"], &[]);
    assert_eq!(out.code, 0, "{}", out.stdout);
    assert!(
        out.stdout.contains("warning: CBOB_PG_VERSION")
            && out.stdout.contains("configuration is valid (1 warning)")
    );

    sb.write(
        "home/.cb_offsite_backup",
        "CBOB_TRANSFERS=4\nexport\nCBOB_PARALLEL=2\n",
    );
    let out = sb.run(&["config", "validate"], &[]);
    assert_eq!(out.code, 2);
    assert!(
        out.stdout.contains(&format!("{}:2", path.display())),
        "{}",
        out.stdout
    );
    // Any command refuses to work with it.
    let out = sb.run(&["config", "get", "CBOB_TRANSFERS"], &[]);
    assert_eq!(out.code, 2);
    assert!(
        out.stdout.is_empty() && out.stderr.contains(&format!("{}:2", path.display())),
        "{}",
        out.stderr
    );
}

#[test]
fn validate_reports_every_problem_at_once() {
    let sb = Sandbox::new();
    sb.write(
        "home/.config/cbob/cbob.toml",
        "[dest]\ntype = \"s3\"\nbukcet = \"x\"\n",
    );
    let out = sb.run(
        &["config", "validate"],
        &[
            ("CBOB_TRANSFERS", "0"),
            ("CBOB_BANDWIDTH", "fast"),
            ("CBOB_CRUNCHY_CLUSTERS", "abc,Bad_Id"),
            ("CBOB_RETRY_DELAY", "soon"),
        ],
    );
    assert_eq!(out.code, 2, "{}", out.stdout);
    let errors: Vec<&str> = out
        .stdout
        .lines()
        .filter(|l| l.starts_with("error:"))
        .collect();
    for key in [
        "CBOB_TRANSFERS",
        "CBOB_BANDWIDTH",
        "CBOB_CRUNCHY_CLUSTERS",
        "CBOB_RETRY_DELAY",
        "CBOB_DEST_BUCKET",
        "dest.bukcet",
    ] {
        assert!(
            errors.iter().any(|l| l.contains(key)),
            "{key} not reported:\n{}",
            out.stdout
        );
    }
    assert_eq!(
        out.stdout.matches("\n  fix: ").count(),
        out.stdout.matches("\nerror: ").count() + out.stdout.matches("\nwarning: ").count()
    );
    assert!(
        out.stdout.contains("did you mean `dest.bucket`?"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("configuration is invalid: 6 errors"),
        "{}",
        out.stdout
    );

    let ok = sb.run(&["config", "validate"], &[("CBOB_DEST_TYPE", "local")]);
    assert_eq!(ok.code, 2, "the TOML typo is still an error");
    fs::remove_file(sb.home().join(".config/cbob/cbob.toml")).unwrap();
    let ok = sb.run(&["config", "validate"], &[]);
    assert_eq!(ok.code, 0, "{}", ok.stdout);
    assert!(
        ok.stdout.contains("configuration is valid (0 warnings)"),
        "{}",
        ok.stdout
    );
}

const SECRETS: &[(&str, &str)] = &[
    ("CBOB_CRUNCHY_API_KEY", "cbkey_SECRET_0001"),
    ("CBOB_DEST_ACCESS_KEY", "AKIA_SECRET_0002"),
    ("CBOB_DEST_SECRET_KEY", "SECRET_0003_dest"),
    ("CBOB_SLACK_CLI_TOKEN", "xoxb-SECRET-0004"),
    ("CBOB_SYNC_HEARTBEAT_URL", "https://hc-ping.com/SECRET-0005"),
    (
        "CBOB_SLACK_WEBHOOK_URL",
        "https://hooks.slack.com/services/SECRET0006",
    ),
];

fn secret_env() -> Vec<(&'static str, &'static str)> {
    let mut env = SECRETS.to_vec();
    env.extend([("CBOB_DEST_TYPE", "s3"), ("CBOB_DEST_BUCKET", "bkt")]);
    env
}

fn assert_no_secret(text: &str, what: &str) {
    for (key, secret) in SECRETS {
        assert!(!text.contains(secret), "{key} leaked in {what}:\n{text}");
    }
}

#[test]
fn secrets_masked_unless_unmask() {
    let sb = Sandbox::new();
    let env = secret_env();
    for format in ["text", "json", "env"] {
        let out = sb.run(&["config", "show", "--format", format], &env);
        assert_eq!(out.code, 0, "{}", out.stderr);
        assert_no_secret(&out.stdout, format);
        assert_no_secret(&out.stderr, format);
        assert!(out.stdout.contains("***"), "{format}");
        let out = sb.run(&["config", "show", "--format", format, "--unmask"], &env);
        for (_, secret) in SECRETS {
            assert!(
                out.stdout.contains(secret),
                "{secret} missing from --unmask {format}"
            );
        }
    }
    let doc = sb.show_json(&[], &env);
    assert_eq!(setting(&doc, "CBOB_DEST_ACCESS_KEY")["value"], "***");
    assert_eq!(setting(&doc, "CBOB_DEST_ACCESS_KEY")["secret"], true);
    assert_eq!(setting(&doc, "CBOB_DEST_BUCKET")["value"], "bkt");

    let out = sb.run(&["config", "get", "CBOB_DEST_SECRET_KEY"], &env);
    assert_eq!((out.code, out.stdout.as_str()), (0, "***\n"));
    let out = sb.run(&["config", "get", "dest.secret_key", "--unmask"], &env);
    assert_eq!((out.code, out.stdout.as_str()), (0, "SECRET_0003_dest\n"));
}

#[test]
fn env_format_round_trips_through_a_shell() {
    let sb = Sandbox::new();
    let tricky = "it's a \"quoted\" $HOME `cmd` value";
    let out = sb.run(
        &["config", "show", "--format", "env"],
        &[("CBOB_SLACK_CHANNEL", tricky)],
    );
    assert_eq!(out.code, 0);
    let script = sb.write("show.env", &out.stdout);
    let shell = Command::new("sh")
        .arg("-c")
        .arg(format!(
            ". '{}' && printf %s \"$CBOB_SLACK_CHANNEL|$CBOB_TRANSFERS\"",
            script.display()
        ))
        .output()
        .unwrap();
    assert!(
        shell.status.success(),
        "{}",
        String::from_utf8_lossy(&shell.stderr)
    );
    assert_eq!(
        String::from_utf8(shell.stdout).unwrap(),
        format!("{tricky}|16")
    );
}

#[test]
fn no_secret_in_logs_text_or_json() {
    let sb = Sandbox::new();
    let log_dir = sb.dir.path().join("logs");
    let mut env = secret_env();
    let log_dir_s = log_dir.to_str().unwrap().to_string();
    env.push(("CBOB_LOG_PATH", &log_dir_s));
    for format in ["text", "json"] {
        let out = sb.run(
            &[
                "--log-level",
                "trace",
                "--log-format",
                format,
                "config",
                "show",
            ],
            &env,
        );
        assert_eq!(out.code, 0, "{}", out.stderr);
        assert!(
            out.stderr.contains("configuration loaded"),
            "the config is logged at debug:\n{}",
            out.stderr
        );
        assert_no_secret(&out.stderr, &format!("{format} log"));
        if format == "json" {
            for line in out.stderr.lines() {
                let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
                assert!(
                    v["timestamp"].is_string() && v["level"].is_string(),
                    "{line}"
                );
            }
        }
    }
    let file = fs::read_to_string(log_dir.join("cbob.log")).expect("cbob.log under CBOB_LOG_PATH");
    assert!(file.contains("configuration loaded"));
    assert_no_secret(&file, "cbob.log");
}

#[test]
fn quiet_keeps_stderr_to_warnings() {
    let sb = Sandbox::new();
    let out = sb.run(
        &["-q", "--log-level", "debug", "config", "show"],
        &[("CBOB_PG_VERSION", "18")],
    );
    assert_eq!(out.code, 0);
    assert!(
        !out.stderr.contains("configuration loaded"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("CBOB_PG_VERSION"),
        "warnings still show:\n{}",
        out.stderr
    );
}

#[test]
fn config_get_exit_codes() {
    let sb = Sandbox::new();
    let out = sb.run(&["config", "get", "CBOB_TRANSFERS"], &[]);
    assert_eq!((out.code, out.stdout.as_str()), (0, "16\n"));
    let out = sb.run(&["config", "get", "CBOB_DEST_BUCKET"], &[]);
    assert_eq!(out.code, 1, "unset");
    assert!(
        out.stderr.contains("CBOB_DEST_BUCKET is not set"),
        "{}",
        out.stderr
    );
    let out = sb.run(&["config", "get", "CBOB_TRANSFRES"], &[]);
    assert_eq!(out.code, 2);
    assert!(
        out.stderr.contains("did you mean CBOB_TRANSFERS?"),
        "{}",
        out.stderr
    );
}

#[test]
fn show_prints_an_invalid_configuration_then_exits_2() {
    let sb = Sandbox::new();
    let out = sb.run(&["config", "show"], &[("CBOB_TRANSFERS", "lots")]);
    assert_eq!(out.code, 2);
    assert!(
        out.stdout.contains("CBOB_TRANSFERS") && out.stdout.contains("lots  # environment"),
        "{}",
        out.stdout
    );
    assert!(
        out.stderr.contains("error: CBOB_TRANSFERS (environment)"),
        "{}",
        out.stderr
    );
}

#[test]
fn completions() {
    let sb = Sandbox::new();
    for shell in ["bash", "zsh", "fish"] {
        let out = sb.run(&["completions", shell], &[]);
        assert_eq!(out.code, 0, "{shell}");
        assert!(
            out.stdout.contains("cbob") && out.stdout.contains("validate"),
            "{shell}"
        );
    }
}

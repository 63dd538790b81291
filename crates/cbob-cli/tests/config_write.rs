//! `cbob config init`, `config set` and `config validate --check`, end to end with the real
//! binary in an empty environment and a temporary HOME. Files are always named with --file or
//! --config: the default as root would be /etc/cbob/cbob.toml.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use cbob_test_support::bridge::FakeBridge;
use cbob_test_support::http_recorder::HttpRecorder;
use serde_json::Value;

struct Sandbox {
    dir: tempfile::TempDir,
}

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Sandbox {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("home")).unwrap();
        Self { dir }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn run(&self, args: &[&str], env: &[(&str, &str)]) -> Out {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_cbob"));
        cmd.env_clear()
            .env("HOME", self.path("home"))
            .env("PATH", "/usr/bin:/bin")
            .env("CBOB_BASE_PATH", self.path("base"))
            .args(args)
            // Not a terminal: init must never prompt.
            .stdin(Stdio::null())
            .current_dir(self.dir.path());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().expect("run cbob");
        Out {
            code: out.status.code().expect("exit code"),
            stdout: String::from_utf8(out.stdout).unwrap(),
            stderr: String::from_utf8(out.stderr).unwrap(),
        }
    }

    fn show(&self, file: &Path) -> Value {
        let out = self.run(
            &[
                "--config",
                file.to_str().unwrap(),
                "config",
                "show",
                "--format",
                "json",
                "--unmask",
            ],
            &[],
        );
        assert_eq!(out.code, 0, "{}", out.stderr);
        serde_json::from_str(&out.stdout).unwrap()
    }
}

fn mode(p: &Path) -> u32 {
    fs::metadata(p).unwrap().permissions().mode() & 0o777
}

fn value<'a>(doc: &'a Value, key: &str) -> &'a Value {
    &doc["settings"][key]["value"]
}

#[test]
fn init_without_a_terminal_writes_a_private_commented_file_from_flags_env_and_an_env_file() {
    let sb = Sandbox::new();
    let legacy = sb.path("cb_offsite_backup");
    fs::write(
        &legacy,
        "# bash tool settings\nCBOB_CRUNCHY_API_KEY=cbkey_from_envfile_1\nCBOB_CRUNCHY_CLUSTERS=abc123,def456\n\
         CBOB_TARGET_PATH=/mnt/backups\nCBOB_PG_VERSION=17\nCBOB_SLACK_CHANNEL=#backup-log\nTZ=UTC\n",
    )
    .unwrap();
    let file = sb.path("home/.config/cbob/cbob.toml");
    let out = sb.run(
        &[
            "config",
            "init",
            "--file",
            file.to_str().unwrap(),
            "--import",
            legacy.to_str().unwrap(),
            "--from-env",
            "--transfers",
            "32",
            "--schedule-sync",
            "30 3 * * *",
            "--set",
            "CBOB_LOG_LEVEL=debug",
            "--slack-channel",
            "#ops",
        ],
        &[(
            "CBOB_SLACK_WEBHOOK_URL",
            "https://hooks.slack.example/services/T/B/envsecret",
        )],
    );
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains(&format!(
            "wrote {} (mode 0600) with 9 settings",
            file.display()
        )),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains("CBOB_PG_VERSION: dropped, no longer used"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("TZ: dropped: not a cbob setting"),
        "{}",
        out.stdout
    );
    // --from-env took CBOB_BASE_PATH of the sandbox too: 4 from the env-file, 2 from the
    // environment, 3 more from flags (the channel flag overrides the env-file's).
    assert_eq!(mode(&file), 0o600);

    let text = fs::read_to_string(&file).unwrap();
    assert!(
        text.starts_with("# cbob configuration, written by `cbob config init`"),
        "{text}"
    );
    // Every key documented, unset ones commented out with their default.
    assert!(text.contains("# parallel = 2\n"), "{text}");
    assert!(text.contains("transfers = 32\n"), "{text}");
    assert!(
        text.contains("clusters = [\"abc123\", \"def456\"]"),
        "{text}"
    );

    // The file is what cbob now reads, value by value.
    let doc = sb.show(&file);
    assert_eq!(value(&doc, "CBOB_CRUNCHY_API_KEY"), "cbkey_from_envfile_1");
    assert_eq!(
        value(&doc, "CBOB_CRUNCHY_CLUSTERS"),
        &serde_json::json!(["abc123", "def456"])
    );
    assert_eq!(value(&doc, "CBOB_TARGET_PATH"), "/mnt/backups");
    assert_eq!(value(&doc, "CBOB_TRANSFERS"), 32);
    assert_eq!(value(&doc, "CBOB_LOG_LEVEL"), "debug");
    assert_eq!(value(&doc, "CBOB_SCHEDULE_SYNC"), "30 3 * * *");
    // The flag beats the env-file.
    assert_eq!(value(&doc, "CBOB_SLACK_CHANNEL"), "#ops");
    assert_eq!(
        value(&doc, "CBOB_SLACK_WEBHOOK_URL"),
        "https://hooks.slack.example/services/T/B/envsecret"
    );
    assert!(
        doc["settings"]["CBOB_TRANSFERS"]["origin"]
            .as_str()
            .unwrap()
            .starts_with("TOML file")
    );

    // An existing file is never replaced without --force; with it, the old one is kept.
    let again = sb.run(&["config", "init", "--file", file.to_str().unwrap()], &[]);
    assert_eq!(again.code, 2);
    assert!(again.stderr.contains("exists"), "{}", again.stderr);
    let forced = sb.run(
        &[
            "config",
            "init",
            "--file",
            file.to_str().unwrap(),
            "--force",
        ],
        &[],
    );
    assert_eq!(forced.code, 0, "{}", forced.stderr);
    let bak = PathBuf::from(format!("{}.bak", file.display()));
    assert_eq!(fs::read_to_string(&bak).unwrap(), text);
    assert_eq!(mode(&bak), 0o600);

    // The audit log names the keys, never the values.
    let audit = fs::read_to_string(sb.path("base/audit.log")).unwrap();
    assert!(
        audit.contains("\"action\":\"init\"") && audit.contains("CBOB_CRUNCHY_API_KEY"),
        "{audit}"
    );
    assert!(
        !audit.contains("cbkey_from_envfile_1") && !audit.contains("envsecret"),
        "{audit}"
    );
}

#[test]
fn init_refuses_values_that_would_make_the_configuration_invalid() {
    let sb = Sandbox::new();
    let file = sb.path("c.toml");
    let out = sb.run(
        &[
            "config",
            "init",
            "--file",
            file.to_str().unwrap(),
            "--transfers",
            "0",
        ],
        &[],
    );
    assert_eq!(out.code, 2);
    assert!(
        out.stderr.contains("CBOB_TRANSFERS: 0 is too small"),
        "{}",
        out.stderr
    );
    let out = sb.run(
        &[
            "config",
            "init",
            "--file",
            file.to_str().unwrap(),
            "--dest-type",
            "s3",
        ],
        &[],
    );
    assert_eq!(out.code, 2);
    assert!(
        out.stderr
            .contains("CBOB_DEST_BUCKET: required when CBOB_DEST_TYPE=s3"),
        "{}",
        out.stderr
    );
    let out = sb.run(
        &[
            "config",
            "init",
            "--file",
            file.to_str().unwrap(),
            "--set",
            "CBOB_DEST_BUKET=x",
        ],
        &[],
    );
    assert_eq!(out.code, 2);
    assert!(
        out.stderr.contains("did you mean CBOB_DEST_BUCKET?"),
        "{}",
        out.stderr
    );
    assert!(!file.exists(), "nothing is written when anything is wrong");
}

const COMMENTED: &str = "# Operator notes: do not touch the bucket.\n\
transfers = 8  # tuned for the 1 Gbit/s link\n\n\
[dest]\n\
# production bucket\n\
type = \"local\"\n";

#[test]
fn set_round_trips_keeps_comments_and_validates_before_writing() {
    let sb = Sandbox::new();
    let file = sb.path("cbob.toml");
    fs::write(&file, COMMENTED).unwrap();
    fs::set_permissions(&file, fs::Permissions::from_mode(0o644)).unwrap();
    let f = file.to_str().unwrap();
    let get = |key: &str| {
        let o = sb.run(&["--config", f, "config", "get", key, "--unmask"], &[]);
        (o.code, o.stdout.trim().to_string())
    };

    let out = sb.run(
        &["--config", f, "config", "set", "CBOB_TRANSFERS", "64"],
        &[],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.stdout, format!("transfers = 64 in {f}\n"));
    assert_eq!(get("transfers"), (0, "64".into()));
    let text = fs::read_to_string(&file).unwrap();
    assert!(text.starts_with("# Operator notes: do not touch the bucket.\ntransfers = 64  # tuned for the 1 Gbit/s link\n"), "{text}");
    assert!(
        text.contains("# production bucket\ntype = \"local\""),
        "{text}"
    );
    assert_eq!(mode(&file), 0o644, "no secret yet: the mode is kept");

    // A new table key, a list, by TOML path.
    assert_eq!(
        sb.run(
            &[
                "--config",
                f,
                "config",
                "set",
                "crunchy.clusters",
                "abc123, def456"
            ],
            &[]
        )
        .code,
        0
    );
    assert_eq!(get("CBOB_CRUNCHY_CLUSTERS"), (0, "abc123,def456".into()));

    // A secret: printed masked, and the file becomes private.
    let out = sb.run(
        &[
            "--config",
            f,
            "config",
            "set",
            "CBOB_CRUNCHY_API_KEY",
            "cbkey_set_secret_9",
        ],
        &[],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.stdout, format!("crunchy.api_key = *** in {f}\n"));
    assert_eq!(mode(&file), 0o600, "a file holding a secret is 0600");
    assert_eq!(
        get("CBOB_CRUNCHY_API_KEY"),
        (0, "cbkey_set_secret_9".into())
    );

    // Invalid values and changes that break the configuration leave the file as it was.
    let before = fs::read(&file).unwrap();
    let bad = sb.run(
        &["--config", f, "config", "set", "CBOB_TRANSFERS", "0"],
        &[],
    );
    assert_eq!(bad.code, 2);
    assert!(
        bad.stderr.contains("0 is too small: must be at least 1"),
        "{}",
        bad.stderr
    );
    let bad = sb.run(&["--config", f, "config", "set", "dest.type", "minio"], &[]);
    assert_eq!(bad.code, 2);
    assert!(
        bad.stderr
            .contains("CBOB_DEST_BUCKET: required when CBOB_DEST_TYPE=minio"),
        "{}",
        bad.stderr
    );
    let bad = sb.run(
        &["--config", f, "config", "set", "CBOB_DEST_BUKET", "x"],
        &[],
    );
    assert_eq!(bad.code, 2);
    assert!(
        bad.stderr.contains("did you mean CBOB_DEST_BUCKET?"),
        "{}",
        bad.stderr
    );
    let bad = sb.run(
        &["--config", f, "config", "set", "CBOB_PG_VERSION", "17"],
        &[],
    );
    assert_eq!(bad.code, 2);
    assert!(bad.stderr.contains("no longer uses"), "{}", bad.stderr);
    assert_eq!(
        fs::read(&file).unwrap(),
        before,
        "refused changes write nothing"
    );

    // An empty value removes the key: the default applies again.
    assert_eq!(
        sb.run(&["--config", f, "config", "set", "transfers", ""], &[])
            .code,
        0
    );
    assert_eq!(get("CBOB_TRANSFERS"), (0, "16".into()));
    assert!(
        fs::read_to_string(&file)
            .unwrap()
            .contains("# Operator notes")
    );

    // The environment still wins, and set says so.
    let out = sb.run(
        &["--config", f, "config", "set", "parallel", "4"],
        &[("CBOB_PARALLEL", "3")],
    );
    assert!(
        out.stdout
            .contains("CBOB_PARALLEL is also set in the environment"),
        "{}",
        out.stdout
    );
}

#[test]
fn set_does_not_edit_legacy_env_files_or_missing_files() {
    let sb = Sandbox::new();
    let env_file = sb.path("cb_offsite_backup");
    fs::write(&env_file, "CBOB_TARGET_PATH=/mnt/backups\n").unwrap();
    let out = sb.run(
        &[
            "--config",
            env_file.to_str().unwrap(),
            "config",
            "set",
            "transfers",
            "4",
        ],
        &[],
    );
    assert_eq!(out.code, 2);
    assert!(
        out.stderr.contains("bash-era env-file") && out.stderr.contains("config init --import"),
        "{}",
        out.stderr
    );
    let out = sb.run(
        &[
            "config",
            "set",
            "transfers",
            "4",
            "--file",
            sb.path("nope.toml").to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(out.code, 2);
    assert!(
        out.stderr
            .contains("does not exist; create it with `cbob config init"),
        "{}",
        out.stderr
    );
}

#[test]
fn validate_check_proves_the_api_key_the_destination_and_the_notifiers() {
    let sb = Sandbox::new();
    let api = FakeBridge::start("cbkey_good");
    api.add_team("t1", "Acme", true);
    let hooks = HttpRecorder::start();
    let target = sb.path("dest");
    fs::create_dir_all(&target).unwrap();
    let (slack, heartbeat) = (
        format!("{}/services/T/B/x", hooks.url()),
        format!("{}/ping/uuid", hooks.url()),
    );
    let env = |key: &'static str| {
        vec![
            ("CBOB_CRUNCHY_API_URL", api.url()),
            ("CBOB_CRUNCHY_API_KEY", key.to_string()),
            ("CBOB_TARGET_PATH", target.display().to_string()),
            ("CBOB_SLACK_WEBHOOK_URL", slack.clone()),
            ("CBOB_SYNC_HEARTBEAT_URL", heartbeat.clone()),
        ]
    };
    let run = |key: &'static str| {
        let e = env(key);
        let refs: Vec<(&str, &str)> = e.iter().map(|(k, v)| (*k, v.as_str())).collect();
        sb.run(&["config", "validate", "--check"], &refs)
    };

    let ok = run("cbkey_good");
    assert_eq!(ok.code, 0, "{}{}", ok.stdout, ok.stderr);
    assert!(
        ok.stdout.contains("configuration is valid"),
        "{}",
        ok.stdout
    );
    assert!(
        ok.stdout.contains(&format!(
            "check: Crunchy Bridge API {}/: ok: the key works (1 team)",
            api.url()
        )),
        "{}",
        ok.stdout
    );
    assert!(
        ok.stdout.contains(&format!(
            "check: destination local:{}: ok: readable and writable",
            target.display()
        )),
        "{}",
        ok.stdout
    );
    assert!(
        ok.stdout
            .contains("check: notifier slack-webhook: ok: reachable"),
        "{}",
        ok.stdout
    );
    assert!(
        ok.stdout
            .contains("check: notifier heartbeat:sync: ok: reachable"),
        "{}",
        ok.stdout
    );
    assert!(ok.stdout.ends_with("every check passed\n"), "{}", ok.stdout);
    assert!(
        hooks.requests().is_empty(),
        "checks post nothing to Slack or the heartbeat"
    );
    assert_eq!(
        fs::read_dir(&target).unwrap().count(),
        0,
        "the probe object is removed"
    );

    let bad = run("cbkey_wrong");
    assert_eq!(bad.code, 1, "{}{}", bad.stdout, bad.stderr);
    assert!(
        bad.stdout.contains("check: Crunchy Bridge API") && bad.stdout.contains("FAILED"),
        "{}",
        bad.stdout
    );
    assert!(bad.stdout.ends_with("1 check failed\n"), "{}", bad.stdout);
    assert!(!bad.stdout.contains("cbkey_wrong"), "{}", bad.stdout);

    // An unreachable notifier fails its check; an invalid configuration is not checked at all.
    drop(hooks);
    let down = run("cbkey_good");
    assert_eq!(down.code, 1);
    assert!(
        down.stdout
            .contains("check: notifier slack-webhook: FAILED: Slack webhook: cannot connect"),
        "{}",
        down.stdout
    );
    let invalid = sb.run(
        &["config", "validate", "--check"],
        &[("CBOB_TRANSFERS", "0")],
    );
    assert_eq!(invalid.code, 2);
    assert!(!invalid.stdout.contains("check:"), "{}", invalid.stdout);
}

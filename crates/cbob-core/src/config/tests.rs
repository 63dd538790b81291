//! Loading from every source, precedence, validation and rendering, on temporary directories only.

use std::fs;
use std::path::{Path, PathBuf};

use super::*;

struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn home(&self) -> PathBuf {
        self.dir.path().join("home")
    }

    fn sources(&self) -> ConfigSources {
        fs::create_dir_all(self.home()).unwrap();
        ConfigSources::isolated(self.home())
    }

    fn write(&self, rel: &str, text: &str) -> PathBuf {
        let path = self.dir.path().join(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, text).unwrap();
        path
    }

    fn toml(&self, text: &str) -> PathBuf {
        self.write("home/.config/cbob/cbob.toml", text)
    }

    fn env_file(&self, text: &str) -> PathBuf {
        self.write("home/.cb_offsite_backup", text)
    }
}

fn raw<'a>(c: &'a Config, key: &str) -> (Option<&'a str>, &'a Origin) {
    let v = c.resolved.get(key).unwrap();
    (v.raw.as_deref(), &v.origin)
}

fn problems(err: &ConfigError) -> Vec<String> {
    err.problems.iter().map(|p| p.to_string()).collect()
}

#[test]
fn defaults_only() {
    let f = Fixture::new();
    let c = load(&f.sources()).unwrap();
    assert_eq!(c.base_path, f.home().join(".local/share/cbob"));
    assert_eq!(c.target_path, f.home().join(".local/share/cbob/backups"));
    assert_eq!(
        c.replication_config,
        f.home().join(".local/share/cbob/config/replication.yaml")
    );
    assert_eq!(c.transfer.transfers, 16);
    assert_eq!(c.transfer.parallel, 2);
    assert_eq!(c.transfer.retry_count, 5);
    assert_eq!(c.transfer.retry_delay, Duration::from_secs(1));
    assert_eq!(c.transfer.bandwidth, None);
    assert_eq!(c.dest.kind, DestKind::Local);
    assert_eq!(c.dest.region, "us-east-1");
    assert_eq!(c.crunchy.api_url.as_str(), "https://api.crunchybridge.com/");
    assert_eq!(c.notify.slack_channel, "#general");
    assert!(c.notify.email.attach_report);
    assert_eq!(
        (c.log.level, c.log.format),
        (LogLevel::Info, LogFormat::Text)
    );
    assert!(!c.dry_run && !c.no_lock);
    assert_eq!(raw(&c, "CBOB_TRANSFERS"), (Some("16"), &Origin::Default));
    assert_eq!(
        raw(&c, "CBOB_TARGET_PATH").1,
        &Origin::Derived("$CBOB_BASE_PATH/backups")
    );
    assert_eq!(raw(&c, "CBOB_CRUNCHY_API_KEY"), (None, &Origin::Unset));
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    assert!(c.require_api_key().is_err());
}

#[test]
fn base_path_as_root_and_with_xdg() {
    let f = Fixture::new();
    let mut s = f.sources();
    s.is_root = true;
    assert_eq!(load(&s).unwrap().base_path, PathBuf::from("/var/lib/cbob"));
    let s = f.sources().with_env("XDG_DATA_HOME", "/srv/data");
    let c = load(&s).unwrap();
    assert_eq!(c.base_path, PathBuf::from("/srv/data/cbob"));
    // A relative XDG variable is ignored, as the XDG spec says.
    let s = f.sources().with_env("XDG_DATA_HOME", "rel");
    assert_eq!(
        load(&s).unwrap().base_path,
        f.home().join(".local/share/cbob")
    );
    // Derived paths follow an explicit base path.
    let s = f.sources().with_env("CBOB_BASE_PATH", "/data");
    let c = load(&s).unwrap();
    assert_eq!(c.target_path, PathBuf::from("/data/backups"));
}

#[test]
fn precedence_defaults_toml_envfile_env_flags() {
    let f = Fixture::new();
    let toml = f.toml(
        "transfers = 3\nparallel = 3\nbandwidth = \"3MB/s\"\n[retry]\ncount = 3\ndelay = 3\n",
    );
    let envf = f.env_file(
        "CBOB_PARALLEL=4\nCBOB_BANDWIDTH=4MB/s\nCBOB_RETRY_COUNT=4\nCBOB_RETRY_DELAY=4\n",
    );
    let mut s = f
        .sources()
        .with_env("CBOB_BANDWIDTH", "5MB/s")
        .with_env("CBOB_RETRY_COUNT", "5")
        .with_env("CBOB_RETRY_DELAY", "5");
    s.set_flag("CBOB_RETRY_DELAY", "6", "--retry-delay");
    let c = load(&s).unwrap();

    assert_eq!(
        raw(&c, "CBOB_TRANSFERS"),
        (Some("3"), &Origin::TomlFile(toml.clone()))
    );
    assert_eq!(
        raw(&c, "CBOB_PARALLEL"),
        (
            Some("4"),
            &Origin::EnvFile {
                path: envf.clone(),
                line: Some(1)
            }
        )
    );
    assert_eq!(
        raw(&c, "CBOB_BANDWIDTH"),
        (Some("5MB/s"), &Origin::Environment)
    );
    assert_eq!(
        raw(&c, "CBOB_RETRY_DELAY"),
        (Some("6"), &Origin::Flag("--retry-delay".into()))
    );
    assert_eq!(raw(&c, "CBOB_LOG_LEVEL"), (Some("info"), &Origin::Default));
    assert_eq!(c.transfer.transfers, 3);
    assert_eq!(c.transfer.parallel, 4);
    assert_eq!(c.transfer.bandwidth, Some(ByteRate(5_000_000)));
    assert_eq!(c.transfer.retry_count, 5);
    assert_eq!(c.transfer.retry_delay, Duration::from_secs(6));
    assert_eq!(c.resolved.toml_file.as_deref(), Some(toml.as_path()));
    assert_eq!(c.resolved.env_file.as_deref(), Some(envf.as_path()));
}

#[test]
fn empty_value_unsets_and_default_applies() {
    let f = Fixture::new();
    f.toml("[crunchy]\nclusters = [\"abc\", \"def\"]\n[log]\nlevel = \"debug\"\n");
    let s = f
        .sources()
        .with_env("CBOB_CRUNCHY_CLUSTERS", "")
        .with_env("CBOB_LOG_LEVEL", "");
    let c = load(&s).unwrap();
    assert!(c.crunchy.clusters.is_empty());
    assert_eq!(c.log.level, LogLevel::Info);
}

#[test]
fn toml_file_search_and_explicit_choice() {
    let f = Fixture::new();
    let system = f.write("etc/cbob/cbob.toml", "transfers = 7\n");
    let mut s = f.sources();
    s.system_toml_files = vec![system.clone()];
    assert_eq!(load(&s).unwrap().transfer.transfers, 7);

    // The XDG file comes first.
    let xdg = f.toml("transfers = 8\n");
    assert_eq!(load(&s).unwrap().resolved.toml_file, Some(xdg));
    let s2 = s.clone().with_env(
        "XDG_CONFIG_HOME",
        f.dir.path().join("xdg").to_str().unwrap(),
    );
    assert_eq!(
        load(&s2).unwrap().transfer.transfers,
        7,
        "XDG_CONFIG_HOME moves the user file"
    );

    // CBOB_CONFIG_FILE replaces the search, --config beats it.
    let named = f.write("named.toml", "transfers = 9\n");
    let flagged = f.write("flagged.toml", "transfers = 10\n");
    let mut s3 = s
        .clone()
        .with_env("CBOB_CONFIG_FILE", named.to_str().unwrap());
    assert_eq!(load(&s3).unwrap().transfer.transfers, 9);
    s3.config_file = Some(flagged);
    assert_eq!(load(&s3).unwrap().transfer.transfers, 10);

    // A named file that does not exist is an error, not a silent fallback.
    let mut s4 = s.clone();
    s4.config_file = Some(f.dir.path().join("missing.toml"));
    let err = load(&s4).unwrap_err();
    assert!(
        problems(&err)[0].contains("cannot read configuration file"),
        "{err}"
    );
}

#[test]
fn bash_style_config_file_variable_names_an_env_file() {
    let f = Fixture::new();
    let legacy = f.write(
        "etc/cbob/config",
        "CBOB_TRANSFERS=12\nCBOB_CRUNCHY_API_KEY=cbkey_x\n",
    );
    let s = f
        .sources()
        .with_env("CBOB_CONFIG_FILE", legacy.to_str().unwrap());
    let c = load(&s).unwrap();
    assert_eq!(c.transfer.transfers, 12);
    assert_eq!(c.resolved.env_file, Some(legacy));
    assert_eq!(c.resolved.toml_file, None);
}

#[test]
fn env_file_search_order_and_format() {
    let f = Fixture::new();
    let usr_local = f.write("usr/local/etc/cb_offsite_backup", "CBOB_TRANSFERS=21\n");
    let etc = f.write("etc/cb_offsite_backup", "CBOB_TRANSFERS=22\n");
    let mut s = f.sources();
    s.system_env_files = vec![usr_local.clone(), etc.clone()];
    assert_eq!(load(&s).unwrap().transfer.transfers, 21);
    s.system_env_files = vec![etc];
    assert_eq!(load(&s).unwrap().transfer.transfers, 22);

    f.env_file(
        "# cbob\nexport CBOB_SLACK_CHANNEL='#backup log'\nCBOB_CRUNCHY_CLUSTERS=\"abc,def\" # two\n\
         CBOB_DRY_RUN=yes\nCBOB_PG_VERSION=18\nTZ=UTC\n",
    );
    let c = load(&s).unwrap();
    assert_eq!(c.transfer.transfers, 16, "home env-file wins the search");
    assert_eq!(c.notify.slack_channel, "#backup log");
    assert_eq!(c.crunchy.clusters, vec!["abc", "def"]);
    assert!(c.dry_run);
    let warnings: Vec<String> = c.warnings.iter().map(|w| w.to_string()).collect();
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("CBOB_PG_VERSION") && w.contains("no longer used")),
        "{warnings:?}"
    );
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("TZ") && w.contains("ignored")),
        "{warnings:?}"
    );
}

#[test]
fn malformed_env_file_names_file_and_line() {
    let f = Fixture::new();
    let path = f.env_file("CBOB_TRANSFERS=4\nnot an assignment\n");
    let err = load(&f.sources()).unwrap_err();
    let p = &err.problems[0];
    assert_eq!(
        p.origin,
        Origin::EnvFile {
            path: path.clone(),
            line: Some(2)
        }
    );
    assert!(
        p.to_string().contains(&format!("{}:2", path.display())),
        "{p}"
    );
}

#[test]
fn unknown_keys_with_suggestions() {
    let f = Fixture::new();
    f.toml("transfer = 4\n[dest]\nbukcet = \"x\"\n[nonsense]\na = 1\n");
    f.env_file("CBOB_DEST_BUKET=x\n");
    let s = f.sources().with_env("CBOB_TRANSFRES", "3");
    let err = load(&s).unwrap_err();
    let all = problems(&err).join("\n");
    assert!(
        all.contains("error: transfer (TOML file") && all.contains("did you mean `transfers`?"),
        "{all}"
    );
    assert!(
        all.contains("dest.bukcet") && all.contains("`dest.bucket`"),
        "{all}"
    );
    assert!(
        all.contains("nonsense (TOML file") && all.contains("unknown table"),
        "{all}"
    );
    assert!(
        all.contains("error: CBOB_DEST_BUKET (env-file")
            && all.contains("did you mean CBOB_DEST_BUCKET?"),
        "{all}"
    );
    assert!(
        all.contains("warning: CBOB_TRANSFRES (environment)") && all.contains("CBOB_TRANSFERS"),
        "{all}"
    );
}

#[test]
fn every_problem_at_once() {
    let f = Fixture::new();
    f.toml("[dest]\ntype = \"azure\"\n");
    let s = f
        .sources()
        .with_env("CBOB_TRANSFERS", "0")
        .with_env("CBOB_PARALLEL", "many")
        .with_env("CBOB_BANDWIDTH", "10 parsecs")
        .with_env("CBOB_CRUNCHY_CLUSTERS", "abc123,Not_An_Id")
        .with_env("CBOB_LOG_LEVEL", "chatty")
        .with_env("CBOB_TARGET_PATH", "relative/path")
        .with_env("CBOB_DRY_RUN", "perhaps")
        .with_env("CBOB_CRUNCHY_API_URL", "api.example.com");
    let err = load(&s).unwrap_err();
    let keys: Vec<&str> = err.errors().filter_map(|p| p.key.as_deref()).collect();
    for key in [
        "CBOB_TRANSFERS",
        "CBOB_PARALLEL",
        "CBOB_BANDWIDTH",
        "CBOB_CRUNCHY_CLUSTERS",
        "CBOB_LOG_LEVEL",
        "CBOB_TARGET_PATH",
        "CBOB_DRY_RUN",
        "CBOB_CRUNCHY_API_URL",
        "CBOB_DEST_AZURE_ACCOUNT",
        "CBOB_DEST_CONTAINER",
        "CBOB_DEST_AZURE_KEY",
    ] {
        assert!(keys.contains(&key), "{key} missing from {keys:?}");
    }
    assert!(
        err.problems.iter().all(|p| !p.fix.is_empty()),
        "every problem has a fix"
    );
    let text = err.to_string();
    assert!(
        text.contains("CBOB_TRANSFERS (environment): 0 is too small: must be at least 1"),
        "{text}"
    );
    assert!(text.contains("\"Not_An_Id\""), "{text}");
}

#[test]
fn destination_requirements_per_type() {
    let f = Fixture::new();
    let err = load(&f.sources().with_env("CBOB_DEST_TYPE", "s3")).unwrap_err();
    assert_eq!(
        err.errors()
            .filter_map(|p| p.key.as_deref())
            .collect::<Vec<_>>(),
        vec!["CBOB_DEST_BUCKET"]
    );
    let err = load(
        &f.sources()
            .with_env("CBOB_DEST_TYPE", "minio")
            .with_env("CBOB_DEST_BUCKET", "b"),
    )
    .unwrap_err();
    assert_eq!(
        err.errors()
            .filter_map(|p| p.key.as_deref())
            .collect::<Vec<_>>(),
        vec!["CBOB_DEST_ENDPOINT"]
    );
    let half_keys = f
        .sources()
        .with_env("CBOB_DEST_TYPE", "s3")
        .with_env("CBOB_DEST_BUCKET", "b")
        .with_env("CBOB_DEST_ACCESS_KEY", "AKIA");
    assert!(
        load(&half_keys)
            .unwrap_err()
            .to_string()
            .contains("CBOB_DEST_SECRET_KEY")
    );
    let gcs = f
        .sources()
        .with_env("CBOB_DEST_TYPE", "gcs")
        .with_env("CBOB_DEST_BUCKET", "b")
        .with_env("CBOB_DEST_GCS_CREDENTIALS", "/nonexistent/key.json");
    assert!(
        load(&gcs)
            .unwrap_err()
            .to_string()
            .contains("not a readable file")
    );
    let both = f
        .sources()
        .with_env("CBOB_DEST_TYPE", "azure")
        .with_env("CBOB_DEST_AZURE_ACCOUNT", "acct")
        .with_env("CBOB_DEST_CONTAINER", "c")
        .with_env("CBOB_DEST_AZURE_KEY", "k")
        .with_env("CBOB_DEST_AZURE_SAS", "sv=x");
    assert!(
        load(&both)
            .unwrap_err()
            .to_string()
            .contains("both CBOB_DEST_AZURE_KEY and CBOB_DEST_AZURE_SAS")
    );
    let prefix = f
        .sources()
        .with_env("CBOB_DEST_TYPE", "s3")
        .with_env("CBOB_DEST_BUCKET", "b")
        .with_env("CBOB_DEST_PREFIX", "a/../b");
    assert!(
        load(&prefix)
            .unwrap_err()
            .to_string()
            .contains("CBOB_DEST_PREFIX")
    );
}

#[test]
fn settings_for_another_destination_warn() {
    let f = Fixture::new();
    let c = load(&f.sources().with_env("CBOB_DEST_BUCKET", "b")).unwrap();
    assert!(
        c.warnings
            .iter()
            .any(|w| w.key.as_deref() == Some("CBOB_DEST_BUCKET")),
        "{:?}",
        c.warnings
    );
}

#[test]
fn destination_specs() {
    let f = Fixture::new();
    let c = load(&f.sources().with_env("CBOB_TARGET_PATH", "/srv/backups")).unwrap();
    let spec = c.destination_spec();
    assert_eq!(
        (spec.kind.as_str(), spec.path.as_deref()),
        ("local", Some(Path::new("/srv/backups")))
    );

    let c = load(
        &f.sources()
            .with_env("CBOB_DEST_TYPE", "s3")
            .with_env("CBOB_DEST_BUCKET", "bkt")
            .with_env("CBOB_DEST_PREFIX", "/cbob/prod/")
            .with_env("CBOB_DEST_ENDPOINT", "https://s3.example.com")
            .with_env("CBOB_DEST_ACCESS_KEY", "AK")
            .with_env("CBOB_DEST_SECRET_KEY", "SK"),
    )
    .unwrap();
    let spec = c.destination_spec();
    assert_eq!(spec.kind, "s3");
    assert_eq!(spec.bucket.as_deref(), Some("bkt"));
    assert_eq!(spec.prefix, "cbob/prod");
    assert_eq!(spec.region.as_deref(), Some("us-east-1"));
    assert_eq!(spec.endpoint.as_deref(), Some("https://s3.example.com/"));
    assert_eq!(spec.secret_key.as_ref().map(|s| s.expose()), Some("SK"));
    assert_eq!(spec.describe(), "s3://bkt/cbob/prod");

    let c = load(
        &f.sources()
            .with_env("CBOB_DEST_TYPE", "azure")
            .with_env("CBOB_DEST_AZURE_ACCOUNT", "acct")
            .with_env("CBOB_DEST_CONTAINER", "cont")
            .with_env("CBOB_DEST_AZURE_SAS", "sv=2024&sig=x"),
    )
    .unwrap();
    let spec = c.destination_spec();
    assert_eq!(
        (spec.account.as_deref(), spec.bucket.as_deref()),
        (Some("acct"), Some("cont"))
    );
    assert_eq!(
        spec.sas_token.as_ref().map(|s| s.expose()),
        Some("sv=2024&sig=x")
    );

    let key = f.write("gcs.json", "{}");
    let c = load(
        &f.sources()
            .with_env("CBOB_DEST_TYPE", "gcs")
            .with_env("CBOB_DEST_BUCKET", "g")
            .with_env("CBOB_DEST_GCS_CREDENTIALS", key.to_str().unwrap()),
    )
    .unwrap();
    assert_eq!(c.destination_spec().credentials_file, Some(key));
}

#[test]
fn source_specs() {
    let f = Fixture::new();
    let c = load(
        &f.sources()
            .with_env("CBOB_SOURCE_ENDPOINT", "http://127.0.0.1:9000")
            .with_env("CBOB_SOURCE_ACCESS_KEY", "AK")
            .with_env("CBOB_SOURCE_SECRET_KEY", "SK")
            .with_env("CBOB_SOURCE_REGION", "eu-west-1"),
    )
    .unwrap();
    let s = c.source_spec("s3://bucket/repo").unwrap();
    assert_eq!(s.endpoint.as_deref(), Some("http://127.0.0.1:9000/"));
    assert_eq!(s.region.as_deref(), Some("eu-west-1"));
    assert_eq!(s.access_key.as_ref().map(|k| k.expose()), Some("AK"));
    assert_eq!(s.settings, crate::storage::SettingNames::Source);
    let s = c.source_spec("file:///srv/repo").unwrap();
    assert_eq!((s.kind.as_str(), s.endpoint), ("local", None));
    let p = c.source_spec("ftp:/x").unwrap_err();
    assert_eq!(p.key.as_deref(), Some("--source"));
    // S3 credentials are not handed to another kind of store.
    let s = c.source_spec("azure://acct/container/repo").unwrap();
    assert!(s.access_key.is_none() && s.secret_key.is_none());
}

#[test]
fn azure_and_gcs_source_credentials() {
    let f = Fixture::new();
    let key_file = f.write("sa.json", "{}");
    let c = load(
        &f.sources()
            .with_env("CBOB_SOURCE_AZURE_KEY", "YXp1cmUta2V5")
            .with_env("CBOB_SOURCE_GCS_CREDENTIALS", key_file.to_str().unwrap()),
    )
    .unwrap();
    let s = c.source_spec("azure://acct/container/repo").unwrap();
    assert_eq!(
        s.secret_key.as_ref().map(|k| k.expose()),
        Some("YXp1cmUta2V5")
    );
    assert!(s.sas_token.is_none());
    let s = c.source_spec("gcs://bucket/repo").unwrap();
    assert_eq!(s.credentials_file.as_deref(), Some(key_file.as_path()));
    assert!(s.secret_key.is_none(), "the Azure key stays with Azure");

    let sas = load(
        &f.sources()
            .with_env("CBOB_SOURCE_AZURE_SAS", "sv=2022&sig=abc"),
    )
    .unwrap();
    let s = sas.source_spec("azure://acct/container").unwrap();
    assert_eq!(
        s.sas_token.as_ref().map(|k| k.expose()),
        Some("sv=2022&sig=abc")
    );

    let both = load(
        &f.sources()
            .with_env("CBOB_SOURCE_AZURE_KEY", "k")
            .with_env("CBOB_SOURCE_AZURE_SAS", "s"),
    )
    .unwrap();
    let p = both.source_spec("azure://acct/container").unwrap_err();
    assert!(
        p.to_string()
            .contains("both CBOB_SOURCE_AZURE_KEY and CBOB_SOURCE_AZURE_SAS"),
        "{p}"
    );
}

#[test]
fn secrets_are_masked_in_debug_and_render() {
    let f = Fixture::new();
    f.toml("[dest]\naccess_key = \"AKIA-toml-secret\"\n");
    let s = f
        .sources()
        .with_env("CBOB_DEST_TYPE", "s3")
        .with_env("CBOB_DEST_BUCKET", "b")
        .with_env("CBOB_DEST_SECRET_KEY", "dest-secret-value")
        .with_env("CBOB_CRUNCHY_API_KEY", "cbkey_api_secret")
        .with_env("CBOB_SYNC_HEARTBEAT_URL", "https://hc-ping.com/uuid-secret");
    let c = load(&s).unwrap();
    let secrets = [
        "AKIA-toml-secret",
        "dest-secret-value",
        "cbkey_api_secret",
        "uuid-secret",
    ];
    let debug = format!("{c:?} {c:#?} {:?} {s:?}", c.destination_spec());
    for format in [RenderFormat::Text, RenderFormat::Json, RenderFormat::Env] {
        let masked = render(&c.resolved, format, false);
        let unmasked = render(&c.resolved, format, true);
        for secret in secrets {
            assert!(!debug.contains(secret), "{secret} in Debug");
            assert!(
                !masked.contains(secret),
                "{secret} in {format:?}:\n{masked}"
            );
            assert!(
                unmasked.contains(secret),
                "{secret} missing from unmasked {format:?}"
            );
        }
    }
    assert_eq!(
        c.get("dest.access_key")
            .unwrap()
            .display_value(false)
            .as_deref(),
        Some("***")
    );
    assert_eq!(
        c.get("CBOB_DEST_ACCESS_KEY")
            .unwrap()
            .display_value(true)
            .as_deref(),
        Some("AKIA-toml-secret")
    );
}

#[test]
fn json_rendering_is_typed_and_stable() {
    let f = Fixture::new();
    let s = f
        .sources()
        .with_env("CBOB_CRUNCHY_CLUSTERS", "abc,def")
        .with_env("CBOB_DRY_RUN", "yes")
        .with_env("CBOB_RETRY_DELAY", "500ms");
    let c = load(&s).unwrap();
    let doc: serde_json::Value =
        serde_json::from_str(&render(&c.resolved, RenderFormat::Json, false)).unwrap();
    assert_eq!(doc["format_version"], 1);
    let set = &doc["settings"];
    assert_eq!(set["CBOB_TRANSFERS"]["value"], 16);
    assert_eq!(set["CBOB_TRANSFERS"]["origin_kind"], "default");
    assert_eq!(set["CBOB_TRANSFERS"]["toml"], "transfers");
    assert_eq!(set["CBOB_DRY_RUN"]["value"], true);
    assert_eq!(set["CBOB_RETRY_DELAY"]["value"], 0.5);
    assert_eq!(
        set["CBOB_CRUNCHY_CLUSTERS"]["value"],
        serde_json::json!(["abc", "def"])
    );
    assert_eq!(set["CBOB_CRUNCHY_CLUSTERS"]["origin"], "environment");
    assert_eq!(
        set["CBOB_CRUNCHY_API_KEY"]["value"],
        serde_json::Value::Null
    );
    assert_eq!(set["CBOB_CRUNCHY_API_KEY"]["secret"], true);
    assert_eq!(set.as_object().unwrap().len(), keys::KEYS.len());
}

#[test]
fn toml_types_and_errors() {
    let f = Fixture::new();
    f.toml(
        "dry_run = true\ntransfers = 32\n[crunchy]\nclusters = [\"abc\", \"def\"]\n[retry]\ndelay = 0.25\n\
         [log]\nlevel = \"debug\"\n",
    );
    let c = load(&f.sources()).unwrap();
    assert!(c.dry_run);
    assert_eq!(c.transfer.transfers, 32);
    assert_eq!(c.crunchy.clusters, vec!["abc", "def"]);
    assert_eq!(c.transfer.retry_delay, Duration::from_millis(250));
    assert_eq!(c.log.level, LogLevel::Debug);

    f.toml("transfers = [1, 2]\nlog = 3\n");
    let all = problems(&load(&f.sources()).unwrap_err()).join("\n");
    assert!(all.contains("found a list"), "{all}");
    assert!(all.contains("`log` must be a table"), "{all}");

    f.toml("[crunchy]\napi_key = \"cbkey_SECRET_in_broken_toml\n");
    let all = problems(&load(&f.sources()).unwrap_err()).join("\n");
    assert!(all.contains("not valid TOML at line 2"), "{all}");
    assert!(
        !all.contains("cbkey_SECRET"),
        "a TOML error must not quote the line: {all}"
    );
}

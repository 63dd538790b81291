//! `cbob verify`, `cbob info` and `cbob expire` end to end: the real binary on a local
//! destination (the committed fixture plus a repository with two full backups, so two stanzas)
//! and on an S3 destination (s3s-fs, whose data directory is the bucket's content: pgBackRest
//! reads it directly, so every state the bucket goes through is checked as it is).

#[path = "../../cbob-core/tests/two_fulls/mod.rs"]
mod two_fulls;

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use cbob_test_support::fixture::{self, make_world_readable};
use cbob_test_support::{pg, s3s_fs};

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

/// A clean environment for `cbob`: empty HOME, own base path, only the given settings.
struct Sandbox {
    dir: tempfile::TempDir,
    env: Vec<(String, String)>,
}

impl Sandbox {
    fn new(env: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("home")).unwrap();
        let mut all = vec![(
            "CBOB_BASE_PATH".to_string(),
            dir.path().join("base").display().to_string(),
        )];
        all.extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        Self { dir, env: all }
    }

    fn base(&self) -> PathBuf {
        self.dir.path().join("base")
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_cbob"));
        c.env_clear()
            .env("HOME", self.dir.path().join("home"))
            .env("PATH", "/usr/bin:/bin")
            .args(args)
            .current_dir(self.dir.path())
            .stdin(Stdio::null());
        for (k, v) in &self.env {
            c.env(k, v);
        }
        c
    }

    fn run(&self, args: &[&str]) -> Out {
        let out = self.command(args).output().expect("run cbob");
        Out {
            code: out.status.code().expect("exit code"),
            stdout: String::from_utf8(out.stdout).unwrap(),
            stderr: String::from_utf8(out.stderr).unwrap(),
        }
    }

    fn json(&self, args: &[&str], code: i32) -> Value {
        let out = self.run(args);
        assert_eq!(
            out.code, code,
            "cbob {args:?}\nstdout:\n{}\nstderr:\n{}",
            out.stdout, out.stderr
        );
        serde_json::from_str(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "cbob {args:?} printed no single JSON document ({e}):\n{}",
                out.stdout
            )
        })
    }
}

/// Regular files under `root`, relative.
fn tree(root: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else if e.file_type().unwrap().is_file() {
                out.insert(
                    e.path()
                        .strip_prefix(root)
                        .unwrap()
                        .to_string_lossy()
                        .to_string(),
                );
            }
        }
    }
    out
}

/// pgBackRest accepts `repo`: `info` ok, `verify` ok with every listed backup valid. Returns
/// the labels `info` lists.
fn pgbackrest_accepts(repo: &Path, stanza: &str) -> Vec<String> {
    make_world_readable(repo);
    let info = pg::pgbackrest_info_json(repo, stanza);
    assert_eq!(
        info["status"]["code"], 0,
        "pgbackrest info: {}",
        info["status"]
    );
    let labels: Vec<String> = info["backup"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["label"].as_str().unwrap().to_string())
        .collect();
    let out = pg::pgbackrest(
        repo,
        stanza,
        &["verify", "--output=text", "--verbose", "--job-retry=0"],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("status: ok"), "pgbackrest verify:\n{text}");
    for l in &labels {
        assert!(
            text.contains(&format!("backup: {l}, status: valid")),
            "{l}:\n{text}"
        );
    }
    labels
}

/// A local destination holding two stanzas: the committed fixture (`abc123`) and `two`.
fn two_stanzas() -> (fixture::Fixture, two_fulls::TwoFulls) {
    let fx = fixture::extract();
    let two = two_fulls::copy();
    for top in ["archive", "backup"] {
        two_fulls::copy_tree(
            &two.repo.join(top).join(two_fulls::STANZA),
            &fx.repo.join(top).join(two_fulls::STANZA),
        );
    }
    make_world_readable(&fx.repo);
    (fx, two)
}

#[test]
fn verify_info_and_expire_on_a_local_destination() {
    let (fx, _two) = two_stanzas();
    let st = two_fulls::STANZA;
    let sb = Sandbox::new(&[("CBOB_TARGET_PATH", fx.repo.to_str().unwrap())]);

    // verify: both stanzas, one JSON document, recorded in the state database.
    let t = Instant::now();
    let doc = sb.json(&["verify", "--format", "json"], 0);
    eprintln!(
        "cbob verify of two stanzas (fixture + two fulls): {:.1}s",
        t.elapsed().as_secs_f64()
    );
    assert_eq!(doc["ok"], true);
    let names: Vec<&str> = doc["stanzas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["stanza"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["abc123", st]);
    assert_eq!(doc["stanzas"][1]["backups"].as_array().unwrap().len(), 4);

    // info: one document for several stanzas, with the last verify.
    let info = sb.json(&["info", "--format", "json"], 0);
    let stanzas = info["stanzas"].as_array().unwrap();
    assert_eq!(stanzas.len(), 2);
    for s in stanzas {
        assert_eq!(s["status"], "ok", "{s}");
        assert_eq!(s["last_verify"]["result"], "success", "{s}");
        assert!(s["last_sync"].is_null() && s["last_restore_check"].is_null());
        assert!(
            s["backups"]
                .as_array()
                .unwrap()
                .iter()
                .all(|b| b["restorable"] == true)
        );
    }
    assert_eq!(
        stanzas[0]["archives"][0]["max"],
        fx.expected.wal_max.as_str()
    );
    let incr = &stanzas[0]["backups"][2];
    assert_eq!(incr["type"], "incr");
    assert_eq!(incr["chain"].as_array().unwrap().len(), 3);
    let detailed = sb.json(
        &["info", "--format", "json", "--detailed", "--stanza", st],
        0,
    );
    let d = &detailed["stanzas"][0]["backups"][0]["detail"];
    assert!(
        d["files"].as_u64().unwrap() > 100 && d["files_missing"] == 0 && d["bundled"] == true,
        "{d}"
    );
    let text = sb.run(&["info", "--detailed", "--stanza", "abc123"]);
    assert_eq!(text.code, 0, "{}", text.stderr);
    for needle in [
        "stanza: abc123",
        "last verify: ",
        "success",
        "full backup: ",
        "wal start/stop: ",
        "chain: ",
        "restorable",
    ] {
        assert!(
            text.stdout.contains(needle),
            "`{needle}` not in:\n{}",
            text.stdout
        );
    }

    // expire: no retention, no terminal, dry run — nothing removed.
    let before = tree(&fx.repo);
    let out = sb.run(&["expire"]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr.contains("--retention-full") && out.stderr.contains("CBOB_RETENTION_FULL"),
        "{}",
        out.stderr
    );
    let out = sb.run(&["expire", "--retention-full", "1", "--stanza", st]);
    assert_eq!(
        out.code, 2,
        "no terminal, no --force: {}\n{}",
        out.stdout, out.stderr
    );
    assert!(
        out.stderr
            .contains("refusing to expire without confirmation")
            && out.stderr.contains("--force"),
        "{}",
        out.stderr
    );
    assert!(
        out.stdout.contains("expire 2"),
        "the plan is shown first:\n{}",
        out.stdout
    );
    let out = sb.run(&["expire", "--retention-full", "1", "--dry-run"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout.contains("dry run") && out.stdout.contains("would remove"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains("stanza abc123: 3 backup(s), nothing to expire"),
        "{}",
        out.stdout
    );
    let plan = sb.json(
        &[
            "expire",
            "--retention-full",
            "1",
            "--dry-run",
            "--format",
            "json",
            "--stanza",
            st,
        ],
        0,
    );
    let expired: Vec<&str> = plan["stanzas"][0]["plan"]["expire"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["label"].as_str().unwrap())
        .collect();
    assert_eq!(expired.len(), 2);
    assert_eq!(
        tree(&fx.repo),
        before,
        "nothing may change before confirmation"
    );

    // expire --force: audited, and the result is accepted by pgBackRest and cbob verify.
    let out = sb.run(&["expire", "--retention-full", "1", "--force", "--stanza", st]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stdout
            .contains(&format!("✓ stanza {st}: expired 2 backup(s)")),
        "{}",
        out.stdout
    );
    let audit: Vec<Value> = fs::read_to_string(sb.base().join("audit.log"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|l: &Value| l["command"] == "expire")
        .collect();
    let actions: Vec<&str> = audit
        .iter()
        .map(|l| l["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        [
            "write-backup-info",
            "write-backup-info",
            "expire-backup",
            "expire-backup",
            "expire-wal",
            "run"
        ]
    );
    assert!(
        audit
            .iter()
            .all(|l| l["destination"].as_str().unwrap().starts_with("local:"))
    );
    let kept = pgbackrest_accepts(&fx.repo, st);
    assert_eq!(kept, expired_complement(&plan, &expired));
    assert_eq!(
        pgbackrest_accepts(&fx.repo, "abc123").len(),
        3,
        "the other stanza is untouched"
    );
    let doc = sb.json(&["verify", "--format", "json", "--stanza", st], 0);
    assert_eq!(doc["stanzas"][0]["ok"], true);
    let out = sb.run(&["expire", "--retention-full", "1", "--force", "--stanza", st]);
    assert!(
        out.code == 0 && out.stdout.contains("nothing to expire"),
        "{}",
        out.stdout
    );

    // Damage: verify exits 1 with a clear message, and info shows it.
    fs::remove_dir_all(
        fx.repo
            .join(format!("backup/abc123/{}", fx.expected.backups[2].label)),
    )
    .unwrap();
    let out = sb.run(&["verify", "--stanza", "abc123"]);
    assert_eq!(out.code, 1, "{}", out.stdout);
    assert!(
        out.stdout.contains("MISSING") && out.stdout.contains("[backup_missing]"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains("pgbackrest verify 2.45 does not notice"),
        "{}",
        out.stdout
    );
    let info = sb.json(&["info", "--format", "json", "--stanza", "abc123"], 0);
    assert_eq!(info["stanzas"][0]["last_verify"]["result"], "failed");
    let incr = &info["stanzas"][0]["backups"][2];
    assert_eq!(incr["restorable"], false);
    assert!(
        incr["problems"][0]
            .as_str()
            .unwrap()
            .contains("manifest is missing"),
        "{incr}"
    );

    // Usage errors are exit 2.
    let out = sb.run(&["verify", "--stanza", "../etc"]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("invalid stanza name"), "{}", out.stderr);
    let out = sb.run(&["verify", "--stanza", "nope"]);
    assert_eq!(out.code, 1);
    assert!(
        out.stdout.contains("there is no stanza nope"),
        "{}",
        out.stdout
    );
}

fn expired_complement(plan: &Value, expired: &[&str]) -> Vec<String> {
    plan["stanzas"][0]["plan"]["listed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap().to_string())
        .filter(|l| !expired.contains(&l.as_str()))
        .collect()
}

/// A tiny xorshift so kill times vary from run to run (the seed is printed).
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

/// A TCP proxy to `upstream` that holds every chunk a client sends for `delay`: each S3
/// request through it takes at least that long, so a kill can land between two requests of
/// an expire (which otherwise takes a few milliseconds on s3s-fs). Threads die with the test.
fn slow_proxy(upstream: String, delay: Duration) -> String {
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(client) = client else { continue };
            let Ok(server) = TcpStream::connect(&upstream) else {
                continue;
            };
            let pipe = |mut from: TcpStream, mut to: TcpStream, delay: Option<Duration>| {
                std::thread::spawn(move || {
                    let mut buf = vec![0u8; 64 * 1024];
                    loop {
                        let n = match from.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        if let Some(d) = delay {
                            std::thread::sleep(d);
                        }
                        if to.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = to.shutdown(std::net::Shutdown::Write);
                });
            };
            pipe(
                client.try_clone().unwrap(),
                server.try_clone().unwrap(),
                Some(delay),
            );
            pipe(server, client, None);
        }
    });
    format!("http://{addr}")
}

/// Waits up to `after`, then kills: `Some(code)` when the process ended by itself first.
fn kill_after(mut child: Child, after: Duration) -> Option<i32> {
    let deadline = Instant::now() + after;
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return Some(st.code().unwrap_or(-1));
        }
        if Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

#[test]
fn expire_on_s3_killed_at_random_moments_leaves_a_valid_repository() {
    let s3 = s3s_fs();
    let creds = s3.credentials();
    let source = two_fulls::copy();
    let st = two_fulls::STANZA;
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    eprintln!("kill-time seed {seed}");
    let mut rng = Rng(seed);
    let mut intermediate = 0;
    let mut kills = 0;
    // Every request of the expire goes through a proxy that delays it, so it runs for about a
    // second and the kills land all along it. A fresh bucket per round; another round only if no
    // kill landed mid-way (timing on a busy machine), with finer steps.
    let upstream = s3.endpoint().trim_start_matches("http://").to_string();
    let slow = slow_proxy(upstream, Duration::from_millis(40));
    for round in 1..=3u64 {
        let bucket = s3.fresh_bucket("expire-kill");
        let settings = |endpoint: &str| {
            Sandbox::new(&[
                ("CBOB_DEST_TYPE", "s3"),
                ("CBOB_DEST_ENDPOINT", endpoint),
                ("CBOB_DEST_BUCKET", &bucket),
                ("CBOB_DEST_PREFIX", "pg"),
                ("CBOB_DEST_REGION", &creds.region),
                ("CBOB_DEST_ACCESS_KEY", &creds.access_key_id),
                ("CBOB_DEST_SECRET_KEY", &creds.secret_access_key),
            ])
        };
        let sb = settings(&s3.endpoint());
        let slow_sb = settings(&slow);
        let url = format!("file://{}", source.repo.display());
        let out = sb.run(&["sync", "--source", &url]);
        assert_eq!(
            out.code, 0,
            "sync to s3s-fs:\n{}\n{}",
            out.stdout, out.stderr
        );
        let repo = s3.data_dir().join(&bucket).join("pg");
        let all = pgbackrest_accepts(&repo, st);
        assert_eq!(all.len(), 4);
        let initial = tree(&repo);

        // Coarse steps through the planning (reads and listings only), fine steps once the
        // first write happened: each run plans again, then goes a little further.
        let mut step = 60 / round;
        let mut delay = 50;
        let mut seen: Vec<BTreeSet<String>> = Vec::new();
        loop {
            let log = sb.dir.path().join("expire.log");
            let child = slow_sb
                .command(&["expire", "--retention-full", "1", "--force", "--stanza", st])
                .stdout(Stdio::null())
                .stderr(fs::File::create(&log).unwrap())
                .spawn()
                .unwrap();
            let at = Duration::from_millis(delay + rng.below(step));
            let finished = kill_after(child, at);
            if let Some(code) = finished {
                assert_eq!(
                    code,
                    0,
                    "cbob expire failed on its own:\n{}",
                    fs::read_to_string(&log).unwrap()
                );
            }
            let listed = pgbackrest_accepts(&repo, st);
            assert!(
                listed == all || listed == all[2..],
                "after a kill at {at:?}: pgBackRest lists {listed:?}"
            );
            if finished == Some(0) {
                break;
            }
            kills += 1;
            let now = tree(&repo);
            eprintln!(
                "killed at {at:?}: {} objects left, pgBackRest lists {} backups",
                now.len(),
                listed.len()
            );
            if listed.len() < all.len() || now != initial {
                step = 20 / round;
            }
            seen.push(now);
            delay += step;
            assert!(delay < 10_000, "expire never finished");
        }
        let fin = tree(&repo);
        intermediate += seen
            .iter()
            .filter(|t| **t != initial && **t != fin)
            .collect::<BTreeSet<_>>()
            .len();
        eprintln!(
            "round {round}: {} kills, {intermediate} distinct intermediate states so far",
            seen.len()
        );

        // Finished: pgBackRest, cbob verify and a restore accept it.
        assert_eq!(pgbackrest_accepts(&repo, st), all[2..]);
        let doc = sb.json(&["verify", "--format", "json"], 0);
        assert_eq!(doc["stanzas"][0]["ok"], true, "{doc}");
        if intermediate > 0 || round == 3 {
            assert_eq!(pg::restore_and_query(&repo, st), two_fulls::VALUES);
            // Damage behind the server's back: verify on S3 finds it.
            let bundle = repo.join(format!("backup/{st}/{}/bundle/1", all[2]));
            let mut b = fs::read(&bundle).unwrap();
            let mid = b.len() / 2;
            b[mid] ^= 0x55;
            fs::write(&bundle, b).unwrap();
            let doc = sb.json(&["verify", "--format", "json"], 1);
            let kinds: BTreeSet<&str> = doc["stanzas"][0]["problems"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["kind"].as_str().unwrap())
                .collect();
            assert!(
                kinds
                    .iter()
                    .all(|k| ["file_checksum", "file_other", "file_size"].contains(k))
                    && !kinds.is_empty(),
                "{kinds:?}"
            );
            break;
        }
    }
    eprintln!("{kills} kills, {intermediate} intermediate states, each accepted by pgBackRest");
    assert!(
        intermediate > 0,
        "no kill landed while expire was removing (try again on a quieter machine)"
    );
}

//! Crashes and concurrency: killing `cbob sync` at random moments always leaves a destination
//! pgBackRest reads as valid, with every backup it lists complete, and the next run finishes
//! the job; a second run on the same destination is refused with exit 4 naming the holder.

use std::path::Path;
use std::time::Duration;

use cbob_test_support::fixture;

use crate::common::cbob::{Cbob, Run};
use crate::common::repo::{
    assert_same_tree, assert_valid_repo, backup_info_text, backup_problems, find_file,
    listed_backups, older_fixture, read_tree,
};
use crate::common::{Rng, wait_until};

fn file_url(repo: &Path) -> String {
    format!("file://{}", repo.display())
}

/// What one interrupted run did.
struct Interrupted {
    delay_ms: u64,
    signal: libc::c_int,
    /// The run was still going when the signal was sent.
    hit: bool,
    listed: usize,
}

impl std::fmt::Debug for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}@{}ms:{}:{} listed",
            signal_name(self.signal),
            self.delay_ms,
            if self.hit { "hit" } else { "missed" },
            self.listed
        )
    }
}

fn signal_name(sig: libc::c_int) -> &'static str {
    if sig == libc::SIGKILL {
        "SIGKILL"
    } else {
        "SIGTERM"
    }
}

/// A sync from a `file://` source into a local target, optionally bandwidth-capped.
struct SyncTo<'a> {
    cbob: &'a Cbob,
    source: &'a Path,
    dest: &'a Path,
    stanza: &'a str,
}

impl SyncTo<'_> {
    fn args(&self, bandwidth: Option<&str>) -> Vec<String> {
        let mut v: Vec<String> = ["sync", "--format", "json", "--source"]
            .map(String::from)
            .to_vec();
        v.push(file_url(self.source));
        v.push("--target".into());
        v.push(self.dest.display().to_string());
        if let Some(rate) = bandwidth {
            v.extend(["--bandwidth".to_string(), rate.to_string()]);
        }
        v
    }

    /// Runs it `kills` times at `bandwidth`, each stopped by a signal after a random delay
    /// (50 ms..2 s), and checks the destination after each: valid, every listed backup
    /// complete, never fewer backups than `at_least`. A run that finished before its signal
    /// must have succeeded.
    fn interrupted(
        &self,
        bandwidth: &str,
        kills: usize,
        at_least: usize,
        rng: &mut Rng,
        phase: &str,
    ) -> Vec<Interrupted> {
        let args = self.args(Some(bandwidth));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut out = Vec::new();
        for i in 0..kills {
            let delay_ms = rng.between(50, 2000);
            let signal = if i % 3 == 2 {
                libc::SIGTERM
            } else {
                libc::SIGKILL
            };
            let mut running = self.cbob.spawn(&args);
            std::thread::sleep(Duration::from_millis(delay_ms));
            let hit = running.signal(signal);
            let run = running.wait();
            let when = format!(
                "{phase}: after {} #{i} at {delay_ms} ms ({})",
                signal_name(signal),
                if hit { "interrupted" } else { "had finished" }
            );
            if !hit {
                run.expect_ok(&when);
            }
            let listed = assert_valid_repo(self.dest, self.stanza, &when).len();
            assert!(
                listed >= at_least,
                "{when}: the destination lists {listed} backups, it held {at_least} before"
            );
            eprintln!("{when}: destination valid, {listed} backups listed");
            out.push(Interrupted {
                delay_ms,
                signal,
                hit,
                listed,
            });
        }
        out
    }

    /// The uninterrupted run (no bandwidth cap) that must finish the job.
    fn finish(&self, what: &str) -> Run {
        let args = self.args(None);
        let run = self
            .cbob
            .run(&args.iter().map(String::as_str).collect::<Vec<_>>());
        run.expect_ok(what);
        assert_eq!(run.cluster(self.stanza)["ok"], true, "{}", run.describe());
        run
    }
}

#[test]
fn killed_runs_always_leave_a_valid_destination_and_the_next_run_finishes() {
    let (mut rng, seed) = Rng::from_env();
    eprintln!("random seed {seed} (set CBOB_E2E_SEED={seed} to replay)");
    let fx = fixture::extract();
    let stanza = fx.stanza.as_str();
    // The source as it was before its newest backup (expired by pgBackRest) and the WAL after.
    let (_older, older_repo, newest) = older_fixture(&fx.repo, stanza);
    let cbob = Cbob::new();
    let dest = cbob.path("dest");

    // Phase 1: an empty destination, the first copy interrupted again and again.
    let first = SyncTo {
        cbob: &cbob,
        source: &older_repo,
        dest: &dest,
        stanza,
    };
    let mut log = first.interrupted("4MB/s", 3, 0, &mut rng, "first copy");
    first.finish("the run after the interrupted first copies");
    // Byte-identical, and no temporary file of a killed writer is left behind.
    assert_same_tree(
        &read_tree(&dest),
        &read_tree(&older_repo),
        "first copy after interruptions",
    );
    assert_eq!(assert_valid_repo(&dest, stanza, "first copy").len(), 2);

    // Phase 2: a complete earlier copy; the source gained a backup (and WAL). Interrupt the
    // runs that bring it over.
    let update = SyncTo {
        source: &fx.repo,
        ..first
    };
    let phase = format!("new backup {newest}");
    log.extend(update.interrupted("512KiB/s", 4, 2, &mut rng, &phase));
    update.finish("the run after the interrupted update");
    assert_same_tree(
        &read_tree(&dest),
        &read_tree(&fx.repo),
        "final copy after interruptions",
    );
    let labels = assert_valid_repo(&dest, stanza, "final copy");
    assert!(labels.contains(&newest), "{newest} arrived: {labels:?}");
    let verify =
        cbob_test_support::pg::pgbackrest(&dest, stanza, &["verify", "--output=text", "--verbose"]);
    let verify_out = String::from_utf8_lossy(&verify.stdout);
    assert!(
        verify_out.contains("status: ok"),
        "pgbackrest verify of the final copy:\n{verify_out}\n{}",
        String::from_utf8_lossy(&verify.stderr)
    );

    // The completeness check has teeth: a file missing from a listed backup is reported.
    let victim = find_file(&dest.join("backup").join(stanza).join(&newest), |rel| {
        rel.ends_with(".lz4")
    });
    std::fs::remove_file(&victim).expect("remove a backup file");
    let info = backup_info_text(&dest, stanza).expect("backup.info");
    let problems = backup_problems(&dest, stanza, &newest, &listed_backups(&info)[&newest]);
    assert!(
        problems.iter().any(|p| p.contains("is missing")),
        "the checker must notice {} is gone: {problems:?}",
        victim.display()
    );

    let hits = log.iter().filter(|k| k.hit).count();
    eprintln!(
        "interruptions: {log:?}; {hits} of {} hit a running sync",
        log.len()
    );
    assert!(
        hits * 2 >= log.len(),
        "most signals must interrupt a running sync to prove anything ({hits} of {}): {log:?}",
        log.len()
    );
}

/// The lock file under `base/locks/` that names `pid` on its first line, if any.
fn lock_held_by(base: &Path, pid: u32) -> bool {
    let Ok(entries) = std::fs::read_dir(base.join("locks")) else {
        return false;
    };
    entries.flatten().any(|e| {
        std::fs::read_to_string(e.path())
            .ok()
            .and_then(|s| s.lines().next().map(|l| l.trim() == pid.to_string()))
            .unwrap_or(false)
    })
}

#[test]
fn a_second_run_on_the_same_destination_exits_4_naming_the_holder() {
    let fx = fixture::extract();
    let cbob = Cbob::new();
    let dest = cbob.path("dest");
    let other = cbob.path("other-dest");
    let url = file_url(&fx.repo);
    let target = dest.to_str().expect("utf-8");
    let slow = [
        "sync",
        "--source",
        &url,
        "--target",
        target,
        "--bandwidth",
        "100KiB/s",
    ];
    let mut holder = cbob.spawn(&slow);
    let pid = holder.pid();
    assert!(
        wait_until(Duration::from_secs(30), Duration::from_millis(20), || {
            lock_held_by(&cbob.base(), pid)
        }),
        "the first run never recorded its PID in a lock file under {}",
        cbob.base().join("locks").display()
    );

    let second = cbob.run(&["sync", "--source", &url, "--target", target]);
    second.expect_code(4, "a second sync to the same destination");
    assert!(
        second.stderr.contains(&pid.to_string()),
        "the refusal names the holder's PID {pid}:\n{}",
        second.describe()
    );
    // Another destination is another lock.
    let elsewhere = cbob.run(&[
        "sync",
        "--source",
        &url,
        "--target",
        other.to_str().expect("utf-8"),
    ]);
    elsewhere.expect_ok("a concurrent sync to another destination");
    assert!(
        holder.try_status().is_none(),
        "the holder was still running during the refused run (bandwidth cap too high?)"
    );

    // The holder dies without cleaning up: the kernel releases the lock.
    holder.signal(libc::SIGKILL);
    holder.wait();
    let after = cbob.run(&["sync", "--source", &url, "--target", target]);
    after.expect_ok("a sync after the holder was killed");
    assert_same_tree(
        &read_tree(&dest),
        &read_tree(&fx.repo),
        "copy after the lock was freed",
    );
}

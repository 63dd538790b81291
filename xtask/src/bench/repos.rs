//! The two benchmark repositories: real pgBackRest 2.45 repositories written by a throwaway
//! PostgreSQL 15, generated once and cached under `<servers cache>/bench/repos/`.
//!
//! - **small**: ~10k tables (a heap and a primary-key index each) in one full backup with
//!   `repo1-bundle=n` and lz4, plus 300 WAL segments archived after it: tens of thousands of
//!   small objects, the shape of a busy Crunchy Bridge stanza.
//! - **large**: one ~1.3 GB table in a full backup with `compress-type=none`, so the first
//!   relation segment is stored as one 1 GiB object.
//!
//! The recipe follows `scripts/gen-fixture.sh` (reference/pgbackrest-lab.md §2, §3): private
//! socket dir and `listen_addresses=''`, a self-contained `pgbackrest.conf`, programs run as the
//! `postgres` user with a clean environment when we are root.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use cbob_test_support::pg::{PG_VERSION, as_pg_user, chown_to_pg_user, pg_bin_dir, pgbackrest_bin};
use md5::{Digest, Md5};

use super::server::bench_dir;

/// Bump when a recipe changes: cached repositories are regenerated.
const RECIPE: &str = "v1";
const STANZA: &str = "bench";
/// pgBackRest 2.45's S3 `repo-storage-upload-chunk-size` default: larger files are uploaded in
/// parts of this size, which decides the ETag an object store shows for them.
const UPLOAD_CHUNK: u64 = 5 * 1024 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    Small,
    Large,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Small => "small",
            Kind::Large => "large",
        }
    }
}

/// A generated repository in the cache.
pub struct Repo {
    pub name: &'static str,
    /// The repository root (`archive/`, `backup/`).
    pub root: PathBuf,
    /// Every regular file (relative path, sorted) with the ETag S3 would show for it.
    pub etags: Vec<(String, String)>,
    pub files: u64,
    pub bytes: u64,
    pub largest: u64,
}

/// The cached repository of `kind`, generated first if missing (or if `regenerate`).
pub fn ensure(kind: Kind, regenerate: bool) -> Result<Repo> {
    let dir = bench_dir()
        .join("repos")
        .join(format!("{}-{RECIPE}", kind.name()));
    let etags_file = dir.join("etags.tsv");
    if regenerate || !etags_file.is_file() {
        let _ = fs::remove_dir_all(&dir);
        generate(kind, &dir)?;
    }
    let text = fs::read_to_string(&etags_file)?;
    let root = dir.join("repo");
    let mut etags = Vec::new();
    let (mut bytes, mut largest) = (0, 0);
    for line in text.lines() {
        let (rel, etag) = line.split_once('\t').context("etags.tsv line")?;
        let len = fs::metadata(root.join(rel))
            .with_context(|| format!("cached repository {} is incomplete", dir.display()))?
            .len();
        bytes += len;
        largest = largest.max(len);
        etags.push((rel.to_string(), etag.to_string()));
    }
    Ok(Repo {
        name: kind.name(),
        root,
        files: etags.len() as u64,
        etags,
        bytes,
        largest,
    })
}

/// A throwaway PostgreSQL + pgBackRest session in a directory the `postgres` user can reach.
struct Gen {
    w: PathBuf,
    bin: PathBuf,
    conf: PathBuf,
}

impl Gen {
    fn cmd(&self, program: impl AsRef<Path>) -> Command {
        let mut c = as_pg_user(program, &self.bin, &self.w);
        c.env("PGHOST", self.w.join("sock"))
            .env("PGPORT", "55433")
            .env("PGUSER", "postgres");
        c
    }

    fn pg(&self, program: &str, args: &[&str]) -> Result<String> {
        let mut c = self.cmd(self.bin.join(program));
        c.args(args);
        output(&mut c, program)
    }

    fn pgbackrest(&self, args: &[&str]) -> Result<String> {
        let mut c = self.cmd(pgbackrest_bin());
        c.arg(format!("--config={}", self.conf.display()))
            .arg(format!("--stanza={STANZA}"))
            .args(args);
        output(&mut c, "pgbackrest")
    }

    fn sql(&self, sql: &str) -> Result<String> {
        self.pg(
            "psql",
            &[
                "-X",
                "-A",
                "-t",
                "-q",
                "-v",
                "ON_ERROR_STOP=1",
                "-d",
                "postgres",
                "-c",
                sql,
            ],
        )
        .map(|s| s.trim().to_string())
    }

    fn stop(&self, mode: &str) {
        if self.w.join("pg/postmaster.pid").exists() {
            let pgdata = self.w.join("pg");
            let _ = self.pg(
                "pg_ctl",
                &["-D", &pgdata.to_string_lossy(), "-m", mode, "-w", "stop"],
            );
        }
    }
}

impl Drop for Gen {
    fn drop(&mut self) {
        self.stop("immediate");
    }
}

fn output(c: &mut Command, what: &str) -> Result<String> {
    let out = c.output().with_context(|| format!("cannot run {what}"))?;
    ensure!(
        out.status.success(),
        "{what} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn step(kind: Kind, t: Instant, what: &str) {
    eprintln!(
        "bench: [{} repo {:>5.0} s] {what}",
        kind.name(),
        t.elapsed().as_secs_f64()
    );
}

fn generate(kind: Kind, dest: &Path) -> Result<()> {
    let t = Instant::now();
    let bin = pg_bin_dir(PG_VERSION);
    // In the temp dir: every parent must be traversable by `postgres` (the cache under /root is not).
    let tmp = tempfile::Builder::new()
        .prefix("cbob-bench-gen-")
        .tempdir()?;
    set_mode(tmp.path(), 0o755)?;
    let w = tmp.path().join("w");
    let repo = tmp.path().join("repo");
    for d in ["run/lock", "run/log", "run/spool", "sock"] {
        fs::create_dir_all(w.join(d))?;
    }
    fs::create_dir(&repo)?;
    set_mode(&repo, 0o750)?;
    chown_to_pg_user(&w);
    chown_to_pg_user(&repo);
    let conf = w.join("pgbackrest.conf");
    let compress = match kind {
        Kind::Small => "lz4",
        Kind::Large => "none",
    };
    fs::write(
        &conf,
        format!(
            "[global]\nrepo1-path={repo}\nrepo1-retention-full=1\nrepo1-bundle=n\n\
             compress-type={compress}\nlock-path={w}/run/lock\nlog-path={w}/run/log\n\
             spool-path={w}/run/spool\nlog-level-console=warn\nlog-level-file=info\n\
             start-fast=y\nprocess-max=2\n\n[{STANZA}]\npg1-path={w}/pg\npg1-port=55433\n\
             pg1-socket-path={w}/sock\n",
            repo = repo.display(),
            w = w.display()
        ),
    )?;
    let g = Gen {
        w: w.clone(),
        bin,
        conf: conf.clone(),
    };
    step(kind, t, &format!("initdb in {}", w.display()));
    let pgdata = w.join("pg");
    g.pg(
        "initdb",
        &[
            "-D",
            &pgdata.to_string_lossy(),
            "-U",
            "postgres",
            "--auth=trust",
            "--data-checksums",
            "-N",
            "-E",
            "UTF8",
            "--locale=C.UTF-8",
        ],
    )?;
    let mut pgconf = fs::OpenOptions::new()
        .append(true)
        .open(pgdata.join("postgresql.conf"))?;
    use std::io::Write;
    write!(
        pgconf,
        "port = 55433\nlisten_addresses = ''\nunix_socket_directories = '{w}/sock'\n\
         wal_level = replica\narchive_mode = on\n\
         archive_command = 'pgbackrest --config={conf} --stanza={STANZA} archive-push %p'\n\
         max_wal_size = 1GB\nshared_buffers = 128MB\nfsync = off\nsynchronous_commit = off\n\
         full_page_writes = off\nmax_connections = 50\n",
        w = w.display(),
        conf = conf.display()
    )?;
    drop(pgconf);
    g.pg(
        "pg_ctl",
        &[
            "-D",
            &pgdata.to_string_lossy(),
            "-l",
            &w.join("pg.log").to_string_lossy(),
            "-w",
            "-t",
            "60",
            "start",
        ],
    )?;
    g.pgbackrest(&["stanza-create"])?;

    let wal_after = match kind {
        Kind::Small => {
            step(
                kind,
                t,
                "creating 10,000 tables with a primary key and one row each",
            );
            let mut sql = String::new();
            for i in 0..10_000 {
                sql.push_str(&format!(
                    "CREATE TABLE t{i:05} (id int PRIMARY KEY, v int); INSERT INTO t{i:05} VALUES (1, {i});\n"
                ));
            }
            let file = w.join("tables.sql");
            fs::write(&file, sql)?;
            chown_to_pg_user(&file);
            g.pg(
                "psql",
                &[
                    "-X",
                    "-q",
                    "-v",
                    "ON_ERROR_STOP=1",
                    "-d",
                    "postgres",
                    "-f",
                    &file.to_string_lossy(),
                ],
            )?;
            300
        }
        Kind::Large => {
            step(kind, t, "loading a ~1.3 GB table (2.2M rows of 512 bytes)");
            g.sql(
                "CREATE TABLE big (id bigint, payload text);
                 INSERT INTO big SELECT g, repeat(md5(g::text), 16) FROM generate_series(1, 2200000) g;",
            )?;
            g.sql("CHECKPOINT")?;
            5
        }
    };
    step(kind, t, "full backup");
    g.pgbackrest(&["--type=full", "backup"])?;

    step(
        kind,
        t,
        &format!("{wal_after} WAL segments after the backup"),
    );
    g.sql(&format!(
        "CREATE TABLE walgen (i int);
         DO $$ BEGIN FOR i IN 1..{wal_after} LOOP
             INSERT INTO walgen VALUES (i); PERFORM pg_switch_wal();
         END LOOP; END $$;"
    ))?;
    let last = g.sql("SELECT pg_walfile_name(pg_switch_wal())")?;
    let waited = Instant::now();
    loop {
        let archived = g.sql("SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver")?;
        if !archived.is_empty() && archived >= last {
            break;
        }
        if waited.elapsed() > Duration::from_secs(900) {
            bail!(
                "WAL {last} was not archived (last archived: {archived}); see {}/pg.log",
                w.display()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    g.stop("fast");
    let info = g.pgbackrest(&["info"])?;
    ensure!(info.contains("status: ok"), "pgbackrest info:\n{info}");

    step(
        kind,
        t,
        "computing the ETags an S3 upload by pgBackRest would give",
    );
    let mut files = Vec::new();
    walk(&repo, &repo, &mut files)?;
    files.sort();
    let mut tsv = String::new();
    for rel in &files {
        tsv.push_str(&format!("{rel}\t{}\n", etag(&repo.join(rel))?));
    }
    let staging = dest.with_extension("tmp");
    let _ = fs::remove_dir_all(&staging);
    fs::create_dir_all(&staging)?;
    move_dir(&repo, &staging.join("repo"))?;
    fs::write(staging.join("etags.tsv"), tsv)?;
    fs::rename(&staging, dest)?;
    step(
        kind,
        t,
        &format!("done: {} files in {}", files.len(), dest.display()),
    );
    Ok(())
}

fn set_mode(p: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(p, fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {}", p.display()))
}

fn move_dir(from: &Path, to: &Path) -> Result<()> {
    if fs::rename(from, to).is_ok() {
        return Ok(());
    }
    crate::run(Command::new("cp").arg("-a").arg(from).arg(to), "cp -a")
}

/// Regular files under `dir` as paths relative to `root` (symlinks such as `latest` are not
/// objects in an object store).
pub fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) -> Result<()> {
    for e in fs::read_dir(dir).with_context(|| format!("read {}", dir.display()))? {
        let e = e?;
        let ft = e.file_type()?;
        if ft.is_dir() {
            walk(root, &e.path(), out)?;
        } else if ft.is_file() {
            let rel = e.path().strip_prefix(root)?.to_string_lossy().into_owned();
            out.push(rel);
        }
    }
    Ok(())
}

/// MD5 for a single PUT; for a file larger than one upload chunk, the multipart ETag
/// `md5(md5(part1) || md5(part2) ...)-N`.
fn etag(path: &Path) -> Result<String> {
    let mut f = fs::File::open(path)?;
    let mut whole = Md5::new();
    let mut parts: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; UPLOAD_CHUNK as usize];
    let mut n_parts = 0;
    loop {
        let mut filled = 0;
        while filled < buf.len() {
            let n = f.read(&mut buf[filled..])?;
            if n == 0 {
                break;
            }
            filled += n;
        }
        if filled == 0 {
            break;
        }
        whole.update(&buf[..filled]);
        parts.extend_from_slice(&Md5::digest(&buf[..filled]));
        n_parts += 1;
        if filled < buf.len() {
            break;
        }
    }
    let size = fs::metadata(path)?.len();
    Ok(if size > UPLOAD_CHUNK {
        format!("{:x}-{n_parts}", Md5::digest(&parts))
    } else {
        format!("{:x}", whole.finalize())
    })
}

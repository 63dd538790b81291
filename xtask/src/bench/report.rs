//! Tables on stdout and a JSON file under `target/bench/`.

use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::Result;
use serde_json::{Value, json};

use super::dest::Dest;
use super::repos::Repo;
use super::tools::{Measured, Tool};

/// One round of one tool on one repository into one kind of destination.
pub struct Sample {
    pub repo: &'static str,
    pub tool: Tool,
    /// `Local` in the tool comparison.
    pub dest: Dest,
    pub round: u32,
    pub cold: Measured,
    pub noop: Option<Measured>,
    /// `None` when the copy matched the source after both runs.
    pub problem: Option<String>,
    /// `/proc/loadavg` (1, 5, 15 min) when the round started: the machine is shared.
    pub loadavg: String,
}

impl Sample {
    fn ok(&self) -> bool {
        self.problem.is_none()
    }
}

/// Per repository and tool (or destination): medians over the good rounds, peak RSS as the
/// maximum.
struct Summary {
    name: &'static str,
    rounds: usize,
    failed: usize,
    cold: Vec<f64>,
    /// User and system CPU seconds of each good cold copy.
    cold_user: Vec<f64>,
    cold_sys: Vec<f64>,
    noop: Vec<f64>,
    cold_peak_mib: f64,
    noop_peak_mib: f64,
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn min_max(v: &[f64]) -> (f64, f64) {
    v.iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &x| {
            (lo.min(x), hi.max(x))
        })
}

fn summarize(
    samples: &[Sample],
    repo: &str,
    name: &'static str,
    keep: impl Fn(&Sample) -> bool,
) -> Option<Summary> {
    let mine: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.repo == repo && keep(s))
        .collect();
    if mine.is_empty() {
        return None;
    }
    let good: Vec<&&Sample> = mine.iter().filter(|s| s.ok()).collect();
    let mib = |kib: u64| kib as f64 / 1024.0;
    Some(Summary {
        name,
        rounds: mine.len(),
        failed: mine.len() - good.len(),
        cold: good.iter().map(|s| s.cold.seconds).collect(),
        cold_user: good.iter().map(|s| s.cold.user_seconds).collect(),
        cold_sys: good.iter().map(|s| s.cold.sys_seconds).collect(),
        noop: good
            .iter()
            .filter_map(|s| s.noop.as_ref().map(|m| m.seconds))
            .collect(),
        cold_peak_mib: good
            .iter()
            .map(|s| mib(s.cold.peak_rss_kib))
            .fold(f64::NAN, f64::max),
        noop_peak_mib: good
            .iter()
            .filter_map(|s| s.noop.as_ref().map(|m| mib(m.peak_rss_kib)))
            .fold(f64::NAN, f64::max),
    })
}

fn secs(v: &[f64]) -> String {
    if v.is_empty() {
        return "-".into();
    }
    let (lo, hi) = min_max(v);
    format!("{:.2} ({:.2}-{:.2})", median(v), lo, hi)
}

fn ratio(a: f64, b: f64) -> String {
    if a.is_finite() && b.is_finite() && b > 0.0 {
        format!("{:.2}", a / b)
    } else {
        "-".into()
    }
}

fn heading(out: &mut String, repo: &Repo, first: &str, extra: &str) {
    let _ = writeln!(
        out,
        "\n== {}: {} objects, {:.1} MB (largest object {:.1} MiB); medians (min-max) of the good rounds, peak RSS = max",
        repo.name,
        repo.files,
        repo.bytes as f64 / 1e6,
        repo.largest as f64 / 1048576.0
    );
    let _ = writeln!(
        out,
        "{first:<8} {:>20} {:>11} {:>8} {:>8} {:>9} {:>20} {:>11}{extra}  rounds",
        "cold s", "CPU usr+sys", "MB/s", "obj/s", "peak MiB", "no-op s", "no-op MiB"
    );
}

/// One table row (without the rounds column) and its JSON.
fn row(out: &mut String, repo: &Repo, s: &Summary, key: &str) -> Value {
    let mb = repo.bytes as f64 / 1e6;
    let cold = median(&s.cold);
    let _ = write!(
        out,
        "{:<8} {:>20} {:>11} {:>8.1} {:>8.0} {:>9.1} {:>20} {:>11.1}",
        s.name,
        secs(&s.cold),
        format!("{:.1}+{:.1}", median(&s.cold_user), median(&s.cold_sys)),
        mb / cold,
        repo.files as f64 / cold,
        s.cold_peak_mib,
        secs(&s.noop),
        s.noop_peak_mib,
    );
    json!({
        key: s.name,
        "rounds": s.rounds,
        "failed_rounds": s.failed,
        "cold_seconds_median": cold,
        "cold_seconds": s.cold,
        "cold_user_cpu_seconds_median": median(&s.cold_user),
        "cold_sys_cpu_seconds_median": median(&s.cold_sys),
        "cold_mb_per_s": mb / cold,
        "cold_objects_per_s": repo.files as f64 / cold,
        "cold_peak_rss_mib": s.cold_peak_mib,
        "noop_seconds_median": median(&s.noop),
        "noop_seconds": s.noop,
        "noop_peak_rss_mib": s.noop_peak_mib,
    })
}

fn rounds_column(s: &Summary) -> String {
    if s.failed > 0 {
        format!("  {} ({} FAILED)", s.rounds, s.failed)
    } else {
        format!("  {}", s.rounds)
    }
}

/// Prints one repository's table and returns its JSON summary.
pub fn table(repo: &Repo, samples: &[Sample], tools: &[Tool]) -> Value {
    let mut out = String::new();
    heading(&mut out, repo, "tool", "");
    let sums: Vec<Summary> = tools
        .iter()
        .filter_map(|&t| summarize(samples, repo.name, t.name(), |s| s.tool == t))
        .collect();
    let mut json_tools = Vec::new();
    for s in &sums {
        json_tools.push(row(&mut out, repo, s, "tool"));
        let _ = writeln!(out, "{}", rounds_column(s));
    }
    let mut json_ratios = Vec::new();
    if let Some(c) = sums.iter().find(|s| s.name == Tool::Cbob.name()) {
        let _ = writeln!(
            out,
            "ratios        cold time   no-op time   cold peak RSS   (time < 1: cbob faster; memory < 1: cbob smaller)"
        );
        for p in sums.iter().filter(|s| s.name != Tool::Cbob.name()) {
            let (ct, nt, pm) = (
                ratio(median(&c.cold), median(&p.cold)),
                ratio(median(&c.noop), median(&p.noop)),
                ratio(c.cold_peak_mib, p.cold_peak_mib),
            );
            let _ = writeln!(out, "cbob/{:<8} {:>9} {:>12} {:>15}", p.name, ct, nt, pm);
            json_ratios.push(json!({
                "peer": p.name,
                "cold_time": median(&c.cold) / median(&p.cold),
                "noop_time": median(&c.noop) / median(&p.noop),
                "cold_peak_rss": c.cold_peak_mib / p.cold_peak_mib,
            }));
        }
    }
    print!("{out}");
    json!({
        "repo": repo.name,
        "objects": repo.files,
        "bytes": repo.bytes,
        "largest_object_bytes": repo.largest,
        "tools": json_tools,
        "cbob_ratios": json_ratios,
    })
}

/// `--dest`: prints one repository's table, a row per destination (cbob only), with the cold
/// time relative to `local` when it was measured, and returns its JSON summary.
pub fn dest_table(repo: &Repo, samples: &[Sample], dests: &[Dest]) -> Value {
    let mut out = String::new();
    heading(&mut out, repo, "cbob ->", "  vs local");
    let sums: Vec<Summary> = dests
        .iter()
        .filter_map(|&d| summarize(samples, repo.name, d.name(), |s| s.dest == d))
        .collect();
    let local = sums
        .iter()
        .find(|s| s.name == Dest::Local.name())
        .map(|s| median(&s.cold))
        .unwrap_or(f64::NAN);
    let mut json_dests = Vec::new();
    for s in &sums {
        let mut v = row(&mut out, repo, s, "dest");
        let vs_local = median(&s.cold) / local;
        v["cold_time_vs_local"] = json!(vs_local.is_finite().then_some(vs_local));
        let _ = writeln!(
            out,
            " {:>9}{}",
            ratio(median(&s.cold), local),
            rounds_column(s)
        );
        json_dests.push(v);
    }
    print!("{out}");
    json!({
        "repo": repo.name,
        "objects": repo.files,
        "bytes": repo.bytes,
        "largest_object_bytes": repo.largest,
        "destinations": json_dests,
    })
}

/// Prints every failed round with its reason.
pub fn failures(samples: &[Sample]) {
    for s in samples.iter().filter(|s| !s.ok()) {
        println!(
            "FAILED {} {} -> {} round {}: {} (log {})",
            s.repo,
            s.tool.name(),
            s.dest.name(),
            s.round,
            s.problem.as_deref().unwrap_or(""),
            s.cold.log.display()
        );
    }
}

fn measured(m: &Measured) -> Value {
    json!({
        "seconds": m.seconds,
        "user_cpu_seconds": m.user_seconds,
        "sys_cpu_seconds": m.sys_seconds,
        "peak_rss_kib": m.peak_rss_kib,
        "exit_code": m.exit_code,
        "log": m.log,
    })
}

/// Writes `target/bench/<stem>-<unix time>.json` and `target/bench/latest.json` (stem `bench`,
/// the tool comparison) or `latest-<stem>.json`.
pub fn write_json(
    dir: &std::path::Path,
    stem: &str,
    meta: Value,
    summaries: Vec<Value>,
    samples: &[Sample],
) -> Result<PathBuf> {
    let runs: Vec<Value> = samples
        .iter()
        .map(|s| {
            json!({
                "repo": s.repo,
                "tool": s.tool.name(),
                "dest": s.dest.name(),
                "round": s.round,
                "loadavg": s.loadavg,
                "cold": measured(&s.cold),
                "noop": s.noop.as_ref().map(measured),
                "problem": s.problem,
            })
        })
        .collect();
    let doc = json!({ "meta": meta, "summary": summaries, "runs": runs });
    std::fs::create_dir_all(dir)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let path = dir.join(format!("{stem}-{now}.json"));
    let text = serde_json::to_string_pretty(&doc)? + "\n";
    std::fs::write(&path, &text)?;
    let latest = if stem == "bench" {
        "latest.json".to_string()
    } else {
        format!("latest-{stem}.json")
    };
    std::fs::write(dir.join(latest), &text)?;
    Ok(path)
}

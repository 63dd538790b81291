//! `cargo xtask dist`: everything a release ships, in `target/dist/`:
//!
//! - `bin/cbob` (every provider) and the slim per-cloud binaries `bin/cbob-s3`, `cbob-azure`,
//!   `cbob-gcs`, `cbob-minio` (`--no-default-features --features <cloud>`), release profile;
//! - `man/`: one page per command, generated from the clap definition (`cbob manpages`);
//! - `completions/`: bash, zsh, fish, elvish and PowerShell scripts (`cbob completions`);
//! - `packaging/`: the systemd units, the cron example, the Dockerfile and compose file.
//!
//! It prints each binary's size and build time. Release builds are heavy (thin LTO over the
//! cloud SDKs): expect tens of minutes for the first, a few for each slim one after it.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};

#[derive(clap::Args)]
pub struct Opts {
    /// Build only the full binary (no per-cloud slim builds)
    #[arg(long)]
    full_only: bool,
    /// Output directory [default: target/dist]
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
}

/// (binary name, cargo feature arguments).
const VARIANTS: &[(&str, &[&str])] = &[
    ("cbob", &[]),
    ("cbob-s3", &["--no-default-features", "--features", "s3"]),
    (
        "cbob-azure",
        &["--no-default-features", "--features", "azure"],
    ),
    ("cbob-gcs", &["--no-default-features", "--features", "gcs"]),
    (
        "cbob-minio",
        &["--no-default-features", "--features", "minio"],
    ),
];

const SHELLS: &[(&str, &str)] = &[
    ("bash", "cbob.bash"),
    ("zsh", "_cbob"),
    ("fish", "cbob.fish"),
    ("elvish", "cbob.elv"),
    ("powershell", "_cbob.ps1"),
];

fn target_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
}

fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    fs::create_dir_all(to)?;
    for e in fs::read_dir(from).with_context(|| format!("read {}", from.display()))? {
        let e = e?;
        let dest = to.join(e.file_name());
        if e.file_type()?.is_dir() {
            copy_tree(&e.path(), &dest)?;
        } else {
            fs::copy(e.path(), &dest)
                .with_context(|| format!("copy {} to {}", e.path().display(), dest.display()))?;
        }
    }
    Ok(())
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

pub fn run(opts: Opts) -> Result<()> {
    let root = crate::root();
    let out = opts.out.unwrap_or_else(|| target_dir(&root).join("dist"));
    if out.exists() {
        fs::remove_dir_all(&out).with_context(|| format!("clear {}", out.display()))?;
    }
    let bin_dir = out.join("bin");
    fs::create_dir_all(&bin_dir)?;
    let built = target_dir(&root).join("release").join("cbob");

    let variants = if opts.full_only {
        &VARIANTS[..1]
    } else {
        VARIANTS
    };
    let mut sizes: Vec<(&str, u64, f64)> = Vec::new();
    for (name, features) in variants {
        eprintln!(
            "xtask: cargo build --release -p cbob-cli {}",
            features.join(" ")
        );
        let t = Instant::now();
        crate::run(
            crate::cargo()
                .current_dir(&root)
                .args(["build", "--release", "--locked", "-p", "cbob-cli"])
                .args(*features),
            &format!("release build of {name}"),
        )?;
        let secs = t.elapsed().as_secs_f64();
        // Each build overwrites target/release/cbob: keep this one under its own name now.
        let dest = bin_dir.join(name);
        fs::copy(&built, &dest)
            .with_context(|| format!("copy {} to {}", built.display(), dest.display()))?;
        sizes.push((name, fs::metadata(&dest)?.len(), secs));
    }

    let cbob = bin_dir.join("cbob");
    let man = out.join("man");
    crate::run(
        Command::new(&cbob).arg("manpages").arg(&man),
        "cbob manpages",
    )?;
    let completions = out.join("completions");
    fs::create_dir_all(&completions)?;
    for (shell, file) in SHELLS {
        let o = Command::new(&cbob)
            .args(["completions", shell])
            .output()
            .with_context(|| format!("run {} completions {shell}", cbob.display()))?;
        if !o.status.success() {
            bail!(
                "cbob completions {shell} failed: {}",
                String::from_utf8_lossy(&o.stderr)
            );
        }
        fs::write(completions.join(file), o.stdout)?;
    }
    copy_tree(&root.join("packaging"), &out.join("packaging"))?;

    let pages = fs::read_dir(&man)?.count();
    println!("\ncbob release artifacts in {}", out.display());
    println!(
        "{:<12} {:>10} {:>9} {:>11}",
        "binary", "size", "of full", "build time"
    );
    let full = sizes[0].1;
    for (name, size, secs) in &sizes {
        println!(
            "{:<12} {:>10} {:>8.0}% {:>10.0}s",
            name,
            mib(*size),
            *size as f64 * 100.0 / full as f64,
            secs
        );
    }
    println!(
        "man pages: {pages} in man/; completions: {} shells in completions/; packaging/: systemd, cron, docker",
        SHELLS.len()
    );
    Ok(())
}

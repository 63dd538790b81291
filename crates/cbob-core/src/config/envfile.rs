//! The bash tool's env-file (`~/.cb_offsite_backup`): `KEY=VALUE` lines, read as data, never run.
//!
//! Accepted, so existing files work unchanged: `#` comment lines, blank lines, an optional
//! `export ` prefix, values in single quotes (literal) or double quotes (`\"`, `\\`, `\$` and
//! `` \` `` escapes), and a `# comment` after a value when a space precedes the `#`.
//! Fixed relative to the bash loader: quotes are removed instead of kept, values may contain
//! spaces, nothing is glob-expanded, and a line that is not `KEY=VALUE` is an error naming the
//! file and line instead of a silently exported fragment. No `$VAR` expansion, like the bash tool.

use std::fmt;
use std::path::{Path, PathBuf};

/// One `KEY=VALUE` line.
#[derive(Clone, PartialEq, Eq)]
pub struct EnvEntry {
    pub key: String,
    pub value: String,
    /// 1-based line number.
    pub line: usize,
}

// Values may be secrets: print keys and lines only.
impl fmt::Debug for EnvEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}=*** (line {})", self.key, self.line)
    }
}

/// A parsed env-file.
#[derive(Debug, Clone)]
pub struct EnvFile {
    pub path: PathBuf,
    pub entries: Vec<EnvEntry>,
}

impl EnvFile {
    /// The effective value of a key: the last line setting it wins, as in a shell.
    pub fn get(&self, key: &str) -> Option<&EnvEntry> {
        self.entries.iter().rev().find(|e| e.key == key)
    }
}

/// A line that is not `KEY=VALUE`. The message never quotes the value, which may be a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvFileError {
    pub path: PathBuf,
    pub line: usize,
    pub message: String,
}

impl fmt::Display for EnvFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.path.display(), self.line, self.message)
    }
}

impl std::error::Error for EnvFileError {}

/// Parses env-file text; `path` is only used in errors.
pub fn parse(path: &Path, text: &str) -> Result<EnvFile, EnvFileError> {
    let mut entries = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line_no = i + 1;
        let err = |message: String| EnvFileError {
            path: path.to_path_buf(),
            line: line_no,
            message,
        };
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = match line.strip_prefix("export") {
            Some(rest) if rest.starts_with([' ', '\t']) => rest.trim_start(),
            _ => line,
        };
        let Some((key, rest)) = line.split_once('=') else {
            return Err(err("expected KEY=VALUE (no '=' on this line)".into()));
        };
        if !is_valid_name(key) {
            return Err(err(
                "expected KEY=VALUE with KEY made of letters, digits and '_' and no spaces around '='".into(),
            ));
        }
        let value = parse_value(rest).map_err(|why| err(format!("{key}: {why}")))?;
        entries.push(EnvEntry {
            key: key.to_string(),
            value,
            line: line_no,
        });
    }
    Ok(EnvFile {
        path: path.to_path_buf(),
        entries,
    })
}

/// Whether `text` looks like an env-file rather than TOML: at least one assignment, and every
/// key an upper-case variable name. Used when `--config` / `CBOB_CONFIG_FILE` names a file that
/// the bash tool would have read (it used that variable for its env-file).
pub fn looks_like_env_file(text: &str) -> bool {
    match parse(Path::new(""), text) {
        Ok(file) => {
            !file.entries.is_empty()
                && file.entries.iter().all(|e| {
                    e.key
                        .chars()
                        .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
                })
        }
        Err(_) => false,
    }
}

fn is_valid_name(key: &str) -> bool {
    let mut chars = key.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn parse_value(rest: &str) -> Result<String, String> {
    let rest = rest.trim_start();
    let (value, after) = if let Some(body) = rest.strip_prefix('\'') {
        let end = body.find('\'').ok_or("unterminated single quote")?;
        (body[..end].to_string(), &body[end + 1..])
    } else if let Some(body) = rest.strip_prefix('"') {
        let mut out = String::new();
        let mut chars = body.char_indices();
        let mut end = None;
        while let Some((i, c)) = chars.next() {
            match c {
                '"' => {
                    end = Some(i);
                    break;
                }
                '\\' => match chars.next() {
                    Some((_, e @ ('"' | '\\' | '$' | '`'))) => out.push(e),
                    Some((_, other)) => {
                        out.push('\\');
                        out.push(other);
                    }
                    None => return Err("unterminated double quote".into()),
                },
                c => out.push(c),
            }
        }
        let end = end.ok_or("unterminated double quote")?;
        (out, &body[end + 1..])
    } else {
        // Unquoted: a `#` starts a comment only after whitespace, so `#backup-log` stays a value.
        let cut = rest
            .char_indices()
            .find(|&(i, c)| c == '#' && i > 0 && rest[..i].ends_with([' ', '\t']))
            .map_or(rest.len(), |(i, _)| i);
        return Ok(rest[..cut].trim_end().to_string());
    };
    let after = after.trim_start();
    if !(after.is_empty() || after.starts_with('#')) {
        return Err("unexpected text after the closing quote".into());
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> Result<EnvFile, EnvFileError> {
        parse(Path::new("/x/env"), text)
    }

    fn values(text: &str) -> Vec<(String, String)> {
        p(text)
            .unwrap()
            .entries
            .into_iter()
            .map(|e| (e.key, e.value))
            .collect()
    }

    fn kv(k: &str, v: &str) -> (String, String) {
        (k.to_string(), v.to_string())
    }

    #[test]
    fn bash_tool_example_file() {
        let text = "# comment\nCBOB_CRUNCHY_API_KEY=xxx\nCBOB_DRY_RUN=true\n\nCBOB_LOG_PATH=/var/log/\n\
                    CBOB_SLACK_CHANNEL=#backup-log\n";
        assert_eq!(
            values(text),
            vec![
                kv("CBOB_CRUNCHY_API_KEY", "xxx"),
                kv("CBOB_DRY_RUN", "true"),
                kv("CBOB_LOG_PATH", "/var/log/"),
                kv("CBOB_SLACK_CHANNEL", "#backup-log"),
            ]
        );
    }

    #[test]
    fn quotes_export_comments() {
        let text = "  # indented comment\nexport A=1\nexport\tB='x y'\nC=\"a \\\"q\\\" $HOME \\\\ \\n\"  # c\n\
                    D='lit $x \\n' # c\nE=two words # note\nF=\nG=x#y\nH=\"\"";
        assert_eq!(
            values(text),
            vec![
                kv("A", "1"),
                kv("B", "x y"),
                kv("C", "a \"q\" $HOME \\ \\n"),
                kv("D", "lit $x \\n"),
                kv("E", "two words"),
                kv("F", ""),
                kv("G", "x#y"),
                kv("H", ""),
            ]
        );
        assert!(p("B='it''s'").is_err());
    }

    #[test]
    fn malformed_lines_name_file_and_line() {
        let e = p("A=1\nthis is not an assignment\n").unwrap_err();
        assert_eq!((e.line, e.path.as_path()), (2, Path::new("/x/env")));
        assert!(e.to_string().starts_with("/x/env:2:"), "{e}");
        for bad in [
            "KEY = v",
            "1A=x",
            "A='open",
            "A=\"open",
            "A=\"x\" trailing",
            "=v",
        ] {
            assert!(p(bad).is_err(), "{bad}");
        }
        // A secret in a malformed line is not echoed.
        let e = p("CBOB_CRUNCHY_API_KEY='s3cr3t-value").unwrap_err();
        assert!(!e.to_string().contains("s3cr3t"), "{e}");
    }

    #[test]
    fn last_assignment_wins_and_debug_hides_values() {
        let f = p("A=1\nA=2").unwrap();
        assert_eq!(f.get("A").unwrap().value, "2");
        assert!(!format!("{f:?}").contains("=2"), "{f:?}");
    }

    #[test]
    fn detects_env_format() {
        assert!(looks_like_env_file("# x\nCBOB_A=1\nexport B='x y'\n"));
        assert!(!looks_like_env_file("[dest]\nbucket = \"x\"\n"));
        assert!(!looks_like_env_file("dry_run = true\n"));
        assert!(!looks_like_env_file("# only comments\n"));
    }
}

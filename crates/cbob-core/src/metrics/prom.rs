//! Writing the Prometheus text exposition format (version 0.0.4): `# HELP` and `# TYPE` once per
//! family, then its samples, label values escaped.

use std::fmt::Write;

/// Builds one exposition document. Families must be written whole (all samples of a family
/// right after its header); [`PromWriter::family`] enforces a header per name.
#[derive(Debug, Default)]
pub struct PromWriter {
    out: String,
    families: Vec<String>,
}

/// Escapes a label value: backslash, double quote and newline.
pub fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn format_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        }
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

impl PromWriter {
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts a family: `kind` is `gauge` or `counter` (counters end in `_total`).
    ///
    /// # Panics
    /// If the family was already started, or a counter's name does not end in `_total`: both
    /// are programming errors that would make the document invalid.
    pub fn family(&mut self, name: &str, kind: &str, help: &str) -> &mut Self {
        assert!(
            !self.families.iter().any(|f| f == name),
            "metric family {name} written twice"
        );
        assert!(
            kind != "counter" || name.ends_with("_total"),
            "counter {name} must end in _total"
        );
        self.families.push(name.to_string());
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
        self
    }

    /// One sample of the family just started.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) -> &mut Self {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{k}=\"{}\"", escape_label(v));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {}", format_value(value));
        self
    }

    pub fn finish(self) -> String {
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_families_and_escapes() {
        let mut w = PromWriter::new();
        w.family("cbob_x_bytes", "gauge", "Bytes.")
            .sample("cbob_x_bytes", &[("a", "q\"\\\nz"), ("b", "c")], 12.0)
            .sample("cbob_x_bytes", &[], 0.5);
        w.family("cbob_y_total", "counter", "Runs.")
            .sample("cbob_y_total", &[], 3.0);
        assert_eq!(
            w.finish(),
            "# HELP cbob_x_bytes Bytes.\n# TYPE cbob_x_bytes gauge\ncbob_x_bytes{a=\"q\\\"\\\\\\nz\",b=\"c\"} 12\ncbob_x_bytes 0.5\n\
             # HELP cbob_y_total Runs.\n# TYPE cbob_y_total counter\ncbob_y_total 3\n"
        );
    }

    #[test]
    #[should_panic(expected = "must end in _total")]
    fn counters_end_in_total() {
        PromWriter::new().family("cbob_runs", "counter", "x");
    }
}

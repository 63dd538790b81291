//! Checks that a document is valid Prometheus text (format 0.0.4) and follows the naming
//! conventions, with the `prometheus-parse` crate plus the strict rules it does not enforce.

use std::collections::{BTreeMap, HashSet};

/// Series → value, the key being `name{label="v",...}` with labels sorted.
pub type Series = BTreeMap<String, f64>;

fn valid_name(n: &str) -> bool {
    let mut chars = n.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// Parses and checks `text`; panics naming the rule broken.
pub fn parse(text: &str) -> Series {
    assert!(text.ends_with('\n'), "the document must end with a newline");
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
        .unwrap_or_else(|e| panic!("not Prometheus text: {e}\n{text}"));
    let mut helped = HashSet::new();
    let mut typed: BTreeMap<String, String> = BTreeMap::new();
    let mut finished: HashSet<String> = HashSet::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let name = rest.split(' ').next().unwrap().to_string();
            assert!(helped.insert(name.clone()), "two HELP lines for {name}");
            assert!(!rest[name.len()..].trim().is_empty(), "{name}: empty HELP");
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split(' ');
            let (name, kind) = (parts.next().unwrap(), parts.next().unwrap());
            assert!(["gauge", "counter"].contains(&kind), "{name}: type {kind}");
            assert!(
                typed.insert(name.to_string(), kind.to_string()).is_none(),
                "two TYPE lines for {name}"
            );
            if let Some(prev) = current.replace(name.to_string()) {
                finished.insert(prev);
            }
            continue;
        }
        assert!(
            !line.starts_with('#') && !line.trim().is_empty(),
            "unexpected line {line:?}"
        );
        let name = line.split(['{', ' ']).next().unwrap();
        assert!(valid_name(name), "bad metric name {name:?}");
        assert!(name.starts_with("cbob_"), "{name}: not in cbob's namespace");
        assert_eq!(
            current.as_deref(),
            Some(name),
            "sample of {name} outside its family block"
        );
        assert!(
            !finished.contains(name),
            "{name}: family split in two blocks"
        );
        assert!(helped.contains(name), "{name}: no HELP");
    }
    for (name, kind) in &typed {
        if kind == "counter" {
            assert!(
                name.ends_with("_total"),
                "counter {name} must end in _total"
            );
        } else {
            assert!(
                !name.ends_with("_total"),
                "gauge {name} must not end in _total"
            );
        }
        if name.contains("seconds") {
            assert!(
                name.ends_with("_seconds") || name.ends_with("_seconds_total"),
                "{name}: unit suffix"
            );
        }
    }
    let mut series = Series::new();
    for s in &scrape.samples {
        let mut labels: Vec<(String, String)> = s
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        labels.sort();
        let key = format!(
            "{}{{{}}}",
            s.metric,
            labels
                .iter()
                .map(|(k, v)| format!("{k}=\"{v}\""))
                .collect::<Vec<_>>()
                .join(",")
        );
        let v = match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => panic!("{key}: histograms and summaries are not expected"),
        };
        assert!(
            series.insert(key.clone(), v).is_none(),
            "duplicate series {key}"
        );
    }
    assert_eq!(
        series.len(),
        text.lines().filter(|l| !l.starts_with('#')).count(),
        "every sample line parsed"
    );
    series
}

/// The value of the one series of `name` whose labels include all of `labels`.
pub fn value(series: &Series, name: &str, labels: &[(&str, &str)]) -> f64 {
    let found: Vec<(&String, &f64)> = series
        .iter()
        .filter(|(k, _)| k.starts_with(&format!("{name}{{")))
        .filter(|(k, _)| {
            labels
                .iter()
                .all(|(l, v)| k.contains(&format!("{l}=\"{v}\"")))
        })
        .collect();
    assert_eq!(found.len(), 1, "{name} {labels:?}: found {found:?}");
    *found[0].1
}

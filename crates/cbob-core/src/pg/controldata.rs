//! `pg_controldata` output: WAL segment size, data checksums, the primary's limits, the state.

use std::collections::BTreeMap;

/// Parsed `pg_controldata` output (`Name:   value` lines, English with `LANG=C.UTF-8`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ControlData {
    values: BTreeMap<String, String>,
}

impl ControlData {
    pub fn parse(text: &str) -> Self {
        let values = text
            .lines()
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect();
        Self { values }
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    fn number(&self, name: &str) -> Option<u64> {
        self.get(name)?.parse().ok()
    }

    /// `Bytes per WAL segment`.
    pub fn wal_segment_size(&self) -> Option<u64> {
        self.number("Bytes per WAL segment")
    }

    /// `Data page checksum version` is not 0.
    pub fn checksums_enabled(&self) -> bool {
        self.number("Data page checksum version")
            .is_some_and(|v| v != 0)
    }

    /// `Database cluster state`, e.g. `shut down`, `in archive recovery`.
    pub fn state(&self) -> Option<&str> {
        self.get("Database cluster state")
    }

    /// A `<name> setting` line of the primary's limits: `max_connections`,
    /// `max_worker_processes`, `max_wal_senders`, `max_prepared_xacts`, `max_locks_per_xact`.
    pub fn setting(&self, name: &str) -> Option<u64> {
        self.number(&format!("{name} setting"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "pg_control version number:            1300
Catalog version number:               202209061
Database cluster state:               shut down
Bytes per WAL segment:                16777216
max_connections setting:              200
max_prepared_xacts setting:           0
max_locks_per_xact setting:           64
Data page checksum version:           1
";

    #[test]
    fn parses_what_restore_check_needs() {
        let c = ControlData::parse(SAMPLE);
        assert_eq!(c.wal_segment_size(), Some(16 * 1024 * 1024));
        assert!(c.checksums_enabled());
        assert_eq!(c.state(), Some("shut down"));
        assert_eq!(c.setting("max_connections"), Some(200));
        assert_eq!(c.setting("max_locks_per_xact"), Some(64));
        let off = ControlData::parse("Data page checksum version:           0\n");
        assert!(!off.checksums_enabled());
    }
}

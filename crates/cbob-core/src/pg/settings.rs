//! The server settings that make a cluster from somewhere else (a managed service) start here.
//!
//! A restored `postgresql.conf` names certificates, socket directories, preload libraries and
//! include files of the source machine, and `postgresql.auto.conf` may carry `ALTER SYSTEM`
//! values; either can stop the server from starting, make it archive into the source's
//! repository, or make it listen on the network. So the server reads cbob's own config file
//! (`config_file=`) and every setting below is also given on the command line, which beats
//! `postgresql.auto.conf`. `restore_command` and the recovery target still come from
//! `postgresql.auto.conf`, where pgBackRest's restore wrote them. (reference/pgbackrest-lab.md §7.7)

use std::path::Path;

use super::controldata::ControlData;

/// One server setting.
pub type Setting = (String, String);

/// Where a server listens and finds its authentication files.
#[derive(Debug, Clone)]
pub struct Listen<'a> {
    pub port: u16,
    /// The private directory holding the Unix socket.
    pub socket_dir: &'a Path,
    /// Also listen on TCP localhost (`cbob postgres` instances); restore-check servers never do.
    pub tcp_localhost: bool,
    pub hba_file: &'a Path,
    pub ident_file: &'a Path,
    pub max_connections: u32,
}

/// Settings for a server started on restored data. `control` (from `pg_controldata` of the
/// restored cluster) supplies limits recovery must not go below.
pub fn server_settings(listen: &Listen<'_>, control: Option<&ControlData>) -> Vec<Setting> {
    let s = |k: &str, v: &str| (k.to_string(), v.to_string());
    let limit = |name: &str, ours: u64| -> String {
        control
            .and_then(|c| c.setting(name))
            .map_or(ours, |theirs| theirs.max(ours))
            .to_string()
    };
    vec![
        // Reachable only through a private socket (and, for instances, localhost).
        s(
            "listen_addresses",
            if listen.tcp_localhost {
                "localhost"
            } else {
                ""
            },
        ),
        s("port", &listen.port.to_string()),
        s(
            "unix_socket_directories",
            &listen.socket_dir.display().to_string(),
        ),
        s("unix_socket_permissions", "0700"),
        s("unix_socket_group", ""),
        s("hba_file", &listen.hba_file.display().to_string()),
        s("ident_file", &listen.ident_file.display().to_string()),
        s("external_pid_file", ""),
        // Nothing of the source machine: certificates, libraries, archiving, replication.
        s("ssl", "off"),
        s("shared_preload_libraries", ""),
        s("session_preload_libraries", ""),
        s("local_preload_libraries", ""),
        s("archive_mode", "off"),
        s("archive_command", ""),
        s("archive_cleanup_command", ""),
        s("recovery_end_command", ""),
        s("primary_conninfo", ""),
        s("primary_slot_name", ""),
        // Messages cbob can read, logs on stderr (captured by cbob), no collector.
        s("lc_messages", "C"),
        s("logging_collector", "off"),
        s("log_destination", "stderr"),
        s("log_min_messages", "warning"),
        // Memory that fits a small machine, whatever the source had.
        s("shared_buffers", "128MB"),
        s("huge_pages", "try"),
        s("work_mem", "16MB"),
        s("maintenance_work_mem", "128MB"),
        // hot_standby is off, so recovery does not need the primary's max_connections.
        s("max_connections", &listen.max_connections.to_string()),
        // Recovery refuses to replay prepared transactions or locks beyond these.
        s("max_prepared_transactions", &limit("max_prepared_xacts", 0)),
        s(
            "max_locks_per_transaction",
            &limit("max_locks_per_xact", 64),
        ),
        s("hot_standby", "off"),
        s("jit", "off"),
    ]
}

/// Settings for a throwaway server: no fsync (a restored cluster starts "crashed" and would
/// fsync the whole data directory first), no autovacuum competing with the checks.
pub fn throwaway_settings() -> Vec<Setting> {
    [
        ("fsync", "off"),
        ("synchronous_commit", "off"),
        ("full_page_writes", "off"),
        ("autovacuum", "off"),
        ("max_wal_size", "1GB"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// The settings as a `postgresql.conf` file.
pub fn render_conf(settings: &[Setting]) -> String {
    let mut out =
        String::from("# Written by cbob. Every setting is also given on the command line.\n");
    for (k, v) in settings {
        out.push_str(&format!(
            "{k} = '{}'\n",
            v.replace('\\', "\\\\").replace('\'', "''")
        ));
    }
    out
}

/// The settings as `-c name=value` arguments (no shell involved, so no quoting).
pub fn command_line(settings: &[Setting]) -> Vec<String> {
    settings
        .iter()
        .flat_map(|(k, v)| ["-c".to_string(), format!("{k}={v}")])
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_what_breaks_a_foreign_cluster() {
        let listen = Listen {
            port: 55432,
            socket_dir: Path::new("/w/sock"),
            tcp_localhost: false,
            hba_file: Path::new("/w/run/pg_hba.conf"),
            ident_file: Path::new("/w/run/pg_ident.conf"),
            max_connections: 20,
        };
        let control = ControlData::parse(
            "max_connections setting: 200\nmax_prepared_xacts setting: 5\nmax_locks_per_xact setting: 128\n",
        );
        let s = server_settings(&listen, Some(&control));
        let get = |k: &str| s.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("listen_addresses"), Some(""));
        assert_eq!(get("ssl"), Some("off"));
        assert_eq!(get("shared_preload_libraries"), Some(""));
        assert_eq!(get("archive_mode"), Some("off"));
        assert_eq!(get("unix_socket_directories"), Some("/w/sock"));
        assert_eq!(get("max_prepared_transactions"), Some("5"));
        assert_eq!(get("max_locks_per_transaction"), Some("128"));
        assert_eq!(get("max_connections"), Some("20"));
        let args = command_line(&s);
        assert!(args.windows(2).any(|w| w[0] == "-c" && w[1] == "ssl=off"));
        let conf = render_conf(&[("a".into(), "it's".into())]);
        assert!(conf.contains("a = 'it''s'"), "{conf}");
    }
}

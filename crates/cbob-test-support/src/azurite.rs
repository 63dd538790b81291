//! Azurite (npm `azurite`): the Azure Blob Storage emulator, in memory.
//!
//! Azurite enforces Shared Key and SAS signatures, so creating a container here signs the
//! request with the well-known development account key, and [`Azurite::container_sas`] mints
//! real service SAS tokens for `key_type=sas` tests.

use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::http;
use crate::locate::{Tool, node};
use crate::process::{ServerProcess, start_server, unique_bucket_name};

/// Azurite's built-in account.
pub const ACCOUNT: &str = "devstoreaccount1";
/// Azurite's built-in account key (the real one, from Azurite's source; a 70-character variant
/// quoted in some places is not valid base64).
pub const ACCOUNT_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// Storage service version used for the harness's own requests and SAS tokens.
const API_VERSION: &str = "2022-11-02";

/// A running Azurite blob service.
#[derive(Debug)]
pub struct Azurite {
    process: ServerProcess,
}

/// The shared Azurite of this test binary.
pub fn azurite() -> &'static Azurite {
    static AZURITE: OnceLock<Azurite> = OnceLock::new();
    AZURITE.get_or_init(|| Azurite {
        process: start_server("azurite", command, ready),
    })
}

/// The command that starts Azurite's blob service on 127.0.0.1:`port`, in memory.
pub fn command(port: u16) -> Command {
    let main_js = Tool::AzuriteMainJs.require();
    let mut c = Command::new(node());
    c.arg(main_js)
        .args(["--blobHost", "127.0.0.1", "--blobPort", &port.to_string()])
        // Telemetry off: on this offline machine it keeps node alive after SIGTERM.
        // The API-version checks off: a newer SDK must not break the tests.
        .args([
            "--inMemoryPersistence",
            "--disableTelemetry",
            "--skipApiVersionCheck",
            "--loose",
            "--silent",
        ]);
    c
}

/// The command that starts Azurite's blob service on 127.0.0.1:`port` with its data on disk in
/// `dir` (`--location`), for tests that kill the server and start it again on the same storage.
pub fn command_on_disk(port: u16, dir: &std::path::Path) -> Command {
    let main_js = Tool::AzuriteMainJs.require();
    let mut c = Command::new(node());
    c.arg(main_js)
        .args(["--blobHost", "127.0.0.1", "--blobPort", &port.to_string()])
        .arg("--location")
        .arg(dir)
        .args([
            "--disableTelemetry",
            "--skipApiVersionCheck",
            "--loose",
            "--silent",
        ]);
    c
}

/// Readiness probe: any HTTP answer for the account.
pub fn ready(port: u16) -> bool {
    http::answers(port, &format!("/{ACCOUNT}"))
}

impl Azurite {
    /// Blob service endpoint including the account: `http://127.0.0.1:PORT/devstoreaccount1`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}/{ACCOUNT}", self.process.port)
    }

    /// The server process.
    pub fn process(&self) -> &ServerProcess {
        &self.process
    }

    /// Azure SDK style connection string.
    pub fn connection_string(&self) -> String {
        format!(
            "DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};BlobEndpoint={};",
            self.endpoint()
        )
    }

    /// Creates a container with a unique name derived from `base` (Shared Key signed).
    pub fn fresh_container(&self, base: &str) -> String {
        fresh_container_at(self.process.port, base)
    }

    /// A service SAS token (query string without `?`) for `container`, with `permissions` such
    /// as `"racwdl"`, valid for `valid_for` from now.
    pub fn container_sas(&self, container: &str, permissions: &str, valid_for: Duration) -> String {
        container_sas(container, permissions, SystemTime::now() + valid_for)
    }
}

/// Creates a container with a unique name derived from `base` on the Azurite listening on
/// 127.0.0.1:`port` (a private instance, e.g. one started with [`command_on_disk`]).
pub fn fresh_container_at(port: u16, base: &str) -> String {
    let name = unique_bucket_name(base);
    let date = http_date(SystemTime::now());
    let canonical_headers = format!("x-ms-date:{date}\nx-ms-version:{API_VERSION}\n");
    // Azurite's path-style URLs repeat the account in the canonical resource.
    let resource = format!("/{ACCOUNT}/{ACCOUNT}/{name}\nrestype:container");
    let to_sign = format!("PUT\n\n\n\n\n\n\n\n\n\n\n\n{canonical_headers}{resource}");
    let auth = format!("SharedKey {ACCOUNT}:{}", sign(&to_sign));
    let r = http::request(
        "PUT",
        port,
        &format!("/{ACCOUNT}/{name}?restype=container"),
        &[
            ("x-ms-date", &date),
            ("x-ms-version", API_VERSION),
            ("Authorization", &auth),
        ],
        b"",
    )
    .unwrap_or_else(|e| panic!("azurite: create container {name}: {e}"));
    assert_eq!(
        r.status,
        201,
        "azurite: create container {name}: HTTP {}: {}",
        r.status,
        r.text()
    );
    name
}

/// Service SAS for a container of the development account, expiring at `expiry`.
pub fn container_sas(container: &str, permissions: &str, expiry: SystemTime) -> String {
    let se = iso8601(expiry);
    let resource = format!("/blob/{ACCOUNT}/{container}");
    // Fields: sp, st, se, canonical resource, si, sip, spr, sv, sr, snapshot time, encryption
    // scope, rscc, rscd, rsce, rscl, rsct (service SAS layout for versions >= 2020-12-06).
    let to_sign =
        format!("{permissions}\n\n{se}\n{resource}\n\n\n\n{API_VERSION}\nc\n\n\n\n\n\n\n");
    format!(
        "sv={API_VERSION}&sr=c&sp={permissions}&se={}&sig={}",
        pct(&se),
        pct(&sign(&to_sign))
    )
}

fn sign(to_sign: &str) -> String {
    let key = B64.decode(ACCOUNT_KEY).expect("account key is base64");
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).expect("any key length");
    mac.update(to_sign.as_bytes());
    B64.encode(mac.finalize().into_bytes())
}

fn pct(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// (year, month, day, hour, minute, second, weekday 0=Sunday) in UTC.
fn civil(t: SystemTime) -> (i64, u32, u32, u64, u64, u64, u64) {
    let secs = t.duration_since(UNIX_EPOCH).expect("after 1970").as_secs();
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    let weekday = ((days + 4).rem_euclid(7)) as u64;
    (y, m, d, rem / 3600, rem % 3600 / 60, rem % 60, weekday)
}

/// RFC 7231 date, e.g. `Tue, 24 Nov 2026 05:07:00 GMT`.
fn http_date(t: SystemTime) -> String {
    const DAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let (y, m, d, hh, mm, ss, wd) = civil(t);
    format!(
        "{}, {d:02} {} {y} {hh:02}:{mm:02}:{ss:02} GMT",
        DAYS[wd as usize],
        MONTHS[m as usize - 1]
    )
}

/// `YYYY-MM-DDTHH:MM:SSZ`.
fn iso8601(t: SystemTime) -> String {
    let (y, m, d, hh, mm, ss, _) = civil(t);
    format!("{y}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}Z")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        let t = UNIX_EPOCH + Duration::from_secs(1_795_496_820); // 2026-11-24T05:07:00Z
        assert_eq!(http_date(t), "Tue, 24 Nov 2026 05:07:00 GMT");
        assert_eq!(iso8601(t), "2026-11-24T05:07:00Z");
        assert_eq!(http_date(UNIX_EPOCH), "Thu, 01 Jan 1970 00:00:00 GMT");
    }
}

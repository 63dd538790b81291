//! Cron expressions (`CBOB_SCHEDULE_*`), parsed with croner: five fields (`30 3 * * *`), or six
//! with seconds first (`*/20 * * * * *`), and the `@daily`-style nicknames. Times are the host's
//! local time zone (`TZ`), as with cron itself.

use chrono::{DateTime, TimeZone};
use croner::Cron;
use croner::parser::{CronParser, Seconds};

/// A parsed schedule.
#[derive(Debug, Clone)]
pub struct Schedule {
    expr: String,
    cron: Cron,
}

impl Schedule {
    /// Parses an expression; the error says what is wrong with it.
    pub fn parse(text: &str) -> Result<Self, String> {
        let expr = text.trim();
        if expr.is_empty() {
            return Err("empty".into());
        }
        let cron = CronParser::builder()
            .seconds(Seconds::Optional)
            .build()
            .parse(expr)
            .map_err(|e| e.to_string())?;
        Ok(Self {
            expr: expr.to_string(),
            cron,
        })
    }

    pub fn expr(&self) -> &str {
        &self.expr
    }

    /// The first time strictly after `t` that matches, if there is one (there always is for a
    /// valid expression within croner's year range).
    pub fn next_after<Tz: TimeZone>(&self, t: &DateTime<Tz>) -> Option<DateTime<Tz>> {
        self.cron.find_next_occurrence(t, false).ok()
    }

    /// How many times the schedule matches strictly after `from` and up to `to` (capped).
    pub fn count_between<Tz: TimeZone>(&self, from: &DateTime<Tz>, to: &DateTime<Tz>) -> u64 {
        let mut n = 0;
        let mut t = from.clone();
        while let Some(next) = self.next_after(&t) {
            if next > *to || n >= 100_000 {
                break;
            }
            n += 1;
            t = next;
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;

    use super::*;

    #[test]
    fn parses_five_and_six_fields_and_nicknames() {
        let t = Utc.with_ymd_and_hms(2026, 11, 24, 3, 29, 59).unwrap();
        let s = Schedule::parse("30 3 * * *").unwrap();
        assert_eq!(
            s.next_after(&t).unwrap(),
            Utc.with_ymd_and_hms(2026, 11, 24, 3, 30, 0).unwrap()
        );
        let every2 = Schedule::parse("*/2 * * * * *").unwrap();
        assert_eq!(
            every2.next_after(&t).unwrap(),
            t + chrono::Duration::seconds(1)
        );
        assert_eq!(
            Schedule::parse("@daily").unwrap().next_after(&t).unwrap(),
            Utc.with_ymd_and_hms(2026, 11, 25, 0, 0, 0).unwrap()
        );
        let from = Utc.with_ymd_and_hms(2026, 11, 24, 0, 0, 0).unwrap();
        assert_eq!(
            every2.count_between(&from, &(from + chrono::Duration::seconds(10))),
            5
        );
        for bad in ["", "61 * * * *", "* * *", "every day", "0 25 * * *"] {
            assert!(Schedule::parse(bad).is_err(), "{bad}");
        }
    }
}

//! Five-field cron expressions (minute, hour, day of month, month, day of week), in UTC,
//! as crontab(5) reads them: `*`, numbers, ranges `a-b`, steps `*/n` and `a-b/n`, lists,
//! month and weekday names, `7` for Sunday, and `@hourly`, `@daily`, `@weekly`,
//! `@monthly`, `@yearly`. When both the day of month and the day of week are restricted,
//! a day matching either is due (crontab's rule).

use chrono::{DateTime, Datelike, Duration, TimeZone, Timelike, Utc};

/// A parsed schedule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cron {
    minutes: u64,
    hours: u64,
    days: u64,
    months: u64,
    weekdays: u64,
    days_restricted: bool,
    weekdays_restricted: bool,
    source: String,
}

const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const WEEKDAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

impl std::str::FromStr for Cron {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let text = s.trim();
        let expanded = match text {
            "@hourly" => "0 * * * *",
            "@daily" | "@midnight" => "0 0 * * *",
            "@weekly" => "0 0 * * 0",
            "@monthly" => "0 0 1 * *",
            "@yearly" | "@annually" => "0 0 1 1 *",
            other if other.starts_with('@') => {
                return Err(format!(
                    "unknown schedule `{other}` (@hourly, @daily, @weekly, @monthly, @yearly, or five fields)"
                ));
            }
            other => other,
        };
        let fields: Vec<&str> = expanded.split_whitespace().collect();
        if fields.len() != 5 {
            return Err(format!(
                "a schedule has five fields (minute hour day-of-month month day-of-week), `{text}` has {}",
                fields.len()
            ));
        }
        let minutes = field(fields[0], "minute", 0, 59, &[])?;
        let hours = field(fields[1], "hour", 0, 23, &[])?;
        let days = field(fields[2], "day of month", 1, 31, &[])?;
        let months = field(fields[3], "month", 1, 12, &MONTHS)?;
        let mut weekdays = field(fields[4], "day of week", 0, 7, &WEEKDAYS)?;
        if weekdays & (1 << 7) != 0 {
            weekdays = (weekdays & !(1 << 7)) | 1;
        }
        Ok(Cron {
            minutes,
            hours,
            days,
            months,
            weekdays,
            days_restricted: !fields[2].starts_with('*'),
            weekdays_restricted: !fields[4].starts_with('*'),
            source: text.to_string(),
        })
    }
}

/// One field as a bit set of the values it allows.
fn field(text: &str, what: &str, lo: u32, hi: u32, names: &[&str]) -> Result<u64, String> {
    let value = |v: &str| -> Result<u32, String> {
        let lower = v.to_ascii_lowercase();
        if let Some(i) = names.iter().position(|n| *n == lower) {
            // Months are named from 1, weekdays from 0.
            return Ok(i as u32 + lo);
        }
        let n: u32 = v
            .parse()
            .map_err(|_| format!("`{v}` is not a {what} ({lo}-{hi})"))?;
        if n < lo || n > hi {
            return Err(format!("{what} {n} is outside {lo}-{hi}"));
        }
        Ok(n)
    };
    let mut bits = 0u64;
    for item in text.split(',') {
        if item.is_empty() {
            return Err(format!("empty item in the {what} field `{text}`"));
        }
        let (range, step) = match item.split_once('/') {
            Some((r, s)) => {
                let step: u32 = s
                    .parse()
                    .map_err(|_| format!("`{s}` is not a step in the {what} field"))?;
                if step == 0 || step > hi {
                    return Err(format!("step {step} in the {what} field is out of range"));
                }
                (r, step)
            }
            None => (item, 1),
        };
        let (a, b) = if range == "*" {
            (lo, hi)
        } else if let Some((a, b)) = range.split_once('-') {
            let (a, b) = (value(a)?, value(b)?);
            if a > b {
                return Err(format!("the {what} range `{range}` runs backwards"));
            }
            (a, b)
        } else {
            let a = value(range)?;
            // `5/15`: from 5 to the end, every 15.
            (a, if step > 1 { hi } else { a })
        };
        let mut v = a;
        while v <= b {
            bits |= 1 << v;
            v += step;
        }
    }
    Ok(bits)
}

impl std::fmt::Display for Cron {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.source)
    }
}

impl Cron {
    fn day_matches(&self, t: &DateTime<Utc>) -> bool {
        let dom = self.days & (1 << t.day()) != 0;
        let dow = self.weekdays & (1 << t.weekday().num_days_from_sunday()) != 0;
        match (self.days_restricted, self.weekdays_restricted) {
            (true, true) => dom || dow,
            _ => dom && dow,
        }
    }

    /// The first minute strictly after `t` the schedule names; `None` when it names none
    /// in the next eight years (`0 0 30 2 *`).
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let start = t.with_second(0)?.with_nanosecond(0)? + Duration::minutes(1);
        let mut c = start;
        let limit = start + Duration::days(366 * 8);
        while c < limit {
            if self.months & (1 << c.month()) == 0 {
                let (y, m) = if c.month() == 12 {
                    (c.year() + 1, 1)
                } else {
                    (c.year(), c.month() + 1)
                };
                c = Utc.with_ymd_and_hms(y, m, 1, 0, 0, 0).single()?;
                continue;
            }
            if !self.day_matches(&c) {
                c = (c + Duration::days(1)).with_hour(0)?.with_minute(0)?;
                continue;
            }
            if self.hours & (1 << c.hour()) == 0 {
                c = (c + Duration::hours(1)).with_minute(0)?;
                continue;
            }
            if self.minutes & (1 << c.minute()) == 0 {
                c += Duration::minutes(1);
                continue;
            }
            return Some(c);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .expect("time")
            .with_timezone(&Utc)
    }

    fn next(expr: &str, after: &str) -> String {
        let c: Cron = expr.parse().expect("parses");
        c.next_after(at(after))
            .map(|t| t.to_rfc3339())
            .unwrap_or_else(|| "none".into())
    }

    #[test]
    fn next_times() {
        assert_eq!(
            next("0 6 * * *", "2026-12-07T05:59:59Z"),
            "2026-12-07T06:00:00+00:00"
        );
        assert_eq!(
            next("0 6 * * *", "2026-12-07T06:00:00Z"),
            "2026-12-08T06:00:00+00:00"
        );
        assert_eq!(
            next("*/15 * * * *", "2026-12-07T10:14:00Z"),
            "2026-12-07T10:15:00+00:00"
        );
        assert_eq!(
            next("5/20 * * * *", "2026-12-07T10:26:00Z"),
            "2026-12-07T10:45:00+00:00"
        );
        assert_eq!(
            next("0 0 1 * *", "2026-12-07T00:00:00Z"),
            "2027-01-01T00:00:00+00:00"
        );
        assert_eq!(
            next("@weekly", "2026-12-07T00:00:00Z"),
            "2026-12-13T00:00:00+00:00"
        );
        // Sunday as 7 and by name; Monday to Friday.
        assert_eq!(
            next("30 9 * * 7", "2026-12-07T00:00:00Z"),
            "2026-12-13T09:30:00+00:00"
        );
        assert_eq!(
            next("30 9 * * SUN", "2026-12-07T00:00:00Z"),
            "2026-12-13T09:30:00+00:00"
        );
        assert_eq!(
            next("0 12 * * mon-fri", "2026-12-11T12:00:00Z"),
            "2026-12-14T12:00:00+00:00"
        );
        // Day of month OR day of week when both are restricted: the 15th or a Monday.
        assert_eq!(
            next("0 0 15 * 1", "2026-12-08T00:00:00Z"),
            "2026-12-14T00:00:00+00:00"
        );
        assert_eq!(
            next("0 0 15 * 1", "2026-12-14T00:00:00Z"),
            "2026-12-15T00:00:00+00:00"
        );
        // Leap day, and a day that never comes.
        assert_eq!(
            next("0 0 29 2 *", "2026-12-07T00:00:00Z"),
            "2028-02-29T00:00:00+00:00"
        );
        assert_eq!(next("0 0 30 2 *", "2026-12-07T00:00:00Z"), "none");
        assert_eq!(
            next("59 23 31 12 *", "2026-12-31T23:59:00Z"),
            "2027-12-31T23:59:00+00:00"
        );
        assert_eq!(
            next("0,30 1-2 * jan,JUL *", "2026-12-07T00:00:00Z"),
            "2027-01-01T01:00:00+00:00"
        );
    }

    #[test]
    fn bad_expressions_say_what_is_wrong() {
        for (expr, says) in [
            ("0 6 * *", "five fields"),
            ("60 * * * *", "minute 60 is outside 0-59"),
            ("* 24 * * *", "hour 24"),
            ("* * 0 * *", "day of month 0"),
            ("* * * 13 *", "month 13"),
            ("* * * * 8", "day of week 8"),
            ("*/0 * * * *", "step 0"),
            ("5-1 * * * *", "backwards"),
            ("a * * * *", "`a` is not a minute"),
            ("1,,2 * * * *", "empty item"),
            ("@often", "unknown schedule"),
            ("* * * foo *", "`foo` is not a month"),
        ] {
            let err = expr.parse::<Cron>().expect_err(expr);
            assert!(err.contains(says), "{expr}: {err}");
        }
    }
}

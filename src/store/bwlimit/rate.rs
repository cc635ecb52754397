//! Bandwidth limits as written: `--bwlimit 10MiB/s` (uploads and downloads), `50MiB/s:off`
//! (UP:DOWN), `off`; and the daemon's timetable `"08:00,10MiB/s 19:00,off"` (UTC).

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Duration as Span, NaiveTime, Timelike, Utc};

/// What a bandwidth limit looks like, for error messages.
const EXPECTED: &str = "write RATE for both directions or UP:DOWN, each a size per second or \
                        off, e.g. 10MiB/s, 50MiB/s:off, 500KB/s";

/// The slowest rate accepted: below it a single request would wait for minutes.
const MIN_RATE: u64 = 1024;

/// The caps on ferry's uploads and downloads, in bytes per second (`None`: no cap).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BwLimit {
    /// Bytes sent to stores (puts, multipart parts, native delta parts).
    pub up: Option<u64>,
    /// Bytes read from stores (gets, ranges).
    pub down: Option<u64>,
}

/// A bandwidth limit or timetable that cannot be used: names the value and the expected form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid bandwidth limit {value:?}: {problem}; {expected}")]
pub struct BwLimitError {
    /// The text as written.
    pub value: String,
    /// What is wrong with it.
    pub problem: String,
    /// The form expected.
    pub expected: &'static str,
}

fn bad(value: &str, problem: impl Into<String>) -> BwLimitError {
    BwLimitError {
        value: value.into(),
        problem: problem.into(),
        expected: EXPECTED,
    }
}

/// One direction: `off` or a size per second (`/s` optional), e.g. `10MiB/s`.
fn rate(text: &str, whole: &str) -> Result<Option<u64>, BwLimitError> {
    let t = text.trim();
    if t.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    let size = t.strip_suffix("/s").unwrap_or(t).trim();
    if size.is_empty() {
        return Err(bad(whole, "a rate is missing"));
    }
    if size.chars().all(|c| c.is_ascii_digit() || c == '.') {
        return Err(bad(
            whole,
            format!("{t:?} has no unit (say 10MiB/s, not 10)"),
        ));
    }
    let bytes = size
        .parse::<bytesize::ByteSize>()
        .map_err(|_| {
            let units = "units B, KiB, MiB, GiB, KB, MB, GB: bytes, not bits";
            bad(whole, format!("{t:?} is not a size per second ({units})"))
        })?
        .as_u64();
    if bytes < MIN_RATE {
        return Err(bad(
            whole,
            format!("{t:?} is below 1KiB/s (write off for no limit)"),
        ));
    }
    Ok(Some(bytes))
}

impl BwLimit {
    /// No cap either way.
    pub const OFF: BwLimit = BwLimit {
        up: None,
        down: None,
    };

    /// Whether either direction is capped.
    pub fn is_limited(&self) -> bool {
        self.up.is_some() || self.down.is_some()
    }
}

impl FromStr for BwLimit {
    type Err = BwLimitError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once(':') {
            Some((up, down)) => Ok(BwLimit {
                up: rate(up, s)?,
                down: rate(down, s)?,
            }),
            None => {
                let both = rate(s, s)?;
                Ok(BwLimit {
                    up: both,
                    down: both,
                })
            }
        }
    }
}

fn show(f: &mut fmt::Formatter<'_>, rate: Option<u64>) -> fmt::Result {
    match rate {
        Some(r) => {
            for (unit, factor) in [("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)] {
                if r % factor == 0 {
                    return write!(f, "{}{unit}/s", r / factor);
                }
            }
            let size = bytesize::ByteSize(r).display().iec().to_string();
            write!(f, "{}/s", size.replace(' ', ""))
        }
        None => f.write_str("off"),
    }
}

impl fmt::Display for BwLimit {
    /// `10MiB/s` when both directions agree, else `UP:DOWN`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        show(f, self.up)?;
        if self.up != self.down {
            f.write_str(":")?;
            show(f, self.down)?;
        }
        Ok(())
    }
}

/// The daemon's `[runner] bwlimit`: one limit, or limits that switch at times of day (UTC),
/// as rclone's timetable: `"08:00,10MiB/s 19:00,off"`. Before the first time of a day the
/// last entry of the previous day holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timetable {
    /// (seconds after midnight UTC, limit), by time; one entry at 0 for a fixed limit.
    entries: Vec<(u32, BwLimit)>,
}

impl FromStr for Timetable {
    type Err = BwLimitError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let words: Vec<&str> = s.split_whitespace().collect();
        if words.len() == 1 && !words[0].contains(',') {
            return Ok(Timetable {
                entries: vec![(0, words[0].parse()?)],
            });
        }
        if words.is_empty() {
            return Err(bad(s, "it is empty"));
        }
        let mut entries = Vec::with_capacity(words.len());
        for word in words {
            let (time, limit) = word.split_once(',').ok_or_else(|| {
                bad(
                    s,
                    format!("{word:?} is not HH:MM,RATE (e.g. \"08:00,10MiB/s 19:00,off\")"),
                )
            })?;
            let at = NaiveTime::parse_from_str(time, "%H:%M")
                .map_err(|_| bad(s, format!("{time:?} is not a time of day HH:MM (UTC)")))?;
            let limit = limit.parse::<BwLimit>().map_err(|e| bad(s, e.problem))?;
            entries.push((at.num_seconds_from_midnight(), limit));
        }
        entries.sort_by_key(|(at, _)| *at);
        if entries.windows(2).any(|w| w[0].0 == w[1].0) {
            return Err(bad(s, "a time appears twice"));
        }
        Ok(Timetable { entries })
    }
}

impl Timetable {
    /// A fixed limit, at every time of day.
    pub fn fixed(limit: BwLimit) -> Self {
        Timetable {
            entries: vec![(0, limit)],
        }
    }

    /// The limit in force at `now`.
    pub fn at(&self, now: DateTime<Utc>) -> BwLimit {
        let secs = now.time().num_seconds_from_midnight();
        self.entries
            .iter()
            .rev()
            .find(|(at, _)| *at <= secs)
            .or(self.entries.last())
            .map_or(BwLimit::OFF, |(_, l)| *l)
    }

    /// The next time after `now` the limit switches; `None` for a fixed limit.
    pub fn next_switch(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        if self.entries.len() < 2 {
            return None;
        }
        let midnight = now.date_naive().and_hms_opt(0, 0, 0)?.and_utc();
        let secs = now.time().num_seconds_from_midnight();
        let (day, at) = match self.entries.iter().find(|(at, _)| *at > secs) {
            Some((at, _)) => (0, *at),
            None => (1, self.entries[0].0),
        };
        Some(midnight + Span::days(day) + Span::seconds(i64::from(at)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn parses_rates() {
        let l: BwLimit = "10MiB/s".parse().unwrap();
        assert_eq!((l.up, l.down), (Some(10 * MIB), Some(10 * MIB)));
        let l: BwLimit = "50MiB/s:off".parse().unwrap();
        assert_eq!((l.up, l.down), (Some(50 * MIB), None));
        let l: BwLimit = "off:500KB".parse().unwrap();
        assert_eq!((l.up, l.down), (None, Some(500_000)));
        assert_eq!("off".parse::<BwLimit>().unwrap(), BwLimit::OFF);
        assert!(!BwLimit::OFF.is_limited());
        assert_eq!(
            "1.5 MiB/s".parse::<BwLimit>().unwrap().up,
            Some(3 * MIB / 2)
        );
        assert_eq!(
            "50MiB/s:off".parse::<BwLimit>().unwrap().to_string(),
            "50MiB/s:off"
        );
        assert_eq!("4MiB/s".parse::<BwLimit>().unwrap().to_string(), "4MiB/s");
    }

    #[test]
    fn bad_rates_name_the_value_and_the_form() {
        for (text, problem) in [
            ("10", "no unit"),
            ("fast", "fast"),
            ("10MiB/s:", "missing"),
            (
                "10Mbps",
                "\"10Mbps\" is not a size per second (units B, KiB",
            ),
            ("100B/s", "below 1KiB/s"),
            ("1:2:3", "1"),
        ] {
            let err = text.parse::<BwLimit>().unwrap_err().to_string();
            assert!(err.contains(&format!("{text:?}")), "{text}: {err}");
            assert!(err.contains(problem), "{text}: {err}");
            assert!(err.contains("e.g. 10MiB/s, 50MiB/s:off"), "{text}: {err}");
        }
    }

    #[test]
    fn a_timetable_switches_at_its_times_and_wraps_at_midnight() {
        let t: Timetable = "08:00,10MiB/s 19:00,off 23:30,1MiB/s:off".parse().unwrap();
        let ten = BwLimit {
            up: Some(10 * MIB),
            down: Some(10 * MIB),
        };
        let night = BwLimit {
            up: Some(MIB),
            down: None,
        };
        assert_eq!(
            t.at(at("2026-01-01T07:59:59Z")),
            night,
            "before 08:00: yesterday's last"
        );
        assert_eq!(t.at(at("2026-01-01T08:00:00Z")), ten);
        assert_eq!(t.at(at("2026-01-01T18:59:59Z")), ten);
        assert_eq!(t.at(at("2026-01-01T19:00:00Z")), BwLimit::OFF);
        assert_eq!(t.at(at("2026-01-01T23:45:00Z")), night);
        assert_eq!(
            t.next_switch(at("2026-01-01T07:00:00Z")),
            Some(at("2026-01-01T08:00:00Z"))
        );
        assert_eq!(
            t.next_switch(at("2026-01-01T08:00:00Z")),
            Some(at("2026-01-01T19:00:00Z"))
        );
        assert_eq!(
            t.next_switch(at("2026-01-01T23:59:00Z")),
            Some(at("2026-01-02T08:00:00Z"))
        );
        let fixed: Timetable = "4MiB/s".parse().unwrap();
        assert_eq!(fixed, Timetable::fixed("4MiB/s".parse().unwrap()));
        assert_eq!(fixed.next_switch(at("2026-01-01T07:00:00Z")), None);
        assert_eq!(fixed.at(at("2026-01-01T07:00:00Z")).up, Some(4 * MIB));
    }

    #[test]
    fn bad_timetables_name_the_entry() {
        for (text, problem) in [
            ("08:00 10MiB/s", "not HH:MM,RATE"),
            ("25:00,10MiB/s", "not a time of day"),
            ("08:00,10MiB/s 08:00,off", "twice"),
            ("08:00,ten", "ten"),
            ("", "empty"),
        ] {
            let err = text.parse::<Timetable>().unwrap_err().to_string();
            assert!(err.contains(problem), "{text}: {err}");
            assert!(err.contains(&format!("{text:?}")), "{text}: {err}");
        }
    }
}

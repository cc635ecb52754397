//! The daemon's wall clock and schedules: `every` and `cron` fire times computed on a
//! [`Clock`] that tests can start at any moment and run faster than real time.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::time::Instant;

use crate::config::Trigger;

/// Wall time for schedules and timestamps. Real by default; `fake` starts at a chosen moment
/// and runs `speed` times faster. Settle periods and retry delays do not use it: they measure
/// real activity.
#[derive(Clone, Debug)]
pub struct Clock {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    base_wall: DateTime<Utc>,
    base: Instant,
    speed: f64,
}

/// A `--fake-clock` value that is not `RFC3339[@SPEED]`.
#[derive(Debug, thiserror::Error)]
#[error("invalid fake clock {text:?}: write an RFC 3339 time, optionally with @SPEED, e.g. 2026-01-01T05:59:58Z@60")]
pub struct ClockError {
    text: String,
}

impl Clock {
    /// The system clock.
    pub fn real() -> Self {
        Self::fake(Utc::now(), 1.0)
    }

    /// A clock starting at `start` and running `speed` times faster than real time (tests).
    pub fn fake(start: DateTime<Utc>, speed: f64) -> Self {
        Clock {
            inner: Arc::new(Inner {
                base_wall: start,
                base: Instant::now(),
                speed: if speed.is_finite() && speed > 0.0 {
                    speed
                } else {
                    1.0
                },
            }),
        }
    }

    /// Parses `2026-01-01T05:59:58Z` or `2026-01-01T05:59:58Z@60`.
    pub fn parse(text: &str) -> Result<Self, ClockError> {
        let err = || ClockError { text: text.into() };
        let (time, speed) = match text.split_once('@') {
            Some((t, s)) => (t, s.parse::<f64>().map_err(|_| err())?),
            None => (text, 1.0),
        };
        let start = DateTime::parse_from_rfc3339(time).map_err(|_| err())?;
        Ok(Self::fake(start.with_timezone(&Utc), speed))
    }

    /// The current time on this clock.
    pub fn now(&self) -> DateTime<Utc> {
        let real = self.inner.base.elapsed().as_secs_f64() * self.inner.speed;
        self.inner.base_wall + chrono::Duration::microseconds((real * 1e6) as i64)
    }

    /// Now, in Unix milliseconds.
    pub fn now_ms(&self) -> i64 {
        self.now().timestamp_millis()
    }

    /// Sleeps until the clock reads `at`.
    pub async fn sleep_until(&self, at: DateTime<Utc>) {
        loop {
            let left = (at - self.now()).to_std().unwrap_or(Duration::ZERO);
            if left.is_zero() {
                return;
            }
            // Re-reading the clock after a bounded sleep keeps long waits honest.
            let real = left.div_f64(self.inner.speed).min(Duration::from_secs(60));
            tokio::time::sleep(real.max(Duration::from_millis(1))).await;
        }
    }
}

/// When a scheduled trigger fires next after `after`; `None` for `watch`, or a cron schedule
/// that never fires again.
pub fn next_fire(trigger: &Trigger, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
    match trigger {
        Trigger::Watch => None,
        Trigger::Every(d) => Some(after + chrono::Duration::from_std(*d).ok()?),
        Trigger::Cron(cron, _) => cron.find_next_occurrence(&after, false).ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn cron(text: &str) -> Trigger {
        let c = croner::parser::CronParser::builder()
            .seconds(croner::parser::Seconds::Optional)
            .build()
            .parse(text)
            .unwrap();
        Trigger::Cron(Box::new(c), text.into())
    }

    #[test]
    fn next_fire_for_each_trigger() {
        let t = at("2026-01-01T05:59:58Z");
        assert_eq!(
            next_fire(&cron("0 */6 * * *"), t),
            Some(at("2026-01-01T06:00:00Z"))
        );
        assert_eq!(
            next_fire(&cron("0 */6 * * *"), at("2026-01-01T06:00:00Z")),
            Some(at("2026-01-01T12:00:00Z"))
        );
        assert_eq!(
            next_fire(&Trigger::Every(Duration::from_secs(300)), t),
            Some(at("2026-01-01T06:04:58Z"))
        );
        assert_eq!(next_fire(&Trigger::Watch, t), None);
    }

    #[tokio::test(start_paused = true)]
    async fn fake_clock_runs_fast_and_sleeps_until() {
        let clock = Clock::parse("2026-01-01T05:59:58Z@60").unwrap();
        let real = Instant::now();
        clock.sleep_until(at("2026-01-01T06:00:58Z")).await;
        // One minute of clock time at 60x is one second of (paused, auto-advanced) real time.
        let took = real.elapsed();
        assert!(
            took >= Duration::from_millis(990) && took < Duration::from_millis(1100),
            "{took:?}"
        );
        assert!(clock.now() >= at("2026-01-01T06:00:58Z"));
        assert!(Clock::parse("yesterday").is_err());
    }
}

//! `[runner] bwlimit` in the daemon: one [`Bandwidth`] shared by every store the daemon
//! opens, switched at the timetable's times (UTC, on the daemon's [`Clock`]) while it runs.

use tokio_util::sync::CancellationToken;

use super::Clock;
use crate::config::Config;
use crate::store::bwlimit::{Bandwidth, Timetable};

/// The caps the config asks for, at the limit in force now; `None` without `bwlimit`.
pub(crate) fn bandwidth(config: &Config, clock: &Clock) -> Option<Bandwidth> {
    let table = config.runner.bwlimit.as_ref()?;
    let limit = table.at(clock.now());
    tracing::info!(%limit, "bandwidth limit ([runner] bwlimit)");
    Some(Bandwidth::new(limit))
}

/// Sets `bw` to the timetable's limit at each of its times, until `stop`.
pub(crate) async fn follow(table: Timetable, bw: Bandwidth, clock: Clock, stop: CancellationToken) {
    loop {
        let limit = table.at(clock.now());
        if bw.limit() != limit {
            tracing::info!(%limit, "bandwidth limit switched ([runner] bwlimit)");
            bw.set(limit);
        }
        let Some(next) = table.next_switch(clock.now()) else {
            return;
        };
        tokio::select! {
            () = clock.sleep_until(next) => {}
            () = stop.cancelled() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::store::bwlimit::BwLimit;

    /// The limit switches at the timetable's times on the daemon's clock (a fake one, 3600×
    /// faster: an hour a second), and stays off once switched off.
    #[tokio::test(start_paused = true)]
    async fn the_limit_follows_the_timetable_on_the_daemon_clock() {
        let clock = Clock::parse("2026-01-01T07:30:00Z@3600").unwrap();
        let table: Timetable = "08:00,4MiB/s 10:00,1MiB/s:off 19:00,off".parse().unwrap();
        let bw = Bandwidth::new(table.at(clock.now()));
        assert_eq!(bw.limit(), BwLimit::OFF, "07:30: the day's last entry, off");
        let stop = CancellationToken::new();
        let task = tokio::spawn(follow(table, bw.clone(), clock.clone(), stop.clone()));
        // 08:30 on the clock: half an hour past the first switch.
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(bw.limit(), "4MiB/s".parse().unwrap(), "at {}", clock.now());
        // 11:30.
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(
            bw.limit(),
            "1MiB/s:off".parse().unwrap(),
            "at {}",
            clock.now()
        );
        // 19:30.
        tokio::time::sleep(Duration::from_secs(8)).await;
        assert_eq!(bw.limit(), BwLimit::OFF, "at {}", clock.now());
        stop.cancel();
        task.await.unwrap();
    }

    fn config(bwlimit: Option<&str>) -> Result<Config, crate::config::ConfigError> {
        let runner = bwlimit.map_or(String::new(), |b| format!("[runner]\nbwlimit = {b:?}\n"));
        let text = format!(
            "version = 1\n{runner}[[jobs]]\nname = \"ckpt\"\nsource = \"data\"\n\
             targets = [\"file:///repo\"]\nwatch = true\n"
        );
        let env = crate::config::Env {
            cwd: "/work/here".into(),
            vars: Default::default(),
        };
        Config::from_toml(&text, "test.toml", &env)
    }

    #[test]
    fn the_config_sets_the_limit_in_force_and_names_a_bad_one() {
        let clock = Clock::parse("2026-01-01T09:00:00Z").unwrap();
        let c = config(Some("08:00,10MiB/s 19:00,off")).unwrap();
        let bw = bandwidth(&c, &clock).expect("a limit");
        assert_eq!(bw.limit(), "10MiB/s".parse().unwrap());
        let c = config(Some("2MiB/s:off")).unwrap();
        assert_eq!(
            bandwidth(&c, &clock).unwrap().limit(),
            "2MiB/s:off".parse().unwrap()
        );
        assert!(bandwidth(&config(None).unwrap(), &clock).is_none());
        let err = config(Some("08:00,fast")).unwrap_err().to_string();
        assert!(err.contains("runner.bwlimit"), "{err}");
        assert!(err.contains("\"fast\""), "{err}");
    }
}

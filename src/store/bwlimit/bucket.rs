//! A token bucket for one direction of traffic, shared by every transfer of the process.
//! Our own (~50 lines) rather than `governor`, whose rate limiter counts cells per quota and
//! pulls in `quanta`, `dashmap`-style state and a clock layer we do not need: here the rate
//! changes at run time (the daemon's timetable) and a request may be larger than the burst.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

/// Longest single nap of a waiting transfer: it then looks again, so a rate switched off or
/// raised takes effect within this long.
const MAX_NAP: Duration = Duration::from_millis(200);

/// Burst: the bucket holds at most this share of one second's rate, so traffic stays smooth.
const BURST_SHARE: f64 = 0.1;

/// Bytes per second (0: no limit) and the tokens left. A transfer may start while the balance
/// is not negative and then owes its bytes: a request larger than the burst still passes,
/// and the next one waits until the debt is paid off at the rate.
#[derive(Debug)]
pub(crate) struct Bucket {
    rate: AtomicU64,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    /// A bucket at `rate` bytes per second (`None`: unlimited), starting empty.
    pub(crate) fn new(rate: Option<u64>) -> Self {
        Self {
            rate: AtomicU64::new(rate.unwrap_or(0)),
            state: Mutex::new(State {
                tokens: 0.0,
                at: Instant::now(),
            }),
        }
    }

    /// The rate in force (`None`: unlimited).
    pub(crate) fn rate(&self) -> Option<u64> {
        Some(self.rate.load(Ordering::Relaxed)).filter(|r| *r > 0)
    }

    /// Changes the rate; the balance starts again from empty.
    pub(crate) fn set_rate(&self, rate: Option<u64>) {
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        self.rate.store(rate.unwrap_or(0), Ordering::Relaxed);
        *s = State {
            tokens: 0.0,
            at: Instant::now(),
        };
    }

    /// Waits until `n` bytes may go.
    pub(crate) async fn take(&self, n: u64) {
        if n == 0 {
            return;
        }
        loop {
            let Some(wait) = self.try_take(n) else {
                return;
            };
            tokio::time::sleep(wait.min(MAX_NAP)).await;
        }
    }

    /// Takes `n` bytes if the balance allows (`None`), else says how long until it does.
    fn try_take(&self, n: u64) -> Option<Duration> {
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let rate = self.rate.load(Ordering::Relaxed) as f64;
        if rate == 0.0 {
            return None;
        }
        let now = Instant::now();
        let refill = now.saturating_duration_since(s.at).as_secs_f64() * rate;
        s.tokens = (s.tokens + refill).min(rate * BURST_SHARE);
        s.at = now;
        if s.tokens >= 0.0 {
            s.tokens -= n as f64;
            return None;
        }
        Some(Duration::from_secs_f64(-s.tokens / rate).max(Duration::from_millis(1)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    /// Time for `total` bytes in `piece`-sized takes at `rate`, on tokio's paused clock.
    async fn time_for(bucket: &Bucket, total: u64, piece: u64) -> Duration {
        let start = Instant::now();
        let mut left = total;
        while left > 0 {
            let n = left.min(piece);
            bucket.take(n).await;
            left -= n;
        }
        start.elapsed()
    }

    #[tokio::test(start_paused = true)]
    async fn paces_small_and_large_pieces_at_the_rate() {
        let bucket = Bucket::new(Some(4 * MIB));
        // 16 MiB at 4 MiB/s: the last piece starts when 16 MiB minus that piece are paid for.
        let took = time_for(&bucket, 16 * MIB, 64 << 10).await;
        assert!(
            took.as_secs_f64() > 3.9 && took.as_secs_f64() < 4.05,
            "{took:?}"
        );
        let bucket = Bucket::new(Some(4 * MIB));
        let took = time_for(&bucket, 16 * MIB, 8 * MIB).await;
        assert!(
            took.as_secs_f64() > 1.95 && took.as_secs_f64() < 2.05,
            "{took:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_transfers_share_the_rate() {
        let bucket = std::sync::Arc::new(Bucket::new(Some(2 * MIB)));
        let start = Instant::now();
        let tasks: Vec<_> = (0..4)
            .map(|_| {
                let b = bucket.clone();
                tokio::spawn(async move { time_for(&b, 2 * MIB, 32 << 10).await })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        let took = start.elapsed().as_secs_f64();
        assert!(took > 3.9 && took < 4.1, "8 MiB at 2 MiB/s took {took}s");
    }

    #[tokio::test(start_paused = true)]
    async fn off_never_waits_and_a_switch_applies_to_waiting_transfers() {
        let bucket = std::sync::Arc::new(Bucket::new(None));
        assert_eq!(time_for(&bucket, 1 << 30, MIB).await, Duration::ZERO);
        bucket.set_rate(Some(MIB));
        assert_eq!(bucket.rate(), Some(MIB));
        bucket.take(10 * MIB).await; // a debt of ten seconds
        let b = bucket.clone();
        let waiting = tokio::spawn(async move { time_for(&b, MIB, MIB).await });
        tokio::time::sleep(Duration::from_secs(1)).await;
        bucket.set_rate(None);
        let took = waiting.await.unwrap();
        assert!(took < Duration::from_millis(1300), "{took:?}");
    }
}

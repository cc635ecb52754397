//! A token bucket for one direction of traffic, shared by every transfer of the process.
//! Our own (~60 lines) rather than `governor`: its quota is fixed when the limiter is made
//! (the daemon's timetable changes the rate at run time), `until_n_ready` refuses a request
//! larger than the burst (`InsufficientCapacity`; a pack put is tens of MiB, the burst a tenth
//! of a second's worth), cells are `u32`, and it waits on `futures-timer` rather than tokio's
//! timer, which the tests pause; it would also add `quanta`, `futures-timer` and more to the
//! build.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

/// Longest single nap of a waiting transfer: it then looks again, so a rate switched off or
/// changed takes effect within this long.
const MAX_NAP: Duration = Duration::from_millis(200);

/// Burst: the bucket holds at most this share of one second's rate, so traffic stays smooth.
const BURST_SHARE: f64 = 0.1;

/// Bytes per second (0: no limit) and the balance. A transfer reserves its bytes (the balance
/// may go negative) and waits until the balance it left is paid off at the rate, so bytes go
/// only once paid for: over any stretch of time no more than the rate (plus the burst) goes
/// through, however large a single request, and transfers go in the order they asked.
#[derive(Debug)]
pub(crate) struct Bucket {
    rate: AtomicU64,
    /// Counts rate changes: a transfer waiting under an older rate asks again.
    generation: AtomicU64,
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
            generation: AtomicU64::new(0),
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

    /// Changes the rate; the balance starts again from empty and waiting transfers reserve
    /// again at the new rate (at once when it is off).
    pub(crate) fn set_rate(&self, rate: Option<u64>) {
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        self.rate.store(rate.unwrap_or(0), Ordering::Relaxed);
        self.generation.fetch_add(1, Ordering::Relaxed);
        *s = State {
            tokens: 0.0,
            at: Instant::now(),
        };
    }

    /// Waits until `n` bytes are paid for.
    pub(crate) async fn take(&self, n: u64) {
        'reserve: loop {
            let Some((until, generation)) = self.reserve(n) else {
                return;
            };
            loop {
                let now = Instant::now();
                if now >= until {
                    return;
                }
                tokio::time::sleep((until - now).min(MAX_NAP)).await;
                if self.generation.load(Ordering::Relaxed) != generation {
                    continue 'reserve;
                }
            }
        }
    }

    /// Reserves `n` bytes: `None` when they may go now, else when they are paid for (and the
    /// rate's generation they were reserved under).
    fn reserve(&self, n: u64) -> Option<(Instant, u64)> {
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let rate = self.rate.load(Ordering::Relaxed) as f64;
        if rate == 0.0 || n == 0 {
            return None;
        }
        let now = Instant::now();
        let refill = now.saturating_duration_since(s.at).as_secs_f64() * rate;
        s.tokens = (s.tokens + refill).min(rate * BURST_SHARE) - n as f64;
        s.at = now;
        (s.tokens < 0.0).then(|| {
            let wait = Duration::from_secs_f64(-s.tokens / rate);
            (now + wait, self.generation.load(Ordering::Relaxed))
        })
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
        // 16 MiB at 4 MiB/s, paid before it goes: four seconds, whatever the piece size.
        let took = time_for(&bucket, 16 * MIB, 64 << 10).await;
        assert!(
            took.as_secs_f64() > 3.99 && took.as_secs_f64() < 4.01,
            "{took:?}"
        );
        let bucket = Bucket::new(Some(4 * MIB));
        let took = time_for(&bucket, 16 * MIB, 8 * MIB).await;
        assert!(
            took.as_secs_f64() > 3.99 && took.as_secs_f64() < 4.01,
            "{took:?}"
        );
        // After a pause, a burst of a tenth of a second's worth goes at once.
        tokio::time::sleep(Duration::from_secs(5)).await;
        let took = time_for(&bucket, 4 * MIB / 10, 64 << 10).await;
        assert!(took < Duration::from_millis(1), "{took:?}");
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
        assert!(took > 3.99 && took < 4.01, "8 MiB at 2 MiB/s took {took}s");
    }

    #[tokio::test(start_paused = true)]
    async fn off_never_waits_and_a_switch_applies_to_waiting_transfers() {
        let bucket = std::sync::Arc::new(Bucket::new(None));
        assert_eq!(time_for(&bucket, 1 << 30, MIB).await, Duration::ZERO);
        bucket.set_rate(Some(MIB));
        assert_eq!(bucket.rate(), Some(MIB));
        // Ten seconds' worth, switched off after one: done within a nap.
        let b = bucket.clone();
        let waiting = tokio::spawn(async move { time_for(&b, 10 * MIB, 10 * MIB).await });
        tokio::time::sleep(Duration::from_secs(1)).await;
        bucket.set_rate(None);
        let took = waiting.await.unwrap();
        assert!(took < Duration::from_millis(1300), "{took:?}");
        // Switched to a faster rate: the rest goes at that rate.
        bucket.set_rate(Some(MIB));
        let b = bucket.clone();
        let waiting = tokio::spawn(async move { time_for(&b, 10 * MIB, 10 * MIB).await });
        tokio::time::sleep(Duration::from_secs(1)).await;
        bucket.set_rate(Some(10 * MIB));
        let took = waiting.await.unwrap().as_secs_f64();
        assert!(took > 1.9 && took < 2.3, "{took}");
    }
}

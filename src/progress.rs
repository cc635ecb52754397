//! Progress reporting, passed explicitly from the edge: a [`Reporter`] built by the CLI
//! (terminal bars when asked) or by the daemon (an [`Observer`] feeding its run's byte
//! counts), handed to each operation, which opens one [`Progress`] per phase.

use std::io::IsTerminal;
use std::sync::Arc;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Sees the byte progress of the operations given a [`Reporter::observed`].
pub trait Observer: Send + Sync {
    /// A phase (`push`, `replicate`) with `total` more bytes to go.
    fn start(&self, label: &str, total: u64);
    /// `n` more bytes of the current phase are done.
    fn inc(&self, n: u64);
}

/// How an operation reports its byte progress: terminal bars, an [`Observer`], or nothing.
/// Cheap to clone; built once where the process (or the daemon's run) starts.
#[derive(Clone, Default)]
pub struct Reporter {
    /// Draw bars on stderr (when it is a terminal).
    bars: bool,
    observer: Option<Arc<dyn Observer>>,
}

impl Reporter {
    /// Reports nothing.
    pub fn silent() -> Self {
        Self::default()
    }

    /// Progress bars on stderr when it is a terminal (nothing otherwise).
    pub fn terminal() -> Self {
        Self {
            bars: true,
            observer: None,
        }
    }

    /// Every byte count goes to `observer`; no bars.
    pub fn observed(observer: Arc<dyn Observer>) -> Self {
        Self {
            bars: false,
            observer: Some(observer),
        }
    }

    /// Opens a phase called `label` of `total` bytes: a bar when this reporter draws them and
    /// stderr is a terminal, and a [`Observer::start`] for its observer.
    pub fn bytes(&self, label: &str, total: u64) -> Progress {
        let observer = self.observer.clone();
        if let Some(o) = &observer {
            o.start(label, total);
        }
        if !self.bars || !std::io::stderr().is_terminal() {
            return Progress {
                bar: None,
                observer,
            };
        }
        let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template(
                "{prefix:>9} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta} {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar.set_prefix(label.to_string());
        Progress {
            bar: Some(bar),
            observer,
        }
    }
}

/// One phase's byte progress (from [`Reporter::bytes`]): a bar that is a no-op when none is
/// drawn, and the reporter's observer.
#[derive(Clone)]
pub struct Progress {
    bar: Option<ProgressBar>,
    observer: Option<Arc<dyn Observer>>,
}

impl Progress {
    /// `n` more bytes done.
    pub fn inc(&self, n: u64) {
        if let Some(b) = &self.bar {
            b.inc(n);
        }
        if let Some(o) = &self.observer {
            o.inc(n);
        }
    }

    /// A note shown after the bar.
    pub fn set_message(&self, msg: impl Into<String>) {
        if let Some(b) = &self.bar {
            b.set_message(msg.into());
        }
    }

    /// Clears the bar.
    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Mutex;

    use super::*;

    #[derive(Default)]
    struct Seen {
        phases: Mutex<Vec<(String, u64)>>,
        done: AtomicU64,
    }

    impl Observer for Seen {
        fn start(&self, label: &str, total: u64) {
            self.phases.lock().unwrap().push((label.to_string(), total));
        }
        fn inc(&self, n: u64) {
            self.done.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// An observed reporter hands every phase and byte count to its observer, and only to it.
    #[test]
    fn observed_reporter_feeds_its_observer() {
        let seen = Arc::new(Seen::default());
        let reporter = Reporter::observed(seen.clone());
        let p = reporter.bytes("push", 10);
        p.inc(4);
        p.clone().inc(6);
        reporter.bytes("replicate", 3).inc(3);
        Reporter::silent().bytes("push", 99).inc(99);
        assert_eq!(
            *seen.phases.lock().unwrap(),
            [("push".to_string(), 10), ("replicate".to_string(), 3)]
        );
        assert_eq!(seen.done.load(Ordering::Relaxed), 13);
    }
}

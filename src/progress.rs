//! Progress reporting: an indicatif bar on a terminal, nothing otherwise; and, for code run
//! inside [`observe`], an [`Observer`] that sees the same byte counts (the daemon's dashboard).

use std::future::Future;
use std::io::IsTerminal;
use std::sync::Arc;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Sees the byte progress of operations run inside [`observe`].
pub trait Observer: Send + Sync {
    /// A phase (`push`, `replicate`) with `total` more bytes to go.
    fn start(&self, label: &str, total: u64);
    fn inc(&self, n: u64);
}

tokio::task_local! {
    static OBSERVER: Arc<dyn Observer>;
}

/// Runs `f` with `observer` receiving the progress of every bar created inside it (on this
/// task), whether or not a terminal shows them.
pub async fn observe<F: Future>(observer: Arc<dyn Observer>, f: F) -> F::Output {
    OBSERVER.scope(observer, f).await
}

/// A byte-count progress bar that is a no-op when stderr is not a terminal.
#[derive(Clone)]
pub struct Progress {
    bar: Option<ProgressBar>,
    observer: Option<Arc<dyn Observer>>,
}

impl Progress {
    /// A bar for `total` bytes when stderr is a terminal and `enabled`.
    pub fn bytes(enabled: bool, label: &str, total: u64) -> Self {
        let observer = OBSERVER.try_with(Arc::clone).ok();
        if let Some(o) = &observer {
            o.start(label, total);
        }
        if !enabled || !std::io::stderr().is_terminal() {
            return Self {
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
        Self {
            bar: Some(bar),
            observer,
        }
    }

    pub fn inc(&self, n: u64) {
        if let Some(b) = &self.bar {
            b.inc(n);
        }
        if let Some(o) = &self.observer {
            o.inc(n);
        }
    }

    pub fn set_message(&self, msg: impl Into<String>) {
        if let Some(b) = &self.bar {
            b.set_message(msg.into());
        }
    }

    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

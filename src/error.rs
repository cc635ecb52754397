//! What every error in ferry answers: whether trying again may help.

use serde::{Deserialize, Serialize};

/// Whether trying again may help. Decided where the failure is seen (a store's response, an
/// operation's race), never by reading an error's text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transience {
    /// The network, a busy server, a race: retried with backoff.
    Transient,
    /// Configuration, credentials, a missing bucket, corrupt data: reported at once; the next
    /// trigger tries again.
    Permanent,
}

impl Transience {
    /// What an HTTP status says: 408 (timeout), 429 (throttled) and 5xx may pass; any other
    /// 4xx will not go away by itself. Other statuses (a 200 carrying an error body, a bare
    /// redirect) are treated as passing.
    pub fn of_status(status: u16) -> Self {
        match status {
            408 | 429 | 500..=599 => Transience::Transient,
            400..=499 => Transience::Permanent,
            _ => Transience::Transient,
        }
    }
}

/// The first line of a message, trimmed.
pub fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or_default().trim()
}

/// An error and its causes, `: `-separated, each cause once (some errors repeat their
/// source's text in their own).
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !out.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = cause.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_decide_transience() {
        for s in [408, 429, 500, 502, 503, 504] {
            assert_eq!(Transience::of_status(s), Transience::Transient, "{s}");
        }
        for s in [400, 401, 403, 404, 409, 412] {
            assert_eq!(Transience::of_status(s), Transience::Permanent, "{s}");
        }
    }

    #[derive(Debug, thiserror::Error)]
    #[error("{text}")]
    struct Layer {
        text: &'static str,
        #[source]
        source: Option<Box<Layer>>,
    }

    #[test]
    fn chains_name_each_cause_once() {
        let inner = Layer {
            text: "connection refused",
            source: None,
        };
        let repeats = Layer {
            text: "sending: connection refused",
            source: Some(Box::new(inner)),
        };
        let outer = Layer {
            text: "PUT failed",
            source: Some(Box::new(repeats)),
        };
        assert_eq!(
            error_chain(&outer),
            "PUT failed: sending: connection refused"
        );
        assert_eq!(first_line(" a \nb"), "a");
    }
}
